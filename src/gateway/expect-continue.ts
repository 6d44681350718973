/**
 * `Expect: 100-continue` (RFC 9110 §10.1.1): a client that sends it waits
 * for `100 Continue` before sending its body. Node's http server answers 100
 * itself as soon as it has read the head, before any hook runs, so a caller
 * with no key, a wrong key or a key without the route's action was invited
 * to send its body (a restore of gigabytes) only to be refused. The gateway
 * takes 'checkContinue' over (acceptRequestsExpectingContinue) and answers
 * 100 only where it starts reading a body (continueBody): after auth and the
 * size checks (never for a request whose key has not passed: 404, 405 and
 * open routes have no body read, and their answer closes the connection). A request answered
 * without 100 (refused, 413 on the declared length) had no body sent: Node
 * closes its connection after the answer (a response to an unanswered Expect
 * is never kept alive).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';

/** expectsContinue: the request asks for `100 Continue` before its body. */
export function expectsContinue(req: IncomingMessage): boolean {
  const e = req.headers.expect;
  return typeof e === 'string' && e.trim().toLowerCase() === '100-continue';
}

/**
 * acceptRequestsExpectingContinue makes `server` hand a request with
 * `Expect: 100-continue` to its 'request' listeners without answering 100
 * (Node's default answers it at once).
 */
export function acceptRequestsExpectingContinue(server: Server): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    server.emit('request', req, res);
  });
}

/** continueBody answers `100 Continue` once, if the request asks for it and no answer has started: call it where its body is about to be read. */
export function continueBody(req: IncomingMessage, res: ServerResponse): void {
  if (!expectsContinue(req) || res.headersSent || res.writableEnded) return;
  if ((res as { _sent100?: boolean })._sent100 === true) return;
  res.writeContinue();
}

/**
 * Raw HTTP/2 and gRPC pieces for the client-plane specs that play a
 * misbehaving client (call-gate, read-gate, owner-unverified-key,
 * reflection-backpressure): hand-made frames, and calls whose one message is
 * left unfinished.
 */
import assert from 'node:assert/strict';
import type http2 from 'node:http2';

/** h2Frame: one HTTP/2 frame (RFC 9113 §4.1) of `type` with `flags` on stream `sid`. */
export function h2Frame(type: number, flags: number, sid: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(sid, 5);
  return Buffer.concat([h, payload]);
}

/** hpackLiteral: a header field never indexed, its name and value literal (each under 127 bytes: one-byte lengths). */
export function hpackLiteral(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  assert.ok(n.length < 127 && v.length < 127);
  return Buffer.concat([Buffer.from([0x10, n.length]), n, Buffer.from([v.length]), v]);
}

/** PartialCall: a call whose message was left unfinished (partialCall). */
export interface PartialCall {
  /** sent: the whole body but its last byte left the client (the server read it). */
  sent: boolean;
  /** status: the call's grpc-status, once answered. */
  status: string | null;
  readonly stream: http2.ClientHttp2Stream;
}

/** partialCall: a gRPC call on `s` to `path` with `authorization`, whose message announces `messageBytes` and sends all but its last byte. */
export function partialCall(s: http2.ClientHttp2Session, path: string, authorization: string, messageBytes: number): PartialCall {
  const stream = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', authorization });
  const p: PartialCall = { sent: false, status: null, stream };
  stream.on('error', () => undefined);
  stream.on('response', (h) => {
    if (h['grpc-status'] !== undefined) p.status = String(h['grpc-status']);
  });
  stream.on('trailers', (t) => (p.status = String(t['grpc-status'])));
  stream.resume();
  const frame = Buffer.alloc(5 + messageBytes - 1);
  frame.writeUInt32BE(messageBytes, 1);
  stream.write(frame, () => (p.sent = true));
  return p;
}

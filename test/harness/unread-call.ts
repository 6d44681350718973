/**
 * unreadCall: a gRPC server-streaming call made by a raw HTTP/2 client that
 * reads nothing of the answer: its stream window fills and the server's
 * writes stop completing. (A grpc-js client would read every message into
 * memory while its caller reads nothing.)
 */
import type http2 from 'node:http2';

/**
 * unreadCall sends `body` (one encoded request message) to `path` on `session` and leaves the answer unread (the
 * stream paused); `headers` are sent as the call's metadata.
 */
export function unreadCall(session: http2.ClientHttp2Session, path: string, body: Uint8Array, headers: Readonly<Record<string, string>> = {}): http2.ClientHttp2Stream {
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const req = session.request({ ...headers, ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  req.on('error', () => undefined);
  req.pause();
  req.end(frame);
  return req;
}

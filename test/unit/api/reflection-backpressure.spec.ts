/**
 * Reflection reads no faster than its client takes the answers (addWithBackpressure), against a real
 * server and a raw HTTP/2 client that sends 20,000 ServerReflectionInfo requests on one stream and never
 * opens its own flow-control window (the server may send it 64 KiB in all). What the server consumed of
 * the requests is what its WINDOW_UPDATEs gave back. Before, it read every request and built and kept
 * every answer (a live node: 460 -> 824 MiB in 12 s from one connection with a kv.read key).
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';
import { h2Frame, hpackLiteral } from './raw-http2.js';

const KEY = 'reflection-admin-key';
const NARROW = 'reflection-kv-read-key';
const REQUESTS = 20_000;

describe('gRPC reflection: requests read no faster than answers are taken (real HTTP/2)', function () {
  this.timeout(60_000);
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })],
  }, { node: false });

  it(`a client that sends ${REQUESTS} requests and takes no answer gets a bounded part of them read`, async () => {
    const sock = connect(solo.api.port, '127.0.0.1');
    sock.on('error', () => undefined);
    // WINDOW_UPDATE increments the server sends for stream 1: the request bytes it consumed.
    let consumed = 0;
    let inbuf = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      inbuf = Buffer.concat([inbuf, d]);
      while (inbuf.length >= 9) {
        const len = inbuf.readUIntBE(0, 3);
        if (inbuf.length < 9 + len) break;
        if (inbuf[3] === 8 && inbuf.readUInt32BE(5) === 1) consumed += inbuf.readUInt32BE(9) & 0x7fffffff;
        inbuf = inbuf.subarray(9 + len);
      }
    });
    const sym = Buffer.from('snapcoord.v1.KVService');
    const msg = Buffer.concat([Buffer.from([0x22, sym.length]), sym]); // ServerReflectionRequest{file_containing_symbol}
    const one = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    try {
      // SETTINGS: our initial window 0 (the server may send no DATA at all).
      sock.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2Frame(4, 0, 0, Buffer.from([0, 4, 0, 0, 0, 0]))]));
      sock.write(
        h2Frame(1, 4, 1, Buffer.concat([
          hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo'),
          hpackLiteral(':authority', 'x'), hpackLiteral('content-type', 'application/grpc'), hpackLiteral('te', 'trailers'), hpackLiteral('authorization', `Bearer ${NARROW}`),
        ])),
      );
      // 200 requests a frame; the stream's 64 KiB window lets the first ~2,000 through, the rest as the server consumes.
      const perFrame = 200;
      for (let i = 0; i < REQUESTS / perFrame; i++) sock.write(h2Frame(0, 0, 1, Buffer.concat(Array<Buffer>(perFrame).fill(one))));
      const total = REQUESTS * one.length;
      // Wait until the server's consumption stops moving (or covers everything, as before).
      let last = -1;
      await until('the server to stop consuming requests', 30_000, async () => {
        await new Promise((r) => setTimeout(r, 1_000));
        if (consumed >= total) return true;
        const still = consumed === last;
        last = consumed;
        return still ? true : undefined;
      });
      assert.ok(consumed < total / 4, `the server consumed ${consumed} of ${total} request bytes while its answers went untaken`);
    } finally {
      sock.destroy();
    }
  });
});

/**
 * The client plane's CallGate against a real server: one API key has at
 * most `clientCallsPerCallerMax` calls open at once; its next one is refused
 * RESOURCE_EXHAUSTED before its handler runs, another key's calls go on, and
 * a place comes back when a call ends. Before, any valid key (kv.read alone)
 * could hold as many never-ending Health/Watch streams as its connections
 * carried: 16,384 took a live node from 178 to 277 MiB.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { KvClient } from '../../../src/client/kv-client.js';
import type { Node } from '../../../src/node/node.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';
import { h2Frame, hpackLiteral } from './raw-http2.js';

const KEY = 'call-gate-admin-key';
const NARROW = 'call-gate-kv-read-key';
const CALLS_MAX = 5;
const ANSWERS_MAX = 2;

interface Watch {
  /** status: the grpc-status of an answer that ended the call (null: still open). */
  status: string | null;
  /** messages: health answers received. */
  messages: number;
  readonly stream: http2.ClientHttp2Stream;
}

/** watch opens a Health/Watch with `key` on `s` (a whole request: an empty message). */
function watch(s: http2.ClientHttp2Session, key: string): Watch {
  const stream = s.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Watch', 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${key}` });
  const w: Watch = { status: null, messages: 0, stream };
  stream.on('error', () => undefined);
  stream.on('response', (h) => {
    if (h['grpc-status'] !== undefined) w.status = String(h['grpc-status']);
  });
  stream.on('trailers', (t) => (w.status = String(t['grpc-status'])));
  stream.on('data', () => w.messages++);
  stream.end(Buffer.alloc(5));
  return w;
}

describe('gRPC client plane: calls one API key has open at once (CallGate, real HTTP/2)', function () {
  this.timeout(60_000);
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })],
    clientCallsPerCallerMax: CALLS_MAX,
    clientAnswersPerCallerMax: ANSWERS_MAX,
  });

  it('a kv.read key holding never-ending Health/Watch streams gets RESOURCE_EXHAUSTED past the cap; other keys go on; an ended call gives its place back', async () => {
    const s = http2.connect(`http://${solo.api.address}`);
    s.on('error', () => undefined);
    try {
      const held = Array.from({ length: CALLS_MAX }, () => watch(s, NARROW));
      await until('the watches to answer SERVING', 10_000, () => (held.every((w) => w.messages >= 1) ? true : undefined));
      const extra = watch(s, NARROW);
      // Before: an open stream like the others (it answered SERVING and stayed).
      await until('the call past the cap to end', 10_000, () => (extra.status !== null || extra.messages > 0 ? true : undefined));
      assert.equal(extra.status, '8', 'RESOURCE_EXHAUSTED');
      assert.equal(extra.messages, 0);
      assert.ok(held.every((w) => w.status === null), 'the held watches stay open');
      // Another key is not counted against this one.
      const kv = new KvClient(solo.api.address, { apiKey: KEY });
      try {
        await kv.put({ key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') }, { deadlineMs: 5_000 });
      } finally {
        kv.close();
      }
      // A watch that ends (cancelled by its client) gives its place back.
      held[0]?.stream.close(http2.constants.NGHTTP2_CANCEL);
      let again: Watch | null = null;
      await until('a new watch to be taken', 10_000, async () => {
        again?.stream.close(http2.constants.NGHTTP2_CANCEL);
        again = watch(s, NARROW);
        await new Promise((r) => setTimeout(r, 200));
        return again.messages > 0 && again.status === null ? true : undefined;
      });
    } finally {
      s.destroy();
    }
  });

  it('Range calls whose answers are never read hold at most answersPerCallerMax answers; the rest wait unbuilt; another key goes on', async () => {
    const admin = new KvClient(solo.api.address, { apiKey: KEY });
    const enc = new TextEncoder();
    let ranges = 0;
    const realRange = solo.node.range.bind(solo.node);
    solo.node.range = ((...a: Parameters<Node['range']>) => {
      ranges++;
      return realRange(...a);
    }) as Node['range'];
    let raw: Socket | null = null;
    try {
      for (let i = 0; i < 4; i++) await admin.put({ key: enc.encode(`big/${i}`), value: new Uint8Array(512 * 1024) }, { deadlineMs: 10_000 });
      ranges = 0;
      // A client that never reads and never opens its flow-control window: the server may send it 64 KiB in all.
      raw = connect(solo.api.port, '127.0.0.1');
      raw.on('error', () => undefined);
      raw.pause();
      const CALLS = ANSWERS_MAX + 3;
      const headers = (sid: number): Buffer =>
        h2Frame(1, 4, sid, Buffer.concat([
          hpackLiteral(':method', 'POST'), hpackLiteral(':scheme', 'http'), hpackLiteral(':path', '/snapcoord.v1.KVService/Range'),
          hpackLiteral(':authority', 'x'), hpackLiteral('content-type', 'application/grpc'), hpackLiteral('te', 'trailers'),
          hpackLiteral('authorization', `Bearer ${NARROW}`),
        ]));
      // RangeRequest{prefix: "big/", serializable: true}
      const msg = Buffer.from([0x0a, 4, ...Buffer.from('big/'), 0x28, 1]);
      const body = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
      raw.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2Frame(4, 0, 0, Buffer.alloc(0))]));
      for (let i = 0; i < CALLS; i++) raw.write(Buffer.concat([headers(1 + 2 * i), h2Frame(0, 1, 1 + 2 * i, body)]));
      await until('the first ranges to run', 10_000, () => (ranges >= ANSWERS_MAX ? true : undefined));
      await new Promise((r) => setTimeout(r, 1_000));
      // Before: every call ran and built its 2 MiB answer, left unsent in the node's memory.
      assert.equal(ranges, ANSWERS_MAX, 'Range calls run while their answers go unread');
      // Another key is not held back.
      const r = await admin.range({ prefix: enc.encode('big/'), serializable: true }, { deadlineMs: 10_000 });
      assert.equal(r.kvs.length, 4);
      // The client goes: its calls end, the places come back.
      raw.destroy();
      const narrow = new KvClient(solo.api.address, { apiKey: NARROW });
      try {
        await until('the kv.read key to be served again', 10_000, async () => ((await narrow.range({ prefix: enc.encode('big/'), serializable: true }, { deadlineMs: 5_000 })).kvs.length === 4 ? true : undefined));
      } finally {
        narrow.close();
      }
    } finally {
      raw?.destroy();
      solo.node.range = realRange;
      admin.close();
    }
  });
});

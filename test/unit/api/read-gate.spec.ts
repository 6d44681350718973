/**
 * The client plane's ReadGate against a real server and raw HTTP/2 callers:
 * calls that send their request message but never finish it hold at most
 * `readsMax` places (`readsPerCallerMax` by one API key); the others wait with
 * their bytes left in the client (flow control), at most
 * `waitingPerCallerMax` of one key (more are refused RESOURCE_EXHAUSTED), and
 * a place held past `readMs` fails its call DEADLINE_EXCEEDED. Before, grpc-js
 * read every such message into the node's memory: 512 calls of 1.5 MiB on two
 * connections held 770 MiB, as many as a key holder's connections carried.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect } from 'node:net';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { KvClient } from '../../../src/client/kv-client.js';
import { KVServiceService } from '../../../src/gen/snapcoord/v1/kv.js';
import { ClusterServiceService } from '../../../src/gen/snapcoord/v1/cluster.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';
import { partialCall, type PartialCall } from './raw-http2.js';

const KEY = 'read-gate-admin-key';
/** NARROW: a kv.read key, the attacker's. */
const NARROW = 'read-gate-kv-read-key';
const LIMITS = { readsMax: 3, readsPerCallerMax: 2, waitingPerCallerMax: 4, readMs: 3_000 };
const MESSAGE_BYTES = 1024 * 1024;

/** session: a raw HTTP/2 connection to `address`, from `localAddress`. */
function session(address: string, localAddress: string): http2.ClientHttp2Session {
  const [host, port] = address.split(':') as [string, string];
  const s = http2.connect(`http://${address}`, { createConnection: () => connect({ host, port: Number(port), localAddress }) });
  s.on('error', () => undefined);
  return s;
}

/** partial: a KV Get with the kv.read key whose message announces MESSAGE_BYTES and sends all but its last byte. */
function partial(s: http2.ClientHttp2Session): PartialCall {
  return partialCall(s, KVServiceService.get.path, `Bearer ${NARROW}`, MESSAGE_BYTES);
}

/** status: a whole Status call on `s`; resolves with its grpc-status. */
function status(s: http2.ClientHttp2Session): Promise<string> {
  return new Promise((resolve) => {
    const stream = s.request({ ':method': 'POST', ':path': ClusterServiceService.status.path, 'content-type': 'application/grpc', te: 'trailers', authorization: `Bearer ${KEY}` });
    stream.on('error', () => resolve('error'));
    stream.on('response', (h) => h['grpc-status'] !== undefined && resolve(String(h['grpc-status'])));
    stream.on('trailers', (t) => resolve(String(t['grpc-status'])));
    stream.resume();
    stream.end(Buffer.alloc(5)); // an empty message
  });
}

describe('gRPC client plane: request messages read at once (ReadGate, real HTTP/2)', function () {
  this.timeout(60_000);
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })],
    clientReads: LIMITS,
  });

  it('unfinished messages hold at most the places of their key; the rest stay in the client, a bounded number; a place held too long fails its call', async () => {
    const attacker = session(solo.api.address, '127.0.0.1');
    const sameHost = session(solo.api.address, '127.0.0.1');
    try {
      const waiting = LIMITS.waitingPerCallerMax;
      const calls = Array.from({ length: LIMITS.readsPerCallerMax + waiting + 1 }, () => partial(attacker));
      await until('the first bodies to be read', 10_000, () => (calls.filter((c) => c.sent).length >= LIMITS.readsPerCallerMax ? true : undefined));
      // One call more than the key may have waiting is refused at once (before: it waited like the others).
      await until('the call past the waiting cap to be refused', 10_000, () => (calls.some((c) => c.status === '8') ? true : undefined));
      await new Promise((r) => setTimeout(r, 500));
      // Only the calls holding a place had their bytes read: the others' wait in the client.
      // (The refused call's stream is closed, so its bytes leave the client too.)
      assert.equal(calls.filter((c) => c.sent && c.status !== '8').length, LIMITS.readsPerCallerMax, 'bodies read by the server');
      assert.equal(calls.filter((c) => c.status === '8').length, 1, 'calls refused RESOURCE_EXHAUSTED');
      assert.equal(solo.api.readGate.readingNow, LIMITS.readsPerCallerMax);
      assert.equal(solo.api.readGate.waitingNow, waiting);
      // Another key from the same host still has a place: its whole call is read and served while the
      // kv.read key's places are still held (before: it waited behind that host's calls until they timed out).
      assert.equal(await status(sameHost), '0');
      assert.equal(calls.filter((c) => c.status === '4').length, 0, 'no holder timed out before the other key was served');
      // A place held past readMs fails its call; the next waiting ones read.
      await until('the first holders to fail DEADLINE_EXCEEDED', 10_000, () => (calls.filter((c) => c.status === '4').length >= LIMITS.readsPerCallerMax ? true : undefined));
      await until('the next waiting calls to read', 10_000, () => (calls.filter((c) => c.sent && c.status !== '8').length >= 2 * LIMITS.readsPerCallerMax ? true : undefined));
      assert.ok(solo.api.readGate.readingNow <= LIMITS.readsPerCallerMax);
    } finally {
      attacker.destroy();
      sameHost.destroy();
    }
    await until('every place to be given back', 10_000, () => (solo.api.readGate.readingNow === 0 && solo.api.readGate.waitingNow === 0 ? true : undefined));
    // Ordinary callers are served as before.
    const kv = new KvClient(solo.api.address, { apiKey: KEY });
    try {
      // As many at once as the key may have reading and waiting, eight times over.
      const atOnce = LIMITS.readsPerCallerMax + LIMITS.waitingPerCallerMax;
      for (let round = 0; round < 8; round++) {
        await Promise.all(Array.from({ length: atOnce }, (_, i) => kv.put({ key: new TextEncoder().encode(`k${round}/${i}`), value: new Uint8Array(100_000) }, { deadlineMs: 10_000 })));
      }
    } finally {
      kv.close();
    }
    assert.equal(solo.api.readGate.readingNow, 0);
  });
});

/**
 * Whose call it is (apiKeyOwner, the caller of the client plane's ReadGate,
 * CallGate and ConnectionLimiter) is a key only once the auth gate checked
 * that key. A call to an open method (Health/Check), or any call of a server
 * run with insecureNoAuth, has its Bearer value checked by no one: it counts
 * against its remote host, whatever it carries. Before, apiKeyOwner named
 * whatever Bearer value came, so a caller with no key at all sent each call
 * with a made-up one and was a new caller every time: from one host it held
 * every read place of the plane (readsMax, not readsPerCallerMax), queued
 * without the per-caller waiting cap, and opened calls without the per-key
 * open-call cap.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { randomBytes } from 'node:crypto';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { ClusterServiceService } from '../../../src/gen/snapcoord/v1/cluster.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';
import { partialCall, type PartialCall } from './raw-http2.js';

const KEY = 'owner-unverified-admin-key';
const LIMITS = { readsMax: 4, readsPerCallerMax: 2, waitingPerCallerMax: 2, readMs: 20_000 };
const HEALTH_CHECK = '/grpc.health.v1.Health/Check';
const MESSAGE_BYTES = 64 * 1024;

/** partial: a call to `path` with `authorization`, whose message announces MESSAGE_BYTES and sends all but its last byte. */
function partial(s: http2.ClientHttp2Session, path: string, authorization: string): PartialCall {
  return partialCall(s, path, authorization, MESSAGE_BYTES);
}

/** status: a whole Status call with `authorization`; resolves with its grpc-status ('timeout' after ms). */
function status(s: http2.ClientHttp2Session, authorization: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    const done = (v: string): void => {
      clearTimeout(timer);
      resolve(v);
    };
    const stream = s.request({ ':method': 'POST', ':path': ClusterServiceService.status.path, 'content-type': 'application/grpc', te: 'trailers', authorization });
    stream.on('error', () => done('error'));
    stream.on('response', (h) => h['grpc-status'] !== undefined && done(String(h['grpc-status'])));
    stream.on('trailers', (t) => done(String(t['grpc-status'])));
    stream.resume();
    stream.end(Buffer.alloc(5));
  });
}

for (const insecure of [false, true]) {
  describe(`client plane: a Bearer value no one checked names no caller (${insecure ? 'insecureNoAuth, any method' : 'open Health/Check'})`, function () {
    this.timeout(60_000);
    const solo = soloServer({
      interceptors: [clientAuthInterceptor(insecure ? { adminKey: '', insecureNoAuth: true } : { adminKey: KEY })],
      clientReads: LIMITS,
    });

    it('unfinished calls each with a made-up Bearer value hold only their host\'s places (before: every place of the plane)', async () => {
      const attacker = http2.connect(`http://${solo.api.address}`);
      attacker.on('error', () => undefined);
      // The other caller: the admin key (a caller of its own) when auth is on; with insecureNoAuth every caller is
      // its host (127.0.0.1 here, as the attacker), so that case checks the attacker's share alone.
      const other = http2.connect(`http://${solo.api.address}`);
      other.on('error', () => undefined);
      const path = insecure ? ClusterServiceService.status.path : HEALTH_CHECK;
      try {
        const calls = Array.from({ length: LIMITS.readsMax + 2 }, () => partial(attacker, path, `Bearer made-up-${randomBytes(8).toString('hex')}`));
        await until('the calls past the host\'s share to be refused or waiting', 10_000, () =>
          solo.api.readGate.readingNow + solo.api.readGate.waitingNow + calls.filter((c) => c.status === '8').length >= calls.length ? true : undefined,
        );
        assert.equal(solo.api.readGate.readingNow, LIMITS.readsPerCallerMax, 'read places held by one host with made-up keys');
        assert.equal(calls.filter((c) => c.status === '8').length, calls.length - LIMITS.readsPerCallerMax - LIMITS.waitingPerCallerMax, 'refused past the waiting cap');
        if (!insecure) assert.equal(await status(other, `Bearer ${KEY}`, 5_000), '0', 'the admin key is served while the made-up ones hold their host\'s places');
      } finally {
        attacker.destroy();
        other.destroy();
      }
      await until('every place to be given back', 10_000, () => (solo.api.readGate.readingNow === 0 && solo.api.readGate.waitingNow === 0 ? true : undefined));
    });
  });
}

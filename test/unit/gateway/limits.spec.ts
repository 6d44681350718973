/**
 * Gateway limits and secrets, over real sockets against a gateway whose
 * gRPC target is an in-process fake API: a refused request closes its
 * connection; a client that trickles its head or body is cut by the idle
 * timeout while a steady upload and a slow node are not; idle connections
 * beyond connectionsMax are evicted so /health still answers; /metrics needs
 * a key unless metricsOpen; keys never reach the log, however the parameter
 * name is cased or encoded; callers without a key never get a path back.
 *
 * Waits are bounded and generous (a cut is expected "within a few idle
 * periods", never at a precise time).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { UNKEYED_LOG_EVERY_MS, URL_LOG_CHARS_MAX, createGateway, type Gateway, type GatewayOptions } from '../../../src/gateway/gateway.js';
import { createCa, issueNodeCert } from '../../../src/tls/certs.js';
import type { RestoreSnapshotRequest, RestoreSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { Role, startFakeApi, status, unaryOk, type FakeApi, type FakeApiHandlers } from './fake-api.js';
import { logLines } from '../../harness/log-lines.js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';

const KEY = 'admin-key-0123456789';
const READ_KEY = 'read-only-key-0123';
const KiB = 1024;
const MiB = 1024 * KiB;

interface Env {
  readonly api: FakeApi;
  readonly gw: Gateway;
  readonly port: number;
}

const leaderStatus = { cluster: { status: unaryOk(status(Role.ROLE_LEADER, 'n1')) } };

async function start(h: FakeApiHandlers, extra: Partial<GatewayOptions> = {}): Promise<Env> {
  const api = await startFakeApi(h);
  const gw = createGateway({
    target: api.address,
    auth: { adminKey: KEY, keys: [{ key: READ_KEY, actions: ['snapshots.read'] }] },
    ...extra,
  });
  const address = await gw.listen('127.0.0.1:0');
  return { api, gw, port: Number(address.split(':').at(-1)) };
}

async function stop(env: Env | null): Promise<void> {
  if (env === null) return;
  await env.gw.close();
  await env.api.close();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** open connects a raw socket (errors are recorded, not thrown: the server may reset it). */
async function open(port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port });
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

/** closedWithin resolves true once `s` is closed (by the server), false after `ms`. */
function closedWithin(s: Socket, ms: number): Promise<boolean> {
  if (s.closed) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      s.off('close', onClose);
      resolve(false);
    }, ms);
    const onClose = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    s.once('close', onClose);
  });
}

interface RawResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** readResponse reads one HTTP/1.1 response with a Content-Length body from `s` (within 10 s). */
function readResponse(s: Socket): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => done(new Error(`no whole response within 10 s; got ${JSON.stringify(buf.toString())}`)), 10_000);
    const done = (err: Error | null, r?: RawResponse): void => {
      clearTimeout(t);
      s.off('data', onData);
      s.off('close', onClose);
      if (err !== null) reject(err);
      else resolve(r as RawResponse);
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
      const statusCode = Number(lines[0]?.split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const length = Number(headers['content-length'] ?? 0);
      if (buf.length - end - 4 < length) return;
      done(null, { status: statusCode, headers, body: buf.subarray(end + 4, end + 4 + length).toString() });
    };
    const onClose = (): void => done(new Error(`closed before a whole response; got ${JSON.stringify(buf.toString())}`));
    s.on('data', onData);
    s.once('close', onClose);
  });
}

/** exchange sends `head` (+ body) on a fresh connection and reads the answer; the socket stays open unless the server closes it. */
async function exchange(port: number, head: string, body = ''): Promise<{ res: RawResponse; socket: Socket }> {
  const socket = await open(port);
  const res = readResponse(socket);
  socket.write(head + body);
  return { res: await res, socket };
}

/** ask: exchange on a fresh connection, closed once the answer is read. */
async function ask(port: number, head: string, body = ''): Promise<RawResponse> {
  const { res, socket } = await exchange(port, head, body);
  socket.destroy();
  return res;
}

/** SlowReaders: connections each pipelining one request 3,000 times and reading the answers 32 KiB every 500 ms; stop() ends them (and any socket pushed onto `sockets`). */
interface SlowReaders {
  readonly sockets: Socket[];
  stop(): void;
}

async function slowReaders(port: number, count: number, request: string): Promise<SlowReaders> {
  const sockets: Socket[] = [];
  const timers: NodeJS.Timeout[] = [];
  const stop = (): void => {
    for (const t of timers) clearInterval(t);
    for (const s of sockets) s.destroy();
  };
  try {
    for (let i = 0; i < count; i++) {
      const s = await open(port);
      s.pause();
      s.write(request.repeat(3_000));
      timers.push(setInterval(() => void s.read(32 * KiB), 500));
      sockets.push(s);
    }
  } catch (err) {
    stop();
    throw err;
  }
  return { sockets, stop };
}

/** healthAnswersWhileHeld: /health answers 200 three times, a second apart, on fresh connections (while attackers hold theirs). */
async function healthAnswersWhileHeld(port: number): Promise<void> {
  for (let i = 0; i < 3; i++) {
    assert.equal((await ask(port, get('/health'))).status, 200, `/health (try ${i + 1})`);
    await sleep(1_000);
  }
}

function get(path: string, headers: Record<string, string> = {}): string {
  return `GET ${path} HTTP/1.1\r\nHost: gw\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
}

function withBody(method: string, path: string, headers: Record<string, string>, contentLength: number): string {
  return `${method} ${path} HTTP/1.1\r\nHost: gw\r\nContent-Length: ${contentLength}\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
}

/** trickle writes one byte of `bytes` every `everyMs` until the socket closes or the bytes run out; resolves with the count written. */
function trickle(s: Socket, bytes: string, everyMs: number): { stop(): number } {
  let i = 0;
  const timer = setInterval(() => {
    if (s.destroyed || i >= bytes.length) return;
    s.write(bytes[i] ?? '');
    i++;
  }, everyMs);
  s.once('close', () => clearInterval(timer));
  return {
    stop: () => {
      clearInterval(timer);
      return i;
    },
  };
}

describe('gateway limits: a refused request closes its connection', function () {
  this.timeout(30_000);
  let env: Env | null = null;
  before(async () => {
    env = await start({ ...leaderStatus, snapshots: {} });
  });
  after(async () => stop(env));

  const cases: ReadonlyArray<readonly [string, string, number]> = [
    ['Typesense, no key', withBody('POST', '/operations/vote', {}, 0), 401],
    ['Typesense, wrong key', withBody('POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': 'wrong-key-00000' }, 0), 401],
    ['Typesense, a weaker key', withBody('POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': READ_KEY }, 0), 401],
    ['Meilisearch, no key', withBody('POST', '/snapshots', {}, 0), 401],
    ['Meilisearch, wrong key', withBody('POST', '/snapshots', { Authorization: 'Bearer wrong-key-00000' }, 0), 403],
    ['Nomad, wrong token', get('/v1/operator/snapshot', { 'X-Nomad-Token': 'wrong-key-00000' }), 403],
    ['/metrics, no key', get('/metrics'), 401],
  ];
  for (const [name, head, code] of cases) {
    it(`${name}: ${code} with Connection: close, then the socket is closed`, async () => {
      const { res, socket } = await exchange(env?.port ?? 0, head);
      try {
        assert.equal(res.status, code);
        assert.equal(res.headers['connection'], 'close');
        assert.ok(await closedWithin(socket, 5_000), 'the server kept the connection open after refusing it');
      } finally {
        socket.destroy();
      }
    });
  }

  it('an accepted request keeps its connection (keep-alive still works), an open route\'s too when its key passes', async () => {
    // An open route with no key passed closes its connection (a keyless caller gets one request a connection:
    // 'a caller with no key cannot keep its connections in flight'); the official clients send their key with
    // /health too, and keep the connection.
    const keyless = await ask(env?.port ?? 0, get('/health'));
    assert.equal(keyless.status, 200);
    assert.equal(keyless.headers['connection'], 'close');
    const { res, socket } = await exchange(env?.port ?? 0, get('/health', { 'X-TYPESENSE-API-KEY': KEY }));
    try {
      assert.equal(res.status, 200);
      assert.notEqual(res.headers['connection'], 'close');
      assert.equal(await closedWithin(socket, 500), false);
      const again = readResponse(socket);
      socket.write(get('/debug', { 'X-TYPESENSE-API-KEY': KEY }));
      assert.equal((await again).status, 200, 'a second request on the same connection');
    } finally {
      socket.destroy();
    }
  });
});

describe('gateway limits: idle timeouts', function () {
  this.timeout(60_000);
  const IDLE_MS = 1_000;
  /** CUT_WITHIN_MS: a generous bound for "cut within about the idle timeout". */
  const CUT_WITHIN_MS = 8_000;
  let env: Env | null = null;
  let restoreCalls = 0;
  before(async () => {
    env = await start(
      {
        ...leaderStatus,
        snapshots: {
          restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
            restoreCalls++;
            call.on('data', () => undefined);
            call.on('error', () => undefined);
            call.on('end', () => cb(null, { index: 1n, archive: undefined }));
          }) as grpc.UntypedHandleCall,
        },
      },
      { idleTimeoutMs: IDLE_MS },
    );
  });
  after(async () => stop(env));

  it('a request head trickled one byte every 2 s is cut', async () => {
    const s = await open(env?.port ?? 0);
    s.write('GET /health HTTP/1.1\r\n');
    const t = trickle(s, 'Host: gw\r\nX-Slow: ' + 'a'.repeat(40) + '\r\n\r\n', 2_000);
    try {
      assert.ok(await closedWithin(s, CUT_WITHIN_MS), 'the connection was still open');
      assert.ok(t.stop() < 10, 'cut before the head was sent');
    } finally {
      t.stop();
      s.destroy();
    }
  });

  it('a request head trickled faster than the idle timeout is cut too (the head has a deadline)', async () => {
    const s = await open(env?.port ?? 0);
    s.write('GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: ');
    const t = trickle(s, 'a'.repeat(1_000), 200);
    try {
      assert.ok(await closedWithin(s, CUT_WITHIN_MS), 'the connection was still open');
      assert.ok(t.stop() < 1_000, 'cut before the head was sent');
    } finally {
      t.stop();
      s.destroy();
    }
  });

  it('a silent connection (nothing sent) is closed', async () => {
    const s = await open(env?.port ?? 0);
    try {
      assert.ok(await closedWithin(s, CUT_WITHIN_MS), 'the connection was still open');
    } finally {
      s.destroy();
    }
  });

  for (const [name, head] of [
    ['a restore upload (streamed body)', withBody('PUT', '/v1/operator/snapshot', { 'X-Nomad-Token': KEY }, 100)],
    ['a small JSON body', withBody('POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': KEY, 'Content-Type': 'application/json' }, 100)],
  ] as const) {
    it(`${name} trickled one byte every 2 s is cut`, async () => {
      const callsBefore = restoreCalls;
      const s = await open(env?.port ?? 0);
      s.write(head + '{');
      const t = trickle(s, 'x'.repeat(99), 2_000);
      try {
        assert.ok(await closedWithin(s, CUT_WITHIN_MS), 'the connection was still open');
        assert.ok(t.stop() < 10, 'cut before the body was sent');
        if (head.startsWith('PUT')) assert.equal(restoreCalls, callsBefore + 1, 'the upload had reached the node');
      } finally {
        t.stop();
        s.destroy();
      }
    });
  }

  it('a steady upload longer than several idle periods, paused by a slow node and answered late, is not cut', async () => {
    let received = 0;
    const slow = await start(
      {
        snapshots: {
          restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
            void (async () => {
              let stalled = false;
              for await (const m of call as AsyncIterable<RestoreSnapshotRequest>) {
                received += m.data.byteLength;
                if (!stalled && received > MiB) {
                  stalled = true;
                  await sleep(3 * IDLE_MS); // the node stops reading: the gateway pauses the body
                }
              }
              await sleep(3 * IDLE_MS); // the node takes its time to answer
              cb(null, { index: 1n, archive: undefined });
            })();
          }) as grpc.UntypedHandleCall,
        },
      },
      { idleTimeoutMs: IDLE_MS },
    );
    try {
      const chunk = Buffer.alloc(256 * KiB, 3);
      const chunks = 160; // 40 MiB, one chunk every 20 ms: over 3 s of sending, plus the node's stall
      const req = httpRequest({ host: '127.0.0.1', port: slow.port, method: 'PUT', path: '/v1/operator/snapshot', headers: { 'x-nomad-token': KEY, 'content-length': String(chunks * chunk.length) } });
      const response = new Promise<number>((resolve, reject) => {
        req.on('response', (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
      for (let i = 0; i < chunks; i++) {
        if (!req.write(chunk)) await once(req, 'drain');
        await sleep(20);
      }
      req.end();
      assert.equal(await response, 200);
      assert.equal(received, chunks * chunk.length);
    } finally {
      await stop(slow);
    }
  });

  it('a request the node takes several idle periods to answer is not cut', async () => {
    const slow = await start(
      {
        cluster: {
          status: ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
            setTimeout(() => cb(null, status(Role.ROLE_LEADER, 'n1')), 2_500);
          }) as grpc.UntypedHandleCall,
        },
      },
      { idleTimeoutMs: IDLE_MS },
    );
    try {
      const res = await ask(slow.port, get('/debug', { 'X-TYPESENSE-API-KEY': KEY }));
      assert.equal(res.status, 200);
    } finally {
      await stop(slow);
    }
  });
});

describe('gateway limits: connection cap', function () {
  this.timeout(180_000);

  it('idle and half-sent connections far beyond connectionsMax do not stop /health: the longest-idle ones are evicted', async () => {
    const CONNECTIONS_MAX = 64;
    // 10,000 idle sockets (the issue's figure). On today's code each is held open on both ends: 20,000 descriptors.
    const IDLE_SOCKETS = 10_000;
    const BATCH = 250; // below the listen backlog (511)
    // A long idle timeout: eviction alone must make room.
    const env = await start(leaderStatus, { connectionsMax: CONNECTIONS_MAX, idleTimeoutMs: 120_000 });
    const held = new Set<Socket>();
    let closedByServer = 0;
    try {
      for (let opened = 0; opened < IDLE_SOCKETS; opened += BATCH) {
        await Promise.all(
          Array.from({ length: Math.min(BATCH, IDLE_SOCKETS - opened) }, async (_, i) => {
            const s = connect({ host: '127.0.0.1', port: env.port });
            s.on('error', () => undefined);
            held.add(s);
            let connected = false;
            s.once('close', () => {
              held.delete(s);
              if (connected) closedByServer++;
            });
            await once(s, 'connect');
            connected = true;
            // Every fourth one sends half a request head and stops.
            if ((opened + i) % 4 === 0) s.write('GET /health HTTP/1.1\r\nHost: gw\r\n');
          }),
        );
      }
      const res = await ask(env.port, get('/health'));
      assert.equal(res.status, 200);
      assert.deepEqual(JSON.parse(res.body), { ok: true, status: 'available' });
      assert.ok(env.gw.connectionStats().open <= CONNECTIONS_MAX, `${env.gw.connectionStats().open} connections held`);
      // Let the last FINs arrive (bounded).
      for (let i = 0; i < 100 && closedByServer < IDLE_SOCKETS - CONNECTIONS_MAX; i++) await sleep(100);
      const stats = env.gw.connectionStats();
      assert.ok(stats.open <= CONNECTIONS_MAX, `${stats.open} connections held`);
      assert.ok(closedByServer >= IDLE_SOCKETS - CONNECTIONS_MAX, `only ${closedByServer} of ${IDLE_SOCKETS} idle sockets were closed by the gateway (${JSON.stringify(stats)})`);
      assert.ok(stats.evicted >= IDLE_SOCKETS - CONNECTIONS_MAX, JSON.stringify(stats));
    } finally {
      for (const s of held) s.destroy();
      await stop(env);
    }
  });

  it('a caller with no key cannot keep its connections in flight: pipelined open-route requests read slowly do not stop /health', async () => {
    // review31: a connection with a request in flight is never evicted, and keyless requests kept their connection
    // alive: pipelined GET /openapi.json (13.6 KB answers) on every place, read a little at a time, kept each one
    // busy, and every new connection, /health's too, was refused for as long as it went on (about 20 s a round
    // at the default idle timeout, then again on new connections).
    const CONNECTIONS_MAX = 4;
    const env = await start(leaderStatus, { connectionsMax: CONNECTIONS_MAX, idleTimeoutMs: 10_000 });
    let attackers: SlowReaders | null = null;
    try {
      attackers = await slowReaders(env.port, CONNECTIONS_MAX, get('/openapi.json'));
      await sleep(1_000);
      await healthAnswersWhileHeld(env.port);
    } finally {
      attackers?.stop();
      await stop(env);
    }
  });

  it('one key keeps at most keyConnectionsMax connections with requests in flight: a read-only key pipelining requests read slowly does not stop /health', async () => {
    // review31: the keyed twin of the case above. Any valid key (snapshots.read here; kv.read would do) kept its
    // connections alive, so pipelined requests read slowly held every place, and every new connection, /health's
    // and the admin's too, was refused (the client plane lets one key prove at most 64 connections; the gateway had
    // no such bound). Beyond the bound an open route's answer closes its connection and a keyed route answers 429.
    const CONNECTIONS_MAX = 4;
    const env = await start(leaderStatus, { connectionsMax: CONNECTIONS_MAX, idleTimeoutMs: 10_000, keyConnectionsMax: 2 });
    let attackers: SlowReaders | null = null;
    try {
      attackers = await slowReaders(env.port, CONNECTIONS_MAX, get('/openapi.json', { 'X-TYPESENSE-API-KEY': READ_KEY }));
      await sleep(1_000);
      await healthAnswersWhileHeld(env.port);
      // A keyed route of that key beyond its bound: 429, and its connection closed.
      const s = await open(env.port);
      attackers.sockets.push(s);
      const r = readResponse(s);
      s.write(get('/metrics', { 'X-TYPESENSE-API-KEY': READ_KEY }));
      const res = await r;
      assert.equal(res.status, 429);
      assert.equal(res.headers['connection'], 'close');
      // Another key is not held back.
      assert.equal((await ask(env.port, get('/metrics', { 'X-TYPESENSE-API-KEY': KEY }))).status, 200);
    } finally {
      attackers?.stop();
      await stop(env);
    }
  });

  it('when every held connection has a request in flight, a new one is closed; once they finish, /health answers', async () => {
    let calls = 0;
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const env = await start({
      cluster: {
        status: unaryOk(status(Role.ROLE_LEADER, 'n1')),
        vote: ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
          calls++;
          void released.then(() => cb(null, { success: true }));
        }) as grpc.UntypedHandleCall,
      },
    }, { connectionsMax: 2 });
    const sockets: Socket[] = [];
    try {
      const busy = await Promise.all(
        [0, 1].map(async () => {
          const s = await open(env.port);
          sockets.push(s);
          const r = readResponse(s);
          s.write(withBody('POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': KEY }, 0));
          return { r }; // wrapped: an async function returning the promise itself would wait for it
        }),
      );
      for (let i = 0; i < 100 && calls < 2; i++) await sleep(50);
      assert.equal(calls, 2);
      const third = await open(env.port);
      sockets.push(third);
      let got = 0;
      third.on('data', (c: Buffer) => (got += c.length));
      third.write(get('/health'));
      assert.ok(await closedWithin(third, 5_000), 'a connection over the cap was held');
      assert.equal(got, 0, 'it got no answer');
      assert.equal(env.gw.connectionStats().refused, 1);
      release();
      for (const { r } of busy) assert.equal((await r).status, 200);
      const { res, socket } = await exchange(env.port, get('/health'));
      sockets.push(socket);
      assert.equal(res.status, 200);
    } finally {
      release();
      for (const s of sockets) s.destroy();
      await stop(env);
    }
  });
});

describe('gateway limits: a body no route uses is never read', function () {
  this.timeout(60_000);

  for (const [name, method, path, headers] of [
    ['a 404 path', 'POST', '/no-such-path', {}],
    ['a 405 (a known path, another method)', 'POST', '/health', {}],
    ['an open route', 'GET', '/health', {}],
    ['a keyed POST whose route uses no body', 'POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': KEY }],
  ] as const) {
    it(`${name}: answered at once, the body never read; trickled bodies do not hold the connections`, async () => {
      const CONNECTIONS_MAX = 3;
      // Trickled bytes come faster than the idle timeout: only not reading the body ends these requests.
      const env = await start(leaderStatus, { connectionsMax: CONNECTIONS_MAX, idleTimeoutMs: 3_000 });
      const sockets: Socket[] = [];
      try {
        const answers = await Promise.all(
          Array.from({ length: CONNECTIONS_MAX }, async () => {
            const s = await open(env.port);
            sockets.push(s);
            const r = readResponse(s);
            s.write(withBody(method, path, { 'Content-Type': 'application/json', ...headers }, 60_000));
            trickle(s, 'x'.repeat(60_000), 500);
            return r;
          }),
        );
        if (Object.keys(headers).length === 0) {
          // No key passed: the connection is closed after the answer.
          for (const r of answers) assert.equal(r.headers['connection'], 'close');
          for (const s of sockets) assert.ok(await closedWithin(s, 5_000), 'the connection was closed after the answer');
        } else {
          // Answered (the fake node has no Vote: an error in Typesense's style) without its body.
          for (const r of answers) assert.ok(r.status >= 200, `status ${r.status}`);
        }
        // Before: every held connection had a request in flight, so this one was refused at once.
        const { res, socket } = await exchange(env.port, get('/health'));
        sockets.push(socket);
        assert.equal(res.status, 200);
        assert.equal(env.gw.connectionStats().refused, 0);
      } finally {
        for (const s of sockets) s.destroy();
        await stop(env);
      }
    });
  }
});

describe('gateway limits: /metrics', () => {
  const metrics = { text: async () => 'snapcoord_up 1\n', contentType: 'text/plain; version=0.0.4' };

  it('needs a key (any valid key, whatever its actions); open with metricsOpen', async () => {
    const api = await startFakeApi({});
    const keyed = createGateway({ target: api.address, auth: { adminKey: KEY, keys: [{ key: READ_KEY, actions: ['snapshots.read'] }] }, metrics });
    const open = createGateway({ target: api.address, auth: { adminKey: KEY }, metrics, metricsOpen: true });
    try {
      const none = await keyed.app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(none.statusCode, 401);
      assert.equal(none.headers['connection'], 'close');
      assert.doesNotMatch(none.body, /snapcoord_up/);
      assert.equal((await keyed.app.inject({ method: 'GET', url: '/metrics', headers: { 'x-typesense-api-key': 'wrong-key-00000' } })).statusCode, 401);
      for (const headers of [{ 'x-typesense-api-key': KEY }, { authorization: `Bearer ${KEY}` }, { 'x-nomad-token': READ_KEY }]) {
        const ok = await keyed.app.inject({ method: 'GET', url: '/metrics', headers });
        assert.equal(ok.statusCode, 200, JSON.stringify(headers));
        assert.equal(ok.body, 'snapcoord_up 1\n');
      }
      const opened = await open.app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(opened.statusCode, 200);
      assert.equal(opened.body, 'snapcoord_up 1\n');
    } finally {
      await keyed.close();
      await open.close();
      await api.close();
    }
  });
});

describe('gateway secrets', function () {
  this.timeout(30_000);

  it('keys never reach the log, whatever the case or percent-encoding of the parameter or header name', async () => {
    const { lines, logger } = logLines('trace');
    const env = await start(leaderStatus, { logger });
    try {
      const names = [
        'x-typesense-api-key',
        'X-TYPESENSE-API-KEY',
        'X-Typesense-Api-Key',
        'x%2Dtypesense%2Dapi%2Dkey',
        'x%2dTYPESENSE%2dapi%2dKEY',
        '%78%2D%74ypesense-api-key',
        'x%252Dtypesense%252Dapi%252Dkey',
        'x-typesense-api-key%5B%5D',
      ];
      const statuses: number[] = [];
      for (const n of names) {
        for (const path of ['/debug', '/no/such/route', '/metrics']) {
          const res = await ask(env.port, get(`${path}?a=1&${n}=${KEY}&b=2`));
          if (path === '/debug') statuses.push(res.status);
        }
      }
      // Fastify decodes parameter names: the percent-encoded spelling is a key the gateway accepts.
      assert.equal(statuses[names.indexOf('x%2Dtypesense%2Dapi%2Dkey')], 200);
      for (const h of ['X-TYPESENSE-API-KEY', 'Authorization', 'X-Nomad-Token', 'x-typesense-api-key']) {
        await ask(env.port, get('/debug', { [h]: h === 'Authorization' ? `Bearer ${KEY}` : KEY }));
      }
      const log = lines.join('');
      assert.match(log, /x%2Dtypesense%2Dapi%2Dkey=<redacted>&b=2/);
      assert.match(log, /\/no\/such\/route/);
      assert.ok(!log.includes(KEY), `the key is in the log:\n${log.split('\n').filter((l) => l.includes(KEY)).join('\n')}`);
    } finally {
      await stop(env);
    }
  });

  it('a request line is logged with at most URL_LOG_CHARS_MAX characters of its URL: no caller, keyed or not, writes kilobytes into the log per request', async () => {
    // review31: every request is logged at info (fastify's "incoming request") with its URL, up to Node's 16 KiB
    // head: a caller with no key wrote ~15 KB of log per request (`/health?q=aaa...`), 322 KB for 21 requests on a
    // live `serve`, without end (`local` logs into ./data, beside the nodes' state).
    const { lines, logger } = logLines('debug');
    // At debug: requests whose key did not pass are logged there (one line a request).
    const env = await start(leaderStatus, { logger });
    try {
      const long = 'a'.repeat(12_000);
      for (const head of [get(`/health?q=${long}`), get(`/no/such/route?${long}`), get(`/debug?q=${long}&x-typesense-api-key=${KEY}`), get(`/tasks/${long}`)]) {
        await ask(env.port, head);
      }
      assert.ok(lines.length >= 4, `${lines.length} log lines`);
      for (const l of lines) assert.ok(l.length <= URL_LOG_CHARS_MAX + 512, `a log line of ${l.length} characters: ${l.slice(0, 200)}...`);
      const log = lines.join('');
      assert.match(log, /"url":"\/health\?q=aaaa/, 'the start of the URL is kept');
      assert.match(log, /\/no\/such\/route\?aaaa/);
      assert.match(log, /more characters/, 'a cut URL says it was cut');
      assert.ok(!log.includes(KEY), 'no key in the log');
    } finally {
      await stop(env);
    }
  });

  it('requests whose key did not pass are logged at debug, with a count at info at most once a minute: a caller with no key cannot fill the log', async () => {
    // review31: every request wrote two info lines (incoming, completed), a keyless caller's too: at a few thousand
    // requests a second, megabytes of log a second from anyone who reaches the port (`local` logs into ./data).
    const { lines, logger } = logLines('info');
    const env = await start(leaderStatus, { logger });
    try {
      for (let i = 0; i < 30; i++) {
        for (const head of [get('/health'), get(`/no/such/${i}`), get('/debug'), get('/debug', { 'X-TYPESENSE-API-KEY': 'wrong-key-0123456' })]) {
          await ask(env.port, head);
        }
      }
      const keyless = lines.length;
      assert.ok(keyless <= 2, `${keyless} info lines for 120 requests without a valid key:\n${lines.slice(0, 4).join('')}`);
      await ask(env.port, get('/debug', { 'X-TYPESENSE-API-KEY': KEY }));
      const keyed = lines.slice(keyless).join('');
      assert.match(keyed, /"url":"\/debug"/, 'a request whose key passed is logged at info with its URL');
      assert.match(keyed, /"statusCode":200/);
    } finally {
      await stop(env);
    }
  });

  it('the count of requests without a valid key is timed on the monotonic clock: the wall clock stepped back 1 h, it is logged again a minute later', async () => {
    // On the wall clock (Date.now) a step back (NTP, a resumed VM) kept the count quiet for the step's length.
    const { lines, logger } = logLines('info');
    const clocks = new SteppedClocks().install();
    const env = await start(leaderStatus, { logger });
    try {
      const counted = async (): Promise<number> => {
        await ask(env.port, get('/health'));
        return lines.filter((l) => l.includes('requests without a valid key')).length;
      };
      assert.equal(await counted(), 1, 'the first request without a key is counted at once');
      assert.equal(await counted(), 1, 'then once a minute');
      clocks.stepWall(-HOUR_MS);
      clocks.pass(UNKEYED_LOG_EVERY_MS + 1);
      assert.equal(await counted(), 2, 'a minute later, counted again');
    } finally {
      clocks.restore();
      await stop(env);
    }
  });

  it('callers without a key never get a path back in an error (malformed URLs, 404, 405, 413, refusals)', async () => {
    const root = join(tmpdir(), 'snapcoord-secret-root');
    const env = await start(leaderStatus, { snapshotRoots: [root] });
    const secret = ['secret-dir', root, process.cwd(), tmpdir()];
    try {
      const requests: Array<[string, string]> = [
        ['a malformed URL (Typesense)', get('/tmp/secret-dir/%zz')],
        ['a malformed URL (Meilisearch)', get('/tasks/%zz/secret-dir')],
        ['a malformed URL (Nomad)', get('/v1/secret-dir/%E0%A4%A')],
        ['a malformed URL on a real route', get('/operations/snapshot%zz?snapshot_path=/etc/secret-dir')],
        ['an unknown path', get('/secret-dir/../../etc/passwd')],
        ['a wrong method', withBody('DELETE', '/health', {}, 0)],
        ['a body over the cap on an open route', withBody('DELETE', '/health', { 'Content-Type': 'application/json' }, 70 * KiB) + 'x'.repeat(70 * KiB)],
        ['no key', withBody('POST', `/operations/snapshot?snapshot_path=${encodeURIComponent('/etc/secret-dir')}`, {}, 0)],
        ['a weaker key', withBody('POST', `/operations/snapshot?snapshot_path=${encodeURIComponent('/etc/secret-dir')}`, { 'X-TYPESENSE-API-KEY': READ_KEY }, 0)],
        ['no key, upload', withBody('PUT', '/v1/operator/snapshot', {}, 0)],
      ];
      for (const [name, head] of requests) {
        const res = await ask(env.port, head);
        assert.ok(res.status >= 400 && res.status < 500, `${name}: ${res.status}`);
        for (const s of secret) assert.ok(!res.body.includes(s), `${name}: the answer holds ${s}: ${res.body}`);
      }
      // A caller whose key passed still hears why (the snapshot roots included).
      const res = await ask(env.port, withBody('POST', `/operations/snapshot?snapshot_path=${encodeURIComponent('/etc/secret-dir')}`, { 'X-TYPESENSE-API-KEY': KEY }, 0));
      assert.equal(res.status, 400);
      assert.ok(res.body.includes(root), res.body);
    } finally {
      await stop(env);
    }
  });
});

describe('gateway limits over HTTPS', function () {
  this.timeout(60_000);
  const IDLE_MS = 1_000;
  const CONNECTIONS_MAX = 16;
  let dir = '';
  let ca = '';
  let env: Env | null = null;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-gw-tls-'));
    const authority = await createCa();
    const cert = await issueNodeCert(authority, { id: 'gw', dns: ['localhost'], ips: ['127.0.0.1'] });
    await writeFile(join(dir, 'gw.pem'), cert.certPem);
    await writeFile(join(dir, 'gw-key.pem'), cert.keyPem, { mode: 0o600 });
    ca = authority.certPem;
    env = await start(
      {
        cluster: {
          // The node takes longer than the idle timeout to answer.
          status: ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
            setTimeout(() => cb(null, status(Role.ROLE_LEADER, 'n1')), 2 * IDLE_MS + 500);
          }) as grpc.UntypedHandleCall,
        },
      },
      { tls: { certFile: join(dir, 'gw.pem'), keyFile: join(dir, 'gw-key.pem') }, idleTimeoutMs: IDLE_MS, connectionsMax: CONNECTIONS_MAX },
    );
  });
  after(async () => {
    await stop(env);
    await rm(dir, { recursive: true, force: true });
  });

  function httpsGet(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: env?.port ?? 0, path, ca, servername: 'localhost', headers, agent: false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('a TCP connection that never starts its TLS handshake is closed', async () => {
    const s = await open(env?.port ?? 0);
    try {
      assert.ok(await closedWithin(s, 8_000), 'the connection was still open');
    } finally {
      s.destroy();
    }
  });

  it('a request the node takes several idle periods to answer is not cut', async () => {
    const r = await httpsGet('/debug', { 'x-typesense-api-key': KEY });
    assert.equal(r.status, 200, r.body);
  });

  it('a refused request closes its TLS connection', async () => {
    const s = tlsConnect({ host: '127.0.0.1', port: env?.port ?? 0, ca, servername: 'localhost' });
    s.on('error', () => undefined);
    await once(s, 'secureConnect');
    try {
      const res = readResponse(s);
      s.write(withBody('POST', '/operations/vote', { 'X-TYPESENSE-API-KEY': 'wrong-key-00000' }, 0));
      assert.equal((await res).status, 401);
      assert.ok(await closedWithin(s, 5_000), 'the server kept the connection open after refusing it');
    } finally {
      s.destroy();
    }
  });

  it('idle TCP connections and half-done handshakes far beyond connectionsMax do not stop /health', async () => {
    const IDLE_SOCKETS = 400;
    let closedByServer = 0;
    const held = new Set<Socket>();
    try {
      for (let i = 0; i < IDLE_SOCKETS; i++) {
        const s = await open(env?.port ?? 0);
        held.add(s);
        s.once('close', () => {
          held.delete(s);
          closedByServer++;
        });
        // Every other one sends the first bytes of a TLS record and stops.
        if (i % 2 === 0) s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]));
      }
      const r = await httpsGet('/health');
      assert.equal(r.status, 200, r.body);
      for (let i = 0; i < 50 && closedByServer < IDLE_SOCKETS - CONNECTIONS_MAX; i++) await sleep(100);
      const stats = env?.gw.connectionStats();
      assert.ok(stats !== undefined && stats.open <= CONNECTIONS_MAX, JSON.stringify(stats));
      assert.ok(closedByServer >= IDLE_SOCKETS - CONNECTIONS_MAX, `only ${closedByServer} of ${IDLE_SOCKETS} were closed by the gateway`);
    } finally {
      for (const s of held) s.destroy();
    }
  });
});

describe('gateway limits: Expect: 100-continue', function () {
  this.timeout(30_000);
  let env: Env | null = null;
  let restored = -1;
  before(async () => {
    env = await start(
      {
        ...leaderStatus,
        snapshots: {
          createSnapshot: unaryOk({ task: { uid: 7n, type: 'snapshotCreation', status: 'enqueued', enqueuedAt: '2026-12-06T00:00:00Z' } }),
          restoreSnapshot: ((call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) => {
            void (async () => {
              let n = 0;
              for await (const m of call as AsyncIterable<RestoreSnapshotRequest>) n += m.data.byteLength;
              restored = n;
              cb(null, { index: 1n, archive: undefined });
            })();
          }) as grpc.UntypedHandleCall,
        },
      },
      { restoreBytesMax: MiB },
    );
  });
  after(async () => stop(env));

  const expect = { Expect: '100-continue' };
  // A refused request, or one whose declared body is over its cap, is answered at once: no `100 Continue` first
  // (the client would start sending a body that is never read), and its connection is closed.
  const refused: ReadonlyArray<readonly [string, string, number]> = [
    ['a restore without a key', withBody('PUT', '/v1/operator/snapshot', expect, 64 * KiB), 403],
    ['a restore with a wrong key', withBody('PUT', '/v1/operator/snapshot', { ...expect, 'X-Nomad-Token': 'wrong-key-00000' }, 64 * KiB), 403],
    ['a restore with a read-only key', withBody('PUT', '/v1/operator/snapshot', { ...expect, 'X-Nomad-Token': READ_KEY }, 64 * KiB), 403],
    ['a restore over restoreBytesMax', withBody('PUT', '/v1/operator/snapshot', { ...expect, 'X-Nomad-Token': KEY }, 2 * MiB), 413],
    ['a Meilisearch call with a wrong key', withBody('POST', '/snapshots', { ...expect, Authorization: 'Bearer wrong-key-00000' }, 100), 403],
    ['a JSON body over 64 KiB', withBody('POST', '/snapshots', { ...expect, Authorization: `Bearer ${KEY}` }, 65 * KiB), 413],
  ];
  for (const [name, head, code] of refused) {
    it(`${name}: ${code} without 100 Continue, then the socket is closed`, async () => {
      const { res, socket } = await exchange(env?.port ?? 0, head);
      try {
        assert.equal(res.status, code);
        assert.ok(await closedWithin(socket, 5_000), 'the server kept the connection open, waiting for a body it did not ask for');
      } finally {
        socket.destroy();
      }
    });
  }

  it('an accepted restore and an accepted JSON call get 100 Continue, then their answer once the body is sent', async () => {
    const body = Buffer.alloc(300 * KiB, 5);
    for (const [head, payload, code] of [
      [withBody('PUT', '/v1/operator/snapshot', { ...expect, 'X-Nomad-Token': KEY }, body.length), body, 200],
      [withBody('POST', '/snapshots', { ...expect, Authorization: `Bearer ${KEY}` }, 2), Buffer.from('{}'), 202],
    ] as const) {
      const { res, socket } = await exchange(env?.port ?? 0, head);
      try {
        assert.equal(res.status, 100);
        const answer = readResponse(socket);
        socket.write(payload);
        assert.equal((await answer).status, code);
      } finally {
        socket.destroy();
      }
    }
    assert.equal(restored, body.length);
  });
});

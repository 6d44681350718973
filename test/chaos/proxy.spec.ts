import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { caFiles, channelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../src/tls/index.js';
import { SeededRng } from '../harness/rng.js';
import { LinkProxy, ProxyMesh, formatFault, type Fault } from './proxy.js';

// ---------------------------------------------------------------- helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** cleanups run after every test (reverse order), so sockets and servers close even when a test fails. */
let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  const cs = cleanups.reverse();
  cleanups = [];
  for (const c of cs) await c();
});

const MiB = 1024 * 1024;

/** deterministic payload of n bytes (n a multiple of 4). */
function payload(n: number, seed: number): Buffer {
  const rng = new SeededRng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE(rng.nextU32(), i);
  return b;
}

interface Echo {
  readonly address: string;
  readonly server: net.Server;
  /** server-side sockets, in accept order. */
  readonly sockets: net.Socket[];
  /** bytes received over all connections. */
  received: number;
  close(): Promise<void>;
}

/** startEcho: a TCP echo server (pipe with backpressure) on 127.0.0.1:0 that records what it receives. */
async function startEcho(): Promise<Echo> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    s.on('error', () => {});
    s.on('data', (b: Buffer) => (echo.received += b.length));
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const echo: Echo = {
    address: `127.0.0.1:${port}`,
    server,
    sockets,
    received: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  cleanups.push(() => echo.close());
  return echo;
}

async function startProxy(target: string, extra: Partial<ConstructorParameters<typeof LinkProxy>[0]> = {}): Promise<LinkProxy> {
  const p = new LinkProxy({ from: 'n1', to: 'n2', target, rng: new SeededRng(42), ...extra });
  await p.start();
  cleanups.push(() => p.close());
  return p;
}

interface Client {
  readonly sock: net.Socket;
  readonly chunks: Buffer[];
  received(): Buffer;
  bytes: number;
  closed: boolean;
  ended: boolean;
  error: NodeJS.ErrnoException | undefined;
}

async function dial(address: string): Promise<Client> {
  const i = address.lastIndexOf(':');
  const sock = net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)) });
  const c: Client = {
    sock,
    chunks: [],
    received: () => Buffer.concat(c.chunks),
    bytes: 0,
    closed: false,
    ended: false,
    error: undefined,
  };
  sock.on('data', (b: Buffer) => {
    c.chunks.push(b);
    c.bytes += b.length;
  });
  sock.on('end', () => (c.ended = true));
  sock.on('close', () => (c.closed = true));
  sock.on('error', (e: NodeJS.ErrnoException) => (c.error = e));
  cleanups.push(() => {
    sock.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return c;
}

/** roundTrip writes msg and waits until the echo of it has arrived. */
async function roundTrip(c: Client, msg: string): Promise<void> {
  const before = c.bytes;
  c.sock.write(msg);
  await waitFor(`echo of ${msg}`, () => c.bytes >= before + msg.length);
  assert.equal(c.received().subarray(before).toString(), msg);
}

function tcpHandles(): { sockets: number; servers: number; timers: number } {
  const info = process.getActiveResourcesInfo();
  return {
    sockets: info.filter((r) => r === 'TCPSocketWrap').length,
    servers: info.filter((r) => r === 'TCPServerWrap').length,
    timers: info.filter((r) => r === 'Timeout').length,
  };
}

describe('chaos proxy', function () {
  this.timeout(10_000);

  // ---------------------------------------------------------------- TCP echo

  describe('LinkProxy over a TCP echo server', () => {
    it('pass: echoes several MiB byte-exact both ways with backpressure and counts bytes', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      const data = payload(16 * MiB, 1);
      // The client does not read at first: the echo's answers pile up until the
      // proxy has to pause its upstream socket (backpressure, not buffering).
      c.sock.pause();
      c.sock.write(data);
      await waitFor('the proxy to apply backpressure', () => proxy.stats().pauses > 0, 5000);
      await sleep(200);
      // Without backpressure the proxy would read the whole echo from upstream
      // and hold it in memory (socket buffer or queue); with it, what it takes
      // stalls at what the kernel buffers hold (about 4 MB on loopback).
      const stalled = proxy.stats().bytesBackward;
      assert.ok(stalled < data.length - 4 * MiB, `proxy passed ${stalled} bytes while the client was not reading`);
      assert.ok(proxy.stats().peakQueuedBytes < MiB, `proxy queued ${proxy.stats().peakQueuedBytes} bytes`);
      c.sock.resume();
      await waitFor('the full echo', () => c.bytes >= data.length, 8000);
      assert.ok(c.received().equals(data), 'echo is byte-exact');
      const st = proxy.stats();
      assert.equal(st.bytesForward, data.length);
      assert.equal(st.bytesBackward, data.length);
      assert.equal(st.discardedBytes, 0);
      assert.equal(st.connections, 1);
      assert.equal(st.open, 1);
    });

    it('pass: a half-close travels through and both sides close', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      await roundTrip(c, 'bye');
      c.sock.end();
      await waitFor('client close', () => c.ended && c.closed);
      await waitFor('proxy connection gone', () => proxy.stats().open === 0);
    });

    it('blackhole: nothing flows, nothing closes; on heal only connections that lost bytes are destroyed', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const idle = await dial(proxy.address);
      const busy = await dial(proxy.address);
      await roundTrip(idle, 'idle');
      await roundTrip(busy, 'busy');
      const receivedBefore = echo.received;

      proxy.setFault({ kind: 'blackhole' });
      busy.sock.write('lost-1');
      const fresh = await dial(proxy.address); // accepted while blackholed
      fresh.sock.write('lost-2');
      // the server side pushes too: discarded backward as well
      await waitFor('echo accepted the fresh connection', () => echo.sockets.length === 3);
      echo.sockets[0]!.write('push');
      await sleep(300);
      assert.equal(echo.received, receivedBefore, 'server got nothing');
      assert.equal(busy.bytes, 4, 'busy got nothing new');
      assert.equal(fresh.bytes, 0);
      assert.equal(idle.bytes, 4, 'push was discarded');
      assert.ok(!busy.closed && !fresh.closed && !idle.closed, 'nothing closed while blackholed');
      assert.equal(proxy.stats().discardedBytes, 'lost-1'.length + 'lost-2'.length + 'push'.length);

      proxy.setFault({ kind: 'pass' });
      await waitFor('broken connections to close', () => busy.closed && fresh.closed);
      // the idle connection lost the server's push, so it is broken too.
      await waitFor('idle (lost the push) to close', () => idle.closed);
      assert.equal(proxy.stats().brokenClosed, 3);
      const next = await dial(proxy.address);
      await roundTrip(next, 'clean again');
    });

    it('blackhole: a connection that lost nothing stays open after heal', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const quiet = await dial(proxy.address);
      const loud = await dial(proxy.address);
      await roundTrip(quiet, 'a');
      proxy.setFault({ kind: 'blackhole' });
      loud.sock.write('dropped');
      await waitFor('discard', () => proxy.stats().discardedBytes === 7);
      proxy.setFault({ kind: 'pass' });
      await waitFor('loud to close', () => loud.closed);
      await sleep(50);
      assert.ok(!quiet.closed);
      await roundTrip(quiet, 'still here');
      assert.equal(proxy.stats().brokenClosed, 1);
    });

    it('cut-forward: the server receives nothing while backward data still flows', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      await waitFor('upstream connection', () => echo.sockets.length === 1);
      proxy.setFault({ kind: 'cut-forward' });
      c.sock.write('request');
      echo.sockets[0]!.write('answer');
      await waitFor('backward data', () => c.bytes === 'answer'.length);
      await sleep(300);
      assert.equal(echo.received, 0, 'server received nothing');
      assert.equal(c.received().toString(), 'answer', 'no echo came back');
      assert.equal(proxy.stats().discardedBytes, 'request'.length);
      assert.ok(!c.closed);
      proxy.setFault({ kind: 'pass' });
      await waitFor('the broken connection to close', () => c.closed);
    });

    it('cut-backward: the server receives the request, the client receives nothing', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      proxy.setFault({ kind: 'cut-backward' });
      c.sock.write('request');
      await waitFor('server to receive', () => echo.received === 'request'.length);
      await sleep(300);
      assert.equal(c.bytes, 0, 'client received nothing');
      assert.equal(proxy.stats().discardedBytes, 'request'.length, 'the echo was discarded');
      assert.equal(proxy.stats().bytesForward, 'request'.length);
      assert.ok(!c.closed);
    });

    it('delay: a round trip takes at least twice the one-way delay', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      await roundTrip(c, 'warm');
      proxy.setFault({ kind: 'delay', ms: 60, jitterMs: 0 });
      const t0 = performance.now();
      await roundTrip(c, 'slow');
      const rtt = performance.now() - t0;
      assert.ok(rtt >= 2 * 60 - 2, `round trip ${rtt.toFixed(1)} ms < 120 ms`);
    });

    it('delay with jitter keeps byte order over many small chunks', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      proxy.setFault({ kind: 'delay', ms: 2, jitterMs: 25 });
      let sent = '';
      for (let i = 0; i < 150; i++) {
        const msg = `${i},`;
        sent += msg;
        c.sock.write(msg);
        if (i % 3 === 2) await sleep(1); // separate chunks, spread over the jitter window
      }
      await waitFor('all echoes', () => c.bytes >= sent.length);
      assert.equal(c.received().toString(), sent);
    });

    it('delay: a full delay queue pauses the source instead of growing memory', async () => {
      const echo = await startEcho();
      const cap = 256 * 1024;
      const proxy = await startProxy(echo.address, { maxQueuedBytes: cap });
      const c = await dial(proxy.address);
      proxy.setFault({ kind: 'delay', ms: 20, jitterMs: 5 });
      const data = payload(2 * MiB, 2);
      c.sock.write(data);
      await waitFor('the full echo', () => c.bytes >= data.length, 8000);
      assert.ok(c.received().equals(data), 'byte-exact through the delay queue');
      const st = proxy.stats();
      assert.ok(st.pauses > 0, 'the source was paused');
      // at most one more read (<= 64 KiB) arrives after the pause; allow two.
      assert.ok(st.peakQueuedBytes <= cap + 128 * 1024, `peak queue ${st.peakQueuedBytes}`);
    });

    it('reset p=1: the connection is reset on the first chunk', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      await waitFor('upstream connection', () => echo.sockets.length === 1);
      proxy.setFault({ kind: 'reset', probability: 1 });
      c.sock.write('doomed');
      await waitFor('client close', () => c.closed);
      assert.equal(c.error?.code, 'ECONNRESET');
      assert.equal(c.bytes, 0);
      await waitFor('server side close', () => echo.sockets[0]!.destroyed);
      assert.equal(echo.received, 0);
      assert.equal(proxy.stats().resets, 1);
      await waitFor('proxy connection gone', () => proxy.stats().open === 0);
    });

    it('reset p=0: never resets', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address);
      const c = await dial(proxy.address);
      proxy.setFault({ kind: 'reset', probability: 0 });
      for (let i = 0; i < 50; i++) await roundTrip(c, `m${i}`);
      assert.equal(proxy.stats().resets, 0);
      assert.ok(!c.closed);
    });

    it('setFault rejects nonsense faults', async () => {
      const proxy = new LinkProxy({ from: 'a', to: 'b', target: '127.0.0.1:1', rng: new SeededRng(1) });
      assert.throws(() => proxy.setFault({ kind: 'reset', probability: 1.5 }), RangeError);
      assert.throws(() => proxy.setFault({ kind: 'delay', ms: -1, jitterMs: 0 }), RangeError);
      assert.throws(() => proxy.setFault({ kind: 'delay', ms: Number.NaN, jitterMs: 0 }), RangeError);
      assert.equal(proxy.fault.kind, 'pass');
      assert.throws(() => proxy.address, /not started/);
      await proxy.close();
    });

    it('maxConnections: connections beyond the limit are closed', async () => {
      const echo = await startEcho();
      const proxy = await startProxy(echo.address, { maxConnections: 1 });
      const first = await dial(proxy.address);
      await roundTrip(first, 'one');
      const second = await dial(proxy.address);
      await waitFor('the extra connection to close', () => second.closed);
      await roundTrip(first, 'still one');
      assert.equal(proxy.stats().connections, 1);
    });

    it('setTarget: new connections go to the new target, open ones stay', async () => {
      const a = await startEcho();
      const b = await startEcho();
      const proxy = await startProxy(a.address);
      const c1 = await dial(proxy.address);
      await roundTrip(c1, 'to-a');
      proxy.setTarget(b.address);
      const c2 = await dial(proxy.address);
      await roundTrip(c2, 'to-b');
      await roundTrip(c1, 'still-a');
      assert.equal(a.received, 'to-a'.length + 'still-a'.length);
      assert.equal(b.received, 'to-b'.length);
    });

    it('close() destroys every socket, clears delay timers and leaves no open handles', async () => {
      const echo = await startEcho();
      const base = tcpHandles();
      const proxy = new LinkProxy({ from: 'n1', to: 'n2', target: echo.address, rng: new SeededRng(3) });
      await proxy.start();
      const c1 = await dial(proxy.address);
      const c2 = await dial(proxy.address);
      await waitFor('upstream connections', () => echo.sockets.length === 2);
      proxy.setFault({ kind: 'delay', ms: 5000, jitterMs: 0 });
      c1.sock.write('held in the delay queue');
      await sleep(20);
      assert.ok(tcpHandles().timers > base.timers, 'a delay timer is armed');
      await proxy.close();
      assert.equal(proxy.stats().open, 0);
      await waitFor('clients to see the close', () => c1.closed && c2.closed);
      await waitFor('echo sockets to close', () => echo.sockets.every((s) => s.destroyed));
      await assert.rejects(dial(proxy.address), /ECONNREFUSED/);
      await sleep(10);
      const after = tcpHandles();
      // <= rather than ===: a socket of an earlier test may still be closing at `base`.
      assert.ok(after.servers <= base.servers, 'proxy server closed');
      assert.ok(after.sockets <= base.sockets, 'no socket left');
      assert.ok(after.timers <= base.timers, 'no timer left');
    });
  });

  // ---------------------------------------------------------------- gRPC

  describe('LinkProxy with gRPC (HTTP/2)', () => {
    const ident = (b: Buffer): Buffer => b;
    const service: grpc.ServiceDefinition = {
      unary: {
        path: '/chaos.Echo/Unary',
        requestStream: false,
        responseStream: false,
        requestSerialize: ident,
        requestDeserialize: ident,
        responseSerialize: ident,
        responseDeserialize: ident,
      },
      bidi: {
        path: '/chaos.Echo/Bidi',
        requestStream: true,
        responseStream: true,
        requestSerialize: ident,
        requestDeserialize: ident,
        responseSerialize: ident,
        responseDeserialize: ident,
      },
    };

    async function startGrpc(): Promise<string> {
      const server = new grpc.Server();
      server.addService(service, {
        unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request),
        bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
          call.on('data', (b: Buffer) => call.write(b));
          call.on('end', () => call.end());
          call.on('error', () => {});
        },
      });
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
      );
      cleanups.push(() => server.forceShutdown());
      return `127.0.0.1:${port}`;
    }

    function client(address: string): grpc.Client {
      const c = new grpc.Client(address, grpc.credentials.createInsecure(), {
        'grpc.initial_reconnect_backoff_ms': 50,
        'grpc.max_reconnect_backoff_ms': 200,
      });
      cleanups.push(() => c.close());
      return c;
    }

    function unary(c: grpc.Client, msg: string, deadlineMs: number): Promise<string> {
      return new Promise((resolve, reject) => {
        c.makeUnaryRequest(
          '/chaos.Echo/Unary',
          ident,
          ident,
          Buffer.from(msg),
          new grpc.Metadata(),
          { deadline: Date.now() + deadlineMs },
          (err, res) => (err ? reject(err) : resolve(res!.toString())),
        );
      });
    }

    function bidi(c: grpc.Client): {
      call: grpc.ClientDuplexStream<Buffer, Buffer>;
      got: string[];
      status: { code: number | undefined };
    } {
      const call = c.makeBidiStreamRequest('/chaos.Echo/Bidi', ident, ident, new grpc.Metadata());
      const got: string[] = [];
      const status: { code: number | undefined } = { code: undefined };
      call.on('data', (b: Buffer) => got.push(b.toString()));
      call.on('error', (e: grpc.ServiceError) => (status.code = e.code));
      call.on('status', (s: grpc.StatusObject) => (status.code ??= s.code));
      cleanups.push(() => call.cancel());
      return { call, got, status };
    }

    it('pass: unary and a bidi stream work through the proxy', async () => {
      const target = await startGrpc();
      const proxy = await startProxy(target);
      const c = client(proxy.address);
      assert.equal(await unary(c, 'hello', 3000), 'hello');
      const s = bidi(c);
      for (const m of ['a', 'b', 'c']) s.call.write(Buffer.from(m));
      await waitFor('bidi echoes', () => s.got.length === 3);
      assert.deepEqual(s.got, ['a', 'b', 'c']);
      s.call.end();
      await waitFor('bidi status', () => s.status.code !== undefined);
      assert.equal(s.status.code, grpc.status.OK);
      assert.ok(proxy.stats().bytesForward > 0 && proxy.stats().bytesBackward > 0);
    });

    it('blackhole: a deadline call fails with DEADLINE_EXCEEDED, an open stream dies on heal, then calls work again', async () => {
      const target = await startGrpc();
      const proxy = await startProxy(target);
      const c = client(proxy.address);
      assert.equal(await unary(c, 'before', 3000), 'before');
      const s = bidi(c);
      s.call.write(Buffer.from('x'));
      await waitFor('first stream echo', () => s.got.length === 1);

      proxy.setFault({ kind: 'blackhole' });
      await assert.rejects(unary(c, 'during', 300), (e: grpc.ServiceError) => e.code === grpc.status.DEADLINE_EXCEEDED);
      s.call.write(Buffer.from('y'));
      await sleep(100);
      assert.deepEqual(s.got, ['x'], 'nothing flows on the stream');
      assert.equal(s.status.code, undefined, 'the stream is still open (silent peer)');

      proxy.setFault({ kind: 'pass' });
      // the broken HTTP/2 connection is destroyed: the open stream fails ...
      await waitFor('stream failure', () => s.status.code !== undefined);
      assert.equal(s.status.code, grpc.status.UNAVAILABLE);
      // ... and the client reconnects on a clean connection.
      await waitFor('channel to notice', () => c.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY);
      assert.equal(await unary(c, 'after', 3000), 'after');
      assert.equal(proxy.stats().connections, 2);
      assert.equal(proxy.stats().brokenClosed, 1);
    });
  });

  // ---------------------------------------------------------------- TLS through the proxy

  describe('LinkProxy with mutual TLS end to end (the chaos cluster\'s peer plane)', function () {
    this.timeout(30_000);
    const ident = (b: Buffer): Buffer => b;
    /** whoami answers the member id of the client certificate the server verified ('' when none). */
    const service: grpc.ServiceDefinition = {
      whoami: {
        path: '/chaos.Tls/WhoAmI',
        requestStream: false,
        responseStream: false,
        requestSerialize: ident,
        requestDeserialize: ident,
        responseSerialize: ident,
        responseDeserialize: ident,
      },
    };
    let dir: string;
    let ca: string;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'snapcoord-proxy-tls-'));
      await writeCa(dir);
      ca = caFiles(dir).caFile;
      // As the chaos cluster issues them: member id + IP SAN 127.0.0.1.
      await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] });
      await writeNodeCert(dir, 'n2', { ips: ['127.0.0.1'] });
      // Signed by the same CA but naming no address the proxy is reached at.
      await writeNodeCert(dir, 'n3', { dns: ['elsewhere.example'], ips: ['10.9.9.9'] });
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    /** startTlsServer: a gRPC server with `id`'s certificate that requires a client certificate signed by the CA. */
    async function startTlsServer(id: string): Promise<string> {
      const f = nodeCertFiles(dir, id);
      const server = new grpc.Server();
      server.addService(service, {
        whoami: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
          cb(null, Buffer.from(memberIdOf(call.getAuthContext().sslPeerCertificate) ?? '')),
      });
      const creds = serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: ca, requireClientCert: true, });
      const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
      cleanups.push(() => server.forceShutdown());
      return `127.0.0.1:${port}`;
    }

    function whoami(address: string, creds: grpc.ChannelCredentials): Promise<string> {
      const c = new grpc.Client(address, creds);
      cleanups.push(() => c.close());
      return new Promise((resolve, reject) => {
        c.makeUnaryRequest('/chaos.Tls/WhoAmI', ident, ident, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) =>
          err ? reject(err) : resolve(res!.toString()),
        );
      });
    }

    const clientCreds = (id: string): grpc.ChannelCredentials => {
      const f = nodeCertFiles(dir, id);
      return channelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile });
    };

    it('a node dialing the proxy verifies the target node\'s certificate against 127.0.0.1, and the target sees the dialer\'s certificate', async () => {
      const proxy = await startProxy(await startTlsServer('n2'));
      assert.equal(await whoami(proxy.address, clientCreds('n1')), 'n1');
      assert.ok(proxy.stats().connections >= 1 && proxy.stats().bytesForward > 0, 'the call went through the proxy');
    });

    it('a target whose certificate does not name 127.0.0.1 is refused through the proxy (host name verification is on)', async () => {
      const proxy = await startProxy(await startTlsServer('n3'));
      await assert.rejects(whoami(proxy.address, clientCreds('n1')), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE, e.message);
        assert.match(e.details, /IP: 127\.0\.0\.1 is not in the cert's list/, e.details);
        return true;
      });
    });

    it('through the proxy a dialer without a client certificate, or in plaintext, is refused', async () => {
      const proxy = await startProxy(await startTlsServer('n2'));
      await assert.rejects(whoami(proxy.address, channelCredentialsFromFiles({ caFile: ca })), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
      await assert.rejects(whoami(proxy.address, grpc.credentials.createInsecure()), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
    });
  });

  // ---------------------------------------------------------------- mesh

  describe('ProxyMesh', () => {
    const dummy = (n: number): Record<string, string> =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`n${i + 1}`, `127.0.0.1:${7001 + i}`]));

    async function startMesh(targets: Record<string, string>): Promise<ProxyMesh> {
      const m = new ProxyMesh(targets, 99);
      await m.start();
      cleanups.push(() => m.close());
      return m;
    }

    function faultMap(m: ProxyMesh): Record<string, string> {
      return Object.fromEntries(m.all().map((l) => [l.name, formatFault(l.fault)]));
    }

    it('dialMap gives each node one distinct proxy per peer', async () => {
      const m = await startMesh(dummy(3));
      const d1 = m.dialMap('n1');
      assert.deepEqual(Object.keys(d1).sort(), ['n2', 'n3']);
      assert.equal(d1.n2, m.link('n1', 'n2').address);
      assert.equal(d1.n3, m.link('n1', 'n3').address);
      assert.equal(m.link('n1', 'n2').target, '127.0.0.1:7002');
      const all = m.ids.flatMap((id) => Object.values(m.dialMap(id)));
      assert.equal(all.length, 6);
      assert.equal(new Set(all).size, 6, 'one listener per directed link');
      assert.throws(() => m.link('n1', 'n1'));
      assert.throws(() => m.dialMap('n9'));
    });

    it('partition blackholes exactly the cross-group links; heal restores pass', () => {
      const m = new ProxyMesh(dummy(5), 1);
      m.partition([
        ['n1', 'n2'],
        ['n3', 'n4', 'n5'],
      ]);
      const g = (id: string): number => (['n1', 'n2'].includes(id) ? 0 : 1);
      for (const l of m.all()) {
        assert.equal(l.fault.kind, g(l.from) === g(l.to) ? 'pass' : 'blackhole', l.name);
      }
      // nodes in no group form one more group
      m.partition([['n1']]);
      for (const l of m.all()) {
        assert.equal(l.fault.kind, l.from === 'n1' || l.to === 'n1' ? 'blackhole' : 'pass', l.name);
      }
      m.heal();
      assert.ok(m.all().every((l) => l.fault.kind === 'pass'));
      assert.equal(m.describe(), 'all pass');
    });

    it('oneWay(a, b) cuts forward on a->b and backward on b->a, nothing else', () => {
      const m = new ProxyMesh(dummy(3), 1);
      m.oneWay('n1', 'n2');
      assert.deepEqual(faultMap(m), {
        'n1->n2': 'cut-forward',
        'n1->n3': 'pass',
        'n2->n1': 'cut-backward',
        'n2->n3': 'pass',
        'n3->n1': 'pass',
        'n3->n2': 'pass',
      });
      assert.equal(m.describe(), 'cut-forward: n1->n2; cut-backward: n2->n1; rest pass');
    });

    it('isolate and delayAll set the right links; describe is one line', () => {
      const m = new ProxyMesh(dummy(3), 1);
      m.isolate('n3');
      for (const l of m.all()) {
        assert.equal(l.fault.kind, l.from === 'n3' || l.to === 'n3' ? 'blackhole' : 'pass', l.name);
      }
      assert.equal(m.describe(), 'blackhole: n1->n3 n2->n3 n3->n1 n3->n2; rest pass');
      m.delayAll(30, 5);
      const f: Fault = { kind: 'delay', ms: 30, jitterMs: 5 };
      assert.ok(m.all().every((l) => formatFault(l.fault) === formatFault(f)));
      assert.equal(m.describe(), 'all delay(30+5ms)');
      assert.ok(!m.describe().includes('\n'));
    });

    it('oneWay over real traffic: n1 reaches neither n2 with requests nor with answers', async () => {
      const e1 = await startEcho();
      const e2 = await startEcho();
      const m = await startMesh({ n1: e1.address, n2: e2.address });
      m.oneWay('n1', 'n2');
      // n1 -> n2: n1's request never reaches n2
      const a = await dial(m.dialMap('n1').n2!);
      a.sock.write('from-n1');
      // n2 -> n1: n2's request reaches n1, n1's answer never comes back
      const b = await dial(m.dialMap('n2').n1!);
      b.sock.write('from-n2');
      await waitFor('n1 to receive n2 request', () => e1.received === 'from-n2'.length);
      await sleep(300);
      assert.equal(e2.received, 0);
      assert.equal(a.bytes, 0);
      assert.equal(b.bytes, 0);
      m.heal();
      await waitFor('broken connections to close', () => a.closed && b.closed);
      const c = await dial(m.dialMap('n1').n2!);
      await roundTrip(c, 'healed');
    });

    it('setTarget reroutes every link toward a restarted node', async () => {
      const e1 = await startEcho();
      const e2 = await startEcho();
      const e2b = await startEcho();
      const m = await startMesh({ n1: e1.address, n2: e2.address });
      m.setTarget('n2', e2b.address);
      assert.equal(m.link('n1', 'n2').target, e2b.address);
      assert.equal(m.link('n2', 'n1').target, e1.address);
      const c = await dial(m.dialMap('n1').n2!);
      await roundTrip(c, 'restarted');
      assert.equal(e2.received, 0);
      assert.equal(e2b.received, 'restarted'.length);
    });
  });
});

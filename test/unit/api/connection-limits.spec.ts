/**
 * What the gRPC planes' listeners hold (ConnectionLimiter), against real
 * TCP connections: silent connections beyond a plane's caps are closed,
 * oldest first, and never push out a connection whose calls passed the
 * plane's gate (the client plane's API key); the node serves throughout.
 * Before, grpc-js held every connection anyone opened, silent or not, until
 * the process ran out of file descriptors (and its storage with it).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { PEER_STREAMS_PER_CONNECTION_MAX } from '../../../src/api/server.js';
import { RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import { KvClient } from '../../../src/client/kv-client.js';
import { CLUSTER_ID_METADATA_KEY } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';
import { soloServer } from './harness.js';

const KEY = 'connection-limits-admin-key';
const CLIENT = { connectionsMax: 8, perHostMax: 6 };
const PEER = { connectionsMax: 4, perHostMax: 3 };
const enc = new TextEncoder();

interface Silent {
  readonly sockets: Socket[];
  closed(): number;
}

/** silent opens `n` TCP connections to `port` that never send a byte, and counts those the server closes. */
function silent(port: number, n: number): Silent {
  let closed = 0;
  const sockets = Array.from({ length: n }, () => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.on('data', () => undefined); // what the server sends (its HTTP/2 settings) is read, so its close is seen
    s.on('close', () => closed++);
    return s;
  });
  return { sockets, closed: () => closed };
}

describe('gRPC planes: connections held per plane and per host (real TCP)', function () {
  this.timeout(60_000);
  const opened: Silent[] = [];
  const clients: KvClient[] = [];
  after(() => {
    for (const o of opened) for (const s of o.sockets) s.destroy();
    for (const c of clients) c.close();
  });

  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY })],
    clientConnections: CLIENT,
    peerConnections: PEER,
  });

  function put(c: KvClient, i: number): Promise<unknown> {
    return c.put({ key: enc.encode(`k/${i}`), value: enc.encode('v') }, { deadlineMs: 10_000 });
  }

  it('silent connections beyond the caps are closed, the oldest first, on both planes', async () => {
    const client = silent(solo.api.port, 40);
    const peer = silent(solo.api.peerPort, 40);
    opened.push(client, peer);
    // One host (127.0.0.1): its cap is the smaller one.
    await until('the client plane to keep at most its per-host cap', 10_000, () => (client.closed() >= 40 - CLIENT.perHostMax ? true : undefined));
    await until('the peer plane to keep at most its per-host cap', 10_000, () => (peer.closed() >= 40 - PEER.perHostMax ? true : undefined));
    const held = (o: Silent): number[] => o.sockets.flatMap((s, i) => (s.destroyed ? [] : [i]));
    assert.deepEqual(held(client), [34, 35, 36, 37, 38, 39], 'the newest are held');
    assert.deepEqual(held(peer), [37, 38, 39]);
    // The node still serves a caller with a key (its connection pushes out a silent one).
    const kv = new KvClient(solo.api.address, { apiKey: KEY });
    clients.push(kv);
    await put(kv, 0);
  });

  it('a connection whose calls passed the key check is never pushed out by silent ones or by callers with a wrong key', async () => {
    // Connections of their own (grpc-js would otherwise share the first test's client's connection).
    const own = { 'grpc.use_local_subchannel_pool': 1 };
    const kv = new KvClient(solo.api.address, { apiKey: KEY, channelOptions: own });
    clients.push(kv);
    await put(kv, 1);
    const wrong = new KvClient(solo.api.address, { apiKey: 'not-the-key', channelOptions: own });
    clients.push(wrong);
    await assert.rejects(put(wrong, 2), /invalid API key/);
    const flood = silent(solo.api.port, 40);
    opened.push(flood);
    // Two proven connections (the first test's client and this one) keep their places: 4 are left for the rest.
    await until('the flood to be cut to the cap', 10_000, () => (flood.closed() >= 40 - (CLIENT.perHostMax - 2) ? true : undefined));
    // The proven connection kept its place (its channel never left READY); the wrong key's was pushed out.
    assert.equal(kv.raw.getChannel().getConnectivityState(false), grpc.connectivityState.READY);
    await until('the wrong key\'s connection to be closed', 10_000, () => (wrong.raw.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY ? true : undefined));
    for (let i = 0; i < 5; i++) await put(kv, 10 + i);
    assert.equal(solo.node.status().role, 'leader');
  });
});

describe('gRPC client plane: calls that need no key do not hold places (real TCP)', function () {
  this.timeout(60_000);
  const LIMITS = { connectionsMax: 4, perHostMax: 4 };
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY })],
    clientConnections: LIMITS,
  });

  it('a caller with no key that fills the plane with health checks is pushed out by a caller with a key', async () => {
    // Health/Check is open (load balancers probe without credentials). Before, a call it let through made its
    // connection proven like a keyed one, so anyone could hold every place with one check per connection and
    // every client with a key was refused at accept until those connections went away.
    const Health = grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'grpc.health.v1.Health');
    type HealthClient = grpc.Client & { check(req: { service: string }, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: { status: string }) => void): void };
    const own = { 'grpc.use_local_subchannel_pool': 1 };
    const probes = Array.from({ length: LIMITS.connectionsMax }, () => new Health(solo.api.address, grpc.credentials.createInsecure(), own) as unknown as HealthClient);
    const kv = new KvClient(solo.api.address, { apiKey: KEY, channelOptions: own });
    try {
      for (const p of probes) {
        const r = await new Promise<{ status: string }>((resolve, reject) => p.check({ service: '' }, { deadline: Date.now() + 5_000 }, (e, res) => (e ? reject(e) : resolve(res))));
        assert.equal(r.status, 'SERVING');
      }
      const ready = probes.filter((p) => p.getChannel().getConnectivityState(false) === grpc.connectivityState.READY).length;
      assert.equal(ready, LIMITS.connectionsMax, 'every probe holds a connection of its own');
      await kv.put({ key: enc.encode('after-probes'), value: enc.encode('1') }, { deadlineMs: 5_000 });
      await until('a probe connection to be closed for the keyed one', 10_000, () =>
        probes.some((p) => p.getChannel().getConnectivityState(false) !== grpc.connectivityState.READY) ? true : undefined,
      );
    } finally {
      for (const p of probes) p.close();
      kv.close();
    }
  });
});

describe('gRPC client plane: one API key proves a bounded number of connections (real TCP)', function () {
  this.timeout(60_000);
  const NARROW = 'connection-limits-kv-read-key';
  const LIMITS = { connectionsMax: 6, perHostMax: 6, perOwnerMax: 2 };
  const solo = soloServer({
    interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: NARROW, actions: ['kv.read'] }] })],
    clientConnections: LIMITS,
  });

  it('a kv.read key holding every place with one call per connection is pushed out by another key (before: every other caller refused at accept)', async () => {
    const own = { 'grpc.use_local_subchannel_pool': 1 };
    const narrow = Array.from({ length: LIMITS.connectionsMax }, () => new KvClient(solo.api.address, { apiKey: NARROW, channelOptions: own }));
    const admin = new KvClient(solo.api.address, { apiKey: KEY, channelOptions: own });
    try {
      // One after the other: the first perOwnerMax connections are the key's proven ones.
      for (const c of narrow) await c.get({ key: enc.encode('k'), serializable: true }, { deadlineMs: 5_000 });
      const ready = (cs: KvClient[]): number => cs.filter((c) => c.raw.getChannel().getConnectivityState(false) === grpc.connectivityState.READY).length;
      assert.equal(ready(narrow), LIMITS.connectionsMax, 'the key holds every place');
      await admin.put({ key: enc.encode('after-narrow'), value: enc.encode('1') }, { deadlineMs: 5_000 });
      await until('one of the key\'s unproven connections to be closed for the admin one', 10_000, () => (ready(narrow) < LIMITS.connectionsMax ? true : undefined));
      const kept = narrow.slice(0, LIMITS.perOwnerMax);
      assert.equal(ready(kept), LIMITS.perOwnerMax, 'the connections the key proved keep their places');
      assert.equal(solo.node.status().role, 'leader');
    } finally {
      for (const c of narrow) c.close();
      admin.close();
    }
  });

  it('connections of one key past its proven ones are not pushed out by silent connections (a key shared by many honest clients)', async () => {
    // One key, many honest clients (a fleet behind a NAT, gateways): more connections than it may prove, each with
    // a call let through. Silent connections from anyone (no key at all) then arrive, one after the other, past the
    // caps: each pushes out the oldest silent one, never one of the key's (before: the key's unproven ones went
    // first, being older, so a caller with no key could cut every honest connection past perOwnerMax, again and
    // again). Another key's new connection still may take the place of one of them (the test above).
    const own = { 'grpc.use_local_subchannel_pool': 1 };
    const shared = Array.from({ length: LIMITS.connectionsMax - 1 }, () => new KvClient(solo.api.address, { apiKey: NARROW, channelOptions: own }));
    const port = Number(solo.api.address.split(':')[1]);
    const quiet: Silent[] = [];
    try {
      for (const c of shared) await c.get({ key: enc.encode('k'), serializable: true }, { deadlineMs: 5_000 });
      const ready = (cs: KvClient[]): number => cs.filter((c) => c.raw.getChannel().getConnectivityState(false) === grpc.connectivityState.READY).length;
      assert.equal(ready(shared), shared.length);
      for (let i = 0; i < 6; i++) {
        const q = silent(port, 1);
        quiet.push(q);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Six arrivals on five held connections of a six-place plane: five connections are pushed out.
      const pushedOut = (): number => quiet.reduce((n, q) => n + q.closed(), 0) + shared.length - ready(shared);
      await until('five connections to be pushed out', 10_000, () => (pushedOut() >= 5 ? true : undefined));
      assert.equal(ready(shared), shared.length, 'every connection of the shared key is still open');
      assert.equal(quiet.reduce((n, q) => n + q.closed(), 0), 5, 'the silent connections pushed out one another');
    } finally {
      for (const c of shared) c.close();
      for (const q of quiet) for (const s of q.sockets) s.destroy();
    }
  });
});

/**
 * Freezer: a TCP relay to `port` that can stop relaying without closing anything, as a peer whose host
 * died or was cut off looks to the server (no FIN, no RST, no answer). `upstreamClosed` counts the relay's
 * connections to the server that the server closed.
 */
class Freezer {
  readonly server: Server;
  private readonly pairs: [Socket, Socket][] = [];
  upstreamClosed = 0;

  constructor(port: number) {
    this.server = createServer((down) => {
      const up = connect(port, '127.0.0.1');
      for (const s of [down, up]) s.on('error', () => undefined);
      down.pipe(up);
      up.pipe(down);
      up.on('close', () => {
        this.upstreamClosed++;
        down.destroy();
      });
      this.pairs.push([down, up]);
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return (this.server.address() as { port: number }).port;
  }

  /** freeze: nothing is relayed any more either way; every socket stays open. */
  freeze(): void {
    for (const [down, up] of this.pairs) {
      down.unpipe(up);
      up.unpipe(down);
      down.pause();
      // What the server sends is read and dropped (its pings go unanswered), so only the server can close.
      up.on('data', () => undefined);
      up.resume();
    }
  }

  close(): void {
    for (const [down, up] of this.pairs) {
      down.destroy();
      up.destroy();
    }
    this.server.close();
  }
}

describe('gRPC peer plane: calls per connection and dead connections', function () {
  this.timeout(60_000);
  const solo = soloServer({ peerKeepalive: { timeMs: 500, timeoutMs: 500 } });

  /** appendStream: an admitted AppendEntries call that sends nothing; `opened` once the server answered its headers. */
  function appendStream(session: http2.ClientHttp2Session, onOpen: () => void): http2.ClientHttp2Stream {
    const req = session.request({ ':method': 'POST', ':path': RaftServiceService.appendEntries.path, 'content-type': 'application/grpc', te: 'trailers', [CLUSTER_ID_METADATA_KEY]: 'snapcoord' });
    req.on('error', () => undefined);
    req.on('response', onOpen);
    return req;
  }

  it(`one connection holds at most ${PEER_STREAMS_PER_CONNECTION_MAX} calls at once (before: any number)`, async () => {
    const session = http2.connect(`http://${solo.api.peerAddress}`);
    session.on('error', () => undefined);
    // The server's SETTINGS as they arrived: session.remoteSettings reads undefined fields once the session has
    // closed, which a loaded machine's keepalive or the limiter may do after the count below (seen 1 run in 2 at load 35).
    let announced: number | undefined;
    session.on('remoteSettings', (settings: http2.Settings) => {
      announced = settings.maxConcurrentStreams;
    });
    let opened = 0;
    try {
      const extra = 200;
      for (let i = 0; i < PEER_STREAMS_PER_CONNECTION_MAX + extra; i++) appendStream(session, () => opened++);
      await until('the calls the server takes to open', 20_000, () => (opened >= PEER_STREAMS_PER_CONNECTION_MAX ? true : undefined));
      // Give the server time to open more, were it willing to (it is not: the rest wait on the client's side).
      const seen = opened;
      await until('a few more round trips', 5_000, async () => {
        await new Promise((r) => setTimeout(r, 200));
        return opened === seen ? true : undefined;
      });
      assert.equal(opened, PEER_STREAMS_PER_CONNECTION_MAX, `calls open at once on one connection: ${opened}`);
      assert.equal(announced, PEER_STREAMS_PER_CONNECTION_MAX, 'the SETTINGS the server announced');
    } finally {
      session.destroy();
    }
    await solo.node.propose({ op: 'put', key: enc.encode('after-streams'), value: enc.encode('1') });
  });

  it('a member connection that goes dead without a FIN (its host gone) is closed by keepalive, its calls with it', async () => {
    const relay = new Freezer(solo.api.peerPort);
    const port = await relay.listen();
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      let opened = 0;
      appendStream(session, () => opened++);
      await until('the admitted call to open', 10_000, () => (opened === 1 ? true : undefined));
      relay.freeze();
      // Before, the server held it (and its place among the host's connections, never yielded once proven) for ever.
      await until('the server to close the dead connection', 15_000, () => (relay.upstreamClosed === 1 ? true : undefined));
    } finally {
      session.destroy();
      relay.close();
    }
    await solo.node.propose({ op: 'put', key: enc.encode('after-dead'), value: enc.encode('1') });
  });
});

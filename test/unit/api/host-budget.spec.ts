/**
 * HostBudget (src/api/host-budget.ts) and the client plane's use of it
 * (ConnectionLimiter, real HTTP/2): a host with no key that opens streams
 * past its budget has its connections closed and new ones refused at
 * accept, while a connection from the same host that proved a key keeps
 * being served. Before, a keyless caller opened and reset streams as fast as
 * it liked (dos21: 183,000 in 11 s on 4 connections of a live leader, which
 * lost its leadership 7 times), every one answered on the same connection.
 * Counts only: the budget's clock is a fake one, frozen unless a test moves it.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { connect } from 'node:net';
import * as grpc from '@grpc/grpc-js';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { HostBudget, hostKey, type HostBudgetLimits } from '../../../src/api/host-budget.js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { KvClient } from '../../../src/client/kv-client.js';
import { RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import type { Node } from '../../../src/node/node.js';
import { CLUSTER_ID_METADATA_KEY } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';
import { serveSolo } from './harness.js';

const KEY = 'host-budget-admin-key';
/** READ_KEY: a valid key without kv.write (a misconfigured writer's). */
const READ_KEY = 'host-budget-read-only-key';
const enc = new TextEncoder();

describe('hostKey: what a remote address is budgeted under', () => {
  it('IPv4 as it is, IPv4-mapped IPv6 as its IPv4, IPv6 by its /64, loopback exempt (null)', () => {
    assert.equal(hostKey('192.0.2.7'), '192.0.2.7');
    assert.equal(hostKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(hostKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(hostKey('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(hostKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(hostKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(hostKey('::ffff:c000:207'), '0:0:0:0::/64');
    for (const lo of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) assert.equal(hostKey(lo), null, lo);
  });
});

describe('HostBudget: a token bucket per host, then a lockout that doubles', () => {
  const LIMITS: HostBudgetLimits = { tokensMax: 10, refillPerSec: 2, connectionCost: 3, lockMs: 1_000, lockMsMax: 4_000, hostsMax: 8 };

  it('spends its bucket, is locked out for lockMs, comes back empty, and a second lockout in a row lasts twice as long', () => {
    let now = 0;
    const b = new HostBudget(LIMITS, { nowMs: () => now });
    for (let i = 0; i < 10; i++) assert.equal(b.spend('h', 1), true, `spend ${i}`);
    assert.equal(b.locked('h'), false);
    assert.equal(b.spend('h', 1), false);
    assert.equal(b.locked('h'), true);
    assert.equal(b.spend('other', 1), true, 'another host has its own bucket');
    now = 999;
    assert.equal(b.locked('h'), true);
    now = 1_000;
    assert.equal(b.locked('h'), false);
    assert.equal(b.spend('h', 1), false, 'back with an empty bucket');
    now = 2_999;
    assert.equal(b.locked('h'), true, 'the second lockout lasts 2 s');
    now = 3_000;
    assert.equal(b.locked('h'), false);
    assert.equal(b.lockouts, 2);
    // 5 s of quiet refill the bucket (2 a second): the strikes are forgiven, the next lockout is 1 s again.
    now = 8_000;
    for (let i = 0; i < 10; i++) assert.equal(b.spend('h', 1), true, `refilled ${i}`);
    assert.equal(b.spend('h', 1), false);
    now = 9_000;
    assert.equal(b.locked('h'), false);
  });

  it('a refund (a connection that proved a key) gives tokens back, up to a full bucket, and does not lift a lockout', () => {
    let now = 0;
    const b = new HostBudget(LIMITS, { nowMs: () => now });
    assert.equal(b.spend('h', 9), true);
    b.refund('h', 100);
    for (let i = 0; i < 10; i++) assert.equal(b.spend('h', 1), true);
    assert.equal(b.spend('h', 1), false);
    b.refund('h', 100);
    assert.equal(b.locked('h'), true);
    now = 1_000;
    assert.equal(b.locked('h'), false);
  });

  it('remembers at most hostsMax hosts: the ones as good as new go first', () => {
    let now = 0;
    const b = new HostBudget(LIMITS, { nowMs: () => now });
    for (let i = 0; i < 8; i++) b.spend(`h${i}`, i === 0 ? 11 : 1);
    assert.equal(b.locked('h0'), true);
    now = 500; // h1..h7 refilled (full again), h0 still locked
    b.spend('new', 1);
    assert.equal(b.size, 2);
    assert.equal(b.locked('h0'), true, 'a locked host is not forgotten while others can go');
    for (let i = 0; i < 100; i++) b.spend(`x${i}`, 11);
    assert.ok(b.size <= 8, `${b.size} hosts remembered`);
  });

  it('refuses limits that are not whole numbers >= 1, or lockMsMax below lockMs', () => {
    assert.throws(() => new HostBudget({ ...LIMITS, tokensMax: 0 }), /tokensMax must be a whole number >= 1/);
    assert.throws(() => new HostBudget({ ...LIMITS, refillPerSec: 0.5 }), /refillPerSec/);
    assert.throws(() => new HostBudget({ ...LIMITS, lockMsMax: 10 }), /lockMsMax \(10\) is below lockMs/);
  });
});

/** flood opens streams to `path` with no key on one HTTP/2 connection, one after another, until it is closed or `max` were answered. */
async function flood(port: number, path: string, max: number): Promise<{ answered: number; closed: boolean }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  let closed = false;
  session.on('close', () => (closed = true));
  let answered = 0;
  try {
    for (let i = 0; i < max && !closed && !session.destroyed; i++) {
      const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => undefined);
      stream.on('response', () => answered++);
      stream.end(Buffer.alloc(5));
      await new Promise<void>((resolve) => stream.once('close', () => resolve()));
    }
    await until('the flooding connection to be closed', 10_000, () => (closed ? true : undefined));
    return { answered, closed };
  } finally {
    session.destroy();
  }
}

/** tcpClosedAtOnce: a new TCP connection to `port` is closed by the server before it sends anything (refused at accept). */
function tcpClosedAtOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = 0;
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => (got += d.length));
    s.on('close', () => resolve(got === 0));
    // A held connection gets the server's HTTP/2 settings at once; give up on it after a second.
    setTimeout(() => {
      s.destroy();
    }, 1_000);
  });
}

describe('gRPC client plane: a host that spends its budget without a key is locked out at accept (real HTTP/2)', function () {
  this.timeout(60_000);
  const LIMITS: HostBudgetLimits = { tokensMax: 40, refillPerSec: 1, connectionCost: 4, lockMs: 60_000, lockMsMax: 60_000, hostsMax: 64 };
  let now = 0;
  let api: ApiServer;
  let node: Node;
  let kv: KvClient | null = null;

  // Loopback is exempt in production (hostKey); here 127.0.0.1 stands for a remote host.
  const budget = (): HostBudget => new HostBudget(LIMITS, { nowMs: () => now, keyOf: (a) => a });

  beforeEach(async () => {
    now = 0;
    api = await bindApiServer({
      bindAddress: '127.0.0.1:0',
      peerBindAddress: '127.0.0.1:0',
      interceptors: [clientAuthInterceptor({ adminKey: KEY, keys: [{ key: READ_KEY, actions: ['kv.read'] }] })],
      clientHostBudget: budget(),
    });
    node = await serveSolo(api);
  });

  afterEach(async () => {
    kv?.close();
    kv = null;
    await api?.close(100);
    await node?.stop();
  });

  const put = (c: KvClient, k: string): Promise<unknown> => c.put({ key: enc.encode(k), value: enc.encode('1') }, { deadlineMs: 5_000 });

  it('keyless calls past the budget close their connection and lock the host out; the proven connection of a key from the same host is served', async () => {
    kv = new KvClient(api.address, { apiKey: KEY });
    await put(kv, 'before');
    const { answered } = await flood(api.port, '/snapcoord.v1.KVService/Get', 1_000);
    // 40 tokens: the connection costs 4, so at most 36 streams; before, all 1,000 were answered on it.
    assert.ok(answered <= 36, `${answered} keyless calls answered`);
    assert.ok(api.clientConnections.closedOverBudget >= 1);
    assert.equal(await tcpClosedAtOnce(api.port), true, 'a new connection of the locked host is closed at accept');
    assert.ok(api.clientConnections.lockedOut >= 1);
    await put(kv, 'during');
    // The lockout ends (the fake clock): the host connects again, and a key proves its new connection.
    now = 60_000;
    const fresh = new KvClient(api.address, { apiKey: KEY });
    try {
      await put(fresh, 'after');
    } finally {
      fresh.close();
    }
  });

  it('streams no interceptor sees (a method that does not exist) are charged too', async () => {
    const { answered } = await flood(api.port, '/no.such.Service/Method', 1_000);
    assert.ok(answered <= 36, `${answered} calls to an unknown method answered`);
    assert.equal(await tcpClosedAtOnce(api.port), true);
  });

  it('a valid key without the action is refused, and never charged: its retries do not lock its host (nor the keys behind it) out', async () => {
    // 60 refused calls on one connection and 20 connections with one each: 60 + 20 * (4 + 1) tokens, more than
    // twice the budget of 40. Before, they were charged like calls with no key: the first connection was closed
    // after 36 of them and the host locked out, the admin key's new connection from it refused at accept.
    const misconfigured = new KvClient(api.address, { apiKey: READ_KEY });
    try {
      for (let i = 0; i < 60; i++) {
        await assert.rejects(put(misconfigured, `w${i}`), (err: Error & { code?: number }) => err.code === grpc.status.PERMISSION_DENIED, `call ${i}`);
      }
    } finally {
      misconfigured.close();
    }
    for (let i = 0; i < 20; i++) {
      const c = new KvClient(api.address, { apiKey: READ_KEY });
      try {
        await assert.rejects(put(c, `c${i}`), (err: Error & { code?: number }) => err.code === grpc.status.PERMISSION_DENIED, `connection ${i}`);
      } finally {
        c.close();
      }
    }
    assert.equal(api.clientConnections.lockedOut, 0);
    assert.equal(api.clientConnections.closedOverBudget, 0);
    const admin = new KvClient(api.address, { apiKey: KEY });
    try {
      await put(admin, 'after');
    } finally {
      admin.close();
    }
    // A key that is not valid is still charged like none: its host is locked out. (A new channel: grpc-js shares
    // an open channel's connection between clients of the same address.)
    const bogus = new KvClient(api.address, { apiKey: 'no-such-key' });
    try {
      for (let i = 0; i < 60 && api.clientConnections.closedOverBudget === 0; i++) await put(bogus, `b${i}`).catch(() => undefined);
    } finally {
      bogus.close();
    }
    assert.ok(api.clientConnections.closedOverBudget >= 1, 'an invalid key is charged');
  });

  it('a caller with a key is never charged: its connections give their cost back once proven', async () => {
    // 20 connections would cost 80 tokens (twice the budget) if proving gave nothing back.
    for (let i = 0; i < 20; i++) {
      const c = new KvClient(api.address, { apiKey: KEY });
      try {
        await put(c, `k${i}`);
      } finally {
        c.close();
      }
    }
    assert.equal(api.clientConnections.lockedOut, 0);
    assert.equal(api.clientConnections.closedOverBudget, 0);
  });
});

describe('gRPC peer plane: a host whose calls are not admitted is locked out at accept; an admitted connection from it is kept (real HTTP/2)', function () {
  this.timeout(60_000);
  const LIMITS: HostBudgetLimits = { tokensMax: 40, refillPerSec: 1, connectionCost: 4, lockMs: 60_000, lockMsMax: 60_000, hostsMax: 64 };
  let api: ApiServer;
  let node: Node;

  before(async () => {
    // Loopback is exempt in production (hostKey); here 127.0.0.1 stands for a remote host. The clock stays at 0.
    const peerHostBudget = new HostBudget(LIMITS, { nowMs: () => 0, keyOf: (a) => a });
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', interceptors: [clientAuthInterceptor({ adminKey: KEY })], peerHostBudget });
    node = await serveSolo(api);
  });

  after(async () => {
    await api?.close(100);
    await node?.stop();
  });

  /** admitted opens an AppendEntries call the peer guard admits (the cluster id; no mutual TLS here) and resolves once the server answered its headers. */
  function admitted(session: http2.ClientHttp2Session): Promise<void> {
    const req = session.request({ ':method': 'POST', ':path': RaftServiceService.appendEntries.path, 'content-type': 'application/grpc', te: 'trailers', [CLUSTER_ID_METADATA_KEY]: 'snapcoord' });
    req.on('error', () => undefined);
    return new Promise((resolve) => req.once('response', () => resolve()));
  }

  it('calls without the cluster id past the budget close their connection and lock the host out; the admitted connection still opens calls', async () => {
    const member = http2.connect(`http://${api.peerAddress}`);
    member.on('error', () => undefined);
    try {
      await admitted(member);
      const { answered } = await flood(api.peerPort, RaftServiceService.requestVote.path, 1_000);
      // Before: all 1,000 refused calls were answered on one connection that stayed open.
      assert.ok(answered <= 36, `${answered} refused peer calls answered`);
      assert.equal(await tcpClosedAtOnce(api.peerPort), true, 'a new connection of the locked host is closed at accept');
      assert.ok(api.peerConnections.lockedOut >= 1);
      assert.equal(member.destroyed, false);
      await admitted(member);
    } finally {
      member.destroy();
    }
  });
});

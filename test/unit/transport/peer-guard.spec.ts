/** PeerGuard's bookkeeping: which advertised client addresses it believes, and how often it logs refusals. */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';
import { CLIENT_ADDRESS_METADATA_KEY, CLUSTER_ID_METADATA_KEY, PeerGuard, PeerRefusedError, hostOf, scopeOfMessage, scopeOfPath, type PeerCall } from '../../../src/transport/peer-guard.js';

function call(peer: string, clientAddress: string, cluster = 'c1'): PeerCall {
  const metadata = new grpc.Metadata();
  metadata.set(CLUSTER_ID_METADATA_KEY, cluster);
  if (clientAddress !== '') metadata.set(CLIENT_ADDRESS_METADATA_KEY, clientAddress);
  return { metadata, getPeer: () => peer };
}

const members: Record<string, string> = { n1: '127.0.0.1:7101', n2: 'n2.example:7101' };

describe('PeerGuard: advertised client addresses and refusal logs', () => {
  it('hostOf parses host:port and [v6]:port, and nothing else', () => {
    assert.equal(hostOf('127.0.0.1:7001'), '127.0.0.1');
    assert.equal(hostOf('N1.Example:7001'), 'n1.example');
    assert.equal(hostOf('[::1]:7001'), '::1');
    for (const bad of ['unix:/tmp/x', 'dns:///evil:1', '127.0.0.1', 'a:99999', 'a b:1', '']) assert.equal(hostOf(bad), null, bad);
  });

  it('without mutual TLS: an address on the caller\'s host or the member\'s own peer host is believed, another host\'s is not', () => {
    const g = new PeerGuard({ clusterId: 'c1', isMember: (id) => id in members, peerAddressOf: (id) => members[id] ?? '' });
    g.admit('n1', call('ipv4:10.9.9.9:5555', '10.9.9.9:7001'));
    assert.equal(g.clientAddressOf('n1'), '10.9.9.9:7001', 'the caller\'s own host');
    g.admit('n1', call('ipv4:10.9.9.9:5555', '10.1.1.1:7001'));
    assert.equal(g.clientAddressOf('n1'), '10.9.9.9:7001', 'a third host is not believed');
    g.admit('n2', call('ipv4:172.18.0.3:4000', 'n2.example:7001'));
    assert.equal(g.clientAddressOf('n2'), 'n2.example:7001', 'the member\'s configured peer host');
    g.admit('n1', call('ipv4:127.0.0.1:4000', 'unix:/tmp/evil.sock'));
    assert.equal(g.clientAddressOf('n1'), '10.9.9.9:7001', 'not host:port');
  });

  it('with mutual TLS the address is bound to the certificate\'s member, whatever its host', () => {
    const g = new PeerGuard({ clusterId: 'c1', isMember: () => true, identityOf: () => 'n1' });
    g.admit('n1', call('ipv4:10.9.9.9:5555', 'n1.internal:7001'));
    assert.equal(g.clientAddressOf('n1'), 'n1.internal:7001');
  });

  it('refusals are counted each time but logged once per sending host and reason a minute, whatever ports and `from` they claim', () => {
    const lines: string[] = [];
    const counted: string[] = [];
    let now = 1_000_000;
    const g = new PeerGuard({
      clusterId: 'c1',
      isMember: () => false,
      onRefused: (r) => counted.push(r),
      logger: { debug: () => undefined, warn: (_o, msg) => lines.push(msg ?? '') },
      nowMs: () => now,
    });
    for (let i = 0; i < 200; i++) assert.throws(() => g.admit(`x${i}`, call(`ipv4:10.0.0.9:${10_000 + i}`, '')), PeerRefusedError);
    assert.equal(counted.length, 200);
    assert.equal(lines.length, 1);
    now += 60_001;
    assert.throws(() => g.admit('y', call('ipv4:10.0.0.9:1', '')), PeerRefusedError);
    assert.equal(lines.length, 2, 'logged again after a minute');
  });

  it('the refusal log is timed on the monotonic clock: the wall clock stepped back 1 h, a refusal a minute later is logged again', () => {
    // On the wall clock (its default was Date.now) a step back (NTP, a resumed VM) silenced it for the step's length.
    const clocks = new SteppedClocks().install();
    try {
      const lines: string[] = [];
      const g = new PeerGuard({ clusterId: 'c1', isMember: () => false, logger: { debug: () => undefined, warn: (_o, msg) => lines.push(msg ?? '') } });
      for (let i = 0; i < 2; i++) assert.throws(() => g.admit('x', call('ipv4:10.0.0.9:1', '')), PeerRefusedError);
      assert.equal(lines.length, 1);
      clocks.stepWall(-HOUR_MS);
      clocks.pass(60_001);
      assert.throws(() => g.admit('x', call('ipv4:10.0.0.9:1', '')), PeerRefusedError);
      assert.equal(lines.length, 2, 'logged again a minute later');
    } finally {
      clocks.restore();
    }
  });

  it('admitCall decides on the metadata alone: the cluster id, and under mutual TLS a certificate naming a member', () => {
    const counted: string[] = [];
    const plain = new PeerGuard({ clusterId: 'c1', isMember: () => false, onRefused: (r) => counted.push(r) });
    plain.admitCall(call('ipv4:10.0.0.9:1', ''));
    assert.throws(() => plain.admitCall(call('ipv4:10.0.0.9:1', '', 'c2')), /cluster id "c2"/);
    let cert: string | null = 'n1';
    const tls = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', identityOf: () => cert, onRefused: (r) => counted.push(r) });
    tls.admitCall(call('ipv4:10.0.0.9:1', ''));
    cert = 'n9';
    assert.throws(() => tls.admitCall(call('ipv4:10.0.0.9:1', '')), /n9 is not a member/);
    cert = null;
    assert.throws(() => tls.admitCall(call('ipv4:10.0.0.9:1', '')), /names no member id/);
    assert.deepEqual(counted, ['cluster_id', 'not_member', 'identity']);
  });

  it('a certificate the CRL revokes (--peer-crl) is refused at call open and at the next message of a call opened before the revocation, even from a member', () => {
    const counted: string[] = [];
    const revoked = new Set<string>();
    let serialReads = 0;
    const g = new PeerGuard({
      clusterId: 'c1',
      isMember: () => true,
      identityOf: (c) => (c.getPeer().startsWith('ipv4:10.0.0.3') ? 'n3' : 'n2'),
      revocation: { serialOf: (c) => (serialReads++, c.getPeer().startsWith('ipv4:10.0.0.3') ? '0A03' : '0a02'), isRevoked: (s) => revoked.has(s.toLowerCase()) },
      onRefused: (r) => counted.push(r),
    });
    const open = call('ipv4:10.0.0.3:1', '');
    g.admitCall(open);
    g.admit('n3', open);
    revoked.add('0a03');
    assert.throws(() => g.admit('n3', open), (e: unknown) => e instanceof PeerRefusedError && e.reason === 'revoked' && /certificate of n3 \(serial 0a03\) is revoked/.test(e.message));
    assert.throws(() => g.admitCall(call('ipv4:10.0.0.3:2', '')), /revoked/);
    const n2 = call('ipv4:10.0.0.2:1', '');
    g.admitCall(n2);
    g.admit('n2', n2);
    g.admit('n2', n2);
    assert.deepEqual(counted, ['revoked', 'revoked']);
    assert.equal(serialReads, 3, 'the serial is read once per call, not per message');
  });

  it('a sender outside the membership may send the Raft messages (the core decides), and nothing else: no fetch, stage, report, read index, write or membership question', () => {
    // Refused at the door, a member whose configuration lacked its leader (added in entries it had not received)
    // refused that leader for ever (simulator seed 358 with the real PeerGuard).
    const counted: string[] = [];
    const lines: string[] = [];
    const logger = { debug: () => undefined, info: () => undefined, warn: (_o: object, msg: string) => lines.push(msg), error: () => undefined };
    const g = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', onRefused: (r) => counted.push(r), logger, nowMs: () => 0 });
    for (const rpc of ['RequestVote', 'AppendEntries', 'InstallSnapshot', 'TimeoutNow']) {
      assert.equal(scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`), 'message', rpc);
      g.admit('n9', call('ipv4:10.0.0.9:1', ''), scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`));
    }
    for (const rpc of ['ReadIndex', 'ReportSnapshot', 'FetchSnapshot', 'StageArchive', 'Propose', 'GetMembership', 'FetchStateImage', 'Nope']) {
      assert.equal(scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`), 'member', rpc);
      assert.throws(() => g.admit('n9', call('ipv4:10.0.0.9:1', ''), scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`)), /n9 is not a member/, rpc);
    }
    assert.equal(scopeOfPath('/snapcoord.v1.KVService/AppendEntries'), 'member', 'another service of the same method name');
    assert.equal(scopeOfPath('/evil.RaftService2/AppendEntries'), 'member');
    assert.deepEqual(['vote', 'append', 'heartbeat', 'snapshot', 'timeoutNow'].map((t) => scopeOfMessage(t as 'vote')), Array(5).fill('message'));
    assert.equal(scopeOfMessage('readIndex'), 'member');
    assert.equal(counted.length, 8, 'each refusal counted');
    assert.equal(lines.filter((l) => /does not name/.test(l)).length, 1, 'the outsider\'s messages logged once a minute, not each');
    // Under mutual TLS a call opens in its method's scope: a certificate naming an id outside the membership may open
    // an AppendEntries stream, not a FetchSnapshot; one naming no member id neither.
    let cert: string | null = 'n9';
    const tls = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', identityOf: () => cert });
    tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'message');
    assert.throws(() => tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'member'), /n9 is not a member/);
    assert.throws(() => tls.admit('n1', call('ipv4:10.0.0.9:1', ''), 'message'), /signed with the certificate of n9/);
    cert = null;
    assert.throws(() => tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'message'), /names no member id/);
  });

  it('a sender outside the membership gets no advertised client address recorded: no forwarded write (nor its caller\'s key) goes to it, and its ids do not pile up', () => {
    // Plaintext: every `from` an outsider's host makes up was recorded with an address on that host, one entry per id
    // and none ever dropped; under mutual TLS an outsider's certificate (a removed member's, or one never added) taken
    // as leader after an election timeout got the clients' writes, their API keys with them, forwarded to its address.
    const plain = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', peerAddressOf: (id) => (id === 'n1' ? '10.0.0.1:7101' : '') });
    for (let i = 0; i < 1000; i++) plain.admit(`x${i}`, call('ipv4:10.0.0.9:1', '10.0.0.9:7001'), 'message');
    for (const id of ['x0', 'x999']) assert.equal(plain.clientAddressOf(id), '', id);
    plain.admit('n1', call('ipv4:10.0.0.1:1', '10.0.0.1:7001'), 'message');
    assert.equal(plain.clientAddressOf('n1'), '10.0.0.1:7001', 'a member\'s is');
    const tls = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', identityOf: (c) => (c.getPeer().startsWith('ipv4:10.0.0.9') ? 'n9' : 'n1') });
    tls.admit('n9', call('ipv4:10.0.0.9:1', 'n9.internal:7001'), 'message');
    assert.equal(tls.clientAddressOf('n9'), '');
    tls.admit('n1', call('ipv4:10.0.0.1:1', 'n1.internal:7001'), 'message');
    assert.equal(tls.clientAddressOf('n1'), 'n1.internal:7001');
  });

  it('an id this node saw removed (wasRemoved) is refused in every scope, the Raft messages too', () => {
    const removed = new Set(['n7']);
    const g = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', wasRemoved: (id) => removed.has(id) });
    for (const scope of ['message', 'member'] as const) assert.throws(() => g.admit('n7', call('ipv4:10.0.0.9:1', ''), scope), scope === 'message' ? /n7 was removed from this cluster/ : /n7 is not a member/);
    g.admit('n8', call('ipv4:10.0.0.9:1', ''), 'message');
    removed.delete('n7'); // added back (the node applied the change)
    g.admit('n7', call('ipv4:10.0.0.9:1', ''), 'message');
  });

  it('a member a voter reported removed (reportedRemoved) is refused \'removed\' its calls of scope member, at call open too, while the report stands; its Raft messages pass to the node (which refuses them itself)', () => {
    const reported = new Map([['n2', 'n2 was removed from this cluster: voters of this node\'s configuration (n1, n3) hold committed configurations (indexes 9, 9; this node\'s 4) that do not name it']]);
    const counted: string[] = [];
    const g = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1' || id === 'n2', reportedRemoved: (id) => reported.get(id) ?? null, onRefused: (r) => counted.push(r) });
    assert.throws(
      () => g.admit('n2', call('ipv4:10.0.0.2:1', ''), 'member'),
      (e: unknown) => e instanceof PeerRefusedError && e.reason === 'removed' && e.code === grpc.status.PERMISSION_DENIED && /^refused: n2 was removed from this cluster: voters of this node's configuration \(n1, n3\)/.test(e.message),
    );
    // Under mutual TLS, at call open (the certificate names n2): refused before any of its messages is read.
    const tls = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1' || id === 'n2', reportedRemoved: (id) => reported.get(id) ?? null, identityOf: () => 'n2', onRefused: (r) => counted.push(r) });
    for (const rpc of ['FetchSnapshot', 'GetMembership', 'FetchStateImage', 'ReadIndex']) {
      assert.throws(() => tls.admitCall(call('ipv4:10.0.0.2:1', ''), scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`)), /n2 was removed/, rpc);
    }
    tls.admitCall(call('ipv4:10.0.0.2:1', ''), scopeOfPath('/snapcoord.v1.RaftService/AppendEntries'));
    g.admit('n2', call('ipv4:10.0.0.2:1', ''), 'message');
    g.admit('n1', call('ipv4:10.0.0.1:1', ''), 'member');
    assert.deepEqual(counted, ['removed', 'removed', 'removed', 'removed', 'removed']);
    reported.delete('n2'); // this node's configuration caught up, or a later one names n2 again
    g.admit('n2', call('ipv4:10.0.0.2:1', ''), 'member');
  });

  it('with a vouch (PeerVouch), a sender outside the membership is refused even the Raft messages until vouched for, at call open too; members and removed ids never ask one', () => {
    // Without it a certificate for an id no member knows (never added; removed before this node's restart) was taken
    // as leader by a learner or a voter in a minority after an election timeout, and its forged entries applied.
    const vouched = new Set<string>();
    const asked: string[] = [];
    const counted: string[] = [];
    const vouch = { vouchedFor: (id: string) => vouched.has(id), requestVouch: (id: string) => void asked.push(id) };
    const removed = new Set(['n7']);
    const g = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', wasRemoved: (id) => removed.has(id), vouch, onRefused: (r) => counted.push(r) });
    for (const rpc of ['RequestVote', 'AppendEntries', 'InstallSnapshot', 'TimeoutNow']) {
      assert.throws(
        () => g.admit('n9', call('ipv4:10.0.0.9:1', ''), scopeOfPath(`/snapcoord.v1.RaftService/${rpc}`)),
        (e: unknown) => e instanceof PeerRefusedError && e.reason === 'unvouched' && e.code === grpc.status.PERMISSION_DENIED && /no voter of it has vouched for n9/.test(e.message),
        rpc,
      );
    }
    assert.deepEqual(asked, ['n9', 'n9', 'n9', 'n9'], 'each refusal asks (the vouch keeps one in flight)');
    g.admit('n1', call('ipv4:10.0.0.1:1', ''), 'message');
    assert.throws(() => g.admit('n7', call('ipv4:10.0.0.9:1', ''), 'message'), /n7 was removed/);
    assert.deepEqual(asked, ['n9', 'n9', 'n9', 'n9'], 'neither a member nor a removed id is asked for');
    vouched.add('n9');
    g.admit('n9', call('ipv4:10.0.0.9:1', ''), 'message');
    assert.throws(() => g.admit('n9', call('ipv4:10.0.0.9:1', ''), 'member'), /n9 is not a member/, 'vouched: the Raft messages only');
    assert.deepEqual(counted, ['unvouched', 'unvouched', 'unvouched', 'unvouched', 'not_member', 'not_member']);
    // Under mutual TLS the call is refused when it opens: no message of it is read.
    let cert = 'n8';
    const tls = new PeerGuard({ clusterId: 'c1', isMember: (id) => id === 'n1', identityOf: () => cert, vouch });
    assert.throws(() => tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'message'), (e: unknown) => e instanceof PeerRefusedError && e.reason === 'unvouched');
    vouched.add('n8');
    tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'message');
    cert = 'n1';
    tls.admitCall(call('ipv4:10.0.0.9:1', ''), 'message');
  });
});

/**
 * A member that joins after the log began starts from a snapshot: the log's
 * first membership (the bootstrap's --peers) is not in the log, so entries
 * from the first would be applied to the joiner's own --peers. Real nodes on
 * RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import type { Node } from '../../../src/node/node.js';
import { NodeError } from '../../../src/node/errors.js';
import { JOIN_WAIT_MS_DEFAULT, JoinError, checkLogNotLost, joinMembership } from '../../../src/node/join.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock, type Clock } from '../../../src/node/clock.js';
import type { Membership } from '../../../src/raft/types.js';
import type { MembershipAnswer } from '../../../src/transport/transport.js';
import { askMembership } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { bindApiServer } from '../../../src/api/server.js';
import { RocksCluster } from './rocks-cluster.js';
import { sleep, until } from '../../harness/until.js';

const enc = new TextEncoder();

describe('a member that joins after the log began', function () {
  this.timeout(60_000);
  let c: RocksCluster | null = null;
  afterEach(async () => {
    await c?.close();
    c = null;
  });

  /**
   * change: `leader` makes the membership change `cc`, retried as its refusal says ("retry once n2 answers") while the
   * leader has not heard from a live voter within its window: on a loaded machine one process's event loop, which runs
   * every member, can stall past two election timeouts (join.spec failed so in setup 2 runs in 3 at load 18).
   */
  async function change(leader: Node, cc: Parameters<Node['changeMembership']>[0]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await leader.changeMembership(cc);
        return;
      } catch (e) {
        if (!(e instanceof NodeError && e.code === 'failedPrecondition' && /has not heard from/.test(e.message)) || attempt >= 20) throw e;
        await sleep(250);
      }
    }
  }

  /** threeWithWrites: 3 members (closed after the test), their leader, one follower, and 5 writes committed. */
  async function threeWithWrites(): Promise<{ cluster: RocksCluster; leader: Node; lid: string; follower: string }> {
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    return { cluster, leader, lid, follower: ['n1', 'n2', 'n3'].find((id) => id !== lid) as string };
  }

  it('told of too few members (its --peers name the leader and itself), it installs a snapshot and counts the cluster\'s voters once promoted', async () => {
    const { cluster, leader, lid } = await threeWithWrites();
    assert.equal(leader.status().firstIndex, 1, 'the leader never compacted: its log still starts at the first entry');
    const joiner = await cluster.join('n4', (self) => ({
      voters: [lid, 'n4'],
      learners: [],
      addresses: { [lid]: cluster.member(lid).peerAddress, n4: self },
    }));
    await change(leader, { op: 'addLearner', nodeId: 'n4', address: joiner.peerAddress });
    const n4 = (): Node => cluster.node('n4');
    await until('n4 to install a snapshot and catch up', 30_000, () => (n4().snapshotStats.installed > 0 && n4().status().applied >= leader.status().commit ? true : undefined));
    await change(leader, { op: 'addVoter', nodeId: 'n4', address: joiner.peerAddress });
    const voters = (n: Node): string[] => [...n.status().membership.voters].sort();
    await until("n4 to count the cluster's voters", 10_000, () => (voters(n4()).length === 4 ? true : undefined));
    assert.deepEqual(voters(n4()), ['n1', 'n2', 'n3', 'n4']);
    assert.deepEqual(voters(n4()), voters(leader));
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    await until('n4 to apply the write after its promotion', 10_000, () => (n4().status().applied >= leader.status().commit ? true : undefined));
    assert.equal(await cluster.member('n4').storage?.stateDigest(), await cluster.member(lid).storage?.stateDigest());
  });

  it('a member removed, wiped and added again with --peers naming too few takes the log\'s base from the leader and counts the cluster\'s voters', async () => {
    const { cluster, leader, lid, follower: back } = await threeWithWrites();
    await change(leader, { op: 'removeNode', nodeId: back });
    await cluster.stop(back);
    await rm(join(cluster.dir, back), { recursive: true, force: true });
    const m = cluster.member(back);
    m.peers = { voters: [lid, back], learners: [], addresses: { [lid]: cluster.member(lid).peerAddress, [back]: m.peerAddress } };
    await cluster.restart(back);
    assert.equal(leader.status().firstIndex, 1, 'the leader never compacted: it sends the log from the first entry, a change of the base at a time');
    await change(leader, { op: 'addLearner', nodeId: back, address: m.peerAddress });
    const node = (): Node => cluster.node(back);
    await until(`${back} to catch up`, 30_000, () => (node().status().applied >= leader.status().commit ? true : undefined));
    assert.equal(node().snapshotStats.installed, 0, 'from the log, not a snapshot');
    await change(leader, { op: 'addVoter', nodeId: back, address: m.peerAddress });
    const voters = (n: Node): string[] => [...n.status().membership.voters].sort();
    await until(`${back} to be a voter`, 10_000, () => (node().status().membership.voters.includes(back) ? true : undefined));
    assert.deepEqual(voters(node()), ['n1', 'n2', 'n3']);
    assert.deepEqual(voters(node()), voters(leader));
    await cluster.stop(back);
    await cluster.restart(back);
    assert.deepEqual(voters(node()), voters(leader), 'the base it took was persisted');
  });

  it('started with --peers that leave the leader out, it follows that leader once it has gone an election timeout without one, and catches up (before: it refused the leader for ever)', async () => {
    // The peer plane passes a Raft message from a sender the receiver's configuration does not name to the core, which
    // takes its claim to lead only after an election timeout without a leader (peer-guard.ts, nonVoterClaimTooSoon).
    // Refused outright, n4 refused every message of the leader its --peers left out and applied nothing, for ever.
    const { cluster, leader, lid, follower: other } = await threeWithWrites();
    const joiner = await cluster.join('n4', (self) => ({ voters: [other, 'n4'], learners: [], addresses: { [other]: cluster.member(other).peerAddress, n4: self } }));
    await change(leader, { op: 'addLearner', nodeId: 'n4', address: joiner.peerAddress });
    await until('n4 to catch up', 30_000, () => (cluster.node('n4').status().applied >= leader.status().commit ? true : undefined));
    const n4 = cluster.node('n4').status();
    assert.equal(n4.leader, lid);
    assert.deepEqual([...n4.membership.voters].sort(), [...leader.status().membership.voters].sort(), 'the configuration of the log, not its --peers');
    assert.deepEqual(n4.membership.learners, ['n4']);
    await until('no refusal reported', 10_000, () => (leader.status().refusedBy.n4 === undefined ? true : undefined));
    assert.equal(await cluster.member('n4').storage?.stateDigest(), await cluster.member(lid).storage?.stateDigest());
  });

  it('in a cluster whose original members were all replaced, a new member gets the leader\'s snapshot that predates the leader\'s own addition, follows that leader and catches up (before: it refused the leader for ever)', async () => {
    // The production path of simulator seed 358, with `cluster add`'s --peers (every member) and no compaction at all:
    // the leader snapshots when n4 is added (it had none); n5, added next, installs that same snapshot, which names
    // n1-n3 and n4 but not n5; once n5 leads and n1-n3 are gone, n6 installed n5's newest snapshot, that one, and its
    // configuration lacked its leader. The old peer plane then refused every message of n5: n6 stayed at the snapshot.
    // With vouching no voter of that configuration was left to vouch for n5 (n1-n3 gone, n4 a learner there): a leader
    // now sends only a snapshot whose configuration names it, taking one first (raft.ts sendSnapshot).
    const { cluster, leader } = await threeWithWrites();
    const peersOf = (ids: readonly string[], self: string, selfAddress: string): Membership => ({
      voters: ids.filter((id) => id !== self),
      learners: [self],
      addresses: Object.fromEntries(ids.map((id) => [id, id === self ? selfAddress : cluster.member(id).peerAddress])),
    });
    let lead = leader;
    for (const id of ['n4', 'n5']) {
      const known = cluster.members.filter((m) => m.node !== null).map((m) => m.id);
      const joiner = await cluster.join(id, (self) => peersOf([...known, id], id, self));
      await change(lead, { op: 'addLearner', nodeId: id, address: joiner.peerAddress });
      await until(`${id} to catch up`, 30_000, () => (cluster.node(id).status().applied >= lead.status().commit ? true : undefined));
      await change(lead, { op: 'addVoter', nodeId: id, address: joiner.peerAddress });
    }
    const n5Snapshot = cluster.member('n5').snapshots?.newestMeta();
    assert.ok(n5Snapshot !== null && n5Snapshot !== undefined && !n5Snapshot.membership.voters.includes('n5') && !n5Snapshot.membership.learners.includes('n5'), "n5's newest snapshot is the one it installed, which predates its addition");
    if (lead.status().id !== 'n5') await lead.transferLeadership('n5', 10_000);
    lead = cluster.node('n5');
    await until('n5 to lead and commit an entry of its term', 10_000, () => (lead.status().role === 'leader' && lead.status().commit > (n5Snapshot?.index ?? 0) && lead.status().commit === lead.status().lastIndex ? true : undefined));
    for (const id of ['n1', 'n2', 'n3']) {
      await change(lead, { op: 'removeNode', nodeId: id });
      await cluster.stop(id);
    }
    await lead.propose({ op: 'put', key: enc.encode('k/replaced'), value: enc.encode('y') });
    const joiner = await cluster.join('n6', (self) => peersOf(['n4', 'n5', 'n6'], 'n6', self));
    await change(lead, { op: 'addLearner', nodeId: 'n6', address: joiner.peerAddress });
    const n6 = (): Node => cluster.node('n6');
    await until('n6 to install a snapshot and catch up', 30_000, () => (n6().snapshotStats.installed > 0 && n6().status().applied >= lead.status().commit ? true : undefined));
    assert.equal(n6().status().leader, 'n5');
    const installed = cluster.member('n6').snapshots?.newestMeta();
    assert.ok(installed?.membership.voters.includes('n5') === true, `n6 installed a snapshot whose configuration names its leader n5 (${JSON.stringify(installed?.membership.voters)})`);
    assert.deepEqual([...n6().status().membership.voters].sort(), ['n4', 'n5'], 'the configuration of the log after the snapshot');
    await lead.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('z') });
    await until('n6 to apply the next write', 10_000, () => (n6().status().applied >= lead.status().commit ? true : undefined));
    assert.equal(await cluster.member('n6').storage?.stateDigest(), await cluster.member('n5').storage?.stateDigest());
  });

  it('a member away while the leader was added and every member it knew but one removed follows that leader once back, and catches up (before: it refused the leader for ever)', async () => {
    // n3 is stopped; n4 joins, is promoted and made the leader; n1 is removed. n3's log names n1-n3 only: the leader
    // is a sender its configuration does not name, whose claims it takes after an election timeout without a leader
    // (n2, which it names, follows n4 and refuses its pre-votes). The old peer plane refused n4 for ever: n3 stayed a
    // pre-candidate at its old commit while the cluster went on without it.
    const { cluster, leader, lid } = await threeWithWrites();
    const away = ['n1', 'n2', 'n3'].find((id) => id !== lid) as string;
    await cluster.stop(away);
    const known = ['n1', 'n2', 'n3'].filter((id) => id !== away);
    const joiner = await cluster.join('n4', (self) => ({
      voters: known,
      learners: ['n4'],
      addresses: { ...Object.fromEntries(known.map((id) => [id, cluster.member(id).peerAddress])), n4: self },
    }));
    await change(leader, { op: 'addLearner', nodeId: 'n4', address: joiner.peerAddress });
    await until('n4 to catch up', 30_000, () => (cluster.node('n4').status().applied >= leader.status().commit ? true : undefined));
    await change(leader, { op: 'addVoter', nodeId: 'n4', address: joiner.peerAddress });
    await leader.transferLeadership('n4', 10_000);
    const n4 = cluster.node('n4');
    await until('n4 to lead and commit an entry of its term', 10_000, () => (n4.status().role === 'leader' && n4.status().commit === n4.status().lastIndex ? true : undefined));
    const gone = known[0] as string;
    await change(n4, { op: 'removeNode', nodeId: gone });
    await cluster.stop(gone);
    await n4.propose({ op: 'put', key: enc.encode('k/without'), value: enc.encode(away) });
    await cluster.restart(away);
    const back = (): Node => cluster.node(away);
    assert.ok(!back().status().membership.voters.includes('n4'), `${away}'s own configuration does not name the leader`);
    await until(`${away} to follow n4 and catch up`, 30_000, () => (back().status().leader === 'n4' && back().status().applied >= n4.status().commit ? true : undefined));
    assert.deepEqual([...back().status().membership.voters].sort(), [...n4.status().membership.voters].sort());
    assert.equal(await cluster.member(away).storage?.stateDigest(), await cluster.member('n4').storage?.stateDigest());
  });

  it('GetMembership answers a member only: a new node is refused until added, then told the configuration that names it, from which it starts and catches up', async () => {
    const { cluster, leader, follower: other } = await threeWithWrites();
    const n4 = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' });
    const dial = peerDial('snapcoord', n4.address);
    const ask = (): Promise<MembershipAnswer> => askMembership(dial, cluster.member(other).peerAddress, { from: 'n4', to: other }, 2_000);
    await assert.rejects(ask(), (e: { code?: number; details?: string }) => e.code === 7 && /n4 is not a member of this cluster/.test(e.details ?? ''));
    await change(leader, { op: 'addLearner', nodeId: 'n4', address: n4.peerAddress });
    const peers = { [other]: cluster.member(other).peerAddress, n4: n4.peerAddress };
    const m = await until(`${other} to know n4`, 10_000, () => joinMembership({ selfId: 'n4', peers, ask: (a, q, t) => askMembership(dial, a, q, t), clock: systemClock, log: silentLogger, waitMs: 0 }).catch(() => undefined));
    assert.deepEqual([...m.voters].sort(), ['n1', 'n2', 'n3']);
    assert.deepEqual(m.learners, ['n4']);
    // Started from it (as serve --join does), n4 takes the leader's messages although its --peers named only `other`.
    await cluster.join('n4', () => m, n4);
    await until('n4 to catch up', 30_000, () => (cluster.node('n4').status().applied >= leader.status().commit ? true : undefined));
    assert.equal(leader.status().refusedBy.n4, undefined);
    assert.equal(cluster.node('n4').status().role, 'follower');
  });
});

describe('a new data dir under the id of a member that acknowledged log entries (checkLogNotLost)', function () {
  this.timeout(60_000);
  let c: RocksCluster | null = null;
  afterEach(async () => {
    await c?.close();
    c = null;
  });

  it('is refused, naming the leader that holds its acknowledgement; a member that acknowledged nothing (a new learner, a new cluster) is not', async () => {
    // Before, such a node started and voted with an empty log: elected a candidate lacking a write committed with its
    // acknowledgement, and the write was lost (review11, on real nodes). Its leader knows what it acknowledged.
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    await leader.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v') });
    const wiped = ['n1', 'n2', 'n3'].find((id) => id !== lid) as string;
    await until(`${lid} to hold ${wiped}'s acknowledgement`, 10_000, () => ((leader.status().progress[wiped]?.match ?? 0) > 0 ? true : undefined));
    const peers = Object.fromEntries(['n1', 'n2', 'n3'].map((id) => [id, cluster.member(id).peerAddress]));
    const dial = peerDial('snapcoord', cluster.member(wiped).address);
    const ask = (address: string, q: { from: string; to: string }, t: number): Promise<MembershipAnswer> => askMembership(dial, address, q, t);
    await assert.rejects(
      checkLogNotLost({ selfId: wiped, peers, ask, log: silentLogger }),
      (e: Error) => e instanceof JoinError && new RegExp(`${lid} \\(leader of term \\d+\\) holds ${wiped}'s acknowledgement of the log up to entry [1-9]`).test(e.message) && /cluster remove/.test(e.message),
    );
    // A data dir that is not new: refused when its log ends before what the leader holds, as an empty one is; taken
    // when it holds that much, or when the leader's term is older than its own (a later leader's entries replaced
    // what it acknowledged to that one).
    const match = leader.status().progress[wiped]?.match ?? 0;
    const term = leader.status().term;
    await assert.rejects(
      checkLogNotLost({ selfId: wiped, peers, ask, log: silentLogger, own: { lastIndex: match - 1, term } }),
      (e: Error) => e instanceof JoinError && new RegExp(`log ends at entry ${match - 1}, but ${lid} \\(leader of term ${term}\\) holds ${wiped}'s acknowledgement of the log up to entry ${match}: this data dir is older`).test(e.message),
    );
    await checkLogNotLost({ selfId: wiped, peers, ask, log: silentLogger, own: { lastIndex: match, term } });
    await checkLogNotLost({ selfId: wiped, peers, ask, log: silentLogger, own: { lastIndex: match - 1, term: term + 1 } });
    // A learner added and not started yet acknowledged nothing: it starts.
    await leader.changeMembership({ op: 'addLearner', nodeId: 'n4', address: '127.0.0.1:1' });
    await checkLogNotLost({ selfId: 'n4', peers: { ...peers, n4: '127.0.0.1:1' }, ask, log: silentLogger });
    // Members that do not answer (a new cluster's, starting together) are skipped.
    await checkLogNotLost({ selfId: 'n5', peers: { n5: '127.0.0.1:1', n6: '127.0.0.1:2' }, ask, log: silentLogger, timeoutMs: 500 });
  });
});

describe('serve --join: the configuration a new node starts from (joinMembership)', () => {
  /** A virtual clock: sleep moves time at once. */
  function virtualClock(): Clock & { now: number } {
    const c = {
      now: 0,
      nowMs: () => c.now,
      sleep: (ms: number) => {
        c.now += ms;
        return Promise.resolve();
      },
    };
    return c as unknown as Clock & { now: number };
  }
  const peers = { n2: '10.0.0.2:7101', n3: '10.0.0.3:7101', n4: '10.0.0.4:7101' };
  const cluster = (withN4: boolean, at = '10.0.0.4:7101'): Membership => ({
    voters: ['n1', 'n2', 'n3'],
    learners: withN4 ? ['n4'] : [],
    addresses: { n1: '10.0.0.1:7101', n2: peers.n2, n3: peers.n3, ...(withN4 ? { n4: at } : {}) },
  });
  const denied = (id: string): Error => Object.assign(new Error('7 PERMISSION_DENIED'), { code: 7, details: `refused: n4 is not a member of this cluster as this node knows it (neither its --peers nor its log or snapshot name n4) [${id}]` });

  it('takes the highest-term answer that names it, never its --peers', async () => {
    const asked: string[] = [];
    const m = await joinMembership({
      selfId: 'n4',
      peers,
      clock: virtualClock(),
      log: silentLogger,
      ask: (address, q) => {
        asked.push(`${q.from}->${q.to}@${address}`);
        if (q.to === 'n2') return Promise.resolve({ from: 'n2', term: 5, membership: cluster(false) }); // behind: not added yet here
        return Promise.resolve({ from: 'n3', term: 6, membership: cluster(true) });
      },
    });
    assert.deepEqual(m, cluster(true));
    assert.deepEqual(asked.sort(), ['n4->n2@10.0.0.2:7101', 'n4->n3@10.0.0.3:7101']);
  });

  it('asks again until a member knows it (the operator runs cluster add meanwhile)', async () => {
    const clock = virtualClock();
    let added = false;
    const m = await joinMembership({
      selfId: 'n4',
      peers: { n2: peers.n2, n4: peers.n4 },
      clock,
      log: silentLogger,
      ask: () => {
        if (clock.now >= 3_000) added = true;
        return added ? Promise.resolve({ from: 'n2', term: 2, membership: cluster(true) }) : Promise.reject(denied('n2'));
      },
    });
    assert.deepEqual(m.learners, ['n4']);
    assert.ok(clock.now >= 3_000 && clock.now < JOIN_WAIT_MS_DEFAULT, String(clock.now));
  });

  it('gives up after waitMs, naming each member\'s last answer and the cluster add to run', async () => {
    const clock = virtualClock();
    const err = await joinMembership({
      selfId: 'n4',
      peers,
      clock,
      log: silentLogger,
      waitMs: 5_000,
      ask: (_a, q) => (q.to === 'n2' ? Promise.reject(denied('n2')) : Promise.resolve({ from: 'n3', term: 3, membership: cluster(false) })),
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof JoinError, String(err));
    assert.match(err.message, /no member named in --peers knows n4 after 5 s/);
    assert.match(err.message, /n2 \(10\.0\.0\.2:7101\): refused: n4 is not a member/);
    assert.match(err.message, /n3 \(10\.0\.0\.3:7101\): its configuration \(term 3\) does not name n4 yet/);
    assert.match(err.message, /snapcoord cluster add n4 10\.0\.0\.4:7101 --learner$/);
    assert.ok(clock.now >= 5_000 && clock.now < 6_000, String(clock.now));
  });

  it('refuses a configuration that names it at another address, and --peers that name no other member', async () => {
    const ask = (): Promise<MembershipAnswer> => Promise.resolve({ from: 'n2', term: 2, membership: cluster(true, '10.0.0.9:7101') });
    await assert.rejects(joinMembership({ selfId: 'n4', peers, clock: virtualClock(), log: silentLogger, ask }), (e: unknown) => e instanceof JoinError && /n2 knows n4 at "10\.0\.0\.9:7101", but this node advertises 10\.0\.0\.4:7101/.test(e.message));
    await assert.rejects(joinMembership({ selfId: 'n4', peers: { n4: peers.n4 }, clock: virtualClock(), log: silentLogger, ask }), (e: unknown) => e instanceof JoinError && /names no member but n4/.test(e.message));
  });
});

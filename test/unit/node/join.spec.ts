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
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

describe('a member that joins after the log began', function () {
  this.timeout(60_000);
  let c: RocksCluster | null = null;
  afterEach(async () => {
    await c?.close();
    c = null;
  });

  it('told of too few members (its --peers name the leader and itself), it installs a snapshot and counts the cluster\'s voters once promoted', async () => {
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    assert.equal(leader.status().firstIndex, 1, 'the leader never compacted: its log still starts at the first entry');
    const joiner = await cluster.join('n4', (self) => ({
      voters: [lid, 'n4'],
      learners: [],
      addresses: { [lid]: cluster.member(lid).peerAddress, n4: self },
    }));
    await leader.changeMembership({ op: 'addLearner', nodeId: 'n4', address: joiner.peerAddress });
    const n4 = (): Node => cluster.node('n4');
    await until('n4 to install a snapshot and catch up', 30_000, () => (n4().snapshotStats.installed > 0 && n4().status().applied >= leader.status().commit ? true : undefined));
    await leader.changeMembership({ op: 'addVoter', nodeId: 'n4', address: joiner.peerAddress });
    const voters = (n: Node): string[] => [...n.status().membership.voters].sort();
    await until("n4 to count the cluster's voters", 10_000, () => (voters(n4()).length === 4 ? true : undefined));
    assert.deepEqual(voters(n4()), ['n1', 'n2', 'n3', 'n4']);
    assert.deepEqual(voters(n4()), voters(leader));
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    await until('n4 to apply the write after its promotion', 10_000, () => (n4().status().applied >= leader.status().commit ? true : undefined));
    assert.equal(await cluster.member('n4').storage?.stateDigest(), await cluster.member(lid).storage?.stateDigest());
  });

  it('a member removed, wiped and added again with --peers naming too few takes the log\'s base from the leader and counts the cluster\'s voters', async () => {
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    const back = ['n1', 'n2', 'n3'].find((id) => id !== lid) as string;
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    await leader.changeMembership({ op: 'removeNode', nodeId: back });
    await cluster.stop(back);
    await rm(join(cluster.dir, back), { recursive: true, force: true });
    const m = cluster.member(back);
    m.peers = { voters: [lid, back], learners: [], addresses: { [lid]: cluster.member(lid).peerAddress, [back]: m.peerAddress } };
    await cluster.restart(back);
    assert.equal(leader.status().firstIndex, 1, 'the leader never compacted: it sends the log from the first entry, a change of the base at a time');
    await leader.changeMembership({ op: 'addLearner', nodeId: back, address: m.peerAddress });
    const node = (): Node => cluster.node(back);
    await until(`${back} to catch up`, 30_000, () => (node().status().applied >= leader.status().commit ? true : undefined));
    assert.equal(node().snapshotStats.installed, 0, 'from the log, not a snapshot');
    await leader.changeMembership({ op: 'addVoter', nodeId: back, address: m.peerAddress });
    const voters = (n: Node): string[] => [...n.status().membership.voters].sort();
    await until(`${back} to be a voter`, 10_000, () => (node().status().membership.voters.includes(back) ? true : undefined));
    assert.deepEqual(voters(node()), ['n1', 'n2', 'n3']);
    assert.deepEqual(voters(node()), voters(leader));
    await cluster.stop(back);
    await cluster.restart(back);
    assert.deepEqual(voters(node()), voters(leader), 'the base it took was persisted');
  });

  it('started with --peers that leave the leader out, it refuses the leader, which reports why in its status; started again with every member, it catches up', async () => {
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    const other = ['n1', 'n2', 'n3'].find((id) => id !== lid) as string;
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const joiner = await cluster.join('n4', (self) => ({ voters: [other, 'n4'], learners: [], addresses: { [other]: cluster.member(other).peerAddress, n4: self } }));
    await leader.changeMembership({ op: 'addLearner', nodeId: 'n4', address: joiner.peerAddress });
    const refused = await until("the leader to see n4 refuse its messages", 20_000, () => leader.status().refusedBy.n4);
    assert.match(refused, new RegExp(`\\b${lid} is not a member of this cluster as this node knows it`));
    assert.equal(cluster.node('n4').status().applied, 0, 'n4 took nothing from the leader');
    assert.equal(leader.status().refusedBy[other], undefined, 'the other members take its messages');
    // Started again (an empty data dir) with --peers naming every member, as `cluster add` prints them.
    await cluster.stop('n4');
    await rm(join(cluster.dir, 'n4'), { recursive: true, force: true });
    joiner.peers = leader.status().membership;
    await cluster.restart('n4');
    await until('n4 to catch up', 30_000, () => (cluster.node('n4').status().applied >= leader.status().commit ? true : undefined));
    await until('the refusal to clear', 10_000, () => (leader.status().refusedBy.n4 === undefined ? true : undefined));
  });
});

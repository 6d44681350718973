/**
 * lastLeaderContactMs (the last-contact figure a stale snapshot download
 * reports) counts only the leader this node follows: an append or heartbeat
 * of the current term from another member, which the core drops (one leader
 * a term, 0c4571e), refreshed it, so a follower cut off from its leader
 * reported fresh contact for as long as any member kept sending. Real Nodes
 * on the in-memory transport; n3 is a voter that never runs.
 */
import assert from 'node:assert/strict';

import { Node } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import { sleep, until } from '../../harness/until.js';

const MEMBERSHIP: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:n1', n2: 'mem:n2', n3: 'mem:n3' } };

describe('node: last contact with the leader', function () {
  this.timeout(30_000);
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });

  it('is not refreshed by a heartbeat the core drops (another member claiming the current term)', async () => {
    const net = new MemoryNetwork();
    for (const id of ['n1', 'n2']) {
      const ref: { node: Node | null } = { node: null };
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }),
        initialMembership: MEMBERSHIP,
        // An election timeout of 3-6 s: the follower keeps its (stopped) leader for the whole test.
        timings: { tickMs: 10, electionTimeoutTicks: 300, heartbeatIntervalTicks: 2, proposalTimeoutMs: 3_000 },
        clock: systemClock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
    const leader = await until('a leader', 20_000, () => [...nodes.values()].find((n) => n.status().role === 'leader'));
    const follower = [...nodes.values()].find((n) => n !== leader) as Node;
    const lid = leader.status().id;
    await until('the follower to follow it', 10_000, () => (follower.status().leader === lid ? true : undefined));
    await leader.stop();
    await sleep(300);
    const before = follower.lastLeaderContactMs();
    assert.ok(before >= 250, `no contact for ${before} ms`);
    const { term } = follower.status();
    await follower.handleRequest({ type: 'heartbeat', from: 'n3', to: follower.status().id, term, commit: 0, readSeq: 0 });
    assert.equal(follower.status().leader, lid, 'the heartbeat was dropped: the follower keeps its leader');
    const after = follower.lastLeaderContactMs();
    assert.ok(after >= before, `last contact ${after} ms after the dropped heartbeat, ${before} ms before (it was reset)`);
  });
});

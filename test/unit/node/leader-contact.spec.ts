/**
 * lastLeaderContactMs (the last-contact figure a stale snapshot download
 * reports) counts only the leader this node follows: an append or heartbeat
 * of the current term from another member, which the core drops (one leader
 * a term, 0c4571e), refreshed it, so a follower cut off from its leader
 * reported fresh contact for as long as any member kept sending. Real Nodes
 * on the in-memory transport; n3 is a voter that never runs.
 */
import assert from 'node:assert/strict';

import type { Node } from '../../../src/node/node.js';
import { sleep, until } from '../../harness/until.js';
import { memoryNodes } from './memory-nodes.js';

describe('node: last contact with the leader', function () {
  this.timeout(30_000);
  const { nodes, start } = memoryNodes();

  it('is not refreshed by a heartbeat the core drops (another member claiming the current term)', async () => {
    // An election timeout of 3-6 s: the follower keeps its (stopped) leader for the whole test.
    await start(['n1', 'n2'], { tickMs: 10, electionTimeoutTicks: 300, heartbeatIntervalTicks: 2, proposalTimeoutMs: 3_000 });
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

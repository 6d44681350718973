/**
 * RaftNode.snapshotLost: the driver found its snapshot damaged and moved it
 * out of its store. The leader offers it to no follower (a fetch could only
 * fail), until the driver holds one again (setSnapshot at or after its
 * index: the node builds one at once from its state machine); then that one
 * is offered. Another snapshot than the core's changes nothing.
 */
import assert from 'node:assert/strict';

import { TestCluster, bytes } from './harness.js';

describe('RaftNode.snapshotLost', () => {
  it('a leader whose snapshot is lost offers none until it holds one again, then that one', () => {
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    c.isolate('c');
    const a = c.node('a');
    for (let i = 0; i < 20; i++) a.propose(bytes(`v${i}`));
    c.stabilize();
    c.tickAll(1);
    const lost = c.takeSnapshot('a');
    assert.equal(a.snapshotLost({ ...lost, digest: 'another' }), false, 'not the core\'s snapshot: nothing changes');
    assert.equal(a.snapshotLost(lost), true);
    c.heal();
    c.tickAll(4);
    assert.deepEqual(c.snapshotsWanted.get('c') ?? [], [], 'the lost snapshot is not offered');
    assert.ok((c.persisted.get('c')?.appliedIndex ?? 0) < lost.index, 'c is still behind');
    // The driver builds a snapshot of the same state (same index, another digest: a new archive).
    const rebuilt = { ...lost, digest: `rebuilt@${lost.index}` };
    a.setSnapshot(rebuilt);
    c.tickAll(4);
    assert.deepEqual(c.snapshotsWanted.get('c'), [rebuilt], 'the rebuilt snapshot is offered');
  });
});

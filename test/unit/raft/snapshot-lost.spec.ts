/**
 * RaftNode.snapshotLost: the driver found its snapshot damaged and moved it
 * out of its store. The leader offers it to no follower (a fetch could only
 * fail), until the driver holds one again (setSnapshot at or after its
 * index: the node builds one at once from its state machine); then that one
 * is offered. Another snapshot than the core's changes nothing.
 */
import assert from 'node:assert/strict';

import type { SnapshotMeta } from '../../../src/raft/index.js';
import { TestCluster, bytes } from './harness.js';

/**
 * strandedBehindLostSnapshot: a leads a, b, c; c was cut off while a wrote 20
 * entries, snapshotted and compacted them, then lost that snapshot (c is back,
 * behind it, and offered nothing); b took a snapshot of its own when bHolds.
 */
function strandedBehindLostSnapshot(bHolds: boolean): { c: TestCluster; lost: SnapshotMeta; bSnapshot: SnapshotMeta | null } {
  const c = new TestCluster(['a', 'b', 'c']);
  c.elect('a');
  c.isolate('c');
  const a = c.node('a');
  for (let i = 0; i < 20; i++) a.propose(bytes(`v${i}`));
  c.stabilize();
  c.tickAll(1);
  const bSnapshot = bHolds ? c.takeSnapshot('b') : null;
  const lost = c.takeSnapshot('a');
  assert.equal(a.snapshotLost({ ...lost, digest: 'another' }), false, 'not the core\'s snapshot: nothing changes');
  assert.equal(a.snapshotLost(lost), true);
  c.heal();
  c.tickAll(4);
  assert.deepEqual(c.snapshotsWanted.get('c') ?? [], [], 'the lost snapshot is not offered');
  assert.ok((c.persisted.get('c')?.appliedIndex ?? 0) < lost.index, 'c is still behind');
  return { c, lost, bSnapshot };
}

describe('RaftNode.snapshotLost', () => {
  it('a leader whose snapshot is lost offers none until it holds one again, then that one', () => {
    const { c, lost } = strandedBehindLostSnapshot(false);
    // The driver builds a snapshot of the same state (same index, another digest: a new archive).
    const rebuilt = { ...lost, digest: `rebuilt@${lost.index}` };
    c.node('a').setSnapshot(rebuilt);
    c.tickAll(4);
    assert.deepEqual(c.snapshotsWanted.get('c'), [rebuilt], 'the rebuilt snapshot is offered');
  });

  it('status().snapshotLost says so from the loss, also with no follower waiting, until it holds one again', () => {
    // Before, only snapshotStranded (a follower waiting) or snapshotRebuildFailed told of it: a loss nobody needed a
    // snapshot for yet showed nowhere (cluster status said nothing).
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    const a = c.node('a');
    a.propose(bytes('x'));
    c.stabilize();
    c.tickAll(1);
    const snap = c.takeSnapshot('a');
    assert.equal(a.status().snapshotLost, false);
    assert.equal(a.snapshotLost(snap), true);
    c.tickAll(2);
    const st = a.status();
    assert.equal(st.snapshotLost, true);
    assert.deepEqual(st.snapshotStranded, [], 'nobody waits');
    assert.equal(st.snapshotRebuildFailed, false);
    a.setSnapshot({ ...snap, digest: `rebuilt@${snap.index}` });
    assert.equal(a.status().snapshotLost, false);
    assert.equal(c.node('b').status().snapshotLost, false);
  });
});

/**
 * A leader whose snapshot is lost and whose rebuild failed (snapshotRebuildFailed:
 * a full disk, EIO) has nothing to offer a follower cut off past its log: it
 * hands leadership to a caught-up voter that said (heartbeat answers) it holds
 * a snapshot, which offers its own. With no such voter it stays leader and
 * names the followers that wait (status().snapshotStranded).
 */
describe('RaftNode.snapshotRebuildFailed', () => {
  /** stranded: strandedBehindLostSnapshot, and a still leads (its rebuild may yet succeed), c named as waiting. */
  function stranded(bHolds: boolean): ReturnType<typeof strandedBehindLostSnapshot> {
    const r = strandedBehindLostSnapshot(bHolds);
    assert.equal(r.c.leaderId(), 'a', 'a still leads while its rebuild may succeed');
    assert.deepEqual(r.c.node('a').status().snapshotStranded, ['c'], 'c needs a snapshot a cannot offer');
    return r;
  }

  it('hands leadership to the voter that holds a snapshot, which offers it to the follower cut off past the log', () => {
    const { c, bSnapshot } = stranded(true);
    const a = c.node('a');
    a.snapshotRebuildFailed();
    assert.equal(a.status().leadTransferee, 'b', 'the transfer starts at once');
    c.stabilize();
    assert.equal(c.leaderId(), 'b');
    c.tickAll(4);
    assert.deepEqual(c.snapshotsWanted.get('c'), [bSnapshot], "c is offered b's snapshot");
    // a (its snapshot still lost) stands for no election: no leadership handed back and forth.
    c.tickAll(60);
    assert.equal(c.leaderId(), 'b');
  });

  it('stays leader and reports the waiting follower when no voter holds a snapshot to offer', () => {
    const { c } = stranded(false);
    const a = c.node('a');
    a.snapshotRebuildFailed();
    c.tickAll(60);
    assert.equal(c.leaderId(), 'a', 'b holds no snapshot: it would lead no better');
    const st = a.status();
    assert.equal(st.leadTransferee, '');
    assert.equal(st.snapshotRebuildFailed, true);
    assert.deepEqual(st.snapshotStranded, ['c']);
    // The rebuild succeeds at last: offered, and nothing is stranded any more.
    const rebuilt = c.takeSnapshot('a');
    c.tickAll(4);
    assert.deepEqual(c.snapshotsWanted.get('c'), [rebuilt]);
    assert.deepEqual(a.status().snapshotStranded, []);
    assert.equal(a.status().snapshotRebuildFailed, false);
  });
});

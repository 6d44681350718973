/**
 * A follower whose snapshot install failed after beginInstall reset its log
 * (simulator seed 20880): it may not apply anything until a snapshot at or
 * after that one is installed, and the member that offered it may be gone
 * for good. It tells its leader (installFailed, then needsSnapshot in every
 * heartbeat answer); the leader offers its newest snapshot, or takes one
 * first when its newest is older; the follower installs that and catches up.
 * Meanwhile its log keeps taking appends (its acknowledgements still count),
 * and it stands for no election.
 */
import assert from 'node:assert/strict';

import type { NodeId, SnapshotMeta } from '../../../src/raft/index.js';
import { bytes, laggingFollower, type TestCluster } from './harness.js';

/** failInstall: c fetched `meta`, the core reset its log to it (beginInstall), and writing it into the state machine failed. */
function failInstall(c: TestCluster, id: NodeId, meta: SnapshotMeta): void {
  assert.ok(c.node(id).beginInstall(meta));
  c.stabilize();
  c.node(id).installFailed(meta);
  c.stabilize();
}

/** install: `id` installs `meta` from `holder`'s state (beginInstall, the state machine replaced, snapshotInstalled). */
function install(c: TestCluster, id: NodeId, meta: SnapshotMeta, holder: NodeId): void {
  assert.ok(c.node(id).beginInstall(meta), `${id} takes snapshot ${meta.index}`);
  const p = c.persisted.get(id);
  const src = c.persisted.get(holder);
  if (p === undefined || src === undefined) throw new Error('missing member');
  p.applied = src.applied.filter((e) => e.index <= meta.index);
  p.appliedIndex = meta.index;
  p.snapshot = meta;
  c.node(id).snapshotInstalled(meta);
  c.stabilize();
}

describe('a follower whose snapshot install failed (simulator seed 20880)', () => {
  it('asks its leader again, is offered the leader\'s newest snapshot and installs it', () => {
    const { c, meta } = laggingFollower(20);
    const a = c.node('a');
    const appliedBefore = c.persisted.get('c')?.appliedIndex;
    failInstall(c, 'c', meta);
    const report = c.sent.filter((m) => m.from === 'c' && m.type === 'snapshotResp').pop();
    assert.deepEqual(report && report.type === 'snapshotResp' ? [report.index, report.reject] : null, [meta.index, true], 'the leader is told');
    assert.equal(c.node('c').status().installingSnapshot, 0, 'the failed install is over');
    for (let i = 0; i < 5; i++) a.propose(bytes(`x${i}`));
    c.stabilize();
    const newer = c.takeSnapshot('a');
    assert.ok(newer.index > meta.index);
    c.tickAll(3);
    assert.ok(c.sent.some((m) => m.from === 'c' && m.type === 'heartbeatResp' && m.needsSnapshot === meta.index), 'c asks for a snapshot at least as far');
    assert.equal(c.persisted.get('c')?.appliedIndex, appliedBefore, 'c applies nothing without a base');
    const offers = c.snapshotsWanted.get('c') ?? [];
    assert.deepEqual(offers[offers.length - 1], newer, 'c was offered the leader\'s newest snapshot and fetches it');
    assert.equal(c.node('c').status().installingSnapshot, newer.index);
    install(c, 'c', newer, 'a');
    for (let i = 0; i < 10; i++) a.propose(bytes(`w${i}`));
    c.tickAll(3);
    assert.equal(a.status().progress.c?.state, 'replicate');
    assert.deepEqual(c.appliedData('c'), c.appliedData('a'), 'c caught up');
  });

  it('with the offering member gone for good and an older snapshot on the new leader: the cluster still commits, the new leader takes a snapshot far enough and c installs it', () => {
    const { c, meta } = laggingFollower(20);
    // a (the only holder of meta's bytes) is gone; b, whose newest snapshot is its initial one, leads with c.
    c.isolate('a');
    c.tickAll(30);
    c.node('b').campaign();
    c.stabilize();
    assert.equal(c.leaderId() === 'b' || c.node('b').status().role === 'leader', true, 'b leads');
    const b = c.node('b');
    assert.ok(b.status().snapshotIndex < meta.index, 'b has no snapshot as far as the one c lost');
    const appliedBefore = c.persisted.get('c')?.appliedIndex;
    failInstall(c, 'c', meta);
    c.tickAll(3);
    assert.equal(b.snapshotWanted(), meta.index, 'b is asked for a snapshot at least that far');
    // b and c commit writes together: c's log keeps taking appends while its state machine has no base.
    const before = b.status().commit;
    for (let i = 0; i < 5; i++) b.propose(bytes(`after/${i}`));
    c.tickAll(3);
    assert.ok(b.status().commit >= before + 5, `b committed with c's acknowledgements (commit ${b.status().commit}, was ${before})`);
    assert.equal(c.persisted.get('c')?.appliedIndex, appliedBefore, 'c applies nothing without a base');
    // c stands for no election while it has no state to lead with.
    c.isolate('c');
    const term = c.node('c').status().term;
    c.tick('c', 60);
    assert.equal(c.node('c').status().term, term, 'c did not campaign');
    c.heal();
    c.isolate('a');
    // The driver takes the snapshot b was asked for; c is offered it at its next heartbeat answer.
    const taken = c.takeSnapshot('b');
    assert.ok(taken.index >= meta.index);
    assert.equal(b.snapshotWanted(), 0, 'the wanted snapshot exists');
    c.tickAll(3);
    const offers = c.snapshotsWanted.get('c') ?? [];
    assert.deepEqual(offers[offers.length - 1], taken);
    install(c, 'c', taken, 'b');
    b.propose(bytes('last'));
    c.tickAll(3);
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'), 'c caught up');
  });

  it('refuses an offer older than the snapshot its log was reset to', () => {
    const { c, meta } = laggingFollower(20);
    failInstall(c, 'c', meta);
    const older: SnapshotMeta = { ...meta, index: meta.index - 5, term: c.node('a').logTerm(meta.index) ?? 1, digest: 'older' };
    c.node('c').step({ type: 'snapshot', from: 'a', to: 'c', term: c.node('a').status().term, snapshot: older });
    c.stabilize();
    assert.equal(c.node('c').status().installingSnapshot, 0, 'not taken');
    const last = c.sent.filter((m) => m.from === 'c' && m.type === 'snapshotResp').pop();
    assert.deepEqual(last && last.type === 'snapshotResp' ? [last.index, last.reject] : null, [older.index, true], 'refused at once');
  });
});

/**
 * The leader's compaction guard for a follower that installs a snapshot
 * (issue 14 item 5): it lasts until the follower reports the install done
 * (not when the fetch ends), and a new leader learns of an install in
 * progress from the follower's answers instead of offering another snapshot
 * (Typesense #2859, etcd #5317: a follower that always arrives too late).
 */
import assert from 'node:assert/strict';

import type { NodeId, SnapshotMeta } from '../../../src/raft/index.js';
import { TestCluster, bytes, laggingFollower } from './harness.js';

/**
 * beginInstall: `id` fetched `meta` from `holder` and starts writing it into
 * its state machine (the long part); the harness's persisted state follows.
 */
function beginInstall(c: TestCluster, id: NodeId, meta: SnapshotMeta, holder: NodeId): boolean {
  const ok = c.node(id).beginInstall(meta);
  const p = c.persisted.get(id);
  const src = c.persisted.get(holder);
  if (ok && p !== undefined && src !== undefined) {
    p.applied = src.applied.filter((e) => e.index <= meta.index);
    p.appliedIndex = meta.index;
    p.snapshot = meta;
  }
  c.stabilize();
  return ok;
}

/** finishInstall: the state machine now holds the snapshot. */
function finishInstall(c: TestCluster, id: NodeId, meta: SnapshotMeta): void {
  c.node(id).snapshotInstalled(meta);
  c.stabilize();
}

/** snapshotOnly: `id` snapshots its applied state without compacting (the driver compacts separately). */
function snapshotOnly(c: TestCluster, id: NodeId): SnapshotMeta {
  const n = c.node(id);
  const p = c.persisted.get(id);
  if (p === undefined) throw new Error(`no ${id}`);
  const index = p.appliedIndex;
  const meta: SnapshotMeta = { index, term: n.logTerm(index) ?? 0, membership: n.membershipAt(index), sizeBytes: 0, digest: `state@${index}` };
  n.setSnapshot(meta);
  p.snapshot = meta;
  return meta;
}

/** compactAsDriver: what the node driver does after a snapshot (leader or follower): never past the compaction floor. */
function compactAsDriver(c: TestCluster, id: NodeId): number {
  const n = c.node(id);
  const p = c.persisted.get(id);
  const meta = snapshotOnly(c, id);
  const to = Math.min(meta.index, n.compactionFloor());
  if (to >= n.status().firstIndex && p !== undefined) {
    const base = n.compact(to);
    p.logBase = base;
    p.entries = p.entries.filter((e) => e.index > base.index);
  }
  return n.status().firstIndex;
}

describe('snapshot install guard (issue 14 item 5)', () => {
  it('lasts through a long install (heartbeats answered), not only the fetch, and ends when the install is reported done', () => {
    const { c, meta } = laggingFollower(20);
    const a = c.node('a');
    assert.ok(beginInstall(c, 'c', meta, 'a'), 'the fetch is over; the install begins');
    assert.equal(c.node('c').status().installingSnapshot, meta.index, 'c still says it installs');
    // Many election timeouts of installing while writes go on: the guard holds throughout.
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 5; i++) a.propose(bytes(`w${round}/${i}`));
      c.tickAll(10);
      assert.equal(a.status().progress.c?.installGuard, meta.index, `round ${round}: guard kept`);
      assert.equal(a.compactionFloor(), meta.index, `round ${round}: nothing after the snapshot may be compacted`);
    }
    assert.equal(c.snapshotsWanted.get('c')?.length, 1, 'no second snapshot was started');
    // c hands out nothing to apply while its state machine is being replaced.
    assert.equal(c.persisted.get('c')?.appliedIndex, meta.index);
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.equal(a.status().progress.c?.installGuard, 0, 'guard over');
    assert.equal(a.status().progress.c?.state, 'replicate');
    assert.equal(a.compactionFloor(), a.status().applied);
    assert.deepEqual(c.appliedData('c'), c.appliedData('a'), 'c caught up from the entries after the snapshot');
  });

  it('a new leader learns of the install from the follower and keeps the entries after it; the install is not restarted', () => {
    const { c, meta } = laggingFollower(20);
    // b leads now; c is still fetching a's snapshot (a stays up as its source).
    c.node('a').transferLeadership('b');
    c.stabilize();
    c.tickAll(3);
    assert.equal(c.leaderId(), 'b');
    const b = c.node('b');
    assert.equal(b.status().progress.c?.installGuard, meta.index, 'b learned the install from c');
    assert.equal(b.status().progress.c?.state, 'snapshot', 'b waits for c instead of probing it');
    // b writes, snapshots and compacts as far as it may.
    for (let i = 0; i < 30; i++) b.propose(bytes(`after/${i}`));
    c.stabilize();
    c.tickAll(30);
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1, `b kept entry ${meta.index + 1} (first index ${b.status().firstIndex})`);
    assert.ok(b.status().snapshotIndex > meta.index, 'b has a newer snapshot it could have offered');
    assert.equal(c.snapshotsWanted.get('c')?.length, 1, 'c was not offered (or did not start) another snapshot');
    // c finishes installing a's snapshot and reports to b, which replicates the rest.
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    c.tickAll(5);
    assert.equal(b.status().progress.c?.installGuard, meta.index, 'the guard also covers the install phase');
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.equal(c.snapshotsWanted.get('c')?.length, 1, 'one snapshot in all');
    assert.equal(b.status().progress.c?.state, 'replicate');
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'));
  });

  it('followers keep the entries an installing peer needs (the leader announces its floor), so the next leader still has them', () => {
    const { c, meta } = laggingFollower(20);
    const a = c.node('a');
    for (let i = 0; i < 30; i++) a.propose(bytes(`more/${i}`));
    c.stabilize();
    c.tickAll(3);
    const b = c.node('b');
    assert.ok(b.status().applied >= meta.index + 30);
    assert.equal(b.compactionFloor(), meta.index, 'b, a follower, keeps the entries after the snapshot c installs');
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1);
    // b leads next; c finishes the install it started from a and catches up from b's log.
    a.transferLeadership('b');
    c.stabilize();
    c.tickAll(3);
    assert.equal(c.leaderId(), 'b');
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1, 'b as leader still keeps them');
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.equal(c.snapshotsWanted.get('c')?.length, 1, 'one snapshot in all');
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'));
    // Once c is done, nobody announces a floor: a compacts freely again at once, b once every
    // follower has answered it (c's own guard took the inherited floor over).
    c.tickAll(3);
    assert.equal(a.compactionFloor(), a.status().applied);
    c.tickAll(20);
    assert.equal(b.compactionFloor(), b.status().applied);
  });

  it('a follower compacts no further than the leader\'s announced snapshot, so an offer that overtakes the install floor strands nobody', () => {
    // The race of the real-node test (install-guard.spec.ts): a offers c its snapshot S; b, applying
    // at its own pace, snapshots and compacts before any heartbeat announces c's install. b must still
    // hold S+1 when it leads next, or c is offered a second snapshot after the first install.
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    c.isolate('c');
    const a = c.node('a');
    const b = c.node('b');
    for (let i = 0; i < 20; i++) a.propose(bytes(`v${i}`));
    c.stabilize();
    c.tickAll(1);
    assert.equal(b.compactionFloor(), 0, 'no snapshot announced by the leader yet: b keeps its whole log');
    const meta = c.takeSnapshot('a');
    c.tickAll(1);
    assert.equal(b.compactionFloor(), meta.index, 'the heartbeat announced a\'s snapshot index');
    // More writes reach b (appends only, no heartbeat in between); b snapshots and compacts as far as it may.
    for (let i = 0; i < 15; i++) a.propose(bytes(`w${i}`));
    c.stabilize();
    a.propose(bytes('carries the commit of the others'));
    c.stabilize();
    assert.ok(b.status().applied >= meta.index + 15, `b applied ${b.status().applied}`);
    compactAsDriver(c, 'b');
    assert.ok(b.status().snapshotIndex > meta.index, 'b holds a newer snapshot than the one a will offer');
    assert.ok(b.status().firstIndex <= meta.index + 1, `b kept entry ${meta.index + 1} (first index ${b.status().firstIndex})`);
    // c comes back and is offered S; leadership moves to b before c's install is over.
    c.heal();
    c.tickAll(2);
    assert.deepEqual(c.snapshotsWanted.get('c')?.map((s) => s.index), [meta.index], 'c is offered a\'s snapshot');
    a.transferLeadership('b');
    c.stabilize();
    c.tickAll(3);
    assert.equal(c.leaderId(), 'b');
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(5);
    assert.deepEqual(c.snapshotsWanted.get('c')?.map((s) => s.index), [meta.index], 'one snapshot in all: b had the entries after it');
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'));
  });

  it('a new leader keeps the floor it inherited until the installing follower answers, however late (not two election timeouts)', () => {
    const { c, meta } = laggingFollower(20);
    const a = c.node('a');
    const b = c.node('b');
    c.tickAll(3);
    assert.equal(b.compactionFloor(), meta.index, 'b heard the floor a announces for c');
    // c's answers stop reaching anyone (a loaded machine, a slow link) just as b takes over; writes go on.
    c.isolate('c');
    a.transferLeadership('b');
    c.stabilize();
    assert.equal(c.leaderId(), 'b');
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 5; i++) b.propose(bytes(`late/${round}/${i}`));
      c.tickAll(10);
    }
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1, `b kept entry ${meta.index + 1} after 8 election timeouts without c (first index ${b.status().firstIndex})`);
    // c answers at last: it installs meta; its own guard takes over, and c catches up from b's log after the install.
    c.heal();
    c.tickAll(3);
    assert.equal(b.status().progress.c?.installGuard, meta.index);
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.deepEqual(c.snapshotsWanted.get('c')?.map((m) => m.index), [meta.index], 'one snapshot in all');
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'));
    // Everyone has answered and nobody installs: b compacts freely again.
    c.tickAll(3);
    assert.equal(b.compactionFloor(), b.status().applied);
  });

  it('a new leader that heard no install floor compacts no further than it did as a follower until its peers have answered (the old leader died within a heartbeat of its offer)', () => {
    // The race of test/unit/node/deaf-install.spec.ts (13 of ~590 runs): a offers c its snapshot S and stops before
    // any heartbeat announces c's install; b, which kept the entries after S as a follower (a's announced snapshot),
    // leads next and compacts at once, before c's first answer says it installs S. It must still hold S+1, or c is
    // offered b's newer snapshot right after its install: a second whole transfer.
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    c.isolate('c');
    const a = c.node('a');
    const b = c.node('b');
    for (let i = 0; i < 20; i++) a.propose(bytes(`v${i}`));
    c.stabilize();
    c.tickAll(1);
    const meta = c.takeSnapshot('a');
    c.tickAll(1);
    assert.equal(b.compactionFloor(), meta.index, 'the heartbeat announced a\'s snapshot index');
    for (let i = 0; i < 15; i++) a.propose(bytes(`w${i}`));
    c.stabilize();
    a.propose(bytes('carries the commit of the others'));
    c.stabilize();
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1, `b kept entry ${meta.index + 1} as a follower (first index ${b.status().firstIndex})`);
    // c comes back and is offered S; no heartbeat of a reaches b after that (a dies before its next one).
    c.heal();
    c.cutLink('a', 'b');
    c.tick('a', 2);
    assert.deepEqual(c.snapshotsWanted.get('c')?.map((s) => s.index), [meta.index], 'c is offered a\'s snapshot');
    assert.equal(c.node('c').status().installingSnapshot, meta.index);
    c.isolate('a');
    // b wins with c's vote; its driver compacts before c's first answer to the leader arrives.
    c.drop = (m) => m.from === 'c' && m.to === 'b' && (m.type === 'appendResp' || m.type === 'heartbeatResp');
    for (let t = 0; t < 100 && b.status().role !== 'leader'; t++) c.tickAll(1); // c, installing, stands for no election
    assert.equal(b.status().role, 'leader');
    compactAsDriver(c, 'b');
    assert.ok(b.status().firstIndex <= meta.index + 1, `b as a new leader kept entry ${meta.index + 1} (first index ${b.status().firstIndex})`);
    // c answers: it installs S; its own guard takes over, and it catches up from b's log after the install.
    c.drop = null;
    c.tickAll(3);
    assert.equal(b.status().progress.c?.installGuard, meta.index);
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.deepEqual(c.snapshotsWanted.get('c')?.map((m) => m.index), [meta.index], 'one snapshot in all');
    assert.deepEqual(c.appliedData('c'), c.appliedData('b'));
    // a never answers: after two election timeouts b compacts as far as c's guard (gone with c's install) allows.
    c.tickAll(2 * 10 + 1);
    assert.equal(b.compactionFloor(), b.status().applied);
  });

  it('a newer offer while installing does not restart the install', () => {
    const { c, meta } = laggingFollower(10);
    const a = c.node('a');
    // c goes silent mid-fetch while a writes and snapshots again; a re-offers after its idle timeout.
    c.isolate('c');
    for (let i = 0; i < 10; i++) a.propose(bytes(`x${i}`));
    c.stabilize();
    c.tickAll(1);
    const newer = snapshotOnly(c, 'a');
    c.tickAll(25);
    c.heal();
    c.tickAll(5);
    // A leader that holds a newer snapshot offers it (a restarted one, or one that compacted before it knew).
    c.node('c').step({ type: 'snapshot', from: 'a', to: 'c', term: a.status().term, snapshot: newer });
    c.stabilize();
    assert.equal(c.snapshotsWanted.get('c')?.length, 1, 'c keeps its install');
    assert.equal(c.node('c').status().installingSnapshot, meta.index);
    assert.equal(a.status().progress.c?.installGuard, meta.index, 'a keeps the entries after the install c reports');
    assert.ok(a.compactionFloor() <= meta.index);
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.deepEqual(c.appliedData('c'), c.appliedData('a'));
  });

  it('a follower silent for snapshotGuardTicksMax loses its guard (a dead follower cannot pin the log)', () => {
    const { c, meta } = laggingFollower(10, { snapshotGuardTicksMax: 40 });
    const a = c.node('a');
    c.isolate('c');
    for (let i = 0; i < 10; i++) a.propose(bytes(`w${i}`));
    c.tickAll(25);
    assert.ok(a.status().applied > meta.index);
    // Past the re-offer timeout the progress left snapshot state; the guard alone keeps the entries.
    assert.notEqual(a.status().progress.c?.state, 'snapshot');
    assert.equal(a.status().progress.c?.installGuard, meta.index, 'kept while silent for a while');
    assert.equal(a.compactionFloor(), meta.index);
    c.tickAll(25);
    assert.equal(a.status().progress.c?.installGuard, 0, 'dropped after snapshotGuardTicksMax silent ticks');
  });

  it('snapshotsInUse names the offered snapshot while the follower pulls it, through newer snapshots, and nothing once it is done or silent', () => {
    const { c, meta } = laggingFollower(10, { snapshotGuardTicksMax: 40 });
    const a = c.node('a');
    assert.deepEqual(a.snapshotsInUse(), [meta.index], 'offered');
    // a snapshots twice more while c still fetches the first: the first stays in use.
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5; i++) a.propose(bytes(`n${round}/${i}`));
      c.stabilize();
      c.tickAll(5);
      snapshotOnly(c, 'a');
    }
    assert.ok(a.status().snapshotIndex > meta.index);
    assert.deepEqual(a.snapshotsInUse(), [meta.index], 'still the one c pulls, not the newest');
    assert.deepEqual(c.node('b').snapshotsInUse(), [], 'a follower names none');
    assert.ok(beginInstall(c, 'c', meta, 'a'));
    finishInstall(c, 'c', meta);
    c.tickAll(3);
    assert.deepEqual(a.snapshotsInUse(), [], 'installed: nothing in use');
    // An offer nobody answers is in use only until the guard of a silent follower ends.
    c.isolate('c');
    for (let i = 0; i < 30; i++) a.propose(bytes(`m${i}`));
    c.stabilize();
    const later = c.takeSnapshot('a');
    c.heal();
    c.tickAll(2);
    c.isolate('c');
    assert.deepEqual(a.snapshotsInUse(), [later.index], 'the new offer');
    c.tickAll(60);
    assert.deepEqual(a.snapshotsInUse(), [], 'given up on a silent follower: nothing pinned for ever');
  });

  it('a failed fetch ends the guard', () => {
    const { c, meta } = laggingFollower(10);
    const a = c.node('a');
    assert.equal(a.status().progress.c?.installGuard, meta.index);
    c.node('c').snapshotFailed(meta);
    c.stabilize();
    assert.equal(c.node('c').status().installingSnapshot, 0);
    assert.equal(a.status().progress.c?.installGuard, 0);
  });
});

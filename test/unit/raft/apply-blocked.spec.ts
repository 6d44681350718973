/**
 * A member that cannot apply a committed entry it was handed (simulator seed
 * 81992: a restore entry whose archive every member that applied it had
 * dropped after compacting past it) tells its core (applyBlocked): only a
 * snapshot at or after that entry lets its state machine go on. It applies
 * nothing more, asks its leader for such a snapshot in every heartbeat
 * answer, takes one though its commit index is already past it. It still
 * stands for election (its log may be the one a quorum needs: seed 212164);
 * as leader it takes no proposal and hands leadership over to a member that
 * can apply.
 */
import assert from 'node:assert/strict';

import type { NodeId } from '../../../src/raft/index.js';
import { ProposalDroppedError } from '../../../src/raft/errors.js';
import { bytes, TestCluster } from './harness.js';

/** blockAt: `id`'s driver applied the entries it was handed only up to the one before `index`, and cannot apply `index`. */
function blockAt(c: TestCluster, id: NodeId, index: number): void {
  const p = c.persisted.get(id);
  if (p === undefined) throw new Error(`no member ${id}`);
  p.applied = p.applied.filter((e) => e.index < index);
  p.appliedIndex = index - 1;
  c.node(id).applyBlocked(index);
}

/** written: a cluster of a, b, c led by a, with ten writes applied everywhere; `at` is the index of the fourth. */
function written(): { c: TestCluster; at: number } {
  const c = new TestCluster(['a', 'b', 'c']);
  c.elect('a');
  const positions = [];
  for (let i = 0; i < 10; i++) positions.push(c.node('a').propose(bytes(`v${i}`)));
  c.stabilize();
  c.tickAll(1);
  return { c, at: positions[3]?.index ?? 0 };
}

describe('a member that cannot apply an entry it was handed (simulator seed 81992)', () => {
  it('applies nothing more, asks its leader for a snapshot at or after the entry, installs one its commit index is past, and applies on', () => {
    const { c, at } = written();
    const a = c.node('a');
    blockAt(c, 'c', at);
    for (let i = 0; i < 3; i++) a.propose(bytes(`w${i}`));
    c.tickAll(3);
    assert.equal(c.persisted.get('c')?.appliedIndex, at - 1, 'c is handed nothing past the entry it cannot apply');
    assert.equal(c.node('c').status().commit, a.status().commit, 'c\'s log still takes appends and commits');
    assert.ok(c.sent.some((m) => m.from === 'c' && m.type === 'heartbeatResp' && m.needsSnapshot === at), 'c asks for a snapshot at or after the entry');
    assert.equal(a.snapshotWanted(), at, 'a has none that far yet: it is asked to take one');
    const meta = c.takeSnapshot('a');
    assert.ok(meta.index >= at && meta.index <= c.node('c').status().commit, 'the snapshot is at or after the entry, and c has committed past it');
    c.tickAll(3);
    const offers = c.snapshotsWanted.get('c') ?? [];
    assert.deepEqual(offers[offers.length - 1], meta, 'c is offered a\'s snapshot and fetches it');
    assert.ok(c.installSnapshot('c', meta, 'a'), 'c installs it though its commit index is past it');
    for (let i = 0; i < 3; i++) a.propose(bytes(`x${i}`));
    c.tickAll(3);
    assert.deepEqual(c.appliedData('c'), c.appliedData('a'), 'c applies on after the snapshot');
    assert.equal(c.node('c').status().role, 'follower');
  });

  it('a blocked leader takes no proposal and hands leadership to a member that can apply, which offers it a snapshot', () => {
    const { c, at } = written();
    blockAt(c, 'a', at);
    assert.throws(() => c.node('a').propose(bytes('refused')), ProposalDroppedError);
    c.tickAll(10);
    const leader = c.leaderId();
    assert.ok(leader === 'b' || leader === 'c', `b or c leads (${String(leader)})`);
    const l = c.node(leader);
    l.propose(bytes('after'));
    c.tickAll(3);
    const meta = c.takeSnapshot(leader);
    c.tickAll(3);
    const offers = c.snapshotsWanted.get('a') ?? [];
    assert.deepEqual(offers[offers.length - 1], meta, 'a is offered the new leader\'s snapshot');
    assert.ok(c.installSnapshot('a', meta, leader));
    c.tickAll(3);
    assert.deepEqual(c.appliedData('a'), c.appliedData(leader));
  });

  it('a blocked member holding the longest log still stands for election, wins, and hands over (simulator seed 212164)', () => {
    const { c, at } = written();
    const a = c.node('a');
    // b is out for good; a appends entries c never gets (they cannot commit), then steps down (no quorum answers).
    c.isolate('b');
    c.cutLink('a', 'c');
    c.cutLink('c', 'a');
    for (let i = 0; i < 3; i++) a.propose(bytes(`only-a-${i}`));
    c.stabilize();
    c.tickAll(40);
    assert.notEqual(a.status().role, 'leader', 'a stepped down');
    assert.ok(a.status().lastIndex > c.node('c').status().lastIndex, 'a holds the longest log');
    // a cannot apply an entry it was handed (a restore whose archive nobody gives); c could lead only with a's vote,
    // which a's longer log refuses: a itself must stand.
    blockAt(c, 'a', at);
    c.heal();
    c.isolate('b');
    let leader: string | undefined;
    for (let t = 0; t < 300 && (leader = c.leaderId()) !== 'c'; t++) c.tickAll(1);
    assert.equal(leader, 'c', 'c leads: a won, then handed leadership to c');
    assert.ok(c.sent.some((m) => m.from === 'a' && m.to === 'c' && m.type === 'timeoutNow'), 'through a transfer from a');
    const l = c.node('c');
    l.propose(bytes('after'));
    c.tickAll(3);
    assert.ok(l.status().commit >= a.status().lastIndex, 'c commits past a\'s entries');
    const meta = c.takeSnapshot('c');
    c.tickAll(3);
    const offers = c.snapshotsWanted.get('a') ?? [];
    assert.deepEqual(offers[offers.length - 1], meta, 'a is offered c\'s snapshot');
    assert.ok(c.installSnapshot('a', meta, 'c'));
    c.tickAll(3);
    assert.deepEqual(c.appliedData('a'), c.appliedData('c'));
  });

  it('is idempotent, and refuses an entry it was never handed', () => {
    const { c, at } = written();
    const node = c.node('c');
    const handed = node.status().applied;
    assert.throws(() => node.applyBlocked(handed + 1), /outside the handed-out entries/);
    blockAt(c, 'c', at);
    node.applyBlocked(at);
    node.applyBlocked(at - 1);
    c.tickAll(3);
    const asks = c.sent.filter((m) => m.from === 'c' && m.type === 'heartbeatResp' && m.needsSnapshot !== undefined);
    assert.ok(asks.length > 0 && asks.every((m) => m.type === 'heartbeatResp' && m.needsSnapshot === at), 'c asks for the first entry it could not apply');
  });
});

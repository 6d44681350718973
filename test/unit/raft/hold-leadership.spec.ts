/**
 * RaftNode.holdLeadership: a member whose log is not the cluster's starts no election, so it cannot stall the
 * cluster. The scenario is review24's reproduction (branch removed-cert-repro, 065fc4a4): a member `a` that missed
 * r's removal still names r; one append forged with r's still-valid certificate at term 50 is taken by `a`, which
 * applies the forged entry (it reaches no other voter: nothing can tell it r was removed). Back with b and c, its
 * last log term (50) beat theirs: it was elected (its stale configuration {a,b,c,r} counts b and c) and led for
 * good with nothing committed, b and c refusing to overwrite their committed entries. The driver holds a's
 * leadership once a voter of its configuration answers that it holds committed, at an index `a` committed, an
 * entry of another term (src/node/removal-news.ts; test/unit/node/removal-news.spec.ts runs that over real nodes).
 */
import assert from 'node:assert/strict';
import { TestCluster, bytes } from './harness.js';

/** fooled: review24's steps up to the forged append `a` applied, cut off from b and c (r isolated after it). */
function fooled(): TestCluster {
  const c = new TestCluster(['a', 'b', 'c', 'r']);
  c.elect('b');
  c.isolate('a');
  c.node('b').proposeConfChange({ op: 'removeNode', nodeId: 'r' });
  c.stabilize();
  c.tickAll(2);
  for (let i = 0; i < 3; i++) c.node('b').propose(bytes(`x${i}`));
  c.stabilize();
  c.tickAll(2);
  c.isolate('r');
  const a = c.node('a');
  const st = a.status();
  const lastTerm = a.logTerm(st.lastIndex) ?? 0;
  a.step({ type: 'append', from: 'r', to: 'a', term: 50, prevLogIndex: st.lastIndex, prevLogTerm: lastTerm, entries: [{ index: st.lastIndex + 1, term: 50, type: 'normal', data: bytes('forged') }], commit: st.lastIndex + 1 });
  c.stabilize();
  assert.deepEqual(c.appliedData('a'), ['forged'], 'a applied the forged entry (no voter to ask)');
  return c;
}

describe('RaftNode.holdLeadership', () => {
  it('a member fooled once by a removed member\'s certificate, its leadership held, leaves b and c committing (before: it led for good, nothing committed)', () => {
    const c = fooled();
    // What the driver does once a voter answers after the heal (removal-news.ts): a's entry at its commit index
    // (term 50) is not the one the voter holds committed there.
    c.node('a').holdLeadership(true);
    c.heal();
    c.isolate('r');
    let aLed = false;
    for (let i = 0; i < 560; i++) {
      c.tickAll(1);
      if (c.node('a').status().role !== 'follower') aLed = true;
    }
    assert.equal(aLed, false, 'a never campaigned nor led');
    const leader = c.leaderId();
    assert.ok(leader === 'b' || leader === 'c', `b or c leads (leader: ${String(leader)})`);
    c.node(leader).propose(bytes('after'));
    c.stabilize();
    c.tickAll(20);
    assert.deepEqual(c.appliedData('b'), ['x0', 'x1', 'x2', 'after'], `b applied ${JSON.stringify(c.appliedData('b'))}`);
    assert.deepEqual(c.appliedData('c'), ['x0', 'x1', 'x2', 'after'], `c applied ${JSON.stringify(c.appliedData('c'))}`);
    // a stays as it is: its forged entry is committed there; an operator wipes and re-adds it.
    assert.deepEqual(c.appliedData('a'), ['forged']);
  });

  it('unheld, the same member leads for good and nothing commits (review24\'s reproduction: what the hold prevents)', () => {
    const c = fooled();
    c.heal();
    c.isolate('r');
    c.tickAll(560);
    assert.equal(c.leaderId(), 'a');
    c.node('a').propose(bytes('after'));
    c.stabilize();
    c.tickAll(20);
    assert.deepEqual(c.appliedData('b'), ['x0', 'x1', 'x2']);
  });

  it('a leader held steps down at once, and a held member campaigns for nobody, asked to or not; released, it campaigns again', () => {
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    c.node('a').holdLeadership(true);
    assert.equal(c.node('a').status().role, 'follower');
    assert.equal(c.node('a').leadershipHeld(), true);
    c.isolate('b');
    c.isolate('c');
    const term = c.node('a').status().term;
    c.node('a').campaign();
    c.tick('a', 200);
    assert.equal(c.node('a').status().role, 'follower');
    assert.equal(c.node('a').status().term, term, 'no election started: no term moved');
    c.node('a').holdLeadership(false);
    c.tick('a', 40);
    assert.notEqual(c.node('a').status().role, 'follower', 'released, it campaigns');
  });
});

/**
 * A membership change with an applied floor (RaftNode.proposeConfChange's
 * appliedFloor): the voters after it that applied the floor (the leader by
 * its driver's stateApplied, the others by their heartbeat answers) must make
 * a quorum of them. What a driver applies from outside the log (a restore's
 * archive) reaches a new configuration only through members that hold it
 * (simulator seeds 717880, 843202, 844972: a learner promoted before it
 * applied a restore, then a holder removed, left no quorum able to apply it).
 */
import assert from 'node:assert/strict';

import { ConfChangeUnsafeError, MembershipChangeError } from '../../../src/raft/index.js';
import { TestCluster, membership } from './harness.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('raft: membership changes wait for a quorum of the new voters to have applied the floor', () => {
  /** setup: voters a, b, c and learner d, a leading; entry `floor` committed everywhere, applied (reported) by a and b only. */
  function setup(): { c: TestCluster; floor: number } {
    const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
    c.elect('a');
    c.node('a').propose(bytes('restore'));
    c.stabilize();
    const floor = c.node('a').status().commit;
    c.node('a').stateApplied(floor);
    c.node('b').stateApplied(floor);
    c.tickAll(2); // heartbeats: the answers carry what each reported
    c.stabilize();
    return { c, floor };
  }

  it('refuses to promote a learner, or remove a holder, when the holders would not be a quorum of the voters after it', () => {
    const { c, floor } = setup();
    const a = c.node('a');
    // {a, b, c, d}: a and b hold it, 2 of a quorum of 3.
    assert.throws(
      () => a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor),
      (e: unknown) => e instanceof ConfChangeUnsafeError && /only a, b have applied entry .*; c, d have reported no applied index to this leader/.test(e.message),
    );
    // {a, c}: a alone, 1 of 2.
    assert.throws(() => a.proposeConfChange({ op: 'removeNode', nodeId: 'b' }, floor), ConfChangeUnsafeError);
    // {a, b}: both hold it.
    const before = a.status().lastIndex;
    a.proposeConfChange({ op: 'removeNode', nodeId: 'c' }, floor);
    assert.equal(a.status().lastIndex, before + 1, 'removing the member that does not hold it is proposed');
  });

  it('a node that is no member yet is told to join as a learner first (it reports nothing until it answers heartbeats)', () => {
    const c = new TestCluster(['a', 'e'], {}, membership(['a']));
    c.elect('a');
    c.node('a').propose(bytes('restore'));
    c.stabilize();
    const floor = c.node('a').status().commit;
    c.node('a').stateApplied(floor);
    assert.throws(() => c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'e' }, floor), /only a has applied entry .*; add e as a learner first and promote it once it has caught up/);
  });

  it('a follower that claims to have applied past the leader\'s log counts only up to its last entry', () => {
    const { c, floor } = setup();
    const a = c.node('a');
    // c lies: an index far past anything written. The leader counts it as applied up to its own last entry.
    c.node('c').stateApplied(Number.MAX_SAFE_INTEGER);
    c.tickAll(2);
    c.stabilize();
    assert.equal(a.status().progress.c?.applied, a.status().lastIndex);
    a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor);
    assert.throws(() => a.proposeConfChange({ op: 'removeNode', nodeId: 'b' }, a.status().lastIndex + 1), MembershipChangeError, 'another membership change is not committed yet');
  });

  it('names the members that never reported an applied index (a member of an older build), not those that reported a lower one', () => {
    const { c, floor } = setup();
    c.node('c').stateApplied(floor - 1);
    c.tickAll(2);
    c.stabilize();
    assert.throws(() => c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor), (e: unknown) => e instanceof ConfChangeUnsafeError && /; d has reported no applied index/.test(e.message));
  });

  it('a change that leaves the voters as they are (a learner leaving) is not held back', () => {
    const { c, floor } = setup();
    c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'd' }, floor);
    c.stabilize();
    assert.deepEqual(c.node('a').status().membership.learners, []);
  });

  it('takes the change once a third voter reports it applied the floor, and only after its heartbeat answer says so', () => {
    const { c, floor } = setup();
    const a = c.node('a');
    c.node('c').stateApplied(floor);
    assert.throws(() => a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor), ConfChangeUnsafeError, 'the leader does not know yet');
    c.tickAll(2);
    c.stabilize();
    a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor);
    c.stabilize();
    c.tickAll(2);
    assert.deepEqual([...a.status().membership.voters].sort(), ['a', 'b', 'c', 'd']);
  });

  it('a new leader knows nothing of the others until they answer its heartbeats; without a floor nothing is checked', () => {
    const { c, floor } = setup();
    c.node('a').transferLeadership('b');
    c.stabilize();
    const b = c.node('b');
    assert.equal(b.status().role, 'leader');
    // b has not heard a heartbeat answer yet: of {a, b} after removing c it knows only itself holds the floor.
    assert.throws(() => b.proposeConfChange({ op: 'removeNode', nodeId: 'c' }, floor), /only b has applied/);
    c.tickAll(2);
    c.stabilize();
    // a answered: {a, b, c, d} still has 2 holders of a quorum of 3.
    assert.throws(() => b.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, floor), ConfChangeUnsafeError);
    // Without a floor (no restore in the log) the change is taken; other refusals are unchanged.
    b.proposeConfChange({ op: 'addVoter', nodeId: 'd' });
    assert.throws(() => b.proposeConfChange({ op: 'removeNode', nodeId: 'c' }, floor), MembershipChangeError, 'another membership change is not committed yet');
  });
});

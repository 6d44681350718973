/**
 * A leader never sends a snapshot whose configuration does not name it (one it installed before its own addition):
 * the follower would be left with a configuration that lacks its leader, whose messages its peer plane then takes
 * only once a voter of that configuration vouches for it (src/node/vouches.ts): with those voters all gone (the
 * cluster's original members replaced), none could, and the follower never caught up (join.spec's first production
 * path). It takes one that names it (snapshotWanted) and offers that.
 */
import assert from 'node:assert/strict';
import { TestCluster, bytes, initialSnapshot, membership } from './harness.js';

describe('a leader whose newest snapshot predates its own addition', () => {
  it('offers a follower that needs a snapshot a new one that names it, never the old one', () => {
    const c = new TestCluster(['a', 'b', 'c', 'd', 'e'], {}, membership(['a', 'b', 'c']));
    for (const [id, peers] of [['d', ['a', 'd']], ['e', ['d', 'e']]] as const) {
      const p = c.persisted.get(id);
      assert.ok(p !== undefined);
      p.snapshot = initialSnapshot(membership([...peers]));
      c.start(id);
    }
    c.elect('a');
    c.node('a').propose(bytes('x'));
    c.stabilize();
    const old = c.takeSnapshot('a');
    assert.deepEqual([...old.membership.voters, ...old.membership.learners].sort(), ['a', 'b', 'c']);
    c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
    c.stabilize();
    c.tickAll(2);
    assert.deepEqual(c.snapshotsWanted.get('d'), [old], 'd is offered a\'s snapshot, which names a');
    assert.ok(c.installSnapshot('d', old, 'a'));
    c.tickAll(2);
    c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' });
    c.stabilize();
    c.tickAll(2);
    c.node('a').transferLeadership('d');
    c.stabilize();
    c.tickAll(2);
    assert.equal(c.leaderId(), 'd');
    c.node('d').propose(bytes('y'));
    c.stabilize();
    c.node('d').proposeConfChange({ op: 'addLearner', nodeId: 'e' });
    c.stabilize();
    c.tickAll(2);
    assert.deepEqual(c.snapshotsWanted.get('e'), [], 'e is not offered d\'s newest snapshot, which does not name d');
    assert.ok(c.node('d').snapshotWanted() > old.index, 'd is asked for one that names it');
    const named = c.takeSnapshot('d');
    assert.ok(named.membership.voters.includes('d'));
    c.tickAll(2);
    assert.deepEqual(c.snapshotsWanted.get('e'), [named], 'e is offered the new one');
    assert.ok(c.installSnapshot('e', named, 'd'));
    c.tickAll(2);
    assert.deepEqual(c.appliedData('e'), ['x', 'y']);
    assert.equal(c.node('e').status().leader, 'd');
  });
});

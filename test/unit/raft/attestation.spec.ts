/**
 * Attest entries (RaftNode.proposeAttestation): a `conf` entry that changes no
 * member and carries a leader's commit statement of a configuration entry
 * (src/node/membership-proofs.ts), which joins Membership.proofs from there on
 * as a change's proof does; it waits like a change (one at a time, not before
 * the term's first entry commits), and a change proposed meanwhile is refused
 * until it commits (the driver waits: Node.changeMembership).
 */
import assert from 'node:assert/strict';

import { MembershipChangeError, applyConfChange, decodeConfChange, encodeConfChange } from '../../../src/raft/index.js';
import { TestCluster, membership } from './harness.js';

describe('raft: attest entries carry a commit statement and change no member', () => {
  it('after a committed change the leader appends one: the proofs grow on every member, the voters and the configuration\'s index stay', () => {
    const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c']));
    c.elect('a');
    const a = c.node('a');
    const change = a.proposeConfChange({ op: 'addLearner', nodeId: 'd' }, 0, () => 'appended-proof');
    assert.equal(a.proposeAttestation(() => 'committed-proof'), null, 'not while the change is not committed');
    c.stabilize();
    assert.equal(a.membershipIndex(), change.index);
    let asked = 0;
    const pos = a.proposeAttestation(() => {
      asked++;
      return 'committed-proof';
    });
    assert.ok(pos !== null);
    assert.equal(asked, 1);
    assert.equal(a.attestationPending(), true);
    assert.throws(() => a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }), MembershipChangeError, 'a change waits for it');
    c.stabilize();
    assert.equal(a.attestationPending(), false);
    for (const id of ['a', 'b', 'c']) {
      const n = c.node(id);
      assert.deepEqual(n.brief().membership.voters, ['a', 'b', 'c'], `${id}: voters unchanged`);
      assert.deepEqual(n.brief().membership.learners, ['d']);
      assert.deepEqual(n.brief().membership.proofs, ['appended-proof', 'committed-proof'], `${id}: the commit statement joined the proofs`);
      assert.equal(n.membershipIndex(), change.index, `${id}: the configuration still comes from the change, not the attest entry`);
    }
    assert.ok(a.status().commit >= pos.index);
    // the next change goes ahead, its proof after the commit statement
    a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }, 0, () => 'next');
    c.stabilize();
    assert.deepEqual(c.node('b').brief().membership.proofs, ['appended-proof', 'committed-proof', 'next']);
  });

  it('none when this node does not lead or with no proof; a change cannot be one', () => {
    const c = new TestCluster(['a', 'b', 'c']);
    c.elect('a');
    assert.equal(c.node('b').proposeAttestation(() => 'p'), null, 'a follower');
    assert.equal(c.node('a').proposeAttestation(() => null), null, 'no proof');
    const before = c.node('a').status().lastIndex;
    assert.equal(c.node('a').proposeAttestation(() => null), null);
    assert.equal(c.node('a').status().lastIndex, before, 'nothing appended');
    assert.throws(() => c.node('a').proposeConfChange({ op: 'attest', nodeId: 'a', proof: 'p' }), /an attest entry is no membership change/);
  });

  it('an attest entry survives its encoding; without a proof it changes nothing; builds before it skip it as malformed', () => {
    const m = { ...membership(['a', 'b']), proofs: ['x'] };
    const cc = decodeConfChange(encodeConfChange({ op: 'attest', nodeId: 'a', proof: 'y' }));
    assert.deepEqual(cc, { op: 'attest', nodeId: 'a', proof: 'y' });
    assert.deepEqual(applyConfChange(m, cc), { ...m, proofs: ['x', 'y'] });
    assert.equal(applyConfChange(m, { op: 'attest', nodeId: 'a' }), m);
    // the shape an older build reads: op unknown to it (its decodeConfChange threw, decodeConfChangeOrNull skipped it)
    assert.equal(JSON.parse(new TextDecoder().decode(encodeConfChange(cc))).op, 'attest');
  });
});

/**
 * review23: what a certificate of an id the configuration does not name (a removed member's, one never added) can do
 * to voters once their leader is gone (3b87ac3 passes its Raft messages to the core, nonVoterClaimTooSoon).
 */
import assert from 'node:assert/strict';
import { TestCluster, membership } from './harness.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('an outsider after the leader fails (review23)', () => {
  it('cannot split the replicas: its appends of a later term, sent each tick once the leader crashed, are taken by no voter that has not yet campaigned (before: a forged entry at one index and term, different on each voter, applied by both)', () => {
    const c = new TestCluster(['a', 'b', 'c'], {}, membership(['a', 'b', 'c']));
    c.elect('a');
    c.node('a').propose(bytes('x'));
    c.stabilize();
    c.isolate('a');
    const { term, lastIndex } = c.node('b').status();
    const taken = new Set<string>();
    for (let i = 0; i < 60 && taken.size < 2; i++) {
      for (const to of ['b', 'c']) {
        if (taken.has(to)) continue;
        c.tick(to);
        const t = term + 1;
        if (c.node(to).status().term >= t) continue;
        const replies = c.node(to).stepForReplies({ type: 'append', from: 'e', to, term: t, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term: t, type: 'normal', data: bytes(`forged for ${to}`) }] });
        if (replies.some((r) => r.type === 'appendResp' && !r.reject)) taken.add(to);
        c.stabilize();
      }
    }
    c.heal();
    c.tickAll(100);
    const b = c.appliedData('b');
    const cc = c.appliedData('c');
    assert.ok(!(b.includes('forged for b') && cc.includes('forged for c')), `replicas split: b applied ${JSON.stringify(b)}, c applied ${JSON.stringify(cc)}`);
    assert.deepEqual([...taken], [], 'no voter took e for its leader: b and c elect one of them');
    for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x'], id);
    assert.ok(['b', 'c'].includes(c.leaderId() ?? ''), `leader ${c.leaderId()}`);
  });
});

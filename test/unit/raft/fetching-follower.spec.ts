/**
 * A follower that is fetching a snapshot may not campaign (it has no state
 * to lead from), yet its log may be the longest, the one a quorum needs.
 * Simulator seed 637798: a follower began fetching the leader's snapshot,
 * then received the entries anyway (appends in flight when it was offered);
 * the leader, the fetch's source, went down for good, and the other member's
 * shorter log won no vote from it: nobody led until the fetch's 15 s limit.
 * Two rules end that:
 * - a fetch whose last entry the follower's log has since received and
 *   committed is moot (Raft §7: it keeps its log): the install ends there;
 * - a member that may not campaign forgets a leader silent for an election
 *   timeout, as a campaign would; the driver then sees that nobody leads and
 *   gives up a fetch from the lost leader that receives nothing (node.ts
 *   checkFetchStall), so the follower stands for election again.
 */
import assert from 'node:assert/strict';

import { bytes, laggingFollower } from './harness.js';

const ELECTION_TICKS = 10; // defaultRaftConfig's electionTimeoutTicks

describe('a follower fetching a snapshot (simulator seed 637798)', () => {
  it('keeps a leader that goes on sending heartbeats, and does not campaign while it fetches', () => {
    const { c, meta } = laggingFollower(20);
    c.tickAll(5 * ELECTION_TICKS);
    assert.equal(c.node('c').installingIndex(), meta.index);
    assert.equal(c.node('c').brief().leader, 'a');
    assert.equal(c.node('c').status().role, 'follower');
    assert.equal(c.leaderId(), 'a');
  });

  it('forgets a leader silent for an election timeout (the driver then gives up a fetch from it), and campaigns once the fetch is given up', () => {
    const { c, meta } = laggingFollower(20);
    c.isolate('a');
    c.isolate('b');
    c.tickAll(3 * ELECTION_TICKS);
    assert.equal(c.node('c').brief().leader, '', 'c no longer calls the silent a its leader');
    assert.equal(c.node('c').status().role, 'follower', 'c does not campaign while it fetches');
    c.node('c').snapshotFailed(meta);
    c.tickAll(3 * ELECTION_TICKS);
    assert.equal(c.node('c').status().role, 'preCandidate', 'c stands for election once the fetch is given up');
  });

  it('ends a fetch whose last entry its log then received and committed, and then campaigns with the longest log', () => {
    const { c, meta } = laggingFollower(20);
    assert.equal(c.node('c').installingIndex(), meta.index, 'c fetches a\'s snapshot');
    // The appends a sent c while it was cut off arrive now, late (in flight when a offered the snapshot).
    const late = c.sent.filter((m) => m.from === 'a' && m.to === 'c' && m.type === 'append' && m.entries.length > 0);
    assert.ok(late.length > 0);
    for (const m of late) c.node('c').step(m);
    c.stabilize();
    c.tickAll(2);
    assert.ok(c.node('c').status().commit >= meta.index, 'c received and committed the snapshot\'s entries');
    assert.equal(c.node('c').installingIndex(), 0, 'the fetch is moot: c installs nothing');
    assert.ok((c.persisted.get('c')?.appliedIndex ?? 0) >= meta.index, 'c applies them from its log');
    const last = c.sent.filter((m) => m.from === 'c' && m.to === 'a' && m.type === 'heartbeatResp').pop();
    assert.ok(last !== undefined && last.type === 'heartbeatResp' && last.installingIndex === 0, 'c\'s answers no longer say it installs');
    // a writes more with c only; then a is gone for good and b (shorter log) is back.
    c.isolate('b');
    for (let i = 0; i < 5; i++) c.node('a').propose(bytes(`w${i}`));
    c.tickAll(2);
    assert.ok(c.node('c').status().lastIndex > c.node('b').status().lastIndex, 'c holds a longer log than b');
    c.heal();
    c.isolate('a');
    c.tickAll(6 * ELECTION_TICKS);
    assert.equal(c.leaderId(), 'c', 'c campaigns and wins: its log is the longest');
    const w = c.node('c').propose(bytes('after'));
    c.tickAll(2);
    assert.ok(c.node('b').status().commit >= w.index, 'the new leader commits with b');
  });
});

/**
 * `cluster status` as text: the members' table, then one line for each
 * member that refuses the leader's peer messages, with its reason and what
 * usually fixes it (a new member started with --peers that leave the leader out).
 */
import assert from 'node:assert/strict';
import { clusterText, type ClusterView, type MemberView } from '../../../src/cli/client-commands.js';
import { oneLine } from '../../../src/cli/client-options.js';

function member(id: string, extra: Partial<MemberView> = {}): MemberView {
  return { id, address: `127.0.0.1:700${id.slice(1)}`, peerAddress: `127.0.0.1:710${id.slice(1)}`, suffrage: 'voter', role: 'follower', reachable: true, term: 2, commitIndex: 9, appliedIndex: 9, matchIndex: 9, lag: 0, ...extra };
}

describe('cli cluster status text', () => {
  const base: ClusterView = { endpoint: 'n1', leader: { id: 'n1', address: '127.0.0.1:7001' }, term: 2, commitIndex: 9, members: [member('n1', { role: 'leader' }), member('n2')] };

  it('all members take the leader\'s messages: the table alone', () => {
    const text = clusterText(base);
    assert.match(text, /^leader: n1 at 127\.0\.0\.1:7001, term 2, commit 9\n/);
    assert.doesNotMatch(text, /refuses/);
  });

  it('a member that refuses them is named, with its reason and the fix', () => {
    const reason = 'refused: n1 is not a member of this cluster as this node knows it (neither its --peers nor its log or snapshot name n1)';
    const n4 = member('n4', { suffrage: 'learner', role: 'unreachable', reachable: false, address: '', matchIndex: 0, lag: 9, refused: { from: 'n1', reason } });
    const text = clusterText({ ...base, members: [...base.members, n4] });
    const lines = text.split('\n');
    assert.ok(lines.some((l) => /^n4\s+\?\s+unreachable\s+learner\b/.test(l)), text);
    assert.ok(lines.includes(`n4 refuses n1's messages: ${reason}`), text);
    assert.match(text, /a new member must be started with --peers naming every member: `cluster add` prints them/);
  });

  it('a remote string is shown on one line, its control characters made visible (no escape sequence reaches the terminal)', () => {
    const esc = String.fromCharCode(27);
    assert.equal(oneLine(`denied:\n  ${esc}[2J${esc}]0;owned\u0007 by\tn1\u009b `), 'denied: \\x1b[2J\\x1b]0;owned\\x07 by n1\\x9b');
    assert.equal(oneLine('plain text stays'), 'plain text stays');
  });
});

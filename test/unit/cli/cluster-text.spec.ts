/**
 * `cluster status` as text: the members' table, then one line for each
 * member that refuses the leader's peer messages, with its reason and what
 * usually fixes it (a new member started with --peers that leave the leader out).
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { clusterText, clusterView, type ClusterView, type MemberView } from '../../../src/cli/client-commands.js';
import { oneLine } from '../../../src/cli/client-options.js';
import { Role, StatusResponse, Suffrage } from '../../../src/gen/snapcoord/v1/cluster.js';

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

  it('cluster status asks no other member with the API key in plaintext off loopback, unless --plaintext (the endpoint\'s rule)', async () => {
    // Before, statusAt dialled every member's advertised address with the endpoint's dial: a plaintext loopback
    // endpoint with a key sent that key in the clear to each remote member. 192.0.2.1 is TEST-NET-1 (nothing answers).
    const key = 'secret-key-0123456789';
    const st = StatusResponse.fromPartial({
      id: 'n1',
      role: Role.ROLE_FOLLOWER,
      term: 2n,
      members: [
        { id: 'n1', address: '127.0.0.1:7101', clientAddress: '127.0.0.1:7001', suffrage: Suffrage.SUFFRAGE_VOTER },
        { id: 'n2', address: '192.0.2.1:7102', clientAddress: '192.0.2.1:7002', suffrage: Suffrage.SUFFRAGE_VOTER },
      ],
    });
    const refused = await clusterView(st, 300, { dial: { apiKey: key }, plaintext: false });
    const n2 = refused.members.find((m) => m.id === 'n2');
    assert.equal(n2?.reachable, false);
    assert.match(n2?.error ?? '', /^refusing to send the API key in plaintext to 192\.0\.2\.1:7002: give --cacert FILE/, JSON.stringify(n2));
    assert.ok(!(n2?.error ?? '').includes(key));
    // --plaintext (the operator means it), no key, or TLS: the member is asked (and here does not answer in time).
    for (const md of [{ dial: { apiKey: key }, plaintext: true }, { dial: { apiKey: '' }, plaintext: false }, { dial: { apiKey: key, credentials: grpc.credentials.createSsl() }, plaintext: false }]) {
      const v = await clusterView(st, 300, md);
      assert.doesNotMatch(v.members.find((m) => m.id === 'n2')?.error ?? '', /refusing/);
    }
  });
});


/**
 * `cluster status` as text: the members' table, then one line for each
 * member that refuses the leader's peer messages, with its reason and what
 * usually fixes it (a new member started with --peers that leave the leader out),
 * and a note when the leader's snapshot is lost (the followers waiting for one).
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { STRANDED_SHOWN_MAX, clusterText, clusterView, statusJson, type ClusterView, type MemberView } from '../../../src/cli/client-commands.js';
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

  it('ids and addresses a hostile endpoint answers are shown as visible text, never as terminal controls (review32)', () => {
    const evil = 'n9\u001b]52;c;cm0K\u0007\u001b[2J\u009b1m\nforged line';
    const n9 = member('n9', { id: evil, address: evil, peerAddress: evil, refused: { from: evil, reason: oneLine(evil) } });
    const text = clusterText({ ...base, leader: { id: evil, address: evil }, members: [...base.members, n9] });
    // eslint-disable-next-line no-control-regex -- matching control characters is the point
    assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/, text);
    assert.ok(!text.split('\n').includes('forged line'), text);
    assert.match(text, /^leader: n9\\x1b\]52;c;/);
  });

    it('a leader whose snapshot is lost: the waiting followers are named under the table, with what the leader does', () => {
    const loss = { leader: 'n1', stranded: ['n2'], strandedCount: 1, rebuildFailed: false, handOffTo: '' };
    const rebuilding = clusterText({ ...base, snapshotLoss: loss }).split('\n');
    assert.equal(rebuilding.at(-1), 'n2 needs a snapshot the leader n1 cannot offer: its own is lost and is being rebuilt');
    const handing = clusterText({ ...base, snapshotLoss: { ...loss, rebuildFailed: true, handOffTo: 'n3' } }).split('\n');
    assert.equal(handing.at(-1), 'n2 needs a snapshot the leader n1 cannot offer: its own is lost and rebuilding it failed; handing leadership to n3, which holds one');
    const stays = clusterText({ ...base, snapshotLoss: { ...loss, stranded: ['n2', 'n3'], strandedCount: 2, rebuildFailed: true } });
    assert.ok(
      stays.includes(
        'n2, n3 need a snapshot the leader n1 cannot offer: its own is lost, rebuilding it failed, and no caught-up voter holds one; n1 stays leader and n2, n3 wait\n  (free disk space on n1 or check its disk: the snapshot is rebuilt by itself then)',
      ),
      stays,
    );
    const quiet = clusterText({ ...base, snapshotLoss: { ...loss, stranded: [], strandedCount: 0 } });
    assert.equal(quiet.split('\n').at(-1), "n1's snapshot is lost and is being rebuilt (no follower needs one yet)");
    const nobody = clusterText({ ...base, snapshotLoss: { ...loss, stranded: [], strandedCount: 0, rebuildFailed: true } });
    assert.match(nobody, /\nn1's snapshot is lost and rebuilding it failed \(no follower needs one yet\)\n {2}\(free disk space on n1/);
    // The table and the other notes stay as they were; none of it without a loss.
    assert.ok(stays.startsWith(clusterText(base)), stays);
    assert.doesNotMatch(clusterText(base), /snapshot/);
  });

  it('cluster status carries the leader\'s snapshot_loss into its view (--json) and text: ids on one line, at most STRANDED_SHOWN_MAX named', async () => {
    const md = { dial: { apiKey: '' }, plaintext: false };
    const leader = (snapshotLoss: StatusResponse['snapshotLoss']) =>
      StatusResponse.fromPartial({
        id: 'n1',
        role: Role.ROLE_LEADER,
        term: 2n,
        leaderId: 'n1',
        commitIndex: 9n,
        members: [{ id: 'n1', address: '127.0.0.1:7101', clientAddress: '127.0.0.1:7001', suffrage: Suffrage.SUFFRAGE_VOTER, matchIndex: 9n }],
        ...(snapshotLoss !== undefined ? { snapshotLoss } : {}),
      });
    const none = await clusterView(leader(undefined), 300, md);
    assert.equal('snapshotLoss' in none, false);
    assert.equal('snapshotLoss' in statusJson(leader(undefined)), false);

    const v = await clusterView(leader({ stranded: ['n2', 'n\u001b[2J3'], rebuildFailed: true, handOffTo: '' }), 300, md);
    assert.deepEqual(v.snapshotLoss, { leader: 'n1', stranded: ['n2', 'n\\x1b[2J3'], strandedCount: 2, rebuildFailed: true, handOffTo: '' });
    assert.deepEqual(JSON.parse(JSON.stringify(v)).snapshotLoss, v.snapshotLoss);
    assert.match(clusterText(v), /\nn2, n\\x1b\[2J3 need a snapshot the leader n1 cannot offer: its own is lost, rebuilding it failed/);
    assert.deepEqual((statusJson(leader({ stranded: ['n2'], rebuildFailed: false, handOffTo: '' })) as { snapshotLoss?: unknown }).snapshotLoss, { stranded: ['n2'], rebuildFailed: false, handOffTo: '' });

    const many = Array.from({ length: STRANDED_SHOWN_MAX + 5 }, (_, i) => `m${i}`);
    const big = await clusterView(leader({ stranded: many, rebuildFailed: false, handOffTo: '' }), 300, md);
    assert.equal(big.snapshotLoss?.stranded.length, STRANDED_SHOWN_MAX);
    assert.equal(big.snapshotLoss?.strandedCount, STRANDED_SHOWN_MAX + 5);
    assert.match(clusterText(big), new RegExp(`m${STRANDED_SHOWN_MAX - 1} and 5 more need a snapshot`));
  });

  it('a follower whose own snapshot is lost is named under the table (it stands for no election), from its own Status', async () => {
    // The endpoint is that follower; the leader's client address is not known (the leader's Status is not asked).
    const st = StatusResponse.fromPartial({
      id: 'n2',
      role: Role.ROLE_FOLLOWER,
      term: 2n,
      leaderId: 'n1',
      commitIndex: 9n,
      members: [
        { id: 'n1', address: '127.0.0.1:7101', suffrage: Suffrage.SUFFRAGE_VOTER },
        { id: 'n2', address: '127.0.0.1:7102', clientAddress: '127.0.0.1:7002', suffrage: Suffrage.SUFFRAGE_VOTER },
      ],
      snapshotLoss: { stranded: [], rebuildFailed: false, handOffTo: '' },
    });
    const md = { dial: { apiKey: '' }, plaintext: false };
    const v = await clusterView(st, 300, md);
    assert.deepEqual(v.members.find((m) => m.id === 'n2')?.snapshotLost, { rebuildFailed: false });
    assert.equal('snapshotLost' in (v.members.find((m) => m.id === 'n1') ?? {}), false);
    assert.equal(v.snapshotLoss, undefined, "no leader's note: the leader did not answer");
    assert.equal(clusterText(v).split('\n').at(-1), "n2's snapshot is lost and is being rebuilt: it stands for no election until then");
    const failed = await clusterView(StatusResponse.fromPartial({ ...st, snapshotLoss: { stranded: [], rebuildFailed: true, handOffTo: '' } }), 300, md);
    assert.match(clusterText(failed), /\nn2's snapshot is lost and rebuilding it failed: it stands for no election until it holds one\n {2}\(free disk space on n2/);
    const healthy = await clusterView(StatusResponse.fromPartial({ ...st, snapshotLoss: undefined }), 300, md);
    assert.doesNotMatch(clusterText(healthy), /snapshot/);
  });

  it('cluster status --raw --json names each member\'s refusal reason (and client address), as the text form does', () => {
    const reason = 'refused: n1 is not a member of this cluster as this node knows it';
    const st = StatusResponse.fromPartial({
      id: 'n1',
      role: Role.ROLE_LEADER,
      term: 2n,
      leaderId: 'n1',
      members: [
        { id: 'n1', address: '127.0.0.1:7101', clientAddress: '127.0.0.1:7001', suffrage: Suffrage.SUFFRAGE_VOTER, matchIndex: 9n },
        { id: 'n4', address: '127.0.0.1:7104', suffrage: Suffrage.SUFFRAGE_LEARNER, refused: reason },
      ],
    });
    const j = JSON.parse(JSON.stringify(statusJson(st))) as { members: { id: string; clientAddress: string; refused: string }[] };
    assert.deepEqual(
      j.members.map((m) => [m.id, m.clientAddress, m.refused]),
      [
        ['n1', '127.0.0.1:7001', ''],
        ['n4', '', reason],
      ],
    );
  });

  it("a member whose snapshot scrub found damaged archives is named under the table; its scrub is in --json", async () => {
    const scrub = { intervalSecs: 86_400, runs: 4, bytes: 5_000_000, damaged: 2, lastRunAgoSecs: 12 };
    const text = clusterText({ ...base, members: [member('n1', { role: 'leader', scrub: { ...scrub, damaged: 0 } }), member('n2', { scrub })] });
    assert.ok(text.startsWith(clusterText(base)), text);
    assert.equal(
      text.slice(clusterText(base).length),
      "\nn2's snapshot scrub found 2 stored archives damaged since it started (moved to quarantine, rebuilt or fetched again)\n  (its log names them; bytes that change at rest point to its disk or memory: check them)",
    );
    const md = { dial: { apiKey: '' }, plaintext: false };
    const st = StatusResponse.fromPartial({
      id: 'n1',
      role: Role.ROLE_LEADER,
      term: 2n,
      leaderId: 'n1',
      commitIndex: 9n,
      members: [{ id: 'n1', address: '127.0.0.1:7101', clientAddress: '127.0.0.1:7001', suffrage: Suffrage.SUFFRAGE_VOTER, matchIndex: 9n }],
      snapshotScrub: { intervalSecs: 3_600n, runs: 2n, bytes: 1_048_576n, damaged: 1n, lastRunAgoMs: 61_500n },
    });
    const v = await clusterView(st, 300, md);
    assert.deepEqual(v.members[0]?.scrub, { intervalSecs: 3_600, runs: 2, bytes: 1_048_576, damaged: 1, lastRunAgoSecs: 61 });
    assert.match(clusterText(v), /\nn1's snapshot scrub found 1 stored archive damaged since it started/);
    assert.deepEqual((statusJson(st) as { snapshotScrub?: unknown }).snapshotScrub, { intervalSecs: 3_600, runs: 2, bytes: 1_048_576, damaged: 1, lastRunAgoSecs: 61 });
    const never = await clusterView(StatusResponse.fromPartial({ ...st, snapshotScrub: { intervalSecs: 0n, runs: 0n, bytes: 0n, damaged: 0n, lastRunAgoMs: -1n } }), 300, md);
    assert.equal(never.members[0]?.scrub?.lastRunAgoSecs, null);
    assert.doesNotMatch(clusterText(never), /scrub/);
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


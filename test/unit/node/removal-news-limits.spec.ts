/**
 * RemovalNews (src/node/removal-news.ts), the module alone: what an answer must say before a member is refused as
 * removed or this node's leadership is held, and the bounds on the asking. Over real nodes:
 * removal-news.spec.ts and transport/removed-cert-news.spec.ts.
 */
import assert from 'node:assert/strict';
import { silentLogger } from '../../../src/node/logger.js';
import { REMOVAL_NEWS_ASK_INTERVAL_MS, REMOVAL_NEWS_ASK_TIMEOUT_MS, REMOVAL_NEWS_DENIAL_TTL_MS, REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX, REMOVAL_NEWS_ROUND_VOTERS_MAX, REMOVAL_NEWS_ROUNDS_IN_FLIGHT_MAX, RemovalNews } from '../../../src/node/removal-news.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../../../src/transport/transport.js';
import { ManualClock } from './manual-clock.js';

const own: Membership = { voters: ['a', 'b', 'c', 'r'], learners: [], addresses: {} };
/** withoutR: a voter's configuration at `index` that no longer names r, committed up to `commit`. */
const withoutR = (index: number, commit: number, extra: Partial<MembershipAnswer> = {}): MembershipAnswer => ({ from: '', term: 3, membership: { voters: ['a', 'b', 'c'], learners: [], addresses: {} }, membershipIndex: index, commitIndex: commit, ...extra });
const claim = (from: string, term: number, type: 'append' | 'vote' | 'heartbeat' = 'append'): Message =>
  type === 'vote'
    ? { type, from, to: 'a', term, preVote: true, transfer: false, lastLogIndex: 9, lastLogTerm: 9 }
    : type === 'heartbeat'
      ? { type, from, to: 'a', term, commit: 0, readSeq: 0 }
      : { type, from, to: 'a', term, prevLogIndex: 5, prevLogTerm: 2, entries: [], commit: 6 };

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

function setup(answer: (q: MembershipQuery) => MembershipAnswer | null, opts: { ownIndex?: number; commit?: number; ownTerm?: (i: number) => number | undefined; voters?: string[] } = {}) {
  const clock = new ManualClock(1_000);
  const asked: string[] = [];
  const held: boolean[] = [];
  const st = { term: 2, leader: 'b', commit: opts.commit ?? 5 };
  const conf = { membership: opts.voters === undefined ? own : { voters: opts.voters, learners: [], addresses: {} }, index: opts.ownIndex ?? 2 };
  const news = new RemovalNews({
    selfId: 'a',
    clock,
    log: silentLogger,
    configuration: () => conf,
    state: () => st,
    termAt: opts.ownTerm ?? (() => 2),
    ask: (q) => {
      asked.push(`${q.to}@${q.probeIndex ?? 0}`);
      const a = answer(q);
      if (a === null) return new Promise<never>(() => undefined); // never answers
      return Promise.resolve({ ...a, from: a.from === '' ? q.to : a.from });
    },
    holdLeadership: (h) => held.push(h),
  });
  return { clock, asked, held, news, st, conf };
}

describe('RemovalNews: what the voters of this node\'s configuration tell it', () => {
  it('a claim of a later term starts one round, every other voter asked at once (never the sender); a voter\'s committed newer configuration without r refuses r', async () => {
    const { news, asked } = setup(() => withoutR(7, 8));
    assert.equal(news.screen(claim('r', 3, 'vote')), null, 'nothing waits on the question: an election never does');
    assert.equal(news.screen(claim('r', 3)), null, 'nor an append, before an answer says r was removed');
    await settle();
    assert.deepEqual(asked.sort(), ['b@5', 'c@5']);
    assert.equal(news.reportedRemoved('r'), true);
    assert.match(news.screen(claim('r', 4))?.message ?? '', /r was removed from this cluster: voters of this node's configuration \([bc], [bc]\) hold committed configurations \(indexes 7, 7; this node's 2\) that do not name it$/);
    assert.equal(news.screen(claim('b', 4, 'vote')), null, 'a member the answer names passes');
  });

  it('tells nothing: an uncommitted removal (seed 1406: its leader may be deposed and r lead next), a configuration no newer than this node\'s, an answer from a build before the fields, a voter answering as another', async () => {
    for (const [what, a] of [
      ['uncommitted', withoutR(7, 6)],
      ['no newer', withoutR(2, 8)],
      ['older build', { ...withoutR(7, 0), commitIndex: undefined }],
      ['answers as another', withoutR(7, 8, { from: 'x' })],
    ] as const) {
      const { news } = setup(() => a as MembershipAnswer);
      news.screen(claim('r', 3));
      await settle();
      assert.equal(news.reportedRemoved('r'), false, what);
      assert.equal(news.screen(claim('r', 3)), null, what);
    }
  });

  it('no claim, no round: the leader this node follows, a sender of an older term, a member it does not name (vouches.ts asks about those)', async () => {
    const { news, asked } = setup(() => withoutR(7, 8));
    news.screen(claim('b', 2, 'heartbeat'));
    news.screen(claim('c', 1));
    news.screen(claim('x', 9));
    news.screen(claim('c', 2, 'vote'));
    await settle();
    assert.deepEqual(asked, []);
  });

  it('a refused member is asked about again at most once an interval; a committed configuration naming it again (added back) lifts the refusal, as this node\'s own catching up does', async () => {
    let answer = withoutR(7, 8);
    const { news, clock, asked, conf } = setup(() => answer);
    news.screen(claim('r', 3));
    await settle();
    assert.equal(news.reportedRemoved('r'), true);
    const n = asked.length;
    for (let i = 0; i < 50; i++) news.screen(claim('r', 3));
    await settle();
    assert.equal(asked.length, n, 'no round within the interval');
    answer = { ...withoutR(9, 9), membership: own };
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    assert.equal(news.screen(claim('r', 3))?.reason, 'removed');
    await settle();
    assert.equal(news.reportedRemoved('r'), false, 'added back at 9');
    answer = withoutR(11, 12);
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.screen(claim('r', 4));
    await settle();
    assert.equal(news.reportedRemoved('r'), true);
    conf.index = 11;
    assert.equal(news.reportedRemoved('r'), false, 'this node\'s configuration is as new: it no longer names r (or names it again)');
  });

  it('a voter holding committed another term at this node\'s commit index holds its leadership; released once a voter holds the same entry', async () => {
    let theirs = 7;
    const { news, held, clock, asked } = setup(() => withoutR(2, 9, { probeTerm: theirs }), { commit: 5, ownTerm: (i) => (i === 5 ? 50 : undefined) });
    news.checkOwnLog(true);
    await settle();
    assert.deepEqual(asked.sort(), ['b@5', 'c@5', 'r@5']);
    assert.deepEqual(held, [true]);
    assert.equal(news.leadershipHeld(), true);
    assert.equal(news.stats().leadershipHeld, true);
    theirs = 50;
    news.checkOwnLog(false);
    await settle();
    assert.deepEqual(held, [true], 'not asked again within the interval');
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.checkOwnLog(false);
    await settle();
    assert.deepEqual(held, [true, false]);
    // No probe term (the voter holds the entry uncommitted, compacted, or an older build): nothing held.
    const none = setup(() => withoutR(2, 4), { commit: 5, ownTerm: () => 50 });
    none.news.checkOwnLog(true);
    await settle();
    assert.deepEqual(none.held, []);
  });

  it('a change of the peer CRL drops what a voter told over a certificate it now revokes (review30: r, a removed member a still counts as a voter, lied that b and c were removed and that a\'s log is not the cluster\'s), keeps what the others told, and takes no answer over that certificate after it', async () => {
    const lie = 2 ** 40;
    const answers: Record<string, MembershipAnswer> = {
      r: { from: 'r', term: 3, membership: { voters: ['a', 'r'], learners: [], addresses: {} }, membershipIndex: lie, commitIndex: lie, probeTerm: 7, serial: '0A' },
      b: { ...withoutR(7, 8), serial: '0B' },
      // c does not answer: r's word about b is denied by nobody (b is its subject), its word about c by b (removal31).
    };
    const { news, held, clock } = setup((q) => answers[q.to] ?? null, { commit: 5, ownTerm: () => 2 });
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('b'), true, 'b reported removed');
    assert.equal(news.reportedRemoved('c'), false, 'b denies r\'s word about c');
    assert.deepEqual(held, [true], 'r\'s probe term held a\'s leadership');
    // The CRL now revokes r's certificate (serial 0a, any case and leading zeros).
    news.crlChanged((serial) => serial.replace(/^0+/, '').toLowerCase() === 'a');
    assert.equal(news.reportedRemoved('b'), false, 'b stays refused on the word of r, whose certificate is revoked');
    assert.equal(news.reportedRemoved('c'), false);
    assert.deepEqual(held, [true, false], 'a\'s leadership released: only r held it');
    // An answer over r's certificate (a connection made before the change) is not taken.
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('b'), false, 'r\'s lie taken again after the change');
    assert.deepEqual(held, [true, false]);
    assert.equal(news.screen(claim('b', 3))?.reason, undefined);
    assert.equal(news.reportedRemoved('r'), true, 'b\'s word on r is taken (its certificate is not revoked; r\'s answer naming itself no longer lifts it)');
  });

  it('bounds: ROUND_VOTERS_MAX voters a round; ROUNDS_IN_FLIGHT_MAX rounds at once; an ask given up after ASK_TIMEOUT_MS; campaigning, an unanswered round is asked again', async () => {
    const voters = ['a', 'r', ...Array.from({ length: 9 }, (_, i) => `v${i}`)];
    const { news, clock, asked } = setup(() => null, { voters });
    assert.equal(news.screen(claim('r', 3)), null);
    await settle();
    assert.equal(asked.length, REMOVAL_NEWS_ROUND_VOTERS_MAX);
    news.screen(claim('v0', 3));
    news.screen(claim('v1', 3));
    await settle();
    assert.equal(news.stats().rounds, REMOVAL_NEWS_ROUNDS_IN_FLIGHT_MAX, 'a third round waits');
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    news.screen(claim('v1', 3));
    await settle();
    assert.equal(news.stats().rounds, REMOVAL_NEWS_ROUNDS_IN_FLIGHT_MAX + 1, 'the asks timed out: the next round starts');
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    const rounds = news.stats().rounds;
    news.checkOwnLog(true);
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.stats().rounds, rounds + 2, 'no voter answered: the campaign asks again before the interval');
    news.close();
    news.screen(claim('v2', 5));
    assert.equal(news.stats().rounds, rounds + 2, 'closed: no round');
  });

  it('one voter\'s word that a member was removed is taken only while no other voter\'s committed configuration, as new as this node\'s, names it; two voters\' words are taken', async () => {
    // c answers a configuration that still names r (it has not heard), b that r was removed: b's word is denied.
    const { news } = setup((q) => (q.to === 'b' ? withoutR(7, 8) : withoutR(2, 8, { membership: own })));
    news.screen(claim('r', 3));
    await settle();
    assert.equal(news.reportedRemoved('r'), false, 'b\'s word, denied by c');
    assert.equal(news.screen(claim('r', 3)), null);
    // c does not answer: b's word stands alone, denied by nobody.
    const lone = setup((q) => (q.to === 'b' ? withoutR(7, 8) : null));
    lone.news.screen(claim('r', 3));
    lone.clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(lone.news.reportedRemoved('r'), true, 'b alone, nobody denies it');
    assert.match(lone.news.screen(claim('r', 3))?.message ?? '', /r was removed from this cluster: voters of this node's configuration \(b\) hold committed configurations \(indexes 7; this node's 2\) that do not name it, and no other voter answered one naming it/);
    // r's own word counts for nothing about r (never asked about itself; its answer about itself is skipped), nor
    // does it deny b's and c's.
    const self = setup((q) => (q.to === 'r' ? withoutR(2, 8, { membership: own }) : withoutR(7, 8)));
    self.news.checkOwnLog(true);
    await settle();
    assert.equal(self.news.reportedRemoved('r'), true);
    const selfOnly = setup((q) => (q.to === 'r' ? withoutR(7, 8) : withoutR(2, 8, { membership: own })));
    selfOnly.news.checkOwnLog(true);
    await settle();
    assert.equal(selfOnly.news.reportedRemoved('r'), false);
  });

  it('a liar (r, removed, still a voter of this node\'s configuration) is denied by any honest voter that answers, in either order, and for as long as this node\'s configuration is no newer than theirs', async () => {
    const voters = ['a', 'b', 'c', 'r'];
    const honest = (index: number): MembershipAnswer => ({ from: '', term: 3, membership: { voters: ['a', 'b', 'c'], learners: [], addresses: {} }, membershipIndex: index, commitIndex: index });
    const lie: MembershipAnswer = { from: '', term: 3, membership: { voters: ['r', 'a'], learners: [], addresses: {} }, membershipIndex: 2 ** 40, commitIndex: 2 ** 40 };
    for (const first of ['r', 'c']) {
      let later = 7;
      const { news, clock, conf } = setup((q) => (q.to === 'r' ? lie : honest(later)), { voters });
      // a round about b (asks c and r; one of them answers first), then one about c (asks b and r)
      const order = first === 'r' ? ['b', 'c'] : ['c', 'b'];
      for (const id of order) {
        news.screen(claim(id, 3));
        await settle();
      }
      assert.equal(news.reportedRemoved('b'), false, `r's word about b (${first} first)`);
      assert.equal(news.reportedRemoved('c'), false, `r's word about c (${first} first)`);
      assert.equal(news.reportedRemoved('r'), true, 'b and c say r was removed');
      // This node catches up with the honest configuration (index 7, without r): the honest voters still deny r's word.
      conf.index = 7;
      conf.membership = { voters: ['a', 'b', 'c'], learners: [], addresses: {} };
      later = 9;
      clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
      news.checkOwnLog(true);
      await settle();
      assert.equal(news.reportedRemoved('b'), false);
      assert.equal(news.reportedRemoved('r'), false, 'no longer named by this node\'s configuration');
    }
  });

  it('the price, in a 3-voter configuration: the one voter left that can speak about the third is believed, the removed liar too (only the CRL tells them apart there)', async () => {
    const lie: MembershipAnswer = { from: '', term: 3, membership: { voters: ['r', 'a'], learners: [], addresses: {} }, membershipIndex: 2 ** 40, commitIndex: 2 ** 40 };
    const { news } = setup((q) => (q.to === 'r' ? lie : { ...withoutR(7, 8), membership: { voters: ['a', 'b'], learners: [], addresses: {} } }), { voters: ['a', 'b', 'r'] });
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('r'), true, 'b says r was removed: true');
    assert.equal(news.reportedRemoved('b'), true, 'r says b was removed: a lie, and nobody but b can deny it');
  });

  it('a removal lifts once a later answer denies it and fewer than two voters still say so', async () => {
    const voters = ['a', 'b', 'c', 'd', 'r'];
    const withoutD = (index: number): MembershipAnswer => ({ from: '', term: 3, membership: { voters: ['a', 'b', 'c', 'r'], learners: [], addresses: {} }, membershipIndex: index, commitIndex: index });
    let cSays = withoutD(7);
    let bSays = withoutD(7);
    const { news, clock } = setup((q) => (q.to === 'c' ? cSays : q.to === 'b' ? bSays : withoutD(7)), { voters });
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('d'), true, 'b, c and r say so');
    cSays = { ...withoutD(9), membership: { voters, learners: [], addresses: {} } }; // d added back at 9
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('d'), true, 'b and r still say so (two words beat a denial)');
    bSays = cSays;
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.checkOwnLog(true);
    await settle();
    assert.equal(news.reportedRemoved('d'), false, 'r alone, denied by b and c');
  });

  it(`a denial counts REMOVAL_NEWS_DENIAL_TTL_MS after its answer: a voter gone silent no longer lifts a removal another voter reports (a report does not age)`, async () => {
    const voters = ['a', 'b', 'c', 'r'];
    // b: r removed at 7 (committed); c: r named at 5 (committed, newer than this node's 2): a denial; then c goes silent.
    let cAnswers = true;
    const namesR = (index: number): MembershipAnswer => ({ from: '', term: 3, membership: { voters, learners: [], addresses: {} }, membershipIndex: index, commitIndex: index });
    const { news, clock } = setup((q) => (q.to === 'b' ? withoutR(7, 8) : q.to === 'c' ? (cAnswers ? namesR(5) : null) : null), { voters });
    news.checkOwnLog(true);
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(news.reportedRemoved('r'), false, 'b alone says so and c denies it');
    cAnswers = false;
    // r keeps claiming; b keeps answering, c no more.
    for (let t = 0; t < REMOVAL_NEWS_DENIAL_TTL_MS - REMOVAL_NEWS_ASK_TIMEOUT_MS - 2 * REMOVAL_NEWS_ASK_INTERVAL_MS; t += REMOVAL_NEWS_ASK_INTERVAL_MS + REMOVAL_NEWS_ASK_TIMEOUT_MS) {
      news.screen(claim('r', 3));
      clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
      await settle();
      clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    }
    assert.equal(news.reportedRemoved('r'), false, 'c\'s denial still counts within its TTL');
    clock.advance(REMOVAL_NEWS_DENIAL_TTL_MS);
    assert.equal(news.reportedRemoved('r'), true, 'c\'s denial aged out: b\'s report stands alone, undenied');
    assert.equal(news.screen(claim('r', 3))?.reason, 'removed');
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS); // the round that refusal asked for ends (c silent)
    await settle();
    // c answers again, still naming r: its fresh denial lifts the refusal again.
    cAnswers = true;
    clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    news.screen(claim('r', 3));
    clock.advance(REMOVAL_NEWS_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(news.reportedRemoved('r'), false, 'a fresh denial counts');
  });

  it('bounds: at most REPORTS_PER_MEMBER_MAX voters\' words kept per member', async () => {
    const voters = ['a', 'x', ...Array.from({ length: REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX + 8 }, (_, i) => `v${i}`)];
    const { news, clock } = setup(() => ({ from: '', term: 3, membership: { voters: voters.filter((v) => v !== 'x'), learners: [], addresses: {} }, membershipIndex: 7, commitIndex: 8 }), { voters });
    for (let i = 0; i < 2 * voters.length; i++) {
      news.checkOwnLog(true);
      await settle();
      clock.advance(REMOVAL_NEWS_ASK_INTERVAL_MS);
    }
    assert.ok(REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX >= 2 && REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX < voters.length - 2);
    // x: removed in every voter's word; each v: named in every other voter's word.
    assert.equal(news.stats().reports, (voters.length - 1) * REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX);
    assert.equal(news.reportedRemoved('x'), true);
  });

  it('campaigning, a round that probed an older commit index does not count for the interval: the entries taken since (a forged one) are asked about at once', async () => {
    // a asked at commit 5 (the same entry as the voters: nothing held), then took an entry at 6 the voters hold with
    // another term, and campaigns within the interval.
    const { news, held, st, asked } = setup((q) => withoutR(2, 9, { probeTerm: q.probeIndex === 6 ? 7 : 2 }), { commit: 5, ownTerm: (i) => (i === 6 ? 50 : 2) });
    news.checkOwnLog(true);
    await settle();
    assert.deepEqual(held, []);
    const n = asked.length;
    news.checkOwnLog(true);
    await settle();
    assert.equal(asked.length, n, 'the same commit index: not asked again within the interval');
    st.commit = 6;
    news.checkOwnLog(true);
    await settle();
    assert.deepEqual(held, [true], 'asked again about index 6 at once');
    assert.ok(asked.includes('b@6'));
  });
});

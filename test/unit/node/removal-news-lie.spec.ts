/**
 * review30's repro (0dcf4989, red until removal31): RemovalNews took ONE voter's word for a committed removal.
 *
 * The voter that lies is the very member removal news is about: r, removed while a was away, is still a voter of a's
 * configuration (a missed the removal), and r's certificate is not revoked. A claim of any member (or a's own
 * campaign) makes a ask its voters, r among them; r answers a "committed" configuration at an index far ahead
 * (membership_index = commit_index = 2^40) that names only r and a. a then refused the honest members ('removed')
 * until its own configuration reached that index, which it never does: the honest voters' true answers (a newer
 * committed configuration naming them, at the real index) did not lift it. Now one voter's report stands only while
 * no other voter's committed configuration, as new as a's, names the member (removal-news.ts): n3 denies r's word
 * about n2, n2 about n3.
 */
import assert from 'node:assert/strict';
import { RemovalNews } from '../../../src/node/removal-news.js';
import type { Membership, NodeId } from '../../../src/raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../../../src/transport/transport.js';
import { ManualClock } from './manual-clock.js';

const silent = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

describe('RemovalNews: one lying voter (a removed member a missed the removal of) no longer cuts a off from the honest members (review30 repro)', () => {
  it('the honest leader and voter are not refused: the honest voters\' answers deny r\'s word', async () => {
    const clock = new ManualClock(1_000);
    // a's configuration (index 10): it missed r's removal at index 20, committed (the honest configuration {a, n2, n3}).
    const own: Membership = { voters: ['a', 'n2', 'n3', 'r'], learners: [], addresses: {} };
    const honest: MembershipAnswer = { from: '', term: 5, membership: { voters: ['a', 'n2', 'n3'], learners: [], addresses: {} }, membershipIndex: 20, commitIndex: 25 };
    const LIE = 2 ** 40;
    const ask = (q: MembershipQuery): Promise<MembershipAnswer> => {
      if (q.to === 'r') return Promise.resolve({ from: 'r', term: 5, membership: { voters: ['r', 'a'], learners: [], addresses: {} }, membershipIndex: LIE, commitIndex: LIE });
      return Promise.resolve({ ...honest, from: q.to });
    };
    const news = new RemovalNews({
      selfId: 'a',
      clock,
      log: silent,
      configuration: () => ({ membership: own, index: 10 }),
      state: () => ({ term: 5, leader: 'n2', commit: 10 }),
      termAt: () => 5,
      ask,
      holdLeadership: () => undefined,
    });
    const claim = (from: NodeId, term: number) => news.screen({ type: 'heartbeat', from, to: 'a', term, commit: 10, readSeq: 0 } as never);
    // r claims a later term (a claim of a member a's configuration names): a asks n2, n3 (never the sender r).
    claim('r', 6);
    await settle();
    // The honest leader n2 claims too: a asks n3 and r; r lies.
    claim('n2', 6);
    await settle();
    // Honest answers keep coming for many rounds.
    for (let i = 0; i < 5; i++) {
      clock.advance(2_000);
      claim('n2', 6);
      claim('n3', 6);
      await settle();
    }
    assert.equal(news.reportedRemoved('n2'), false, 'the honest leader n2 is refused as removed on r\'s word alone');
    assert.equal(news.reportedRemoved('n3'), false, 'the honest voter n3 is refused as removed on r\'s word alone');
  });
});

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

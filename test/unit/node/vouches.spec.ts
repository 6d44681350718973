/**
 * Vouches (src/node/vouches.ts): a sender this node's configuration does not name is vouched for only by two voters of
 * that configuration whose own configurations name it at later indexes; every ask is bounded.
 */
import assert from 'node:assert/strict';
import { silentLogger } from '../../../src/node/logger.js';
import { VOUCH_CORROBORATING_VOTERS_MIN, VOUCH_ASK_INTERVAL_MS, VOUCH_ASK_TIMEOUT_MS, VOUCH_IDS_MAX, VOUCH_REFRESH_MS, VOUCH_ROUNDS_IN_FLIGHT_MAX, VOUCH_TTL_MS, Vouches } from '../../../src/node/vouches.js';
import type { Membership } from '../../../src/raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../../../src/transport/transport.js';
import { ManualClock } from './manual-clock.js';

const own: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: {} };
const newer = (index: number, ...extra: string[]): MembershipAnswer => ({ from: '', term: 3, membership: { voters: ['n1', 'n2', 'n3', ...extra], learners: [], addresses: {} }, membershipIndex: index });

/** settle lets the promise chains of the rounds run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

function setup(answer: (q: MembershipQuery) => Promise<MembershipAnswer> | MembershipAnswer | null, ownIndex = { v: 10 }, membership: Membership = own) {
  const clock = new ManualClock(1_000);
  const asked: string[] = [];
  const v = new Vouches({
    selfId: 'n1',
    clock,
    log: silentLogger,
    configuration: () => ({ membership, index: ownIndex.v }),
    ask: (q) => {
      asked.push(`${q.from}->${q.to}`);
      const a = answer(q);
      if (a === null) return new Promise<never>(() => undefined); // never answers
      return Promise.resolve(a).then((x) => ({ ...x, from: x.from === '' ? q.to : x.from }));
    },
  });
  return { clock, asked, v, ownIndex };
}

describe('Vouches: a voter of this node\'s configuration vouches for a sender it does not name', () => {
  it('vouches once two voters (never the sender, never itself) name the sender at a later index, or one that no voter denies; not for an index as old as its own', async () => {
    const { v, asked, ownIndex } = setup(() => newer(12, 'n5'));
    assert.equal(v.vouchedFor('n5'), false);
    v.requestVouch('n5');
    await settle();
    assert.equal(v.vouchedFor('n5'), true);
    assert.deepEqual(asked, ['n1->n2', 'n1->n3']);
    ownIndex.v = 12; // this node's configuration caught up: it names n5 itself, or n5 was removed
    assert.equal(v.vouchedFor('n5'), false, 'dropped once this node\'s configuration is as new');
    const old = setup(() => newer(10, 'n5'));
    old.v.requestVouch('n5');
    await settle();
    assert.equal(old.v.vouchedFor('n5'), false, 'an answer no newer than this node\'s own vouches for nothing');
    assert.deepEqual(old.asked, ['n1->n2', 'n1->n3'], 'each other voter asked once');
    const self = setup(() => newer(12, 'n2'));
    self.v.requestVouch('n2');
    await settle();
    assert.deepEqual(self.asked, ['n1->n3'], 'the sender is never asked about itself');
    assert.equal(self.v.vouchedFor('n2'), true, 'n3 alone, and no voter denies it');
  });

  it('a voter whose configuration does not name the sender vouches for nothing, and a sender is asked for at most once per interval', async () => {
    const { v, asked, clock } = setup(() => newer(20));
    v.requestVouch('n9');
    await settle();
    assert.equal(v.vouchedFor('n9'), false);
    for (let i = 0; i < 50; i++) v.requestVouch('n9');
    await settle();
    assert.equal(asked.length, 2, 'one round (both voters), not one per message');
    clock.advance(VOUCH_ASK_INTERVAL_MS);
    v.requestVouch('n9');
    await settle();
    assert.equal(asked.length, 4, 'asked again after the interval');
  });

  it('an ask that never answers is given up after VOUCH_ASK_TIMEOUT_MS and the next voter asked; at most VOUCH_ROUNDS_IN_FLIGHT_MAX rounds at once', async () => {
    const four: Membership = { voters: ['n1', 'n2', 'n3', 'n4'], learners: [], addresses: {} };
    const { v, asked, clock } = setup((q) => (q.to === 'n2' ? null : newer(12, 'n4', 'n5', 'n6', 'n7', 'n8')), { v: 10 }, four);
    for (const id of ['n5', 'n6', 'n7', 'n8']) v.requestVouch(id);
    await settle();
    assert.equal(v.stats().rounds, VOUCH_ROUNDS_IN_FLIGHT_MAX, 'the others wait for their next message');
    assert.deepEqual(asked, ['n1->n2', 'n1->n3', 'n1->n4'], 'n5 from n2 (no answer), n6 from n3 then n4');
    assert.equal(v.vouchedFor('n6'), true, 'vouched by n3 and n4');
    assert.equal(v.vouchedFor('n5'), false);
    clock.advance(VOUCH_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(v.vouchedFor('n5'), true, 'vouched by n3 and n4 once n2 timed out');
    assert.equal(v.vouchedFor('n7'), false);
    v.requestVouch('n7');
    await settle();
    assert.deepEqual(asked.slice(5), ['n1->n4', 'n1->n2'], 'n7 asked for once a round ended, starting with the next voter');
    clock.advance(VOUCH_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(v.vouchedFor('n7'), true, 'n4, then n3 once n2 timed out');
  });

  it('a vouch expires after VOUCH_TTL_MS, is asked again after VOUCH_REFRESH_MS, and is withdrawn by an answer as new that no longer names the sender', async () => {
    let answer = newer(12, 'n5');
    const { v, asked, clock } = setup(() => answer);
    v.requestVouch('n5');
    await settle();
    clock.advance(VOUCH_REFRESH_MS - 1);
    v.requestVouch('n5');
    await settle();
    assert.equal(asked.length, VOUCH_CORROBORATING_VOTERS_MIN, 'fresh: not asked again');
    clock.advance(1);
    answer = newer(13); // n5 removed at 13
    v.requestVouch('n5');
    await settle();
    assert.equal(asked.length, 4);
    assert.equal(v.vouchedFor('n5'), false, 'withdrawn');
    const ttl = setup(() => newer(12, 'n5'));
    ttl.v.requestVouch('n5');
    await settle();
    ttl.clock.advance(VOUCH_TTL_MS);
    assert.equal(ttl.v.vouchedFor('n5'), false, 'expired');
  });

  it('a change of the peer CRL drops every vouch at once (not up to VOUCH_TTL_MS later); a round asking then vouches for nothing; the next message asks again at once', async () => {
    let answer: MembershipAnswer | null = newer(12, 'n5');
    let release: (() => void) | null = null;
    const { v, asked } = setup(() => (answer === null ? new Promise<MembershipAnswer>((r) => (release = () => r(newer(12, 'n5')))) : answer));
    v.requestVouch('n5');
    await settle();
    assert.equal(v.vouchedFor('n5'), true);
    v.crlChanged();
    assert.equal(v.vouchedFor('n5'), false, 'the vouch outlived the CRL change (a voter, signer or sender it revokes vouched)');
    // Asked again at its next message, at once; a round begun before the next change takes none of its answers.
    answer = null;
    v.requestVouch('n5');
    await settle();
    assert.equal(asked.length, VOUCH_CORROBORATING_VOTERS_MIN + 1, 'asked again at once after the change (the first round asked two voters)');
    v.crlChanged();
    (release as (() => void) | null)?.();
    await settle();
    assert.equal(v.vouchedFor('n5'), false, 'an answer asked before the CRL changed vouched');
    answer = newer(12, 'n5');
    v.requestVouch('n5');
    await settle();
    assert.equal(v.vouchedFor('n5'), true, 'vouched again by an answer asked after the change');
  });

  it('remembers at most VOUCH_IDS_MAX senders', async () => {
    const { v, clock } = setup(() => newer(12, 'n5'));
    v.requestVouch('n5');
    await settle();
    for (let i = 0; i < VOUCH_IDS_MAX + 10; i++) {
      v.requestVouch(`x${i}`);
      await settle();
      clock.advance(1);
    }
    assert.equal(v.stats().remembered, VOUCH_IDS_MAX);
    assert.equal(v.vouchedFor('n5'), false, 'the oldest forgotten');
  });

  it('one voter\'s word vouches for nobody (review30): a voter removed since (this node missed it), its certificate unrevoked, names a stranger at 2^40; the honest voters\' answers leave it out', async () => {
    const withR: Membership = { voters: ['n1', 'n2', 'n3', 'r'], learners: [], addresses: {} };
    const { v, asked, clock } = setup((q) => (q.to === 'r' ? { ...newer(2 ** 40, 's'), membership: { voters: ['r', 'n1', 's'], learners: [], addresses: {} } } : newer(20)), { v: 10 }, withR);
    for (let i = 0; i < 3; i++) {
      v.requestVouch('s');
      await settle();
      clock.advance(VOUCH_ASK_INTERVAL_MS);
    }
    assert.ok(asked.includes('n1->r'), 'r was asked');
    assert.equal(v.vouchedFor('s'), false, 'r alone vouched for s, though n2 and n3 (which know more than n1) leave it out');
    // Vouched before the honest voters could answer (down), the vouch is withdrawn at the first round they answer in,
    // whatever index r gave.
    let up = false;
    const late = setup((q) => (q.to === 'r' ? newer(2 ** 40, 's') : up ? newer(20) : null), { v: 10 }, withR);
    late.v.requestVouch('s');
    for (let i = 0; i < 3; i++) {
      late.clock.advance(VOUCH_ASK_TIMEOUT_MS);
      await settle();
    }
    assert.equal(late.v.vouchedFor('s'), true, 'r alone, nobody denying it: believed (only the CRL prevents it)');
    up = true;
    late.clock.advance(VOUCH_REFRESH_MS);
    late.v.requestVouch('s');
    await settle();
    assert.equal(late.v.vouchedFor('s'), false, 'withdrawn');
    // With an honest voter that knows of s too, the vouch holds only to the lower index (20), not r's 2^40.
    const idx = { v: 10 };
    const both = setup((q) => (q.to === 'r' ? newer(2 ** 40, 's') : q.to === 'n2' ? newer(20, 's') : null), idx, withR);
    both.v.requestVouch('s');
    await settle();
    both.clock.advance(VOUCH_ASK_TIMEOUT_MS);
    await settle();
    assert.equal(both.v.vouchedFor('s'), true, 'n2 and r');
    idx.v = 20;
    assert.equal(both.v.vouchedFor('s'), false, 'this node caught up with n2\'s configuration');
  });
});

/**
 * Membership proofs (src/node/membership-proofs.ts) and the vouch they give (src/node/vouches.ts): a sender is
 * vouched for on its configuration's proofs only when they chain, signed, from this node's configuration to one that
 * names it, newer than any configuration a voter of this node's answered with.
 */
import assert from 'node:assert/strict';
import { silentLogger } from '../../../src/node/logger.js';
import { attestationTarget, verifyChain } from '../../../src/node/membership-proofs.js';
import { Vouches } from '../../../src/node/vouches.js';
import { applyConfChange, decodeConfChange, encodeConfChange } from '../../../src/raft/membership.js';
import { MEMBERSHIP_PROOFS_MAX } from '../../../src/raft/membership.js';
import type { Membership } from '../../../src/raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../../../src/transport/transport.js';
import { SimMembershipProofs } from '../../sim/sim-proofs.js';
import { ManualClock } from './manual-clock.js';

const verifier = new SimMembershipProofs('n3');
const verify = (p: string): ReturnType<SimMembershipProofs['verify']> => verifier.verify(p);
/** sign: `signer`'s commit statement of the configuration entry `index` (term 2) makes: a link of a chain. */
const sign = (signer: string, index: number, voters: string[], learners: string[] = []): string => new SimMembershipProofs(signer).sign({ index, term: 2, voters, learners, committed: true });
/** appended: `signer`'s appended statement of it (what the leader signs as it appends the entry): no link alone. */
const appended = (signer: string, index: number, voters: string[], learners: string[] = []): string => new SimMembershipProofs(signer).sign({ index, term: 2, voters, learners });
/** n3 knows {n1, n3, n5} at index 25 (simulator seed 2442's n3). */
const own: Membership = { voters: ['n1', 'n3', 'n5'], learners: [], addresses: {} };
/** What n1 appended and committed while n3 was away: n6 added as a learner, promoted, then n5 removed. */
const chain = [sign('n1', 28, ['n1', 'n3', 'n5'], ['n6']), sign('n1', 37, ['n1', 'n3', 'n5', 'n6']), sign('n1', 39, ['n1', 'n3', 'n6'])];
/** The same changes as a configuration carries them: each entry's appended statement, then its commit statement. */
const carried = [
  appended('n1', 28, ['n1', 'n3', 'n5'], ['n6']),
  chain[0] as string,
  appended('n1', 37, ['n1', 'n3', 'n5', 'n6']),
  chain[1] as string,
  appended('n1', 39, ['n1', 'n3', 'n6']),
  chain[2] as string,
];

describe('verifyChain: a sender\'s proofs, walked from this node\'s configuration', () => {
  it('reaches the newest configuration when each proof is signed by a voter of the one before it, in any order given', () => {
    assert.deepEqual(verifyChain(own, 25, chain, 'n6', verify), { index: 39, names: true });
    assert.deepEqual(verifyChain(own, 25, [...chain].reverse(), 'n6', verify), { index: 39, names: true });
    // a chain through a leader n3 does not know, but the configuration before names: n6 appended index 45
    assert.deepEqual(verifyChain(own, 25, [...chain, sign('n6', 45, ['n3', 'n6', 'n8'])], 'n8', verify), { index: 45, names: true });
    // proofs at or before this node's own index are not part of the walk
    assert.deepEqual(verifyChain(own, 37, chain, 'n6', verify), { index: 39, names: true });
  });

  it('stops where a signer is no voter of the configuration before it, or a proof does not verify', () => {
    const stranger = verifyChain(own, 25, [sign('n6', 28, ['n1', 'n3', 'n6'])], 'n6', verify);
    assert.ok('error' in stranger && /signed by n6, no voter of the configuration before it/.test(stranger.error), JSON.stringify(stranger));
    // n9 (named by nobody n3 trusts) signs a configuration naming itself after a real link: the walk ends at 28
    assert.deepEqual(verifyChain(own, 25, [chain[0] as string, sign('n9', 30, ['n9'])], 'n9', verify), { index: 28, names: false });
    const forged = (chain[2] as string).slice(0, -4) + 'AAAA';
    assert.deepEqual(verifyChain(own, 25, [chain[0] as string, chain[1] as string, forged], 'n6', verify), { index: 37, names: true }, 'the forged last proof is left out');
    const none = verifyChain(own, 39, chain, 'n6', verify);
    assert.ok('error' in none && /no proof of a configuration after index 39/.test(none.error));
  });

  it('of two proofs at one index the higher term\'s counts (the lower one was cut off), whatever order the sender lists them in', () => {
    const at = (signer: string, index: number, term: number, voters: string[], learners: string[] = []): string => new SimMembershipProofs(signer).sign({ index, term, voters, learners, committed: true });
    // n1 led term 2 and appended "add x" at 28, never committed; n1 again, in term 3, wrote "add n6" there.
    const cutOff = at('n1', 28, 2, ['n1', 'n3', 'n5'], ['x']);
    const real = at('n1', 28, 3, ['n1', 'n3', 'n5'], ['n6']);
    assert.deepEqual(verifyChain(own, 25, [cutOff, real], 'x', verify), { index: 28, names: false });
    assert.deepEqual(verifyChain(own, 25, [real, cutOff], 'x', verify), { index: 28, names: false });
    assert.deepEqual(verifyChain(own, 25, [cutOff, real], 'n6', verify), { index: 28, names: true });
  });

  it('a later index of a lower term (another branch spliced on) ends the walk', () => {
    const at = (signer: string, index: number, term: number, voters: string[], learners: string[] = []): string => new SimMembershipProofs(signer).sign({ index, term, voters, learners, committed: true });
    const spliced = [at('n1', 28, 3, ['n1', 'n3', 'n5'], ['n6']), at('n5', 30, 2, ['n1', 'n3', 'n5'], ['x'])];
    assert.deepEqual(verifyChain(own, 25, spliced, 'x', verify), { index: 28, names: false });
  });

  it('takes an entry only with its commit statement: one appended and cut off (its leader deposed) names nobody', () => {
    // Every entry as a configuration carries it: appended, then committed.
    assert.deepEqual(verifyChain(own, 25, carried, 'n6', verify), { index: 39, names: true });
    // n1 appended "add n6" at 28 and was deposed before it committed; the next leader's log lacks it: n6 kept a
    // configuration naming it with n1's appended statement, and no commit statement of it exists.
    const cutOff = verifyChain(own, 25, [appended('n1', 28, ['n1', 'n3', 'n5'], ['n6'])], 'n6', verify);
    assert.ok('error' in cutOff && /entry at 28 carries an appended statement and no commit statement/.test(cutOff.error), JSON.stringify(cutOff));
    // A committed change, then an add of n6 appended only: the walk reaches the committed one, which does not name n6.
    assert.deepEqual(verifyChain(own, 25, [...carried.slice(0, 2), appended('n1', 30, ['n1', 'n3', 'n5'], ['n6', 'n7'])], 'n7', verify), { index: 28, names: false });
    // Chains of builds before commit statements (appended only) vouch for nobody.
    const old = verifyChain(own, 25, [carried[0], carried[2], carried[4]] as string[], 'n6', verify);
    assert.ok('error' in old && /entries at 28, 37, 39 carry an appended statement and no commit statement/.test(old.error), JSON.stringify(old));
  });

  it('a commit statement counts only from a voter of the configuration before the entry: a member does not attest its own add', () => {
    // n1 committed "add n6 as a voter" at 28 and fell before attesting it; n6 leads next and attests its own add.
    const selfAttested = verifyChain(own, 25, [appended('n1', 28, ['n1', 'n3', 'n5', 'n6']), sign('n6', 28, ['n1', 'n3', 'n5', 'n6'])], 'n6', verify);
    assert.ok('error' in selfAttested && /signed by n6, no voter of the configuration before it/.test(selfAttested.error), JSON.stringify(selfAttested));
    // n5, a voter before it, attests it: taken.
    assert.deepEqual(verifyChain(own, 25, [appended('n1', 28, ['n1', 'n3', 'n5', 'n6']), sign('n5', 28, ['n1', 'n3', 'n5', 'n6'])], 'n6', verify), { index: 28, names: true });
  });

  it('a chain that goes on past the sender\'s removal names it no longer', () => {
    assert.deepEqual(verifyChain(own, 25, [...chain, sign('n1', 44, ['n1', 'n3'])], 'n6', verify), { index: 44, names: false });
  });
});

describe('configuration entries carry their proof into the membership they make', () => {
  it('a conf entry\'s proof survives its encoding and is appended to the membership\'s last MEMBERSHIP_PROOFS_MAX', () => {
    let m: Membership = { voters: ['n1'], learners: [], addresses: {} };
    for (let i = 0; i < MEMBERSHIP_PROOFS_MAX + 3; i++) {
      const cc = decodeConfChange(encodeConfChange({ op: 'addLearner', nodeId: `l${i}`, proof: `p${i}` }));
      assert.equal(cc.proof, `p${i}`);
      m = applyConfChange(m, cc);
    }
    assert.equal(m.proofs?.length, MEMBERSHIP_PROOFS_MAX);
    assert.equal(m.proofs?.[MEMBERSHIP_PROOFS_MAX - 1], `p${MEMBERSHIP_PROOFS_MAX + 2}`, 'newest last');
    assert.deepEqual(applyConfChange(m, { op: 'removeNode', nodeId: 'l0' }).proofs, m.proofs, 'a change without a proof keeps those before');
    const long = decodeConfChange(encodeConfChange({ op: 'addLearner', nodeId: 'x', proof: 'p'.repeat(9000) }));
    assert.equal(long.proof, undefined, 'a proof over MEMBERSHIP_PROOF_CHARS_MAX is dropped, the change kept');
    assert.equal(long.nodeId, 'x');
  });
});

describe('attestationTarget: the configuration entry a leader signs a commit statement of next', () => {
  it('the newest appended statement at or below the commit index without a commit statement of the same index and term', () => {
    assert.deepEqual(attestationTarget(carried.slice(0, 3), 40), { index: 37, term: 2, voters: ['n1', 'n3', 'n5', 'n6'], learners: [], committed: true });
    assert.equal(attestationTarget(carried, 40), null, 'every entry attested');
    assert.equal(attestationTarget(carried.slice(0, 3), 36), null, 'the entry at 37 is not committed yet');
    // a commit statement of another term at that index is not this entry's
    const otherTerm = new SimMembershipProofs('n1').sign({ index: 37, term: 3, voters: ['n1', 'n3', 'n5', 'n6'], learners: [], committed: true });
    assert.equal((attestationTarget([...carried.slice(0, 3), otherTerm], 40) ?? { index: 0 }).index, 37);
    // one left unattested before an attested one (its leader fell first) is taken next
    assert.equal((attestationTarget([carried[0], carried[2], carried[3]] as string[], 40) ?? { index: 0 }).index, 28);
    assert.equal(attestationTarget(['not a proof', 'x509.???'], 40), null);
  });

  it('a commit statement signed by no voter of the configuration before its entry (n6 attesting its own promotion) is signed again', () => {
    const selfAttested = new SimMembershipProofs('n6').sign({ index: 37, term: 2, voters: ['n1', 'n3', 'n5', 'n6'], learners: [], committed: true });
    const proofs = [carried[0], carried[1], carried[2], selfAttested] as string[];
    assert.deepEqual(attestationTarget(proofs, 40), { index: 37, term: 2, voters: ['n1', 'n3', 'n5', 'n6'], learners: [], committed: true });
    // and verifyChain takes no such link: the chain stops at 28
    assert.equal((verifyChain(own, 25, proofs, 'n6', verify) as { index?: number }).index, 28);
  });
});

describe('Vouches on proofs: the sender asked itself when no voter vouches', () => {
  async function settle(): Promise<void> {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  }
  function setup(answers: Record<string, MembershipAnswer | 'down'>, withProofs = true) {
    const clock = new ManualClock(1_000);
    const asked: MembershipQuery[] = [];
    const v = new Vouches({
      selfId: 'n3',
      clock,
      log: silentLogger,
      configuration: () => ({ membership: own, index: 25 }),
      ask: (q) => {
        asked.push(q);
        const a = answers[q.to];
        if (a === undefined || a === 'down') return Promise.reject(new Error(`${q.to} unavailable`));
        return Promise.resolve(a);
      },
      ...(withProofs ? { proofs: verifier } : {}),
    });
    return { v, asked };
  }
  const n6Answer: MembershipAnswer = { from: 'n6', term: 2, membership: { voters: ['n1', 'n3', 'n6'], learners: [], addresses: {}, proofs: chain }, membershipIndex: 39 };

  it('seed 2442: n1 and n5 gone, n6 vouched for on its proofs, asked at the address its calls advertise', async () => {
    const { v, asked } = setup({ n1: 'down', n5: 'down', n6: n6Answer });
    v.requestVouch('n6', '10.0.0.6:7000');
    await settle();
    assert.equal(v.vouchedFor('n6'), true);
    assert.deepEqual(asked.find((q) => q.to === 'n6'), { from: 'n3', to: 'n6', address: '10.0.0.6:7000' });
    const without = setup({ n1: 'down', n5: 'down', n6: n6Answer }, false);
    without.v.requestVouch('n6', '10.0.0.6:7000');
    await settle();
    assert.equal(without.v.vouchedFor('n6'), false, 'without a verifier, voters alone vouch');
    assert.ok(!without.asked.some((q) => q.to === 'n6'), 'and the sender is not asked');
  });

  it('a voter that answers with a configuration newer than this node\'s, leaving the sender out, wins over any chain', async () => {
    // A removed member still named by n3's configuration, its certificate unrevoked, could sign a chain of any index:
    // a voter that knows more than n3 is believed instead.
    const n1Answer: MembershipAnswer = { from: 'n1', term: 3, membership: { voters: ['n1', 'n3'], learners: [], addresses: {} }, membershipIndex: 30 };
    const { v } = setup({ n1: n1Answer, n5: 'down', n6: n6Answer });
    v.requestVouch('n6');
    await settle();
    assert.equal(v.vouchedFor('n6'), false);
    // a voter that knows no more than n3 (index 25, its own) does not stop it
    const stale = setup({ n1: { ...n1Answer, membership: own, membershipIndex: 25 }, n5: 'down', n6: n6Answer });
    stale.v.requestVouch('n6');
    await settle();
    assert.equal(stale.v.vouchedFor('n6'), true);
  });

  it('a member whose add was appended and cut off, its configuration naming it with the appended statement only, is not vouched for', async () => {
    const cutOff: MembershipAnswer = { from: 'n6', term: 2, membership: { voters: ['n1', 'n3', 'n5', 'n6'], learners: [], addresses: {}, proofs: [appended('n1', 28, ['n1', 'n3', 'n5', 'n6'])] }, membershipIndex: 28 };
    const { v } = setup({ n1: 'down', n5: 'down', n6: cutOff });
    v.requestVouch('n6');
    await settle();
    assert.equal(v.vouchedFor('n6'), false);
    const committed = setup({ n1: 'down', n5: 'down', n6: { ...cutOff, membership: { ...cutOff.membership, proofs: [...(cutOff.membership.proofs ?? []), sign('n1', 28, ['n1', 'n3', 'n5', 'n6'])] } } });
    committed.v.requestVouch('n6');
    await settle();
    assert.equal(committed.v.vouchedFor('n6'), true, 'with n1\'s commit statement it is');
  });

  it('a stranger\'s proofs (signed by itself, or answered by another id) vouch for nothing', async () => {
    const selfSigned: MembershipAnswer = { from: 'n9', term: 9, membership: { voters: ['n3', 'n9'], learners: [], addresses: {}, proofs: [sign('n9', 50, ['n3', 'n9'])] }, membershipIndex: 50 };
    const { v } = setup({ n1: 'down', n5: 'down', n9: selfSigned });
    v.requestVouch('n9');
    await settle();
    assert.equal(v.vouchedFor('n9'), false);
    const impostor = setup({ n1: 'down', n5: 'down', n6: { ...n6Answer, from: 'n7' } });
    impostor.v.requestVouch('n6');
    await settle();
    assert.equal(impostor.v.vouchedFor('n6'), false);
  });
});

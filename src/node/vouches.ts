/**
 * Vouches: whether a sender this node's configuration does not name may
 * speak Raft to it (the peer plane's PeerVouch, src/transport/peer-guard.ts).
 *
 * A member must follow a leader its configuration lacks (a member added in
 * entries it has not received: a new member whose snapshot predates the
 * leader's own addition; one away while the leader was added), but a
 * CA-signed certificate of an id no member knows (never added; removed
 * before this node's restart) must lead nobody. So before such a sender's
 * Raft messages reach the core, a voter of this node's own configuration
 * (never the sender, never this node) is asked for its configuration
 * (GetMembership, over the transport's channel to that voter, which under
 * mutual TLS checks that the voter's certificate names it), and the sender
 * is vouched for only when the configurations of CORROBORATING_VOTERS_MIN (2)
 * voters, each in its own answer, name it (voter or learner) at later indexes
 * than this node's own (news this node has not received yet), or one voter's
 * does and no voter asked in the round answered a configuration newer than
 * this node's that leaves the sender out. Why (review30): a voter of this
 * node's configuration removed since (this node missed it), its certificate
 * unrevoked, answers what it likes; alone, its word vouched for any stranger
 * even as every honest voter (which, holding the removal, knows more than
 * this node) left that stranger out. Now one honest voter that answers denies
 * it, and a vouch of two holds only to the lower index (an inflated one does
 * not outlive the truth). One voter's word is still taken where nobody denies
 * it: the other voters down or removed (a member replaced while this node was
 * away, join.spec), or a configuration that names just one other voter (a
 * joiner's --peers); there a liar is believed, as the CRL alone prevents.
 *
 * A vouch holds while this node's configuration is older than the one that
 * named the sender (the lower of the two; once it is as new, it names the
 * sender itself, or the sender was removed) and for VOUCH_TTL_MS; it is asked again in the
 * background after VOUCH_REFRESH_MS, and revoked by a voter's answer as new
 * as it that no longer names the sender. A change of the peer CRL (--peer-crl reloaded: crlChanged) drops every
 * vouch at once, and what the rounds running then answer: a vouch rests on certificates (the voter's that answered,
 * the signers' of the proofs, the sender's own) that CRL may revoke; a sender's next message asks again at once.
 * Limits: one round in flight per
 * sender and VOUCH_ROUNDS_IN_FLIGHT_MAX in all, VOUCH_ASK_INTERVAL_MS between
 * rounds for one sender, VOUCH_ASK_TIMEOUT_MS per ask, VOUCHERS_PER_ROUND_MAX
 * voters asked per round (the next on failure), VOUCH_IDS_MAX senders
 * remembered (the oldest not being asked forgotten first). A sender cannot
 * make this node ask more than its members can answer.
 *
 * When no voter vouches, the sender itself is asked too (at the peer
 * address its calls advertise) for its configuration, and vouched for when its
 * configuration's proofs chain from this node's configuration to one that
 * names it, and no voter answered with a configuration newer than this
 * node's that leaves it out (src/node/membership-proofs.ts): a liar voter
 * signs such a chain itself (a commit statement needs one voter's signature),
 * so this still takes one voter's word where this node reaches no honest
 * voter that knows more (only the CRL covers that):
 * a member that missed the changes that added the sender while every other
 * voter it knows was removed or lost (simulator seed 2442: n3 knows {n1, n3,
 * n5}, n5 was removed and n1 lost for good while n6 was added) follows it.
 * Without proofs (a leader that could not sign them, or more than
 * MEMBERSHIP_PROOFS_MAX changes missed), such a node can be vouched for
 * nobody: it must be removed and added again. Without mutual TLS
 * nothing proves which member answers; vouching then still keeps a sender
 * that no member's configuration names (a typo, a node started for an add
 * that failed, a made-up id) from leading, not one that can answer as a
 * member.
 */
import type { Membership, NodeId } from '../raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../transport/transport.js';
import { verifyChain, type MembershipProofs } from './membership-proofs.js';
import type { PeerVouch } from '../transport/peer-guard.js';
import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import { askWithin } from './ask-within.js';

/** VOUCH_IDS_MAX: senders remembered (vouched, being asked, or asked recently); past it the oldest not being asked are forgotten. */
export const VOUCH_IDS_MAX = 256;
/** VOUCH_ROUNDS_IN_FLIGHT_MAX: vouch rounds (one sender each) asked at once; a sender asked for past it is asked at its next message. */
export const VOUCH_ROUNDS_IN_FLIGHT_MAX = 2;
/** VOUCH_ASK_INTERVAL_MS: the least time between the end of a round for one sender and the start of the next. */
export const VOUCH_ASK_INTERVAL_MS = 1_000;
/** VOUCH_ASK_TIMEOUT_MS: one voter's answer is waited for this long (then the next voter is asked). */
export const VOUCH_ASK_TIMEOUT_MS = 2_000;
/** VOUCHERS_PER_ROUND_MAX: voters asked, one after another, in one round. */
export const VOUCHERS_PER_ROUND_MAX = 5;
/** VOUCH_CORROBORATING_VOTERS_MIN: voters (never the sender, never this node) whose own answers naming the sender vouch for it even where another voter's leaves it out. */
export const VOUCH_CORROBORATING_VOTERS_MIN = 2;
/** VOUCH_TTL_MS: a vouch is taken this long at most after its answer. */
export const VOUCH_TTL_MS = 60_000;
/** VOUCH_REFRESH_MS: a vouch older than this is asked again in the background (it holds meanwhile). */
export const VOUCH_REFRESH_MS = 30_000;

export interface VouchesOptions {
  readonly selfId: NodeId;
  readonly clock: Clock;
  readonly log: Logger;
  /** configuration: this node's newest configuration and the index of the entry (or snapshot) it comes from (0: the bootstrap's). */
  readonly configuration: () => { readonly membership: Membership; readonly index: number };
  /** ask: one GetMembership call to member q.to, over a channel that checks q.to's certificate (the transport's askMembership; q.address: where a sender no channel reaches is). */
  readonly ask: (q: MembershipQuery, timeoutMs: number) => Promise<MembershipAnswer>;
  /** proofs: the verifier of configuration proofs; absent: a sender is vouched for by voters' answers only. */
  readonly proofs?: Pick<MembershipProofs, 'verify'>;
}

interface VouchEntry {
  /** vouchedIndex: the index of the configuration that named the sender (0: not vouched). */
  vouchedIndex: number;
  vouchedAtMs: number;
  voucher: NodeId;
  asking: boolean;
  /** roundEndMs: when the last round for this sender ended (-Infinity: none yet). */
  roundEndMs: number;
  /** address: the peer address the sender's calls last advertised ('' when none): where it is asked for its proofs. */
  address: string;
}

/** VouchStats: counts for status pages and tests. */
export interface VouchStats {
  readonly rounds: number;
  readonly asks: number;
  readonly vouched: number;
  readonly remembered: number;
}

function names(m: Membership, id: NodeId): boolean {
  return m.voters.includes(id) || m.learners.includes(id);
}

export class Vouches implements PeerVouch {
  private readonly opts: VouchesOptions;
  private readonly entries = new Map<NodeId, VouchEntry>();
  private inFlight = 0;
  /** cursor: the voter a round starts with rotates, so one unreachable voter is not asked first every time. */
  private cursor = 0;
  private closed = false;
  private counts = { rounds: 0, asks: 0, vouched: 0 };
  /** crlEpoch: counts crlChanged; a round that began before the last one vouches for nothing. */
  private crlEpoch = 0;

  constructor(opts: VouchesOptions) {
    this.opts = opts;
  }

  /** vouchedFor: voters of this node's configuration (two, or one no voter denied; or its proofs) named `id` in a newer configuration than this node's, less than VOUCH_TTL_MS ago. */
  vouchedFor(id: NodeId): boolean {
    const e = this.entries.get(id);
    if (e === undefined || e.vouchedIndex === 0) return false;
    return e.vouchedIndex > this.opts.configuration().index && this.opts.clock.nowMs() - e.vouchedAtMs < VOUCH_TTL_MS;
  }

  /** requestVouch starts a round for `id` in the background unless one runs, one ended too recently, a fresh vouch is held, or too many run. */
  requestVouch(id: NodeId, address = ''): void {
    if (this.closed || id === '' || id === this.opts.selfId) return;
    const now = this.opts.clock.nowMs();
    let e = this.entries.get(id);
    if (e !== undefined && address !== '') e.address = address;
    if (e !== undefined) {
      if (e.asking) return;
      if (this.vouchedFor(id) && now - e.vouchedAtMs < VOUCH_REFRESH_MS) return;
      if (now - e.roundEndMs < VOUCH_ASK_INTERVAL_MS) return;
    }
    if (this.inFlight >= VOUCH_ROUNDS_IN_FLIGHT_MAX) return;
    if (e === undefined) {
      this.forgetOldest();
      e = { vouchedIndex: 0, vouchedAtMs: 0, voucher: '', asking: false, roundEndMs: -Infinity, address };
      this.entries.set(id, e);
    } else {
      // Most recently asked last: the oldest are forgotten first.
      this.entries.delete(id);
      this.entries.set(id, e);
    }
    e.asking = true;
    this.inFlight++;
    this.counts.rounds++;
    void this.round(id, e);
  }

  /**
   * crlChanged: the peer CRL changed (serve's --peer-crl reloaded): every vouch is dropped at once, and rounds
   * running now vouch for nothing (their answers may come over connections made before it, from certificates it
   * revokes). A sender's next message asks again at once (no VOUCH_ASK_INTERVAL_MS wait): over new connections
   * (GrpcTransport.reconnect), a voter or signer the CRL revokes no longer vouches.
   */
  crlChanged(): void {
    this.crlEpoch++;
    let dropped = 0;
    for (const e of this.entries.values()) {
      if (e.vouchedIndex !== 0) dropped++;
      e.vouchedIndex = 0;
      e.roundEndMs = -Infinity;
    }
    if (dropped > 0) this.opts.log.info({ dropped }, 'peer plane: the peer CRL changed: every vouch is dropped (the next message of a sender asks again)');
  }

  /** close: no round is started after it (those running end on their own). */
  close(): void {
    this.closed = true;
  }

  stats(): VouchStats {
    return { ...this.counts, remembered: this.entries.size };
  }

  private forgetOldest(): void {
    if (this.entries.size < VOUCH_IDS_MAX) return;
    for (const [id, e] of this.entries) {
      if (e.asking) continue;
      this.entries.delete(id);
      return;
    }
  }

  private async round(id: NodeId, e: VouchEntry): Promise<void> {
    const failures: string[] = [];
    const epoch = this.crlEpoch;
    // The sender's own answer (its configuration's proofs) is asked alongside the voters, taken only if they do not vouch.
    const fromSender = this.opts.proofs === undefined ? null : this.askWithin({ from: this.opts.selfId, to: id, ...(e.address !== '' ? { address: e.address } : {}) });
    fromSender?.catch(() => undefined); // read (or dropped) below
    /** newestLeavingOut: the newest configuration index a voter answered with that does not name the sender: one newer than this node's bars the sender's proofs. */
    let newestLeavingOut = 0;
    /** vouchers: the voters that named the sender in a configuration newer than this node's, with its index. */
    const vouchers: { readonly voter: NodeId; readonly index: number }[] = [];
    try {
      const voters = this.opts.configuration().membership.voters.filter((v) => v !== this.opts.selfId && v !== id);
      const start = voters.length === 0 ? 0 : this.cursor++ % voters.length;
      for (let i = 0; i < Math.min(voters.length, VOUCHERS_PER_ROUND_MAX) && !this.closed && vouchers.length < VOUCH_CORROBORATING_VOTERS_MIN; i++) {
        const voter = voters[(start + i) % voters.length] as NodeId;
        this.counts.asks++;
        let a: MembershipAnswer;
        try {
          a = await this.askWithin({ from: this.opts.selfId, to: voter });
        } catch (err) {
          failures.push(`${voter}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 200));
          continue;
        }
        if (a.from !== voter) {
          failures.push(`${voter}: answered as ${a.from}`.slice(0, 200));
          continue;
        }
        const index = a.membershipIndex ?? 0;
        const own = this.opts.configuration().index;
        if (epoch !== this.crlEpoch) {
          failures.push('the peer CRL changed while this round asked: its answers are not taken');
          break;
        }
        if (names(a.membership, id) && index > own) {
          vouchers.push({ voter, index });
          failures.push(`${voter}: names it (index ${index}; this node's ${own}), but another voter denies it`);
          continue;
        }
        if (!names(a.membership, id)) newestLeavingOut = Math.max(newestLeavingOut, index);
        if (e.vouchedIndex !== 0 && index >= e.vouchedIndex && !names(a.membership, id)) {
          this.opts.log.warn({ sender: id, voucher: voter, index }, 'peer plane: a vouch withdrawn: a voter\'s configuration as new as the one that named the sender does not name it');
          e.vouchedIndex = 0;
        }
        failures.push(`${voter}: its configuration (index ${index}; this node's ${own}) ${names(a.membership, id) ? 'is not newer' : `does not name ${id}`}`);
      }
      const own = this.opts.configuration().index;
      // Two voters' words, or one that no voter denies (none answered a newer configuration leaving the sender out).
      if (epoch === this.crlEpoch && (vouchers.length >= VOUCH_CORROBORATING_VOTERS_MIN || (vouchers.length === 1 && newestLeavingOut <= own))) {
        // The lower index: a voter that inflates its own cannot make the vouch outlive the other's.
        const index = Math.min(...vouchers.map((v) => v.index));
        if (index > own) {
          if (e.vouchedIndex === 0 || !this.vouchedFor(id)) {
            this.opts.log.info({ sender: id, vouchers: vouchers.map((v) => v.voter), index, own }, 'peer plane: a sender this node\'s configuration does not name is vouched for by a voter of it (its configuration at a later index names it; another voter\'s does too, or none denies it): its Raft messages are taken');
          }
          e.vouchedIndex = index;
          e.vouchedAtMs = this.opts.clock.nowMs();
          e.voucher = vouchers.map((v) => v.voter).join(', ');
          this.counts.vouched++;
          return;
        }
      }
      if (e.vouchedIndex !== 0 && newestLeavingOut > own) {
        this.opts.log.warn({ sender: id, index: newestLeavingOut }, 'peer plane: a vouch withdrawn: a voter answered a configuration newer than this node\'s that does not name the sender, and no two voters name it');
        e.vouchedIndex = 0;
      }
      if (voters.length === 0) failures.push('this node\'s configuration names no other voter to ask');
      if (fromSender !== null && !this.closed && epoch === this.crlEpoch && (await this.vouchedByProofs(id, e, fromSender, newestLeavingOut, failures, epoch))) return;
      this.opts.log.debug({ sender: id, failures }, 'peer plane: no voter vouched for a sender this node\'s configuration does not name (two voters, or one no voter denies)');
    } finally {
      e.asking = false;
      // A round whose answers a CRL change set aside does not count: the next message asks again at once.
      e.roundEndMs = epoch === this.crlEpoch ? this.opts.clock.nowMs() : -Infinity;
      this.inFlight--;
    }
  }

  /**
   * vouchedByProofs: whether the sender's answer (`asked`) carries proofs that chain from this node's configuration
   * to a newer one naming it; sets the vouch when so. Only while no voter of this node's configuration answered with
   * a newer configuration that leaves the sender out (`newestLeavingOut`): such a voter knows more than this node and
   * did not name the sender, and its answer is taken over any chain (whose indexes a signer removed since, its
   * certificate unrevoked, could set as it likes). A voter that named the sender at a newer index, alone, does not bar it. A chain that reaches a configuration at least as new as the vouch held without naming the
   * sender withdraws it.
   */
  private async vouchedByProofs(id: NodeId, e: VouchEntry, asked: Promise<MembershipAnswer>, newestLeavingOut: number, failures: string[], epoch: number): Promise<boolean> {
    const proofs = this.opts.proofs;
    if (proofs === undefined) return false;
    let a: MembershipAnswer;
    try {
      a = await asked;
    } catch (err) {
      failures.push(`${id} itself: ${err instanceof Error ? err.message : String(err)}`.slice(0, 200));
      return false;
    }
    if (epoch !== this.crlEpoch) {
      failures.push('the peer CRL changed while this round asked: its answers are not taken');
      return false;
    }
    if (a.from !== id) {
      failures.push(`${id} itself: answered as ${a.from}`.slice(0, 200));
      return false;
    }
    const { membership, index: own } = this.opts.configuration();
    if (newestLeavingOut > own) {
      failures.push(`${id}'s proofs not taken: a voter answered with a newer configuration (index ${newestLeavingOut}) that does not name it`);
      return false;
    }
    const verdict = verifyChain(membership, own, a.membership.proofs ?? [], id, (p) => proofs.verify(p));
    if ('error' in verdict) {
      failures.push(`${id}'s proofs: ${verdict.error}`.slice(0, 400));
      return false;
    }
    if (!verdict.names) {
      if (e.vouchedIndex !== 0 && verdict.index >= e.vouchedIndex) e.vouchedIndex = 0;
      failures.push(`${id}'s proofs reach index ${verdict.index}, whose configuration does not name it`);
      return false;
    }
    if (e.vouchedIndex === 0 || !this.vouchedFor(id)) {
      this.opts.log.info(
        { sender: id, index: verdict.index, own },
        'peer plane: a sender this node\'s configuration does not name is vouched for by its configuration\'s proofs (signed by members, from this node\'s configuration to one that names it; no voter of this node\'s configuration answered with one as new)',
      );
    }
    e.vouchedIndex = verdict.index;
    e.vouchedAtMs = this.opts.clock.nowMs();
    e.voucher = `${id} (proofs)`;
    this.counts.vouched++;
    return true;
  }

  /** askWithin: one ask, given up after VOUCH_ASK_TIMEOUT_MS on this node's clock (ask-within.ts). */
  private askWithin(q: MembershipQuery): Promise<MembershipAnswer> {
    return askWithin(this.opts.clock, this.opts.ask, q, VOUCH_ASK_TIMEOUT_MS);
  }
}

/**
 * RemovalNews: what a member learns from the voters of its own configuration
 * about members that configuration still names, and about its own log.
 *
 * The hole (review24): member A missed member R's removal (offline across it,
 * restored from an old data dir), so A's configuration still names R, and the
 * peer plane trusts R's certificate (vouching, src/node/vouches.ts, is for
 * senders the configuration does NOT name; the CRL, --peer-crl, only where
 * operators revoke). Cut off from the real leader, A took R's claim to lead a
 * later term, appended and applied R's forged entries, and once back with the
 * others its last log term beat theirs: elected, it led for good with nothing
 * committed (the others refuse to overwrite committed entries).
 *
 * A claim to lead or to be elected from a member this node's configuration
 * names (a vote request, pre-vote included, of a later term; an append,
 * heartbeat or snapshot of a later term, or of this term from a sender that is
 * not the leader this node follows) starts a round in the background: up to
 * ROUND_VOTERS_MAX voters of this node's configuration (never the sender, never
 * this node) are asked at once with GetMembership, the question vouches.ts
 * asks, over the transport's channel that checks the voter's certificate. Each
 * answer (from the voter asked) tells two things:
 * - removed: the voter's configuration is committed there (its
 *   membership_index at or below its commit_index) and newer than this node's
 *   (a later index). A member this node's configuration names that it does not
 *   name was removed for good: committed, a removal is never rolled back. That
 *   is the voter's report. A voter whose committed configuration, at least as
 *   new as this node's, names the member denies it. A member is refused
 *   ('removed': its messages, every RPC's) while CORROBORATING_VOTERS_MIN (2)
 *   voters report it, or one does and no voter denies it (never the member
 *   about itself, never this node; each voter's last committed answer is its
 *   word), until this node's own configuration is as new. Why (review30): the
 *   voter that lies is the removed member itself, still a voter of this node's
 *   configuration, its certificate unrevoked; its one "committed"
 *   configuration at index 2^40 naming only itself and this node made this
 *   node refuse every honest member for good (that index is never reached,
 *   and the true answers undid nothing). Now any honest voter that answers
 *   denies it, whatever index it gave, and one liar cannot lift a true removal
 *   two honest voters report. A later answer naming the member (added back)
 *   withdraws that voter's report and denies the others'; an uncommitted
 *   answer leaves the voter's word as it was (committed, a removal stands).
 *   A refusal asks again (at most once a ASK_INTERVAL_MS). An uncommitted
 *   removal tells nothing: the leader that appended it may be deposed and the
 *   removed member lead next (simulator seed 1406).
 *   Why one undenied report is still taken, not two reports needed: in a
 *   configuration of 3 voters only the voter left can report the third's
 *   removal, and with two needed the removed member would lead this node for
 *   good there (its claims never refused, its forged entries applied, reads
 *   answered from them; the hold below only stops this node campaigning).
 *   The price: there the liar's report about the honest voter is undenied too
 *   (the honest voter is its subject): this node refuses both and follows
 *   nobody until its operator acts, a stop rather than forged data. The
 *   removed member and an honest voter are symmetric in this node's view;
 *   only the CRL tells them apart.
 * - not the cluster's log: the voter holds committed, at this node's commit
 *   index (the query's probe_index), an entry of another term (probe_term).
 *   Committed entries are the same on every member (Raft §5.4.3), so one of the
 *   two logs is not the cluster's: this node applied entries forged with a
 *   member's certificate (or its disk lies). Its leadership is held
 *   (RaftNode.holdLeadership: it starts no election; it votes and follows)
 *   for as long as a voter says so: asked again while held, at most once a
 *   ASK_INTERVAL_MS. Its forged entries stay applied here (an operator wipes
 *   and re-adds it), but the cluster keeps committing without it.
 *   One voter's word is enough here, unlike a removal: a hold keeps this node
 *   from campaigning, never from following, and a node whose configuration
 *   still names a removed member lacks that committed removal, so by Leader
 *   Completeness (below) a live quorum holds a member as up to date as it and
 *   elects without it; following, it catches up past the removal, and the
 *   removed liar is asked no more (an honest voter's answer holding the same
 *   entry releases the hold meanwhile). Needing two would leave a 3-voter
 *   cluster's forged log (review24) to lead for good with nothing committed.
 *   Campaigning, a round is asked again at once when this node's commit index
 *   passed the one the last round probed (the entries it took since, a forged
 *   one among them, were not asked about: it won an election before).
 * Nothing waits on a round: the claim that started it is stepped at once, so
 * the common failover (the leader gone, a follower whose configuration still
 * names a member since removed) elects and commits as before. The price: the
 * claim that makes a member ask is taken before the answer, so a removed
 * member's certificate gets its first forged append (and what it commits)
 * applied even where a voter would have said no; every later message of it is
 * refused, and the member holds its leadership (above). Holding the claimant's
 * appends while the voters are asked keeps even that one out, but holds honest
 * new leaders too (it changed the traces of 12 pinned simulator seeds; left on
 * branch forged29-hold).
 *
 * Why a member that holds a committed removal does not need this node to lead:
 * a configuration committed at index I (the quorum that committed it holds an
 * entry of the committing leader's term at or after I) leaves in every quorum
 * of it a member whose log is at least as up to date as a log that lacks entry
 * I (Raft §5.4.1, Leader Completeness): so holding such a node's leadership, or
 * refusing a member that configuration removed, never leaves the cluster
 * without a leader a live quorum can elect.
 *
 * Not built: voters refusing a vote to a candidate whose last log term is
 * newer than any leader a quorum could have elected. A voter knows only its
 * own term: "refuse while the candidate's last term is above mine" is beaten
 * by the next campaign (the refused request moves the voter's term), and a
 * form that moves no term refuses honest candidates for good (a voter left at
 * term 2 while the others reached term 50). "Refuse a candidate whose last
 * index is below my commit index" is sound but a forger beats it with more
 * entries than were committed. The voters' answers above prove more.
 *
 * What it does not cover: a member that reaches no voter but the sender
 * (the removed member's certificate against a member cut off from all the
 * others) cannot tell a forged claim from an honest failover, and takes it;
 * it learns of the removal, and holds its leadership, once a voter answers.
 * Only the CRL keeps the forged entry out there. Without mutual TLS nothing
 * proves which member answers. A voter of a build before the commit_index and
 * probe_term fields answers neither: it tells nothing (rolling upgrade).
 *
 * What an answer told is only as good as the certificate it came over (its
 * serial, MembershipAnswer.serial): when the peer CRL changes (crlChanged),
 * the removals and the held leadership learned from a certificate it now
 * revokes are dropped at once, and no answer over such a certificate is taken
 * (one in flight over a connection made before the change): a removed member
 * this node still counts as a voter, answering with a forged configuration,
 * made this node refuse its honest members for good (review30; now any honest
 * voter that answers denies it, see above), until revoked.
 *
 * A round that found nothing is trusted for ASK_INTERVAL_MS: a claim of that
 * sender within it starts no round (a removal committed in that second is
 * learned at the next round).
 *
 * Limits: one round per sender at a time, ROUNDS_IN_FLIGHT_MAX rounds at once,
 * ASK_INTERVAL_MS between rounds for one sender, ASK_TIMEOUT_MS per ask,
 * ROUND_VOTERS_MAX voters a round, IDS_MAX senders remembered (the oldest not
 * being asked forgotten first, with their words), REPORTS_PER_MEMBER_MAX
 * voters' words per member (the one that spoke longest ago dropped first),
 * REMOVAL_NEWS_DENIAL_TTL_MS for a denial.
 */
import type { Membership, Message, NodeId } from '../raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../transport/transport.js';
import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import { VOUCH_ASK_TIMEOUT_MS } from './vouches.js';
import { askWithin } from './ask-within.js';

/** IDS_MAX: senders remembered (being asked, asked recently, or reported removed). */
export const REMOVAL_NEWS_IDS_MAX = 256;
/** ROUNDS_IN_FLIGHT_MAX: rounds asked at once; a sender past it is asked at its next claim. */
export const REMOVAL_NEWS_ROUNDS_IN_FLIGHT_MAX = 2;
/** ASK_INTERVAL_MS: the least time between the end of a round for one sender and the start of the next. */
export const REMOVAL_NEWS_ASK_INTERVAL_MS = 1_000;
/** ASK_TIMEOUT_MS: one voter's answer is waited for this long (vouches.ts's). */
export const REMOVAL_NEWS_ASK_TIMEOUT_MS = VOUCH_ASK_TIMEOUT_MS;
/** ROUND_VOTERS_MAX: voters asked, all at once, in one round. */
export const REMOVAL_NEWS_ROUND_VOTERS_MAX = 5;
/** CORROBORATING_VOTERS_MIN: voters (never the member, never this node) whose own answers holding a member removed refuse it even where another voter's answer names it. */
export const REMOVAL_NEWS_CORROBORATING_VOTERS_MIN = 2;
/** REPORTS_PER_MEMBER_MAX: voters' reports kept per member (the voter that spoke longest ago dropped first). */
export const REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX = 16;
/**
 * DENIAL_TTL_MS: a voter's denial (its committed configuration names the member) counts this long after its answer.
 * A denial says only that the member was named at that index: a removal may have been committed since, and a voter
 * that answers no more (down, cut off) cannot withdraw it. Before, such a denial stood for good, and kept lifting a
 * true removal one voter reported (the member's forged claims taken again). A live voter's word is asked again at
 * the member's next claim (at most once an ASK_INTERVAL_MS), so its denial stays fresh. A report of a removal does
 * not age: committed, a removal is never rolled back (a member added back is named in the voters' later answers).
 */
export const REMOVAL_NEWS_DENIAL_TTL_MS = 60_000;
/** SELF: the key of the rounds this node starts about its own log (no sender). */
const SELF = '';

export interface RemovalNewsOptions {
  readonly selfId: NodeId;
  readonly clock: Clock;
  readonly log: Logger;
  /** configuration: this node's newest configuration and the index of the entry (or snapshot) it comes from (0: the bootstrap's). */
  readonly configuration: () => { readonly membership: Membership; readonly index: number };
  /** state: this node's term, the leader it follows ('' none) and its commit index. */
  readonly state: () => { readonly term: number; readonly leader: NodeId; readonly commit: number };
  /** termAt: the term of this node's entry at `index`, undefined when compacted away or absent. */
  readonly termAt: (index: number) => number | undefined;
  /** ask: one GetMembership call to member q.to, over a channel that checks q.to's certificate (the transport's askMembership). */
  readonly ask: (q: MembershipQuery, timeoutMs: number) => Promise<MembershipAnswer>;
  /** holdLeadership: called with true once a voter holds committed another entry at this node's commit index, false once none does. */
  readonly holdLeadership: (held: boolean) => void;
}

/** RemovalNewsRefusal: why screen refused a message. */
export interface RemovalNewsRefusal {
  readonly reason: 'removed';
  readonly message: string;
}

/** RemovalNewsStats: counts for status pages and tests. */
export interface RemovalNewsStats {
  readonly rounds: number;
  readonly asks: number;
  /** removed: members reported removed (committed, newer than this node's configuration) and still refused. */
  readonly removed: number;
  readonly refused: number;
  /** reports: voters' words kept (a member removed, or named; at most REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX per member, IDS_MAX members). */
  readonly reports: number;
  /** leadershipHeld: a voter holds committed another entry at this node's commit index. */
  readonly leadershipHeld: boolean;
}

interface Round {
  asking: boolean;
  /** endedMs: when the last round ended (-Infinity: none yet). */
  endedMs: number;
  /** answered: a voter answered in the last round. */
  answered: boolean;
  /** probe: this node's commit index the last round probed (its own log's rounds: a later one is asked about at once). */
  probe: number;
}

/**
 * Reports: per voter, its last committed word about one member: `removed` (its configuration at `index`, newer than
 * this node's, does not name the member) or not (its configuration at `index`, at least as new as this node's, names it).
 */
type Reports = Map<
  NodeId,
  {
    readonly index: number;
    readonly removed: boolean;
    /** serial: of the certificate the word came over (MembershipAnswer.serial; undefined without TLS). */
    readonly serial: string | undefined;
    /** atMs: when the word was learned (this node's clock): a denial counts REMOVAL_NEWS_DENIAL_TTL_MS at most. */
    readonly atMs: number;
  }
>;

/** Removal: the voters whose reports that a member was removed stand (newer than this node's configuration), highest index first. */
interface Removal {
  readonly voters: readonly NodeId[];
  readonly indexes: readonly number[];
}

function names(m: Membership, id: NodeId): boolean {
  return m.voters.includes(id) || m.learners.includes(id);
}

/** isClaim: `m` would make this node follow or vote for its sender (see the file's comment). */
function isClaim(m: Message, term: number, leader: NodeId): boolean {
  if (m.type === 'vote') return m.term > term;
  if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') return m.term > term || (m.term === term && m.from !== leader);
  return false;
}

export class RemovalNews {
  private readonly opts: RemovalNewsOptions;
  private readonly rounds = new Map<NodeId, Round>();
  /** reports: per member this node's configuration names, each voter's (never the member's, never this node's) last word that it was removed. */
  private readonly reports = new Map<NodeId, Reports>();
  private inFlight = 0;
  private cursor = 0;
  private closed = false;
  /** conflict: the voter and index of the last answer that held committed another entry at this node's commit index; null: none. */
  private conflict: { readonly voter: NodeId; readonly index: number; readonly term: number; readonly theirs: number; readonly serial: string | undefined } | null = null;
  /** revoked: the peer CRL in use since the last crlChanged (none before it): an answer over a certificate it revokes is not taken. */
  private revoked: (serial: string) => boolean = () => false;
  private counts = { rounds: 0, asks: 0, refused: 0 };

  constructor(opts: RemovalNewsOptions) {
    this.opts = opts;
  }

  /**
   * screen: whether request `m` (a Raft message a member sent) may be stepped:
   * null, or why it is refused ('removed'). Starts a round in the background
   * when `m` is a claim of a member this node's configuration names (see the
   * file's comment). Cheap and synchronous.
   */
  screen(m: Message): RemovalNewsRefusal | null {
    if (this.closed || m.from === this.opts.selfId) return null;
    const refused = this.refusalOf(m.from);
    if (refused !== null) return refused;
    const conf = this.opts.configuration();
    if (!names(conf.membership, m.from)) return null;
    const st = this.opts.state();
    if (isClaim(m, st.term, st.leader)) this.requestRound(m.from);
    return null;
  }

  /**
   * refusalOf: why every call of member `id` is refused ('removed': voters of
   * this node's configuration hold committed newer configurations that do not
   * name it, two or one no voter denies, and this node's own is not as new
   * yet), null when it is not.
   * The Raft messages are screened with it (screen), the peer plane's other
   * RPCs (snapshot and state image fetches, GetMembership, archive staging,
   * read indexes, forwarded writes) by PeerGuard's reportedRemoved. A refusal
   * asks the voters again (at most once an ASK_INTERVAL_MS): a later committed
   * configuration naming `id` again lifts it. Cheap and synchronous.
   */
  refusalOf(id: NodeId): RemovalNewsRefusal | null {
    if (this.closed || id === this.opts.selfId) return null;
    const conf = this.opts.configuration();
    const removal = this.removal(id, conf);
    if (removal === null) return null;
    this.counts.refused++;
    this.requestRound(id);
    const shown = removal.voters.length > 3 ? 3 : removal.voters.length;
    return {
      reason: 'removed',
      message: `${id} was removed from this cluster: voters of this node's configuration (${removal.voters.slice(0, shown).join(', ')}${removal.voters.length > shown ? ', ...' : ''}) hold committed configurations (indexes ${removal.indexes.slice(0, shown).join(', ')}; this node's ${conf.index}) that do not name it${removal.voters.length === 1 ? ', and no other voter answered one naming it' : ''}`,
    };
  }

  /**
   * checkOwnLog: a round about this node's own log (no sender), at most once
   * an ASK_INTERVAL_MS: the node calls it at every tick while it campaigns (so
   * a member fooled while cut off learns it from the first voter that answers,
   * before its campaign can win) and while its leadership is held (so it is
   * released once no voter says so). `campaigning`: a round no voter answered
   * does not count for the interval (the next tick asks again, no more often
   * than one round at a time: as often as the campaign asks for votes).
   */
  checkOwnLog(campaigning: boolean): void {
    this.requestRound(SELF, campaigning);
  }

  /** leadershipHeld: a voter holds committed, at this node's commit index, an entry of another term. */
  leadershipHeld(): boolean {
    return this.conflict !== null;
  }

  /** reportedRemoved: `id` is refused: voters hold committed configurations newer than this node's that do not name it (two, or one no voter denies). */
  reportedRemoved(id: NodeId): boolean {
    return this.removal(id, this.opts.configuration()) !== null;
  }

  /**
   * crlChanged: the peer CRL changed (serve's --peer-crl reloaded; `isRevoked` asks it about a serial): the removals
   * and the held leadership learned over a certificate it revokes are dropped now (the leadership released), and no
   * answer over such a certificate is taken from now on.
   */
  crlChanged(isRevoked: (serial: string) => boolean): void {
    this.revoked = isRevoked;
    const gone = (serial: string | undefined): boolean => serial !== undefined && isRevoked(serial);
    const conf = this.opts.configuration();
    for (const [id, reports] of [...this.reports]) {
      const was = this.removal(id, conf);
      for (const [voter, r] of [...reports]) if (gone(r.serial)) reports.delete(voter);
      if (reports.size === 0) this.reports.delete(id);
      if (was !== null && this.removal(id, conf) === null) {
        this.opts.log.warn({ member: id, voters: was.voters.slice(0, 4) }, 'peer plane: a removal reported by voters whose certificates the peer CRL now revokes is dropped');
      }
    }
    if (this.conflict !== null && gone(this.conflict.serial)) {
      this.opts.log.warn({ voter: this.conflict.voter }, 'this node\'s leadership is no longer held: the voter that held it was answering with a certificate the peer CRL now revokes');
      this.conflict = null;
      this.opts.holdLeadership(false);
    }
  }

  close(): void {
    this.closed = true;
  }

  stats(): RemovalNewsStats {
    const conf = this.opts.configuration();
    let removed = 0;
    for (const id of [...this.reports.keys()]) if (this.removal(id, conf) !== null) removed++;
    let reports = 0;
    for (const r of this.reports.values()) reports += r.size;
    return { ...this.counts, removed, reports, leadershipHeld: this.conflict !== null };
  }

  /** requestRound starts a round about `id` in the background unless one runs, one ended too recently, or too many run. */
  private requestRound(id: NodeId, unansweredAgain = false): void {
    if (this.closed) return;
    const now = this.opts.clock.nowMs();
    let r = this.rounds.get(id);
    // Campaigning, a round that told nothing (no voter answered, or it probed an older commit index: the entries this
    // node took since, a forged one among them, were not asked about) does not count for the interval.
    const stale = unansweredAgain && r !== undefined && (!r.answered || this.opts.state().commit > r.probe);
    if (r !== undefined && (r.asking || (now - r.endedMs < REMOVAL_NEWS_ASK_INTERVAL_MS && !stale))) return;
    if (this.inFlight >= REMOVAL_NEWS_ROUNDS_IN_FLIGHT_MAX) return;
    if (r === undefined) {
      this.forgetOldest();
      r = { asking: false, endedMs: -Infinity, answered: false, probe: 0 };
    }
    // Most recently asked last: the oldest are forgotten first.
    this.rounds.delete(id);
    this.rounds.set(id, r);
    r.asking = true;
    r.answered = false;
    this.inFlight++;
    this.counts.rounds++;
    void this.round(id, r);
  }

  private forgetOldest(): void {
    if (this.rounds.size < REMOVAL_NEWS_IDS_MAX) return;
    for (const [id, r] of this.rounds) {
      if (r.asking) continue;
      this.rounds.delete(id);
      this.reports.delete(id);
      return;
    }
  }

  private async round(id: NodeId, r: Round): Promise<void> {
    try {
      const all = this.opts.configuration().membership.voters.filter((v) => v !== this.opts.selfId && v !== id);
      const n = Math.min(all.length, REMOVAL_NEWS_ROUND_VOTERS_MAX);
      const start = all.length === 0 ? 0 : this.cursor++ % all.length;
      const voters = Array.from({ length: n }, (_, i) => all[(start + i) % all.length] as NodeId);
      const probeIndex = this.opts.state().commit;
      r.probe = probeIndex;
      await Promise.all(
        voters.map(async (voter) => {
          this.counts.asks++;
          let a: MembershipAnswer;
          try {
            a = await this.askWithin({ from: this.opts.selfId, to: voter, ...(probeIndex > 0 ? { probeIndex } : {}) });
          } catch {
            return; // unreachable, or an older build: it tells nothing
          }
          if (this.closed || a.from !== voter || (a.serial !== undefined && this.revoked(a.serial))) return;
          r.answered = true;
          this.learn(voter, a, probeIndex);
        }),
      );
    } finally {
      r.asking = false;
      r.endedMs = this.opts.clock.nowMs();
      this.inFlight--;
    }
  }

  /**
   * removal: the voters whose reports that `id` (a member this node's configuration `conf` names) was removed stand
   * (their configurations newer than this node's), when REMOVAL_NEWS_CORROBORATING_VOTERS_MIN do, or when one does
   * and no voter's committed configuration at least as new as this node's names `id`; null otherwise. Words this
   * node's configuration has caught up with are dropped.
   */
  private removal(id: NodeId, conf: { readonly membership: Membership; readonly index: number }): Removal | null {
    const reports = this.reports.get(id);
    if (reports === undefined) return null;
    const standing: [NodeId, number][] = [];
    let denied = 0;
    const now = this.opts.clock.nowMs();
    for (const [voter, r] of reports) {
      if (r.removed ? r.index <= conf.index : r.index < conf.index || now - r.atMs >= REMOVAL_NEWS_DENIAL_TTL_MS) reports.delete(voter);
      else if (r.removed) standing.push([voter, r.index]);
      else denied++;
    }
    if (reports.size === 0) this.reports.delete(id);
    if (!names(conf.membership, id) || standing.length === 0) return null;
    if (standing.length < REMOVAL_NEWS_CORROBORATING_VOTERS_MIN && denied > 0) return null;
    standing.sort((x, y) => y[1] - x[1]);
    return { voters: standing.map(([v]) => v), indexes: standing.map(([, i]) => i) };
  }

  /** learn takes what voter's answer `a` (to a query probing `probeIndex`) tells: removals, and whether this node's log is the cluster's. */
  private learn(voter: NodeId, a: MembershipAnswer, probeIndex: number): void {
    const conf = this.opts.configuration();
    const index = a.membershipIndex ?? 0;
    const commit = a.commitIndex ?? 0;
    // An uncommitted configuration (or none: an older build) tells nothing, and leaves the voter's earlier word standing
    // (a committed removal is never rolled back). A committed one is the voter's word about every member this node's
    // configuration names but the voter itself: a removal when newer than this node's and without the member; none
    // otherwise (named again: added back; no newer: the voter knows no more than this node).
    if (commit > 0 && index <= commit) {
      for (const id of [...conf.membership.voters, ...conf.membership.learners]) {
        if (id === this.opts.selfId || id === voter) continue;
        const was = this.removal(id, conf);
        if (names(a.membership, id)) this.report(id, voter, index, false, a.serial);
        else if (index > conf.index) this.report(id, voter, index, true, a.serial);
        else this.reports.get(id)?.delete(voter);
        const now = this.removal(id, conf);
        if (was === null && now !== null) {
          this.opts.log.warn(
            { member: id, voters: now.voters.slice(0, 4), indexes: now.indexes.slice(0, 4), own: conf.index },
            'peer plane: a member this node\'s configuration names was removed: voters of it hold committed newer configurations that do not name it (two, or one that no voter denies); its messages are refused until this node\'s configuration is as new',
          );
        } else if (was !== null && now === null && this.reports.has(id)) {
          this.opts.log.info({ member: id, voter, index, own: conf.index }, 'peer plane: a member reported removed is refused no longer: a voter names it, and fewer than two say it was removed');
        }
      }
    }
    const st = this.opts.state();
    const theirs = a.probeTerm ?? 0;
    if (probeIndex === 0 || theirs === 0 || st.commit < probeIndex) return;
    const ours = this.opts.termAt(probeIndex);
    if (ours === undefined) return;
    if (ours !== theirs) {
      if (this.conflict === null) {
        this.opts.log.error(
          { voter, index: probeIndex, term: ours, theirs },
          'this node\'s log is not the cluster\'s: a voter holds committed, at an index this node committed, an entry of another term (entries a removed member\'s certificate forged, or a damaged disk); this node starts no election from now on (it still votes and follows). Wipe its data dir and add it again',
        );
      }
      const first = this.conflict === null;
      this.conflict = { voter, index: probeIndex, term: ours, theirs, serial: a.serial };
      if (first) this.opts.holdLeadership(true);
    } else if (this.conflict !== null && probeIndex >= this.conflict.index) {
      this.opts.log.info({ voter, index: probeIndex }, 'a voter holds committed the entry this node committed at its commit index: its leadership is no longer held');
      this.conflict = null;
      this.opts.holdLeadership(false);
    }
  }

  /** report records voter's word about `id` (removed, or named, at `index`; its newest word replaces its older one), within the bounds. */
  private report(id: NodeId, voter: NodeId, index: number, removed: boolean, serial: string | undefined): void {
    let reports = this.reports.get(id);
    if (reports === undefined) {
      if (!this.rounds.has(id)) {
        this.forgetOldest();
        this.rounds.set(id, { asking: false, endedMs: -Infinity, answered: false, probe: 0 });
      }
      reports = new Map();
      this.reports.set(id, reports);
    }
    // Most recent word last: past the bound, the voter that spoke longest ago is dropped first.
    reports.delete(voter);
    if (reports.size >= REMOVAL_NEWS_REPORTS_PER_MEMBER_MAX) {
      const oldest = reports.keys().next().value;
      if (oldest !== undefined) reports.delete(oldest);
    }
    reports.set(voter, { index, removed, serial, atMs: this.opts.clock.nowMs() });
  }

  /** askWithin: one ask, given up after REMOVAL_NEWS_ASK_TIMEOUT_MS on this node's clock (ask-within.ts). */
  private askWithin(q: MembershipQuery): Promise<MembershipAnswer> {
    return askWithin(this.opts.clock, this.opts.ask, q, REMOVAL_NEWS_ASK_TIMEOUT_MS);
  }
}

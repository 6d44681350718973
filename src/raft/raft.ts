import { ConfChangeUnreachableError, ConfChangeUnsafeError, NotLeaderError, ProposalDroppedError } from './errors.js';
import { RaftLog, type LogPosition } from './log.js';
import {
  MembershipChangeError,
  applyConfChange,
  decodeConfChangeOrNull,
  encodeConfChange,
  isMember,
  isVoter,
  members,
  quorum,
  sameMembership,
  validateConfChange,
  wellFormedMembership,
} from './membership.js';
import { Progress, type ProgressState } from './progress.js';
import {
  APPEND_ENTRIES_MAX,
  NO_NODE,
  type AppendRequest,
  type AppendResponse,
  type ConfChange,
  type ConfChangeProver,
  type Entry,
  type HardState,
  type Heartbeat,
  type HeartbeatResponse,
  type Membership,
  type Message,
  type NodeId,
  type ReadFailure,
  type ReadState,
  type Ready,
  type Rng,
  type Role,
  type SnapshotMeta,
  type SnapshotRequest,
  type SnapshotResponse,
  type SoftState,
  type VoteRequest,
  type VoteResponse,
} from './types.js';

/** RaftConfig tunes one node. Times are in ticks; the driver decides how long a tick is. */
export interface RaftConfig {
  readonly id: NodeId;
  /** electionTimeoutTicks: a follower campaigns after a random timeout in [t, 2t) without a leader. */
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  readonly rng: Rng;
  /** preVote: ask for votes at term+1 before disrupting anyone (dissertation §9.6). */
  readonly preVote: boolean;
  /** checkQuorum: a leader that has not heard from a quorum for an election timeout steps down (§6.2). */
  readonly checkQuorum: boolean;
  /** maxInflightAppends: appends pipelined to one follower before waiting for answers. */
  readonly maxInflightAppends: number;
  /** maxAppendBytes: entry data per append message (at least one entry is always sent; at most APPEND_ENTRIES_MAX entries). */
  readonly maxAppendBytes: number;
  /** maxUncommittedBytes: proposals are refused while this much is proposed but not committed. */
  readonly maxUncommittedBytes: number;
  /** maxApplyBytes: committed entry data handed to the driver in one Ready. */
  readonly maxApplyBytes: number;
  /** maxPendingReads: ReadIndex requests waiting at the leader before new ones are refused. */
  readonly maxPendingReads: number;
  /**
   * snapshotGuardTicksMax: a follower that is installing a snapshot keeps the
   * leader from compacting the entries after it until it reports the install
   * done; one that answers nothing for this many ticks (dead, cut off) loses
   * that guard, so a lost follower cannot pin the log forever. Default 400
   * election timeouts (a minute at serve's defaults).
   */
  readonly snapshotGuardTicksMax: number;
  /**
   * joinBySnapshot: a member outside the log's first membership (one that
   * joined later) starts from a snapshot, never from the first entry (see
   * sendAppend). Default true; false only for a driver that takes no
   * snapshots (tests, the simulator's snapshot-free scenarios), which then
   * replays the log onto the joiner's own bootstrap membership.
   */
  readonly joinBySnapshot: boolean;
}

/** PENDING_READS_MAX_DEFAULT: the default RaftConfig.maxPendingReads. */
export const PENDING_READS_MAX_DEFAULT = 4096;

export function defaultRaftConfig(id: NodeId, rng: Rng, overrides: Partial<RaftConfig> = {}): RaftConfig {
  const electionTimeoutTicks = overrides.electionTimeoutTicks ?? 10;
  return {
    snapshotGuardTicksMax: SNAPSHOT_GUARD_ELECTION_TIMEOUTS * electionTimeoutTicks,
    id,
    rng,
    electionTimeoutTicks: 10,
    heartbeatIntervalTicks: 1,
    preVote: true,
    checkQuorum: true,
    maxInflightAppends: 256,
    maxAppendBytes: 1 << 20,
    maxUncommittedBytes: 64 << 20,
    maxApplyBytes: 16 << 20,
    maxPendingReads: PENDING_READS_MAX_DEFAULT,
    joinBySnapshot: true,
    ...overrides,
  };
}

/** RaftBootState is what the driver persisted, handed back at start. */
export interface RaftBootState {
  readonly hardState: HardState;
  /** snapshot: the newest snapshot the node holds (a new cluster: index 0 with the initial membership). */
  readonly snapshot: SnapshotMeta;
  /** logBase: the last compacted entry ({0, 0} when nothing was compacted). */
  readonly logBase: LogPosition;
  /** entries: persisted entries after logBase.index, contiguous. */
  readonly entries: readonly Entry[];
  /** applied: the state machine's applied index (>= snapshot.index). */
  readonly applied: number;
  /**
   * lostBase: the snapshot the log was compacted against (its index and term
   * are logBase's) is lost — corrupt or gone — and none at or after it is
   * held; `snapshot` is then ignored. A state machine behind it (`applied` <
   * its index) has no base: the core starts as a follower whose install
   * failed (see installFailed): it hands out nothing to apply and asks its
   * leader for a snapshot at or after it. A state machine at or past it
   * applies on, and the driver snapshots it at once (setSnapshot). Either
   * way the node stands for no election until it holds a snapshot again: a
   * leader must be able to offer one.
   */
  readonly lostBase?: SnapshotMeta;
}

/** SNAPSHOT_GUARD_ELECTION_TIMEOUTS: the default snapshotGuardTicksMax, in election timeouts. */
export const SNAPSHOT_GUARD_ELECTION_TIMEOUTS = 400;

/**
 * NON_VOTER_CLAIM_CAMPAIGNS_MIN: the campaigns a node that may campaign has
 * started since it last heard from a leader (so at least one failed) before
 * it takes a claim to lead from a sender its configuration does not name as
 * a voter (see nonVoterClaimTooSoon).
 */
export const NON_VOTER_CLAIM_CAMPAIGNS_MIN = 2;

/**
 * CONF_CHANGE_HEARD_ELECTION_TIMEOUTS: how recently (in election timeouts) a
 * leader must have heard from a voter to count it reachable for a change of
 * the voters (checkReachableQuorum). One was too tight: three in-process
 * nodes on a machine at load 11 missed it for a live member about 1 run in 4
 * (join.spec); a member that died less than this ago still counts.
 */
export const CONF_CHANGE_HEARD_ELECTION_TIMEOUTS = 2;

export interface ProgressStatus {
  readonly match: number;
  readonly next: number;
  readonly state: ProgressState;
  readonly inflight: number;
  readonly pendingSnapshot: number;
  /** installGuard: the snapshot the follower is fetching or installing, whose next entries the leader keeps (0: none). */
  readonly installGuard: number;
  /** applied: the state-machine applied index the member last reported in a heartbeat answer (0: none yet). */
  readonly applied: number;
}

/** SnapshotHandOff: see RaftStatus.snapshotHandOff. */
export interface SnapshotHandOff {
  readonly count: number;
  readonly to: NodeId;
  readonly stranded: readonly NodeId[];
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly term: number;
  readonly vote: NodeId;
  readonly role: Role;
  readonly leader: NodeId;
  readonly commit: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly snapshotIndex: number;
  readonly membership: Membership;
  readonly progress: Readonly<Record<NodeId, ProgressStatus>>;
  readonly leadTransferee: NodeId;
  /**
   * snapshotStranded (leader): the followers that need a snapshot (cut off
   * past the log, or their state machine has no base) while this leader can
   * offer none (its own was lost: snapshotLost, RaftBootState.lostBase);
   * empty otherwise. Once rebuilding it failed (snapshotRebuildFailed) the
   * leader hands leadership to a voter that holds one (handOff); with none,
   * it stays, and these followers wait.
   */
  readonly snapshotStranded: readonly NodeId[];
  /**
   * snapshotLost: this node's newest snapshot, the one its log starts after,
   * is lost (RaftBootState.lostBase, or found damaged since: snapshotLost)
   * and no snapshot was taken or installed since: it offers none, stands for
   * no election, and its driver builds a new one. Also while no follower
   * needs one yet (snapshotStranded empty).
   */
  readonly snapshotLost: boolean;
  /** snapshotRebuildFailed: this node's snapshot is lost and the driver reported that building one failed since (snapshotRebuildFailed). */
  readonly snapshotRebuildFailed: boolean;
  /**
   * snapshotHandOff: the hand-overs this node started as a leader whose
   * snapshot was lost (handOff): how many since it started, and the last
   * one's target and the followers that waited for a snapshot then. A driver
   * that logs a hand-over by its count misses none, however soon it
   * completes (leadTransferee is set only until the target wins).
   */
  readonly snapshotHandOff: SnapshotHandOff;
  readonly installingSnapshot: number;
  /** compactionFloor: the highest index the log may be compacted to now (see compactionFloor()). */
  readonly compactionFloor: number;
}

/**
 * RaftBrief: the part of RaftStatus a driver or a request path reads on every
 * message or call (no per-peer progress, no computed floors): one small
 * object, whatever the cluster's size.
 */
export type RaftBrief = Pick<RaftStatus, 'id' | 'term' | 'vote' | 'role' | 'leader' | 'commit' | 'applied' | 'firstIndex' | 'snapshotIndex' | 'membership'>;

interface PendingRead {
  readonly seq: number;
  readonly index: number;
  readonly context: string;
  readonly from: NodeId;
}

interface ConfPoint {
  readonly index: number;
  readonly membership: Membership;
  /** attest: the entry is an `attest` (a commit statement, no member changed): membershipIndex passes over it. */
  readonly attest?: true;
}

type MessageBody<M extends Message> = M extends Message ? Omit<M, 'from' | 'to' | 'term'> & { term?: number } : never;

/**
 * RaftNode is the pure Raft core: it does no IO, reads no clock and draws
 * randomness only from the injected Rng. Input: tick(), step(message) and the
 * proposal methods. Output: ready(), handled by the driver, then advance().
 * The same code runs under the seeded simulator (test/sim) and in the real
 * node (src/node).
 *
 * Section references are to the Raft paper (Ongaro & Ousterhout, 2014) and
 * Ongaro's dissertation (2014).
 */
export class RaftNode {
  readonly id: NodeId;
  protected readonly cfg: RaftConfig;
  protected readonly log: RaftLog;

  protected term = 0;
  protected vote: NodeId = NO_NODE;
  protected role: Role = 'follower';
  protected lead: NodeId = NO_NODE;

  private electionElapsed = 0;
  /**
   * campaignsSinceLeader: campaigns (pre-campaigns included) this node started
   * since it last led or took a leader's append, heartbeat or snapshot; 0 after a
   * restart (see nonVoterClaimTooSoon).
   */
  private campaignsSinceLeader = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private votes = new Map<NodeId, boolean>();
  protected readonly prs = new Map<NodeId, Progress>();

  private baseMembership: Membership;
  private baseMembershipIndex: number;
  private confPoints: ConfPoint[] = [];
  private membership: Membership;
  /** pendingConfIndex: a leader proposes no membership change until this index commits. */
  private pendingConfIndex = 0;
  /** pendingConfAttest: the entry at pendingConfIndex is this leader's attest (proposeAttestation), not a change. */
  private pendingConfAttest = false;
  private uncommittedBytes = 0;

  private leadTransferee: NodeId = NO_NODE;

  private snapshot: SnapshotMeta;
  /**
   * installing: the snapshot this follower is fetching or installing, from
   * Ready.snapshot until the driver reports the install done
   * (snapshotInstalled, restoreSnapshot) or the fetch failed (snapshotFailed).
   * Only one at a time: a newer offer (a new leader's) does not restart it.
   */
  private installing: SnapshotMeta | null = null;
  /**
   * restoring: beginInstall was called; the state machine is being replaced,
   * so no entry is handed out to apply. It stays set when that install failed
   * (installFailed): the log was reset to it, so the state machine has no base
   * until a snapshot at or after it is installed; the follower then asks its
   * leader for one (HeartbeatResponse.needsSnapshot) and takes any offer at or
   * after it.
   */
  private restoring: SnapshotMeta | null = null;
  /**
   * baseLost: the snapshot the log starts after is lost (RaftBootState.lostBase,
   * or found damaged since: snapshotLost) and no snapshot was taken or installed since: this node cannot offer one,
   * so it stands for no election.
   */
  private baseLost = false;
  /**
   * rebuildFailed: while baseLost, the driver reported that building a
   * snapshot to replace the lost one failed (snapshotRebuildFailed: a full
   * disk, EIO); cleared once it holds one again, or another is lost.
   */
  private rebuildFailed = false;
  /** snapshotHandOff: see RaftStatus.snapshotHandOff. */
  private snapshotHandOff: SnapshotHandOff = { count: 0, to: NO_NODE, stranded: [] };

  /**
   * countedAsVoter: a candidate asked this node, not a voter in its own
   * latest configuration, for its vote, and was refused because this log is
   * more up to date. The candidate's log holds a configuration that counts
   * this node (a promotion this node has not received), so it may be the
   * only one that can win: it campaigns, counting the votes of its own latest
   * configuration, until it hears from a leader (etcd's raft lets a learner
   * vote for the same reason; it applies configurations at commit, so its
   * candidates do not ask learners). Leading, it commits an entry of its term
   * and steps down (onCommitted). Volatile: cleared by a leader's message and
   * by leading. Simulator seed 917802.
   */
  private countedAsVoter = false;
  /** leadHeld: holdLeadership's flag: no election is started. */
  private leadHeld = false;
  /**
   * snapshotWanted (leader): a follower needs a snapshot at or after this
   * index, newer than this leader's newest; the driver takes one once it has
   * applied that far (0: none wanted). A follower that lost its base, or a
   * member that joined after the log began (see sendAppend).
   */
  private snapshotWantedIndex = 0;
  /**
   * leaderInstallFloor: the install floor the leader last announced in its
   * heartbeats (a follower of it installs the snapshot at that index, 0: none).
   * Kept under this node's compaction floor while it follows, and for two
   * election timeouts after it becomes leader (time for the installing
   * follower to tell it directly, see noteInstalling).
   */
  private leaderInstallFloor = 0;
  private inheritedFloorTicksLeft = 0;
  /**
   * leaderSnapshotIndex: the newest snapshot index the current leader
   * announced in a heartbeat (0: none heard in this term). A follower compacts
   * no further than it: the leader offers that snapshot (or an older one) to a
   * follower too far behind, and any follower may lead next, so each keeps the
   * entries after it until the install floor takes over (issue 14 item 5).
   */
  private leaderSnapshotIndex = 0;
  /**
   * heardSnapshotIndex: the last snapshot index a leader announced to this
   * node (leaderSnapshotIndex, kept across terms). As a follower it compacted
   * no further; as a new leader it compacts no further either until every
   * peer has said whether it installs a snapshot, at most two election
   * timeouts (heardFloorTicksLeft): the old leader may have offered that
   * snapshot and died before a heartbeat announced the install floor, and the
   * installer's first answer can come after this leader's first compaction
   * (the deaf-install test: then a second whole snapshot right after the
   * first install).
   */
  private heardSnapshotIndex = 0;
  private heardFloorTicksLeft = 0;
  private snapshotToFetch: SnapshotMeta | null = null;
  private logResetPending: LogPosition | null = null;
  /** stateAppliedIndex: what the driver last reported its state machine applied (stateApplied); heartbeat answers carry it. */
  private stateAppliedIndex = 0;

  /** appendPending: proposals were appended since the last broadcast; ready() sends them. */
  private appendPending = false;
  private readSeq = 0;
  private readRoundWanted = false;
  private pendingReads: PendingRead[] = [];
  private deferredReads: { context: string; from: NodeId }[] = [];

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private readFailures: ReadFailure[] = [];
  private prevHardState: HardState;
  private prevSoftState: SoftState;
  private readyOutstanding = false;

  constructor(config: RaftConfig, boot: RaftBootState) {
    if (config.electionTimeoutTicks <= config.heartbeatIntervalTicks) {
      throw new Error('RaftNode: electionTimeoutTicks must be greater than heartbeatIntervalTicks');
    }
    if (config.maxInflightAppends < 1) throw new Error('RaftNode: maxInflightAppends must be at least 1');
    this.id = config.id;
    this.cfg = config;
    const lost = boot.lostBase;
    if (lost !== undefined && (lost.index !== boot.logBase.index || lost.term !== boot.logBase.term)) {
      throw new Error(`RaftNode: the lost base ${lost.index}/${lost.term} is not the log base ${boot.logBase.index}/${boot.logBase.term}`);
    }
    const snap = lost ?? boot.snapshot;
    const applied = lost !== undefined ? Math.max(lost.index, boot.applied) : boot.applied;
    if (applied < snap.index) {
      throw new Error(`RaftNode: state machine applied ${applied} is behind its snapshot ${snap.index}`);
    }
    let log = new RaftLog(boot.logBase, boot.entries, boot.hardState.commit, applied);
    if (snap.index > boot.logBase.index && !log.matchTerm(snap.index, snap.term)) {
      // The log does not hold the snapshot's last entry (a crash between installing a snapshot
      // and resetting the log): the snapshot wins, the log is discarded (Raft §7).
      log = new RaftLog({ index: snap.index, term: snap.term }, [], snap.index, snap.index);
      this.logResetPending = { index: snap.index, term: snap.term };
    }
    if (applied > log.lastIndex()) {
      throw new Error(`RaftNode: state machine applied ${applied} is beyond the last log entry ${log.lastIndex()}`);
    }
    this.log = log;
    this.log.appliedTo(applied);
    this.stateAppliedIndex = boot.applied;
    if (this.log.committed < applied) this.log.commitTo(applied);
    this.snapshot = snap;
    if (lost !== undefined) {
      this.baseLost = true;
      if (boot.applied < lost.index) this.restoring = lost;
    }
    this.term = boot.hardState.term;
    this.vote = boot.hardState.vote;
    this.baseMembership = snap.membership;
    this.baseMembershipIndex = snap.index;
    this.membership = snap.membership;
    this.rebuildConfPoints();
    this.prevHardState = this.hardState();
    this.prevSoftState = { leader: NO_NODE, role: 'follower' };
    this.resetRandomizedElectionTimeout();
  }

  // ---------------------------------------------------------------- inputs

  /** tick advances logical time by one tick. */
  tick(): void {
    if (this.role === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  /**
   * missedTicks: the driver's clock says `n` tick periods passed with no tick
   * run (its ticks came late: a busy or starved process). A leader counts them
   * towards its next heartbeat only, so that the next tick() sends it if one
   * heartbeat interval passed by the clock since the last (etcd-io/raft's
   * MsgBeat: heartbeats are a local clock's, not only the ticks'). Nothing
   * else moves: the election timeout and the CheckQuorum window count the
   * ticks run (a leader's own stall, its followers' answers waiting unread,
   * never deposes it), and a follower's campaign counts its own ticks (a stall
   * of its own never makes it campaign). Without it a leader whose ticks ran
   * at 3-6x their period (a restore's install on a loaded machine) sent a
   * heartbeat every 100-200 ms of the clock, while its idle followers timed out
   * after 150-300 ms of theirs, and both campaigned together. A negative or
   * non-integer n, or a non-leader, changes nothing.
   */
  missedTicks(n: number): void {
    if (this.role !== 'leader' || !Number.isSafeInteger(n) || n <= 0) return;
    this.heartbeatElapsed = Math.min(this.heartbeatElapsed + n, this.cfg.heartbeatIntervalTicks - 1);
  }

  /** campaign starts an election now (if this node is a voter and not the leader). */
  campaign(): void {
    this.hup(false);
  }

  /**
   * holdLeadership: while held, this node starts no election (no pre-vote, no
   * vote, no transfer's; its timer runs out as a failed campaign would) and,
   * leading or campaigning when it is set, becomes a follower at once; it
   * still votes, follows and acknowledges. The driver holds it
   * (src/node/removal-news.ts) once a voter of its configuration holds
   * committed, at an index this node committed, an entry of another term:
   * this node's log is not the cluster's (entries a removed member's
   * certificate forged, or a damaged disk), and elected on it (its last term
   * may be the highest) it would lead for good with no write committed, the
   * other voters refusing to overwrite their committed entries. Not
   * persisted: the driver sets it again after a restart.
   */
  holdLeadership(held: boolean): void {
    if (held === this.leadHeld) return;
    this.leadHeld = held;
    if (held && this.role !== 'follower') this.becomeFollower(this.term, NO_NODE);
  }

  /** leadershipHeld: holdLeadership's flag. */
  leadershipHeld(): boolean {
    return this.leadHeld;
  }

  /**
   * propose appends data to the log as the leader. Returns the entry's position;
   * the proposal succeeded once an entry with that index and term is applied.
   * Throws NotLeaderError on a non-leader, ProposalDroppedError during a
   * leadership transfer or when too much is uncommitted.
   */
  propose(data: Uint8Array): LogPosition {
    return this.appendAsLeader('normal', data);
  }

  /**
   * proposeConfChange proposes a single-server membership change
   * (dissertation §4.1). With `appliedFloor` > 0 the change is refused
   * (ConfChangeUnsafeError) unless the voters of the membership after it
   * that have applied that index (the leader's driver's stateApplied, the
   * others' last heartbeat answers) make a quorum of it. An entry's log
   * record reaches a new configuration by itself (the change commits on a
   * quorum of it holding the log up to it); what the driver applies from
   * outside the log (a restore's archive, held by a quorum of the voters when
   * it was proposed) reaches it only through members that hold it. Without
   * the floor, a learner promoted before it applied a restore and a holder
   * removed after left no quorum able to apply the restore entry (simulator
   * seeds 717880, 843202, 844972). Then, refused (ConfChangeUnreachableError)
   * when the voters after it that this leader heard from within an election
   * timeout make no quorum of them (checkReachableQuorum).
   */
  proposeConfChange(cc: ConfChange, appliedFloor = 0, prove?: ConfChangeProver): LogPosition {
    if (this.role !== 'leader') throw new NotLeaderError(this.lead);
    if (this.pendingConfIndex > this.log.committed) {
      throw new MembershipChangeError('another membership change is not committed yet');
    }
    if (!this.committedInTerm()) {
      // dissertation §4.1 (bug fix of 2015): a new leader first commits an entry of its term.
      throw new MembershipChangeError('the leader has not committed an entry in its term yet');
    }
    validateConfChange(this.membership, cc);
    const next = applyConfChange(this.membership, cc);
    // A learner's arrival or departure leaves the voters, and so who holds the floor among them, as they were.
    if (appliedFloor > 0 && !sameVoters(next, this.membership)) {
      const holders = next.voters.filter((v) => (v === this.id ? this.stateAppliedIndex : (this.prs.get(v)?.applied ?? 0)) >= appliedFloor);
      if (holders.length < quorum(next)) {
        // A node that is no member yet reports nothing: it joins as a learner, which answers heartbeats, first.
        const newcomer = cc.op === 'addVoter' && !isMember(this.membership, cc.nodeId) ? `; add ${cc.nodeId} as a learner first and promote it once it has caught up` : '';
        // Members that never reported (a build before the reports, or not heard since this leader took office) will
        // not move by waiting alone: name them, so an operator of a rolling upgrade knows whom to upgrade first.
        const silent = next.voters.filter((v) => v !== this.id && isMember(this.membership, v) && (this.prs.get(v)?.applied ?? 0) === 0);
        const unreported =
          silent.length === 0
            ? ''
            : `; ${silent.join(', ')} ${silent.length === 1 ? 'has' : 'have'} reported no applied index to this leader (a member of a build before these reports never does; upgrade it first)`;
        throw new ConfChangeUnsafeError(
          `${cc.op} ${cc.nodeId}: of the voters after it, ${holders.length === 0 ? 'none has' : `only ${holders.join(', ')} ${holders.length === 1 ? 'has' : 'have'}`} applied ` +
            `entry ${appliedFloor} (a restore, whose archive lives outside the log), fewer than their quorum of ${quorum(next)}; retry once more members have applied it${unreported}${newcomer}`,
        );
      }
    }
    if (!sameVoters(next, this.membership)) this.checkReachableQuorum(cc, next);
    const proof = prove?.({ index: this.log.lastIndex() + 1, term: this.term }, next) ?? null;
    const pos = this.appendAsLeader('conf', encodeConfChange(proof === null ? cc : { ...cc, proof }));
    this.pendingConfIndex = pos.index;
    this.pendingConfAttest = false;
    return pos;
  }

  /**
   * proposeAttestation appends, as the leader, an `attest` entry: a `conf`
   * entry that changes no member and carries `prove`'s proof (the driver's
   * signed commit statement of a configuration entry this leader holds
   * committed; src/node/membership-proofs.ts), which joins Membership.proofs
   * from there on like a change's. It waits like a change: none while another
   * is not committed, nor before this term's first entry commits; null then,
   * and when this node does not lead, `prove` returns null, or the proposal
   * is dropped (a transfer, too much uncommitted). Never throws.
   */
  proposeAttestation(prove: () => string | null): LogPosition | null {
    if (this.role !== 'leader' || this.pendingConfIndex > this.log.committed || !this.committedInTerm()) return null;
    const proof = prove();
    if (proof === null) return null;
    let pos: LogPosition;
    try {
      pos = this.appendAsLeader('conf', encodeConfChange({ op: 'attest', nodeId: this.id, proof }));
    } catch {
      return null;
    }
    this.pendingConfIndex = pos.index;
    this.pendingConfAttest = true;
    return pos;
  }

  /** attestationPending: this leader's attest entry (proposeAttestation) is not committed yet (a change proposed now is refused until it is). */
  attestationPending(): boolean {
    return this.role === 'leader' && this.pendingConfAttest && this.pendingConfIndex > this.log.committed;
  }

  /**
   * checkReachableQuorum: strict reconfiguration (etcd's isReadyForRemoveMember /
   * isReadyForAddMember, here in the core, on the leader's own progress): the
   * voters of `next` that this leader heard from within the last
   * CONF_CHANGE_HEARD_ELECTION_TIMEOUTS election timeouts (itself, when it
   * is one of them) must make a quorum of `next`.
   * A configuration is in force from its append (dissertation §4.1), so the
   * change commits only on a quorum of `next`: without one reachable it
   * could not commit, the leader would step down at its next quorum check
   * (§6.2), no leader could be elected until the missing voters came back,
   * and the change was then likely lost (joinlive23: `cluster remove n2`
   * with n3 down left {n3, n4}). Throws ConfChangeUnreachableError naming
   * those voters; nothing is proposed. No override: a change refused here
   * cannot commit before they answer again, and once they do it is taken.
   * The leader counts itself only if it stays a voter (removing itself, the
   * others must make the quorum); a voter added directly (no learner first)
   * has never answered it, so it counts as unreachable, as etcd counts a new
   * member; a learner being promoted counts if it answered recently. A
   * voter this leader has not had that long to hear from (its Progress is
   * younger: it just took office) counts as unreachable too, but the error
   * says `undecided` when counting those would make the quorum: the driver
   * tries again until it is decided.
   */
  private checkReachableQuorum(cc: ConfChange, next: Membership): void {
    // A voter that answers but must install a snapshot before it can hold the next entry (a learner still fetching
    // its first one) cannot acknowledge the change either: counted, it would hold the change, and every write after
    // it, until that install ends (etcd refuses to promote a learner not in sync: isLearnerReady).
    const needsSnapshot = next.voters.filter((v) => {
      const pr = v === this.id ? undefined : this.prs.get(v);
      return pr !== undefined && this.heardRecently(v) && (pr.state === 'snapshot' || pr.next < this.log.firstIndex());
    });
    const reachable = next.voters.filter((v) => v === this.id || (this.heardRecently(v) && !needsSnapshot.includes(v)));
    const need = quorum(next);
    if (reachable.length >= need) return;
    const unreachable = next.voters.filter((v) => !reachable.includes(v));
    const silent = unreachable.filter((v) => !needsSnapshot.includes(v));
    // Not heard yet from a Progress younger than the window (ticksSinceHeard counts from its making): no evidence
    // either way; a leader just elected has heard only from those that answered its first append so far.
    const young = unreachable.filter((v) => {
      const pr = this.prs.get(v);
      return pr !== undefined && !pr.heard && pr.ticksSinceHeard < this.heardWindowTicks();
    });
    const list = (ids: readonly NodeId[]): string => ids.join(', ');
    const what = cc.op === 'removeNode' ? `remove ${cc.nodeId}` : cc.op === 'addVoter' && isMember(this.membership, cc.nodeId) ? `promote ${cc.nodeId}` : `add ${cc.nodeId} as a voter`;
    const newcomer = cc.op === 'addVoter' && !isMember(this.membership, cc.nodeId) ? `; or add ${cc.nodeId} as a learner first and promote it once it answers` : '';
    const back = silent.filter((v) => v !== cc.nodeId);
    const waitFor = unreachable.filter((v) => !back.includes(v));
    const caughtUp = needsSnapshot.length === 0 ? '' : `${list(needsSnapshot)} ${needsSnapshot.length === 1 ? 'has' : 'have'} installed ${needsSnapshot.length === 1 ? 'its snapshot' : 'their snapshots'}`;
    const remedy =
      back.length > 0
        ? `start ${list(back)} again (or remove ${back.length === 1 ? 'it' : 'them'} first, one at a time), then retry${caughtUp === '' ? '' : ` once ${caughtUp}`}${newcomer}`
        : caughtUp !== '' && waitFor.every((v) => needsSnapshot.includes(v))
          ? `retry once ${caughtUp}`
          : `retry once ${list(waitFor)} ${waitFor.length === 1 ? 'answers' : 'answer'}${newcomer}`;
    const lagging = needsSnapshot.length === 0 ? '' : `${list(needsSnapshot)} ${needsSnapshot.length === 1 ? 'needs a snapshot' : 'need snapshots'} before ${needsSnapshot.length === 1 ? 'it' : 'they'} can hold a new entry`;
    const why = silent.length === 0 ? lagging : `has not heard from ${list(silent)} within the last ${CONF_CHANGE_HEARD_ELECTION_TIMEOUTS} election timeouts${lagging === '' ? '' : `, and ${lagging}`}`;
    throw new ConfChangeUnreachableError(
      `${what} refused: the leader ${this.id} ${silent.length === 0 ? `finds ${why}` : why}; ` +
        `the voters after it (${list(next.voters)}) would have ${reachable.length} reachable, fewer than their quorum of ${need}, ` +
        (silent.length === 0
          ? `so the change, and every write after it, would wait for that install. Nothing changed: ${remedy}`
          : `so the change could not commit and the cluster would have no leader until ${unreachable.length === 1 ? 'it is' : 'they are'} back. Nothing changed: ${remedy}`),
      unreachable,
      reachable.length + young.length >= need,
    );
  }

  /** heardRecently (leader): `id` answered this leader within the last heardWindowTicks(). */
  private heardRecently(id: NodeId): boolean {
    const pr = this.prs.get(id);
    return pr !== undefined && pr.heard && pr.ticksSinceHeard < this.heardWindowTicks();
  }

  /** heardWindowTicks: CONF_CHANGE_HEARD_ELECTION_TIMEOUTS election timeouts, in ticks (checkReachableQuorum). */
  private heardWindowTicks(): number {
    return CONF_CHANGE_HEARD_ELECTION_TIMEOUTS * this.cfg.electionTimeoutTicks;
  }

  /** transferLeadership hands leadership to a caught-up voter with TimeoutNow (dissertation §3.10). */
  transferLeadership(to: NodeId): void {
    if (this.role !== 'leader') throw new NotLeaderError(this.lead);
    if (to === this.id) return;
    if (!isVoter(this.membership, to)) throw new MembershipChangeError(`${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    this.electionElapsed = 0;
    const pr = this.prs.get(to);
    if (pr !== undefined && pr.match === this.log.lastIndex()) this.send(to, { type: 'timeoutNow' });
    else this.sendAppend(to, true);
  }

  /**
   * readIndex asks for a linearizable read point (dissertation §6.4). The
   * answer arrives in a later Ready: a ReadState (serve the read once applied
   * reaches its index) or a ReadFailure.
   */
  readIndex(context: string): void {
    if (this.role === 'leader') {
      this.handleReadIndexRequest(context, this.id);
    } else if (this.lead === NO_NODE) {
      this.readFailures.push({ context, reason: 'no leader is known' });
    } else {
      this.send(this.lead, { type: 'readIndex', context });
    }
  }

  /** step handles one message from a peer. */
  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.type === 'timeoutNow' && m.term !== this.term) {
      // A TimeoutNow comes from the leader this follower follows, in its term (dissertation §3.10: it sends one only to
      // a voter that acknowledged its whole log in that term). One of another term comes from no such leader; taken,
      // one from a later term moved this node's term (and so deposed a healthy leader) before stepFollower could refuse it.
      return;
    }
    if (this.nonVoterClaimTooSoon(m) || this.nonVoterAnswerAhead(m)) return;
    if (m.term > this.term) {
      if (m.type === 'vote' && !m.transfer && this.inLeaderLease()) {
        // dissertation §4.2.3: while we hear from a leader, disruptive candidates are ignored.
        return;
      }
      if (m.type === 'vote' && m.preVote) {
        // A pre-vote does not change our term.
      } else if (m.type === 'voteResp' && m.preVote && m.granted) {
        // Granted pre-votes carry the future term of our pre-candidacy.
      } else if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NO_NODE);
      }
    } else if (m.term < this.term) {
      if (m.type === 'append' || m.type === 'heartbeat') {
        // A stale leader learns our term and steps down (needed with CheckQuorum and PreVote,
        // since we will not answer its pre-votes).
        this.send(m.from, { type: 'heartbeatResp', readSeq: 0, installingIndex: 0 });
      } else if (m.type === 'vote' && m.preVote) {
        this.send(m.from, { type: 'voteResp', preVote: true, granted: false });
      }
      return;
    }

    if (m.type === 'vote') {
      this.handleVote(m);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        return;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        return;
      case 'follower':
        this.stepFollower(m);
        return;
    }
  }

  /**
   * raiseTermFor takes of `m`, a message whose term is too far ahead for its
   * receiver to step it (the driver's bound), only a term: this node moves to
   * `term` (at most m.term), as stepping m would have moved it to m.term, and
   * steps nothing else of m. Not for what would move no term: a pre-vote, a
   * granted pre-vote answer, a TimeoutNow, a campaign while this node hears
   * from its leader (dissertation §4.2.3). A member moved ahead of the others
   * by more than the bound (each move within it) is so caught up with, a
   * bounded step at a time, instead of parting the members for good (the
   * driver calls it for answers only).
   */
  raiseTermFor(m: Message, term: number): void {
    if (m.to !== this.id || !Number.isSafeInteger(term) || term <= this.term || term > m.term) return;
    if (m.type === 'timeoutNow' || this.nonVoterAnswerAhead(m)) return;
    if (m.type === 'vote' && (m.preVote || (!m.transfer && this.inLeaderLease()))) return;
    if (m.type === 'voteResp' && m.preVote && m.granted) return;
    this.becomeFollower(term, NO_NODE);
  }

  /**
   * stepForReplies steps m and takes out the answers it produced for m.from
   * (voteResp, appendResp, heartbeatResp, snapshotResp, readIndexResp), so a
   * transport can return them as the RPC's response. They depend on state the
   * next Ready persists: the driver must send them only after that Ready's
   * persistence completes. Answers produced later (a snapshot installed, a
   * read confirmed) leave through Ready.messages as usual.
   */
  stepForReplies(m: Message): Message[] {
    const mark = this.msgs.length;
    this.step(m);
    const replies: Message[] = [];
    const rest: Message[] = [];
    for (let i = mark; i < this.msgs.length; i++) {
      const out = this.msgs[i] as Message;
      if (out.to === m.from && REPLY_TYPES.has(out.type)) replies.push(out);
      else rest.push(out);
    }
    this.msgs.length = mark;
    for (const out of rest) this.msgs.push(out);
    return replies;
  }

  // ---------------------------------------------------------------- Ready

  hasReady(): boolean {
    if (this.readyOutstanding) return false;
    return (
      this.appendPending ||
      this.msgs.length > 0 ||
      this.readRoundWanted ||
      this.readStates.length > 0 ||
      this.readFailures.length > 0 ||
      this.snapshotToFetch !== null ||
      this.logResetPending !== null ||
      this.log.stableIndex < this.log.lastIndex() ||
      (this.restoring === null && this.log.committed > this.log.applied) ||
      !sameHardState(this.hardStateToPersist(), this.prevHardState) ||
      !sameSoftState(this.softState(), this.prevSoftState)
    );
  }

  /** ready returns the work for the driver (see Ready in types.ts). Call advance() before the next ready(). */
  ready(): Ready {
    if (this.readyOutstanding) throw new Error('RaftNode: ready() called again before advance()');
    if (this.appendPending) {
      this.appendPending = false;
      if (this.role === 'leader') this.bcastAppend();
    }
    if (this.readRoundWanted) {
      this.readRoundWanted = false;
      this.readSeq++;
      this.bcastHeartbeat();
      this.maybeResolveReads();
    }
    const hs = this.hardStateToPersist();
    const ss = this.softState();
    const committedEntries = this.restoring === null ? this.log.nextToApply(this.cfg.maxApplyBytes) : [];
    // Handed over now (applied counts what the driver was given to apply): takeCommitted never gives them again.
    const lastCommitted = committedEntries[committedEntries.length - 1];
    if (lastCommitted !== undefined) this.log.appliedTo(lastCommitted.index);
    const rd: Ready = {
      logReset: this.logResetPending,
      softState: sameSoftState(ss, this.prevSoftState) ? null : ss,
      hardState: sameHardState(hs, this.prevHardState) ? null : hs,
      entries: this.log.unstable(),
      snapshot: this.snapshotToFetch,
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
      readFailures: this.readFailures,
    };
    this.msgs = [];
    this.readStates = [];
    this.readFailures = [];
    this.snapshotToFetch = null;
    this.logResetPending = null;
    if (rd.softState !== null) this.prevSoftState = rd.softState;
    this.readyOutstanding = true;
    return rd;
  }

  /**
   * takeAppends: while a Ready is outstanding (its save in flight), a
   * leader's appends that need not wait for the next Ready: the ones stepping
   * its followers' answers produced (the next entries for a follower that
   * just acknowledged), and the entries proposed since the Ready for each
   * follower with nothing in flight (a busy follower gets them when it
   * answers, or with the next Ready). A leader's appends never depend on its
   * own unsaved entries (it counts itself only once they are persisted, in
   * advance()), but they carry its term: the driver calls this only once
   * its term and vote are durable. Its heartbeats are taken too: they carry
   * its term and a commit index that a quorum already persisted, nothing of
   * this Ready (etcd sends all of a leader's messages before its save);
   * held for the save, a save waiting on a saturated disk (a restore's
   * install beside it) held every heartbeat, and both followers campaigned
   * with every event loop responsive. [] for a non-leader; other messages
   * stay for the next Ready.
   */
  takeAppends(): Message[] {
    if (this.role !== 'leader') return [];
    if (this.appendPending) {
      let busy = false;
      for (const [id, pr] of this.prs) {
        if (id === this.id) continue;
        if (pr.match >= pr.next - 1) this.sendAppend(id, false);
        else busy = true;
      }
      this.appendPending = busy;
    }
    const appends: Message[] = [];
    const rest: Message[] = [];
    for (const m of this.msgs) (m.type === 'append' || m.type === 'heartbeat' ? appends : rest).push(m);
    this.msgs = rest;
    return appends;
  }

  /**
   * takeCommitted: while a Ready is outstanding, the committed entries that
   * no Ready carried yet and that are already persisted here (index <= the
   * stable index), for the driver to apply now rather than after the save
   * in flight; they count as handed over (applied moves past them) and no
   * later Ready carries them. [] while a snapshot installs.
   */
  takeCommitted(): Entry[] {
    if (this.restoring !== null || this.log.committed <= this.log.applied) return [];
    const upTo = Math.min(this.log.committed, this.log.stableIndex);
    const lo = Math.max(this.log.applied + 1, this.log.firstIndex());
    if (lo > upTo) return [];
    const entries = this.log.slice(lo, upTo + 1, this.cfg.maxApplyBytes);
    const last = entries[entries.length - 1];
    if (last !== undefined) this.log.appliedTo(last.index);
    return entries;
  }

  /** advance tells the core the driver has done everything rd asked. */
  advance(rd: Ready): void {
    this.readyOutstanding = false;
    if (rd.hardState !== null) this.prevHardState = rd.hardState;
    const last = rd.entries[rd.entries.length - 1];
    if (last !== undefined) {
      this.log.stableTo(last);
      if (this.role === 'leader') {
        const self = this.prs.get(this.id);
        if (self !== undefined && self.maybeUpdate(this.log.stableIndex) && this.maybeCommit()) this.bcastAppend();
      }
    }
    const applied = rd.committedEntries[rd.committedEntries.length - 1];
    if (applied !== undefined) this.log.appliedTo(applied.index);
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * restoreSnapshot: the driver fetched and verified the snapshot named by
   * Ready.snapshot and installs it in one step (beginInstall, then
   * snapshotInstalled). Returns true when the driver must now replace its
   * state machine with it (applied = meta.index); false when it is no longer
   * needed. Either way the leader is told the outcome.
   */
  restoreSnapshot(meta: SnapshotMeta): boolean {
    if (!this.beginInstall(meta)) return false;
    this.snapshotInstalled(meta);
    return true;
  }

  /**
   * beginInstall: the driver fetched and verified the snapshot named by
   * Ready.snapshot. Returns true when the driver must now replace its state
   * machine with it (applied = meta.index) and then call snapshotInstalled;
   * until then the core still reports the install in progress (heartbeat and
   * append answers carry its index, so the leader keeps the entries after it)
   * and hands out no committed entry to apply. Returns false when the
   * snapshot is no longer needed (the leader is told at once).
   */
  beginInstall(meta: SnapshotMeta): boolean {
    // A follower whose install failed takes any snapshot at or after the one its log was reset to:
    // its state machine has no base until then, whatever its commit index says.
    const rebase = this.restoring !== null && meta.index >= this.restoring.index;
    if (meta.index <= this.log.committed && !rebase) {
      if (this.installing !== null && this.installing.index <= meta.index) this.installing = null;
      if (this.lead !== NO_NODE) this.send(this.lead, { type: 'snapshotResp', index: this.log.committed, reject: false });
      return false;
    }
    if (this.log.matchTerm(meta.index, meta.term)) {
      // Raft §7: the log already holds the snapshot's last entry; keep what follows.
      this.log.commitTo(meta.index);
    } else {
      this.log.reset({ index: meta.index, term: meta.term });
      this.logResetPending = { index: meta.index, term: meta.term };
      this.baseMembership = meta.membership;
      this.baseMembershipIndex = meta.index;
      this.rebuildConfPoints();
    }
    this.log.appliedTo(meta.index);
    this.noteSnapshot(meta);
    if (this.installing === null || this.installing.index < meta.index) this.installing = meta;
    this.restoring = meta;
    return true;
  }

  /**
   * snapshotInstalled: the state machine now holds the snapshot beginInstall
   * accepted. The install is over: the leader (the current one, whoever it
   * is now) is told, and committed entries after it are handed out again.
   */
  snapshotInstalled(meta: SnapshotMeta): void {
    if (this.restoring === null || this.restoring.index !== meta.index) {
      throw new Error(`RaftNode: snapshotInstalled(${meta.index}) without beginInstall of it`);
    }
    this.restoring = null;
    if (this.installing !== null && this.installing.index <= meta.index) this.installing = null;
    if (this.lead !== NO_NODE) this.send(this.lead, { type: 'snapshotResp', index: meta.index, reject: false });
  }

  /**
   * installFailed: the snapshot beginInstall accepted could not be installed
   * (its bytes were refused), and the member that offered it may be gone for
   * good: asking again is the leader's business, not a refetch of those
   * bytes. The log
   * was already reset to it, so no entry is handed out until a snapshot at or
   * after it is installed: the install ends here (the leader is told, and its
   * guard ends), and the follower asks its leader for its newest snapshot in
   * each heartbeat answer (needsSnapshot), taking any offer at or after
   * `meta` (beginInstall accepts it though its commit index is past it).
   * Until then it votes and appends as any follower, but stands for no
   * election: it has no state to lead with.
   */
  installFailed(meta: SnapshotMeta): void {
    if (this.restoring === null || this.restoring.index !== meta.index) {
      throw new Error(`RaftNode: installFailed(${meta.index}) without beginInstall of it`);
    }
    this.installing = null;
    if (this.lead !== NO_NODE) this.send(this.lead, { type: 'snapshotResp', index: meta.index, reject: true });
  }

  /**
   * stateApplied: the driver's state machine has applied up to `index` (its
   * apply of a handed-out entry, a snapshot installed). Heartbeat answers
   * carry it to the leader, whose membership changes may wait for it
   * (proposeConfChange's appliedFloor). Never moves back.
   */
  stateApplied(index: number): void {
    if (index > this.stateAppliedIndex) this.stateAppliedIndex = index;
  }

  /**
   * applyBlocked: the driver cannot apply committed entry `index`, which it
   * was handed, from this log (a restore entry whose archive no member holds
   * any more: the members that applied it compacted their logs past it and
   * dropped the upload). Only a snapshot at or after it gives the state
   * machine a way on, as after a failed install: no entry is handed out
   * until one is installed, the follower asks its leader for one in each
   * heartbeat answer (needsSnapshot) and takes any offer at or after `index`.
   * It still stands for election: its log may be the one a quorum needs
   * (simulator seed 212164: the blocked member held the longest log, the
   * other live one could not win without its vote, and a blocked member that
   * never campaigned left the cluster without a leader for good). As leader
   * it takes no proposal and hands leadership over (handOff) to a voter
   * whose state machine has a base, which then offers it a snapshot. The
   * entries handed out after `index` stay the driver's: it skips those the
   * snapshot covers. Idempotent; an index the state machine already needs a
   * snapshot for or past changes nothing.
   */
  applyBlocked(index: number): void {
    if (this.restoring !== null && this.restoring.index >= index) return;
    if (index > this.log.applied || index <= this.snapshot.index) {
      throw new Error(`RaftNode: applyBlocked(${index}) outside the handed-out entries (${this.snapshot.index}, ${this.log.applied}]`);
    }
    this.restoring = { index, term: this.log.term(index) ?? 0, membership: this.membershipAt(index), sizeBytes: 0, digest: '' };
    if (this.role === 'leader') this.handOff();
  }

  /**
   * handOff (leader whose state machine cannot apply: applyBlocked, a failed
   * install; or whose snapshot is lost, rebuilding it failed and a follower
   * needs one: snapshotRebuildFailed): starts a leadership transfer to the
   * voter that answered within an election timeout, said in a heartbeat
   * answer of this term that it needs no snapshot itself (a blocked one
   * would hand leadership back), and has the most of the log (the transfer
   * brings it up to date, then TimeoutNow). For a lost snapshot the voter
   * must also have said it holds one it can offer, and not need one from
   * this leader: one that cannot offer one either would lead no better (and
   * a node whose snapshot is lost stands for no election). None yet: the
   * next heartbeat interval tries again (tickHeartbeat); a transfer that does
   * not finish is abandoned after an election timeout and tried again.
   */
  private handOff(): void {
    if (this.role !== 'leader' || this.leadTransferee !== NO_NODE) return;
    const blocked = this.restoring !== null;
    if (!blocked && !(this.baseLost && this.rebuildFailed && this.snapshotStranded().length > 0)) return;
    let best: NodeId = NO_NODE;
    let bestMatch = -1;
    for (const id of this.membership.voters) {
      const pr = this.prs.get(id);
      if (id === this.id || pr === undefined || pr.needsBase !== 0 || pr.ticksSinceHeard >= this.cfg.electionTimeoutTicks || pr.state === 'snapshot') continue;
      if (!blocked && (pr.snapshotIndex === 0 || this.needsSnapshotFromLeader(id, pr))) continue;
      if (pr.match > bestMatch) {
        best = id;
        bestMatch = pr.match;
      }
    }
    if (best === NO_NODE) return;
    if (!blocked) this.snapshotHandOff = { count: this.snapshotHandOff.count + 1, to: best, stranded: this.snapshotStranded() };
    this.transferLeadership(best);
  }

  /**
   * snapshotStranded (leader whose snapshot is lost): the members heard from
   * within an election timeout that need a snapshot from it (see
   * needsSnapshotFromLeader) and are not fetching one; empty when this node
   * is not leader or can offer a snapshot.
   */
  private snapshotStranded(): NodeId[] {
    if (this.role !== 'leader' || !this.baseLost) return [];
    const stranded: NodeId[] = [];
    for (const [id, pr] of this.prs) {
      if (id === this.id || pr.state === 'snapshot' || pr.ticksSinceHeard >= this.cfg.electionTimeoutTicks) continue;
      if (this.needsSnapshotFromLeader(id, pr)) stranded.push(id);
    }
    return stranded;
  }

  /**
   * needsSnapshotFromLeader (leader): member `id` can be brought up to date
   * only by a snapshot: its state machine has no base (needsBase), or the
   * entries it lacks next were compacted away, or it joined after the log
   * began (see sendAppend).
   */
  private needsSnapshotFromLeader(id: NodeId, pr: Progress): boolean {
    if (pr.needsBase > 0 || pr.next < this.log.firstIndex() || this.log.term(pr.next - 1) === undefined) return true;
    return pr.next === 1 && this.cfg.joinBySnapshot && !isMember(this.baseMembership, id);
  }

  /**
   * snapshotWanted (leader): the index a snapshot must reach for a follower
   * that lost its base (see installFailed) or joined after the log began (see
   * sendAppend), when this leader's newest is older; 0 when none is wanted. The driver takes a snapshot once it has
   * applied that far, and offers it at the follower's next heartbeat answer.
   */
  snapshotWanted(): number {
    return this.snapshotWantedIndex > this.snapshot.index ? this.snapshotWantedIndex : 0;
  }

  /** needsSnapshot: the index a snapshot must reach to give this follower's state machine a base again (0: none needed). */
  private needsSnapshot(): number {
    return this.restoring !== null && this.installing === null ? this.restoring.index : 0;
  }

  /** snapshotFailed: fetching the snapshot named by Ready.snapshot failed; the leader will retry. */
  snapshotFailed(meta: SnapshotMeta): void {
    if (this.installing?.index === meta.index) this.installing = null;
    if (this.lead !== NO_NODE) this.send(this.lead, { type: 'snapshotResp', index: meta.index, reject: true });
  }

  /** setSnapshot: the driver holds a snapshot of its state machine at meta.index (<= applied). */
  setSnapshot(meta: SnapshotMeta): void {
    if (meta.index > this.log.applied) {
      throw new Error(`RaftNode: snapshot ${meta.index} is beyond applied ${this.log.applied}`);
    }
    this.noteSnapshot(meta);
  }

  /**
   * snapshotLost: the driver's snapshot `meta` was found damaged on its disk
   * and moved out of its store (a scrub, a reader's chunk check). When it is
   * the one this core offers, it is offered to no follower from now on (a
   * fetch of it could only fail: NOT_FOUND, offered again, for as long as no
   * newer one is taken), and the node stands for no election, as with a base
   * lost at boot (RaftBootState.lostBase), until the driver holds a snapshot
   * again: setSnapshot of one at or after its index, which the driver builds
   * at once from its state machine (at or past that index). Any other
   * snapshot: nothing changes. Returns whether it was this core's.
   */
  snapshotLost(meta: SnapshotMeta): boolean {
    if (this.snapshot.index === 0 || meta.index !== this.snapshot.index || meta.digest !== this.snapshot.digest) return false;
    this.baseLost = true;
    this.rebuildFailed = false; // the driver builds one now
    return true;
  }

  /**
   * snapshotRebuildFailed: the driver tried to build a snapshot to replace
   * the lost one (snapshotLost, RaftBootState.lostBase) and failed (a full
   * disk, EIO); it retries on its own schedule. Meanwhile a leader that has a
   * follower needing a snapshot hands leadership over at once (handOff) to a
   * caught-up voter that said it holds a snapshot, which offers its own;
   * with no such voter it stays leader (status().snapshotStranded names the
   * followers that wait), trying again every heartbeat interval. Nothing
   * happens when this node's snapshot is not lost (a plain snapshot failure).
   */
  snapshotRebuildFailed(): void {
    if (!this.baseLost) return;
    this.rebuildFailed = true;
    this.handOff();
  }

  /** noteSnapshot: meta is held (taken or installed); it becomes the one offered when newer (or it replaces a lost base). */
  private noteSnapshot(meta: SnapshotMeta): void {
    if (meta.index > this.snapshot.index || (this.baseLost && meta.index === this.snapshot.index)) {
      this.snapshot = meta;
      this.baseLost = false;
      this.rebuildFailed = false;
    }
  }

  /**
   * compact drops in-memory entries up to index, which must be covered by the
   * newest snapshot. Returns the new log base for the driver to persist.
   */
  compact(index: number): LogPosition {
    if (index > this.snapshot.index) {
      throw new Error(`RaftNode: cannot compact to ${index}, beyond the newest snapshot ${this.snapshot.index}`);
    }
    return this.log.compact(index);
  }

  /**
   * compactionFloor returns the highest index that may be compacted without
   * stranding a follower that is installing a snapshot: it will need the
   * entries right after that snapshot (Typesense #2859, etcd #5317).
   */
  compactionFloor(): number {
    let floor = this.log.applied;
    if (this.role === 'leader') {
      const peers = this.peersInstallFloor();
      if (peers > 0) floor = Math.min(floor, peers);
      // A new leader, until its followers have said whether they install: as far as it kept as a follower.
      if (this.heardFloorTicksLeft > 0) floor = Math.min(floor, this.heardSnapshotIndex);
    }
    // A follower (or a new leader) keeps what the leader keeps for an installing peer: it may lead next.
    if (this.leaderInstallFloor > 0) floor = Math.min(floor, this.leaderInstallFloor);
    // A follower keeps the entries after the snapshot its leader would offer (none heard yet: it keeps all).
    if (this.role !== 'leader') floor = Math.min(floor, this.leaderSnapshotIndex);
    return floor;
  }

  /**
   * snapshotsInUse (leader): the indexes of the snapshots followers were
   * offered and have not answered, or say they are fetching or installing,
   * lowest first; empty on a follower. The driver keeps these snapshots on
   * disk (retention must not remove one while a follower pulls it), and the
   * set is bounded by the peers: an offer nobody confirms ends after two
   * election timeouts, a guard after snapshotGuardTicksMax.
   */
  snapshotsInUse(): number[] {
    if (this.role !== 'leader') return [];
    const inUse = new Set<number>();
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      if (pr.state === 'snapshot' && pr.pendingSnapshot > 0) inUse.add(pr.pendingSnapshot);
      if (pr.installGuard > 0) inUse.add(pr.installGuard);
    }
    return [...inUse].sort((a, b) => a - b);
  }

  /** peersInstallFloor (leader): the lowest snapshot index a follower installs, or was offered and has not answered; 0 when none. */
  private peersInstallFloor(): number {
    let floor = Infinity;
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      if (pr.state === 'snapshot') floor = Math.min(floor, pr.pendingSnapshot);
      if (pr.installGuard > 0) floor = Math.min(floor, pr.installGuard);
    }
    return floor === Infinity ? 0 : floor;
  }

  /** membershipAt returns the membership as of index (index >= the newest snapshot's index). */
  membershipAt(index: number): Membership {
    let m = this.baseMembership;
    for (const p of this.confPoints) {
      if (p.index > index) break;
      m = p.membership;
    }
    return m;
  }

  // ---------------------------------------------------------------- queries

  /** brief: term, vote, role, leader, commit, applied, first and snapshot index, membership, without status()'s per-peer progress copies. */
  brief(): RaftBrief {
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      role: this.role,
      leader: this.lead,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      snapshotIndex: this.snapshot.index,
      membership: this.membership,
    };
  }

  /**
   * membershipIndex: the index of the entry (or snapshot) the newest configuration (brief().membership) comes
   * from (an attest entry after it changed no member: not it); 0 for the bootstrap's, which no entry made. Cheap.
   */
  membershipIndex(): number {
    // An attest entry changes no member: the configuration comes from the change before it.
    for (let i = this.confPoints.length - 1; i >= 0; i--) {
      const p = this.confPoints[i] as ConfPoint;
      if (p.attest !== true) return p.index;
    }
    return this.baseMembershipIndex;
  }

  /** transferee: the voter this leader is handing leadership to (transferLeadership, handOff), NO_NODE when none; cheap. */
  transferee(): NodeId {
    return this.leadTransferee;
  }

  /** installingIndex: the snapshot this member is fetching or installing (Status.installingSnapshot), 0 for none; cheap. */
  installingIndex(): number {
    return this.installing?.index ?? 0;
  }

  status(): RaftStatus {
    const progress: Record<NodeId, ProgressStatus> = {};
    if (this.role === 'leader') {
      for (const [id, pr] of this.prs) {
        progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          inflight: pr.inflightCount(),
          pendingSnapshot: pr.pendingSnapshot,
          installGuard: pr.installGuard,
          applied: pr.applied,
        };
      }
    }
    return {
      ...this.brief(),
      lastIndex: this.log.lastIndex(),
      progress,
      leadTransferee: this.leadTransferee,
      snapshotStranded: this.snapshotStranded(),
      snapshotLost: this.baseLost,
      snapshotRebuildFailed: this.rebuildFailed,
      snapshotHandOff: this.snapshotHandOff,
      installingSnapshot: this.installing?.index ?? 0,
      compactionFloor: this.compactionFloor(),
    };
  }

  /** logTerm returns the term of the entry at index, undefined when compacted or absent. */
  logTerm(index: number): number | undefined {
    return this.log.term(index);
  }

  // ---------------------------------------------------------------- roles

  protected becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.role = 'follower';
    this.lead = lead;
  }

  private becomePreCandidate(): void {
    // A pre-candidate changes neither term nor vote (dissertation §9.6).
    this.failPendingReads('leadership lost');
    this.role = 'preCandidate';
    this.lead = NO_NODE;
    this.votes = new Map();
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
  }

  private becomeCandidate(): void {
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    this.reset(this.term);
    this.countedAsVoter = false;
    this.role = 'leader';
    this.lead = this.id;
    this.campaignsSinceLeader = 0;
    this.syncProgress();
    const self = this.prs.get(this.id);
    if (self !== undefined) {
      self.maybeUpdate(this.log.stableIndex);
      self.becomeReplicate();
    }
    // Conservatively, no membership change until this term's first entry commits.
    this.pendingConfIndex = this.log.lastIndex();
    this.pendingConfAttest = false;
    // The previous leader's install floor stays until every follower has said whether it installs (noteInstalling;
    // the guard of the one that does takes over), at most snapshotGuardTicksMax: a fixed two election timeouts let a
    // new leader compact what an installing follower needed when its answers came late on a loaded machine.
    this.inheritedFloorTicksLeft = this.leaderInstallFloor > 0 ? this.cfg.snapshotGuardTicksMax : 0;
    // And the floor it kept as a follower (the snapshot its leader would offer), until every follower has answered,
    // at most two election timeouts: an offer that no heartbeat announced (see heardSnapshotIndex).
    this.heardFloorTicksLeft = this.heardSnapshotIndex > 0 ? 2 * this.cfg.electionTimeoutTicks : 0;
    // Raft §5.4.2 / §8: commit an entry of the new term (a no-op) to learn what is committed.
    const noop: Entry = { index: this.log.lastIndex() + 1, term: this.term, type: 'normal', data: new Uint8Array(0) };
    this.appendEntries([noop]);
    this.bcastAppend();
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NO_NODE;
    }
    this.lead = NO_NODE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.votes = new Map();
    this.leadTransferee = NO_NODE;
    this.uncommittedBytes = 0;
    this.leaderSnapshotIndex = 0; // announced again by this term's leader
    this.prs.clear();
    this.failPendingReads('leadership lost');
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.cfg.electionTimeoutTicks + this.cfg.rng.nextInt(this.cfg.electionTimeoutTicks);
  }

  /**
   * promotable: a voter that is not fetching or installing a snapshot, with
   * a base. One whose state machine waits for a snapshot (restoring) still
   * campaigns, and as leader hands over at once (handOff; see applyBlocked).
   */
  private promotable(): boolean {
    return (
      (isVoter(this.membership, this.id) || this.removalUncommitted() || this.countedAsVoter) &&
      this.installing === null &&
      !this.baseLost
    );
  }

  /**
   * removalUncommitted: the latest configuration in this node's log removes
   * it, but the configuration as of its commit index still counts it a voter:
   * its removal is not known to be committed. It may hold the longest log
   * (the removal reached few members, and those may be gone), so no other
   * member can win without it: it still campaigns (etcd's raft does the
   * same by applying configurations at commit). It counts the votes of its
   * latest configuration (poll; not its own): with single-server changes a
   * majority of the new voters and its own persisted vote are a majority of
   * the old voters too. Leading, it commits its removal and steps down
   * (dissertation §4.2.2). Simulator seed 772448: a leader removed itself,
   * only a follower whose disk then failed got the entry, and after a
   * restart the two others could never get its vote (its log was longer).
   */
  private removalUncommitted(): boolean {
    return isVoter(this.membershipAt(this.log.committed), this.id);
  }

  /**
   * nonVoterClaimTooSoon: `m` is a vote request (a transfer's too) or an
   * append, heartbeat or snapshot of this term or a later one from a sender
   * this node's newest configuration does not name as a voter (a learner, or
   * an id it does not name at all), not its current leader, and this node
   * heard from a leader, voted, campaigned or restarted less than an election
   * timeout ago (one that may campaign: until its own campaigns failed, below): dropped. A learner is no leader's transfer target and leads
   * no term, so an honest one claims neither while the cluster is led; taken,
   * one message of a learner's certificate made it the leader: a transfer
   * vote (which skips the lease) won it the voters' votes; an append one term
   * ahead made it a follower's leader, whose forged entry that follower
   * appended, committed and, holding the highest last term, got committed
   * everywhere once elected; an append of the current term to a follower just
   * restarted (no leader known yet) made it append and apply a forged entry at
   * an index and term where the others hold the leader's: state machines
   * diverged for good. An id this configuration does not name is held to the
   * same rule: it is either a member added in entries this node lacks (a
   * member whose snapshot predates the leader's own addition, or one away
   * while the leader was added and the members it knew removed), which only
   * it can bring up to date, or no member at all (removed, or started for an
   * add that failed), which the members' leader keeps from ever being taken.
   * Before, the peer plane refused such a sender outright, and a member whose
   * configuration lacked its leader refused every message of it for ever
   * (simulator seed 358 with the real PeerGuard: a new member applied 1 of 83
   * entries). A learner promoted, or a member added, in an entry this node
   * lacks, then elected, is taken once this node has gone an election timeout
   * without hearing from another leader or, if this node may campaign
   * (promotable), once campaigns of its own since it last heard from a
   * leader failed (campaignsSinceLeader): its configuration's voters could
   * not elect one of them.
   */
  private nonVoterClaimTooSoon(m: Message): boolean {
    if (m.term < this.term || m.from === this.lead) return false;
    // The candidate this node voted for in this term (its vote passed this rule) leads that term: its appends are
    // taken at once. Dropped until an election timeout after the vote, they never were in time: the leader, promoted
    // in an entry this node lacks, heard from no quorum and stepped down first, over and over (simulator seed 52952
    // of the campaign on 50747c8: no write committed for 4.9 s after healing).
    if (m.term === this.term && this.vote === m.from) return false;
    if (m.type !== 'vote' && m.type !== 'append' && m.type !== 'heartbeat' && m.type !== 'snapshot') return false;
    if (isVoter(this.membership, m.from)) return false;
    // A node that may campaign takes such a claim only once a campaign of its own since it last heard from a leader
    // failed (NON_VOTER_CLAIM_CAMPAIGNS_MIN): a configuration whose voters can elect one of them never needs a sender
    // it does not name. Taken in the election timeout after the leader's crash, before any voter campaigned, one
    // message of a removed member's certificate made each voter it reached its follower: forged entries appended,
    // committed and applied, a different one at the same index and term on each voter (replicas split for good; review23).
    // Past that, no more: each failed campaign restarts electionElapsed, so a node campaigning in vain (its other voters
    // down) took such a claim only in the tail of each randomized timeout, and a candidate promoted in entries it lacks,
    // whose quorum needed its vote, could miss that tail every time (simulator seed 116434 of the campaign on 283bcaa:
    // 18 pre-votes of n6, each at an elapsed 0-12 of 15 ticks; no leader for 4 s after healing).
    if (this.promotable()) return this.campaignsSinceLeader < NON_VOTER_CLAIM_CAMPAIGNS_MIN;
    return this.electionElapsed < this.cfg.electionTimeoutTicks;
  }

  /**
   * nonVoterAnswerAhead: `m` is of a later term than this node's, from a
   * sender this node's newest configuration does not name as a voter (a
   * learner, or an id it does not name), and no claim to lead (not a vote
   * request, append, heartbeat or snapshot, which nonVoterClaimTooSoon
   * gates): dropped, never moving this node's term. A learner campaigns for
   * nobody and is asked to vote by nobody, so an honest one is ahead only of
   * a leader the voters have left behind, which steps down on its own
   * (CheckQuorum, §6.2); a sender this configuration does not name answers
   * nothing this node asked. Taken, one answer of a learner's certificate a
   * term ahead (its appendResp to the leader, or a snapshotResp, which a
   * member may send unasked) deposed a healthy leader and left each voter it
   * reached a follower of no leader: over and over, no leader; and once the
   * voters' election timeout ran, the window in which nonVoterClaimTooSoon
   * takes a non-voter's append (meant for a member promoted or added in an
   * entry this node lacks) was open, made by the sender itself.
   */
  private nonVoterAnswerAhead(m: Message): boolean {
    if (m.term <= this.term) return false;
    if (m.type === 'vote' || m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') return false;
    return !isVoter(this.membership, m.from);
  }

  private inLeaderLease(): boolean {
    return this.cfg.checkQuorum && this.lead !== NO_NODE && this.electionElapsed < this.cfg.electionTimeoutTicks;
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.lead !== NO_NODE) this.countedAsVoter = false;
    if (this.promotable()) {
      if (this.electionElapsed >= this.randomizedElectionTimeout) {
        this.electionElapsed = 0;
        this.hup(false);
      }
    } else if (this.lead !== NO_NODE && this.electionElapsed >= this.cfg.electionTimeoutTicks) {
      // A member that may not campaign (a learner, or one fetching a snapshot) forgets a leader silent
      // for an election timeout, as a campaign would: the driver then sees that nobody leads, and a
      // fetch from that leader that receives nothing is given up (it may hold the longest log, and
      // no one else can win without it).
      this.lead = NO_NODE;
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.inheritedFloorTicksLeft > 0 && (--this.inheritedFloorTicksLeft === 0 || this.everyPeerReportedInstall())) {
      this.inheritedFloorTicksLeft = 0;
      this.leaderInstallFloor = 0;
    }
    if (this.heardFloorTicksLeft > 0 && (--this.heardFloorTicksLeft === 0 || this.everyPeerReportedInstall())) this.heardFloorTicksLeft = 0;
    if (this.electionElapsed >= this.cfg.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        // §6.2: a leader cut off from a quorum steps down so clients look elsewhere.
        this.becomeFollower(this.term, NO_NODE);
        return;
      }
      this.leadTransferee = NO_NODE; // a transfer that did not finish within an election timeout is abandoned
    }
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      pr.ticksSinceHeard++;
      if (pr.installGuard > 0 && pr.ticksSinceHeard > this.cfg.snapshotGuardTicksMax) {
        // Silent for too long (dead, cut off): it must not pin the log forever.
        pr.installGuard = 0;
      }
      if (pr.state !== 'snapshot') continue;
      pr.snapshotTicksIdle++;
      if (pr.snapshotTicksIdle > 2 * this.cfg.electionTimeoutTicks) {
        // The follower stopped confirming it is installing: offer the snapshot again.
        pr.becomeProbe();
        this.sendAppend(id, true);
      }
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
      this.handOff();
    }
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.membership.voters) {
      if (id === this.id) active++;
      else if (this.prs.get(id)?.recentActive === true) active++;
    }
    for (const [id, pr] of this.prs) if (id !== this.id) pr.recentActive = false;
    return active >= quorum(this.membership);
  }

  private hup(transfer: boolean): void {
    if (this.role === 'leader' || !this.promotable()) return;
    if (this.campaignsSinceLeader < NON_VOTER_CLAIM_CAMPAIGNS_MIN) this.campaignsSinceLeader++;
    // Held (holdLeadership): counted as a campaign that failed, none started.
    if (this.leadHeld) return;
    if (this.cfg.preVote && !transfer) this.campaignPre();
    else this.campaignReal(transfer);
  }

  private campaignPre(): void {
    this.becomePreCandidate();
    if (this.poll(this.id, true) === 'won') {
      this.campaignReal(false);
      return;
    }
    this.requestVotes(true, false);
  }

  private campaignReal(transfer: boolean): void {
    this.becomeCandidate();
    if (this.poll(this.id, true) === 'won') {
      this.becomeLeader();
      return;
    }
    this.requestVotes(false, transfer);
  }

  private requestVotes(preVote: boolean, transfer: boolean): void {
    const term = preVote ? this.term + 1 : this.term;
    for (const id of this.membership.voters) {
      if (id === this.id) continue;
      this.send(id, {
        type: 'vote',
        term,
        preVote,
        transfer,
        lastLogIndex: this.log.lastIndex(),
        lastLogTerm: this.log.lastTerm(),
      });
    }
  }

  /** poll records a vote and tallies the election among the current voters (Raft §5.2). */
  private poll(id: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (isVoter(this.membership, id) && !this.votes.has(id)) this.votes.set(id, granted);
    let yes = 0;
    let no = 0;
    for (const v of this.membership.voters) {
      const g = this.votes.get(v);
      if (g === true) yes++;
      else if (g === false) no++;
    }
    const q = quorum(this.membership);
    if (yes >= q) return 'won';
    if (no > this.membership.voters.length - q) return 'lost';
    return 'pending';
  }

  // ---------------------------------------------------------------- votes

  /**
   * canGrantVote: Raft §5.2 (one vote per term, first come first served) and
   * §5.4.1 (only to a candidate whose log is at least as up to date).
   */
  protected canGrantVote(m: VoteRequest): boolean {
    const free =
      this.vote === m.from || (this.vote === NO_NODE && this.lead === NO_NODE) || (m.preVote && m.term > this.term);
    return free && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
  }

  private handleVote(m: VoteRequest): void {
    if (this.canGrantVote(m)) {
      // A granted vote answers with the request's term so the candidate counts it.
      this.send(m.from, { type: 'voteResp', term: m.term, preVote: m.preVote, granted: true });
      if (!m.preVote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(m.from, { type: 'voteResp', preVote: m.preVote, granted: false });
      if (!isVoter(this.membership, this.id) && !this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) this.countedAsVoter = true;
    }
  }

  private stepCandidate(m: Exclude<Message, VoteRequest>): void {
    switch (m.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'voteResp':
        this.handleVoteResponse(m);
        return;
      case 'readIndex':
        this.send(m.from, { type: 'readIndexResp', context: m.context, index: 0, reject: true });
        return;
      default:
        return;
    }
  }

  private handleVoteResponse(m: VoteResponse): void {
    const pre = this.role === 'preCandidate';
    if (m.preVote !== pre) return;
    if (pre && m.granted && m.term !== this.term + 1) return; // a stale pre-vote round
    const result = this.poll(m.from, m.granted);
    if (result === 'won') {
      if (pre) this.campaignReal(false);
      else this.becomeLeader();
    } else if (result === 'lost') {
      this.becomeFollower(this.term, NO_NODE);
    }
  }

  // ---------------------------------------------------------------- follower

  private stepFollower(m: Exclude<Message, VoteRequest>): void {
    if ((m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') && this.lead !== NO_NODE && m.from !== this.lead) {
      // Raft §5.2: a term has one leader at most, and this node knows it. Another member claiming to lead the same
      // term lies: taken, it became this follower's leader, to which its clients' writes and calls (their API keys
      // with them) are forwarded, silently, with no term moved. Dropped unanswered.
      return;
    }
    switch (m.type) {
      case 'append':
        this.electionElapsed = 0;
        this.campaignsSinceLeader = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.campaignsSinceLeader = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case 'snapshot':
        this.electionElapsed = 0;
        this.campaignsSinceLeader = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case 'timeoutNow':
        // Only the leader this follower follows in this term may hand it leadership (dissertation §3.10). etcd-io/raft
        // takes MsgTimeoutNow from anyone (its peers are trusted); here a member's certificate (a learner's, say) would
        // make this voter start a transfer election, which skips the voters' leader-lease check and deposes a healthy
        // leader. Dropped unanswered.
        if (this.lead === NO_NODE || m.from !== this.lead) return;
        this.hup(true);
        return;
      case 'readIndexResp':
        if (m.reject) this.readFailures.push({ context: m.context, reason: 'the leader could not serve the read' });
        else this.readStates.push({ context: m.context, index: m.index });
        return;
      case 'readIndex':
        this.send(m.from, { type: 'readIndexResp', context: m.context, index: 0, reject: true });
        return;
      default:
        return;
    }
  }

  /** handleAppend: Raft §5.3 consistency check, conflict truncation and commit. */
  private handleAppend(m: AppendRequest): void {
    // A leader that did not offer our install (a new one) learns of it here, before it decides to offer its own.
    const installing = this.installing === null ? {} : { installingIndex: this.installing.index };
    if (m.prevLogIndex < this.log.committed) {
      if (this.contradictsCommitted(m)) return;
      this.send(m.from, { type: 'appendResp', reject: false, index: this.log.committed, hintIndex: 0, hintTerm: 0, ...installing });
      return;
    }
    if (m.base !== undefined && m.prevLogIndex === 0) this.adoptBase(m.base);
    if (this.log.matchTerm(m.prevLogIndex, m.prevLogTerm)) {
      const lastNew = m.prevLogIndex + m.entries.length;
      const conflict = this.log.findConflict(m.entries);
      if (conflict !== 0) {
        const from = m.entries[conflict - m.prevLogIndex - 1];
        if (from !== undefined) this.appendEntries(m.entries.slice(conflict - m.prevLogIndex - 1));
      }
      this.log.commitTo(Math.min(m.commit, lastNew));
      this.send(m.from, { type: 'appendResp', reject: false, index: lastNew, hintIndex: 0, hintTerm: 0, ...(this.endMootInstall() ? {} : installing) });
      return;
    }
    if (this.contradictsCommitted(m)) return;
    // Fast backtracking: point the leader at the last entry whose term may match.
    const hintIndex = this.log.findConflictByTerm(Math.min(m.prevLogIndex, this.log.lastIndex()), m.prevLogTerm);
    const hintTerm = this.log.term(hintIndex) ?? 0;
    this.send(m.from, { type: 'appendResp', reject: true, index: m.prevLogIndex, hintIndex, hintTerm, ...installing });
  }

  /**
   * contradictsCommitted: the append gives an entry this node holds committed
   * (at or below its commit index, not compacted) another term: its prevLogTerm
   * or one of its entries'. No leader's log does that to a member whose log is
   * the cluster's (Leader Completeness, Raft §5.4): one of the two logs is not
   * (this node applied entries a removed member's certificate forged; see
   * holdLeadership). Such an append is left unanswered: answered (a success at
   * this node's commit, then a refusal of the next entry, over and over), the
   * leader and this node exchanged messages without pause, never a tick
   * between them; unanswered, the leader probes again once a heartbeat
   * interval (its next heartbeat's answer).
   */
  private contradictsCommitted(m: AppendRequest): boolean {
    const committed = this.log.committed;
    if (m.prevLogIndex > committed) return false;
    const prev = this.log.term(m.prevLogIndex);
    if (m.prevLogIndex > 0 && prev !== undefined && prev !== m.prevLogTerm) return true;
    for (const e of m.entries) {
      if (e.index > committed) break;
      const t = this.log.term(e.index);
      if (t !== undefined && t !== e.term) return true;
    }
    return false;
  }

  /**
   * adoptBase: a follower whose log is still empty (no entry, no snapshot)
   * takes the base membership of a leader's first append as its own, before
   * the entries from the first (changes to that base) are appended. Its own
   * came from how it was started (--peers), which need not be the cluster's:
   * a member removed, wiped and added again with other peers would otherwise
   * apply the log's changes to a membership of its own making, and once a
   * voter count a quorum the cluster does not. Persisted as a log reset at 0
   * (before the append is answered). A follower that holds entries keeps its
   * base: its log already grew from one. A malformed base is ignored.
   */
  private adoptBase(base: Membership): void {
    if (this.baseMembershipIndex !== 0 || this.log.lastIndex() !== 0 || this.snapshot.index !== 0 || this.restoring !== null) return;
    if (sameMembership(base, this.baseMembership) || !wellFormedMembership(base)) return;
    this.baseMembership = { voters: [...base.voters], learners: [...base.learners], addresses: { ...base.addresses } };
    this.rebuildConfPoints();
    this.logResetPending = { index: 0, term: 0 };
  }

  private handleHeartbeat(m: Heartbeat): void {
    this.leaderInstallFloor = m.installFloor ?? 0;
    this.leaderSnapshotIndex = m.snapshotIndex ?? 0;
    if (this.leaderSnapshotIndex > 0) this.heardSnapshotIndex = this.leaderSnapshotIndex;
    if (m.commit <= this.log.lastIndex()) this.log.commitTo(m.commit);
    this.endMootInstall();
    const needs = this.needsSnapshot();
    this.send(m.from, {
      type: 'heartbeatResp',
      readSeq: m.readSeq,
      installingIndex: this.installing?.index ?? 0,
      ...(needs > 0 ? { needsSnapshot: needs } : {}),
      ...(this.stateAppliedIndex > 0 ? { applied: this.stateAppliedIndex } : {}),
      ...(!this.baseLost && this.snapshot.index > 0 ? { snapshotIndex: this.snapshot.index } : {}),
    });
  }

  /**
   * endMootInstall: a follower fetching a snapshot whose last entry its own
   * log has since received and committed (appends the leader had in flight
   * when it offered the snapshot, or a new leader's) needs the snapshot no
   * more (Raft §7: it keeps its log); it would only keep the follower from
   * campaigning, perhaps with the longest log. The install ends (the driver
   * drops its fetch: Status.installingSnapshot no longer names it) and the
   * entries are applied from the log. Not for a member whose state machine
   * waits for a base (restoring). Returns true when it ended one.
   */
  private endMootInstall(): boolean {
    const meta = this.installing;
    if (meta === null || this.restoring !== null) return false;
    if (this.log.committed < meta.index || !this.log.matchTerm(meta.index, meta.term)) return false;
    this.installing = null;
    this.snapshotToFetch = null;
    return true;
  }

  private handleSnapshot(m: SnapshotRequest): void {
    const meta = m.snapshot;
    // One install at a time, never restarted for another offer (a new leader's newer snapshot):
    // our heartbeat and append answers tell the leader which one we install, and it keeps the
    // entries after it. Once it is done, the leader offers a newer one if it still must.
    if (this.installing !== null) return;
    if (this.restoring !== null) {
      // Our install failed and the log was reset to it: only a snapshot at or after it gives the state
      // machine a base again (we may hold its last entry, but not the state it describes).
      if (meta.index >= this.restoring.index) {
        this.installing = meta;
        this.snapshotToFetch = meta;
      } else {
        this.send(m.from, { type: 'snapshotResp', index: meta.index, reject: true });
      }
      return;
    }
    if (meta.index <= this.log.committed) {
      this.send(m.from, { type: 'snapshotResp', index: this.log.committed, reject: false });
      return;
    }
    if (this.log.matchTerm(meta.index, meta.term)) {
      // Raft §7: we already hold the snapshot's last entry.
      this.log.commitTo(meta.index);
      this.send(m.from, { type: 'snapshotResp', index: meta.index, reject: false });
      return;
    }
    this.installing = meta;
    this.snapshotToFetch = meta;
  }

  // ---------------------------------------------------------------- leader

  private stepLeader(m: Exclude<Message, VoteRequest>): void {
    const pr = this.prs.get(m.from);
    if (pr !== undefined) {
      pr.ticksSinceHeard = 0;
      pr.heard = true;
    }
    switch (m.type) {
      case 'appendResp':
        if (pr !== undefined) this.handleAppendResponse(m, pr);
        return;
      case 'heartbeatResp':
        if (pr !== undefined) this.handleHeartbeatResponse(m, pr);
        return;
      case 'snapshotResp':
        if (pr !== undefined) this.handleSnapshotResponse(m, pr);
        return;
      case 'readIndex':
        this.handleReadIndexRequest(m.context, m.from);
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: AppendResponse, pr: Progress): void {
    pr.recentActive = true;
    // This leader sent nothing past its log: an answer about an index beyond it is a lie (its match would strand the
    // follower past what exists, and count toward commits entries it never received). Dropped.
    if (m.index > this.log.lastIndex()) return;
    if (this.noteInstalling(pr, m.installingIndex ?? 0) && m.reject) return; // it installs: wait for its report
    if (m.reject) {
      let hint = m.hintIndex;
      if (m.hintTerm > 0) hint = this.log.findConflictByTerm(m.hintIndex, m.hintTerm);
      if (pr.forgot(m.index, hint)) {
        this.sendAppend(m.from, true);
        return;
      }
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(m.from, true);
      }
      return;
    }
    if (!pr.maybeUpdate(m.index)) {
      if (pr.state === 'replicate') pr.freeTo(m.index);
      return;
    }
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) pr.becomeReplicate();
    else if (pr.state === 'replicate') pr.freeTo(m.index);

    if (this.maybeCommit()) this.bcastAppend();
    // Then the pipeline to this follower is filled (bounded by maxInflightAppends and the entries it lacks), also
    // when its ack committed: a lone follower catching up commits at every ack, and one append per ack (bcastAppend)
    // left it one message per round trip (simulator seed 1651364: 230 entries of one per append took 4 s to commit,
    // writes proposed after the heal timed out). etcd-io/raft fills it the same way after its commit step.
    while (this.sendAppend(m.from, false)) {
      // sendAppend stops when the follower's window is full or it has every entry
    }
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send(m.from, { type: 'timeoutNow' });
    }
  }

  private handleHeartbeatResponse(m: HeartbeatResponse, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === 'replicate') pr.freeFirst();
    this.noteInstalling(pr, m.installingIndex);
    pr.needsBase = m.needsSnapshot ?? 0;
    pr.snapshotIndex = m.snapshotIndex ?? 0;
    // No honest follower has applied past this leader's log (its committed entries are all here): a claim beyond it is cut.
    if (m.applied !== undefined && m.applied > pr.applied) pr.applied = Math.min(m.applied, this.log.lastIndex());
    if (pr.needsBase > 0) this.offerBase(m.from, pr, pr.needsBase);
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
    if (m.readSeq > pr.readSeqAcked) {
      pr.readSeqAcked = m.readSeq;
      this.maybeResolveReads();
    }
  }

  private handleSnapshotResponse(m: SnapshotResponse, pr: Progress): void {
    pr.recentActive = true;
    // The install is over (done, failed, or not needed): its guard ends.
    if (m.reject ? pr.installGuard === m.index : m.index >= pr.installGuard) pr.installGuard = 0;
    if (m.reject) {
      if (pr.state === 'snapshot' && pr.pendingSnapshot === m.index) {
        pr.becomeProbe();
        pr.probeSent = true; // wait for the next heartbeat answer before offering it again
      }
      return;
    }
    // A snapshot holds committed entries only, all in this leader's log: a report beyond it is a lie (as above).
    if (m.index > this.log.lastIndex()) return;
    if (pr.state === 'snapshot') pr.becomeProbe();
    if (pr.maybeUpdate(m.index)) {
      pr.becomeReplicate();
      if (this.maybeCommit()) this.bcastAppend();
    }
    this.sendAppend(m.from, true);
  }

  /**
   * noteInstalling takes what a follower's answer says of its snapshot
   * install: `installing` is the snapshot index it is fetching or installing,
   * 0 for none. A follower that installs one we did not offer (a previous
   * leader's) gets its guard, and one we were probing waits in snapshot
   * state for its report instead of being offered another snapshot. Returns
   * true when the follower is installing a snapshot beyond its match.
   */
  private noteInstalling(pr: Progress, installing: number): boolean {
    pr.reportedInstall = true;
    if (installing === 0) {
      pr.installGuard = 0; // it installs nothing (an offer still unanswered keeps pendingSnapshot as floor)
      return false;
    }
    if (installing <= pr.match) return false; // stale: it holds that point already
    pr.installGuard = installing;
    if (pr.state === 'snapshot') {
      pr.pendingSnapshot = installing;
      pr.snapshotTicksIdle = 0;
    } else if (pr.state === 'probe') {
      pr.becomeSnapshot(installing);
    }
    return true;
  }

  /**
   * offerBase: a follower's install failed and its log was reset to it
   * (`needed`, see installFailed): it needs a snapshot at or after it. Ours is
   * offered when it reaches that far; else one is wanted from the driver
   * (snapshotWanted) and offered at a later answer. Not while an offer to it
   * is still unanswered.
   */
  private offerBase(to: NodeId, pr: Progress, needed: number): void {
    if (pr.state === 'snapshot') return;
    if (this.snapshot.index >= needed) {
      this.sendSnapshot(to, pr);
      return;
    }
    this.snapshotWantedIndex = Math.max(this.snapshotWantedIndex, needed);
  }

  /** everyPeerReportedInstall (leader): every other member answered in this term, saying whether it installs a snapshot. */
  private everyPeerReportedInstall(): boolean {
    for (const [id, pr] of this.prs) if (id !== this.id && !pr.reportedInstall) return false;
    return true;
  }

  /** isCommittable: Raft §5.4.2 — only entries of the current term are committed by counting replicas. */
  protected isCommittable(index: number): boolean {
    return this.log.term(index) === this.term;
  }

  /** maybeCommit advances the commit index to what a quorum of voters has persisted. */
  protected maybeCommit(): boolean {
    const matches: number[] = [];
    for (const id of this.membership.voters) matches.push(this.prs.get(id)?.match ?? 0);
    matches.sort((a, b) => b - a);
    const candidate = matches[quorum(this.membership) - 1] ?? 0;
    if (candidate <= this.log.committed || !this.isCommittable(candidate)) return false;
    const before = this.log.committed;
    this.log.commitTo(candidate);
    this.onCommitted(before);
    return true;
  }

  private onCommitted(before: number): void {
    for (let i = Math.max(before + 1, this.log.firstIndex()); i <= this.log.committed; i++) {
      this.uncommittedBytes = Math.max(0, this.uncommittedBytes - this.log.entry(i).data.length);
    }
    if (this.deferredReads.length > 0 && this.committedInTerm()) {
      const deferred = this.deferredReads;
      this.deferredReads = [];
      for (const r of deferred) this.handleReadIndexRequest(r.context, r.from);
    }
    if (!isVoter(this.membershipAt(this.log.committed), this.id) && this.committedInTerm()) {
      // dissertation §4.2.2: a leader removed from the cluster steps down once the removal commits; so does one
      // that is not a voter (a learner that led because a candidate counted it, see countedAsVoter) once an
      // entry of its term commits: every voter that took it holds the log a voter can now win with.
      this.becomeFollower(this.term, NO_NODE);
    }
  }

  private committedInTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private appendAsLeader(type: Entry['type'], data: Uint8Array): LogPosition {
    if (this.role !== 'leader') throw new NotLeaderError(this.lead);
    if (this.leadTransferee !== NO_NODE) {
      throw new ProposalDroppedError(`leadership is being transferred to ${this.leadTransferee}`);
    }
    if (this.restoring !== null) {
      throw new ProposalDroppedError('this leader cannot apply entries until it installs a snapshot; it hands leadership over');
    }
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + data.length > this.cfg.maxUncommittedBytes) {
      throw new ProposalDroppedError('too much proposed data is not committed yet; retry later');
    }
    const e: Entry = { index: this.log.lastIndex() + 1, term: this.term, type, data };
    this.uncommittedBytes += data.length;
    this.appendEntries([e]);
    // Proposals made between two Ready cycles leave in one append per follower (batching).
    this.appendPending = true;
    return { index: e.index, term: e.term };
  }

  /** appendEntries appends to the log and tracks membership changes, which take effect once in the log (§4.1). */
  private appendEntries(ents: readonly Entry[]): void {
    const truncatedAt = this.log.append(ents);
    let changed = false;
    if (truncatedAt !== 0) {
      const kept = this.confPoints.filter((p) => p.index < truncatedAt);
      changed = kept.length !== this.confPoints.length;
      this.confPoints = kept;
    }
    for (const e of ents) {
      if (e.type !== 'conf' || e.index <= this.baseMembershipIndex) continue;
      const cc = decodeConfChangeOrNull(e.data);
      if (cc === null) continue;
      const membership = applyConfChange(this.currentMembershipFromPoints(), cc);
      this.confPoints.push(cc.op === 'attest' ? { index: e.index, membership, attest: true } : { index: e.index, membership });
      changed = true;
    }
    if (changed) {
      this.membership = this.currentMembershipFromPoints();
      if (this.role === 'leader') this.syncProgress();
    }
  }

  private currentMembershipFromPoints(): Membership {
    return this.confPoints[this.confPoints.length - 1]?.membership ?? this.baseMembership;
  }

  private rebuildConfPoints(): void {
    this.confPoints = [];
    let m = this.baseMembership;
    for (const e of this.log.entriesAfter(this.baseMembershipIndex)) {
      if (e.type !== 'conf') continue;
      const cc = decodeConfChangeOrNull(e.data);
      if (cc === null) continue;
      m = applyConfChange(m, cc);
      this.confPoints.push(cc.op === 'attest' ? { index: e.index, membership: m, attest: true } : { index: e.index, membership: m });
    }
    this.membership = m;
  }

  /** syncProgress gives the leader a Progress for every member, and drops removed ones. */
  private syncProgress(): void {
    const ids = new Set(members(this.membership));
    ids.add(this.id);
    for (const id of ids) {
      if (!this.prs.has(id)) this.prs.set(id, new Progress(this.log.lastIndex() + 1, this.cfg.maxInflightAppends));
    }
    for (const id of [...this.prs.keys()]) if (!ids.has(id)) this.prs.delete(id);
  }

  private bcastAppend(): void {
    for (const id of this.prs.keys()) if (id !== this.id) this.sendAppend(id, false);
  }

  private bcastHeartbeat(): void {
    const installFloor = this.peersInstallFloor();
    const snapshotIndex = this.snapshot.index;
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      // Raft §5.3: never tell a follower to commit beyond what it is known to match.
      this.send(id, {
        type: 'heartbeat',
        commit: Math.min(pr.match, this.log.committed),
        readSeq: this.readSeq,
        ...(installFloor > 0 ? { installFloor } : {}),
        ...(snapshotIndex > 0 ? { snapshotIndex } : {}),
      });
    }
  }

  /**
   * sendAppend sends the next append to a follower unless its pipeline is
   * paused; a follower whose next entry was compacted away gets a snapshot.
   * Returns true when a message with entries was sent.
   */
  private sendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevLogIndex = pr.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex);
    if (prevLogTerm === undefined || pr.next < this.log.firstIndex()) {
      this.sendSnapshot(to, pr);
      return false;
    }
    if (prevLogIndex === 0 && this.cfg.joinBySnapshot && !isMember(this.baseMembership, to)) {
      // The log's first membership (its base, the bootstrap's --peers) is not in the log: a member outside it joined
      // later and started from a membership of its own making, to which entries from the first would be applied
      // (a joiner told of too few voters would count a quorum the cluster does not). It starts from a snapshot
      // instead, which carries the membership; the driver takes one (snapshotWanted) if there is none yet.
      if (this.snapshot.index > 0) this.sendSnapshot(to, pr);
      else this.snapshotWantedIndex = Math.max(this.snapshotWantedIndex, 1);
      return false;
    }
    const entries =
      pr.next <= this.log.lastIndex()
        ? this.log.slice(pr.next, Math.min(this.log.lastIndex() + 1, pr.next + APPEND_ENTRIES_MAX), this.cfg.maxAppendBytes)
        : [];
    if (entries.length === 0 && !sendIfEmpty) return false;
    const msg: MessageBody<Message> = {
      type: 'append',
      prevLogIndex,
      prevLogTerm,
      entries,
      commit: this.log.committed,
      // Entries from the first are changes to the log's base: the follower starts from the same one.
      ...(prevLogIndex === 0 && this.baseMembershipIndex === 0 ? { base: this.baseMembership } : {}),
    };
    this.send(to, msg);
    pr.sentAppend(prevLogIndex + entries.length, entries.length);
    return entries.length > 0;
  }

  private sendSnapshot(to: NodeId, pr: Progress): void {
    // The snapshot is lost (snapshotLost): offered once the driver holds one again (the follower is asked again then).
    // If rebuilding it failed, leadership goes to a voter that holds one (handOff), at once.
    if (this.baseLost) {
      this.handOff();
      return;
    }
    // A snapshot whose configuration does not name this leader (one it installed before its own addition) would leave
    // the follower a configuration that lacks its leader, and perhaps no live member to vouch for it (its peer plane
    // takes such a sender's messages only once a voter of its configuration names it: src/node/vouches.ts). One
    // that names this leader is wanted instead (snapshotWanted), and offered once the driver took it.
    const named = isMember(this.snapshot.membership, this.id) ? 0 : this.indexNamingSelfAfter(this.snapshot.index);
    if (named > 0) {
      this.snapshotWantedIndex = Math.max(this.snapshotWantedIndex, named);
      return;
    }
    pr.becomeSnapshot(this.snapshot.index);
    this.send(to, { type: 'snapshot', snapshot: this.snapshot });
  }

  /** indexNamingSelfAfter: the first configuration after `index` that names this node, 0 when none does. */
  private indexNamingSelfAfter(index: number): number {
    for (const p of this.confPoints) if (p.index > index && isMember(p.membership, this.id)) return p.index;
    return 0;
  }

  // ---------------------------------------------------------------- reads

  private handleReadIndexRequest(context: string, from: NodeId): void {
    if (this.pendingReads.length + this.deferredReads.length >= this.cfg.maxPendingReads) {
      this.finishRead({ context, from, seq: 0, index: 0 }, 'too many reads are waiting');
      return;
    }
    if (!this.committedInTerm()) {
      // dissertation §6.4: the leader must first commit an entry of its term to know the commit index.
      this.deferredReads.push({ context, from });
      return;
    }
    this.pendingReads.push({ seq: this.readSeq + 1, index: this.log.committed, context, from });
    this.readRoundWanted = true;
    if (quorum(this.membership) === 1 && isVoter(this.membership, this.id)) {
      this.readRoundWanted = false;
      this.readSeq++;
      this.maybeResolveReads();
    }
  }

  /** maybeResolveReads serves every read whose heartbeat round a quorum has acknowledged. */
  private maybeResolveReads(): void {
    if (this.pendingReads.length === 0) return;
    const acked: number[] = [];
    for (const id of this.membership.voters) {
      acked.push(id === this.id ? this.readSeq : (this.prs.get(id)?.readSeqAcked ?? 0));
    }
    acked.sort((a, b) => b - a);
    const confirmed = acked[quorum(this.membership) - 1] ?? 0;
    let n = 0;
    while (n < this.pendingReads.length && (this.pendingReads[n]?.seq ?? Infinity) <= confirmed) n++;
    if (n === 0) return;
    for (const r of this.pendingReads.splice(0, n)) this.finishRead(r, null);
  }

  private finishRead(r: PendingRead, failure: string | null): void {
    if (r.from === this.id) {
      if (failure === null) this.readStates.push({ context: r.context, index: r.index });
      else this.readFailures.push({ context: r.context, reason: failure });
    } else {
      this.send(r.from, { type: 'readIndexResp', context: r.context, index: r.index, reject: failure !== null });
    }
  }

  private failPendingReads(reason: string): void {
    const all = [...this.pendingReads, ...this.deferredReads.map((d) => ({ ...d, seq: 0, index: 0 }))];
    this.pendingReads = [];
    this.deferredReads = [];
    this.readRoundWanted = false;
    for (const r of all) this.finishRead(r, reason);
  }

  // ---------------------------------------------------------------- plumbing

  protected hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  /** hardStateToPersist: what a Ready asks the driver to persist. */
  protected hardStateToPersist(): HardState {
    return this.hardState();
  }

  private softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  private send(to: NodeId, body: MessageBody<Message>): void {
    // The body is a fresh literal of the caller's: it becomes the message (a copy by spread cost ~2 µs a message,
    // its shapes being many and made by spreads themselves).
    const msg = body as { from?: NodeId; to?: NodeId; term?: number };
    msg.from = this.id;
    msg.to = to;
    if (msg.term === undefined) msg.term = this.term;
    this.msgs.push(msg as unknown as Message);
  }
}

const REPLY_TYPES: ReadonlySet<Message['type']> = new Set([
  'voteResp',
  'appendResp',
  'heartbeatResp',
  'snapshotResp',
  'readIndexResp',
]);

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function sameSoftState(a: SoftState, b: SoftState): boolean {
  return a.leader === b.leader && a.role === b.role;
}

/** sameVoters: a and b have the same voters (in any order). */
function sameVoters(a: Membership, b: Membership): boolean {
  return a.voters.length === b.voters.length && a.voters.every((v) => b.voters.includes(v));
}

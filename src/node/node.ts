import {
  CONF_CHANGE_HEARD_ELECTION_TIMEOUTS,
  ConfChangeUnreachableError,
  ConfChangeUnsafeError,
  MembershipChangeError,
  NO_NODE,
  NotLeaderError,
  ProposalDroppedError,
  RaftNode,
  decodeConfChange,
  notLeaderMessage,
  sameMembership,
  defaultRaftConfig,
  PENDING_READS_MAX_DEFAULT,
  type ConfChange,
  type Entry,
  type Membership,
  type Message,
  type NodeId,
  type RaftBootState,
  type RaftConfig,
  type Ready,
  type Rng,
  type SnapshotMeta,
} from '../raft/index.js';
import { decodeCommand, encodeCommand, type KvCommand } from '../fsm/kv-command.js';
import { encodeOpsRecord } from '../fsm/ops-record.js';
import type { SessionStamp } from '../fsm/sessions.js';
import { STATE_RECORD_FORMAT, type HeldStateImage, type LogBase, type LogBatch, type NodeStorage } from '../storage/types.js';
import { StateMachine, type ArchiveInstall, type RestoreOutcome } from '../fsm/state-machine.js';
import type { ApplyResult, KvRangeQuery, KvRangeResult } from '../fsm/types.js';
import type {
  ArchiveStager,
  FetchSnapshotParams,
  FetchStateImageParams,
  ForwardProposalsParams,
  ForwardedOutcome,
  ForwardedProposals,
  MembershipAnswer,
  MembershipQuery,
  ProposalForwarder,
  SnapshotChunk,
  SnapshotStreamOpener,
  StateImageStreamOpener,
  StageArchiveParams,
  StateImageStream,
} from '../transport/transport.js';
import { ForwardQueue } from './forward-queue.js';
import { Vouches } from './vouches.js';
import { attestationTarget, type MembershipProofs, type ProofToSign } from './membership-proofs.js';
import { RemovalNews, type RemovalNewsStats } from './removal-news.js';
import type { PeerVouch } from '../transport/peer-guard.js';
import { encodeApplyResult } from '../fsm/apply-result-codec.js';
import type { Clock, TimerHandle } from './clock.js';
import { NodeError } from './errors.js';
import { RestoreArchives, coded } from './restore-archives.js';
import { openStateImage, type OpenedStateImage } from '../transport/state-image-fetcher.js';
import { isNoSpace, type DiskGuard } from './disk-guard.js';
import type { Readable } from 'node:stream';
import { isReadFailure, type SnapshotHandle, type StoredSnapshot } from '../snapshot/store.js';
import { ArchiveError, SnapshotStoreError, StateFormatError } from '../snapshot/errors.js';
import { StorageError } from '../storage/storage-error.js';
import { encodeRestoreCommand, isRestoreCommand, type RestoreCommand } from '../fsm/restore-command.js';
import { RestoreDigestError } from '../fsm/restore-digest.js';
import type { NodeMetrics } from './metrics.js';
import { silentLogger, type Logger } from './logger.js';
import type { NodeBrief, NodeStatus } from './node-status.js';
import { SnapshotSupersededError, SnapshotTermUnknownError, snapshotDue, snapshotStaggerEntries, toRaftMeta, type SnapshotManager } from './snapshots.js';

/**
 * MessageSender is what the node needs of a transport (GrpcTransport,
 * MemoryTransport). Without stageArchive, a restore on a cluster of more
 * than one voter is refused (no quorum can hold its archive). With
 * openSnapshotStream, the snapshot manager's fetches ride the transport
 * (the simulator's network) instead of their own gRPC calls; with
 * openStateImageStream, so do a follower's FetchStateImage calls. With
 * forwardProposals, a follower hands its clients' writes to the leader in
 * batches (ForwardQueue); without it, propose on a follower fails `notLeader`.
 */
export interface MessageSender extends Partial<ArchiveStager>, Partial<SnapshotStreamOpener>, Partial<StateImageStreamOpener>, Partial<ProposalForwarder> {
  send(m: Message): void;
  setPeers(addresses: Readonly<Record<NodeId, string>>): void;
  close(): Promise<void>;
  /** refusals (optional, Transport.refusals): the members whose guard refuses this node's messages, and why. */
  refusals?(): ReadonlyMap<NodeId, string>;
  /**
   * askMembership (optional): one GetMembership call to member q.to over a
   * channel that checks q.to's certificate (GrpcTransport.askMembership).
   * With it the node vouches for senders its configuration does not name
   * (Node.peerVouch, src/node/vouches.ts); without it there is no vouch.
   */
  askMembership?(q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer>;
}

/** NodeTimings: the defaults give a new leader within ~300 ms of the old one's death on a LAN. */
export interface NodeTimings {
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /** proposalTimeoutMs: a write not applied by then fails with `timeout` (its outcome is unknown). */
  readonly proposalTimeoutMs: number;
  readonly readTimeoutMs: number;
  /**
   * restoreStageTimeoutMs: how long a leader waits for a quorum of voters to
   * hold a restore's archive (StageArchive) before it refuses the restore
   * with `unavailable`, having proposed nothing.
   */
  readonly restoreStageTimeoutMs: number;
}

/**
 * RESTORE_REFETCHES_MAX: times a restore's archive found damaged on this
 * node's own disk is fetched again before the node stops on it (a disk that
 * keeps changing bytes is failing).
 */
const RESTORE_REFETCHES_MAX = 3;
/** REMOVED_IDS_MAX: removed ids a node remembers for its peer plane (Node.wasRemoved); past it the oldest are forgotten. */
const REMOVED_IDS_MAX = 1024;

/**
 * APPLY_QUEUE_ENTRIES_MAX: committed entries waiting for the apply worker
 * before a leader refuses new writes (`busy`). The Ready loop never waits for
 * the worker: heartbeats, votes and appends are persisted and answered
 * however far behind it is (the waiting entries are the core's own, in memory
 * anyway, so the queue holds only references).
 */
const APPLY_QUEUE_ENTRIES_MAX = 10_000;
/**
 * READ_SHARES: the leader's ReadIndex slots (RaftConfig.maxPendingReads) are
 * shared by every source of linearizable reads: each member forwarding its
 * clients' reads (ReadIndex, by the member id its certificate names) and this
 * node's own clients hold at most 1/READ_SHARES of them at once
 * (readsPerSourceMax; more are refused `busy`), so that one member cannot
 * take every slot and starve the leader's clients and the other members. A
 * follower stops its own clients at the same share, so an honest one is not
 * refused by its leader.
 */
export const READ_SHARES = 4;
/**
 * WRITE_SHARES: likewise for the leader's write slots (maxPendingProposals):
 * each member forwarding its clients' writes (Propose, by the member id its
 * certificate names) has at most 1/WRITE_SHARES of them in flight here at
 * once (writesPerSourceMax; more are refused `busy`), so that one member
 * cannot take every slot and starve the leader's own clients and the other
 * members. A follower holds its forward queue to the same share, so an
 * honest one is not refused by its leader.
 */
export const WRITE_SHARES = 4;
/**
 * TERM_AHEAD_MAX: the furthest ahead of this node's term a peer's message
 * may be to be stepped. Terms grow by one an election, and a node that could
 * not win moves none (pre-votes), so an honest member is never a million
 * ahead, however long this node was away; a request further ahead is
 * refused INVALID_ARGUMENT and an answer further ahead dropped, neither
 * stepped. Without it one message of any member (a learner's too) with term
 * 2^53-1 moved this node there, saved, and its next campaign, at 2^53 (past
 * what a hard state may hold or the codec send), failed the node, at every
 * restart: the terms were used up for good. Used up by steps of this size,
 * they last 2^33 saved messages.
 */
export const TERM_AHEAD_MAX = 2 ** 20;
/** FORWARD_RPC_MARGIN_MS: a follower's Propose call waits this much longer than the leader waits for its writes' apply. */
const FORWARD_RPC_MARGIN_MS = 1_000;
/** APPLY_BATCH_ENTRIES_MAX: entries the apply worker applies in one state machine batch. */
const APPLY_BATCH_ENTRIES_MAX = 4_096;

/** FETCH_STALL_MS_MIN: the least time a snapshot fetch from a former leader may receive nothing before it is given up. */
const FETCH_STALL_MS_MIN = 1_000;
/**
 * FETCH_STALL_FROM_LEADER_MS_MIN: the least time a fetch from the leader
 * itself may receive nothing before it is given up and offered again (a
 * stream or a write stuck anywhere along the way must not strand the
 * follower); longer than any pause of a healthy transfer (a busy leader's
 * RESOURCE_EXHAUSTED backoff, a first chunk after opening a big archive).
 */
const FETCH_STALL_FROM_LEADER_MS_MIN = 15_000;

/*
 * State images (issue 15): the leader applying a restore exports the generation it builds
 * (StateStore.installState's exportImage); a follower applying the same entry asks the leader for it
 * (FetchStateImage) and commits its files (importStateImage) instead of loading the archive itself, and
 * installs from its own copy of the archive when that fails.
 */
/** IMAGE_KEEP_MS: a leader keeps the image of its last restore this long (and never across a restart). */
const IMAGE_KEEP_MS = 5 * 60_000;
/** RESTORE_STAGE_ROUNDS_MAX: stagings of a restore's archive on the voters of the moment before the restore is refused (each change of the voters during one asks for another). */
const RESTORE_STAGE_ROUNDS_MAX = 4;
/** IMAGE_BUILD_WAIT_MS: a FetchStateImage waits at most this long for an image this leader is still building. */
const IMAGE_BUILD_WAIT_MS = 120_000;
/** IMAGE_TRANSFERS_MAX: FetchStateImage streams a node serves at once (more: RESOURCE_EXHAUSTED). */
const IMAGE_TRANSFERS_MAX = 4;
/**
 * IMAGE_TRANSFERS_PER_PEER_MAX: FetchStateImage streams a node serves at once to one member (more:
 * RESOURCE_EXHAUSTED). A follower asks for one image at a time; without it one member holding streams it never
 * reads took every transfer, and the other followers fell back to loading their archives.
 */
const IMAGE_TRANSFERS_PER_PEER_MAX = 1;
/** IMAGE_SNAPSHOT_WAIT_MS: how long a leader waits, after sending an image, for its snapshot of that state to name it. */
const IMAGE_SNAPSHOT_WAIT_MS = 5_000;
/** IMAGE_IDLE_MS: a follower gives up an image stream that delivers nothing for this long (then installs from its archive). */
const IMAGE_IDLE_MS = 15_000;
/**
 * IMAGE_BYTES_PER_SECOND_MIN: a follower gives up an image that does not arrive within IMAGE_IDLE_MS plus its bytes
 * at this rate (then installs from its archive): 65 MB took 1-2 s between two nodes of one box at load 8-12.
 */
const IMAGE_BYTES_PER_SECOND_MIN = 1024 * 1024;

export const DEFAULT_TIMINGS: NodeTimings = {
  tickMs: 10,
  electionTimeoutTicks: 15,
  heartbeatIntervalTicks: 3,
  proposalTimeoutMs: 5_000,
  readTimeoutMs: 5_000,
  restoreStageTimeoutMs: 10 * 60_000,
};

export interface NodeOptions {
  readonly id: NodeId;
  readonly storage: NodeStorage;
  /** transport is created by the caller with onMessage bound to node.receive. */
  readonly transport: MessageSender;
  /** initialMembership: the cluster as first configured (with every member's address). */
  readonly initialMembership: Membership;
  readonly timings?: Partial<NodeTimings>;
  readonly raft?: Partial<Omit<RaftConfig, 'id' | 'rng'>>;
  readonly logger?: Logger;
  /** maxPendingProposals: writes waiting to be applied before new ones are refused with `busy`. */
  readonly maxPendingProposals?: number;
  /** snapshots: the node's snapshot manager; without one the node neither snapshots nor compacts. */
  readonly snapshots?: SnapshotManager;
  /** metrics: fed as things happen when given. */
  readonly metrics?: NodeMetrics;
  /**
   * dialAddresses: peers to dial at another address than the one the
   * membership advertises (a proxy or NAT in between; the chaos tests' fault
   * proxies). Raft, forwarded calls and snapshot fetches all use it.
   */
  readonly dialAddresses?: Readonly<Record<NodeId, string>>;
  /**
   * membershipProofs: signs the configuration entries this node appends as the
   * leader, and verifies the proofs a sender its configuration does not name
   * presents (src/node/membership-proofs.ts; serve: the peer certificate's key
   * and the cluster CA). Absent: changes carry no proof, and a sender is
   * vouched for by voters' answers only.
   */
  readonly membershipProofs?: MembershipProofs;
  /**
   * diskGuard: refuses new writes (proposals, membership changes, restores,
   * snapshots) while the data dir's file system is below its free-space
   * reserve; without one, writes are never refused for space.
   */
  readonly diskGuard?: DiskGuard;
  /**
   * onMemberRemoved: called with the id a membership change removes, as this
   * node applies it (each change in log order, so a removal is seen even when
   * the same id is added back in the next entry). serve drops the id from the
   * record of members seen running (started-members.ts): one removed and
   * added back is a new member, whose first start on a new data dir is no
   * sign of a lost log. Not called for a removal this node only learns of
   * through a snapshot that spans it.
   */
  readonly onMemberRemoved?: (id: NodeId) => void;
  /**
   * rng: the node's randomness (election timeouts, the per-boot read epoch):
   * cryptoRng in a process (crypto-rng.ts), a seeded one in the simulator and tests.
   */
  readonly rng: Rng;
  /**
   * clock: the node's time (ticks, timeouts, backoffs, durations):
   * systemClock in a process (clock.ts), a virtual one in the simulator and
   * tests. The node reads the time and sets timers only through it.
   */
  readonly clock: Clock;
  /**
   * testOnlyBugs: TEST-ONLY. Reintroduces bugs this driver once had, so the
   * simulator's negative controls (test/sim/real-node.spec.ts) can show each
   * is caught. Never set outside test/sim (serve and local never do); every
   * switch defaults to off.
   */
  readonly testOnlyBugs?: TestOnlyBugs;
  /**
   * stateImages (issue 15; default true): a leader applying a
   * restore exports the state it builds and followers take it
   * (restoreFromImage); false: every member installs from its own copy of
   * the archive.
   */
  readonly stateImages?: boolean;
  /**
   * verifyImageRecords (default false): a follower taking the leader's state
   * image of a restore also reads every record of it before its commit and
   * checks them against the restore entry's records digest (a mismatch
   * refuses the image; the follower installs from its archive). Without it
   * the image is trusted as far as its chain of checks goes: the leader's
   * own install of the archive was checked against that digest, and every
   * file of the image against the SHA-256 the leader recorded as it
   * exported it. The read costs a follower ~2.5-3 s of CPU per million 1 KiB
   * records and took a 3-node restore of 1M x 1 KiB from ~9 to 16-19 s on 2
   * cores; what it adds is a check of the leader's export itself (a bug
   * there, or bytes changed between its install and its export). It does
   * not stop a member that lies as leader: that one puts the digest of the
   * state it forged in the entry.
   */
  readonly verifyImageRecords?: boolean;
}

/**
 * TestOnlyBugs: the driver bugs a negative control reintroduces (see NodeOptions.testOnlyBugs).
 * - releaseAnswersOnFailure: when a write fails (the node fails), the vote
 *   grants and append acks held for it are released (sent) instead of dropped;
 * - appendsBeforeTermSaved: a leader's appends leave before its term and vote
 *   are durable (a single voter elects itself in one Ready: Raft §5.1);
 * - core: a broken subclass of RaftNode to run instead of the core
 *   (test/sim/broken.ts: each breaks one rule of the paper);
 * - restoreOnOneCopy: a leader proposes a restore without first having a
 *   quorum of voters hold its archive (stageOnQuorum skipped), so the entry
 *   commits while the archive has one copy;
 * - reappliesRetries: the state machine applies a retried write again when
 *   its request id is one the session table remembers (the dedup of retries
 *   off: StateMachineOptions.testOnlyReappliesRetries);
 * - changesIgnoreRestores: a leader changes the voters without waiting for a
 *   quorum of the new ones to have applied the newest restore
 *   (changeMembership proposes with no applied floor).
 */
export interface TestOnlyBugs {
  readonly releaseAnswersOnFailure?: boolean;
  readonly reappliesRetries?: boolean;
  readonly appendsBeforeTermSaved?: boolean;
  readonly restoreOnOneCopy?: boolean;
  readonly changesIgnoreRestores?: boolean;
  readonly core?: new (config: RaftConfig, boot: RaftBootState) => RaftNode;
}

/**
 * bootEpoch draws 64 random bits (hex) that name one boot of a node: read
 * contexts carry it, so a ReadIndex answer meant for a read of an earlier
 * boot (sent before a restart, delivered after) never matches a read of this one.
 */
function bootEpoch(rng: Rng): string {
  let hex = '';
  for (let i = 0; i < 4; i++) hex += rng.nextInt(0x1_0000).toString(16).padStart(4, '0');
  return hex;
}

/** SNAPSHOT_RETRY_MS_MIN / _MAX: the backoff of automatic snapshots after a failure (doubling from min to max). */
/**
 * AUTO_SNAPSHOT_PACE: an automatic snapshot that took at least
 * AUTO_SNAPSHOT_PACE_MIN_MS is followed by one due by its entries or log
 * bytes alone no sooner than this many times as long after it ended (at
 * most a quarter of the time spent on them), unless the log grew to
 * AUTO_SNAPSHOT_PACE_LOG_TIMES the policy's entries or bytes. A snapshot's
 * cost grows with the state, not with the entries it covers (a delta still
 * gunzips and hashes the whole state): bench:snapshot-cluster at 4M x 1 KiB
 * (--snapshot-entries 2000, ~1,000 writes/s) had each follower make delta
 * after delta, 9-15 s each, back to back through the write phases, on the 2
 * cores the leader serves writes on. Consul likewise snapshots at most every
 * 30 s. Snapshots asked for (downloads, operators), a restore's, and those a
 * follower needs are not paced.
 */
const AUTO_SNAPSHOT_PACE = 3;
const AUTO_SNAPSHOT_PACE_MIN_MS = 1_000;
const AUTO_SNAPSHOT_PACE_LOG_TIMES = 4;

const SNAPSHOT_RETRY_MS_MIN = 1_000;
const SNAPSHOT_RETRY_MS_MAX = 60_000;

/**
 * PendingProposal: an entry this node proposed, waiting for its apply. No timer of its own: the tick
 * (expireProposals) times it out at `deadlineMs` (clock ms), `what` naming it in the error.
 */
interface PendingProposal {
  readonly term: number;
  readonly resolve: (r: ApplyResult) => void;
  readonly reject: (e: Error) => void;
  readonly deadlineMs: number;
  readonly timeoutMs: number;
  readonly what: 'write' | 'membership change';
}

interface ReplyWaiter {
  readonly gen: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

interface PendingRead {
  index: number; // 0 until the read state arrives
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
  readonly timer: TimerHandle;
}

/**
 * Node drives one RaftNode, ticking on the clock it is given (NodeOptions:
 * clock, rng, transport and storage are all passed in, so a simulator runs
 * this same code): each Ready is persisted (one synced write), then its
 * messages are sent, then committed entries are applied, then the core is
 * advanced. What does not depend on the save in flight does not wait for it:
 * a leader's appends leave before it, committed entries persisted earlier are
 * applied during it (scheduleMidSave). Writes resolve once applied here;
 * linearizable reads wait for a ReadIndex confirmation and for the state
 * machine to catch up with it.
 */
/** checkNotCanceled: NodeError `invalid` once the uploader of a restore canceled its call (Node.restore's signal). */
function checkNotCanceled(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new NodeError('invalid', 'the upload was canceled by its client; the restore was not proposed and nothing changed');
}

/**
 * SharedCreation: a snapshot being made for downloads (Node.downloadSnapshot),
 * which later downloads share when it holds what each needs. `floor`: the
 * applied index when its view began to be taken (null: not yet), which it
 * holds at least. It is waited for (snapshotNow does not supersede it) while
 * any download sharing it still waits: `abort` fires once the last one with
 * a signal went away (one without waits to the end).
 */
class SharedCreation {
  readonly abort = new AbortController();
  floor: number | null = null;
  #waiters = 0;
  #settle: { resolve: (m: SnapshotMeta) => void; reject: (e: unknown) => void } = { resolve: () => undefined, reject: () => undefined };
  readonly #result = new Promise<SnapshotMeta>((resolve, reject) => {
    this.#settle = { resolve, reject };
  });

  constructor() {
    this.#result.catch(() => undefined); // met by each download that joins
  }

  get result(): Promise<SnapshotMeta> {
    return this.#result;
  }

  start(creation: Promise<SnapshotMeta>): void {
    creation.then(this.#settle.resolve, this.#settle.reject);
  }

  viewStarted(applied: number): void {
    this.floor ??= applied;
  }

  /** join waits for the snapshot as one more download; `signal`: that download went away. */
  async join(signal?: AbortSignal): Promise<SnapshotMeta> {
    this.#waiters++;
    if (signal === undefined) return this.#result; // counted for good: waited for to the end
    const gone = (): void => {
      if (--this.#waiters === 0) this.abort.abort(new NodeError('unavailable', 'every download waiting for this snapshot went away'));
    };
    if (signal.aborted) {
      gone();
      return this.#result;
    }
    signal.addEventListener('abort', gone, { once: true });
    try {
      return await this.#result;
    } finally {
      signal.removeEventListener('abort', gone);
    }
  }
}

/** untilSettledOrAborted resolves once `p` settles (whichever way) or `signal` aborts, whichever comes first. */
async function untilSettledOrAborted(p: Promise<unknown>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) {
    await p.catch(() => undefined);
    return;
  }
  if (signal.aborted) return;
  let onAbort: (() => void) | undefined;
  try {
    await Promise.race([
      p.catch(() => undefined),
      new Promise<void>((resolve) => {
        onAbort = () => resolve();
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}

/** throwIfGone throws the reason of `signal` once it aborted (the caller went away). */
function throwIfGone(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw signal.reason;
}

export class Node {
  readonly id: NodeId;
  private readonly raft: RaftNode;
  private readonly storage: NodeStorage;
  /** fsm: the replicated state machine over the storage's state (every entry's meaning). */
  private readonly fsm: StateMachine;
  private readonly transport: MessageSender;
  private readonly onMemberRemoved: ((id: NodeId) => void) | undefined;
  /** removedIds: the ids this node applied a removal of since it started, oldest first (wasRemoved). */
  private readonly removedIds = new Set<NodeId>();
  /** vouches: which senders outside the configuration a voter of it vouched for (peerVouch); null when the transport cannot ask. */
  private readonly vouches: Vouches | null;
  /** membershipProofs: signs this leader's configuration entries (NodeOptions.membershipProofs); null: they carry no proof. */
  private readonly membershipProofs: MembershipProofs | null;
  /** attestChecked: the committed configuration's proofs and term maybeAttest last looked at, and what is left to attest of them (null: nothing). */
  private attestChecked: { proofs: readonly string[] | null; term: number; target: ProofToSign | null } = { proofs: null, term: 0, target: null };
  /** removalNews: what the voters of its configuration tell this node of removed members and of its own log (src/node/removal-news.ts); null when the transport cannot ask. */
  private readonly removalNews: RemovalNews | null;
  private readonly log: Logger;
  private readonly timings: NodeTimings;
  private readonly maxPendingProposals: number;
  /** writesPerSourceMax: writes one member may have forwarded and in flight here at once (see WRITE_SHARES). */
  private readonly writesPerSourceMax: number;
  /** forwardedInFlight: each member's forwarded writes appended here and not yet settled. */
  private readonly forwardedInFlight = new Map<NodeId, number>();
  private readonly initialAddresses: Readonly<Record<NodeId, string>>;
  private readonly dialAddresses: Readonly<Record<NodeId, string>>;
  private readonly clock: Clock;
  private readonly bugs: TestOnlyBugs;
  private ticker: TimerHandle | undefined;
  /** lastTickAtMs: when onTick last ran (the clock's), to tell the core of the tick periods its ticks missed (missedTicks). */
  private lastTickAtMs: number | null = null;
  private running = false;
  private kicked = false;
  private stopped = false;
  private failure: Error | null = null;
  private readyGen = 0;
  /** midSaveAllowed: a plain Ready's save is in flight (scheduleMidSave); midSaveTimer: its next turn, when set. */
  private midSaveAllowed = false;
  private midSaveTimer: TimerHandle | undefined;
  private readonly proposals = new Map<number, PendingProposal>();
  /** forwardQueue: a follower's KV writes on their way to the leader (null: the transport cannot forward). */
  private readonly forwardQueue: ForwardQueue | null;
  private readonly reads = new Map<string, PendingRead>();
  private readSeq = 0;
  /** readEpoch: random per boot; read contexts are `<id>/<epoch>/<seq>`, unique across restarts. */
  private readonly readEpoch: string;
  /** savedHardState: the term and vote last made durable (a leader's appends wait for its term to be). */
  private savedHardState: { term: number; vote: NodeId };
  /**
   * replyWaiters: RPC answers held until the state they depend on is
   * persisted. A failed persist rejects them (the answers are dropped, never
   * sent): a vote or an append ack must not leave before its write is durable.
   */
  private replyWaiters: ReplyWaiter[] = [];
  /** readIndexWaiters: forwarded ReadIndex RPCs waiting for the leader's answer, by peer and context. */
  private readonly readIndexWaiters = new Map<string, (m: Message) => void>();
  /** readIndexWaitersOf: how many of readIndexWaiters each peer has (at most readsPerSourceMax). */
  private readonly readIndexWaitersOf = new Map<NodeId, number>();
  /** readsPerSourceMax: linearizable reads one source (a member, or this node's clients) may have waiting (see READ_SHARES). */
  private readonly readsPerSourceMax: number;
  /**
   * applyQueue: committed entries handed over by Readies, and snapshots to
   * install, applied in order by the apply worker (an install waits for the
   * entries before it; the entries after it wait for the install).
   */
  private applyQueue: (Entry | SnapshotInstall)[] = [];
  private applying = false;
  private applyIdleWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  /** leaderWaiters: transferLeadership calls waiting for `to` to lead (noteLeader). */
  private readonly leaderWaiters = new Set<{ readonly to: NodeId; readonly resolve: () => void }>();
  private peersKey = '';
  private peersMembership: Membership | null = null;
  /** lastLeaderContactAtMs: when (clock.nowMs) this node last heard from a leader; null if never. */
  private lastLeaderContactAtMs: number | null = null;
  private readonly snapshots: SnapshotManager | undefined;
  private readonly metrics: NodeMetrics | undefined;
  private readonly disk: DiskGuard | undefined;
  private snapshotting = false;
  /** askedWaiting: snapshotNow calls waiting for their turn (no automatic snapshot starts meanwhile). */
  private askedWaiting = 0;
  /** adopting: the leader's snapshot of a restored state is being fetched and kept as this node's (adoptLeaderSnapshot). */
  private adopting = false;
  /** creation: the snapshot takeSnapshot is creating now: its abort, and whether a caller still waits for it (see snapshotNow). */
  private creation: { readonly abort: AbortController; waited: boolean } | null = null;
  /** shared: the snapshot being made for downloads, which later downloads whose writes it holds share (downloadSnapshot). */
  private shared: SharedCreation | null = null;
  /** snapshotSoon: take a snapshot at the next chance (after a restore). */
  private snapshotSoon = false;
  /** appliedBytes: the bytes of every entry handed to the apply worker since this node started; logBytesBase: its value at the newest snapshot (SnapshotPolicy.snapshotLogBytes). */
  private appliedBytes = 0;
  private logBytesBase = 0;
  /** installFailuresInRow: fetched snapshots refused by their install in a row; the next is asked for after a backoff. */
  private installFailuresInRow = 0;
  /** baseLost: started with the log's base snapshot lost and the state machine at or past it: a snapshot of it is taken at once. */
  private baseLost = false;
  /**
   * rebuildFailing: while baseLost, building the snapshot failed (or the disk
   * is below its reserve, so none is tried); the core was told
   * (RaftNode.snapshotRebuildFailed). strandedNote: what noteStranded last logged.
   */
  private rebuildFailing = false;
  private strandedNote = '';
  /** handOffsLogged: the core's snapshotHandOff.count noteStranded last logged. */
  private handOffsLogged = 0;
  /** snapshotFailures: automatic snapshots failed in a row; the next waits until snapshotRetry fires. */
  private snapshotFailures = 0;
  private snapshotRetry: TimerHandle | undefined;
  /**
   * pacedUntilMs: an automatic snapshot due by its entries or log bytes alone starts no sooner (see
   * AUTO_SNAPSHOT_PACE); pacer: the timer that looks again then.
   */
  private pacedUntilMs = 0;
  private pacer: TimerHandle | undefined;
  /** fetching: the snapshot this follower is fetching from its leader. */
  /** fetching: the snapshot being fetched, from whom (the leader that offered it), when a byte last came, and how to stop it. */
  private fetching: { meta: SnapshotMeta; from: NodeId; progressAtMs: number; bytes: number; abort: AbortController } | null = null;
  /** fetched: a verified snapshot waiting to be installed between two Ready cycles. */
  private fetched: { meta: SnapshotMeta; stored: StoredSnapshot } | null = null;
  /** installQueued: woken when a fetched snapshot's install is queued (a restore waiting for one in its place, see installBaseInstead). */
  private installQueued: (() => void) | null = null;
  /** snapshotStats: counters for status and metrics. */
  readonly snapshotStats = {
    created: 0,
    installed: 0,
    fetchFailures: 0,
    chunkHashFailures: 0,
    bytesReceived: 0,
    restoresFailed: 0,
    /** imageRestores / imageFallbacks: restores applied from the leader's state image / from this node's archive after the image failed. */
    imageRestores: 0,
    imageFallbacks: 0,
    /** imagesServed: FetchStateImage streams this node began to serve. */
    imagesServed: 0,
  };
  /** stateImages: NodeOptions.stateImages. */
  private readonly stateImages: boolean;
  /** verifyImageRecords: NodeOptions.verifyImageRecords. */
  private readonly verifyImageRecords: boolean;
  /** imageBuilding: the restore entry whose state image this node (the leader) is building, null when none. */
  private imageBuilding: number | null = null;
  /** imageDrop: drops the kept state image IMAGE_KEEP_MS after its restore. */
  private imageDrop: TimerHandle | undefined;
  /** imageTransfers: FetchStateImage streams being served; imageTransfersTo: those per member asking. */
  private imageTransfers = 0;
  private readonly imageTransfersTo = new Map<NodeId, number>();
  /** restoreFailure: the last restore entry this node skipped because its archive failed to apply. */
  private restoreFailure: { readonly index: number; readonly error: string } | null = null;
  /** applyingFromIndex: the first index of the batch the apply worker is applying (Infinity between batches); status() reports applied below it. */
  private applyingFromIndex = Infinity;
  /** archives: the archives of cluster restores (uploads, stagings, fetches at apply time, pruning); null without a snapshot manager. */
  private readonly archives: RestoreArchives | null;
  /** stopAbort aborts at stop(): transfers that are not tracked elsewhere (a restore's archive fetched at apply time) end with it. */
  private readonly stopAbort = new AbortController();
  /**
   * membershipBaseIndex: the index of the snapshot the core took its base
   * membership from (at start, or the last one installed over a reset log);
   * raft.membershipAt is exact only at or after it.
   */
  private membershipBaseIndex = 0;

  private constructor(opts: NodeOptions, raft: RaftNode, fsm: StateMachine, saved: { term: number; vote: NodeId }) {
    this.id = opts.id;
    this.clock = opts.clock;
    this.readEpoch = bootEpoch(opts.rng);
    this.savedHardState = saved;
    this.raft = raft;
    this.storage = opts.storage;
    this.fsm = fsm;
    this.transport = opts.transport;
    this.log = opts.logger ?? silentLogger;
    const ask = opts.transport.askMembership?.bind(opts.transport);
    this.vouches =
      ask === undefined
        ? null
        : new Vouches({
            selfId: opts.id,
            clock: opts.clock,
            log: this.log,
            configuration: () => ({ membership: this.raft.brief().membership, index: this.raft.membershipIndex() }),
            ask,
            ...(opts.membershipProofs !== undefined ? { proofs: opts.membershipProofs } : {}),
          });
    this.membershipProofs = opts.membershipProofs ?? null;
    this.removalNews =
      ask === undefined
        ? null
        : new RemovalNews({
            selfId: opts.id,
            clock: opts.clock,
            log: this.log,
            configuration: () => ({ membership: this.raft.brief().membership, index: this.raft.membershipIndex() }),
            state: () => this.raft.brief(),
            termAt: (index) => this.raft.logTerm(index),
            ask,
            holdLeadership: (held) => {
              if (this.stopped) return;
              this.raft.holdLeadership(held);
              this.noteLeader();
              this.kick();
            },
          });
    this.onMemberRemoved = opts.onMemberRemoved;
    this.timings = { ...DEFAULT_TIMINGS, ...opts.timings };
    this.maxPendingProposals = opts.maxPendingProposals ?? 10_000;
    this.writesPerSourceMax = Math.max(1, Math.floor(this.maxPendingProposals / WRITE_SHARES));
    this.readsPerSourceMax = Math.max(1, Math.floor((opts.raft?.maxPendingReads ?? PENDING_READS_MAX_DEFAULT) / READ_SHARES));
    this.initialAddresses = opts.initialMembership.addresses;
    this.dialAddresses = opts.dialAddresses ?? {};
    this.snapshots = opts.snapshots;
    const streams = opts.transport.openSnapshotStream?.bind(opts.transport);
    if (opts.snapshots !== undefined && streams !== undefined) opts.snapshots.streams = { openSnapshotStream: streams };
    this.metrics = opts.metrics;
    this.disk = opts.diskGuard;
    this.bugs = opts.testOnlyBugs ?? {};
    this.stateImages = opts.stateImages ?? true;
    this.verifyImageRecords = opts.verifyImageRecords ?? false;
    const stage = opts.transport.stageArchive?.bind(opts.transport);
    this.archives =
      opts.snapshots === undefined
        ? null
        : new RestoreArchives({
            id: this.id,
            snapshots: opts.snapshots,
            clock: this.clock,
            log: this.log,
            disk: this.disk,
            timings: this.timings,
            stageArchive: stage,
            stopSignal: this.stopAbort.signal,
            stopped: () => this.stopped,
            checkRunning: () => this.checkRunning(),
            dialAddressOf: (id) => this.dialAddressOf(id),
            holdersFirstLeader: () => this.holdersFirstLeader(),
          });
    const forward = opts.transport.forwardProposals?.bind(opts.transport);
    this.forwardQueue =
      forward === undefined
        ? null
        : new ForwardQueue({
            id: this.id,
            clock: this.clock,
            maxQueued: this.maxPendingProposals,
            rpcTimeoutMs: this.timings.proposalTimeoutMs + FORWARD_RPC_MARGIN_MS,
            retryMs: this.timings.tickMs,
            view: () => {
              const b = this.raft.brief();
              return { leader: b.leader, term: b.term, transferring: b.role === 'leader' && this.raft.transferee() !== NO_NODE };
            },
            send: forward,
            proposeHere: (data) => this.proposeData(data),
          });
  }

  /** start loads the persisted state, builds the core and starts ticking. */
  static async start(opts: NodeOptions): Promise<Node> {
    const timings = { ...DEFAULT_TIMINGS, ...opts.timings };
    const state = await opts.storage.load();
    // The membership the log starts from is the one persisted with its base; --peers only bootstraps a new data dir.
    const startMembership = state.logBase.membership ?? (await opts.storage.bootstrap(opts.initialMembership)) ?? opts.initialMembership;
    const snapshot: SnapshotMeta =
      opts.snapshots !== undefined
        ? await opts.snapshots.boot(startMembership)
        : { index: 0, term: 0, membership: startMembership, sizeBytes: 0, digest: '' };
    const lostBase = await checkBootBase(opts.id, state.logBase, snapshot, opts.snapshots);
    const cfg = defaultRaftConfig(
      opts.id,
      opts.rng,
      {
        electionTimeoutTicks: timings.electionTimeoutTicks,
        heartbeatIntervalTicks: timings.heartbeatIntervalTicks,
        // Without a snapshot manager (tests only: serve always has one) no snapshot can start a joiner.
        joinBySnapshot: opts.snapshots !== undefined,
        ...opts.raft,
      },
    );
    const fsm = await StateMachine.open(opts.storage, opts.testOnlyBugs?.reappliesRetries === true ? { testOnlyReappliesRetries: true } : {});
    const applied = fsm.appliedIndex();
    const Core = opts.testOnlyBugs?.core ?? RaftNode;
    const raft = new Core(cfg, {
      hardState: state.hardState,
      snapshot,
      logBase: state.logBase,
      entries: state.entries,
      applied,
      ...(lostBase !== undefined ? { lostBase } : {}),
    });
    const node = new Node(opts, raft, fsm, { term: state.hardState.term, vote: state.hardState.vote });
    if (lostBase !== undefined) node.startWithoutBase(lostBase, snapshot.index);
    node.archives?.refs.noteEntries(state.entries);
    node.membershipBaseIndex = lostBase?.index ?? snapshot.index;
    opts.snapshots?.keepWhileInUse(() => raft.snapshotsInUse());
    if (opts.snapshots !== undefined) {
      opts.snapshots.onNewestLost = (lost) => node.snapshotLost(lost);
      const metrics = opts.metrics;
      if (metrics !== undefined) opts.snapshots.reportScrubsTo((run) => metrics.noteScrub(run));
      // The periodic scrub (policy.scrubIntervalMs; off when absent): its timers on the node's clock, its jitter from
      // the node's randomness.
      opts.snapshots.startPeriodicScrub(opts.rng);
    }
    node.warnPeersMismatch(opts.initialMembership);
    await opts.diskGuard?.start();
    node.syncPeers();
    node.ticker = opts.clock.setInterval(() => node.onTick(), timings.tickMs);
    node.ticker.unref();
    node.kick();
    opts.logger?.info(
      { id: opts.id, term: state.hardState.term, lastIndex: raft.status().lastIndex, applied },
      'node started',
    );
    return node;
  }

  /**
   * warnPeersMismatch reports (one warning naming both) when the starting
   * membership given (--peers) differs from the one this data dir persisted
   * and the log built on it: --peers only bootstraps an empty data dir, it is
   * never applied over a persisted membership.
   */
  private warnPeersMismatch(given: Membership): void {
    const persisted = this.raft.brief().membership;
    if (sameMembership(given, persisted)) return;
    this.log.warn(
      { peers: describeMembership(given), persisted: describeMembership(persisted) },
      `--peers (${describeMembership(given)}) differs from the membership persisted in the data dir (${describeMembership(persisted)}); ` +
        'keeping the persisted one: --peers only bootstraps an empty data dir. Change members with `snapcoord cluster add/remove`; ' +
        'reach a peer that moved with --peer-dial',
    );
  }

  // ------------------------------------------------------------ public operations

  /**
   * propose replicates a KV command and resolves with its apply result once
   * applied on this node. On a follower whose transport forwards proposals,
   * the command goes to the leader in a batch (ForwardQueue: `busy` when its
   * queue is full, `timeout` when the outcome is unknown, `lost` when
   * another leader's entry replaced it); otherwise a follower fails `notLeader`.
   * On a leader that hands leadership over (a planned stop's handoff), the
   * command waits in that queue too instead of failing `busy`: it goes to the
   * new leader once one leads, or is proposed here if the transfer is abandoned.
   */
  async propose(cmd: KvCommand): Promise<ApplyResult> {
    const data = encodeCommand(cmd);
    if (this.forwardQueue !== null && (this.raft.brief().role !== 'leader' || this.raft.transferee() !== NO_NODE)) {
      this.checkRunning();
      this.disk?.check();
      if (this.forwardQueue.size + this.proposals.size >= this.maxPendingProposals) {
        throw new NodeError('busy', `too many writes in flight here (${this.forwardQueue.size + this.proposals.size}); retry later`);
      }
      // The leader takes at most this member's share of its write slots (WRITE_SHARES): the rest wait here.
      if (this.forwardQueue.size >= this.writesPerSourceMax) {
        throw new NodeError('busy', `${this.forwardQueue.size} writes forwarded from here are in flight (at most ${this.writesPerSourceMax}, this member's share of the leader's); retry later`);
      }
      return this.forwardQueue.forward(data, this.timings.proposalTimeoutMs);
    }
    return this.proposeData(data);
  }

  /**
   * membershipFor serves GetMembership (the transport's RaftRequestHandler; the
   * peer guard admitted the asker as a member): this node's latest
   * configuration, committed or not, and its term; as the leader, the last
   * entry the asker acknowledged to it (askerMatchIndex). A node started with
   * --join takes the answer that names it (src/node/join.ts); one starting from
   * a new data dir refuses to start when a leader holds its acknowledgement
   * (checkLogNotLost).
   */
  membershipFor(q: MembershipQuery): MembershipAnswer {
    const st = this.raft.brief();
    const membershipIndex = this.raft.membershipIndex();
    // The commit index, and this node's term of the asker's probe index when it holds that entry committed: the asker
    // learns from them which members were removed for good and whether its own committed entries are the cluster's
    // (src/node/removal-news.ts).
    const probe = q.probeIndex !== undefined && q.probeIndex > 0 && q.probeIndex <= st.commit ? (this.raft.logTerm(q.probeIndex) ?? 0) : 0;
    const answer = {
      from: this.id,
      term: st.term,
      membership: st.membership,
      ...(membershipIndex > 0 ? { membershipIndex } : {}),
      ...(st.commit > 0 ? { commitIndex: st.commit } : {}),
      ...(probe > 0 ? { probeTerm: probe } : {}),
    };
    if (st.role !== 'leader') return answer;
    // What the asker acknowledged to this leader: a node starting from a new data dir that did lost that log.
    const match = this.raft.status().progress[q.from]?.match ?? 0;
    return match > 0 ? { ...answer, askerMatchIndex: match } : answer;
  }

  /**
   * proposeForwarded serves Propose (the transport's RaftRequestHandler): as
   * the leader, it appends a follower's proposals in order and resolves once
   * each is applied here (its encoded result) or failed (`lost`, `timeout`,
   * `shuttingDown`); it stops appending at the first it cannot take (refused:
   * `busy`, `diskFull`, `unavailable`). Not the leader: nothing is appended,
   * all refused `notLeader`.
   */
  async proposeForwarded(p: ForwardProposalsParams): Promise<ForwardedProposals> {
    // What a follower forwards is its clients' KV commands (propose), nothing else: an ops record or a restore entry
    // (the server's own) or bytes that decode as no KV command are refused whole, none appended. The leader appended
    // whatever came: any member could set the snapshot schedule's last run, or log a restore entry of an archive
    // nobody holds, failing every node that applied it (at every restart: it stays in the log).
    for (const [i, data] of p.data.entries()) {
      try {
        decodeCommand(data);
      } catch (e) {
        throw coded(3, `proposal ${i} from ${p.from} is not a KV command (${(e as Error).message}); a member forwards its clients' writes only`);
      }
    }
    const st = this.raft.brief();
    if (this.stopped || this.failure !== null) return { term: st.term, outcomes: [], refused: { code: 'shuttingDown', message: `${this.id} is stopping` } };
    if (st.role !== 'leader') return { term: st.term, outcomes: [], refused: { code: 'notLeader', message: `${this.id} is not the leader` } };
    // Handing leadership over: nothing appended, refused `notLeader` so that the follower keeps the writes and sends them
    // to the next leader (ForwardQueue requeues them), rather than `busy`, which fails them back to its clients.
    const transferee = this.raft.transferee();
    if (transferee !== NO_NODE) return { term: st.term, outcomes: [], refused: { code: 'notLeader', message: `${this.id} is handing leadership to ${transferee}` } };
    const applied: Promise<ApplyResult>[] = [];
    let refused: { code: string; message: string } | undefined;
    const settled = (): void => {
      const n = (this.forwardedInFlight.get(p.from) ?? 1) - 1;
      if (n > 0) this.forwardedInFlight.set(p.from, n);
      else this.forwardedInFlight.delete(p.from);
    };
    for (const data of p.data) {
      try {
        if (applied.length === 0) this.disk?.check();
        if (this.proposals.size >= this.maxPendingProposals) throw new NodeError('busy', `too many writes in flight on the leader (${this.proposals.size})`);
        const mine = this.forwardedInFlight.get(p.from) ?? 0;
        if (mine >= this.writesPerSourceMax) {
          throw new NodeError('busy', `${p.from} has ${mine} forwarded writes in flight on the leader (at most ${this.writesPerSourceMax}, a member's share)`);
        }
        const pending = this.awaitApply(this.proposeInCore(data), this.timings.proposalTimeoutMs);
        this.forwardedInFlight.set(p.from, mine + 1);
        pending.then(settled, settled);
        applied.push(pending);
      } catch (e) {
        refused = e instanceof NodeError ? { code: e.code, message: e.message } : { code: 'unavailable', message: String(e) };
        break;
      }
    }
    if (applied.length > 0) this.kick();
    const outcomes = (await Promise.allSettled(applied)).map((s): ForwardedOutcome => {
      if (s.status === 'fulfilled') return { result: encodeApplyResult(s.value) };
      const e = s.reason as unknown;
      return { error: e instanceof NodeError ? { code: e.code, message: e.message } : { code: 'unavailable', message: String(e) } };
    });
    return refused === undefined ? { term: st.term, outcomes } : { term: st.term, outcomes, refused };
  }

  /** proposeInCore appends `data` to the core's log as the leader (`busy` when the apply queue is long; the core's errors mapped). */
  private proposeInCore(data: Uint8Array): { index: number; term: number } {
    if (this.applyQueue.length > APPLY_QUEUE_ENTRIES_MAX) {
      throw new NodeError('busy', `${this.applyQueue.length} committed entries are waiting to be applied here; retry later`);
    }
    // Not the leader: the error the core would throw, mapped, without the core's throw and catch (a client at a
    // follower, or between two leaders, gets this at every write; the core checks its role first as well).
    const st = this.raft.brief();
    if (st.role !== 'leader') throw new NodeError('notLeader', notLeaderMessage(st.leader), st.leader, this.addressOf(st.leader));
    try {
      return this.raft.propose(data);
    } catch (e) {
      throw this.mapCoreError(e);
    }
  }


  /** proposeOpsRecord replicates the ops record `name` = `value` (ops-record.ts: kept where clients never see it). OpsRecordError for a bad name or size. */
  async proposeOpsRecord(name: string, value: Uint8Array): Promise<ApplyResult> {
    return this.proposeData(encodeOpsRecord(name, value));
  }

  /** opsRecord reads the ops record `name`: linearizable (ReadIndex) unless serializable is set. */
  async opsRecord(name: string, serializable = false): Promise<Uint8Array | undefined> {
    if (!serializable) await this.linearizableBarrier();
    return this.readChecked(this.fsm.opsRecord(name));
  }

  /** get reads a key: linearizable (ReadIndex) unless serializable is set (local, possibly stale). */
  async get(key: Uint8Array, serializable = false): Promise<Uint8Array | undefined> {
    if (!serializable) await this.linearizableBarrier();
    return this.readChecked(this.fsm.get(key));
  }

  async range(q: KvRangeQuery, serializable = false): Promise<KvRangeResult> {
    if (!serializable) await this.linearizableBarrier();
    return this.readChecked(this.fsm.range(q));
  }

  /**
   * readChecked: a client's read of the state machine. A record that does not verify (StorageError `corrupt`: a
   * byte damaged on disk, met by its checksum) fails the read and the node (see failIfCorrupt).
   */
  private async readChecked<T>(read: Promise<T>): Promise<T> {
    try {
      return await read;
    } catch (e) {
      this.failIfCorrupt(e);
      throw e;
    }
  }

  /**
   * failIfCorrupt stops the node (fail) when `e` is StorageError `corrupt`: its state machine is not what it
   * applied, every snapshot or read of that record fails the same way, and a leader in that state never again sends
   * a snapshot (a member that joins or falls behind waits for good: simulator seed 210903). Stopped, another member
   * leads, and the data dir is to be replaced.
   */
  private failIfCorrupt(e: unknown): void {
    if (e instanceof StorageError && e.code === 'corrupt') this.fail(e);
  }

  /**
   * changeMembership proposes a single-server change and resolves once it is
   * applied here. Refused `unavailable` (retry) while the voters after it that
   * applied the newest restore entry this node knows of would not make a
   * quorum of them: the restore's archive lives outside the log, held by the
   * voters when it was proposed, and reaches a new member only from one that
   * holds it (RaftNode.proposeConfChange's appliedFloor). That entry is the
   * newer of the newest one noted in the log since the process started
   * (RestoreRefs.newestIndex: proposed, not yet applied here) and the last one
   * its state applied (StateMachine.lastRestoreIndex: kept across restarts
   * and compactions, and in snapshots; unreadable: unreadableRestoreFloor).
   * Refused `failedPrecondition`, nothing proposed, when the voters after it
   * that the leader heard from within an election timeout would make no
   * quorum of them (strict reconfiguration: RaftNode.proposeConfChange); the
   * message names the unreachable ones. When the leader has not had that
   * long yet to hear from the voters it lacks (it was just elected), it asks
   * again each tick until it has.
   */
  async changeMembership(cc: ConfChange): Promise<void> {
    this.checkRunning();
    this.disk?.check();
    let floor = 0;
    if (this.bugs.changesIgnoreRestores !== true) {
      let applied: number;
      try {
        applied = await this.readChecked(this.fsm.lastRestoreIndex());
      } catch (e) {
        applied = this.unreadableRestoreFloor(e);
      }
      floor = Math.max(this.archives?.refs.newestIndex() ?? 0, applied);
    }
    this.checkRunning(); // stopped during the read
    // A leader that took office (or added a member) just now may not have heard yet from a live voter the change
    // needs: the core says `undecided`, and the change is proposed again each tick until the core's window (counted in
    // its ticks) has passed, by when each such voter has answered or is known silent. The wall-clock bound is a
    // backstop only (four windows and a second: ticks lag on a loaded machine).
    const windowMs = CONF_CHANGE_HEARD_ELECTION_TIMEOUTS * this.timings.electionTimeoutTicks * this.timings.tickMs;
    const undecidedUntilMs = this.clock.nowMs() + 4 * windowMs + 1_000;
    let pos;
    for (;;) {
      try {
        pos = this.raft.proposeConfChange(cc, floor, this.proveConfChange);
        break;
      } catch (e) {
        // This leader's attest entry (maybeAttest: the commit statement of the change before) commits within a
        // round trip: a change proposed right after the previous one was applied waits for it, not refused.
        const attesting = e instanceof MembershipChangeError && this.raft.attestationPending();
        if (!((attesting || (e instanceof ConfChangeUnreachableError && e.undecided)) && this.clock.nowMs() < undecidedUntilMs)) throw this.mapCoreError(e);
      }
      await this.clock.sleep(this.timings.tickMs);
      this.checkRunning();
    }
    await this.waitApplied(pos.index, pos.term);
  }

  /**
   * proveConfChange: the proof of the configuration entry this leader appends at `at` (src/node/membership-proofs.ts),
   * or null when it cannot sign (no signer; the signer failed: the change goes ahead without one, logged).
   */
  private readonly proveConfChange = (at: { readonly index: number; readonly term: number }, next: Membership): string | null => {
    if (this.membershipProofs === null) return null;
    try {
      return this.membershipProofs.sign({ index: at.index, term: at.term, voters: next.voters, learners: next.learners });
    } catch (e) {
      this.log.warn({ index: at.index, err: e instanceof Error ? e.message : String(e) }, 'the configuration entry is appended without a proof: signing it failed (a member that missed it may not vouch for the members it adds)');
      return null;
    }
  };

  /**
   * maybeAttest: as the leader, appends the commit statement of a configuration entry its committed log holds
   * (attestationTarget, signed by this node: Raft.proposeAttestation's attest entry), one at a time; the receivers
   * of a member's proofs take a configuration only with it (src/node/membership-proofs.ts). Looked at once per
   * committed configuration and term (attestChecked). Without a signer (plaintext) nothing.
   */
  private maybeAttest(): void {
    const proofs = this.membershipProofs;
    if (proofs === null || this.failure !== null || this.stopped) return;
    const st = this.raft.brief();
    if (st.role !== 'leader') return;
    const committed = this.raft.membershipAt(st.commit).proofs;
    if (committed === undefined) return;
    let c = this.attestChecked;
    if (c.proofs !== committed || c.term !== st.term) {
      c = { proofs: committed, term: st.term, target: attestationTarget(committed, st.commit) };
      this.attestChecked = c;
    }
    const target = c.target;
    if (target === null) return;
    let signFailed = false;
    const pos = this.raft.proposeAttestation(() => {
      try {
        return proofs.sign(target);
      } catch (e) {
        signFailed = true;
        this.log.warn({ index: target.index, err: e instanceof Error ? e.message : String(e) }, 'no commit statement of a configuration entry: signing it failed (a member that missed it may not vouch for the members it adds)');
        return null;
      }
    });
    // Proposed, or signing failed: nothing more for this configuration and term (the attest entry, once committed,
    // makes another; signing is tried again at the next). Else (another change in flight, this term's first entry
    // not committed yet, a transfer) proposed again at the next turn.
    if (pos !== null || signFailed) c.target = null;
    if (pos !== null) this.log.debug({ index: pos.index, of: target.index }, 'commit statement of a configuration entry appended');
  }

  /**
   * unreadableRestoreFloor: the floor changeMembership takes when reading the state's restore record failed with
   * `e`. A record this build cannot read (StorageError `unknownFormat`: another build's format, e.g. after a
   * rollback) is neither taken for 0 nor allowed to hold every change for good: the state's applied index stands
   * for it (or the commit index, if higher), at or above the entry whose apply wrote the record. The gate then
   * waits until a quorum of the new voters has applied up to that index, which only delays a change of the voters;
   * refusing every change held them for good (a dead member's removal included) until a restore rewrote the
   * record, and refused learner changes, which need no floor. Any other error is thrown (a `corrupt` record has
   * stopped the node: readChecked).
   */
  private unreadableRestoreFloor(e: unknown): number {
    if (!(e instanceof StorageError && e.code === 'unknownFormat')) throw e;
    const floor = Math.max(this.fsm.appliedIndex(), this.raft.brief().commit);
    this.log.warn({ err: e.message, floor }, 'the state\'s restore record is unreadable: a change of the voters waits until a quorum of them applied up to this index instead');
    return floor;
  }

  /** transferLeadership asks the leader (this node) to hand over to `to`; resolves when `to` leads or rejects on timeout. */
  async transferLeadership(to: NodeId, timeoutMs = 3_000): Promise<void> {
    this.checkRunning();
    try {
      this.raft.transferLeadership(to);
    } catch (e) {
      throw this.mapCoreError(e);
    }
    this.kick();
    if (this.raft.brief().leader === to) return;
    // Woken when the leader this node knows changes (noteLeader), not by polling: one timer, the deadline.
    await new Promise<void>((resolve, reject) => {
      const waiter = { to, resolve: (): void => done(null) };
      const done = (err: NodeError | null): void => {
        this.leaderWaiters.delete(waiter);
        this.clock.clearTimeout(timer);
        if (err === null) resolve();
        else reject(err);
      };
      const timer = this.clock.setTimeout(() => done(new NodeError('timeout', `leadership did not move to ${to} within ${timeoutMs} ms`)), timeoutMs);
      this.leaderWaiters.add(waiter);
    });
  }

  /** noteLeader wakes the transferLeadership calls waiting for the leader this node now knows (called wherever the core may have changed it). */
  private noteLeader(): void {
    if (this.leaderWaiters.size === 0) return;
    const leader = this.raft.brief().leader;
    for (const w of [...this.leaderWaiters]) if (w.to === leader) w.resolve();
  }

  /** campaign makes this node start an election now (used by tests and operators). */
  campaign(): void {
    this.raft.campaign();
    this.kick();
  }

  /** lastLeaderContactMs: ms since this node last heard from a leader (0 on the leader itself). */
  lastLeaderContactMs(): number {
    if (this.raft.brief().role === 'leader') return 0;
    return this.lastLeaderContactAtMs === null ? -1 : this.clock.nowMs() - this.lastLeaderContactAtMs;
  }

  /** status: the core's view, with `applied` the state machine's own applied index (the apply worker may trail the core). */
  status(): NodeStatus {
    const st = this.raft.status();
    return {
      ...st,
      applied: Math.min(st.applied, this.fsm.appliedIndex(), this.applyingFromIndex - 1),
      leaderAddress: this.addressOf(st.leader),
      diskFull: this.disk?.isFull ?? false,
      restoreFailure: this.restoreFailure,
      refusedBy: Object.fromEntries(this.transport.refusals?.() ?? []),
      ...(this.snapshots !== undefined ? { snapshotScrub: this.snapshots.scrubStatus() } : {}),
    };
  }

  /**
   * brief: what a request path reads on every call (role, leader and its
   * address, term, applied as in status()), without status()'s per-peer
   * progress copies.
   */
  brief(): NodeBrief {
    const st = this.raft.brief();
    // Spelled out rather than spread: a spread with added fields takes V8's slow path, and this runs on every request.
    return {
      id: st.id,
      term: st.term,
      vote: st.vote,
      role: st.role,
      leader: st.leader,
      commit: st.commit,
      applied: Math.min(st.applied, this.storage.appliedIndex(), this.applyingFromIndex - 1),
      firstIndex: st.firstIndex,
      snapshotIndex: st.snapshotIndex,
      membership: st.membership,
      leaderAddress: this.addressOf(st.leader),
    };
  }

  /** addressOf: the address `id` advertises in the membership ('' when unknown); what clients are told. */
  addressOf(id: NodeId): string {
    if (id === '') return '';
    return this.raft.brief().membership.addresses[id] ?? this.initialAddresses[id] ?? '';
  }

  /** stateDigest: the SHA-256 of the state machine (applied index and every record), read at one consistent point. */
  stateDigest(): Promise<string> {
    this.checkRunning();
    return this.readChecked(this.fsm.stateDigest());
  }

  /** isMember: `id` is a voter or learner of this node's newest configuration (in its log), or of its last committed one. */
  isMember(id: NodeId): boolean {
    const b = this.raft.brief();
    if (b.membership.voters.includes(id) || b.membership.learners.includes(id)) return true;
    // A configuration appended but not committed (a removal a deposed leader proposed) may yet be rolled back: a
    // member the last committed configuration names is still one. Refused, it could be this node's next leader,
    // whose appends alone roll that entry back, and no voter vouched for it: none had a configuration newer than
    // the uncommitted one (simulator seeds 473, 1406, 2442, ...: a node out of its cluster for good).
    const committed = this.raft.membershipAt(b.commit);
    return committed.voters.includes(id) || committed.learners.includes(id);
  }

  /**
   * wasRemoved: this node applied a change removing `id` since it started,
   * none adding it back since, and its configuration does not name it: the
   * peer plane refuses `id` even the Raft messages it passes from a sender
   * outside the configuration (peer-guard.ts), as etcd refuses a removed
   * member's. In memory: a node restarted since, or that learned of the
   * removal only through a snapshot, holds the id to the core's rules for
   * outsiders instead. A member removed and added back in entries this node
   * has not applied yet is refused until it applies them; if that member
   * leads meanwhile, this node waits (`cluster status` shows the refusal)
   * until another leads.
   */
  wasRemoved(id: NodeId): boolean {
    return this.removedIds.has(id) && !this.isMember(id);
  }

  /**
   * peerVouch: the peer plane's PeerVouch (PeerGuardOptions.vouch): a sender
   * this node's configuration does not name is taken only once a voter of it
   * vouched for it (src/node/vouches.ts). Undefined when the transport cannot
   * ask a member (no askMembership): such senders then reach the core.
   */
  get peerVouch(): PeerVouch | undefined {
    return this.vouches ?? undefined;
  }

  /**
   * removalNewsStats: what the voters of this node's configuration told it
   * (src/node/removal-news.ts): members removed for good and still refused,
   * messages refused and held, and whether its leadership is held (its log is
   * not the cluster's). Null when the transport cannot ask.
   */
  removalNewsStats(): RemovalNewsStats | null {
    return this.removalNews?.stats() ?? null;
  }

  /**
   * peerCrlChanged: the peer CRL changed (serve's --peer-crl reloaded; `isRevoked` asks it about a certificate
   * serial, hex): what this node trusts on a certificate's word is dropped or checked again now, not when it ages
   * out: every vouch (Vouches.crlChanged), and the removals and held leadership a voter told it over a certificate
   * it now revokes (RemovalNews.crlChanged). The caller closes the connections made before it (GrpcTransport.reconnect).
   */
  peerCrlChanged(isRevoked: (serial: string) => boolean): void {
    if (this.stopped) return;
    this.vouches?.crlChanged();
    this.removalNews?.crlChanged(isRevoked);
  }

  /** reportedRemoved: voters hold committed configurations newer than this node's that do not name `id` (two, or one no voter denies) (removal-news.ts). */
  reportedRemoved(id: NodeId): boolean {
    return this.removalNews?.reportedRemoved(id) ?? false;
  }

  /**
   * removedRefusal: why every peer call of `id` is refused while reportedRemoved(id) (the message its Raft messages
   * are refused with; RemovalNews.refusalOf, which counts it and asks the voters again), null when it is not:
   * PeerGuard's reportedRemoved, for the peer plane's other RPCs.
   */
  removedRefusal(id: NodeId): string | null {
    return this.removalNews?.refusalOf(id)?.message ?? null;
  }

  /** noteRemoved records `id` for wasRemoved, forgetting the oldest past REMOVED_IDS_MAX. */
  private noteRemoved(id: NodeId): void {
    this.removedIds.delete(id);
    this.removedIds.add(id);
    if (this.removedIds.size > REMOVED_IDS_MAX) {
      const oldest = this.removedIds.values().next().value;
      if (oldest !== undefined) this.removedIds.delete(oldest);
    }
  }

  /** dialAddressOf: where this node connects to reach `id`: its dial override, else its advertised address. */
  dialAddressOf(id: NodeId): string {
    if (id === '') return '';
    return Object.hasOwn(this.dialAddresses, id) ? (this.dialAddresses[id] as string) : this.addressOf(id);
  }

  // ------------------------------------------------------------ transport side

  /** receive steps a message that arrived as an RPC answer. */
  receive(m: Message): void {
    if (this.stopped) return;
    const ahead = this.termTooFarAhead(m);
    if (ahead !== null) {
      this.log.debug({ from: m.from, type: m.type, err: ahead }, 'dropping an answer from the far future');
      this.raiseTermFarAhead(m);
      return;
    }
    this.raft.step(m);
    this.kickIfWork();
  }

  /**
   * handleRequest steps a request from a peer and resolves with the answers
   * once the state they depend on is persisted (the transport's RaftRequestHandler).
   * A held append ack or vote grant of a term older than the node's once that
   * save is done is dropped, as a lost message would be: a request of the newer
   * term stepped before the promised state reached a Ready may have replaced it
   * unsaved (a conflicting append truncates entries, a new term's hard state
   * replaces the vote), so the save that released it need not hold it (seed
   * 621018: an ack of entry 102 of term 4 left once a term-5 append had cut the
   * log to 91). Within a term neither happens (Log Matching; one vote per term).
   */
  async handleRequest(m: Message): Promise<Message[]> {
    this.checkRunning();
    this.refuseFarAhead(m);
    const refusal = this.removalNews?.screen(m) ?? null;
    // Refused as the peer plane refuses a member this node saw removed: a voter holds its removal committed.
    if (refusal !== null) throw coded(7, `refused: ${refusal.message}`);
    if (m.type === 'readIndex') return this.handleReadIndexRequest(m);
    const replies = this.raft.stepForReplies(m);
    // Contact with the leader this node follows once stepped: an append or heartbeat the core dropped (another
    // member claiming to lead, 0c4571e; a learner's claim) is no contact, though its term is current.
    if ((m.type === 'append' || m.type === 'heartbeat') && m.from === this.raft.brief().leader) this.lastLeaderContactAtMs = this.clock.nowMs();
    this.noteLeader();
    if (!this.dependsOnUnsaved(replies)) {
      // What the step left to do (entries a heartbeat committed, messages) is done now, not at the next tick.
      if (this.raft.hasReady()) this.kick();
      return replies;
    }
    await this.persisted();
    const term = this.raft.brief().term;
    return replies.filter((r) => r.term >= term || !promisesDurable(r));
  }

  /**
   * dependsOnUnsaved: whether `replies` may leave only after the next save.
   * A heartbeat answer, a pre-vote answer and a refused vote promise nothing
   * durable: they go at once, unless the term or vote they are given in is
   * not saved yet. A vote grant and an append answer wait for the save of
   * the vote or the entries they promise (Raft §5.1, Figure 2).
   */
  private dependsOnUnsaved(replies: readonly Message[]): boolean {
    const st = this.raft.brief();
    if (st.term !== this.savedHardState.term || st.vote !== this.savedHardState.vote) return true;
    return replies.some((r) => !(r.type === 'heartbeatResp' || (r.type === 'voteResp' && (r.preVote || !r.granted))));
  }

  /** handleReport steps an asynchronous answer a peer sent us (snapshotResp). */
  handleReport(m: Message): void {
    this.refuseFarAhead(m);
    this.receive(m);
  }

  /** termTooFarAhead: why `m` is too far ahead of this node's term to be stepped (TERM_AHEAD_MAX), null when it is not. */
  private termTooFarAhead(m: Message): string | null {
    const term = this.raft.brief().term;
    if (m.term <= term + TERM_AHEAD_MAX) return null;
    return `term ${m.term} is more than ${TERM_AHEAD_MAX} ahead of ${this.id}'s (${term}); no honest member is so far ahead`;
  }

  /** refuseFarAhead throws INVALID_ARGUMENT (a coded Error) for a request whose term is too far ahead (termTooFarAhead). */
  private refuseFarAhead(m: Message): void {
    const ahead = this.termTooFarAhead(m);
    if (ahead !== null) throw coded(3, ahead);
  }

  /**
   * raiseTermFarAhead: `m`, an answer to this node's request, is too far ahead to be stepped, but the member that
   * answered is that far ahead (moved there by another member, TERM_AHEAD_MAX at a time, each move within the
   * bound): this node's term moves TERM_AHEAD_MAX towards it, as much as an answer within the bound may move it
   * (RaftNode.raiseTermFor: not a granted pre-vote), the answer itself not stepped. Without it two members more than
   * TERM_AHEAD_MAX apart never heard each other again (the one ahead refused as too far ahead by the other, its
   * answers dropped: peer-fuzz seed 3300000, no leader for good); now the one behind catches up, an election at a
   * time (its pre-vote answered with the term ahead). Requests too far ahead still move nothing. The terms are used
   * up no faster than by answers within the bound, which move a term as far.
   */
  private raiseTermFarAhead(m: Message): void {
    if (this.stopped || this.failure !== null) return;
    this.raft.raiseTermFor(m, this.raft.brief().term + TERM_AHEAD_MAX);
    this.kick();
  }

  /**
   * stageArchive serves StageArchive (the transport's RaftRequestHandler): it
   * resolves once this node holds a durable copy of the named archive in its
   * uploads, fetched from p.from (the leader), its bytes hashed as written
   * and equal to the digest the leader checked record by record before it
   * asked, and its declared size checked against the restore cap and this
   * node's free disk (SnapshotManager.fetchUpload states why the records are
   * not decoded again here) — at once when it holds it already. Concurrent requests for one archive
   * share one fetch. Rejects with a coded Error: UNIMPLEMENTED (no
   * snapshots), RESOURCE_EXHAUSTED (disk below its reserve, too many
   * stagings), INVALID_ARGUMENT (the archive is refused), UNAVAILABLE (the
   * node is stopping, the fetch failed), CANCELLED (`signal` aborted: the
   * caller gave up; the fetch stops once no caller waits for it).
   */
  async stageArchive(p: StageArchiveParams, signal?: AbortSignal): Promise<void> {
    this.checkStageAsker(p);
    if (this.archives === null) throw coded(12, 'this node keeps no snapshots');
    try {
      await this.archives.stage(p, signal);
    } catch (err) {
      this.disk?.noteError(err);
      this.log.warn({ digest: p.archive.digest, from: p.from, err: (err as Error).message }, 'staging a restore archive failed');
      throw stageError(err);
    }
  }

  /**
   * checkStageAsker: only the leader this node follows, in the term the
   * request names, may have it stage an archive (the leader stages before it
   * proposes a restore). Any member could otherwise have every node fetch
   * and keep up to STAGED_KEPT_MAX archives of its choosing, down to the
   * disk's reserve (review11). Throws a coded Error: PERMISSION_DENIED (this
   * node knows another leader of that term, or is it), FAILED_PRECONDITION
   * (another term, or no leader known yet: a leader whose first append has
   * not arrived may retry).
   */
  private checkStageAsker(p: StageArchiveParams): void {
    const st = this.raft.brief();
    if (p.term === st.term && st.leader === p.from && p.from !== this.id) return;
    const refused = `${this.id} refuses to stage an archive for ${p.from} in term ${p.term}: only the leader it follows may ask`;
    if (p.term !== st.term) throw coded(9, `${refused}, and its term is ${st.term}`);
    if (st.leader === '') throw coded(9, `${refused}, and it knows no leader of term ${st.term} yet; retry`);
    throw coded(7, `${refused}, and the leader of term ${st.term} is ${st.leader}`);
  }

  /** openSnapshot serves FetchSnapshot from this node's snapshot store. */
  async openSnapshot(p: FetchSnapshotParams): Promise<AsyncIterable<SnapshotChunk>> {
    this.checkRunning();
    if (this.snapshots === undefined) throw Object.assign(new Error('this node keeps no snapshots'), { code: 5 });
    const chunks = await this.snapshots.openChunks(p.from, p.index, p.digest, p.offset, p.chunkBytes);
    const metrics = this.metrics;
    if (metrics === undefined) return chunks;
    return {
      [Symbol.asyncIterator]: async function* () {
        for await (const c of chunks) {
          metrics.snapshotBytesSent.inc(c.data.length);
          yield c;
        }
      },
    };
  }

  /**
   * snapshotNow takes a snapshot of the state machine now and compacts the
   * log (operators, tests, downloads). It waits for a snapshot being created
   * unless nobody waits for that one (an automatic one, or one whose callers
   * all went away: their `signal`s aborted): that one is superseded (it stops
   * at its next gzip member and is not stored) and this one, of a newer
   * state, is taken at once. A caller's own snapshot is never superseded
   * while it waits (while its `signal` has not aborted; without a signal, to
   * the end).
   */
  async snapshotNow(signal?: AbortSignal, onViewStart?: (applied: number) => void): Promise<SnapshotMeta> {
    this.checkRunning();
    if (this.snapshots === undefined) throw new NodeError('invalid', 'this node keeps no snapshots');
    // While it waits for its turn no automatic snapshot starts (maybeSnapshot): under writes one started at every
    // apply between the superseded one's end and this loop's next look, each superseded in turn (7 in 0.5 s on a
    // leader of 4M keys, each reading the member table and starting a digest worker; the leader then missed its
    // followers past the election timeout).
    this.askedWaiting++;
    try {
      while (this.snapshotting) {
        this.checkRunning(); // a stop ends the wait
        // A caller that went away while it waited for its turn starts nothing (it would be superseded at once).
        if (signal?.aborted === true) throw signal.reason;
        const c = this.creation;
        if (c !== null && !c.waited && !c.abort.signal.aborted) c.abort.abort(new SnapshotSupersededError());
        await this.clock.sleep(this.timings.tickMs);
      }
    } finally {
      this.askedWaiting--;
    }
    // Looked at again after the wait: a caller that went away during the last sleep, whose turn came in it, starts
    // nothing either (the creation before it may end within that sleep; a small delta then ran to its end unaborted).
    this.checkRunning();
    if (signal?.aborted === true) throw signal.reason;
    this.disk?.check();
    this.snapshotting = true;
    try {
      return await this.takeSnapshot(signal ?? null, onViewStart);
    } finally {
      this.snapshotting = false;
    }
  }

  /**
   * handleReadIndexRequest serves a member's ReadIndex: its answer once the
   * core has one. Refused RESOURCE_EXHAUSTED ("busy: ...") while that member
   * has readsPerSourceMax reads waiting here (its share, READ_SHARES) or all
   * members together maxPendingProposals; INVALID_ARGUMENT for a context of
   * that member's already waiting (an honest one never repeats one).
   */
  private async handleReadIndexRequest(m: Extract<Message, { type: 'readIndex' }>): Promise<Message[]> {
    const key = `${m.from}\u0000${m.context}`;
    if (this.readIndexWaiters.has(key)) throw coded(3, `a read with this context from ${m.from} is already waiting`);
    if (this.readIndexWaiters.size >= this.maxPendingProposals) throw coded(8, `busy: too many reads waiting on ${this.id}`);
    const mine = this.readIndexWaitersOf.get(m.from) ?? 0;
    if (mine >= this.readsPerSourceMax) {
      throw coded(8, `busy: ${m.from} has ${mine} reads waiting on ${this.id}, its share of the leader's read slots (maxPendingReads / READ_SHARES)`);
    }
    const answer = new Promise<Message>((resolve) => this.readIndexWaiters.set(key, resolve));
    this.readIndexWaitersOf.set(m.from, mine + 1);
    const immediate = this.raft.stepForReplies(m);
    if (immediate.length > 0) {
      this.takeReadIndexWaiter(m.from, m.context);
      await this.persisted();
      return immediate;
    }
    this.kick();
    const timer = this.clock.setTimeout(() => {
      this.takeReadIndexWaiter(m.from, m.context)?.({ type: 'readIndexResp', from: this.id, to: m.from, term: 0, context: m.context, index: 0, reject: true });
    }, this.timings.readTimeoutMs);
    try {
      return [await answer];
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  /** takeReadIndexWaiter removes the waiter of `from`'s read `context` and returns it (undefined when none waits). */
  private takeReadIndexWaiter(from: NodeId, context: string): ((m: Message) => void) | undefined {
    const key = `${from}\u0000${context}`;
    const w = this.readIndexWaiters.get(key);
    if (w === undefined) return undefined;
    this.readIndexWaiters.delete(key);
    const left = (this.readIndexWaitersOf.get(from) ?? 1) - 1;
    if (left > 0) this.readIndexWaitersOf.set(from, left);
    else this.readIndexWaitersOf.delete(from);
    return w;
  }

  // ------------------------------------------------------------ lifecycle

  /** stop stops ticking, fails every waiting operation with `shuttingDown`, and closes transport and storage. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.vouches?.close();
    this.removalNews?.close();
    if (this.ticker !== undefined) this.clock.clearTimeout(this.ticker);
    this.clock.clearTimeout(this.snapshotRetry);
    this.clock.clearTimeout(this.pacer);
    this.clock.clearTimeout(this.imageDrop);
    this.clock.clearTimeout(this.midSaveTimer);
    this.midSaveTimer = undefined;
    this.disk?.stop();
    const err = new NodeError('shuttingDown', 'the node is shutting down');
    this.forwardQueue?.failAll(err);
    for (const p of this.proposals.values()) p.reject(err);
    this.proposals.clear();
    for (const r of this.reads.values()) {
      this.clock.clearTimeout(r.timer);
      r.reject(err);
    }
    this.reads.clear();
    for (const [key, w] of this.readIndexWaiters) {
      const [to = '', context = ''] = key.split('\u0000');
      w({ type: 'readIndexResp', from: this.id, to, term: 0, context, index: 0, reject: true });
    }
    this.readIndexWaiters.clear();
    this.readIndexWaitersOf.clear();
    this.fetching?.abort.abort();
    this.stopAbort.abort();
    this.archives?.stop();
    // A snapshot nobody waits for (an automatic one) is cut at its next member: its files are temporary until
    // renamed, and the log it would have compacted is replayed at the next start. Left to finish, a delta of a GB
    // took 8-12 s after SIGTERM, past a supervisor's grace, and its Buffers made the stop's peak RSS (issue 15:
    // bench:snapshot-cluster's cut-off follower, 217-225 MiB, killed 5 s after SIGTERM).
    const c = this.creation;
    if (c !== null && !c.waited && !c.abort.signal.aborted) c.abort.abort(new SnapshotSupersededError('stop'));
    await this.idle();
    await Promise.race([this.applyDrained(), this.clock.sleep(30_000)]);
    // Let a snapshot being written for a caller finish (bounded: its files are temporary until renamed, so cutting it is safe too).
    for (let waited = 0; this.snapshotting && waited < 30_000; waited += this.timings.tickMs) await this.clock.sleep(this.timings.tickMs);
    // Answers still held depend on state the stopped loop never persisted: drop them.
    this.dropReplyWaiters(err);
    await this.snapshots?.close();
    await this.transport.close();
    await this.storage.close();
    this.log.info({ id: this.id }, 'node stopped');
  }

  // ------------------------------------------------------------ the Ready loop

  private onTick(): void {
    if (this.stopped) return;
    // A tick that came late (a busy or starved process) tells the core how many periods it missed, so that a leader's
    // heartbeats keep the clock's interval, not the ticks' (RaftNode.missedTicks; no timeout counts them).
    const now = this.clock.nowMs();
    if (this.lastTickAtMs !== null) {
      const missed = Math.floor((now - this.lastTickAtMs) / this.timings.tickMs) - 1;
      if (missed > 0) this.raft.missedTicks(Math.min(missed, this.timings.heartbeatIntervalTicks));
    }
    this.lastTickAtMs = now;
    this.raft.tick();
    this.noteLeader();
    if (this.removalNews !== null) {
      // An election started, or this node's leadership held: is its own log the cluster's? (rate-limited, in the background)
      const role = this.raft.brief().role;
      const campaigning = role === 'preCandidate' || role === 'candidate';
      if (campaigning || this.raft.leadershipHeld()) this.removalNews.checkOwnLog(campaigning);
    }
    if (this.rebuildFailing) this.noteStranded();
    this.expireProposals();
    const f = this.fetching;
    if (f !== null && !f.abort.signal.aborted) {
      if (this.raft.installingIndex() !== f.meta.index && f.bytes < f.meta.sizeBytes) {
        // The core installs it no more: its log reached the snapshot's last entry (see endMootInstall).
        this.log.info({ index: f.meta.index, from: f.from, applied: this.raft.brief().applied }, 'snapshot fetch stopped: the log reached the snapshot');
        f.abort.abort();
        this.fetching = null;
      } else {
        this.checkFetchStall(f);
      }
    }
    this.forwardQueue?.flush();
    this.kickIfWork();
  }

  /**
   * checkFetchStall gives up a snapshot fetch that has received nothing for
   * a while (its bytes not all in yet):
   * - from a member that no longer leads (down, cut off, removed; or silent
   *   for an election timeout, which the core then stops calling the leader),
   *   after max(FETCH_STALL_MS_MIN, 4 election timeouts): the leader then
   *   offers its own snapshot instead of the follower waiting on the fetch's
   *   retries, and a follower that held the longest log may campaign again
   *   (one that fetches may not). One from a live former leader goes on (a
   *   leader change mid-fetch does not restart it). (Not "has it left the
   *   membership": a follower that needs a snapshot knows only the membership
   *   of its old log.)
   * - from anyone, after max(FETCH_STALL_FROM_LEADER_MS_MIN, 100 election
   *   timeouts): whatever holds it (a stream or a disk write that never
   *   returns).
   * Either way the follower tells the leader at once (if it knows one) and
   * the next offer starts a fresh fetch; the stuck one is aborted and
   * forgotten (its outcome, if it ever comes, is ignored).
   */
  private checkFetchStall(f: NonNullable<Node['fetching']>): void {
    if (f.bytes >= f.meta.sizeBytes) return; // all in: it is being synced and checked
    const st = this.raft.brief();
    const stalledMs = this.clock.nowMs() - f.progressAtMs;
    const electionMs = this.timings.electionTimeoutTicks * this.timings.tickMs;
    if (st.leader !== f.from && stalledMs > Math.max(FETCH_STALL_MS_MIN, 4 * electionMs)) {
      this.log.warn({ index: f.meta.index, from: f.from, leader: st.leader, stalledMs: Math.round(stalledMs) }, 'snapshot fetch stopped: its source no longer leads and sends nothing');
    } else if (stalledMs > Math.max(FETCH_STALL_FROM_LEADER_MS_MIN, 100 * electionMs)) {
      this.log.warn({ index: f.meta.index, from: f.from, bytes: f.bytes, stalledMs: Math.round(stalledMs) }, 'snapshot fetch stalled: given up, the leader offers it again');
    } else {
      return;
    }
    f.abort.abort();
    this.fetching = null;
    this.raft.snapshotFailed(f.meta);
  }

  /**
   * kickIfWork: kick(), unless the loop would find nothing to do: it is not
   * running, the core has no Ready, no fetched snapshot waits to be
   * installed and no answer waits for a save. Most ticks and most answers
   * (a heartbeat's, an ack of entries already counted) change nothing: each
   * started a loop that ran empty (~1,200 of ~2,400 loops a simulator seed,
   * two promises and a turn each). Only for callers that kick after their
   * last step of the core (a later change of the core kicks on its own).
   */
  private kickIfWork(): void {
    if (!this.running && this.fetched === null && this.replyWaiters.length === 0 && !this.raft.hasReady()) return;
    this.kick();
  }

  private kick(): void {
    if (this.running) {
      this.kicked = true;
      this.scheduleMidSave();
      return;
    }
    this.running = true;
    // The loop starts on the next turn, not inside this call: the requests that arrived in this turn's I/O
    // (a burst of client writes, several append answers) are all stepped first and go out in one Ready, one save.
    this.clock.defer(() => void this.runLoop());
  }

  private async runLoop(): Promise<void> {
    try {
      do {
        this.kicked = false;
        if (this.fetched !== null) this.installFetched();
        this.maybeAttest();
        while (this.raft.hasReady() && this.failure === null) {
          await this.handleReady(this.raft.ready());
        }
        // Nothing left to persist: every answer computed so far is safe to send
        // (unless the node failed: then nothing is, see releaseReplyWaiters).
        this.releaseReplyWaiters(Infinity);
      } while (this.kicked && this.failure === null);
    } catch (e) {
      this.fail(e);
    } finally {
      this.running = false;
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of idle) f();
    }
  }

  /**
   * scheduleMidSave: while the loop waits for a save, what was stepped
   * meanwhile and does not depend on it need not wait for it: a leader's
   * appends (RaftNode.takeAppends: the next entries for a follower that
   * answered, new proposals for a follower with nothing in flight) and the
   * committed entries already persisted here (RaftNode.takeCommitted) go out
   * on the next turn: one timer for everything stepped until then, so the
   * proposals of a turn leave in one append per follower.
   */
  private scheduleMidSave(): void {
    if (this.midSaveTimer !== undefined || !this.midSaveAllowed) return;
    this.midSaveTimer = this.clock.setTimeout(() => {
      this.midSaveTimer = undefined;
      this.midSave();
    }, 0);
  }

  /**
   * midSave (see scheduleMidSave): only while a plain Ready's save is in flight
   * (no log reset, no snapshot), never after a failure or stop. The appends
   * leave only once the leader's term and vote are durable (as the early
   * appends of handleReady); answers held for the save stay held.
   */
  private midSave(): void {
    if (!this.running || !this.midSaveAllowed || this.stopped || this.failure !== null) return;
    const st = this.raft.brief();
    if (st.role === 'leader' && st.term === this.savedHardState.term && st.vote === this.savedHardState.vote) {
      for (const m of this.raft.takeAppends()) this.route(m);
    }
    this.toApply(this.raft.takeCommitted());
  }

  /** toApply hands committed entries to the apply worker, in order. */
  private toApply(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    for (const e of entries) {
      this.applyQueue.push(e);
      this.appliedBytes += e.data.length;
    }
    this.startApplyWorker();
  }

  private async handleReady(rd: Ready): Promise<void> {
    const gen = ++this.readyGen;
    if (rd.softState !== null) {
      this.log.info({ id: this.id, role: rd.softState.role, leader: rd.softState.leader, term: this.raft.brief().term }, 'role changed');
      this.noteLeader();
    }
    // A leader's appends do not depend on its own unsynced entries (it counts itself only once
    // they are persisted, in advance()), so they leave before its fsync (dissertation §10.2.1).
    // They do depend on its term and vote: a leader whose term is not yet durable (a single
    // voter elects itself in one step) sends nothing before this Ready's save (Raft §5.1).
    const hs = rd.hardState;
    const termSaved = hs === null || (hs.term === this.savedHardState.term && hs.vote === this.savedHardState.vote) || this.bugs.appendsBeforeTermSaved === true;
    // Its heartbeats likewise (a commit index a quorum persisted, its term): held for the save, a save slowed by a
    // saturated disk held them all and both followers campaigned (a restore under load; etcd sends them before too).
    const early = termSaved && this.raft.brief().role === 'leader' ? rd.messages.filter((m) => m.type === 'append' || m.type === 'heartbeat') : [];
    for (const m of early) this.route(m);
    // Committed entries persisted before this Ready (below its first new entry) are applied while it saves;
    // the others (a follower's entries committed in the append that brought them) once it is saved.
    const plain = rd.logReset === null && rd.snapshot === null;
    const firstNew = rd.entries[0]?.index ?? Infinity;
    let applyNow = 0;
    if (plain) while (applyNow < rd.committedEntries.length && (rd.committedEntries[applyNow] as Entry).index < firstNew) applyNow++;
    this.toApply(applyNow === rd.committedEntries.length ? rd.committedEntries : rd.committedEntries.slice(0, applyNow));
    // 1. persist: one synced write for the hard state and every new entry (group commit).
    if (rd.logReset !== null) await this.storage.compact({ ...rd.logReset, membership: this.raft.membershipAt(rd.logReset.index) });
    if (rd.hardState !== null || rd.entries.length > 0) {
      const endTimer = this.metrics?.persistSeconds.startTimer();
      this.midSaveAllowed = plain;
      try {
        // Built by assignment, not spreads of conditional literals (a generic object clone each, at every Ready).
        const batch: { -readonly [K in keyof LogBatch]: LogBatch[K] } = {};
        if (rd.hardState !== null) batch.hardState = rd.hardState;
        if (rd.entries.length > 0) batch.entries = rd.entries;
        await this.storage.save(batch);
      } finally {
        this.midSaveAllowed = false;
      }
      endTimer?.();
      if (rd.hardState !== null) this.savedHardState = { term: rd.hardState.term, vote: rd.hardState.vote };
    }
    if (rd.logReset !== null) this.archives?.refs.clear(rd.logReset.index);
    this.archives?.refs.noteEntries(rd.entries);
    this.releaseReplyWaiters(gen);
    // 2. send.
    for (const m of rd.messages) if (early.length === 0 || (m.type !== 'append' && m.type !== 'heartbeat')) this.route(m); // early holds every append and heartbeat when not empty
    // 3. a snapshot to fetch: pulled in the background; installed between two Ready cycles.
    if (rd.snapshot !== null) this.startFetch(rd.snapshot);
    // 4. apply: handed to the apply worker, so persisting and replicating go on while the
    // state machine applies or installs (a restore, a snapshot or a slow apply never stalls
    // heartbeats or votes). Never waited for here: a leader refuses new writes instead
    // while APPLY_QUEUE_ENTRIES_MAX entries wait (proposeData).
    if (applyNow < rd.committedEntries.length) this.toApply(rd.committedEntries.slice(applyNow));
    // 5. reads.
    for (const rs of rd.readStates) {
      const r = this.reads.get(rs.context);
      if (r !== undefined) r.index = rs.index;
    }
    for (const rf of rd.readFailures) {
      const r = this.reads.get(rf.context);
      if (r === undefined) continue;
      this.reads.delete(rf.context);
      this.clock.clearTimeout(r.timer);
      r.reject(new NodeError('unavailable', `read failed: ${rf.reason}`, this.raft.brief().leader));
    }
    this.releaseReads();
    this.raft.advance(rd);
    this.syncPeers();
    this.maybeSnapshot();
  }

  // ------------------------------------------------------------ snapshots

  /**
   * maybeSnapshot starts an automatic snapshot when enough entries were
   * applied. Not while the disk is below its reserve (it waits for space),
   * nor before the backoff of a failed one has passed: a failure is logged
   * and retried after 1 s, 2 s, 4 s ... up to 60 s.
   */
  private maybeSnapshot(): void {
    const sm = this.snapshots;
    if (this.baseLost && !this.rebuildFailing && this.disk?.isFull === true && sm !== undefined && !this.stopped) {
      this.snapshotRebuildFailed('the data dir is below its free-space reserve: no snapshot is taken');
    }
    if (sm === undefined || this.snapshotting || this.stopped || this.failure !== null || this.snapshotRetry !== undefined || this.disk?.isFull === true) return;
    // A snapshot asked for (snapshotNow) waits for its turn: it goes first.
    if (this.askedWaiting > 0) return;
    // A snapshot being fetched (or fetched, waiting for its install) replaces this state: none of it is made meanwhile
    // (see startFetch; compaction waits too, the install resets the log).
    if (this.fetching !== null || this.fetched !== null) return;
    // Nor while the leader's snapshot of a restored state is being kept as this node's (adoptLeaderSnapshot): one
    // made meanwhile would read the whole state instead of starting from it. (That fetch is given up once it stalls.)
    if (this.adopting) return;
    const st = this.raft.brief();
    // What a snapshot would hold is the state machine's applied index, which trails the core's while an apply
    // is under way (a restore waiting for its archive): nothing new there since the newest snapshot, no new one
    // (else the same state is snapshotted again at every Ready while the apply waits).
    const applied = Math.min(st.applied, this.fsm.appliedIndex());
    // A follower that lost its snapshot's base waits for one at least this far (Raft's snapshotWanted, leader only).
    const wanted = this.raft.snapshotWanted();
    const logBytesMax = sm.policy.snapshotLogBytes ?? 0;
    const stagger = snapshotStaggerEntries(sm.policy.snapshotEntries, this.id, st.membership);
    const byLog = (times: number): boolean =>
      snapshotDue(applied, st.snapshotIndex, times * sm.policy.snapshotEntries, stagger) || (logBytesMax > 0 && this.appliedBytes - this.logBytesBase >= times * logBytesMax);
    const paced = this.clock.nowMs() < this.pacedUntilMs;
    if (paced && byLog(1) && !byLog(AUTO_SNAPSHOT_PACE_LOG_TIMES) && this.pacer === undefined) {
      this.pacer = this.clock.setTimeout(() => {
        this.pacer = undefined;
        if (!this.stopped) this.maybeSnapshot();
      }, this.pacedUntilMs - this.clock.nowMs());
      this.pacer.unref();
    }
    const due =
      (byLog(1) && !paced) ||
      byLog(AUTO_SNAPSHOT_PACE_LOG_TIMES) ||
      this.snapshotSoon ||
      this.baseLost ||
      (wanted > 0 && applied >= wanted);
    if (!due || applied < st.snapshotIndex || (applied === st.snapshotIndex && !this.baseLost)) {
      // A compaction the floor held back at the last snapshot (a follower compacts no further than its
      // leader's announced snapshot, unknown just after a term change) is done once the floor allows it.
      const allowed = Math.min(st.snapshotIndex - sm.policy.trailingEntries, this.raft.compactionFloor(), this.fsm.appliedIndex());
      if (allowed >= st.firstIndex && allowed >= this.membershipBaseIndex) {
        this.snapshotting = true;
        this.compactLog()
          .catch((e: unknown) => {
            this.disk?.noteError(e);
            this.log.error({ err: (e as Error).message }, 'log compaction failed');
          })
          .finally(() => {
            this.snapshotting = false;
          });
      }
      return;
    }
    const soon = this.snapshotSoon;
    this.snapshotSoon = false;
    this.snapshotting = true;
    const startedMs = this.clock.nowMs();
    this.takeSnapshot()
      .then(
        () => {
          this.snapshotFailures = 0;
          const tookMs = this.clock.nowMs() - startedMs;
          if (tookMs >= AUTO_SNAPSHOT_PACE_MIN_MS) this.pacedUntilMs = this.clock.nowMs() + AUTO_SNAPSHOT_PACE * tookMs;
        },
        (e: unknown) => {
          this.snapshotSoon ||= soon;
          if (e instanceof SnapshotSupersededError) {
            // A snapshot asked for meanwhile (a download, an operator) takes a newer state in its place, or
            // one fetched from the leader replaces the state (startFetch).
            this.log.info({ by: e.by }, e.by === 'fetch' ? 'automatic snapshot superseded by the snapshot being fetched' : e.by === 'stop' ? 'automatic snapshot cut by the stop' : 'automatic snapshot superseded by one asked for');
            return;
          }
          // A failed node (fail: the snapshot met a record that does not verify) tries no more: each retry would read
          // its state again, and fail again, until the node is stopped.
          if (this.failure !== null) return;
          if (e instanceof SnapshotTermUnknownError && e.index < this.raft.brief().firstIndex - 1) {
            // An install (a fetched snapshot) replaced the state past the view this snapshot was taken of: moot.
            this.log.info({ index: e.index, firstIndex: this.raft.brief().firstIndex }, 'automatic snapshot skipped: an install replaced the state meanwhile');
            return;
          }
          const retryMs = Math.min(SNAPSHOT_RETRY_MS_MAX, SNAPSHOT_RETRY_MS_MIN * 2 ** Math.min(this.snapshotFailures, 6));
          this.snapshotFailures++;
          this.log.error({ err: (e as Error).message, failures: this.snapshotFailures, retryMs }, 'automatic snapshot failed; retrying later');
          if (this.baseLost) this.snapshotRebuildFailed((e as Error).message);
          this.snapshotRetry = this.clock.setTimeout(() => {
            this.snapshotRetry = undefined;
            this.maybeSnapshot();
          }, retryMs);
          this.snapshotRetry.unref();
        },
      )
      .finally(() => {
        this.snapshotting = false;
      });
  }

  /**
   * takeSnapshot writes a snapshot at the applied index, offers it to
   * followers, then compacts the log. `waiter`: the caller that waits for it
   * (null: one that waits to the end; undefined: none, an automatic one), see
   * snapshotNow; it rejects with SnapshotSupersededError once superseded.
   */
  private async takeSnapshot(waiter?: AbortSignal | null, onViewStart?: (applied: number) => void): Promise<SnapshotMeta> {
    const sm = this.snapshots as SnapshotManager;
    const creation = { abort: new AbortController(), waited: waiter !== undefined && waiter?.aborted !== true };
    const gone = (): void => {
      creation.waited = false;
    };
    waiter?.addEventListener('abort', gone, { once: true });
    this.creation = creation;
    const appliedBytes = this.appliedBytes; // what the snapshot covers, near enough (entries handed over but not yet applied are counted)
    let stored: StoredSnapshot;
    try {
      stored = await sm.create(
        (i) => this.raft.logTerm(i),
        (i) => this.raft.membershipAt(i),
        { signal: creation.abort.signal, ...(onViewStart !== undefined ? { onViewStart } : {}) },
      );
    } catch (e) {
      if (!(e instanceof SnapshotSupersededError)) this.disk?.noteError(e);
      // A record of the state that does not verify (its checksum, or RocksDB's `Corruption:`): retried, every
      // snapshot would fail the same way; the node stops instead, like a failed write.
      this.failIfCorrupt(e);
      throw e;
    } finally {
      this.creation = null;
      waiter?.removeEventListener('abort', gone);
    }
    const meta = toRaftMeta(stored);
    // The core learns of an apply at advance(), just after the state machine: wait for it (bounded).
    for (let waited = 0; this.raft.brief().applied < meta.index; waited++) {
      if (this.stopped || waited > 10_000) throw new NodeError('unavailable', `snapshot ${meta.index} is ahead of the core's applied index`);
      await this.clock.sleep(1);
    }
    this.raft.setSnapshot(meta);
    this.baseLost = false;
    this.rebuildFailing = false;
    this.logBytesBase = Math.max(this.logBytesBase, appliedBytes);
    this.snapshotStats.created++;
    this.metrics?.snapshotsCreated.inc();
    const compactTo = await this.compactLog();
    this.log.info({ index: meta.index, term: meta.term, bytes: meta.sizeBytes, compactedTo: compactTo }, 'snapshot taken');
    await this.archives?.prune();
    return meta;
  }

  /**
   * compactLog compacts the log up to the newest snapshot, keeping trailing
   * entries for slow followers, never past the compaction floor (what a
   * follower installing a snapshot needs next; for a follower, its leader's
   * announced snapshot) nor past what the state machine has applied.
   * Returns the index it aimed at.
   */
  private async compactLog(): Promise<number> {
    const sm = this.snapshots as SnapshotManager;
    const st = this.raft.brief(); // brief, not status: no per-peer progress records made (a compaction follows every snapshot)
    // Never past what the state machine has applied: a follower that began installing a snapshot whose last
    // entry its log holds (Raft §7: no reset) still applies the committed entries it was handed before it, and
    // those stay in the persisted log until they are applied (simulator seed 92505, 5 nodes: compacted to 19
    // while entries 9 and 10 were still to be applied).
    const compactTo = Math.min(st.snapshotIndex - sm.policy.trailingEntries, this.raft.compactionFloor(), st.snapshotIndex, this.fsm.appliedIndex());
    // The core knows the membership only from the snapshot it started from (or last installed)
    // on: compacting below that waits for a later snapshot (the base records its membership).
    if (compactTo >= st.firstIndex && compactTo >= this.membershipBaseIndex) {
      const base = this.raft.compact(compactTo);
      try {
        await this.storage.compact({ ...base, membership: this.raft.membershipAt(base.index) });
      } catch (e) {
        // A failed write to the log: the store takes no log write after it (types.ts LogStore), so every save
        // from here on would fail too. Stop now, as a failed save does, rather than retrying a compaction that
        // cannot pass (an idle leader, saving nothing, stayed up on a log that could not take its next entry).
        this.fail(e);
        throw e;
      }
    }
    this.archives?.refs.dropThrough(this.raft.brief().firstIndex - 1);
    return compactTo;
  }

  private startFetch(meta: SnapshotMeta): void {
    const sm = this.snapshots;
    if (sm === undefined) {
      this.raft.snapshotFailed(meta);
      return;
    }
    if (this.fetching !== null) {
      if (this.fetching.meta.index >= meta.index) return;
      this.fetching.abort.abort();
    }
    const leader = this.raft.brief().leader;
    // The leader that offered it; a follower whose log predates that leader's joining knows its address only from
    // the snapshot's membership, if at all. With no address the offer is refused at once (the leader offers again,
    // a newer snapshot in time), rather than a fetch that cannot connect being retried.
    const address = this.dialAddressOf(leader) || (leader !== '' && Object.hasOwn(meta.membership.addresses, leader) ? (meta.membership.addresses[leader] as string) : '');
    if (address === '') {
      this.log.warn({ index: meta.index, leader }, 'snapshot offer refused: no address known for the leader that offered it');
      this.raft.snapshotFailed(meta);
      return;
    }
    const abort = new AbortController();
    const mine = { meta, from: leader, progressAtMs: this.clock.nowMs(), bytes: 0, abort };
    this.fetching = mine;
    // An automatic snapshot being made of this state is moot: the fetched one, newer, replaces the state. Made
    // beside the fetch and install it cost a restarted follower its whole state read again (a full creation: after a
    // restart the changed keys are not known) while it caught up: bench:snapshot-cluster, 1M x 1 KiB, its catch-up
    // 28.8 s instead of 4.8 and its peak RSS 251 MiB (issue 15). One a caller waits for is left alone (snapshotNow).
    const c = this.creation;
    if (c !== null && !c.waited && !c.abort.signal.aborted) c.abort.abort(new SnapshotSupersededError('fetch'));
    this.log.info({ index: meta.index, bytes: meta.sizeBytes, from: leader }, 'fetching snapshot');
    sm.fetch(this.id, address, meta, abort.signal, (bytes) => {
      mine.progressAtMs = this.clock.nowMs();
      mine.bytes = bytes;
    })
      .then(({ stored, result }) => {
        this.snapshotStats.chunkHashFailures += result.hashFailures;
        this.snapshotStats.bytesReceived += result.bytes;
        this.metrics?.chunkHashFailures.inc(result.hashFailures);
        this.metrics?.snapshotBytesReceived.inc(result.bytes);
        if (this.fetching === mine) this.fetched = { meta, stored };
      })
      .catch((e: unknown) => {
        this.snapshotStats.fetchFailures++;
        this.disk?.noteError(e);
        this.log.warn({ index: meta.index, err: (e as Error).message }, 'snapshot fetch failed');
        if (this.fetching === mine && !this.stopped) this.raft.snapshotFailed(meta);
      })
      .finally(() => {
        if (this.fetching === mine) this.fetching = null;
        this.kick();
      });
  }

  private startApplyWorker(): void {
    if (this.applying) return;
    this.applying = true;
    void (async () => {
      try {
        while (this.applyQueue.length > 0 && this.failure === null) {
          const head = this.applyQueue[0];
          if (head !== undefined && isSnapshotInstall(head)) {
            this.applyQueue.shift();
            await this.installSnapshot(head);
          } else {
            let n = 0;
            while (n < APPLY_BATCH_ENTRIES_MAX && n < this.applyQueue.length && !isSnapshotInstall(this.applyQueue[n] as Entry | SnapshotInstall)) n++;
            await this.apply(this.applyQueue.splice(0, n) as Entry[]);
          }
          this.releaseReads();
        }
        // An apply can make a snapshot due (a restore asks for one soon): a quiet follower may see no other
        // Ready for a long time, so the check runs here too (else it waits for the next write).
        if (this.failure === null && !this.stopped) this.maybeSnapshot();
      } catch (e) {
        this.fail(e);
      } finally {
        this.applying = false;
        const waiters = this.applyIdleWaiters;
        this.applyIdleWaiters = [];
        for (const w of waiters) w();
      }
    })();
  }

  /** applyDrained resolves once every entry handed to the apply worker is applied (or the node failed). */
  private applyDrained(): Promise<void> {
    if (!this.applying && this.applyQueue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.applyIdleWaiters.push(resolve));
  }

  /**
   * installFetched: a verified snapshot is fetched; between two Ready cycles
   * the core moves to it, and the install is queued for the apply worker
   * (after the entries handed over before it; the core hands out none after
   * it until snapshotInstalled). The Ready loop goes on meanwhile: heartbeats,
   * votes and appends are persisted and answered while it installs.
   */
  private installFetched(): void {
    const f = this.fetched;
    this.fetched = null;
    if (f === null || this.snapshots === undefined) return;
    // The install is reported done (ending the leader's compaction guard) only once the state
    // machine holds it: beginInstall now, snapshotInstalled after.
    if (!this.raft.beginInstall(f.meta)) return;
    this.membershipBaseIndex = Math.max(this.membershipBaseIndex, f.meta.index);
    this.applyQueue.push({ install: f.stored, meta: f.meta });
    this.installQueued?.();
    this.startApplyWorker();
  }

  /**
   * installSnapshot (apply worker): replaces the state machine with a fetched
   * snapshot's state, then tells the core. An archive whose content is refused
   * while it installs (its whole digest is confirmed only by the install's own
   * read, see SnapshotManager.fetch; the store removes it) leaves the state
   * machine as it was; after a backoff that grows with each such failure in a
   * row (to 5 s) the core is told (installFailed): the log was reset to that
   * snapshot, so the follower asks its leader for its newest snapshot at or
   * after it and installs that instead — the same bytes from the leader, or a
   * newer snapshot when the member that offered these is gone for good
   * (simulator seed 20880). Meanwhile no entry is applied; heartbeats, votes
   * and appends are answered. A disk error stays fatal.
   */
  private async installSnapshot(task: SnapshotInstall): Promise<void> {
    const sm = this.snapshots as SnapshotManager;
    const t0 = this.clock.nowMs();
    try {
      await sm.install(task.install);
    } catch (err) {
      if (!(isContentError(err) || (err instanceof SnapshotStoreError && err.code === 'corrupt'))) throw err;
      this.snapshotStats.fetchFailures++;
      const backoffMs = Math.min(5_000, 100 * 2 ** Math.min(this.installFailuresInRow++, 6));
      this.log.error({ index: task.meta.index, digest: task.meta.digest, err: (err as Error).message, retryMs: backoffMs }, 'a fetched snapshot failed to install (state unchanged); asking the leader for a snapshot again');
      await this.clock.sleep(backoffMs);
      if (this.stopped) throw new NodeError('shuttingDown', 'the node is shutting down');
      this.raft.installFailed(task.meta);
      this.kick();
      return;
    }
    this.installFailuresInRow = 0;
    this.baseLost = false;
    this.rebuildFailing = false;
    this.logBytesBase = this.appliedBytes;
    this.raft.snapshotInstalled(task.meta);
    this.raft.stateApplied(this.fsm.appliedIndex());
    this.kick();
    this.snapshotStats.installed++;
    this.metrics?.snapshotInstallSeconds.observe((this.clock.nowMs() - t0) / 1000);
    // The install recorded the snapshot's member table in its own read (SnapshotManager.install): this node's next
    // snapshot is a delta from it, not a read of its whole state.
    this.log.info({ index: task.meta.index, ms: this.clock.nowMs() - t0 }, 'snapshot installed');
  }

  /**
   * startWithoutBase: the snapshot the log was compacted against (`lost`) is
   * lost (see checkBootBase); the newest that verifies is at `verifiedIndex`.
   * A state machine behind it waits for the leader's snapshot (the core asks
   * for it); one at or past it applies on and is snapshotted at once, so this
   * node can offer a snapshot again (until then it stands for no election).
   */
  private startWithoutBase(lost: SnapshotMeta, verifiedIndex: number): void {
    const applied = this.fsm.appliedIndex();
    const where = verifiedIndex > 0 ? `the newest stored snapshot that verifies is at index ${verifiedIndex}` : 'no stored snapshot verifies';
    if (applied < lost.index) {
      this.log.error(
        { logBase: lost.index, applied, verifiedIndex },
        `the log was compacted up to index ${lost.index} but ${where}, and the state machine is at ${applied}: nothing is applied ` +
          `or served here until a snapshot at or after index ${lost.index} is installed from the leader`,
      );
      return;
    }
    this.baseLost = true;
    this.log.warn({ logBase: lost.index, applied, verifiedIndex }, `the log was compacted up to index ${lost.index} but ${where}; the state machine is at ${applied}: taking a snapshot of it now`);
  }

  /**
   * snapshotLost: the snapshot manager moved its newest snapshot (`lost`) to
   * quarantine (found damaged by the scrub or a reader's chunk check). If the
   * core offers it, it stops (RaftNode.snapshotLost: no follower is sent to
   * fetch what is gone, and this node stands for no election meanwhile) and
   * a snapshot of the state machine, at or past it, is taken at once, as
   * after a base lost at boot (baseLost); the core offers that one.
   */
  private snapshotLost(lost: SnapshotMeta): void {
    if (this.stopped || !this.raft.snapshotLost(lost)) return;
    this.baseLost = true;
    this.rebuildFailing = false; // the core waits for this rebuild (RaftNode.snapshotLost)
    this.log.warn({ index: lost.index }, 'the snapshot offered to followers was found damaged and moved to quarantine; taking a snapshot of the state now');
    this.maybeSnapshot();
    this.kick();
  }

  /**
   * snapshotRebuildFailed: building the snapshot that replaces a lost one
   * failed (`why`). The core is told (RaftNode.snapshotRebuildFailed): a
   * leader with a follower that needs a snapshot hands leadership to a voter
   * that holds one; the rebuild is retried with its backoff all the same.
   */
  private snapshotRebuildFailed(why: string): void {
    if (!this.rebuildFailing) {
      this.strandedNote = '';
      this.log.warn({ err: why }, 'the snapshot offered to followers is lost and rebuilding it failed (retried later): while a follower needs a snapshot, leadership goes to a voter that holds one');
    }
    this.rebuildFailing = true;
    this.raft.snapshotRebuildFailed();
    this.noteStranded();
    this.kick();
  }

  /**
   * noteStranded (each tick while rebuildFailing): logs, when it changes, who
   * waits for a snapshot this leader cannot offer (RaftStatus.snapshotStranded)
   * and whether leadership is being handed to a voter that holds one, or
   * stays here because none reported one. /metrics has the count
   * (snapcoord_snapshot_stranded_followers).
   */
  private noteStranded(): void {
    const st = this.raft.status();
    const h = st.snapshotHandOff;
    if (h.count !== this.handOffsLogged) {
      // By the core's count, not leadTransferee: a hand-over may complete between two ticks (a TimeoutNow and an
      // election over loopback take a few ms), and was then never logged.
      this.handOffsLogged = h.count;
      const waiting = h.stranded.join(', ');
      this.log.warn({ stranded: h.stranded, to: h.to }, `${waiting} need${h.stranded.length === 1 ? 's' : ''} a snapshot this leader cannot offer (its own is lost, rebuilding it failed): handing leadership to ${h.to}, which holds one`);
    }
    const note = st.role !== 'leader' || st.snapshotStranded.length === 0 ? '' : `${st.leadTransferee}>${st.snapshotStranded.join(',')}`;
    if (note === this.strandedNote) return;
    this.strandedNote = note;
    if (note === '') return;
    const waiting = st.snapshotStranded.join(', ');
    if (st.leadTransferee === '') {
      this.log.error(
        { stranded: st.snapshotStranded },
        `${waiting} need${st.snapshotStranded.length === 1 ? 's' : ''} a snapshot this leader cannot offer (its own is lost, rebuilding it failed), and no caught-up voter reported one to offer: leadership stays here and ${waiting} wait${st.snapshotStranded.length === 1 ? 's' : ''} until a snapshot is rebuilt (free disk space, check the disk)`,
      );
    }
  }

  /** holdersFirstLeader: the other members to fetch a snapshot or archive from, the leader first. */
  private holdersFirstLeader(): NodeId[] {
    const st = this.raft.status();
    return [st.leader, ...st.membership.voters, ...st.membership.learners].filter((id, i, a) => id !== '' && id !== this.id && a.indexOf(id) === i);
  }

  private route(m: Message): void {
    if (m.type === 'readIndexResp') {
      this.takeReadIndexWaiter(m.to, m.context)?.(m);
      return;
    }
    if (m.type === 'snapshot' && !Object.hasOwn(m.snapshot.membership.addresses, this.id)) {
      // Offered a snapshot older than this leader's joining (it caught up by a previous leader's): a follower whose
      // log is as old has no address to fetch it from here. A snapshot of the state now names this node.
      this.snapshotSoon = true;
    }
    this.transport.send(m);
  }

  private async apply(entries: readonly Entry[]): Promise<void> {
    // What each entry means is the state machine's (src/fsm); a restore entry's archive comes through this node.
    const items = entries.map((entry) => (entry.type === 'conf' ? { entry, membership: this.raft.membershipAt(entry.index) } : { entry }));
    const byIndex = new Map<number, ApplyResult>();
    // status() reports this batch applied only once its outcomes are recorded below (a skipped restore's
    // restoreFailure is visible together with the applied index that passed it).
    this.applyingFromIndex = entries[0]?.index ?? Infinity;
    try {
      for (const r of await this.fsm.apply(items, { installArchive: (cmd, index, install) => this.installRestoreArchive(cmd, index, install) })) {
        byIndex.set(r.index, r);
      }
      this.recordApplyOutcomes(entries, byIndex);
    } finally {
      this.applyingFromIndex = Infinity;
    }
    this.raft.stateApplied(this.fsm.appliedIndex()); // heartbeat answers carry it: the leader's membership changes wait for it
  }

  /** recordApplyOutcomes (apply): records skipped restores, logs membership changes and answers the waiting proposers. */
  private recordApplyOutcomes(entries: readonly Entry[], byIndex: ReadonlyMap<number, ApplyResult>): void {
    for (const e of entries) {
      if (e.type !== 'normal' || !isRestoreCommand(e.data)) continue;
      const r = byIndex.get(e.index);
      if (r === undefined || r.ok || r.code !== 'badRestore') continue;
      // Skipped on every node the same way (malformed, or its archive refused): recorded, never a crash loop.
      this.restoreFailure = { index: e.index, error: r.error };
      this.snapshotStats.restoresFailed++;
      this.metrics?.restoresFailed.inc();
      this.log.error({ index: e.index, err: r.error }, 'restore skipped on every node, state unchanged');
    }
    for (const e of entries) {
      if (e.type === 'conf') {
        try {
          const cc = decodeConfChange(e.data);
          if (cc.op === 'attest') {
            // A commit statement (maybeAttest): no member changed.
          } else if (cc.op === 'removeNode') {
            this.log.info({ index: e.index, op: cc.op, nodeId: cc.nodeId }, 'membership change applied');
            this.onMemberRemoved?.(cc.nodeId);
            this.noteRemoved(cc.nodeId);
          } else {
            this.log.info({ index: e.index, op: cc.op, nodeId: cc.nodeId }, 'membership change applied');
            this.removedIds.delete(cc.nodeId);
          }
        } catch {
          this.log.warn({ index: e.index }, 'malformed membership change skipped');
        }
      }
      const p = this.proposals.get(e.index);
      if (p === undefined) continue;
      this.proposals.delete(e.index);
      if (e.term !== p.term) {
        this.metrics?.proposals.inc({ result: 'lost' });
        p.reject(new NodeError('lost', `entry ${e.index} was replaced by another leader's; it was not applied`));
      } else {
        const r = byIndex.get(e.index);
        if (r === undefined) {
          // Not applied here: a snapshot installed in a restore's place covered it (installBaseInstead). It was
          // committed, but its result (a previous value, a compare's outcome) is not known on this node.
          this.metrics?.proposals.inc({ result: 'timeout' });
          p.reject(new NodeError('timeout', `entry ${e.index} was committed and applied through a snapshot installed here; its result is not known`));
          continue;
        }
        this.metrics?.proposals.inc({ result: 'applied' });
        p.resolve(r);
      }
    }
  }

  /**
   * installRestoreArchive (the state machine's RestoreDriver) finds the
   * archive a restore entry names in this node's uploads (the leader that
   * took the upload) or fetches it from a peer, waiting until it has it
   * (no later entry can be applied without it), and installs its state
   * through `install` (the state machine's, as of the entry's index, keeping
   * the cluster's membership). An archive whose content is refused resolves
   * `{ok: false}`: every node holds the same verified bytes and refuses them
   * the same way. A kept archive whose bytes changed on this node's disk
   * since (SnapshotStoreError `corrupt`: installUpload reads it against its
   * recorded chunk hashes and sets it aside) is fetched again from a holder
   * and installed, at most RESTORE_REFETCHES_MAX times. Anything else (the
   * disk, a stop) rejects: fatal, retried at restart.
   */
  private async installRestoreArchive(cmd: RestoreCommand, index: number, install: ArchiveInstall): Promise<RestoreOutcome> {
    const sm = this.snapshots;
    const archives = this.archives;
    if (sm === undefined || archives === null) throw new Error(`entry ${index} is a restore, and this node keeps no snapshots`);
    // State images (issue 15): the leader exports the generation it builds; a follower first asks the leader for it.
    const brief = this.raft.brief();
    const exportImage = this.stateImages && brief.role === 'leader' && this.storage.stateImage !== undefined;
    if (this.stateImages && !exportImage && (await this.restoreFromImage(cmd, index, brief.leader))) return { ok: true };
    if (exportImage) this.imageBuilding = index;
    try {
      const outcome = await this.installRestoreArchiveCopy(cmd, index, install, exportImage);
      if (exportImage && outcome.ok) this.keepImage();
      return outcome;
    } finally {
      if (this.imageBuilding === index) this.imageBuilding = null;
    }
  }

  /** installRestoreArchiveCopy: installRestoreArchive from this node's copy of the archive (`exportImage`: exporting the built state). */
  private async installRestoreArchiveCopy(cmd: RestoreCommand, index: number, install: ArchiveInstall, exportImage: boolean): Promise<RestoreOutcome> {
    const sm = this.snapshots as SnapshotManager;
    const archives = this.archives as RestoreArchives;
    for (let round = 0; ; round++) {
      const stored = await archives.find(cmd, index);
      if (stored === null) return this.installBaseInstead(index);
      try {
        // The installed records are also written into this node's snapshot of the restored state (its term and
        // membership as of the entry): the snapshot that follows the restore is that one, not a read of it all back.
        const term = this.raft.logTerm(index);
        const membership = this.raft.membershipAt(index);
        await sm.installUpload(stored, (records, copy) => install(records, membership, copy, exportImage ? { exportImage: true } : undefined), term !== undefined ? { index, term, membership } : undefined);
      } catch (err) {
        // This node's copy changed on its disk since it was kept: it fails here alone (the other nodes apply the
        // restore), so it is never taken for refused content — it is set aside and fetched again (simulator seed
        // 41406: the node skipped a restore every other node applied).
        if (err instanceof SnapshotStoreError && err.code === 'corrupt' && !isReadFailure(err)) {
          if (round >= RESTORE_REFETCHES_MAX) throw new NodeError('unavailable', `restore at index ${index}: the archive was damaged on this node's disk ${round + 1} times`);
          this.log.warn({ index, digest: cmd.digest }, 'restore: this node\'s copy of the archive was damaged on its disk; fetching it again');
          continue;
        }
        if (!isContentError(err)) throw err; // the disk, not the archive: fatal, retried at restart
        // The archive's content is refused (the upload checks should have caught it).
        this.log.error({ index, digest: cmd.digest, err: (err as Error).message }, 'restore archive refused while installing');
        return { ok: false, error: (err as Error).message };
      }
      this.snapshotSoon = true; // followers that need a snapshot get the restored state
      this.log.info({ index, via: 'archive', digest: cmd.digest, archiveIndex: cmd.index }, 'restore applied');
      return { ok: true };
    }
  }

  /** keepImage drops the state image the last restore exported IMAGE_KEEP_MS from now. */
  private keepImage(): void {
    this.clock.clearTimeout(this.imageDrop);
    const timer = this.clock.setTimeout(() => this.storage.dropStateImage?.(), IMAGE_KEEP_MS);
    timer.unref();
    this.imageDrop = timer;
  }

  /**
   * restoreFromImage (apply worker, applying restore entry
   * `index` as a follower): asks the leader it knows for the state image of
   * that entry (FetchStateImage, waiting while the leader builds it) and
   * commits it as its state (StateMachine.importImage: every file's SHA-256,
   * the applied index and membership checked, and the imported records
   * against the entry's records digest when it has one: a leader that sends
   * another state than the entry's archive holds is refused). True once
   * applied; false when there is no image to take (no leader known, a store
   * or transport without images, the leader has none, a file or the records
   * refused, the stream cut), the state then unchanged: the caller installs
   * from its own archive. Rejects when
   * the import failed after its commit (the disk: fatal, as an install's).
   */
  private async restoreFromImage(cmd: RestoreCommand, index: number, leader: NodeId): Promise<boolean> {
    const sm = this.snapshots;
    // A transport that carries the snapshot plane itself (the simulator's network) carries FetchStateImage too, or none is made.
    const streams = this.transport.openStateImageStream?.bind(this.transport);
    if (leader === '' || leader === this.id || sm === undefined || (sm.streams !== undefined && streams === undefined) || this.storage.importStateImage === undefined) return false;
    const address = this.dialAddressOf(leader);
    if (address === '') return false;
    const startedMs = this.clock.nowMs();
    let opened: OpenedStateImage | null = null;
    // The image is asked of `leader` because it leads: once it no longer does (a new term, this node elected), no
    // image is coming from it and the wait for its manifest (up to IMAGE_BUILD_WAIT_MS, while a leader builds one)
    // would hold this node's applies, a new leader's included. Simulator seed 1171393: a follower asked its leader
    // of term 4, which lost leadership while its own apply of the entry waited; the answer was lost, and the
    // follower, elected in term 5, applied nothing for the rest of the seed (4 s after healing). A moment without a
    // leader in the same term is not that: a follower whose election timer fired (a loaded machine: its heartbeats
    // late) is a pre-candidate until the leader's next heartbeat, 40-60 ms, and giving the image up then cost a
    // restore of 1M keys ~10 s of CPU more (its own archive installed instead: all applied in 27-42 s, not 14-15;
    // helper snapperf, 4 of 9 runs under load). Such a moment is waited out for up to two election timeouts.
    const asking = new AbortController();
    const onStop = (): void => asking.abort();
    this.stopAbort.signal.addEventListener('abort', onStop, { once: true });
    const askedInTerm = this.raft.brief().term;
    const leaderlessMaxMs = 2 * this.timings.electionTimeoutTicks * this.timings.tickMs;
    let leaderlessSinceMs: number | null = null;
    const watch = this.clock.setInterval(() => {
      const b = this.raft.brief();
      if (b.term === askedInTerm && b.leader === leader) {
        leaderlessSinceMs = null;
        return;
      }
      if (b.term === askedInTerm && b.leader === NO_NODE && b.role !== 'candidate') {
        leaderlessSinceMs ??= this.clock.nowMs();
        if (this.clock.nowMs() - leaderlessSinceMs <= leaderlessMaxMs) return;
      }
      asking.abort();
    }, this.timings.tickMs);
    try {
      opened = await openStateImage({
        selfId: this.id,
        to: leader,
        address,
        index,
        recordFormat: STATE_RECORD_FORMAT,
        ...(sm.dial !== undefined ? { dial: sm.dial } : {}),
        ...(streams !== undefined ? { streams: { openStateImageStream: streams } } : {}),
        clock: this.clock,
        manifestTimeoutMs: IMAGE_BUILD_WAIT_MS + 10_000,
        idleTimeoutMs: IMAGE_IDLE_MS,
        bytesPerSecondMin: IMAGE_BYTES_PER_SECOND_MIN,
        signal: asking.signal,
      });
      // The manifest came: the stream is bounded by its own idle and whole-image timeouts from here, whoever leads.
      this.clock.clearTimeout(watch);
      const manifestMs = this.clock.nowMs() - startedMs;
      await this.fsm.importImage(
        opened,
        { appliedIndex: index, membership: this.raft.membershipAt(index), ...(this.verifyImageRecords && cmd.recordsDigest !== undefined ? { recordsDigest: cmd.recordsDigest } : {}) },
        { reserveBytes: this.disk?.minFreeBytes ?? 0 },
      );
      const bytes = opened.files.reduce((n, f) => n + f.sizeBytes, 0);
      this.snapshotStats.imageRestores++;
      // This node's own snapshot of the restored state: the leader's copy, fetched (~9 MB at 1M x 1 KiB) in the
      // background, rather than a full build here (~7 s of CPU); a full build when the leader named none.
      const sent = opened.sentSnapshot;
      if (sent !== null && sent.index === index) void this.adoptLeaderSnapshot(sent, leader, address, this.verifyImageRecords ? cmd.recordsDigest : undefined);
      else this.snapshotSoon = true;
      // The same message as a restore loaded from the archive (operators and tests look for it), with where it came from.
      this.log.info(
        { index, via: 'state image', from: leader, files: opened.files.length, bytes, waitedMs: Math.round(manifestMs), ms: Math.round(this.clock.nowMs() - startedMs) },
        'restore applied',
      );
      return true;
    } catch (err) {
      opened?.cancel();
      if (this.fsm.appliedIndex() >= index || this.stopped) throw err;
      this.snapshotStats.imageFallbacks++;
      this.log.warn({ index, from: leader, err: (err as Error).message }, 'restore: the leader\'s state image was not taken; installing from this node\'s copy of the archive');
      return false;
    } finally {
      this.clock.clearTimeout(watch);
      this.stopAbort.signal.removeEventListener('abort', onStop);
    }
  }

  /**
   * adoptLeaderSnapshot fetches the leader's snapshot of the state
   * this node took from its image and keeps it as this node's newest; then
   * asks for a snapshot, which reuses it (SnapshotManager.create), or builds
   * one in full when the fetch failed. Never rejects.
   */
  private async adoptLeaderSnapshot(meta: SnapshotMeta, leader: NodeId, address: string, recordsDigest: string | undefined): Promise<void> {
    const sm = this.snapshots as SnapshotManager;
    this.adopting = true;
    // Automatic snapshots and compactions wait for this fetch (maybeSnapshot), which has no deadline of its own (20
    // attempts, each cut only after 30 s with no byte: ~10 min for a leader gone quiet, while the next leader's writes
    // grow this node's log). As a fetch for an install (checkFetchStall), it is given up once it stalls: after
    // 4 election timeouts with no byte once its source no longer leads, else after FETCH_STALL_FROM_LEADER_MS_MIN.
    const abort = new AbortController();
    const onStop = (): void => abort.abort();
    this.stopAbort.signal.addEventListener('abort', onStop, { once: true });
    const progress = { atMs: this.clock.nowMs(), bytes: 0 };
    const electionMs = this.timings.electionTimeoutTicks * this.timings.tickMs;
    const watch = this.clock.setInterval(() => {
      if (progress.bytes >= meta.sizeBytes || abort.signal.aborted) return; // all in: being synced and checked
      const stalledMs = this.clock.nowMs() - progress.atMs;
      const sourceGone = this.raft.brief().leader !== leader && stalledMs > Math.max(FETCH_STALL_MS_MIN, 4 * electionMs);
      if (!sourceGone && stalledMs <= Math.max(FETCH_STALL_FROM_LEADER_MS_MIN, 100 * electionMs)) return;
      this.log.warn({ index: meta.index, from: leader, bytes: progress.bytes, stalledMs: Math.round(stalledMs) }, 'restore: the fetch of the leader\'s snapshot of the restored state stalled; given up');
      abort.abort();
    }, this.timings.tickMs);
    try {
      const { stored } = await sm.fetch(this.id, address, meta, abort.signal, (bytes) => {
        progress.atMs = this.clock.nowMs();
        progress.bytes = bytes;
      });
      this.clock.clearTimeout(watch);
      await sm.adoptFetched(stored, recordsDigest !== undefined ? { recordsDigest } : {});
      this.log.info({ index: meta.index, from: leader, bytes: meta.sizeBytes }, 'restore: the leader\'s snapshot of the restored state kept as this node\'s');
    } catch (err) {
      this.log.warn({ index: meta.index, from: leader, err: (err as Error).message }, 'restore: the leader\'s snapshot of the restored state was not fetched; building one');
    } finally {
      this.clock.clearTimeout(watch);
      this.stopAbort.signal.removeEventListener('abort', onStop);
      this.adopting = false;
      this.snapshotSoon = true;
      // A quiet follower may see no Ready for a long time: the check runs here (as after an apply).
      if (this.failure === null && !this.stopped) this.maybeSnapshot();
    }
  }

  /**
   * openStateImage serves FetchStateImage: the state image of the
   * restore entry at p.index, once this node has it, waiting up to
   * IMAGE_BUILD_WAIT_MS while it is building it (or, as the leader, has not
   * yet applied that committed entry). Errors (coded): UNIMPLEMENTED (a store
   * without images), FAILED_PRECONDITION (the asker reads records of another
   * form than STATE_RECORD_FORMAT), RESOURCE_EXHAUSTED (IMAGE_TRANSFERS_MAX streams served
   * already, or IMAGE_TRANSFERS_PER_PEER_MAX to p.from), NOT_FOUND (no image of that index comes).
   */
  async openStateImage(p: FetchStateImageParams, signal: AbortSignal): Promise<StateImageStream> {
    this.checkRunning();
    const storage = this.storage;
    if (storage.stateImage === undefined) throw coded(12, 'this node keeps no state images');
    if (p.recordFormat !== STATE_RECORD_FORMAT) {
      throw coded(9, `${p.from} reads state records of format ${p.recordFormat}; this node's state images hold format ${STATE_RECORD_FORMAT}`);
    }
    if (this.imageTransfers >= IMAGE_TRANSFERS_MAX) throw coded(8, `${IMAGE_TRANSFERS_MAX} state images are being sent already`);
    const toPeer = this.imageTransfersTo.get(p.from) ?? 0;
    if (toPeer >= IMAGE_TRANSFERS_PER_PEER_MAX) throw coded(8, `${p.from} is being sent ${toPeer} state image${toPeer === 1 ? '' : 's'} already`);
    this.imageTransfers++;
    this.imageTransfersTo.set(p.from, toPeer + 1);
    const ended = (): void => {
      this.imageTransfers--;
      const n = (this.imageTransfersTo.get(p.from) ?? 1) - 1;
      if (n > 0) this.imageTransfersTo.set(p.from, n);
      else this.imageTransfersTo.delete(p.from);
    };
    let held: HeldStateImage | null;
    try {
      const deadline = this.clock.nowMs() + IMAGE_BUILD_WAIT_MS;
      for (;;) {
        held = storage.stateImage(p.index);
        if (held !== null) break;
        const b = this.raft.brief();
        const coming = this.imageBuilding === p.index || (b.role === 'leader' && this.fsm.appliedIndex() < p.index && p.index <= b.commit);
        if (!coming || this.stopped || signal.aborted || this.clock.nowMs() >= deadline) throw coded(5, `${this.id} has no state image of index ${p.index}`);
        await this.clock.sleep(20);
      }
    } catch (err) {
      ended();
      throw err;
    }
    this.snapshotStats.imagesServed++;
    const pinned = held;
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      pinned.release();
      ended();
    };
    this.log.info({ index: p.index, to: p.from, files: pinned.image.files.length }, 'sending a state image');
    return {
      files: pinned.image.files,
      chunks: (async function* () {
        try {
          yield* pinned.chunks();
        } finally {
          close();
        }
      })(),
      close,
      snapshot: async () => {
        const sm = this.snapshots;
        if (sm === undefined) return null;
        // The restore's copy as a snapshot is finished in the background right after the install (~0.3 s at 1M keys).
        let timer: TimerHandle | undefined;
        await Promise.race([sm.copied(), new Promise<void>((resolve) => (timer = this.clock.setTimeout(resolve, IMAGE_SNAPSHOT_WAIT_MS)))]);
        this.clock.clearTimeout(timer);
        const meta = sm.newestMeta();
        return meta !== null && meta.index === p.index ? meta : null;
      },
    };
  }

  /**
   * installBaseInstead (apply worker, applying restore entry `index`): no
   * member gave the entry's archive (simulator seed 81992: the members that
   * applied it took a snapshot, compacted their logs past it and dropped the
   * upload, while this follower still held the entry unapplied). A snapshot
   * at or after the entry holds its effect: the core is told (applyBlocked)
   * and asks the leader for one; the first such snapshot fetched is installed
   * here, in the entry's place (the state machine then skips the entries it
   * covers). A snapshot refused while installing is asked for again
   * (installSnapshot). Resolves once one is installed; rejects when the node
   * stops.
   */
  private async installBaseInstead(index: number): Promise<RestoreOutcome> {
    this.raft.applyBlocked(index);
    this.kick();
    this.log.warn({ index }, 'restore: no member gave the archive (it is dropped once applied and compacted past); installing a snapshot at or after this entry instead');
    for (;;) {
      if (this.stopped || this.failure !== null) throw new NodeError('shuttingDown', 'the node is shutting down');
      const at = this.applyQueue.findIndex((t) => isSnapshotInstall(t) && t.meta.index >= index);
      const task = at >= 0 ? (this.applyQueue.splice(at, 1)[0] as SnapshotInstall) : undefined;
      if (task === undefined) {
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            this.stopAbort.signal.removeEventListener('abort', wake);
            this.installQueued = null;
            resolve();
          };
          this.installQueued = wake;
          this.stopAbort.signal.addEventListener('abort', wake, { once: true });
        });
        continue;
      }
      await this.installSnapshot(task);
      if (this.fsm.appliedIndex() >= index) {
        this.log.info({ index, snapshotIndex: task.meta.index }, 'restore: a snapshot holding it was installed in its place');
        return { ok: true };
      }
    }
  }

  /**
   * restore replaces the cluster's key-value state with an archive's, through
   * the log. The archive is validated completely (every hash) before anything
   * is proposed: a bad one is refused (`invalid`) and nothing changes; so is
   * any restore below the disk reserve, or whose upload runs out of space
   * (`diskFull`). Resolves once the restore is applied on this node (the leader).
   * With `session` (a client request id) it is applied at most once: a repeat
   * resolves with the first restore's index and `replayed` set, installing nothing.
   * `signal`: the uploader canceled its call. Checked once the upload is stored
   * and again just before the entry is proposed: a canceled upload is refused
   * (`invalid`) even when its bytes ended whole (grpc-js hands a server the end
   * of a client stream that was canceled, then the cancel: Node's HTTP/2 ends a
   * stream's readable side when it is reset), so nothing changes.
   */
  async restore(source: Readable, session?: SessionStamp, signal?: AbortSignal): Promise<{ index: number; archive: StoredSnapshot; replayed: boolean }> {
    this.checkRunning();
    const archives = this.archives;
    if (archives === null) {
      source.destroy();
      throw new NodeError('invalid', 'this node keeps no snapshots');
    }
    const st = this.raft.status();
    if (st.role !== 'leader') {
      source.destroy();
      throw new NodeError('notLeader', new NotLeaderError(st.leader).message, st.leader, this.addressOf(st.leader));
    }
    const stored = await archives.store(source);
    checkNotCanceled(signal);
    const r = await archives.whileProposing(stored, async () => {
      // A quorum holds a durable copy before the entry exists: losing this node cannot strand it. A quorum of the
      // voters the entry is proposed under: staging takes a while, and a membership change appended meanwhile
      // (before the entry exists, so changeMembership's wait for a restore's quorum does not hold it) may leave the
      // holders short of the new voters' quorum. Simulator seed 1125 (717880's scenario, changes every 150 ms):
      // staged on n1 and n3 of {n1, n2, n3}; by then n4 was a voter and n3 removed; n1 lost, no member of
      // {n2, n4, n5} ever held the archive and the restore entry was never applied (no write committed after it).
      // So it is staged again on the voters of the moment until they hold still across a staging (the entry is then
      // appended with no await in between).
      if (this.bugs.restoreOnOneCopy !== true) {
        for (let round = 1; ; round++) {
          const now = this.raft.brief();
          await archives.stageOnQuorum(stored, now.membership.voters, now.term);
          const voters = this.raft.brief().membership.voters;
          if (sameVoters(voters, now.membership.voters)) break;
          if (round >= RESTORE_STAGE_ROUNDS_MAX) {
            throw new NodeError('unavailable', `the restore was not proposed, nothing changed: the voters changed during each of ${round} stagings of its archive; retry`);
          }
          this.log.info({ digest: stored.archiveSha256, staged: now.membership.voters, voters }, 'restore: the voters changed while its archive was staged; staging it on the new ones');
        }
      }
      checkNotCanceled(signal);
      return this.proposeData(
        encodeRestoreCommand({
          digest: stored.archiveSha256,
          sizeBytes: stored.archiveBytes,
          index: stored.meta.index,
          term: stored.meta.term,
          ...(session !== undefined ? { session } : {}),
          recordsDigest: stored.recordsDigest,
        }),
        Math.max(this.timings.proposalTimeoutMs, 10 * 60_000),
      );
    });
    if (!r.ok && r.code === 'requestIdExpired') throw new NodeError('invalid', r.error);
    if (!r.ok) throw new NodeError('invalid', `the restore failed: ${r.error}`);
    return { index: r.firstIndex ?? r.index, archive: stored, replayed: r.firstIndex !== undefined };
  }

  /**
   * quarantineDamagedSnapshot: a reader of the stored snapshot `id` (a task's
   * export) found bytes that differ from its recorded hashes: it is re-hashed
   * and, if damaged, quarantined (SnapshotManager.quarantineIfDamaged), so
   * the next downloadSnapshot builds one rather than serve it again. True
   * when it was moved.
   */
  async quarantineDamagedSnapshot(id: string): Promise<boolean> {
    this.checkRunning();
    return (await this.snapshots?.quarantineIfDamaged(id)) ?? false;
  }

  /**
   * downloadSnapshot returns a snapshot of the state now, opened (pinned until
   * release()): the newest stored one if the state has not changed since it
   * was taken (SnapshotManager.openCurrent), else one taken now. Without
   * `stale` only the leader answers, after a ReadIndex barrier, so the
   * snapshot holds every write acknowledged before the call. With `toDisk`
   * (the caller writes a copy on this node's disks: a task's file, a
   * directory export) it is refused with `diskFull` below the disk's reserve,
   * as a snapshot taken now is; a download over the network is a read and is
   * served from the current snapshot even then. `signal`: the caller went
   * away (a cancelled download): a snapshot being created for it alone may be
   * superseded (snapshotNow).
   */
  async downloadSnapshot(stale: boolean, opts: { readonly toDisk?: boolean; readonly signal?: AbortSignal } = {}): Promise<SnapshotHandle> {
    this.checkRunning();
    const sm = this.snapshots;
    if (sm === undefined) throw new NodeError('invalid', 'this node keeps no snapshots');
    if (opts.toDisk === true) this.disk?.check();
    if (!stale) {
      const st = this.raft.status();
      if (st.role !== 'leader') throw new NodeError('notLeader', new NotLeaderError(st.leader).message, st.leader, this.addressOf(st.leader));
      await this.linearizableBarrier();
    }
    // What the snapshot must hold: every entry applied now (after the barrier: every write acknowledged before the call).
    const need = this.fsm.appliedIndex();
    // At most two rounds: a download waits for at most one creation viewed before `need` (the next one begins
    // after it, so its view holds `need`).
    for (;;) {
      // A stop or a failure ends the wait; so does the caller going away (it starts nothing: a creation made for
      // it alone would be made for nobody).
      this.checkRunning();
      throwIfGone(opts.signal);
      // A snapshot that still holds the state as it is now is served, not rebuilt (issue 15 item 2), also when
      // entries that changed nothing were applied since (a new leader's empty entry).
      const current = await sm.openCurrent(this.fsm.changedIndex());
      if (current !== null) return current;
      throwIfGone(opts.signal);
      // One being made for other downloads is shared when it holds `need`: its view not yet taken (it will hold
      // the state of then, or later), or taken at `need` or after. Downloads that keep coming while writes go on
      // then cost one creation per round, not one each, made one after another (bench:snapshot-cluster at 8M keys:
      // 4 downloads during writes made the leader build delta after delta, ~8 s of CPU each).
      const s = this.shared;
      if (s !== null && !s.abort.signal.aborted) {
        if (s.floor === null || s.floor >= need) return sm.openStored(await s.join(opts.signal));
        // It holds an older state, and downloads wait for it: the next one, once it is done (or this caller is gone).
        await untilSettledOrAborted(s.result, opts.signal);
        continue;
      }
      // None, or one whose downloads all went away: a new one, whose snapshotNow supersedes that one rather than
      // wait for it (a save right after downloads were given up waited for their snapshot, then made its own:
      // bench:snapshot-cluster at 4M keys, the save after the write phases 11.2 s, ~6 s of it its own). Joined at
      // once, in this turn: no other download's leaving can find it with no download waiting and give it up.
      const mine = new SharedCreation();
      this.shared = mine;
      mine.start(this.snapshotNow(mine.abort.signal, (applied) => mine.viewStarted(applied)));
      void mine.result.then(
        () => this.shared === mine && (this.shared = null),
        () => this.shared === mine && (this.shared = null),
      );
      return sm.openStored(await mine.join(opts.signal));
    }
  }

  // ------------------------------------------------------------ helpers

  private async proposeData(data: Uint8Array, timeoutMs = this.timings.proposalTimeoutMs): Promise<ApplyResult> {
    this.checkRunning();
    this.disk?.check();
    if (this.proposals.size >= this.maxPendingProposals) {
      throw new NodeError('busy', `too many writes in flight (${this.proposals.size}); retry later`);
    }
    const pos = this.proposeInCore(data);
    this.kick();
    return this.awaitApply(pos, timeoutMs);
  }

  /** awaitApply resolves with the apply result of the entry proposed at `pos` (`lost`: another term's entry there; `timeout` after timeoutMs). */
  private awaitApply(pos: { index: number; term: number }, timeoutMs: number): Promise<ApplyResult> {
    return new Promise<ApplyResult>((resolve, reject) => this.addProposal(pos, timeoutMs, 'write', resolve, reject));
  }

  private async waitApplied(index: number, term: number): Promise<void> {
    this.kick();
    await new Promise<void>((resolve, reject) => this.addProposal({ index, term }, this.timings.proposalTimeoutMs, 'membership change', () => resolve(), reject));
  }

  /**
   * addProposal waits for the apply of the entry proposed at `pos`, for timeoutMs at most (expireProposals).
   * One still waiting at that index is another term's entry, overwritten since: it fails `lost`.
   */
  private addProposal(pos: { index: number; term: number }, timeoutMs: number, what: PendingProposal['what'], resolve: (r: ApplyResult) => void, reject: (e: Error) => void): void {
    const old = this.proposals.get(pos.index);
    if (old !== undefined) {
      // Deleted first: the map stays in deadline order (expireProposals), the new one goes last.
      this.proposals.delete(pos.index);
      old.reject(new NodeError('lost', `entry ${pos.index} was replaced by another leader's; it was not applied`));
    }
    this.proposals.set(pos.index, { term: pos.term, resolve, reject, deadlineMs: this.clock.nowMs() + timeoutMs, timeoutMs, what });
  }

  /**
   * expireProposals (each tick) fails the proposals whose deadline passed with `timeout`. The map is in the
   * order they were proposed, and every timeout is at least timings.proposalTimeoutMs: the sweep stops at the
   * first one of that timeout still in time (every later one is too), stepping over the longer ones.
   */
  private expireProposals(): void {
    if (this.proposals.size === 0) return;
    const nowMs = this.clock.nowMs();
    for (const [index, p] of this.proposals) {
      if (p.deadlineMs > nowMs) {
        if (p.timeoutMs > this.timings.proposalTimeoutMs) continue; // a longer one (a restore): step over it
        break;
      }
      this.proposals.delete(index);
      if (p.what === 'write') {
        this.metrics?.proposals.inc({ result: 'timeout' });
        p.reject(new NodeError('timeout', `write at index ${index} not applied within ${p.timeoutMs} ms; its outcome is unknown`));
      } else {
        p.reject(new NodeError('timeout', `membership change at index ${index} not applied within ${p.timeoutMs} ms`));
      }
    }
  }

  /** linearizableBarrier resolves once this node has applied everything committed before the call. */
  private async linearizableBarrier(): Promise<void> {
    this.checkRunning();
    if (this.reads.size >= Math.min(this.maxPendingProposals, this.readsPerSourceMax)) {
      throw new NodeError('busy', `too many reads waiting on ${this.id} (${this.reads.size}: its share of the leader's read slots, maxPendingReads / READ_SHARES)`);
    }
    const context = `${this.id}/${this.readEpoch}/${++this.readSeq}`;
    await new Promise<void>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.reads.delete(context);
        reject(new NodeError('timeout', `linearizable read not confirmed within ${this.timings.readTimeoutMs} ms`));
      }, this.timings.readTimeoutMs);
      this.reads.set(context, { index: 0, resolve, reject, timer });
      this.raft.readIndex(context);
      this.kick();
    });
  }

  private releaseReads(): void {
    const applied = this.fsm.appliedIndex();
    for (const [ctx, r] of this.reads) {
      if (r.index > 0 && r.index <= applied) {
        this.reads.delete(ctx);
        this.clock.clearTimeout(r.timer);
        r.resolve();
      }
    }
  }

  /**
   * persisted resolves once every state change stepped so far is durable (the
   * Ready that holds it was saved); it rejects when the node fails or stops
   * first, so the answers that depended on that state are dropped.
   */
  private persisted(): Promise<void> {
    if (this.failure !== null) return Promise.reject(new NodeError('unavailable', `the node failed: ${this.failure.message}`));
    return new Promise((resolve, reject) => {
      this.replyWaiters.push({ gen: this.readyGen, resolve, reject });
      this.kick();
    });
  }

  /** releaseReplyWaiters frees the answers registered before Ready number `gen` started (their state is persisted). */
  private releaseReplyWaiters(gen: number): void {
    if (this.replyWaiters.length === 0 || this.failure !== null) return;
    const keep: ReplyWaiter[] = [];
    for (const w of this.replyWaiters) {
      if (w.gen < gen) w.resolve();
      else keep.push(w);
    }
    this.replyWaiters = keep;
  }

  /** dropReplyWaiters rejects every held answer: what it depends on may never be persisted. */
  private dropReplyWaiters(err: Error): void {
    const waiters = this.replyWaiters;
    this.replyWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  private idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private syncPeers(): void {
    const m = this.raft.brief().membership;
    // The addresses follow the membership (the dial and initial addresses never change): recomputed only when it does.
    if (m === this.peersMembership) return;
    this.peersMembership = m;
    const addresses: Record<NodeId, string> = {};
    for (const id of [...m.voters, ...m.learners]) {
      if (id === this.id) continue;
      const a = this.dialAddressOf(id);
      if (a !== '') addresses[id] = a;
    }
    const key = JSON.stringify(addresses);
    if (key === this.peersKey) return;
    this.peersKey = key;
    this.transport.setPeers(addresses);
  }


  private checkRunning(): void {
    if (this.stopped) throw new NodeError('shuttingDown', 'the node is shutting down');
    if (this.failure !== null) throw new NodeError('unavailable', `the node failed: ${this.failure.message}`);
  }

  private mapCoreError(e: unknown): Error {
    if (e instanceof NotLeaderError) {
      return new NodeError('notLeader', e.message, e.leader, this.addressOf(e.leader));
    }
    if (e instanceof ProposalDroppedError) return new NodeError('busy', e.message);
    if (e instanceof MembershipChangeError) return new NodeError('invalid', e.message);
    if (e instanceof ConfChangeUnsafeError) return new NodeError('unavailable', e.message);
    // Strict reconfiguration: not a retry-later (UNAVAILABLE) but an operator's precondition: the named voters must answer first.
    if (e instanceof ConfChangeUnreachableError) return new NodeError('failedPrecondition', e.message);
    return e instanceof Error ? e : new Error(String(e));
  }

  /**
   * fail: a storage error in the Ready loop (a persist, a compaction) or the
   * apply worker, or a state record that does not verify when a snapshot reads
   * it, is fatal for this node: its durable state is unknown. The
   * Raft loop stops for good (no Ready is handled, nothing more is sent, the
   * ticker stops), every answer held for a persist is dropped, never sent (a
   * vote grant or an append ack whose write failed must not reach a peer),
   * and waiting writes fail. Logs one error line; `serve` sees failed() and
   * exits 1.
   */
  private fail(e: unknown): void {
    if (this.failure !== null) return;
    const err = e instanceof Error ? e : new Error(String(e));
    this.failure = err;
    this.log.error(
      { id: this.id, err: err.message },
      err instanceof StorageError && err.code === 'corrupt'
        ? 'node failed: its data dir holds a record that does not verify; the Raft loop stopped (replace this data dir)'
        : 'node failed: a write to its data dir failed; the Raft loop stopped and the answers waiting on that write were dropped',
    );
    if (this.ticker !== undefined) this.clock.clearTimeout(this.ticker);
    const nerr = new NodeError('unavailable', `the node failed: ${err.message}`);
    this.forwardQueue?.failAll(nerr);
    if (this.bugs.releaseAnswersOnFailure === true) {
      const held = this.replyWaiters;
      this.replyWaiters = [];
      for (const w of held) w.resolve();
    } else this.dropReplyWaiters(nerr);
    for (const p of this.proposals.values()) p.reject(nerr);
    this.proposals.clear();
  }

  /** failed returns the fatal error that stopped this node, if any. */
  failed(): Error | null {
    return this.failure;
  }
}

/** promisesDurable: an answer that promises durable state: an append ack (its entries), a vote grant (the vote). */
function promisesDurable(r: Message): boolean {
  return (r.type === 'appendResp' && !r.reject) || (r.type === 'voteResp' && r.granted && !r.preVote);
}

/**
 * isContentError: `err` says an archive's content is unacceptable (a state
 * record or archive rule broken, a record the state machine refuses): the same
 * verified bytes fail the same way on every node. Disk and other IO errors are not.
 */
function isContentError(err: unknown): boolean {
  if (err instanceof StateFormatError || err instanceof RestoreDigestError) return true;
  if (err instanceof ArchiveError) return err.code !== 'io';
  return err instanceof StorageError && err.code === 'invalidArgument';
}

/**
 * BootRefusedError: the data dir cannot be started without falling back to a
 * state older than its log (serve exits 2 with its message, which says what
 * is wrong and how to repair it).
 */
export class BootRefusedError extends Error {
  override readonly name = 'BootRefusedError';
}

/**
 * checkBootBase never lets a node start from a snapshot older than its log
 * base: the entries between them (and the membership changes among them) are
 * gone, so the node would run on an older state and membership than it
 * acknowledged. Returns undefined when the newest snapshot that verifies
 * reaches the base. Else, in a cluster with another voter, returns the lost
 * base for the core to start from (RaftBootState.lostBase): a state machine
 * behind it applies and serves nothing until the leader's snapshot is
 * installed; one at or past it goes on and is snapshotted at once. Alone (no
 * other voter to take a snapshot from), or with no membership recorded with
 * the base, it refuses: BootRefusedError.
 */
async function checkBootBase(id: NodeId, base: LogBase, snapshot: SnapshotMeta, snapshots: SnapshotManager | undefined): Promise<SnapshotMeta | undefined> {
  if (snapshot.index >= base.index) return undefined;
  if (snapshots !== undefined && base.membership !== null && base.membership.voters.some((v) => v !== id)) {
    return { index: base.index, term: base.term, membership: base.membership, sizeBytes: 0, digest: '' };
  }
  const stored = snapshots === undefined ? [] : await snapshots.store.list().catch(() => []);
  // Those that failed verification at this boot (or before) were moved to quarantine (SnapshotManager.boot).
  const quarantine = snapshots === undefined ? null : await snapshots.store.quarantined().catch(() => null);
  const kept = quarantine?.names.length ?? 0;
  const unverified = stored.filter((s) => s.meta.index > snapshot.index).length + kept;
  const where = quarantine !== null && kept > 0 ? `, ${kept} of them kept in ${quarantine.dir}` : '';
  const found =
    snapshot.index === 0
      ? `no stored snapshot verifies${unverified > 0 ? ` (${unverified} failed verification${where})` : ' (none is stored)'}`
      : `the newest stored snapshot that verifies is at index ${snapshot.index}${unverified > 0 ? ` (${unverified} newer failed verification${where})` : ''}`;
  throw new BootRefusedError(
    `the log was compacted up to index ${base.index} (term ${base.term}) but ${found}; starting would fall back to a state ` +
      'and membership older than the log, so the node refuses to start. Repair: move this data dir away and start the node ' +
      'with a new, empty one (it rejoins and receives a snapshot from the leader), or restore from an archive into a new ' +
      'data dir (snapcoord serve --data-dir NEW --import-snapshot FILE)',
  );
}

/** describeMembership: `n1=host:port,n2=...` with learners marked, for logs. */
function describeMembership(m: Membership): string {
  const one = (id: NodeId, learner: boolean): string => `${id}=${m.addresses[id] ?? '?'}${learner ? ' (learner)' : ''}`;
  return [...[...m.voters].sort().map((id) => one(id, false)), ...[...m.learners].sort().map((id) => one(id, true))].join(',');
}

/** SnapshotInstall: a fetched snapshot queued for the apply worker to install. */
interface SnapshotInstall {
  readonly install: StoredSnapshot;
  readonly meta: SnapshotMeta;
}

function isSnapshotInstall(x: Entry | SnapshotInstall): x is SnapshotInstall {
  return 'install' in x;
}

/** stageError gives a staging failure its gRPC status: 8 for space, 3 for a refused archive, 14 otherwise. */
function stageError(err: unknown): Error {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number') return err as Error;
  if (err instanceof NodeError) return coded(err.code === 'diskFull' || err.code === 'busy' ? 8 : err.code === 'invalid' ? 3 : 14, message);
  if (isNoSpace(err)) return coded(8, message);
  if (isContentError(err)) return coded(3, message);
  return coded(14, message);
}

/** sameVoters: `a` and `b` name the same voters (in any order). */
function sameVoters(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((v) => b.includes(v));
}

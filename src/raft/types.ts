/**
 * Types of the pure Raft core. Nothing here does IO; every value is plain data
 * that the driver (src/node) persists, sends and applies, and that the seeded
 * simulator (test/sim) inspects.
 *
 * Indexes and terms are JavaScript numbers (exact up to 2^53); the transport
 * converts them to and from protobuf uint64.
 */

/** NodeId names a member of the cluster ("n1"). The empty string means none. */
export type NodeId = string;
export const NO_NODE: NodeId = '';

/** EntryType: `normal` carries opaque application data (empty data = no-op); `conf` carries a ConfChange. */
export type EntryType = 'normal' | 'conf';

export interface Entry {
  readonly index: number;
  readonly term: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** HardState is what must be durable before any message that depends on it leaves (Raft §5.1, Figure 2). */
export interface HardState {
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
}

/**
 * Membership is a configuration: the voters (who elect and form quorums), the
 * learners (who only receive the log) and the address of each member (opaque to
 * the core, carried so a new node can find its peers).
 */
export interface Membership {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
  readonly addresses: Readonly<Record<NodeId, string>>;
  /**
   * proofs (opaque to the core; absent when none): the proofs carried by the
   * last MEMBERSHIP_PROOFS_MAX configuration entries up to this one, oldest
   * first (ConfChange.proof: each a statement of the configuration an entry
   * makes, signed by the leader that appended it; src/node/membership-proofs.ts).
   * The core only carries them along, as a configuration passes from entry
   * to entry, snapshot and compaction; it never reads them.
   */
  readonly proofs?: readonly string[];
}

/**
 * ConfChange is a single-server membership change (Raft dissertation §4.1),
 * or (op `attest`) an entry that changes no member and only carries a proof:
 * the leader's commit statement of the configuration entry before it
 * (Raft.proposeAttestation; src/node/membership-proofs.ts). nodeId of an
 * attest is the leader that appended it.
 */
export interface ConfChange {
  readonly op: 'addVoter' | 'addLearner' | 'removeNode' | 'attest';
  readonly nodeId: NodeId;
  /** address of the node, kept in Membership.addresses; optional for removeNode. */
  readonly address?: string;
  /** proof (opaque to the core): the appending leader's signed statement of the configuration this change makes (Membership.proofs). */
  readonly proof?: string;
}

/**
 * ConfChangeProver: what proposeConfChange asks of its caller for the entry
 * it is about to append: a proof (Membership.proofs) that the entry at
 * `at` makes the configuration `next`, or null for none. Called once, after
 * every check, right before the append.
 */
export type ConfChangeProver = (at: { readonly index: number; readonly term: number }, next: Membership) => string | null;

/**
 * SnapshotMeta names a snapshot: the last index and term it includes, the
 * membership as of that index, and (opaque to the core) its size and digest so
 * that a follower can fetch and verify it.
 */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
  readonly sizeBytes: number;
  /** hex SHA-256 of the whole snapshot archive ('' for the empty initial snapshot). */
  readonly digest: string;
}

/**
 * StateImageFile / StateImageChunk: the data of a state image (issue 15),
 * opaque to the core; declared here, below the layers that meet on them
 * (storage writes and reads the files, transport carries them, node joins the two).
 * StateImageFile: one file (a RocksDB file name, no directory), its size and SHA-256 (32 bytes).
 */
export interface StateImageFile {
  readonly name: string;
  readonly sizeBytes: number;
  readonly sha256: Uint8Array;
}

/** StateImageChunk: bytes of file number `file` (an index into the image's manifest) from `offset`. */
export interface StateImageChunk {
  readonly file: number;
  readonly offset: number;
  readonly data: Uint8Array;
  /**
   * release, when present: the consumer is done with `data` (sent or copied, no view of it kept), and
   * its reader may read a later chunk into the same memory. Calling it while anything still reads `data`
   * corrupts what that reads; not calling it only costs a fresh buffer per chunk.
   */
  readonly release?: () => void;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

interface MessageBase {
  readonly from: NodeId;
  readonly to: NodeId;
  /** term of the sender; 0 for a local message that carries no term. */
  readonly term: number;
}

/** VoteRequest: RequestVote (Raft §5.2, §5.4.1), or a PreVote (dissertation §9.6) when preVote is set. */
export interface VoteRequest extends MessageBase {
  readonly type: 'vote';
  readonly preVote: boolean;
  readonly lastLogIndex: number;
  readonly lastLogTerm: number;
  /** set by a leadership transfer (TimeoutNow): voters skip the leader-lease check (dissertation §3.10). */
  readonly transfer: boolean;
}

export interface VoteResponse extends MessageBase {
  readonly type: 'voteResp';
  readonly preVote: boolean;
  readonly granted: boolean;
}

/**
 * APPEND_ENTRIES_MAX: the most entries one append carries. The leader never
 * sends more (besides maxAppendBytes of entry data, which a log of empty or
 * tiny entries never reaches); a receiver refuses an append with more before
 * it reaches the core (src/transport/codec.ts): the peer message cap alone let
 * a member send millions of empty entries in one message.
 */
export const APPEND_ENTRIES_MAX = 8192;

/** AppendRequest: AppendEntries (Raft §5.3); at most APPEND_ENTRIES_MAX entries. */
export interface AppendRequest extends MessageBase {
  readonly type: 'append';
  readonly prevLogIndex: number;
  readonly prevLogTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  /**
   * base (prevLogIndex 0 only, from a leader whose log starts at the first
   * entry): the membership its log starts from. A follower with an empty log
   * takes it as its own base: entries from the first are changes to it.
   */
  readonly base?: Membership;
}

/**
 * AppendResponse: on success `index` is the last index known to match; on
 * reject `index` is the rejected prevLogIndex and (hintIndex, hintTerm) let the
 * leader skip a whole conflicting term at once (fast backtracking).
 */
export interface AppendResponse extends MessageBase {
  readonly type: 'appendResp';
  readonly reject: boolean;
  readonly index: number;
  readonly hintIndex: number;
  readonly hintTerm: number;
  /**
   * installingIndex: the snapshot the follower is fetching or installing (absent
   * or 0 when none). A leader that did not offer it (a new one) learns of the
   * install from its first append's answer and keeps the entries after it.
   */
  readonly installingIndex?: number;
}

/** Heartbeat: an empty AppendEntries that carries the commit index and a ReadIndex round (seq). */
export interface Heartbeat extends MessageBase {
  readonly type: 'heartbeat';
  readonly commit: number;
  readonly readSeq: number;
  /**
   * installFloor: the lowest snapshot index a follower of this leader is
   * installing (absent or 0: none). Every follower keeps the entries after it
   * too: whichever leads next still has what the installing follower needs.
   */
  readonly installFloor?: number;
  /**
   * snapshotIndex: the index of the leader's newest snapshot (absent or 0:
   * none), the one it offers a follower too far behind. A follower compacts
   * no further than it, so the entries after any snapshot the leader may have
   * offered are still held by whoever leads next.
   */
  readonly snapshotIndex?: number;
}

export interface HeartbeatResponse extends MessageBase {
  readonly type: 'heartbeatResp';
  readonly readSeq: number;
  /** index of the snapshot the follower is fetching or installing (until the install is done), 0 when none. */
  readonly installingIndex: number;
  /**
   * needsSnapshot: the follower's install failed after its log was reset to
   * that snapshot (absent or 0: not so); it needs a snapshot at or after this
   * index before it can apply anything, and takes the leader's newest.
   */
  readonly needsSnapshot?: number;
  /**
   * applied: the index the follower's state machine has applied, as its
   * driver last reported (RaftNode.stateApplied); absent or 0 when unknown.
   * The leader's membership changes look at it (proposeConfChange's
   * appliedFloor): entries applied from outside the log (a restore's
   * archive) reach a new configuration only through members that applied
   * them.
   */
  readonly applied?: number;
  /**
   * snapshotIndex: the index of the newest snapshot the follower holds and
   * could offer as leader (absent or 0: none, or it was lost and not rebuilt
   * yet). A leader that cannot offer its own to a follower that needs one
   * hands leadership only to a voter that reported one (RaftNode.handOff).
   */
  readonly snapshotIndex?: number;
}

/** SnapshotRequest: InstallSnapshot (Raft §7), metadata only; the follower pulls the bytes. */
export interface SnapshotRequest extends MessageBase {
  readonly type: 'snapshot';
  readonly snapshot: SnapshotMeta;
}

/**
 * SnapshotResponse reports the outcome of an install back to the leader: sent
 * once the state machine holds the snapshot (not when the fetch ends), or when
 * the fetch failed (reject).
 */
export interface SnapshotResponse extends MessageBase {
  readonly type: 'snapshotResp';
  readonly index: number;
  readonly reject: boolean;
}

/** TimeoutNow: the leader asks a caught-up follower to start an election at once (dissertation §3.10). */
export interface TimeoutNow extends MessageBase {
  readonly type: 'timeoutNow';
}

/** ReadIndexRequest: a follower asks the leader for a read index (dissertation §6.4). */
/**
 * READ_CONTEXT_CHARS_MAX: the longest ReadIndex context. A node names its reads
 * `<id>/<boot epoch>/<seq>` (at most ~300 characters: ids have at most
 * NODE_ID_CHARS_MAX); a receiver refuses a longer one (src/transport/codec.ts).
 */
export const READ_CONTEXT_CHARS_MAX = 512;

export interface ReadIndexRequest extends MessageBase {
  readonly type: 'readIndex';
  readonly context: string;
}

/** ReadIndexResponse: index 0 with reject set means the leader could not serve the read. */
export interface ReadIndexResponse extends MessageBase {
  readonly type: 'readIndexResp';
  readonly context: string;
  readonly index: number;
  readonly reject: boolean;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | SnapshotRequest
  | SnapshotResponse
  | TimeoutNow
  | ReadIndexRequest
  | ReadIndexResponse;

export type MessageType = Message['type'];

/** ReadState: reads issued with `context` may be served once the state machine has applied `index`. */
export interface ReadState {
  readonly context: string;
  readonly index: number;
}

/** ReadFailure: a read that cannot be served here (no leader, lost leadership). */
export interface ReadFailure {
  readonly context: string;
  readonly reason: string;
}

export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
}

/**
 * Ready is the work the driver must do, in this order:
 * 1. apply `logReset` (if set), then persist `hardState` (if set) and `entries`
 *    (truncating any persisted entry with index >= entries[0].index first), with one sync;
 * 2. send `messages`;
 * 3. fetch and install `snapshot` if set (then call restoreSnapshot, or beginInstall and
 *    snapshotInstalled around a long install, or snapshotFailed);
 * 4. apply `committedEntries` in order;
 * 5. deliver `readStates` / `readFailures` once applied >= their index;
 * 6. call advance(ready).
 */
export interface Ready {
  /**
   * logReset: discard every persisted entry and make (index, term) the log
   * base, with the membership as of index (membershipAt), before writing
   * `entries`. At index 0 (a log still empty): the base membership a leader's
   * first append brought replaces the one this node was started with.
   */
  readonly logReset: { readonly index: number; readonly term: number } | null;
  readonly softState: SoftState | null;
  readonly hardState: HardState | null;
  readonly entries: readonly Entry[];
  readonly snapshot: SnapshotMeta | null;
  readonly committedEntries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly readStates: readonly ReadState[];
  readonly readFailures: readonly ReadFailure[];
}

/** Rng is the injected source of randomness: returns an integer in [0, n). */
export interface Rng {
  nextInt(n: number): number;
}

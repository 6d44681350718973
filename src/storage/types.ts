/**
 * The storage contracts of a node: the durable Raft log (LogStore), the
 * bytes of the replicated state (StateStore: keys, values, the applied index
 * and membership; what they mean is src/fsm's business) and the data dir's
 * identity (IdentityStore). RocksStorage and MemoryStorage implement all three with
 * the same semantics, checked by one contract test suite.
 *
 * Every method of a closed store rejects with StorageError `closed`.
 */
import type { KeyNames } from './key-string.js';
import type { Entry, HardState, Membership, NodeId } from '../raft/types.js';
import type { StateImage, StateImageChunk, StateImageSource } from './state-image.js';

/**
 * LogBase names the last entry removed by compaction ({0, 0} for a log never
 * compacted) and the membership in force as of it: the snapshot the log
 * starts after. At index 0 the membership is the cluster's starting one
 * (recorded once by LogStore.bootstrap). `membership` is null only when none
 * was ever recorded (a new data dir before bootstrap, or one compacted by a
 * build that did not record it).
 */
export interface LogBase {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership | null;
}

/** CompactionBase is what LogStore.compact records: a LogBase whose membership is known. */
export interface CompactionBase {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
}

/** LogState is what a LogStore holds: the entries are those after `logBase`, contiguous. */
export interface LogState {
  readonly hardState: HardState;
  readonly logBase: LogBase;
  readonly entries: Entry[];
}

/** LogBatch is the durable part of one Ready: an optional hard state and entries to append. */
export interface LogBatch {
  readonly hardState?: HardState;
  readonly entries?: readonly Entry[];
}

/**
 * LogStore is the durable Raft log and hard state.
 *
 * - `load()` returns the persisted hard state ({term 0, vote '', commit 0}
 *   when none), the log base and every entry after it, in index order.
 *   Errors: StorageError `corrupt` if an entry does not decode or the log has a gap.
 * - `save(batch)` persists `batch` with exactly ONE synced write (group
 *   commit): every persisted entry with index >= entries[0].index is deleted
 *   first (a conflicting suffix, Raft §5.3), then the entries are written,
 *   atomically with the hard state. An empty batch writes nothing.
 *   Errors: StorageError `invalidArgument` if the entries are not contiguous,
 *   would leave a gap (entries[0].index > last index + 1) or overwrite a
 *   compacted entry (entries[0].index <= logBase.index). A batch with no
 *   entries whose hard state keeps the durable term and vote (only the
 *   commit index moved) may be written unsynced (etcd's raft.MustSync): the
 *   commit index needs no sync for safety, and load() may return an earlier
 *   commit after a power loss, never a later one.
 * - `compact(base)` deletes every entry with index <= base.index and records
 *   `base` (index, term and the membership in force as of base.index) as the
 *   log base, in one synced write. If the log holds an entry at
 *   base.index with a different term, the whole log is discarded (Raft §7:
 *   the snapshot supersedes it). A base at or below the current one is a
 *   no-op (idempotent; the base never moves backwards), except on a log
 *   still empty at base 0: a base at 0 with another membership replaces the
 *   recorded one (a follower took its leader's base). A base beyond the
 *   last entry empties the log and the next append starts at base.index + 1.
 *   It never waits for an installState in progress. Errors: StorageError
 *   `invalidArgument` (index or term not a non-negative safe integer, a
 *   malformed membership).
 * - `bootstrap(membership)`: records `membership` as the membership of a log
 *   base at index 0 that has none recorded yet (a new data dir: the
 *   cluster's starting membership), in one synced write, and resolves with
 *   it. Set once: when a membership is recorded already it changes nothing
 *   and resolves with the recorded one (the caller reports a difference).
 *   A log compacted past 0 with no membership recorded gets none (its
 *   starting membership is unknown): resolves null.
 *   Errors: StorageError `invalidArgument` (a malformed membership).
 * - `lastIndex()`: index of the last persisted entry (the log base when the log is empty).
 *
 * A write to the log (save, compact, bootstrap, the identity's creation)
 * that failed may have left part of itself on disk: every later log write
 * of that store is refused (StorageError `io` naming the first failure),
 * because RocksDB would take them and lose them at the next open (review12,
 * log-write-failure.spec); the node's next persist fails and it stops. A
 * save written while an earlier compaction's write was under way is
 * refused if that write fails. A reopened store (a restarted node) has the
 * log as it was: every write that succeeded, the failed one whole or not at
 * all, none after it; it takes writes again. The in-memory twins keep the
 * same rule (MemoryStorage, with MemoryDataDir.logWriteFault for a failing
 * disk; the simulator's SimStorage for the faults it draws), checked for
 * both stores by storage-contract.spec.
 */
export interface LogStore {
  load(): Promise<LogState>;
  save(batch: LogBatch): Promise<void>;
  compact(base: CompactionBase): Promise<void>;
  bootstrap(membership: Membership): Promise<Membership | null>;
  lastIndex(): number;
  close(): Promise<void>;
}

/** KeyValue is one pair of the replicated store. Callers must not modify the bytes they are given. */
export interface KeyValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/**
 * RangeQuery selects keys in bytewise order: those with `prefix` (when
 * given), >= `start` (when given) and < `end` (when given), all combined;
 * at most `limit` of them (capped at RANGE_LIMIT_MAX), and no more pairs
 * than fit in `bytesMax` bytes of keys and values (capped at
 * RANGE_BYTES_MAX, its default): the first pair is always returned, a
 * later one that would pass the cap is not (`more` is then set).
 */
export interface RangeQuery {
  readonly prefix?: Uint8Array;
  readonly start?: Uint8Array;
  readonly end?: Uint8Array;
  readonly limit: number;
  readonly bytesMax?: number;
}

/** RangeResult: `more` is true when keys beyond the last returned one match too (page on with start = last key + 0x00). */
export interface RangeResult {
  readonly kvs: KeyValue[];
  readonly more: boolean;
}

/** RANGE_LIMIT_MAX is the most pairs one range call returns. */
export const RANGE_LIMIT_MAX = 10_000;

/**
 * RANGE_BYTES_MAX is the most key and value bytes one range call returns
 * (besides its first pair, returned whatever its size). Without it a range of
 * RANGE_LIMIT_MAX pairs of 1 MiB values held 10 GiB in memory, and any answer
 * over the API's 64 MiB message cap was built whole and then failed.
 */
export const RANGE_BYTES_MAX = 4 * 1024 * 1024;

/** StateWrite is one change to the state: a put of `value` under `key`, or a delete when value is null. */
export interface StateWrite {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/**
 * StateBatch is what one StateStore.write makes durable at once: `writes` in
 * order (a later write to a key wins), the new applied index and, when
 * given, the new membership.
 */
export interface StateBatch {
  readonly writes: readonly StateWrite[];
  readonly appliedIndex: number;
  readonly membership?: Membership;
  /** names: the writer's KeyNames for these keys (key-string.ts), so the store need not build their strings again. */
  readonly names?: KeyNames;
}

/**
 * StateStore holds the bytes of the replicated state: keys and values, the
 * applied index and the membership. It knows bytes, not commands: what an
 * entry means, and which keys are the state machine's own records, is the
 * state machine's business (src/fsm).
 *
 * - `appliedIndex()`: the applied index of the last write or install (0 when new).
 * - `write(batch)`: writes the batch's puts and deletes, its applied index
 *   and membership (when given) in ONE atomic batch, in line with installs
 *   and snapshots (after every one called before it). The applied index
 *   never moves backwards. Errors: StorageError `invalidArgument`
 *   (appliedIndex not a safe integer at or above the current one, a
 *   malformed membership, a key that is empty or not a Uint8Array),
 *   `closed`, `io`; nothing is written then.
 * - `get(key)`: the value under `key` (any key), or undefined.
 * - `getMany(keys)`: the values under `keys` (undefined where none), in
 *   order, read at one point in time (one native call on RocksDB).
 * - `range(query)`: see RangeQuery (every key). Errors: StorageError
 *   `invalidArgument` if limit is not a positive integer.
 * - `membership()`: the membership of the last write that carried one (or install), null if none.
 * - `stateEpoch()`: a number that changes each time installState replaces
 *   the state (equal epochs: the state changed by write() alone since). A
 *   cache of the state (the state machine's) drops what it holds when it moves.
 * - `snapshotState()`: a point-in-time view of the whole state, see
 *   StateSnapshotReader. It is taken in line with writes: it holds every
 *   write (and install) called before it and none called after it, and
 *   `reader.appliedIndex` / `reader.membership` are those of exactly that
 *   data. Writes go on while the reader streams. The reader must be closed.
 * - `installState(source, meta)`: replaces the WHOLE state (every key, the
 *   applied index, the membership) with the records `source` yields and
 *   `meta`, atomically and durably: before it resolves (or after a crash at
 *   any point during it) reads and a reopened store see the old state; once
 *   it resolves, the new one, completely. Keys absent from `source` are gone;
 *   a key given twice keeps its last value. Runs in line with writes (a
 *   write called meanwhile waits for it; it waits for the writes called
 *   before it). It does not compare `meta.appliedIndex` with the current
 *   one: whether a snapshot is worth installing is the caller's decision. If
 *   `source` throws, that error is rethrown and the old state stays
 *   untouched; close() during an install aborts it the same way. A
 *   batch's records are read only until the next batch is asked for (each
 *   is copied at once): a source may reuse their memory then (a follower's
 *   install read on a worker does, src/snapshot/install-read.ts).
 *   Errors: StorageError `invalidArgument` (meta.appliedIndex not a
 *   non-negative safe integer, a malformed membership, a record whose key is
 *   empty or not a Uint8Array), `closed`, `io`; or the source's own error.
 * - `stateDigest()`: hex SHA-256 of one snapshotState() view (so it is
 *   consistent while writes go on), streamed: the applied index as u64be,
 *   then for each record in bytewise key order u32be key length, key, u32be
 *   value length, value. Equal for equal states on every implementation
 *   (membership is not covered). For tests and leader/follower comparison.
 */
export interface StateStore {
  appliedIndex(): number;
  write(batch: StateBatch): Promise<void>;
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]>;
  range(query: RangeQuery): Promise<RangeResult>;
  membership(): Membership | null;
  stateEpoch(): number;
  snapshotState(options?: SnapshotStateOptions): Promise<StateSnapshotReader>;
  /** installState: `options.exportImage` (a store that exports images): export the built generation (stateImage). */
  installState(source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>, meta: InstallMeta, options?: { readonly exportImage?: boolean }): Promise<void>;
  stateDigest(): Promise<string>;
  close(): Promise<void>;
  /**
   * State images (issue 15; state-image.ts), optional: a store that
   * has them exports the generation an installState with `exportImage` built,
   * serves it (stateImage, pinned until release) until dropStateImage or a
   * later export, and installs another member's as its next generation
   * (importStateImage: the whole state replaced, as installState; refused
   * before anything is written when its bytes and `options.reserveBytes`
   * exceed the free disk space).
   */
  importStateImage?(source: StateImageSource, meta: InstallMeta, options?: ImportImageOptions): Promise<void>;
  stateImage?(appliedIndex: number): HeldStateImage | null;
  dropStateImage?(): void;
}

/**
 * ImportImageOptions (StateStore.importStateImage): `reserveBytes`, free
 * disk space the import must leave; `verifyRecords`, when given, is run on
 * the imported state before its commit, with every record of it (reserved
 * ones too) in bytewise key order and the new generation's path (for its
 * message): a rejection refuses the import, its error passed on, the new
 * generation deleted and the old state kept.
 */
export interface ImportImageOptions {
  readonly reserveBytes?: number;
  readonly verifyRecords?: (records: AsyncIterable<readonly KeyValue[]>, path: string) => Promise<void>;
}

/**
 * HeldStateImage: a state image pinned (StateStore.stateImage) until
 * release(): its manifest (`image`) and its files' bytes as the store reads
 * them, in manifest order, in chunks (`chunks()`, each call a new read).
 */
export interface HeldStateImage {
  readonly image: StateImage;
  chunks(): AsyncIterable<StateImageChunk>;
  release(): void;
}

/** SNAPSHOT_BATCH_ENTRIES_DEFAULT / SNAPSHOT_BATCH_BYTES_DEFAULT bound one batch of StateSnapshotReader.batches(). */
export const SNAPSHOT_BATCH_ENTRIES_DEFAULT = 1000;
export const SNAPSHOT_BATCH_BYTES_DEFAULT = 4 * 1024 * 1024;

/**
 * StateSnapshotReader is one point-in-time view of a state machine (see
 * StateStore.snapshotState).
 *
 * - `appliedIndex`, `membership`: those of the view (membership null when
 *   no conf entry was applied).
 * - `batches(batchEntriesMax, batchBytesMax)`: the records of the view in
 *   bytewise key order, in batches of at most `batchEntriesMax` records
 *   (default SNAPSHOT_BATCH_ENTRIES_DEFAULT) that end once they hold
 *   `batchBytesMax` bytes of keys and values (default
 *   SNAPSHOT_BATCH_BYTES_DEFAULT; a larger record comes alone), so memory
 *   stays flat for any state size (RocksStorage's may end sooner: a batch
 *   is at most what one read of its iterator brought, ~1 MiB). One pass only: a second call rejects with
 *   StorageError `invalidArgument`. Finishing, breaking out of or failing
 *   the loop closes the reader. Errors: StorageError `closed` (the reader or
 *   the store was closed), `io`, `corrupt` (the view is inconsistent).
 * - `close()`: releases the view (on RocksDB: its iterator, and the state
 *   generation it reads, which an install cannot delete until then). Must be
 *   called when batches() was not run to its end; idempotent, never rejects.
 */
export interface StateSnapshotReader {
  readonly appliedIndex: number;
  readonly membership: Membership | null;
  /**
   * changes: with SnapshotStateOptions.changesSince, every key written or
   * deleted after that applied index up to the view, with its value in the
   * view; null when the store cannot say (not tracked that far back, an
   * install since, too many) or was not asked; a store that never tracks
   * leaves it undefined.
   */
  readonly changes?: StateChanges | null | undefined;
  batches(batchEntriesMax?: number, batchBytesMax?: number): AsyncGenerator<KeyValue[], void, undefined>;
  close(): Promise<void>;
}

/**
 * SnapshotStateOptions: `changesSince` asks the view to list the keys
 * written or deleted after that applied index (StateSnapshotReader.changes);
 * changes at or before it are no longer kept for later views.
 */
export interface SnapshotStateOptions {
  readonly changesSince?: number;
}

/** StateChanges: the keys changed after `sinceIndex`, in bytewise key order, each with its value in the view (null: absent). */
export interface StateChanges {
  readonly sinceIndex: number;
  readonly entries: readonly { readonly key: Uint8Array; readonly value: Uint8Array | null }[];
}

/** InstallMeta is what StateStore.installState records next to the data: the index and membership the state is as of. */
export interface InstallMeta {
  readonly appliedIndex: number;
  readonly membership: Membership;
}

/**
 * FORMAT_VERSION is the on-disk format this code writes and reads, recorded
 * in a data dir's identity. 2: every log entry and state record ends with
 * its CRC-32 (STATE_RECORD_FORMAT); a build of format 1 (before the checksums)
 * refuses such a data dir when it checks its identity, before it reads a
 * record, instead of reading each trailer as data. RocksStorage.open raises a
 * data dir of format 1 to 2 as it migrates its records.
 */
export const FORMAT_VERSION = 2;

/**
 * STATE_RECORD_FORMAT: the stored form of a state generation's records this
 * build writes and reads, and so of the state images it sends and takes
 * (FetchStateImage's record_format): 2, every value followed by a CRC-32 of
 * its key and value (storage/record-checksum.ts). A member whose images hold
 * another form refuses to send one (the asker installs from the archive).
 */
export const STATE_RECORD_FORMAT = 2;

/** Identity is what a data dir was created for. */
export interface Identity {
  readonly nodeId: NodeId;
  readonly clusterId: string;
  readonly formatVersion: number;
}

/**
 * IdentityStore guards a data dir against being started as the wrong node,
 * in the wrong cluster or by code that does not know its format.
 *
 * - `readIdentity()`: the stored identity, null when none.
 * - `checkIdentity(expected, {createIfNew})`: resolves with the stored
 *   identity when it matches `expected`. When none is stored and the dir is
 *   new (no log, no hard state, nothing applied) and `createIfNew` is set,
 *   stores `expected` (synced) and resolves with it.
 *   Errors: StorageError `unknownFormat` if the stored (or expected)
 *   formatVersion is not FORMAT_VERSION; `identityMismatch` if nodeId or
 *   clusterId differ, or if there is no identity and the dir is not new or
 *   `createIfNew` is not set. Messages name the data dir and both values.
 */
export interface IdentityStore {
  readIdentity(): Promise<Identity | null>;
  checkIdentity(expected: Identity, options?: { readonly createIfNew?: boolean }): Promise<Identity>;
}

/** NodeStorage is everything one node keeps in its data dir; close() closes it all (idempotent). */
export interface NodeStorage extends LogStore, StateStore, IdentityStore {
  close(): Promise<void>;
}

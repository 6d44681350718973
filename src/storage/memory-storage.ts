import type { Entry, HardState, Membership } from '../raft/types.js';
import { ChangedKeys, changesLimits } from './changed-keys.js';
import { checkIdentityMatch, missingIdentity } from './identity-check.js';
import { compareBytes, rangeIsFull, resolveRange } from './key-range.js';
import { keyString } from './key-string.js';
import { checkAppend, checkBootstrapMembership, checkHardState, EMPTY_HARD_STATE, planCompaction } from './log-rules.js';
import { SerialQueue } from './serial-queue.js';
import { checkInstallBatch, checkInstallMeta, checkStateBatch, copyMembership, digestSnapshot } from './state-transfer.js';
import { StorageError } from './storage-error.js';
import {
  SNAPSHOT_BATCH_BYTES_DEFAULT,
  SNAPSHOT_BATCH_ENTRIES_DEFAULT,
  type CompactionBase,
  type Identity,
  type InstallMeta,
  type KeyValue,
  type LogBase,
  type LogBatch,
  type LogState,
  type NodeStorage,
  type RangeQuery,
  type RangeResult,
  type SnapshotStateOptions,
  type StateBatch,
  type StateChanges,
  type StateSnapshotReader,
} from './types.js';

function copyEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, type: entry.type, data: new Uint8Array(entry.data) };
}

function copyBase(base: LogBase): LogBase {
  return { index: base.index, term: base.term, membership: base.membership === null ? null : copyMembership(base.membership) };
}

/**
 * logWriteRefused: the StorageError `io` a log write gets after an earlier one failed (`failure`), on the data dir
 * `where` (RocksStorage's message, for the in-memory twins).
 */
export function logWriteRefused(where: string, operation: string, failure: Error): StorageError {
  return new StorageError(
    'io',
    `${where}: ${operation} refused: an earlier write to the Raft log failed (${failure.message}); no write is taken after ` +
      'one that failed (it may have left a partial record in the write-ahead log, which would hide every later one at the next start): restart the node',
    { path: where, cause: failure },
  );
}

/** RESOLVED: the settled promise each call awaits for its one turn (awaiting it takes the turn Promise.resolve() does, without a new promise a call). */
const RESOLVED: Promise<void> = Promise.resolve();

/** MemoryStorageOptions tunes MemoryStorage.open. */
export interface MemoryStorageOptions {
  /** changesValuesKeptBytes: as RocksStorageOptions's (CHANGES_VALUES_KEPT_BYTES by default); past it a changed value is read at the view. */
  readonly changesValuesKeptBytes?: number;
}

/**
 * MemoryDataDir is the "disk" of a MemoryStorage: it outlives the storage
 * opened on it, so a test or the simulator can close (or crash) a node and
 * open it again with everything it persisted. Every write is durable at once
 * (no torn or lost writes are modelled). One MemoryStorage at a time may
 * have it open.
 */
export class MemoryDataDir {
  /** name used in error messages, like a data dir path. */
  readonly name: string;
  identity: Identity | null = null;
  hardState: HardState | null = null;
  logBase: LogBase = { index: 0, term: 0, membership: null };
  /** entries after logBase, contiguous: log[i].index === logBase.index + 1 + i. */
  log: Entry[] = [];
  kv = new Map<string, KeyValue>();
  applied = 0;
  membership: Membership | null = null;
  /** installs: how many times installState replaced the state (MemoryStorage.stateEpoch). */
  installs = 0;
  openedBy: MemoryStorage | null = null;
  /**
   * logWriteFault: a disk fault, for tests: when set, it is asked before each write to the log (save, compact,
   * bootstrap, the identity's creation) with the operation's name; an Error it returns fails that write (StorageError
   * `io` naming it, nothing of the write kept) and, as on RocksStorage, every later log write of that MemoryStorage.
   */
  logWriteFault: ((operation: string) => Error | null) | null = null;

  constructor(name = 'memory') {
    this.name = name;
  }
}

/**
 * MemoryStorage is the in-memory twin of RocksStorage: the same NodeStorage
 * contract, the same validation (shared rules) and the same errors, with its
 * state kept in a MemoryDataDir. Meant for tests and the simulator. Range
 * queries and snapshots sort the keys (cached until the next write): fine
 * for test sizes. Applies, installs and the taking of snapshots run one at a
 * time in call order, as on RocksStorage. A snapshot holds the (never
 * mutated) records of its moment; an install builds a new map (copying the
 * bytes) and swaps it in at once, so a crash, a failing source or close()
 * before the swap leaves the old state. After a failed log write (the data
 * dir's logWriteFault, or one a wrapper reports with recordLogFailure) every
 * later log write is refused, as on RocksStorage (types.ts LogStore).
 */
export class MemoryStorage implements NodeStorage {
  readonly dir: MemoryDataDir;
  #closed = false;
  /** #logFailure: the first write to the log that failed (null while none has): every later one is refused (checkLogWritable), as on RocksStorage. */
  #logFailure: Error | null = null;
  #sortedKeys: string[] | null = null;
  readonly #applyQueue = new SerialQueue();
  /**
   * #changes: every key written since this storage opened (or its last install), for snapshotState's changes, as
   * RocksStorage keeps them (ChangedKeys, the same limits): in process memory, so a crash forgets them and the next
   * snapshot after a start reads the whole state.
   */
  readonly #changes: ChangedKeys;

  private constructor(dir: MemoryDataDir, options: MemoryStorageOptions) {
    this.dir = dir;
    this.#changes = new ChangedKeys(dir.applied, changesLimits(options.changesValuesKeptBytes));
  }

  /** MemoryStorage.open opens `dir` (a new empty one by default). Errors: StorageError `io` if another storage has it open. */
  static async open(dir: MemoryDataDir = new MemoryDataDir(), options: MemoryStorageOptions = {}): Promise<MemoryStorage> {
    await RESOLVED;
    if (dir.openedBy !== null) {
      throw new StorageError('io', `memory data dir ${dir.name}: already open (lock held)`, { path: dir.name });
    }
    const storage = new MemoryStorage(dir, options);
    dir.openedBy = storage;
    return storage;
  }

  // ---- LogStore ----

  async load(): Promise<LogState> {
    this.#checkOpen('load');
    await RESOLVED;
    const d = this.dir;
    return { hardState: d.hardState ?? EMPTY_HARD_STATE, logBase: copyBase(d.logBase), entries: d.log.map(copyEntry) };
  }

  async save(batch: LogBatch): Promise<void> {
    this.#checkOpen('save');
    await RESOLVED;
    const d = this.dir;
    const entries = batch.entries ?? [];
    if (batch.hardState !== undefined) checkHardState(batch.hardState, d.name);
    checkAppend(entries, { base: d.logBase, lastIndex: this.lastIndex() }, d.name);
    if (batch.hardState === undefined && entries.length === 0) return;
    this.#writeLog('save');
    const first = entries[0];
    if (first !== undefined) {
      d.log.length = first.index - d.logBase.index - 1;
      for (const entry of entries) d.log.push(copyEntry(entry));
    }
    if (batch.hardState !== undefined) {
      const { term, vote, commit } = batch.hardState;
      d.hardState = { term, vote, commit };
    }
  }

  async compact(base: CompactionBase): Promise<void> {
    this.#checkOpen('compact');
    await RESOLVED;
    const d = this.dir;
    this.checkLogWritable('compact'); // as RocksStorage: even one that would write nothing
    const termAtBase = d.log[base.index - d.logBase.index - 1]?.term;
    const plan = planCompaction(base, { base: d.logBase, lastIndex: this.lastIndex() }, termAtBase, d.name);
    if (plan === null) return;
    this.#writeLog('compact');
    d.log = plan.lastIndex > plan.base.index ? d.log.slice(plan.base.index - d.logBase.index) : [];
    d.logBase = plan.base;
  }

  async bootstrap(membership: Membership): Promise<Membership | null> {
    this.#checkOpen('bootstrap');
    await RESOLVED;
    const d = this.dir;
    const checked = checkBootstrapMembership(membership, d.name);
    if (d.logBase.membership !== null) return copyMembership(d.logBase.membership);
    if (d.logBase.index !== 0) return null;
    this.#writeLog('bootstrap');
    d.logBase = { index: 0, term: 0, membership: checked };
    return copyMembership(checked);
  }

  lastIndex(): number {
    return this.dir.logBase.index + this.dir.log.length;
  }

  // ---- StateMachine ----

  appliedIndex(): number {
    return this.dir.applied;
  }

  membership(): Membership | null {
    return this.dir.membership;
  }

  stateEpoch(): number {
    return this.dir.installs;
  }

  async write(batch: StateBatch): Promise<void> {
    this.#checkOpen('write');
    return this.#applyQueue.run(async () => {
      await RESOLVED;
      this.#checkOpen('write');
      const d = this.dir;
      checkStateBatch(batch, d.applied, d.name);
      for (const w of batch.writes) {
        const k = batch.names === undefined ? keyString(w.key) : batch.names.of(w.key);
        this.#changes.note(k, batch.appliedIndex, w.value);
        if (w.value === null) {
          if (d.kv.delete(k)) this.#sortedKeys = null;
        } else {
          if (!d.kv.has(k)) this.#sortedKeys = null;
          // a new object, never a mutation: snapshots keep the old ones
          d.kv.set(k, { key: new Uint8Array(w.key), value: new Uint8Array(w.value) });
        }
      }
      this.#changes.bound(batch.appliedIndex);
      d.applied = batch.appliedIndex;
      if (batch.membership !== undefined) d.membership = copyMembership(batch.membership);
    });
  }

  /**
   * snapshotState: see StateMachine. With `changesSince`, the reader's changes are RocksStorage's: the keys written
   * after that index up to the view, their values as of it (ChangedKeys; the values not kept are read from the map
   * inside the queue), or null when not known that far back.
   */
  async snapshotState(options: SnapshotStateOptions = {}): Promise<StateSnapshotReader> {
    this.#checkOpen('snapshotState');
    const opened = await this.#applyQueue.run(async () => {
      await RESOLVED;
      const d = this.dir;
      this.#sortedKeys ??= [...d.kv.keys()].sort();
      const records: KeyValue[] = [];
      for (const k of this.#sortedKeys) {
        const kv = d.kv.get(k);
        if (kv !== undefined) records.push(kv);
      }
      let changes: Promise<StateChanges | null> | undefined;
      if (options.changesSince !== undefined) {
        const view = this.#changes.view(options.changesSince, d.applied);
        const read = view === null ? [] : view.unknown.map((k) => d.kv.get(k)?.value);
        changes = view === null ? Promise.resolve(null) : this.#changes.list(view, read, () => RESOLVED);
      }
      const { applied, membership } = d; // as of the view: writes may run once the queue is let go
      return { reader: (listed: StateChanges | null | undefined) => new MemorySnapshotReader(this, records, applied, membership, listed), changes };
    });
    return opened.reader(await opened.changes);
  }

  async installState(
    source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>,
    meta: InstallMeta,
  ): Promise<void> {
    this.#checkOpen('installState');
    const name = this.dir.name;
    const checked = checkInstallMeta(meta, name);
    return this.#applyQueue.run(async () => {
      this.#checkOpen('installState');
      const kv = new Map<string, KeyValue>();
      let seen = 0;
      for await (const batch of source) {
        this.#checkOpen('installState'); // close() aborts an install
        checkInstallBatch(batch, seen, name);
        for (const r of batch) {
          kv.set(keyString(r.key), { key: new Uint8Array(r.key), value: new Uint8Array(r.value) });
        }
        seen += batch.length;
      }
      this.#checkOpen('installState');
      // the swap: one synchronous step, so nothing in between is ever seen
      const d = this.dir;
      d.kv = kv;
      d.applied = checked.appliedIndex;
      d.membership = checked.membership;
      d.installs++;
      this.#sortedKeys = null;
      this.#changes.forget(checked.appliedIndex);
    });
  }

  async stateDigest(): Promise<string> {
    return digestSnapshot(await this.snapshotState());
  }

  /** MemoryStorage.isClosed is true once close() was called (for snapshot readers). */
  get isClosed(): boolean {
    return this.#closed;
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.#checkOpen('get');
    await RESOLVED;
    return this.dir.kv.get(keyString(key))?.value;
  }

  async getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    this.#checkOpen('getMany');
    await RESOLVED;
    return keys.map((key) => this.dir.kv.get(keyString(key))?.value);
  }

  async range(query: RangeQuery): Promise<RangeResult> {
    this.#checkOpen('range');
    await RESOLVED;
    const range = resolveRange(query, this.dir.name);
    if (range.empty) return { kvs: [], more: false };
    this.#sortedKeys ??= [...this.dir.kv.keys()].sort();
    const keys = this.#sortedKeys;
    const gte = range.gte === undefined ? '' : keyString(range.gte);
    // binary search for the first key >= gte
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((keys[mid] ?? '') < gte) lo = mid + 1;
      else hi = mid;
    }
    const kvs: KeyValue[] = [];
    let bytes = 0;
    for (let i = lo; i < keys.length; i++) {
      const kv = this.dir.kv.get(keys[i] ?? '');
      if (kv === undefined) continue;
      if (range.lt !== undefined && compareBytes(kv.key, range.lt) >= 0) break;
      const size = kv.key.length + kv.value.length;
      if (rangeIsFull(range, kvs.length, bytes, size)) return { kvs, more: true };
      kvs.push(kv);
      bytes += size;
    }
    return { kvs, more: false };
  }

  // ---- IdentityStore ----

  async readIdentity(): Promise<Identity | null> {
    this.#checkOpen('readIdentity');
    await RESOLVED;
    return this.dir.identity;
  }

  async checkIdentity(expected: Identity, options: { readonly createIfNew?: boolean } = {}): Promise<Identity> {
    this.#checkOpen('checkIdentity');
    await RESOLVED;
    const d = this.dir;
    if (d.identity !== null) {
      checkIdentityMatch(d.identity, expected, d.name);
      return d.identity;
    }
    const isNew = this.lastIndex() === 0 && d.applied === 0 && d.hardState === null;
    if (!isNew || options.createIfNew !== true) throw missingIdentity(d.name, isNew);
    checkIdentityMatch(expected, expected, d.name);
    const { nodeId, clusterId, formatVersion } = expected;
    this.#writeLog('checkIdentity');
    d.identity = { nodeId, clusterId, formatVersion };
    return d.identity;
  }

  /** MemoryStorage.close releases the data dir; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#applyQueue.idle(); // queued applies finish; an install aborts at its next batch
    if (this.dir.openedBy === this) this.dir.openedBy = null;
  }

  /**
   * recordLogFailure: a write to the log failed (a fault a wrapper injected itself, such as the simulator's SimStorage):
   * from now on every log write of this MemoryStorage is refused (the first failure is the one named). A reopen of the
   * data dir takes writes again.
   */
  recordLogFailure(err: Error): void {
    this.#logFailure ??= err;
  }

  /**
   * checkLogWritable throws StorageError `io` once a write to the log has failed (RocksStorage's rule, types.ts
   * LogStore): a later write could sit behind the failed one's partial record, where the next open would not find it.
   */
  checkLogWritable(operation: string): void {
    const failure = this.#logFailure;
    if (failure !== null) throw logWriteRefused(this.dir.name, operation, failure);
  }

  /** #writeLog: before a write to the log, refuses it after a failed one, then asks the data dir's logWriteFault (recording and throwing its error). */
  #writeLog(operation: string): void {
    this.checkLogWritable(operation);
    const fault = this.dir.logWriteFault?.(operation) ?? null;
    if (fault === null) return;
    this.#logFailure ??= fault;
    throw new StorageError('io', `${this.dir.name}: ${operation}: ${fault.message}`, { path: this.dir.name, cause: fault });
  }

  #checkOpen(operation: string): void {
    if (this.#closed) {
      throw new StorageError('closed', `memory storage ${this.dir.name}: ${operation} after close`, {
        path: this.dir.name,
      });
    }
  }
}

/** MemorySnapshotReader streams the records a MemoryStorage held when the snapshot was taken. */
class MemorySnapshotReader implements StateSnapshotReader {
  readonly appliedIndex: number;
  readonly membership: Membership | null;
  readonly changes: StateChanges | null | undefined;
  readonly #storage: MemoryStorage;
  #records: KeyValue[] | null;
  #started = false;

  constructor(storage: MemoryStorage, records: KeyValue[], appliedIndex: number, membership: Membership | null, changes?: StateChanges | null) {
    this.#storage = storage;
    this.#records = records;
    this.appliedIndex = appliedIndex;
    this.membership = membership;
    this.changes = changes;
  }

  async *batches(
    batchEntriesMax = SNAPSHOT_BATCH_ENTRIES_DEFAULT,
    batchBytesMax = SNAPSHOT_BATCH_BYTES_DEFAULT,
  ): AsyncGenerator<KeyValue[], void, undefined> {
    const name = this.#storage.dir.name;
    try {
      if (this.#started) {
        throw new StorageError('invalidArgument', `snapshot of ${name}: batches() may be called only once`, { path: name });
      }
      this.#started = true;
      const entriesMax = Math.max(1, Math.floor(batchEntriesMax));
      let i = 0;
      for (;;) {
        await RESOLVED;
        const records = this.#records;
        if (records === null || this.#storage.isClosed) {
          throw new StorageError('closed', `snapshot of ${name}: read after close`, { path: name });
        }
        if (i >= records.length) return;
        const batch: KeyValue[] = [];
        let bytes = 0;
        while (i < records.length && batch.length < entriesMax && bytes < batchBytesMax) {
          const kv = records[i++] as KeyValue;
          batch.push(kv);
          bytes += kv.key.length + kv.value.length;
        }
        yield batch;
      }
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    this.#records = null;
    await RESOLVED;
  }
}

import type { Entry, HardState, Membership } from '../raft/types.js';
import { planApply } from './apply-plan.js';
import { checkIdentityMatch, missingIdentity } from './identity-check.js';
import { compareBytes, resolveRange } from './key-range.js';
import { checkAppend, checkHardState, EMPTY_HARD_STATE, planCompaction } from './log-rules.js';
import { StorageError } from './storage-error.js';
import type {
  ApplyItem,
  ApplyResult,
  Identity,
  KeyValue,
  LogBase,
  LogBatch,
  LogState,
  NodeStorage,
  RangeQuery,
  RangeResult,
} from './types.js';

function copyEntry(entry: Entry): Entry {
  return { index: entry.index, term: entry.term, type: entry.type, data: Uint8Array.from(entry.data) };
}

/** latin1 strings of bytes compare (with < and >) in the same order as the bytes. */
function keyString(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');
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
  logBase: LogBase = { index: 0, term: 0 };
  /** entries after logBase, contiguous: log[i].index === logBase.index + 1 + i. */
  log: Entry[] = [];
  kv = new Map<string, KeyValue>();
  applied = 0;
  membership: Membership | null = null;
  openedBy: MemoryStorage | null = null;

  constructor(name = 'memory') {
    this.name = name;
  }
}

/**
 * MemoryStorage is the in-memory twin of RocksStorage: the same NodeStorage
 * contract, the same validation (shared rules) and the same errors, with its
 * state kept in a MemoryDataDir. Meant for tests and the simulator. Range
 * queries sort the keys (cached until the next write): fine for test sizes.
 */
export class MemoryStorage implements NodeStorage {
  readonly dir: MemoryDataDir;
  #closed = false;
  #sortedKeys: string[] | null = null;

  private constructor(dir: MemoryDataDir) {
    this.dir = dir;
  }

  /** MemoryStorage.open opens `dir` (a new empty one by default). Errors: StorageError `io` if another storage has it open. */
  static async open(dir: MemoryDataDir = new MemoryDataDir()): Promise<MemoryStorage> {
    await Promise.resolve();
    if (dir.openedBy !== null) {
      throw new StorageError('io', `memory data dir ${dir.name}: already open (lock held)`, { path: dir.name });
    }
    const storage = new MemoryStorage(dir);
    dir.openedBy = storage;
    return storage;
  }

  // ---- LogStore ----

  async load(): Promise<LogState> {
    this.#checkOpen('load');
    await Promise.resolve();
    const d = this.dir;
    return { hardState: d.hardState ?? EMPTY_HARD_STATE, logBase: d.logBase, entries: d.log.map(copyEntry) };
  }

  async save(batch: LogBatch): Promise<void> {
    this.#checkOpen('save');
    await Promise.resolve();
    const d = this.dir;
    const entries = batch.entries ?? [];
    if (batch.hardState !== undefined) checkHardState(batch.hardState, d.name);
    checkAppend(entries, { base: d.logBase, lastIndex: this.lastIndex() }, d.name);
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

  async compact(base: LogBase): Promise<void> {
    this.#checkOpen('compact');
    await Promise.resolve();
    const d = this.dir;
    const termAtBase = d.log[base.index - d.logBase.index - 1]?.term;
    const plan = planCompaction(base, { base: d.logBase, lastIndex: this.lastIndex() }, termAtBase, d.name);
    if (plan === null) return;
    d.log = plan.lastIndex > plan.base.index ? d.log.slice(plan.base.index - d.logBase.index) : [];
    d.logBase = { index: plan.base.index, term: plan.base.term };
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

  async apply(items: readonly ApplyItem[]): Promise<ApplyResult[]> {
    this.#checkOpen('apply');
    await Promise.resolve();
    const d = this.dir;
    const plan = planApply(items, d.applied, d.name);
    for (const w of plan.writes) {
      const k = keyString(w.key);
      if (w.value === null) {
        if (d.kv.delete(k)) this.#sortedKeys = null;
      } else {
        if (!d.kv.has(k)) this.#sortedKeys = null;
        d.kv.set(k, { key: Uint8Array.from(w.key), value: Uint8Array.from(w.value) });
      }
    }
    d.applied = plan.appliedIndex;
    if (plan.membership !== undefined) d.membership = plan.membership;
    return plan.results;
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.#checkOpen('get');
    await Promise.resolve();
    return this.dir.kv.get(keyString(key))?.value;
  }

  async range(query: RangeQuery): Promise<RangeResult> {
    this.#checkOpen('range');
    await Promise.resolve();
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
    for (let i = lo; i < keys.length; i++) {
      const kv = this.dir.kv.get(keys[i] ?? '');
      if (kv === undefined) continue;
      if (range.lt !== undefined && compareBytes(kv.key, range.lt) >= 0) break;
      if (kvs.length === range.limit) return { kvs, more: true };
      kvs.push(kv);
    }
    return { kvs, more: false };
  }

  // ---- IdentityStore ----

  async readIdentity(): Promise<Identity | null> {
    this.#checkOpen('readIdentity');
    await Promise.resolve();
    return this.dir.identity;
  }

  async checkIdentity(expected: Identity, options: { readonly createIfNew?: boolean } = {}): Promise<Identity> {
    this.#checkOpen('checkIdentity');
    await Promise.resolve();
    const d = this.dir;
    if (d.identity !== null) {
      checkIdentityMatch(d.identity, expected, d.name);
      return d.identity;
    }
    const isNew = this.lastIndex() === 0 && d.applied === 0 && d.hardState === null;
    if (!isNew || options.createIfNew !== true) throw missingIdentity(d.name, isNew);
    checkIdentityMatch(expected, expected, d.name);
    const { nodeId, clusterId, formatVersion } = expected;
    d.identity = { nodeId, clusterId, formatVersion };
    return d.identity;
  }

  /** MemoryStorage.close releases the data dir; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.dir.openedBy === this) this.dir.openedBy = null;
    await Promise.resolve();
  }

  #checkOpen(operation: string): void {
    if (this.#closed) {
      throw new StorageError('closed', `memory storage ${this.dir.name}: ${operation} after close`, {
        path: this.dir.name,
      });
    }
  }
}

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import type { Entry, EntryType, HardState, Membership } from '../raft/types.js';
import { planApply } from './apply-plan.js';
import { checkIdentityMatch, missingIdentity, parseIdentity } from './identity-check.js';
import { resolveRange } from './key-range.js';
import { checkAppend, checkHardState, EMPTY_HARD_STATE, planCompaction } from './log-rules.js';
import { RocksDb, type RocksOp } from './rocks.js';
import { SerialQueue } from './serial-queue.js';
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

/*
 * Key layout of the one RocksDB database in <dataDir>/db (bytewise order):
 *
 *   'k' + user key            -> value bytes                  (state machine data)
 *   'l' + index:u64be         -> term:u64be type:u8 data      (log entry; type 0 normal, 1 conf)
 *   'm' + 'applied'           -> index:u64be                  (state machine applied index)
 *   'm' + 'hardState'         -> JSON {term, vote, commit}
 *   'm' + 'identity'          -> JSON {nodeId, clusterId, formatVersion}
 *   'm' + 'logBase'           -> index:u64be term:u64be       (last compacted entry)
 *   'm' + 'membership'        -> JSON Membership              (as of the applied index)
 *
 * Durability: log writes (save, compact) and the identity are synced. State
 * machine batches (data + applied index + membership, one atomic batch) are
 * NOT synced: the log is the source of truth and apply is idempotent by
 * index, so after a power loss the state machine resumes from whatever
 * applied index survived and the driver re-applies the committed entries.
 * All writes share one write-ahead log, so every synced log write also makes
 * every earlier apply durable; in particular compact(), which follows the
 * snapshot of the applied state, never drops entries the state machine could
 * still need.
 */

const PREFIX_KV = 0x6b; // 'k'
const PREFIX_LOG = 0x6c; // 'l'
const KEY_APPLIED = Buffer.from('mapplied');
const KEY_HARD_STATE = Buffer.from('mhardState');
const KEY_IDENTITY = Buffer.from('midentity');
const KEY_LOG_BASE = Buffer.from('mlogBase');
const KEY_MEMBERSHIP = Buffer.from('mmembership');

const TWO_32 = 2 ** 32;
const ENTRY_HEADER_BYTES = 9;

function writeU64(buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value % TWO_32, offset + 4);
}

function readU64(buf: Buffer, offset: number, what: string, path: string): number {
  if (buf.length < offset + 8) throw new StorageError('corrupt', `${path}: ${what} is truncated`, { path });
  const value = buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
  if (!Number.isSafeInteger(value)) throw new StorageError('corrupt', `${path}: ${what} exceeds 2^53`, { path });
  return value;
}

function u64(value: number): Buffer {
  const buf = Buffer.allocUnsafe(8);
  writeU64(buf, value, 0);
  return buf;
}

function logKey(index: number): Buffer {
  const key = Buffer.allocUnsafe(9);
  key[0] = PREFIX_LOG;
  writeU64(key, index, 1);
  return key;
}

function kvKey(key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + key.length);
  out[0] = PREFIX_KV;
  out.set(key, 1);
  return out;
}

function encodeEntry(entry: Entry): Buffer {
  const out = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + entry.data.length);
  writeU64(out, entry.term, 0);
  out[8] = entry.type === 'conf' ? 1 : 0;
  out.set(entry.data, ENTRY_HEADER_BYTES);
  return out;
}

function decodeEntry(index: number, value: Buffer, path: string): Entry {
  const term = readU64(value, 0, `log entry ${index}`, path);
  const typeByte = value[8];
  let type: EntryType;
  if (typeByte === 0) type = 'normal';
  else if (typeByte === 1) type = 'conf';
  else throw new StorageError('corrupt', `${path}: log entry ${index} has unknown type ${String(typeByte)}`, { path });
  return { index, term, type, data: value.subarray(ENTRY_HEADER_BYTES) };
}

function parseJson<T>(value: Buffer, what: string, path: string, valid: (v: unknown) => v is T): T {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch (err) {
    throw new StorageError('corrupt', `${path}: ${what} is not JSON`, { path, cause: err });
  }
  if (!valid(parsed)) throw new StorageError('corrupt', `${path}: ${what} is malformed`, { path });
  return parsed;
}

function isHardState(v: unknown): v is HardState {
  const h = v as Partial<Record<keyof HardState, unknown>> | null;
  return (
    typeof h === 'object' &&
    h !== null &&
    typeof h.term === 'number' &&
    typeof h.commit === 'number' &&
    typeof h.vote === 'string'
  );
}

function isMembership(v: unknown): v is Membership {
  const m = v as Partial<Record<keyof Membership, unknown>> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    Array.isArray(m.voters) &&
    Array.isArray(m.learners) &&
    typeof m.addresses === 'object' &&
    m.addresses !== null
  );
}

/**
 * RocksStorage is a node's NodeStorage (LogStore, StateMachine,
 * IdentityStore) in one RocksDB database at `<dataDir>/db`; see the key
 * layout and durability notes above. Log operations run one at a time, as do
 * applies; reads see the last completed apply. Errors are StorageError (see
 * types.ts), engine failures `io` with the database path in the message.
 */
export class RocksStorage implements NodeStorage {
  /** the node's data dir. */
  readonly dataDir: string;
  readonly #db: RocksDb;
  readonly #logQueue = new SerialQueue();
  readonly #applyQueue = new SerialQueue();
  #base: LogBase;
  #lastIndex: number;
  #applied: number;
  #membership: Membership | null;
  #closing: Promise<void> | null = null;

  private constructor(
    dataDir: string,
    db: RocksDb,
    state: { base: LogBase; lastIndex: number; applied: number; membership: Membership | null },
  ) {
    this.dataDir = dataDir;
    this.#db = db;
    this.#base = state.base;
    this.#lastIndex = state.lastIndex;
    this.#applied = state.applied;
    this.#membership = state.membership;
  }

  /**
   * RocksStorage.open opens (creating when missing, mode 0700) the data dir
   * and its database. Errors: StorageError `io` (e.g. the database is locked
   * by another process), `corrupt` (unreadable metadata).
   */
  static async open(dataDir: string): Promise<RocksStorage> {
    try {
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StorageError('io', `data dir ${dataDir}: cannot create: ${(err as Error).message}`, {
        path: dataDir,
        cause: err,
      });
    }
    const path = join(dataDir, 'db');
    const db = await RocksDb.open(path);
    try {
      const baseBytes = await db.get(KEY_LOG_BASE);
      const base =
        baseBytes === undefined
          ? { index: 0, term: 0 }
          : { index: readU64(baseBytes, 0, 'log base', path), term: readU64(baseBytes, 8, 'log base', path) };
      let lastIndex = base.index;
      for await (const batch of db.iterate({ gt: logKey(base.index), lt: Buffer.of(PREFIX_LOG + 1), reverse: true, limit: 1, values: false })) {
        for (const { key } of batch) lastIndex = readU64(key, 1, 'log key', path);
      }
      const appliedBytes = await db.get(KEY_APPLIED);
      const applied = appliedBytes === undefined ? 0 : readU64(appliedBytes, 0, 'applied index', path);
      const membershipBytes = await db.get(KEY_MEMBERSHIP);
      const membership =
        membershipBytes === undefined ? null : parseJson(membershipBytes, 'membership', path, isMembership);
      return new RocksStorage(dataDir, db, { base, lastIndex, applied, membership });
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
  }

  /** RocksStorage.path is the database directory (`<dataDir>/db`). */
  get path(): string {
    return this.#db.path;
  }

  // ---- LogStore ----

  async load(): Promise<LogState> {
    this.#checkOpen('load');
    return this.#logQueue.run(async () => {
      const path = this.path;
      const hardStateBytes = await this.#db.get(KEY_HARD_STATE);
      const hardState =
        hardStateBytes === undefined ? EMPTY_HARD_STATE : parseJson(hardStateBytes, 'hard state', path, isHardState);
      const base = this.#base;
      const entries: Entry[] = [];
      let expected = base.index + 1;
      for await (const batch of this.#db.iterate({ gt: logKey(base.index), lt: Buffer.of(PREFIX_LOG + 1) })) {
        for (const { key, value } of batch) {
          const index = readU64(key, 1, 'log key', path);
          if (index !== expected) {
            throw new StorageError('corrupt', `${path}: log has a gap: entry ${index} where ${expected} was expected`, {
              path,
            });
          }
          entries.push(decodeEntry(index, value, path));
          expected++;
        }
      }
      return { hardState, logBase: base, entries };
    });
  }

  async save(batch: LogBatch): Promise<void> {
    this.#checkOpen('save');
    const entries = batch.entries ?? [];
    if (batch.hardState === undefined && entries.length === 0) return;
    return this.#logQueue.run(async () => {
      const ops: RocksOp[] = [];
      if (batch.hardState !== undefined) {
        checkHardState(batch.hardState, this.path);
        const { term, vote, commit } = batch.hardState;
        ops.push({ type: 'put', key: KEY_HARD_STATE, value: Buffer.from(JSON.stringify({ term, vote, commit })) });
      }
      const newLast = checkAppend(entries, { base: this.#base, lastIndex: this.#lastIndex }, this.path);
      // Entries in [first, newLast] are overwritten by the puts; delete the stale tail beyond them.
      for (let index = newLast + 1; index <= this.#lastIndex && entries.length > 0; index++) {
        ops.push({ type: 'del', key: logKey(index) });
      }
      for (const entry of entries) ops.push({ type: 'put', key: logKey(entry.index), value: encodeEntry(entry) });
      await this.#db.write(ops, { sync: true });
      this.#lastIndex = newLast;
    });
  }

  async compact(base: LogBase): Promise<void> {
    this.#checkOpen('compact');
    return this.#logQueue.run(async () => {
      let termAtBase: number | undefined;
      if (base.index > this.#base.index && base.index <= this.#lastIndex) {
        const value = await this.#db.get(logKey(base.index));
        if (value !== undefined) termAtBase = readU64(value, 0, `log entry ${base.index}`, this.path);
      }
      const plan = planCompaction(base, { base: this.#base, lastIndex: this.#lastIndex }, termAtBase, this.path);
      if (plan === null) return;
      const ops: RocksOp[] = [];
      for (let index = plan.deleteFrom; index <= plan.deleteTo; index++) ops.push({ type: 'del', key: logKey(index) });
      const baseBytes = Buffer.allocUnsafe(16);
      writeU64(baseBytes, plan.base.index, 0);
      writeU64(baseBytes, plan.base.term, 8);
      ops.push({ type: 'put', key: KEY_LOG_BASE, value: baseBytes });
      await this.#db.write(ops, { sync: true });
      this.#base = { index: plan.base.index, term: plan.base.term };
      this.#lastIndex = plan.lastIndex;
    });
  }

  lastIndex(): number {
    return this.#lastIndex;
  }

  // ---- StateMachine ----

  appliedIndex(): number {
    return this.#applied;
  }

  membership(): Membership | null {
    return this.#membership;
  }

  async apply(items: readonly ApplyItem[]): Promise<ApplyResult[]> {
    this.#checkOpen('apply');
    return this.#applyQueue.run(async () => {
      const plan = planApply(items, this.#applied, this.path);
      if (plan.appliedIndex === this.#applied) return plan.results;
      const ops: RocksOp[] = plan.writes.map((w) =>
        w.value === null
          ? { type: 'del', key: kvKey(w.key) }
          : { type: 'put', key: kvKey(w.key), value: Buffer.from(w.value.buffer, w.value.byteOffset, w.value.byteLength) },
      );
      ops.push({ type: 'put', key: KEY_APPLIED, value: u64(plan.appliedIndex) });
      if (plan.membership !== undefined) {
        ops.push({ type: 'put', key: KEY_MEMBERSHIP, value: Buffer.from(JSON.stringify(plan.membership)) });
      }
      await this.#db.write(ops, { sync: false });
      this.#applied = plan.appliedIndex;
      if (plan.membership !== undefined) this.#membership = plan.membership;
      return plan.results;
    });
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.#checkOpen('get');
    return this.#db.get(kvKey(key));
  }

  async range(query: RangeQuery): Promise<RangeResult> {
    this.#checkOpen('range');
    const range = resolveRange(query, this.path);
    if (range.empty) return { kvs: [], more: false };
    const kvs: KeyValue[] = [];
    let more = false;
    const iteration = this.#db.iterate({
      gte: range.gte === undefined ? Buffer.of(PREFIX_KV) : kvKey(range.gte),
      lt: range.lt === undefined ? Buffer.of(PREFIX_KV + 1) : kvKey(range.lt),
      limit: range.limit + 1,
    });
    for await (const batch of iteration) {
      for (const { key, value } of batch) {
        if (kvs.length === range.limit) more = true;
        else kvs.push({ key: key.subarray(1), value });
      }
    }
    return { kvs, more };
  }

  // ---- IdentityStore ----

  async readIdentity(): Promise<Identity | null> {
    this.#checkOpen('readIdentity');
    const bytes = await this.#db.get(KEY_IDENTITY);
    return bytes === undefined ? null : parseIdentity(bytes.toString('utf8'), this.dataDir);
  }

  async checkIdentity(expected: Identity, options: { readonly createIfNew?: boolean } = {}): Promise<Identity> {
    this.#checkOpen('checkIdentity');
    return this.#logQueue.run(async () => {
      const stored = await this.readIdentity();
      if (stored !== null) {
        checkIdentityMatch(stored, expected, this.dataDir);
        return stored;
      }
      const isNew =
        this.#lastIndex === 0 &&
        this.#base.index === 0 &&
        this.#applied === 0 &&
        (await this.#db.get(KEY_HARD_STATE)) === undefined;
      if (!isNew || options.createIfNew !== true) throw missingIdentity(this.dataDir, isNew);
      checkIdentityMatch(expected, expected, this.dataDir);
      const { nodeId, clusterId, formatVersion } = expected;
      await this.#db.write(
        [{ type: 'put', key: KEY_IDENTITY, value: Buffer.from(JSON.stringify({ nodeId, clusterId, formatVersion })) }],
        { sync: true },
      );
      return { nodeId, clusterId, formatVersion };
    });
  }

  /** RocksStorage.close waits for queued log writes and applies, then closes the database. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#logQueue.idle();
      await this.#applyQueue.idle();
      await this.#db.close();
    })();
    return this.#closing;
  }

  #checkOpen(operation: string): void {
    if (this.#closing !== null) {
      throw new StorageError('closed', `storage ${this.dataDir}: ${operation} after close`, { path: this.dataDir });
    }
  }
}

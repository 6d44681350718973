import { createRequire } from 'node:module';

import { StorageError } from './storage-error.js';

/*
 * The callback API of the `rocksdb` npm package (5.2.1, abstract-leveldown 7
 * style), typed here and nowhere else. Only the calls RocksDb makes are listed.
 */
type Callback<T = void> = (err: Error | null | undefined, value?: T) => void;

interface NativeIterator {
  next(callback: (err: Error | null | undefined, key?: Buffer, value?: Buffer) => void): unknown;
  end(callback: Callback): void;
  /** the binding's handle of this iterator (rocksdb 5.x iterator.js), for NativeBinding.iterator_next. */
  readonly context?: unknown;
}

/**
 * NativeBinding: the addon under the `rocksdb` package. iterator_next hands
 * back up to 1,000 entries (or the iterator's highWaterMark bytes) per call,
 * as [valueN, keyN, ..., value1, key1] (reversed, for pop()), and whether the
 * iteration is finished; iterator.js then returns them one per nextTick.
 */
interface NativeBinding {
  iterator_next(context: unknown, callback: (err: Error | null | undefined, entries?: Buffer[], finished?: boolean) => void): void;
}

/**
 * NativeBatchBinding: the addon's chained-batch calls (binding.cc batch_init,
 * batch_put, batch_del, batch_clear, batch_write). batch_put and batch_del copy
 * the key (and value) into the native WriteBatch at once; batch_clear empties
 * it, keeping its capacity.
 */
interface NativeBatchBinding {
  batch_init(dbContext: unknown): unknown;
  batch_put(batch: unknown, key: Uint8Array, value: Uint8Array): void;
  batch_del(batch: unknown, key: Uint8Array): void;
  batch_clear(batch: unknown): void;
  batch_write(batch: unknown, options: { sync: boolean }, callback: Callback): void;
}

interface NativeBatchOp {
  type: 'put' | 'del';
  key: Buffer;
  value?: Buffer;
}

interface NativeDb {
  open(options: { createIfMissing: boolean; errorIfExists: boolean; writeBufferSize?: number; blockSize?: number }, callback: Callback): void;
  /** a RocksDB property's value (binding.cc db_get_property), e.g. rocksdb.estimate-table-readers-mem. */
  getProperty(property: string): string;
  close(callback: Callback): void;
  get(key: Buffer, options: { asBuffer: true; fillCache?: boolean }, callback: Callback<Buffer>): void;
  getMany(keys: Buffer[], options: { asBuffer: true; fillCache?: boolean }, callback: Callback<(Buffer | undefined | null)[]>): void;
  batch(ops: NativeBatchOp[], options: { sync: boolean }, callback: Callback): void;
  iterator(options: Record<string, unknown>): NativeIterator;
  /** the binding's handle of this database (leveldown.js), for NativeBatchBinding.batch_init. */
  readonly context?: unknown;
}

type NativeFactory = (location: string) => NativeDb;

const require = createRequire(import.meta.url);
const rocksdb = require('rocksdb') as NativeFactory;
/** the addon itself (the same module instance iterator.js uses), or null if its shape is not the one known here. */
const nativeBinding: NativeBinding | null = (() => {
  try {
    const b = require('rocksdb/binding.js') as Partial<NativeBinding> | null;
    return b !== null && typeof b.iterator_next === 'function' ? (b as NativeBinding) : null;
  } catch {
    return null;
  }
})();

/** the addon's chained-batch calls, or null if their shape is not the one known here (RocksBulkBatch then gathers ops for RocksDb.write). */
const nativeBatch: NativeBatchBinding | null = (() => {
  try {
    const b = require('rocksdb/binding.js') as Partial<NativeBatchBinding> | null;
    return b !== null &&
      typeof b.batch_init === 'function' &&
      typeof b.batch_put === 'function' &&
      typeof b.batch_del === 'function' &&
      typeof b.batch_clear === 'function' &&
      typeof b.batch_write === 'function'
      ? (b as NativeBatchBinding)
      : null;
  } catch {
    return null;
  }
})();

/** RocksOp is one operation of an atomic write batch. Keys must not be empty. */
export type RocksOp =
  | { readonly type: 'put'; readonly key: Buffer; readonly value: Buffer }
  | { readonly type: 'del'; readonly key: Buffer };

/** RocksOpSink takes the ops of RocksDb.writeFilled; each key and value is copied when given. Keys must not be empty. */
export interface RocksOpSink {
  put(key: Uint8Array, value: Uint8Array): void;
  del(key: Uint8Array): void;
}

/** RocksEntry is one key/value pair read by RocksDb.iterate (value is empty when values were not asked for). */
export interface RocksEntry {
  readonly key: Buffer;
  readonly value: Buffer;
}

/**
 * RocksRange bounds an iteration, all bounds optional and combined (a key
 * must satisfy every one given). `limit` caps the number of entries (none
 * when absent); `reverse` walks from the upper bound down.
 */
export interface RocksRange {
  readonly gt?: Buffer;
  readonly gte?: Buffer;
  readonly lt?: Buffer;
  readonly lte?: Buffer;
  readonly reverse?: boolean;
  readonly limit?: number;
  /** false to read keys only (entries then carry an empty value). Default true. */
  readonly values?: boolean;
  /** most entries yielded per batch (default 1,000; also a bound on memory held). */
  readonly batchEntriesMax?: number;
  /** a batch ends once its keys and values reach this many bytes (default: no byte bound). */
  readonly batchBytesMax?: number;
  /** false to keep the blocks read out of the block cache (bulk scans). Default true. */
  readonly fillCache?: boolean;
  /** bytes the native iterator reads ahead per round trip (RocksDB binding default 16 KiB). */
  readonly highWaterMarkBytes?: number;
}

/** RocksOpenOptions: RocksDB creates the database when missing unless told otherwise. */
export interface RocksOpenOptions {
  readonly createIfMissing?: boolean;
  readonly errorIfExists?: boolean;
  /** bytes of a memtable before RocksDB flushes it to an SST (the binding's default: 4 MiB). */
  readonly writeBufferBytes?: number;
  /**
   * uncompressed bytes of an SST data block that this database writes (the binding's default: 4 KiB). Each
   * block has an entry in its file's index, which RocksDB keeps in memory for every open file: about 6 bytes
   * a block for keys like `fill/00000001`. Files written with another size stay readable.
   */
  readonly blockBytes?: number;
}

/** RocksMemory: a database's native memory by kind, bytes (RocksDb.memory). */
export interface RocksMemory {
  readonly memtablesBytes: number;
  readonly tableReadersBytes: number;
  readonly blockCacheBytes: number;
}

const EMPTY = Buffer.alloc(0);
const batchEntriesMaxDefault = 1000;

/**
 * RocksIterator is one open native iterator with its point-in-time view,
 * read in bounded batches. Made by RocksDb.iterator.
 *
 * Contract: nextBatch() returns the next entries in order, at most
 * `entriesMax` of them and stopping once `bytesMax` bytes of keys and values
 * are held (an entry larger than that comes alone); an empty array means the
 * end. Calls must not overlap. end() is idempotent and safe after the
 * database was closed (which ends the native iterator itself); nextBatch()
 * after end() returns []. Errors: StorageError `closed` (database closed),
 * `io` (engine failure).
 */
export class RocksIterator {
  readonly #owner: RocksDb;
  readonly #native: NativeIterator;
  readonly #values: boolean;
  #done = false;
  #ending: Promise<void> | null = null;
  /** entries the binding handed back and not yet returned, reversed: [valueN, keyN, ..., value1, key1]. */
  #cache: Buffer[] = [];

  /** internal: use RocksDb.iterator. */
  constructor(owner: RocksDb, native: NativeIterator, values: boolean) {
    this.#owner = owner;
    this.#native = native;
    this.#values = values;
  }

  /**
   * RocksIterator.nextBatch reads the next batch; [] at the end (or once ended).
   * It takes the binding's entries a native call at a time (up to 1,000 entries
   * or the iterator's highWaterMarkBytes each), not one per tick. With
   * `oneRead` it never starts another native read while it holds entries: a
   * batch is what is left of one read (a full snapshot's, so that its Buffers
   * arrive and are let go within one turn, none waiting in the cache).
   */
  async nextBatch(entriesMax = batchEntriesMaxDefault, bytesMax = Infinity, oneRead = false): Promise<RocksEntry[]> {
    if (this.#ending !== null) return [];
    if (this.#done && this.#cache.length === 0) return [];
    this.#owner.checkOpen('iterate');
    const max = Math.max(1, Math.floor(entriesMax));
    const batch: RocksEntry[] = [];
    const context = this.#native.context;
    if (nativeBinding !== null && context !== undefined && context !== null) {
      const state = { bytes: 0 };
      for (;;) {
        if (this.#take(batch, max, bytesMax, state)) return batch;
        if (this.#done) return batch;
        if (oneRead && batch.length > 0) return batch; // the cache is empty: no wait for another read with entries in hand
        const more = await this.#nativeNext(nativeBinding, context);
        if (!more) return batch; // end() meanwhile: stop with what was read
      }
    }
    let bytes = 0;
    const done = await new Promise<boolean>((resolve, reject) => {
      const step = (): void => {
        if (this.#owner.isClosed) {
          reject(this.#closedError());
          return;
        }
        if (this.#ending !== null) {
          resolve(true); // end() was called meanwhile: stop with what was read
          return;
        }
        this.#native.next((err, key, value) => {
          if (err) {
            reject(this.#owner.isClosed ? this.#closedError() : this.#owner.ioError('iterate', err));
          } else if (key === undefined) {
            resolve(true);
          } else {
            const v = this.#values && value !== undefined ? value : EMPTY;
            batch.push({ key, value: v });
            bytes += key.length + v.length;
            if (batch.length >= max || bytes >= bytesMax) resolve(false);
            else step();
          }
        });
      };
      step();
    });
    if (done) this.#done = true;
    return batch;
  }

  /** #take moves cached entries into `batch`; true once the batch is full. */
  #take(batch: RocksEntry[], max: number, bytesMax: number, state: { bytes: number }): boolean {
    const cache = this.#cache;
    while (cache.length >= 2) {
      const key = cache.pop()!;
      const value = cache.pop()!;
      const v = this.#values ? value : EMPTY;
      batch.push({ key, value: v });
      state.bytes += key.length + v.length;
      if (batch.length >= max || state.bytes >= bytesMax) return true;
    }
    return false;
  }

  /** #nativeNext fills the cache with the binding's next entries; false if end() was called meanwhile. */
  #nativeNext(binding: NativeBinding, context: unknown): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      if (this.#owner.isClosed) {
        reject(this.#closedError());
        return;
      }
      if (this.#ending !== null) {
        resolve(false);
        return;
      }
      binding.iterator_next(context, (err, entries, finished) => {
        if (err) {
          reject(this.#owner.isClosed ? this.#closedError() : this.#owner.ioError('iterate', err));
          return;
        }
        this.#cache = entries ?? [];
        if (finished === true) this.#done = true;
        resolve(true);
      });
    });
  }

  #closedError(): StorageError {
    return new StorageError('closed', `rocksdb: iterate on ${this.#owner.path} after close`, { path: this.#owner.path });
  }

  /** RocksIterator.end releases the native iterator and its view; idempotent. */
  end(): Promise<void> {
    this.#cache = [];
    this.#ending ??= this.#owner.isClosed
      ? Promise.resolve() // close() ends open iterators itself; ending one again would crash.
      : new Promise<void>((resolve) => {
          this.#native.end(() => resolve());
        });
    return this.#ending;
  }
}

/**
 * RocksDb is a small promise-based handle on one RocksDB database directory;
 * it is the only code that touches the `rocksdb` package's callback API.
 *
 * Contract: every method after close() (or while it runs) rejects with
 * StorageError `closed` instead of reaching the native binding (which crashes
 * the process on use after close). close() is idempotent. Every engine
 * failure is rethrown as StorageError `io` whose message names the operation
 * and the database path, with the engine error as `cause`.
 */
/** RocksCalls: how many native reads and write batches a RocksDb has issued (what batching saves is counted here). */
export interface RocksCalls {
  get: number;
  getMany: number;
  write: number;
  /** syncedWrite: the writes among `write` made with sync (an fsync of the write-ahead log each). */
  syncedWrite: number;
}

export class RocksDb {
  /** path of the database directory. */
  readonly path: string;
  /** calls: the native calls made so far, by kind (an empty getMany or write makes none). */
  readonly calls: RocksCalls = { get: 0, getMany: 0, write: 0, syncedWrite: 0 };
  readonly #db: NativeDb;
  #closing: Promise<void> | null = null;
  /** #spareBatch: a native batch no write() uses now, emptied, kept for the next one (null: none yet, or in use). */
  #spareBatch: unknown = null;

  private constructor(path: string, db: NativeDb) {
    this.path = path;
    this.#db = db;
  }

  /**
   * RocksDb.open opens (by default creating) the database at `path`.
   * Errors: StorageError `io` when RocksDB refuses, e.g. the directory is
   * locked by another process or `errorIfExists` is set and it exists.
   */
  static async open(path: string, options: RocksOpenOptions = {}): Promise<RocksDb> {
    const db = rocksdb(path);
    await new Promise<void>((resolve, reject) => {
      db.open(
        {
          createIfMissing: options.createIfMissing ?? true,
          errorIfExists: options.errorIfExists ?? false,
          ...(options.writeBufferBytes !== undefined ? { writeBufferSize: options.writeBufferBytes } : {}),
          ...(options.blockBytes !== undefined ? { blockSize: options.blockBytes } : {}),
        },
        (err) => {
          if (err) reject(new StorageError('io', `rocksdb: cannot open ${path}: ${err.message}`, { path, cause: err }));
          else resolve();
        },
      );
    });
    return new RocksDb(path, db);
  }

  /**
   * RocksDb.property reads one of RocksDB's properties (`rocksdb.estimate-table-readers-mem`,
   * `rocksdb.aggregated-table-properties`, ...): its text, empty when RocksDB does not know it.
   */
  property(name: string): string {
    this.#checkOpen('property');
    return this.#db.getProperty(name);
  }

  /**
   * RocksDb.memory is what RocksDB itself holds in native memory for this database, read from its
   * properties: the memtables (the one filling and any being flushed), the open SSTs' table readers
   * (index and bloom filter blocks, outside the block cache in this binding) and the block cache's
   * contents. A closed database holds none: all zero.
   */
  memory(): RocksMemory {
    if (this.#closing !== null) return { memtablesBytes: 0, tableReadersBytes: 0, blockCacheBytes: 0 };
    const n = (name: string): number => {
      const v = Number(this.#db.getProperty(name));
      return Number.isFinite(v) ? v : 0;
    };
    return {
      memtablesBytes: n('rocksdb.size-all-mem-tables'),
      tableReadersBytes: n('rocksdb.estimate-table-readers-mem'),
      blockCacheBytes: n('rocksdb.block-cache-usage'),
    };
  }

  /** RocksDb.isClosed is true once close() has been called. */
  get isClosed(): boolean {
    return this.#closing !== null;
  }

  /** RocksDb.get returns the value stored under `key`, or undefined when there is none. */
  async get(key: Buffer): Promise<Buffer | undefined> {
    this.#checkOpen('get');
    this.calls.get++;
    return new Promise<Buffer | undefined>((resolve, reject) => {
      this.#db.get(key, { asBuffer: true }, (err, value) => {
        if (err) {
          if (/^NotFound/.test(err.message)) resolve(undefined);
          else reject(this.#ioError('get', err));
        } else {
          resolve(value);
        }
      });
    });
  }

  /**
   * RocksDb.getMany reads every key of `keys` in one native call, all at one
   * point in time (one RocksDB snapshot): the values in the same order,
   * undefined where a key has none. Rejects with a StorageError on an IO error.
   * That point in time is the call's, not the read's: the binding takes its
   * snapshot when the call is made (GetManyWorker's constructor, on this
   * thread), so writes made after getMany returned its promise are not seen,
   * even while the read still waits for the threadpool.
   */
  getMany(keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    try {
      this.#checkOpen('getMany');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (keys.length === 0) return Promise.resolve([]);
    this.calls.getMany++;
    return new Promise<(Buffer | undefined)[]>((resolve, reject) => {
      this.#db.getMany([...keys], { asBuffer: true }, (err, values) => {
        if (err) reject(this.#ioError('getMany', err));
        else resolve((values ?? []).map((v) => v ?? undefined));
      });
    });
  }

  /**
   * RocksDb.write applies `ops` atomically, in order (a later op on the same
   * key wins). With `sync` the call resolves only once the write-ahead log is
   * on disk (fsync), which also makes every earlier unsynced write durable.
   * An empty `ops` does nothing. An empty key refuses the whole batch
   * (StorageError `invalidArgument`, nothing written). The ops go into a
   * native batch one call each (a spare batch reused from write to write),
   * not as an array of op objects for the binding to read property by
   * property: under bench:write that array path was ~9% of the leader's
   * main thread; the chained calls take ~2.5x less for a 33-op batch.
   */
  async write(ops: readonly RocksOp[], options: { readonly sync: boolean }): Promise<void> {
    this.#checkOpen('write');
    if (ops.length === 0) return;
    for (const op of ops) {
      if (op.key.length === 0) throw new StorageError('invalidArgument', `rocksdb ${this.path}: a write with an empty key`, { path: this.path });
    }
    this.calls.write++;
    if (options.sync) this.calls.syncedWrite++;
    const context = this.#db.context;
    if (nativeBatch !== null && context !== undefined && context !== null) return this.#writeChained(nativeBatch, context, ops, options.sync);
    const nativeOps: NativeBatchOp[] = ops.map((op) =>
      op.type === 'put' ? { type: 'put', key: op.key, value: op.value } : { type: 'del', key: op.key },
    );
    await new Promise<void>((resolve, reject) => {
      this.#db.batch(nativeOps, { sync: options.sync }, (err) => {
        if (err) reject(this.#ioError('write', err));
        else resolve();
      });
    });
  }

  /**
   * RocksDb.writeFilled is write() with its ops given by `fill` through a
   * RocksOpSink instead of op objects: each key and value is copied as it is
   * given, so a caller may reuse one buffer for every key of a length (the
   * state's applied writes: no Buffer and no op object per write). Nothing
   * given resolves at once. Errors: as write (an empty key before anything
   * is written).
   */
  async writeFilled(fill: (sink: RocksOpSink) => void, options: { readonly sync: boolean }): Promise<void> {
    this.#checkOpen('write');
    const context = this.#db.context;
    if (nativeBatch === null || context === undefined || context === null) {
      const ops: RocksOp[] = [];
      fill({
        put: (key, value) => ops.push({ type: 'put', key: Buffer.from(key), value: Buffer.from(value) }),
        del: (key) => ops.push({ type: 'del', key: Buffer.from(key) }),
      });
      return this.write(ops, options);
    }
    const binding = nativeBatch;
    const batch = this.#spareBatch ?? binding.batch_init(context);
    this.#spareBatch = null;
    try {
      let n = 0;
      const checkKey = (key: Uint8Array): void => {
        if (key.length === 0) throw new StorageError('invalidArgument', `rocksdb ${this.path}: a write with an empty key`, { path: this.path });
        n++;
      };
      fill({
        put: (key, value) => {
          checkKey(key);
          binding.batch_put(batch, key, value);
        },
        del: (key) => {
          checkKey(key);
          binding.batch_del(batch, key);
        },
      });
      if (n === 0) return;
      this.calls.write++;
      if (options.sync) this.calls.syncedWrite++;
      await new Promise<void>((resolve, reject) => {
        binding.batch_write(batch, { sync: options.sync }, (err) => {
          if (err) reject(this.#ioError('write', err));
          else resolve();
        });
      });
    } finally {
      binding.batch_clear(batch);
      if (this.#spareBatch === null && this.#closing === null) this.#spareBatch = batch;
    }
  }

  async #writeChained(binding: NativeBatchBinding, context: unknown, ops: readonly RocksOp[], sync: boolean): Promise<void> {
    const batch = this.#spareBatch ?? binding.batch_init(context);
    this.#spareBatch = null;
    try {
      for (const op of ops) {
        if (op.type === 'put') binding.batch_put(batch, op.key, op.value);
        else binding.batch_del(batch, op.key);
      }
      await new Promise<void>((resolve, reject) => {
        binding.batch_write(batch, { sync }, (err) => {
          if (err) reject(this.#ioError('write', err));
          else resolve();
        });
      });
    } finally {
      binding.batch_clear(batch);
      if (this.#spareBatch === null && this.#closing === null) this.#spareBatch = batch;
    }
  }

  /**
   * RocksDb.bulkBatch makes a RocksBulkBatch on this database: the write path
   * of bulk loads (an install), one call into the binding per put and no op
   * objects. Errors: StorageError `closed`.
   */
  bulkBatch(): RocksBulkBatch {
    this.#checkOpen('bulkBatch');
    const context = this.#db.context;
    const native = nativeBatch !== null && context !== undefined && context !== null ? nativeBatch.batch_init(context) : null;
    return new RocksBulkBatch(this, native);
  }

  /**
   * RocksDb.iterator opens a native iterator over `range` NOW: its
   * point-in-time view (an implicit RocksDB snapshot) is taken during this
   * call, synchronously, so writes issued after it returns are never seen
   * through it. The caller must end() it (closing the database ends it too).
   * Errors: StorageError `closed`.
   */
  iterator(range: RocksRange = {}): RocksIterator {
    this.#checkOpen('iterator');
    const values = range.values ?? true;
    const options: Record<string, unknown> = {
      keys: true,
      values,
      keyAsBuffer: true,
      valueAsBuffer: true,
      reverse: range.reverse ?? false,
      limit: range.limit ?? -1,
      fillCache: range.fillCache ?? true,
    };
    if (range.highWaterMarkBytes !== undefined) options['highWaterMark'] = range.highWaterMarkBytes;
    for (const bound of ['gt', 'gte', 'lt', 'lte'] as const) {
      const value = range[bound];
      if (value !== undefined) options[bound] = value;
    }
    return new RocksIterator(this, this.#db.iterator(options), values);
  }

  /**
   * RocksDb.iterate yields the entries of `range` in key order (bytewise), in
   * batches of at most `range.batchEntriesMax` entries (and, when given,
   * about `range.batchBytesMax` bytes), all read from one point-in-time view
   * of the database taken when the first batch is asked for. Breaking out of
   * the loop ends the native iterator. Errors: StorageError `closed` if the
   * database is closed between batches, `io` on engine failure.
   */
  async *iterate(range: RocksRange = {}): AsyncGenerator<RocksEntry[], void, undefined> {
    const iterator = this.iterator(range);
    try {
      for (;;) {
        const batch = await iterator.nextBatch(range.batchEntriesMax, range.batchBytesMax);
        if (batch.length === 0) return;
        yield batch;
      }
    } finally {
      await iterator.end();
    }
  }

  /** RocksDb.checkOpen throws StorageError `closed` once close() has been called (for RocksIterator and RocksBulkBatch). */
  checkOpen(operation: string): void {
    this.#checkOpen(operation);
  }

  /** RocksDb.ioError wraps an engine error of `operation` as StorageError `io` (`corrupt` for RocksDB's Corruption status) naming the path (for RocksIterator and RocksBulkBatch). */
  ioError(operation: string, err: Error): StorageError {
    return this.#ioError(operation, err);
  }

  /** RocksDb.close closes the database; calling it again returns the same promise. */
  close(): Promise<void> {
    this.#spareBatch = null;
    this.#closing ??= new Promise<void>((resolve, reject) => {
      this.#db.close((err) => {
        if (err) reject(this.#ioError('close', err));
        else resolve();
      });
    });
    return this.#closing;
  }

  #checkOpen(operation: string): void {
    if (this.#closing !== null) {
      throw new StorageError('closed', `rocksdb: ${operation} on ${this.path} after close`, { path: this.path });
    }
  }

  #ioError(operation: string, err: Error): StorageError {
    // RocksDB's Status::Corruption (a block checksum that does not match, a record that does not decode) is not a
    // failed IO: retried, it fails the same way.
    const code = err.message.startsWith('Corruption:') ? 'corrupt' : 'io';
    return new StorageError(code, `rocksdb: ${operation} failed on ${this.path}: ${err.message}`, {
      path: this.path,
      cause: err,
    });
  }
}

/**
 * RocksBulkBatch is a reusable atomic write batch for bulk loads, made by
 * RocksDb.bulkBatch. put() copies the key and value into the native
 * WriteBatch at once (the caller may reuse or drop its buffers right after);
 * write() writes every put since the last write atomically and empties the
 * batch, which keeps its memory for the next puts (no regrowth per batch).
 * Keys must not be empty. put() must not be called while a write() of the
 * same batch is in flight (StorageError `invalidArgument`); use two batches to fill
 * one while the other is written. Where the binding lacks its chained-batch
 * calls it gathers RocksOps for RocksDb.write, with the same contract.
 * Errors: StorageError `closed` (database closed), `io` (engine failure).
 */
export class RocksBulkBatch {
  readonly #owner: RocksDb;
  readonly #native: unknown;
  #ops: RocksOp[] = [];
  #count = 0;
  #bytes = 0;
  #writing = false;

  /** internal: use RocksDb.bulkBatch. */
  constructor(owner: RocksDb, native: unknown) {
    this.#owner = owner;
    this.#native = native;
  }

  /** RocksBulkBatch.count: puts since the last write. */
  get count(): number {
    return this.#count;
  }

  /** RocksBulkBatch.bytes: key and value bytes put since the last write. */
  get bytes(): number {
    return this.#bytes;
  }

  /** RocksBulkBatch.put adds one put; key and value are copied now. */
  put(key: Uint8Array, value: Uint8Array): void {
    if (this.#writing) throw new StorageError('invalidArgument', `rocksdb ${this.#owner.path}: a put into a bulk batch while it is being written`);
    if (this.#native !== null && nativeBatch !== null) nativeBatch.batch_put(this.#native, key, value);
    else this.#ops.push({ type: 'put', key: Buffer.from(key), value: Buffer.from(value) });
    this.#count += 1;
    this.#bytes += key.length + value.length;
  }

  /**
   * RocksBulkBatch.write writes the puts since the last write atomically (with
   * `sync`, durably, with every earlier unsynced write) and empties the batch;
   * nothing to write resolves at once. On failure the batch is emptied too.
   */
  async write(options: { readonly sync: boolean }): Promise<void> {
    this.#owner.checkOpen('write');
    if (this.#writing) throw new StorageError('invalidArgument', `rocksdb ${this.#owner.path}: a bulk batch written twice at once`);
    if (this.#count === 0) return;
    this.#writing = true;
    try {
      if (this.#native !== null && nativeBatch !== null) {
        const native = this.#native;
        await new Promise<void>((resolve, reject) => {
          nativeBatch.batch_write(native, { sync: options.sync }, (err) => {
            if (err) reject(this.#owner.ioError('write', err));
            else resolve();
          });
        });
      } else {
        const ops = this.#ops;
        this.#ops = [];
        await this.#owner.write(ops, options);
      }
    } finally {
      if (this.#native !== null && nativeBatch !== null) nativeBatch.batch_clear(this.#native);
      this.#ops = [];
      this.#count = 0;
      this.#bytes = 0;
      this.#writing = false;
    }
  }
}

/**
 * FaultyStorage: a MemoryStorage (the real in-memory twin of RocksStorage)
 * whose log writes can be made to fail on demand, like a disk that returns
 * EIO, and whose state reads for a snapshot can meet a corrupt record. Everything else is the MemoryStorage's own behaviour; a failed save
 * writes nothing (as a failed RocksDB write batch).
 */
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import type {
  CompactionBase,
  Identity,
  InstallMeta,
  KeyValue,
  LogBatch,
  LogState,
  NodeStorage,
  RangeQuery,
  RangeResult,
  StateBatch,
  StateSnapshotReader,
} from '../../../src/storage/types.js';
import type { Membership } from '../../../src/raft/types.js';

export class FaultyStorage implements NodeStorage {
  /** failSaves: every save() rejects with StorageError `io` and writes nothing while set. */
  failSaves = false;
  /** saves: batches handed to save(), failed ones included, in call order. */
  readonly saves: LogBatch[] = [];
  /** corruptStateReads: a snapshot's read of the state fails as on a block that does not verify (StorageError `corrupt`). */
  corruptStateReads = false;
  /** corruptRangeReads: a range read fails as on a record whose checksum does not match (StorageError `corrupt`). */
  corruptRangeReads = false;
  /** stateViews: snapshotState calls (each a read of the whole state, or of its changes, by a snapshot). */
  stateViews = 0;
  /** saveDelayMs: each save waits this long before it writes (a slow fsync). */
  saveDelayMs = 0;
  /** savesHeld: saves waiting now on holdSaves() (they write once released). */
  savesHeld = 0;
  #hold: Promise<void> | null = null;

  private constructor(readonly inner: MemoryStorage) {}

  static async open(dir: MemoryDataDir = new MemoryDataDir()): Promise<FaultyStorage> {
    return new FaultyStorage(await MemoryStorage.open(dir));
  }

  get dir(): MemoryDataDir {
    return this.inner.dir;
  }

  /** durableTerm: the term of the hard state a restart would load now. */
  get durableTerm(): number {
    return this.inner.dir.hardState?.term ?? 0;
  }

  /**
   * holdSaves: every save from now on waits, before it writes, until the
   * returned function is called (an fsync that stalls for as long as a test
   * needs); the writes then happen in call order.
   */
  holdSaves(): () => void {
    let release = (): void => {};
    this.#hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    return () => {
      this.#hold = null;
      release();
    };
  }

  async save(batch: LogBatch): Promise<void> {
    this.saves.push(batch);
    const hold = this.#hold;
    if (hold !== null) {
      this.savesHeld++;
      await hold;
      this.savesHeld--;
    }
    if (this.saveDelayMs > 0) await new Promise((r) => setTimeout(r, this.saveDelayMs));
    if (this.failSaves) {
      await Promise.resolve();
      throw new StorageError('io', `memory data dir ${this.inner.dir.name}: injected write failure (EIO)`, { path: this.inner.dir.name });
    }
    return this.inner.save(batch);
  }

  load(): Promise<LogState> {
    return this.inner.load();
  }
  compact(base: CompactionBase): Promise<void> {
    return this.inner.compact(base);
  }
  bootstrap(membership: Membership): Promise<Membership | null> {
    return this.inner.bootstrap(membership);
  }
  lastIndex(): number {
    return this.inner.lastIndex();
  }
  appliedIndex(): number {
    return this.inner.appliedIndex();
  }
  membership(): Membership | null {
    return this.inner.membership();
  }
  write(batch: StateBatch): Promise<void> {
    return this.inner.write(batch);
  }
  stateEpoch(): number {
    return this.inner.stateEpoch();
  }
  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.inner.get(key);
  }
  getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    return this.inner.getMany(keys);
  }
  range(query: RangeQuery): Promise<RangeResult> {
    if (this.corruptRangeReads) {
      const path = this.inner.dir.name;
      return Promise.reject(new StorageError('corrupt', `memory data dir ${path}: injected: the record of key "k1" fails its checksum`, { path }));
    }
    return this.inner.range(query);
  }
  async snapshotState(): Promise<StateSnapshotReader> {
    this.stateViews++;
    const view = await this.inner.snapshotState();
    if (!this.corruptStateReads) return view;
    const path = this.inner.dir.name;
    return {
      appliedIndex: view.appliedIndex,
      membership: view.membership,
      close: () => view.close(),
      // eslint-disable-next-line require-yield
      async *batches() {
        throw new StorageError('corrupt', `memory data dir ${path}: injected Corruption: block checksum mismatch`, { path });
      },
    };
  }
  installState(source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>, meta: InstallMeta): Promise<void> {
    return this.inner.installState(source, meta);
  }
  stateDigest(): Promise<string> {
    return this.inner.stateDigest();
  }
  readIdentity(): Promise<Identity | null> {
    return this.inner.readIdentity();
  }
  checkIdentity(expected: Identity, options?: { readonly createIfNew?: boolean }): Promise<Identity> {
    return this.inner.checkIdentity(expected, options);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

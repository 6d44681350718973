/**
 * SimStorage: the NodeStorage a simulated node is given — a MemoryStorage
 * on the node's MemoryDataDir (its disk, kept across crashes), wrapped so
 * that the checkers see every write as it reaches the disk (persisted log
 * entries and hard states, compactions, state writes with their applied index)
 * and so that a crash ends the incarnation: afterwards its calls never
 * settle (its process is gone) and nothing more reaches the disk.
 *
 * The test-only switch `ackBeforePersistMs` makes it a lying disk (a negative
 * control): save() reports done at once and the write reaches the disk that
 * much virtual time later, unless the node crashes first.
 */
import type { HardState, Membership } from '../../src/raft/types.js';
import { MemoryStorage, type MemoryDataDir } from '../../src/storage/memory-storage.js';
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
} from '../../src/storage/types.js';
import type { NodeClock } from './sim-clock.js';

/** DiskObserver: what the checkers are told, each at the moment it reaches the disk. */
export interface DiskObserver {
  onSave(batch: LogBatch, prev: HardState): void;
  onCompact(base: CompactionBase): void;
  /** onStateWrite: the state machine's batch reached the disk, moving its applied index from appliedBefore to batch.appliedIndex. */
  onStateWrite(batch: StateBatch, appliedBefore: number): void;
  /** onInstall: a whole state was installed (a snapshot), at meta's applied index. */
  onInstall(appliedBefore: number, appliedIndex: number): void;
}

export interface SimStorageOptions {
  readonly observer: DiskObserver;
  readonly clock: NodeClock;
  /** ackBeforePersistMs: > 0 makes save() lie (see the file comment). Test-only. */
  readonly ackBeforePersistMs?: number;
}

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);
const EMPTY: HardState = { term: 0, vote: '', commit: 0 };

export class SimStorage implements NodeStorage {
  private alive = true;

  private constructor(
    private readonly inner: MemoryStorage,
    readonly dir: MemoryDataDir,
    private readonly opts: SimStorageOptions,
  ) {}

  static async open(dir: MemoryDataDir, opts: SimStorageOptions): Promise<SimStorage> {
    return new SimStorage(await MemoryStorage.open(dir), dir, opts);
  }

  /** crash: the incarnation is gone; the disk keeps what reached it. */
  crash(): Promise<void> {
    this.alive = false;
    return this.inner.close();
  }

  load(): Promise<LogState> {
    return this.alive ? this.inner.load() : never();
  }

  async save(batch: LogBatch): Promise<void> {
    if (!this.alive) return never();
    const lag = this.opts.ackBeforePersistMs ?? 0;
    if (lag > 0) {
      this.opts.clock.setTimeout(() => void this.persist(batch).catch(() => undefined), lag);
      return;
    }
    await this.persist(batch);
  }

  private async persist(batch: LogBatch): Promise<void> {
    const prev = this.dir.hardState ?? EMPTY;
    await this.inner.save(batch);
    if (this.alive) this.opts.observer.onSave(batch, prev);
  }

  async compact(base: CompactionBase): Promise<void> {
    if (!this.alive) return never();
    await this.inner.compact(base);
    if (this.alive) this.opts.observer.onCompact(base);
  }

  bootstrap(membership: Membership): Promise<Membership | null> {
    return this.alive ? this.inner.bootstrap(membership) : never();
  }

  lastIndex(): number {
    return this.inner.lastIndex();
  }

  appliedIndex(): number {
    return this.inner.appliedIndex();
  }

  async write(batch: StateBatch): Promise<void> {
    if (!this.alive) return never();
    const before = this.inner.appliedIndex();
    await this.inner.write(batch);
    if (this.alive) this.opts.observer.onStateWrite(batch, before);
  }

  get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.alive ? this.inner.get(key) : never();
  }

  getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    return this.alive ? this.inner.getMany(keys) : never();
  }

  stateEpoch(): number {
    return this.inner.stateEpoch();
  }

  range(query: RangeQuery): Promise<RangeResult> {
    return this.alive ? this.inner.range(query) : never();
  }

  membership(): Membership | null {
    return this.inner.membership();
  }

  snapshotState(): Promise<StateSnapshotReader> {
    return this.alive ? this.inner.snapshotState() : never();
  }

  async installState(source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>, meta: InstallMeta): Promise<void> {
    if (!this.alive) return never();
    const before = this.inner.appliedIndex();
    await this.inner.installState(source, meta);
    if (this.alive) this.opts.observer.onInstall(before, this.inner.appliedIndex());
  }

  stateDigest(): Promise<string> {
    return this.alive ? this.inner.stateDigest() : never();
  }

  readIdentity(): Promise<Identity | null> {
    return this.alive ? this.inner.readIdentity() : never();
  }

  checkIdentity(expected: Identity, options?: { readonly createIfNew?: boolean }): Promise<Identity> {
    return this.alive ? this.inner.checkIdentity(expected, options) : never();
  }

  close(): Promise<void> {
    return this.alive ? this.inner.close() : Promise.resolve();
  }
}

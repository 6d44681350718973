/**
 * SimStorage: the NodeStorage a simulated node is given — a MemoryStorage
 * on the node's MemoryDataDir (its disk, kept across crashes), wrapped so
 * that the checkers see every write as it reaches the disk (persisted log
 * entries and hard states, compactions, state writes with their applied index)
 * and so that a crash ends the incarnation: afterwards its calls never
 * settle (its process is gone) and nothing more reaches the disk.
 *
 * The test-only switch `ackBeforePersistMs` makes it a lying disk (a negative
 * control): save() reports done once the write is in the page cache, where
 * the node (and the checkers) see it, but it becomes durable only that much
 * virtual time later: a crash before then loses it (log, hard state and
 * state machine go back to what was durable).
 */
import { createHash } from 'node:crypto';

import type { Entry, HardState, Membership } from '../../src/raft/types.js';
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
  /** onStateHash: a hash of the whole state (every record, reserved ones too) at appliedIndex, taken after a write. */
  onStateHash(appliedIndex: number, hash: string): void;
  /** onInstall: a whole state was installed (a snapshot), at meta's applied index. */
  onInstall(appliedBefore: number, appliedIndex: number): void;
}

export interface SimStorageOptions {
  readonly observer: DiskObserver;
  readonly clock: NodeClock;
  /** ackBeforePersistMs: > 0 makes save() lie (see the file comment). Test-only. */
  /** flipValues: every value this disk stores has its last byte flipped (a state that diverges). Test-only. */
  readonly flipValues?: boolean;
  readonly ackBeforePersistMs?: number;
}

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);
const EMPTY: HardState = { term: 0, vote: '', commit: 0 };

/** Undo: the log and hard state as they were before a save that is not durable yet. */
interface Undo {
  readonly atMs: number;
  readonly hardState: HardState | null;
  readonly logBase: MemoryDataDir['logBase'];
  readonly log: Entry[];
  readonly kv: MemoryDataDir['kv'];
  readonly applied: number;
  readonly membership: Membership | null;
}

export class SimStorage implements NodeStorage {
  private alive = true;
  /** undo: saves not durable yet (ackBeforePersistMs), oldest first. */
  private undo: Undo[] = [];

  private constructor(
    private readonly inner: MemoryStorage,
    readonly dir: MemoryDataDir,
    private readonly opts: SimStorageOptions,
  ) {}

  static async open(dir: MemoryDataDir, opts: SimStorageOptions): Promise<SimStorage> {
    return new SimStorage(await MemoryStorage.open(dir), dir, opts);
  }

  /**
   * crash: the incarnation is gone; the disk keeps what reached it (with
   * ackBeforePersistMs, saves not durable yet are lost). Returns whether the
   * log or hard state went back.
   */
  crash(): boolean {
    this.alive = false;
    void this.inner.close();
    const lag = this.opts.ackBeforePersistMs ?? 0;
    const lost = this.undo.find((u) => u.atMs > this.opts.clock.nowMs() - lag);
    this.undo = [];
    if (lost === undefined) return false;
    const d = this.dir;
    d.hardState = lost.hardState;
    d.logBase = lost.logBase;
    d.log = lost.log;
    d.kv = lost.kv;
    d.applied = lost.applied;
    d.membership = lost.membership;
    return true;
  }

  load(): Promise<LogState> {
    return this.alive ? this.inner.load() : never();
  }

  async save(batch: LogBatch): Promise<void> {
    if (!this.alive) return never();
    this.noteUndo();
    const prev = this.dir.hardState ?? EMPTY;
    await this.inner.save(batch);
    if (this.alive) this.opts.observer.onSave(batch, prev);
  }

  /** noteUndo: with ackBeforePersistMs, remembers the disk before a write that is not durable yet. */
  private noteUndo(): void {
    const lag = this.opts.ackBeforePersistMs ?? 0;
    if (lag <= 0) return;
    const now = this.opts.clock.nowMs();
    const d = this.dir;
    this.undo = this.undo.filter((u) => u.atMs > now - lag);
    this.undo.push({ atMs: now, hardState: d.hardState, logBase: d.logBase, log: d.log.slice(), kv: new Map(d.kv), applied: d.applied, membership: d.membership });
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
    this.noteUndo();
    const before = this.inner.appliedIndex();
    await this.inner.write(this.opts.flipValues === true ? flipped(batch) : batch);
    if (!this.alive) return;
    this.opts.observer.onStateWrite(batch, before);
    void this.hashState().catch(() => undefined); // off the write path: the node does not wait for it
  }

  /** hashState hashes one consistent view of the state (its records and applied index) for the checkers. */
  private async hashState(): Promise<void> {
    const reader = await this.inner.snapshotState();
    const h = createHash('sha256');
    for await (const batch of reader.batches()) {
      for (const r of batch) {
        h.update(String(r.key.length));
        h.update(r.key);
        h.update(String(r.value.length));
        h.update(r.value);
      }
    }
    if (this.alive) this.opts.observer.onStateHash(reader.appliedIndex, h.digest('hex'));
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

/** flipped: batch with the last byte of every value put flipped (the flipValues control). */
function flipped(batch: StateBatch): StateBatch {
  return {
    ...batch,
    writes: batch.writes.map((w) => {
      if (w.value === null || w.value.length === 0) return w;
      const value = Uint8Array.from(w.value);
      value[value.length - 1] = (value[value.length - 1] as number) ^ 1;
      return { key: w.key, value };
    }),
  };
}

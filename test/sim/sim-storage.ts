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
 *
 * A faulty disk (DiskFaults, drawn from the seed; an honest disk otherwise)
 * models what RocksStorage's disk can do, with its durability contract
 * (src/storage/rocks-storage.ts: log writes synced, state writes not):
 * - failed write or fsync (EIO): save, compact or a state write rejects with
 *   StorageError `io`; its bytes landed durably or not at all (drawn: an
 *   fsync that fails after the data reached the platter);
 * - ENOSPC: the same call rejects with StorageError `io` (ENOSPC), nothing written;
 * - after a failed log write (save or compact, EIO or ENOSPC) every later log
 *   write of the incarnation (save, compact, bootstrap, the identity's
 *   creation; one called while the failed one was under way too) is refused
 *   with StorageError `io` naming it, with no fault drawn, as RocksStorage
 *   does (types.ts LogStore): none reaches the disk or the checkers, and the
 *   node stops at its next persist. A crash and restart reopens the log as
 *   it was (the failed write landed or not, as drawn; its successors absent)
 *   and the new incarnation takes writes again. State writes are not log
 *   writes (another database on RocksStorage): they are not refused;
 * - torn write: a synced write takes 0..syncMaxMs of virtual time; a crash
 *   meanwhile tears it, and recovery (the WAL's record checksum) keeps it
 *   whole or drops it whole (drawn) — never a part of it;
 * - loss of unsynced data: a crash may be a power loss, losing the state
 *   writes (never synced) of the last writebackMs, a suffix of them (drawn);
 *   what the node fsynced (log, hard state, compactions) survives;
 * - a corrupt byte: at a crash, one byte of one stored record (a log entry's
 *   data or a state value) flips; the disk's block checksum no longer matches,
 *   so every read of that record (load, get, getMany, range, snapshotState,
 *   stateDigest) rejects with StorageError `corrupt` and the bytes never
 *   reach the node. The checkers' state hash reads the record as written.
 * - state images (sim-state-image.ts; RocksStorage's in state-image.ts): an
 *   install with exportImage exports the built state (kept by this
 *   incarnation only, as RocksStorage drops its images at open; on a faulty
 *   disk an export now and then fails: no image, the install stands); an
 *   import checks every name, size and SHA-256, the applied index and the
 *   membership, then commits as an install does (atomically: a crash or a
 *   refusal before the swap leaves the old state whole), or fails with EIO /
 *   ENOSPC before its commit.
 * Faults are injected only when `mayFail()` allows (the cluster keeps a
 * quorum of healthy disks); `injected` says what this incarnation's disk
 * did, so the cluster can tell a node stopping on a disk error it was given
 * (allowed) from one failing on its own (a violation).
 */
import type { Entry, HardState, Membership } from '../../src/raft/types.js';
import { logWriteRefused, MemoryStorage, type MemoryDataDir } from '../../src/storage/memory-storage.js';
import type {
  CompactionBase,
  Identity,
  InstallMeta,
  KeyValue,
  LogBatch,
  LogState,
  NodeStorage,
  RangeQuery,
  ImportImageOptions,
  RangeResult,
  SnapshotStateOptions,
  StateBatch,
  StateSnapshotReader,
} from '../../src/storage/types.js';
import type { HeldStateImage } from '../../src/storage/types.js';
import type { StateImageSource } from '../../src/storage/state-image.js';
import type { BrokenImageImport } from './broken.js';
import { checkInstallMeta } from '../../src/storage/state-transfer.js';
import { sameMembership } from '../../src/raft/membership.js';
import type { SeededRng } from '../harness/rng.js';
import { siteStreams } from './draw-sites.js';
import { exportSimImage, importedState, receiveSimImage, simImageChunks, type SimImage } from './sim-state-image.js';
import type { NodeClock } from './sim-clock.js';
import { StorageError } from '../../src/storage/storage-error.js';
import { keyString } from '../../src/storage/key-string.js';

/** DiskObserver: what the checkers are told, each at the moment it reaches the disk. */
export interface DiskObserver {
  onSave(batch: LogBatch, prev: HardState): void;
  onCompact(base: CompactionBase): void;
  /** onStateWrite: the state machine's batch reached the disk, moving its applied index from appliedBefore to batch.appliedIndex. */
  onStateWrite(batch: StateBatch, appliedBefore: number): void;
  /** onStateHash: a hash of the whole state (every record, reserved ones too) at appliedIndex, taken after a write: two 32-bit lanes and the record count. */
  onStateHash(appliedIndex: number, a: number, b: number, records: number): void;
  /** onInstall: a whole state was installed (a snapshot), at meta's applied index. */
  onInstall(appliedBefore: number, appliedIndex: number): void;
}

/** DiskFaults: how often a faulty disk fails (see the file comment); all zero is an honest disk. */
export interface DiskFaults {
  /** writeErrorChance: per save, compact or state write, the chance it fails with EIO. */
  readonly writeErrorChance: number;
  /** enospcChance: per save, compact or state write, the chance it fails with ENOSPC. */
  readonly enospcChance: number;
  /** syncMaxMs: a synced write (save, compact) takes 0..syncMaxMs of virtual time; a crash meanwhile tears it. */
  readonly syncMaxMs: number;
  /** powerLossChance: the chance a crash is a power loss (unsynced state writes of the last writebackMs lost). */
  readonly powerLossChance: number;
  /** writebackMs: unsynced state writes older than this are durable (the OS wrote them back). */
  readonly writebackMs: number;
  /** corruptChance: the chance a crash leaves one byte of one stored record flipped. */
  readonly corruptChance: number;
}

/** NO_DISK_FAULTS: an honest disk. */
export const NO_DISK_FAULTS: DiskFaults = { writeErrorChance: 0, enospcChance: 0, syncMaxMs: 0, powerLossChance: 0, writebackMs: 0, corruptChance: 0 };

/** DiskDamage: the records of a data dir whose bytes no longer match their checksum, each with the bytes as written. */
export class DiskDamage {
  /** corrupted: corrupted bytes -> the bytes as written. */
  readonly corrupted = new WeakMap<Uint8Array, Uint8Array>();
  /** count: records ever corrupted on this disk. */
  count = 0;

  isCorrupt(bytes: Uint8Array | undefined): boolean {
    return bytes !== undefined && this.corrupted.has(bytes);
  }
}

/** CrashOutcome: what a crash did to the disk. */
export interface CrashOutcome {
  /** rolledBack: the log or hard state went back (the lying disk) — the checkers follow. */
  readonly rolledBack: boolean;
  /** stateLost: unsynced state writes were lost (a power loss): the applied index went back to this. */
  readonly stateLost: number | null;
  /** corrupted: a record was corrupted (its description), or null. */
  readonly corrupted: string | null;
}

export interface SimStorageOptions {
  readonly observer: DiskObserver;
  readonly clock: NodeClock;
  /**
   * faults: the faulty disk's rates (NO_DISK_FAULTS when absent); rng: where every fault is drawn from, a stream
   * per site (DISK_SITES, forked from it once: one more call of one kind moves no other kind's draws).
   */
  readonly faults?: DiskFaults;
  readonly rng?: SeededRng;
  /** damage: the data dir's corrupt records (kept across incarnations, like the dir). */
  readonly damage?: DiskDamage;
  /**
   * mayFail: whether a fault may be injected now (the cluster keeps a quorum
   * of healthy disks): `lasting` for a corruption (the node stays out),
   * else one a restart recovers from.
   */
  readonly mayFail?: (lasting: boolean) => boolean;
  /** ackBeforePersistMs: > 0 makes save() lie (see the file comment). Test-only. */
  /** flipValues: every value this disk stores has its last byte flipped (a state that diverges). Test-only. */
  readonly flipValues?: boolean;
  readonly ackBeforePersistMs?: number;
  /**
   * takesWritesAfterFailure: the log disk of RocksStorage before 42c3b59 (a negative control): after a failed log
   * write it takes later ones (the node, and the checkers, see them done) but the next open cannot reach them: at a
   * crash the log and hard state go back to what they were once the failed write was over. Test-only.
   */
  readonly takesWritesAfterFailure?: boolean;
  /** compactFailChance: per compaction, a further chance it fails with EIO (nothing written), besides the faults'. Test-only. */
  readonly compactFailChance?: number;
  /** brokenImport: how this disk's state image import is broken (broken.ts; a negative control). Test-only. */
  readonly brokenImport?: BrokenImageImport;
  /**
   * lyingExport: every image this disk exports holds one data value changed
   * (its files and manifest consistent: a buggy or compromised leader), while
   * its own state is right. Followers' records checks must refuse it. Test-only.
   */
  readonly lyingExport?: boolean;
  /** changesValuesKeptBytes: the MemoryStorage's (MemoryStorageOptions; its default when absent). */
  readonly changesValuesKeptBytes?: number;
  /**
   * changesMissDeletes: a negative control: the changes a snapshot view lists leave out the keys deleted since, so a
   * snapshot made from the previous one keeps them (a broken change tracking, as a store noting only puts would be).
   */
  readonly changesMissDeletes?: boolean;
}

/** DISK_SITES: the sites a disk draws its faults at, each from its own stream (draw-sites.ts). */
const DISK_SITES = ['save', 'compact', 'stateWrite', 'imageImport', 'imageExport', 'syncTime', 'tear', 'powerLoss', 'corrupt'] as const;
type DiskSite = (typeof DISK_SITES)[number];

/** EXPORT_FAIL_CHANCE: on a disk that fails writes at all, the chance an image export fails (the install stands, no image). */
const EXPORT_FAIL_CHANCE = 0.05;

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

/** StateUndo: the state machine as it was before an unsynced state write (what a power loss goes back to). */
interface StateUndo {
  readonly atMs: number;
  /** olds: each key the write changed, with the record it replaced (undefined: none). */
  readonly olds: ReadonlyMap<string, KeyValue | undefined>;
  readonly applied: number;
  readonly membership: Membership | null;
}

/** InFlight: a synced write not durable yet (syncMaxMs): a crash tears it. */
interface InFlight {
  readonly batch: LogBatch;
  readonly prev: HardState;
  readonly hardState: HardState | null;
  readonly logLength: number;
  readonly tail: Entry[];
  /** durable: a later synced write (a compaction) completed meanwhile: the WAL is ordered, so this one is durable too. */
  durable: boolean;
}

export class SimStorage implements NodeStorage {
  private alive = true;
  /** undo: saves not durable yet (ackBeforePersistMs), oldest first. */
  private undo: Undo[] = [];
  /** stateUndo: unsynced state writes of the last writebackMs, oldest first (powerLossChance > 0). */
  private stateUndo: StateUndo[] = [];
  /** writesInFlight: state writes called and not yet done. */
  private writesInFlight = 0;
  /** sum: the state hash's running sum (two 32-bit lanes and the record count); null: to recompute. */
  private sum: [number, number, number] | null = null;
  /**
   * logFault: the first log write (save, compact) this incarnation's disk failed, from the moment the fault was drawn
   * (a write called while the failed one was still under way is refused too): every later log write is refused with
   * StorageError `io` naming it (types.ts LogStore, as RocksStorage). The inner MemoryStorage is told once the failed
   * write is over, so bootstrap and the identity's creation are refused as well. A new incarnation takes writes again.
   */
  private logFault: Error | null = null;
  /** lostAfter: with takesWritesAfterFailure, the log as the failed write left it: what the next open finds. */
  private lostAfter: Pick<Undo, 'hardState' | 'logBase' | 'log'> | null = null;
  /** inFlight: the save not durable yet (syncMaxMs > 0). */
  private inFlight: InFlight | null = null;
  /** injected: the fault this incarnation's disk returned to the node ('' when none). */
  injected = '';
  private readonly faults: DiskFaults;
  private readonly damage: DiskDamage;
  /** sites: the fault streams, one per site (null: an honest disk draws nothing). */
  private readonly sites: Record<DiskSite, SeededRng> | null;
  /** image: the state image the last exporting install made, with the reads of it in progress (this incarnation's only). */
  private image: { readonly img: SimImage; refs: number; dropped: boolean } | null = null;

  private constructor(
    private readonly inner: MemoryStorage,
    readonly dir: MemoryDataDir,
    private readonly opts: SimStorageOptions,
  ) {
    this.faults = opts.faults ?? NO_DISK_FAULTS;
    this.damage = opts.damage ?? new DiskDamage();
    this.sites = opts.rng === undefined ? null : siteStreams(opts.rng, DISK_SITES);
  }

  static async open(dir: MemoryDataDir, opts: SimStorageOptions): Promise<SimStorage> {
    return new SimStorage(await MemoryStorage.open(dir, opts.changesValuesKeptBytes !== undefined ? { changesValuesKeptBytes: opts.changesValuesKeptBytes } : {}), dir, opts);
  }

  /**
   * crash: the incarnation is gone; the disk keeps what reached it (with
   * ackBeforePersistMs, saves not durable yet are lost). Returns whether the
   * log or hard state went back.
   */
  crash(): CrashOutcome {
    this.alive = false;
    this.image = null; // never kept across a restart
    void this.inner.close();
    this.tear();
    const after = this.lostAfter;
    this.lostAfter = null;
    if (after !== null) {
      const d = this.dir;
      const lost = d.hardState !== after.hardState || d.logBase !== after.logBase || d.log.length !== after.log.length || d.log.some((e, i) => e !== after.log[i]);
      d.hardState = after.hardState;
      d.logBase = after.logBase;
      d.log = after.log;
      if (lost) return { rolledBack: true, stateLost: this.losePower(), corrupted: this.corrupt() };
    }
    const stateLost = this.losePower();
    const corrupted = this.corrupt();
    const lag = this.opts.ackBeforePersistMs ?? 0;
    const lost = this.undo.find((u) => u.atMs > this.opts.clock.nowMs() - lag);
    this.undo = [];
    if (lost === undefined) return { rolledBack: false, stateLost, corrupted };
    const d = this.dir;
    d.hardState = lost.hardState;
    d.logBase = lost.logBase;
    d.log = lost.log;
    d.kv = lost.kv;
    d.applied = lost.applied;
    d.membership = lost.membership;
    return { rolledBack: true, stateLost, corrupted };
  }

  /** draw: whether a fault of chance p happens now at `site` (only when the cluster allows one). */
  private draw(site: DiskSite, p: number, lasting = false): boolean {
    if (p <= 0 || this.sites === null || !this.sites[site].chance(p)) return false;
    return this.opts.mayFail?.(lasting) ?? true;
  }

  /**
   * tear: a crash during a synced write tears it; the WAL's record checksum
   * keeps it whole (then the checkers hear of it now) or drops it whole
   * (the checkers never heard of it).
   */
  private tear(): void {
    const f = this.inFlight;
    this.inFlight = null;
    if (f === null) return;
    if (f.durable || this.sites?.tear.chance(0.5) === true) {
      this.opts.observer.onSave(f.batch, f.prev);
      return;
    }
    const d = this.dir;
    d.hardState = f.hardState;
    d.log.length = f.logLength;
    for (const e of f.tail) d.log.push(e);
  }

  /** losePower: with powerLossChance, the unsynced state writes of the last writebackMs are lost (a suffix, drawn); returns the applied index gone back to. */
  private losePower(): number | null {
    const undo = this.stateUndo;
    this.stateUndo = [];
    const now = this.opts.clock.nowMs();
    const recent = undo.filter((u) => u.atMs > now - this.faults.writebackMs);
    if (recent.length === 0 || !this.draw('powerLoss', this.faults.powerLossChance)) return null;
    const from = undo.length - recent.length + (this.sites?.powerLoss.nextInt(recent.length) ?? 0);
    const d = this.dir;
    // undo the lost writes, newest first
    for (let i = undo.length - 1; i >= from; i--) {
      const u = undo[i] as StateUndo;
      for (const [k, old] of u.olds) {
        if (old === undefined) d.kv.delete(k);
        else d.kv.set(k, old);
      }
      d.applied = u.applied;
      d.membership = u.membership;
    }
    return d.applied;
  }

  /** corrupt: with corruptChance, one byte of one stored record (a log entry's data or a state value) flips. */
  private corrupt(): string | null {
    if (!this.draw('corrupt', this.faults.corruptChance, true)) return null;
    const rng = (this.sites as Record<DiskSite, SeededRng>).corrupt;
    const d = this.dir;
    const inLog = rng.chance(0.5);
    const logAt = d.log.map((e, i) => (e.data.length > 0 ? i : -1)).filter((i) => i >= 0);
    const keys = [...d.kv.keys()].filter((k) => (d.kv.get(k)?.value.length ?? 0) > 0);
    if ((inLog || keys.length === 0) && logAt.length > 0) {
      const i = rng.pick(logAt);
      const e = d.log[i] as Entry;
      const data = this.flip(e.data, rng);
      d.log[i] = { ...e, data };
      return `log entry ${e.index}`;
    }
    if (keys.length === 0) return null;
    const k = rng.pick(keys);
    const kv = d.kv.get(k) as KeyValue;
    d.kv.set(k, { key: kv.key, value: this.flip(kv.value, rng) });
    return `the value of state key ${JSON.stringify(k)}`;
  }

  /** flip: a copy of bytes with one bit flipped, remembered as corrupt (with the bytes as written). */
  private flip(bytes: Uint8Array, rng: SeededRng): Uint8Array {
    const out = Uint8Array.from(bytes);
    const at = rng.nextInt(out.length);
    out[at] = (out[at] as number) ^ (1 << rng.nextInt(8));
    this.damage.corrupted.set(out, this.damage.corrupted.get(bytes) ?? bytes);
    this.damage.count++;
    return out;
  }

  /** injectWriteFault: EIO or ENOSPC for a write, when drawn; `landed` says whether an EIO's bytes reached the disk. */
  private writeFault(site: DiskSite, what: string): { readonly err: StorageError; readonly landed: boolean } | null {
    if (this.draw(site, this.faults.enospcChance)) {
      this.injected = 'ENOSPC';
      return { err: new StorageError('io', `sim disk ${this.dir.name}: ${what}: ENOSPC: no space left on device`, { path: this.dir.name }), landed: false };
    }
    if (this.draw(site, this.faults.writeErrorChance)) {
      this.injected = 'EIO';
      const landed = this.sites?.[site].chance(0.5) === true;
      return { err: new StorageError('io', `sim disk ${this.dir.name}: ${what}: EIO: input/output error (fsync failed)`, { path: this.dir.name }), landed };
    }
    return null;
  }

  /** checkRead: bytes read back whose checksum does not match are refused. */
  private checkRead(bytes: Uint8Array | undefined, what: string): void {
    if (this.damage.isCorrupt(bytes)) {
      this.injected = 'corrupt';
      throw new StorageError('corrupt', `sim disk ${this.dir.name}: ${what}: block checksum mismatch`, { path: this.dir.name });
    }
  }

  async load(): Promise<LogState> {
    if (!this.alive) return never();
    const state = await this.inner.load();
    for (const e of this.dir.log) this.checkRead(e.data, `log entry ${e.index}`);
    return state;
  }

  /** checkLogWritable: a log write after a failed one is refused (see logFault), before any fault is drawn for it. */
  private checkLogWritable(operation: string): void {
    if (this.logFault !== null && this.opts.takesWritesAfterFailure !== true) throw logWriteRefused(this.dir.name, operation, this.logFault);
  }

  /** logWriteFault: writeFault for a log write, remembered as the log's failure (logFault) when drawn. */
  private logWriteFault(operation: 'save' | 'compact', extraChance = 0): { readonly err: StorageError; readonly landed: boolean } | null {
    let fault = this.writeFault(operation, operation);
    if (fault === null && extraChance > 0 && this.draw(operation, extraChance)) {
      this.injected = 'EIO';
      fault = { err: new StorageError('io', `sim disk ${this.dir.name}: ${operation}: EIO: input/output error`, { path: this.dir.name }), landed: false };
    }
    if (fault !== null) this.logFault ??= fault.err;
    return fault;
  }

  /** failed: the failed log write is over: the inner store refuses every later one too; returns its error to throw. */
  private failed(err: StorageError): StorageError {
    if (this.opts.takesWritesAfterFailure !== true) this.inner.recordLogFailure(err);
    else if (this.lostAfter === null) {
      const d = this.dir;
      this.lostAfter = { hardState: d.hardState, logBase: d.logBase, log: d.log.slice() };
    }
    return err;
  }

  async save(batch: LogBatch): Promise<void> {
    if (!this.alive) return never();
    this.checkLogWritable('save');
    const fault = this.logWriteFault('save');
    if (fault !== null && !fault.landed) throw this.failed(fault.err);
    this.noteUndo();
    const d = this.dir;
    const prev = d.hardState ?? EMPTY;
    const syncMs = this.faults.syncMaxMs > 0 && fault === null ? (this.sites?.syncTime.range(0, this.faults.syncMaxMs) ?? 0) : 0;
    const first = batch.entries?.[0];
    const keep = first === undefined ? d.log.length : Math.min(d.log.length, first.index - d.logBase.index - 1);
    const inFlight: InFlight | null = syncMs > 0 ? { batch, prev, hardState: d.hardState, logLength: keep, tail: d.log.slice(keep), durable: false } : null;
    await this.inner.save(batch);
    if (!this.alive) return never();
    if (inFlight !== null) {
      this.inFlight = inFlight;
      await this.opts.clock.sleep(syncMs); // never settles if the node crashes meanwhile (the clock dies)
      this.inFlight = null;
    }
    if (!this.alive) return never();
    this.opts.observer.onSave(batch, prev);
    if (fault !== null) throw this.failed(fault.err);
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
    this.checkLogWritable('compact');
    const fault = this.logWriteFault('compact', this.opts.compactFailChance ?? 0);
    if (fault !== null && !fault.landed) throw this.failed(fault.err);
    await this.inner.compact(base);
    if (!this.alive) return never();
    // A save still syncing is durable once this later write is (one ordered WAL); were it torn, the log it
    // restores would no longer line up with the compacted one.
    if (this.inFlight !== null) this.inFlight.durable = true;
    this.stateUndo = []; // compact syncs the state machine first (rocks-storage.ts)
    this.opts.observer.onCompact(base);
    if (fault !== null) throw this.failed(fault.err);
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
    const fault = this.writeFault('stateWrite', 'state write');
    if (fault !== null && !fault.landed) throw fault.err;
    this.noteUndo();
    const d = this.dir;
    // The records the batch replaces, read before it (the node writes one batch at a time; else the sum is recomputed).
    const alone = this.writesInFlight === 0;
    const olds = new Map<string, KeyValue | undefined>();
    if (alone) {
      for (const w of batch.writes) {
        const k = keyString(w.key);
        if (!olds.has(k)) olds.set(k, d.kv.get(k));
      }
    }
    const before = this.inner.appliedIndex();
    const membershipBefore = d.membership;
    this.writesInFlight++;
    try {
      await this.inner.write(this.opts.flipValues === true ? flipped(batch) : batch);
    } finally {
      this.writesInFlight--;
    }
    if (!this.alive) return never();
    if (alone) this.noteStateUndo(olds, before, membershipBefore);
    else this.stateUndo = []; // not tracked: this disk keeps these writes at a power loss
    this.opts.observer.onStateWrite(batch, before);
    if (alone && this.writesInFlight === 0 && this.sum !== null) {
      for (const [k, old] of olds) {
        if (old !== undefined) this.addToSum(old, -1);
        const now = d.kv.get(k);
        if (now !== undefined) this.addToSum(now, 1);
      }
    } else this.sum = null;
    this.reportHash();
    if (fault !== null) throw fault.err;
  }

  /** noteStateUndo: with powerLossChance, remembers what an unsynced write replaced (dropping the writes written back). */
  private noteStateUndo(olds: Map<string, KeyValue | undefined>, applied: number, membership: Membership | null): void {
    if (this.faults.powerLossChance <= 0) return;
    const now = this.opts.clock.nowMs();
    while (this.stateUndo.length > 0 && (this.stateUndo[0] as StateUndo).atMs <= now - this.faults.writebackMs) this.stateUndo.shift();
    this.stateUndo.push({ atMs: now, olds, applied, membership });
  }

  /**
   * reportHash tells the checkers the hash of the whole state (every record,
   * reserved ones too, with the bytes as written) at its applied index: an
   * order-independent sum of per-record hashes kept up to date write by
   * write (recomputed when unsure), with the record count.
   */
  private reportHash(): void {
    if (this.writesInFlight > 0) return; // reported after the last one in flight
    const d = this.dir;
    if (this.sum === null) {
      this.sum = [0, 0, 0];
      for (const kv of d.kv.values()) this.addToSum(kv, 1);
    }
    const [a, b, n] = this.sum;
    this.opts.observer.onStateHash(d.applied, a, b, n);
  }

  /** addToSum adds (sign 1) or removes (sign -1) one record's hash, over the bytes as written. */
  private addToSum(kv: KeyValue, sign: 1 | -1): void {
    const sum = this.sum as [number, number, number];
    const [a, b] = recordHash(kv.key, this.damage.corrupted.get(kv.value) ?? kv.value);
    sum[0] = (sum[0] + sign * a) >>> 0;
    sum[1] = (sum[1] + sign * b) >>> 0;
    sum[2] += sign;
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    if (!this.alive) return never();
    const v = await this.inner.get(key);
    this.checkRead(v, 'get');
    return v;
  }

  async getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    if (!this.alive) return never();
    const vs = await this.inner.getMany(keys);
    for (const v of vs) this.checkRead(v, 'getMany');
    return vs;
  }

  stateEpoch(): number {
    return this.inner.stateEpoch();
  }

  async range(query: RangeQuery): Promise<RangeResult> {
    if (!this.alive) return never();
    const r = await this.inner.range(query);
    for (const kv of r.kvs) this.checkRead(kv.value, 'range');
    return r;
  }

  membership(): Membership | null {
    return this.inner.membership();
  }

  async snapshotState(options?: SnapshotStateOptions): Promise<StateSnapshotReader> {
    if (!this.alive) return never();
    const reader = await this.inner.snapshotState(options);
    const batches = reader.batches.bind(reader);
    const check = (kv: KeyValue): void => this.checkRead(kv.value, 'snapshot read');
    // the changed values read at the view (not kept since their write) are checked as RocksStorage's getMany is
    for (const c of reader.changes?.entries ?? []) if (c.value !== null) this.checkRead(c.value, 'snapshot changes read');
    const changes = this.opts.changesMissDeletes === true && reader.changes != null ? { ...reader.changes, entries: reader.changes.entries.filter((c) => c.value !== null) } : reader.changes;
    return {
      appliedIndex: reader.appliedIndex,
      membership: reader.membership,
      changes,
      close: () => reader.close(),
      async *batches(entriesMax?: number, bytesMax?: number) {
        for await (const b of batches(entriesMax, bytesMax)) {
          for (const kv of b) check(kv);
          yield b;
        }
      },
    };
  }

  async installState(source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>, meta: InstallMeta, options?: { readonly exportImage?: boolean }): Promise<void> {
    if (!this.alive) return never();
    const before = this.inner.appliedIndex();
    await this.inner.installState(source, meta);
    if (!this.alive) return never();
    if (options?.exportImage === true) {
      const d = this.dir;
      const failed = this.faults.writeErrorChance > 0 && this.sites?.imageExport.chance(EXPORT_FAIL_CHANCE) === true;
      // the new image replaces the kept one (RocksStorage: dropStateImage, then the new one)
      this.dropStateImage();
      const kv = this.opts.lyingExport === true ? forgedState(d.kv) : d.kv;
      if (!failed && d.membership !== null) this.image = { img: exportSimImage(kv, d.applied, d.membership, `${d.name}/images/image-${d.installs}`), refs: 0, dropped: false };
    }
    this.installed(before);
  }

  /** installed: after an install or import: synced (the undo entries refer to the replaced map), the checkers told, the state's hash reported. */
  private installed(before: number): void {
    this.stateUndo = [];
    this.sum = null;
    this.opts.observer.onInstall(before, this.inner.appliedIndex());
    this.reportHash();
  }

  /**
   * importStateImage: another member's image as this state (see the file
   * comment): the source verified and decoded, its applied index and
   * membership checked against `meta`, then committed as an install.
   * Errors: StorageError `invalidArgument`, `corrupt` (the old state kept
   * whole), `io` (EIO / ENOSPC before the commit).
   */
  async importStateImage(source: StateImageSource, meta: InstallMeta, options: ImportImageOptions = {}): Promise<void> {
    if (!this.alive) return never();
    const path = this.dir.name;
    const checked = checkInstallMeta(meta, path);
    const before = this.inner.appliedIndex();
    const broken = this.opts.brokenImport;
    const verify = broken?.ignoresRecords === true ? undefined : options.verifyRecords;
    const fault = (): void => {
      const f = this.writeFault('imageImport', 'state image import');
      if (f !== null) throw f.err;
    };
    // Received and checked inside the install (in line with writes, as RocksStorage's import); a throw keeps the old state.
    async function* records(): AsyncGenerator<readonly KeyValue[], void, undefined> {
      const got = await receiveSimImage(broken?.source !== undefined ? await broken.source(source) : source, path);
      if (got.appliedIndex !== checked.appliedIndex) {
        throw new StorageError('corrupt', `state image for ${path}: applied index ${got.appliedIndex}, not ${checked.appliedIndex}`, { path });
      }
      if (!sameMembership(got.membership, checked.membership)) throw new StorageError('corrupt', `state image for ${path}: its membership is not the one as of ${checked.appliedIndex}`, { path });
      // The state the image holds (a key twice keeps its last value, as an install), in key order, as RocksStorage's scan of it.
      if (verify !== undefined) {
        const state = importedState(got.records);
        await verify((async function* () {
          yield state;
        })(), path);
      }
      fault();
      yield got.records;
    }
    await this.inner.installState(records(), checked);
    if (!this.alive) return never();
    this.installed(before);
  }

  /** stateImage: the image of the state at `appliedIndex` the last exporting install made, pinned until release(); null when none. */
  stateImage(appliedIndex: number): HeldStateImage | null {
    const held = this.image;
    if (!this.alive || held === null || held.dropped || held.img.image.appliedIndex !== appliedIndex) return null;
    held.refs++;
    let released = false;
    return {
      image: held.img.image,
      chunks: () => simImageChunks(held.img),
      release: () => {
        if (released) return;
        released = true;
        held.refs--;
      },
    };
  }

  /** dropStateImage: the kept image is no longer served (reads in progress finish). */
  dropStateImage(): void {
    const held = this.image;
    if (held === null) return;
    this.image = null;
    held.dropped = true;
  }

  async stateDigest(): Promise<string> {
    if (!this.alive) return never();
    for (const kv of this.dir.kv.values()) this.checkRead(kv.value, 'stateDigest');
    return this.inner.stateDigest();
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


/** recordHash: two 32-bit hashes (FNV-1a and a multiply-xorshift lane) of one record's key and value. */
function recordHash(key: Uint8Array, value: Uint8Array): [number, number] {
  // Each byte (and the length marker) goes through both lanes; the loops are written out (no closure per call: hot).
  let a = 0x811c9dc5;
  let b = 0x9747b28c ^ key.length;
  for (let i = 0; i < key.length; i++) {
    const x = key[i] as number;
    a = Math.imul(a ^ x, 16777619);
    b = Math.imul(b ^ x, 0x5bd1e995);
    b ^= b >>> 15;
  }
  const marker = 0x100 | (value.length & 0xff);
  a = Math.imul(a ^ marker, 16777619);
  b = Math.imul(b ^ marker, 0x5bd1e995);
  b ^= b >>> 15;
  b = Math.imul(b ^ value.length, 0x5bd1e995);
  for (let i = 0; i < value.length; i++) {
    const x = value[i] as number;
    a = Math.imul(a ^ x, 16777619);
    b = Math.imul(b ^ x, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return [a >>> 0, b >>> 0];
}

/** flipped: batch with the last byte of every value put flipped (the flipValues control). */
/** forgedState: `kv` with the value of its first data record (outside the reserved keys) one byte longer: what a lying exporter serves. */
function forgedState(kv: ReadonlyMap<string, KeyValue>): ReadonlyMap<string, KeyValue> {
  const first = [...kv.values()].filter((r) => r.key[0] !== 0).sort((a, b) => Buffer.compare(a.key, b.key))[0];
  if (first === undefined) return kv;
  const out = new Map(kv);
  out.set(keyString(first.key), { key: first.key, value: Uint8Array.from([...first.value, 0x21]) });
  return out;
}

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

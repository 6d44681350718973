/**
 * SimSnapshotIo: the SnapshotIo one incarnation of a simulated node is given
 * for its snapshot directory: the member's MemorySnapshotIo (its disk, kept
 * across crashes) behind a faulty disk drawn from the seed, like
 * sim-storage.ts's for the log and state:
 * - EIO on open, write, fsync, rename and readdir, whether or not the bytes
 *   (the created file, the write, the sync, the rename) landed (drawn);
 * - ENOSPC on open for writing, write and mkdir, nothing written;
 * - at a crash (crash()), a power loss now and then (powerLossChance): file
 *   bytes written since their last fsync and directory entries changed since
 *   the directory's last fsync may be lost (each drawn: a rename not
 *   followed by an fsync of its directory may vanish);
 * - at a crash, now and then (corruptChance, a lasting fault the cluster
 *   must allow), one bit of one stored archive (archive.tar.gz) flips: the
 *   archive's recorded chunk hashes and digest must catch it, and it must
 *   never be installed or served as good.
 * Each kind of call (open for reading, open for writing, write, fsync,
 * rename, readdir, mkdir; per kind of file: archive, meta.json,
 * chunks.sha256, any other) and each crash fault (power loss, corruption)
 * draws from a stream of its own (draw-sites.ts): a change to the node that
 * adds or removes one call moves the later draws of that kind only.
 * Every error it returns names 'sim disk', so the cluster can tell a node
 * stopping on a fault its disk returned (allowed) from one failing on its
 * own. After crash() the incarnation's calls never settle (its process is gone).
 */
import type { Readable, Transform } from 'node:stream';
import type { ZlibOptions } from 'node:zlib';
import type { MemorySnapshotIo } from '../../src/snapshot/memory-snapshot-io.js';
import type { DirEntry, FileReadStreamOptions, FileStat, SnapshotFile, SnapshotIo } from '../../src/snapshot/snapshot-io.js';
import type { SeededRng } from '../harness/rng.js';
import { siteStreams } from './draw-sites.js';

/** SnapshotDiskFaults: how often the snapshot disk fails (all zero: an honest disk). */
export interface SnapshotDiskFaults {
  /** snapErrorChance: per open, write, fsync, rename or readdir, the chance it fails with EIO. */
  readonly snapErrorChance: number;
  /** snapEnospcChance: per open for writing, write or mkdir, the chance it fails with ENOSPC. */
  readonly snapEnospcChance: number;
  /** snapPowerLossChance: the chance a crash is a power loss (unsynced bytes and directory entries may be lost). */
  readonly snapPowerLossChance: number;
  /** snapCorruptChance: the chance a crash leaves one bit of one stored archive flipped. */
  readonly snapCorruptChance: number;
}

export const NO_SNAPSHOT_DISK_FAULTS: SnapshotDiskFaults = { snapErrorChance: 0, snapEnospcChance: 0, snapPowerLossChance: 0, snapCorruptChance: 0 };

/** SnapshotCrashOutcome: what a crash did to the snapshot disk. */
export interface SnapshotCrashOutcome {
  /** lost: unsynced writes and directory entries a power loss took back. */
  readonly lost: readonly string[];
  /** corrupted: the archive a bit flipped in, or null. */
  readonly corrupted: string | null;
}

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

/** ARCHIVE_FILE_SUFFIX: the stored archives (src/snapshot/store.ts ARCHIVE_FILE), what a corruption hits. */
const ARCHIVE_FILE_SUFFIX = '/archive.tar.gz';

/** OPS: the kinds of call a fault is drawn for; FILE_KINDS: the kinds of file (fileKind), a site being one of each. */
const OPS = ['openRead', 'openWrite', 'write', 'fsync', 'rename', 'scandir', 'mkdir'] as const;
type Op = (typeof OPS)[number];
const OP_INDEX: Readonly<Record<Op, number>> = { openRead: 0, openWrite: 1, write: 2, fsync: 3, rename: 4, scandir: 5, mkdir: 6 };
const FILE_KINDS = ['archive', 'meta', 'chunks', 'other'] as const;

/** fileKind: the index in FILE_KINDS of the file at `path` (by its name: src/snapshot/store.ts ARCHIVE_FILE, STORED_META_FILE, CHUNKS_FILE). */
function fileKind(path: string): number {
  if (path.endsWith(ARCHIVE_FILE_SUFFIX)) return 0;
  if (path.endsWith('/meta.json')) return 1;
  if (path.endsWith('/chunks.sha256')) return 2;
  return 3;
}

export class SimSnapshotIo implements SnapshotIo {
  private alive = true;
  /** injected: the last fault this incarnation's snapshot disk returned ('' when none); errors: how many it returned. */
  injected = '';
  errors = 0;
  /** sites: the fault stream of each (op, file kind), forked from rng on first use; powerLoss, corrupt: the crash's. */
  private readonly sites: (SeededRng | undefined)[] = new Array<SeededRng | undefined>(OPS.length * FILE_KINDS.length);
  private crashSites: { readonly powerLoss: SeededRng; readonly corrupt: SeededRng } | null = null;

  /**
   * disk: the member's snapshot directory; mayFail(lasting): whether the
   * cluster allows a fault now (a corruption is lasting); name: the node (in
   * error messages).
   */
  constructor(
    private readonly disk: MemorySnapshotIo,
    private readonly name: string,
    private readonly faults: SnapshotDiskFaults,
    private readonly rng: SeededRng,
    private readonly mayFail: (lasting: boolean) => boolean,
  ) {}

  /** isAlive: the incarnation has not crashed. */
  isAlive(): boolean {
    return this.alive;
  }

  /** crash: the incarnation is gone; a power loss or a corruption may follow (drawn). */
  crash(): SnapshotCrashOutcome {
    if (!this.alive) return { lost: [], corrupted: null };
    this.alive = false;
    const sites = (this.crashSites ??= siteStreams(this.rng, ['powerLoss', 'corrupt'] as const));
    const lost = this.draw(sites.powerLoss, this.faults.snapPowerLossChance) ? this.disk.loseUnsynced(() => sites.powerLoss.chance(0.5)) : [];
    let corrupted: string | null = null;
    const archives = this.disk.filePaths().filter((p) => p.endsWith(ARCHIVE_FILE_SUFFIX) && this.disk.fileSize(p) > 0);
    if (archives.length > 0 && this.draw(sites.corrupt, this.faults.snapCorruptChance, true)) {
      const r = sites.corrupt;
      const path = r.pick(archives);
      this.disk.flipBit(path, r.nextInt(this.disk.fileSize(path)), r.nextInt(8));
      corrupted = path;
    }
    return { lost, corrupted };
  }

  private draw(rng: SeededRng, p: number, lasting = false): boolean {
    if (p <= 0 || !rng.chance(p)) return false;
    return this.mayFail(lasting);
  }

  /** site: the fault stream of `op` on the file at `path` (forked once per incarnation). */
  private site(op: Op, path: string): SeededRng {
    const kind = fileKind(path);
    const i = OP_INDEX[op] * FILE_KINDS.length + kind;
    return (this.sites[i] ??= this.rng.fork(`${op}/${FILE_KINDS[kind] as string}`));
  }

  /** fault: EIO (chance snapErrorChance) or, where space is taken, ENOSPC; `landed`: an EIO's operation happened anyway. */
  private fault(op: Op, syscall: string, path: string, takesSpace: boolean): { readonly err: Error; readonly landed: boolean } | null {
    const f = this.faults;
    if (f.snapErrorChance <= 0 && (!takesSpace || f.snapEnospcChance <= 0)) return null; // an honest disk: no stream made
    const rng = this.site(op, path);
    if (takesSpace && this.draw(rng, f.snapEnospcChance)) {
      this.injected = 'ENOSPC';
      this.errors++;
      return { err: fsError('ENOSPC', `sim disk ${this.name} (snapshots): ENOSPC: no space left on device, ${syscall} '${path}'`, syscall, path), landed: false };
    }
    if (this.draw(rng, f.snapErrorChance)) {
      this.injected = 'EIO';
      this.errors++;
      return { err: fsError('EIO', `sim disk ${this.name} (snapshots): EIO: i/o error, ${syscall} '${path}'`, syscall, path), landed: rng.chance(0.5) };
    }
    return null;
  }

  /** faulty runs op unless a drawn fault stops it first; an EIO that landed runs it and then fails. */
  async faulty<T>(site: Op, syscall: string, path: string, takesSpace: boolean, op: () => Promise<T>): Promise<T> {
    if (!this.alive) return never();
    const f = this.fault(site, syscall, path, takesSpace);
    if (f !== null && !f.landed) throw f.err;
    const out = await op();
    if (!this.alive) return never();
    if (f !== null) throw f.err;
    return out;
  }

  /** live runs op; its result never settles once the incarnation crashed. */
  async live<T>(op: () => Promise<T>): Promise<T> {
    if (!this.alive) return never();
    const out = await op();
    return this.alive ? out : never();
  }

  async open(path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number): Promise<SnapshotFile> {
    const inner = await this.faulty(flags === 'r' ? 'openRead' : 'openWrite', 'open', path, flags !== 'r', () => this.disk.open(path, flags, mode));
    return this.file(inner, path);
  }

  private file(inner: SnapshotFile, path: string): SnapshotFile {
    return new SimSnapshotFile(this, inner, path);
  }

  createReadStream(path: string, options: FileReadStreamOptions): Readable {
    return this.disk.createReadStream(path, options);
  }

  readFile(path: string): Promise<Buffer> {
    return this.live(() => this.disk.readFile(path));
  }

  readdir(path: string): Promise<DirEntry[]> {
    return this.faulty('scandir', 'scandir', path, false, () => this.disk.readdir(path));
  }

  rename(from: string, to: string): Promise<void> {
    return this.faulty('rename', 'rename', to, false, () => this.disk.rename(from, to));
  }

  rm(path: string, options: { readonly recursive?: boolean; readonly force?: boolean }): Promise<void> {
    return this.live(() => this.disk.rm(path, options));
  }

  unlink(path: string): Promise<void> {
    return this.live(() => this.disk.unlink(path));
  }

  mkdir(path: string, options: { readonly recursive?: boolean; readonly mode?: number }): Promise<void> {
    return this.faulty('mkdir', 'mkdir', path, true, () => this.disk.mkdir(path, options));
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.live(() => this.disk.chmod(path, mode));
  }

  stat(path: string): Promise<FileStat> {
    return this.live(() => this.disk.stat(path));
  }

  statfs(path: string): Promise<{ readonly bavail: number; readonly bsize: number }> {
    return this.live(() => this.disk.statfs(path));
  }

  gzip(block: Uint8Array, options: ZlibOptions): Promise<Buffer> {
    return this.live(() => this.disk.gzip(block, options));
  }

  gunzip(bytes: Uint8Array, options: ZlibOptions): Promise<Buffer> {
    return this.live(() => this.disk.gunzip(bytes, options));
  }

  createGunzip(options: ZlibOptions): Transform & { readonly bytesWritten: number } {
    return this.disk.createGunzip(options);
  }

  createInflateRaw(options: ZlibOptions): Transform & { readonly bytesWritten: number } {
    return this.disk.createInflateRaw(options);
  }

  wallNowMs(): number {
    return this.disk.wallNowMs();
  }

  uniqueName(): string {
    return this.disk.uniqueName();
  }

  yieldTurn(): Promise<void> {
    return this.live(() => this.disk.yieldTurn());
  }
}

/** SimSnapshotFile: an open file of a SimSnapshotIo: the inner file's calls, each through the faulty disk. */
class SimSnapshotFile implements SnapshotFile {
  constructor(
    private readonly io: SimSnapshotIo,
    private readonly inner: SnapshotFile,
    private readonly path: string,
  ) {}

  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return this.io.live(() => this.inner.read(buffer, offset, length, position));
  }

  write(buffer: Uint8Array, offset: number, length: number, position: number | null): Promise<{ bytesWritten: number }> {
    return this.io.faulty('write', 'write', this.path, true, () => this.inner.write(buffer, offset, length, position));
  }

  writev(buffers: Uint8Array[], position?: number): Promise<{ bytesWritten: number }> {
    return this.io.faulty('write', 'writev', this.path, true, () => this.inner.writev(buffers, position));
  }

  stat(): Promise<{ readonly size: number; isFile(): boolean }> {
    return this.io.live(() => this.inner.stat());
  }

  sync(): Promise<void> {
    return this.io.faulty('fsync', 'fsync', this.path, false, () => this.inner.sync());
  }

  datasync(): Promise<void> {
    return this.io.faulty('fsync', 'fdatasync', this.path, false, () => this.inner.datasync());
  }

  chmod(mode: number): Promise<void> {
    return this.io.live(() => this.inner.chmod(mode));
  }

  close(): Promise<void> {
    // a close always releases the handle (a crashed process's handles are gone with it)
    return this.io.isAlive() ? this.inner.close() : never();
  }

  createReadStream(options: FileReadStreamOptions): Readable {
    return this.inner.createReadStream(options);
  }
}

function fsError(code: string, message: string, syscall: string, path: string): Error {
  return Object.assign(new Error(message), { code, syscall, path, errno: code === 'EIO' ? -5 : -28 });
}

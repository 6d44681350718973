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
 * Every error it returns names 'sim disk', so the cluster can tell a node
 * stopping on a fault its disk returned (allowed) from one failing on its
 * own. After crash() the incarnation's calls never settle (its process is gone).
 */
import type { Readable, Transform } from 'node:stream';
import type { ZlibOptions } from 'node:zlib';
import type { MemorySnapshotIo } from '../../src/snapshot/memory-snapshot-io.js';
import type { DirEntry, FileReadStreamOptions, FileStat, SnapshotFile, SnapshotIo } from '../../src/snapshot/snapshot-io.js';
import type { SeededRng } from '../harness/rng.js';

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

export class SimSnapshotIo implements SnapshotIo {
  private alive = true;
  /** injected: the last fault this incarnation's snapshot disk returned ('' when none); errors: how many it returned. */
  injected = '';
  errors = 0;

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
    const lost = this.draw(this.faults.snapPowerLossChance) ? this.disk.loseUnsynced(() => this.rng.chance(0.5)) : [];
    let corrupted: string | null = null;
    const archives = this.disk.filePaths().filter((p) => p.endsWith(ARCHIVE_FILE_SUFFIX) && this.disk.fileSize(p) > 0);
    if (archives.length > 0 && this.draw(this.faults.snapCorruptChance, true)) {
      const path = this.rng.pick(archives);
      this.disk.flipBit(path, this.rng.nextInt(this.disk.fileSize(path)), this.rng.nextInt(8));
      corrupted = path;
    }
    return { lost, corrupted };
  }

  private draw(p: number, lasting = false): boolean {
    if (p <= 0 || !this.rng.chance(p)) return false;
    return this.mayFail(lasting);
  }

  /** fault: EIO (chance snapErrorChance) or, where space is taken, ENOSPC; `landed`: an EIO's operation happened anyway. */
  private fault(syscall: string, path: string, takesSpace: boolean): { readonly err: Error; readonly landed: boolean } | null {
    if (takesSpace && this.draw(this.faults.snapEnospcChance)) {
      this.injected = 'ENOSPC';
      this.errors++;
      return { err: fsError('ENOSPC', `sim disk ${this.name} (snapshots): ENOSPC: no space left on device, ${syscall} '${path}'`, syscall, path), landed: false };
    }
    if (this.draw(this.faults.snapErrorChance)) {
      this.injected = 'EIO';
      this.errors++;
      return { err: fsError('EIO', `sim disk ${this.name} (snapshots): EIO: i/o error, ${syscall} '${path}'`, syscall, path), landed: this.rng.chance(0.5) };
    }
    return null;
  }

  /** faulty runs op unless a drawn fault stops it first; an EIO that landed runs it and then fails. */
  async faulty<T>(syscall: string, path: string, takesSpace: boolean, op: () => Promise<T>): Promise<T> {
    if (!this.alive) return never();
    const f = this.fault(syscall, path, takesSpace);
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
    const inner = await this.faulty('open', path, flags !== 'r', () => this.disk.open(path, flags, mode));
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
    return this.faulty('scandir', path, false, () => this.disk.readdir(path));
  }

  rename(from: string, to: string): Promise<void> {
    return this.faulty('rename', to, false, () => this.disk.rename(from, to));
  }

  rm(path: string, options: { readonly recursive?: boolean; readonly force?: boolean }): Promise<void> {
    return this.live(() => this.disk.rm(path, options));
  }

  unlink(path: string): Promise<void> {
    return this.live(() => this.disk.unlink(path));
  }

  mkdir(path: string, options: { readonly recursive?: boolean; readonly mode?: number }): Promise<void> {
    return this.faulty('mkdir', path, true, () => this.disk.mkdir(path, options));
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
    return this.io.faulty('write', this.path, true, () => this.inner.write(buffer, offset, length, position));
  }

  writev(buffers: Uint8Array[], position?: number): Promise<{ bytesWritten: number }> {
    return this.io.faulty('writev', this.path, true, () => this.inner.writev(buffers, position));
  }

  stat(): Promise<{ readonly size: number; isFile(): boolean }> {
    return this.io.live(() => this.inner.stat());
  }

  sync(): Promise<void> {
    return this.io.faulty('fsync', this.path, false, () => this.inner.sync());
  }

  datasync(): Promise<void> {
    return this.io.faulty('fdatasync', this.path, false, () => this.inner.datasync());
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

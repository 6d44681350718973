/**
 * MemorySnapshotIo: the in-memory twin of nodeSnapshotIo (snapshot-io.ts), for
 * the simulator and tests: a file tree in memory with node:fs's semantics
 * for the calls the snapshot code makes (errno codes ENOENT, EEXIST,
 * ENOTDIR, EISDIR, ENOTEMPTY), gzip done synchronously (zlib's sync calls:
 * nothing on the threadpool, so the order things finish in is decided by
 * the program alone), and a wall clock the owner gives. Every call settles
 * on the microtask queue: no real IO, no real time.
 *
 * The tree outlives the node that uses it (a crash keeps the disk): pass the
 * same MemorySnapshotIo to the next incarnation. Every write is kept unless
 * the owner calls loseUnsynced (a power loss): sync() on a file records its
 * bytes as durable, sync() on a directory (fsyncDir) its entries; a power
 * loss may take back what was written or linked since. A faulty disk
 * (test/sim/sim-snapshot-io.ts) wraps this one.
 */
import { posix } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { Gzip, constants as zlibConstants, gunzipSync, gzipSync, inflateRawSync, type ZlibOptions } from 'node:zlib';
import { StacklessError } from '../raft/stackless-error.js';
import type { DirEntry, FileReadStreamOptions, FileStat, SnapshotFile, SnapshotIo } from './snapshot-io.js';

interface FileNode {
  readonly kind: 'file';
  data: Buffer;
  size: number;
  mode: number;
  mtimeMs: number;
  /** synced: the bytes as of the last sync() (empty: never synced); dirty: written since. */
  synced: Buffer;
  dirty: boolean;
  /**
   * shared: `synced` is a view of `data` (a sync() with no write since): the next write copies `data` first,
   * so what was synced never changes. A sync() no longer copies the file (each snapshot's archive, meta.json,
   * chunk hashes and member table were copied once more at their fsync).
   */
  shared: boolean;
}

interface DirNode {
  readonly kind: 'dir';
  readonly children: Set<string>;
  mode: number;
  mtimeMs: number;
  /** synced: its entries as of the last sync() of the directory (null: never synced, none durable). */
  synced: Map<string, TreeNode> | null;
}

type TreeNode = FileNode | DirNode;

/**
 * RESOLVED: one settled promise every call chains its work on (RESOLVED.then(f) queues f at once, as
 * Promise.resolve().then(f) does, without a new promise for each call: ~1,000 calls a simulator seed).
 */
const RESOLVED: Promise<void> = Promise.resolve();

const READ_CHUNK_BYTES_DEFAULT = 64 * 1024;
/** ZLIB_CHUNK_BYTES_DEFAULT / ZLIB_CHUNK_BYTES_MIN: zlib's default output buffer (16 KiB), and the least one used here. */
const ZLIB_CHUNK_BYTES_DEFAULT = 16 * 1024;
const ZLIB_CHUNK_BYTES_MIN = 4 * 1024;
/**
 * isNormalPath: whether `p` is an absolute path posix.resolve would return unchanged (one or more segments,
 * each neither empty, '.' nor '..'; so not '/' itself). A loop over its characters, not a regular expression
 * (each call of the tree is given one: ~1,300 a simulator seed).
 */
function isNormalPath(p: string): boolean {
  const n = p.length;
  if (n < 2 || p.charCodeAt(0) !== 0x2f) return false;
  let start = 1;
  for (let i = 1; i <= n; i++) {
    if (i < n && p.charCodeAt(i) !== 0x2f) continue;
    const len = i - start;
    if (len === 0) return false;
    if (p.charCodeAt(start) === 0x2e && (len === 1 || (len === 2 && p.charCodeAt(start + 1) === 0x2e))) return false;
    start = i + 1;
  }
  return true;
}

/**
 * childPath / parentOf / nameOf: posix.join(p, name), posix.dirname(p) and posix.basename(p) for a normal
 * path `p` (norm's) and an entry name (a basename of one: not empty, no '/', neither '.' nor '..'), by
 * concatenation and slicing.
 */
function childPath(p: string, name: string): string {
  return p === '/' ? `/${name}` : `${p}/${name}`;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

function nameOf(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** fsError: node:fs's error for a failed call (its code, syscall, path); with no stack, like node:fs/promises' (whose stacks hold no caller frame). */
function fsError(code: string, syscall: string, path: string): Error {
  return Object.assign(new StacklessError(`${code}: ${syscall} '${path}'`), { code, syscall, path, errno: -1 });
}

/**
 * deflateChunkBytes / inflateChunkBytes: zlib's output buffer for one sync
 * call, no larger than the output may need (a larger one costs an
 * allocation per call and leaves the same bytes; a smaller one only means
 * more output pieces, joined into the same bytes). The sim's archives are
 * small; the asked chunkSize (sized for the largest block) is the ceiling.
 */
function deflateChunkBytes(inputBytes: number, options: ZlibOptions): number {
  return Math.min(options.chunkSize ?? ZLIB_CHUNK_BYTES_DEFAULT, Math.max(ZLIB_CHUNK_BYTES_MIN, inputBytes + (inputBytes >> 10) + 1024));
}

function inflateChunkBytes(inputBytes: number, options: ZlibOptions): number {
  return Math.min(options.chunkSize ?? ZLIB_CHUNK_BYTES_DEFAULT, Math.max(ZLIB_CHUNK_BYTES_MIN, inputBytes * 4));
}

/**
 * ReusableGzip: the parts of a zlib Gzip object gzipReused drives (node:zlib's own zlibBufferSync does the
 * same with them: writeSync into an output buffer, the counts left in _writeState).
 */
interface ReusableGzip {
  readonly destroyed: boolean;
  readonly _handle?: {
    writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
    reset(): void;
  } | null;
  readonly _writeState?: Uint32Array;
}

/** gzipEngines: one deflate stream per level and strategy, reset after each use (gzipReused). */
const gzipEngines = new Map<string, ReusableGzip>();

/**
 * gzipScratch: gzipReused's output buffer, kept between calls (the calls are synchronous, so one is enough) and
 * grown to the largest chunk size asked: each piece zlib writes into it is copied out at its own size (a small
 * member's from Node's pool), where a fresh buffer of the whole chunk size (4-16 KiB, outside the pool) was
 * allocated for every member.
 */
let gzipScratch: Buffer = Buffer.alloc(0);

/**
 * gzipReused: gzipSync(block, options), the same bytes, on a deflate stream
 * kept from the last call with the same level and strategy and reset after
 * each (deflateReset: the state of a fresh deflateInit, without allocating
 * and clearing zlib's ~270 KiB of tables and window again). gzipSync made a
 * new zlib stream per call: ~40 a simulator seed, ~8% of its CPU, nearly all
 * of it that setup. Options other than level, strategy, chunkSize and flush, an
 * error, or a zlib object without the parts driven here: gzipSync itself.
 */
function gzipReused(block: Uint8Array, options: ZlibOptions): Buffer {
  const chunkSize = deflateChunkBytes(block.length, options);
  // flush is the flag of a stream's writes: a sync call always ends with finishFlush (Z_FINISH), whatever it says
  for (const k in options) if (k !== 'level' && k !== 'strategy' && k !== 'chunkSize' && k !== 'flush') return gzipSync(block, { ...options, chunkSize });
  const key = `${options.level ?? zlibConstants.Z_DEFAULT_COMPRESSION}/${options.strategy ?? zlibConstants.Z_DEFAULT_STRATEGY}`;
  let engine = gzipEngines.get(key);
  if (engine === undefined) {
    engine = new Gzip({ level: options.level ?? zlibConstants.Z_DEFAULT_COMPRESSION, strategy: options.strategy ?? zlibConstants.Z_DEFAULT_STRATEGY }) as unknown as ReusableGzip;
    gzipEngines.set(key, engine);
  }
  const handle = engine._handle;
  const state = engine._writeState;
  if (handle == null || typeof handle.writeSync !== 'function' || typeof handle.reset !== 'function' || !(state instanceof Uint32Array) || engine.destroyed) {
    gzipEngines.delete(key);
    return gzipSync(block, { ...options, chunkSize });
  }
  const parts: Buffer[] = [];
  let bytes = 0;
  let inOff = 0;
  let inLen = block.byteLength;
  if (gzipScratch.length < chunkSize) gzipScratch = Buffer.allocUnsafe(chunkSize);
  const out = gzipScratch;
  for (;;) {
    // each write gets the whole chunk size to fill (as gzipSync's): the loop goes on only when zlib filled it
    handle.writeSync(zlibConstants.Z_FINISH, block, inOff, inLen, out, 0, chunkSize);
    if (engine.destroyed) {
      // zlib reported an error (the stream is closed): gzipSync raises it as it would have
      gzipEngines.delete(key);
      return gzipSync(block, { ...options, chunkSize });
    }
    const outLeft = state[0] as number;
    const inLeft = state[1] as number;
    const have = chunkSize - outLeft;
    if (have > 0) {
      parts.push(Buffer.from(out.subarray(0, have)));
      bytes += have;
    }
    inOff += inLen - inLeft;
    inLen = inLeft;
    if (outLeft !== 0) break; // Z_FINISH with output room left: the member is complete
  }
  handle.reset();
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, bytes);
}

/** MemoryGunzip buffers the whole gzip stream and gunzips it synchronously at its end (sim archives are small). */
class MemoryGunzip extends Transform {
  private readonly parts: Buffer[] = [];
  bytesWritten = 0;

  constructor(private readonly options: ZlibOptions) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.parts.push(chunk);
    callback();
  }

  override _flush(callback: TransformCallback): void {
    const input = Buffer.concat(this.parts);
    let out: Buffer;
    try {
      out = gunzipSync(input, { ...this.options, chunkSize: inflateChunkBytes(input.length, this.options) });
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.bytesWritten = input.length;
    const step = this.options.chunkSize ?? READ_CHUNK_BYTES_DEFAULT;
    for (let at = 0; at < out.length; at += step) this.push(out.subarray(at, at + step));
    callback();
  }
}

/**
 * MemoryInflateRaw inflates synchronously at each write everything written
 * so far (sim members are small) and hands on the new output: when the
 * deflate data ends with input left over, it ends its output and
 * `bytesWritten` is where the data ended, as zlib's InflateRaw does.
 */
class MemoryInflateRaw extends Transform {
  private readonly parts: Buffer[] = [];
  private pushed = 0;
  private done = false;
  bytesWritten = 0;

  constructor(private readonly options: ZlibOptions) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.done) {
      callback();
      return;
    }
    this.parts.push(chunk);
    const input = Buffer.concat(this.parts);
    let out: { buffer: Buffer; engine: { bytesWritten: number } };
    try {
      out = inflateRawSync(input, { ...this.options, info: true, finishFlush: zlibConstants.Z_SYNC_FLUSH, chunkSize: inflateChunkBytes(input.length, this.options) }) as unknown as typeof out;
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.bytesWritten = out.engine.bytesWritten;
    const step = this.options.chunkSize ?? READ_CHUNK_BYTES_DEFAULT;
    for (let at = this.pushed; at < out.buffer.length; at += step) this.push(out.buffer.subarray(at, Math.min(at + step, out.buffer.length)));
    this.pushed = out.buffer.length;
    if (this.bytesWritten < input.length) {
      this.done = true;
      this.push(null);
    }
    callback();
  }
}

/** statOf: what a stat of node reads (a directory's size: 4096). */
function statOf(node: TreeNode): FileStat {
  const size = node.kind === 'file' ? node.size : 4096;
  return { size, mtimeMs: node.mtimeMs, isDirectory: () => node.kind === 'dir', isFile: () => node.kind === 'file' };
}

/** streamOf: a stream of the file file() returns (read at each pull), from options.start to options.end (inclusive). */
function streamOf(file: () => FileNode, options: FileReadStreamOptions): Readable {
  const step = options.highWaterMark ?? READ_CHUNK_BYTES_DEFAULT;
  let at = options.start ?? 0;
  return new Readable({
    highWaterMark: step,
    read(this: Readable): void {
      let f: FileNode;
      try {
        f = file();
      } catch (err) {
        this.destroy(err as Error);
        return;
      }
      const end = Math.min(f.size, options.end === undefined ? Infinity : options.end + 1);
      if (at >= end) {
        this.push(null);
        return;
      }
      const n = Math.min(step, end - at);
      const chunk = Buffer.from(f.data.subarray(at, at + n));
      at += n;
      this.push(chunk);
    },
  });
}

/**
 * MemoryFile: an open file of a MemorySnapshotIo (node's FileHandle, the part
 * used): reads and writes at a position or at its own offset (position
 * null), EBADF once closed or when written while opened for reading.
 * wallNow stamps mtimes; syncFile makes its bytes durable.
 */
class MemoryFile implements SnapshotFile {
  private position = 0;
  private closed = false;

  constructor(
    private readonly node: TreeNode,
    private readonly path: string,
    private readonly writable: boolean,
    private readonly wallNow: () => number,
    private readonly syncFile: (node: TreeNode, path: string, data?: 'data') => void,
  ) {}

  private check(syscall: string): void {
    if (this.closed) throw fsError('EBADF', syscall, this.path);
  }

  private file(syscall: string): FileNode {
    this.check(syscall);
    if (this.node.kind !== 'file') throw fsError('EISDIR', syscall, this.path);
    return this.node;
  }

  private writeAt(f: FileNode, bytes: Uint8Array, at: number): void {
    if (!this.writable) throw fsError('EBADF', 'write', this.path);
    const end = at + bytes.length;
    if (f.shared) {
      // `synced` is a view of data: this write goes to a copy of it (what was synced stays as it was)
      const own = Buffer.allocUnsafe(Math.max(end, f.size));
      f.data.copy(own, 0, 0, f.size);
      f.data = own;
      f.shared = false;
    }
    if (end > f.data.length) {
      // Not zero-filled, and no larger than this write needs when it is the file's first: nothing past f.size is
      // ever read (a gap written past the end is zeroed below). A 4 KiB zero-filled buffer for each small file
      // (a snapshot's meta.json, chunk hashes, member table) was outside Node's pool and a cost of its GC.
      const grown = Buffer.allocUnsafe(Math.max(end, f.data.length * 2));
      f.data.copy(grown, 0, 0, f.size);
      f.data = grown;
    }
    if (at > f.size) f.data.fill(0, f.size, at);
    f.data.set(bytes, at);
    f.size = Math.max(f.size, end);
    f.mtimeMs = this.wallNow();
    f.dirty = true;
  }

  read(buffer: Uint8Array, offset: number, length: number, at: number): Promise<{ bytesRead: number }> {
    return RESOLVED.then(() => {
      const f = this.file('read');
      const n = Math.max(0, Math.min(length, f.size - at));
      if (n > 0) buffer.set(f.data.subarray(at, at + n), offset);
      return { bytesRead: n };
    });
  }

  write(buffer: Uint8Array, offset: number, length: number, at: number | null): Promise<{ bytesWritten: number }> {
    return RESOLVED.then(() => {
      const f = this.file('write');
      const start = at ?? this.position;
      this.writeAt(f, buffer.subarray(offset, offset + length), start);
      if (at === null) this.position = start + length;
      return { bytesWritten: length };
    });
  }

  writev(buffers: Uint8Array[], at?: number): Promise<{ bytesWritten: number }> {
    return RESOLVED.then(() => {
      const f = this.file('writev');
      let start = at ?? this.position;
      let n = 0;
      for (const b of buffers) {
        this.writeAt(f, b, start);
        start += b.length;
        n += b.length;
      }
      if (at === undefined) this.position = start;
      return { bytesWritten: n };
    });
  }

  stat(): Promise<{ readonly size: number; isFile(): boolean }> {
    return RESOLVED.then(() => {
      this.check('fstat');
      return statOf(this.node);
    });
  }

  sync(): Promise<void> {
    return RESOLVED.then(() => {
      this.check('fsync');
      this.syncFile(this.node, this.path);
    });
  }

  /** datasync: as sync() here (a file's bytes and size are all it has); counted in datasyncs, not syncs. */
  datasync(): Promise<void> {
    return RESOLVED.then(() => {
      this.check('fdatasync');
      this.syncFile(this.node, this.path, 'data');
    });
  }

  chmod(mode: number): Promise<void> {
    return RESOLVED.then(() => {
      this.check('fchmod');
      this.node.mode = mode;
    });
  }

  close(): Promise<void> {
    return RESOLVED.then(() => {
      this.check('close');
      this.closed = true;
    });
  }

  createReadStream(options: FileReadStreamOptions): Readable {
    return streamOf(() => this.file('read'), options);
  }
}

export class MemorySnapshotIo implements SnapshotIo {
  private readonly nodes = new Map<string, TreeNode>([['/', { kind: 'dir', children: new Set(), mode: 0o755, mtimeMs: 0, synced: new Map() }]]);
  /** freeBytes: what statfs reports free (the owner may change it). */
  freeBytes = 1024 ** 4;
  /** syncs: sync() calls on files and directories (a count the tests may read). */
  syncs = 0;
  /** datasyncs: datasync() calls on files. */
  datasyncs = 0;
  /** names: uniqueName() calls so far. */
  private names = 0;

  /** syncFile: an open file's sync() (counted in syncs) or datasync() (in datasyncs), handed to each MemoryFile. */
  private readonly syncFile = (node: TreeNode, path: string, data?: 'data'): void => {
    if (data === 'data') this.datasyncs++;
    else this.syncs++;
    this.syncNode(node, path);
  };

  /** wallNow: the wall clock (ms since the epoch) the owner gives; default a fixed date. */
  constructor(private readonly wallNow: () => number = () => Date.UTC(2026, 0, 1)) {}

  wallNowMs(): number {
    return this.wallNow();
  }

  /** uniqueName: `u` and a count of this disk's calls (deterministic: a replayed seed names its files alike). */
  uniqueName(): string {
    return `u${(++this.names).toString().padStart(8, '0')}`;
  }

  /** yieldTurn: a microtask (a simulator's time and turns are its own). */
  yieldTurn(): Promise<void> {
    return Promise.resolve();
  }

  /** bytesStored: the bytes of every file in the tree. */
  bytesStored(): number {
    let n = 0;
    for (const x of this.nodes.values()) if (x.kind === 'file') n += x.size;
    return n;
  }

  private norm(path: string): string {
    // Most paths the store passes are absolute and normal already (no empty, '.' or '..' segment, no trailing '/').
    return isNormalPath(path) ? path : posix.resolve('/', path);
  }

  private get(path: string, syscall: string): TreeNode {
    const node = this.nodes.get(this.norm(path));
    if (node === undefined) throw fsError('ENOENT', syscall, path);
    return node;
  }

  private parentDir(path: string, syscall: string): DirNode {
    const p = this.nodes.get(parentOf(this.norm(path)));
    if (p === undefined) throw fsError('ENOENT', syscall, path);
    if (p.kind !== 'dir') throw fsError('ENOTDIR', syscall, path);
    return p;
  }

  private link(path: string, node: TreeNode, syscall: string): void {
    const p = this.norm(path);
    this.parentDir(p, syscall).children.add(nameOf(p));
    this.nodes.set(p, node);
  }

  private unlinkNode(path: string): void {
    const p = this.norm(path);
    const parent = this.nodes.get(parentOf(p));
    if (parent?.kind === 'dir') parent.children.delete(nameOf(p));
    const node = this.nodes.get(p);
    this.nodes.delete(p);
    if (node?.kind === 'dir') for (const c of node.children) this.unlinkNode(childPath(p, c));
  }

  private openSync(path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode: number): SnapshotFile {
    const p = this.norm(path);
    let node = this.nodes.get(p);
    if (flags === 'r') {
      if (node === undefined) throw fsError('ENOENT', 'open', path);
    } else {
      if (node !== undefined && flags !== 'w') throw fsError('EEXIST', 'open', path);
      if (node?.kind === 'dir') throw fsError('EISDIR', 'open', path);
      if (node === undefined) {
        node = { kind: 'file', data: Buffer.alloc(0), size: 0, mode, mtimeMs: this.wallNow(), synced: Buffer.alloc(0), dirty: false, shared: false };
        this.link(p, node, 'open');
      } else {
        node.size = 0;
        node.dirty = true;
      }
    }
    return new MemoryFile(node, path, flags !== 'r', this.wallNow, this.syncFile);
  }

  /** syncNode makes a file's bytes, or a directory's entries, durable. */
  private syncNode(node: TreeNode, path: string): void {
    if (node.kind === 'file') {
      node.synced = node.data.subarray(0, node.size);
      node.shared = true;
      node.dirty = false;
      return;
    }
    node.synced = this.entriesOf(node, this.norm(path));
  }

  /** entriesOf: the entries of the directory at path p, name -> node. */
  private entriesOf(dir: DirNode, p: string): Map<string, TreeNode> {
    const out = new Map<string, TreeNode>();
    for (const c of dir.children) {
      const n = this.nodes.get(childPath(p, c));
      if (n !== undefined) out.set(c, n);
    }
    return out;
  }

  /**
   * loseUnsynced: a power loss. Each file written since its last sync() goes
   * back to its synced bytes, and each directory whose entries changed since
   * its last sync() goes back to its synced entries (a rename, creation or
   * removal not followed by an fsync of the directory is undone), unless
   * `keep(what)` says that write had reached the disk anyway. What is left is
   * durable. Returns the writes and directories taken back.
   */
  loseUnsynced(keep: (what: string) => boolean): string[] {
    const lost: string[] = [];
    const rebuilt = new Map<string, TreeNode>();
    const pathOf = new Map<TreeNode, string>([...this.nodes].map(([p, n]) => [n, p]));
    const visit = (p: string, node: TreeNode): void => {
      if (node.kind === 'file') {
        let data = node.data.subarray(0, node.size);
        if (node.dirty && !node.synced.equals(data) && !keep(`the bytes of ${p}`)) {
          lost.push(`the bytes of ${p}`);
          data = node.synced;
        }
        const bytes = Buffer.from(data);
        rebuilt.set(p, { kind: 'file', data: bytes, size: bytes.length, mode: node.mode, mtimeMs: node.mtimeMs, synced: Buffer.from(bytes), dirty: false, shared: false });
        return;
      }
      // Its entries now (a directory reached by a synced entry may live elsewhere now, or be removed: then its synced ones).
      const at = pathOf.get(node);
      let entries = at === undefined ? new Map(node.synced ?? []) : this.entriesOf(node, at);
      if (!sameEntries(entries, node.synced) && !keep(`the entries of ${p}`)) {
        lost.push(`the entries of ${p}`);
        entries = node.synced ?? new Map();
      }
      const dir: DirNode = { kind: 'dir', children: new Set(entries.keys()), mode: node.mode, mtimeMs: node.mtimeMs, synced: null };
      rebuilt.set(p, dir);
      for (const [c, child] of entries) visit(childPath(p, c), child);
      dir.synced = new Map([...dir.children].map((c) => [c, rebuilt.get(childPath(p, c)) as TreeNode]));
    };
    visit('/', this.nodes.get('/') as TreeNode);
    this.nodes.clear();
    for (const [p, n] of rebuilt) this.nodes.set(p, n);
    return lost;
  }

  /** filePaths: the path of every file in the tree, sorted. */
  filePaths(): string[] {
    return [...this.nodes].filter(([, n]) => n.kind === 'file').map(([p]) => p).sort();
  }

  /** fileSize: the size of the file at path (0 when there is none). */
  fileSize(path: string): number {
    const n = this.nodes.get(this.norm(path));
    return n?.kind === 'file' ? n.size : 0;
  }

  /** flipBit: one bit of a stored file flips on the platter (its cached and its durable bytes): a corrupt disk. */
  flipBit(path: string, byteAt: number, bit: number): void {
    const n = this.nodes.get(this.norm(path));
    if (n?.kind !== 'file' || byteAt >= n.size) throw new Error(`flipBit: no byte ${byteAt} in ${path}`);
    n.data[byteAt] = (n.data[byteAt] as number) ^ (1 << bit);
    // (a synced view of data flipped with it: once)
    if (!n.shared && byteAt < n.synced.length) n.synced[byteAt] = (n.synced[byteAt] as number) ^ (1 << bit);
  }

  open(path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode = 0o666): Promise<SnapshotFile> {
    return RESOLVED.then(() => this.openSync(path, flags, mode));
  }

  createReadStream(path: string, options: FileReadStreamOptions): Readable {
    return streamOf(() => {
      const node = this.get(path, 'open');
      if (node.kind !== 'file') throw fsError('EISDIR', 'read', path);
      return node;
    }, options);
  }

  readFile(path: string): Promise<Buffer> {
    return RESOLVED.then(() => {
      const node = this.get(path, 'open');
      if (node.kind !== 'file') throw fsError('EISDIR', 'read', path);
      return Buffer.from(node.data.subarray(0, node.size));
    });
  }

  readdir(path: string): Promise<DirEntry[]> {
    return RESOLVED.then(() => {
      const node = this.get(path, 'scandir');
      if (node.kind !== 'dir') throw fsError('ENOTDIR', 'scandir', path);
      const p = this.norm(path);
      return [...node.children].sort().map((name) => {
        const child = this.nodes.get(childPath(p, name));
        return { name, isDirectory: () => child?.kind === 'dir' };
      });
    });
  }

  rename(from: string, to: string): Promise<void> {
    return RESOLVED.then(() => {
      const src = this.norm(from);
      const dst = this.norm(to);
      const node = this.get(src, 'rename');
      if (src === dst) return;
      this.parentDir(dst, 'rename');
      const existing = this.nodes.get(dst);
      if (existing !== undefined) {
        if (existing.kind === 'dir' && node.kind !== 'dir') throw fsError('EISDIR', 'rename', to);
        if (existing.kind !== 'dir' && node.kind === 'dir') throw fsError('ENOTDIR', 'rename', to);
        if (existing.kind === 'dir' && existing.children.size > 0) throw fsError('ENOTEMPTY', 'rename', to);
        this.unlinkNode(dst);
      }
      // Move the node and every descendant under its new name.
      const moved: [string, TreeNode][] = [];
      const collect = (p: string, n: TreeNode): void => {
        moved.push([p, n]);
        if (n.kind === 'dir') for (const c of n.children) collect(childPath(p, c), this.nodes.get(childPath(p, c)) as TreeNode);
      };
      collect(src, node);
      const parent = this.nodes.get(parentOf(src));
      if (parent?.kind === 'dir') parent.children.delete(nameOf(src));
      for (const [p] of moved) this.nodes.delete(p);
      for (const [p, n] of moved) this.nodes.set(dst + p.slice(src.length), n);
      (this.nodes.get(parentOf(dst)) as DirNode).children.add(nameOf(dst));
    });
  }

  rm(path: string, options: { readonly recursive?: boolean; readonly force?: boolean }): Promise<void> {
    return RESOLVED.then(() => {
      const node = this.nodes.get(this.norm(path));
      if (node === undefined) {
        if (options.force === true) return;
        throw fsError('ENOENT', 'rm', path);
      }
      if (node.kind === 'dir' && options.recursive !== true) throw fsError('EISDIR', 'rm', path);
      this.unlinkNode(path);
    });
  }

  unlink(path: string): Promise<void> {
    return RESOLVED.then(() => {
      const node = this.get(path, 'unlink');
      if (node.kind === 'dir') throw fsError('EISDIR', 'unlink', path);
      this.unlinkNode(path);
    });
  }

  mkdir(path: string, options: { readonly recursive?: boolean; readonly mode?: number }): Promise<void> {
    return RESOLVED.then(() => {
      const p = this.norm(path);
      const existing = this.nodes.get(p);
      if (existing !== undefined) {
        if (options.recursive === true && existing.kind === 'dir') return;
        throw fsError('EEXIST', 'mkdir', path);
      }
      if (options.recursive === true && !this.nodes.has(parentOf(p))) {
        const parts = p.split('/').filter((x) => x !== '');
        let at = '/';
        for (const part of parts.slice(0, -1)) {
          at = childPath(at, part);
          const n = this.nodes.get(at);
          if (n === undefined) this.link(at, { kind: 'dir', children: new Set(), mode: options.mode ?? 0o777, mtimeMs: this.wallNow(), synced: null }, 'mkdir');
          else if (n.kind !== 'dir') throw fsError('ENOTDIR', 'mkdir', path);
        }
      }
      this.link(p, { kind: 'dir', children: new Set(), mode: options.mode ?? 0o777, mtimeMs: this.wallNow(), synced: null }, 'mkdir');
    });
  }

  chmod(path: string, mode: number): Promise<void> {
    return RESOLVED.then(() => {
      this.get(path, 'chmod').mode = mode;
    });
  }

  stat(path: string): Promise<FileStat> {
    return RESOLVED.then(() => statOf(this.get(path, 'stat')));
  }

  statfs(path: string): Promise<{ readonly bavail: number; readonly bsize: number }> {
    return RESOLVED.then(() => {
      this.get(path, 'statfs');
      return { bavail: Math.floor(this.freeBytes / 4096), bsize: 4096 };
    });
  }

  gzip(block: Uint8Array, options: ZlibOptions): Promise<Buffer> {
    return RESOLVED.then(() => gzipReused(block, options));
  }

  gunzip(bytes: Uint8Array, options: ZlibOptions): Promise<Buffer> {
    return RESOLVED.then(() => gunzipSync(bytes, { ...options, chunkSize: inflateChunkBytes(bytes.length, options) }));
  }

  createGunzip(options: ZlibOptions): Transform & { readonly bytesWritten: number } {
    return new MemoryGunzip(options);
  }

  createInflateRaw(options: ZlibOptions): Transform & { readonly bytesWritten: number } {
    return new MemoryInflateRaw(options);
  }
}

/** sameEntries: whether a directory's entries are its synced ones (same names, same nodes). */
function sameEntries(now: ReadonlyMap<string, TreeNode>, synced: ReadonlyMap<string, TreeNode> | null): boolean {
  if (synced === null) return now.size === 0;
  if (now.size !== synced.size) return false;
  for (const [c, n] of now) if (synced.get(c) !== n) return false;
  return true;
}

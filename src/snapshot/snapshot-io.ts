/**
 * SnapshotIo: the edges of the machine the snapshot layer touches, passed in
 * so that a simulator can run the real store, archive code and snapshot
 * manager with no real IO: the file system (the calls the store, the sinks,
 * the archive reader and writer and the chunk reader make), gzip (zlib on
 * libuv's threadpool, whose completion order is real time) and the wall
 * clock (createdAt of new snapshots, mtimes). nodeSnapshotIo is the real one
 * (node:fs, node:zlib, Date); a twin in memory is memory-snapshot-io.ts.
 *
 * The file system part is the subset of node:fs/promises the snapshot code
 * uses, with its semantics: errors carry Node's errno `code` (ENOENT, EEXIST,
 * ENOTDIR, ENOTEMPTY, ...), open flags are 'r', 'w', 'wx' and 'wx+'.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, open, readFile, readdir, rename, rm, stat, statfs, unlink } from 'node:fs/promises';
import type { Readable, Transform } from 'node:stream';
import { createGunzip, createInflateRaw, gunzip, gzip, type ZlibOptions } from 'node:zlib';

/** FileReadStreamOptions: a byte range (end inclusive) of a file to stream. */
export interface FileReadStreamOptions {
  readonly start?: number;
  readonly end?: number;
  readonly highWaterMark?: number;
  /** autoClose false: the stream leaves its file handle open when it ends. */
  readonly autoClose?: boolean;
}

/** SnapshotFile: an open file (node's FileHandle, the part used). position null: at the file's current offset. */
export interface SnapshotFile {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buffer: Uint8Array, offset: number, length: number, position: number | null): Promise<{ bytesWritten: number }>;
  writev(buffers: Uint8Array[], position?: number): Promise<{ bytesWritten: number }>;
  stat(): Promise<{ readonly size: number; isFile(): boolean }>;
  sync(): Promise<void>;
  /** datasync: fdatasync (the data written so far, and the size, on the disk; an ArchiveSink's background writeback). */
  datasync(): Promise<void>;
  chmod(mode: number): Promise<void>;
  close(): Promise<void>;
  createReadStream(options: FileReadStreamOptions): Readable;
}

/** FileStat: what the snapshot code reads of a stat. */
export interface FileStat {
  readonly size: number;
  readonly mtimeMs: number;
  isDirectory(): boolean;
  isFile(): boolean;
}

/** DirEntry: one name of readdir(withFileTypes). */
export interface DirEntry {
  readonly name: string;
  isDirectory(): boolean;
}

export interface SnapshotIo {
  open(path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number): Promise<SnapshotFile>;
  createReadStream(path: string, options: FileReadStreamOptions): Readable;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<DirEntry[]>;
  rename(from: string, to: string): Promise<void>;
  rm(path: string, options: { readonly recursive?: boolean; readonly force?: boolean }): Promise<void>;
  unlink(path: string): Promise<void>;
  mkdir(path: string, options: { readonly recursive?: boolean; readonly mode?: number }): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  stat(path: string): Promise<FileStat>;
  /** statfs: free blocks for the unprivileged (bavail) and the block size of the file system holding path. */
  statfs(path: string): Promise<{ readonly bavail: number; readonly bsize: number }>;
  /** gzip compresses `block` as one complete gzip member. */
  gzip(block: Uint8Array, options: ZlibOptions): Promise<Buffer>;
  /** gunzip decompresses a whole gzip stream held in memory (options.maxOutputLength bounds its output). */
  gunzip(bytes: Uint8Array, options: ZlibOptions): Promise<Buffer>;
  /** createGunzip: a Transform from a (multi-member) gzip stream to its bytes; `bytesWritten` counts the compressed bytes it consumed. */
  createGunzip(options: ZlibOptions): Transform & { readonly bytesWritten: number };
  /**
   * createInflateRaw: a Transform from raw deflate data to its bytes (one
   * deflate stream); at the stream's end, with input left over, it ends its
   * output, and `bytesWritten` counts the input it consumed (MemberGunzip).
   */
  createInflateRaw(options: ZlibOptions): Transform & { readonly bytesWritten: number };
  /** wallNowMs: milliseconds since the epoch (a date: snapshot createdAt, quarantine names). */
  wallNowMs(): number;
  /**
   * uniqueName: a name part (letters, digits and '-') that no earlier call on
   * this disk returned, for temporary files (real: a random UUID; the twin in
   * memory counts, so a simulated seed names its files alike at every replay).
   */
  uniqueName(): string;
  /**
   * yieldTurn resolves on a later turn, after the work already due (real:
   * setImmediate, after this turn's I/O callbacks): a long piece of work on
   * the main thread (a delta's merge) lets the node's requests run between
   * its pieces.
   */
  yieldTurn(): Promise<void>;
}

/** nodeSnapshotIo: the real SnapshotIo (node:fs/promises, node:zlib on the threadpool, Date.now). */
export const nodeSnapshotIo: SnapshotIo = {
  open: (path, flags, mode) => open(path, flags, mode),
  createReadStream: (path, options) => createReadStream(path, options),
  readFile: (path) => readFile(path),
  readdir: (path) => readdir(path, { withFileTypes: true }),
  rename: (from, to) => rename(from, to),
  rm: (path, options) => rm(path, options),
  unlink: (path) => unlink(path),
  mkdir: async (path, options) => {
    await mkdir(path, options);
  },
  chmod: (path, mode) => chmod(path, mode),
  stat: (path) => stat(path),
  statfs: (path) => statfs(path),
  gzip: (block, options) =>
    new Promise<Buffer>((resolve, reject) => {
      gzip(block, options, (err, out) => {
        if (err) reject(err);
        else resolve(out);
      });
    }),
  gunzip: (bytes, options) =>
    new Promise<Buffer>((resolve, reject) => {
      gunzip(bytes, options, (err, out) => {
        if (err) reject(err);
        else resolve(out);
      });
    }),
  createGunzip: (options) => createGunzip(options),
  createInflateRaw: (options) => createInflateRaw(options),
  wallNowMs: () => Date.now(),
  uniqueName: () => randomUUID(),
  yieldTurn: () => new Promise<void>((resolve) => setImmediate(resolve)),
};

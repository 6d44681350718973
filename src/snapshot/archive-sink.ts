/**
 * The one write path of snapshot archive bytes (hashicorp/raft's SnapshotSink,
 * done once): ArchiveSink writes an archive into a new file of the snapshot
 * store's temporary directory, each byte once, and hashes it once while it
 * is written: the whole archive's SHA-256 and the SHA-256 of each
 * CHUNK_HASH_BYTES chunk (what a server sends beside each chunk of a
 * FetchSnapshot stream). It fsyncs once at the end. The store then records
 * the hashes beside the archive (chunks.sha256, see encodeChunkHashes) and
 * renames the directory into place.
 *
 * Creation (writeArchive's gzip output), restore uploads (a stream) and
 * follower fetches (verified chunks, writeChunk) all go through it.
 */
import { createHash, type Hash } from 'node:crypto';
import { Writable } from 'node:stream';

import { SnapshotStoreError } from './errors.js';
import { FILE_MODE, withPath } from './file-sink.js';
import { sha256 } from '../hash/sha256.js';
import { nodeSnapshotIo, type SnapshotFile, type SnapshotIo } from './snapshot-io.js';

/** CHUNK_HASH_BYTES: the chunk size whose SHA-256s are recorded beside every stored archive (the transfer default). */
export const CHUNK_HASH_BYTES = 1024 * 1024;
/**
 * RELEASE_AFTER_WRITE marks a Buffer written to an ArchiveSink (as a stream)
 * whose memory its producer reuses: its value, a function, is called once the
 * sink has written the Buffer's bytes to the file and holds nothing of it;
 * never when the write failed. A stream between them that copies or cuts the
 * Buffer passes on another object, without the mark: then it is never called
 * (the producer allocates anew). Only the sink calls it: any other Writable
 * may keep what it is given.
 */
export const RELEASE_AFTER_WRITE: unique symbol = Symbol.for('snapcoord.chunk.releaseAfterWrite') as never;

/** releaseAfterWrite calls a written Buffer's RELEASE_AFTER_WRITE, if it has one. */
function releaseAfterWrite(chunk: Uint8Array): void {
  (chunk as { [RELEASE_AFTER_WRITE]?: () => void })[RELEASE_AFTER_WRITE]?.();
}

/** WRITES_IN_FLIGHT: writeChunk writes that may be pending at once (disk writes overlap with receiving). */
const WRITES_IN_FLIGHT = 4;
/**
 * WRITEBACK_BYTES_DEFAULT: an ArchiveSink starts an fdatasync in the background each time this many
 * bytes have landed since the last one began (one at a time), so the disk writes the archive while
 * more of it arrives instead of all at the final fsync: the kernel starts writeback by itself only
 * past vm.dirty_background_ratio (10% of RAM, 2.2 GB here) or after 30 s, so a 1 GiB fetch used to
 * wait for the whole GiB at its end. Each byte still goes to the disk once; the final fsync is the
 * one that makes the archive durable. Measured (256 MiB written at 240 MB/s, then fsync): the final
 * fsync 156-227 ms alone, 25-30 ms with a datasync every 32 MiB; the writes no slower.
 */
export const WRITEBACK_BYTES_DEFAULT = 32 * 1024 * 1024;

/** SinkDigest: what an ArchiveSink measured while it wrote. */
export interface SinkDigest {
  /** archiveSha256: the whole archive's hex SHA-256 as hashed, or the claimed one (options.claimedSha256) when wholeVerified is false. */
  readonly archiveSha256: string;
  /** wholeVerified: archiveSha256 was computed from the bytes (false: only claimed; each chunk hash was still computed or checked). */
  readonly wholeVerified: boolean;
  readonly archiveBytes: number;
  /** chunkSha256s: the SHA-256 of each CHUNK_HASH_BYTES chunk, in order (the last may be shorter). */
  readonly chunkSha256s: readonly Uint8Array[];
}

/** SinkStats: counters of the bytes an ArchiveSink handed to the file system (tests count writes with it). */
export interface SinkStats {
  /** bytesWritten: bytes written to the file; equal to the archive's size when each was written once. */
  bytesWritten: number;
  /** writeCalls: write / writev system calls issued. */
  writeCalls: number;
  /** chunkHashesReused: chunk hashes taken from a verified transfer chunk instead of hashing again. */
  chunkHashesReused: number;
  /** wholeHashedBytes: bytes fed to the whole archive's SHA-256 (0 with a claimed digest). */
  wholeHashedBytes: number;
  /** writebackSyncs: background fdatasyncs started while writing (see WRITEBACK_BYTES_DEFAULT); the final fsync is not counted. */
  writebackSyncs: number;
}

export interface ArchiveSinkOptions {
  /** refuse (SnapshotStoreError `too-large`) an archive longer than this many bytes. */
  readonly maxBytes?: number;
  /** called just before the fsync at the end (a failpoint hook). */
  readonly beforeSync?: () => void;
  /**
   * claimedSha256, if given (hex), is reported as the archive's SHA-256 and
   * the whole archive is NOT hashed (digest().wholeVerified is false): a
   * fetch whose every chunk was checked against its sender's hash defers the
   * whole digest to the reader that must verify it anyway (the install; the
   * store marks such an archive unverified until then).
   */
  readonly claimedSha256?: string;
  /** io: the file system the archive is written to (default nodeSnapshotIo). */
  readonly io?: SnapshotIo;
  /** writebackBytes: start a background fdatasync each time this many bytes have landed (default WRITEBACK_BYTES_DEFAULT; 0: never). */
  readonly writebackBytes?: number;
}

async function writeAllAt(handle: SnapshotFile, chunk: Uint8Array, position: number): Promise<number> {
  let offset = 0;
  let calls = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, position + offset);
    offset += bytesWritten;
    calls++;
  }
  return calls;
}

/**
 * ArchiveSink is a Writable over a freshly created archive file (mode 0600,
 * refusing to overwrite). Stream writes (create, uploads) and writeChunk
 * (fetches) may not be mixed. It finishes only after the data has been
 * fsynced and the file closed; destroy() closes the file (the caller removes
 * the temporary directory). digest() gives the hashes once finished.
 */
export class ArchiveSink extends Writable {
  readonly stats: SinkStats = { bytesWritten: 0, writeCalls: 0, chunkHashesReused: 0, wholeHashedBytes: 0, writebackSyncs: 0 };
  /** bytes: bytes accepted so far (hashed; on disk or about to be). */
  bytes = 0;
  private readonly whole: Hash | null;
  private chunkHash: Hash | null = null;
  private inChunk = 0;
  private readonly chunkSha256s: Uint8Array[] = [];
  private readonly maxBytes: number;
  private handleClosed = false;
  private synced = false;
  private pending: Promise<void>[] = [];
  private pendingError: Error | null = null;
  private result: SinkDigest | null = null;
  private readonly writebackBytes: number;
  /** landedSinceWriteback: bytes written to the file since the last background fdatasync began. */
  private landedSinceWriteback = 0;
  /** writeback: the background fdatasync in flight, if any (never rejects: its error goes to pendingError). */
  private writeback: Promise<void> | null = null;

  private constructor(
    private readonly handle: SnapshotFile,
    readonly path: string,
    private readonly options: ArchiveSinkOptions,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.maxBytes = options.maxBytes ?? Number.MAX_SAFE_INTEGER;
    this.whole = options.claimedSha256 === undefined ? createHash('sha256') : null;
    this.writebackBytes = options.writebackBytes ?? WRITEBACK_BYTES_DEFAULT;
  }

  /** create opens `path` (which must not exist) with mode 0600 and returns a sink over it. */
  static async create(path: string, options: ArchiveSinkOptions = {}): Promise<ArchiveSink> {
    const handle = await (options.io ?? nodeSnapshotIo).open(path, 'wx', FILE_MODE);
    try {
      await handle.chmod(FILE_MODE); // whatever the umask
    } catch (err) {
      await handle.close();
      throw withPath(err, path);
    }
    return new ArchiveSink(handle, path, options);
  }

  /**
   * writeChunk writes one transfer chunk whose SHA-256 the caller has just
   * verified (`sha256`): hashed into the whole digest (unless claimedSha256
   * was given); when it is exactly
   * one aligned CHUNK_HASH_BYTES chunk its hash is recorded as is, else its
   * bytes are hashed into the chunk hashes. The disk write is queued (a few
   * at a time): the promise resolves once at most WRITES_IN_FLIGHT writes are
   * pending, and rejects with an earlier write's error. `data` must not be
   * changed afterwards (it is written as it is, not copied).
   */
  async writeChunk(data: Uint8Array, sha256?: Uint8Array): Promise<void> {
    if (this.pendingError !== null) throw this.pendingError;
    const at = this.account(data, sha256);
    const work = writeAllAt(this.handle, data, at).then(
      (calls) => {
        this.stats.writeCalls += calls;
        this.landed(data.length);
      },
      (err: unknown) => {
        this.pendingError ??= withPath(err, this.path);
      },
    );
    this.pending.push(work);
    if (this.pending.length >= WRITES_IN_FLIGHT) await this.pending.shift();
    if (this.pendingError !== null) throw this.pendingError;
  }

  /**
   * writePieces writes `pieces` one after the other, where the bytes before them end, in one writev (an archive's
   * members as a writer has them: writeArchiveFromMembers into the store's sink, with no stream between them):
   * each hashed once as writeChunk's are (the whole digest, the chunk hashes), the disk write queued as
   * writeChunk's (at most WRITES_IN_FLIGHT pending; rejects with an earlier write's error), and each piece's
   * RELEASE_AFTER_WRITE called once written. SnapshotStoreError `too-large` (nothing of them taken) past maxBytes.
   * The pieces must not be changed afterwards. Not to be mixed with stream writes.
   */
  async writePieces(pieces: readonly Uint8Array[]): Promise<void> {
    if (this.pendingError !== null) throw this.pendingError;
    let total = 0;
    for (const p of pieces) total += p.length;
    if (this.bytes + total > this.maxBytes) {
      throw new SnapshotStoreError('too-large', `the archive is larger than the limit of ${this.maxBytes} bytes`);
    }
    const at = this.bytes;
    for (const p of pieces) this.account(p);
    const work = this.writevAt(pieces, at, total).then(
      () => {
        for (const p of pieces) releaseAfterWrite(p);
      },
      (err: unknown) => {
        this.pendingError ??= withPath(err, this.path);
      },
    );
    this.pending.push(work);
    if (this.pending.length >= WRITES_IN_FLIGHT) await this.pending.shift();
    if (this.pendingError !== null) throw this.pendingError;
  }

  /** writevAt writes `buffers` (`total` bytes) at `at` with one writev, a rare partial one finished with plain writes; counted in stats. */
  private async writevAt(buffers: readonly Uint8Array[], at: number, total: number): Promise<void> {
    let bytesWritten: number;
    if (buffers.length === 1) {
      this.stats.writeCalls += await writeAllAt(this.handle, buffers[0] as Uint8Array, at);
      bytesWritten = total;
    } else {
      ({ bytesWritten } = await this.handle.writev(buffers as Uint8Array[], at));
      this.stats.writeCalls++;
      if (bytesWritten < total) {
        // rare partial writev: write whatever is left plainly.
        const rest = Buffer.concat(buffers).subarray(bytesWritten);
        this.stats.writeCalls += await writeAllAt(this.handle, rest, at + bytesWritten);
        bytesWritten = total;
      }
    }
    this.landed(bytesWritten);
  }

  /**
   * finishChunks ends a sink written with writeChunk or writePieces: waits for the pending
   * writes, fsyncs and closes the file, and returns the digest.
   */
  async finishChunks(): Promise<SinkDigest> {
    await Promise.all(this.pending.splice(0));
    if (this.pendingError !== null) throw this.pendingError;
    await this.syncAndClose().catch((err: unknown) => {
      throw withPath(err, this.path);
    });
    return this.digest();
  }

  /**
   * hashesWhole: the sink hashes the whole archive as it writes it (no claimedSha256): a writer streaming into it
   * takes digest().archiveSha256 instead of hashing every byte a second time (HashTap, archiveTap).
   */
  get hashesWhole(): boolean {
    return this.whole !== null;
  }

  /** digest: the hashes of everything written; only once the sink has finished (fsynced). */
  digest(): SinkDigest {
    if (!this.synced) throw new Error(`ArchiveSink ${this.path}: digest() before the sink finished`);
    if (this.result === null) {
      if (this.chunkHash !== null) this.chunkSha256s.push(this.chunkHash.digest());
      this.chunkHash = null;
      this.result =
        this.whole === null
          ? { archiveSha256: this.options.claimedSha256 ?? '', wholeVerified: false, archiveBytes: this.bytes, chunkSha256s: this.chunkSha256s }
          : { archiveSha256: this.whole.digest('hex'), wholeVerified: true, archiveBytes: this.bytes, chunkSha256s: this.chunkSha256s };
    }
    return this.result;
  }

  /** account hashes `data` (once) and returns the file offset it goes to. */
  private account(data: Uint8Array, knownSha256?: Uint8Array): number {
    const at = this.bytes;
    if (at + data.length > this.maxBytes) {
      throw new SnapshotStoreError('too-large', `the archive is larger than the limit of ${this.maxBytes} bytes`);
    }
    if (this.whole !== null) {
      this.whole.update(data);
      this.stats.wholeHashedBytes += data.length;
    }
    if (knownSha256 !== undefined && knownSha256.length === 32 && this.inChunk === 0 && data.length === CHUNK_HASH_BYTES) {
      this.chunkSha256s.push(knownSha256);
      this.stats.chunkHashesReused++;
    } else {
      let pos = 0;
      while (pos < data.length) {
        const take = Math.min(CHUNK_HASH_BYTES - this.inChunk, data.length - pos);
        this.chunkHash ??= createHash('sha256');
        this.chunkHash.update(pos === 0 && take === data.length ? data : data.subarray(pos, pos + take));
        this.inChunk += take;
        pos += take;
        if (this.inChunk === CHUNK_HASH_BYTES) {
          this.chunkSha256s.push(this.chunkHash.digest());
          this.chunkHash = null;
          this.inChunk = 0;
        }
      }
    }
    this.bytes += data.length;
    return at;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.pendingError !== null) {
      callback(this.pendingError);
      return;
    }
    let at: number;
    try {
      at = this.account(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    writeAllAt(this.handle, chunk, at).then(
      (calls) => {
        this.stats.writeCalls += calls;
        this.landed(chunk.length);
        releaseAfterWrite(chunk);
        callback();
      },
      (err: unknown) => callback(withPath(err, this.path)),
    );
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    if (this.pendingError !== null) {
      callback(this.pendingError);
      return;
    }
    const buffers = chunks.map((c) => c.chunk);
    let at: number;
    try {
      at = this.bytes;
      for (const b of buffers) this.account(b);
    } catch (err) {
      callback(err as Error);
      return;
    }
    const total = buffers.reduce((n, b) => n + b.length, 0);
    const work = (async () => {
      await this.writevAt(buffers, at, total);
      for (const b of buffers) releaseAfterWrite(b);
    })();
    work.then(
      () => callback(),
      (err: unknown) => callback(withPath(err, this.path)),
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.syncAndClose().then(
      () => callback(),
      (err: unknown) => callback(withPath(err, this.path)),
    );
  }

  /**
   * landed counts `n` bytes written to the file and starts a background
   * fdatasync once writebackBytes have landed since the last one began (one
   * in flight at a time). Its failure fails the sink (the next write, or the
   * finish), as a failed write does.
   */
  private landed(n: number): void {
    this.stats.bytesWritten += n;
    this.landedSinceWriteback += n;
    if (this.writebackBytes <= 0 || this.landedSinceWriteback < this.writebackBytes || this.writeback !== null || this.handleClosed) return;
    this.landedSinceWriteback = 0;
    this.stats.writebackSyncs++;
    this.writeback = this.handle.datasync().then(
      () => {
        this.writeback = null;
      },
      (err: unknown) => {
        this.writeback = null;
        this.pendingError ??= withPath(err, this.path);
      },
    );
  }

  private async syncAndClose(): Promise<void> {
    if (this.writeback !== null) await this.writeback;
    if (this.pendingError !== null) throw this.pendingError;
    this.options.beforeSync?.();
    await this.handle.sync();
    this.handleClosed = true;
    await this.handle.close();
    this.synced = true;
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const pending: Promise<void>[] = this.pending.splice(0);
    if (this.writeback !== null) pending.push(this.writeback);
    void Promise.all(pending).then(() => {
      if (this.handleClosed) {
        callback(error);
        return;
      }
      this.handleClosed = true;
      this.handle.close().then(
        () => callback(error),
        () => callback(error),
      );
    });
  }
}

/** CHUNK_FILE_MAGIC: the first bytes of a chunks.sha256 file (format version 1). */
const CHUNK_FILE_MAGIC = Buffer.from('SNAPCOORD-CHUNKS-1\n', 'latin1');
const CHUNK_FILE_HEADER_BYTES = CHUNK_FILE_MAGIC.length + 4 + 8 + 32 + 4;

/**
 * encodeChunkHashes serializes the hashes recorded beside an archive: magic,
 * u32be chunk size, u64be archive bytes, the archive's SHA-256, u32be count,
 * the chunk SHA-256s, then the SHA-256 of all of that (the file's own checksum).
 */
export function encodeChunkHashes(digest: SinkDigest, chunkBytes = CHUNK_HASH_BYTES): Buffer {
  const n = digest.chunkSha256s.length;
  const buf = Buffer.allocUnsafe(CHUNK_FILE_HEADER_BYTES + 32 * n + 32);
  let at = CHUNK_FILE_MAGIC.copy(buf, 0);
  at = buf.writeUInt32BE(chunkBytes, at);
  at = buf.writeBigUInt64BE(BigInt(digest.archiveBytes), at);
  at += Buffer.from(digest.archiveSha256, 'hex').copy(buf, at);
  at = buf.writeUInt32BE(n, at);
  for (const h of digest.chunkSha256s) at += Buffer.from(h.buffer, h.byteOffset, h.byteLength).copy(buf, at);
  sha256(buf.subarray(0, at)).copy(buf, at);
  return buf;
}

/**
 * decodeChunkHashes parses a chunks.sha256 file and checks it against the
 * archive it must describe (its size and SHA-256 as meta.json records them):
 * its own checksum, the chunk size, the count (ceil(bytes / chunk size)).
 * Throws Error saying what is wrong.
 */
export function decodeChunkHashes(buf: Buffer, expect: { readonly archiveSha256: string; readonly archiveBytes: number }): { chunkBytes: number; chunkSha256s: Uint8Array[] } {
  if (buf.length < CHUNK_FILE_HEADER_BYTES + 32) throw new Error(`it is ${buf.length} bytes, too short`);
  if (!buf.subarray(0, CHUNK_FILE_MAGIC.length).equals(CHUNK_FILE_MAGIC)) throw new Error('it does not start with its magic line');
  const body = buf.subarray(0, buf.length - 32);
  if (!sha256(body).equals(buf.subarray(buf.length - 32))) throw new Error('its own checksum does not match');
  let at = CHUNK_FILE_MAGIC.length;
  const chunkBytes = buf.readUInt32BE(at);
  at += 4;
  const bytes = Number(buf.readBigUInt64BE(at));
  at += 8;
  const sha = buf.subarray(at, at + 32).toString('hex');
  at += 32;
  const n = buf.readUInt32BE(at);
  at += 4;
  if (chunkBytes !== CHUNK_HASH_BYTES) throw new Error(`its chunk size is ${chunkBytes}, expected ${CHUNK_HASH_BYTES}`);
  if (bytes !== expect.archiveBytes || sha !== expect.archiveSha256) throw new Error('it describes another archive than meta.json does');
  if (n !== Math.ceil(bytes / chunkBytes) || body.length !== at + 32 * n) throw new Error(`it holds ${n} chunk hashes for ${bytes} bytes`);
  const chunkSha256s: Uint8Array[] = [];
  for (let i = 0; i < n; i++) chunkSha256s.push(Buffer.from(buf.subarray(at + 32 * i, at + 32 * (i + 1))));
  return { chunkBytes, chunkSha256s };
}

/**
 * The snapshot archive: the ONE format snapcoord writes and reads, for the
 * snapshot store, for GET/PUT /v1/operator/snapshot and for followers
 * fetching from a leader. A gzipped tar holding exactly, in this order:
 *
 *   meta.json    ArchiveMeta (archive-meta.ts), at most 64 KiB
 *   state.bin    the KV state as records (state-format.ts), meta.stateBytes long
 *   SHA256SUMS   "<hex>  meta.json\n<hex>  state.bin\n", at most 4 KiB
 *
 * Entries are plain ustar regular files: mode 0600, uid/gid 0, mtime =
 * meta.createdAt, no long names, so the same state and meta give the same
 * bytes. Everything streams with backpressure; no member but the two small
 * ones is ever held in memory, and gunzip output is capped (decompression
 * bombs).
 */
import { createHash } from 'node:crypto';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  ARCHIVE_MEMBERS,
  META_BYTES_MAX,
  META_NAME,
  STATE_NAME,
  SUMS_BYTES_MAX,
  SUMS_NAME,
  formatSums,
  parseArchiveMeta,
  parseSums,
  type ArchiveMeta,
} from './archive-meta.js';
import { archiveMetaBytes, archiveTap } from './archive-writer.js';
import { ArchiveError } from './errors.js';
import { GZIP_LEVEL_DEFAULT, ParallelGzip } from './parallel-gzip.js';
import { countStateKeys, scanStateRecords } from './state-format.js';
import { sha256Hex } from '../hash/sha256.js';
import { TAR_BLOCK_BYTES, decodeTarHeader, encodeTarHeader, isZeroBlock, tarPadding } from './tar-header.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';
import type { PiecePool } from './piece-pool.js';

export type { ArchiveMeta } from './archive-meta.js';
export {
  StateBlockEncoder,
  writeArchiveFromMembers,
  writeArchiveFromRecords,
  type ArchiveMemberTable,
  type StateMemberEntry,
  type StateMemberInfo,
  type RecordsArchiveMeta,
  type RecordsArchiveOptions,
  type RecordsArchiveResult,
  type StateRecordSource,
  type WriteArchiveResult,
} from './archive-writer.js';
import type { WriteArchiveResult } from './archive-writer.js';
export {
  GZIP_BLOCK_BYTES_DEFAULT,
  GZIP_LEVEL_DEFAULT,
  GzipMemberQueue,
  ParallelGzip,
  blockGzipChoice,
  type GzipChoice,
  gzipBlock,
  gzipInFlightDefault,
  gzipMember,
  type ParallelGzipOptions,
} from './parallel-gzip.js';

/** STATE_BYTES_MAX_DEFAULT: readArchive's default cap on meta.stateBytes (64 GiB). */
export const STATE_BYTES_MAX_DEFAULT = 64 * 1024 ** 3;
/** GUNZIP_SLACK_BYTES: gunzip output allowed beyond meta.stateBytes (and before meta.json is read): 1 MiB. */
export const GUNZIP_SLACK_BYTES = 1024 * 1024;
/** ARCHIVE_FILE_MODE: the mode of every tar entry. */
export const ARCHIVE_FILE_MODE = 0o600;

const STREAM_CHUNK_BYTES = 1024 * 1024;
/** STATE_PIECES_QUEUED_MAX: state.bin pieces (GUNZIP_CHUNK_BYTES at most) queued for readArchive's consumer when it reads them from a PiecePool. */
const STATE_PIECES_QUEUED_MAX = 8;
const ZLIB_CHUNK_BYTES = 64 * 1024;
/**
 * GUNZIP_CHUNK_BYTES: the output chunk of readArchive's gunzip (112 KiB), so
 * the largest piece of state.bin a consumer is handed. Each chunk is one
 * threadpool round trip and one callback: 200 MB of highly compressible state
 * gunzips in 229 ms of CPU with 64 KiB chunks and 78 ms with 1 MiB ones. But a
 * decoder's batch ends with its chunk, and an install's records are views that
 * pin their chunks while queued (the restore's snapshot copy, the write in
 * flight), and 1 MiB chunks die old: measured in one process with the nodes'
 * runtime settings (200k records of 1 KiB, a restore's install with its copy,
 * alternating), peak RSS over the start +74-81 MiB with 1 MiB chunks and
 * +39-42 MiB with 256 KiB ones (ArrayBuffers at most 56-63 against 19-23 MiB),
 * the upload check and the read alone +12-50 against +5 MiB; CPU no higher
 * (install with its copy 2.1-2.4 against 1.95-2.1 s, read alone 0.33-0.57
 * against 0.35-0.44 s).
 * Below glibc's mmap threshold, which a node fixes at 128 KiB
 * (NODE_MALLOC_ENV): each 256 KiB chunk was a fresh mapping, faulted in page
 * by page and unmapped when collected; a 112 KiB one comes from malloc's
 * heap, reused. Measured (issue 15: one process with the nodes' runtime
 * settings, a restore's install with its copy of 1M records of 1 KiB,
 * alternating, 3 pairs, load 9-10 on 2 cores): 576-626k page faults against
 * 401-419k, CPU (user + sys) 10.1-11.1 against 9.6-10.3 s, wall 17-22 against
 * 11-15 s.
 */
export const GUNZIP_CHUNK_BYTES = 112 * 1024;
const END_OF_ARCHIVE_BYTES = 2 * TAR_BLOCK_BYTES;

/** ArchiveWriteMeta: what the caller says about a snapshot; stateBytes is measured and stateKeys counted if absent. */
export type ArchiveWriteMeta = Omit<ArchiveMeta, 'stateBytes' | 'stateKeys' | 'formatVersion'> & {
  readonly stateKeys?: number;
};

export interface WriteArchiveOptions {
  /** gzip level 0-9 (default GZIP_LEVEL_DEFAULT, 1). */
  readonly gzipLevel?: number;
  /** tar bytes per gzip member (default 1 MiB; see parallel-gzip.ts). */
  readonly gzipBlockBytes?: number;
  /** gzip members compressed at once on the threadpool (default: the cores, at least 2). */
  readonly gzipInFlightMax?: number;
  /** per block, stored / Huffman only / deflate as a sample says (default true; parallel-gzip.ts blockGzipChoice). */
  readonly gzipAdaptive?: boolean;
  /** called after each chunk of state.bin is handed on, with bytes so far and the total. */
  readonly onStateProgress?: (streamedBytes: number, stateBytes: number) => void;
  /** io: the state file's file system and the compression (default nodeSnapshotIo). */
  readonly io?: SnapshotIo;
}




/**
 * writeArchive streams a snapshot archive into `out` (which it ends): meta.json
 * built from `meta` (stateBytes measured from `stateFile`, stateKeys taken
 * from meta or counted in a first pass over the file, which also validates its
 * records), then state.bin streamed from `stateFile` and hashed on the way,
 * then SHA256SUMS. The tar stream is compressed as independent gzip members of
 * 1 MiB of tar each, several at once on the threadpool (ParallelGzip): one
 * valid gzip stream. The archive's own SHA-256 and byte count are computed on the
 * gzip output as it is written. Memory stays flat whatever the size.
 * writeArchiveFromRecords (archive-writer.ts) builds the same format from
 * records without a state.bin file, overlapping iteration and compression.
 *
 * The tar needs each member's size before its bytes, which is why the state
 * arrives as a file (SnapshotStore.create writes it first) rather than as a
 * stream. Rejects with ArchiveError `bad-meta` for an invalid meta, `io` if
 * the file changes size under it, StateFormatError when counting finds a bad
 * record, or the error of `out`.
 */
export async function writeArchive(
  meta: ArchiveWriteMeta,
  stateFile: string,
  out: Writable,
  options: WriteArchiveOptions = {},
): Promise<WriteArchiveResult> {
  const io = options.io ?? nodeSnapshotIo;
  const handle = await io.open(stateFile, 'r');
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new ArchiveError('io', `state file ${stateFile} is not a regular file`);
    const stateBytes = stat.size;
    const stateKeys =
      meta.stateKeys ??
      (await countStateKeys(handle.createReadStream({ start: 0, autoClose: false, highWaterMark: STREAM_CHUNK_BYTES })));
    const { full, metaBytes } = archiveMetaBytes(meta, stateBytes, stateKeys);
    const mtimeSec = Math.floor(Date.parse(full.createdAt) / 1000);
    const stateHash = createHash('sha256');
    let stateSha256 = '';

    async function* tarBytes(): AsyncGenerator<Buffer> {
      yield encodeTarHeader({ name: META_NAME, size: metaBytes.length, mode: ARCHIVE_FILE_MODE, mtimeSec });
      yield Buffer.concat([metaBytes, tarPadding(metaBytes.length)]);
      yield encodeTarHeader({ name: STATE_NAME, size: stateBytes, mode: ARCHIVE_FILE_MODE, mtimeSec });
      let streamed = 0;
      if (stateBytes > 0) {
        const source = handle.createReadStream({
          start: 0,
          end: stateBytes - 1,
          autoClose: false,
          highWaterMark: STREAM_CHUNK_BYTES,
        });
        for await (const chunk of source as AsyncIterable<Buffer>) {
          streamed += chunk.length;
          stateHash.update(chunk);
          yield chunk;
          options.onStateProgress?.(streamed, stateBytes);
        }
      }
      if (streamed !== stateBytes) {
        throw new ArchiveError('io', `state file ${stateFile} shrank while being archived (${streamed} of ${stateBytes} bytes)`);
      }
      stateSha256 = stateHash.digest('hex');
      const sums = formatSums(sha256Hex(metaBytes), stateSha256);
      yield Buffer.concat([
        tarPadding(stateBytes),
        encodeTarHeader({ name: SUMS_NAME, size: sums.length, mode: ARCHIVE_FILE_MODE, mtimeSec }),
        sums,
        tarPadding(sums.length),
        Buffer.alloc(END_OF_ARCHIVE_BYTES),
      ]);
    }

    const { tap, sha256 } = archiveTap(out);
    await pipeline(
      Readable.from(tarBytes(), { objectMode: false, highWaterMark: STREAM_CHUNK_BYTES }),
      new ParallelGzip({
        level: options.gzipLevel ?? GZIP_LEVEL_DEFAULT,
        ...(options.gzipBlockBytes !== undefined ? { blockBytes: options.gzipBlockBytes } : {}),
        ...(options.gzipInFlightMax !== undefined ? { inFlightMax: options.gzipInFlightMax } : {}),
        ...(options.gzipAdaptive !== undefined ? { adaptive: options.gzipAdaptive } : {}),
        io,
      }),
      tap,
      out,
    );
    return { archiveSha256: sha256(), archiveBytes: tap.bytes, meta: full, stateSha256 };
  } finally {
    await handle.close();
  }
}

/** GzipHeadCheck refuses input that does not start like a gzip stream (`not-gzip`), and counts the bytes. */
export class GzipHeadCheck {
  bytes = 0;
  private head = Buffer.alloc(0);

  /** feed: the next input bytes; throws `not-gzip` when the first three are not 1f 8b 08. */
  feed(chunk: Buffer): void {
    if (this.bytes < 3) {
      this.head = Buffer.concat([this.head, chunk.subarray(0, 3 - this.head.length)]);
      const expected = [0x1f, 0x8b, 0x08];
      if (!this.head.every((b, i) => b === expected[i])) throw new ArchiveError('not-gzip', 'not a gzip stream (the first bytes are not 1f 8b 08)');
    }
    this.bytes += chunk.length;
  }

  /** end: the input ended; throws `not-gzip` when it was shorter than a gzip stream's start. */
  end(): void {
    if (this.bytes < 3) {
      throw new ArchiveError('not-gzip', this.bytes === 0 ? 'empty input, not a gzip stream' : `only ${this.bytes} bytes, not a gzip stream`);
    }
  }
}

/** GzipSniffer: a GzipHeadCheck in readArchive's pipeline. */
class GzipSniffer extends Transform {
  private readonly check = new GzipHeadCheck();

  get bytes(): number {
    return this.check.bytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.check.feed(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.check.end();
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }
}

type ReaderPhase = 'header' | 'member' | 'padding' | 'end';

interface PendingWrite {
  readonly chunk: Buffer;
  readonly pos: number;
  readonly callback: (error?: Error | null) => void;
}

/** ArchiveScanSink: where an ArchiveScan hands state.bin. */
export interface ArchiveScanSink {
  /** stateBegins: state.bin's header was read (its size is meta.stateBytes); meta.json was read and checked before. */
  stateBegins(meta: ArchiveMeta): void;
  /** statePiece: the next bytes of state.bin (a view of the input chunk); false asks the scan to stop after it. */
  statePiece(piece: Buffer): boolean;
  /** stateEnds: every byte of state.bin was handed on (its SHA-256 is final). */
  stateEnds(): void;
}

/**
 * ArchiveScan holds the rules of a snapshot archive's decompressed tar, driven
 * synchronously: count() each decompressed chunk (the gunzip cap), write() it
 * (parsing the tar, the entry rules and the member limits, keeping meta.json
 * and SHA256SUMS, which are small and bounded, and handing state.bin's bytes
 * to the sink, hashing them), finish() at the end (the end-of-archive blocks
 * and both hashes against SHA256SUMS). Every refusal is an ArchiveError,
 * thrown. readArchive's pipeline drives it through ArchiveReader (a Writable);
 * the install's read on its worker (install-read-job.ts) drives it with no
 * stream at all.
 */
export class ArchiveScan {
  private phase: ReaderPhase = 'header';
  private memberIndex = 0;
  private memberSize = 0;
  private readonly seen = new Set<string>();
  private readonly block = Buffer.alloc(TAR_BLOCK_BYTES);
  private blockBytes = 0;
  private remaining = 0;
  private parts: Buffer[] = [];
  private totalBytes = 0;
  private capBytes = GUNZIP_SLACK_BYTES;
  private zeroBytes = 0;
  private readonly stateHash = createHash('sha256');
  private sums: { meta: string; state: string } | null = null;
  private metaSha256 = '';
  meta: ArchiveMeta | null = null;
  stateSha256 = '';
  /** stateTarOffset: where state.bin's bytes begin in the tar (its header's end), once meta.json was read. */
  stateTarOffset = 0;

  constructor(
    private readonly stateBytesMax: number,
    /** hashState: false leaves state.bin unhashed and its SHA256SUMS line unchecked (ReadArchiveOptions.skipStateDigest). */
    private readonly hashState: boolean,
    private readonly sink: ArchiveScanSink,
  ) {}

  /** declaredStateSha256: state.bin's line of SHA256SUMS, once it was read ('' before). */
  get declaredStateSha256(): string {
    return this.sums?.state ?? '';
  }

  /** complete: every member and the end-of-archive blocks have been seen. */
  get complete(): boolean {
    return this.phase === 'end' && this.zeroBytes >= END_OF_ARCHIVE_BYTES;
  }

  /** count: `bytes` more decompressed bytes arrive; throws `too-large` past the cap (1 MiB before meta.json, then meta.stateBytes + 1 MiB). */
  count(bytes: number): void {
    this.totalBytes += bytes;
    if (this.totalBytes > this.capBytes) {
      throw new ArchiveError(
        'too-large',
        this.meta === null
          ? `more than ${this.capBytes} bytes decompressed before meta.json was read (decompression bomb?)`
          : `decompressed data exceeds meta.stateBytes + ${GUNZIP_SLACK_BYTES} = ${this.capBytes} bytes (decompression bomb?)`,
      );
    }
  }

  /**
   * write parses `chunk` from `pos` (counted before); returns where it stopped: chunk.length, or less when the
   * sink asked to stop inside state.bin (call again from there). Throws ArchiveError.
   */
  write(chunk: Buffer, pos: number): number {
    while (pos < chunk.length) {
      if (this.phase === 'member') {
        const n = Math.min(this.remaining, chunk.length - pos);
        const piece = chunk.subarray(pos, pos + n);
        pos += n;
        this.remaining -= n;
        if (this.memberIndex !== 1) {
          // meta.json and SHA256SUMS (at most 64 KiB and 4 KiB) are copied: the input's memory may be reused (PiecePool).
          this.parts.push(Buffer.from(piece));
          if (this.remaining === 0) this.endMember();
          continue;
        }
        if (this.hashState) this.stateHash.update(piece);
        const wantMore = this.sink.statePiece(piece);
        if (this.remaining === 0) this.endMember();
        else if (!wantMore) return pos;
      } else if (this.phase === 'padding') {
        const n = Math.min(this.remaining, chunk.length - pos);
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0) this.phase = this.memberIndex === ARCHIVE_MEMBERS.length ? 'end' : 'header';
      } else {
        const n = Math.min(TAR_BLOCK_BYTES - this.blockBytes, chunk.length - pos);
        chunk.copy(this.block, this.blockBytes, pos, pos + n);
        this.blockBytes += n;
        pos += n;
        if (this.blockBytes === TAR_BLOCK_BYTES) {
          this.blockBytes = 0;
          if (this.phase === 'header') this.startMember();
          else if (isZeroBlock(this.block)) this.zeroBytes += TAR_BLOCK_BYTES;
          else this.afterEnd();
        } else if (this.phase === 'end' && this.zeroBytes >= END_OF_ARCHIVE_BYTES && !isZeroBlock(this.block.subarray(0, this.blockBytes))) {
          throw new ArchiveError('trailing-garbage', 'data after the end of the tar');
        }
      }
    }
    return pos;
  }

  /** finish: the decompressed tar ended; throws ArchiveError unless it ended where an archive ends and both hashes check. */
  finish(): void {
    if (this.phase !== 'end') {
      const member = ARCHIVE_MEMBERS[this.memberIndex]!;
      if (this.phase === 'header' && this.blockBytes === 0) {
        throw new ArchiveError('missing-entry', `the tar ends before ${member}`);
      }
      throw new ArchiveError('truncated', `the tar ends inside ${this.phase === 'header' ? `the header of ${member}` : member}`);
    }
    if (this.blockBytes > 0 && !isZeroBlock(this.block.subarray(0, this.blockBytes))) {
      throw new ArchiveError('trailing-garbage', 'data after the end of the tar');
    }
    if (this.zeroBytes < END_OF_ARCHIVE_BYTES) {
      throw new ArchiveError('truncated', 'the tar ends without its end-of-archive blocks');
    }
    this.checkHashes();
  }

  /** afterEnd: a non-zero block after SHA256SUMS: another entry before the end blocks, or garbage after them. */
  private afterEnd(): void {
    if (this.zeroBytes >= END_OF_ARCHIVE_BYTES) throw new ArchiveError('trailing-garbage', 'data after the end of the tar');
    const h = decodeTarHeader(this.block);
    checkEntryName(h.name);
    if (this.seen.has(h.name)) throw new ArchiveError('duplicate-entry', `entry ${JSON.stringify(h.name)} appears twice`);
    throw new ArchiveError(
      'unexpected-entry',
      `unexpected entry ${JSON.stringify(h.name)} after ${SUMS_NAME} (the archive holds exactly ${ARCHIVE_MEMBERS.join(', ')})`,
    );
  }

  private startMember(): void {
    const expected = ARCHIVE_MEMBERS[this.memberIndex]!;
    if (isZeroBlock(this.block)) throw new ArchiveError('missing-entry', `the tar ends (end-of-archive block) before ${expected}`);
    const h = decodeTarHeader(this.block);
    checkEntryName(h.name);
    if (h.name !== expected) {
      if (this.seen.has(h.name)) throw new ArchiveError('duplicate-entry', `entry ${JSON.stringify(h.name)} appears twice`);
      throw new ArchiveError(
        'unexpected-entry',
        `unexpected entry ${JSON.stringify(h.name)} where ${expected} belongs (the archive holds exactly ${ARCHIVE_MEMBERS.join(', ')}, in that order)`,
      );
    }
    this.seen.add(h.name);
    if (expected === META_NAME && h.size > META_BYTES_MAX) {
      throw new ArchiveError('member-too-large', `meta.json is ${h.size} bytes, more than ${META_BYTES_MAX}`);
    }
    if (expected === SUMS_NAME && h.size > SUMS_BYTES_MAX) {
      throw new ArchiveError('member-too-large', `SHA256SUMS is ${h.size} bytes, more than ${SUMS_BYTES_MAX}`);
    }
    this.memberSize = h.size;
    this.remaining = h.size;
    this.parts = [];
    this.phase = 'member';
    if (expected === STATE_NAME) {
      const meta = this.meta!;
      if (h.size !== meta.stateBytes) {
        throw new ArchiveError('size-mismatch', `state.bin is ${h.size} bytes but meta.json says stateBytes ${meta.stateBytes}`);
      }
      this.sink.stateBegins(meta);
    }
    if (h.size === 0) this.endMember();
  }

  private endMember(): void {
    const name = ARCHIVE_MEMBERS[this.memberIndex]!;
    if (name === META_NAME) {
      const bytes = Buffer.concat(this.parts);
      this.metaSha256 = sha256Hex(bytes);
      this.stateTarOffset = 2 * TAR_BLOCK_BYTES + bytes.length + tarPadding(bytes.length).length;
      const meta = parseArchiveMeta(bytes);
      if (meta.stateBytes > this.stateBytesMax) {
        throw new ArchiveError('too-large', `meta.json says stateBytes ${meta.stateBytes}, more than the limit ${this.stateBytesMax}`);
      }
      this.meta = meta;
      this.capBytes = meta.stateBytes + GUNZIP_SLACK_BYTES;
    } else if (name === STATE_NAME) {
      this.stateSha256 = this.hashState ? this.stateHash.digest('hex') : '';
      this.sink.stateEnds();
    } else {
      this.sums = parseSums(Buffer.concat(this.parts));
    }
    this.parts = [];
    this.memberIndex += 1;
    this.remaining = tarPadding(this.memberSize).length;
    this.phase = this.remaining > 0 ? 'padding' : this.memberIndex === ARCHIVE_MEMBERS.length ? 'end' : 'header';
  }

  private checkHashes(): void {
    const sums = this.sums!;
    if (sums.meta !== this.metaSha256) {
      throw new ArchiveError('hash-mismatch', `meta.json SHA-256 is ${this.metaSha256} but SHA256SUMS says ${sums.meta}`);
    }
    if (this.hashState && sums.state !== this.stateSha256) {
      throw new ArchiveError('hash-mismatch', `state.bin SHA-256 is ${this.stateSha256} but SHA256SUMS says ${sums.state}`);
    }
  }
}

/**
 * ArchiveReader is the Writable end of readArchive's pipeline: an ArchiveScan
 * (the tar's rules, the gunzip cap, both hashes) whose state.bin goes into
 * the consumer's Readable with backpressure.
 */
class ArchiveReader extends Writable {
  private readonly scan: ArchiveScan;
  private pending: PendingWrite | null = null;
  private readRequested = false;
  /** stateFull: the state stream refused the last piece (its reader is behind): the input waits for its next read. */
  private stateFull = false;
  private state: Readable | null = null;
  private statePushed = false;
  /** failed: the pipeline failed (set before the consumer can observe it). */
  failed = false;

  constructor(
    stateBytesMax: number,
    hashState: boolean,
    onState: (meta: ArchiveMeta, state: Readable) => void,
    private readonly pool: PiecePool | null = null,
  ) {
    super({ highWaterMark: ZLIB_CHUNK_BYTES });
    this.scan = new ArchiveScan(stateBytesMax, hashState, {
      stateBegins: (meta) => {
        // With a pool, state.bin's pieces reach the consumer one by one, as they are (objectMode: a byte-mode read
        // would join the queued ones into a fresh Buffer), each counted as the consumer's until it releases it.
        const state =
          pool !== null
            ? new Readable({ objectMode: true, highWaterMark: STATE_PIECES_QUEUED_MAX, read: () => this.onStateRead() })
            : new Readable({ highWaterMark: STREAM_CHUNK_BYTES, read: () => this.onStateRead() });
        // a consumer that stops reading (destroys its stream) and succeeds: keep hashing, discard the rest.
        state.once('close', () => this.onStateRead());
        // errors reach the consumer through its reads and readArchive's rejection, never as an uncaught 'error'.
        state.on('error', () => undefined);
        this.state = state;
        onState(meta, state);
      },
      statePiece: (piece) => {
        const state = this.state!;
        if (state.destroyed) return true;
        this.readRequested = false;
        this.pool?.retain(piece);
        const more = state.push(piece) || this.readRequested || state.destroyed;
        this.stateFull = !more;
        return more;
      },
      stateEnds: () => {
        const state = this.state!;
        this.stateFull = false;
        this.statePushed = true;
        if (!state.destroyed) state.push(null);
      },
    });
  }

  get meta(): ArchiveMeta | null {
    return this.scan.meta;
  }

  get stateSha256(): string {
    return this.scan.stateSha256;
  }

  /** stateTarOffset: where state.bin's bytes begin in the tar (its header's end), once meta.json was read. */
  get stateTarOffset(): number {
    return this.scan.stateTarOffset;
  }

  /** declaredStateSha256: state.bin's line of SHA256SUMS, once it was read ('' before). */
  get declaredStateSha256(): string {
    return this.scan.declaredStateSha256;
  }

  /** complete: every member and the end-of-archive blocks have been seen. */
  get complete(): boolean {
    return this.scan.complete;
  }

  /** stateFullyPushed: every byte of state.bin has been handed to the consumer's stream. */
  get stateFullyPushed(): boolean {
    return this.statePushed;
  }

  /** stateStream: the Readable handed to the consumer, once state.bin has begun. */
  get stateStream(): Readable | null {
    return this.state;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.scan.count(chunk.length);
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.process({ chunk, pos: 0, callback });
  }

  override _final(callback: (error?: Error | null) => void): void {
    try {
      this.scan.finish();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (error !== null) this.failed = true;
    const state = this.state;
    // a state stream already fully pushed is left to its consumer to finish.
    if (state !== null && !this.statePushed && !state.destroyed) {
      state.destroy(error ?? new ArchiveError('truncated', 'the archive stream stopped inside state.bin'));
    }
    this.pending = null;
    callback(error);
  }

  private onStateRead(): void {
    this.readRequested = true;
    this.stateFull = false;
    const pending = this.pending;
    if (pending === null) return;
    this.pending = null;
    this.process(pending);
  }

  private process(work: PendingWrite): void {
    const { chunk, callback } = work;
    let pos: number;
    try {
      pos = this.scan.write(chunk, work.pos);
    } catch (err) {
      callback(err as Error);
      return;
    }
    // A chunk whose last piece filled the state stream is held too: its callback is the input's backpressure (called
    // at once, the gunzip went on and the stream queued everything the reader was behind by: 100-220 pieces of
    // 112 KiB in front of a restore's install, bench/install.ts).
    if (pos < chunk.length || this.stateFull) {
      this.pending = { chunk, pos, callback };
      return;
    }
    // Parsed whole: what of it is state.bin's the state stream's consumer holds (retained); the rest was copied.
    this.pool?.release(chunk);
    callback();
  }
}

/** checkEntryName refuses names that could point anywhere but a plain file in the current directory. */
function checkEntryName(name: string): void {
  const shown = JSON.stringify(name);
  if (name.length === 0) throw new ArchiveError('unsafe-path', 'an entry has an empty name');
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) {
    throw new ArchiveError('unsafe-path', `entry ${shown} is an absolute path`);
  }
  if (name === '.' || name.split(/[/\\]/).includes('..')) throw new ArchiveError('unsafe-path', `entry ${shown} climbs out with '..'`);
  if (name.includes('/') || name.includes('\\')) {
    throw new ArchiveError('unsafe-path', `entry ${shown} is not a plain file name (it contains a path separator)`);
  }
}

function toArchiveError(err: unknown, reader: ArchiveReader): unknown {
  if (err instanceof ArchiveError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    const message = (err as Error).message;
    if (code === 'Z_BUF_ERROR' || /unexpected end/i.test(message)) {
      return new ArchiveError('truncated', `the gzip stream ends early (${message})`, { cause: err });
    }
    // the sniffer checked the first member's magic and method: a header error is a second "member".
    if (reader.complete || /incorrect header check|unknown compression method/.test(message)) {
      return new ArchiveError('trailing-garbage', `data after the end of the gzip stream (${message})`, { cause: err });
    }
    return new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${message})`, { cause: err });
  }
  return err;
}

export interface ReadArchiveLimits {
  /** the largest meta.stateBytes accepted (default 64 GiB). */
  readonly stateBytesMax?: number;
  /** io: where the archive's file is read and gunzipped (default nodeSnapshotIo). */
  readonly io?: SnapshotIo;
}

/**
 * ReadArchiveOptions: the limits, and `skipStateDigest`: true leaves state.bin
 * unhashed and its line of SHA256SUMS unchecked (meta.json's is still
 * checked, every gzip member's CRC too). Only for a reader that checks the
 * archive's bytes another way, against hashes taken when bytes already
 * validated whole were stored (SnapshotHandle.createChunkCheckedReadStream:
 * the install of a restore's upload), or that this process hashed itself
 * (SnapshotHandle.createServedReadStream: a directory export, whose gzip CRCs
 * still catch damage since). One SHA-256 pass over the whole state fewer;
 * stateSha256 is then ''.
 */
export interface ReadArchiveOptions extends ReadArchiveLimits {
  readonly skipStateDigest?: boolean;
  /**
   * gunzip: the Transform that decompresses the input (default the io's
   * createGunzip); it must give the same bytes and count the compressed bytes
   * it consumed in `bytesWritten` (a MemberGunzip, which also reports where
   * each gzip member lies).
   */
  readonly gunzip?: Transform & { readonly bytesWritten: number };
  /**
   * pool: the PiecePool `gunzip` (a MemberGunzip) copies its output into. state.bin is then handed on in object
   * mode, piece by piece, each piece counted as the consumer's: it must release it (PiecePool.release) once it reads
   * it no more (decodeStateRecords' `release`); a piece it never releases is simply not reused.
   */
  readonly pool?: PiecePool;
}

/** StateWhere: where state.bin lies in the archive's tar (consume's fourth argument). */
export interface StateWhere {
  /** stateTarOffset: the tar offset of state.bin's first byte (the end of its tar header). */
  readonly stateTarOffset: number;
}

export interface ReadArchiveResult<T> {
  readonly meta: ArchiveMeta;
  readonly result: T;
  /** hex SHA-256 of state.bin, checked against SHA256SUMS ('' with skipStateDigest). */
  readonly stateSha256: string;
  /** declaredStateSha256: state.bin's line of SHA256SUMS (equal to stateSha256 unless skipStateDigest: then unchecked here). */
  readonly declaredStateSha256: string;
}

/**
 * readArchive reads a snapshot archive from `input` and hands state.bin to
 * `consume` as a stream (with backpressure: the archive is read only as fast
 * as the consumer reads the state). Returns once the whole archive has been
 * read and verified and `consume` has resolved.
 *
 * IMPORTANT: the consumer sees meta.json and the state bytes BEFORE the
 * hashes are checked (SHA256SUMS comes last, and nothing is held in memory).
 * readArchive rejects after `consume` resolves if a hash is wrong or anything
 * after state.bin is bad, so a consumer must write to a tentative place (a temp
 * file, a staging column family) and make it live only once readArchive has
 * resolved, discarding it when readArchive rejects.
 *
 * `verified` (consume's third argument) settles once the whole archive has
 * been read and checked (every hash, nothing after the end), before
 * readArchive itself resolves: it resolves then, or rejects with the reason
 * the archive was refused. A consumer that makes the state live only after
 * awaiting it (e.g. a source that awaits it after its last record) never
 * makes an unverified state live. It never rejects unhandled.
 *
 * If `consume` resolves without reading the whole state stream, the rest is
 * still read, hashed and discarded. If `consume` throws, readArchive rejects
 * with that error and destroys `input`. If the archive is refused while
 * `consume` runs, its state stream is destroyed with the ArchiveError, and
 * readArchive waits for `consume` to settle and rejects with the ArchiveError.
 *
 * Refuses with ArchiveError (see ArchiveErrorCode): not gzip; gunzip output
 * beyond 1 MiB before meta.json is read, then beyond meta.stateBytes + 1 MiB;
 * any entry but meta.json, state.bin, SHA256SUMS in that order, duplicates,
 * unsafe names, links, devices, directories, FIFOs, long-name extensions;
 * meta.json over 64 KiB or failing its schema; state.bin not meta.stateBytes
 * long or over `stateBytesMax`; SHA256SUMS over 4 KiB, malformed or missing a
 * line; a hash mismatch; a truncated stream; data after the tar or the gzip
 * stream. Errors of `input` itself are passed through.
 */
export async function readArchive<T>(
  input: Readable,
  consume: (meta: ArchiveMeta, state: Readable, verified: Promise<void>, where: StateWhere) => Promise<T>,
  limits: ReadArchiveOptions = {},
): Promise<ReadArchiveResult<T>> {
  const stateBytesMax = limits.stateBytesMax ?? STATE_BYTES_MAX_DEFAULT;
  if (!Number.isSafeInteger(stateBytesMax) || stateBytesMax < 0) {
    throw new RangeError(`readArchive: stateBytesMax must be a whole number >= 0, got ${stateBytesMax}`);
  }
  const run: { consumed: Promise<T> | null; failed: boolean; error: unknown } = { consumed: null, failed: false, error: undefined };
  let settleVerified: { resolve: () => void; reject: (err: unknown) => void } = { resolve: () => undefined, reject: () => undefined };
  const verified = new Promise<void>((resolve, reject) => {
    settleVerified = { resolve, reject };
  });
  verified.catch(() => undefined);
  const pool = limits.pool ?? null;
  if (pool !== null && limits.gunzip === undefined) throw new RangeError('readArchive: a pool needs the gunzip (a MemberGunzip) that fills it');
  const reader = new ArchiveReader(stateBytesMax, limits.skipStateDigest !== true, (meta, state) => {
    const consumed = (async () => consume(meta, state, verified, { stateTarOffset: reader.stateTarOffset }))();
    run.consumed = consumed;
    consumed.then(
      () => {
        // whatever the consumer left unread is still read (and hashed), then dropped.
        if (!state.readableEnded && !state.destroyed) state.resume();
      },
      (error: unknown) => {
        // a consumer failing because the archive was refused is not the root cause.
        if (!run.failed && !reader.failed) {
          run.failed = true;
          run.error = error;
        }
        const err = error instanceof Error ? error : new Error(String(error));
        input.destroy(err);
        // The input may have ended already (a small archive is read whole at once): destroying it then fails
        // nothing, and the reader, waiting for the state stream nobody reads any more to drain, would hold the
        // pipeline open for ever (readArchiveHead stops this way on every call). Failing the reader ends it.
        reader.destroy(err);
      },
    );
  }, pool);
  const sniffer = new GzipSniffer();
  const gunzip = limits.gunzip ?? (limits.io ?? nodeSnapshotIo).createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES });
  try {
    await pipeline(input, sniffer, gunzip, reader);
  } catch (err) {
    const archiveError = toArchiveError(err, reader);
    reader.failed = true;
    const state = reader.stateStream;
    if (state !== null && !reader.stateFullyPushed && !state.destroyed) {
      state.destroy(archiveError instanceof Error ? archiveError : new Error(String(archiveError)));
    }
    settleVerified.reject(run.failed ? run.error : archiveError);
    if (run.consumed !== null) await run.consumed.catch(() => undefined);
    if (!input.destroyed) input.destroy();
    // consume's failure, if any, caused the pipeline's.
    throw run.failed ? run.error : archiveError;
  }
  const trailing =
    gunzip.bytesWritten !== sniffer.bytes
      ? new ArchiveError('trailing-garbage', `${sniffer.bytes - gunzip.bytesWritten} bytes after the end of the gzip stream`)
      : run.consumed === null
        ? new ArchiveError('missing-entry', 'the archive has no state.bin')
        : null;
  if (trailing !== null) settleVerified.reject(trailing);
  else settleVerified.resolve();
  if (run.consumed === null) throw trailing;
  const result = await run.consumed;
  if (trailing !== null) throw trailing;
  return { meta: reader.meta!, result, stateSha256: reader.stateSha256, declaredStateSha256: reader.declaredStateSha256 };
}

export interface InspectResult {
  /** meta.json as read (before its hash was checked); null if the archive was refused before it. */
  readonly meta: ArchiveMeta | null;
  readonly archiveSha256: string;
  readonly archiveBytes: number;
  /** keys: the clients' keys in state.bin (records under the reserved prefix, e.g. client sessions, not counted). */
  readonly keys: number;
  /** reservedRecords: records under the store's reserved key prefix (client sessions, key revisions, ...); keys + reservedRecords = stateKeys. */
  readonly reservedRecords: number;
  /** sessionRecords: those of the reserved records under InspectOptions.sessionKeyPrefix (0 without it). */
  readonly sessionRecords: number;
  readonly ok: boolean;
  /** what is wrong, one sentence each; empty when ok. */
  readonly problems: string[];
}

/**
 * InspectOptions: the archive limits, `reservedKeyPrefix`, which tells the
 * store's own records (client sessions, key revisions: keys starting with it)
 * from the clients' keys, and `sessionKeyPrefix`, the client sessions' among
 * them. The archive format does not know what a key means: the caller (who
 * knows the state machine) passes the prefixes; without them every record
 * counts as a client key.
 */
export interface InspectOptions extends ReadArchiveLimits {
  readonly reservedKeyPrefix?: Uint8Array;
  readonly sessionKeyPrefix?: Uint8Array;
}

/**
 * inspectArchive reads the archive file at `path` through readArchive (every
 * rule, every hash), checks every record of state.bin (scanStateRecords, the
 * rules of checkedStateRecords: non-empty keys within the limits, strictly
 * increasing, count and size as meta.json declares) and hashes the whole file. Archive problems are reported in
 * `problems`, not thrown; a file that cannot be opened rejects with the
 * file-system error. Records whose key starts with options.reservedKeyPrefix
 * are counted in `reservedRecords`, the others in `keys`.
 */
export async function inspectArchive(path: string, options: InspectOptions = {}): Promise<InspectResult> {
  const { reservedKeyPrefix, sessionKeyPrefix, ...limits } = options;
  // One read: the file is hashed whole on its way into readArchive.
  const handle = await (options.io ?? nodeSnapshotIo).open(path, 'r');
  const tap = new ReadHashTap();
  try {
    const problems: string[] = [];
    let meta: ArchiveMeta | null = null;
    let keys = 0;
    let reservedRecords = 0;
    let sessionRecords = 0;
    try {
      const source = handle.createReadStream({ autoClose: false, highWaterMark: STREAM_CHUNK_BYTES });
      source.on('error', (err) => tap.destroy(err));
      await readArchive(
        source.pipe(tap),
        async (m, state) => {
          meta = m;
          try {
            const countPrefixes = [reservedKeyPrefix, sessionKeyPrefix].filter((p): p is Uint8Array => p !== undefined);
            const scan = await scanStateRecords(state, m, { countPrefixes });
            let i = 0;
            if (reservedKeyPrefix !== undefined) reservedRecords = scan.prefixed[i++] ?? 0;
            if (sessionKeyPrefix !== undefined) sessionRecords = scan.prefixed[i++] ?? 0;
            keys = scan.keys - reservedRecords;
          } catch (err) {
            if (err instanceof ArchiveError) throw err;
            problems.push(`state.bin: ${(err as Error).message}`);
          }
        },
        limits,
      );
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
    // A refused archive stops the read early: the rest of the file is hashed on its own.
    const rest = handle.createReadStream({ start: tap.bytes, autoClose: false, highWaterMark: STREAM_CHUNK_BYTES });
    for await (const chunk of rest as AsyncIterable<Buffer>) tap.update(chunk);
    return { meta, archiveSha256: tap.digest(), archiveBytes: tap.bytes, keys, reservedRecords, sessionRecords, ok: problems.length === 0, problems };
  } finally {
    await handle.close();
  }
}

/** ReadHashTap passes bytes through unchanged, counting them and feeding a SHA-256 (update() hashes bytes read apart). */
class ReadHashTap extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.update(chunk);
    callback(null, chunk);
  }

  update(chunk: Buffer): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

/** HEAD_STOP: readArchiveHead's consumer stops the read with it once meta.json is known. */
const HEAD_STOP = new Error('archive head read');

/**
 * readArchiveHead reads meta.json from the start of the archive file at
 * `path`: only as much of the file is read and gunzipped as the tar's first
 * entry needs, with every rule readArchive applies to it (gzip magic, entry
 * name and type, meta.json's size and schema, stateBytes within
 * limits.stateBytesMax). It does not verify the archive's hashes: readArchive
 * does, when the archive is read whole. Rejects with ArchiveError, or the
 * file-system error.
 */
export async function readArchiveHead(path: string, limits: ReadArchiveLimits = {}): Promise<ArchiveMeta> {
  let meta: ArchiveMeta | null = null;
  try {
    await readArchive(
      (limits.io ?? nodeSnapshotIo).createReadStream(path, { highWaterMark: 256 * 1024 }),
      async (m) => {
        meta = m;
        throw HEAD_STOP;
      },
      limits,
    );
  } catch (err) {
    if (err !== HEAD_STOP || meta === null) throw err;
    return meta;
  }
  if (meta === null) throw new ArchiveError('missing-entry', 'the archive has no state.bin');
  return meta;
}

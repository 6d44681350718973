/**
 * writeArchiveFromRecords: snapshot creation as one pipeline on every core.
 *
 *   records (RocksDB iteration, in large batches)
 *     -> state.bin encoding straight into 1 MiB blocks (main thread; SHA-256 of state.bin here)
 *     -> each block gzipped as an independent gzip member on libuv's threadpool (N at once)
 *     -> members appended in order to a spool file (compressed, so at most the archive's size)
 *   then meta.json is known (stateBytes, stateKeys), and the archive is written to `out`:
 *     gzip member [tar header meta.json, meta.json, tar header state.bin]
 *     + the spooled state members + gzip member [padding, SHA256SUMS, end blocks],
 *   hashed (SHA-256 of the whole archive) as it is written.
 *
 * The result is the same archive format as writeArchive's (archive.ts): a
 * gzipped tar of meta.json, state.bin, SHA256SUMS. The tar needs state.bin's
 * size before its bytes, which is why the compressed state waits in a spool
 * rather than the uncompressed state in a state.bin file: the iteration and
 * encoding overlap the compression, and the bytes written to disk before the
 * archive are the compressed ones. Every byte is encoded once, hashed once
 * per digest, compressed once.
 *
 * A producer that knows the state's size and record count before its
 * members (writeArchiveFromMembers' `begin`: a delta, a restore's copy) has
 * them written straight into the archive after the head: no spool.
 */
import { createHash } from 'node:crypto';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import {
  META_BYTES_MAX,
  META_NAME,
  STATE_NAME,
  SUMS_NAME,
  formatSums,
  serializeArchiveMeta,
  validateArchiveMeta,
  type ArchiveMeta,
} from './archive-meta.js';
import { ArchiveSink, RELEASE_AFTER_WRITE } from './archive-sink.js';
import { ArchiveError, StateFormatError } from './errors.js';
import { BlockPool } from './block-pool.js';
import { GzipMemberQueue, gzipMember, resolveParallelGzipOptions, type ParallelGzipOptions } from './parallel-gzip.js';
import { STATE_KEY_BYTES_MAX, STATE_VALUE_BYTES_MAX, type StateLimits, type StateRecord } from './state-format.js';
import { sha256Hex } from '../hash/sha256.js';
import { TAR_BLOCK_BYTES, encodeTarHeader, tarPadding } from './tar-header.js';
import { nodeSnapshotIo, type SnapshotFile, type SnapshotIo } from './snapshot-io.js';

const ENTRY_MODE = 0o600;
const END_OF_ARCHIVE_BYTES = 2 * TAR_BLOCK_BYTES;
/**
 * ALIGNED_BLOCK_START_BYTES: the first allocation of a record-aligned state block (StateBlockEncoder), doubled
 * as it fills; under Buffer.poolSize / 2, so taken from Node's pool (a small state's snapshot allocates nothing
 * outside it: the simulator's states are a few KiB, and a 16 KiB start was 0.6% of a seed's CPU with the key below).
 */
const ALIGNED_BLOCK_START_BYTES = 2048;
/** PREV_KEY_START_BYTES: the first allocation of StateBlockEncoder's copy of the previous key, grown (doubled) for a longer key. */
const PREV_KEY_START_BYTES = 256;

/** RecordsArchiveMeta: what the caller says about a snapshot; stateBytes and stateKeys are counted while encoding. */
export type RecordsArchiveMeta = Omit<ArchiveMeta, 'stateBytes' | 'stateKeys' | 'formatVersion'>;

/** StateRecordSource: the state to archive, and where its compressed bytes may wait. */
export interface StateRecordSource {
  /** batches of records in strictly increasing bytewise key order (a batch must not change after it is yielded). */
  readonly records: AsyncIterable<readonly StateRecord[]>;
  /** a path writeArchiveFromRecords creates (exclusively, mode 0600) for the compressed state and removes before it settles. */
  readonly spoolPath: string;
}

/** RecordsArchiveOptions: gzip level, block size and concurrency; record limits; progress. */
export interface RecordsArchiveOptions extends StateLimits {
  /** gzip level 0-9 (default GZIP_LEVEL_DEFAULT, 1). */
  readonly gzipLevel?: number;
  /** state.bin bytes per gzip member (default 1 MiB). */
  readonly gzipBlockBytes?: number;
  /** gzip members compressed at once (default: the cores, at least 2). */
  readonly gzipInFlightMax?: number;
  /** per block, stored / Huffman only / deflate as a sample says (default true; parallel-gzip.ts blockGzipChoice). */
  readonly gzipAdaptive?: boolean;
  /** called as state.bin's compressed bytes are written to `out`, with the state bytes they hold so far and the total. */
  readonly onStateProgress?: (streamedBytes: number, stateBytes: number) => void;
  /** io: the spool file's file system and the compression (default nodeSnapshotIo). */
  readonly io?: SnapshotIo;
  /** signal: once aborted, the writer stops at its next member and rejects with the signal's reason (writeArchiveDelta). */
  readonly signal?: AbortSignal;
}

/** WriteArchiveResult: what an archive write returns. */
export interface WriteArchiveResult {
  /** hex SHA-256 of the whole archive (the gzip bytes written to `out`). */
  readonly archiveSha256: string;
  readonly archiveBytes: number;
  readonly meta: ArchiveMeta;
  /** hex SHA-256 of state.bin. */
  readonly stateSha256: string;
}

/** RecordsArchiveResult: what writeArchive returns, plus the gzip member count. */
export interface RecordsArchiveResult extends WriteArchiveResult {
  /** gzip members in the archive (one for the head, one per state block, one for the tail). */
  readonly gzipMembers: number;
  /** members: where each gzip member lies (ArchiveMemberTable). */
  readonly members: ArchiveMemberTable;
}


function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

function showKey(key: Buffer): string {
  const head = key.subarray(0, 48);
  const printable = head.every((b) => b >= 0x20 && b < 0x7f);
  const shown = printable ? JSON.stringify(head.toString('latin1')) : `0x${head.toString('hex')}`;
  return key.length > head.length ? `${shown}… (${key.length} bytes)` : shown;
}

/** StateMemberInfo: what one state block (one gzip member) holds: its state.bin bytes, its records and the first one's key. */
export interface StateMemberInfo {
  readonly stateBytes: number;
  readonly keys: number;
  readonly firstKey: Buffer;
}

/**
 * StateBlockEncoder writes records as state.bin bytes (u32be keyLen, key,
 * u32be valueLen, value) into blocks, checking each record as
 * encodeStateRecords does (non-empty key, key and value within the limits)
 * and that keys strictly increase. Full blocks collect in `ready`; the caller
 * takes them after each batch. `keys` and `bytes` count what was encoded.
 *
 * Blocks are fixed-size (records may span two), or with `alignRecords`
 * record-aligned: a block holds whole records, closes before a record that
 * would overflow it, and a record larger than a block gets a block of its
 * own; `readyInfo[i]` then describes `ready[i]` (records and first key), so a
 * later snapshot can reuse the member of a block none of whose keys changed
 * (archive-delta.ts).
 */
export class StateBlockEncoder {
  readonly #aligned: boolean;
  /** readyInfo: with alignRecords, one entry per block of `ready` (taken together with it). */
  readonly readyInfo: StateMemberInfo[] = [];
  #blockKeys = 0;
  #blockFirstKey: Buffer = Buffer.alloc(0);
  readonly #blockBytes: number;
  readonly #keyBytesMax: number;
  readonly #valueBytesMax: number;
  #block: Buffer;
  #fill = 0;
  /** #prev: the previous key (its first #prevBytes bytes), in a buffer of up to #prevBytesMax bytes grown as keys need. */
  #prev: Buffer;
  readonly #prevBytesMax: number;
  #prevBytes = -1;
  readonly #u32 = Buffer.allocUnsafe(4);
  /** full blocks not yet taken by the caller, in order. */
  readonly ready: Buffer[] = [];

  /**
   * take hands over the full blocks in order, each with its info (with
   * alignRecords; else undefined); with `final`, finish() first, so every
   * block is taken. The encoder keeps none of them.
   */
  take(final = false): { readonly block: Buffer; readonly info: StateMemberInfo | undefined }[] {
    if (final) this.finish();
    const blocks = this.ready.splice(0);
    const infos = this.readyInfo.splice(0);
    return blocks.map((block, i) => ({ block, info: infos[i] }));
  }
  keys = 0;
  bytes = 0;

  readonly #pool: BlockPool | undefined;

  /** With a `pool`, blocks come from it (the caller gives each back once done with it); without, each is new. */
  constructor(blockBytes: number, limits: StateLimits = {}, alignRecords = false, pool?: BlockPool) {
    if (pool !== undefined && pool.blockBytes !== blockBytes) throw new RangeError(`pool of ${pool.blockBytes}-byte blocks for ${blockBytes}-byte blocks`);
    this.#blockBytes = blockBytes;
    this.#pool = pool;
    this.#aligned = alignRecords;
    this.#keyBytesMax = limits.keyBytesMax ?? STATE_KEY_BYTES_MAX;
    this.#valueBytesMax = limits.valueBytesMax ?? STATE_VALUE_BYTES_MAX;
    if (!Number.isSafeInteger(this.#keyBytesMax) || this.#keyBytesMax < 1 || this.#keyBytesMax > 0xffff_ffff) {
      throw new RangeError(`keyBytesMax must be a whole number in [1, 2^32-1], got ${this.#keyBytesMax}`);
    }
    if (!Number.isSafeInteger(this.#valueBytesMax) || this.#valueBytesMax < 0 || this.#valueBytesMax > 0xffff_ffff) {
      throw new RangeError(`valueBytesMax must be a whole number in [0, 2^32-1], got ${this.#valueBytesMax}`);
    }
    this.#block = this.#newBlock();
    this.#prevBytesMax = Math.min(this.#keyBytesMax, 64 * 1024);
    this.#prev = Buffer.allocUnsafe(Math.min(this.#prevBytesMax, PREV_KEY_START_BYTES));
  }

  /** encode appends one record. Errors: StateFormatError `empty-key`, `key-too-large`, `value-too-large`, `key-order`. */
  encode(record: StateRecord): void {
    const key = asBuffer(record.key);
    const value = asBuffer(record.value);
    const at = this.bytes;
    if (key.length === 0) throw new StateFormatError('empty-key', 'a record has an empty key', at);
    if (key.length > this.#keyBytesMax) {
      throw new StateFormatError('key-too-large', `key of ${key.length} bytes, more than ${this.#keyBytesMax}`, at);
    }
    if (value.length > this.#valueBytesMax) {
      throw new StateFormatError('value-too-large', `value of ${value.length} bytes, more than ${this.#valueBytesMax}`, at);
    }
    if (this.#prevBytes >= 0) {
      const order = key.compare(this.#prev, 0, this.#prevBytes);
      if (order <= 0) {
        const prev = this.#prev.subarray(0, this.#prevBytes);
        throw new StateFormatError(
          'key-order',
          order === 0
            ? `record ${this.keys + 1}: key ${showKey(key)} appears twice`
            : `record ${this.keys + 1}: key ${showKey(key)} comes after ${showKey(prev)}; keys must be strictly increasing`,
          at,
        );
      }
    }
    if (key.length > this.#prevBytesMax) {
      throw new StateFormatError('key-too-large', `key of ${key.length} bytes, more than ${this.#prevBytesMax}`, at);
    }
    if (key.length > this.#prev.length) this.#prev = Buffer.allocUnsafe(Math.min(this.#prevBytesMax, Math.max(key.length, 2 * this.#prev.length)));
    key.copy(this.#prev, 0);
    this.#prevBytes = key.length;
    const recordBytes = 8 + key.length + value.length;
    if (this.#aligned) {
      // Whole records per block: close the block before a record that would overflow it.
      if (this.#fill > 0 && this.#fill + recordBytes > this.#blockBytes) this.#closeAligned();
      if (this.#fill + recordBytes > this.#block.length) this.#grow(this.#fill + recordBytes);
      if (this.#fill === 0) this.#blockFirstKey = Buffer.from(key);
      this.#blockKeys += 1;
      this.#fill = copyRecord(this.#block, this.#fill, key, value);
      this.keys += 1;
      this.bytes += recordBytes;
      return;
    }
    if (this.#fill + recordBytes < this.#blockBytes) {
      // fast path: the whole record fits in the current block (and does not fill it).
      this.#fill = copyRecord(this.#block, this.#fill, key, value);
    } else {
      this.#u32.writeUInt32BE(key.length, 0);
      this.#put(this.#u32);
      this.#put(key);
      this.#u32.writeUInt32BE(value.length, 0);
      this.#put(this.#u32);
      this.#put(value);
    }
    this.keys += 1;
    this.bytes += recordBytes;
  }

  /** finish moves the last, partial block (if any) to `ready`. */
  finish(): void {
    if (this.#aligned) {
      if (this.#fill > 0) this.#closeAligned();
      return;
    }
    if (this.#fill > 0) this.ready.push(this.#block.subarray(0, this.#fill));
    this.#fill = 0;
  }

  /** #closeAligned moves the block being filled to `ready` (with its info) and starts a fresh one. */
  #closeAligned(): void {
    this.ready.push(this.#block.subarray(0, this.#fill));
    this.readyInfo.push({ stateBytes: this.#fill, keys: this.#blockKeys, firstKey: this.#blockFirstKey });
    this.#block = this.#newBlock();
    this.#fill = 0;
    this.#blockKeys = 0;
  }

  /** #newBlock: a block from the pool, else a new one (a record-aligned one starts small and grows: a small state allocates little). */
  #newBlock(): Buffer {
    return this.#pool?.take() ?? Buffer.allocUnsafe(this.#aligned ? Math.min(this.#blockBytes, ALIGNED_BLOCK_START_BYTES) : this.#blockBytes);
  }

  /** #grow gives the aligned block being filled room for `bytes` (doubling, up to the block size unless one record is larger). */
  #grow(bytes: number): void {
    const grown = Buffer.allocUnsafe(Math.max(bytes, Math.min(this.#blockBytes, this.#block.length * 2)));
    this.#block.copy(grown, 0, 0, this.#fill);
    this.#block = grown;
  }

  #put(bytes: Buffer): void {
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(this.#blockBytes - this.#fill, bytes.length - pos);
      bytes.copy(this.#block, this.#fill, pos, pos + n);
      this.#fill += n;
      pos += n;
      if (this.#fill === this.#blockBytes) {
        this.ready.push(this.#block);
        this.#block = this.#newBlock();
        this.#fill = 0;
      }
    }
  }
}

/** HashTap passes bytes through unchanged, counting them and (unless `hashing` is false) feeding a SHA-256 (writeArchive uses it too). */
export class HashTap extends Transform {
  private readonly hash: ReturnType<typeof createHash> | null;
  bytes = 0;

  constructor(hashing = true) {
    super();
    this.hash = hashing ? createHash('sha256') : null;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  /** digest: the hex SHA-256 of the bytes passed ('' for a tap made with hashing false). */
  digest(): string {
    return this.hash?.digest('hex') ?? '';
  }
}

/**
 * archiveTap: the tap a writer streams an archive through into `out`, and how its SHA-256 is had once written: an
 * ArchiveSink that hashes the whole archive as it writes it (the store's) gives its own digest, and the tap only
 * counts (each byte hashed once; it was hashed twice, by the tap and by the sink); into anything else the tap hashes.
 */
export function archiveTap(out: Writable): { readonly tap: HashTap; readonly sha256: () => string } {
  const sink = out instanceof ArchiveSink && out.hashesWhole ? out : null;
  const tap = new HashTap(sink === null);
  return { tap, sha256: () => (sink !== null ? sink.digest().archiveSha256 : tap.digest()) };
}

async function writeAll(handle: SnapshotFile, bytes: Buffer, path: string): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    let written: number;
    try {
      ({ bytesWritten: written } = await handle.write(bytes, offset, bytes.length - offset, null));
    } catch (err) {
      throw new ArchiveError('io', `cannot write the spool file ${path}: ${(err as Error).message}`, { cause: err });
    }
    offset += written;
  }
}

/**
 * writeAllOf writes `buffers` one after the other at the file's position in one writev (the spool's members as they
 * were delivered: no copy of them into one Buffer); a rare partial writev is finished with plain writes.
 */
async function writeAllOf(handle: SnapshotFile, buffers: Buffer[], path: string): Promise<void> {
  let written: number;
  try {
    ({ bytesWritten: written } = await handle.writev(buffers));
  } catch (err) {
    throw new ArchiveError('io', `cannot write the spool file ${path}: ${(err as Error).message}`, { cause: err });
  }
  for (const b of buffers) {
    if (written >= b.length) {
      written -= b.length;
      continue;
    }
    await writeAll(handle, written === 0 ? b : b.subarray(written), path);
    written = 0;
  }
}

async function readExactly(handle: SnapshotFile, length: number, position: number, path: string, into?: Buffer): Promise<Buffer> {
  const out = into !== undefined && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(out, got, length - got, position + got);
    if (bytesRead === 0) throw new ArchiveError('io', `the spool file ${path} ends early (${position + got} bytes)`);
    got += bytesRead;
  }
  return out;
}

/** StateMemberEntry: one state member of an archive: its compressed bytes and what it holds. */
export interface StateMemberEntry extends StateMemberInfo {
  readonly compressedBytes: number;
}

/**
 * ArchiveMemberTable says where each gzip member of an archive built here
 * lies: the head member (tar header of meta.json, meta.json, tar header of
 * state.bin) is the first `headBytes`, then each state member in order, then
 * the tail member (`tailBytes`). Recorded beside a stored archive, it lets a
 * later snapshot copy the members none of whose keys changed (archive-delta.ts).
 */
export interface ArchiveMemberTable {
  readonly headBytes: number;
  readonly state: readonly StateMemberEntry[];
  readonly tailBytes: number;
}

/** StateProduced: what a StateMembersProducer reports once it delivered every member. */
export interface StateProduced {
  readonly stateSha256: string;
  readonly stateBytes: number;
  readonly stateKeys: number;
}

/** StateTotals: state.bin's size and record count (what the archive's head holds of the state). */
export interface StateTotals {
  readonly stateBytes: number;
  readonly stateKeys: number;
}

/**
 * StateMembersProducer compresses the state as gzip members, each holding
 * whole records, and hands them to `deliver` in order (awaiting each); it
 * returns state.bin's SHA-256, size and record count. As soon as it knows
 * the size and record count the state will have, it may say so, once, with
 * `begin` (awaited): the members it delivers after that are written straight
 * into the archive instead of waiting in the spool (writeArchiveFromMembers).
 * `spooled`, when given with a member, is called once that member's bytes
 * are in the spool file and nothing here holds them any more (the producer
 * may reuse their memory then); a member that goes on to `out` (after
 * `begin`), or a write that fails, never calls it.
 */
export type StateMembersProducer = (
  deliver: (member: Buffer, info: StateMemberInfo, spooled?: () => void) => Promise<void>,
  begin: (totals: StateTotals) => Promise<void>,
) => Promise<StateProduced>;

/** ArchiveFrame: the checked meta.json and the uncompressed tar bytes before state.bin (head) and after it (tail). */
export interface ArchiveFrame {
  readonly full: ArchiveMeta;
  /** head: tar header of meta.json, meta.json, its padding, tar header of state.bin (the head gzip member's input). */
  readonly head: Buffer;
  /** tail: state.bin's padding, tar header of SHA256SUMS, SHA256SUMS, its padding, the end blocks (the tail member's input). */
  readonly tail: Buffer;
}

/**
 * archiveMetaBytes checks and serializes the meta.json of an archive whose
 * state.bin holds `stateBytes` bytes in `stateKeys` records. Errors:
 * ArchiveError `bad-meta` (meta breaks the schema), `member-too-large`
 * (meta.json over META_BYTES_MAX).
 */
export function archiveMetaBytes(meta: RecordsArchiveMeta, stateBytes: number, stateKeys: number): { readonly full: ArchiveMeta; readonly metaBytes: Buffer } {
  let full: ArchiveMeta;
  try {
    full = validateArchiveMeta({
      formatVersion: 1,
      id: meta.id,
      index: meta.index,
      term: meta.term,
      membership: meta.membership,
      stateBytes,
      stateKeys,
      createdAt: meta.createdAt,
      snapcoordVersion: meta.snapcoordVersion,
    });
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    throw new ArchiveError('bad-meta', (err as Error).message, { cause: err });
  }
  const metaBytes = serializeArchiveMeta(full);
  if (metaBytes.length > META_BYTES_MAX) {
    throw new ArchiveError('member-too-large', `meta.json would be ${metaBytes.length} bytes, more than ${META_BYTES_MAX}`);
  }
  return { full, metaBytes };
}

/**
 * archiveHead: archiveFrame's meta.json and head (the tar bytes before
 * state.bin), which need state.bin's size and record count but not its hash.
 * Errors: archiveMetaBytes'.
 */
export function archiveHead(
  meta: RecordsArchiveMeta,
  stateBytes: number,
  stateKeys: number,
): { readonly full: ArchiveMeta; readonly metaBytes: Buffer; readonly mtimeSec: number; readonly head: Buffer } {
  const { full, metaBytes } = archiveMetaBytes(meta, stateBytes, stateKeys);
  const mtimeSec = Math.floor(Date.parse(full.createdAt) / 1000);
  const head = Buffer.concat([
    encodeTarHeader({ name: META_NAME, size: metaBytes.length, mode: ENTRY_MODE, mtimeSec }),
    metaBytes,
    tarPadding(metaBytes.length),
    encodeTarHeader({ name: STATE_NAME, size: stateBytes, mode: ENTRY_MODE, mtimeSec }),
  ]);
  return { full, metaBytes, mtimeSec, head };
}

/**
 * archiveFrame builds meta.json for a state (its size, record count and
 * SHA-256 as produced) and the tar bytes around state.bin, the same for
 * every way an archive is written here. Errors: ArchiveError `bad-meta`
 * (meta breaks the schema), `member-too-large` (meta.json over META_BYTES_MAX).
 */
export function archiveFrame(meta: RecordsArchiveMeta, produced: StateProduced): ArchiveFrame {
  return archiveFrameFrom(archiveHead(meta, produced.stateBytes, produced.stateKeys), produced.stateSha256);
}

/**
 * archiveFrameFrom: archiveFrame from the head archiveHead made for the state's size and record count (the same
 * bytes as archiveFrame's for them: meta.json checked and built once) and state.bin's SHA-256.
 */
function archiveFrameFrom(h: ReturnType<typeof archiveHead>, stateSha256: string): ArchiveFrame {
  const { full, metaBytes, mtimeSec, head } = h;
  const stateBytes = full.stateBytes;
  const sums = formatSums(sha256Hex(metaBytes), stateSha256);
  const tail = Buffer.concat([
    tarPadding(stateBytes),
    encodeTarHeader({ name: SUMS_NAME, size: sums.length, mode: ENTRY_MODE, mtimeSec }),
    sums,
    tarPadding(sums.length),
    Buffer.alloc(END_OF_ARCHIVE_BYTES),
  ]);
  return { full, head, tail };
}

/**
 * ownBytes: `b` in memory of its own, exactly its size. A member table keeps one first key per state member
 * until the archive is written (thousands: 8,000 for 8 GB of state); a key made by Buffer.from or
 * Buffer.concat lies in one of Node's shared 8 KiB pool slabs, and keeping it kept the whole slab. A restore
 * of 8M x 1 KiB held 74 MiB of ArrayBuffers that way on every node (issue 15), 1M x 1 KiB ~9 MiB.
 */
export function ownBytes(b: Buffer): Buffer {
  if (b.byteOffset === 0 && b.buffer.byteLength === b.length) return b;
  const own = Buffer.allocUnsafeSlow(b.length);
  b.copy(own);
  return own;
}

/** SPOOL_IO_BYTES: members are written (to the spool or `out`) and read back in pieces of about this many bytes (whole members). */
const SPOOL_IO_BYTES = 1024 * 1024;

/**
 * READ_BACK_SPARES_MAX: spool read-back buffers (SPOOL_IO_BYTES) kept for
 * reuse once an ArchiveSink has written them (RELEASE_AFTER_WRITE): about
 * what is in flight between the read and the file (OUT_QUEUE_BYTES_MAX, the
 * streams' buffers).
 */
const READ_BACK_SPARES_MAX = 8;

/** OUT_QUEUE_BYTES_MAX: bytes handed to the stream into `out` and not yet taken by it before a delivery waits. */
const OUT_QUEUE_BYTES_MAX = 4 * SPOOL_IO_BYTES;

/**
 * PieceQueue: the pieces of the archive (head, members, tail) on their way
 * from the producer to the stream into `out`: push waits while more than
 * bytesMax wait; close stops both sides (push rejects with the reason).
 */
class PieceQueue {
  readonly #pieces: Buffer[] = [];
  #bytes = 0;
  #ended = false;
  #error: Error | null = null;
  #wakeReader: (() => void) | null = null;
  #wakeWriter: (() => void) | null = null;

  constructor(private readonly bytesMax: number) {}

  async push(piece: Buffer): Promise<void> {
    if (this.#error !== null) throw this.#error;
    this.#pieces.push(piece);
    this.#bytes += piece.length;
    this.#wake();
    while (this.#bytes > this.bytesMax && this.#error === null) {
      await new Promise<void>((resolve) => {
        this.#wakeWriter = resolve;
      });
    }
    if (this.#error !== null) throw this.#error;
  }

  end(): void {
    this.#ended = true;
    this.#wake();
  }

  close(err: Error): void {
    this.#error ??= err;
    this.#wake();
  }

  #wake(): void {
    const r = this.#wakeReader;
    const w = this.#wakeWriter;
    this.#wakeReader = null;
    this.#wakeWriter = null;
    r?.();
    w?.();
  }

  async *drain(): AsyncGenerator<Buffer> {
    for (;;) {
      const piece = this.#pieces.shift();
      if (piece !== undefined) {
        this.#bytes -= piece.length;
        this.#wake();
        yield piece;
        continue;
      }
      if (this.#error !== null) throw this.#error;
      if (this.#ended) return;
      await new Promise<void>((resolve) => {
        this.#wakeReader = resolve;
      });
    }
  }
}

/**
 * writeArchiveFromMembers builds a snapshot archive whose state the producer
 * gives as gzip members (the file comment's pipeline) and streams it into
 * `out` (which it ends), hashed as written. The head member holds state.bin's
 * size and meta.json's stateBytes and stateKeys, so it must come before the
 * state: a producer that knows them before its members (a delta, a restore's
 * copy once past the changed keys) says so with `begin(totals)`, and every
 * member delivered after that goes straight to `out`, written once; the
 * members delivered before (all of them, when it never calls begin) wait in
 * the spool file until the head is known, then are read back. At the end
 * the state produced must be the one begun with (ArchiveError `size-mismatch`
 * otherwise: the archive is not kept). The spool file is removed before it
 * settles, also on failure. Errors: the producer's, ArchiveError `bad-meta`
 * / `member-too-large` / `size-mismatch` / `io`, or the error of `out`.
 */
export async function writeArchiveFromMembers(
  meta: RecordsArchiveMeta,
  produce: StateMembersProducer,
  spoolPath: string,
  out: Writable,
  options: { readonly gzipLevel?: number; readonly onStateProgress?: (streamedBytes: number, stateBytes: number) => void; readonly io?: SnapshotIo } = {},
): Promise<RecordsArchiveResult> {
  const { level } = resolveParallelGzipOptions(options.gzipLevel !== undefined ? { level: options.gzipLevel } : {});
  const io = options.io ?? nodeSnapshotIo;
  // Into the store's own sink (it hashes what it writes, nothing written yet) the pieces are written straight,
  // no stream between: a stream pipeline per archive (Readable.from, a tap, pipeline's AbortController and the
  // AbortError it builds at its end) was most of the fixed cost of a small archive (issue 17). Into anything else
  // they stream, as pipeline does.
  const direct = out instanceof ArchiveSink && out.hashesWhole && out.bytes === 0 && !out.writableEnded ? out : null;
  /** spool: the spool file while open: opened at the first member delivered before the head is known (begin). */
  let spool: SnapshotFile | null = null;
  /** spoolUsed: the spool was created (once at most: removed once read back, or at the end whatever happened). */
  let spoolUsed = false;
  /** stopped: why the stream to `out` failed; the producer is stopped at its next member with it. */
  let stopped: Error | null = null;
  const queue = new PieceQueue(OUT_QUEUE_BYTES_MAX);
  /** emit: pieces of the archive, in order, on their way to `out` (straight into the sink, or through the queue). */
  const emit = async (pieces: Buffer[]): Promise<void> => {
    if (direct !== null) {
      await direct.writePieces(pieces);
      return;
    }
    for (const b of pieces) await queue.push(b);
  };
  const openSpool = async (): Promise<SnapshotFile> => {
    if (spool !== null) return spool;
    if (spoolUsed) throw new ArchiveError('io', `the spool file ${spoolPath} was asked for again after it was read back`);
    spoolUsed = true;
    try {
      spool = await io.open(spoolPath, 'wx+', ENTRY_MODE);
    } catch (err) {
      throw new ArchiveError('io', `cannot create the spool file ${spoolPath}: ${(err as Error).message}`, { cause: err });
    }
    return spool;
  };
  const members: StateMemberEntry[] = [];
  /** spooled: the first members, written to the spool (spoolBytes) before the head was known. */
  let spooled = 0;
  let spoolBytes = 0;
  /** begun: the head, once known (begin, or the producer's end). */
  let begun: { readonly stateBytes: number; readonly stateKeys: number; readonly head: ReturnType<typeof archiveHead>; readonly headMember: Buffer } | null = null;
  // Members are gathered into writes of about SPOOL_IO_BYTES (a highly compressible state has
  // thousands of members of a few KiB: one write each was most of a delta's file system calls).
  let held: Buffer[] = [];
  /** heldSpooled: the `spooled` callbacks of the held members that have one (called once they are in the spool). */
  let heldSpooled: (() => void)[] = [];
  let heldBytes = 0;
  let heldState = 0;
  let streamed = 0;
  // The held members go as they are, never joined (issue 15: a Buffer.concat of them copied every compressed byte of
  // a snapshot once more): one writev into the spool, or each into the stream to `out` (whose sink writes what
  // has gathered with one writev).
  const flush = async (): Promise<void> => {
    if (heldBytes === 0) return;
    const buffers = held;
    const bytes = heldBytes;
    const state = heldState;
    const spooledNow = heldSpooled;
    held = [];
    heldSpooled = [];
    heldBytes = 0;
    heldState = 0;
    if (begun !== null) {
      await emit(buffers);
      streamed += state;
      options.onStateProgress?.(streamed, begun.stateBytes);
      return;
    }
    const handle = spool as SnapshotFile;
    if (buffers.length === 1) await writeAll(handle, buffers[0] as Buffer, spoolPath);
    else await writeAllOf(handle, buffers, spoolPath);
    spooled = members.length;
    spoolBytes += bytes;
    for (const given of spooledNow) given();
  };
  const deliver = async (member: Buffer, info: StateMemberInfo, onSpooled?: () => void): Promise<void> => {
    if (stopped !== null) throw stopped;
    if (begun === null && spool === null) {
      // The first member before the head is known: it waits in the spool (a producer that begins first, a
      // delta's premerged one, never has one).
      await openSpool();
      if (stopped !== null) throw stopped;
    }
    held.push(member);
    if (onSpooled !== undefined && begun === null) heldSpooled.push(onSpooled);
    heldBytes += member.length;
    heldState += info.stateBytes;
    members.push({ ...info, firstKey: ownBytes(info.firstKey), compressedBytes: member.length });
    if (heldBytes >= SPOOL_IO_BYTES) await flush();
  };
  /** begin: the head member goes out, then the members spooled so far (read back in spans of whole members), and the spool goes. */
  const begin = async (totals: StateTotals): Promise<void> => {
    if (stopped !== null) throw stopped;
    if (begun !== null) throw new ArchiveError('io', 'the archive was begun twice');
    const head = archiveHead(meta, totals.stateBytes, totals.stateKeys);
    const headMember = await gzipMember(head.head, level, false, io);
    begun = { stateBytes: totals.stateBytes, stateKeys: totals.stateKeys, head, headMember };
    await emit([headMember]);
    const handle = spool as SnapshotFile | null;
    if (handle === null) {
      // Nothing was delivered before the head: no spool.
      if (spooled !== 0 || held.length !== 0) throw new ArchiveError('io', 'members were delivered before the head, but no spool file is open');
      return;
    }
    let position = 0;
    // Read back into buffers the sink gives back once written (RELEASE_AFTER_WRITE; another `out` never does, and
    // keeps what it is given): no fresh 1 MiB buffer per span, mapped and faulted in, dead a moment later.
    const spare: Buffer[] = [];
    for (let i = 0; i < spooled; ) {
      let span = 0;
      let spanState = 0;
      do {
        const m = members[i] as StateMemberEntry;
        span += m.compressedBytes;
        spanState += m.stateBytes;
        i++;
      } while (i < spooled && span + (members[i] as StateMemberEntry).compressedBytes <= SPOOL_IO_BYTES);
      const into = span <= SPOOL_IO_BYTES ? (spare.pop() ?? Buffer.allocUnsafeSlow(SPOOL_IO_BYTES)) : undefined;
      const piece = await readExactly(handle, span, position, spoolPath, into);
      if (into !== undefined) {
        let given = false;
        Object.defineProperty(piece, RELEASE_AFTER_WRITE, {
          value: () => {
            if (given) return;
            given = true;
            if (spare.length < READ_BACK_SPARES_MAX) spare.push(into);
          },
        });
      }
      await emit([piece]);
      position += span;
      streamed += spanState;
      options.onStateProgress?.(streamed, totals.stateBytes);
    }
    if (position !== spoolBytes) throw new ArchiveError('io', `the spool file ${spoolPath} holds ${spoolBytes} bytes, ${position} were read`);
    // Read back whole: the spool's disk space goes now, not after the rest of the state.
    spool = null;
    await handle.close().catch(() => undefined);
    await io.unlink(spoolPath).catch(() => undefined);
  };

  let result: { readonly full: ArchiveMeta; readonly stateSha256: string; readonly headMember: Buffer; readonly tailMember: Buffer } | null = null;
  /** run: the producer, then the head (if not begun), the rest of the members and the tail, into the queue. */
  const run = async (): Promise<void> => {
    const produced = await produce(deliver, begin);
    if (begun === null) {
      await flush();
      await begin(produced);
    }
    await flush();
    const b = begun as unknown as { readonly stateBytes: number; readonly stateKeys: number; readonly head: ReturnType<typeof archiveHead>; readonly headMember: Buffer };
    if (produced.stateBytes !== b.stateBytes || produced.stateKeys !== b.stateKeys) {
      throw new ArchiveError(
        'size-mismatch',
        `the state produced holds ${produced.stateBytes} bytes in ${produced.stateKeys} records; it was begun as ${b.stateBytes} bytes in ${b.stateKeys} records`,
      );
    }
    // The head's meta.json as built at begin (the same size and record count, checked just above): built once.
    const { full, tail } = archiveFrameFrom(b.head, produced.stateSha256);
    const tailMember = await gzipMember(tail, level, false, io);
    await emit([tailMember]);
    result = { full, stateSha256: produced.stateSha256, headMember: b.headMember, tailMember };
    queue.end();
  };
  /** dropSpool: the spool, if one is still open, closed and removed (also after a failure). */
  const dropSpool = async (): Promise<void> => {
    const handle = spool as SnapshotFile | null;
    spool = null;
    if (handle === null) return;
    await handle.close().catch(() => undefined);
    await io.unlink(spoolPath).catch(() => undefined);
  };

  if (direct !== null) {
    try {
      await run();
      await direct.finishChunks();
    } catch (err) {
      // As pipeline would: the output is destroyed (its file closed once its pending writes settle).
      direct.destroy();
      throw err;
    } finally {
      await dropSpool();
    }
    const done = result as { readonly full: ArchiveMeta; readonly stateSha256: string; readonly headMember: Buffer; readonly tailMember: Buffer } | null;
    if (done === null) throw new ArchiveError('io', 'the archive ended before the state was written');
    const digest = direct.digest();
    return {
      archiveSha256: digest.archiveSha256,
      archiveBytes: digest.archiveBytes,
      meta: done.full,
      stateSha256: done.stateSha256,
      gzipMembers: members.length + 2,
      members: { headBytes: done.headMember.length, state: members, tailBytes: done.tailMember.length },
    };
  }

  // Everything runs inside the pipeline, so any failure (a bad record too) destroys `out` the way pipeline does.
  let running: Promise<void> | null = null;
  async function* archiveBytes(): AsyncGenerator<Buffer> {
    running = run();
    running.catch((err: unknown) => queue.close(err instanceof Error ? err : new Error(String(err))));
    yield* queue.drain();
    await running;
  }
  const { tap, sha256 } = archiveTap(out);
  try {
    await pipeline(Readable.from(archiveBytes(), { objectMode: false, highWaterMark: 1024 * 1024 }), tap, out);
  } catch (err) {
    stopped = err instanceof Error ? err : new Error(String(err));
    queue.close(stopped);
    throw err;
  } finally {
    // The stream can fail (`out`'s error) while the producer still runs: it is let finish (it stops at its next
    // member), so that a spool opened meanwhile is closed and removed too, not left to the garbage collector.
    await (running as Promise<void> | null)?.catch(() => undefined);
    await dropSpool();
  }
  const done = result as { readonly full: ArchiveMeta; readonly stateSha256: string; readonly headMember: Buffer; readonly tailMember: Buffer } | null;
  if (done === null) throw new ArchiveError('io', 'the archive stream ended before the state was written');
  return {
    archiveSha256: sha256(),
    archiveBytes: tap.bytes,
    meta: done.full,
    stateSha256: done.stateSha256,
    gzipMembers: members.length + 2,
    members: { headBytes: done.headMember.length, state: members, tailBytes: done.tailMember.length },
  };
}

/**
 * writeArchiveFromRecords builds a snapshot archive from batches of records
 * and streams it into `out` (which it ends), with compression on the
 * threadpool overlapping the iteration and encoding (see the file comment).
 * Each state member holds whole records (StateBlockEncoder alignRecords);
 * the result's member table says where each lies. Memory is bounded by the
 * batch in hand plus about 2 x gzipInFlightMax blocks. The spool file is
 * removed before it settles, also on failure.
 *
 * Same bytes in (records, meta, level, block size) give the same archive.
 * Rejects with StateFormatError for a record that breaks the limits or the
 * key order (nothing is written to `out` then), ArchiveError `bad-meta` /
 * `member-too-large` for an invalid meta, `io` for a spool failure (or an
 * existing spool file), the source's own error, or the error of `out`.
 * RangeError for bad gzip options.
 */
export async function writeArchiveFromRecords(
  meta: RecordsArchiveMeta,
  source: StateRecordSource,
  out: Writable,
  options: RecordsArchiveOptions = {},
): Promise<RecordsArchiveResult> {
  const gzipOptions: ParallelGzipOptions = {
    ...(options.gzipLevel !== undefined ? { level: options.gzipLevel } : {}),
    ...(options.gzipBlockBytes !== undefined ? { blockBytes: options.gzipBlockBytes } : {}),
    ...(options.gzipInFlightMax !== undefined ? { inFlightMax: options.gzipInFlightMax } : {}),
    ...(options.gzipAdaptive !== undefined ? { adaptive: options.gzipAdaptive } : {}),
  };
  const { level, blockBytes, inFlightMax, adaptive } = resolveParallelGzipOptions(gzipOptions);
  const io = options.io ?? nodeSnapshotIo;
  // Blocks go round: encoder -> queue -> (compressed) back to the pool; at most inFlightMax are compressing
  // and one is filling, so the pool seldom allocates past inFlightMax + 2.
  const pool = new BlockPool(blockBytes, inFlightMax + 2);
  const encoder = new StateBlockEncoder(blockBytes, options, true, pool);
  // records -> blocks -> gzip members (hashing state.bin on the way), delivered in order.
  const produce: StateMembersProducer = async (deliver) => {
    const stateHash = createHash('sha256');
    const infos: StateMemberInfo[] = [];
    const queue = new GzipMemberQueue(level, inFlightMax, (member) => deliver(member, infos.shift() as StateMemberInfo), adaptive, io, pool);
    const takeReady = async (): Promise<void> => {
      for (const { block, info } of encoder.take()) {
        stateHash.update(block);
        infos.push(info as StateMemberInfo);
        await queue.add(block);
      }
    };
    // Each batch is encoded as it arrives and held by no variable while gzip runs (relay.ts: a local would keep
    // it, and with it a Buffer per key and value of a RocksDB iteration, alive across the await).
    const records = source.records[Symbol.asyncIterator]();
    try {
      while (encodeBatch(encoder, await records.next())) {
        if (encoder.ready.length > 0) await takeReady();
      }
    } catch (err) {
      // As `for await` does when its body throws: the source is closed (a source that failed is done already), and
      // the first error is the one passed on.
      await records.return?.()?.catch(() => undefined);
      throw err;
    }
    encoder.finish();
    await takeReady();
    await queue.finish();
    return { stateSha256: stateHash.digest('hex'), stateBytes: encoder.bytes, stateKeys: encoder.keys };
  };
  return writeArchiveFromMembers(meta, produce, source.spoolPath, out, {
    gzipLevel: level,
    io,
    ...(options.onStateProgress !== undefined ? { onStateProgress: options.onStateProgress } : {}),
  });
}

/** encodeBatch encodes the records of one iterator result; false at the end. Errors: StateBlockEncoder.encode's. */
function encodeBatch(encoder: StateBlockEncoder, result: IteratorResult<readonly StateRecord[], unknown>): boolean {
  if (result.done === true) return false;
  for (const record of result.value) encoder.encode(record);
  return true;
}

/** copyRecord writes one state record (u32 key length, key, u32 value length, value) into `block` at `fill`, which has room; returns the fill after it. */
function copyRecord(block: Buffer, fill: number, key: Buffer, value: Buffer): number {
  block.writeUInt32BE(key.length, fill);
  key.copy(block, fill + 4);
  block.writeUInt32BE(value.length, fill + 4 + key.length);
  value.copy(block, fill + 8 + key.length);
  return fill + 8 + key.length + value.length;
}

/**
 * MemberGunzip: a gunzip that knows where each gzip member of the stream
 * lies. The output is the same bytes node:zlib's Gunzip gives for a
 * (multi-member) gzip stream; on the side it reports every whole member: its
 * compressed bytes, where its output lies, and (for a snapshot archive's
 * state members) whether that output is whole state records, with their
 * count and first key. A restore's install uses it to keep the upload's
 * compressed state members as its own snapshot instead of re-encoding and
 * re-compressing the state (SnapshotManager.installUpload).
 *
 * How: each member's header is parsed here (RFC 1952), its deflate data is
 * inflated raw on the threadpool (SnapshotIo.createInflateRaw, one inflater
 * per member): the inflater ends at the end of the deflate data and its
 * `bytesWritten` says where that was; the 8-byte trailer (CRC-32, ISIZE)
 * follows. ISIZE is always compared with the member's output; the CRC-32
 * only with `checkCrc` (zlib.crc32, Node 20.15+): a caller that checks the
 * compressed bytes another way (the chunk hashes of a kept upload, recorded
 * from bytes whose every CRC was checked at import) skips that pass.
 *
 * With a PiecePool (options.pool; an install, a restore's upload check) the
 * output goes into the pool's buffers, which its readers give back, not into
 * a fresh Buffer per piece: with the real IO each member is inflated on the
 * threadpool by node:zlib's native handle straight into them (RawInflater,
 * the same zlib, its steps driven here); otherwise the inflater's output is
 * copied into them.
 */
import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';

import { ArchiveError } from './errors.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';
import { STATE_KEY_BYTES_MAX } from './state-format.js';
import type { PiecePool } from './piece-pool.js';

/** GzipMemberRead: one whole gzip member as MemberGunzip read it. */
export interface GzipMemberRead {
  /** index: 0 for the stream's first member. */
  readonly index: number;
  /** bytes: the member, header to trailer, as it lies in the stream (empty with options.sizesOnly). */
  readonly bytes: Buffer;
  /** compressedBytes: the member's length in the stream, header to trailer. */
  readonly compressedBytes: number;
  /** outStart / outBytes: where its decompressed bytes lie in the whole stream's output. */
  readonly outStart: number;
  readonly outBytes: number;
  /** records: (members after the first) its output as whole state records, their count and the first key; null when it is not. */
  readonly records: { readonly keys: number; readonly firstKey: Buffer } | null;
  /** output: (members after the first) its decompressed bytes, in the pieces handed on (the same Buffers: not to be changed); empty with options.sizesOnly. */
  readonly output: readonly Buffer[];
}

/** MemberGunzipOptions: output piece size, the CRC check, the member report and where inflation runs. */
export interface MemberGunzipOptions {
  /** chunkSize: the largest output piece (the inflater's chunk size; default 64 KiB). */
  readonly chunkSize?: number;
  /** checkCrc: compare each member's CRC-32 with its output (default true; needs zlib.crc32). */
  readonly checkCrc?: boolean;
  /** onMember: called, and awaited, with each whole member in order, before any output of the next is handed on. */
  readonly onMember?: (member: GzipMemberRead) => void | Promise<void>;
  /**
   * sizesOnly: onMember is told where each member lies and what it holds, not its bytes (`bytes` and `output`
   * empty): nothing of a member is kept until its end (a member table found as an install reads its archive).
   */
  readonly sizesOnly?: boolean;
  /** keyBytesMax: the longest key a member of whole records may hold (default STATE_KEY_BYTES_MAX). */
  readonly keyBytesMax?: number;
  /** headHoldBytes: the first member's output is held back until it ends or exceeds this (headBytes; default 80 KiB). */
  readonly headHoldBytes?: number;
  /**
   * pool: each output piece is copied into a buffer of this pool (PiecePool) before it is handed on: the stream's
   * reader holds it once (and must release it), a member's `output` once more (its onMember's taker must release
   * each of those pieces). zlib's own output buffers then die young; the pool's carry the state. Its pieceBytes must
   * be at least chunkSize.
   */
  readonly pool?: PiecePool;
  readonly io?: SnapshotIo;
}

const GZIP_HEADER_BYTES = 10;
const EMPTY = Buffer.alloc(0);
const TRAILER_BYTES = 8;
const FHCRC = 0x02;
const FEXTRA = 0x04;
const FNAME = 0x08;
const FCOMMENT = 0x10;
const FRESERVED = 0xe0;
/**
 * GZIP_HEADER_STRING_BYTES_MAX: the longest FNAME or FCOMMENT (with its zero
 * byte) a member's header may carry. Snapshot archives carry neither; without
 * a bound, a header whose name never ends was carried whole, and joined again
 * with every chunk that came after it (memory up to the whole input, copying
 * quadratic in it: a peer's archive, a client's upload).
 */
export const GZIP_HEADER_STRING_BYTES_MAX = 64 * 1024;

/**
 * gzipHeaderBytes: the length of the gzip member header (RFC 1952) at
 * buf[pos], or 0 while the bytes there are not all of it yet. A header that
 * cannot be one throws `bad(why)`: not gzip, another compression method,
 * reserved flags, a file name or comment over GZIP_HEADER_STRING_BYTES_MAX.
 */
export function gzipHeaderBytes(buf: Buffer, pos: number, bad: (why: string) => Error): number {
  const avail = buf.length - pos;
  if (buf[pos] !== 0x1f || (avail > 1 && buf[pos + 1] !== 0x8b)) throw bad('incorrect header check');
  if (avail > 2 && buf[pos + 2] !== 8) throw bad('unknown compression method');
  if (avail < GZIP_HEADER_BYTES) return 0;
  const flags = buf[pos + 3] as number;
  if ((flags & FRESERVED) !== 0) throw bad('reserved header flags set');
  let at = pos + GZIP_HEADER_BYTES;
  if ((flags & FEXTRA) !== 0) {
    if (buf.length - at < 2) return 0;
    at += 2 + buf.readUInt16LE(at);
  }
  for (const flag of [FNAME, FCOMMENT]) {
    if ((flags & flag) === 0) continue;
    const zero = buf.indexOf(0, at, 'latin1');
    const stringBytes = zero < 0 ? buf.length - at : zero + 1 - at;
    if (zero < 0 ? stringBytes >= GZIP_HEADER_STRING_BYTES_MAX : stringBytes > GZIP_HEADER_STRING_BYTES_MAX) {
      throw bad(`a header ${flag === FNAME ? 'file name' : 'comment'} longer than ${GZIP_HEADER_STRING_BYTES_MAX} bytes`);
    }
    if (zero < 0) return 0;
    at = zero + 1;
  }
  if ((flags & FHCRC) !== 0) at += 2;
  return at > buf.length ? 0 : at - pos;
}

type InflateRaw = ReturnType<SnapshotIo['createInflateRaw']>;

/** ZlibHandle: the part of node:zlib's native handle (InflateRaw's `_handle`) that RawInflater drives. */
interface ZlibHandle {
  init(windowBits: number, level: number, memLevel: number, strategy: number, writeState: Uint32Array, callback: () => void, dictionary: undefined): void;
  write(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  close(): void;
  onerror?: (message: string, errno: number) => void;
}

type ZlibHandleClass = new (mode: number) => ZlibHandle;

let rawHandleClass: ZlibHandleClass | null | undefined;

/**
 * zlibHandleClass: node:zlib's native handle class, checked once (a raw deflate of a few bytes inflated through
 * it, as node:zlib's own InflateRaw drives it), or null where it is missing or behaves otherwise (another Node):
 * MemberGunzip then copies an InflateRaw stream's output into the pool instead.
 */
function zlibHandleClass(): ZlibHandleClass | null {
  if (rawHandleClass !== undefined) return rawHandleClass;
  rawHandleClass = null;
  try {
    const probe = zlib.createInflateRaw() as zlib.InflateRaw & { readonly _handle?: { readonly constructor?: unknown } };
    const ctor = probe._handle?.constructor as ZlibHandleClass | undefined;
    probe.close();
    if (typeof ctor !== 'function') return null;
    const h = new ctor(zlib.constants.INFLATERAW);
    const state = new Uint32Array(2);
    h.init(15, -1, 8, 0, state, () => undefined, undefined);
    const text = Buffer.from('snapcoord zlib handle probe');
    const input = zlib.deflateRawSync(text);
    const out = Buffer.alloc(64);
    h.writeSync(zlib.constants.Z_NO_FLUSH, input, 0, input.length, out, 0, out.length);
    h.close();
    if (state[1] === 0 && out.subarray(0, out.length - (state[0] as number)).equals(text)) rawHandleClass = ctor;
  } catch {
    rawHandleClass = null;
  }
  return rawHandleClass;
}

/**
 * RawInflater: one raw inflate on node:zlib's native handle, each step run on the threadpool (as an InflateRaw
 * stream's) into the output buffer the caller gives: no Buffer allocated per output piece.
 */
class RawInflater {
  readonly #handle: ZlibHandle;
  readonly #state = new Uint32Array(2);
  #pending: { resolve: (r: { readonly outLeft: number; readonly inLeft: number }) => void; reject: (e: Error) => void; input: Uint8Array; out: Uint8Array } | null = null;
  #error: Error | null = null;
  #closed = false;

  constructor(ctor: ZlibHandleClass) {
    this.#handle = new ctor(zlib.constants.INFLATERAW);
    this.#handle.onerror = (message: string) => {
      this.#error = new Error(message);
      const p = this.#pending;
      this.#pending = null;
      p?.reject(this.#error);
      this.close();
    };
    this.#handle.init(15, -1, 8, 0, this.#state, () => {
      const p = this.#pending;
      this.#pending = null;
      p?.resolve({ outLeft: this.#state[0] as number, inLeft: this.#state[1] as number });
    }, undefined);
  }

  /** write: inflates input[inOff, inOff + inLen) into `out`; resolves with the output room and the input left. */
  write(input: Uint8Array, inOff: number, inLen: number, out: Uint8Array): Promise<{ readonly outLeft: number; readonly inLeft: number }> {
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#closed) return Promise.reject(new Error('the inflater was closed'));
    return new Promise((resolve, reject) => {
      // input and out are held here until the step is done (the native side only has their addresses).
      this.#pending = { resolve, reject, input, out };
      this.#handle.write(zlib.constants.Z_NO_FLUSH, input, inOff, inLen, out, 0, out.length);
    });
  }

  /** close frees the native state (once a step in flight is done: node:zlib's own rule). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handle.close();
  }
}

/**
 * RecordWalker follows state records (u32be key length, key, u32be value
 * length, value) across output pieces by their lengths alone: the count,
 * the first key, and whether the bytes so far end on a record boundary.
 */
export class RecordWalker {
  keys = 0;
  readonly #keyBytesMax: number;

  /** keyBytesMax: a longer key means the bytes are not records (the walk stops: result() null). */
  constructor(keyBytesMax: number) {
    this.#keyBytesMax = keyBytesMax;
  }

  #broken = false;
  /** #field: 0 key length, 1 key, 2 value length, 3 value. */
  #field = 0;
  #len = 0;
  #lenGot = 0;
  #skip = 0;
  #firstKey: Buffer[] = [];
  #firstKeyBytes = 0;

  feed(piece: Buffer): void {
    let pos = 0;
    while (pos < piece.length && !this.#broken) {
      if (this.#field === 0 || this.#field === 2) {
        while (this.#lenGot < 4 && pos < piece.length) {
          this.#len = this.#len * 256 + (piece[pos] as number);
          this.#lenGot++;
          pos++;
        }
        if (this.#lenGot < 4) return;
        if (this.#field === 0 && (this.#len === 0 || this.#len > this.#keyBytesMax)) {
          this.#broken = true;
          return;
        }
        this.#skip = this.#len;
        this.#field++;
        this.#len = 0;
        this.#lenGot = 0;
        if (this.#skip > 0) continue;
      }
      const n = Math.min(this.#skip, piece.length - pos);
      if (this.#field === 1 && this.keys === 0 && n > 0) {
        this.#firstKey.push(Buffer.from(piece.subarray(pos, pos + n)));
        this.#firstKeyBytes += n;
      }
      pos += n;
      this.#skip -= n;
      if (this.#skip > 0) return;
      if (this.#field === 3) this.keys++;
      this.#field = (this.#field + 1) % 4;
    }
  }

  /** result: the count and first key when everything fed is whole records (at least one), else null. */
  result(): { readonly keys: number; readonly firstKey: Buffer } | null {
    if (this.#broken || this.keys === 0 || this.#field !== 0 || this.#lenGot !== 0) return null;
    return { keys: this.keys, firstKey: Buffer.concat(this.#firstKey, this.#firstKeyBytes) };
  }
}

/**
 * MemberGunzip is a Transform from a gzip stream of one or more members to
 * its decompressed bytes (see the file comment), with backpressure.
 * `bytesWritten` counts the compressed bytes consumed (as zlib's). `headBytes`
 * is the first member's output size once that member ended with at most
 * options.headHoldBytes of output (none of it is handed on before), else
 * null: a reader that sees the first output knows whether the first member
 * ended exactly there. Errors (the stream's): ArchiveError `corrupt-gzip` (a
 * bad header, deflate data, ISIZE or CRC), `trailing-garbage` (bytes after a
 * member that do not start another), `truncated` (the stream ends inside a
 * member), onMember's own error. RangeError: checkCrc without zlib.crc32.
 */
export class MemberGunzip extends Transform {
  bytesWritten = 0;
  headBytes: number | null = null;
  readonly #io: SnapshotIo;
  readonly #chunkSize: number;
  readonly #crc32: ((data: Uint8Array, value?: number) => number) | null;
  #onMember: MemberGunzipOptions['onMember'];
  readonly #sizesOnly: boolean;
  readonly #keyBytesMax: number;
  readonly #headHoldBytes: number;
  #phase: 'header' | 'body' | 'trailer' = 'header';
  #carry: Buffer | null = null;
  #index = 0;
  #parts: Buffer[] = [];
  #partsBytes = 0;
  #outTotal = 0;
  #memberOutStart = 0;
  #memberOut = 0;
  #crc = 0;
  #walker: RecordWalker | null = null;
  #held: Buffer[] | null = null;
  #pieces: Buffer[] = [];
  #heldBytes = 0;
  #inflater: InflateRaw | null = null;
  #inflaterEnded: Promise<void> | null = null;
  #inflaterError: Error | null = null;
  readonly #pool: PiecePool | null;
  /** #rawClass: with a pool and the real IO, each member is inflated by a RawInflater straight into the pool's buffers. */
  readonly #rawClass: ZlibHandleClass | null;
  #raw: RawInflater | null = null;
  /** #full: the last push was refused (the reader is behind); #wantRead: the pump waiting for _read. */
  #full = false;
  #wantRead: (() => void) | null = null;

  constructor(options: MemberGunzipOptions = {}) {
    super();
    this.#io = options.io ?? nodeSnapshotIo;
    this.#chunkSize = options.chunkSize ?? 64 * 1024;
    this.#pool = options.pool ?? null;
    if (this.#pool !== null && this.#pool.pieceBytes < this.#chunkSize) throw new RangeError(`MemberGunzip: the pool's pieces (${this.#pool.pieceBytes} bytes) are smaller than chunkSize ${this.#chunkSize}`);
    this.#rawClass = this.#pool !== null && this.#io === nodeSnapshotIo ? zlibHandleClass() : null;
    const crc32 = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
    if (options.checkCrc !== false && crc32 === undefined) throw new RangeError('MemberGunzip: checkCrc needs zlib.crc32 (Node 20.15 or later)');
    this.#crc32 = options.checkCrc === false ? null : (crc32 ?? null);
    this.#onMember = options.onMember;
    this.#sizesOnly = options.sizesOnly === true;
    this.#headHoldBytes = options.headHoldBytes ?? 80 * 1024;
    this.#keyBytesMax = options.keyBytesMax ?? STATE_KEY_BYTES_MAX;
  }

  /** stopReporting: no member after the current one is reported (nor its bytes kept, nor its records walked). */
  stopReporting(): void {
    this.#onMember = undefined;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#pump(chunk).then(
      () => callback(),
      (err: unknown) => callback(err as Error),
    );
  }

  override _flush(callback: TransformCallback): void {
    if (this.#phase !== 'header' || this.#carry !== null) {
      callback(new ArchiveError('truncated', `the gzip stream ends inside member ${this.#index} (unexpected end of file)`));
      return;
    }
    callback();
  }

  override _read(size: number): void {
    this.#inflater?.resume();
    this.#full = false;
    const wake = this.#wantRead;
    this.#wantRead = null;
    wake?.();
    super._read(size);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#inflater?.destroy();
    this.#inflater = null;
    this.#raw?.close();
    this.#raw = null;
    callback(error);
  }

  /** #take marks `n` bytes of `buf` from `pos` as consumed (part of the current member). */
  #take(buf: Buffer, pos: number, n: number): void {
    if (n === 0) return;
    if (this.#onMember !== undefined && !this.#sizesOnly) this.#parts.push(buf.subarray(pos, pos + n));
    this.#partsBytes += n;
    this.bytesWritten += n;
  }

  async #pump(chunk: Buffer): Promise<void> {
    let buf = chunk;
    if (this.#carry !== null) {
      buf = Buffer.concat([this.#carry, chunk]);
      this.#carry = null;
    }
    let pos = 0;
    while (pos < buf.length) {
      if (this.#phase === 'header') {
        const headerBytes = this.#headerBytes(buf, pos);
        if (headerBytes === 0) {
          this.#carry = buf.subarray(pos);
          return;
        }
        this.#startMember();
        this.#take(buf, pos, headerBytes);
        pos += headerBytes;
      } else if (this.#phase === 'body' && this.#raw !== null) {
        const { consumed, ended } = await this.#inflateRaw(this.#raw, buf, pos);
        this.#take(buf, pos, consumed);
        pos += consumed;
        if (ended) {
          this.#raw?.close();
          this.#raw = null;
          this.#phase = 'trailer';
        }
      } else if (this.#phase === 'body') {
        const piece = buf.subarray(pos);
        const consumed = await this.#inflate(piece);
        this.#take(buf, pos, consumed);
        pos += consumed;
        if (consumed < piece.length) {
          // The deflate data ended inside this piece: every output of the member is handed on once the inflater ends.
          await this.#inflaterEnded;
          if (this.#inflaterError !== null) throw this.#inflaterError;
          // Its writable side never ends (the input past the data is not its): closed here, not left to GC with its zlib state.
          this.#inflater?.destroy();
          this.#inflater = null;
          this.#phase = 'trailer';
        }
      } else {
        if (buf.length - pos < TRAILER_BYTES) {
          this.#carry = buf.subarray(pos);
          return;
        }
        this.#checkTrailer(buf, pos);
        this.#take(buf, pos, TRAILER_BYTES);
        pos += TRAILER_BYTES;
        await this.#endMember();
      }
    }
  }

  /** #headerBytes: the length of the gzip header at buf[pos], 0 while it is incomplete. Errors: ArchiveError. */
  #headerBytes(buf: Buffer, pos: number): number {
    const bad = (why: string): ArchiveError =>
      this.#index === 0 ? new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${why})`) : new ArchiveError('trailing-garbage', `data after the end of the gzip stream (${why})`);
    return gzipHeaderBytes(buf, pos, bad);
  }

  #startMember(): void {
    this.#parts = [];
    this.#partsBytes = 0;
    this.#memberOutStart = this.#outTotal;
    this.#memberOut = 0;
    this.#crc = 0;
    this.#walker = this.#onMember !== undefined && this.#index > 0 ? new RecordWalker(this.#keyBytesMax) : null;
    this.#pieces = [];
    this.#held = this.#index === 0 ? [] : null;
    this.#heldBytes = 0;
    this.#inflaterError = null;
    this.#phase = 'body';
    if (this.#rawClass !== null) {
      this.#raw = new RawInflater(this.#rawClass);
      return;
    }
    const inflater = this.#io.createInflateRaw({ chunkSize: this.#chunkSize });
    this.#inflaterEnded = new Promise<void>((resolve) => {
      inflater.once('end', resolve);
      inflater.once('error', (err: Error) => {
        this.#inflaterError = new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${err.message})`, { cause: err });
        resolve();
      });
    });
    inflater.on('data', (piece: Buffer) => this.#output(piece));
    this.#inflater = inflater;
    this.#phase = 'body';
  }

  /** #inflate writes `piece` into the member's inflater; resolves with the bytes it consumed (fewer: the deflate data ended). */
  #inflate(piece: Buffer): Promise<number> {
    const inflater = this.#inflater as InflateRaw;
    const before = inflater.bytesWritten;
    return new Promise<number>((resolve, reject) => {
      const failed = (): void => reject(this.#inflaterError ?? new ArchiveError('corrupt-gzip', 'the gzip stream is damaged'));
      if (this.#inflaterError !== null) {
        failed();
        return;
      }
      void this.#inflaterEnded?.then(() => {
        if (this.#inflaterError !== null) failed();
      });
      inflater.write(piece, (err) => {
        if (err !== null && err !== undefined) failed();
        else resolve(inflater.bytesWritten - before);
      });
    });
  }

  /**
   * #inflateRaw inflates buf[pos..] into pool pieces, each handed on as it is filled (waiting while the reader is
   * behind); resolves with the input bytes consumed and whether the deflate data ended (input left, room left:
   * the rule SyncMemberGunzip follows). Errors: ArchiveError `corrupt-gzip`.
   */
  async #inflateRaw(raw: RawInflater, buf: Buffer, pos: number): Promise<{ consumed: number; ended: boolean }> {
    const pool = this.#pool as PiecePool;
    let at = pos;
    for (;;) {
      const piece = pool.take(this.#chunkSize);
      const inLen = buf.length - at;
      let step: { readonly outLeft: number; readonly inLeft: number };
      try {
        step = await raw.write(buf, at, inLen, piece);
      } catch (err) {
        pool.release(piece);
        throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${(err as Error).message})`, { cause: err });
      }
      at += inLen - step.inLeft;
      const produced = piece.length - step.outLeft;
      if (produced > 0) this.#output(piece.subarray(0, produced), true);
      else pool.release(piece);
      if (this.destroyed) throw new Error('the gunzip was destroyed');
      if (this.#full) {
        await new Promise<void>((resolve) => (this.#wantRead = resolve));
        if (this.destroyed) throw new Error('the gunzip was destroyed');
      }
      if (step.outLeft !== 0) return { consumed: at - pos, ended: step.inLeft !== 0 };
      if (step.inLeft === 0) return { consumed: at - pos, ended: false };
    }
  }

  #output(out: Buffer, pooled = false): void {
    let piece = out;
    if (this.#pool !== null && !pooled) {
      piece = this.#pool.take(out.length);
      out.copy(piece);
    }
    this.#memberOut += piece.length;
    this.#outTotal += piece.length;
    if (this.#crc32 !== null) this.#crc = this.#crc32(piece, this.#crc);
    if (this.#walker !== null) {
      this.#walker.feed(piece);
      if (!this.#sizesOnly) {
        this.#pieces.push(piece);
        this.#pool?.retain(piece);
      }
    }
    if (this.#held !== null) {
      this.#held.push(piece);
      this.#heldBytes += piece.length;
      if (this.#heldBytes > this.#headHoldBytes) this.#release();
      return;
    }
    if (!this.push(piece)) {
      this.#full = true;
      this.#inflater?.pause();
    }
  }

  /** #release hands on the first member's held output. */
  #release(): void {
    const held = this.#held ?? [];
    this.#held = null;
    let full = false;
    for (const piece of held) full = !this.push(piece) || full;
    if (full) {
      this.#full = true;
      this.#inflater?.pause();
    }
  }

  #checkTrailer(buf: Buffer, pos: number): void {
    const size = buf.readUInt32LE(pos + 4);
    if (size !== this.#memberOut % 2 ** 32) {
      throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (member ${this.#index}: ISIZE ${size}, ${this.#memberOut} bytes out)`);
    }
    if (this.#crc32 !== null && buf.readUInt32LE(pos) !== this.#crc) {
      throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (member ${this.#index}: incorrect data check)`);
    }
  }

  async #endMember(): Promise<void> {
    const index = this.#index;
    if (index === 0 && this.#held !== null) {
      this.headBytes = this.#memberOut;
      this.#release();
    }
    this.#index++;
    this.#phase = 'header';
    if (this.#onMember === undefined) return;
    const compressedBytes = this.#partsBytes;
    const bytes = this.#sizesOnly ? EMPTY : this.#parts.length === 1 ? (this.#parts[0] as Buffer) : Buffer.concat(this.#parts, this.#partsBytes);
    this.#parts = [];
    const output = this.#pieces;
    this.#pieces = [];
    await this.#onMember({ index, bytes, compressedBytes, outStart: this.#memberOutStart, outBytes: this.#memberOut, records: this.#walker?.result() ?? null, output });
  }
}

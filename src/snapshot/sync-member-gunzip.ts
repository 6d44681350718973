/**
 * SyncMemberGunzip: MemberGunzip's gunzip (a multi-member gzip stream to its
 * bytes, each member's header parsed here, its deflate data inflated raw,
 * its ISIZE and CRC-32 checked, each whole member reported) driven
 * synchronously, for a thread that may block: the install's read on its
 * worker (install-read-job.ts). No stream, no threadpool round trip, no
 * promise per piece: push() the next compressed bytes, take the output with
 * next() until it says null (at most `chunkSize` bytes a piece, each a fresh
 * Buffer: a bounded step whatever the input's ratio), end() at the input's
 * end. Same output, same refusals (ArchiveError with MemberGunzip's codes and
 * messages) as MemberGunzip; member reports are sizes only (its sizesOnly).
 *
 * The inflation is zlib's own (node:zlib's InflateRaw handle, stepped with
 * its writeSync as node:zlib's own synchronous calls step it, into our output
 * buffer): the handle and its write state are node:zlib internals, present
 * from Node 10 to 22; the constructor refuses to run without them
 * (RangeError), which the install's tests would show at once.
 */
import * as zlib from 'node:zlib';

import { ArchiveError } from './errors.js';
import { RecordWalker, gzipHeaderBytes, type GzipMemberRead } from './member-gunzip.js';
import { STATE_KEY_BYTES_MAX } from './state-format.js';

const TRAILER_BYTES = 8;
const EMPTY = Buffer.alloc(0);

/** InflateHandle: the part of node:zlib's native handle stepped here. */
interface InflateHandle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
}

type Inflater = zlib.InflateRaw & { readonly _handle?: InflateHandle; readonly _writeState?: Uint32Array };

/** SyncMemberGunzipOptions: as MemberGunzipOptions' (sizes-only member reports). */
export interface SyncMemberGunzipOptions {
  /** chunkSize: the largest output piece (default 64 KiB). */
  readonly chunkSize?: number;
  /** checkCrc: compare each member's CRC-32 with its output (default true). */
  readonly checkCrc?: boolean;
  /** onMember: told of each whole member, in order, before any output of the next (sizes only: `bytes` and `output` empty). */
  readonly onMember?: (member: GzipMemberRead) => void;
  /** keyBytesMax: the longest key a member of whole records may hold (default STATE_KEY_BYTES_MAX). */
  readonly keyBytesMax?: number;
}

export class SyncMemberGunzip {
  /** bytesWritten: the compressed bytes consumed (header to trailer of every member so far). */
  bytesWritten = 0;
  readonly #chunkSize: number;
  readonly #checkCrc: boolean;
  readonly #onMember: SyncMemberGunzipOptions['onMember'];
  readonly #keyBytesMax: number;
  #phase: 'header' | 'body' | 'trailer' = 'header';
  #in: Buffer = EMPTY;
  #pos = 0;
  #index = 0;
  #memberBytes = 0;
  #outTotal = 0;
  #memberOutStart = 0;
  #memberOut = 0;
  #crc = 0;
  #walker: RecordWalker | null = null;
  #inflater: Inflater | null = null;

  constructor(options: SyncMemberGunzipOptions = {}) {
    this.#chunkSize = options.chunkSize ?? 64 * 1024;
    this.#checkCrc = options.checkCrc !== false;
    this.#onMember = options.onMember;
    this.#keyBytesMax = options.keyBytesMax ?? STATE_KEY_BYTES_MAX;
    const probe = zlib.createInflateRaw() as Inflater;
    const ok = typeof probe._handle?.writeSync === 'function' && probe._writeState instanceof Uint32Array;
    probe.close();
    if (!ok) throw new RangeError(`SyncMemberGunzip: node:zlib's InflateRaw has no handle to step synchronously (Node ${process.version})`);
  }

  /** push: the next compressed bytes; call once next() has returned null (the bytes before are all taken). */
  push(chunk: Buffer): void {
    if (this.#pos < this.#in.length) {
      // A header or trailer split across the input's chunks: its start was kept (#wait).
      this.#in = Buffer.concat([this.#in.subarray(this.#pos), chunk]);
    } else {
      this.#in = chunk;
    }
    this.#pos = 0;
  }

  /** next: the next decompressed piece, or null once every byte pushed is taken (push more, or end()). Throws ArchiveError. */
  next(): Buffer | null {
    for (;;) {
      const buf = this.#in;
      if (this.#pos >= buf.length) return null;
      if (this.#phase === 'header') {
        const headerBytes = this.#headerBytes(buf, this.#pos);
        if (headerBytes === 0) return this.#wait();
        this.#startMember();
        this.#take(headerBytes);
      } else if (this.#phase === 'body') {
        const inflater = this.#inflater as Inflater;
        const out = Buffer.allocUnsafe(this.#chunkSize);
        const inLen = buf.length - this.#pos;
        (inflater._handle as InflateHandle).writeSync(zlib.constants.Z_NO_FLUSH, buf, this.#pos, inLen, out, 0, out.length);
        if (inflater.errored !== null || inflater.destroyed) {
          const err = inflater.errored ?? new Error('the inflater was closed');
          throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${err.message})`, { cause: err });
        }
        const state = inflater._writeState as Uint32Array;
        const outLeft = state[0] as number;
        const inLeft = state[1] as number;
        this.#take(inLen - inLeft);
        if (outLeft !== 0 && inLeft !== 0) {
          // Room for output and input left that it did not take: the deflate data ended (as MemberGunzip learns it).
          inflater.close();
          this.#inflater = null;
          this.#phase = 'trailer';
        }
        const produced = out.length - outLeft;
        if (produced > 0) return this.#output(out.subarray(0, produced));
      } else {
        if (buf.length - this.#pos < TRAILER_BYTES) return this.#wait();
        this.#checkTrailer(buf, this.#pos);
        this.#take(TRAILER_BYTES);
        this.#endMember();
      }
    }
  }

  /** end: the input ended (after next() returned null); throws `truncated` inside a member. */
  end(): void {
    if (this.#phase !== 'header' || this.#pos < this.#in.length) {
      this.close();
      throw new ArchiveError('truncated', `the gzip stream ends inside member ${this.#index} (unexpected end of file)`);
    }
  }

  /** close frees the inflater (idempotent). */
  close(): void {
    this.#inflater?.close();
    this.#inflater = null;
  }

  /** #wait: the rest of the input is the start of a header or trailer: kept (a copy: the caller may reuse its buffer) for the next push. */
  #wait(): null {
    this.#in = Buffer.from(this.#in.subarray(this.#pos));
    this.#pos = 0;
    return null;
  }

  #take(n: number): void {
    this.#pos += n;
    this.#memberBytes += n;
    this.bytesWritten += n;
  }

  #headerBytes(buf: Buffer, pos: number): number {
    const bad = (why: string): ArchiveError =>
      this.#index === 0 ? new ArchiveError('corrupt-gzip', `the gzip stream is damaged (${why})`) : new ArchiveError('trailing-garbage', `data after the end of the gzip stream (${why})`);
    return gzipHeaderBytes(buf, pos, bad);
  }

  #startMember(): void {
    this.#memberBytes = 0;
    this.#memberOutStart = this.#outTotal;
    this.#memberOut = 0;
    this.#crc = 0;
    this.#walker = this.#onMember !== undefined && this.#index > 0 ? new RecordWalker(this.#keyBytesMax) : null;
    this.#inflater = zlib.createInflateRaw() as Inflater;
    // An error is reported through the stream (destroy): kept there (errored), read after each step; never uncaught.
    this.#inflater.on('error', () => undefined);
    this.#phase = 'body';
  }

  #output(piece: Buffer): Buffer {
    this.#memberOut += piece.length;
    this.#outTotal += piece.length;
    if (this.#checkCrc) this.#crc = zlib.crc32(piece, this.#crc);
    this.#walker?.feed(piece);
    return piece;
  }

  #checkTrailer(buf: Buffer, pos: number): void {
    const size = buf.readUInt32LE(pos + 4);
    if (size !== this.#memberOut % 2 ** 32) {
      throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (member ${this.#index}: ISIZE ${size}, ${this.#memberOut} bytes out)`);
    }
    if (this.#checkCrc && buf.readUInt32LE(pos) !== this.#crc) {
      throw new ArchiveError('corrupt-gzip', `the gzip stream is damaged (member ${this.#index}: incorrect data check)`);
    }
  }

  #endMember(): void {
    const index = this.#index;
    this.#index++;
    this.#phase = 'header';
    this.#onMember?.({ index, bytes: EMPTY, compressedBytes: this.#memberBytes, outStart: this.#memberOutStart, outBytes: this.#memberOut, records: this.#walker?.result() ?? null, output: [] });
  }
}

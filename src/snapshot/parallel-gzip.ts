/**
 * Parallel gzip: a byte stream cut into fixed-size blocks, each block
 * compressed as an independent gzip member on libuv's threadpool (zlib's async
 * API), the members written in order. The concatenation of gzip members is one
 * valid gzip stream (RFC 1952 §2.2: "a gzip file consists of a series of
 * members"): `gzip -d`, `tar xzf` and Node's gunzip read it whole.
 *
 * Block boundaries depend only on byte offsets in the input (never on how the
 * input was chunked), so the same bytes, block size and level give the same
 * output. A block that does not compress is stored (gzip level 0; see
 * gzipBlock). Memory is bounded: at most `inFlightMax` blocks (input and output)
 * are held at once, plus the block being filled.
 */
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { gzip, type ZlibOptions } from 'node:zlib';

/** GZIP_BLOCK_BYTES_DEFAULT: bytes of input per gzip member (1 MiB). */
export const GZIP_BLOCK_BYTES_DEFAULT = 1024 * 1024;
/**
 * GZIP_LEVEL_DEFAULT: the gzip level of new archives (1). Measured with
 * bench/create.ts on this 2-core machine: level 1 compresses text-like values
 * about as well as 6 (ratio within a few %) at 1.5-3x its speed, and random
 * values do not compress at any level.
 */
export const GZIP_LEVEL_DEFAULT = 1;

/** SAMPLE_BYTES: bytes of a block (two pieces of half this, at its start and middle) compressed first to judge it. */
const SAMPLE_BYTES = 64 * 1024;
/**
 * INCOMPRESSIBLE_RATIO: a block whose sample compresses less than this (input/output) is stored
 * (gzip level 0): random bytes do not compress at any level, and storing them costs a
 * thirtieth of deflating them.
 */
const INCOMPRESSIBLE_RATIO = 1.03;

/** gzipInFlightDefault: blocks compressed at once by default (the cores, at least 2). */
export function gzipInFlightDefault(): number {
  return Math.max(2, availableParallelism());
}

/** ParallelGzipOptions: compression level, block size and concurrency (all optional). */
export interface ParallelGzipOptions {
  /** gzip level 0-9 (default GZIP_LEVEL_DEFAULT). */
  readonly level?: number;
  /** input bytes per gzip member, 64 KiB to 64 MiB (default 1 MiB). */
  readonly blockBytes?: number;
  /** blocks compressed at once, 1 to 64 (default gzipInFlightDefault()). */
  readonly inFlightMax?: number;
  /** store (gzip level 0) a block whose sample does not compress (default true; see gzipBlock). */
  readonly storeIncompressible?: boolean;
}

interface Resolved {
  readonly level: number;
  readonly blockBytes: number;
  readonly inFlightMax: number;
  readonly storeIncompressible: boolean;
}

function checkInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be a whole number in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/** resolveParallelGzipOptions fills in the defaults and checks the ranges. Errors: RangeError. */
export function resolveParallelGzipOptions(options: ParallelGzipOptions = {}): Resolved {
  return {
    level: checkInt('gzip level', options.level ?? GZIP_LEVEL_DEFAULT, 0, 9),
    blockBytes: checkInt('gzip blockBytes', options.blockBytes ?? GZIP_BLOCK_BYTES_DEFAULT, 64 * 1024, 64 * 1024 * 1024),
    inFlightMax: checkInt('gzip inFlightMax', options.inFlightMax ?? gzipInFlightDefault(), 1, 64),
    storeIncompressible: options.storeIncompressible ?? true,
  };
}

/**
 * gzipMember compresses `block` as one complete gzip member on the threadpool
 * (one round trip: the output buffer is sized for the worst case).
 */
export function gzipMember(block: Uint8Array, level: number): Promise<Buffer> {
  // deflateBound: stored blocks add 5 bytes per 16 KiB at worst; gzip adds 18 bytes of header and trailer.
  const zlibOptions: ZlibOptions = { level, chunkSize: Math.max(64 * 1024, block.length + (block.length >> 10) + 1024) };
  return new Promise<Buffer>((resolve, reject) => {
    gzip(block, zlibOptions, (err, out) => {
      if (err) reject(err);
      else resolve(out);
    });
  });
}

/**
 * blockGzipLevel is the level gzipBlock uses for `block`: `level`, unless
 * `storeIncompressible` is set, the level is above 0, the block is larger than
 * SAMPLE_BYTES and a sample of it (its first and middle 32 KiB, compressed
 * at `level`) shrinks by less than 3%: then 0 (stored). zlib would mostly
 * emit stored blocks for such data too, after deflating it at full cost; the
 * choice depends only on the block's bytes, so output stays deterministic.
 */
export async function blockGzipLevel(block: Uint8Array, level: number, storeIncompressible: boolean): Promise<number> {
  if (!storeIncompressible || level === 0 || block.length <= SAMPLE_BYTES) return level;
  const half = SAMPLE_BYTES / 2;
  const mid = Math.floor(block.length / 2);
  const sample = Buffer.concat([block.subarray(0, half), block.subarray(mid, mid + half)]);
  const packed = await gzipMember(sample, level);
  return sample.length / packed.length < INCOMPRESSIBLE_RATIO ? 0 : level;
}

/** gzipBlock compresses `block` as one gzip member at blockGzipLevel(block, level, storeIncompressible). */
export async function gzipBlock(block: Uint8Array, level: number, storeIncompressible: boolean): Promise<Buffer> {
  return gzipMember(block, await blockGzipLevel(block, level, storeIncompressible));
}

interface Job {
  readonly member: Promise<Buffer>;
  readonly inputBytes: number;
}

/**
 * GzipMemberQueue compresses blocks concurrently and hands the members to
 * `deliver` in the order the blocks were added, one at a time (the next
 * member is delivered only after `deliver` for the previous one resolved).
 *
 * Contract: add() resolves once fewer than `inFlightMax` blocks are pending
 * (it may deliver members meanwhile), so an awaited add() bounds memory;
 * calls to add() and finish() must not overlap. finish() delivers every
 * pending member. A compression or `deliver` failure rejects the add() or
 * finish() that meets it, and every later call; the block passed to add() must
 * not be changed until the queue is done with it (add a fresh buffer each time).
 */
export class GzipMemberQueue {
  readonly #level: number;
  readonly #inFlightMax: number;
  readonly #storeIncompressible: boolean;
  readonly #deliver: (member: Buffer, inputBytes: number) => Promise<void> | void;
  readonly #jobs: Job[] = [];
  #failure: unknown = null;
  /** memberCount: members delivered so far. */
  memberCount = 0;

  constructor(
    level: number,
    inFlightMax: number,
    deliver: (member: Buffer, inputBytes: number) => Promise<void> | void,
    storeIncompressible = true,
  ) {
    this.#level = checkInt('gzip level', level, 0, 9);
    this.#inFlightMax = checkInt('gzip inFlightMax', inFlightMax, 1, 64);
    this.#deliver = deliver;
    this.#storeIncompressible = storeIncompressible;
  }

  /** pending: blocks added but not yet delivered. */
  get pending(): number {
    return this.#jobs.length;
  }

  /** add starts compressing `block`; resolves when another block may be added. */
  async add(block: Uint8Array): Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    const member = gzipBlock(block, this.#level, this.#storeIncompressible);
    member.catch(() => undefined); // met (and rethrown) when delivered
    this.#jobs.push({ member, inputBytes: block.length });
    while (this.#jobs.length >= this.#inFlightMax) await this.#deliverHead();
  }

  /** finish delivers every pending member, in order. */
  async finish(): Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    while (this.#jobs.length > 0) await this.#deliverHead();
  }

  async #deliverHead(): Promise<void> {
    const job = this.#jobs[0]!;
    try {
      const member = await job.member;
      this.#jobs.shift();
      await this.#deliver(member, job.inputBytes);
      this.memberCount += 1;
    } catch (err) {
      this.#failure = err;
      this.#jobs.length = 0;
      throw err;
    }
  }
}

/**
 * ParallelGzip is a Transform from bytes to a multi-member gzip stream:
 * blocks of `blockBytes` input (the last one shorter) each become one gzip
 * member, compressed `inFlightMax` at a time on the threadpool and pushed in
 * order. Empty input gives one empty member (a valid gzip stream of nothing).
 * `bytesIn`/`bytesOut` count input and output; `members` the members pushed.
 * Errors: RangeError for bad options; zlib's error if compression fails.
 */
export class ParallelGzip extends Transform {
  readonly #blockBytes: number;
  readonly #queue: GzipMemberQueue;
  #block: Buffer;
  #fill = 0;
  bytesIn = 0;
  bytesOut = 0;

  constructor(options: ParallelGzipOptions = {}) {
    const { level, blockBytes, inFlightMax, storeIncompressible } = resolveParallelGzipOptions(options);
    super({ readableHighWaterMark: blockBytes, writableHighWaterMark: 64 * 1024 });
    this.#blockBytes = blockBytes;
    this.#block = Buffer.allocUnsafe(blockBytes);
    this.#queue = new GzipMemberQueue(
      level,
      inFlightMax,
      (member) => {
        this.bytesOut += member.length;
        this.push(member);
      },
      storeIncompressible,
    );
  }

  /** members: gzip members pushed so far. */
  get members(): number {
    return this.#queue.memberCount;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#take(chunk).then(() => callback(), (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))));
  }

  override _flush(callback: TransformCallback): void {
    const last = this.#fill > 0 || this.bytesIn === 0 ? this.#block.subarray(0, this.#fill) : null;
    (async () => {
      if (last !== null) await this.#queue.add(last);
      await this.#queue.finish();
    })().then(() => callback(), (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))));
  }

  async #take(chunk: Buffer): Promise<void> {
    this.bytesIn += chunk.length;
    let pos = 0;
    while (pos < chunk.length) {
      const n = Math.min(this.#blockBytes - this.#fill, chunk.length - pos);
      chunk.copy(this.#block, this.#fill, pos, pos + n);
      this.#fill += n;
      pos += n;
      if (this.#fill === this.#blockBytes) {
        const full = this.#block;
        this.#block = Buffer.allocUnsafe(this.#blockBytes);
        this.#fill = 0;
        await this.#queue.add(full);
      }
    }
  }
}

/**
 * Parallel gzip: a byte stream cut into fixed-size blocks, each block
 * compressed as an independent gzip member on libuv's threadpool (zlib's async
 * API), the members written in order. The concatenation of gzip members is one
 * valid gzip stream (RFC 1952 §2.2: "a gzip file consists of a series of
 * members"): `gzip -d`, `tar xzf` and Node's gunzip read it whole.
 *
 * Block boundaries depend only on byte offsets in the input (never on how the
 * input was chunked), so the same bytes, block size and level give the same
 * output. Each block is stored, Huffman coded or deflated as a sample of it
 * says (blockGzipChoice). Memory is bounded: at most `inFlightMax` blocks (input and output)
 * are held at once, plus the block being filled; input blocks are reused (BlockPool) and
 * zlib's output buffers are sized from the sample, not the block.
 */
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, type ZlibOptions } from 'node:zlib';
import { BlockPool } from './block-pool.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';

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
 * INCOMPRESSIBLE_RATIO: a block whose sample shrinks less than this (input/output, Huffman coded)
 * is stored (gzip level 0): random bytes do not compress at any level, and zlib would emit stored
 * blocks for them anyway, after deflating them at full cost.
 */
const INCOMPRESSIBLE_RATIO = 1.03;
/**
 * LZ_GAIN_MIN: a block is deflated at the asked level only if that compresses its sample at least
 * this much better than Huffman coding alone; otherwise it is Huffman coded (zlib Z_HUFFMAN_ONLY),
 * which costs 2.5-3x less CPU. Measured (bench/create.ts, MB per CPU-second, ratio): text-like
 * values level 1: 51-57 MB/s 1.87:1, Huffman only: 110-139 MB/s 1.67:1 (gain 1.12, Huffman chosen);
 * redundant data (repeated values, JSON, English) gains 1.5x or far more, and stays deflated.
 */
const LZ_GAIN_MIN = 1.25;

/** GzipChoice: how one block is compressed: stored, Huffman coded only, or deflated at the level asked. */
export type GzipChoice = 'stored' | 'huffman' | 'deflate';

/** gzipInFlightDefault: blocks compressed at once by default (the cores, at least 2; read once, it is a system call). */
export function gzipInFlightDefault(): number {
  inFlightDefault ??= Math.max(2, availableParallelism());
  return inFlightDefault;
}

let inFlightDefault: number | undefined;

/** ParallelGzipOptions: compression level, block size and concurrency (all optional). */
export interface ParallelGzipOptions {
  /** gzip level 0-9 (default GZIP_LEVEL_DEFAULT). */
  readonly level?: number;
  /** input bytes per gzip member, 64 KiB to 64 MiB (default 1 MiB). */
  readonly blockBytes?: number;
  /** blocks compressed at once, 1 to 64 (default gzipInFlightDefault()). */
  readonly inFlightMax?: number;
  /** choose per block between stored, Huffman only and deflate from a sample (default true; see blockGzipChoice). */
  readonly adaptive?: boolean;
  /** io: where the compression runs (its gzip; default nodeSnapshotIo: zlib on the threadpool). */
  readonly io?: SnapshotIo;
}

interface Resolved {
  readonly level: number;
  readonly blockBytes: number;
  readonly inFlightMax: number;
  readonly adaptive: boolean;
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
    adaptive: options.adaptive ?? true,
  };
}

/** OUTPUT_CHUNK_BYTES_MIN: the smallest zlib output buffer gzipMember asks for. */
const OUTPUT_CHUNK_BYTES_MIN = 16 * 1024;

/** gzipWorstCaseBytes: the most bytes a gzip member of `inputBytes` can take (deflateBound: stored blocks add 5 bytes per 16 KiB; gzip adds 18 of header and trailer). */
function gzipWorstCaseBytes(inputBytes: number): number {
  return inputBytes + (inputBytes >> 10) + 1024;
}

/**
 * gzipMember compresses `block` as one complete gzip member on the threadpool.
 * zlib's output buffer is sized for `expectedBytes` (an estimate of the
 * output, plus an eighth and 4 KiB) or, without one, for the worst case, so a
 * block that compresses well does not allocate a block-sized buffer; output
 * past the estimate only takes more buffers (the bytes are the same: zlib's
 * output does not depend on its buffer size).
 */
export function gzipMember(block: Uint8Array, level: number, huffmanOnly = false, io: SnapshotIo = nodeSnapshotIo, expectedBytes?: number): Promise<Buffer> {
  const worstCase = gzipWorstCaseBytes(block.length);
  const sized = expectedBytes === undefined ? worstCase : Math.min(worstCase, Math.ceil(expectedBytes * 1.125) + 4096);
  const zlibOptions: ZlibOptions = {
    level,
    chunkSize: Math.max(OUTPUT_CHUNK_BYTES_MIN, sized),
    // The block is the whole input: finished in the same call, the member comes out as one piece of zlib's output
    // buffer. With the default flush zlib hands the bulk and then the last bytes (the final flush) as two pieces,
    // and gzip() copies both into one more buffer: every compressed byte of a snapshot was copied once more.
    flush: zlibConstants.Z_FINISH,
    ...(huffmanOnly ? { strategy: zlibConstants.Z_HUFFMAN_ONLY } : {}),
  };
  return io.gzip(block, zlibOptions);
}

/** BlockGzipPlan: how gzipBlock compresses a block, and the output its sample predicts (bytes; undefined without a sample). */
export interface BlockGzipPlan {
  readonly choice: GzipChoice;
  readonly expectedBytes: number | undefined;
}

/**
 * blockGzipChoice decides how gzipBlock compresses `block`. Without
 * `adaptive`, at level 0, or for a block of at most SAMPLE_BYTES: 'deflate'
 * (at the level asked). Otherwise a sample (the block's first and middle
 * 32 KiB) is Huffman coded and deflated at `level`: 'stored' if Huffman
 * coding shrinks it by less than 3%, 'huffman' if deflating gains less than
 * LZ_GAIN_MIN over Huffman coding, else 'deflate'. Every choice is a valid
 * gzip member; the choice depends only on the block's bytes, so output stays
 * deterministic.
 */
export async function blockGzipChoice(block: Uint8Array, level: number, adaptive: boolean, io: SnapshotIo = nodeSnapshotIo): Promise<GzipChoice> {
  return (await blockGzipPlan(block, level, adaptive, io)).choice;
}

/** blockGzipPlan is blockGzipChoice plus the output size the sample predicts for that choice (scaled to the block). */
export async function blockGzipPlan(block: Uint8Array, level: number, adaptive: boolean, io: SnapshotIo = nodeSnapshotIo): Promise<BlockGzipPlan> {
  if (!adaptive || level === 0 || block.length <= SAMPLE_BYTES) return { choice: 'deflate', expectedBytes: undefined };
  const half = SAMPLE_BYTES / 2;
  const mid = Math.floor(block.length / 2);
  const sample = Buffer.concat([block.subarray(0, half), block.subarray(mid, mid + half)]);
  const [huffman, deflated] = await Promise.all([gzipMember(sample, 1, true, io), gzipMember(sample, level, false, io)]);
  if (sample.length / huffman.length < INCOMPRESSIBLE_RATIO && sample.length / deflated.length < INCOMPRESSIBLE_RATIO) {
    return { choice: 'stored', expectedBytes: undefined };
  }
  const choice = huffman.length / deflated.length < LZ_GAIN_MIN ? 'huffman' : 'deflate';
  const sampleOut = choice === 'huffman' ? huffman.length : deflated.length;
  return { choice, expectedBytes: (block.length * sampleOut) / sample.length };
}

/** gzipBlock compresses `block` as one gzip member as blockGzipChoice(block, level, adaptive) says (zlib's output buffer sized by the sample). */
export async function gzipBlock(block: Uint8Array, level: number, adaptive: boolean, io: SnapshotIo = nodeSnapshotIo): Promise<Buffer> {
  const { choice, expectedBytes } = await blockGzipPlan(block, level, adaptive, io);
  if (choice === 'stored') return gzipMember(block, 0, false, io);
  return gzipMember(block, choice === 'huffman' ? 1 : level, choice === 'huffman', io, expectedBytes);
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
 * not be changed until the queue is done with it: with a `pool`, the queue
 * gives each block back to it once its compression settled (zlib no longer
 * reads it), and the caller takes its next blocks from that pool; without
 * one, add a fresh buffer each time.
 */
export class GzipMemberQueue {
  readonly #level: number;
  readonly #inFlightMax: number;
  readonly #adaptive: boolean;
  readonly #io: SnapshotIo;
  readonly #deliver: (member: Buffer, inputBytes: number) => Promise<void> | void;
  readonly #jobs: Job[] = [];
  readonly #pool: BlockPool | undefined;
  #failure: unknown = null;
  /** memberCount: members delivered so far. */
  memberCount = 0;

  constructor(
    level: number,
    inFlightMax: number,
    deliver: (member: Buffer, inputBytes: number) => Promise<void> | void,
    adaptive = true,
    io: SnapshotIo = nodeSnapshotIo,
    pool?: BlockPool,
  ) {
    this.#io = io;
    this.#pool = pool;
    this.#level = checkInt('gzip level', level, 0, 9);
    this.#inFlightMax = checkInt('gzip inFlightMax', inFlightMax, 1, 64);
    this.#deliver = deliver;
    this.#adaptive = adaptive;
  }

  /** pending: blocks added but not yet delivered. */
  get pending(): number {
    return this.#jobs.length;
  }

  /** add starts compressing `block`; resolves when another block may be added. */
  async add(block: Uint8Array): Promise<void> {
    if (this.#failure !== null) throw this.#failure;
    const member = gzipBlock(block, this.#level, this.#adaptive, this.#io);
    const pool = this.#pool;
    // met (and rethrown) when delivered; either way zlib is done with the block.
    member.then(
      () => pool?.give(block),
      () => pool?.give(block),
    );
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
  readonly #pool: BlockPool;
  #block: Buffer;
  #fill = 0;
  bytesIn = 0;
  bytesOut = 0;

  constructor(options: ParallelGzipOptions = {}) {
    const { level, blockBytes, inFlightMax, adaptive } = resolveParallelGzipOptions(options);
    super({ readableHighWaterMark: blockBytes, writableHighWaterMark: 64 * 1024 });
    this.#blockBytes = blockBytes;
    this.#pool = new BlockPool(blockBytes, inFlightMax + 1);
    this.#block = this.#pool.take();
    this.#queue = new GzipMemberQueue(
      level,
      inFlightMax,
      (member) => {
        this.bytesOut += member.length;
        this.push(member);
      },
      adaptive,
      options.io,
      this.#pool,
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
        this.#block = this.#pool.take();
        this.#fill = 0;
        await this.#queue.add(full);
      }
    }
  }
}

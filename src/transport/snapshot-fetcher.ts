import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import * as grpc from '@grpc/grpc-js';

import type { FetchSnapshotResponse, RaftServiceClient } from '../gen/snapcoord/v1/raft.js';
import type { NodeId } from '../raft/types.js';
import { inlineChunkHasher, workerChunkHasher, type ChunkHasher, type Hashed } from './chunk-hasher.js';
import { faultInterceptors } from './message-faults.js';
import { RaftPeerClient } from './raft-client.js';
import type { PeerDial } from './peer-guard.js';
import { silentLogger, type ChunkStream, type FetchSnapshotParams, type SnapshotChunk, type SnapshotStreamOpener, type TransportLogger } from './transport.js';

/** SNAPSHOT_CHUNK_BYTES_DEFAULT: 1 MiB chunks measured best on loopback (TOOLCHAIN.md). */
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 1 << 20;
/** WRITES_IN_FLIGHT: chunk writes to disk that may be pending while the next chunks arrive. */
const WRITES_IN_FLIGHT = 4;
/** FLOW_CONTROL_WINDOW_BYTES: the receiver's HTTP/2 window; the default halves throughput. */
export const FLOW_CONTROL_WINDOW_BYTES = 16 << 20;

export interface FetchTarget {
  readonly index: number;
  readonly term: number;
  readonly sizeBytes: number;
  /** digest: hex SHA-256 of the whole archive. */
  readonly digest: string;
}

export interface FetchOptions {
  readonly selfId: NodeId;
  /** address of the node that holds the snapshot (host:port). */
  readonly address: string;
  readonly target: FetchTarget;
  /** destPath: file written with the verified bytes (created or truncated); ignored when `sink` is given. */
  readonly destPath?: string;
  /**
   * sink, if given, takes each verified chunk instead of a file (the snapshot
   * store's ArchiveSink: it writes, hashes the whole archive and fsyncs
   * itself, so the fetcher neither hashes the whole nor syncs).
   */
  readonly sink?: FetchSink;
  readonly chunkBytes?: number;
  /** maxAttempts: stream (re)starts before giving up; each resumes from the last verified offset. */
  readonly maxAttempts?: number;
  /** bandwidthBytesPerSec: an optional cap for this transfer (0 or absent: none). */
  readonly bandwidthBytesPerSec?: number;
  /** idleTimeoutMs: a stream that delivers nothing for this long is cut and resumed. */
  readonly idleTimeoutMs?: number;
  readonly signal?: AbortSignal;
  readonly logger?: TransportLogger;
  readonly onProgress?: (bytesDone: number, totalBytes: number) => void;
  /**
   * verifyWholeDigest (default true): hash the whole archive and compare it with
   * target.digest. A caller that verifies the file itself right after (the
   * snapshot store's import does) may turn it off to save one pass.
   */
  readonly verifyWholeDigest?: boolean;
  /** channelOptions: extra grpc channel options (tests inject interceptors). */
  readonly channelOptions?: grpc.ChannelOptions;
  readonly interceptors?: grpc.Interceptor[];
  /** dial: the peer plane's credentials and metadata (default insecure, none). */
  readonly dial?: PeerDial;
  /** streams: opens the FetchSnapshot streams (default: gRPC calls to `address` with `dial`). */
  readonly streams?: SnapshotStreamOpener;
  /** clock: the idle timeout, the backoff between attempts and the bandwidth cap run on it (default realTimeClock). */
  readonly clock?: FetchClock;
  /**
   * hashOnWorker (default: hashOnWorkerByDefault): hash each chunk on a
   * worker thread (chunk-hasher.ts), one chunk hashed there while the next is
   * received. Chunks a `streams` opener hands over may be views of buffers
   * others hold (an in-memory twin's file), which a transfer to the worker
   * would take from them: with `streams` it must stay off.
   */
  readonly hashOnWorker?: boolean;
}

/**
 * HASH_ON_WORKER_BYTES_MIN: the smallest archive whose chunks a fetch hashes
 * on a worker thread by default. A worker costs its start (a thread, an
 * isolate: tens of ms of CPU and a few MiB) for each fetch, as much as
 * hashing ~32 MiB inline: the many small snapshots of a small state are
 * hashed inline.
 */
export const HASH_ON_WORKER_BYTES_MIN = 32 * 1024 * 1024;

/**
 * HASH_ON_WORKER_CPUS_MIN: the fewest CPUs on which a fetch hashes on a
 * worker thread by default. The worker only pays where a core would
 * otherwise idle: on 2 cores the fetch's receiving (TLS, HTTP/2, decoding)
 * and its sender's or the other nodes' work keep both busy, so it adds no
 * capacity, only its start, its messages, its isolate's memory and one more
 * runnable thread. Measured (bench:snapshot, 256 MiB, TLS, 2 cores, Dec 6,
 * load 5-13, three A/B runs, 22 fetches each way, alternating): receiver CPU
 * medians 0.52 / 0.59 / 0.65 s inline against 0.55 / 0.59 / 0.70 s on the
 * worker, receiver peak RSS 141-143 against 150-154 MiB, the fetch against
 * the raw stream beside it the same within the noise (medians 0.83 / 0.81 /
 * 0.76x against 0.80 / 0.79 / 0.77x).
 */
export const HASH_ON_WORKER_CPUS_MIN = 3;

/**
 * hashOnWorkerByDefault: whether a fetch of `sizeBytes` hashes its chunks on
 * a worker thread when its options do not say: only over gRPC (chunks that
 * are the fetch's own), for an archive of at least HASH_ON_WORKER_BYTES_MIN,
 * on at least HASH_ON_WORKER_CPUS_MIN CPUs.
 */
export function hashOnWorkerByDefault(sizeBytes: number, overGrpc: boolean, cpus: number): boolean {
  return overGrpc && sizeBytes >= HASH_ON_WORKER_BYTES_MIN && cpus >= HASH_ON_WORKER_CPUS_MIN;
}

/** FetchTimer names a timer a FetchClock set. */
export interface FetchTimer {
  unref(): void;
}

/**
 * FetchClock: the time a fetch waits on (the node's Clock fits it): nowMs on
 * a monotonic clock, one-shot timers and sleep.
 */
export interface FetchClock {
  nowMs(): number;
  setTimeout(fn: () => void, delayMs: number): FetchTimer;
  clearTimeout(timer: FetchTimer | undefined): void;
  sleep(delayMs: number): Promise<void>;
}

/** realTimeClock: the FetchClock of the process (performance.now and the timer globals). */
export const realTimeClock: FetchClock = {
  nowMs: () => performance.now(),
  setTimeout: (fn, delayMs) => setTimeout(fn, delayMs),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
  sleep: (delayMs) => new Promise<void>((resolve) => setTimeout(resolve, delayMs)),
};

/** grpcStreams opens FetchSnapshot streams as gRPC calls on `client`. */
function grpcStreams(client: RaftServiceClient): SnapshotStreamOpener {
  return {
    openSnapshotStream: (_address: string, p: FetchSnapshotParams): ChunkStream => {
      const call = client.fetchSnapshot({
        from: p.from,
        index: BigInt(p.index),
        term: BigInt(p.term),
        digest: p.digest,
        offset: BigInt(p.offset),
        chunkBytes: p.chunkBytes,
      });
      async function* chunks(): AsyncGenerator<SnapshotChunk> {
        for await (const raw of call as AsyncIterable<FetchSnapshotResponse>) {
          yield { offset: Number(raw.offset), totalSizeBytes: Number(raw.totalSizeBytes), data: raw.data, sha256: raw.sha256, last: raw.last };
        }
      }
      return { chunks: chunks(), cancel: () => call.cancel() };
    },
  };
}

/**
 * FetchSink takes the verified chunks of a fetch in order: writeChunk gets
 * each chunk's bytes and the SHA-256 they were checked against, and resolves
 * when the next may come (rejecting stops the fetch with that error).
 */
export interface FetchSink {
  writeChunk(data: Uint8Array, sha256: Uint8Array): Promise<void>;
}

export interface FetchResult {
  readonly bytes: number;
  readonly attempts: number;
  /** hashFailures: chunks whose SHA-256 did not match; each was discarded and fetched again. */
  readonly hashFailures: number;
  /** chunksHashedOnWorker: chunks hashed on the worker thread (the others on the main thread). */
  readonly chunksHashedOnWorker: number;
}

/** SnapshotFetchError: the snapshot could not be fetched whole and verified; nothing of it may be used. */
export class SnapshotFetchError extends Error {
  override readonly name = 'SnapshotFetchError';
}

/**
 * fetchSnapshot pulls a snapshot archive from a peer with the server-streaming
 * FetchSnapshot RPC and writes it to destPath, or hands it to opts.sink.
 * Every chunk's SHA-256 is checked (hashed once) before it is written; a bad
 * chunk is discarded and the stream restarted from the last verified offset,
 * as is a cut or stalled stream. Writing to destPath, the whole archive's
 * SHA-256 must equal target.digest, or it rejects; a sink checks the whole
 * digest itself. Chunks are passed on as decoded (no copy). Each chunk is
 * hashed on a worker thread (opts.hashOnWorker, chunk-hasher.ts) while the
 * next one is received, and written once its hash matched. Memory stays at a
 * few chunks: one being hashed, one received, the sink's writes in flight.
 */
export async function fetchSnapshot(opts: FetchOptions): Promise<FetchResult> {
  const log = opts.logger ?? silentLogger;
  const chunkBytes = opts.chunkBytes ?? SNAPSHOT_CHUNK_BYTES_DEFAULT;
  const maxAttempts = opts.maxAttempts ?? 20;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
  const clock = opts.clock ?? realTimeClock;
  const client = opts.streams !== undefined ? null : new RaftPeerClient(opts.address, opts.dial?.credentials ?? grpc.credentials.createInsecure(), {
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
    'grpc.max_receive_message_length': chunkBytes + (1 << 20),
    'grpc.use_local_subchannel_pool': 1,
    // The chaos tests' fault injection (SNAPCOORD_MESSAGE_FAULTS) when no interceptors are given; else none.
    interceptors: [...(opts.interceptors ?? faultInterceptors(log)), ...(opts.dial?.interceptors ?? [])],
    ...opts.channelOptions,
  });
  const streams = opts.streams ?? grpcStreams(client as RaftServiceClient);
  const hashOnWorker = opts.hashOnWorker ?? hashOnWorkerByDefault(opts.target.sizeBytes, opts.streams === undefined, availableParallelism());
  const hasher: ChunkHasher = hashOnWorker ? workerChunkHasher() : inlineChunkHasher();
  const sink = opts.sink;
  const destPath = opts.destPath ?? '';
  if (sink === undefined && destPath === '') throw new SnapshotFetchError('fetchSnapshot needs a destPath or a sink');
  const verifyWhole = sink === undefined && (opts.verifyWholeDigest ?? true);
  const whole = createHash('sha256');
  const limiter = new RateLimiter(opts.bandwidthBytesPerSec ?? 0, clock);
  let file: FileHandle | undefined;
  let offset = 0;
  let attempts = 0;
  let hashFailures = 0;
  /** writes: pending chunk writes to destPath; each resolves to its error, or null (never rejects). */
  const writes: Promise<Error | null>[] = [];
  /** sinkError: the sink's own failure, passed on as it is (never taken for a cut stream). */
  let sinkError: unknown = null;
  const throwIfFailed = (e: Error | null | undefined): void => {
    if (e instanceof Error) throw new SnapshotFetchError(`writing ${destPath}: ${e.message}`);
  };
  try {
    if (sink === undefined) file = await open(destPath, 'w', 0o600);
    while (offset < opts.target.sizeBytes) {
      if (opts.signal?.aborted === true) throw new SnapshotFetchError('snapshot fetch aborted');
      if (attempts >= maxAttempts) {
        throw new SnapshotFetchError(
          `snapshot ${opts.target.index} from ${opts.address}: gave up after ${attempts} attempts at offset ${offset} of ${opts.target.sizeBytes}`,
        );
      }
      attempts++;
      const outcome = await streamOnce();
      if (outcome === 'badChunk') hashFailures++;
      if (outcome === 'done') break;
      if (outcome !== 'badChunk' && offset < opts.target.sizeBytes) await clock.sleep(Math.min(2_000, 50 * 2 ** Math.min(attempts, 6)));
    }
    for (const e of await Promise.all(writes.splice(0))) throwIfFailed(e);
    if (offset !== opts.target.sizeBytes) {
      throw new SnapshotFetchError(`snapshot ${opts.target.index}: got ${offset} bytes, expected ${opts.target.sizeBytes}`);
    }
    const digest = verifyWhole ? whole.digest('hex') : opts.target.digest;
    if (digest !== opts.target.digest) {
      throw new SnapshotFetchError(`snapshot ${opts.target.index}: archive SHA-256 ${digest} does not match ${opts.target.digest}`);
    }
    await file?.sync();
    return { bytes: offset, attempts, hashFailures, chunksHashedOnWorker: hasher.transferred };
  } finally {
    hasher.close();
    await Promise.all(writes.splice(0));
    await file?.close().catch(() => undefined);
    client?.close();
  }

  /** streamOnce runs one FetchSnapshot stream from `offset`; returns why it ended. */
  async function streamOnce(): Promise<'done' | 'cut' | 'badChunk'> {
    const call = streams.openSnapshotStream(opts.address, {
      from: opts.selfId,
      index: opts.target.index,
      term: opts.target.term,
      digest: opts.target.digest,
      offset,
      chunkBytes,
    });
    let idle: FetchTimer | undefined;
    const armIdle = (): void => {
      clock.clearTimeout(idle);
      idle = clock.setTimeout(() => call.cancel(), idleTimeoutMs);
    };
    const onAbort = (): void => call.cancel();
    opts.signal?.addEventListener('abort', onAbort);
    armIdle();
    /**
     * One chunk is hashed (on the worker) while the next is received: `held` is the chunk received last,
     * its hash on the way; it is checked and written when the next arrives or the stream ends. Only a
     * chunk whose hash matched is written, in order; anything after a bad one is dropped with the stream.
     */
    let held: { readonly sha256: Buffer; readonly last: boolean; readonly hashed: Promise<Hashed> } | null = null;
    let heldLength = 0;
    /** settle checks and writes the held chunk: 'next' to go on, else why the stream ends. */
    const settle = async (): Promise<'next' | 'done' | 'cut' | 'badChunk'> => {
      const h = held;
      if (h === null) return 'next';
      held = null;
      const { data, sha256: sum } = await h.hashed;
      if (h.sha256.length !== 32 || !sum.equals(h.sha256)) {
        log.warn({ index: opts.target.index, offset }, 'snapshot fetch: chunk SHA-256 mismatch; discarded, fetching again');
        call.cancel();
        return 'badChunk';
      }
      if (sink !== undefined) {
        // The sink writes (a few writes in flight) and hashes the whole; its promise is the backpressure.
        try {
          await sink.writeChunk(data, sum);
        } catch (err) {
          sinkError = err;
          call.cancel();
          throw err;
        }
      } else {
        // Disk writes overlap with receiving and hashing the next chunks (at most WRITES_IN_FLIGHT
        // pending: the stream is not read further until the oldest lands, which is the backpressure).
        const at = offset;
        writes.push((file as FileHandle).write(data, 0, data.length, at).then(() => null, (e: unknown) => e as Error));
        if (writes.length >= WRITES_IN_FLIGHT) throwIfFailed(await writes.shift());
        if (verifyWhole) whole.update(data);
      }
      offset += data.length;
      opts.onProgress?.(offset, opts.target.sizeBytes);
      await limiter.take(data.length);
      if (h.last) return offset === opts.target.sizeBytes ? 'done' : 'cut';
      return 'next';
    };
    try {
      for await (const raw of call.chunks) {
        armIdle();
        /** expected: where this chunk must start (after the held one). */
        const expected = offset + (held === null ? 0 : heldLength);
        const chunkOffset = raw.offset;
        if (chunkOffset !== expected || raw.totalSizeBytes !== opts.target.sizeBytes) {
          log.warn({ expected, got: chunkOffset }, 'snapshot fetch: chunk out of place; resuming');
          const r = await settle();
          call.cancel();
          return r === 'next' ? 'cut' : r;
        }
        if (expected + raw.data.length > opts.target.sizeBytes) {
          call.cancel();
          throw new SnapshotFetchError(`snapshot ${opts.target.index}: peer sent more than ${opts.target.sizeBytes} bytes`);
        }
        // Length and expected hash are taken first: the hasher may take the message's buffer (which holds both).
        const length = raw.data.length;
        const next = { sha256: Buffer.from(raw.sha256), last: raw.last, hashed: hasher.sha256(raw.data) };
        next.hashed.catch(() => undefined); // met in settle
        const r = await settle();
        if (r !== 'next') {
          call.cancel();
          return r;
        }
        held = next;
        heldLength = length;
        if (raw.last) break;
      }
      const r = await settle();
      if (r !== 'next') return r;
      return offset === opts.target.sizeBytes ? 'done' : 'cut';
    } catch (err) {
      if (err instanceof SnapshotFetchError) throw err;
      if (sinkError !== null) throw sinkError;
      const code = (err as { code?: number }).code;
      if (code === grpc.status.NOT_FOUND || code === grpc.status.INVALID_ARGUMENT) {
        throw new SnapshotFetchError(`snapshot ${opts.target.index} from ${opts.address}: ${(err as Error).message}`);
      }
      log.debug({ err: (err as Error).message, offset }, 'snapshot fetch: stream ended; resuming');
      return 'cut';
    } finally {
      clock.clearTimeout(idle);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }
}

/** RateLimiter: a token bucket of one second; take() waits until the bytes may pass. */
class RateLimiter {
  private available: number;
  private last: number;
  constructor(
    private readonly bytesPerSec: number,
    private readonly clock: FetchClock,
  ) {
    this.available = bytesPerSec;
    this.last = clock.nowMs();
  }
  async take(bytes: number): Promise<void> {
    if (this.bytesPerSec <= 0) return;
    const now = this.clock.nowMs();
    this.available = Math.min(this.bytesPerSec, this.available + ((now - this.last) / 1000) * this.bytesPerSec);
    this.last = now;
    this.available -= bytes;
    if (this.available < 0) await this.clock.sleep((-this.available / this.bytesPerSec) * 1000);
  }
}

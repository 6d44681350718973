/**
 * downloadVerified: one snapshot download through the client API's
 * GetSnapshot (the path `snapshot save` takes, with its TLS and key), bytes
 * hashed as they arrive and discarded (the load is the cluster's, not this
 * machine's disk); done when size and SHA-256 match the `info` the node sent.
 *
 * Cuts (--resume-cuts K): the download is cancelled K times at random points
 * (after the message that reaches the point; before the last message when
 * the point lies in it) and resumed with a pinned, ranged GetSnapshot (the
 * archive's `id`, `offset` = the bytes verified so far). When the node no
 * longer holds it (NOT_FOUND) the download asks for a fresh one: when the
 * node answers with the same archive (same digest: a snapshot still current
 * is served again) the bytes already verified are skipped as they arrive
 * again (counted as `discardedBytes`) and hashing goes on from there; when
 * the archive changed (GetSnapshot built a new one) the download restarts on
 * the new one (`restarts`) with the cuts still to make. Every resume follows a
 * cut, so a download makes at most K + 1 calls.
 */
import { performance } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { ClientDial } from '../../client/dial.js';
import { SnapshotClient } from '../../client/snapshot-client.js';
import type { GetSnapshotResponse, SnapshotInfo } from '../../gen/snapcoord/v1/snapshot.js';

/** DOWNLOAD_WINDOW_BYTES: the HTTP/2 receive window of a download channel (as `snapshot save`). */
export const DOWNLOAD_WINDOW_BYTES = 16 << 20;

/** downloadClient: a SnapshotService client on its own connection (`slot` keeps channels apart). */
export function downloadClient(endpoint: string, dial: ClientDial, slot: number): SnapshotClient {
  return new SnapshotClient(endpoint, { ...dial, channelOptions: { ...dial.channelOptions, 'grpc-node.flow_control_window': DOWNLOAD_WINDOW_BYTES, 'snapcoord.bench_slot': slot } });
}

export interface DownloadOptions {
  readonly stale: boolean;
  /** cuts: how many times to cut the stream at a random point and resume (0: none). */
  readonly cuts: number;
  /** random: a number in [0, 1) (Math.random by default). */
  readonly random?: () => number;
  /** onBytes: told of each new archive byte verified in order (not the discarded ones). */
  readonly onBytes?: (n: number) => void;
  /** signal: aborting cancels the call; the download then fails with code CANCELLED and `aborted` true. */
  readonly signal?: AbortSignal;
  /** idleTimeoutMs: cancel when no message comes for this long (0 never; ten times as long before the first). */
  readonly idleTimeoutMs?: number;
}

/** DownloadOutcome: how one download went. */
export interface DownloadOutcome {
  readonly ok: boolean;
  /** code: the failure's gRPC status name ('' when ok), e.g. UNAVAILABLE; DATA_LOSS for a digest or size mismatch. */
  readonly code: string;
  readonly message: string;
  /** aborted: stopped by the signal (Ctrl-C or the end of the run), not by a failure. */
  readonly aborted: boolean;
  /** info: the archive finally downloaded (undefined when none was announced). */
  readonly info: SnapshotInfo | undefined;
  /** bytes: archive bytes verified in order (the whole size when ok). */
  readonly bytes: number;
  /** discardedBytes: bytes received again after a resume and skipped. */
  readonly discardedBytes: number;
  /** restartedBytes: bytes verified of an archive abandoned for a newer one at a resume. */
  readonly restartedBytes: number;
  /** ttfbMs: from the first call to the first archive byte (NaN when none came). */
  readonly ttfbMs: number;
  /** durationMs: from the first call to the end. */
  readonly durationMs: number;
  readonly cutsMade: number;
  /** resumedSame: resumes answered with the same archive; restarts: with another one. */
  readonly resumedSame: number;
  readonly restarts: number;
}

class CodedError extends Error {
  constructor(
    readonly codeName: string,
    message: string,
  ) {
    super(message);
  }
}

/** cutPoints: `k` sorted offsets in [1, size-1] (repeats allowed: each cut still gets a message of its own). */
function cutPoints(k: number, size: number, random: () => number): number[] {
  return Array.from({ length: Math.max(0, k) }, () => 1 + Math.floor(random() * Math.max(1, size - 1))).sort((a, b) => a - b);
}

/** downloadVerified: see the file comment. Never throws: a failure is an outcome with ok false. */
export async function downloadVerified(client: SnapshotClient, opts: DownloadOptions): Promise<DownloadOutcome> {
  const random = opts.random ?? Math.random;
  const t0 = performance.now();
  let ttfbMs = NaN;
  let info: SnapshotInfo | undefined;
  let hash = createHash('sha256');
  let bytes = 0;
  let discardedBytes = 0;
  let restartedBytes = 0;
  let cuts: number[] = [];
  let cutsMade = 0;
  let resumedSame = 0;
  let restarts = 0;
  let pinRefused = false;
  const outcome = (ok: boolean, code: string, message: string, aborted = false): DownloadOutcome => ({
    ok, code, message, aborted, info, bytes, discardedBytes, restartedBytes, ttfbMs, durationMs: performance.now() - t0, cutsMade, resumedSame, restarts,
  });

  const aborted = (): boolean => opts.signal?.aborted === true;
  for (;;) {
    if (aborted()) return outcome(false, 'CANCELLED', 'stopped', true);
    // A resume pins the archive being downloaded and asks from the first byte not verified yet.
    const pin = info !== undefined && bytes > 0 && !pinRefused ? { id: info.id, offset: BigInt(bytes) } : { id: '', offset: 0n };
    const call = client.getSnapshot(opts.stale, {}, { index: 0n, length: 0n, ...pin });
    call.on('error', () => undefined); // read below through the iterator; a cut's CANCELLED is expected
    const onAbort = (): void => call.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    let idleExpired = false;
    const touch = (first: boolean): void => {
      const ms = opts.idleTimeoutMs ?? 0;
      if (ms <= 0) return;
      clearTimeout(idle);
      idle = setTimeout(() => {
        idleExpired = true;
        call.cancel();
      }, first ? ms * 10 : ms);
    };
    touch(true);
    let skip = 0;
    let cut = false;
    let announced = false;
    try {
      for await (const msg of call as AsyncIterable<GetSnapshotResponse>) {
        touch(false);
        if (msg.info !== undefined) {
          if (announced) throw new CodedError('DATA_LOSS', 'the node sent the snapshot info twice');
          announced = true;
          if (info !== undefined && msg.info.digest === info.digest && msg.info.sizeBytes === info.sizeBytes) {
            // The same archive: a pinned read starts at `bytes`; a fresh one from 0 (skip what is verified already).
            skip = pin.id !== '' ? 0 : bytes;
            resumedSame++;
          } else {
            if (info !== undefined) {
              restarts++;
              restartedBytes += bytes;
            }
            info = msg.info;
            hash = createHash('sha256');
            bytes = 0;
            cuts = cutPoints(opts.cuts - cutsMade, Number(info.sizeBytes), random);
          }
          continue;
        }
        if (msg.data === undefined) continue;
        if (info === undefined || !announced) throw new CodedError('DATA_LOSS', 'the node sent snapshot data before its info');
        let chunk = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
        if (skip > 0) {
          const n = Math.min(skip, chunk.length);
          skip -= n;
          discardedBytes += n;
          chunk = chunk.subarray(n);
          if (chunk.length === 0) continue;
        }
        if (Number.isNaN(ttfbMs)) ttfbMs = performance.now() - t0;
        const size = Number(info.sizeBytes);
        if (cuts.length > 0 && bytes + chunk.length >= size) {
          // The last message while cuts remain: cut before it, so every download is cut exactly K times.
          cuts.shift();
          cutsMade++;
          cut = true;
          call.cancel();
          break;
        }
        if (bytes + chunk.length > size) throw new CodedError('DATA_LOSS', `the node sent more than the ${info.sizeBytes} bytes it announced`);
        hash.update(chunk);
        bytes += chunk.length;
        opts.onBytes?.(chunk.length);
        const next = cuts[0];
        if (next !== undefined && bytes >= next) {
          cuts.shift();
          cutsMade++;
          cut = true;
          call.cancel();
          break;
        }
      }
      if (cut) continue;
      if (info === undefined) throw new CodedError('DATA_LOSS', 'the node ended the download without sending the snapshot info');
      if (skip > 0) throw new CodedError('DATA_LOSS', `the resumed download ended before reaching byte ${bytes}`);
      if (bytes !== Number(info.sizeBytes)) throw new CodedError('DATA_LOSS', `the download ended after ${bytes} of ${info.sizeBytes} bytes`);
      const digest = hash.digest('hex');
      if (digest !== info.digest.toLowerCase()) throw new CodedError('DATA_LOSS', `SHA-256 ${digest} does not match the node's ${info.digest}`);
      return outcome(true, '', '');
    } catch (err) {
      call.cancel();
      if (aborted()) return outcome(false, 'CANCELLED', 'stopped', true);
      if (idleExpired) return outcome(false, 'DEADLINE_EXCEEDED', `no message for ${opts.idleTimeoutMs ?? 0} ms`);
      if (err instanceof CodedError) return outcome(false, err.codeName, err.message);
      const e = err as Partial<grpc.ServiceError>;
      if (pin.id !== '' && e.code === grpc.status.NOT_FOUND) {
        pinRefused = true; // the node no longer holds that archive: start over on a fresh one
        continue;
      }
      const code = typeof e.code === 'number' ? (grpc.status[e.code] ?? String(e.code)) : 'ERROR';
      return outcome(false, code, (e.details ?? e.message ?? String(err)).replace(/\s+/g, ' ').trim());
    } finally {
      clearTimeout(idle);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }
}

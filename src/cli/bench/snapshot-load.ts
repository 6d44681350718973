/**
 * SnapshotLoad: C concurrent streams, each downloading snapshots one after
 * another through GetSnapshot (downloadVerified: verified against the digest,
 * optionally cut and resumed) until a count of downloads has been handed out
 * or it is stopped. `snapcoord bench snapshot` runs one alone; `bench write
 * --during-snapshots C` runs one beside the writes.
 *
 * Figures: completed downloads in `recorder` (latency = download time), bytes
 * as they arrive (MB/s over time), time to first byte in `ttfb`, per stream
 * and per archive. A download still running when the load is stopped is
 * `unfinished` (its bytes count in MB/s, not in `bytes.verified`).
 */
import { setMaxListeners } from 'node:events';
import type { ClientDial } from '../../client/dial.js';
import type { SnapshotClient } from '../../client/snapshot-client.js';
import { downloadClient, downloadVerified, type DownloadOutcome } from './download.js';
import { LatencyHistogram, type LatencySummary } from './histogram.js';
import { Recorder, type RecorderFigures } from './recorder.js';

/** STREAMS_MAX: the most concurrent snapshot downloads one bench runs. */
export const STREAMS_MAX = 64;
/** RESUME_CUTS_MAX: the most cuts per download. */
export const RESUME_CUTS_MAX = 100;
/** FAILURE_PAUSE_MS: a stream's pause after a failed download (a node that is down is not hammered). */
export const FAILURE_PAUSE_MS = 200;

export interface SnapshotLoadOptions {
  readonly endpoint: string;
  readonly dial: ClientDial;
  readonly streams: number;
  /** count: downloads handed out in all (undefined: until stopped). */
  readonly count?: number;
  readonly resumeCuts: number;
  readonly stale: boolean;
  readonly idleTimeoutMs: number;
  readonly random?: () => number;
  /** slotBase: added to each stream's channel slot (keeps them apart from other loads' channels). */
  readonly slotBase?: number;
}

/** StreamFigures: one stream's downloads. */
export interface StreamFigures {
  readonly stream: number;
  readonly downloads: number;
  readonly failed: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly mbPerSec: number;
}

/** ArchiveFigures: one distinct archive the node served, and how often it was downloaded whole. */
export interface ArchiveFigures {
  readonly digest: string;
  readonly sizeBytes: number;
  readonly index: number;
  readonly downloads: number;
}

/** SnapshotLoadFigures: what a SnapshotLoad measured. */
export interface SnapshotLoadFigures extends RecorderFigures {
  readonly downloads: { readonly completed: number; readonly failed: number; readonly unfinished: number };
  readonly bytesVerified: number;
  readonly bytesDiscarded: number;
  /** bytesRestarted: bytes of archives abandoned at a resume for a newer one (part of `bytes`). */
  readonly bytesRestarted: number;
  readonly ttfb: LatencySummary;
  readonly streams: StreamFigures[];
  readonly archives: ArchiveFigures[];
  readonly cuts: { readonly perDownload: number; readonly made: number; readonly resumedSame: number; readonly restarts: number };
  /** failures: the first few failure messages (code: message), for the report. */
  readonly failures: string[];
}

/** pause resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** ARCHIVES_KEPT: how many distinct archives a load describes (the first ones seen). */
export const ARCHIVES_KEPT = 1_000;

/** FAILURE_MESSAGES_KEPT: how many distinct failure messages a load keeps. */
const FAILURE_MESSAGES_KEPT = 10;

export class SnapshotLoad {
  readonly recorder: Recorder;
  readonly ttfb = new LatencyHistogram();
  readonly done: Promise<void>;
  readonly #opts: SnapshotLoadOptions;
  readonly #abort = new AbortController();
  readonly #clients: SnapshotClient[] = [];
  readonly #streams: { downloads: number; failed: number; bytes: number; activeMs: number }[] = [];
  readonly #archives = new Map<string, ArchiveFigures>();
  readonly #failures = new Set<string>();
  #handedOut = 0;
  #unfinished = 0;
  #verified = 0;
  #discarded = 0;
  #restarted = 0;
  #cutsMade = 0;
  #resumedSame = 0;
  #restarts = 0;

  constructor(opts: SnapshotLoadOptions, recorder = new Recorder()) {
    if (!Number.isInteger(opts.streams) || opts.streams < 1 || opts.streams > STREAMS_MAX) throw new RangeError(`streams must be 1..${STREAMS_MAX}`);
    if (!Number.isInteger(opts.resumeCuts) || opts.resumeCuts < 0 || opts.resumeCuts > RESUME_CUTS_MAX) throw new RangeError(`resume cuts must be 0..${RESUME_CUTS_MAX}`);
    // Every call in flight listens for the stop: as many listeners as workers, by design.
    setMaxListeners(0, this.#abort.signal);
    this.#opts = opts;
    this.recorder = recorder;
    this.done = Promise.all(Array.from({ length: opts.streams }, (_, i) => this.#stream(i))).then(() => undefined);
  }

  /** completed: downloads verified so far. */
  get completed(): number {
    return this.recorder.ops;
  }

  /** stop cancels every download in flight and hands out no more; resolves when every stream has ended. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.done;
  }

  async #stream(i: number): Promise<void> {
    const client = downloadClient(this.#opts.endpoint, this.#opts.dial, (this.#opts.slotBase ?? 0) + i);
    this.#clients.push(client);
    const s = { downloads: 0, failed: 0, bytes: 0, activeMs: 0 };
    this.#streams[i] = s;
    try {
      while (!this.#abort.signal.aborted && (this.#opts.count === undefined || this.#handedOut < this.#opts.count)) {
        this.#handedOut++;
        const o: DownloadOutcome = await downloadVerified(client, {
          stale: this.#opts.stale,
          cuts: this.#opts.resumeCuts,
          signal: this.#abort.signal,
          idleTimeoutMs: this.#opts.idleTimeoutMs,
          onBytes: (n) => {
            s.bytes += n;
            this.recorder.addBytes(n);
          },
          ...(this.#opts.random !== undefined ? { random: this.#opts.random } : {}),
        });
        s.activeMs += o.durationMs;
        this.#discarded += o.discardedBytes;
        this.#restarted += o.restartedBytes;
        this.#cutsMade += o.cutsMade;
        this.#resumedSame += o.resumedSame;
        this.#restarts += o.restarts;
        if (o.ok && o.info !== undefined) {
          s.downloads++;
          this.#verified += o.bytes;
          this.recorder.ok(o.durationMs);
          if (Number.isFinite(o.ttfbMs)) this.ttfb.record(o.ttfbMs);
          const a = this.#archives.get(o.info.digest);
          if (a !== undefined || this.#archives.size < ARCHIVES_KEPT) this.#archives.set(o.info.digest, { digest: o.info.digest, sizeBytes: Number(o.info.sizeBytes), index: Number(o.info.index), downloads: (a?.downloads ?? 0) + 1 });
        } else if (o.aborted) {
          this.#unfinished++;
        } else {
          s.failed++;
          this.recorder.fail(o.code);
          if (this.#failures.size < FAILURE_MESSAGES_KEPT) this.#failures.add(`${o.code}: ${o.message}`);
          await pause(FAILURE_PAUSE_MS, this.#abort.signal);
        }
      }
    } finally {
      client.close();
    }
  }

  /** figures: what was measured (call after stop(), or after `done`). */
  figures(): SnapshotLoadFigures {
    this.recorder.stop();
    const base = this.recorder.figures();
    return {
      ...base,
      downloads: { completed: this.recorder.ops, failed: this.recorder.errors, unfinished: this.#unfinished },
      bytesVerified: this.#verified,
      bytesDiscarded: this.#discarded,
      bytesRestarted: this.#restarted,
      ttfb: this.ttfb.summary(),
      streams: this.#streams.map((s, stream) => ({
        stream,
        downloads: s.downloads,
        failed: s.failed,
        bytes: s.bytes,
        seconds: s.activeMs / 1000,
        mbPerSec: s.activeMs > 0 ? s.bytes / 1e6 / (s.activeMs / 1000) : 0,
      })),
      archives: [...this.#archives.values()].sort((a, b) => a.index - b.index),
      cuts: { perDownload: this.#opts.resumeCuts, made: this.#cutsMade, resumedSame: this.#resumedSame, restarts: this.#restarts },
      failures: [...this.#failures],
    };
  }
}

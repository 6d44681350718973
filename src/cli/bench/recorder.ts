/**
 * Recorder: what one load run measured: every finished operation's latency
 * (an HDR histogram for the whole run and one per second), bytes moved,
 * failures counted by gRPC code name, and a per-second time series. The
 * CLI's `snapcoord bench` and the repository's bench:write / bench:snapshot
 * record through it, so there is one implementation of each figure.
 *
 * Time comes from `now` (ms, default performance.now); tick() closes the
 * current second. Nothing here starts timers: the caller (or Ticker) does.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { LatencyHistogram, type HistogramBucket, type LatencySummary } from './histogram.js';

/** SeriesPoint: one interval of the time series (normally one second). */
export interface SeriesPoint {
  /** tSec: seconds since the start at the END of the interval. */
  readonly tSec: number;
  /** seconds: the interval's length (the last one may be short). */
  readonly seconds: number;
  readonly ops: number;
  readonly errors: number;
  readonly bytes: number;
  /** opsPerSec / mbPerSec: the interval's rates (MB: 10^6 bytes). */
  readonly opsPerSec: number;
  readonly mbPerSec: number;
  /** p50Ms / p99Ms / maxMs: of the operations that finished in the interval (null when none did). */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
}

/** RecorderFigures: the run's totals (see Recorder.figures). */
export interface RecorderFigures {
  readonly seconds: number;
  readonly ops: number;
  readonly errors: number;
  readonly errorsByCode: Record<string, number>;
  readonly bytes: number;
  readonly opsPerSec: number;
  readonly mbPerSec: number;
  readonly latency: LatencySummary;
  readonly buckets: HistogramBucket[];
  readonly series: SeriesPoint[];
}

/** errorCode: the gRPC status name of a failure ("UNAVAILABLE"), else its Node code or "ERROR". */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number') return grpc.status[code] ?? `CODE_${code}`;
  if (typeof code === 'string' && code !== '') return code;
  return 'ERROR';
}

/** finite: NaN (an empty histogram's figure) as null, for JSON. */
function finite(x: number): number | null {
  return Number.isFinite(x) ? x : null;
}

export class Recorder {
  readonly latency = new LatencyHistogram();
  readonly series: SeriesPoint[] = [];
  readonly errorsByCode = new Map<string, number>();
  ops = 0;
  errors = 0;
  bytes = 0;
  readonly #now: () => number;
  readonly #startMs: number;
  #endMs: number | undefined;
  readonly #interval = new LatencyHistogram();
  #intervalStartMs: number;
  #intervalOps = 0;
  #intervalErrors = 0;
  #intervalBytes = 0;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#startMs = now();
    this.#intervalStartMs = this.#startMs;
  }

  /** ok records one finished operation that took `latencyMs` (and moved `bytes`, counted as well by addBytes callers only once). */
  ok(latencyMs: number): void {
    this.ops++;
    this.#intervalOps++;
    this.latency.record(latencyMs);
    this.#interval.record(latencyMs);
  }

  /** fail records one failed operation, counted under `errorCode(err)` (or `err` when a string). */
  fail(err: unknown): void {
    const code = typeof err === 'string' ? err : errorCode(err);
    this.errors++;
    this.#intervalErrors++;
    this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + 1);
  }

  /** addBytes counts bytes as they move (a download's chunks), so MB/s over time follows the flow. */
  addBytes(n: number): void {
    this.bytes += n;
    this.#intervalBytes += n;
  }

  /** elapsedSec: seconds since the start (until stop()). */
  elapsedSec(): number {
    return ((this.#endMs ?? this.#now()) - this.#startMs) / 1000;
  }

  /** tick closes the current interval (when it is not empty of time) and appends its SeriesPoint. */
  tick(): void {
    const t = this.#endMs ?? this.#now();
    const seconds = (t - this.#intervalStartMs) / 1000;
    if (seconds <= 0) return;
    this.series.push({
      tSec: (t - this.#startMs) / 1000,
      seconds,
      ops: this.#intervalOps,
      errors: this.#intervalErrors,
      bytes: this.#intervalBytes,
      opsPerSec: this.#intervalOps / seconds,
      mbPerSec: this.#intervalBytes / 1e6 / seconds,
      p50Ms: finite(this.#interval.percentileMs(50)),
      p99Ms: finite(this.#interval.percentileMs(99)),
      maxMs: finite(this.#interval.percentileMs(100)),
    });
    this.#interval.reset();
    this.#intervalStartMs = t;
    this.#intervalOps = 0;
    this.#intervalErrors = 0;
    this.#intervalBytes = 0;
  }

  /** stop fixes the end time and closes the last (partial) interval; later calls do nothing. */
  stop(): void {
    if (this.#endMs !== undefined) return;
    this.#endMs = this.#now();
    this.tick();
  }

  /** recentRates: ops/s and MB/s over the last closed interval (since the start before the first). */
  recentRates(): { opsPerSec: number; mbPerSec: number } {
    const last = this.series[this.series.length - 1];
    if (last !== undefined) return { opsPerSec: last.opsPerSec, mbPerSec: last.mbPerSec };
    const s = Math.max(this.elapsedSec(), 1e-3);
    return { opsPerSec: this.ops / s, mbPerSec: this.bytes / 1e6 / s };
  }

  /** figures: the totals, rates over the whole run, latency summary and buckets, the series. */
  figures(): RecorderFigures {
    const seconds = this.elapsedSec();
    const s = Math.max(seconds, 1e-9);
    return {
      seconds,
      ops: this.ops,
      errors: this.errors,
      errorsByCode: Object.fromEntries([...this.errorsByCode].sort(([a], [b]) => a.localeCompare(b))),
      bytes: this.bytes,
      opsPerSec: this.ops / s,
      mbPerSec: this.bytes / 1e6 / s,
      latency: this.latency.summary(),
      buckets: this.latency.buckets(),
      series: [...this.series],
    };
  }
}

/** Ticker calls each recorder's tick() every `everyMs` (default 1 s) until stop(); its timer does not keep the process alive. */
export class Ticker {
  readonly #timer: NodeJS.Timeout;

  constructor(recorders: readonly Recorder[], onTick?: () => void, everyMs = 1_000) {
    this.#timer = setInterval(() => {
      for (const r of recorders) r.tick();
      onTick?.();
    }, everyMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

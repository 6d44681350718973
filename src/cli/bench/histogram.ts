/**
 * LatencyHistogram: latencies in an HDR histogram (hdr-histogram-js, pure JS),
 * recorded in microseconds from 1 µs to 1 hour with 3 significant digits, so a
 * percentile is within 0.1% of the true value whatever the count. Memory is
 * fixed (a few tens of KiB), not one number per operation.
 */
import * as hdr from 'hdr-histogram-js';

/** HISTOGRAM_MAX_US: the largest latency kept (1 h); longer ones are recorded as 1 h. */
export const HISTOGRAM_MAX_US = 3_600_000_000;

/** LatencySummary: the figures a report prints, all in milliseconds (NaN when nothing was recorded). */
export interface LatencySummary {
  readonly count: number;
  readonly minMs: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
}

/** HistogramBucket: `count` latencies in (fromMs, toMs]. */
export interface HistogramBucket {
  readonly fromMs: number;
  readonly toMs: number;
  readonly count: number;
}

/** BUCKET_EDGES_MS: the edges of the buckets a report shows: 1-2-5 steps from 10 µs to 1 h. */
export const BUCKET_EDGES_MS: readonly number[] = (() => {
  const out: number[] = [];
  for (let decade = 0.01; decade <= 1_000_000; decade *= 10) for (const m of [1, 2, 5]) out.push(Number((decade * m).toPrecision(3)));
  out.push(3_600_000);
  return out;
})();

export class LatencyHistogram {
  readonly #h: hdr.Histogram;

  constructor() {
    this.#h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: HISTOGRAM_MAX_US, numberOfSignificantValueDigits: 3, bitBucketSize: 32, useWebAssembly: false });
  }

  /** record adds one latency (ms; below 1 µs counts as 1 µs, above an hour as an hour). */
  record(ms: number): void {
    const us = Math.min(HISTOGRAM_MAX_US, Math.max(1, Math.round(ms * 1000)));
    this.#h.recordValue(us);
  }

  /** add merges another histogram's counts into this one. */
  add(other: LatencyHistogram): void {
    this.#h.add(other.#h);
  }

  reset(): void {
    this.#h.reset();
  }

  get count(): number {
    return this.#h.totalCount;
  }

  /** percentileMs: the latency at percentile p (0..100), NaN when empty. */
  percentileMs(p: number): number {
    // getValueAtPercentile answers the top of the value's HDR bucket: never more than the largest recorded.
    return this.count === 0 ? NaN : Math.min(this.#h.getValueAtPercentile(p), this.#h.maxValue) / 1000;
  }

  summary(): LatencySummary {
    const n = this.count;
    if (n === 0) return { count: 0, minMs: NaN, meanMs: NaN, p50Ms: NaN, p90Ms: NaN, p99Ms: NaN, p999Ms: NaN, maxMs: NaN };
    return {
      count: n,
      minMs: this.#h.minNonZeroValue / 1000,
      meanMs: this.#h.mean / 1000,
      p50Ms: this.percentileMs(50),
      p90Ms: this.percentileMs(90),
      p99Ms: this.percentileMs(99),
      p999Ms: this.percentileMs(99.9),
      maxMs: this.#h.maxValue / 1000,
    };
  }

  /**
   * buckets: the recorded latencies counted in BUCKET_EDGES_MS buckets, from
   * the first non-empty bucket to the last (empty ones between are kept, so a
   * chart's x axis has no gaps). The counts add up to `count`.
   */
  buckets(): HistogramBucket[] {
    const counts = new Array<number>(BUCKET_EDGES_MS.length).fill(0);
    const js = this.#h as unknown as hdr.JsHistogram;
    const it = js.recordedValuesIterator;
    it.reset();
    while (it.hasNext()) {
      const v = it.next();
      // The lowest value of the HDR bucket: a recorded 100 ms is in (50, 100], not (100, 200].
      const ms = js.lowestEquivalentValue(v.valueIteratedTo) / 1000;
      let i = BUCKET_EDGES_MS.findIndex((edge) => ms <= edge);
      if (i < 0) i = BUCKET_EDGES_MS.length - 1;
      counts[i] = (counts[i] ?? 0) + v.countAddedInThisIterationStep;
    }
    const first = counts.findIndex((c) => c > 0);
    if (first < 0) return [];
    let last = counts.length - 1;
    while ((counts[last] ?? 0) === 0) last--;
    const out: HistogramBucket[] = [];
    for (let i = first; i <= last; i++) out.push({ fromMs: i === 0 ? 0 : (BUCKET_EDGES_MS[i - 1] ?? 0), toMs: BUCKET_EDGES_MS[i] ?? 0, count: counts[i] ?? 0 });
    return out;
  }
}

/**
 * The two runs of `snapcoord bench`, each giving one document (what --json
 * prints and the HTML report draws):
 * - runSnapshotBench: a SnapshotLoad of C streams for --seconds or --count
 *   downloads, the serving node's RSS and CPU sampled from /metrics.
 * - runWriteBench: a ClosedLoop of KV operations; with duringSnapshots C two
 *   phases of the same length, writes alone ("baseline") and then writes
 *   while C snapshot downloads run ("during-snapshots"), and their ratios.
 * Both stop early, cleanly, when `signal` aborts (Ctrl-C): what was measured
 * until then is returned with `interrupted` true.
 */
import type { ClientDial } from '../../client/dial.js';
import { SNAPCOORD_VERSION } from '../../version.js';
import { ClosedLoop } from './closed-loop.js';
import type { LatencySummary } from './histogram.js';
import { kvOps, type WriteOp } from './kv-op.js';
import { fmtElapsed, fmtMs, type LiveLine } from './live.js';
import { Ticker, type RecorderFigures } from './recorder.js';
import { ResourceSampler, type ResourceSource, type ResourceSummary } from './resources.js';
import { SnapshotLoad, pause, type SnapshotLoadFigures } from './snapshot-load.js';

/** Caps on every run (DESIGN: a limit on everything). */
export const SECONDS_MAX = 3_600;
export const COUNT_MAX = 10_000_000;
export const CLIENTS_MAX = 1_024;
export const CONNS_MAX = 64;
export const VALUE_BYTES_MAX = 1 << 20;
export const KEYS_MAX = 10_000_000;
/** FILL_KEYS_MAX: the most keys a get/mixed run writes before it starts. */
export const FILL_KEYS_MAX = 100_000;

/** BenchHeader: what every document starts with. */
export interface BenchHeader {
  readonly tool: 'snapcoord bench';
  readonly formatVersion: 1;
  readonly snapcoordVersion: string;
  readonly endpoint: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  /** interrupted: stopped by Ctrl-C before its end; the figures cover the time until then. */
  readonly interrupted: boolean;
  readonly options: Record<string, string | number | boolean | null>;
}

export interface SnapshotBenchDocument extends BenchHeader {
  readonly kind: 'snapshot';
  readonly snapshots: SnapshotLoadFigures;
  /** resources: the serving node(s), from /metrics (empty without --metrics). */
  readonly resources: ResourceSummary[];
}

export interface WritePhase {
  readonly name: 'writes' | 'baseline' | 'during-snapshots';
  readonly writes: RecorderFigures & { readonly byOp: Record<string, LatencySummary> };
  readonly snapshots: SnapshotLoadFigures | null;
  readonly resources: ResourceSummary[];
}

export interface WriteBenchDocument extends BenchHeader {
  readonly kind: 'write';
  readonly phases: WritePhase[];
  /** cost: during-snapshots / baseline (null without --during-snapshots, or when a phase did nothing). */
  readonly cost: { readonly opsPerSec: number; readonly p50: number; readonly p99: number } | null;
}

export type BenchDocument = SnapshotBenchDocument | WriteBenchDocument;

/** Limits: --seconds and --count (either, both: whichever comes first). */
export interface Limits {
  readonly seconds?: number;
  readonly count?: number;
}

export interface CommonBenchOptions extends Limits {
  readonly endpoint: string;
  readonly dial: ClientDial;
  /** metrics: where the node's RSS and CPU are read (none: not sampled). */
  readonly metrics: readonly ResourceSource[];
  readonly signal?: AbortSignal;
  readonly live?: LiveLine;
  readonly random?: () => number;
  readonly idleTimeoutMs?: number;
  readonly stale?: boolean;
}

export interface SnapshotBenchOptions extends CommonBenchOptions {
  readonly streams: number;
  readonly resumeCuts: number;
}

export interface WriteBenchOptions extends CommonBenchOptions {
  readonly clients: number;
  readonly conns: number;
  readonly op: WriteOp;
  readonly valueBytes: number;
  readonly keys: number;
  readonly keyPrefix?: string;
  readonly serializable?: boolean;
  readonly deadlineMs?: number;
  /** duringSnapshots: snapshot streams in the second phase (0: one phase only). */
  readonly duringSnapshots: number;
}

/** DEFAULT_IDLE_TIMEOUT_MS: a download with no message for this long fails (DEADLINE_EXCEEDED). */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** waitEnd resolves when `done` settles, `seconds` pass, or `signal` aborts. */
async function waitEnd(done: Promise<void>, seconds: number | undefined, signal: AbortSignal | undefined): Promise<void> {
  const local = new AbortController();
  const waits: Promise<void>[] = [done];
  if (seconds !== undefined) waits.push(pause(seconds * 1000, local.signal));
  if (signal !== undefined) waits.push(pause(2 ** 31 - 1, AbortSignal.any([signal, local.signal])));
  await Promise.race(waits);
  local.abort();
}

function header(o: CommonBenchOptions, startedAt: Date, options: BenchHeader['options']): Omit<BenchHeader, 'finishedAt' | 'interrupted'> {
  return { tool: 'snapcoord bench', formatVersion: 1, snapcoordVersion: SNAPCOORD_VERSION, endpoint: o.endpoint, startedAt: startedAt.toISOString(), options };
}

function checkLimits(l: Limits): void {
  if (l.seconds !== undefined && (!(l.seconds > 0) || l.seconds > SECONDS_MAX)) throw new RangeError(`seconds must be in (0, ${SECONDS_MAX}]`);
  if (l.count !== undefined && (!Number.isInteger(l.count) || l.count < 1 || l.count > COUNT_MAX)) throw new RangeError(`count must be 1..${COUNT_MAX}`);
}

/** runSnapshotBench: see the file comment. Without seconds or count, each stream downloads once (count = streams). */
export async function runSnapshotBench(o: SnapshotBenchOptions): Promise<SnapshotBenchDocument> {
  checkLimits(o);
  const count = o.count ?? (o.seconds === undefined ? o.streams : undefined);
  const startedAt = new Date();
  const sampler = new ResourceSampler(o.metrics);
  await sampler.start();
  const load = new SnapshotLoad({
    endpoint: o.endpoint,
    dial: o.dial,
    streams: o.streams,
    resumeCuts: o.resumeCuts,
    stale: o.stale ?? false,
    idleTimeoutMs: o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    ...(count !== undefined ? { count } : {}),
    ...(o.random !== undefined ? { random: o.random } : {}),
  });
  const r = load.recorder;
  const draw = (): void =>
    o.live?.draw(
      `snapshot x${o.streams}: ${r.recentRates().mbPerSec.toFixed(1)} MB/s, ${r.ops} verified, ${r.errors} failed, ` +
        `p99 ${fmtMs(r.latency.percentileMs(99))}, ${fmtElapsed(r.elapsedSec(), o.seconds, r.ops + r.errors, count)}`,
    );
  const ticker = new Ticker([r], draw);
  const liveTimer = setInterval(draw, 250);
  liveTimer.unref();
  try {
    await waitEnd(load.done, o.seconds, o.signal);
    await load.stop();
  } finally {
    ticker.stop();
    clearInterval(liveTimer);
    o.live?.clear();
    await sampler.stop();
  }
  return {
    kind: 'snapshot',
    ...header(o, startedAt, {
      streams: o.streams,
      seconds: o.seconds ?? null,
      count: count ?? null,
      resumeCuts: o.resumeCuts,
      stale: o.stale ?? false,
    }),
    finishedAt: new Date().toISOString(),
    interrupted: o.signal?.aborted === true,
    snapshots: load.figures(),
    resources: sampler.summaries(),
  };
}

function summaryObject(m: Map<string, { summary(): LatencySummary }>): Record<string, LatencySummary> {
  return Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)).map(([k, h]) => [k, h.summary()]));
}

/** runWriteBench: see the file comment. Without seconds or count, each phase runs 10 s. */
export async function runWriteBench(o: WriteBenchOptions): Promise<WriteBenchDocument> {
  checkLimits(o);
  const seconds = o.seconds ?? (o.count === undefined ? 10 : undefined);
  const startedAt = new Date();
  const keyPrefix = o.keyPrefix ?? 'bench/';
  const ops = kvOps({
    endpoint: o.endpoint,
    dial: o.dial,
    conns: o.conns,
    op: o.op,
    valueBytes: o.valueBytes,
    keys: o.keys,
    keyPrefix,
    serializable: o.serializable ?? false,
    deadlineMs: o.deadlineMs ?? 10_000,
    ...(o.random !== undefined ? { random: o.random } : {}),
  });
  const phases: WritePhase[] = [];
  try {
    if (o.op !== 'put') {
      // Gets need keys that exist: write each key once (at most FILL_KEYS_MAX), 64 at a time.
      const fill = new ClosedLoop({ workers: 64, count: Math.min(o.keys, FILL_KEYS_MAX) }, (_w, seq) => ops.put(seq));
      o.live?.draw(`filling ${Math.min(o.keys, FILL_KEYS_MAX)} keys`);
      await waitEnd(fill.done, undefined, o.signal);
      await fill.stop();
      if (fill.recorder.errors > 0) throw new Error(`filling the keys failed: ${JSON.stringify(Object.fromEntries(fill.recorder.errorsByCode))}`);
    }
    const names: WritePhase['name'][] = o.duringSnapshots > 0 ? ['baseline', 'during-snapshots'] : ['writes'];
    for (const name of names) {
      if (o.signal?.aborted === true) break;
      const sampler = new ResourceSampler(o.metrics);
      await sampler.start();
      const loop = new ClosedLoop({ workers: o.clients, ...(o.count !== undefined ? { count: o.count } : {}) }, ops.op);
      const snaps =
        name === 'during-snapshots'
          ? new SnapshotLoad({ endpoint: o.endpoint, dial: o.dial, streams: o.duringSnapshots, resumeCuts: 0, stale: o.stale ?? false, idleTimeoutMs: o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, slotBase: 1000 })
          : undefined;
      const r = loop.recorder;
      const draw = (): void => {
        const s = snaps !== undefined ? `; snapshots x${o.duringSnapshots}: ${snaps.recorder.recentRates().mbPerSec.toFixed(1)} MB/s, ${snaps.completed} verified` : '';
        o.live?.draw(
          `${name}: ${r.recentRates().opsPerSec.toFixed(0)} ops/s, p99 ${fmtMs(r.latency.percentileMs(99))}, errors ${r.errors}${s}, ${fmtElapsed(r.elapsedSec(), seconds, r.ops + r.errors, o.count)}`,
        );
      };
      const ticker = new Ticker(snaps !== undefined ? [r, snaps.recorder] : [r], draw);
      const liveTimer = setInterval(draw, 250);
      liveTimer.unref();
      try {
        await waitEnd(loop.done, seconds, o.signal);
        await loop.stop();
        r.stop(); // the phase ends with the writes; the downloads in flight are then cancelled
        await snaps?.stop();
      } finally {
        ticker.stop();
        clearInterval(liveTimer);
        o.live?.clear();
        await sampler.stop();
      }
      phases.push({
        name,
        writes: { ...r.figures(), byOp: summaryObject(loop.byLabel) },
        snapshots: snaps?.figures() ?? null,
        resources: sampler.summaries(),
      });
    }
  } finally {
    ops.close();
  }
  const base = phases.find((p) => p.name === 'baseline')?.writes;
  const during = phases.find((p) => p.name === 'during-snapshots')?.writes;
  const ratio = (a: number, b: number): number => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);
  return {
    kind: 'write',
    ...header(o, startedAt, {
      clients: o.clients,
      conns: o.conns,
      op: o.op,
      valueBytes: o.valueBytes,
      keys: o.keys,
      seconds: seconds ?? null,
      count: o.count ?? null,
      duringSnapshots: o.duringSnapshots,
      serializable: o.serializable ?? false,
    }),
    finishedAt: new Date().toISOString(),
    interrupted: o.signal?.aborted === true,
    phases,
    cost:
      base !== undefined && during !== undefined && base.ops > 0 && during.ops > 0
        ? { opsPerSec: ratio(during.opsPerSec, base.opsPerSec), p50: ratio(during.latency.p50Ms, base.latency.p50Ms), p99: ratio(during.latency.p99Ms, base.latency.p99Ms) }
        : null,
  };
}

/**
 * textReport: the tables `snapcoord bench` prints at the end of a run (and
 * after Ctrl-C), from the same document --json prints.
 */
import { formatBytes, table } from '../client-options.js';
import type { LatencySummary } from './histogram.js';
import { fmtMs } from './live.js';
import type { RecorderFigures } from './recorder.js';
import type { ResourceSummary } from './resources.js';
import type { BenchDocument, SnapshotBenchDocument, WriteBenchDocument } from './run.js';
import type { SnapshotLoadFigures } from './snapshot-load.js';

/** ARCHIVE_ROWS: the most archives the table lists. */
const ARCHIVE_ROWS = 5;

function n(x: number | null, digits = 1): string {
  return x === null || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

function latencyRow(label: string, l: LatencySummary): string[] {
  return [label, String(l.count), fmtMs(l.minMs), fmtMs(l.meanMs), fmtMs(l.p50Ms), fmtMs(l.p90Ms), fmtMs(l.p99Ms), fmtMs(l.maxMs)];
}

const LATENCY_HEADER = ['', 'COUNT', 'MIN', 'MEAN', 'P50', 'P90', 'P99', 'MAX'];

function errorsLine(f: RecorderFigures): string {
  const e = Object.entries(f.errorsByCode);
  return e.length === 0 ? 'errors: none' : `errors: ${e.map(([k, v]) => `${k} ${v}`).join(', ')}`;
}

function resourcesText(rs: readonly ResourceSummary[]): string {
  if (rs.length === 0) return 'node RSS/CPU: not sampled (give --metrics http://HOST:HTTP_PORT/metrics)';
  const rows = rs.map((r) => [
    r.source,
    r.rssStartBytes === null ? '-' : formatBytes(r.rssStartBytes),
    r.rssPeakBytes === null ? '-' : formatBytes(r.rssPeakBytes),
    r.rssEndBytes === null ? '-' : formatBytes(r.rssEndBytes),
    n(r.cpuSeconds, 2),
    n(r.cpuCores, 2),
    r.failedSamples > 0 ? `${r.samples} ok, ${r.failedSamples} failed (${r.lastError})` : `${r.samples}`,
  ]);
  return table(['NODE /metrics', 'RSS START', 'RSS PEAK', 'RSS END', 'CPU s', 'CORES', 'SAMPLES'], rows);
}

function snapshotsText(s: SnapshotLoadFigures): string[] {
  const out = [
    `downloads: ${s.downloads.completed} verified (SHA-256 and size), ${s.downloads.failed} failed, ${s.downloads.unfinished} unfinished at the end`,
    `bytes: ${formatBytes(s.bytes)} received in order in ${n(s.seconds, 1)} s = ${n(s.mbPerSec, 1)} MB/s aggregate; ${formatBytes(s.bytesVerified)} in verified downloads` +
      (s.bytesRestarted > 0 ? `, ${formatBytes(s.bytesRestarted)} in attempts restarted on a newer archive` : '') +
      (s.bytesDiscarded > 0 ? `; ${formatBytes(s.bytesDiscarded)} more sent again after resumes and skipped` : ''),
  ];
  if (s.cuts.perDownload > 0) out.push(`cuts: ${s.cuts.made} made (${s.cuts.perDownload} per download), resumed on the same archive ${s.cuts.resumedSame}, restarted on a newer one ${s.cuts.restarts}` +
        (s.cuts.restarts > 0 ? ' (GetSnapshot has no offset: a resume asks again, and a node that builds a new archive per call makes it start over)' : ''));
  out.push(table(LATENCY_HEADER, [latencyRow('download time', s.latency), latencyRow('time to first byte', s.ttfb)]));
  out.push(table(['STREAM', 'VERIFIED', 'FAILED', 'BYTES', 'BUSY s', 'MB/s'], s.streams.map((x) => [String(x.stream), String(x.downloads), String(x.failed), formatBytes(x.bytes), n(x.seconds, 1), n(x.mbPerSec, 1)])));
  if (s.archives.length > 0) {
    const rows = s.archives.slice(0, ARCHIVE_ROWS).map((a) => [String(a.index), formatBytes(a.sizeBytes), a.digest.slice(0, 16), String(a.downloads)]);
    out.push(table(['ARCHIVE INDEX', 'SIZE', 'SHA256', 'DOWNLOADS'], rows));
    if (s.archives.length > ARCHIVE_ROWS) out.push(`... and ${s.archives.length - ARCHIVE_ROWS} more archives (--json lists them)`);
  }
  out.push(errorsLine(s));
  for (const f of s.failures) out.push(`  ${f}`);
  return out;
}

function snapshotText(d: SnapshotBenchDocument): string {
  return [
    `snapcoord bench snapshot: ${d.endpoint}, ${d.options['streams']} streams${d.interrupted ? ' (INTERRUPTED: figures until Ctrl-C)' : ''}`,
    ...snapshotsText(d.snapshots),
    resourcesText(d.resources),
  ].join('\n');
}

function writeText(d: WriteBenchDocument): string {
  const o = d.options;
  const out = [
    `snapcoord bench write: ${d.endpoint}, op ${o['op']}, ${o['clients']} clients on ${o['conns']} connections, ${o['valueBytes']}-byte values, ${o['keys']} keys` +
      (d.interrupted ? ' (INTERRUPTED: figures until Ctrl-C)' : ''),
  ];
  for (const p of d.phases) {
    const w = p.writes;
    out.push('');
    out.push(`== ${p.name}${p.name === 'during-snapshots' ? ` (${o['duringSnapshots']} snapshot downloads running)` : ''}: ${w.ops} ops in ${n(w.seconds, 1)} s = ${n(w.opsPerSec, 0)} ops/s`);
    out.push(table(LATENCY_HEADER, [latencyRow('all', w.latency), ...Object.entries(w.byOp).map(([k, l]) => latencyRow(k, l))]));
    out.push(errorsLine(w));
    if (p.snapshots !== null) {
      out.push('snapshot downloads meanwhile:');
      out.push(...snapshotsText(p.snapshots).map((l) => l.replace(/^/gm, '  ')));
    }
    out.push(resourcesText(p.resources));
  }
  if (d.cost !== null) {
    out.push('');
    out.push(`cost of ${o['duringSnapshots']} snapshot downloads to the writes (during / baseline): ops/s ${n(d.cost.opsPerSec, 2)}x, p50 ${n(d.cost.p50, 2)}x, p99 ${n(d.cost.p99, 2)}x`);
  }
  return out.join('\n');
}

export function textReport(d: BenchDocument): string {
  return `${d.kind === 'snapshot' ? snapshotText(d) : writeText(d)}\n`;
}

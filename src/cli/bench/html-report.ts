/**
 * htmlReport: a self-contained HTML page of one bench document: a summary
 * table, throughput and p50/p99 latency over time, the latency histogram,
 * and the node's RSS and CPU over time when they were sampled. Charts are
 * drawn on <canvas> by uPlot (its browser bundle and stylesheet are inlined),
 * so the page needs no network to be viewed. The document itself is
 * embedded as JSON (`<script id="bench-data" type="application/json">`).
 *
 * Errors: throws when the uPlot bundle cannot be read from node_modules.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { BenchDocument } from './run.js';
import { textReport } from './text-report.js';

const require = createRequire(import.meta.url);

/** uplotAssets: uPlot's minified browser bundle and stylesheet (read once). */
let assets: { js: string; css: string } | undefined;
function uplotAssets(): { js: string; css: string } {
  assets ??= {
    js: readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8'),
    css: readFileSync(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'),
  };
  return assets;
}

/** scriptSafe: text that cannot end the <script> or <style> element it is inlined in. */
function scriptSafe(s: string): string {
  return s.replace(/<\/(script|style)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

/**
 * PAGE_SCRIPT: runs in the browser. Builds one series per line from the
 * embedded document (write phases laid end to end on the time axis) and
 * draws each chart with uPlot; sets document.body.dataset.charts to the
 * number of charts drawn.
 */
const PAGE_SCRIPT = String.raw`
(function () {
  'use strict';
  var doc = JSON.parse(document.getElementById('bench-data').textContent);
  var width = Math.min(1100, Math.max(600, window.innerWidth - 60));
  var charts = 0;
  function chart(title, opts, data) {
    var box = document.createElement('section');
    box.className = 'chart';
    var h = document.createElement('h2');
    h.textContent = title;
    box.appendChild(h);
    document.getElementById('charts').appendChild(box);
    opts.width = width;
    opts.height = 260;
    new uPlot(opts, data, box);
    charts++;
  }
  // Phases end to end: [{name, offset, series, snapshots, resources}]
  var phases = doc.kind === 'snapshot'
    ? [{ name: 'snapshots', main: doc.snapshots, extra: null, resources: doc.resources }]
    : doc.phases.map(function (p) { return { name: p.name, main: p.writes, extra: p.snapshots, resources: p.resources }; });
  var t = [], rate = [], extraRate = [], p50 = [], p99 = [];
  var offset = 0;
  phases.forEach(function (p) {
    var extraByT = {};
    if (p.extra) p.extra.series.forEach(function (s) { extraByT[Math.round(s.tSec)] = s.mbPerSec; });
    p.main.series.forEach(function (s) {
      t.push(offset + s.tSec);
      rate.push(doc.kind === 'snapshot' ? s.mbPerSec : s.opsPerSec);
      extraRate.push(p.extra ? (extraByT[Math.round(s.tSec)] ?? null) : null);
      p50.push(s.p50Ms);
      p99.push(s.p99Ms);
    });
    offset += p.main.seconds;
  });
  var hasExtra = extraRate.some(function (x) { return x !== null; });
  var rateLabel = doc.kind === 'snapshot' ? 'MB/s (aggregate)' : 'ops/s';
  var series = [{ label: 's' }, { label: rateLabel, stroke: '#1f77b4', width: 2 }];
  var data = [t, rate];
  var axes = [{ label: 'seconds' }, { label: rateLabel }];
  if (hasExtra) {
    series.push({ label: 'snapshot MB/s', stroke: '#ff7f0e', width: 2, scale: 'mb' });
    data.push(extraRate);
    axes.push({ label: 'snapshot MB/s', scale: 'mb', side: 1, grid: { show: false } });
  }
  chart('Throughput over time' + (phases.length > 1 ? ' (' + phases.map(function (p) { return p.name; }).join(', then ') + ')' : ''),
    { series: series, axes: axes, scales: { x: { time: false } } }, data);
  var what = doc.kind === 'snapshot' ? 'download time' : 'latency';
  chart('p50 and p99 ' + what + ' over time (ms)',
    { series: [{ label: 's' }, { label: 'p50 ms', stroke: '#2ca02c', width: 2 }, { label: 'p99 ms', stroke: '#d62728', width: 2 }],
      axes: [{ label: 'seconds' }, { label: 'ms' }], scales: { x: { time: false } } }, [t, p50, p99]);
  phases.forEach(function (p) {
    var b = p.main.buckets;
    if (b.length === 0) return;
    var xs = b.map(function (_, i) { return i; });
    var counts = b.map(function (x) { return x.count; });
    chart(what.charAt(0).toUpperCase() + what.slice(1) + ' histogram (' + p.name + ', ' + p.main.ops + ' operations)', {
      series: [{ label: 'bucket' }, { label: 'count', fill: 'rgba(31,119,180,0.5)', stroke: '#1f77b4', paths: uPlot.paths.bars({ size: [0.8, 60] }) }],
      axes: [{ label: 'ms (upper edge of the bucket)', values: function (u, ticks) { return ticks.map(function (i) { var x = b[i]; return x ? '≤' + x.toMs : ''; }); } }, { label: 'count' }],
      scales: { x: { time: false, range: [-0.5, b.length - 0.5] } }
    }, [xs, counts]);
  });
  var rt = [], rss = [], cores = [];
  offset = 0;
  phases.forEach(function (p) {
    var r = p.resources[0];
    if (r) r.series.forEach(function (s) { rt.push(offset + s.tSec); rss.push(s.rssBytes / 1048576); cores.push(s.cpuCores); });
    offset += p.main.seconds;
  });
  if (rt.length > 0) {
    chart('Serving node: RSS and CPU (' + phases[0].resources[0].source + ')', {
      series: [{ label: 's' }, { label: 'RSS MiB', stroke: '#9467bd', width: 2 }, { label: 'CPU cores', stroke: '#8c564b', width: 2, scale: 'cores' }],
      axes: [{ label: 'seconds' }, { label: 'MiB' }, { label: 'cores', scale: 'cores', side: 1, grid: { show: false } }],
      scales: { x: { time: false } }
    }, [rt, rss, cores]);
  }
  document.body.dataset.charts = String(charts);
})();
`;

/** htmlReport: see the file comment. */
export function htmlReport(d: BenchDocument): string {
  const { js, css } = uplotAssets();
  const title = `snapcoord bench ${d.kind} — ${d.endpoint} — ${d.startedAt}`;
  const json = JSON.stringify(d).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${scriptSafe(css)}</style>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 15px; margin: 18px 0 6px; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }
.chart { margin-bottom: 18px; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<div id="charts"></div>
<h2>Summary</h2>
<pre>${escapeHtml(textReport(d))}</pre>
<script id="bench-data" type="application/json">${json}</script>
<script>${scriptSafe(js)}</script>
<script>${scriptSafe(PAGE_SCRIPT)}</script>
</body>
</html>
`;
}

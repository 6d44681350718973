/**
 * `snapcoord bench snapshot|write` against a real one-node cluster (a
 * `snapcoord serve` process with an API key; the bench dials with it):
 * the documents' shape and that their figures add up, a cut-and-resume run
 * that verifies every download, the CLI's --json/--report/Ctrl-C, and the
 * HTML report rendered in headless Chromium (charts drawn, no console errors).
 * Short runs; nothing asserts on speed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { KvClient } from '../../src/client/kv-client.js';
import { TxnOpType, type TxnOp } from '../../src/gen/snapcoord/v1/kv.js';
import { metricsSource } from '../../src/cli/bench/resources.js';
import { runSnapshotBench, runWriteBench, type SnapshotBenchDocument, type WriteBenchDocument } from '../../src/cli/bench/run.js';
import { htmlReport } from '../../src/cli/bench/html-report.js';
import { Child, cleanEnv } from '../harness/child.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { chromiumPath, renderInChromium } from './bench-chromium.js';

const KEY = 'bench-spec-key-0123456789abcdef';

describe('cli: snapcoord bench (real node)', function () {
  this.timeout(120_000);
  let dir = '';
  let node: ServeProcess | undefined;
  let endpoint = '';
  let metricsUrl = '';
  const dial = { apiKey: KEY };
  const env = (): NodeJS.ProcessEnv => cleanEnv({ SNAPCOORD_API_KEY: KEY, SNAPCOORD_CACERT: '' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-bench-cli-'));
    const { addrs, procs } = await startServes(['b1'], (id, { b1 }) => ({ id, grpc: b1.grpc, peer: b1.peer, peers: `b1=${b1.peer}`, dataDir: join(dir, 'b1'), http: b1.http, apiKey: KEY }));
    node = procs.b1;
    endpoint = addrs.b1.grpc;
    metricsUrl = `http://${addrs.b1.http}/metrics`;
    // About 5 MB of incompressible values: an archive of several 1 MiB messages, so cuts land mid-stream.
    const fill = await runWriteBench({ endpoint, dial, metrics: [], clients: 4, conns: 1, op: 'put', valueBytes: 100_000, keys: 50, keyPrefix: 'fill/', count: 50, duringSnapshots: 0 });
    assert.equal(fill.phases[0]?.writes.ops, 50, JSON.stringify(fill.phases[0]?.writes.errorsByCode));
  });

  after(async () => {
    await node?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('bench snapshot: C streams, every download verified; bytes, counts, series and histogram add up; node RSS/CPU from /metrics', async () => {
    const d: SnapshotBenchDocument = await runSnapshotBench({ endpoint, dial, streams: 3, count: 3, resumeCuts: 0, metrics: [metricsSource(metricsUrl, { apiKey: KEY })] });
    const s = d.snapshots;
    assert.equal(d.kind, 'snapshot');
    assert.equal(d.interrupted, false);
    assert.deepEqual(s.downloads, { completed: 3, failed: 0, unfinished: 0 });
    assert.deepEqual(s.errorsByCode, {});
    assert.equal(s.ops, 3);
    // Every archive was downloaded whole: the bytes are the sum of the archives' sizes (streams x size when all equal).
    const archiveBytes = s.archives.reduce((sum, a) => sum + a.sizeBytes * a.downloads, 0);
    assert.equal(s.archives.reduce((sum, a) => sum + a.downloads, 0), 3);
    assert.ok(s.archives.every((a) => a.sizeBytes > 2_500_000), `archives of the ~5 MB state: ${JSON.stringify(s.archives)}`);
    assert.equal(s.bytesVerified, archiveBytes);
    assert.equal(s.bytes, archiveBytes);
    assert.equal(s.streams.length, 3);
    assert.equal(s.streams.reduce((sum, x) => sum + x.bytes, 0), s.bytes);
    assert.equal(s.streams.reduce((sum, x) => sum + x.downloads, 0), 3);
    assert.equal(s.series.reduce((sum, p) => sum + p.ops, 0), 3);
    assert.equal(s.series.reduce((sum, p) => sum + p.bytes, 0), s.bytes);
    assert.equal(s.buckets.reduce((sum, b) => sum + b.count, 0), 3);
    assert.equal(s.latency.count, 3);
    assert.equal(s.ttfb.count, 3);
    assert.ok(s.ttfb.maxMs <= s.latency.maxMs * 1.001 + 0.01);
    assert.ok(s.latency.p50Ms <= s.latency.p99Ms && s.latency.p99Ms <= s.latency.maxMs);
    assert.ok(s.mbPerSec > 0);
    const r = d.resources[0];
    assert.ok(r !== undefined && r.samples >= 2 && r.failedSamples === 0, JSON.stringify(r));
    assert.ok((r.rssPeakBytes ?? 0) > 10_000_000 && (r.cpuSeconds ?? -1) >= 0);
    // The JSON form keeps all of it (NaN-free figures, plain numbers).
    const j = JSON.parse(JSON.stringify(d)) as SnapshotBenchDocument;
    assert.equal(j.snapshots.bytes, s.bytes);
    await writeFile(join(dir, 'snapshot.html'), htmlReport(d));
  });

  it('bench snapshot --resume-cuts: every download cut K times, resumed, and verified against its digest', async () => {
    const d = await runSnapshotBench({ endpoint, dial, streams: 2, count: 2, resumeCuts: 2, metrics: [] });
    const s = d.snapshots;
    assert.deepEqual(s.downloads, { completed: 2, failed: 0, unfinished: 0 }, s.failures.join('; '));
    assert.equal(s.cuts.made, 4, 'each download cut twice');
    assert.equal(s.cuts.resumedSame + s.cuts.restarts, 4, 'every cut was resumed, on the same archive or a newer one');
    const archiveBytes = s.archives.reduce((sum, a) => sum + a.sizeBytes * a.downloads, 0);
    assert.equal(s.bytesVerified, archiveBytes);
    // What arrived in order = the verified archives + the attempts given up for a newer archive.
    assert.equal(s.bytes, s.bytesVerified + s.bytesRestarted);
    // A resume that reached the same archive received only the bytes not verified yet (a pinned, ranged read) or skipped the rest.
    if (s.cuts.restarts === 0) assert.equal(s.bytesRestarted, 0);
  });

  it('bench write --during-snapshots (CLI, --json, --report): two phases whose counts add up, and their cost ratio', async () => {
    const report = join(dir, 'write.html');
    const c = new Child(['bench', 'write', '--endpoint', endpoint, '--seconds', '1.5', '--clients', '4', '--value-bytes', '200', '--during-snapshots', '1', '--json', '--report', report, '--metrics', metricsUrl], env());
    await c.exited;
    assert.equal(c.exitCode, 0, c.lastLines());
    const d = JSON.parse(c.output.slice(c.output.indexOf('{'))) as WriteBenchDocument;
    assert.equal(d.kind, 'write');
    assert.deepEqual(d.phases.map((p) => p.name), ['baseline', 'during-snapshots']);
    for (const p of d.phases) {
      const w = p.writes;
      assert.ok(w.ops > 0, `${p.name}: some writes`);
      assert.equal(w.errors, 0, JSON.stringify(w.errorsByCode));
      assert.equal(w.series.reduce((sum, x) => sum + x.ops, 0), w.ops);
      assert.equal(w.buckets.reduce((sum, b) => sum + b.count, 0), w.ops);
      assert.equal(w.byOp['put']?.count, w.ops);
      assert.equal(w.latency.count, w.ops);
      assert.ok(w.seconds >= 1.4, `${p.name} ran its 1.5 s (${w.seconds})`);
      assert.ok(p.resources[0] !== undefined && p.resources[0].samples >= 2);
    }
    assert.equal(d.phases[0]?.snapshots, null);
    const snaps = d.phases[1]?.snapshots;
    assert.ok(snaps !== null && snaps !== undefined && snaps.streams.length === 1);
    assert.ok(snaps.bytes > 0, 'the download ran beside the writes');
    assert.equal(snaps.downloads.failed, 0, snaps.failures.join('; '));
    assert.ok(d.cost !== null && d.cost.opsPerSec > 0 && d.cost.p99 > 0);
    assert.ok((await stat(report)).size > 50_000, 'the report inlines the chart library');
  });

  it('bench write --op cas: contended compare-and-swaps, each counted as swapped or failed, the swaps all landing', async () => {
    const d = await runWriteBench({ endpoint, dial, metrics: [], clients: 8, conns: 2, op: 'cas', valueBytes: 16, keys: 2, keyPrefix: 'cas/', count: 300, duringSnapshots: 0 });
    const w = d.phases[0]?.writes;
    assert.ok(w !== undefined);
    assert.equal(w.errors, 0, JSON.stringify(w.errorsByCode));
    const swapped = w.byOp['cas-swapped']?.count ?? 0;
    const failed = w.byOp['cas-failed']?.count ?? 0;
    assert.equal(swapped + failed, w.ops);
    assert.equal(w.ops, 300);
    assert.ok(swapped > 0 && failed > 0, `8 clients on 2 keys contend: ${swapped} swapped, ${failed} failed`);
    // each swap is one put of its key: the two keys' versions add up to the swaps plus the fill's one put each
    const kv = new KvClient(endpoint, dial);
    try {
      const get = (key: string): TxnOp => ({ type: TxnOpType.TXN_OP_TYPE_GET, key: new TextEncoder().encode(key), value: new Uint8Array(0), prevKv: false });
      const r = await kv.txn({ success: [get('cas/0'), get('cas/1')] });
      assert.equal(r.responses.reduce((sum, x) => sum + Number(x.kv?.version ?? 0n), 0), swapped + 2);
    } finally {
      kv.close();
    }
  });

  it('bench write: bad ops and caps exit 2', async () => {
    for (const args of [['--op', 'swap'], ['--clients', '5000'], ['--seconds', '0'], ['--value-bytes', '99999999']]) {
      const c = new Child(['bench', 'write', '--endpoint', endpoint, ...args], env());
      await c.exited;
      assert.equal(c.exitCode, 2, `${args.join(' ')}: ${c.lastLines()}`);
    }
    const s = new Child(['bench', 'snapshot', '--endpoint', endpoint, '--streams', '65'], env());
    await s.exited;
    assert.equal(s.exitCode, 2, s.lastLines());
  });

  it('Ctrl-C stops a run cleanly and still prints what was measured (exit 130)', async () => {
    const c = new Child(['bench', 'write', '--endpoint', endpoint, '--seconds', '120', '--clients', '2', '--during-snapshots', '1', '--json'], env());
    // Once it runs, let the first phase measure something, then interrupt it.
    await c.waitFor(/snapcoord bench write: running/);
    await new Promise((r) => setTimeout(r, 1_500));
    assert.ok(c.running, c.lastLines());
    c.proc.kill('SIGINT');
    const t0 = Date.now();
    await c.exited;
    assert.ok(Date.now() - t0 < 15_000, 'it stopped promptly');
    assert.equal(c.exitCode, 130, c.lastLines());
    const d = JSON.parse(c.output.slice(c.output.indexOf('{'))) as WriteBenchDocument;
    assert.equal(d.interrupted, true);
    assert.equal(d.phases.length, 1, 'the second phase never started');
    assert.ok((d.phases[0]?.writes.ops ?? 0) > 0);
    assert.ok((d.phases[0]?.writes.seconds ?? 99) < 60);
  });

  it('the HTML reports render in headless Chromium: charts drawn on canvas, a screenshot, no console errors', async function () {
    if (chromiumPath() === undefined) {
      if (process.env['CI'] !== undefined) assert.fail('chromium is missing: .ci/run installs it (apt-get install -y chromium)');
      this.skip();
    }
    for (const [file, chartsMin] of [['snapshot.html', 3], ['write.html', 4]] as const) {
      const r = await renderInChromium(join(dir, file));
      assert.deepEqual(r.errors, [], `${file}: console errors`);
      assert.match(r.title, /^snapcoord bench /);
      assert.ok(Number(r.chartsAttr) >= chartsMin, `${file}: ${r.chartsAttr} charts`);
      // uPlot draws each chart on a canvas: each one holds drawn pixels.
      assert.ok(r.canvases >= chartsMin, `${file}: ${r.canvases} canvases`);
      assert.equal(r.drawnCanvases, r.canvases, `${file}: blank canvases`);
      assert.deepEqual([...r.screenshotPng.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG screenshot');
      assert.ok(r.screenshotPng.length > 20_000, `${file}: screenshot of ${r.screenshotPng.length} bytes`);
      await writeFile(join(dir, `${file}.png`), r.screenshotPng);
    }
    // The report is self-contained: no script or stylesheet is fetched.
    const html = await readFile(join(dir, 'write.html'), 'utf8');
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=/);
  });
});

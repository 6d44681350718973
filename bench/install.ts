/**
 * bench/install.ts: a restore's install on one node, in one process, to see where its CPU goes without a
 * 3-node cluster sharing the cores. One in-process node (RocksCluster of 1, RocksDB, ExternalMemoryGc running as
 * in `serve`) restores an archive of K keys × V bytes (`fill/%08d` keys, values of `f` bytes: the etcd mix of
 * bench:snapshot-cluster, or with --mix text its text-like values; written the way `snapshot save` writes it) R times. Per restore it prints the restore's
 * wall time, the install's (SnapshotManager.installUpload and the snapshot copy built beside it), the CPU of the
 * install by thread from /proc (the main thread; all others: libuv's threadpool, V8's GC threads, RocksDB's),
 * and the page faults of the process since the last round, and how late a 10 ms interval timer (a node's Raft tick)
 * ran during the install: the longest gap between its runs, its 99th percentile and the gaps over 50 / 100 ms (the
 * heartbeats a leader sends wait for its ticks); then the peak RSS. Figures only.
 *
 *   MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 MALLOC_ARENA_MAX=1 \
 *     node --import tsx --max-semi-space-size=4 --initial-old-space-size=64 bench/install.ts [--keys 500000] [--rounds 3]
 *
 * (the malloc environment and V8 flags a node runs with, src/cli/node-runtime.ts).
 */
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeArchiveFromRecords } from '../src/snapshot/archive.js';
import type { StateRecord } from '../src/snapshot/state-format.js';
import { SnapshotManager } from '../src/node/snapshots.js';
import { RocksCluster } from '../test/unit/node/rocks-cluster.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { arg } from './lib/arg.js';
import { Values } from './lib/text-pool.js';
import { threadCpu, threadGroup } from './lib/thread-cpu.js';

const keys = Number(arg('keys', '200000'));
const rounds = Number(arg('rounds', '3'));
const valueBytes = Number(arg('value-bytes', '1024'));
/** --mix etcd (values of `f` bytes, the default) or text (bench:snapshot-cluster's text-like values, ~1.8:1 under gzip -1). */
const mix = arg('mix', 'etcd') === 'text' ? 'text' : 'etcd';

/** minorFaults: the process's minor page faults so far. */
function minorFaults(): number {
  return Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]?.split(' ')[7]);
}

/** heapResident: glibc's main [heap] resident now (bytes; 0 when there is none). */
function heapResident(): number {
  const smaps = readFileSync('/proc/self/smaps', 'utf8');
  const at = smaps.indexOf('[heap]');
  if (at < 0) return 0;
  const m = /\nRss:\s+(\d+) kB/.exec(smaps.slice(at));
  return Number(m?.[1] ?? 0) * 1024;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-bench-install-'));
  const values = new Values(mix, valueBytes);
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += 1000) {
      const b: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + 1000); j++) b.push({ key: Buffer.from(`fill/${String(j).padStart(8, '0')}`), value: values.of(j) });
      yield b;
    }
  }
  const path = join(dir, 'state.tar.gz');
  const out = createWriteStream(path);
  const meta = { id: 'bench', index: 1, term: 1, membership: { voters: ['b1'], learners: [], addresses: { b1: '127.0.0.1:1' } }, createdAt: new Date().toISOString(), snapcoordVersion: 'bench' };
  const closed = once(out, 'close');
  const w = await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, 'spool') }, out);
  await closed;
  console.log(`archive ${(w.archiveBytes / 2 ** 20).toFixed(1)} MiB for ${(w.meta.stateBytes / 2 ** 20).toFixed(1)} MiB of state, ${keys} keys`);

  const memoryGc = startExternalMemoryGc();
  const c = await RocksCluster.start(1, { snapshotEntries: 1_000_000, trailingEntries: 0 });
  try {
    const leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: Buffer.from('a'), value: Buffer.from('b') });
    const original = SnapshotManager.prototype.installUpload;
    const timings: { wall: number; main: number; other: number; groups: Map<string, number> }[] = [];
    const tickGaps: { max: number; p99: number; over50: number; over100: number; ticks: number }[] = [];
    SnapshotManager.prototype.installUpload = async function (this: SnapshotManager, ...a: Parameters<typeof original>) {
      const before = threadCpu();
      const t0 = performance.now();
      const gaps: number[] = [];
      let last = t0;
      const tick = setInterval(() => {
        const now = performance.now();
        gaps.push(now - last);
        last = now;
      }, 10);
      try {
        await original.apply(this, a);
        await (this as unknown as { copying: Promise<void> | null }).copying;
      } finally {
        clearInterval(tick);
      }
      const wall = (performance.now() - t0) / 1000;
      gaps.sort((x, y) => x - y);
      tickGaps.push({ max: gaps[gaps.length - 1] ?? 0, p99: gaps[Math.floor(gaps.length * 0.99)] ?? 0, over50: gaps.filter((g) => g > 50).length, over100: gaps.filter((g) => g > 100).length, ticks: gaps.length });
      const after = threadCpu();
      let main = 0;
      let other = 0;
      const groups = new Map<string, number>();
      for (const [tid, t] of after) {
        const d = t.s - (before.get(tid)?.s ?? 0);
        if (tid === process.pid) main += d;
        else {
          other += d;
          const g = threadGroup(t.name);
          groups.set(g, (groups.get(g) ?? 0) + d);
        }
      }
      timings.push({ wall, main, other, groups });
    };
    let faults0 = minorFaults();
    for (let r = 0; r < rounds; r++) {
      // Each round's memory: RSS and ArrayBuffers sampled every 20 ms (their peaks over the round's start), and
      // glibc's [heap] resident at the round's end (what the round's allocations left).
      const start = process.memoryUsage();
      let peakRss = start.rss;
      let peakAb = start.arrayBuffers;
      const sampler = setInterval(() => {
        const m = process.memoryUsage();
        peakRss = Math.max(peakRss, m.rss);
        peakAb = Math.max(peakAb, m.arrayBuffers);
      }, 20);
      const t0 = performance.now();
      await leader.restore(createReadStream(path));
      clearInterval(sampler);
      const t = timings[timings.length - 1];
      const faults = minorFaults();
      const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
      console.log(
        `round ${r + 1}: restore ${((performance.now() - t0) / 1000).toFixed(2)} s; install+copy ${t?.wall.toFixed(2)} s, CPU main ${t?.main.toFixed(2)} s, other threads ${t?.other.toFixed(2)} s (${[...(t?.groups ?? [])].filter(([, d]) => d > 0).map(([g, d]) => `${g} ${d.toFixed(2)}`).join(', ')}); ${faults - faults0} page faults; rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB; ` +
          `peak RSS +${mib(peakRss - start.rss)} MiB over the round's start, ArrayBuffers peak ${mib(peakAb)} MiB (start ${mib(start.arrayBuffers)}), [heap] ${mib(heapResident())} MiB at its end`,
      );
      faults0 = faults;
      const g = tickGaps[tickGaps.length - 1];
      if (g !== undefined) console.log(`round ${r + 1}: 10 ms ticks during the install: ${g.ticks}, longest gap ${g.max.toFixed(0)} ms, p99 ${g.p99.toFixed(0)} ms, gaps over 50 ms ${g.over50}, over 100 ms ${g.over100} (load ${loadavg()[0]?.toFixed(1)})`);
    }
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    console.log(`peak RSS ${(Number(m?.[1]) / 1024).toFixed(0)} MiB`);
    SnapshotManager.prototype.installUpload = original;
  } finally {
    await c.close();
    memoryGc.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * bench/full-snapshot.ts: the memory of a full snapshot on a node's main thread, in one process (issue 15,
 * "peak RSS of any node <= 200 MB"). A follower just restarted has no list of the keys changed since its last
 * snapshot, so its next snapshot reads the whole state: RocksStorage.snapshotState -> SnapshotStore.createFromRecords
 * (iteration, encoding, parallel gzip, spool, archive), as SnapshotManager.create does it.
 *
 * A loader process fills a RocksStorage once with K keys × V bytes (`fill/%08d` keys, values of `f` bytes: the
 * etcd mix of bench:snapshot-cluster) by installState; then, R times, a fresh process (the malloc environment and
 * V8 flags a node runs with, src/cli/node-runtime.ts; ExternalMemoryGc running as in `serve`) opens it and builds
 * one full snapshot (its batches handed over as SnapshotManager.create does), sampling every 10 ms. Per round it prints the build's wall time, MB/s of state and CPU seconds (every thread), the
 * peak RSS (VmHWM) from the open to the end and the RSS before the build, the peaks of heapUsed, external
 * memory and ArrayBuffers, V8's young / old space sizes, and the garbage collections (minor / major, by
 * PerformanceObserver) and ExternalMemoryGc's scavenges / collections. Figures only.
 *
 *   npx tsx bench/full-snapshot.ts [--keys 1000000] [--value-bytes 1024] [--rounds 2] [--dir DIR] [--keep]
 *                                  [--busy KIB] [--timeline]
 *
 * --busy KIB: the main thread also allocates KIB KiB of small objects every ms, each kept ~20 ms (a node's other
 * work: requests, entries in flight), so scavenges also come while a batch is in hand. --timeline: a line every
 * 250 ms (RSS, RssAnon, heap, spaces, ArrayBuffers) on stderr.
 * With --dir the loaded state is kept there and reused by later runs of the same keys and values.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

import { NODE_V8_FLAGS } from '../src/cli/node-runtime.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { SnapshotStore } from '../src/snapshot/store.js';
import * as nodeSnapshots from '../src/node/snapshots.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import type { KeyValue, StateSnapshotReader } from '../src/storage/types.js';
import { arg } from './lib/arg.js';
import { runAsNodeChild } from './lib/node-child.js';
import { MiB, procStatus, startMemoryPeaks } from './lib/memory-peaks.js';

const keys = Number(arg('keys', '1000000'));
const valueBytes = Number(arg('value-bytes', '1024'));
const rounds = Number(arg('rounds', '2'));
const role = arg('role', 'main');
/** busyKiB: KiB of short-lived objects the main thread allocates every ms beside the build (a node's other work), 0: none. */
const busyKiB = Number(arg('busy', '0'));
const timeline = process.argv.includes('--timeline');
/**
 * fullBatches: a full snapshot's batches as SnapshotManager.create hands them to the store (fullSnapshotBatches);
 * a tree without it (before Dec 5) handed over reader.batches() (so this file runs on both, for before/after).
 */
const fullBatches =
  (nodeSnapshots as { fullSnapshotBatches?: (reader: StateSnapshotReader) => AsyncIterable<readonly KeyValue[]> }).fullSnapshotBatches ??
  ((reader: StateSnapshotReader) => reader.batches());
const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7101' } };


async function load(dataDir: string): Promise<void> {
  const storage = await RocksStorage.open(dataDir);
  const value = Buffer.alloc(valueBytes, 'f');
  function* records(): Generator<KeyValue[]> {
    for (let i = 0; i < keys; ) {
      const batch: KeyValue[] = [];
      for (const end = Math.min(keys, i + 1000); i < end; i++) batch.push({ key: Buffer.from(`fill/${String(i).padStart(8, '0')}`), value });
      yield batch;
    }
  }
  const t0 = performance.now();
  await storage.installState(records(), { appliedIndex: 1, membership });
  await storage.close();
  console.error(`loaded ${keys} keys × ${valueBytes} B in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

async function create(dataDir: string, storeDir: string): Promise<void> {
  const memoryGc = startExternalMemoryGc();
  // Peaks from the open of the state to the end of the build (VmHWM reset here), sampled every 10 ms.
  const peaks = startMemoryPeaks({ timeline });
  const storage = await RocksStorage.open(dataDir);
  const store = await SnapshotStore.open(storeDir, { retain: 1, gzipLevel: 1 });
  const oldAtStart = getHeapSpaceStatistics().find((x) => x.space_name === 'old_space')?.space_used_size ?? 0;
  // A node's other work: short-lived objects, each kept ~20 ms (a ring of them), as requests and entries in flight are.
  const ring: unknown[][] = [];
  const busy = busyKiB > 0
    ? setInterval(() => {
        const objs: unknown[] = [];
        for (let b = 0; b < busyKiB * 1024; b += 64) objs.push({ a: b, b: [b, b + 1, b + 2] });
        ring.push(objs);
        if (ring.length > 20) ring.shift();
      }, 1)
    : undefined;
  const rssBefore = procStatus('VmRSS');
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const reader = await storage.snapshotState();
  const stored = await store.createFromRecords({ index: reader.appliedIndex, term: 1, membership }, fullBatches(reader)).finally(() => reader.close());
  const stateBytes = stored.meta.stateBytes;
  const s = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const m = peaks.stop();
  if (busy !== undefined) clearInterval(busy);
  memoryGc.stop();
  await storage.close();
  const out = {
    seconds: s,
    mbPerSec: stateBytes / 1e6 / s,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    peakRssMiB: m.peakRssMiB,
    rssBeforeMiB: rssBefore / 1024,
    peakHeapUsedMiB: m.peakHeapUsedMiB,
    peakExternalMiB: m.peakExternalMiB,
    peakArrayBuffersMiB: m.peakArrayBuffersMiB,
    peakNewSpaceMiB: m.peakNewSpaceMiB,
    peakOldSpaceUsedMiB: m.peakOldSpaceUsedMiB,
    oldSpaceUsedAtStartMiB: oldAtStart / MiB,
    gc: { ...m.gc, scavengesByBound: memoryGc.gc.scavenges, garbageScavenges: (memoryGc.gc as { garbageScavenges?: number }).garbageScavenges ?? 0, collectionsByBound: memoryGc.gc.collections },
  };
  console.log(JSON.stringify(out));
}

async function main(): Promise<void> {
  if (role === 'load') return load(arg('data', ''));
  if (role === 'create') return create(arg('data', ''), arg('store', ''));
  const given = arg('dir', '');
  const dir = given !== '' ? given : await mkdtemp(join(tmpdir(), 'full-snapshot-'));
  const dataDir = join(dir, `state-${keys}x${valueBytes}`);
  try {
    if (!existsSync(join(dataDir, 'loaded'))) {
      await rm(dataDir, { recursive: true, force: true });
      runAsNodeChild('load', ['--data', dataDir]);
      await writeFile(join(dataDir, 'loaded'), '');
    }
    console.log(`${keys} keys × ${valueBytes} B, full snapshot in a fresh process (node flags ${NODE_V8_FLAGS.join(' ')})`);
    for (let r = 0; r < rounds; r++) {
      const storeDir = join(dir, `store-${r}`);
      await rm(storeDir, { recursive: true, force: true });
      await mkdir(storeDir, { recursive: true });
      const line = runAsNodeChild('create', ['--data', dataDir, '--store', storeDir]).trim().split('\n').pop() as string;
      const f = JSON.parse(line) as Record<string, number> & { gc: Record<string, number> };
      const n = (x: number | undefined, d = 0): string => (x ?? NaN).toFixed(d);
      console.log(
        `round ${r + 1}: ${n(f.seconds, 2)} s, ${n(f.mbPerSec)} MB/s of state, CPU ${n(f.cpuSeconds, 1)} s (all threads); peak RSS ${n(f.peakRssMiB)} MiB (before the build ${n(f.rssBeforeMiB)}); ` +
          `peaks: heapUsed ${n(f.peakHeapUsedMiB)}, external ${n(f.peakExternalMiB)}, arrayBuffers ${n(f.peakArrayBuffersMiB)}, ` +
          `new space ${n(f.peakNewSpaceMiB)}, old space used ${n(f.peakOldSpaceUsedMiB)} (${n(f.oldSpaceUsedAtStartMiB)} at the start) MiB; ` +
          `gc minor ${f.gc.minor} (${n(f.gc.minorMs)} ms), major ${f.gc.major} (${n(f.gc.majorMs)} ms), bound's scavenges ${f.gc.scavengesByBound} (${f.gc.garbageScavenges} of them per noted garbage) / collections ${f.gc.collectionsByBound}`,
      );
      console.log(JSON.stringify({ round: r + 1, ...f }));
      await rm(storeDir, { recursive: true, force: true });
    }
  } finally {
    if (given === '' && !process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * bench/delta-snapshot.ts: the memory of a delta snapshot on a node's main thread, in one process (issue 15, "peak
 * RSS of any node <= 200 MB"). After a write phase the leader's next snapshot is a delta from its newest one
 * (SnapshotStore.createDelta): the base archive read whole and checked, every member gunzipped and hashed, the
 * changed ones merged and compressed again; with more than DELTA_PREMERGE_STATE_BYTES_MAX of changed base state (a
 * few thousand random writes over a GB touch every member) its compressed state waits in a spool file.
 *
 * A first process builds a base snapshot of K keys × V bytes (`fill/%08d` keys, the values of bench:snapshot-cluster's
 * mix) with SnapshotStore.createFromRecords, as a node's full snapshot does. Then, R times, a fresh process (the
 * malloc environment and V8 flags a node runs with, src/cli/node-runtime.ts; ExternalMemoryGc running as in `serve`)
 * opens the store and builds one delta with C changed keys (seeded, spread over the whole key range, new values),
 * sampling every 10 ms. Per round it prints the delta's wall time, CPU seconds (every thread), the peak RSS (VmHWM,
 * reset at the delta's start) and the RSS before it, the peaks of heapUsed, external memory and ArrayBuffers, the
 * garbage collections and ExternalMemoryGc's scavenges / collections. Figures only.
 *
 *   npx tsx bench/delta-snapshot.ts [--keys 300000] [--value-bytes 1024] [--mix text|etcd] [--changes 3000]
 *                                   [--rounds 2] [--dir DIR] [--keep] [--timeline] [--count-allocs]
 *
 * --count-allocs: Buffer allocations (MiB) by caller in each round (slow; not for timing). With --dir the base is
 * kept there and reused by later runs of the same keys, values and mix.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, rm, writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';

import { NODE_V8_FLAGS } from '../src/cli/node-runtime.js';
import type { StateChange } from '../src/snapshot/archive-delta.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { SnapshotStore } from '../src/snapshot/store.js';
import type { StateRecord } from '../src/snapshot/state-format.js';

import { arg } from './lib/arg.js';
import { runAsNodeChild } from './lib/node-child.js';
import { MiB, procStatus, startMemoryPeaks } from './lib/memory-peaks.js';
import { Values } from './lib/text-pool.js';

const keys = Number(arg('keys', '300000'));
const valueBytes = Number(arg('value-bytes', '1024'));
const mix = arg('mix', 'text') as 'text' | 'etcd';
const changeCount = Number(arg('changes', '3000'));
const rounds = Number(arg('rounds', '2'));
const role = arg('role', 'main');
const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7101' } };
const storeOptions = { retain: 1000, gzipLevel: 1 };

function keyOf(i: number): Buffer {
  return Buffer.from(`fill/${String(i).padStart(8, '0')}`);
}

async function base(storeDir: string): Promise<void> {
  const values = new Values(mix, valueBytes);
  const store = await SnapshotStore.open(storeDir, storeOptions);
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += 1000) {
      const batch: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + 1000); j++) batch.push({ key: keyOf(j), value: values.of(j) });
      yield batch;
    }
  }
  const t0 = performance.now();
  const stored = await store.createFromRecords({ index: 1, term: 1, membership }, batches());
  console.error(`base: ${keys} keys × ${valueBytes} B (${mix}), archive ${(stored.archiveBytes / MiB).toFixed(1)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** changesOf: `changeCount` distinct keys picked by a seeded generator over the whole key range, sorted, with new values. */
function changesOf(values: Values): StateChange[] {
  let seed = 0x2545f491;
  const picked = new Set<number>();
  while (picked.size < Math.min(changeCount, keys)) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    picked.add((seed >>> 0) % keys);
  }
  // Values of their own, as a node's changed records are (not views of the 64 MiB text pool, let go before the delta).
  return [...picked].sort((a, b) => a - b).map((i) => ({ key: keyOf(i), value: Buffer.from(values.of(i + keys)) }));
}

async function delta(storeDir: string): Promise<void> {
  const memoryGc = startExternalMemoryGc();
  const store = await SnapshotStore.open(storeDir, storeOptions);
  const stored = (await store.list()).find((s) => s.meta.index === 1);
  if (stored === undefined) throw new Error(`no base snapshot in ${storeDir}`);
  const table = await store.members(stored);
  if (table === null) throw new Error('the base snapshot has no member table');
  const changes = changesOf(new Values(mix, valueBytes));
  const handle = await store.open(stored.id);
  (runInNewContext('gc') as () => void)(); // the text pool goes (startExternalMemoryGc exposed gc)
  const rssBefore = procStatus('VmRSS') / 1024;
  const peaks = startMemoryPeaks({ timeline: process.argv.includes('--timeline'), countAllocs: process.argv.includes('--count-allocs') });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const made = await store.createDelta({ index: 2, term: 1, membership }, handle, table, changes).finally(() => handle.release());
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const p = peaks.stop();
  memoryGc.stop();
  // The state members' compressed bytes (the archive but its head and tail, which hold createdAt): equal across trees.
  const madeTable = await store.members(made);
  const membersHash = createHash('sha256');
  if (madeTable !== null) {
    for await (const b of createReadStream(made.path, { start: madeTable.headBytes, end: made.archiveBytes - madeTable.tailBytes - 1 })) membersHash.update(b as Buffer);
  }
  await store.remove(made.id);
  console.log(
    JSON.stringify({
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      rssBeforeMiB: rssBefore,
      archiveMiB: made.archiveBytes / MiB,
      membersSha256: membersHash.digest('hex'),
      ...p,
      bound: { scavenges: memoryGc.gc.scavenges, collections: memoryGc.gc.collections },
    }),
  );
}

async function main(): Promise<void> {
  if (role === 'base') return base(arg('store', ''));
  if (role === 'delta') return delta(arg('store', ''));
  const given = arg('dir', '');
  const dir = given !== '' ? given : await mkdtemp(join(tmpdir(), 'delta-snapshot-'));
  const storeDir = join(dir, `base-${keys}x${valueBytes}-${mix}`);
  try {
    if (!existsSync(join(storeDir, 'built'))) {
      await rm(storeDir, { recursive: true, force: true });
      await mkdir(storeDir, { recursive: true });
      runAsNodeChild('base', ['--store', storeDir]);
      await writeFile(join(storeDir, 'built'), '');
    }
    console.log(`${keys} keys × ${valueBytes} B (${mix}), delta of ${changeCount} changed keys in a fresh process (node flags ${NODE_V8_FLAGS.join(' ')})`);
    for (let r = 0; r < rounds; r++) {
      const f = JSON.parse(runAsNodeChild('delta', ['--store', storeDir]).trim().split('\n').pop() as string) as Record<string, number> & {
        gc: Record<string, number>;
        bound: Record<string, number>;
        allocs?: Record<string, number>;
        membersSha256: string;
      };
      const n = (x: number | undefined, d = 0): string => (x ?? NaN).toFixed(d);
      console.log(
        `round ${r + 1}: ${n(f.seconds, 2)} s, CPU ${n(f.cpuSeconds, 2)} s (all threads); peak RSS ${n(f.peakRssMiB)} MiB (before ${n(f.rssBeforeMiB)}); ` +
          `peaks: heapUsed ${n(f.peakHeapUsedMiB)}, external ${n(f.peakExternalMiB)}, arrayBuffers ${n(f.peakArrayBuffersMiB)}, old space used ${n(f.peakOldSpaceUsedMiB)} MiB; ` +
          `gc minor ${f.gc.minor} (${n(f.gc.minorMs)} ms), major ${f.gc.major} (${n(f.gc.majorMs)} ms), bound's scavenges ${f.bound.scavenges} / collections ${f.bound.collections}; ` +
          `archive ${n(f.archiveMiB, 1)} MiB its state members' sha256 ${f.membersSha256.slice(0, 12)}`,
      );
      if (f.allocs !== undefined) console.log(`  Buffers allocated (MiB) by caller: ${JSON.stringify(f.allocs)}`);
      console.log(JSON.stringify({ round: r + 1, ...f }));
    }
  } finally {
    if (given === '' && !process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

await main();

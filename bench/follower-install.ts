/**
 * bench/follower-install.ts: a follower's install of a fetched snapshot
 * (SnapshotManager.install into a fresh RocksStorage), its archive read on
 * the main thread (`here`, as before issue 15's install worker) or on the
 * snapshot worker (`worker`, src/snapshot/install-read.ts), alternating in
 * one process, so both see the same machine load. The archive is stored as
 * a fetch stores it (1 MiB chunks with their hashes, the whole digest only
 * claimed: the install hashes it). Per install: wall time, CPU by thread
 * (main; `other`: libuv's threadpool and V8's threads; `ended`: threads gone
 * by then, the worker; RocksDB's), and the process's peak RSS during it
 * (VmHWM, reset before each install through /proc/self/clear_refs). Figures
 * only. Run it from dist/ (a worker started under tsx compiles its modules
 * as it loads them):
 *
 *   npx tsc -p tsconfig.json && MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 \
 *     node --max-semi-space-size=4 --initial-old-space-size=64 dist/bench/follower-install.js [--state-mb 256] [--mix random|etcd] [--rounds 3]
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';

import { writeArchiveFromRecords } from '../src/snapshot/archive.js';
import type { StateRecord } from '../src/snapshot/state-format.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../src/node/snapshots.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import { silentLogger } from '../src/node/logger.js';
import { systemClock } from '../src/node/clock.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { arg } from './lib/arg.js';
import { threadCpu, threadGroup } from './lib/thread-cpu.js';

const stateMb = Number(arg('state-mb', '256'));
const mix = arg('mix', 'random');
const rounds = Number(arg('rounds', '3'));
const valueBytes = mix === 'etcd' ? 1024 : 4096;
const keys = Math.floor((stateMb * 2 ** 20) / (valueBytes + 16));

function vmHwmMiB(): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) / 1024;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-bench-follower-install-'));
  const memoryGc = startExternalMemoryGc();
  try {
    async function* batches(): AsyncGenerator<StateRecord[]> {
      for (let i = 0; i < keys; i += 1000) {
        const b: StateRecord[] = [];
        for (let j = i; j < Math.min(keys, i + 1000); j++) {
          const value = Buffer.alloc(valueBytes, 'f');
          if (mix === 'random') randomFillSync(value);
          b.push({ key: Buffer.from(`fill/${String(j).padStart(10, '0')}`), value });
        }
        yield b;
      }
    }
    const path = join(dir, 'archive.tar.gz');
    const out = createWriteStream(path);
    const closed = once(out, 'close');
    const membership = { voters: ['b1'], learners: [], addresses: { b1: '127.0.0.1:1' } };
    const w = await writeArchiveFromRecords({ id: 'bench', index: 7, term: 2, membership, createdAt: new Date().toISOString(), snapcoordVersion: 'bench' }, { records: batches(), spoolPath: join(dir, 'spool') }, out);
    await closed;
    const bytes = await readFile(path);
    const digest = createHash('sha256').update(bytes).digest('hex');
    console.log(`follower-install: ${mix} mix, ${keys} keys, state ${(w.meta.stateBytes / 2 ** 20).toFixed(1)} MiB, archive ${(bytes.length / 2 ** 20).toFixed(1)} MiB, ${rounds} rounds, load ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    const results: Record<string, { wall: number; cpu: number; main: number; peak: number }[]> = { here: [], worker: [] };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (['here', 'worker'] as const) : (['worker', 'here'] as const);
      for (const on of order) {
        const base = join(dir, `${r}-${on}`);
        const storage = await RocksStorage.open(join(base, 'data'));
        const sm = await SnapshotManager.open(join(base, 'snap'), storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 1 }, silentLogger, 'bench', systemClock);
        try {
          const stored = await sm.store.receiveArchive(
            { digest, sizeBytes: bytes.length, index: 7, term: 2, membership },
            async (sink) => {
              for (let at = 0; at < bytes.length; at += 2 ** 20) {
                const chunk = bytes.subarray(at, at + 2 ** 20);
                await sink.writeChunk(chunk, createHash('sha256').update(chunk).digest());
              }
            },
            { maxBytes: 1e12, deferWholeDigest: true },
          );
          sm.installReadOn = on;
          writeFileSync('/proc/self/clear_refs', '5'); // VmHWM := VmRSS
          const rss0 = process.memoryUsage().rss / 2 ** 20;
          const threads0 = threadCpu();
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          await sm.install(stored);
          const wall = (performance.now() - t0) / 1000;
          const c = process.cpuUsage(cpu0);
          const cpu = (c.user + c.system) / 1e6;
          const threads1 = threadCpu();
          const peak = vmHwmMiB();
          const groups = new Map<string, number>();
          let live = 0;
          for (const [tid, t] of threads1) {
            const d = t.s - (threads0.get(tid)?.s ?? 0);
            live += d;
            const g = tid === process.pid ? 'main' : threadGroup(t.name);
            groups.set(g, (groups.get(g) ?? 0) + d);
          }
          groups.set('ended', Math.max(0, cpu - live));
          if (storage.appliedIndex() !== 7) throw new Error(`applied ${storage.appliedIndex()}`);
          results[on]?.push({ wall, cpu, main: groups.get('main') ?? 0, peak });
          console.log(
            `round ${r + 1} ${on.padEnd(6)}: install ${wall.toFixed(2)} s, ${(w.meta.stateBytes / 1e6 / wall).toFixed(0)} MB/s of state; CPU ${cpu.toFixed(2)} s (${[...groups].filter(([, d]) => d > 0.005).map(([g, d]) => `${g} ${d.toFixed(2)}`).join(', ')}); peak RSS ${peak.toFixed(0)} MiB (${rss0.toFixed(0)} before); load ${loadavg()[0]?.toFixed(1)}`,
          );
        } finally {
          await sm.close();
          await storage.close();
          await rm(base, { recursive: true, force: true });
        }
      }
    }
    const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    const h = results['here'] ?? [];
    const k = results['worker'] ?? [];
    console.log(
      `medians: here ${med(h.map((x) => x.wall)).toFixed(2)} s (CPU ${med(h.map((x) => x.cpu)).toFixed(2)}, main ${med(h.map((x) => x.main)).toFixed(2)}, peak ${med(h.map((x) => x.peak)).toFixed(0)} MiB); ` +
        `worker ${med(k.map((x) => x.wall)).toFixed(2)} s (CPU ${med(k.map((x) => x.cpu)).toFixed(2)}, main ${med(k.map((x) => x.main)).toFixed(2)}, peak ${med(k.map((x) => x.peak)).toFixed(0)} MiB); ` +
        `worker/here wall ${(med(k.map((x) => x.wall)) / med(h.map((x) => x.wall))).toFixed(2)}x`,
    );
  } finally {
    memoryGc.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

/**
 * bench/snapshot-fixed-cost.ts: the fixed cost of one snapshot of a small state (issue 17: the simulator's ~10
 * snapshots a seed; production's small states). The real SnapshotManager on a MemoryStorage of K keys (the sim's
 * policy: gzip level 1, 64 KiB blocks, retain 2), on the in-memory snapshot disk the simulator gives it
 * (MemorySnapshotIo) or, with --fs, on the real file system (a temporary directory: fsyncs and all). Each round is
 * W state writes of one changed key each, then one SnapshotManager.create (a delta from the newest, as the sim's
 * nodes make them). After --warmup rounds, --rounds rounds are timed: CPU (process.cpuUsage) and wall time per
 * round, and the promises made per round (async_hooks, counted in a separate pass: the hook slows the run).
 * Figures only; prints one JSON line at the end.
 *
 *   npx tsx bench/snapshot-fixed-cost.ts [--keys 8] [--writes 10] [--rounds 2000] [--warmup 200] [--fs] [--passes 3]
 *
 * To compare two trees, run this same file in each (copy it into the other tree's bench/ if it has none) and
 * alternate the runs.
 */
import { createHook } from 'node:async_hooks';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Clock } from '../src/node/clock.js';
import { silentLogger } from '../src/node/logger.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../src/node/snapshots.js';
import type { Membership } from '../src/raft/types.js';
import { MemorySnapshotIo } from '../src/snapshot/memory-snapshot-io.js';
import { nodeSnapshotIo, type SnapshotIo } from '../src/snapshot/snapshot-io.js';
import { MemoryStorage } from '../src/storage/memory-storage.js';

import { arg } from './lib/arg.js';

const keys = Number(arg('keys', '8'));
const writes = Number(arg('writes', '10'));
const rounds = Number(arg('rounds', '2000'));
const warmup = Number(arg('warmup', '200'));
const passes = Number(arg('passes', '3'));
const realFs = process.argv.includes('--fs');
for (const [n, v] of [['keys', keys], ['writes', writes], ['rounds', rounds], ['warmup', warmup], ['passes', passes]] as const) {
  if (!Number.isSafeInteger(v) || v < 1 || v > 1_000_000) throw new RangeError(`--${n}: a whole number in 1..1000000, got ${v}`);
}

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7101', n2: '127.0.0.1:7102', n3: '127.0.0.1:7103' } };
let virtualMs = 0;
const clock: Clock = {
  nowMs: () => virtualMs,
  setTimeout: () => ({ unref() {} }),
  defer: (fn) => queueMicrotask(fn),
  setInterval: () => ({ unref() {} }),
  clearTimeout: () => undefined,
  sleep: () => Promise.resolve(),
};

/** calls: the SnapshotIo calls made (by method; a file's methods as `file.NAME`), counted while `counting`. */
const calls = new Map<string, number>();
let counting = false;

function counted<T extends object>(target: T, prefix: string, wrapResult: (name: string, result: unknown) => unknown): T {
  return new Proxy(target, {
    get(t, name, receiver) {
      const v = Reflect.get(t, name, receiver) as unknown;
      if (typeof v !== 'function' || typeof name !== 'string') return v;
      return (...args: unknown[]): unknown => {
        if (counting) calls.set(prefix + name, (calls.get(prefix + name) ?? 0) + 1);
        return wrapResult(name, (v as (...a: unknown[]) => unknown).apply(t, args));
      };
    },
  });
}

/** countCalls: `io` with its calls (and those of the files it opens) counted in `calls`. */
function countCalls(io: SnapshotIo): SnapshotIo {
  return counted(io, '', (name, result) => (name === 'open' ? (result as Promise<object>).then((f) => counted(f, 'file.', (_n, r) => r)) : result));
}

async function run(): Promise<void> {
  const dir = realFs ? await mkdtemp(join(tmpdir(), 'snapshot-fixed-cost-')) : '/bench/snapshots';
  const io = countCalls(realFs ? nodeSnapshotIo : new MemorySnapshotIo(() => 1_700_000_000_000 + virtualMs));
  const storage = await MemoryStorage.open();
  let applied = 0;
  let n = 0;
  const value = (i: number): Buffer => Buffer.from(`value ${i} ${'x'.repeat(i % 40)}`);
  await storage.write({ writes: Array.from({ length: keys }, (_, i) => ({ key: Buffer.from(`k${i}`), value: value(n++) })), appliedIndex: ++applied });
  const policy = { ...DEFAULT_SNAPSHOT_POLICY, retain: 2, gzipLevel: 1, gzipBlockBytes: 64 * 1024 };
  const mgr = await SnapshotManager.open(dir, storage, policy, silentLogger, 'bench', clock, io);
  const termAt = (): number => 1;
  const membershipAt = (): Membership => membership;
  const round = async (): Promise<void> => {
    for (let w = 0; w < writes; w++) {
      await storage.write({ writes: [{ key: Buffer.from(`k${n % keys}`), value: value(n++) }], appliedIndex: ++applied });
    }
    virtualMs += 7;
    await mgr.create(termAt, membershipAt);
  };
  try {
    for (let i = 0; i < warmup; i++) await round();
    const deltas0 = mgr.deltas;
    const result: { cpuMs: number[]; wallMs: number[]; promises: number; deltas: number; ioCalls: number; io: Record<string, number> } = { cpuMs: [], wallMs: [], promises: 0, deltas: 0, ioCalls: 0, io: {} };
    for (let p = 0; p < passes; p++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < rounds; i++) await round();
      const c = process.cpuUsage(c0);
      result.wallMs.push((performance.now() - t0) / rounds);
      result.cpuMs.push((c.user + c.system) / 1000 / rounds);
    }
    let promises = 0;
    const hook = createHook({
      init(_id, type) {
        if (type === 'PROMISE') promises++;
      },
    }).enable();
    const countedRounds = Math.min(rounds, 200);
    counting = true;
    for (let i = 0; i < countedRounds; i++) await round();
    counting = false;
    hook.disable();
    result.promises = promises / countedRounds;
    result.deltas = (mgr.deltas - deltas0) / (rounds * passes + countedRounds);
    for (const [k, v] of [...calls].sort()) result.io[k] = v / countedRounds;
    result.ioCalls = [...calls.values()].reduce((a, b) => a + b, 0) / countedRounds;
    const f = (xs: number[]): string => xs.map((x) => x.toFixed(3)).join(' / ');
    console.log(`${keys} keys, ${writes} writes a round, ${realFs ? 'real fs' : 'MemorySnapshotIo'}: CPU ${f(result.cpuMs)} ms a round, wall ${f(result.wallMs)} ms; ${result.promises.toFixed(1)} promises and ${result.ioCalls.toFixed(1)} snapshot disk calls a round; deltas ${(result.deltas * 100).toFixed(0)}% of the creates`);
    console.log(JSON.stringify(result));
  } finally {
    await mgr.close();
    await storage.close();
    if (realFs) await rm(dir, { recursive: true, force: true });
  }
}

await run();

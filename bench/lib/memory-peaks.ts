/**
 * The memory of one bench process while it does one thing (bench/full-snapshot.ts, bench/delta-snapshot.ts): its
 * peaks sampled every 10 ms (RSS, heapUsed, external memory, ArrayBuffers, V8's new space and old space used), its
 * garbage collections (minor / major, by PerformanceObserver) and, with `countAllocs`, the bytes of Buffers
 * allocated (Buffer.alloc / allocUnsafe / allocUnsafeSlow / concat, zlib's output buffers among them) by the first
 * caller outside node's own modules. Figures only.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { PerformanceObserver } from 'node:perf_hooks';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';

export const MiB = 1024 * 1024;

/** procStatus: a /proc/self/status field in KiB (VmHWM, VmRSS, RssAnon, ...); NaN where there is none. */
export function procStatus(field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m === null ? NaN : Number(m[1]);
}

/** MemoryPeaks: what stop() returns (MiB, counts, ms). */
export interface MemoryPeaks {
  readonly peakRssMiB: number;
  readonly peakHeapUsedMiB: number;
  readonly peakExternalMiB: number;
  readonly peakArrayBuffersMiB: number;
  readonly peakNewSpaceMiB: number;
  readonly peakOldSpaceUsedMiB: number;
  readonly gc: { readonly minor: number; readonly major: number; readonly minorMs: number; readonly majorMs: number };
  /** allocs: MiB of Buffers allocated by caller (`countAllocs` only), largest first, the top 12. */
  readonly allocs?: Readonly<Record<string, number>>;
}

/** callerOf: the first frame of a stack outside node's internals and this file ("file:line"). */
function callerOf(stack: string): string {
  for (const line of stack.split('\n').slice(2)) {
    if (line.includes('node:') || line.includes('memory-peaks.ts')) continue;
    const m = /\(?([^\s()]+):(\d+):\d+\)?$/.exec(line.trim());
    if (m !== null) return `${(m[1] as string).replace(/^.*\/(src|bench|node_modules)\//, '$1/')}:${m[2] as string}`;
  }
  return '?';
}

/**
 * startMemoryPeaks resets the process's peak RSS and samples it every 10 ms until stop() (which samples once more and returns the peaks).
 * `timeline`: a line every 250 ms on stderr. `countAllocs`: Buffer allocations counted by caller (slow: a stack
 * trace per allocation; for finding allocators, not for timing).
 */
export function startMemoryPeaks(options: { readonly timeline?: boolean; readonly countAllocs?: boolean } = {}): { stop(): MemoryPeaks } {
  // The peak RSS (VmHWM) counted from here: `5` to clear_refs resets it (Linux 4.0+; elsewhere the process's whole peak).
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    // not Linux, or not allowed
  }
  const t0 = performance.now();
  const gcs = { minor: 0, major: 0, minorMs: 0, majorMs: 0 };
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      // perf_hooks constants: NODE_PERFORMANCE_GC_MINOR 1, MAJOR 4, INCREMENTAL 8, WEAKCB 16
      if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === 1) {
        gcs.minor++;
        gcs.minorMs += e.duration;
      } else {
        gcs.major++;
        gcs.majorMs += e.duration;
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const peak = { heapUsed: 0, external: 0, arrayBuffers: 0, newSpace: 0, oldSpace: 0 };
  let windowAb = 0;
  let samples = 0;
  const sample = (): void => {
    const m = process.memoryUsage();
    peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed);
    peak.external = Math.max(peak.external, getHeapStatistics().external_memory);
    peak.arrayBuffers = Math.max(peak.arrayBuffers, m.arrayBuffers);
    windowAb = Math.max(windowAb, m.arrayBuffers);
    for (const s of getHeapSpaceStatistics()) {
      if (s.space_name === 'new_space') peak.newSpace = Math.max(peak.newSpace, s.space_size);
      if (s.space_name === 'old_space') peak.oldSpace = Math.max(peak.oldSpace, s.space_used_size);
    }
    if (options.timeline === true && ++samples % 25 === 0) {
      console.error(
        `t ${((performance.now() - t0) / 1000).toFixed(2)} s: rss ${(m.rss / MiB).toFixed(0)} anon ${(procStatus('RssAnon') / 1024).toFixed(0)} ` +
          `heapUsed ${(m.heapUsed / MiB).toFixed(1)} arrayBuffers ${(m.arrayBuffers / MiB).toFixed(1)} (max ${(windowAb / MiB).toFixed(1)}) MiB`,
      );
      windowAb = 0;
    }
  };
  const timer = setInterval(sample, 10);
  const counted = new Map<string, number>();
  const restore: (() => void)[] = [];
  if (options.countAllocs === true) {
    const B = Buffer as unknown as Record<string, (...a: unknown[]) => Buffer>;
    for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow', 'concat']) {
      const original = B[name] as (...a: unknown[]) => Buffer;
      B[name] = function (this: unknown, ...a: unknown[]): Buffer {
        const b = original.apply(this, a);
        if (b.length >= 4096) {
          const at = `${name} ${callerOf(new Error().stack ?? '')}`;
          counted.set(at, (counted.get(at) ?? 0) + b.length);
        }
        return b;
      };
      restore.push(() => {
        B[name] = original;
      });
    }
  }
  return {
    stop(): MemoryPeaks {
      sample();
      clearInterval(timer);
      observer.disconnect();
      for (const r of restore) r();
      const allocs = [...counted].sort((a, b) => b[1] - a[1]).slice(0, 12);
      return {
        peakRssMiB: procStatus('VmHWM') / 1024,
        peakHeapUsedMiB: peak.heapUsed / MiB,
        peakExternalMiB: peak.external / MiB,
        peakArrayBuffersMiB: peak.arrayBuffers / MiB,
        peakNewSpaceMiB: peak.newSpace / MiB,
        peakOldSpaceUsedMiB: peak.oldSpace / MiB,
        gc: { ...gcs },
        ...(options.countAllocs === true ? { allocs: Object.fromEntries(allocs.map(([k, v]) => [k, Math.round(v / MiB)])) } : {}),
      };
    },
  };
}

/** ChildRound: a round's figures (childRound): this process's RSS and ArrayBuffers at its start and their peaks. */
export interface ChildRound {
  readonly rss0: number;
  readonly rssMax: number;
  readonly ab0: number;
  readonly abMax: number;
  /** seconds: the child's run, wall; cpuSeconds: this process's CPU meanwhile. */
  readonly seconds: number;
  readonly cpuSeconds: number;
}

/**
 * childRound: one round of a bench whose work is done by a child process against a server in this one
 * (bench/download-memory.ts, bench/image-serving-memory.ts): a full collection and 300 ms to settle, then this
 * process's RSS and ArrayBuffers sampled every `sampleMs` until the child (`node --import tsx ...args`) exits 0.
 */
export async function childRound(gc: () => void, args: readonly string[], sampleMs: number): Promise<ChildRound> {
  const rssBytes = (): number => 1024 * procStatus('VmRSS');
  gc();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const rss0 = rssBytes();
  const ab0 = process.memoryUsage().arrayBuffers;
  let rssMax = rss0;
  let abMax = ab0;
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, rssBytes());
    abMax = Math.max(abMax, process.memoryUsage().arrayBuffers);
  }, sampleMs);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    const [code] = (await once(child, 'exit')) as [number | null];
    if (code !== 0) throw new Error(`the client exited ${code}`);
  } finally {
    clearInterval(sampler);
  }
  const cpu = process.cpuUsage(cpu0);
  return { rss0, rssMax, ab0, abMax, seconds: (performance.now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

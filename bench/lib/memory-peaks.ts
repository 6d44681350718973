/**
 * The memory of one bench process while it does one thing (bench/full-snapshot.ts, bench/delta-snapshot.ts): its
 * peaks sampled every 10 ms (RSS, heapUsed, external memory, ArrayBuffers, V8's new space and old space used), its
 * garbage collections (minor / major, by PerformanceObserver) and, with `countAllocs`, the bytes of Buffers
 * allocated (Buffer.alloc / allocUnsafe / allocUnsafeSlow / concat, zlib's output buffers among them) by the first
 * caller outside node's own modules. Figures only.
 */
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

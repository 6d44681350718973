/**
 * CPU time of this process by thread, from /proc/self/task (Linux; elsewhere
 * empty): what bench/install.ts and bench:snapshot's children report to show
 * where a process's CPU went (its main thread, RocksDB's own threads, and the
 * rest). Node 20 names every other thread of the process `node` (libuv's
 * threadpool, V8's platform threads doing GC and compilation, worker threads
 * alike), so those are one group, `other`: it is not the threadpool alone.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** ThreadCpu: one thread's name and CPU seconds (user + system) so far. */
export interface ThreadCpu {
  readonly name: string;
  readonly s: number;
}

/** threadCpu: CPU seconds (user + system, 10 ms ticks) of each thread of this process, by tid, with the thread's name. */
export function threadCpu(): Map<number, ThreadCpu> {
  const out = new Map<number, ThreadCpu>();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      out.set(Number(tid), { name, s: (Number(f[11]) + Number(f[12])) / 100 });
    } catch {
      // gone
    }
  }
  return out;
}

/** threadGroup: a thread's name without its number (rocksdb:low, rocksdb:high); `other` for Node's own threads, all named `node`. */
export function threadGroup(name: string): string {
  const g = name.replace(/[0-9]+$/, '').replace(/:$/, '');
  return g === 'node' ? 'other' : g;
}

/**
 * threadCpuByGroup: the CPU seconds each group of threads used between two
 * readings (`main` for the process's main thread); `ended` is what threads
 * gone by `after` used (the process's total `totalS`, when given, minus the
 * threads still there).
 */
export function threadCpuByGroup(before: Map<number, ThreadCpu>, after: Map<number, ThreadCpu>, totalS?: number): Record<string, number> {
  const out: Record<string, number> = {};
  let sum = 0;
  for (const [tid, t] of after) {
    const d = t.s - (before.get(tid)?.s ?? 0);
    const g = tid === process.pid ? 'main' : threadGroup(t.name);
    out[g] = (out[g] ?? 0) + d;
    sum += d;
  }
  if (totalS !== undefined && totalS - sum >= 0.005) out.ended = totalS - sum;
  for (const k of Object.keys(out)) out[k] = Math.round((out[k] ?? 0) * 100) / 100;
  return out;
}

/** fmtThreadCpu: "main 0.41, other 0.10, rocksdb:low 0.05, ..." (groups under 5 ms left out). */
export function fmtThreadCpu(groups: Record<string, number>): string {
  return Object.entries(groups)
    .filter(([, s]) => s >= 0.005)
    .sort((a, b) => b[1] - a[1])
    .map(([g, s]) => `${g} ${s.toFixed(2)}`)
    .join(', ');
}

/** processCpuSeconds: the CPU time (user + system, all threads, 10 ms ticks) process `pid` has used so far; 0 when it is gone or unknown. */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

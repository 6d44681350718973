/**
 * bench:snapshot-cluster — the load test of snapshot streaming, end to end,
 * on a real 3-node cluster (issue 15 item 6):
 *
 *   npm run bench:snapshot-cluster -- [--keys 1000000] [--value-bytes 1024] [--mix etcd,text]
 *       [--downloads 4] [--write-seconds 10] [--write-clients 16] [--no-etcd] [--etcd-members 3|1] [--etcd-only] [--keep] [--no-node-runtime]
 *       [--saves-only] [--cli-prof DIR] [--node-prof DIR] [--restore-only]
 *
 * SNAPCOORD_BENCH_NODE_FLAGS (space-separated) adds node flags to every member after its launcher's (a later V8
 * flag wins), e.g. "--trace-gc"; SNAPCOORD_BENCH_NODE_ENV ("NAME=value ...") sets variables in every member's
 * environment over its launcher's, e.g. "MALLOC_MMAP_THRESHOLD_=32768"; --memory-detail adds what made up each node's
 * highest RSS of a phase (RssAnon/RssFile, and V8's heap and external memory from its /metrics); with BENCH_NODE_LOG_LEVEL set, each node's output is kept (BENCH_NODE_LOG_DIR).
 * SNAPCOORD_BENCH_MEMORY_TIMELINE=FILE appends every 100 ms sample of the nodes' memory to FILE (JSON lines, with the
 * phases' ends), to line a peak up with the nodes' logs.
 *
 * For a state of K keys × V bytes (`fill/%08d` keys; the etcd anchor's
 * workload by default), per value mix — `etcd`: values of `f` bytes, as in
 * etcd's own benchmark; `text`: words from a 16,384-word vocabulary, which
 * gzip compresses about 2:1 — it measures, through the CLI an operator uses
 * (built once into dist/, TLS and API keys on, as in production):
 *
 *   - load by restore: `snapshot restore` of an archive of that state, until
 *     every node has applied it;
 *   - `snapshot save` after a write (the snapshot is made), and a second save
 *     with no write in between (the newest snapshot is served; median of 3), with the
 *     CLI's start-up apart (`snapshot save --help`: process start and the
 *     modules a save loads, no connection);
 *   - C concurrent verified downloads (`snapcoord bench snapshot`);
 *   - `snapshot save` again after the write phases below (automatic snapshots
 *     were taken meanwhile: the steady case, a snapshot made from the previous
 *     one and the keys written since);
 *   - write p50/p99 alone and while C downloads run (`snapcoord bench write
 *     --during-snapshots C`);
 *   - a follower killed until the leader compacts past it, then catching up
 *     by snapshot install;
 *   - the peak RSS (VmHWM) of every node and of each CLI process.
 *
 * When Debian's etcd is installed (/usr/bin/etcd, /usr/bin/etcdctl) it fills a
 * 3-member etcd (--etcd-members) with the same keys and values and runs `etcdctl snapshot save`
 * in the same run, and prints snapcoord's figures as ratios to etcd's. It leaves
 * etcd out, saying why, when its members would not fit in the memory available
 * (~2 KB per key and member over the value); a failed etcd side loses no snapcoord figure.
 * Figures only: nothing here passes or fails on time.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Command } from 'commander';
import { Etcd3 } from 'etcd3';

import { Role, type StatusResponse } from '../src/gen/snapcoord/v1/cluster.js';
import { ClusterClient } from '../src/client/cluster-client.js';
import type { ClientDial } from '../src/client/dial.js';
import { startBenchCluster, type BenchClusterLayout } from './lib/bench-cluster.js';
import type { StateRecord } from '../src/snapshot/state-format.js';
import { writeArchiveFromRecords } from '../src/snapshot/archive.js';
import type { SnapshotBenchDocument, WriteBenchDocument } from '../src/cli/bench/run.js';
import { type Child, REPO_ROOT, startProgram } from '../test/harness/child.js';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../src/cli/node-runtime.js';
import { DIST_CLI, buildDist } from './lib/dist.js';
import { MiB } from './lib/memory-peaks.js';
import { Values } from './lib/text-pool.js';
import { processCpuSeconds as cpuSeconds } from './lib/thread-cpu.js';
import { freePorts } from '../test/harness/ports.js';
import { until } from '../test/harness/until.js';

const MIX_NAMES = ['etcd', 'text'] as const;
type Mix = (typeof MIX_NAMES)[number];

const API_KEY = 'bench-admin-key-0123456789abcdef';
const CLI = DIST_CLI;
const RECORDS_PER_BATCH = 1_000;
/** SNAPSHOT_ENTRIES / TRAILING_ENTRIES: the nodes' policy, small so a killed follower is compacted past quickly. */
const SNAPSHOT_ENTRIES = 2_000;
const TRAILING_ENTRIES = 200;
/** RSS_SAMPLE_MS: how often the nodes' peak RSS (VmHWM) is read. */
const RSS_SAMPLE_MS = 100;
/** CUTOFF_WRITES: writes made while a follower is down (more than SNAPSHOT_ENTRIES + TRAILING_ENTRIES). */
const CUTOFF_WRITES = 3_000;
/** METRICS_SAMPLE_MS: how often --memory-detail reads the nodes' V8 figures from their /metrics. */
const METRICS_SAMPLE_MS = 250;

// ------------------------------------------------------------------ values

function keyOf(i: number): Buffer {
  return Buffer.from(`fill/${String(i).padStart(8, '0')}`);
}

/** gzipRatio: uncompressed / gzip-1 size of `sample`. */
function gzipRatio(sample: Buffer): number {
  return sample.length / gzipSync(sample, { level: 1 }).length;
}

// ------------------------------------------------------------------ the archive

interface Archive {
  readonly path: string;
  readonly bytes: number;
  readonly stateBytes: number;
  readonly keys: number;
}

/**
 * buildArchive writes the state of `keys` keys as a snapcoord archive as `snapshot save` makes it (a node's
 * snapshot: writeArchiveFromRecords, gzip members of whole records, which a restore's copy keeps as they are),
 * for the restore. (It used writeArchive's 1 MiB tar blocks, a layout no node writes any more.)
 */
async function buildArchive(dir: string, keys: number, values: Values): Promise<Archive> {
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += RECORDS_PER_BATCH) {
      const batch: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + RECORDS_PER_BATCH); j++) batch.push({ key: keyOf(j), value: values.of(j) });
      yield batch;
    }
  }
  const path = join(dir, `state-${values.mix}.tar.gz`);
  const out = createWriteStream(path, { mode: 0o600 });
  const meta = {
    id: `bench-${values.mix}`,
    index: 1,
    term: 1,
    membership: { voters: ['b1'], learners: [], addresses: { b1: '127.0.0.1:1' } },
    createdAt: new Date().toISOString(),
    snapcoordVersion: 'bench',
  };
  const done = once(out, 'close');
  const r = await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, `state-${values.mix}.spool`) }, out);
  await done;
  return { path, bytes: r.archiveBytes, stateBytes: r.meta.stateBytes, keys };
}

// ------------------------------------------------------------------ processes

/** peakRssMiB: a process's peak resident set (VmHWM) so far, in MiB; 0 when it is gone. */
function peakRssMiB(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

/**
 * resetPeakRss sets a process's VmHWM back to its current RSS (Linux: `5` into /proc/<pid>/clear_refs),
 * so the next peakRssMiB is the peak of what ran since. False when refused (the peak then runs on).
 */
function resetPeakRss(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

interface Timed {
  readonly seconds: number;
  readonly stdout: string;
  /** peakRssMiB: the highest VmHWM seen while it ran (sampled every 50 ms). */
  readonly peakRssMiB: number;
  /** monotonicUs: when it started and ended on the monotonic clock (µs; a --cpu-prof profile's startTime is on it too). */
  readonly monotonicUs: readonly [number, number];
}

/** run starts a command, samples its peak RSS while it runs, and fails with its output when it exits non-zero. */
async function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Timed> {
  const t0 = performance.now();
  const us0 = Number(process.hrtime.bigint() / 1000n);
  const p = spawn(cmd, args, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (b: Buffer) => {
    if (stdout.length < 16 << 20) stdout += b.toString();
  });
  p.stderr.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-8192);
  });
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, peakRssMiB(p.pid));
  }, 50);
  const [code] = (await once(p, 'exit')) as [number | null];
  clearInterval(sampler);
  const seconds = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${String(code)}: ${stderr.trim() || stdout.slice(-2000)}`);
  return { seconds, stdout, peakRssMiB: peak, monotonicUs: [us0, Number(process.hrtime.bigint() / 1000n)] };
}

// ------------------------------------------------------------------ snapcoord

interface SnapNode {
  readonly id: string;
  readonly grpc: string;
  readonly peer: string;
  readonly http: string;
  child: Child;
  /** peakMiB: the highest VmHWM of this node's earlier processes (a restart starts a new one). */
  peakMiB: number;
  /** phaseMiB: the highest VmHWM of its processes killed during the current phase. */
  phaseMiB: number;
  /** phaseTop: what made up the highest RSS sampled in the current phase (its /proc status and, with --memory-detail, V8's figures). */
  phaseTop: MemorySample | null;
  /** v8: the node's newest V8 figures (--memory-detail: scraped from its /metrics), MiB. */
  v8: V8Figures | null;
}

/**
 * V8Figures: a node's V8 heap (used, committed) and external memory, MiB, as its /metrics reports them, with
 * RocksDB's own memory there (both databases: memtables, table readers, block caches) and glibc's main heap
 * (the `[heap]` mapping's Rss in /proc/PID/smaps, read at the same scrape).
 */
interface V8Figures {
  readonly heapUsedMiB: number;
  readonly heapTotalMiB: number;
  readonly externalMiB: number;
  readonly rocksMemtablesMiB: number;
  readonly rocksReadersMiB: number;
  readonly rocksCacheMiB: number;
  readonly mallocHeapMiB: number;
}

/** mallocHeapMiB: the Rss of a process's `[heap]` mapping (glibc's main arena), MiB, or NaN when it cannot be read. */
function mallocHeapMiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let smaps: string;
  try {
    smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return NaN;
  }
  const at = smaps.indexOf('[heap]');
  if (at < 0) return 0;
  const rss = /^Rss:\s+(\d+) kB/m.exec(smaps.slice(at, at + 400));
  return rss === null ? NaN : Number(rss[1]) / 1024;
}

/** MemorySample: one sample of a node's memory (MiB): RSS and its parts (/proc/PID/status RssAnon, RssFile, RssShmem). */
interface MemorySample {
  readonly rssMiB: number;
  readonly anonMiB: number;
  readonly fileMiB: number;
  readonly shmemMiB: number;
  readonly v8: V8Figures | null;
}

/** memorySample: a process's RSS and its parts now, or null when it is gone. */
function memorySample(pid: number | undefined, v8: V8Figures | null): MemorySample | null {
  if (pid === undefined) return null;
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024;
  return { rssMiB: kib('VmRSS'), anonMiB: kib('RssAnon'), fileMiB: kib('RssFile'), shmemMiB: kib('RssShmem'), v8 };
}

/** PhasePeak: each node's peak RSS (MiB) during one phase of the bench, the leader when it ended, and what made up each node's highest sample. */
interface PhasePeak {
  readonly phase: string;
  readonly nodeMiB: number[];
  readonly leader?: string;
  readonly top?: (MemorySample | null)[];
}

class SnapCluster {
  private constructor(
    readonly dir: string,
    readonly nodes: SnapNode[],
    private readonly flagsOf: (id: string) => string[],
    readonly cliFlags: readonly string[],
    private readonly dial: ClientDial,
    private readonly runtimeEnv: Record<string, string>,
    memoryDetail: boolean,
  ) {
    this.#sampler = setInterval(() => this.sample(), RSS_SAMPLE_MS);
    for (const n of nodes) this.#logInto(n);
    if (memoryDetail) this.#scraper = setInterval(() => this.scrape(), METRICS_SAMPLE_MS);
  }

  #scraper: NodeJS.Timeout | undefined;
  /** lastLeader: the id of the leader the bench last found. */
  lastLeader: string | undefined;

  /** scrape reads each running node's V8 figures from its /metrics (--memory-detail); a node that does not answer keeps its last ones. */
  scrape(): void {
    for (const n of this.nodes) {
      if (!n.child.running) continue;
      const req = httpRequest(
        { host: '127.0.0.1', port: Number(n.http.split(':')[1]), path: '/metrics', headers: { authorization: `Bearer ${API_KEY}` }, timeout: 2_000 },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            if (body.length < 1 << 20) body += d;
          });
          res.on('end', () => {
            const g = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(body)?.[1] ?? NaN) / MiB;
            const rocks = (kind: string): number =>
              [...body.matchAll(new RegExp(`^snapcoord_rocksdb_memory_bytes\\{[^}]*kind="${kind}"[^}]*\\} (\\S+)`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0) / MiB;
            n.v8 = {
              heapUsedMiB: g('nodejs_heap_size_used_bytes'),
              heapTotalMiB: g('nodejs_heap_size_total_bytes'),
              externalMiB: g('nodejs_external_memory_bytes'),
              rocksMemtablesMiB: rocks('memtables'),
              rocksReadersMiB: rocks('table_readers'),
              rocksCacheMiB: rocks('block_cache'),
              mallocHeapMiB: mallocHeapMiB(n.child.proc.pid),
            };
          });
        },
      );
      // A node that does not answer (starting, killed) keeps its last figures; the table shows '-' for none.
      req.on('error', () => undefined);
      req.on('timeout', () => req.destroy());
      req.end();
    }
  }

  /** #sampler: reads every node's VmHWM each RSS_SAMPLE_MS, so a peak is kept even when its process then ends. */
  readonly #sampler: NodeJS.Timeout;
  #stopped = false;

  /** sample folds each running node's peak RSS so far into its phase peak. */
  sample(): void {
    const line: Record<string, unknown> = {};
    for (const n of this.nodes) {
      n.phaseMiB = Math.max(n.phaseMiB, peakRssMiB(n.child.proc.pid));
      const m = memorySample(n.child.proc.pid, n.v8);
      if (m !== null && m.rssMiB > (n.phaseTop?.rssMiB ?? 0)) n.phaseTop = m;
      if (m !== null) line[n.id] = [m.rssMiB, m.anonMiB, n.v8?.mallocHeapMiB ?? NaN, n.v8?.heapTotalMiB ?? NaN, n.v8?.externalMiB ?? NaN].map((x) => Math.round(x));
    }
    this.#timeline?.write(`${JSON.stringify({ ms: Date.now(), ...line })}\n`);
  }

  /**
   * #timeline (SNAPCOORD_BENCH_MEMORY_TIMELINE=FILE): every sample as one JSON line, {ms: epoch ms, <node id>: [rss, anon,
   * glibc [heap], V8 heap committed, external] MiB} (the last three as of the last --memory-detail scrape), and each
   * endPhase as {ms, phase}, and the nodes' log lines but the per-request ones as {ms, node, log} (BENCH_NODE_LOG_LEVEL=info).
   */
  readonly #timeline = process.env.SNAPCOORD_BENCH_MEMORY_TIMELINE !== undefined ? createWriteStream(process.env.SNAPCOORD_BENCH_MEMORY_TIMELINE, { flags: 'a' }) : null;

  /** #logInto copies a node's log lines but the gateway's per-request ones into #timeline (their own lines: {ms, log}). */
  #logInto(n: SnapNode): void {
    const timeline = this.#timeline;
    if (timeline === null) return;
    let rest = '';
    n.child.proc.stdout?.on('data', (d: Buffer) => {
      const lines = (rest + d.toString('utf8')).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('{') && !l.includes('"request completed"')) timeline.write(`${JSON.stringify({ ms: Date.now(), node: n.id, log: l.slice(0, 2000) })}\n`);
    });
  }

  /** start runs 3 nodes; `runtime`: with the V8 flags and malloc environment their launchers give them (cli/node-runtime.ts). */
  static async start(dir: string, runtime: boolean, profDir?: string, retain?: number, memoryDetail = false): Promise<SnapCluster> {
    // SNAPCOORD_BENCH_NODE_ENV ("NAME=value NAME=value"): variables set in every member's environment over its launcher's (A/B runs of malloc settings).
    const extraEnv = Object.fromEntries(
      (process.env.SNAPCOORD_BENCH_NODE_ENV ?? '')
        .split(' ')
        .filter((kv) => kv.includes('='))
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
    const runtimeEnv = { ...(runtime ? NODE_MALLOC_ENV : {}), ...extraEnv };
    const flagsOf = (lay: BenchClusterLayout) => (id: string): string[] => [
      ...(runtime ? NODE_V8_FLAGS : []),
      ...(process.env.SNAPCOORD_BENCH_NODE_FLAGS?.split(' ').filter((f) => f !== '') ?? []),
      ...(profDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []),
      CLI, ...lay.serveArgs(id, process.env.BENCH_NODE_LOG_LEVEL ?? 'warn'),
      '--snapshot-entries', String(SNAPSHOT_ENTRIES), '--snapshot-trailing-entries', String(TRAILING_ENTRIES),
      ...(retain !== undefined ? ['--snapshot-retain', String(retain)] : []),
    ];
    const { lay, children } = await startBenchCluster(dir, API_KEY, (lay, id) => startProgram(id, process.execPath, flagsOf(lay)(id), runtimeEnv));
    const nodes = lay.ids.map((id, i) => ({ id, grpc: lay.grpc(i), peer: lay.peer(i), http: lay.http(i), child: children[i] as Child, peakMiB: 0, phaseMiB: 0, phaseTop: null, v8: null }));
    const c = new SnapCluster(dir, nodes, flagsOf(lay), ['--cacert', lay.ca, '--api-key', API_KEY], lay.dial, runtimeEnv, memoryDetail);
    await c.leader();
    return c;
  }

  status(n: SnapNode): Promise<StatusResponse> {
    const client = new ClusterClient(n.grpc, this.dial);
    return client.status({ deadlineMs: 1_000 }).finally(() => client.close());
  }

  leader(): Promise<SnapNode> {
    return until('a snapcoord leader', 30_000, async () => {
      for (const n of this.nodes) {
        if (!n.child.running) continue;
        const st = await this.status(n).catch(() => undefined);
        if (st?.role === Role.ROLE_LEADER) {
          this.lastLeader = n.id;
          return n;
        }
      }
      return undefined;
    });
  }

  /** waitApplied waits until every running node has applied `index`; returns when. */
  async waitApplied(index: bigint, timeoutMs: number, only?: readonly SnapNode[]): Promise<void> {
    for (const n of only ?? this.nodes) {
      await until(`${n.id} to apply ${index}`, timeoutMs, async () => ((await this.status(n).catch(() => undefined))?.appliedIndex ?? 0n) >= index ? true : undefined, { everyMs: 50 });
    }
  }

  /** waitSnapshot waits until every node's newest snapshot is at `index` or later. */
  async waitSnapshot(index: bigint, timeoutMs: number): Promise<void> {
    for (const n of this.nodes) {
      await until(`${n.id} to snapshot ${index}`, timeoutMs, async () => ((await this.status(n).catch(() => undefined))?.snapshotIndex ?? 0n) >= index ? true : undefined, { everyMs: 50 });
    }
  }

  /** cli runs `snapcoord <args>` against the leader, as an operator would (with --cpu-prof into `profDir` if given). */
  async cli(args: readonly string[], profDir?: string): Promise<Timed> {
    const l = await this.leader();
    const prof = profDir !== undefined ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
    return run(process.execPath, [...prof, CLI, ...args, '--endpoint', l.grpc, ...this.cliFlags]);
  }

  async kill(n: SnapNode): Promise<void> {
    const peak = peakRssMiB(n.child.proc.pid);
    n.peakMiB = Math.max(n.peakMiB, peak);
    n.phaseMiB = Math.max(n.phaseMiB, peak);
    await n.child.kill('SIGKILL');
  }

  restart(n: SnapNode): void {
    n.child = startProgram(n.id, process.execPath, this.flagsOf(n.id), this.runtimeEnv);
    this.#logInto(n);
  }

  /** peaks: each node's peak RSS (MiB) over all its processes so far. */
  peaks(): number[] {
    return this.nodes.map((n) => Math.max(n.peakMiB, peakRssMiB(n.child.proc.pid)));
  }

  /** phasePeaks: each phase's peak RSS per node, in the order the phases ended (endPhase). */
  readonly phasePeaks: PhasePeak[] = [];

  /**
   * endPhase records each node's peak RSS since the previous endPhase (or its start) as `phase`, folds
   * it into its overall peak, and resets the peaks for the next phase (where the kernel refuses, the
   * next figure is the peak so far).
   */
  endPhase(phase: string): void {
    this.sample();
    this.#timeline?.write(`${JSON.stringify({ ms: Date.now(), phase })}\n`);
    const top = this.nodes.map((n) => n.phaseTop);
    const nodeMiB = this.nodes.map((n) => {
      const peak = n.phaseMiB;
      n.peakMiB = Math.max(n.peakMiB, peak);
      n.phaseMiB = 0;
      n.phaseTop = null;
      resetPeakRss(n.child.proc.pid);
      return peak;
    });
    this.phasePeaks.push({ phase, nodeMiB, ...(this.lastLeader !== undefined ? { leader: this.lastLeader } : {}), top });
  }

  /**
   * stop ends every node (SIGTERM, SIGKILL after the harness's grace) and, the first time, records what they used
   * from the last endPhase until they exited as the phase `stop` (a node still finishing a snapshot works on).
   */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.child.kill('SIGTERM')));
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#sampler);
    clearInterval(this.#scraper);
    this.#timeline?.end();
    this.phasePeaks.push({
      phase: 'stop (SIGTERM until exit)',
      top: this.nodes.map((n) => n.phaseTop),
      nodeMiB: this.nodes.map((n) => {
        n.peakMiB = Math.max(n.peakMiB, n.phaseMiB);
        return n.phaseMiB;
      }),
    });
  }
}

// ------------------------------------------------------------------ etcd

interface EtcdFigures {
  readonly fillSeconds: number;
  readonly saveSeconds: number;
  readonly dbBytes: number;
  readonly savePeakRssMiB: number;
  readonly leaderPeakRssMiB: number;
  readonly members: number;
}

/**
 * ETCD_SNAPSHOT_COUNT: etcd's --snapshot-count for the etcd side. etcd 3.4 keeps every entry since
 * its last snapshot in memory (default 100,000 entries); each entry of this fill is a transaction of
 * 100 puts, so at the default a member held ~10 GiB of log at 8M keys of 1 KiB (7.1-8.0 GiB per member
 * measured, 23 GiB used of this machine's 24, when the fill was stopped). 10,000 is etcd 3.6's default.
 */
const ETCD_SNAPSHOT_COUNT = 10_000;
/** ETCD_INDEX_BYTES_PER_KEY: an etcd member's resident memory per key beside its log (its key index, revisions), an estimate. */
const ETCD_INDEX_BYTES_PER_KEY = 500;

/**
 * etcdMemoryShortfall: why `members` etcd members of `keys` keys of `valueBytes` would not fit in the
 * memory available now (a fill that runs the machine out of memory takes the snapcoord side's
 * processes down with it), or null when they fit. Counted per member: the in-memory log of
 * ETCD_SNAPSHOT_COUNT + 5,000 transactions of 100 values and the key index (the database file is
 * mapped, and its pages are the kernel's to drop).
 */
function etcdMemoryShortfall(keys: number, valueBytes: number, members: number): string | null {
  const txns = Math.min(Math.ceil(keys / 100), ETCD_SNAPSHOT_COUNT + 5_000);
  const need = members * (txns * 100 * (valueBytes + 64) + keys * ETCD_INDEX_BYTES_PER_KEY);
  const kib = Number(/^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN);
  if (!Number.isFinite(kib)) return null;
  const avail = kib * 1024;
  if (need <= avail * 0.6) return null;
  const gib = (b: number): string => `${(b / 1024 ** 3).toFixed(1)} GiB`;
  return `${members} etcd member(s) of ${keys.toLocaleString('en-US')} keys would hold ~${gib(need)}; ${gib(avail)} available (use --etcd-members 1 or --no-etcd)`;
}

/** etcdSide fills a fresh etcd of `members` members with the same keys and values and times `etcdctl snapshot save` of it. */
async function etcdSide(dir: string, keys: number, values: Values, fillConcurrency: number, members: number): Promise<EtcdFigures> {
  const ports = await freePorts(2 * members);
  const ids = Array.from({ length: members }, (_, i) => `e${i + 1}`);
  const client = (i: number): string => `http://127.0.0.1:${ports[i] ?? 0}`;
  const peer = (i: number): string => `http://127.0.0.1:${ports[i + members] ?? 0}`;
  const initial = ids.map((id, i) => `${id}=${peer(i)}`).join(',');
  const children = ids.map((id, i) =>
    startProgram(id, '/usr/bin/etcd', [
      '--name', id, '--data-dir', join(dir, id), '--listen-client-urls', client(i), '--advertise-client-urls', client(i),
      '--listen-peer-urls', peer(i), '--initial-advertise-peer-urls', peer(i), '--initial-cluster', initial,
      '--initial-cluster-state', 'new', '--initial-cluster-token', 'bench', '--quota-backend-bytes', String(16 * 1024 ** 3),
      '--snapshot-count', String(ETCD_SNAPSHOT_COUNT),
    ], { ETCD_UNSUPPORTED_ARCH: '' }),
  );
  const perHost = ids.map((_, i) => new Etcd3({ hosts: client(i) }));
  const all = new Etcd3({ hosts: ids.map((_, i) => client(i)) });
  try {
    const leaderIndex = (): Promise<number> =>
      until('an etcd leader', 30_000, async () => {
        for (let i = 0; i < ids.length; i++) {
          const st = await (perHost[i] as Etcd3).maintenance.status().catch(() => undefined);
          if (st !== undefined && st.leader !== '0' && st.leader === st.header.member_id) return i;
        }
        return undefined;
      });
    await leaderIndex();
    // Fill: transactions of 100 puts (etcd's --max-txn-ops is 128), `fillConcurrency` at a time.
    const t0 = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < keys) {
        const from = next;
        next = Math.min(keys, next + 100);
        const ops = [];
        for (let i = from; i < next; i++) ops.push(all.put(keyOf(i)).value(values.of(i)));
        // A compare that always holds (a key never written has version 0): the puts apply as one transaction.
        await all.if('bench/never-written', 'Version', '==', 0).then(...ops).commit();
      }
    };
    await Promise.all(Array.from({ length: fillConcurrency }, worker));
    const fillSeconds = (performance.now() - t0) / 1000;
    const li = await leaderIndex();
    const file = join(dir, 'etcd.db');
    const save = await run('/usr/bin/etcdctl', ['--endpoints', client(li), 'snapshot', 'save', file], { ETCDCTL_API: '3' });
    const dbBytes = (await stat(file)).size;
    const leaderPeakRssMiB = peakRssMiB(children[li]?.proc.pid);
    return { fillSeconds, saveSeconds: save.seconds, dbBytes, savePeakRssMiB: save.peakRssMiB, leaderPeakRssMiB, members };
  } finally {
    all.close();
    for (const c of perHost) c.close();
    for (const c of children) await c.kill('SIGTERM', 3_000);
  }
}

// ------------------------------------------------------------------ one mix

interface MixFigures {
  readonly mix: Mix;
  readonly archive: Archive;
  readonly gzipRatio: number;
  readonly restoreCliSeconds: number;
  readonly restoreAllAppliedSeconds: number;
  readonly restoreCliPeakMiB: number;
  readonly restoreSnapshottedSeconds: number;
  readonly saveSeconds: number;
  readonly saveBytes: number;
  readonly saveCliPeakMiB: number;
  /** save2Seconds: a save with no write since the last (the newest snapshot is served), median of 3 (save2AllSeconds, in order). */
  readonly save2Seconds: number;
  readonly save2AllSeconds: number[];
  /** cliStartupSeconds: `snapshot save --help` (the CLI's process start and a save's modules, no connection), median of 3. */
  readonly cliStartupSeconds: number;
  readonly save3Seconds: number;
  readonly downloads: { readonly streams: number; readonly mbPerSec: number; readonly p50Ms: number; readonly p99Ms: number; readonly completed: number; readonly failed: number };
  readonly writes: { readonly idleP50: number; readonly idleP99: number; readonly duringP50: number; readonly duringP99: number; readonly idleOps: number; readonly duringOps: number };
  readonly catchUpSeconds: number;
  readonly nodePeakMiB: number[];
  /** phasePeakMiB: each phase's peak RSS per node (MiB). */
  readonly phasePeakMiB: PhasePeak[];
  readonly etcd: EtcdFigures | null;
}

/** etcdMix: etcd's side of one mix (null when it is not run, does not fit, or fails: said on stderr). */
async function etcdMix(dir: string, mix: Mix, o: Options, values: Values): Promise<EtcdFigures | null> {
  if (!o.etcd) return null;
  const shortfall = etcdMemoryShortfall(o.keys, o.valueBytes, o.etcdMembers);
  if (shortfall !== null) {
    log(`[${mix}] etcd: not run: ${shortfall}`);
    return null;
  }
  log(`[${mix}] etcd: filling ${o.keys.toLocaleString('en-US')} keys (${o.etcdMembers} member(s))`);
  try {
    const etcd = await etcdSide(join(dir, 'etcd'), o.keys, values, 32, o.etcdMembers);
    log(`[${mix}] etcd: fill ${etcd.fillSeconds.toFixed(1)} s, etcdctl snapshot save ${etcd.saveSeconds.toFixed(2)} s (${fmtMiB(etcd.dbBytes)}), peak RSS leader ${etcd.leaderPeakRssMiB.toFixed(0)} MiB`);
    return etcd;
  } catch (err) {
    // snapcoord's figures of this mix are kept: the table says etcd did not finish.
    log(`[${mix}] etcd: failed, no ratios for this mix: ${err instanceof Error ? err.message : String(err)}`);
    return null;
  } finally {
    await rm(join(dir, 'etcd'), { recursive: true, force: true });
  }
}

async function benchMix(root: string, mix: Mix, o: Options): Promise<MixFigures> {
  const dir = join(root, mix);
  await mkdir(dir, { recursive: true });
  const values = new Values(mix, o.valueBytes);
  if (o.etcdOnly) {
    // etcd's side alone (its figures do not depend on snapcoord's tree): printed above, no table.
    await etcdMix(dir, mix, o, values);
    throw new RestoreOnlyDone();
  }
  const sample = Buffer.concat(Array.from({ length: 4096 }, (_, i) => values.of(i)));
  const ratio = gzipRatio(sample);
  log(`[${mix}] building the archive of ${o.keys.toLocaleString('en-US')} keys × ${o.valueBytes} B (gzip-1 ratio of the values ${ratio.toFixed(2)}:1)`);
  const archive = await buildArchive(dir, o.keys, values);
  log(`[${mix}] archive ${fmtMiB(archive.bytes)} for ${fmtMiB(archive.stateBytes)} of state`);

  const c = await SnapCluster.start(join(dir, 'snapcoord'), o.nodeRuntime, o.nodeProfDir, o.snapshotRetain, o.memoryDetail);
  try {
    // Load by restore: until the CLI returns, and until every node has applied it.
    const cpu0 = c.nodes.map((n) => cpuSeconds(n.child.proc.pid));
    const t0 = performance.now();
    const restore = await c.cli(['snapshot', 'restore', archive.path, '--json', '--no-progress']);
    // `snapshot restore --json` prints {file, restoredIndex, archive}: the restore entry's index in the log.
    const restoreIndex = BigInt((JSON.parse(restore.stdout) as { restoredIndex?: number }).restoredIndex ?? 0);
    if (restoreIndex <= 0n) throw new Error(`snapshot restore --json printed no restoredIndex: ${restore.stdout.slice(0, 300)}`);
    await c.waitApplied(restoreIndex, 30 * 60_000);
    const restoreAll = (performance.now() - t0) / 1000;
    const cpuApplied = c.nodes.map((n, i) => cpuSeconds(n.child.proc.pid) - (cpu0[i] ?? 0));
    c.endPhase('restore, until all 3 applied');
    // The nodes hold the upload now: the bench's own copy goes (at 8 GiB of text, 4.7 GB of the disk).
    await rm(archive.path, { force: true });
    log(`[${mix}] restore: CLI ${restore.seconds.toFixed(1)} s, all 3 applied ${restoreAll.toFixed(1)} s`);
    // Each node snapshots the restored state right after (followers that need a snapshot get it): until all 3 have.
    // Bounded: a quiet follower used to take that snapshot only at the next write (NaN: not within 2 minutes).
    const restoreSnapshotted = await c.waitSnapshot(restoreIndex, 120_000).then(
      () => (performance.now() - t0) / 1000,
      () => NaN,
    );
    log(`[${mix}] restore: all 3 snapshotted the restored state ${restoreSnapshotted.toFixed(1)} s`);
    c.endPhase('snapshots of the restored state');
    if (o.restoreOnly) {
      const cpu = c.nodes.map((n, i) => cpuSeconds(n.child.proc.pid) - (cpu0[i] ?? 0));
      if (process.env.BENCH_NODE_LOG_LEVEL !== undefined) for (const n of c.nodes) await writeFile(join(process.env.BENCH_NODE_LOG_DIR ?? tmpdir(), `bench-${n.id}.log`), n.child.output);
      log(`[${mix}] --restore-only: node CPU from the upload to the last snapshot ${cpu.map((x) => x.toFixed(1)).join(' / ')} s`);
      log(`[${mix}] --restore-only: node CPU from the upload until all 3 applied ${cpuApplied.map((x) => x.toFixed(1)).join(' / ')} s`);
      const peaks = c.peaks();
      log(`[${mix}] --restore-only: node peak RSS ${peaks.map((m) => m.toFixed(0)).join(' / ')} MiB`);
      console.log(JSON.stringify({ restoreOnly: { mix, keys: o.keys, cliSeconds: restore.seconds, allAppliedSeconds: restoreAll, allSnapshottedSeconds: restoreSnapshotted, nodeCpuSeconds: cpu, nodePeakMiB: peaks, phasePeakMiB: c.phasePeaks } }));
      // Every member's state hash at one applied index (after the figures: not timed).
      const check = await c.cli(['cluster', 'check', '--json']).catch((err: unknown) => ({ stdout: String(err), seconds: NaN }));
      log(`[${mix}] --restore-only: cluster check ${check.stdout.trim().slice(0, 600)}`);
      throw new RestoreOnlyDone();
    }

    // One write, then `snapshot save` (the state changed: a snapshot is made), then a second with no write between.
    await c.cli(['kv', 'put', 'bench/marker', String(Date.now())]);
    const out1 = join(dir, 'save-1.tar.gz');
    const prof = (name: string): string | undefined => (o.cliProfDir !== undefined ? join(o.cliProfDir, mix, name) : undefined);
    const save = await c.cli(['snapshot', 'save', out1, '--no-progress'], prof('save-1'));
    const saveBytes = (await stat(out1)).size;
    await rm(out1, { force: true });
    const out2 = join(dir, 'save-2.tar.gz');
    // Saves with no write since, 3 in a row (one sample swung 0.30-0.49 s on this shared machine): the median is quoted.
    const save2 = await c.cli(['snapshot', 'save', out2, '--no-progress'], prof('save-2'));
    const save2All = [save2.seconds];
    for (let i = 0; i < 2; i++) {
      await rm(out2, { force: true });
      save2All.push((await c.cli(['snapshot', 'save', out2, '--no-progress'])).seconds);
    }
    const save2Median = [...save2All].sort((a, b) => a - b)[1] ?? NaN;
    // The CLI's start-up alone: the same command's process start and modules, without the connection (median of 3).
    const startups: number[] = [];
    for (let i = 0; i < 3; i++) startups.push((await c.cli(['snapshot', 'save', out2, '--help'])).seconds);
    const cliStartup = startups.sort((a, b) => a - b)[1] ?? NaN;
    log(
      `[${mix}] snapshot save ${save.seconds.toFixed(2)} s (${fmtMiB(saveBytes)}), second save ${save2Median.toFixed(2)} s (median of ${save2All.map((x) => x.toFixed(2)).join(', ')}), ` +
        `CLI start-up ${cliStartup.toFixed(2)} s (monotonic µs ${save.monotonicUs.join('..')}, ${save2.monotonicUs.join('..')})`,
    );
    await rm(out2, { force: true });
    c.endPhase('write + two snapshot saves');

    // C concurrent verified downloads (not with --saves-only).
    const s = o.savesOnly
      ? NO_DOWNLOADS
      : (JSON.parse((await c.cli(['bench', 'snapshot', '--streams', String(o.downloads), '--count', String(o.downloads), '--json', '--no-progress'])).stdout) as SnapshotBenchDocument).snapshots;
    if (!o.savesOnly) {
      c.endPhase(`${o.downloads} concurrent downloads`);
      log(`[${mix}] ${o.downloads} concurrent downloads: ${s.mbPerSec.toFixed(0)} MB/s in all, p99 ${s.latency.p99Ms.toFixed(0)} ms`);
    }

    // Writes alone, then while C downloads run.
    const wr = JSON.parse(
      (await c.cli(['bench', 'write', '--clients', String(o.writeClients), '--seconds', String(o.writeSeconds), '--during-snapshots', String(o.downloads), '--json', '--no-progress']))
        .stdout,
    ) as WriteBenchDocument;
    const phase = (name: string): WriteBenchDocument['phases'][number] | undefined => wr.phases.find((p) => p.name === name);
    const idle = phase('baseline')?.writes;
    const during = phase('during-snapshots')?.writes;
    c.endPhase(`writes, alone then during ${o.downloads} downloads`);
    log(`[${mix}] writes p99 ${idle?.latency.p99Ms.toFixed(1)} ms alone, ${during?.latency.p99Ms.toFixed(1)} ms during ${o.downloads} downloads`);

    // A save once writes went on for a while (automatic snapshots were taken meanwhile): the steady case.
    const out3 = join(dir, 'save-3.tar.gz');
    const save3 = await c.cli(['snapshot', 'save', out3, '--no-progress'], prof('save-3'));
    await rm(out3, { force: true });
    log(`[${mix}] snapshot save after the write phases ${save3.seconds.toFixed(2)} s (monotonic µs ${save3.monotonicUs.join('..')})`);
    c.endPhase('save after the write phases');
    if (process.env.BENCH_NODE_LOG_LEVEL !== undefined) for (const n of c.nodes) await writeFile(join(process.env.BENCH_NODE_LOG_DIR ?? tmpdir(), `bench-${n.id}.log`), n.child.output);
    if (o.savesOnly) {
      console.log(JSON.stringify({ savesOnly: { mix, keys: o.keys, saveSeconds: save.seconds, save2Seconds: save2Median, save2AllSeconds: save2All, cliStartupSeconds: cliStartup, save3Seconds: save3.seconds, saveBytes } }));
      throw new RestoreOnlyDone();
    }

    // A follower killed until the leader compacts past it, then catching up by install.
    const leader = await c.leader();
    const victim = c.nodes.find((n) => n !== leader) as SnapNode;
    await c.kill(victim);
    await c.cli(['bench', 'write', '--clients', '32', '--count', String(CUTOFF_WRITES), '--keys', String(CUTOFF_WRITES), '--json', '--no-progress']);
    const st = await c.status(leader);
    const t1 = performance.now();
    c.restart(victim);
    await c.waitApplied(st.commitIndex, 30 * 60_000, [victim]);
    const catchUp = (performance.now() - t1) / 1000;
    c.endPhase('follower cut off, then its install');
    log(`[${mix}] a follower cut off past compaction caught up by install in ${catchUp.toFixed(1)} s`);
    await c.stop();
    if (process.env.BENCH_NODE_LOG_LEVEL !== undefined) for (const n of c.nodes) await writeFile(join(process.env.BENCH_NODE_LOG_DIR ?? tmpdir(), `bench-${n.id}.log`), n.child.output);

    const figures = {
      mix,
      archive,
      gzipRatio: ratio,
      restoreCliSeconds: restore.seconds,
      restoreAllAppliedSeconds: restoreAll,
      restoreCliPeakMiB: restore.peakRssMiB,
      restoreSnapshottedSeconds: restoreSnapshotted,
      saveSeconds: save.seconds,
      saveBytes,
      saveCliPeakMiB: save.peakRssMiB,
      save2Seconds: save2Median,
      save2AllSeconds: save2All,
      cliStartupSeconds: cliStartup,
      save3Seconds: save3.seconds,
      downloads: { streams: o.downloads, mbPerSec: s.mbPerSec, p50Ms: s.latency.p50Ms, p99Ms: s.latency.p99Ms, completed: s.downloads.completed, failed: s.downloads.failed },
      writes: {
        idleP50: idle?.latency.p50Ms ?? NaN,
        idleP99: idle?.latency.p99Ms ?? NaN,
        duringP50: during?.latency.p50Ms ?? NaN,
        duringP99: during?.latency.p99Ms ?? NaN,
        idleOps: idle?.opsPerSec ?? NaN,
        duringOps: during?.opsPerSec ?? NaN,
      },
      catchUpSeconds: catchUp,
      nodePeakMiB: c.peaks(),
      phasePeakMiB: c.phasePeaks,
    };
    await rm(join(dir, 'snapcoord'), { recursive: true, force: true });
    const etcd = await etcdMix(dir, mix, o, values);
    return { ...figures, etcd };
  } finally {
    await c.stop();
  }
}

// ------------------------------------------------------------------ report

function fmtMiB(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

function log(s: string): void {
  console.error(s);
}

function table(f: MixFigures): string {
  const e = f.etcd;
  const rows: [string, string, string, string][] = [];
  const ratio = (etcdS: number | undefined, ours: number): string => (etcdS === undefined ? '' : `${(etcdS / ours).toFixed(2)}x`);
  const stateMB = f.archive.stateBytes / 1e6;
  rows.push(['load: restore until all 3 nodes applied (etcd: fill by txn)', `${f.restoreAllAppliedSeconds.toFixed(1)} s (${(stateMB / f.restoreAllAppliedSeconds).toFixed(0)} MB/s)`, e ? `${e.fillSeconds.toFixed(1)} s` : '-', ratio(e?.fillSeconds, f.restoreAllAppliedSeconds)]);
  rows.push(['  of which `snapshot restore` returned', `${f.restoreCliSeconds.toFixed(1)} s`, '', '']);
  rows.push(['  until all 3 snapshotted the restored state', `${f.restoreSnapshottedSeconds.toFixed(1)} s`, '', '']);
  rows.push(['snapshot save (state changed)', `${f.saveSeconds.toFixed(2)} s (${fmtMiB(f.saveBytes)})`, e ? `${e.saveSeconds.toFixed(2)} s (${fmtMiB(e.dbBytes)})` : '-', ratio(e?.saveSeconds, f.saveSeconds)]);
  rows.push(['second save, no write since (median of 3)', `${f.save2Seconds.toFixed(2)} s`, e ? `${e.saveSeconds.toFixed(2)} s` : '-', ratio(e?.saveSeconds, f.save2Seconds)]);
  rows.push(['  of which CLI start-up (`save --help`, median of 3)', `${f.cliStartupSeconds.toFixed(2)} s`, '', '']);
  rows.push(['save after the write phases (writes since the last snapshot)', `${f.save3Seconds.toFixed(2)} s`, e ? `${e.saveSeconds.toFixed(2)} s` : '-', ratio(e?.saveSeconds, f.save3Seconds)]);
  rows.push([`${f.downloads.streams} concurrent verified downloads`, `${f.downloads.mbPerSec.toFixed(0)} MB/s, p99 ${f.downloads.p99Ms.toFixed(0)} ms (${f.downloads.completed} ok, ${f.downloads.failed} failed)`, '', '']);
  rows.push(['write p50 / p99 alone', `${f.writes.idleP50.toFixed(1)} / ${f.writes.idleP99.toFixed(1)} ms (${f.writes.idleOps.toFixed(0)}/s)`, '', '']);
  rows.push([`write p50 / p99 during ${f.downloads.streams} downloads`, `${f.writes.duringP50.toFixed(1)} / ${f.writes.duringP99.toFixed(1)} ms (${f.writes.duringOps.toFixed(0)}/s)`, '', `p99 ${(f.writes.duringP99 / f.writes.idleP99).toFixed(2)}x alone`]);
  rows.push(['follower cut off past compaction: catch-up by install', `${f.catchUpSeconds.toFixed(1)} s (${(stateMB / f.catchUpSeconds).toFixed(0)} MB/s of state)`, '', '']);
  rows.push(['peak RSS of the nodes', f.nodePeakMiB.map((m) => `${m.toFixed(0)}`).join(' / ') + ' MiB', e ? `leader ${e.leaderPeakRssMiB.toFixed(0)} MiB` : '-', '']);
  for (const p of f.phasePeakMiB) {
    rows.push([`  during: ${p.phase}`, p.nodeMiB.map((m) => `${m.toFixed(0)}`).join(' / ') + ' MiB', p.leader !== undefined ? `leader ${p.leader}` : '', '']);
    // What made up each node's highest sampled RSS of the phase: anonymous / file-backed (code, mapped files) / shared;
    // with --memory-detail the V8 heap used/committed and external memory scraped last before it.
    const parts = (p.top ?? []).map((t) => (t === null ? '-' : `${t.anonMiB.toFixed(0)}+${t.fileMiB.toFixed(0)}+${t.shmemMiB.toFixed(0)}`));
    if (parts.length > 0) rows.push(['    anon+file+shmem at the top sample', parts.join(' / ') + ' MiB', '', '']);
    const v8 = (p.top ?? []).map((t) => (t?.v8 == null ? '-' : `${t.v8.heapUsedMiB.toFixed(0)}/${t.v8.heapTotalMiB.toFixed(0)}+${t.v8.externalMiB.toFixed(0)}`));
    if (v8.some((x) => x !== '-')) rows.push(['    V8 heap used/committed + external there', v8.join(' / ') + ' MiB', '', '']);
    const native = (p.top ?? []).map((t) =>
      t?.v8 == null ? '-' : `${t.v8.mallocHeapMiB.toFixed(0)}; ${t.v8.rocksMemtablesMiB.toFixed(1)}+${t.v8.rocksReadersMiB.toFixed(1)}+${t.v8.rocksCacheMiB.toFixed(1)}`,
    );
    if (native.some((x) => x !== '-')) rows.push(['    glibc [heap]; RocksDB memtables+readers+cache there', native.join(' / ') + ' MiB', '', '']);
  }
  rows.push(['peak RSS of the CLI: save / restore', `${f.saveCliPeakMiB.toFixed(0)} / ${f.restoreCliPeakMiB.toFixed(0)} MiB`, e ? `etcdctl ${e.savePeakRssMiB.toFixed(0)} MiB` : '-', '']);
  const w = [58, 44, 26, 16];
  const line = (r: readonly string[]): string => r.map((c, i) => c.padEnd(w[i] ?? 10)).join(' ').trimEnd();
  return [
    `mix ${f.mix}: ${f.archive.keys.toLocaleString('en-US')} keys, ${fmtMiB(f.archive.stateBytes)} of state, values gzip-1 ${f.gzipRatio.toFixed(2)}:1, archive ${fmtMiB(f.archive.bytes)}`,
    line(['', 'snapcoord (3 nodes, TLS)', e ? `etcd 3.4 (${e.members} member${e.members === 1 ? '' : 's'})` : 'etcd: not run', e ? 'etcd / snapcoord' : '']),
    ...rows.map(line),
  ].join('\n');
}

// ------------------------------------------------------------------ main

interface Options {
  readonly keys: number;
  readonly valueBytes: number;
  readonly mixes: Mix[];
  readonly downloads: number;
  readonly writeSeconds: number;
  readonly writeClients: number;
  readonly etcd: boolean;
  /** etcdMembers: members of the etcd side (3 as the nodes; 1 where three would not fit in memory). */
  readonly etcdMembers: number;
  /** etcdOnly: run etcd's side alone (fill, `etcdctl snapshot save`), no snapcoord cluster. */
  readonly etcdOnly: boolean;
  readonly keep: boolean;
  readonly restoreOnly: boolean;
  /** nodeRuntime: start the nodes as their launchers do (NODE_V8_FLAGS, NODE_MALLOC_ENV); false for plain `node`. */
  readonly nodeRuntime: boolean;
  /** memoryDetail: read the nodes' V8 heap and external memory from their /metrics every METRICS_SAMPLE_MS. */
  readonly memoryDetail: boolean;
  /** nodeProfDir: the nodes run with --cpu-prof into this directory (written when they stop). */
  readonly nodeProfDir?: string;
  /** savesOnly: only the restore, the saves and the write phase between them (no downloads, no cut-off follower). */
  readonly savesOnly: boolean;
  /** cliProfDir: each `snapshot save` runs with --cpu-prof into <dir>/<mix>/save-N. */
  readonly cliProfDir?: string;
  /** snapshotRetain: the nodes' --snapshot-retain (their default when absent); 1 halves the archives each node keeps (8 GiB text mix: ~4.7 GB each). */
  readonly snapshotRetain?: number;
}

/** NO_DOWNLOADS: the download figures of a --saves-only run (none ran). */
const NO_DOWNLOADS: SnapshotBenchDocument['snapshots'] = {
  mbPerSec: NaN,
  latency: { p50Ms: NaN, p99Ms: NaN },
  downloads: { completed: 0, failed: 0 },
} as unknown as SnapshotBenchDocument['snapshots'];

/** RestoreOnlyDone ends a mix early (--restore-only, --saves-only). */
class RestoreOnlyDone extends Error {}

function positive(name: string, v: string, max: number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1 || n > max) throw new Error(`--${name}: ${v} is not an integer in 1..${max}`);
  return n;
}

function etcdMembers(v: string): number {
  if (v !== '1' && v !== '3') throw new Error(`--etcd-members: ${v} is not 1 or 3`);
  return Number(v);
}

async function main(): Promise<void> {
  const p = new Command()
    .option('--keys <k>', 'keys in the state', '1000000')
    .option('--value-bytes <v>', 'bytes per value', '1024')
    .option('--mix <list>', `value mixes, comma-separated: ${MIX_NAMES.join(', ')}`, 'etcd,text')
    .option('--downloads <c>', 'concurrent downloads (and downloads during the write phase)', '4')
    .option('--write-seconds <s>', 'seconds of each write phase', '10')
    .option('--write-clients <n>', 'clients of the write phases', '16')
    .option('--no-etcd', 'do not run etcd even when installed')
    .option('--etcd-members <n>', 'members of the etcd side (1 or 3)', '3')
    .option('--etcd-only', "run etcd's side alone (fill and `etcdctl snapshot save`; no snapcoord cluster)")
    .option('--keep', 'keep the working directory')
    .option('--node-prof <dir>', 'run the nodes with --cpu-prof, profiles written to <dir> when they stop')
    .option('--restore-only', 'stop each mix after the restore (and the snapshots the nodes take of it)')
    .option('--saves-only', 'stop each mix after the three saves (no downloads; writes alone, without downloads during them)')
    .option('--cli-prof <dir>', 'run each `snapshot save` with --cpu-prof, profiles in <dir>/<mix>/save-N')
    .option('--snapshot-retain <n>', "the nodes' --snapshot-retain (default: theirs); 1 where the disk cannot hold 3 archives per node")
    .option('--memory-detail', "read each node's V8 heap and external memory from its /metrics every 250 ms (the phase table shows them at each node's top)")
    .option('--no-node-runtime', 'start the nodes with plain `node`, without the V8 flags and malloc environment of their launchers')
    .parse(process.argv);
  const raw = p.opts<{ keys: string; valueBytes: string; mix: string; downloads: string; writeSeconds: string; writeClients: string; etcd: boolean; etcdMembers: string; etcdOnly?: boolean; keep?: boolean; restoreOnly?: boolean; savesOnly?: boolean; cliProf?: string; nodeRuntime: boolean; memoryDetail?: boolean; nodeProf?: string; snapshotRetain?: string }>();
  const mixes = raw.mix.split(',').map((m) => m.trim());
  for (const m of mixes) if (!(MIX_NAMES as readonly string[]).includes(m)) throw new Error(`--mix: ${m} is not one of ${MIX_NAMES.join(', ')}`);
  const o: Options = {
    keys: positive('keys', raw.keys, 100_000_000),
    valueBytes: positive('value-bytes', raw.valueBytes, 1 << 20),
    mixes: mixes as Mix[],
    downloads: positive('downloads', raw.downloads, 64),
    writeSeconds: positive('write-seconds', raw.writeSeconds, 3_600),
    writeClients: positive('write-clients', raw.writeClients, 1_024),
    etcd: raw.etcd && existsSync('/usr/bin/etcd') && existsSync('/usr/bin/etcdctl'),
    etcdMembers: etcdMembers(raw.etcdMembers),
    etcdOnly: raw.etcdOnly === true,
    keep: raw.keep === true,
    restoreOnly: raw.restoreOnly === true,
    nodeRuntime: raw.nodeRuntime,
    memoryDetail: raw.memoryDetail === true,
    ...(raw.nodeProf !== undefined ? { nodeProfDir: raw.nodeProf } : {}),
    savesOnly: raw.savesOnly === true,
    ...(raw.cliProf !== undefined ? { cliProfDir: raw.cliProf } : {}),
    ...(raw.snapshotRetain !== undefined ? { snapshotRetain: positive('snapshot-retain', raw.snapshotRetain, 1_000) } : {}),
  };
  if (raw.etcd && !o.etcd) log('etcd: /usr/bin/etcd or /usr/bin/etcdctl is missing (apt-get install etcd-server etcd-client); snapcoord figures only');
  if (o.etcdOnly && !o.etcd) throw new Error('--etcd-only: etcd is not run (--no-etcd, or /usr/bin/etcd or etcdctl missing)');
  // The CLI and the nodes run from dist/ (what an installed snapcoord runs), built from this tree now.
  if (!o.etcdOnly) await buildDist(log);
  const root = await mkdtemp(join(tmpdir(), 'snapcoord-bench-cluster-'));
  const results: MixFigures[] = [];
  try {
    for (const mix of o.mixes) {
      try {
        const r = await benchMix(root, mix, o);
        results.push(r);
        // Each mix's table as soon as it is done (a later mix may take long, or fail).
        if (o.mixes.length > 1) log(`\n${table(r)}\n`);
      } catch (err) {
        if (!(err instanceof RestoreOnlyDone)) throw err;
      }
    }
  } finally {
    if (!o.keep) await rm(root, { recursive: true, force: true });
    else log(`kept ${root}`);
  }
  console.log(`bench:snapshot-cluster (${new Date().toISOString()}, ${o.keys.toLocaleString('en-US')} keys × ${o.valueBytes} B, ${o.downloads} downloads${o.snapshotRetain !== undefined ? `, --snapshot-retain ${o.snapshotRetain}` : ''})`);
  for (const r of results) console.log(`\n${table(r)}`);
  console.log(`\n${JSON.stringify({ figures: results })}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});

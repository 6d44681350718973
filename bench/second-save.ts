/**
 * bench/second-save: the save of an unchanged state (issue 15: ≥ 50x
 * `etcdctl snapshot save`), A/B between built trees, far cheaper than
 * bench:snapshot-cluster: for each tree (a checkout whose dist/ is built) it
 * starts a 3-node TLS cluster from that tree's dist/, restores one archive
 * of K keys × V bytes (etcd mix: values of `f` bytes), writes once and saves
 * once (the snapshot is made), then runs `snapshot save` of that tree's CLI
 * against its own cluster's leader, the trees alternating, N times each, and
 * `snapshot save --help` (start-up) as often. Per run: wall (spawn to exit),
 * the CLI's CPU and peak RSS (/usr/bin/time), the leader's CPU and its peak
 * RSS during the run (/proc VmRSS every 20 ms). Medians. --mix text fills
 * values from bench/lib/text-pool.ts (about 1.8:1 under gzip: an archive of
 * about half the state, so the save is mostly the leader serving GetSnapshot);
 * --parallel P runs P saves at once per run (concurrent downloads of the same
 * unchanged snapshot).
 *
 *   npx tsx bench/second-save.ts --tree A=/work/base --tree B=. [--keys 1000000] [--value-bytes 1024] [--mix etcd|text] [--parallel 1] [--runs 15]
 *
 * SECOND_SAVE_NODE_FLAGS (space-separated) adds node flags to every member (e.g. --cpu-prof --cpu-prof-dir DIR);
 * with SECOND_SAVE_NODE_LOG_DIR each member's output is written there when it stops.
 *
 * Figures only: nothing here passes or fails on time.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { Command } from 'commander';

import { Role } from '../src/gen/snapcoord/v1/cluster.js';
import { ClusterClient } from '../src/client/cluster-client.js';
import type { ClientDial } from '../src/client/dial.js';
import { startBenchCluster } from './lib/bench-cluster.js';
import { Values } from './lib/text-pool.js';
import { writeFillArchive } from './lib/fill-archive.js';
import { processCpuSeconds as cpuSeconds } from './lib/thread-cpu.js';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../src/cli/node-runtime.js';
import { Child, cleanEnv } from '../test/harness/child.js';
import { until } from '../test/harness/until.js';

const API_KEY = 'bench-admin-key-0123456789abcdef';

function rssMiB(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

interface Run {
  wall: number;
  cpu: number;
  rssMiB: number;
  leaderCpu: number;
  /** leaderRssMiB: the leader's highest VmRSS sampled during the run (every 20 ms). */
  leaderRssMiB: number;
  /** leaderRssStartMiB: the leader's VmRSS when the run began. */
  leaderRssStartMiB: number;
}

class Cluster {
  nodes: { id: string; grpc: string; child: Child }[] = [];
  constructor(
    readonly name: string,
    readonly cli: string,
    readonly dir: string,
    readonly ca: string,
    readonly dial: ClientDial,
  ) {}

  static async start(name: string, tree: string, dir: string): Promise<Cluster> {
    const cli = join(tree, 'dist', 'src', 'cli', 'main.js');
    const { lay, children } = await startBenchCluster(dir, API_KEY, (lay, id) => {
      const args = [...NODE_V8_FLAGS, ...(process.env.SECOND_SAVE_NODE_FLAGS?.split(' ').filter((f) => f !== '') ?? []), cli, ...lay.serveArgs(id, 'warn')];
      return new Child(args, cleanEnv(NODE_MALLOC_ENV), { command: process.execPath, name: `${name}/${id}`, outputCapBytes: 64 << 10 });
    });
    const c = new Cluster(name, cli, dir, lay.ca, lay.dial);
    c.nodes = lay.ids.map((id, i) => ({ id, grpc: lay.grpc(i), child: children[i] as Child }));
    await c.leader();
    return c;
  }

  async leader(): Promise<{ grpc: string; pid: number | undefined }> {
    return until(`${this.name}: a leader`, 60_000, async () => {
      for (const n of this.nodes) {
        const client = new ClusterClient(n.grpc, this.dial);
        const st = await client.status({ deadlineMs: 1_000 }).catch(() => undefined).finally(() => client.close());
        if (st?.role === Role.ROLE_LEADER) return { grpc: n.grpc, pid: n.child.proc.pid };
      }
      return undefined;
    });
  }

  async waitApplied(index: bigint): Promise<void> {
    for (const n of this.nodes) {
      await until(`${n.id} to apply ${index}`, 600_000, async () => {
        const client = new ClusterClient(n.grpc, this.dial);
        const st = await client.status({ deadlineMs: 1_000 }).catch(() => undefined).finally(() => client.close());
        return (st?.appliedIndex ?? 0n) >= index && (st?.snapshotIndex ?? 0n) >= index ? true : undefined;
      }, { everyMs: 100 });
    }
  }

  /** runs: `parallel` runs of this tree's CLI at once (each its own args), their walls, CPUs and RSS summed or maxed; the leader's CPU and peak RSS over all. */
  async runs(argsOf: (k: number) => readonly string[], parallel: number, leader: { grpc: string; pid: number | undefined }): Promise<Run> {
    const cpu0 = cpuSeconds(leader.pid);
    const leaderRssStartMiB = rssMiB(leader.pid);
    let leaderRssMiB = leaderRssStartMiB;
    const sampler = setInterval(() => (leaderRssMiB = Math.max(leaderRssMiB, rssMiB(leader.pid))), 20);
    try {
      const rs = await Promise.all(Array.from({ length: parallel }, (_, k) => this.run(argsOf(k), leader, k)));
      return {
        wall: Math.max(...rs.map((r) => r.wall)),
        cpu: rs.reduce((a, r) => a + r.cpu, 0),
        rssMiB: Math.max(...rs.map((r) => r.rssMiB)),
        leaderCpu: cpuSeconds(leader.pid) - cpu0,
        leaderRssMiB: Math.max(leaderRssMiB, rssMiB(leader.pid)),
        leaderRssStartMiB,
      };
    } finally {
      clearInterval(sampler);
    }
  }

  /** cli runs this tree's CLI against the leader under /usr/bin/time. */
  async run(args: readonly string[], leader: { grpc: string; pid: number | undefined }, k = 0): Promise<Run> {
    const timeFile = join(this.dir, `time-${k}.txt`);
    const cpu0 = cpuSeconds(leader.pid);
    const t0 = performance.now();
    const p = spawn('/usr/bin/time', ['-f', '%U %S %M', '-o', timeFile, process.execPath, this.cli, ...args, '--endpoint', leader.grpc, '--cacert', this.ca, '--api-key', API_KEY], {
      env: cleanEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const [code] = (await once(p, 'exit')) as [number | null];
    const wall = (performance.now() - t0) / 1000;
    const leaderCpu = cpuSeconds(leader.pid) - cpu0;
    if (code !== 0) throw new Error(`${this.name}: ${args.join(' ')} exited ${code}: ${stderr}`);
    const [u, s, m] = (await readFile(timeFile, 'utf8')).trim().split('\n').pop()!.split(' ').map(Number);
    return { wall, cpu: (u ?? 0) + (s ?? 0), rssMiB: (m ?? 0) / 1024, leaderCpu, leaderRssMiB: 0, leaderRssStartMiB: 0 };
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.child.kill('SIGTERM')));
    const logDir = process.env.SECOND_SAVE_NODE_LOG_DIR;
    if (logDir !== undefined) for (const n of this.nodes) await writeFile(join(logDir, `${this.name}-${n.id}.log`), n.child.output);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? (s[(s.length - 1) / 2] ?? NaN) : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2;
};

async function main(): Promise<void> {
  const raw = new Command()
    .option('--tree <name=dir>', 'a checkout with dist/ built (repeat)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--keys <n>', 'keys', '1000000')
    .option('--value-bytes <n>', 'value bytes', '1024')
    .option('--mix <mix>', 'values: etcd (f bytes) or text (text-pool.ts, ~1.8:1 under gzip)', 'etcd')
    .option('--parallel <n>', 'saves at once per run (concurrent downloads)', '1')
    .option('--runs <n>', 'saves per tree', '15')
    .option('--hold-seconds <s>', 'keep the clusters up this long after the runs (print how to reach them)', '0')
    .parse()
    .opts<{ tree: string[]; keys: string; valueBytes: string; mix: string; parallel: string; runs: string; holdSeconds: string }>();
  if (raw.mix !== 'etcd' && raw.mix !== 'text') throw new Error(`--mix ${raw.mix}: etcd or text`);
  const mix = raw.mix;
  const parallel = Math.max(1, Math.min(Number(raw.parallel), 8));
  const trees = raw.tree.map((t) => {
    const [name, dir] = t.split('=');
    if (name === undefined || dir === undefined) throw new Error(`--tree ${t}: not NAME=DIR`);
    return { name, dir: resolve(dir) };
  });
  const keys = Number(raw.keys);
  const runs = Math.min(Number(raw.runs), 200);
  const root = await mkdtemp(join(tmpdir(), 'snapcoord-second-save-'));
  const clusters: Cluster[] = [];
  try {
    const values = new Values(mix, Number(raw.valueBytes)); // etcd mix: 'f' bytes; text: text-pool.ts values
    const archive = await writeFillArchive(root, keys, (j) => values.of(j));
    for (const t of trees) {
      const dir = join(root, t.name);
      await mkdir(dir);
      const c = await Cluster.start(t.name, t.dir, dir);
      clusters.push(c);
      let l = await c.leader();
      const r = await new Promise<string>((res, rej) => {
        const p = spawn(process.execPath, [c.cli, 'snapshot', 'restore', archive, '--json', '--no-progress', '--endpoint', l.grpc, '--cacert', c.ca, '--api-key', API_KEY], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (b: Buffer) => (out += b.toString()));
        p.once('exit', (code) => (code === 0 ? res(out) : rej(new Error(`restore exited ${code}`))));
      });
      await c.waitApplied(BigInt((JSON.parse(r) as { restoredIndex: number }).restoredIndex));
      l = await c.leader();
      await c.run(['kv', 'put', 'bench/marker', 'x'], l);
      await c.run(['snapshot', 'save', join(dir, 'first.tar.gz'), '--no-progress'], l);
      process.stderr.write(`${t.name}: cluster ready\n`);
    }
    const saves = new Map<string, Run[]>(clusters.map((c) => [c.name, []]));
    const helps = new Map<string, Run[]>(clusters.map((c) => [c.name, []]));
    const load0 = loadavg()[0] ?? 0;
    for (let i = 0; i < runs; i++) {
      for (const c of i % 2 === 0 ? clusters : [...clusters].reverse()) {
        const l = await c.leader();
        const out = (k: number): string => join(c.dir, `second-${k}.tar.gz`);
        for (let k = 0; k < parallel; k++) await rm(out(k), { force: true });
        saves.get(c.name)?.push(await c.runs((k) => ['snapshot', 'save', out(k), '--no-progress'], parallel, l));
        helps.get(c.name)?.push(await c.run(['snapshot', 'save', out(0), '--help'], l));
      }
    }
    const load1 = loadavg()[0] ?? 0;
    const served = (await stat(join(clusters[0]?.dir ?? root, 'first.tar.gz')).catch(() => null))?.size ?? 0;
    console.log(`second save, ${keys} keys (${mix} mix, archive ${(served / 2 ** 20).toFixed(1)} MiB), ${parallel} at once, ${runs} alternated runs per tree, load ${load0.toFixed(2)} -> ${load1.toFixed(2)} (medians)`);
    for (const c of clusters) {
      const s = saves.get(c.name) ?? [];
      const h = helps.get(c.name) ?? [];
      console.log(
        `${c.name.padEnd(8)} save wall ${median(s.map((r) => r.wall)).toFixed(3)} s  CPU ${median(s.map((r) => r.cpu)).toFixed(3)} s  RSS ${median(s.map((r) => r.rssMiB)).toFixed(1)} MiB  leader CPU ${median(s.map((r) => r.leaderCpu)).toFixed(2)} s, peak RSS ${median(s.map((r) => r.leaderRssMiB)).toFixed(0)} MiB (max ${Math.max(...s.map((r) => r.leaderRssMiB)).toFixed(0)}) | --help wall ${median(h.map((r) => r.wall)).toFixed(3)} s  CPU ${median(h.map((r) => r.cpu)).toFixed(3)} s`,
      );
      console.log(`${' '.repeat(8)} walls ${s.map((r) => r.wall.toFixed(3)).join(' ')}`);
      console.log(`${' '.repeat(8)} leader CPU ${s.map((r) => r.leaderCpu.toFixed(2)).join(' ')}`);
      console.log(`${' '.repeat(8)} leader RSS at start -> peak ${s.map((r) => `${r.leaderRssStartMiB.toFixed(0)}->${r.leaderRssMiB.toFixed(0)}`).join(' ')}`);
    }
    const hold = Math.min(Number(raw.holdSeconds), 3_600);
    if (hold > 0) {
      for (const c of clusters) console.log(`${c.name}: node ${c.cli} --endpoint ${(await c.leader()).grpc} --cacert ${c.ca} --api-key ${API_KEY}  (leader pid ${(await c.leader()).pid})`);
      // Until the time is up or SIGTERM / SIGINT (then the clusters are stopped as after the runs).
      await new Promise<void>((r) => {
        const done = (): void => {
          clearTimeout(timer);
          r();
        };
        const timer = setTimeout(done, hold * 1000);
        process.once('SIGTERM', done);
        process.once('SIGINT', done);
      });
    }
  } finally {
    for (const c of clusters) await c.stop();
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});

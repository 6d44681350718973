/**
 * bench:hash-state — what one HashState loop (a `snapshots.read` key asking
 * for the whole-state hash again and again) costs a node's writers: writes/s
 * and p99 of `--writers` closed-loop clients putting unique keys, alone and
 * with the loop running, on one `serve` process (TLS, single member) holding
 * `--keys` keys of `--value-bytes`. Several trees side by side (--trees
 * name=dir,...: each tree's `src/cli/main.ts` run with tsx), phases alternated
 * per round; prints each phase's figures, the loop's hashes/s and the node's
 * CPU, and the ratio with-loop / alone per tree. Never passes or fails on time.
 *
 *   npx tsx bench/hash-state.ts -- [--trees now=.] [--keys 100000] [--value-bytes 100] [--writers 8] [--seconds 10] [--rounds 1]
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command } from 'commander';

import { ClusterClient } from '../src/client/cluster-client.js';
import { KvClient } from '../src/client/kv-client.js';
import { Child, cleanEnv } from '../test/harness/child.js';
import { until } from '../test/harness/until.js';
import { startBenchCluster, type BenchClusterLayout } from './lib/bench-cluster.js';
import { writeFillArchive } from './lib/fill-archive.js';
import { processCpuSeconds as cpuSeconds } from './lib/thread-cpu.js';

const API_KEY = 'bench-admin-key-0123456789abcdef';

interface Phase {
  writes: number;
  p99Ms: number;
  hashes: number;
  cpu: number;
}

class Node {
  constructor(
    readonly name: string,
    readonly main: string,
    readonly lay: BenchClusterLayout,
    readonly child: Child,
  ) {}

  get grpc(): string {
    return this.lay.grpc(0);
  }

  static async start(name: string, tree: string, dir: string): Promise<Node> {
    const main = join(tree, 'src', 'cli', 'main.ts');
    const { lay, children } = await startBenchCluster(dir, API_KEY, (l, id) => new Child(['--import', 'tsx', main, ...l.serveArgs(id, 'warn')], cleanEnv(), { command: process.execPath, name: `${name}/${id}`, outputCapBytes: 64 << 10 }), ['n1']);
    return new Node(name, main, lay, children[0] as Child);
  }

  async restore(archive: string): Promise<void> {
    const out = await new Promise<string>((res, rej) => {
      const p = spawn(process.execPath, ['--import', 'tsx', this.main, 'snapshot', 'restore', archive, '--json', '--no-progress', '--endpoint', this.grpc, '--cacert', this.lay.ca, '--api-key', API_KEY], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
      let o = '';
      p.stdout.on('data', (b: Buffer) => (o += b.toString()));
      p.once('exit', (code) => (code === 0 ? res(o) : rej(new Error(`restore exited ${code}`))));
    });
    const index = BigInt((JSON.parse(out) as { restoredIndex: number }).restoredIndex);
    await until(`${this.name} to apply ${index}`, 600_000, async () => {
      const c = new ClusterClient(this.grpc, this.lay.dial);
      const st = await c.status({ deadlineMs: 1_000 }).catch(() => undefined).finally(() => c.close());
      return (st?.appliedIndex ?? 0n) >= index ? true : undefined;
    }, { everyMs: 100 });
  }

  async phase(writers: number, seconds: number, valueBytes: number, withHash: boolean, tag: string): Promise<Phase> {
    const stopAt = Date.now() + seconds * 1000;
    const lat: number[] = [];
    let hashes = 0;
    const cpu0 = cpuSeconds(this.child.proc.pid);
    const value = Buffer.alloc(valueBytes, 120);
    const hashLoop = async (): Promise<void> => {
      const c = new ClusterClient(this.grpc, this.lay.dial);
      try {
        while (Date.now() < stopAt) {
          await c.hashState({ deadlineMs: 120_000 }).then(() => hashes++, () => undefined);
        }
      } finally {
        c.close();
      }
    };
    const writer = async (w: number): Promise<void> => {
      const c = new KvClient(this.grpc, this.lay.dial);
      try {
        for (let i = 0; Date.now() < stopAt; i++) {
          const t0 = performance.now();
          await c.put({ key: Buffer.from(`w/${tag}/${w}/${i}`), value }, { deadlineMs: 30_000 });
          lat.push(performance.now() - t0);
        }
      } finally {
        c.close();
      }
    };
    await Promise.all([...Array.from({ length: writers }, (_, w) => writer(w)), ...(withHash ? [hashLoop()] : [])]);
    lat.sort((a, b) => a - b);
    return { writes: lat.length / seconds, p99Ms: lat[Math.floor(lat.length * 0.99)] ?? 0, hashes: hashes / seconds, cpu: (cpuSeconds(this.child.proc.pid) - cpu0) / seconds };
  }

  async stop(): Promise<void> {
    await this.child.kill('SIGTERM', 10_000);
  }
}

async function main(): Promise<void> {
  const raw = new Command()
    .option('--trees <list>', 'name=dir,...', 'now=.')
    .option('--keys <n>', 'keys in the state', '100000')
    .option('--value-bytes <n>', 'value bytes', '100')
    .option('--writers <n>', 'closed-loop writers', '8')
    .option('--seconds <n>', 'seconds a phase', '10')
    .option('--rounds <n>', 'rounds', '1')
    .parse(process.argv.filter((a) => a !== '--'))
    .opts<{ trees: string; keys: string; valueBytes: string; writers: string; seconds: string; rounds: string }>();
  const trees = raw.trees.split(',').map((t) => {
    const [name, dir] = t.split('=');
    return { name: name as string, dir: resolve(dir as string) };
  });
  const root = await mkdtemp(join(tmpdir(), 'bench-hash-state-'));
  const nodes: Node[] = [];
  try {
    const archive = await writeFillArchive(root, Number(raw.keys), (j) => Buffer.alloc(Number(raw.valueBytes), 97 + (j % 26)));
    for (const t of trees) {
      const dir = join(root, t.name);
      await mkdir(dir);
      const n = await Node.start(t.name, t.dir, dir);
      nodes.push(n);
      await n.restore(archive);
      process.stderr.write(`${t.name}: ready (${raw.keys} keys)\n`);
    }
    const results = new Map<string, { alone: Phase[]; hash: Phase[] }>(nodes.map((n) => [n.name, { alone: [], hash: [] }]));
    const show = (p: Phase): string => `${p.writes.toFixed(0)} writes/s p99 ${p.p99Ms.toFixed(0)} ms, ${p.hashes.toFixed(2)} hashes/s, node CPU ${p.cpu.toFixed(2)} s/s`;
    for (let r = 0; r < Number(raw.rounds); r++) {
      for (const n of r % 2 === 0 ? nodes : [...nodes].reverse()) {
        const res = results.get(n.name) as { alone: Phase[]; hash: Phase[] };
        for (const withHash of r % 2 === 0 ? [false, true] : [true, false]) {
          const p = await n.phase(Number(raw.writers), Number(raw.seconds), Number(raw.valueBytes), withHash, `${r}${withHash ? 'h' : 'a'}`);
          (withHash ? res.hash : res.alone).push(p);
          console.log(`round ${r} ${n.name} ${withHash ? 'with a HashState loop' : 'writers alone        '}: ${show(p)} (load ${loadavg()[0]?.toFixed(1)})`);
        }
      }
    }
    for (const [name, res] of results) {
      const ratios = res.alone.map((a, i) => ((res.hash[i] as Phase).writes / a.writes).toFixed(2));
      console.log(`${name}: writes/s with the loop / alone per round: ${ratios.join(' ')}`);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    await rm(root, { recursive: true, force: true });
  }
}

await main();

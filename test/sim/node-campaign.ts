/**
 * The real-node simulator's CLI (node-cluster.ts):
 *   npm run sim:node -- --seeds N [--from S] [--nodes 3|5]      run a campaign, print seeds/s
 *   npm run sim:node -- --seed S [--nodes N] [--verbose]        replay one seed (with its trace)
 *   --ack-before-persist MS                                      negative control: a lying disk
 *   --serializable-reads                                         negative control: stale reads called linearizable
 * Exits 1 on any violation; each prints the command that replays it.
 */
import { nodesForSeed, runNodeCampaign, runNodeSeed } from './node-run.js';
import type { NodeControls } from './node-cluster.js';

interface Args {
  seeds: number;
  from: number;
  nodes?: number;
  seed?: number;
  verbose: boolean;
  ackBeforePersistMs?: number;
  serializableReads: boolean;
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: npm run sim:node -- --seeds N [--from S] [--nodes 3|5] | --seed S [--nodes N] [--verbose] [--ack-before-persist MS] [--serializable-reads]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { seeds: 100, from: 1, verbose: false, serializableReads: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const num = (): number => {
      const v = argv[++i];
      const n = Number(v);
      if (v === undefined || !Number.isSafeInteger(n) || n < 0) usage(`${k} needs a non-negative integer`);
      return n;
    };
    switch (k) {
      case '--seeds':
        a.seeds = num();
        break;
      case '--from':
        a.from = num();
        break;
      case '--nodes': {
        const n = num();
        if (n < 1 || n > 7) usage('--nodes must be between 1 and 7');
        a.nodes = n;
        break;
      }
      case '--seed':
        a.seed = num();
        break;
      case '--verbose':
        a.verbose = true;
        break;
      case '--ack-before-persist':
        a.ackBeforePersistMs = num();
        break;
      case '--serializable-reads':
        a.serializableReads = true;
        break;
      case '--real-node':
        break; // accepted for `npm run sim -- --real-node` habits
      case '--help':
      case '-h':
        usage('');
        break;
      default:
        usage(`unknown argument ${k}`);
    }
  }
  return a;
}

async function main(): Promise<void> {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const args = parseArgs(process.argv.slice(2));
  const controls: NodeControls = {
    ...(args.ackBeforePersistMs !== undefined ? { ackBeforePersistMs: args.ackBeforePersistMs } : {}),
    ...(args.serializableReads ? { serializableReads: true } : {}),
  };
  if (args.seed !== undefined) {
    const nodes = args.nodes ?? nodesForSeed(args.seed);
    const t0 = performance.now();
    const r = await runNodeSeed(args.seed, { nodes, controls, ...(args.verbose ? { trace: (line: string) => process.stdout.write(`${line}\n`) } : {}) });
    const ms = performance.now() - t0;
    process.stdout.write(`${JSON.stringify(r.stats)}\n`);
    if (!r.ok) {
      process.stdout.write(`VIOLATION ${r.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`seed ${args.seed} (${nodes} nodes): ok in ${ms.toFixed(0)}ms, ${r.stats.steps} timers, ${r.stats.virtualMs} ms virtual\n`);
    return;
  }
  const cpu0 = process.cpuUsage();
  let done = 0;
  const every = Math.max(1, Math.floor(args.seeds / 20));
  const summary = await runNodeCampaign({
    from: args.from,
    count: args.seeds,
    controls,
    ...(args.nodes !== undefined ? { nodes: args.nodes } : {}),
    onResult: (r) => {
      done++;
      if (!r.ok) process.stdout.write(`VIOLATION ${r.message}\n`);
      if (done % every === 0 || done === args.seeds) process.stdout.write(`  ${done}/${args.seeds} seeds\n`);
    },
  });
  const s = summary.wallMs / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(
    `real node: ${summary.seeds} seeds from ${args.from} in ${s.toFixed(2)}s wall, ${cpuS.toFixed(2)}s CPU: ${(summary.seeds / s).toFixed(1)} seeds/s, ` +
      `${(summary.seeds / cpuS).toFixed(1)} seeds per CPU-second (one thread; GC included), ` +
      `${summary.steps} timers (${(summary.steps / s / 1000).toFixed(0)}k/s), ${(summary.virtualMs / 1000).toFixed(0)}s virtual; ` +
      `${summary.failures.length} violation(s)\n`,
  );
  for (const f of summary.failures) process.stdout.write(`  seed ${f.seed}: ${f.violation?.property}  -> ${f.replay}\n`);
  if (summary.failures.length > 0) process.exit(1);
}

void main();

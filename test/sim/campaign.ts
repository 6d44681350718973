/**
 * The simulator's CLI:
 *   npm run sim -- --seeds N [--from S] [--nodes 3|5]     run a campaign
 *   npm run sim -- --seed S [--nodes N] [--verbose]       replay one seed (with its event trace)
 *   npm run sim -- --real-node ...                          the same on the real Node (= npm run sim:node)
 * Exits 1 on any violation; every violation prints the command that replays it.
 */
import { nodesForSeed, runCampaign, runSeed } from './run.js';

interface Args {
  seeds: number;
  from: number;
  nodes?: number;
  seed?: number;
  verbose: boolean;
  maxEvents?: number;
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: npm run sim -- --seeds N [--from S] [--nodes 3|5] | --seed S [--nodes N] [--verbose] [--max-events N]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { seeds: 100, from: 1, verbose: false };
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
      case '--max-events':
        a.maxEvents = num();
        break;
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

function main(): void {
  // `npm run sim | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const args = parseArgs(process.argv.slice(2));
  if (args.seed !== undefined) {
    const nodes = args.nodes ?? nodesForSeed(args.seed);
    const t0 = performance.now();
    const r = runSeed(args.seed, {
      nodes,
      ...(args.verbose ? { trace: (line: string) => process.stdout.write(`${line}\n`) } : {}),
      ...(args.maxEvents !== undefined ? { maxEvents: args.maxEvents } : {}),
    });
    const ms = performance.now() - t0;
    process.stdout.write(`${JSON.stringify(r.stats)}\n`);
    if (!r.ok) {
      process.stdout.write(`VIOLATION ${r.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`seed ${args.seed} (${nodes} nodes): ok in ${ms.toFixed(0)}ms, ${r.stats.events} events, trace ${r.stats.traceHash.toString(16)}\n`);
    return;
  }
  let done = 0;
  const every = Math.max(1, Math.floor(args.seeds / 20));
  const summary = runCampaign({
    from: args.from,
    count: args.seeds,
    ...(args.nodes !== undefined ? { nodes: args.nodes } : {}),
    ...(args.maxEvents !== undefined ? { maxEvents: args.maxEvents } : {}),
    onResult: (r) => {
      done++;
      if (!r.ok) process.stdout.write(`VIOLATION ${r.message}\n`);
      if (done % every === 0 || done === args.seeds) process.stdout.write(`  ${done}/${args.seeds} seeds\n`);
    },
  });
  const s = summary.wallMs / 1000;
  process.stdout.write(
    `${summary.seeds} seeds from ${args.from} in ${s.toFixed(2)}s: ${(summary.seeds / s).toFixed(1)} seeds/s, ` +
      `${summary.events} events (${(summary.events / s / 1000).toFixed(0)}k events/s), ${(summary.virtualMs / 1000).toFixed(0)}s virtual; ` +
      `${summary.failures.length} violation(s)\n`,
  );
  for (const f of summary.failures) process.stdout.write(`  seed ${f.seed}: ${f.violation?.property}  -> ${f.replay}\n`);
  if (summary.failures.length > 0) process.exit(1);
}

// `npm run sim -- --real-node ...` runs the simulator on the real Node (node-campaign.ts, which reads the same argv).
if (process.argv.includes('--real-node')) void import('./node-campaign.js');
else main();

/**
 * The real-node simulator's CLI (node-cluster.ts):
 *   npm run sim -- --seeds N [--from S] [--nodes 3|5] [--workers W]
 *                                        run a campaign on W worker threads (default: the core count), print seeds/s
 *   npm run sim -- --seed S [--nodes N] [--verbose]        replay one seed (with its trace)
 *   --scenario-of S                                              run in the scenario seed S draws (for this run's node count), not each seed's own
 *   --scenario KEY=VALUE                                         override one knob of the scenario (NodeScenario; repeatable)
 *   --ack-before-persist MS                                      negative control: a lying disk
 *   --serializable-reads                                         negative control: stale reads called linearizable
 *   --divergent-node ID                                          negative control: one node's disk flips a byte of every value
 *   --bug-release-answers-on-failure                             negative control: a failed write releases held votes and acks (src/node testOnlyBugs)
 *   --broken-core NAME                                           negative control: every node runs a broken Raft core (broken.ts)
 *   --bug-appends-before-term-saved                              negative control: a leader's appends leave before its term is durable (src/node testOnlyBugs)
 *   --no-snapshots                                               leave out the snapshot workload (snapshots, compaction, InstallSnapshot, restores: on by default)
 *   --bug-restore-on-one-copy                                    negative control: a restore proposed before a quorum holds its archive (src/node testOnlyBugs)
 *   --broken-image-import NAME                                   negative control: every disk imports state images a broken way (broken.ts)
 *   --bug-disk-takes-writes-after-failure                        negative control: every log disk takes writes after a failed one, lost at the next open
 *   --bug-changes-miss-deletes                                   negative control: every storage's snapshot changes leave out deleted keys (delta snapshots keep them)
 *   --compact-fail-percent P                                     every log disk fails P% of its compactions too (EIO; when a fault is allowed)
 *   --lying-image-export                                         every disk exports state images with one value changed (followers must refuse them;
 *                                                                with --broken-image-import ignoresRecordsDigest, a negative control)
 * Exits 1 on any violation; each prints the command that replays it.
 */
import { availableParallelism } from 'node:os';

import { BROKEN_CORES, BROKEN_IMAGE_IMPORTS } from './broken.js';
import type { NodeControls, NodeScenario } from './node-cluster.js';
import { JOB_SEEDS, runOnWorkers } from './node-pool.js';

interface Args {
  seeds: number;
  from: number;
  nodes?: number;
  seed?: number;
  verbose: boolean;
  ackBeforePersistMs?: number;
  serializableReads: boolean;
  workers: number;
  divergentNode?: string;
  releaseAnswersOnFailure: boolean;
  appendsBeforeTermSaved: boolean;
  brokenCore?: string;
  brokenImageImport?: string;
  lyingImageExport: boolean;
  takesWritesAfterFailure: boolean;
  changesMissDeletes: boolean;
  compactFailPercent?: number;
  restoreOnOneCopy: boolean;
  changesIgnoreRestores: boolean;
  reappliesRetries: boolean;
  snapshots: boolean;
  scenarioOf?: number;
  /** scenario: the --scenario overrides as given (checked against NodeScenario by scenarioOverrides). */
  scenario: [string, string][];
}

/** SCENARIO_OVERRIDES_MAX: --scenario flags one command may give. */
const SCENARIO_OVERRIDES_MAX = 64;

/**
 * scenarioOverrides: the --scenario KEY=VALUE pairs as a scenario's overrides, each KEY a knob of NodeScenario
 * (`nodes` is --nodes) and VALUE of its type: true or false, or a finite number >= 0 (at most 1 for a *Chance).
 */
function scenarioOverrides(pairs: readonly [string, string][], drawn: NodeScenario): Partial<NodeScenario> {
  const out: Record<string, number | boolean> = {};
  for (const [key, raw] of pairs) {
    if (!Object.hasOwn(drawn, key) || key === 'nodes') usage(`--scenario ${key}: not a scenario knob (one of ${Object.keys(drawn).filter((k) => k !== 'nodes').join(', ')})`);
    const now = drawn[key as keyof NodeScenario];
    if (typeof now === 'boolean') {
      if (raw !== 'true' && raw !== 'false') usage(`--scenario ${key}=${raw}: needs true or false`);
      out[key] = raw === 'true';
      continue;
    }
    const v = Number(raw);
    if (raw === '' || !Number.isFinite(v) || v < 0 || (key.endsWith('Chance') && v > 1)) usage(`--scenario ${key}=${raw}: needs a number >= 0${key.endsWith('Chance') ? ' and <= 1' : ''}`);
    out[key] = v;
  }
  return out as Partial<NodeScenario>;
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: npm run sim -- --seeds N [--from S] [--nodes 3|5] [--workers W] | --seed S [--nodes N] [--verbose] [--scenario-of S] [--scenario KEY=VALUE] [--ack-before-persist MS] [--serializable-reads] [--divergent-node ID] [--bug-release-answers-on-failure] [--bug-appends-before-term-saved] [--broken-core NAME] [--no-snapshots] [--bug-restore-on-one-copy] [--bug-changes-ignore-restores] [--bug-reapplies-retries] [--broken-image-import NAME] [--lying-image-export] [--bug-disk-takes-writes-after-failure] [--bug-changes-miss-deletes] [--compact-fail-percent P]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { seeds: 100, from: 1, verbose: false, serializableReads: false, workers: availableParallelism(), releaseAnswersOnFailure: false, appendsBeforeTermSaved: false, restoreOnOneCopy: false, changesIgnoreRestores: false, reappliesRetries: false, snapshots: true, lyingImageExport: false, takesWritesAfterFailure: false, changesMissDeletes: false, scenario: [] };
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
      case '--scenario-of':
        a.scenarioOf = num();
        break;
      case '--scenario': {
        const v = argv[++i];
        const eq = v?.indexOf('=') ?? -1;
        if (v === undefined || eq <= 0) usage('--scenario needs KEY=VALUE');
        if (a.scenario.length >= SCENARIO_OVERRIDES_MAX) usage(`at most ${SCENARIO_OVERRIDES_MAX} --scenario overrides`);
        a.scenario.push([v.slice(0, eq), v.slice(eq + 1)]);
        break;
      }
      case '--verbose':
        a.verbose = true;
        break;
      case '--ack-before-persist':
        a.ackBeforePersistMs = num();
        break;
      case '--workers': {
        const n = num();
        if (n < 1 || n > 64) usage('--workers must be between 1 and 64');
        a.workers = n;
        break;
      }
      case '--divergent-node': {
        const v = argv[++i];
        if (v === undefined || !/^n\d$/.test(v)) usage('--divergent-node needs a node id (n1..n7)');
        a.divergentNode = v;
        break;
      }
      case '--no-snapshots':
        a.snapshots = false;
        break;
      case '--bug-restore-on-one-copy':
        a.restoreOnOneCopy = true;
        break;
      case '--bug-changes-ignore-restores':
        a.changesIgnoreRestores = true;
        break;
      case '--bug-reapplies-retries':
        a.reappliesRetries = true;
        break;
      case '--serializable-reads':
        a.serializableReads = true;
        break;
      case '--bug-release-answers-on-failure':
        a.releaseAnswersOnFailure = true;
        break;
      case '--bug-appends-before-term-saved':
        a.appendsBeforeTermSaved = true;
        break;
      case '--broken-core': {
        const v = argv[++i];
        if (v === undefined || !(v in BROKEN_CORES)) usage(`--broken-core needs one of ${Object.keys(BROKEN_CORES).join(', ')}`);
        a.brokenCore = v;
        break;
      }
      case '--broken-image-import': {
        const v = argv[++i];
        if (v === undefined || !(v in BROKEN_IMAGE_IMPORTS)) usage(`--broken-image-import needs one of ${Object.keys(BROKEN_IMAGE_IMPORTS).join(', ')}`);
        a.brokenImageImport = v;
        break;
      }
      case '--lying-image-export':
        a.lyingImageExport = true;
        break;
      case '--bug-disk-takes-writes-after-failure':
        a.takesWritesAfterFailure = true;
        break;
      case '--bug-changes-miss-deletes':
        a.changesMissDeletes = true;
        break;
      case '--compact-fail-percent': {
        const p = num();
        if (p > 100) usage('--compact-fail-percent needs 0..100');
        a.compactFailPercent = p;
        break;
      }
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
    ...(args.snapshots ? {} : { snapshots: false }),
    ...(args.ackBeforePersistMs !== undefined ? { ackBeforePersistMs: args.ackBeforePersistMs } : {}),
    ...(args.serializableReads ? { serializableReads: true } : {}),
    ...(args.divergentNode !== undefined ? { divergentNode: args.divergentNode } : {}),
    ...(args.releaseAnswersOnFailure || args.appendsBeforeTermSaved || args.restoreOnOneCopy || args.reappliesRetries || args.changesIgnoreRestores
      ? {
          nodeBugs: {
            ...(args.releaseAnswersOnFailure ? { releaseAnswersOnFailure: true } : {}),
            ...(args.appendsBeforeTermSaved ? { appendsBeforeTermSaved: true } : {}),
            ...(args.restoreOnOneCopy ? { restoreOnOneCopy: true } : {}),
            ...(args.reappliesRetries ? { reappliesRetries: true } : {}),
            ...(args.changesIgnoreRestores ? { changesIgnoreRestores: true } : {}),
          },
        }
      : {}),
    ...(args.brokenCore !== undefined ? { brokenCore: args.brokenCore } : {}),
    ...(args.brokenImageImport !== undefined ? { brokenImageImport: args.brokenImageImport } : {}),
    ...(args.lyingImageExport ? { lyingImageExport: true } : {}),
    ...(args.takesWritesAfterFailure ? { takesWritesAfterFailure: true } : {}),
    ...(args.changesMissDeletes ? { changesMissDeletes: true } : {}),
    ...(args.compactFailPercent !== undefined ? { compactFailChance: args.compactFailPercent / 100 } : {}),
  };
  // Loaded only to check --scenario's knobs: a campaign's main thread runs no seed (its workers load the simulator
  // themselves), and loading the whole node under tsx was ~0.7 s of its CPU.
  const scenario = args.scenario.length > 0 ? scenarioOverrides(args.scenario, (await import('./node-cluster.js')).makeNodeScenario(1, 3)) : undefined;
  const chosen = { ...(args.scenarioOf !== undefined ? { scenarioOf: args.scenarioOf } : {}), ...(scenario !== undefined ? { scenario } : {}) };
  if (args.seed !== undefined) {
    const { nodesForSeed, runNodeSeed } = await import('./node-run.js');
    const nodes = args.nodes ?? nodesForSeed(args.seed);
    const t0 = performance.now();
    const r = await runNodeSeed(args.seed, { nodes, controls, ...chosen, ...(args.verbose ? { trace: (line: string) => process.stdout.write(`${line}\n`) } : {}) });
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
  const t0 = performance.now();
  const workers = Math.max(1, Math.min(args.workers, Math.ceil(args.seeds / JOB_SEEDS)));
  const every = Math.max(JOB_SEEDS, Math.floor(args.seeds / 20));
  let reported = 0;
  const summary = await runOnWorkers({
    from: args.from,
    count: args.seeds,
    ...(args.nodes !== undefined ? { nodes: args.nodes } : {}),
    controls,
    ...chosen,
    workers,
    onFailure: (f) => process.stdout.write(`VIOLATION ${f.message}\n`),
    onProgress: (seeds) => {
      if (seeds - reported < every && seeds !== args.seeds) return;
      reported = seeds;
      process.stdout.write(`  ${seeds}/${args.seeds} seeds\n`);
    },
  });
  const s = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(
    `real node: ${summary.seeds} seeds from ${args.from} on ${workers} worker(s) in ${s.toFixed(2)}s wall, ${cpuS.toFixed(2)}s CPU: ` +
      `${(summary.seeds / s).toFixed(1)} seeds/s, ${(summary.seeds / cpuS).toFixed(1)} seeds per CPU-second (GC included), ` +
      `${summary.steps} timers, ${(summary.virtualMs / 1000).toFixed(0)}s virtual; ${summary.failures.length} violation(s)\n`,
  );
  const r = summary.counts;
  process.stdout.write(`snapshots: ${r.snapshots} taken, ${r.deltas} of them from the previous one\n`);
  process.stdout.write(
    `restore entries applied by followers: ${r.imageRestores} from the leader's state image, ${r.imageFallbacks} from their archive copy after the image failed; ` +
      `${r.archiveRestores} applied from an archive copy in all (leaders, fallbacks, followers that asked none); ` +
      `${r.imageFlips} image chunks flipped on the way, ${r.imageCrashes} members crashed while asked for an image\n`,
  );
  for (const f of summary.failures) process.stdout.write(`  seed ${f.seed}: ${f.property}  -> ${f.replay}\n`);
  if (summary.failures.length > 0) process.exit(1);
}

void main();

/**
 * Where a simulated seed goes: the same seeds in one process under scenario
 * overrides that leave parts of the workload out (an idle cluster, clients
 * only, no snapshots, no faults, the default), each the CPU per seed
 * (process.cpuUsage, GC included), in alternating rounds. Figures only.
 *   node --single-threaded --min-semi-space-size=64 --max-semi-space-size=64 --import tsx test/sim/sim-cost.ts [--from S] [--seeds N] [--rounds R]
 */
import type { NodeScenario } from './node-cluster.js';
import { runNodeCampaign } from './node-run.js';

const QUIET_NET: Partial<NodeScenario> = { crashMeanMs: 0, partitionMeanMs: 0, dropChance: 0, dupChance: 0, reorderChance: 0, crashAfterReplyChance: 0 };
const QUIET_DISK: Partial<NodeScenario> = { writeErrorChance: 0, enospcChance: 0, corruptChance: 0, powerLossChance: 0 };
const NO_SNAPSHOTS: Partial<NodeScenario> = { snapshotEntries: 0, restoreMeanMs: 0, lagMeanMs: 0 };
const NO_CLIENTS: Partial<NodeScenario> = { proposeMeanMs: 1e9, readMeanMs: 1e9, memberChangeMeanMs: 0, transferMeanMs: 0 };

const VARIANTS: readonly [string, Partial<NodeScenario> | undefined][] = [
  ['idle cluster', { ...NO_CLIENTS, ...NO_SNAPSHOTS, ...QUIET_NET, ...QUIET_DISK }],
  ['clients only (no snapshots, no faults)', { ...NO_SNAPSHOTS, ...QUIET_NET, ...QUIET_DISK }],
  ['no snapshots', NO_SNAPSHOTS],
  ['no faults', { ...QUIET_NET, ...QUIET_DISK }],
  ['default', undefined],
];

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? dflt : Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${name}: a whole number >= 1`);
  return v;
}

async function main(): Promise<void> {
  const from = arg('--from', 5001);
  const seeds = arg('--seeds', 100);
  const rounds = arg('--rounds', 2);
  for (let round = 1; round <= rounds; round++) {
    for (const [name, scenario] of VARIANTS) {
      const c0 = process.cpuUsage();
      const s = await runNodeCampaign({ from, count: seeds, ...(scenario !== undefined ? { scenario } : {}) });
      const cpu = process.cpuUsage(c0);
      const cpuS = (cpu.user + cpu.system) / 1e6;
      process.stdout.write(
        `round ${round} ${name}: ${(s.seeds / cpuS).toFixed(1)} seeds per CPU-second, ${((1e3 * cpuS) / s.seeds).toFixed(1)} ms a seed, ` +
          `${(s.steps / s.seeds).toFixed(0)} timers a seed, ${s.counts.snapshots} snapshots; ${s.failures.length} violation(s)\n`,
      );
    }
  }
}

void main();

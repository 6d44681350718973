/**
 * Where a simulated seed goes: the same seeds in one process under scenario
 * overrides that leave parts of the workload out (an idle cluster, clients
 * only, no snapshots, no faults, the default), each the CPU per seed
 * (process.cpuUsage, GC included), in alternating rounds. Figures only.
 *   npm run sim:cost -- [--from S] [--seeds N] [--rounds R] [--only NAME] [--count]
 * (node --single-threaded --min-semi-space-size=64 --max-semi-space-size=64 --import ./test/sim/sim-register.mjs
 * test/sim/sim-cost.ts: the code compiled as the campaign's workers run it; under `--import tsx` every function
 * the code creates is wrapped in tsx's keepNames __name() call, and the same seeds cost 15-20% more CPU.)
 * --only NAME: only the scenarios whose name contains NAME (`--only clients`: clients only; e.g. under --cpu-prof).
 * --count: no timing; what one client operation (a write or a read) costs in steps of the real node, per scenario:
 * the simulator's timers, the promises made (async_hooks), the Raft messages sent, the requests a node served
 * (Node.handleRequest), the answers it stepped (Node.receive), the Ready cycles (RaftNode.ready), the log saves
 * and the state reads and writes of the storage, averaged over the seeds' client operations (Node.propose,
 * Node.get, Node.range). The counting slows the run; the counts are the same on every run of the same code.
 */
import { createHook } from 'node:async_hooks';

import { StateMachine } from '../../src/fsm/state-machine.js';
import { Node } from '../../src/node/node.js';
import { RaftNode } from '../../src/raft/raft.js';
import { MemoryStorage } from '../../src/storage/memory-storage.js';
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

/** COUNTED: the methods --count counts calls of: [label, prototype, method]. */
const COUNTED: readonly [string, object, string][] = [
  ['client writes (Node.propose)', Node.prototype, 'propose'],
  ['client reads (Node.get)', Node.prototype, 'get'],
  ['client ranges (Node.range)', Node.prototype, 'range'],
  ['requests served (Node.handleRequest)', Node.prototype, 'handleRequest'],
  ['answers stepped (Node.receive)', Node.prototype, 'receive'],
  ['Ready cycles (RaftNode.ready)', RaftNode.prototype, 'ready'],
  ['log saves (storage save)', MemoryStorage.prototype, 'save'],
  ['apply batches (StateMachine.apply)', StateMachine.prototype, 'apply'],
  ['state writes (storage write)', MemoryStorage.prototype, 'write'],
  ['state reads (storage get, getMany)', MemoryStorage.prototype, 'getMany'],
  ['state reads (storage get, getMany)', MemoryStorage.prototype, 'get'],
];
const CLIENT_OPS = new Set(['client writes (Node.propose)', 'client reads (Node.get)', 'client ranges (Node.range)']);

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? dflt : Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${name}: a whole number >= 1`);
  return v;
}

/** instrument wraps each COUNTED method in a counter (once, for the process); returns the counts, by label. */
function instrument(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const [label, proto, method] of COUNTED) {
    const p = proto as Record<string, (...a: unknown[]) => unknown>;
    const f = p[method];
    if (typeof f !== 'function') throw new Error(`--count: ${method} is not a method any more; update COUNTED`);
    counts.set(label, 0);
    p[method] = function (this: unknown, ...a: unknown[]): unknown {
      counts.set(label, (counts.get(label) ?? 0) + 1);
      return f.apply(this, a);
    };
  }
  return counts;
}

async function count(from: number, seeds: number, variants: readonly [string, Partial<NodeScenario> | undefined][]): Promise<void> {
  const counts = instrument();
  let promises = 0;
  const hook = createHook({
    init(_id, type) {
      if (type === 'PROMISE') promises++;
    },
  });
  for (const [name, scenario] of variants) {
    for (const k of counts.keys()) counts.set(k, 0);
    promises = 0;
    hook.enable();
    const s = await runNodeCampaign({ from, count: seeds, ...(scenario !== undefined ? { scenario } : {}) });
    hook.disable();
    let ops = 0;
    for (const [k, v] of counts) if (CLIENT_OPS.has(k)) ops += v;
    const row = (n: number, what: string): string => `  ${(n / s.seeds).toFixed(1).padStart(9)} ${(ops === 0 ? '-' : (n / ops).toFixed(1)).padStart(9)}  ${what}\n`;
    let out = `${name}: ${s.seeds} seeds, ${(ops / s.seeds).toFixed(1)} client operations a seed (all nodes' counts)\n  ${'a seed'.padStart(9)} ${'an op'.padStart(9)}\n`;
    out += row(s.steps, 'simulator timers') + row(promises, 'promises') + row(s.messages, 'Raft messages sent (not the answers requests return)');
    for (const [k, v] of counts) if (!CLIENT_OPS.has(k)) out += row(v, k);
    process.stdout.write(out);
  }
}

async function main(): Promise<void> {
  const from = arg('--from', 5001);
  const seeds = arg('--seeds', 100);
  const rounds = arg('--rounds', 2);
  const onlyAt = process.argv.indexOf('--only');
  const only = onlyAt < 0 ? '' : (process.argv[onlyAt + 1] ?? '');
  const variants = VARIANTS.filter(([name]) => name.includes(only));
  if (variants.length === 0) throw new Error(`--only ${only}: no scenario's name contains it (${VARIANTS.map(([n]) => n).join('; ')})`);
  if (process.argv.includes('--count')) return count(from, seeds, variants);
  for (let round = 1; round <= rounds; round++) {
    for (const [name, scenario] of variants) {
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

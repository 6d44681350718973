/**
 * runSeed runs one seeded simulation and reports {ok, violation?, stats}.
 * runCampaign runs a range of seeds. Both are pure functions of their inputs
 * (the wall clock is only read to report speed).
 */
import { SafetyViolation } from './checkers.js';
import { SimCluster, makeScenario, type DriverFaults, type NodeFactory, type Scenario, type SimStats } from './cluster.js';

export interface RunOptions {
  /** nodes: 3 or 5; default alternates with the seed (even: 3, odd: 5). */
  readonly nodes?: number;
  readonly nodeFactory?: NodeFactory;
  readonly driverFaults?: DriverFaults;
  /** scenario: overrides of the knobs drawn from the seed. */
  readonly scenario?: Partial<Scenario>;
  /** maxEvents: the event budget (default DEFAULT_MAX_EVENTS). */
  readonly maxEvents?: number;
  /** trace: receives the event trace (--verbose). */
  readonly trace?: (line: string) => void;
}

export interface RunResult {
  readonly seed: number;
  readonly nodes: number;
  readonly ok: boolean;
  readonly violation?: SafetyViolation;
  /** message: the violation with the seed and the command that replays it. */
  readonly message?: string;
  readonly stats: SimStats;
  readonly replay: string;
}

export const DEFAULT_MAX_EVENTS = 400_000;

export function nodesForSeed(seed: number): number {
  return seed % 2 === 0 ? 3 : 5;
}

export function replayCommand(seed: number, nodes: number): string {
  return `npm run sim -- --seed ${seed} --nodes ${nodes} --verbose`;
}

export function runSeed(seed: number, options: RunOptions = {}): RunResult {
  const nodes = options.nodes ?? nodesForSeed(seed);
  const scenario = makeScenario(seed, nodes, options.scenario ?? {});
  const cluster = new SimCluster({
    seed,
    scenario,
    maxEvents: options.maxEvents ?? DEFAULT_MAX_EVENTS,
    ...(options.nodeFactory !== undefined ? { nodeFactory: options.nodeFactory } : {}),
    ...(options.driverFaults !== undefined ? { driverFaults: options.driverFaults } : {}),
    ...(options.trace !== undefined ? { trace: options.trace } : {}),
  });
  const replay = replayCommand(seed, nodes);
  try {
    const stats = cluster.run();
    return { seed, nodes, ok: true, stats, replay };
  } catch (err) {
    if (!(err instanceof SafetyViolation)) throw err;
    cluster.stats.virtualMs = err.timeMs;
    const message = `seed ${seed} (${nodes} nodes): ${err.message}\n  replay: ${replay}`;
    return { seed, nodes, ok: false, violation: err, message, stats: cluster.stats, replay };
  }
}

export interface CampaignOptions extends Omit<RunOptions, 'nodes' | 'trace'> {
  readonly from: number;
  readonly count: number;
  /** nodes: fixed size; default alternates 3 and 5 with the seed. */
  readonly nodes?: number;
  /** stopOnFirst: stop at the first violation. */
  readonly stopOnFirst?: boolean;
  readonly onResult?: (r: RunResult) => void;
}

export interface CampaignSummary {
  readonly seeds: number;
  readonly failures: RunResult[];
  readonly events: number;
  readonly virtualMs: number;
  readonly wallMs: number;
}

/** runCampaign runs seeds from..from+count-1; negative controls use it with a broken nodeFactory. */
export function runCampaign(opts: CampaignOptions): CampaignSummary {
  const t0 = performance.now();
  const failures: RunResult[] = [];
  let events = 0;
  let virtualMs = 0;
  let seeds = 0;
  for (let seed = opts.from; seed < opts.from + opts.count; seed++) {
    const r = runSeed(seed, {
      ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
      ...(opts.nodeFactory !== undefined ? { nodeFactory: opts.nodeFactory } : {}),
      ...(opts.driverFaults !== undefined ? { driverFaults: opts.driverFaults } : {}),
      ...(opts.scenario !== undefined ? { scenario: opts.scenario } : {}),
      ...(opts.maxEvents !== undefined ? { maxEvents: opts.maxEvents } : {}),
    });
    seeds++;
    events += r.stats.events;
    virtualMs += r.stats.virtualMs;
    if (!r.ok) failures.push(r);
    opts.onResult?.(r);
    if (!r.ok && opts.stopOnFirst === true) break;
  }
  return { seeds, failures, events, virtualMs, wallMs: performance.now() - t0 };
}

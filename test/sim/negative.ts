/**
 * findViolation: the negative-control harness. Runs seeds from `from` with a
 * (possibly broken) node factory or driver until a violation (of `property`,
 * if given) shows up, at most maxSeeds seeds. Broken subclasses of RaftNode
 * (overriding the core's protected methods) are passed as nodeFactory.
 */
import type { DriverFaults, NodeFactory, Scenario } from './cluster.js';
import { runSeed, type RunResult } from './run.js';

export interface FindOptions {
  readonly from: number;
  readonly maxSeeds: number;
  readonly nodes?: number;
  readonly nodeFactory?: NodeFactory;
  readonly driverFaults?: DriverFaults;
  readonly scenario?: Partial<Scenario>;
  /** property: only a violation of this property counts (e.g. 'Election Safety'); any when unset. */
  readonly property?: string;
}

export interface FindResult {
  /** result: the first run with a matching violation, undefined when none was found. */
  readonly result: RunResult | undefined;
  readonly seedsRun: number;
  /** others: violations of other properties met on the way. */
  readonly others: RunResult[];
}

export function findViolation(opts: FindOptions): FindResult {
  const others: RunResult[] = [];
  for (let i = 0; i < opts.maxSeeds; i++) {
    const seed = opts.from + i;
    const r = runSeed(seed, {
      ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
      ...(opts.nodeFactory !== undefined ? { nodeFactory: opts.nodeFactory } : {}),
      ...(opts.driverFaults !== undefined ? { driverFaults: opts.driverFaults } : {}),
      ...(opts.scenario !== undefined ? { scenario: opts.scenario } : {}),
    });
    if (r.ok) continue;
    if (opts.property === undefined || r.violation?.property === opts.property) return { result: r, seedsRun: i + 1, others };
    others.push(r);
  }
  return { result: undefined, seedsRun: opts.maxSeeds, others };
}

/**
 * VOTE_STORM: an election-heavy scenario for vote-durability controls: short
 * election timeouts against slow lossy links, no leader lease, and every
 * granted vote followed by a quick crash and restart. A forgotten vote becomes
 * two leaders in about 1% of its 3-node seeds (the rival candidate must collect
 * the forgetful voter's second vote before the first leader's append reaches it).
 */
export const VOTE_STORM: Partial<Scenario> = {
  crashAfterVoteChance: 1,
  electionTimeoutTicks: 4,
  heartbeatIntervalTicks: 2,
  latencyMinMs: 1,
  latencyMaxMs: 40,
  dropChance: 0.2,
  partitionMeanMs: 200,
  checkQuorum: false,
};

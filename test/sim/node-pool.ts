/**
 * runOnWorkers: the real-node simulator's seeds on worker threads — jobs of
 * JOB_SEEDS seeds handed to `workers` threads (node-worker.ts, entered
 * through node-worker-boot.mjs, which registers tsx's loader in the thread)
 * as they finish, their summaries summed. Used by `npm run sim`
 * (node-campaign.ts) and the bounded campaign in CI (sim.spec.ts).
 */
import { Worker } from 'node:worker_threads';

import type { NodeControls, NodeScenario } from './node-cluster.js';
import { addCounts, noCounts, type CampaignCounts } from './campaign-counts.js';
import type { WorkerJob, WorkerResult } from './node-worker.js';

/** JOB_SEEDS: seeds one worker job runs (small: the workers stay evenly busy). */
export const JOB_SEEDS = 25;

export interface PoolOptions {
  readonly from: number;
  readonly count: number;
  /** nodes: 3 or 5 for every seed; default alternates with the seed. */
  readonly nodes?: number;
  readonly controls: NodeControls;
  /** scenarioOf / scenario: as NodeRunOptions's (every seed in that other seed's scenario; overrides). */
  readonly scenarioOf?: number;
  readonly scenario?: Partial<NodeScenario>;
  readonly workers: number;
  readonly onFailure?: (f: WorkerResult['failures'][number]) => void;
  /** onProgress: seeds done so far, after each job. */
  readonly onProgress?: (seeds: number) => void;
}

export interface PoolTotals {
  seeds: number;
  steps: number;
  virtualMs: number;
  /** counts: what the seeds exercised (snapshots, deltas; how restore entries were applied). */
  counts: CampaignCounts;
  failures: WorkerResult['failures'][number][];
}

export async function runOnWorkers(opts: PoolOptions): Promise<PoolTotals> {
  const totals: PoolTotals = { seeds: 0, steps: 0, virtualMs: 0, counts: noCounts(), failures: [] };
  const end = opts.from + opts.count;
  let next = opts.from;
  const runOne = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const w = new Worker(new URL('./node-worker-boot.mjs', import.meta.url), { execArgv: [] });
      const give = (): void => {
        if (next >= end) {
          void w.terminate().then(() => resolve());
          return;
        }
        const count = Math.min(JOB_SEEDS, end - next);
        const job: WorkerJob = {
          from: next,
          count,
          controls: opts.controls,
          ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
          ...(opts.scenarioOf !== undefined ? { scenarioOf: opts.scenarioOf } : {}),
          ...(opts.scenario !== undefined ? { scenario: opts.scenario } : {}),
        };
        next += count;
        w.postMessage(job);
      };
      w.on('message', (r: WorkerResult) => {
        totals.seeds += r.seeds;
        totals.steps += r.steps;
        totals.virtualMs += r.virtualMs;
        addCounts(totals.counts, r.counts);
        for (const f of r.failures) {
          totals.failures.push(f);
          opts.onFailure?.(f);
        }
        opts.onProgress?.(totals.seeds);
        give();
      });
      w.on('error', reject);
      give();
    });
  const workers = Math.max(1, Math.min(opts.workers, Math.ceil(opts.count / JOB_SEEDS)));
  await Promise.all(Array.from({ length: workers }, runOne));
  return totals;
}

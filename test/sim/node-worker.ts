/**
 * The worker thread of `npm run sim -- --workers W` (node-campaign.ts):
 * it runs each range of seeds it is sent (runNodeCampaign) and answers with
 * the range's summary; the violations carry their message and replay
 * command. It exits when its port closes.
 */
import { parentPort } from 'node:worker_threads';

import type { NodeControls, NodeScenario } from './node-cluster.js';
import { runNodeCampaign } from './node-run.js';
import type { CampaignCounts } from './campaign-counts.js';

/** WorkerJob: one range of seeds. */
export interface WorkerJob {
  readonly from: number;
  readonly count: number;
  readonly nodes?: number;
  readonly controls: NodeControls;
  readonly scenarioOf?: number;
  readonly scenario?: Partial<NodeScenario>;
}

/** WorkerResult: the summary of one range. */
export interface WorkerResult {
  readonly seeds: number;
  readonly steps: number;
  readonly virtualMs: number;
  readonly counts: CampaignCounts;
  readonly failures: readonly { readonly seed: number; readonly property: string; readonly message: string; readonly replay: string }[];
}

const port = parentPort;
if (port === null) throw new Error('node-worker.ts runs only as a worker thread');
port.on('message', (job: WorkerJob) => {
  const { from, count, controls, nodes, scenarioOf, scenario } = job;
  void runNodeCampaign({ from, count, controls, ...(nodes !== undefined ? { nodes } : {}), ...(scenarioOf !== undefined ? { scenarioOf } : {}), ...(scenario !== undefined ? { scenario } : {}) }).then((s) => {
    const result: WorkerResult = {
      seeds: s.seeds,
      steps: s.steps,
      virtualMs: s.virtualMs,
      counts: s.counts,
      failures: s.failures.map((f) => ({ seed: f.seed, property: f.violation?.property ?? '', message: f.message ?? '', replay: f.replay })),
    };
    port.postMessage(result);
  });
});

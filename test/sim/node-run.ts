/**
 * runNodeSeed runs one seed of the real-node simulator (node-cluster.ts) and
 * reports {ok, violation?, stats, replay}; runNodeCampaign runs a range of
 * seeds. Pure functions of their inputs (the wall clock is read only to
 * report speed).
 */
import type { SafetyViolation } from './checkers.js';
import { addCounts, noCounts, type CampaignCounts } from './campaign-counts.js';
import { NodeCluster, makeNodeScenario, type NodeControls, type NodeScenario, type NodeSimStats } from './node-cluster.js';

export interface NodeRunOptions {
  /** nodes: 3 or 5; default alternates with the seed (even: 3, odd: 5). */
  readonly nodes?: number;
  /**
   * scenarioOf: run in the scenario this other seed draws (makeNodeScenario(scenarioOf, nodes)) instead of the
   * seed's own, `scenario`'s overrides applied on top (`--scenario-of S` in the replay command).
   */
  readonly scenarioOf?: number;
  /** scenario: overrides of the drawn scenario (`--scenario KEY=VALUE` each in the replay command). */
  readonly scenario?: Partial<NodeScenario>;
  /** controls: test-only switches that break things on purpose (negative controls). */
  readonly controls?: NodeControls;
  readonly trace?: (line: string) => void;
}

export interface NodeRunResult {
  readonly seed: number;
  readonly nodes: number;
  readonly ok: boolean;
  readonly violation?: SafetyViolation;
  /** message: the violation with the seed and the command that replays it. */
  readonly message?: string;
  readonly stats: NodeSimStats;
  readonly replay: string;
}

export function nodesForSeed(seed: number): number {
  return seed % 2 === 0 ? 3 : 5;
}

/**
 * nodeReplayCommand: the `npm run sim` command that runs this seed again as it ran (node-campaign.ts parses each
 * flag back): its node count, the other seed whose scenario it ran in, the scenario's overrides and the controls.
 */
export function nodeReplayCommand(seed: number, nodes: number, controls: NodeControls = {}, scenarioOf?: number, scenario: Partial<NodeScenario> = {}): string {
  let extra = scenarioOf !== undefined ? ` --scenario-of ${scenarioOf}` : '';
  for (const [key, value] of Object.entries(scenario)) if (key !== 'nodes' && value !== undefined) extra += ` --scenario ${key}=${String(value)}`;
  extra += controls.snapshots === false ? ' --no-snapshots' : '';
  extra += controls.ackBeforePersistMs !== undefined ? ` --ack-before-persist ${controls.ackBeforePersistMs}` : '';
  if (controls.serializableReads === true) extra += ' --serializable-reads';
  if (controls.divergentNode !== undefined) extra += ` --divergent-node ${controls.divergentNode}`;
  if (controls.nodeBugs?.releaseAnswersOnFailure === true) extra += ' --bug-release-answers-on-failure';
  if (controls.nodeBugs?.appendsBeforeTermSaved === true) extra += ' --bug-appends-before-term-saved';
  if (controls.nodeBugs?.restoreOnOneCopy === true) extra += ' --bug-restore-on-one-copy';
  if (controls.nodeBugs?.reappliesRetries === true) extra += ' --bug-reapplies-retries';
  if (controls.nodeBugs?.changesIgnoreRestores === true) extra += ' --bug-changes-ignore-restores';
  if (controls.brokenCore !== undefined) extra += ` --broken-core ${controls.brokenCore}`;
  if (controls.brokenImageImport !== undefined) extra += ` --broken-image-import ${controls.brokenImageImport}`;
  if (controls.lyingImageExport === true) extra += ' --lying-image-export';
  if (controls.takesWritesAfterFailure === true) extra += ' --bug-disk-takes-writes-after-failure';
  if (controls.changesMissDeletes === true) extra += ' --bug-changes-miss-deletes';
  if (controls.compactFailChance !== undefined) extra += ` --compact-fail-percent ${Math.round(controls.compactFailChance * 100)}`;
  return `npm run sim -- --seed ${seed} --nodes ${nodes}${extra} --verbose`;
}

export async function runNodeSeed(seed: number, options: NodeRunOptions = {}): Promise<NodeRunResult> {
  const nodes = options.nodes ?? nodesForSeed(seed);
  const snapshots = options.controls?.snapshots !== false;
  const scenario =
    options.scenarioOf !== undefined
      ? { ...makeNodeScenario(options.scenarioOf, nodes, {}, snapshots), ...options.scenario, nodes }
      : makeNodeScenario(seed, nodes, options.scenario ?? {}, snapshots);
  const cluster = new NodeCluster(seed, scenario, options.controls ?? {}, options.trace ?? null);
  const replay = nodeReplayCommand(seed, nodes, options.controls, options.scenarioOf, options.scenario);
  const violation = await cluster.run();
  if (violation === null) return { seed, nodes, ok: true, stats: cluster.stats, replay };
  const message = `seed ${seed} (${nodes} nodes): ${violation.message}\n  replay: ${replay}`;
  return { seed, nodes, ok: false, violation, message, stats: cluster.stats, replay };
}

export interface NodeCampaignOptions extends Omit<NodeRunOptions, 'nodes' | 'trace'> {
  readonly from: number;
  readonly count: number;
  readonly nodes?: number;
  readonly stopOnFirst?: boolean;
  readonly onResult?: (r: NodeRunResult) => void;
}

export interface NodeCampaignSummary {
  readonly seeds: number;
  readonly failures: NodeRunResult[];
  readonly steps: number;
  /** messages: the Raft messages the seeds' nodes sent (NodeSimStats.messages, summed). */
  readonly messages: number;
  readonly virtualMs: number;
  readonly wallMs: number;
  readonly counts: CampaignCounts;
}

export async function runNodeCampaign(opts: NodeCampaignOptions): Promise<NodeCampaignSummary> {
  const t0 = performance.now();
  const failures: NodeRunResult[] = [];
  let steps = 0;
  let messages = 0;
  let virtualMs = 0;
  let seeds = 0;
  const counts = noCounts();
  for (let seed = opts.from; seed < opts.from + opts.count; seed++) {
    const r = await runNodeSeed(seed, {
      ...(opts.nodes !== undefined ? { nodes: opts.nodes } : {}),
      ...(opts.scenarioOf !== undefined ? { scenarioOf: opts.scenarioOf } : {}),
      ...(opts.scenario !== undefined ? { scenario: opts.scenario } : {}),
      ...(opts.controls !== undefined ? { controls: opts.controls } : {}),
    });
    seeds++;
    steps += r.stats.steps;
    messages += r.stats.messages;
    virtualMs += r.stats.virtualMs;
    addCounts(counts, r.stats);
    if (!r.ok) failures.push(r);
    opts.onResult?.(r);
    if (!r.ok && opts.stopOnFirst === true) break;
  }
  return { seeds, failures, steps, messages, virtualMs, wallMs: performance.now() - t0, counts };
}

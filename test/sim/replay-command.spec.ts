/**
 * The command a seed prints to replay it (nodeReplayCommand) runs that seed
 * as it ran, also when it ran in another seed's scenario with overrides (as
 * sim.spec's pins do): `npm run sim` (node-campaign.ts) takes --scenario-of S
 * and --scenario KEY=VALUE, and its trace, stats and verdict are the ones the
 * spec's own run gets. Bad overrides are refused with the knob named.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

import { RESTORE_CHURN } from './node-cluster.js';
import { runNodeSeed, type NodeRunOptions } from './node-run.js';

const run = promisify(execFile);
const ROOT = new URL('../../', import.meta.url);

/** sim: runs `npm run sim -- <args>` as package.json's script does (node with its flags, not npm); its exit code and output. */
async function sim(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { scripts: Record<string, string> };
  const [node, ...flags] = (pkg.scripts.sim ?? '').split(' ');
  assert.equal(node, 'node');
  try {
    const { stdout, stderr } = await run(process.execPath, [...flags, ...args], { cwd: ROOT, timeout: 120_000, maxBuffer: 64 * 2 ** 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** replayArgs: the arguments after `npm run sim --` of a replay command. */
function replayArgs(replay: string): string[] {
  const m = /^npm run sim -- (.*)$/.exec(replay);
  assert.ok(m !== null, replay);
  return (m[1] as string).split(' ');
}

describe('sim: the printed replay command runs the seed as it ran', function () {
  this.timeout(180_000);

  it('a seed in another seed\'s scenario with overrides (sim.spec\'s pin 1125: 717880\'s scenario, changes every ~150 ms, every restorer lost): the CLI prints the trace and stats the spec\'s run gets', async () => {
    const options: NodeRunOptions = { nodes: 3, scenarioOf: 717880, scenario: { memberChangeMeanMs: 150, loseRestorerChance: 1 } };
    const trace: string[] = [];
    const r = await runNodeSeed(1125, { ...options, trace: (line) => void trace.push(line) });
    assert.ok(r.ok, r.message);
    assert.equal(r.replay, 'npm run sim -- --seed 1125 --nodes 3 --scenario-of 717880 --scenario memberChangeMeanMs=150 --scenario loseRestorerChance=1 --verbose');
    const cli = await sim(replayArgs(r.replay));
    assert.equal(cli.code, 0, cli.stderr);
    const lines = cli.stdout.trimEnd().split('\n');
    const last = lines.pop() ?? '';
    assert.match(last, /^seed 1125 \(3 nodes\): ok in /);
    assert.equal(lines.pop(), JSON.stringify(r.stats), 'the same stats');
    assert.deepEqual(lines, trace, 'the same trace');
  });

  it('a campaign on worker threads (--seeds) in another seed\'s scenario with overrides runs each seed as the spec does: sim.spec\'s changesIgnoreRestores control, seed 216 of 717880\'s scenario with RESTORE_CHURN, prints the violation and replay command the spec\'s run gets', async () => {
    const controls = { nodeBugs: { changesIgnoreRestores: true } };
    const r = await runNodeSeed(216, { nodes: 3, scenarioOf: 717880, scenario: RESTORE_CHURN, controls });
    assert.equal(r.violation?.property, 'Liveness', r.message);
    const args = replayArgs(r.replay).filter((a) => a !== '--verbose');
    assert.deepEqual(args.slice(0, 4), ['--seed', '216', '--nodes', '3']);
    const cli = await sim(['--seeds', '1', '--from', '216', '--workers', '1', ...args.slice(2)]);
    assert.equal(cli.code, 1, cli.stderr);
    assert.ok(cli.stdout.includes(`VIOLATION ${r.message ?? ''}\n`), cli.stdout);
  });

  it('the overrides alone differ from the seed\'s own scenario (the CLI run without --scenario-of is another run)', async () => {
    const own = await runNodeSeed(1125, { nodes: 3, scenario: { memberChangeMeanMs: 150, loseRestorerChance: 1 } });
    const of = await runNodeSeed(1125, { nodes: 3, scenarioOf: 717880, scenario: { memberChangeMeanMs: 150, loseRestorerChance: 1 } });
    assert.notDeepEqual(own.stats, of.stats);
    assert.equal(own.replay, 'npm run sim -- --seed 1125 --nodes 3 --scenario memberChangeMeanMs=150 --scenario loseRestorerChance=1 --verbose');
  });

  for (const [arg, why] of [
    ['nope=1', /--scenario nope: not a scenario knob \(one of tickMs, /],
    ['nodes=5', /--scenario nodes: not a scenario knob/],
    ['dropChance=2', /--scenario dropChance=2: needs a number >= 0 and <= 1/],
    ['crashMeanMs=-5', /--scenario crashMeanMs=-5: needs a number >= 0/],
    ['preVote=yes', /--scenario preVote=yes: needs true or false/],
    ['crashMeanMs', /--scenario needs KEY=VALUE/],
  ] as const) {
    it(`refuses --scenario ${arg} (exit 2, the knob named), running nothing`, async () => {
      const cli = await sim(['--seed', '1', '--nodes', '3', '--scenario', arg]);
      assert.equal(cli.code, 2, cli.stdout);
      assert.match(cli.stderr, why);
      assert.equal(cli.stdout, '');
    });
  }
});

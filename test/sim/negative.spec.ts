/**
 * Negative controls: the simulator must catch deliberately broken systems, or
 * a green campaign means nothing. Each control runs the campaign with a broken
 * driver or a broken core (test/sim/broken.ts: RaftNode subclasses overriding
 * protected methods) and expects a violation of the named property within K
 * seeds. Runs are deterministic, so K only needs headroom for core changes.
 */
import assert from 'node:assert/strict';
import { BROKEN_VARIANTS } from './broken.js';
import type { NodeFactory } from './cluster.js';
import { VOTE_STORM, findViolation, type FindOptions } from './negative.js';

function variant(name: string): NodeFactory {
  const f = BROKEN_VARIANTS[name];
  if (f === undefined) throw new Error(`no broken variant ${name}`);
  return f;
}

function expectCaught(opts: FindOptions & { property: string }): void {
  const found = findViolation(opts);
  const others = found.others.map((o) => o.message ?? '').join('\n');
  assert.ok(found.result !== undefined, `no ${opts.property} violation in ${found.seedsRun} seeds${others === '' ? '' : `; other violations:\n${others}`}`);
  assert.match(found.result.message ?? '', /replay: npm run sim -- --seed \d+ --nodes \d --verbose/);
}

describe('sim negative controls: the simulator catches broken systems', function () {
  this.timeout(120_000);

  it('driver: forgetting to persist the vote (lost on crash) breaks Election Safety (Raft §5.2)', () => {
    expectCaught({ from: 1, maxSeeds: 600, nodes: 3, driverFaults: { forgetVoteOnCrash: true }, scenario: VOTE_STORM, property: 'Election Safety' });
  });

  it('the vote-storm scenario with a correct driver and core finds nothing', () => {
    const found = findViolation({ from: 1, maxSeeds: 100, nodes: 3, scenario: VOTE_STORM });
    assert.equal(found.result, undefined, found.result?.message);
  });

  it('core: voting twice in a term breaks Election Safety (Raft §5.2)', () => {
    expectCaught({ from: 1, maxSeeds: 50, nodeFactory: variant('votesTwice'), property: 'Election Safety' });
  });

  it('core: never persisting the vote breaks Election Safety (Raft §5.2, Figure 2)', () => {
    expectCaught({ from: 1, maxSeeds: 600, nodes: 3, nodeFactory: variant('forgetsVote'), scenario: VOTE_STORM, property: 'Election Safety' });
  });

  it('core: granting votes without the up-to-date check breaks Leader Completeness (Raft §5.4.1)', () => {
    expectCaught({ from: 1, maxSeeds: 100, nodeFactory: variant('ignoresLogCheck'), property: 'Leader Completeness' });
  });

  it('core: committing earlier-term entries by counting replicas breaks the commit rule (Raft §5.4.2, Figure 8)', () => {
    expectCaught({ from: 1, maxSeeds: 100, nodeFactory: variant('commitsEarlierTerms'), property: 'Leader Commit Rule' });
  });
});

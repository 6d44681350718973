/**
 * The seeded simulator as a test: hundreds of faulty seeds (3 and 5 nodes,
 * crashes, partitions, lossy network, snapshots, membership changes,
 * transfers, ReadIndex) must show no violation of Raft's safety properties
 * (Raft §5.2–§5.4, Figure 3) and must recover liveness once the faults heal.
 * A failure names the property and prints the command that replays the seed.
 */
import assert from 'node:assert/strict';
import { runCampaign, runSeed } from './run.js';
import { SeededRng } from '../harness/rng.js';

const SEEDS = Number(process.env.SIM_SEEDS ?? 600);
const FROM = Number(process.env.SIM_FROM ?? 1);

describe('sim: seeded deterministic simulation of the Raft core', function () {
  this.timeout(120_000);

  it(`keeps every safety property and recovers liveness over ${SEEDS} faulty seeds (3 and 5 nodes)`, () => {
    const summary = runCampaign({ from: FROM, count: SEEDS });
    const report = summary.failures.map((f) => f.message ?? '').join('\n');
    assert.equal(summary.seeds, SEEDS);
    assert.equal(summary.failures.length, 0, `violations:\n${report}`);
  });

  it('is deterministic: the same seed gives the same trace hash and stats', () => {
    for (const seed of [3, 4, 77]) {
      const a = runSeed(seed);
      const b = runSeed(seed);
      assert.equal(a.ok, b.ok);
      assert.equal(a.stats.traceHash, b.stats.traceHash, `seed ${seed} diverged`);
      assert.deepEqual(a.stats, b.stats);
    }
    assert.notEqual(runSeed(3).stats.traceHash, runSeed(5).stats.traceHash);
  });

  it('actually exercises the faults it claims to (elections, crashes, snapshots, reads, membership)', () => {
    const totals = { crashes: 0, partitions: 0, leadersElected: 0, snapshotsInstalled: 0, snapshotFetchesFailed: 0, readsServed: 0, acked: 0, confChanges: 0, transfers: 0 };
    for (let seed = 1; seed <= 40; seed++) {
      const r = runSeed(seed);
      for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += r.stats[k];
    }
    for (const [k, v] of Object.entries(totals)) assert.ok(v > 0, `no ${k} in 40 seeds: the simulator is not testing it`);
  });

});

describe('sim: SeededRng', () => {
  it('is a pure function of the seed, and forks are independent of draw order', () => {
    const a = new SeededRng(42);
    const b = new SeededRng(42);
    const xs = Array.from({ length: 50 }, () => a.nextInt(1000));
    const ys = Array.from({ length: 50 }, () => b.nextInt(1000));
    assert.deepEqual(xs, ys);
    const f1 = new SeededRng(42).fork('n1').nextU32();
    const r = new SeededRng(42);
    r.nextU32();
    assert.equal(r.fork('n1').nextU32(), f1);
    assert.notEqual(new SeededRng(42).fork('n2').nextU32(), f1);
  });

  it('stays in range', () => {
    const r = new SeededRng(7);
    for (let i = 0; i < 10_000; i++) {
      const v = r.nextInt(7);
      assert.ok(Number.isInteger(v) && v >= 0 && v < 7);
      const f = r.nextFloat();
      assert.ok(f >= 0 && f < 1);
    }
  });
});

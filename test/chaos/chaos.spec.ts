/**
 * Chaos on real processes (CI's bounded round): every fault kind once on a
 * 3-node cluster with TLS on (mutual TLS between peers through the fault
 * proxies, TLS and an API key for every client), then heal and check (linearizable history, acknowledged
 * writes everywhere, equal state hashes, a final write in bounded time); and
 * the stale-read case: a paused leader that wakes up after another was
 * elected and written through never serves the old value. Longer runs:
 * `npm run chaos -- --seconds 600 --nodes 5`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChaosCluster } from './cluster.js';
import { checkHistory } from './linearizability.js';
import { FAULT_KINDS, formatReport, runChaos } from './run.js';
import { Workload } from './workload.js';

describe('chaos: real processes under faults', function () {
  this.timeout(240_000);

  it('every fault kind once on 3 nodes with TLS on, then heal: linearizable, nothing acknowledged lost, replicas equal', async () => {
    const lines: string[] = [];
    const report = await runChaos({ seconds: 0, seed: 20261122, nodes: 3, sequence: true, faultMs: [800, 1_500], log: (l) => lines.push(l) });
    const summary = `${formatReport(report)}\n${lines.join('\n')}`;
    assert.ok(report.ok, summary);
    // TLS and keys were on and enforced (plaintext and keyless clients refused, peers without a certificate refused).
    assert.equal(report.tls, true, summary);
    assert.equal(report.trust.length, 8, summary);
    assert.ok(report.trust.every((t) => t.endsWith('served') === t.includes('TLS with the key')), summary);
    assert.equal(report.rounds, FAULT_KINDS.length, summary);
    assert.deepEqual(Object.keys(report.faults).sort(), [...FAULT_KINDS].sort(), summary);
    // The faults really happened and were survived, not skipped.
    const m = report.messageFaults;
    assert.ok(m.dropped + m.duplicated + m.corrupted > 0, `no message fault was injected\n${summary}`);
    assert.equal(report.snapshotInstalls, 1, `the cut-off follower did not catch up by InstallSnapshot\n${summary}`);
    assert.ok((report.ops['put:ok'] ?? 0) > 50 && (report.ops['get:ok'] ?? 0) > 50, summary);
    assert.equal(report.verdict.verdict, 'ok', summary);
  });

  it('stale read: a paused leader woken after a new one was elected and written through never serves the old value', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-stale-'));
    const cluster = await ChaosCluster.start({ nodes: 3, dir, seed: 7 });
    try {
      const w = new Workload({ targets: cluster.nodes, clients: 0, keys: 1, seed: 7, deadlineMs: 3_000 });
      const old = await cluster.waitForLeader(20_000);
      assert.equal((await w.record(0, 'put', 'k', 'old', old)).outcome, 'ok');

      cluster.pause(old.id);
      const fresh = await cluster.waitForLeader(20_000);
      assert.notEqual(fresh.id, old.id);
      assert.equal((await w.record(0, 'put', 'k', 'new', fresh)).outcome, 'ok');

      // Wake the old leader and read through it at once, many times: it still believes it leads.
      cluster.resume(old.id);
      const reads = await Promise.all(Array.from({ length: 8 }, (_, c) => w.record(c + 1, 'get', 'k', undefined, old)));
      for (let i = 0; i < 20; i++) reads.push(await w.record(1, 'get', 'k', undefined, old));
      const served = reads.filter((r) => r.outcome === 'ok');
      assert.ok(served.length > 0, 'the woken node never served a read');
      assert.deepEqual(
        served.filter((r) => r.result !== 'new'),
        [],
        'a linearizable read returned something other than the newest write',
      );
      const verdict = checkHistory(w.history);
      assert.equal(verdict.verdict, 'ok', JSON.stringify(verdict));
    } finally {
      await cluster.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

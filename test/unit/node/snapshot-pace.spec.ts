/**
 * Automatic snapshots are paced by what the last one cost (Node's
 * AUTO_SNAPSHOT_PACE): after one that took a second or more, the next one
 * due by its entries alone waits three times as long after it, then is
 * taken without another write.
 */
import assert from 'node:assert/strict';

import { GatedIo } from './gated-io.js';
import { until } from '../../harness/until.js';
import { RocksCluster } from './rocks-cluster.js';

const enc = new TextEncoder();

describe('node: automatic snapshots are paced by their cost', function () {
  this.timeout(120_000);
  let c: RocksCluster | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('after an automatic snapshot of 1.5 s, the next one due by its entries waits ~4.5 s after it, then is taken', async () => {
    const gate = new GatedIo();
    c = await RocksCluster.start(1, { snapshotEntries: 50, trailingEntries: 0, gzipBlockBytes: 64 * 1024 }, {}, { snapshotIo: gate.io });
    const node = await c.waitForLeader();
    const value = enc.encode('v'.repeat(2048));
    for (let i = 0; i < 40; i++) await node.propose({ op: 'put', key: enc.encode(`k/${String(i).padStart(5, '0')}`), value });
    await node.snapshotNow(); // the base: the automatic ones are deltas (their changed member gunzipped: held at the gate)
    const base = node.status().snapshotIndex;
    gate.closed = true;
    for (let i = 0; i < 50; i++) await node.propose({ op: 'put', key: enc.encode(`a/${i}`), value: enc.encode('1') });
    await until('an automatic snapshot to start', 10_000, () => (gate.waiting > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1_500));
    gate.open();
    await until('the automatic snapshot to be taken', 10_000, () => (node.status().snapshotIndex > base ? true : undefined));
    const first = node.status().snapshotIndex;
    for (let i = 0; i < 60; i++) await node.propose({ op: 'put', key: enc.encode(`b/${i}`), value: enc.encode('1') });
    await new Promise((r) => setTimeout(r, 1_000));
    assert.equal(node.status().snapshotIndex, first, 'no automatic snapshot within a second of the last one (it took 1.5 s)');
    // Then taken, with no further write to wake it.
    await until('the paced snapshot to be taken', 20_000, () => (node.status().snapshotIndex > first ? true : undefined));
  });
});

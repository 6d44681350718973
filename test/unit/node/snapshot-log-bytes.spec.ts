/**
 * SnapshotPolicy.snapshotLogBytes: a node snapshots and compacts once the
 * entries applied since its last snapshot carry that many bytes, however few
 * they are (the log since the last snapshot is held in memory), and not for
 * fewer bytes when snapshotEntries is far away.
 */
import assert from 'node:assert/strict';

import type { Node } from '../../../src/node/node.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

/** writeValues puts `count` keys of `valueBytes` each through `node`, one after the other. */
async function writeValues(node: Node, prefix: string, count: number, valueBytes: number): Promise<void> {
  for (let i = 0; i < count; i++) await node.propose({ op: 'put', key: enc.encode(`${prefix}/${i}`), value: new Uint8Array(valueBytes).fill(0x61 + (i % 26)) });
}

describe('node: a snapshot once the log since the last one holds snapshotLogBytes', () => {
  let c: RocksCluster | undefined;
  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('takes a snapshot and compacts after 256 KiB of 16 KiB values, with snapshotEntries far away; none for 4 KiB of them', async () => {
    const cluster = await RocksCluster.start(1, { snapshotEntries: 1_000_000, snapshotLogBytes: 256 * 1024, trailingEntries: 2 });
    c = cluster;
    const n1 = await cluster.waitForLeader();
    const snapshots = async (): Promise<number> => ((await cluster.member('n1').snapshots?.store.list()) ?? []).length;
    // Below the bound: 4 values of 1 KiB. Every write is applied when propose returns, and the policy is looked at
    // after each Ready: nothing is due.
    await writeValues(n1, 'small', 4, 1024);
    assert.equal(n1.status().snapshotIndex, 0);
    assert.equal(await snapshots(), 0);
    // Over it: 20 values of 16 KiB (320 KiB) are 24 entries, far below snapshotEntries.
    await writeValues(n1, 'big', 20, 16 * 1024);
    await until('a snapshot and a compacted log', 10_000, async () => ((await snapshots()) >= 1 && n1.status().firstIndex > 1 ? true : undefined));
    const st = n1.status();
    assert.ok(st.snapshotIndex > 0 && st.snapshotIndex < 1_000_000, `snapshot at ${st.snapshotIndex}`);
    // The count starts again from that snapshot: 4 more small values take no second one.
    const taken = await snapshots();
    await writeValues(n1, 'after', 4, 1024);
    assert.equal(await snapshots(), taken);
  });
});

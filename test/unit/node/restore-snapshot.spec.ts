/**
 * Issue 15: the snapshot a node takes right after a restore is written beside
 * the restore's install (the installed records teed into the archive writer),
 * not read back from RocksDB afterwards; it holds exactly the installed state
 * (the kept client sessions merged in key order), verifies, and is what a
 * follower that catches up by snapshot fetches, byte for byte.
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';

import type { SnapshotManager } from '../../../src/node/snapshots.js';
import type { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { RocksCluster } from './rocks-cluster.js';
import { archiveRecords, stateRecords } from './state-records.js';
import { saveArchive } from './save-archive.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();


/** newestRecords: the records of the snapshot manager's newest snapshot (read and verified whole) and its id and digest. */
async function newestRecords(sm: SnapshotManager): Promise<{ id: string; digest: string; index: number; records: string[] }> {
  const h = await sm.openCurrent();
  assert.ok(h, 'the newest snapshot holds the state now');
  try {
    const records = await archiveRecords(h.createReadStream(0));
    await sm.store.verify(h.id);
    return { id: h.id, digest: h.archiveSha256, index: h.meta.index, records };
  } finally {
    h.release();
  }
}

describe('the snapshot after a restore (issue 15)', function () {
  this.timeout(90_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('is written beside the install on every node: no read of the state back, the installed state exactly (sessions included), verified', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    for (let i = 0; i < 300; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${String(i).padStart(4, '0')}`), value: enc.encode(`v${i}-${'x'.repeat(i % 50)}`) });
    const file = await saveArchive(cluster, leader);
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('gone after the restore') });
    const viewsBefore = new Map(cluster.members.map((m) => [m.id, m.storage?.stateViews ?? -1]));

    // With a request id: the restore records its client session, merged into the copy in key order.
    const r = await leader.restore(createReadStream(file), { clientId: 'restore-snapshot-spec', seq: 1 });
    for (const m of cluster.members) {
      const n = cluster.node(m.id);
      await until(`${m.id} to snapshot the restored state`, 30_000, () => (n.status().snapshotIndex >= r.index ? true : undefined));
      const sm = m.snapshots;
      const storage = m.storage;
      assert.ok(sm && storage);
      assert.equal(sm.copies, 1, `${m.id}: the restore's records were copied into a snapshot`);
      // The snapshot that followed the restore opened no view of the state: nothing was read back from RocksDB.
      assert.equal(storage.stateViews, viewsBefore.get(m.id), `${m.id}: no full read of the state after the restore`);
      const snap = await newestRecords(sm);
      assert.equal(snap.index, r.index);
      const state = await stateRecords(storage);
      assert.deepEqual(snap.records, state, `${m.id}: the copy holds exactly the installed state`);
      assert.ok(
        state.some((s) => s.startsWith(Buffer.from('\x00snapcoord/session/', 'latin1').toString('hex'))),
        'the restore\'s client session is in the state (and so in the copy)',
      );
    }
    // Every node's copy holds the same records (meta.json differs: each node stamps its own createdAt).
    const copies = await Promise.all(cluster.members.map(async (m) => (await newestRecords(m.snapshots as SnapshotManager)).records));
    for (const other of copies.slice(1)) assert.deepEqual(other, copies[0]);
  });

  it('is what a follower that catches up by snapshot fetches, byte for byte', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    for (let i = 0; i < 120; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const file = await saveArchive(cluster, leader);
    const lagging = cluster.members.find((m) => m.node !== leader)?.id ?? '';
    await cluster.stop(lagging);
    const r = await leader.restore(createReadStream(file));
    const leaderMember = cluster.members.find((m) => m.node === leader);
    assert.ok(leaderMember?.snapshots);
    await until('the leader to snapshot the restore and compact', 30_000, () => (leader.status().snapshotIndex >= r.index && leader.status().firstIndex > r.index ? true : undefined));
    const copy = await newestRecords(leaderMember.snapshots);
    assert.equal(leaderMember.snapshots.copies, 1);

    await cluster.restart(lagging);
    const f = cluster.node(lagging);
    await until('the lagging follower to install the snapshot', 30_000, () => (f.snapshotStats.installed > 0 && f.status().applied >= r.index ? true : undefined));
    const sm = cluster.member(lagging).snapshots;
    assert.ok(sm);
    const fetched = await newestRecords(sm);
    assert.equal(fetched.digest, copy.digest, 'the follower holds the very archive the leader wrote beside its install');
    assert.deepEqual(fetched.records, copy.records);
    assert.deepEqual(await stateRecords(cluster.member(lagging).storage as RocksStorage), copy.records);
  });
});

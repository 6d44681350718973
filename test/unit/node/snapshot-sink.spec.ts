/**
 * Issue 15 items 1, 2 and 5 on real nodes (RocksDB, gRPC): a follower's fetch
 * writes each archive byte once, straight into its store; a stored archive
 * whose bytes disagree with its recorded hashes is caught by the boot scrub;
 * a snapshot that still holds the state is served, not rebuilt.
 */
import assert from 'node:assert/strict';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { RocksCluster, waitUntil } from './rocks-cluster.js';

const enc = new TextEncoder();

/** flipByte flips one byte in the middle of a file. */
async function flipByte(file: string): Promise<void> {
  const size = (await stat(file)).size;
  const h = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, Math.floor(size / 2));
    b[0] = (b[0] ?? 0) ^ 0xff;
    await h.write(b, 0, 1, Math.floor(size / 2));
  } finally {
    await h.close();
  }
}

describe('snapshot sink on nodes (issue 15)', function () {
  this.timeout(60_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('a follower catching up by snapshot writes each byte of the fetched archive once, into its store (no incoming/ copy)', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 5, chunkBytes: 64 * 1024 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    const follower = cluster.members.find((m) => m.id !== leader.id)?.id ?? '';
    await cluster.stop(follower);
    const value = 'x'.repeat(2000);
    for (let i = 0; i < 150; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`${i}${value}`) });
    await waitUntil('the leader to compact', 10_000, () => (leader.status().firstIndex > 20 ? true : undefined));
    await cluster.restart(follower);
    const f = cluster.node(follower);
    await waitUntil('the follower to install', 20_000, () => (f.snapshotStats.installed > 0 ? true : undefined));
    const sm = cluster.member(follower).snapshots;
    assert.ok(sm);
    const stored = await sm.store.list();
    assert.equal(stored.length, 1, 'the follower holds the one snapshot it fetched (it took none itself)');
    const fetched = stored[0]!;
    assert.equal(f.snapshotStats.bytesReceived, fetched.archiveBytes);
    // Every byte received went through the store's sink exactly once: nothing copied, nothing written twice.
    assert.equal(sm.store.writeStats.bytesWritten, fetched.archiveBytes);
    assert.ok(!(await readdir(join(cluster.dir, follower, 'snapshots'))).includes('incoming'), 'no incoming/ staging copy');
    // The recorded chunk hashes are those of the bytes.
    await sm.store.verify(fetched.id);
    assert.equal(await cluster.member(follower).storage?.stateDigest(), await cluster.members.find((m) => m.node === leader)?.storage?.stateDigest());
  });

  it('the boot scrub quarantines a stored archive whose bytes disagree with its recorded hashes', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 20, trailingEntries: 2, retain: 2 });
    const cluster = c;
    const n1 = await cluster.waitForLeader();
    for (let i = 0; i < 70; i++) await n1.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const sm0 = cluster.member('n1').snapshots;
    await waitUntil('two snapshots', 10_000, async () => ((await sm0?.store.list())?.length === 2 ? true : undefined));
    const [newest, older] = (await sm0?.store.list()) ?? [];
    assert.ok(newest !== undefined && older !== undefined);
    await cluster.stop('n1');
    const storeDir = join(cluster.dir, 'n1', 'snapshots', 'store');
    await flipByte(join(storeDir, older.id, 'archive.tar.gz'));
    await cluster.restart('n1');
    const sm = cluster.member('n1').snapshots;
    await waitUntil('the scrub to quarantine the flipped archive', 10_000, async () => ((await sm?.store.list())?.length === 1 ? true : undefined));
    assert.deepEqual((await sm?.store.list())?.map((s) => s.id), [newest.id]);
    const q = await readdir(join(storeDir, 'quarantine'));
    assert.equal(q.length, 1);
    assert.ok(q[0]?.startsWith(older.id));
    // The node runs on: the newest snapshot verified at boot.
    await cluster.waitForLeader();
    await cluster.node('n1').propose({ op: 'put', key: enc.encode('after'), value: enc.encode('x') });
  });

  it('a snapshot download with no write since the newest snapshot serves that snapshot; a write in between produces a new one', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 100_000, trailingEntries: 5 });
    const cluster = c;
    const n1 = await cluster.waitForLeader();
    for (let i = 0; i < 20; i++) await n1.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const first = await n1.downloadSnapshot(false);
    const firstId = first.id;
    first.release();
    const created = n1.snapshotStats.created;
    const sm = cluster.member('n1').snapshots;
    const writes = sm?.store.writeStats.bytesWritten;
    const again = await n1.downloadSnapshot(false);
    try {
      assert.equal(again.id, firstId, 'the same snapshot is served');
      assert.equal(n1.snapshotStats.created, created, 'no snapshot was taken');
      assert.equal(sm?.store.writeStats.bytesWritten, writes, 'no archive byte was written');
    } finally {
      again.release();
    }
    const stale = await n1.downloadSnapshot(true);
    assert.equal(stale.id, firstId);
    stale.release();

    await n1.propose({ op: 'put', key: enc.encode('k/new'), value: enc.encode('changed') });
    const third = await n1.downloadSnapshot(false);
    try {
      assert.notEqual(third.id, firstId, 'a write in between makes a new snapshot');
      assert.ok(third.meta.index > again.meta.index);
      assert.equal(n1.snapshotStats.created, created + 1);
      assert.equal(third.meta.stateKeys, again.meta.stateKeys + 1);
    } finally {
      third.release();
    }
  });
});

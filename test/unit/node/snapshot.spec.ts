import { isRevisionKey } from '../../../src/fsm/key-revision.js';
import assert from 'node:assert/strict';

import { decodeStateRecords, readArchive } from '../../../src/snapshot/index.js';
import type { SnapshotManager } from '../../../src/node/snapshots.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('node snapshots (Raft §7)', function () {
  this.timeout(60_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('a follower cut off until the leader compacts past it catches up by snapshot, with a state equal to the leader\'s', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 5, chunkBytes: 4096 });
    const leader = await c.waitForLeader();
    const follower = c.members.find((m) => m.id !== leader.id)?.id ?? '';
    await c.stop(follower);
    for (let i = 0; i < 150; i++) {
      await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
    }
    // The leader snapshotted and compacted beyond what the follower has.
    await until('the leader to compact', 10_000, () => (leader.status().firstIndex > 20 ? true : undefined));
    await c.restart(follower);
    const f = c.node(follower);
    await until('the follower to catch up', 20_000, () =>
      f.status().applied >= leader.status().commit && f.snapshotStats.installed > 0 ? true : undefined,
    );
    assert.equal(f.snapshotStats.installed, 1);
    const m = c.member(follower);
    const l = c.members.find((x) => x.node === leader);
    assert.equal(await m.storage?.stateDigest(), await l?.storage?.stateDigest());
    // And it keeps replicating normally afterwards.
    await leader.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('x') });
    await until('the follower to apply', 10_000, () => (f.status().applied >= leader.status().commit ? true : undefined));
    assert.equal(dec.decode((await f.get(enc.encode('after'), true)) ?? new Uint8Array()), 'x');
  });

  it('a follower caught up by installing its leader\'s snapshot records that snapshot\'s member table: its next snapshot is a delta from it, not a read of its whole state', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 5, chunkBytes: 4096 });
    const leader = await c.waitForLeader();
    const follower = c.members.find((m) => m.id !== leader.id)?.id ?? '';
    await c.stop(follower);
    for (let i = 0; i < 150; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
    await until('the leader to compact', 10_000, () => (leader.status().firstIndex > 20 ? true : undefined));
    await c.restart(follower);
    const f = c.node(follower);
    const m = c.member(follower);
    const sm = m.snapshots as SnapshotManager;
    await until('the follower to install the leader\'s snapshot', 20_000, () => (f.snapshotStats.installed > 0 ? true : undefined));
    const installed = sm.newestMeta();
    assert.ok(installed !== null);
    await until('the installed snapshot\'s member table to be recorded', 10_000, async () => {
      const kept = (await sm.store.list()).find((x) => x.archiveSha256 === installed.digest);
      return kept !== undefined && (await sm.store.members(kept)) !== null ? true : undefined;
    });
    await leader.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('x') });
    await until('the follower to apply the write', 10_000, () => (f.status().applied >= leader.status().commit ? true : undefined));
    const deltas = sm.deltas;
    const meta = await f.snapshotNow();
    assert.ok(meta.index > installed.index);
    assert.equal(sm.deltas, deltas + 1, 'its first snapshot after the install is a delta');
    const h = await sm.openStored(meta);
    try {
      const keys: string[] = [];
      await readArchive(h.createReadStream(), async (_m, state) => {
        for await (const batch of decodeStateRecords(state)) for (const r of batch) if (!isRevisionKey(r.key)) keys.push(dec.decode(r.key));
      });
      assert.equal(keys.length, 151);
      assert.ok(keys.includes('after') && keys.includes('k/149'));
    } finally {
      h.release();
    }
  });

  it('writes during a snapshot: the snapshot equals the log replayed to its index', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const leader = await c.waitForLeader();
    const indexOf = new Map<string, number>();
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop && i < 5_000; i++) {
        const key = `w/${String(i).padStart(5, '0')}`;
        const r = await leader.propose({ op: 'put', key: enc.encode(key), value: enc.encode(String(i)) });
        indexOf.set(key, r.index);
      }
    })();
    await until('some writes', 30_000, () => (indexOf.size > 200 ? true : undefined));
    const meta = await leader.snapshotNow();
    stop = true;
    await writer;
    assert.ok(meta.index > 0);
    const expected = [...indexOf].filter(([, idx]) => idx <= meta.index).map(([k]) => k).sort();
    assert.ok(expected.length < indexOf.size, 'writes went on after the snapshot point');
    const snapshots = c.member('n1').snapshots;
    const stored = (await snapshots?.store.list())?.[0];
    assert.equal(stored?.meta.index, meta.index);
    const handle = await snapshots?.store.open(stored?.id ?? '');
    const seen: string[] = [];
    await readArchive(handle?.createReadStream() ?? (undefined as never), async (_m, state) => {
      for await (const batch of decodeStateRecords(state)) for (const r of batch) if (!isRevisionKey(r.key)) seen.push(dec.decode(r.key)); // (not the key revision records)
    });
    handle?.release();
    assert.deepEqual(seen, expected);
  });

  it('a node restarted after compaction recovers its state from its snapshot and log', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 30, trailingEntries: 3 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 100; i++) await leader.propose({ op: 'put', key: enc.encode(`r/${i}`), value: enc.encode(`${i}`) });
    await until('compaction', 10_000, () => (leader.status().firstIndex > 30 ? true : undefined));
    const before = await leader.range({ prefix: enc.encode('r/'), limit: 1000 }, true);
    assert.equal(before.kvs.length, 100);
    await c.stop('n1');
    await c.restart('n1');
    const n = await c.waitForLeader();
    assert.ok(n.status().snapshotIndex > 0);
    const after = await n.range({ prefix: enc.encode('r/'), limit: 1000 });
    assert.deepEqual(after.kvs.map((kv) => [dec.decode(kv.key), dec.decode(kv.value)]), before.kvs.map((kv) => [dec.decode(kv.key), dec.decode(kv.value)]));
    await n.propose({ op: 'put', key: enc.encode('r/new'), value: enc.encode('y') });
  });
});

/**
 * Issue 15 items 1, 2 and 5 on real nodes (RocksDB, gRPC): a follower's fetch
 * writes each archive byte once, straight into its store; a stored archive
 * whose bytes disagree with its recorded hashes is caught by the boot scrub;
 * a snapshot that still holds the state is served, not rebuilt.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import type { Membership } from '../../../src/raft/types.js';
import type { ArchiveSink } from '../../../src/snapshot/archive-sink.js';
import { CHUNK_HASH_BYTES, STORE_ID_PATTERN, SnapshotStoreError, checkedStateRecords, readArchive } from '../../../src/snapshot/index.js';
import { encodeCommand, type KvPut } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { systemClock } from '../../../src/node/clock.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';
import { flipByte } from '../../harness/flip-byte.js';

const enc = new TextEncoder();

describe('snapshot sink on nodes (issue 15)', function () {
  this.timeout(60_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  for (const chunkBytes of [64 * 1024, CHUNK_HASH_BYTES]) {
    const how = chunkBytes === CHUNK_HASH_BYTES ? 'chunks of 1 MiB (the whole digest confirmed by the install)' : 'chunks of 64 KiB (the whole digest hashed by the sink)';
    it(`a follower catching up by snapshot writes each byte of the fetched archive once, into its store (no incoming/ copy), ${how}`, async () => {
      c = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 5, chunkBytes });
      const cluster = c;
      const leader = await cluster.waitForLeader();
      const follower = cluster.members.find((m) => m.id !== leader.id)?.id ?? '';
      await cluster.stop(follower);
      const value = 'x'.repeat(2000);
      for (let i = 0; i < 150; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`${i}${value}`) });
      await until('the leader to compact', 10_000, () => (leader.status().firstIndex > 20 ? true : undefined));
      await cluster.restart(follower);
      const f = cluster.node(follower);
      await until('the follower to install', 20_000, () => (f.snapshotStats.installed > 0 ? true : undefined));
      const sm = cluster.member(follower).snapshots;
      assert.ok(sm);
      const stored = await sm.store.list();
      assert.equal(stored.length, 1, 'the follower holds the one snapshot it fetched (it took none itself)');
      const fetched = stored[0]!;
      assert.equal(f.snapshotStats.bytesReceived, fetched.archiveBytes);
      // Every byte received went through the store's sink exactly once: nothing copied, nothing written twice.
      assert.equal(sm.store.writeStats.bytesWritten, fetched.archiveBytes);
      // 1 MiB chunks: hashed once on arrival (each chunk against its sender's recorded hash), not whole,
      // and the install confirmed the digest; other sizes: the sink hashes the whole as it writes.
      assert.equal(sm.store.writeStats.wholeHashedBytes, chunkBytes === CHUNK_HASH_BYTES ? 0 : fetched.archiveBytes);
      const confirmed = await sm.store.open(fetched.id, { allowUnverified: true });
      assert.equal(confirmed.verified, true, 'the install recorded the whole digest as verified');
      confirmed.release();
      assert.ok(!(await readdir(join(cluster.dir, follower, 'snapshots'))).includes('incoming'), 'no incoming/ staging copy');
      // The recorded chunk hashes are those of the bytes.
      await sm.store.verify(fetched.id);
      // The entries after the snapshot's index are replayed from the log: wait for them before comparing states.
      await until('the follower to catch up', 10_000, () => (f.status().applied >= leader.status().commit ? true : undefined));
      assert.equal(await cluster.member(follower).storage?.stateDigest(), await cluster.members.find((m) => m.node === leader)?.storage?.stateDigest());
    });
  }

  it('the boot scrub quarantines a stored archive whose bytes disagree with its recorded hashes', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 20, trailingEntries: 2, retain: 2 });
    const cluster = c;
    const n1 = await cluster.waitForLeader();
    for (let i = 0; i < 70; i++) await n1.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const sm0 = cluster.member('n1').snapshots;
    await until('two snapshots', 10_000, async () => ((await sm0?.store.list())?.length === 2 ? true : undefined));
    await cluster.stop('n1');
    // Listed once the node is stopped: an automatic snapshot may still have been made (and the oldest pruned) before.
    const storeDir = join(cluster.dir, 'n1', 'snapshots', 'store');
    const [newest, older] = (await readdir(storeDir)).filter((n) => STORE_ID_PATTERN.test(n)).sort().reverse().map((id) => ({ id }));
    assert.ok(newest !== undefined && older !== undefined);
    await flipByte(join(storeDir, older.id, 'archive.tar.gz'));
    await cluster.restart('n1');
    const sm = cluster.member('n1').snapshots;
    await until('the scrub to quarantine the flipped archive', 10_000, async () => ((await sm?.store.list())?.length === 1 ? true : undefined));
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
      assert.equal(third.meta.stateKeys, again.meta.stateKeys + 2, 'the new key and its revision record');
    } finally {
      third.release();
    }
  });

  it('a download after leadership moved away and back (two empty entries applied, no key changed) serves the snapshot taken before', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 100_000, trailingEntries: 5 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    for (let i = 0; i < 20; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const first = await leader.downloadSnapshot(false);
    const { id: firstId, meta: firstMeta } = first;
    first.release();
    const created = leader.snapshotStats.created;
    const other = cluster.members.map((m) => m.id).find((id) => id !== lid) as string;
    await leader.transferLeadership(other);
    await cluster.node(other).transferLeadership(lid);
    await until(`${lid} to apply its new term's empty entry`, 10_000, () => (leader.status().role === 'leader' && leader.status().applied >= leader.status().commit && leader.status().applied >= firstMeta.index + 2 ? true : undefined));
    const again = await leader.downloadSnapshot(false);
    try {
      assert.equal(again.id, firstId, 'the same snapshot is served');
      assert.equal(leader.snapshotStats.created, created, 'no snapshot was taken');
    } finally {
      again.release();
    }
    await leader.propose({ op: 'put', key: enc.encode('k/new'), value: enc.encode('changed') });
    const third = await leader.downloadSnapshot(false);
    try {
      assert.notEqual(third.id, firstId, 'a write after them makes a new snapshot');
      assert.equal(leader.snapshotStats.created, created + 1);
    } finally {
      third.release();
    }
  });

  it('a snapshot after a few writes is made from the previous one (unchanged members copied), and holds exactly the state', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 100_000, trailingEntries: 5 });
    const cluster = c;
    const n1 = await cluster.waitForLeader();
    const value = 'y'.repeat(3000);
    for (let i = 0; i < 900; i++) await n1.propose({ op: 'put', key: enc.encode(`k/${String(i).padStart(4, '0')}`), value: enc.encode(`${i}${value}`) });
    const sm = cluster.member('n1').snapshots;
    assert.ok(sm);
    await n1.snapshotNow();
    const full = sm.deltas;
    // Puts (new and existing keys), a delete, then a snapshot from the previous one.
    await n1.propose({ op: 'put', key: enc.encode('k/0450'), value: enc.encode('changed') });
    await n1.propose({ op: 'put', key: enc.encode('a-first'), value: enc.encode('new') });
    await n1.propose({ op: 'put', key: enc.encode('z-last'), value: enc.encode('new') });
    await n1.propose({ op: 'delete', key: enc.encode('k/0003') });
    const meta = await n1.snapshotNow();
    assert.equal(sm.deltas, full + 1, 'made from the previous snapshot');
    const stored = (await sm.store.list()).find((s) => s.meta.index === meta.index);
    assert.ok(stored);
    // Its records are exactly the state's (the full read of the same view).
    const fromArchive: string[] = [];
    await readArchive(createReadStream(stored.path), async (m, state) => {
      for await (const batch of checkedStateRecords(state, m)) for (const r of batch) fromArchive.push(`${Buffer.from(r.key).toString('hex')}=${createHash('sha256').update(r.value).digest('hex')}`);
    });
    const fromStorage: string[] = [];
    const reader = await (cluster.member('n1').storage as RocksStorage).snapshotState();
    for await (const batch of reader.batches()) for (const r of batch) fromStorage.push(`${Buffer.from(r.key).toString('hex')}=${createHash('sha256').update(r.value).digest('hex')}`);
    assert.equal(fromArchive.length, stored.meta.stateKeys);
    assert.deepEqual(fromArchive, fromStorage);
    await sm.store.verify(stored.id);
  });

  it('a fetched archive (whole digest only claimed) that is not the one named: its install makes nothing live and removes it; the genuine one installs and is recorded verified', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-claimed-'));
    const membership: Membership = { voters: ['l'], learners: [], addresses: { l: '127.0.0.1:0' } };
    const policy = { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 };
    const opened: { close(): Promise<void> }[] = [];
    try {
      const putAll = async (st: RocksStorage, n: number, index: number): Promise<void> => {
        const ops: KvPut[] = Array.from({ length: n }, (_, i) => ({ op: 'put', key: enc.encode(`k/${i}`), value: createHash('sha256').update(`v${i}`).digest() }));
        const [r] = await (await StateMachine.open(st)).apply([{ entry: { index, term: 1, type: 'normal', data: encodeCommand({ op: 'batch', ops }) } }]);
        assert.ok(r?.ok);
      };
      const leaderStorage = await RocksStorage.open(join(dir, 'l-data'));
      opened.push(leaderStorage);
      await putAll(leaderStorage, 3000, 1);
      const leader = await SnapshotManager.open(join(dir, 'l-snap'), leaderStorage, policy, silentLogger, 'test', systemClock);
      opened.unshift(leader);
      const s = await leader.create(() => 1, () => membership);
      const bytes = await readFile(s.path);
      const forged = Buffer.from(bytes);
      forged[4]! ^= 0xff; // the gzip header's MTIME: still a valid archive of the same state, another SHA-256
      const send = (data: Buffer) => async (sink: ArchiveSink): Promise<void> => {
        for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
          const chunk = data.subarray(at, at + CHUNK_HASH_BYTES);
          await sink.writeChunk(chunk, createHash('sha256').update(chunk).digest());
        }
      };

      const fStorage = await RocksStorage.open(join(dir, 'f-data'));
      opened.push(fStorage);
      const f = await SnapshotManager.open(join(dir, 'f-snap'), fStorage, policy, silentLogger, 'test', systemClock);
      opened.unshift(f);
      const before = await fStorage.stateDigest();
      const target = { digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: s.meta.index, term: s.meta.term };
      const bad = await f.store.receiveArchive(target, send(forged), { maxBytes: 1e9, deferWholeDigest: true });
      await assert.rejects(f.install(bad), (err: unknown) => err instanceof SnapshotStoreError && err.code === 'corrupt' && /claimed/.test(err.message));
      assert.equal(fStorage.appliedIndex(), 0, 'nothing was made live');
      assert.equal(await fStorage.stateDigest(), before);
      assert.deepEqual(await f.store.list(), [], 'the refused archive was removed');
      assert.equal(f.newestMeta(), null);

      const good = await f.store.receiveArchive(target, send(bytes), { maxBytes: 1e9, deferWholeDigest: true });
      assert.equal(await f.store.members(good), null, 'a fetched archive comes without a member table');
      const hashed0 = { ...f.installHashedBytes };
      await f.install(good);
      // Its member table was found in the install's own read (before: a second, whole read of the archive after
      // it), the leader's own: this node's next snapshot is a delta from it.
      const table = await f.store.members(good);
      assert.ok(table !== null && table.state.length >= 1, 'the install recorded the member table');
      assert.deepEqual(table, await leader.store.members(s), 'the leader\'s own');
      assert.equal(fStorage.appliedIndex(), s.meta.index);
      // Hashed once in the install's read: the whole archive (which gates it), not state.bin a second time.
      assert.deepEqual({ archive: f.installHashedBytes.archive - hashed0.archive, state: f.installHashedBytes.state - hashed0.state }, { archive: s.archiveBytes, state: 0 });
      assert.equal(await fStorage.stateDigest(), await leaderStorage.stateDigest());
      assert.equal(f.newestMeta()?.digest, s.archiveSha256);
      const h = await f.store.open(good.id, { allowUnverified: true });
      assert.equal(h.verified, true);
      h.release();

      // An archive stored verified (its hashes recorded when this node wrote or confirmed it) is read without
      // hashing it whole: its state.bin is hashed then, the one SHA-256 check of those bytes in that read.
      const f2Storage = await RocksStorage.open(join(dir, 'f2-data'));
      opened.push(f2Storage);
      const f2 = await SnapshotManager.open(join(dir, 'f2-snap'), f2Storage, policy, silentLogger, 'test', systemClock);
      opened.unshift(f2);
      const verified = await f2.store.receiveArchive(target, send(bytes), { maxBytes: 1e9 });
      await f2.install(verified);
      assert.equal(await f2Storage.stateDigest(), await leaderStorage.stateDigest());
      assert.deepEqual(f2.installHashedBytes, { archive: 0, state: s.meta.stateBytes });
    } finally {
      for (const o of opened) await o.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Poisoned restores (issue 14, item 2): an archive whose hashes are all right
 * but whose state.bin is not a valid state is refused before anything is
 * proposed (gRPC RestoreSnapshot: INVALID_ARGUMENT with a clear message), the
 * declared size is checked against a cap and the free disk space, and a
 * restore entry that still fails to apply is a recorded no-op, never a crash
 * loop.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';

import { SnapshotServiceClient } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { NodeError } from '../../../src/node/errors.js';
import { encodeRestoreCommand } from '../../../src/fsm/restore-command.js';
import { SnapshotStoreError } from '../../../src/snapshot/errors.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { poisonedArchives, rawState, tarGz, goodEntries } from '../snapshot/helpers.js';
import { RocksCluster, dumpKeys as dump, uploadArchive as upload } from './rocks-cluster.js';
import { until } from '../../harness/until.js';
import { flipByte } from '../../harness/flip-byte.js';

const enc = new TextEncoder();



describe('poisoned restores', function () {
  this.timeout(60_000);
  let c: RocksCluster | undefined;
  const clients: SnapshotServiceClient[] = [];
  afterEach(async () => {
    for (const x of clients.splice(0)) x.close();
    await c?.close();
    c = undefined;
  });

  it('gRPC RestoreSnapshot refuses each poisoned archive with INVALID_ARGUMENT and a clear message; nothing is proposed, writes go on', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const follower = c.members.find((m) => m.node !== leader);
    assert.ok(follower !== undefined);
    // Through a follower: it forwards the upload to the leader, which refuses it.
    const client = new SnapshotServiceClient(follower.address, grpc.credentials.createInsecure());
    clients.push(client);
    for (const p of await poisonedArchives()) {
      const before = await dump(leader);
      const lastIndex = leader.status().lastIndex;
      await assert.rejects(upload(client, p.archive), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT, `${p.name}: ${e.message}`);
        assert.match(e.details, /refused, nothing changed/, p.name);
        assert.match(e.details, p.message, p.name);
        return true;
      });
      assert.equal(leader.status().lastIndex, lastIndex, `${p.name}: nothing proposed`);
      assert.deepEqual(await dump(leader), before, `${p.name}: state unchanged`);
      for (const m of c.members) {
        assert.deepEqual(await m.snapshots?.uploads.list(), [], `${p.name}: no upload kept on ${m.id}`);
        assert.equal(c.node(m.id).failed(), null, `${p.name}: ${m.id} is up`);
      }
      await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode(p.name) });
    }
  });

  it('a declared state beyond the cap is refused (invalid), beyond the free disk space too (diskFull), before its state is read', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 1_000_000, restoreStateBytesMax: 1_000 });
    const leader = await c.waitForLeader();
    const stateOf = (n: number): Buffer => rawState(Array.from({ length: n }, (_, i) => ({ key: `k/${String(i).padStart(3, '0')}`, value: 'a fine value' })));
    const big = await tarGz(goodEntries(stateOf(100), 100).entries);
    await assert.rejects(leader.restore(Readable.from([big])), (e: unknown) => {
      assert.ok(e instanceof NodeError && e.code === 'invalid', String(e));
      assert.match(e.message, /declares a state of \d+ bytes .*more than the restore limit of 1000 bytes/);
      return true;
    });
    const archive = await tarGz(goodEntries(stateOf(10), 10).entries);
    const sm = c.member('n1').snapshots;
    assert.ok(sm !== null);
    // Free space: a reserve no disk has.
    await assert.rejects(sm.importUpload(Readable.from([archive]), 1_000, 2 ** 52), (e: unknown) => {
      assert.ok(e instanceof NodeError && e.code === 'diskFull', String(e));
      assert.match(e.message, /restoring it needs about \d+ bytes free/);
      return true;
    });
    assert.deepEqual(await sm.uploads.list(), []);
  });

  it('a committed restore entry whose archive fails to apply is a recorded no-op on the node, not a crash loop', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 1_000_000 });
    let leader = await c.waitForLeader();
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const before = await dump(leader);
    await c.stop('n1');

    // What an older version let through: a poisoned upload kept and its restore entry in the log.
    const dataDir = join(c.dir, 'n1');
    const poisoned = (await poisonedArchives()).find((p) => p.name === 'keys out of order');
    assert.ok(poisoned !== undefined);
    const uploads = await SnapshotStore.open(join(dataDir, 'snapshots', 'uploads'), { retain: 2 });
    const stored = await uploads.importArchive(Readable.from([poisoned.archive]), { maxBytes: 1e9 });
    const storage = await RocksStorage.open(dataDir);
    const { hardState } = await storage.load();
    const index = storage.lastIndex() + 1;
    const data = encodeRestoreCommand({ digest: stored.archiveSha256, sizeBytes: stored.archiveBytes, index: stored.meta.index, term: stored.meta.term });
    await storage.save({ entries: [{ index, term: hardState.term, type: 'normal', data }] });
    await storage.close();

    await c.restart('n1');
    leader = c.node('n1');
    await until('the restore entry to be applied', 20_000, () => (leader.status().applied >= index || leader.failed() !== null ? true : undefined));
    assert.equal(leader.failed(), null, 'the node did not fail');
    const failure = leader.status().restoreFailure;
    assert.equal(failure?.index, index);
    assert.match(failure?.error ?? '', /skipped, the state is unchanged: .*strictly increasing/);
    assert.equal(leader.snapshotStats.restoresFailed, 1);
    assert.deepEqual(await dump(leader), before, 'the state is the one before the entry');
    await leader.propose({ op: 'put', key: enc.encode('k/next'), value: enc.encode('x') });

    // A restart replays nothing that fails: the node comes up and takes writes.
    await c.stop('n1');
    await c.restart('n1');
    leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('k/again'), value: enc.encode('y') });
    assert.equal(leader.failed(), null);
    assert.deepEqual(await dump(leader), [...before, 'k/again=y', 'k/next=x'].sort());
  });

  it('a kept upload whose bytes changed on disk since it was stored is caught by its chunk hashes at install (corrupt: this copy, not the content) and removed, to be fetched again', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 1_000_000 });
    await c.waitForLeader();
    const sm = c.member('n1').snapshots;
    assert.ok(sm);
    const recs = Array.from({ length: 2000 }, (_, i) => ({ key: `k/r${String(i).padStart(5, '0')}`, value: `value ${i} ${'x'.repeat(200)}` }));
    const archive = await tarGz(goodEntries(rawState(recs), recs.length).entries);
    const stored = await sm.importUpload(Readable.from([archive]), 1);
    await new Promise((resolve) => setTimeout(resolve, 20)); // the import's pin lapses
    // One byte changed on this node's disk after the upload was checked and kept.
    await flipByte(stored.path, 0x10);
    let installed = 0;
    const err = await sm
      .installUpload(stored, async (records) => {
        for await (const batch of records) installed += batch.length;
      })
      .then(
        () => null,
        (e: unknown) => e,
      );
    // Before: the gunzip (or the state hash) refused it as content (ArchiveError), which a node records as a no-op alone.
    assert.ok(err instanceof SnapshotStoreError, `a store error, not a content error: ${String(err)}`);
    assert.equal(err.code, 'corrupt');
    assert.match(err.message, /chunk 0 of .* does not match its hash/);
    assert.ok(installed < recs.length, 'the source failed before its end');
    assert.equal(await sm.findUpload(stored.archiveSha256), null, 'the changed copy is removed (the next attempt fetches it from a holder)');
  });
});

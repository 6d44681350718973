/**
 * A follower's install reads its stored archive on a worker thread
 * (src/snapshot/install-read.ts, issue 15: install >= 0.6x of its fetch):
 * the file read, the whole SHA-256 of a fetched archive, gunzip, the
 * archive's rules and every record's checks run there; the main thread only
 * cuts the worker's packed batches into views and puts them into the state.
 * Counted: every state byte and record is handed over by the worker, and the
 * main thread gunzips nothing of the archive. The archive's refusals are the
 * main thread's own (same classes, codes and messages; the state unchanged,
 * the snapshot removed), and the worker stays at most
 * INSTALL_READ_BATCHES_AHEAD batches ahead of the install.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import { ArchiveError, StateFormatError } from '../../../src/snapshot/errors.js';
import { writeArchiveFromRecords, type SnapshotStore } from '../../../src/snapshot/index.js';
import { INSTALL_READ_BATCHES_AHEAD, INSTALL_WORKER_RECORD_BYTES_MIN, INSTALL_WORKER_STATE_BYTES_MIN, installReadHome, startInstallRead } from '../../../src/snapshot/install-read.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import type { ArchiveSink } from '../../../src/snapshot/archive-sink.js';
import { MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { goodEntries, rawState, tarGz } from '../snapshot/helpers.js';

const enc = new TextEncoder();
const MEMBERSHIP = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' } };

/** countingIo: the real file system's IO, counting the gunzips made through it (on the thread that calls it). */
function countingIo(): SnapshotIo & { gunzips: number } {
  const io = Object.create(nodeSnapshotIo) as SnapshotIo & { gunzips: number };
  io.gunzips = 0;
  io.createGunzip = (o) => {
    io.gunzips++;
    return nodeSnapshotIo.createGunzip(o);
  };
  io.createInflateRaw = (o) => {
    io.gunzips++;
    return nodeSnapshotIo.createInflateRaw(o);
  };
  io.gunzip = (b, o) => {
    io.gunzips++;
    return nodeSnapshotIo.gunzip(b, o);
  };
  return io;
}

/** writeArchive: an archive as `snapshot save` and the leader write it (gzip members of whole records), of `keys` records of `valueBytes`. */
async function writeArchive(dir: string, keys: number, valueBytes: number): Promise<{ bytes: Buffer; stateBytes: number }> {
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += 1000) {
      const b: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + 1000); j++) b.push({ key: Buffer.from(`k/${String(j).padStart(8, '0')}`), value: Buffer.alloc(valueBytes, j % 251) });
      yield b;
    }
  }
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      cb();
    },
  });
  const meta = { id: 't', index: 42, term: 2, membership: MEMBERSHIP, createdAt: new Date().toISOString(), snapcoordVersion: 'test' };
  const w = await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, `spool-${keys}`) }, out);
  await new Promise<void>((resolve) => out.end(resolve));
  return { bytes: Buffer.concat(parts), stateBytes: w.meta.stateBytes };
}

/** receive stores `bytes` as a follower's fetch does (1 MiB chunks, each with its hash; the whole digest claimed: `claimed`). */
async function receive(store: SnapshotStore, bytes: Buffer, claimed: string, index = 42, term = 2): Promise<Awaited<ReturnType<SnapshotStore['receiveArchive']>>> {
  const CHUNK = 1024 * 1024;
  return store.receiveArchive(
    { digest: claimed, sizeBytes: bytes.length, index, term },
    async (sink: ArchiveSink) => {
      for (let at = 0; at < bytes.length; at += CHUNK) {
        const chunk = bytes.subarray(at, at + CHUNK);
        await sink.writeChunk(chunk, createHash('sha256').update(chunk).digest());
      }
    },
    { maxBytes: 1e9, deferWholeDigest: true },
  );
}

describe('a follower install reads its archive on a worker thread (issue 15)', function () {
  this.timeout(60_000);
  let dir: string;
  const opened: { close(): Promise<void> }[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-install-worker-'));
  });
  afterEach(async () => {
    for (const o of opened.splice(0)) await o.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  /** follower: a RocksStorage at applied index 3 and a SnapshotManager over it with `io`. */
  async function follower(name: string, io: SnapshotIo): Promise<{ storage: RocksStorage; sm: SnapshotManager }> {
    const storage = await RocksStorage.open(join(dir, `${name}-data`));
    opened.push(storage);
    await storage.installState([[{ key: enc.encode('own/a'), value: enc.encode('1') }]], { appliedIndex: 3, membership: MEMBERSHIP });
    const sm = await SnapshotManager.open(join(dir, `${name}-snap`), storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 }, silentLogger, 'test', systemClock, io);
    opened.unshift(sm);
    return { storage, sm };
  }

  it('every state byte and record of a fetched archive is read, hashed, gunzipped and checked on the worker; the main thread gunzips nothing', async () => {
    const { bytes, stateBytes } = await writeArchive(dir, 20_000, 512);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const results: Record<string, string> = {};
    for (const on of ['here', 'worker'] as const) {
      const io = countingIo();
      const { storage, sm } = await follower(on, io);
      sm.installReadOn = on;
      const stored = await receive(sm.store, bytes, digest);
      assert.equal(await sm.store.members(stored), null, 'fetched: no member table yet');
      io.gunzips = 0; // the install's own, from here
      await sm.install(stored);
      assert.equal(storage.appliedIndex(), 42);
      results[on] = await storage.stateDigest();
      if (on === 'here') {
        assert.ok(io.gunzips > 0, 'the read on the main thread gunzips through its io (the spy sees it)');
        assert.deepEqual(sm.installReadOnWorker, { archive: 0, state: 0, keys: 0 });
      } else {
        assert.equal(io.gunzips, 0, 'no gunzip on the main thread');
        assert.deepEqual(sm.installReadOnWorker, { archive: bytes.length, state: stateBytes, keys: 20_000 });
      }
      // Each byte hashed once in the install's read, as before: the whole archive, not state.bin again.
      assert.deepEqual(sm.installHashedBytes, { archive: bytes.length, state: 0 });
      // The member table was found in the same read: this node's next snapshot is a delta from it.
      const table = await sm.store.members(stored);
      assert.ok(table !== null && table.state.length > 1, 'the member table was recorded');
      // Recorded verified: a later open does not hash it again.
      const h = await sm.store.open(stored.id, { allowUnverified: true });
      assert.equal(h.verified, true);
      h.release();
      assert.equal(sm.newestMeta()?.digest, digest);
    }
    assert.equal(results['worker'], results['here'], 'the same state either way');
  });

  it('a fetched archive that is not the one named (self-consistent chunks, another digest): refused after the whole read, nothing made live, removed', async () => {
    const { bytes } = await writeArchive(dir, 3000, 256);
    const forged = Buffer.from(bytes);
    forged[4]! ^= 0xff; // the gzip header's MTIME: still a valid archive of the same state, another SHA-256
    const { storage, sm } = await follower('f', nodeSnapshotIo);
    sm.installReadOn = 'worker';
    const before = await storage.stateDigest();
    const bad = await receive(sm.store, forged, createHash('sha256').update(bytes).digest('hex'));
    await assert.rejects(sm.install(bad), (err: unknown) => err instanceof Error && /not the .* its sender claimed/.test(err.message));
    assert.equal(storage.appliedIndex(), 3);
    assert.equal(await storage.stateDigest(), before);
    assert.deepEqual(await sm.store.list(), []);
  });

  for (const [name, recs, keys, code, message] of [
    ['keys out of order', [{ key: 'k/b', value: 'v' }, { key: 'k/a', value: 'v' }], 2, 'key-order', /"k\/a" comes after "k\/b"/],
    ['a key twice', [{ key: 'k/a', value: 'v' }, { key: 'k/a', value: 'w' }], 2, 'key-order', /"k\/a" appears twice/],
    ['a record count that lies', [{ key: 'k/a', value: 'v' }, { key: 'k/b', value: 'v' }], 1, 'count-mismatch', /more than the 1 records meta.json declares/],
  ] as const) {
    it(`refuses ${name} with the main thread's error (StateFormatError ${code}): the state unchanged, the snapshot removed`, async () => {
      const { storage, sm } = await follower('f', nodeSnapshotIo);
      sm.installReadOn = 'worker';
      const before = await storage.stateDigest();
      const stored = await sm.store.importArchive(Readable.from([await tarGz(goodEntries(rawState(recs), keys).entries)]), { maxBytes: 1e8 });
      await assert.rejects(sm.install(stored), (e: unknown) => e instanceof StateFormatError && e.code === code && message.test(e.message));
      assert.equal(await storage.stateDigest(), before);
      assert.equal(storage.appliedIndex(), 3);
      assert.deepEqual(await sm.store.list(), []);
      assert.deepEqual(sm.installReadOnWorker, { archive: 0, state: 0, keys: 0 });
    });
  }

  it('a fetched archive damaged inside a state member: refused for its contents as the main thread\'s read refuses it, nothing made live, removed', async () => {
    const { bytes } = await writeArchive(dir, 3000, 256);
    const damaged = Buffer.from(bytes);
    damaged[Math.floor(damaged.length / 2)]! ^= 0x5a;
    const digest = createHash('sha256').update(damaged).digest('hex'); // its sender's claim agrees: only the contents are wrong
    for (const on of ['here', 'worker'] as const) {
      const { storage, sm } = await follower(on, nodeSnapshotIo);
      sm.installReadOn = on;
      const stored = await receive(sm.store, damaged, digest);
      const err = await sm.install(stored).then(
        () => assert.fail('installed'),
        (e: unknown) => e as Error,
      );
      // Which check speaks first (the member's CRC-32, or a record's length in its garbage) is a race between the
      // gunzip's end of member and the decode, on either thread: both are the archive's contents refused.
      assert.ok(err instanceof ArchiveError || err instanceof StateFormatError, `${on}: ${String(err)}`);
      assert.equal(storage.appliedIndex(), 3);
      assert.deepEqual(await sm.store.list(), []);
    }
  });

  it('the worker stays at most INSTALL_READ_BATCHES_AHEAD batches ahead of a slow install, and hands over every record in order', async () => {
    const { bytes, stateBytes } = await writeArchive(dir, 120_000, 16);
    const path = join(dir, 'archive.tar.gz');
    await writeFile(path, bytes);
    const r = startInstallRead({ path, hashWhole: true, skipStateDigest: true, recordMembers: false });
    try {
      const meta = await r.meta;
      assert.equal(meta.stateKeys, 120_000);
      let n = 0;
      let batches = 0;
      let prev = '';
      for await (const batch of r.records()) {
        batches++;
        for (const rec of batch) {
          const k = rec.key.toString();
          assert.ok(k > prev, 'in order');
          prev = k;
          n++;
        }
        await new Promise((resolve) => setTimeout(resolve, 20)); // a slow install: the worker waits for credits
      }
      assert.equal(n, 120_000);
      assert.ok(batches > INSTALL_READ_BATCHES_AHEAD * 2, `more batches (${batches}) than the bound, so it mattered`);
      assert.ok(r.batchesAheadMax <= INSTALL_READ_BATCHES_AHEAD, `at most ${INSTALL_READ_BATCHES_AHEAD} ahead, saw ${r.batchesAheadMax}`);
      const end = await r.end;
      assert.equal(end.sha256, createHash('sha256').update(await readFile(path)).digest('hex'));
      assert.equal(end.stateBytes, stateBytes);
    } finally {
      await r.close();
    }
  });

  it('a worker read by default only for a large state of large records on the real file system', () => {
    const big = INSTALL_WORKER_STATE_BYTES_MIN;
    const keysAt = (recordBytes: number): number => Math.floor(big / recordBytes);
    assert.equal(installReadHome(nodeSnapshotIo, big, keysAt(INSTALL_WORKER_RECORD_BYTES_MIN)), 'worker');
    assert.equal(installReadHome(nodeSnapshotIo, big, keysAt(INSTALL_WORKER_RECORD_BYTES_MIN) + 1), 'here', 'smaller records');
    assert.equal(installReadHome(nodeSnapshotIo, big - 1, 1), 'here', 'a smaller state');
    assert.equal(installReadHome(countingIo(), big, 1), 'here', 'another io (the simulator\'s): here');
  });

  it('MemoryStorage too (the install only sees records)', async () => {
    const storage = await MemoryStorage.open();
    opened.push(storage);
    const sm = await SnapshotManager.open(join(dir, 'm-snap'), storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 }, silentLogger, 'test', systemClock);
    opened.unshift(sm);
    sm.installReadOn = 'worker';
    const stored = await sm.store.importArchive(Readable.from([await tarGz(goodEntries(rawState([{ key: 'k/a', value: 'v' }, { key: 'k/b', value: 'w' }]), 2).entries)]), { maxBytes: 1e8 });
    await sm.install(stored);
    assert.equal(Buffer.from((await storage.get(enc.encode('k/b'))) ?? []).toString(), 'w');
    assert.equal(sm.installReadOnWorker.keys, 2);
  });
});

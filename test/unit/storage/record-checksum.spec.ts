// Every record RocksStorage keeps ends with a CRC-32 of its key and value (record-checksum.ts): the `rocksdb`
// binding's iterators never verify RocksDB's block checksums, so a range read, a full snapshot and the log's load
// at boot returned a byte damaged on disk as data. These tests damage real SST files.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Entry } from '../../../src/raft/types.js';
import { openRecord, RecordSealer, sealRecord, RECORD_TRAILER_BYTES } from '../../../src/storage/record-checksum.js';
import { RocksDb } from '../../../src/storage/rocks.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import { exportStateImage, readStateImageChunks, type StateImage, type StateImageSource } from '../../../src/storage/state-image.js';
import { FORMAT_VERSION, type KeyValue } from '../../../src/storage/types.js';
import { rejectsWith } from './helpers.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };

/** records: `count` records of random (incompressible) 1 KiB values, so their bytes are found as they are in an SST. */
function records(count: number): KeyValue[] {
  return Array.from({ length: count }, (_, i) => ({ key: Buffer.from(`k/${String(i).padStart(6, '0')}`), value: randomBytes(1024) }));
}

/** sstsOf: the SST files of a RocksDB dir, after the dir was closed and opened once more (the reopen flushes the WAL). */
async function sstsOf(dir: string): Promise<string[]> {
  const db = await RocksDb.open(dir, { createIfMissing: false });
  await db.close();
  return (await readdir(dir)).filter((f) => f.endsWith('.sst')).map((f) => join(dir, f));
}

/** flipIn flips one byte in the middle of `needle` where it appears in one of `files`; false when it appears in none. */
async function flipIn(files: readonly string[], needle: Uint8Array): Promise<boolean> {
  for (const f of files) {
    const at = (await readFile(f)).indexOf(needle);
    if (at < 0) continue;
    const fh = await open(f, 'r+');
    try {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at + (needle.length >> 1));
      b[0] = (b[0] as number) ^ 0x5a;
      await fh.write(b, 0, 1, at + (needle.length >> 1));
    } finally {
      await fh.close();
    }
    return true;
  }
  return false;
}

/** statePathOf: the current state generation's dir of a closed data dir (its STATE pointer). */
async function statePathOf(dataDir: string): Promise<string> {
  const { generation } = JSON.parse(await readFile(join(dataDir, 'STATE'), 'utf8')) as { generation: number };
  return join(dataDir, `state-${generation}`);
}

/**
 * toLegacy rewrites a closed data dir as a build before the checksums left it: every log entry and state record
 * without its trailer, no 'mrecordFormat' key.
 */
async function toLegacy(dataDir: string): Promise<void> {
  for (const [dir, prefix] of [
    [join(dataDir, 'log'), 0x6c],
    [await statePathOf(dataDir), 0x6b],
  ] as const) {
    const db = await RocksDb.open(dir, { createIfMissing: false });
    try {
      const ops: { type: 'put' | 'del'; key: Buffer; value?: Buffer }[] = [];
      for await (const batch of db.iterate({ gte: Buffer.of(prefix), lt: Buffer.of(prefix + 1) })) {
        for (const { key, value } of batch) ops.push({ type: 'put', key, value: value.subarray(0, value.length - RECORD_TRAILER_BYTES) });
      }
      const identity = await db.get(Buffer.from('midentity'));
      if (identity !== undefined) ops.push({ type: 'put', key: Buffer.from('midentity'), value: Buffer.from(JSON.stringify({ ...JSON.parse(identity.toString()), formatVersion: 1 })) });
      await db.write([...ops.map((o) => ({ type: 'put' as const, key: o.key, value: o.value as Buffer })), { type: 'del', key: Buffer.from('mrecordFormat') }], { sync: true });
    } finally {
      await db.close();
    }
  }
}

function entry(index: number, data: Uint8Array): Entry {
  return { index, term: 1, type: 'normal', data };
}

describe('record checksums', function () {
  this.timeout(60_000);
  let dir: string;
  /** store: the RocksStorage a test has open (closed after it). */
  let store: RocksStorage | null = null;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-crc-'));
  });
  afterEach(async () => {
    await store?.close();
    store = null;
    await rm(dir, { recursive: true, force: true });
  });

  describe('sealRecord / RecordSealer / openRecord', () => {
    const key = Buffer.from('kname');
    it('open gives back the sealed value; any changed byte of key, value or trailer, or a short record, is `corrupt`', () => {
      for (const value of [Buffer.from('value'), new TextEncoder().encode(''), randomBytes(3000)]) {
        const sealed = sealRecord(key, value);
        assert.deepEqual(Buffer.from(new RecordSealer().seal(key, value)), sealed);
        assert.deepEqual(openRecord(key, sealed, 'p', () => 'r'), Buffer.from(value));
        for (let i = 0; i < sealed.length; i++) {
          const bad = Buffer.from(sealed);
          bad[i] = (bad[i] as number) ^ 1;
          assert.throws(() => openRecord(key, bad, 'p', () => 'r'), (err: unknown) => err instanceof StorageError && err.code === 'corrupt');
        }
        assert.throws(() => openRecord(Buffer.from('kother'), sealed, 'p', () => 'the record'), /p: the record fails its checksum/);
      }
      assert.throws(() => openRecord(key, Buffer.alloc(3), 'p', () => 'r'), /fails its checksum/);
    });

    it('a RecordSealer reuses its buffer and still seals values larger than it', () => {
      const sealer = new RecordSealer();
      for (const n of [10, 5000, 2 * 1024 * 1024, 7]) {
        const value = randomBytes(n);
        assert.deepEqual(openRecord(key, Buffer.from(sealer.seal(key, value)), 'p', () => 'r'), value);
      }
    });
  });

  describe('RocksStorage over damaged SST files', () => {

    it('a state record damaged on disk is refused by range and by a snapshot (`corrupt`), never returned', async () => {
      const data = join(dir, 'data');
      store = await RocksStorage.open(data);
      const kvs = records(2_000);
      await store.installState([kvs], { appliedIndex: 3, membership });
      await store.close();
      const victim = kvs[1234] as KeyValue;
      assert.ok(await flipIn(await sstsOf(await statePathOf(data)), victim.value), 'the value is in an SST');
      store = await RocksStorage.open(data);
      await rejectsWith(store.range({ limit: 5_000 }), 'corrupt', /the record of key "k\/001234" fails its checksum/);
      const reader = await store.snapshotState();
      await rejectsWith(
        (async () => {
          for await (const batch of reader.batches()) for (const r of batch) assert.ok(!Buffer.from(r.key).equals(victim.key) || Buffer.from(r.value).equals(victim.value), 'a damaged value was returned');
        })(),
        'corrupt',
        /fails its checksum/,
      );
      // The records beside it read as written.
      const near = await store.range({ start: (kvs[1300] as KeyValue).key, limit: 3 });
      assert.deepEqual(near.kvs.map((r) => Buffer.from(r.value)), kvs.slice(1300, 1303).map((r) => r.value));
    });

    it('a state record whose key lost its record prefix (its first byte damaged) is refused by a snapshot, not dropped from it', async () => {
      const data = join(dir, 'data');
      store = await RocksStorage.open(data);
      const kvs = records(200);
      await store.installState([kvs], { appliedIndex: 3, membership });
      await store.close();
      store = null;
      // What a flipped first key byte leaves (0x6b 'k' ^ 0x07 = 0x6c 'l'; RocksDB keeps a block's keys prefix-compressed,
      // so one byte at a restart point is the first byte of up to 16 keys): the record sits under a key no state record has.
      const db = await RocksDb.open(await statePathOf(data), { createIfMissing: false });
      try {
        const stored = Buffer.concat([Buffer.from('k'), (kvs[100] as KeyValue).key]);
        const [value] = await db.getMany([stored]);
        assert.ok(value !== undefined);
        await db.write([{ type: 'del', key: stored }, { type: 'put', key: Buffer.concat([Buffer.of(0x6c), stored.subarray(1)]), value }], { sync: true });
      } finally {
        await db.close();
      }
      store = await RocksStorage.open(data);
      const reader = await store.snapshotState();
      let seen = 0;
      await rejectsWith(
        (async () => {
          for await (const batch of reader.batches()) seen += batch.length;
        })(),
        'corrupt',
        /key "l.*" that no state record or metadata has/,
      );
      assert.ok(seen < 199, `the snapshot went on past it (${seen} records)`);
    });

    it('a log entry damaged on disk is refused by load (`corrupt`), never returned', async () => {
      const data = join(dir, 'data');
      store = await RocksStorage.open(data);
      const payloads = Array.from({ length: 200 }, () => randomBytes(2048));
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: payloads.map((p, i) => entry(i + 1, p)) });
      await store.close();
      assert.ok(await flipIn(await sstsOf(join(data, 'log')), payloads[150] as Buffer), 'the entry is in an SST');
      store = await RocksStorage.open(data);
      await rejectsWith(store.load(), 'corrupt', /log entry 151 fails its checksum/);
    });
  });

  describe('compaction', () => {

    it('reads the entry at its new base checked: a damaged one is refused (`corrupt`) and nothing is deleted', async () => {
      const data = join(dir, 'data');
      store = await RocksStorage.open(data);
      await store.save({ entries: Array.from({ length: 10 }, (_, i) => entry(i + 1, Buffer.from(`entry ${i + 1}`))) });
      await store.close();
      // Entry 5's stored bytes changed on disk, its trailer not (a term of 1 read as 1 << 24).
      const log = await RocksDb.open(join(data, 'log'), { createIfMissing: false });
      const key = Buffer.from([0x6c, 0, 0, 0, 0, 0, 0, 0, 5]);
      const stored = (await log.get(key)) as Buffer;
      stored[4] = 1;
      await log.write([{ type: 'put', key, value: stored }], { sync: true });
      await log.close();
      store = await RocksStorage.open(data);
      await rejectsWith(store.compact({ index: 5, term: 1, membership }), 'corrupt', /log entry 5 fails its checksum/);
      await store.close();
      const again = await RocksDb.open(join(data, 'log'), { createIfMissing: false });
      try {
        assert.ok((await again.get(Buffer.from([0x6c, 0, 0, 0, 0, 0, 0, 0, 1]))) !== undefined, 'entry 1 kept');
      } finally {
        await again.close();
      }
    });
  });

  describe('a data dir of a build before the checksums', () => {

    const me = { nodeId: 'n1', clusterId: 'c1', formatVersion: FORMAT_VERSION };

    /** filled: a data dir with its identity, 50 log entries, 3,000 state records at applied index 9 and one more write, closed. */
    async function filled(data: string): Promise<{ digest: string; entries: Entry[] }> {
      const s = await RocksStorage.open(data);
      await s.checkIdentity(me, { createIfNew: true });
      const entries = Array.from({ length: 50 }, (_, i) => entry(i + 1, Buffer.from(`entry ${i + 1}`)));
      await s.save({ hardState: { term: 1, vote: 'n1', commit: 50 }, entries });
      await s.installState([records(3_000)], { appliedIndex: 9, membership });
      await s.write({ writes: [{ key: Buffer.from('k/extra'), value: Buffer.from('') }], appliedIndex: 10 });
      const digest = await s.stateDigest();
      await s.close();
      return { digest, entries };
    }

    it('is migrated once when opened: the same log and state, each record sealed, and nothing to do the next time', async () => {
      const data = join(dir, 'data');
      const { digest, entries } = await filled(data);
      await toLegacy(data);
      const told: string[] = [];
      store = await RocksStorage.open(data, { onMigration: ({ database }) => told.push(database) });
      assert.deepEqual(told, ['log', 'state']);
      assert.deepEqual(store.migrated, { logEntries: 50, stateRecords: 3_001 });
      assert.equal(store.appliedIndex(), 10);
      assert.deepEqual(store.membership(), membership);
      assert.equal(await store.stateDigest(), digest);
      const loaded = await store.load();
      assert.deepEqual(loaded.entries.map((e) => Buffer.from(e.data).toString()), entries.map((e) => Buffer.from(e.data).toString()));
      await store.close();
      store = await RocksStorage.open(data, { onMigration: ({ database }) => told.push(database) });
      assert.equal(store.migrated, null);
      assert.deepEqual(told, ['log', 'state'], 'nothing more to migrate');
      assert.equal(await store.stateDigest(), digest);
      assert.equal((await store.load()).entries.length, 50);
    });

    it('a new, empty data dir is no earlier build: nothing to tell of a migration, at its first open or later', async () => {
      const data = join(dir, 'data');
      const told: string[] = [];
      store = await RocksStorage.open(data, { onMigration: ({ database }) => told.push(database) });
      await store.checkIdentity(me, { createIfNew: true });
      await store.close();
      store = await RocksStorage.open(data, { onMigration: ({ database }) => told.push(database) });
      assert.deepEqual(told, []);
      assert.equal(store.migrated, null);
      await store.close();
    });

    it('a migration cut short at any point of its install leaves the old data, migrated whole at the next open', async () => {
      const data = join(dir, 'data');
      const { digest } = await filled(data);
      await toLegacy(data);
      for (const phase of ['generationCreated', 'generationBuilt', 'pointerWritten'] as const) {
        await rejectsWith(
          RocksStorage.open(data, {
            installHook: (p) => {
              if (p === phase) throw new StorageError('io', `injected at ${p}`);
            },
          }),
          'io',
          new RegExp(`injected at ${phase}`),
        );
      }
      store = await RocksStorage.open(data);
      // The log was migrated by the first attempt (its own synced batch); the state only now.
      assert.deepEqual(store.migrated, { logEntries: 0, stateRecords: 3_001 });
      assert.equal(await store.stateDigest(), digest);
      assert.equal((await store.load()).entries.length, 50);
    });

    it('its identity is raised to FORMAT_VERSION 2 with the log, so that a build before the checksums refuses it (it would read every trailer as data)', async () => {
      const data = join(dir, 'data');
      await filled(data);
      await toLegacy(data);
      const legacyIdentity = async (): Promise<unknown> => {
        const db = await RocksDb.open(join(data, 'log'), { createIfMissing: false });
        try {
          return JSON.parse(String(await db.get(Buffer.from('midentity'))));
        } finally {
          await db.close();
        }
      };
      assert.equal((await legacyIdentity() as { formatVersion: number }).formatVersion, 1);
      store = await RocksStorage.open(data);
      // A build of format 1 checks the stored identity's formatVersion against its own (identity-check.ts) before it reads anything else.
      assert.deepEqual(await store.readIdentity(), { ...me, formatVersion: 2 });
      assert.deepEqual(await store.checkIdentity(me), me);
      await store.close();
      store = null;
      // A data dir this build family wrote before the identity was raised (records sealed, identity 1): raised at open too.
      const db = await RocksDb.open(join(data, 'log'), { createIfMissing: false });
      await db.write([{ type: 'put', key: Buffer.from('midentity'), value: Buffer.from(JSON.stringify({ ...me, formatVersion: 1 })) }], { sync: true });
      await db.close();
      store = await RocksStorage.open(data);
      assert.equal(store.migrated, null);
      assert.deepEqual(await store.checkIdentity(me), { ...me, formatVersion: 2 });
    });

    it('a legacy state image from another member is refused (`unknownFormat`) and the old state kept', async () => {
      const legacy = join(dir, 'legacy');
      await filled(legacy);
      await toLegacy(legacy);
      const image: StateImage = await exportStateImage(await statePathOf(legacy), join(dir, 'image'), 10);
      const source: StateImageSource = { files: image.files, chunks: readStateImageChunks(image, 64 * 1024) };
      store = await RocksStorage.open(join(dir, 'follower'));
      await store.installState([records(10)], { appliedIndex: 4, membership });
      const before = await store.stateDigest();
      await rejectsWith(store.importStateImage(source, { appliedIndex: 10, membership }), 'unknownFormat', /no checksums/);
      assert.equal(store.appliedIndex(), 4);
      assert.equal(await store.stateDigest(), before);
    });

    it('a record format this build does not know is refused with `unknownFormat`', async () => {
      const data = join(dir, 'data');
      await filled(data);
      const db = await RocksDb.open(await statePathOf(data), { createIfMissing: false });
      const three = Buffer.alloc(8);
      three.writeUInt32BE(3, 4);
      await db.write([{ type: 'put', key: Buffer.from('mrecordFormat'), value: three }], { sync: true });
      await db.close();
      await rejectsWith(RocksStorage.open(data), 'unknownFormat', /records are of format 3/);
    });
  });
});

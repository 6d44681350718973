import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { RocksDb, type RocksEntry } from '../../../src/storage/rocks.js';
import { StorageError } from '../../../src/storage/storage-error.js';

describe('RocksDb', () => {
  let root: string;
  let db: RocksDb;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'snapcoord-rocks-'));
    db = await RocksDb.open(join(root, 'db'));
  });

  afterEach(async () => {
    await db.close();
    await rm(root, { recursive: true, force: true });
  });

  const key = (i: number): Buffer => Buffer.from(`key${String(i).padStart(4, '0')}`);

  it('memory: reports the memtables it fills, the table readers and block cache of what it reads from SSTs, nothing once closed', async () => {
    const value = Buffer.alloc(1024, 'v');
    await db.write(Array.from({ length: 1000 }, (_, i) => ({ type: 'put' as const, key: key(i), value })), { sync: true });
    const written = db.memory();
    assert.ok(written.memtablesBytes >= 1000 * 1024, `memtables ${written.memtablesBytes} bytes after 1,000 KiB written`);
    assert.equal(written.tableReadersBytes, 0, 'no SST yet');
    // Reopened, RocksDB flushes what its write-ahead log held into an SST; a read then goes through its reader and the block cache.
    const path = db.path;
    await db.close();
    assert.deepEqual(db.memory(), { memtablesBytes: 0, tableReadersBytes: 0, blockCacheBytes: 0 });
    db = await RocksDb.open(path);
    assert.deepEqual(await db.get(key(500)), value);
    const read = db.memory();
    assert.ok(read.memtablesBytes < written.memtablesBytes, `memtables ${read.memtablesBytes} bytes after the flush`);
    assert.ok(read.tableReadersBytes > 0, 'the SST has a table reader');
    assert.ok(read.blockCacheBytes >= 1024, `block cache ${read.blockCacheBytes} bytes after a read`);
  });

  it('gets what a batch wrote, undefined for a missing key, and applies deletes in order', async () => {
    await db.write(
      [
        { type: 'put', key: Buffer.from('a'), value: Buffer.from('1') },
        { type: 'put', key: Buffer.from('b'), value: Buffer.from('2') },
        { type: 'del', key: Buffer.from('a') },
      ],
      { sync: true },
    );
    assert.equal(await db.get(Buffer.from('a')), undefined);
    assert.deepEqual(await db.get(Buffer.from('b')), Buffer.from('2'));
    await db.write([], { sync: true });
  });

  it('each write holds only its own ops (its batch is emptied after it, also after a refusal), and concurrent writes each land whole', async () => {
    const v = (t: string): Buffer => Buffer.from(t);
    await db.write([{ type: 'put', key: v('a'), value: v('1') }], { sync: false });
    // `a` changed by another batch in between: were the first write's put left in a reused batch, the next write would put 1 again.
    const other = db.bulkBatch();
    other.put(v('a'), v('9'));
    await other.write({ sync: false });
    await db.write([{ type: 'put', key: v('b'), value: v('2') }], { sync: true });
    assert.deepEqual(await db.get(v('a')), v('9'));
    assert.deepEqual(await db.get(v('b')), v('2'));
    // An empty key refuses the whole batch: nothing of it is written, and nothing of it stays for the next write.
    await assert.rejects(
      db.write([{ type: 'put', key: v('c'), value: v('3') }, { type: 'put', key: Buffer.alloc(0), value: v('x') }], { sync: false }),
      (e: unknown) => e instanceof StorageError && e.code === 'invalidArgument' && /empty key/.test(e.message),
    );
    await db.write([{ type: 'put', key: v('d'), value: v('4') }], { sync: false });
    assert.equal(await db.get(v('c')), undefined);
    // Ten writes in flight at once, 50 puts each: every key of every write is there, with its own write's value.
    await Promise.all(
      Array.from({ length: 10 }, (_, w) => db.write(Array.from({ length: 50 }, (_, i) => ({ type: 'put' as const, key: key(w * 50 + i), value: v(`w${w}`) })), { sync: w % 3 === 0 })),
    );
    const got = await db.getMany(Array.from({ length: 500 }, (_, i) => key(i)));
    assert.deepEqual(got.map((x) => x?.toString()), Array.from({ length: 500 }, (_, i) => `w${Math.floor(i / 50)}`));
  });

  it('getMany answers every key in order in one call, undefined where a key has none (duplicates and empty values too)', async () => {
    await db.write(
      [
        { type: 'put', key: key(1), value: Buffer.from('one') },
        { type: 'put', key: key(3), value: Buffer.alloc(0) },
      ],
      { sync: false },
    );
    assert.deepEqual(await db.getMany([]), []);
    const got = await db.getMany([key(3), key(2), key(1), key(1)]);
    assert.equal(got.length, 4);
    assert.deepEqual(got[0], Buffer.alloc(0));
    assert.equal(got[1], undefined);
    assert.deepEqual(got[2], Buffer.from('one'));
    assert.deepEqual(got[3], Buffer.from('one'));
  });

  it('iterates a range in bounded batches, forwards and backwards, with limits', async () => {
    const ops = [];
    for (let i = 0; i < 25; i++) ops.push({ type: 'put' as const, key: key(i), value: Buffer.from([i]) });
    await db.write(ops, { sync: false });
    const batches: RocksEntry[][] = [];
    for await (const batch of db.iterate({ gte: key(3), lt: key(20), batchEntriesMax: 4 })) batches.push(batch);
    assert.deepEqual(batches.map((b) => b.length), [4, 4, 4, 4, 1]);
    assert.deepEqual(batches.flat().map((e) => e.value[0]), Array.from({ length: 17 }, (_, i) => i + 3));

    const reverse: RocksEntry[] = [];
    for await (const batch of db.iterate({ gt: key(3), lte: key(20), reverse: true, limit: 3, values: false })) {
      reverse.push(...batch);
    }
    assert.deepEqual(reverse.map((e) => e.key.toString()), ['key0020', 'key0019', 'key0018']);
    assert.equal(reverse[0]?.value.length, 0);
  });

  it('ends the native iterator when the loop breaks early', async () => {
    await db.write([{ type: 'put', key: key(1), value: Buffer.from('x') }, { type: 'put', key: key(2), value: Buffer.from('y') }], { sync: false });
    for await (const batch of db.iterate({ batchEntriesMax: 1 })) {
      assert.equal(batch.length, 1);
      break;
    }
    await db.close();
  });

  it('iterator() fixes its view when called: later writes are not seen; batches bound entries and bytes', async () => {
    await db.write(Array.from({ length: 10 }, (_, i) => ({ type: 'put' as const, key: key(i), value: Buffer.alloc(100, i) })), { sync: false });
    const iterator = db.iterator({ gte: key(0), lt: key(99) });
    await db.write([{ type: 'del', key: key(0) }, { type: 'put', key: key(5), value: Buffer.from('new') }, { type: 'put', key: key(50), value: Buffer.from('x') }], { sync: false });
    const seen: RocksEntry[][] = [];
    for (let batch = await iterator.nextBatch(4, 250); batch.length > 0; batch = await iterator.nextBatch(4, 250)) seen.push(batch);
    assert.deepEqual(seen.map((b) => b.length), [3, 3, 3, 1]); // 3 x 107 B reach 250 B before 4 entries
    assert.deepEqual(seen.flat().map((e) => e.key.toString()), Array.from({ length: 10 }, (_, i) => key(i).toString()));
    assert.equal(seen.flat()[5]?.value.length, 100);
    await iterator.end();
    await iterator.end();
    assert.deepEqual(await iterator.nextBatch(), []);
    const ended = db.iterator({});
    await db.close();
    await assert.rejects(ended.nextBatch(), (err: unknown) => err instanceof StorageError && err.code === 'closed');
    await ended.end();
  });

  it('a bulk batch writes what was put, atomically, is emptied by each write and reused; the caller may reuse its buffers after put', async () => {
    const batch = db.bulkBatch();
    const scratch = Buffer.alloc(8);
    for (let i = 0; i < 1000; i++) {
      scratch.write(`v${String(i).padStart(7, '0')}`);
      batch.put(key(i), scratch); // copied now: the scratch buffer is overwritten next round
    }
    assert.equal(batch.count, 1000);
    assert.equal(batch.bytes, 1000 * (key(0).length + 8));
    assert.equal(await db.get(key(0)), undefined, 'nothing is written before write()');
    await batch.write({ sync: false });
    assert.equal(batch.count, 0);
    assert.deepEqual(await db.get(key(0)), Buffer.from('v0000000'));
    assert.deepEqual(await db.get(key(999)), Buffer.from('v0000999'));
    // reused: only the puts since the last write are written (a later put of a key wins)
    batch.put(key(5), Buffer.from('again'));
    batch.put(key(1000), new Uint8Array([1, 2, 3]));
    await batch.write({ sync: true });
    assert.deepEqual(await db.get(key(5)), Buffer.from('again'));
    assert.deepEqual(await db.get(key(1000)), Buffer.from([1, 2, 3]));
    assert.deepEqual(await db.get(key(6)), Buffer.from('v0000006'));
    await batch.write({ sync: false }); // empty: nothing to do
  });

  it('a bulk batch refuses a put while it is written, and any write once the database is closed', async () => {
    const batch = db.bulkBatch();
    batch.put(key(1), Buffer.from('x'));
    const writing = batch.write({ sync: false });
    assert.throws(() => batch.put(key(2), Buffer.from('y')), (e: unknown) => e instanceof StorageError && e.code === 'invalidArgument');
    await writing;
    batch.put(key(2), Buffer.from('y'));
    await db.close();
    await assert.rejects(batch.write({ sync: false }), (e: unknown) => e instanceof StorageError && e.code === 'closed');
    assert.throws(() => db.bulkBatch(), (e: unknown) => e instanceof StorageError && e.code === 'closed');
  });

  it('close is idempotent; use after close is refused with the path in the message', async () => {
    const iteration = db.iterate({});
    await db.close();
    await db.close();
    for (const attempt of [
      db.get(Buffer.from('a')),
      db.write([{ type: 'del', key: Buffer.from('a') }], { sync: true }),
      iteration.next(),
    ]) {
      await assert.rejects(attempt, (err: unknown) => {
        assert.ok(err instanceof StorageError);
        assert.equal(err.code, 'closed');
        assert.ok(err.message.includes(join(root, 'db')), err.message);
        return true;
      });
    }
  });

  it('wraps engine errors with the path: a second open of a locked database', async () => {
    await assert.rejects(RocksDb.open(join(root, 'db')), (err: unknown) => {
      assert.ok(err instanceof StorageError);
      assert.equal(err.code, 'io');
      assert.match(err.message, /cannot open .*db: .*lock/i);
      return true;
    });
  });

  it("says `corrupt`, not `io`, when RocksDB finds a block that does not verify (its Corruption status)", async () => {
    // ~3 MiB of text-like values, flushed into an SST file when the database closes and opens again.
    const value = (i: number): Buffer => Buffer.from(`value ${i} ${createHash('sha256').update(String(i)).digest('hex').slice(0, 16)} `.repeat(40));
    const ops = Array.from({ length: 3_000 }, (_, i) => ({ type: 'put' as const, key: key(i), value: value(i) }));
    for (let i = 0; i < ops.length; i += 500) await db.write(ops.slice(i, i + 500), { sync: true });
    await db.close();
    const dir = join(root, 'db');
    db = await RocksDb.open(dir);
    await db.close();
    const ssts = (await readdir(dir)).filter((f) => f.endsWith('.sst'));
    assert.ok(ssts.length > 0, 'no SST file was written');
    // One byte flipped in the data blocks of every SST file (the index, filter and footer are at its end).
    for (const f of ssts) {
      const at = Math.floor((await stat(join(dir, f))).size / 3);
      const fh = await open(join(dir, f), 'r+');
      try {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, at);
        b[0] = (b[0] as number) ^ 0xff;
        await fh.write(b, 0, 1, at);
      } finally {
        await fh.close();
      }
    }
    db = await RocksDb.open(dir);
    const errors: StorageError[] = [];
    for (let i = 0; i < ops.length; i++) {
      await db.get(key(i)).catch((err: unknown) => {
        assert.ok(err instanceof StorageError, String(err));
        errors.push(err);
      });
    }
    assert.ok(errors.length > 0, 'no get met the flipped byte');
    for (const err of errors) {
      assert.equal(err.code, 'corrupt', err.message);
      assert.match(err.message, /get failed on .*db: Corruption: block checksum mismatch/);
    }
  });

  it('refuses to create when createIfMissing is false', async () => {
    await assert.rejects(RocksDb.open(join(root, 'absent'), { createIfMissing: false }), /absent/);
  });
});

// The `rocksdb` binding opens with paranoid_checks off and point-in-time recovery: a record of a write-ahead log
// that fails its CRC ends the replay there, silently, and every later record is dropped with it. RocksStorage.open
// checks the Raft log's WAL first (wal-check.ts). These tests damage real WAL files.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Entry } from '../../../src/raft/types.js';
import { RocksDb } from '../../../src/storage/rocks.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { crc32c, findWalDamage } from '../../../src/storage/wal-check.js';
import { rejectsWith } from './helpers.js';

/** walOf: the one write-ahead log file of a closed RocksDB dir. */
async function walOf(dir: string): Promise<string> {
  const wals = (await readdir(dir)).filter((f) => f.endsWith('.log')).sort();
  assert.ok(wals.length > 0, `no WAL in ${dir}`);
  return join(dir, wals[wals.length - 1] as string);
}

/** flip flips the byte at `at` of `file` (xor 0x5a). */
async function flip(file: string, at: number): Promise<void> {
  const b = await readFile(file);
  b[at] = (b[at] as number) ^ 0x5a;
  await writeFile(file, b);
}

describe('write-ahead log check', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-wal-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('crc32c is CRC-32C (Castagnoli): the standard check value', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.from('xx123456789yy'), 2, 11), 0xe3069283);
  });

  /** written: a RocksDB at `db` with `n` synced writes of `bytes` random bytes each (key i), closed; the values. */
  async function written(db: string, n: number, bytes: number): Promise<Buffer[]> {
    const d = await RocksDb.open(db);
    const values = Array.from({ length: n }, () => randomBytes(bytes));
    for (const [i, value] of values.entries()) await d.write([{ type: 'put', key: Buffer.from(`key${i}`), value }], { sync: true });
    await d.close();
    return values;
  }

  it('the premise: RocksDB opens a WAL damaged in its second record without an error and drops every record after it', async () => {
    const db = join(dir, 'db');
    const values = await written(db, 5, 100);
    const wal = await walOf(db);
    const at = (await readFile(wal)).indexOf(values[1] as Buffer);
    await flip(wal, at + 10);
    const damage = await findWalDamage(db);
    assert.ok(damage !== null && damage.file === wal && damage.offset < at && damage.offset > at - 64, JSON.stringify(damage));
    const d = await RocksDb.open(db);
    try {
      assert.ok((await d.get(Buffer.from('key0'))) !== undefined);
      for (let i = 1; i < 5; i++) assert.equal(await d.get(Buffer.from(`key${i}`)), undefined, `key${i}`);
    } finally {
      await d.close();
    }
  });

  it('finds a damaged payload, a damaged header, and damage many blocks before the end; not a torn or zero-filled tail', async () => {
    // 60 writes of 2 KiB: ~4 blocks of 32 KiB.
    const db = join(dir, 'db');
    const values = await written(db, 60, 2048);
    const wal = await walOf(db);
    const clean = await readFile(wal);
    assert.equal(await findWalDamage(db), null);
    const at = clean.indexOf(values[3] as Buffer);
    for (const [what, offset] of [
      ['payload', at + 100],
      ['length field', at - 40],
    ] as const) {
      await writeFile(wal, clean);
      await flip(wal, offset);
      const damage = await findWalDamage(db);
      assert.ok(damage !== null && damage.file === wal && damage.offset < at, `${what}: ${JSON.stringify(damage)}`);
    }
    // A tail cut in the middle of the last record (a crash during a write), then the same with zeros after it
    // (a preallocated file): the replay's job, not damage.
    await writeFile(wal, clean);
    await truncate(wal, clean.length - 1000);
    assert.equal(await findWalDamage(db), null);
    await appendFile(wal, Buffer.alloc(100_000));
    assert.equal(await findWalDamage(db), null);
    // Damage in the last record alone looks like a torn tail: not found (the replay drops only that write).
    await writeFile(wal, clean);
    await flip(wal, clean.indexOf(values[59] as Buffer) + 5);
    assert.equal(await findWalDamage(db), null);
  });

  describe('RocksStorage.open', () => {
    const entry = (index: number, data: Uint8Array): Entry => ({ index, term: 1, type: 'normal', data });

    /** logged: a data dir whose log holds 20 entries of 500 random bytes, each saved (synced) alone, closed. */
    async function logged(data: string): Promise<Buffer[]> {
      const s = await RocksStorage.open(data);
      const payloads = Array.from({ length: 20 }, () => randomBytes(500));
      await s.save({ hardState: { term: 1, vote: 'n1', commit: 0 } });
      for (const [i, p] of payloads.entries()) await s.save({ entries: [entry(i + 1, p)] });
      await s.close();
      return payloads;
    }

    it('refuses a log whose WAL is damaged before records that verify (`corrupt`): before, it opened with entries 1-4 and no error', async () => {
      const data = join(dir, 'data');
      const payloads = await logged(data);
      const wal = await walOf(join(data, 'log'));
      await flip(wal, (await readFile(wal)).indexOf(payloads[4] as Buffer) + 50);
      await rejectsWith(RocksStorage.open(data), 'corrupt', /write-ahead log does not verify at byte \d+ and holds records after it/);
      // Refused before RocksDB replayed anything: the damaged file is as it was (still found).
      assert.ok((await findWalDamage(join(data, 'log'))) !== null);
    });

    it('opens a log whose WAL ends in a torn write, with every entry before it', async () => {
      const data = join(dir, 'data');
      const payloads = await logged(data);
      const wal = await walOf(join(data, 'log'));
      await truncate(wal, (await readFile(wal)).length - 200);
      const s = await RocksStorage.open(data);
      try {
        const loaded = await s.load();
        assert.deepEqual(loaded.entries.map((e) => Buffer.from(e.data)), payloads.slice(0, 19));
      } finally {
        await s.close();
      }
    });

    it('a data dir open in a process (its LOCK held): the lock is what is reported, not damage', async () => {
      const data = join(dir, 'data');
      const s = await RocksStorage.open(data);
      try {
        const payloads = Array.from({ length: 10 }, () => randomBytes(500));
        for (const [i, p] of payloads.entries()) await s.save({ entries: [entry(i + 1, p)] });
        const wal = await walOf(join(data, 'log'));
        await flip(wal, (await readFile(wal)).indexOf(payloads[2] as Buffer) + 50);
        await rejectsWith(RocksStorage.open(data), 'io', /lock/i);
      } finally {
        await s.close();
      }
    });
  });
});

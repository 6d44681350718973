/**
 * The memory bound of RocksStorage.installState: the records it has pulled
 * from its source but not yet written to the new generation stay within two
 * write batches (one being written, one being filled), so a follower's
 * install or a restore does not gather megabytes of records in native
 * batches (issue 15: peak RSS). Observed from outside: the new generation's
 * files on disk (its WAL: the unsynced batch writes still go through it)
 * against the bytes the source has handed over.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { INSTALL_WRITE_BYTES, RocksStorage, STATE_BLOCK_BYTES, STATE_WRITE_BUFFER_BYTES } from '../../../src/storage/rocks-storage.js';
import { RocksDb } from '../../../src/storage/rocks.js';
import type { KeyValue } from '../../../src/storage/types.js';
import { INSTALL_DECODE_OPTIONS } from '../../../src/snapshot/state-format.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };
/** UNWRITTEN_BYTES_MAX: the budget this spec holds an install to (two 2 MiB batches). */
const UNWRITTEN_BYTES_MAX = 4 * 1024 * 1024;
/** VALUE_BYTES / RECORDS_PER_YIELD: random (incompressible) values, 256 KiB per batch of the source. */
const VALUE_BYTES = 64 * 1024;
const RECORDS_PER_YIELD = 4;
/** TOTAL_BYTES: value bytes installed, below the 8 MiB memtable (no flush moves bytes from the WAL meanwhile). */
const TOTAL_BYTES = 7 * 1024 * 1024;

/** MEMTABLE_BYTES_MAX: the budget of one state memtable this spec holds an install to. */
const MEMTABLE_BYTES_MAX = 8 * 1024 * 1024;

/** largestWalBytes: the size of the largest write-ahead log file (*.log) in `path` (0 when none). */
async function largestWalBytes(path: string): Promise<number> {
  const names = (await readdir(path).catch(() => [] as string[])).filter((n) => n.endsWith('.log'));
  let largest = 0;
  for (const name of names) largest = Math.max(largest, (await stat(join(path, name)).catch(() => ({ size: 0 }))).size);
  return largest;
}

/** dirBytes: the total size of the files in `path` (0 when it does not exist yet). */
async function dirBytes(path: string): Promise<number> {
  const names = await readdir(path).catch(() => [] as string[]);
  let total = 0;
  for (const name of names) total += (await stat(join(path, name)).catch(() => ({ size: 0 }))).size;
  return total;
}

describe('RocksStorage.installState memory bound', function () {
  this.timeout(120_000);
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'snapcoord-install-mem-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('INSTALL_WRITE_BYTES keeps two batches within the budget', () => {
    assert.ok(2 * INSTALL_WRITE_BYTES <= UNWRITTEN_BYTES_MAX, `2 x ${INSTALL_WRITE_BYTES} B over ${UNWRITTEN_BYTES_MAX} B`);
  });

  it('never holds more than two batches of pulled records unwritten', async () => {
    let gen = 0;
    const s = await RocksStorage.open(dir, { installHook: (phase, g) => void (phase === 'generationCreated' && (gen = g)) });
    const value = randomBytes(VALUE_BYTES);
    let pulled = 0;
    let worst = 0;
    let checks = 0;
    async function* source(): AsyncGenerator<KeyValue[]> {
      for (let i = 0; pulled < TOTAL_BYTES; ) {
        // Before handing over more: everything pulled so far, less what is on disk, is what the install holds.
        if (gen > 0) {
          const onDisk = await dirBytes(join(dir, `state-${gen}`));
          worst = Math.max(worst, pulled - onDisk);
          checks++;
        }
        const batch: KeyValue[] = [];
        for (let j = 0; j < RECORDS_PER_YIELD; j++, i++) {
          const key = Buffer.from(`k/${String(i).padStart(6, '0')}`);
          // Each value differs (its first bytes carry the index) so nothing compresses or dedups.
          const v = Buffer.from(value);
          v.writeUInt32BE(i, 0);
          batch.push({ key, value: v });
          pulled += key.length + v.length;
        }
        yield batch;
      }
    }
    try {
      await s.installState(source(), { appliedIndex: 5, membership });
      assert.ok(checks > 10, `checked ${checks} times`);
      const slack = RECORDS_PER_YIELD * (VALUE_BYTES + 64);
      assert.ok(worst <= UNWRITTEN_BYTES_MAX + slack, `the install held ${worst} B pulled but unwritten (budget ${UNWRITTEN_BYTES_MAX} + ${slack})`);
      assert.equal(s.appliedIndex(), 5);
      assert.deepEqual(Buffer.from((await s.get(Buffer.from('k/000000')))!).subarray(4), value.subarray(4));
    } finally {
      await s.close();
    }
  });

  it('STATE_WRITE_BUFFER_BYTES keeps a memtable within the budget', () => {
    assert.ok(STATE_WRITE_BUFFER_BYTES <= MEMTABLE_BYTES_MAX, `${STATE_WRITE_BUFFER_BYTES} B over ${MEMTABLE_BYTES_MAX} B`);
  });

  it('flushes the new generation\'s memtable before it holds more than STATE_WRITE_BUFFER_BYTES', async () => {
    // A memtable's records are in its write-ahead log file until it is flushed, when RocksDB starts the next
    // file: the largest log file bounds the largest memtable (native memory RocksDB holds during an install).
    let gen = 0;
    const s = await RocksStorage.open(dir, { installHook: (phase, g) => void (phase === 'generationCreated' && (gen = g)) });
    const value = randomBytes(VALUE_BYTES);
    const total = 3 * MEMTABLE_BYTES_MAX;
    let largest = 0;
    async function* source(): AsyncGenerator<KeyValue[]> {
      for (let i = 0, pulled = 0; pulled < total; ) {
        if (gen > 0) largest = Math.max(largest, await largestWalBytes(join(dir, `state-${gen}`)));
        const batch: KeyValue[] = [];
        for (let j = 0; j < RECORDS_PER_YIELD; j++, i++) {
          const v = Buffer.from(value);
          v.writeUInt32BE(i, 0);
          batch.push({ key: Buffer.from(`k/${String(i).padStart(6, '0')}`), value: v });
          pulled += v.length;
        }
        yield batch;
      }
    }
    try {
      await s.installState(source(), { appliedIndex: 5, membership });
      // slack: the batch being written when the memtable filled, and RocksDB's own record headers.
      const slack = INSTALL_WRITE_BYTES + 1024 * 1024;
      assert.ok(largest > INSTALL_WRITE_BYTES, `no log file seen (largest ${largest} B)`);
      assert.ok(largest <= MEMTABLE_BYTES_MAX + slack, `a log file (a memtable) reached ${largest} B (budget ${MEMTABLE_BYTES_MAX} + ${slack})`);
      assert.equal(s.appliedIndex(), 5);
    } finally {
      await s.close();
    }
  });

  it('writes the installed state in data blocks of STATE_BLOCK_BYTES (fewer index entries held per SST)', async () => {
    // RocksDB keeps each open SST's index in memory, an entry per data block: 4 KiB blocks held 7.2 MiB for 1M
    // keys of 1 KiB (issue 15), growing with the state. The table properties count the blocks the files hold.
    let gen = 0;
    const s = await RocksStorage.open(dir, { installHook: (phase, g) => void (phase === 'generationCreated' && (gen = g)) });
    const value = randomBytes(1024);
    const records = 24_000; // ~24 MiB: several memtables flushed to SSTs
    async function* source(): AsyncGenerator<KeyValue[]> {
      for (let i = 0; i < records; ) {
        const batch: KeyValue[] = [];
        for (let j = 0; j < 1_000; j++, i++) batch.push({ key: Buffer.from(`fill/${String(i).padStart(8, '0')}`), value });
        yield batch;
      }
    }
    try {
      await s.installState(source(), { appliedIndex: 5, membership });
    } finally {
      await s.close();
    }
    // Opened with the same block size: the records still in its write-ahead log are flushed now, and count too.
    const db = await RocksDb.open(join(dir, `state-${gen}`), { createIfMissing: false, blockBytes: STATE_BLOCK_BYTES });
    try {
      const props = db.property('rocksdb.aggregated-table-properties');
      const num = (name: string): number => Number(new RegExp(`${name}=(\\d+)`).exec(props)?.[1] ?? NaN);
      const blocks = num('# data blocks');
      const entries = num('# entries');
      const raw = num('raw key size') + num('raw value size');
      assert.ok(entries >= records / 2, `only ${entries} of ${records} records in SST files: ${props.slice(0, 200)}`);
      // A block closes once it reaches the size, so the mean is at least ~STATE_BLOCK_BYTES less one record.
      assert.ok(raw / blocks >= STATE_BLOCK_BYTES - 2 * 1024, `${blocks} data blocks for ${raw} B: ${(raw / blocks).toFixed(0)} B a block, not ~${STATE_BLOCK_BYTES}`);
    } finally {
      await db.close();
    }
  });

  it('INSTALL_DECODE_OPTIONS decodes batches no larger than one install write', () => {
    // An install puts each batch of its source whole into one native batch: 4 MiB decoder batches made 4 MiB writes.
    const decoded = INSTALL_DECODE_OPTIONS.batchBytesMax ?? Infinity;
    assert.ok(decoded <= INSTALL_WRITE_BYTES, `decoder batches of ${decoded} B over the ${INSTALL_WRITE_BYTES} B write batch`);
  });
});

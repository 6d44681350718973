/**
 * Memory stays flat for any size: write and read a 300 MB state through the
 * archive with RSS growing by less than ~150 MB. Prints MB/s (figures, not a
 * pass/fail on time: these shared machines vary up to 3x).
 */
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { readArchive, writeArchive } from '../../../src/snapshot/archive.js';
import { decodeStateRecords, encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, tempDir } from './helpers.js';

const STATE_BYTES_TARGET = 300 * 1024 * 1024;
const VALUE_BYTES = 8 * 1024;
const RSS_GROWTH_MAX_BYTES = 150 * 1024 * 1024;

/** lazyState yields ~300 MB of records, half pseudo-random half repetitive (so gzip has some work), never all at once. */
async function* lazyState(): AsyncGenerator<StateRecord[]> {
  let x = 0x9e3779b9;
  let produced = 0;
  let i = 0;
  while (produced < STATE_BYTES_TARGET) {
    const batch: StateRecord[] = [];
    for (let n = 0; n < 64; n++, i++) {
      const value = Buffer.alloc(VALUE_BYTES, i & 0xff);
      for (let j = 0; j < VALUE_BYTES / 2; j += 4) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        value.writeInt32LE(x | 0, j);
      }
      const key = Buffer.from(`stream-key-${String(i).padStart(10, '0')}`);
      produced += 8 + key.length + value.length;
      batch.push({ key, value });
    }
    yield batch;
  }
}

describe('snapshot archive: streaming a 300 MB state', function () {
  this.timeout(300_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir()));
  after(() => cleanup());

  it('writes and reads it with flat memory', async () => {
    const startRss = process.memoryUsage().rss;
    let peakRss = startRss;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
    try {
      const statePath = join(dir, 'state.bin');
      const encoder = encodeStateRecords(lazyState());
      await pipeline(encoder, createWriteStream(statePath));
      const stateBytes = (await stat(statePath)).size;
      assert.ok(stateBytes >= STATE_BYTES_TARGET);

      const archivePath = join(dir, 'archive.tar.gz');
      let t = process.hrtime.bigint();
      const written = await writeArchive(
        { id: 'big', index: 1, term: 1, membership: MEMBERSHIP, createdAt: new Date().toISOString(), snapcoordVersion: '0.1.0', stateKeys: encoder.keys },
        statePath,
        createWriteStream(archivePath),
      );
      const writeSec = Number(process.hrtime.bigint() - t) / 1e9;

      t = process.hrtime.bigint();
      let keys = 0;
      const read = await readArchive(createReadStream(archivePath, { highWaterMark: 1024 * 1024 }), async (_m, s) => {
        for await (const batch of decodeStateRecords(s)) keys += batch.length;
        return keys;
      });
      const readSec = Number(process.hrtime.bigint() - t) / 1e9;
      peakRss = Math.max(peakRss, process.memoryUsage().rss);

      assert.equal(read.result, encoder.keys);
      assert.equal(read.stateSha256, written.stateSha256);
      const mb = stateBytes / 1024 / 1024;
      console.log(
        `      state ${mb.toFixed(0)} MB, ${encoder.keys} keys, archive ${(written.archiveBytes / 1024 / 1024).toFixed(0)} MB; ` +
          `writeArchive ${(mb / writeSec).toFixed(0)} MB/s (${writeSec.toFixed(1)} s), ` +
          `readArchive+decode ${(mb / readSec).toFixed(0)} MB/s (${readSec.toFixed(1)} s); ` +
          `RSS +${((peakRss - startRss) / 1024 / 1024).toFixed(0)} MB at peak`,
      );
    } finally {
      clearInterval(sampler);
    }
    assert.ok(peakRss - startRss < RSS_GROWTH_MAX_BYTES, `RSS grew by ${((peakRss - startRss) / 1024 / 1024).toFixed(0)} MB`);
  });
});

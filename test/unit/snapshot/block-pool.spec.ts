/**
 * BlockPool and the compressor's block reuse: the pool never holds more than
 * its bound, drops what is not one of its blocks, and writeArchiveFromRecords
 * and ParallelGzip never hand a block to zlib while an earlier compression of
 * it runs, nor change a block zlib is reading — while allocating only a few
 * blocks for a long state.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync, type ZlibOptions } from 'node:zlib';

import { writeArchiveFromRecords } from '../../../src/snapshot/archive-writer.js';
import { BlockPool } from '../../../src/snapshot/block-pool.js';
import { ParallelGzip } from '../../../src/snapshot/parallel-gzip.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, inBatches, sink, tempDir } from './helpers.js';

const BLOCK = 128 * 1024;

/** watchedIo: nodeSnapshotIo whose gzip, for inputs in BLOCK-byte buffers, records misuse: a buffer compressed twice at once, or changed while compressed. */
function watchedIo() {
  const inFlight = new Set<ArrayBufferLike>();
  const seen = new Set<ArrayBufferLike>();
  const misuse: string[] = [];
  let calls = 0;
  const io: SnapshotIo = {
    ...nodeSnapshotIo,
    gzip: async (block: Uint8Array, options: ZlibOptions) => {
      if (block.buffer.byteLength !== BLOCK) return nodeSnapshotIo.gzip(block, options);
      calls += 1;
      if (inFlight.has(block.buffer)) misuse.push(`call ${calls}: a block given to zlib while an earlier compression of it runs`);
      inFlight.add(block.buffer);
      seen.add(block.buffer);
      const before = createHash('sha256').update(block).digest('hex');
      try {
        await new Promise((resolve) => setTimeout(resolve, calls % 4)); // let later blocks be filled meanwhile
        return await nodeSnapshotIo.gzip(block, options);
      } finally {
        if (createHash('sha256').update(block).digest('hex') !== before) misuse.push(`call ${calls}: a block changed while zlib read it`);
        inFlight.delete(block.buffer);
      }
    },
  };
  return { io, misuse, distinctBlocks: () => seen.size, calls: () => calls };
}

describe('BlockPool', () => {
  it('holds at most maxBlocks spares, reuses them, and drops foreign sizes, offset views and duplicates', () => {
    const pool = new BlockPool(64 * 1024, 2);
    const a = pool.take();
    const b = pool.take();
    const c = pool.take();
    assert.equal(pool.allocated, 3);
    pool.give(a.subarray(0, 10)); // a view from the first byte counts as the block
    pool.give(a); // already spare
    pool.give(Buffer.alloc(128 * 1024));
    pool.give(b.subarray(1));
    assert.equal(pool.spare, 1);
    pool.give(b);
    pool.give(c); // beyond maxBlocks
    assert.equal(pool.spare, 2);
    const again = [pool.take(), pool.take()].map((x) => x.buffer);
    assert.deepEqual(new Set(again), new Set([a.buffer, b.buffer]));
    assert.equal(pool.allocated, 3);
    pool.take();
    assert.equal(pool.allocated, 4);
    assert.throws(() => new BlockPool(0, 1), RangeError);
  });
});

describe('compressor block reuse', function () {
  this.timeout(60_000);

  it('writeArchiveFromRecords: ~60 blocks with 3 in flight use at most 5 blocks, none reused before zlib is done with it', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const all: StateRecord[] = [];
      for (let i = 0; i < 8000; i++) all.push({ key: Buffer.from(`k/${String(i).padStart(6, '0')}`), value: Buffer.alloc(1000, `v${i} `) });
      const w = watchedIo();
      const chunks: Buffer[] = [];
      const result = await writeArchiveFromRecords(
        { id: 's', index: 1, term: 1, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' },
        { records: inBatches(all, 100), spoolPath: join(dir, 's.spool') },
        sink((c) => chunks.push(c)),
        { gzipBlockBytes: BLOCK, gzipInFlightMax: 3, io: w.io },
      );
      assert.deepEqual(w.misuse, []);
      assert.ok(w.calls() >= 55, `${w.calls()} blocks`);
      assert.ok(w.distinctBlocks() <= 5, `${w.distinctBlocks()} distinct blocks for ${w.calls()}`);
      assert.equal(result.gzipMembers, w.calls() + 2);
      const tar = gunzipSync(Buffer.concat(chunks));
      assert.ok(tar.includes(Buffer.from('k/007999')), 'the last record is in the archive');
    } finally {
      await cleanup();
    }
  });

  it('ParallelGzip: 40 blocks with 2 in flight use at most 3 blocks, none reused early, and the stream reads back', async () => {
    const input = Buffer.alloc(40 * BLOCK);
    for (let i = 0; i < input.length; i += 4) input.writeUInt32LE((i * 2654435761) >>> 0, i);
    const w = watchedIo();
    const chunks: Buffer[] = [];
    const pieces = Array.from({ length: Math.ceil(input.length / 50_000) }, (_, i) => input.subarray(i * 50_000, (i + 1) * 50_000));
    await pipeline(Readable.from(pieces), new ParallelGzip({ blockBytes: BLOCK, inFlightMax: 2, io: w.io }), sink((c) => chunks.push(c)));
    assert.deepEqual(w.misuse, []);
    assert.equal(w.calls(), 40);
    assert.ok(w.distinctBlocks() <= 3, `${w.distinctBlocks()} distinct blocks`);
    assert.ok(gunzipSync(Buffer.concat(chunks)).equals(input));
  });
});

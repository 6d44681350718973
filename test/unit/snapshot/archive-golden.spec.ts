/**
 * Archive bytes are a fixed function of the state: an archive built from a
 * fixed state (random, text-like and repetitive values, so every block choice
 * of parallel-gzip.ts — stored, Huffman only, deflate — occurs) and a fixed
 * ParallelGzip stream have the digests they had before the compressor's
 * buffers were pooled and its output sized to what comes out (commit
 * db765b5). A change to block reuse or output sizing that altered a byte
 * fails here.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { writeArchiveFromRecords } from '../../../src/snapshot/archive-writer.js';
import { ParallelGzip } from '../../../src/snapshot/parallel-gzip.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, inBatches, sha256, sink, tempDir } from './helpers.js';

/** GOLDEN_*_SHA256: the digests the code before the change gave (measured at db765b5). */
const GOLDEN_ARCHIVE_SHA256 = 'deade4e5af4d462d18fbd20d4157418679d1de1171c918877ff3a270bf478871';
const GOLDEN_STREAM_SHA256 = '8810e4ea59d92c76371ec88b43c3a100a5ff95b2a16b42dc5ce0caf36aed41ab';
const META = { id: 'snap-g', index: 9, term: 3, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' };

/** goldenState: 3,000 records of 700-byte values: 1,000 random, 1,000 text-like words, 1,000 repetitive. */
function goldenState(): StateRecord[] {
  let x = 0x1234567;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const words = Array.from({ length: 512 }, () => Array.from({ length: 3 + (next() % 7) }, () => String.fromCharCode(97 + (next() % 26))).join(''));
  const out: StateRecord[] = [];
  for (let i = 0; i < 3000; i++) {
    let value: Buffer;
    if (i < 1000) {
      value = Buffer.allocUnsafe(700);
      for (let j = 0; j < 700; j += 4) value.writeUInt32LE(next(), j);
    } else if (i < 2000) {
      let text = '';
      while (text.length < 700) text += `${words[next() % words.length] as string} `;
      value = Buffer.from(text.slice(0, 700));
    } else {
      value = Buffer.alloc(700, `value ${i % 7} `);
    }
    out.push({ key: Buffer.from(`golden/${String(i).padStart(6, '0')}`), value });
  }
  return out;
}

describe('archive bytes (golden)', function () {
  this.timeout(60_000);

  it('writeArchiveFromRecords gives the same archive as before block pooling (64 KiB blocks, 1 and 3 in flight)', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      for (const inFlight of [1, 3]) {
        const chunks: Buffer[] = [];
        const result = await writeArchiveFromRecords(
          META,
          { records: inBatches(goldenState(), 53), spoolPath: join(dir, `g${inFlight}.spool`) },
          sink((c) => chunks.push(c)),
          { gzipBlockBytes: 64 * 1024, gzipInFlightMax: inFlight },
        );
        const bytes = Buffer.concat(chunks);
        assert.equal(result.archiveSha256, sha256(bytes));
        assert.equal(sha256(bytes), GOLDEN_ARCHIVE_SHA256, `archive of ${bytes.length} bytes`);
      }
    } finally {
      await cleanup();
    }
  });

  it('ParallelGzip gives the same stream as before block pooling', async () => {
    const state = Buffer.concat(goldenState().map((r) => Buffer.concat([r.key, r.value])));
    const chunks: Buffer[] = [];
    const pieces = Array.from({ length: Math.ceil(state.length / 10_007) }, (_, i) => state.subarray(i * 10_007, (i + 1) * 10_007));
    await pipeline(Readable.from(pieces), new ParallelGzip({ blockBytes: 64 * 1024, inFlightMax: 2 }), sink((c) => chunks.push(c)));
    const bytes = Buffer.concat(chunks);
    assert.equal(sha256(bytes), GOLDEN_STREAM_SHA256, `stream of ${bytes.length} bytes`);
  });
});

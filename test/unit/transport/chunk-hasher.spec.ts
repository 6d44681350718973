import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';

import { TRANSFER_SLACK_BYTES, workerChunkHasher } from '../../../src/transport/chunk-hasher.js';

const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

describe('workerChunkHasher', () => {
  it('hashes a chunk that owns its buffer on the worker, handing back the same bytes (transferred, not copied); many in flight resolve each to its own', async () => {
    const hasher = workerChunkHasher();
    try {
      const chunks = Array.from({ length: 8 }, (_, i) => {
        const framed = Buffer.allocUnsafe(64 * 1024 + 40);
        randomBytes(framed.length).copy(framed);
        return framed.subarray(20, 20 + 64 * 1024 - i);
      });
      const expected = chunks.map((c) => ({ sum: sha(c), bytes: Buffer.from(c), offset: c.byteOffset }));
      const out = await Promise.all(chunks.map((c) => hasher.sha256(c)));
      assert.equal(hasher.transferred, 8);
      for (const [i, h] of out.entries()) {
        assert.equal(chunks[i]!.length, 0, 'the caller view was detached while out');
        assert.deepEqual(h.sha256, expected[i]!.sum);
        assert.deepEqual(Buffer.from(h.data), expected[i]!.bytes);
        assert.equal(h.data.byteOffset, expected[i]!.offset, 'a view of the same place in the same buffer');
      }
    } finally {
      hasher.close();
    }
  });

  it('a chunk sharing its buffer with more than TRANSFER_SLACK_BYTES of other bytes (a pool, a file in memory) is hashed inline, untouched; so is every chunk after close', async () => {
    const hasher = workerChunkHasher();
    const file = randomBytes(3 * TRANSFER_SLACK_BYTES);
    const view = file.subarray(0, TRANSFER_SLACK_BYTES);
    const h = await hasher.sha256(view);
    assert.equal(hasher.transferred, 0);
    assert.equal(view.length, TRANSFER_SLACK_BYTES, 'not detached');
    assert.deepEqual(h.sha256, sha(view));
    hasher.close();
    const own = randomBytes(1000);
    const copy = Buffer.from(own);
    const after = await hasher.sha256(new Uint8Array(own.buffer.slice(own.byteOffset, own.byteOffset + own.length)));
    assert.deepEqual(after.sha256, sha(copy));
    assert.equal(hasher.transferred, 0);
  });

  it('close rejects the chunks still on the worker (their bytes went with it)', async () => {
    const hasher = workerChunkHasher();
    const out = hasher.sha256(new Uint8Array(new ArrayBuffer(1 << 20)));
    hasher.close();
    await assert.rejects(out, /closed/);
  });
});

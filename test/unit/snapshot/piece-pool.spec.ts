/**
 * PiecePool and its holders (issue 15): an install's gunzip output in a few reused buffers. A buffer is reused
 * only once every holder gave it back, so the tests poison a buffer the moment it becomes spare: a holder that
 * gave a piece back while a record, a kept key or a queued piece still pointed into it reads 0xEE bytes.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setImmediate as turn, setTimeout as sleep } from 'node:timers/promises';

import { readArchive, writeArchiveFromRecords } from '../../../src/snapshot/archive.js';
import { StateFormatError } from '../../../src/snapshot/errors.js';
import { MemberGunzip } from '../../../src/snapshot/member-gunzip.js';
import { PiecePool } from '../../../src/snapshot/piece-pool.js';
import { checkedStateRecords, scanStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, encodeStateBin as encode, inBatches, records, sink, tempDir } from './helpers.js';

/** PoisonPool: a PiecePool that fills a buffer with 0xEE as it becomes spare (premature reuse made visible). */
class PoisonPool extends PiecePool {
  override release(piece: Uint8Array): void {
    const before = this.spare;
    super.release(piece);
    if (this.spare > before) new Uint8Array(piece.buffer).fill(0xee);
  }
}


/** pieces: `bytes` handed on in pool pieces of 1..pieceBytes bytes (a fixed pseudo-random walk), each taken when asked for. */
async function* pieces(bytes: Buffer, pool: PiecePool): AsyncGenerator<Buffer> {
  let seed = 7;
  for (let at = 0; at < bytes.length; ) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const n = Math.min(bytes.length - at, 1 + (seed % pool.pieceBytes));
    const piece = pool.take(n);
    bytes.copy(piece, 0, at, at + n);
    at += n;
    yield piece;
  }
}

describe('PiecePool: reused gunzip output buffers (issue 15)', () => {
  it('counts holders: a buffer is spare again only when the last one releases it; unknown buffers and spares past spareMax are left alone', () => {
    const pool = new PiecePool(16, 1);
    const a = pool.take(10);
    assert.equal(a.length, 10);
    pool.retain(a);
    pool.release(a);
    assert.equal(pool.spare, 0, 'one holder left');
    pool.release(a.subarray(3, 5)); // a view stands for its buffer
    assert.equal(pool.spare, 1);
    pool.release(a); // given back already: nothing
    assert.equal(pool.spare, 1);
    const b = pool.take(16);
    assert.equal(b.buffer, a.buffer, 'the spare is reused');
    assert.equal(pool.reused, 1);
    const c = pool.take(4);
    pool.release(b);
    pool.release(c);
    assert.equal(pool.spare, 1, 'at most spareMax spares');
    pool.retain(Buffer.alloc(16));
    pool.release(Buffer.alloc(16));
    assert.equal(pool.spare, 1);
    assert.equal(pool.outstanding, 0);
    assert.throws(() => pool.take(17), RangeError);
  });

  it('checkedStateRecords with release: records straddling pieces, values larger than a piece and the kept last key survive every reuse', async () => {
    const all = records(400, 3); // values of 0..2999 bytes
    const bytes = encode(all);
    const pool = new PoisonPool(700, 8);
    const got: StateRecord[] = [];
    const decode = { views: true, batchKeysMax: 7, batchBytesMax: 5000, release: (p: Uint8Array) => pool.release(p) };
    for await (const batch of checkedStateRecords(pieces(bytes, pool), { stateKeys: all.length, stateBytes: bytes.length }, decode)) {
      for (const r of batch) got.push({ key: Buffer.from(r.key), value: Buffer.from(r.value) });
      await turn();
    }
    assert.equal(got.length, all.length);
    for (let i = 0; i < all.length; i++) {
      assert.deepEqual(got[i]?.key, Buffer.from((all[i] as StateRecord).key), `key ${i}`);
      assert.ok(Buffer.from((all[i] as StateRecord).value).equals(got[i]?.value as Buffer), `value ${i}`);
    }
    assert.ok(pool.reused > 100, `buffers reused (${pool.reused})`);
    assert.ok(pool.outstandingMax <= 30, `at most a batch's pieces held (${pool.outstandingMax})`);
  });

  it('a key repeated across two batches is still found (the last key kept is a copy, not a view of a reused piece)', async () => {
    const all = records(60, 5);
    // Record 41 repeats record 40's key: batches of 7 records put them in different batches.
    const dup = [...all.slice(0, 41), { key: (all[40] as StateRecord).key, value: Buffer.from('x') }, ...all.slice(41)];
    const bytes = encode(dup);
    const pool = new PoisonPool(64, 8);
    const decode = { views: true, batchKeysMax: 41, batchBytesMax: 1 << 20, release: (p: Uint8Array) => pool.release(p) };
    await assert.rejects(
      (async () => {
        for await (const _ of checkedStateRecords(pieces(bytes, pool), { stateKeys: dup.length, stateBytes: bytes.length }, decode)) await turn();
      })(),
      (err: unknown) => err instanceof StateFormatError && err.code === 'key-order' && /appears twice/.test(err.message),
    );
  });

  it('scanStateRecords with release: the last key and a key split across pieces are copied before their piece is let go', async () => {
    const all = records(300, 9);
    const bytes = encode(all);
    const pool = new PoisonPool(48, 4);
    const scan = await scanStateRecords(pieces(bytes, pool), { stateKeys: all.length, stateBytes: bytes.length }, { release: (p) => pool.release(p) });
    assert.equal(scan.keys, all.length);
    const dup = encode([...all.slice(0, 100), { key: (all[99] as StateRecord).key, value: Buffer.alloc(0) }, ...all.slice(100)]);
    await assert.rejects(
      scanStateRecords(pieces(dup, pool), { stateKeys: all.length + 1, stateBytes: dup.length }, { release: (p) => pool.release(p) }),
      (err: unknown) => err instanceof StateFormatError && /appears twice/.test(err.message),
    );
  });

  it('readArchive with a pooled MemberGunzip and a slow reader: the same records, and the state stream holds back the gunzip (a few pieces out, not the whole state)', async function () {
    this.timeout(60_000);
    const { dir, cleanup } = await tempDir();
    try {
      const all = records(3000, 11); // ~4.5 MB of state
      const chunks: Buffer[] = [];
      const meta = { id: 'snap-3', index: 3, term: 1, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' };
      await writeArchiveFromRecords(meta, { records: inBatches(all, 50), spoolPath: join(dir, 'spool') }, sink((c) => chunks.push(c)), { gzipBlockBytes: 64 * 1024 });
      const archive = Buffer.concat(chunks);
      const pool = new PoisonPool(16 * 1024, 64);
      const gunzip = new MemberGunzip({ chunkSize: 16 * 1024, checkCrc: true, pool });
      const got: Buffer[] = [];
      await readArchive(
        Readable.from([archive.subarray(0, archive.length >> 1), archive.subarray(archive.length >> 1)]),
        async (m, state) => {
          const decode = { views: true, batchKeysMax: 64, batchBytesMax: 64 * 1024, release: (p: Uint8Array) => pool.release(p) };
          for await (const batch of checkedStateRecords(state, m, decode)) {
            for (const r of batch) got.push(Buffer.concat([Buffer.from(r.key), Buffer.from(r.value)]));
            await sleep(2); // a reader slower than the gunzip
          }
        },
        { gunzip, pool },
      );
      assert.equal(got.length, all.length);
      for (let i = 0; i < all.length; i++) {
        const r = all[i] as StateRecord;
        assert.ok(Buffer.concat([Buffer.from(r.key), Buffer.from(r.value)]).equals(got[i] as Buffer), `record ${i}`);
      }
      assert.ok(pool.reused > 200, `buffers reused (${pool.reused} of ${pool.reused + pool.allocated})`);
      // The state stream's queue (8 pieces), a batch (64 KiB: 5 pieces and its edges), the pipes' few: well under 40.
      assert.ok(pool.outstandingMax <= 40, `pieces out at once: ${pool.outstandingMax}`);
    } finally {
      await cleanup();
    }
  });
});

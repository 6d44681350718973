/**
 * hashStateAt (a node's HashState, its part of CheckConsistency) reads and
 * hashes the state a bounded batch at a time, yielding the event loop between
 * batches, at a byte rate when given (ScrubPacer). Before, it read and hashed
 * the whole state as fast as it could on the node's one thread: one HashState
 * loop took ~75% of 8 writers' rate (663 -> 158 writes/s at 100k keys).
 * Counts only (event-loop turns, virtual time), no wall clock.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import * as grpc from '@grpc/grpc-js';

import type { ClusterServiceClient } from '../../../src/gen/snapcoord/v1/cluster.js';
import { grpcMemberHasher, hashStateAt, STATE_HASH_BATCH_BYTES_MAX, STATE_HASH_BYTES_PER_SEC_DEFAULT, STATE_HASH_RECORD_COST_BYTES } from '../../../src/ops/consistency.js';
import { MemoryStorage } from '../../../src/storage/memory-storage.js';
import type { KeyValue } from '../../../src/storage/types.js';
import { ManualClock, settle } from '../node/manual-clock.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };

/** records: `count` keys of `valueBytes` each, plus one record of 200 KB (larger than a run of the digest). */
function records(count: number, valueBytes: number): KeyValue[] {
  const out: KeyValue[] = [];
  for (let i = 0; i < count; i++) out.push({ key: Buffer.from(`k/${String(i).padStart(7, '0')}`), value: Buffer.alloc(valueBytes, 97 + (i % 26)) });
  out.push({ key: Buffer.from('k/zz-large'), value: Buffer.alloc(200_000, 7) });
  return out;
}

/** referenceDigest: StateMachine.stateDigest's definition, one record part at a time. */
function referenceDigest(index: number, kvs: readonly KeyValue[]): string {
  const h = createHash('sha256');
  const u64 = Buffer.alloc(8);
  u64.writeBigUInt64BE(BigInt(index));
  h.update(u64);
  for (const { key, value } of kvs) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(key.length);
    h.update(len).update(key);
    len.writeUInt32BE(value.length);
    h.update(len).update(value);
  }
  return h.digest('hex');
}

async function storageWith(kvs: KeyValue[], index: number): Promise<MemoryStorage> {
  const s = await MemoryStorage.open();
  await s.installState([kvs], { appliedIndex: index, membership });
  return s;
}

describe('hashStateAt: bounded batches, yields, a byte rate', function () {
  this.timeout(30_000);

  it('answers the same digest as the state digest (records in runs, a large one alone) and the view’s index', async () => {
    const kvs = records(3_000, 100);
    const s = await storageWith(kvs, 42);
    try {
      const h = await hashStateAt(s);
      assert.equal(h.index, 42);
      assert.equal(h.sha256, referenceDigest(42, kvs));
      assert.equal(h.sha256, await s.stateDigest());
    } finally {
      await s.close();
    }
  });

  it(`yields the event loop at least once every ${STATE_HASH_BATCH_BYTES_MAX} bytes hashed (before: not once for 2.4 MB)`, async () => {
    const kvs = records(20_000, 100); // 20,000 x 117 bytes + 200 KB: ~2.5 MB
    const bytes = kvs.reduce((n, r) => n + 8 + r.key.length + r.value.length, 0);
    const s = await storageWith(kvs, 7);
    let turns = 0;
    let hashing = true;
    const ticker = (): void => {
      if (!hashing) return;
      turns++;
      setImmediate(ticker);
    };
    try {
      setImmediate(ticker);
      const h = await hashStateAt(s);
      hashing = false;
      assert.equal(h.sha256, referenceDigest(7, kvs));
      const want = Math.floor(bytes / STATE_HASH_BATCH_BYTES_MAX);
      assert.ok(turns >= want, `${turns} turns of the event loop while ${bytes} bytes were hashed: want at least ${want}`);
    } finally {
      hashing = false;
      await s.close();
    }
  });

  it('hashes no faster than its byte rate (after its first MiB), each record costing STATE_HASH_RECORD_COST_BYTES more', async () => {
    const kvs = records(20_000, 100);
    const bytes = kvs.reduce((n, r) => n + 8 + r.key.length + r.value.length + STATE_HASH_RECORD_COST_BYTES, 0);
    const s = await storageWith(kvs, 9);
    const clock = new ManualClock();
    try {
      let done: string | null = null;
      const p = hashStateAt(s, { clock, bytesPerSec: 1024 * 1024 }).then((h) => (done = h.sha256));
      const dueMs = ((bytes - 1024 * 1024) / (1024 * 1024)) * 1000;
      await clock.advanceSettled(Math.floor(dueMs) - 200, 100, 5);
      assert.equal(done, null, `hashed within ${Math.floor(dueMs) - 200} ms of the clock`);
      await clock.advanceSettled(1_000, 100, 5);
      await settle();
      await p;
      assert.equal(done, referenceDigest(9, kvs));
    } finally {
      await s.close();
    }
  });

  it('a stop (its signal) ends a paced hash where it is', async () => {
    const s = await storageWith(records(20_000, 100), 3);
    const clock = new ManualClock();
    const stop = new AbortController();
    try {
      const p = hashStateAt(s, { clock, bytesPerSec: 1024 * 1024, signal: stop.signal });
      await settle();
      stop.abort();
      await assert.rejects(p, { name: 'ScrubStoppedError' });
    } finally {
      await s.close();
    }
  });

  it("a cluster check gives a member's HashState long enough to hash the etcd anchor's state at 8x (8M keys of 1 KiB) at serve's pace", async () => {
    // Paced, a state hash of 1M x 1 KiB takes ~70 s; the check gave each member 30 s beyond its wait, and came back
    // inconclusive for any state over ~0.5 GB.
    let deadline = 0;
    const client = {
      hashState: (_req: unknown, _md: grpc.Metadata, opts: { deadline: number }, cb: (err: grpc.ServiceError | null, res: { sha256: string; hashedIndex: bigint }) => void) => {
        deadline = opts.deadline;
        cb(null, { sha256: 'ab', hashedIndex: 5n });
      },
    } as unknown as ClusterServiceClient;
    const waitMs = 1_000;
    const t0 = Date.now();
    assert.deepEqual(await grpcMemberHasher('n2', client, () => new grpc.Metadata()).hash(5, waitMs), { sha256: 'ab', index: 5 });
    const records = 8 * 1024 * 1024;
    const pacedBytes = records * ('fill/00000000'.length + 1024 + 8 + STATE_HASH_RECORD_COST_BYTES);
    const needMs = (pacedBytes / STATE_HASH_BYTES_PER_SEC_DEFAULT) * 1000;
    assert.ok(deadline - t0 >= waitMs + needMs, `HashState given ${deadline - t0} ms; hashing 8 GiB of 1 KiB values at the pace takes ${Math.round(needMs)} ms`);
  });
});

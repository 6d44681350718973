/**
 * RocksStorage.save syncs what safety needs and nothing more (etcd's
 * raft.MustSync): entries and a new term or vote are synced; a batch that
 * only moves the commit index is written unsynced, and still read back.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Entry } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';

const entry = (index: number, term: number): Entry => ({ index, term, type: 'normal', data: Buffer.from(`e${index}`) });

describe('RocksStorage.save: which writes are synced, and how entries are written', () => {
  let root: string;
  beforeEach(async () => (root = await mkdtemp(join(tmpdir(), 'snapcoord-log-sync-'))));
  afterEach(async () => rm(root, { recursive: true, force: true }));

  it('syncs entries and a new term or vote, not a batch that only moves the commit index; every write is read back', async () => {
    const dataDir = join(root, 'data');
    let store = await RocksStorage.open(dataDir);
    try {
      await store.load();
      const synced = (): number => store.logCalls().syncedWrite;
      const writes = (): number => store.logCalls().write;
      let s0 = synced();
      let w0 = writes();
      // A new term and vote: synced (nothing durable yet).
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 } });
      assert.equal(synced() - s0, 1);
      // Entries with the same term and vote: synced.
      s0 = synced();
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: [entry(1, 1), entry(2, 1)] });
      assert.equal(synced() - s0, 1);
      // Entries alone: synced.
      s0 = synced();
      await store.save({ entries: [entry(3, 1)] });
      assert.equal(synced() - s0, 1);
      // Only the commit moves: written, not synced.
      s0 = synced();
      w0 = writes();
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 2 } });
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 3 } });
      assert.equal(writes() - w0, 2);
      assert.equal(synced() - s0, 0);
      assert.deepEqual((await store.load()).hardState, { term: 1, vote: 'n1', commit: 3 });
      // A new vote in the same term (or a new term) is synced again, commit or not.
      s0 = synced();
      await store.save({ hardState: { term: 2, vote: '', commit: 3 } });
      await store.save({ hardState: { term: 2, vote: 'n2', commit: 3 } });
      assert.equal(synced() - s0, 2);
    } finally {
      await store.close();
    }
    // Reopened: the last hard state and every entry are there; the first commit-only save after a reopen is unsynced
    // (the term and vote read back are durable).
    store = await RocksStorage.open(dataDir);
    try {
      const st = await store.load();
      assert.deepEqual(st.hardState, { term: 2, vote: 'n2', commit: 3 });
      assert.deepEqual(st.entries.map((e) => e.index), [1, 2, 3]);
      const s0 = store.logCalls().syncedWrite;
      await store.save({ hardState: { term: 2, vote: 'n2', commit: 3 } });
      assert.equal(store.logCalls().syncedWrite - s0, 0);
    } finally {
      await store.close();
    }
  });

  it('makes no Buffer per entry (keys and stored forms in reused scratch buffers), and reads back every entry as given, small, grown and over 1 MiB, after a reopen', async () => {
    const dataDir = join(root, 'data');
    const data = (i: number): Buffer => Buffer.alloc(i % 3 === 0 ? 20 : i % 3 === 1 ? 300 + i : 1200, i % 251);
    const entries: Entry[] = Array.from({ length: 1_000 }, (_, k) => ({ index: k + 1, term: 1 + Math.floor(k / 400), type: k % 97 === 0 ? 'conf' : 'normal', data: data(k) }));
    const big: Entry = { index: 1_001, term: 3, type: 'normal', data: Buffer.alloc(1024 * 1024 + 5, 7) };
    let store = await RocksStorage.open(dataDir);
    try {
      await store.load();
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: [{ index: 1, term: 1, type: 'normal', data: Buffer.from('warm') }] });
      const made = { allocUnsafe: 0, alloc: 0, from: 0 };
      const { allocUnsafe, alloc, from } = Buffer;
      Buffer.allocUnsafe = (size: number) => ((made.allocUnsafe += 1), allocUnsafe(size));
      Buffer.alloc = ((...args: Parameters<typeof Buffer.alloc>) => ((made.alloc += 1), alloc(...args))) as typeof Buffer.alloc;
      Buffer.from = ((...args: Parameters<typeof Buffer.from>) => ((made.from += 1), from(...args))) as typeof Buffer.from;
      try {
        // Overwrites entry 1 (same index) and appends 999 more, over 1 MiB at the end.
        await store.save({ hardState: { term: 3, vote: 'n2', commit: 0 }, entries });
      } finally {
        Buffer.allocUnsafe = allocUnsafe;
        Buffer.alloc = alloc;
        Buffer.from = from;
      }
      // Before: two Buffers an entry (its key and its stored form). Now: the hard state's, and the scratch grown a few times.
      const total = made.allocUnsafe + made.alloc + made.from;
      assert.ok(total <= 8, `${made.allocUnsafe} + ${made.alloc} + ${made.from} Buffers made for 1,000 entries`);
      await store.save({ entries: [big] });
      await store.close();
      store = await RocksStorage.open(dataDir);
      const loaded = await store.load();
      assert.deepEqual(loaded.hardState, { term: 3, vote: 'n2', commit: 0 });
      assert.equal(loaded.entries.length, 1_001);
      for (const [k, e] of [...entries, big].entries()) {
        const got = loaded.entries[k];
        assert.ok(got !== undefined && got.index === e.index && got.term === e.term && got.type === e.type && Buffer.compare(got.data, e.data) === 0, `entry ${e.index}`);
      }
    } finally {
      await store.close();
    }
  });
});

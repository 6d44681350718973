/**
 * RocksStorage.compact writes a compaction that keeps the log's suffix
 * outside the log queue: appends queued behind it are written while its
 * (synced) write is under way, and the log reads back whole either way.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Entry } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { ThreadpoolHold, stepsUntil, turnsUntil } from './helpers.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };
const entry = (index: number, term: number): Entry => ({ index, term, type: 'normal', data: Buffer.from(`e${index}`) });

describe('RocksStorage.compact and the appends behind it', function () {
  this.timeout(60_000);
  let root: string;
  beforeEach(async () => (root = await mkdtemp(join(tmpdir(), 'snapcoord-compaction-queue-'))));
  afterEach(async () => rm(root, { recursive: true, force: true }));

  it('writes an append queued behind a compaction while the compaction\'s write is under way', async () => {
    const dataDir = join(root, 'data');
    const pool = new ThreadpoolHold(root);
    let store = await RocksStorage.open(dataDir);
    try {
      await store.load();
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 20 }, entries: Array.from({ length: 20 }, (_, i) => entry(i + 1, 1)) });
      const calls = (): { get: number; write: number } => store.logCalls();
      const before = calls();
      // The pool is held; the compaction reads the term at its base (a threadpool job, queued).
      pool.holdAll();
      const compacted = store.compact({ index: 10, term: 1, membership });
      assert.ok(await turnsUntil(() => calls().get === before.get + 1), 'the compaction read the term at its base');
      // One thread is let go: it runs that read, then the hold queued now (first in, first out), so the
      // compaction's write, issued once the read is back, waits behind it.
      pool.hold();
      pool.releaseOldest();
      assert.ok(await stepsUntil(() => calls().write === before.write + 1), 'the compaction issued its write');
      const saved = store.save({ entries: [entry(21, 1)] });
      assert.ok(await turnsUntil(() => calls().write === before.write + 2), 'the append was issued while the compaction\'s write waited');
      await pool.releaseAll();
      await Promise.all([compacted, saved]);
    } finally {
      await pool.releaseAll();
      await store.close();
    }
    store = await RocksStorage.open(dataDir);
    try {
      const state = await store.load();
      assert.deepEqual({ index: state.logBase.index, term: state.logBase.term }, { index: 10, term: 1 });
      assert.deepEqual(state.entries.map((e) => e.index), Array.from({ length: 11 }, (_, i) => i + 11));
    } finally {
      await store.close();
    }
  });
});

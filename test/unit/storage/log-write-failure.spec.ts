/**
 * A write to the Raft log that fails (a real ENOSPC, on a tmpfs this test mounts: it needs root and a kernel that
 * lets it mount; elsewhere it is skipped with one line on stderr) is the last one the log takes: RocksDB, opened
 * with paranoid_checks off, accepts writes after a failed one and appends them after the partial record the
 * failure left in the write-ahead log, where the next open cannot reach them.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import type { Entry } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { findWalDamage } from '../../../src/storage/wal-check.js';
import { fillFs, tmpfsUnderTemp, unmountTmpfs } from '../../harness/tmpfs.js';
import { rejectsWith, stepsUntil, ThreadpoolHold, turnsUntil } from './helpers.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };
const entry = (index: number): Entry => ({ index, term: 1, type: 'normal', data: Buffer.from(`entry ${index} `.repeat(4)) });


describe('RocksStorage: a failed write to the Raft log', function () {
  this.timeout(60_000);
  let dir = '';
  let mnt = '';
  let mounted = false;

  before(async function () {
    ({ dir, mnt, mounted } = await tmpfsUnderTemp('snapcoord-log-write-failure-', 'size=16m,mode=0700', 'log-write-failure test'));
    if (!mounted) this.skip();
  });

  after(async () => {
    if (mounted) await unmountTmpfs(mnt);
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('a compaction whose write fails (ENOSPC) is the last write the log takes: the next save is refused even once space is back, and the log reopens with every write that succeeded', async () => {
    // Before: the save after it succeeded (synced), and the next open refused the data dir: its write-ahead log held a
    // record that does not verify (the failed compaction's) before the save's.
    const dataDir = join(mnt, 'data');
    let store = await RocksStorage.open(dataDir);
    await store.save({ hardState: { term: 1, vote: 'n1', commit: 2000 } });
    for (let i = 0; i < 20; i++) await store.save({ entries: Array.from({ length: 100 }, (_, k) => entry(i * 100 + k + 1)) });
    const filler = await fillFs(mnt);
    await rejectsWith(store.compact({ index: 1500, term: 1, membership }), 'io', /no space left on device/i);
    await rm(filler);
    await rejectsWith(store.save({ entries: [entry(2001)] }), 'io', /save refused: an earlier write to the Raft log failed .*no space left on device/i);
    await rejectsWith(store.compact({ index: 1500, term: 1, membership }), 'io', /compact refused: an earlier write to the Raft log failed/);
    await store.close();
    assert.equal(await findWalDamage(join(dataDir, 'log')), null);
    store = await RocksStorage.open(dataDir);
    try {
      const loaded = await store.load();
      assert.deepEqual(loaded.hardState, { term: 1, vote: 'n1', commit: 2000 });
      assert.equal(loaded.logBase.index, 0);
      assert.deepEqual(
        loaded.entries.map((e) => e.index),
        Array.from({ length: 2000 }, (_, i) => i + 1),
      );
      // A new open takes writes again.
      await store.save({ entries: [entry(2001)] });
      await store.compact({ index: 1500, term: 1, membership });
    } finally {
      await store.close();
    }
  });

  it('a save whose write was issued while a compaction\'s write was under way is refused when that write fails, even though its own landed', async () => {
    // compact() issues its write in the log queue and waits for it outside, so the save behind it is written meanwhile.
    // Here the compaction's write runs on a full disk and fails; the save's runs once space is back, and succeeds.
    // Before (with the first fix alone) the save resolved, and its entry was gone after a reopen.
    const dataDir = join(mnt, 'data-in-flight');
    const pool = new ThreadpoolHold(dir); // its FIFOs beside the tmpfs, not on it
    let store = await RocksStorage.open(dataDir);
    try {
      await store.save({ hardState: { term: 1, vote: 'n1', commit: 2000 } });
      for (let i = 0; i < 20; i++) await store.save({ entries: Array.from({ length: 100 }, (_, k) => entry(i * 100 + k + 1)) });
      const filler = await fillFs(mnt);
      const before = store.logCalls();
      pool.holdAll();
      let compactError: unknown = null;
      let compactDone = false;
      const compacted = store
        .compact({ index: 1500, term: 1, membership })
        .catch((err: unknown) => {
          compactError = err;
        })
        .finally(() => {
          compactDone = true;
        });
      assert.ok(await turnsUntil(() => store.logCalls().get === before.get + 1), 'the compaction read the term at its base');
      pool.hold(); // runs after that read, on its thread
      pool.releaseOldest();
      assert.ok(await stepsUntil(() => store.logCalls().write === before.write + 1), 'the compaction issued its write');
      pool.hold(); // runs after the compaction's write, on its thread
      const saved = store.save({ entries: [entry(2001)] });
      saved.catch(() => undefined);
      assert.ok(await turnsUntil(() => store.logCalls().write === before.write + 2), 'the save issued its write behind the compaction\'s');
      pool.releaseOldest(); // the compaction's write runs, on the full disk
      assert.ok(await stepsUntil(() => compactDone), 'the compaction settled');
      assert.match(String(compactError), /no space left on device/i);
      rmSync(filler); // on this thread: every pool thread is held
      pool.releaseOldest(); // the save's write runs, space back
      await rejectsWith(saved, 'io', /save refused: an earlier write to the Raft log failed .*no space left on device/i);
      await compacted;
    } finally {
      await pool.releaseAll();
      await store.close();
    }
    store = await RocksStorage.open(dataDir);
    try {
      const loaded = await store.load();
      assert.equal(loaded.logBase.index, 0);
      assert.equal(loaded.entries.at(-1)?.index, 2000);
    } finally {
      await store.close();
    }
  });
});

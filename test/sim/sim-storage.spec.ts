/**
 * The simulator's disk (SimStorage) keeps RocksStorage's rule for a failed write to the Raft log (types.ts LogStore,
 * review12): every later log write of that incarnation is refused with StorageError `io` naming the failure, so a
 * node cannot go on acknowledging after one; a restarted node reopens the log as it was (what succeeded, the failed
 * write's successors absent) and writes again.
 */
import assert from 'node:assert/strict';

import type { Entry } from '../../src/raft/types.js';
import { MemoryDataDir } from '../../src/storage/memory-storage.js';
import { StorageError } from '../../src/storage/storage-error.js';
import { SeededRng } from '../harness/rng.js';
import { NodeClock, SimClock } from './sim-clock.js';
import { NO_DISK_FAULTS, SimStorage, type DiskFaults, type DiskObserver } from './sim-storage.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const entry = (index: number): Entry => ({ index, term: 1, type: 'normal', data: Buffer.from(`e${index}`) });
const range = (from: number, to: number): Entry[] => Array.from({ length: to - from + 1 }, (_, i) => entry(from + i));

async function rejectsIo(p: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof StorageError && e.code === 'io' && message.test(e.message));
}

/** FailingDisk: a SimStorage factory on one data dir whose disk fails the next fault draw only (`faults`), counting draws. */
class FailingDisk {
  readonly dir = new MemoryDataDir('n1');
  readonly clock = new NodeClock(new SimClock());
  /** saves: the entries' indexes each save the checkers heard of carried. */
  readonly saves: number[][] = [];
  /** faultsLeft: how many more faults the disk may inject. */
  faultsLeft = 0;
  draws = 0;
  private readonly observer: DiskObserver = {
    onSave: (batch) => this.saves.push((batch.entries ?? []).map((e) => e.index)),
    onCompact: () => undefined,
    onStateWrite: () => undefined,
    onStateHash: () => undefined,
    onInstall: () => undefined,
  };

  open(faults: DiskFaults, seed = 1): Promise<SimStorage> {
    return SimStorage.open(this.dir, {
      observer: this.observer,
      clock: this.clock,
      faults,
      rng: new SeededRng(seed),
      mayFail: () => {
        this.draws++;
        if (this.faultsLeft <= 0) return false;
        this.faultsLeft--;
        return true;
      },
    });
  }
}

describe('sim: a failed log write on the simulated disk (SimStorage)', () => {
  it('a compaction that fails (ENOSPC) is the last log write the incarnation takes; after a crash the log is as it was and takes writes', async () => {
    const disk = new FailingDisk();
    let s = await disk.open({ ...NO_DISK_FAULTS, enospcChance: 1 });
    await s.save({ hardState: { term: 1, vote: 'n1', commit: 20 }, entries: range(1, 20) });
    disk.faultsLeft = 1;
    await rejectsIo(s.compact({ index: 15, term: 1, membership }), /sim disk n1: compact: ENOSPC/);
    const draws = disk.draws;
    // Before: this save was taken (and acknowledged by the node); on RocksDB it would be lost at the next open.
    await rejectsIo(s.save({ entries: [entry(21)] }), /n1: save refused: an earlier write to the Raft log failed \(sim disk n1: compact: ENOSPC/);
    await rejectsIo(s.save({ hardState: { term: 2, vote: 'n2', commit: 20 } }), /save refused/);
    await rejectsIo(s.compact({ index: 15, term: 1, membership }), /compact refused/);
    await rejectsIo(s.bootstrap(membership), /bootstrap refused/);
    assert.equal(disk.draws, draws, 'no fault drawn for a refused write');
    assert.equal(s.injected, 'ENOSPC');
    assert.deepEqual(disk.saves.at(-1), range(1, 20).map((e) => e.index), 'the checkers heard of no refused save');
    s.crash();
    await new Promise((resolve) => setImmediate(resolve)); // the crashed incarnation lets go of its data dir
    s = await disk.open({ ...NO_DISK_FAULTS, enospcChance: 1 });
    const loaded = await s.load();
    assert.deepEqual(loaded.hardState, { term: 1, vote: 'n1', commit: 20 });
    assert.equal(loaded.logBase.index, 0);
    assert.deepEqual(loaded.entries.map((e) => e.index), range(1, 20).map((e) => e.index));
    await s.save({ entries: [entry(21)] });
    await s.compact({ index: 15, term: 1, membership });
    assert.equal(s.lastIndex(), 21);
  });

  // Seeds whose compaction EIO did not land (2) and did (1): drawn from the disk's compaction stream (draw-sites.ts).
  for (const [seed, landed] of [[2, false], [1, true]] as const) {
    it(`a save called while a failing compaction (EIO, its bytes ${landed ? 'landed' : 'not landed'}) is still under way is refused too`, async () => {
      const disk = new FailingDisk();
      const s = await disk.open({ ...NO_DISK_FAULTS, writeErrorChance: 1 }, seed);
      await s.save({ entries: range(1, 20) });
      disk.faultsLeft = 1;
      const compacted = s.compact({ index: 15, term: 1, membership });
      const saved = s.save({ entries: [entry(21)] });
      await rejectsIo(compacted, /sim disk n1: compact: EIO/);
      await rejectsIo(saved, /save refused: an earlier write to the Raft log failed \(sim disk n1: compact: EIO/);
      assert.equal(disk.dir.log.at(-1)?.index, 20, 'the refused save never reached the disk');
      assert.equal(disk.dir.logBase.index, landed ? 15 : 0, `the failed compaction ${landed ? 'landed' : 'did not land'} (seed ${seed})`);
      await rejectsIo(s.save({ entries: [entry(21)] }), /save refused/);
    });
  }
});

/**
 * The simulator's state images (sim-state-image.ts, SimStorage): the twin of
 * RocksStorage's (test/unit/storage/state-image.spec.ts), with the same
 * checks on import — every name, size and SHA-256, the applied index and the
 * membership — and the old state kept whole on any refusal or crash.
 */
import assert from 'node:assert/strict';

import { CarriedRecordsDigest, verifyImageRecords } from '../../src/fsm/restore-digest.js';
import { MemoryDataDir } from '../../src/storage/memory-storage.js';
import type { StateImageChunk, StateImageSource } from '../../src/storage/state-image.js';
import { StorageError } from '../../src/storage/storage-error.js';
import type { HeldStateImage, KeyValue } from '../../src/storage/types.js';
import { NodeClock, SimClock } from './sim-clock.js';
import { SimStorage, type DiskObserver } from './sim-storage.js';

const membership = { voters: ['n1', 'n2'], learners: [], addresses: { n1: 'sim:n1', n2: 'sim:n2' } };
const quiet: DiskObserver = { onSave: () => undefined, onCompact: () => undefined, onStateWrite: () => undefined, onStateHash: () => undefined, onInstall: () => undefined };

function records(count: number, tag: string): KeyValue[][] {
  return [Array.from({ length: count }, (_, j) => ({ key: Buffer.from(`k/${String(j).padStart(3, '0')}`), value: Buffer.from(`${tag}${j}`) }))];
}

/** sourceOf: the held image as a peer would send it, with `change` applied to each chunk first. */
function sourceOf(held: HeldStateImage, change: (c: StateImageChunk) => StateImageChunk | null = (c) => c): StateImageSource {
  return {
    files: held.image.files,
    chunks: (async function* () {
      for await (const c of held.chunks()) {
        const out = change(c);
        if (out !== null) yield out;
      }
    })(),
  };
}

async function rejectsCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof StorageError && e.code === code && (message === undefined || message.test(e.message)));
}

describe('sim: state images on the simulated disk (SimStorage)', () => {
  let leader: SimStorage;
  let follower: SimStorage;
  let held: HeldStateImage;

  beforeEach(async () => {
    const clock = new NodeClock(new SimClock());
    leader = await SimStorage.open(new MemoryDataDir('n1'), { observer: quiet, clock });
    follower = await SimStorage.open(new MemoryDataDir('n2'), { observer: quiet, clock });
    await follower.installState(records(5, 'old'), { appliedIndex: 4, membership });
    await leader.installState(records(30, 'new'), { appliedIndex: 7, membership }, { exportImage: true });
    const h = leader.stateImage(7);
    assert.ok(h !== null, 'the exporting install kept an image');
    held = h;
  });

  it('an imported image holds the exporter\'s state (equal state digests); none of another index; none after a drop or a crash', async () => {
    assert.equal(leader.stateImage(6), null);
    assert.ok(held.image.files.filter((f) => f.name.endsWith('.sst')).length > 1 && held.image.files.some((f) => f.sizeBytes === 0), 'several SSTs and an empty WAL');
    await follower.importStateImage(sourceOf(held), { appliedIndex: 7, membership });
    assert.equal(follower.appliedIndex(), 7);
    assert.equal(await follower.stateDigest(), await leader.stateDigest());
    leader.dropStateImage();
    assert.equal(leader.stateImage(7), null);
    await leader.installState(records(3, 'again'), { appliedIndex: 9, membership }, { exportImage: true });
    assert.notEqual(leader.stateImage(9), null);
    leader.crash();
    assert.equal(leader.stateImage(9), null, 'never kept across a restart');
  });

  it('refuses a flipped byte, a lost or short chunk, names that are not RocksDB files, another index or membership: the old state kept whole', async () => {
    const before = await follower.stateDigest();
    const flipped = sourceOf(held, (c) => (c.file === held.image.files.length - 1 && c.offset === 0 ? { ...c, data: Uint8Array.from(c.data, (b, i) => (i === 0 ? b ^ 1 : b)) } : c));
    await rejectsCode(follower.importStateImage(flipped, { appliedIndex: 7, membership }), 'corrupt', /does not match its SHA-256/);
    const sst = held.image.files.findIndex((f) => f.name.endsWith('.sst'));
    await rejectsCode(follower.importStateImage(sourceOf(held, (c) => (c.file === sst ? null : c)), { appliedIndex: 7, membership }), 'corrupt', /ended at 0 bytes/);
    for (const name of ['../x.sst', 'LOCK', '.hidden', 'a/000010.sst']) {
      const renamed = { files: held.image.files.map((f, i) => (i === 0 ? { ...f, name } : f)), chunks: sourceOf(held).chunks };
      await rejectsCode(follower.importStateImage(renamed, { appliedIndex: 7, membership }), 'invalidArgument', /is not a RocksDB file name/);
    }
    await rejectsCode(follower.importStateImage(sourceOf(held), { appliedIndex: 9, membership }), 'corrupt', /applied index 7, not 9/);
    const other = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
    await rejectsCode(follower.importStateImage(sourceOf(held), { appliedIndex: 7, membership: other }), 'corrupt', /membership/);
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
  });

  it('runs verifyRecords on the imported state before its commit, as RocksStorage does: records that are not the restore entry\'s are refused, the old state kept whole', async () => {
    const before = await follower.stateDigest();
    const digestOf = (change: boolean): string => {
      const d = new CarriedRecordsDigest();
      for (const r of (records(30, 'new')[0] as KeyValue[])) d.add(change && Buffer.from(r.key).toString() === 'k/017' ? { key: r.key, value: Buffer.from('changed') } : r);
      return d.hex();
    };
    const named = digestOf(true);
    await rejectsCode(
      follower.importStateImage(sourceOf(held), { appliedIndex: 7, membership }, { verifyRecords: verifyImageRecords(named) }),
      'corrupt',
      new RegExp(`its 30 carried records have records digest ${digestOf(false)}, but the restore entry names ${named}`),
    );
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
    await follower.importStateImage(sourceOf(held), { appliedIndex: 7, membership }, { verifyRecords: verifyImageRecords(digestOf(false)) });
    assert.equal(await follower.stateDigest(), await leader.stateDigest());
  });

  it('a crash during an import leaves the old state on the disk (the commit never happens)', async () => {
    const dir = new MemoryDataDir('n3');
    const clock = new NodeClock(new SimClock());
    const s = await SimStorage.open(dir, { observer: quiet, clock });
    await s.installState(records(5, 'old'), { appliedIndex: 4, membership });
    const stalled = sourceOf(held, (c) => {
      if (c.file === held.image.files.length - 1) s.crash(); // the process dies while the last file arrives
      return c;
    });
    void s.importStateImage(stalled, { appliedIndex: 7, membership }).catch(() => undefined);
    await new Promise((resolve) => setImmediate(resolve));
    const again = await SimStorage.open(dir, { observer: quiet, clock });
    assert.equal(again.appliedIndex(), 4);
    assert.equal(again.stateImage(7), null);
  });
});

/**
 * SnapshotManager.quarantineIfDamaged (Node.quarantineDamagedSnapshot: a
 * download's or an export's chunk check found a stored archive damaged)
 * re-hashes the archive once however many readers found it damaged at the
 * same time. Before (review22), each of them ran a scrub of it: a verify
 * outside the store's lock and, finding it damaged, another under the lock,
 * so 4 readers stopped at one bad chunk read the whole archive 5 times
 * (this test without the change), each later one too until it was gone.
 */
import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import type { Membership } from '../../../src/raft/types.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import type { FileReadStreamOptions } from '../../../src/snapshot/snapshot-io.js';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();

/** CountingIo: a MemorySnapshotIo that counts the whole reads (createReadStream) of archive files. */
class CountingIo extends MemorySnapshotIo {
  archiveReads = 0;
  override createReadStream(path: string, options: FileReadStreamOptions): Readable {
    if (path.endsWith('/archive.tar.gz')) this.archiveReads++;
    return super.createReadStream(path, options);
  }
}

describe('SnapshotManager.quarantineIfDamaged: one re-hash for every reader at once', () => {
  it('4 readers finding the same archive damaged: it is read once, quarantined once, and all are told it was moved', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const sm = await StateMachine.open(storage);
    for (let i = 1; i <= 3; i++) {
      const [r] = await sm.apply([{ entry: { index: i, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode(`k${i}`), value: enc.encode('v'.repeat(200)) }) } }]);
      assert.ok(r?.ok);
    }
    const io = new CountingIo();
    const m = await SnapshotManager.open('/d/snapshots', storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', systemClock, io);
    try {
      const made = await m.create(() => 3, () => membership);
      const size = (await io.readFile(made.path)).length;
      io.flipBit(made.path, Math.floor(size / 2), 5);
      io.archiveReads = 0;
      const moved = await Promise.all(Array.from({ length: 4 }, () => m.quarantineIfDamaged(made.id)));
      assert.equal(io.archiveReads, 1, 'the archive is re-hashed once');
      assert.deepEqual(moved, [true, true, true, true]);
      assert.deepEqual(await m.store.list(), []);
      // One that comes after it was moved finds it gone: false, nothing read.
      assert.equal(await m.quarantineIfDamaged(made.id), false);
      assert.equal(io.archiveReads, 1);
      assert.equal((await m.store.quarantined()).names.length, 1);
    } finally {
      await m.close();
    }
  });

  it('an archive that verifies is left in place (false), read once for all readers', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const io = new CountingIo();
    const m = await SnapshotManager.open('/d/snapshots', storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', systemClock, io);
    try {
      const made = await m.create(() => 0, () => membership);
      io.archiveReads = 0;
      assert.deepEqual(await Promise.all([m.quarantineIfDamaged(made.id), m.quarantineIfDamaged(made.id)]), [false, false]);
      assert.equal(io.archiveReads, 1);
      assert.equal((await m.store.list()).length, 1);
    } finally {
      await m.close();
    }
  });
});

/**
 * SnapshotManager.boot and a newest stored snapshot whose bytes no longer
 * match their recorded hashes: it is moved to quarantine (kept for an
 * operator, out of the store), so that receiving that very snapshot again
 * stores the good bytes under its id (real-node simulator seed 202216, 3
 * nodes: the damaged copy stayed in place, the fetch that followed found it
 * under the same id with the same recorded digest, kept it instead of the
 * bytes it had just received, and its install failed).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import type { Membership } from '../../../src/raft/types.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { QUARANTINE_DIR } from '../../../src/snapshot/store.js';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();
const DIR = '/d/snapshots';

describe('SnapshotManager.boot and a damaged newest snapshot', () => {
  it('moves it to quarantine; the same snapshot received again is stored from the bytes received', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const sm = await StateMachine.open(storage);
    for (let i = 1; i <= 3; i++) {
      const [r] = await sm.apply([{ entry: { index: i, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode(`k${i}`), value: enc.encode('v'.repeat(200)) }) } }]);
      assert.ok(r?.ok);
    }
    const io = new MemorySnapshotIo();
    const first = await SnapshotManager.open(DIR, storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', systemClock, io);
    const made = await first.create(() => 1, () => membership);
    const good = await io.readFile(made.path);
    await first.close();

    // One byte of its archive changes on the disk while the node is down.
    io.flipBit(made.path, Math.floor(good.length / 2), 3);
    const second = await SnapshotManager.open(DIR, storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', systemClock, io);
    const base = await second.boot(membership);
    assert.equal(base.index, 0, 'no snapshot verifies: the node starts without a base');
    assert.deepEqual(await second.store.list(), [], 'the damaged snapshot is out of the store');
    const quarantined = (await io.readdir(join(DIR, 'store', QUARANTINE_DIR))).map((e) => e.name);
    assert.equal(quarantined.length, 1);
    assert.ok(quarantined[0]?.startsWith(made.id), quarantined.join());

    // The leader sends that snapshot again: the bytes received are the ones stored, and they install.
    const again = await second.store.receiveArchive(
      { digest: made.archiveSha256, sizeBytes: made.archiveBytes, index: made.meta.index, term: made.meta.term },
      async (sink) => {
        await sink.write(good);
      },
      { maxBytes: 1 << 20 },
    );
    assert.equal(again.id, made.id);
    assert.deepEqual(await io.readFile(again.path), good);
    await second.install(again);
    await second.close();
  });
});

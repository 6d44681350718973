/**
 * SnapshotManager.create when the snapshot it is about to write is stored
 * already: an earlier attempt (a restore's copy) reported a failure after it
 * landed (its rename returned EIO), and the next automatic snapshot, of the
 * same term and index in the same millisecond, was refused `already-exists`
 * and logged as a failure (real-node simulator seed 48 of 3 and 5 nodes,
 * with the snapshot disk's EIO). The stored one is that snapshot.
 */
import assert from 'node:assert/strict';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import type { Membership } from '../../../src/raft/types.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();

describe('SnapshotManager.create and a snapshot an earlier attempt stored', () => {
  it('takes the stored snapshot of that term and index instead of failing already-exists', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const [r] = await (await StateMachine.open(storage)).apply([{ entry: { index: 1, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode('k'), value: enc.encode('v') }) } }]);
    assert.ok(r?.ok);
    const io = new MemorySnapshotIo(); // its wall clock stands still: the same millisecond
    const m = await SnapshotManager.open('/d/snapshots', storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 }, silentLogger, 'test', systemClock, io);
    const reader = await storage.snapshotState();
    const landed = await m.store.createFromRecords({ index: 1, term: 1, membership }, reader.batches());
    await reader.close();
    const s = await m.create(() => 1, () => membership);
    assert.equal(s.id, landed.id);
    assert.deepEqual((await m.store.list()).map((x) => x.id), [landed.id]);
    await m.close();
  });
});

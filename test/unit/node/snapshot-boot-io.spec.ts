/**
 * SnapshotManager.boot and a read that fails: an EIO while verifying the
 * newest stored snapshot says nothing of its bytes, so boot stops on it
 * rather than fall back to an older snapshot (with the log compacted past
 * that one, the node then refused to start as if its data dir were lost:
 * real-node simulator seed 20394 of 3 nodes, with the snapshot disk's EIO);
 * nor does a snapshot whose meta.json cannot be read go unlisted (seed 21654).
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
import type { FileReadStreamOptions, SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { Readable } from 'node:stream';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();

describe('SnapshotManager.boot on a disk whose reads fail', () => {
  it('an EIO reading the newest snapshot fails the boot (the node stops on it); once the disk reads again, boot starts from that snapshot', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const [r] = await (await StateMachine.open(storage)).apply([{ entry: { index: 1, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode('k'), value: enc.encode('v') }) } }]);
    assert.ok(r?.ok);
    const io = new MemorySnapshotIo();
    const policy = { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 };
    const first = await SnapshotManager.open('/d/snapshots', storage, policy, silentLogger, 'test', systemClock, io);
    const s = await first.create(() => 1, () => membership);
    await first.close();

    const eio = Object.assign(new Error("EIO: i/o error, read"), { code: 'EIO' });
    const failing: SnapshotIo = Object.assign(Object.create(io) as SnapshotIo, {
      open: (path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number) => (path.endsWith('archive.tar.gz') ? Promise.reject(eio) : io.open(path, flags, mode)),
      createReadStream: (path: string, options: FileReadStreamOptions) =>
        path.endsWith('archive.tar.gz') ? new Readable({ read(): void { this.destroy(eio); } }) : io.createReadStream(path, options),
    });
    const second = await SnapshotManager.open('/d/snapshots', storage, policy, silentLogger, 'test', systemClock, failing);
    await assert.rejects(second.boot(membership), (err: unknown) => /EIO/.test(`${(err as Error).message} ${String((err as { cause?: unknown }).cause)}`));
    await second.close();

    // Its meta.json unreadable (EIO): the store is not listed as empty (boot would start from no snapshot: seed 21654).
    const metaEio: SnapshotIo = Object.assign(Object.create(io) as SnapshotIo, {
      open: (path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number) => (path.endsWith('meta.json') ? Promise.reject(eio) : io.open(path, flags, mode)),
    });
    await assert.rejects(SnapshotManager.open('/d/snapshots', storage, policy, silentLogger, 'test', systemClock, metaEio), /EIO/);

    const third = await SnapshotManager.open('/d/snapshots', storage, policy, silentLogger, 'test', systemClock, io);
    const booted = await third.boot(membership);
    assert.equal(booted.index, s.meta.index);
    await third.close();
  });
});

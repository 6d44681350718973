/**
 * SnapshotManager.create keeps the snapshot it wrote open as its newest with
 * what it wrote (SnapshotStore.openWritten): its meta.json and chunks.sha256
 * are not read back from the disk it just wrote them to (each automatic
 * snapshot did: a simulator seed takes ~10), only the archive's size checked.
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
import type { SnapshotFile } from '../../../src/snapshot/snapshot-io.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();

/** ReadCountingIo: a disk in memory that notes each file opened for reading and each file read whole. */
class ReadCountingIo extends MemorySnapshotIo {
  readonly reads: string[] = [];
  override open(path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number): Promise<SnapshotFile> {
    if (flags === 'r' && /\.(json|sha256|gz)$/.test(path)) this.reads.push(path);
    return super.open(path, flags, mode);
  }
  override readFile(path: string): Promise<Buffer> {
    this.reads.push(path);
    return super.readFile(path);
  }
}

async function* batches(records: StateRecord[]): AsyncGenerator<readonly StateRecord[]> {
  yield records;
}

describe('a snapshot just written is opened with what was written (openWritten)', () => {
  it('SnapshotManager.create keeps its snapshot as the newest without reading its meta.json or chunks.sha256 back; served and verified as before', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const fsm = await StateMachine.open(storage);
    const io = new ReadCountingIo();
    const sm = await SnapshotManager.open('/d/snapshots', storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 }, silentLogger, 'test', systemClock, io);
    for (let i = 1; i <= 3; i++) {
      await fsm.apply([{ entry: { index: i, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode(`k${i}`), value: enc.encode(`v${i}`) }) } }]);
      io.reads.length = 0;
      const s = await sm.create(() => 1, () => membership);
      const own = io.reads.filter((p) => p.includes(s.id));
      assert.deepEqual(own, [], `snapshot ${i}: read back after it was written: ${own.join(', ')}`);
      const current = await sm.openCurrent();
      assert.ok(current !== null);
      assert.equal(current.id, s.id);
      assert.equal(current.archiveSha256, s.archiveSha256);
      assert.ok(current.verified);
      current.release();
      await sm.store.verify(s.id);
    }
    await sm.close();
  });

  it('opens once per returned snapshot, like open(): the same handle fields; a second call, another object or a changed archive go through open()', async () => {
    const io = new ReadCountingIo();
    const store = await SnapshotStore.open('/s', { retain: 3, io });
    const stored = await store.createFromRecords({ index: 5, term: 2, membership }, batches([{ key: enc.encode('a'), value: enc.encode('1') } as StateRecord]));
    io.reads.length = 0;
    const h = await store.openWritten(stored);
    assert.deepEqual(io.reads, []);
    const o = await store.open(stored.id);
    assert.deepEqual({ ...h, release: null, createReadStream: null, readFrames: null, createCheckedReadStream: null, createChunkCheckedReadStream: null, createServedReadStream: null, trusted: null }, { ...o, release: null, createReadStream: null, readFrames: null, createCheckedReadStream: null, createChunkCheckedReadStream: null, createServedReadStream: null, trusted: null });
    assert.notEqual(h.meta, stored.meta, 'a copy of its own');
    h.release();
    o.release();
    io.reads.length = 0;
    (await store.openWritten(stored)).release();
    assert.ok((io.reads as string[]).some((p: string) => p.endsWith('meta.json')), 'a second call reads as open() does');
    const other = await store.createFromRecords({ index: 6, term: 2, membership }, batches([{ key: enc.encode('b'), value: enc.encode('2') } as StateRecord]));
    const f = await io.open(other.path, 'w');
    await f.write(Buffer.from('short'), 0, 5, 0);
    await f.close();
    await assert.rejects(store.openWritten(other), /archive\.tar\.gz is 5 bytes but meta\.json says/);
  });
  it('a crash between the write and the open (a power loss right after create returned, nothing unsynced kept): the next process finds the snapshot as written and opens and verifies it from the disk', async () => {
    const io = new ReadCountingIo();
    const store = await SnapshotStore.open('/s', { retain: 3, io });
    const stored = await store.createFromRecords({ index: 5, term: 2, membership }, batches([{ key: enc.encode('a'), value: enc.encode('1') } as StateRecord]));
    // The process dies before openWritten: what it held in memory is gone, and so is every write not synced.
    io.loseUnsynced(() => false);
    const next = await SnapshotStore.open('/s', { retain: 3, io });
    assert.deepEqual((await next.list()).map((x) => x.id), [stored.id]);
    io.reads.length = 0;
    const h = await next.openWritten(stored); // another store's object: opened as open() opens it, from the disk
    assert.ok(io.reads.some((p) => p.endsWith('meta.json')) && io.reads.some((p) => p.endsWith('chunks.sha256')), io.reads.join(', '));
    assert.equal(h.archiveSha256, stored.archiveSha256);
    h.release();
    await next.verify(stored.id);
  });
});

/**
 * DiskGuard (the free-space reserve of a data dir) and a Node behind one:
 * below the reserve new writes are refused with NodeError `diskFull` and a
 * message that says why; reads and status go on. The real thing (a full
 * tmpfs, space coming back) is test/chaos/disk-full.spec.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DiskGuard, isNoSpace } from '../../../src/node/disk-guard.js';
import { NodeError } from '../../../src/node/errors.js';
import { Node } from '../../../src/node/node.js';
import { silentLogger, type Logger } from '../../../src/node/logger.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { withPath } from '../../../src/snapshot/file-sink.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import type { Membership } from '../../../src/raft/types.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('node: disk guard', () => {
  let dir = '';
  const nodes: Node[] = [];
  const dataDir = new MemoryDataDir('n1');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-disk-guard-'));
  });

  after(async () => {
    for (const n of nodes) await n.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** startNode: node n1 alone (memory storage, snapshots under dir) behind a guard keeping `minFreeBytes` free. */
  const startNode = async (minFreeBytes: number): Promise<{ node: Node; guard: DiskGuard }> => {
    const id = 'n1';
    const storage = await MemoryStorage.open(dataDir);
    const snapshots = await SnapshotManager.open(join(dir, id, 'snapshots'), storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', systemClock);
    const guard = new DiskGuard(dir, minFreeBytes, silentLogger, systemClock);
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id,
      storage,
      snapshots,
      transport: { send() {}, setPeers() {}, close: async () => {} },
      initialMembership: { voters: [id], learners: [], addresses: { [id]: '127.0.0.1:1' } },
      diskGuard: guard,
    });
    nodes.push(node);
    const deadline = Date.now() + 5_000;
    while (node.status().role !== 'leader') {
      if (Date.now() > deadline) throw new Error(`${id} did not elect itself`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return { node, guard };
  };

  it('isNoSpace: ENOSPC, RocksDB "No space left on device" (also as a cause) and NodeError diskFull; nothing else', () => {
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
    assert.equal(isNoSpace(enospc), true);
    assert.equal(isNoSpace(new StorageError('io', 'rocksdb: put failed', { cause: new Error('IO error: No space left on device') })), true);
    assert.equal(isNoSpace(new NodeError('diskFull', 'disk full')), true);
    assert.equal(isNoSpace(new NodeError('unavailable', 'the node failed: No space left on device')), false);
    assert.equal(isNoSpace(Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' })), false);
    assert.equal(isNoSpace('ENOSPC'), false);
  });

  it('withPath names the file in a write error that named none, keeping its code', () => {
    const e = withPath(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' }), '/d/state.bin');
    assert.equal(e.message, "ENOSPC: no space left on device, write '/d/state.bin'");
    assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
    const named = Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), { code: 'ENOENT', syscall: 'open', path: '/x' });
    assert.equal(withPath(named, '/d/state.bin'), named);
  });

  it('a guard with room lets everything through', async () => {
    const { node, guard } = await startNode(1);
    assert.equal(guard.isFull, false);
    assert.equal(node.status().diskFull, false);
    await node.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v1') });
    await node.snapshotNow();
    await node.stop();
  });

  it('below the reserve: puts, deletes, membership changes and snapshots are refused with a clear diskFull error; reads are served', async () => {
    const { node, guard } = await startNode(Number.MAX_SAFE_INTEGER); // the same data, now on a "full disk"
    assert.equal(guard.isFull, true);
    assert.equal(node.status().diskFull, true);
    const refused = (err: unknown): boolean => {
      assert.ok(err instanceof NodeError, String(err));
      assert.equal(err.code, 'diskFull');
      assert.match(err.message, /^disk full: \d+\.\d MiB free on .+, below the reserve of \d+(\.\d)? MiB \(--min-free-bytes\); writes are refused, reads still served$/);
      assert.ok(err.message.includes(dir), err.message);
      return true;
    };
    await assert.rejects(node.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v') }), refused);
    await assert.rejects(node.propose({ op: 'delete', key: enc.encode('k') }), refused);
    await assert.rejects(node.changeMembership({ op: 'addLearner', nodeId: 'n9', address: '127.0.0.1:2' }), refused);
    await assert.rejects(node.snapshotNow(), refused);
    assert.equal(dec.decode(await node.get(enc.encode('k'))), 'v1', 'linearizable read: the old value');
    assert.equal(dec.decode(await node.get(enc.encode('k'), true)), 'v1', 'serializable read');
    assert.deepEqual((await node.range({ prefix: enc.encode('k'), limit: 10 })).kvs.map((kv) => dec.decode(kv.value)), ['v1']);
  });
});

describe('node: automatic snapshots after a failure', () => {
  let node: Node | undefined;

  after(async () => {
    await node?.stop();
  });

  it('are logged and retried with a backoff (1 s, 2 s, ...), not at every Ready', async () => {
    const attempts: number[] = [];
    const logged: { obj: object; msg: string | undefined }[] = [];
    const log: Logger = { ...silentLogger, error: (obj, msg) => logged.push({ obj, msg }) };
    // A snapshot manager whose every snapshot fails as on a full disk, due after every entry.
    const failing = {
      policy: { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 1 },
      boot: async (membership: Membership) => ({ index: 0, term: 0, membership, sizeBytes: 0, digest: '' }),
      create: async () => {
        attempts.push(Date.now());
        throw Object.assign(new Error("ENOSPC: no space left on device, write '/d/state.bin'"), { code: 'ENOSPC', syscall: 'write' });
      },
      keepWhileInUse: () => undefined,
      startPeriodicScrub: () => undefined,
      scrubStatus: () => ({ intervalMs: 0, runs: 0, bytes: 0, damaged: 0, lastAgoMs: null }),
      close: async () => {},
    } as unknown as SnapshotManager;
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'a1',
      storage: await MemoryStorage.open(),
      snapshots: failing,
      transport: { send() {}, setPeers() {}, close: async () => {} },
      initialMembership: { voters: ['a1'], learners: [], addresses: { a1: '127.0.0.1:1' } },
      logger: log,
    });
    const deadline = Date.now() + 5_000;
    while (node.status().role !== 'leader') {
      if (Date.now() > deadline) throw new Error('a1 did not elect itself');
      await new Promise((r) => setTimeout(r, 10));
    }
    // 2.5 s of writes: a Ready after each, every one of them a chance to snapshot.
    const start = Date.now();
    let writes = 0;
    while (Date.now() - start < 2_500) {
      await node.propose({ op: 'put', key: enc.encode(`k${writes++}`), value: enc.encode('v') });
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(writes > 20, `${writes} writes`);
    assert.ok(attempts.length >= 2 && attempts.length <= 3, `${attempts.length} attempts in 2.5 s, at ms ${attempts.slice(0, 8).map((t) => t - start).join(', ')}`);
    assert.ok((attempts[1] as number) - (attempts[0] as number) >= 900, 'the first retry waits about 1 s');
    const failures = logged.filter((l) => l.msg === 'automatic snapshot failed; retrying later');
    assert.equal(failures.length, attempts.length);
    assert.deepEqual(
      failures.map((l) => (l.obj as { retryMs: number }).retryMs),
      [1_000, 2_000, 4_000].slice(0, attempts.length),
    );
    assert.match((failures[0]?.obj as { err: string }).err, /no space left on device/);
  });
});

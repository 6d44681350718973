/**
 * A follower's install overlaps its fetch (src/node/overlapped-install.ts,
 * issue 15: install >= 0.6x of its own fetch): the snapshot worker reads the
 * archive as the fetch's sink writes it, never past the bytes written, and
 * the records go into a staged state generation that becomes the state only
 * when install() commits it. Counted, not timed: records are staged while
 * the fetch still holds its last chunk back. A fetch cut half-way, or an
 * archive refused at its end, leaves the state untouched and no staged
 * generation on disk.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import { writeArchiveFromRecords } from '../../../src/snapshot/index.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { SnapshotChunk, SnapshotStreamOpener } from '../../../src/transport/transport.js';
import type { SnapshotMeta } from '../../../src/raft/types.js';

const enc = new TextEncoder();
const MEMBERSHIP = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' } };
const CHUNK = 1024 * 1024;
const KEYS = 3_000;
const VALUE_BYTES = 4096;

/** archive: a snapshot archive as the leader writes it, of KEYS records of VALUE_BYTES pseudo-random bytes (~12 MiB, incompressible). */
async function archive(dir: string): Promise<Buffer> {
  let seed = 7;
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < KEYS; i += 500) {
      const b: StateRecord[] = [];
      for (let j = i; j < Math.min(KEYS, i + 500); j++) {
        const value = Buffer.allocUnsafe(VALUE_BYTES);
        for (let k = 0; k < VALUE_BYTES; k += 4) value.writeUInt32LE((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0), k);
        b.push({ key: Buffer.from(`k/${String(j).padStart(8, '0')}`), value });
      }
      yield b;
    }
  }
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      cb();
    },
  });
  const meta = { id: 't', index: 42, term: 2, membership: MEMBERSHIP, createdAt: new Date().toISOString(), snapcoordVersion: 'test' };
  await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, 'spool') }, out);
  await new Promise<void>((resolve) => out.end(resolve));
  return Buffer.concat(parts);
}

/** until: waits for `cond` (polled), at most `limitMs`; returns whether it held. */
async function until(cond: () => boolean, limitMs: number): Promise<boolean> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > limitMs) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/**
 * sender: a FetchSnapshot opener serving `bytes` in 1 MiB chunks, each with its SHA-256. Before the chunk at
 * `holdAt` (default: the last) it waits for `hold()`; with `cutAt` it fails the fetch there for good (NOT_FOUND).
 */
function sender(bytes: Buffer, hold: () => Promise<void>, options: { readonly cutAt?: number } = {}): SnapshotStreamOpener {
  return {
    openSnapshotStream: (_address, p) => {
      let cancelled = false;
      async function* chunks(): AsyncGenerator<SnapshotChunk> {
        for (let at = p.offset; at < bytes.length && !cancelled; at += CHUNK) {
          const data = bytes.subarray(at, at + CHUNK);
          const last = at + data.length >= bytes.length;
          if (last || (options.cutAt !== undefined && at >= options.cutAt)) await hold();
          if (options.cutAt !== undefined && at >= options.cutAt) throw Object.assign(new Error('the leader lost it'), { code: 5 });
          yield { offset: at, data: Uint8Array.from(data), sha256: createHash('sha256').update(data).digest(), totalSizeBytes: bytes.length, last };
        }
      }
      return {
        chunks: chunks(),
        cancel: () => {
          cancelled = true;
        },
      };
    },
  };
}

describe('a follower install overlaps its fetch (issue 15)', function () {
  this.timeout(120_000);
  let dir: string;
  let bytes: Buffer;
  const opened: { close(): Promise<void> }[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-install-overlap-'));
    bytes = await archive(dir);
  });
  afterEach(async () => {
    for (const o of opened.splice(0)) await o.close().catch(() => undefined);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** follower: a RocksStorage at applied index 3 holding own/a, and a SnapshotManager over it overlapping every fetch on the worker. */
  async function follower(name: string): Promise<{ storage: RocksStorage; sm: SnapshotManager; dataDir: string }> {
    const dataDir = join(dir, `${name}-data`);
    const storage = await RocksStorage.open(dataDir);
    opened.push(storage);
    await storage.installState([[{ key: enc.encode('own/a'), value: enc.encode('1') }]], { appliedIndex: 3, membership: MEMBERSHIP });
    const sm = await SnapshotManager.open(join(dir, `${name}-snap`), storage, { ...DEFAULT_SNAPSHOT_POLICY, retain: 2 }, silentLogger, 'test', systemClock);
    opened.unshift(sm);
    sm.installReadOn = 'worker';
    sm.overlapInstall = true;
    sm.overlapMinArchiveBytes = 0;
    return { storage, sm, dataDir };
  }

  function target(digest: string): SnapshotMeta {
    return { index: 42, term: 2, membership: MEMBERSHIP, sizeBytes: bytes.length, digest };
  }

  /** generations: the state-<gen> directories in a data dir. */
  async function generations(dataDir: string): Promise<string[]> {
    return (await readdir(dataDir)).filter((n) => /^state-\d+$/.test(n)).sort();
  }

  it('records are staged while the fetch still holds its last chunk back; install() commits them', async () => {
    const { storage, sm } = await follower('overlap');
    const digest = createHash('sha256').update(bytes).digest('hex');
    let stagedBeforeLast = 0;
    sm.streams = sender(bytes, async () => {
      // The last chunk is held until records of the archive's first chunks are in the staged state (at most 60 s).
      await until(() => sm.overlapRecordsStaged > 0, 60_000);
      stagedBeforeLast = sm.overlapRecordsStaged;
    });
    const { stored } = await sm.fetch('n2', 'leader:1', target(digest));
    assert.ok(stagedBeforeLast > 0, `records staged before the fetch's last chunk arrived: ${stagedBeforeLast}`);
    assert.ok(sm.installOverlap.recordsWhileFetching >= stagedBeforeLast, JSON.stringify(sm.installOverlap));
    // Nothing of it is the state until install().
    assert.equal(storage.appliedIndex(), 3);
    assert.equal(Buffer.from((await storage.get(enc.encode('own/a'))) ?? []).toString(), '1');
    await sm.install(stored);
    assert.deepEqual({ ...sm.installOverlap, recordsWhileFetching: 0 }, { started: 1, committed: 1, fellBack: 0, recordsWhileFetching: 0 });
    assert.equal(storage.appliedIndex(), 42);
    assert.equal(await storage.get(enc.encode('own/a')), undefined, 'the whole state replaced');
    assert.equal((await storage.get(enc.encode('k/00002999')))?.length, VALUE_BYTES);
    assert.equal(sm.installReadOnWorker.keys, KEYS);
    assert.deepEqual(sm.installHashedBytes, { archive: bytes.length, state: 0 }, 'each byte of the archive hashed once by the install (the whole digest)');
    // The same state as an install that reads the stored archive after its fetch.
    const plain = await follower('plain');
    plain.sm.installReadOn = 'here';
    plain.sm.overlapInstall = false;
    plain.sm.streams = sender(bytes, async () => undefined);
    await plain.sm.install((await plain.sm.fetch('n2', 'leader:1', target(digest))).stored);
    assert.equal(plain.sm.installOverlap.started, 0);
    assert.equal(await storage.stateDigest(), await plain.storage.stateDigest());
    // Its member table was recorded, and the snapshot is the newest, verified.
    const table = await sm.store.members(stored);
    assert.ok(table !== null && table.state.length > 0);
  });

  it('a fetch cut half-way leaves the state untouched and no staged generation', async () => {
    const { storage, sm, dataDir } = await follower('cut');
    const digest = createHash('sha256').update(bytes).digest('hex');
    const before = await generations(dataDir);
    sm.streams = sender(bytes, () => until(() => sm.overlapRecordsStaged > 0, 60_000).then(() => undefined), { cutAt: 6 * CHUNK });
    await assert.rejects(sm.fetch('n2', 'leader:1', target(digest)), /lost it/);
    assert.equal(sm.installOverlap.started, 1);
    assert.equal(storage.appliedIndex(), 3);
    assert.equal(Buffer.from((await storage.get(enc.encode('own/a'))) ?? []).toString(), '1');
    assert.equal(await storage.get(enc.encode('k/00000000')), undefined);
    assert.deepEqual(await generations(dataDir), before, 'the staged generation was deleted');
  });

  it('an archive whose whole digest is not the one claimed is refused at install: the staged state is never committed', async () => {
    const { storage, sm, dataDir } = await follower('claimed');
    const before = await generations(dataDir);
    const wrong = createHash('sha256').update('not the archive').digest('hex');
    sm.streams = sender(bytes, async () => undefined);
    const { stored } = await sm.fetch('n2', 'leader:1', target(wrong));
    await assert.rejects(sm.install(stored), /SHA-256/);
    assert.deepEqual({ committed: sm.installOverlap.committed, fellBack: sm.installOverlap.fellBack }, { committed: 0, fellBack: 1 });
    assert.equal(storage.appliedIndex(), 3);
    assert.equal(Buffer.from((await storage.get(enc.encode('own/a'))) ?? []).toString(), '1');
    assert.deepEqual(await generations(dataDir), before);
  });

  it('a staged state nobody installs is discarded by the next fetch and by close()', async () => {
    const { storage, sm, dataDir } = await follower('dropped');
    const before = await generations(dataDir);
    const digest = createHash('sha256').update(bytes).digest('hex');
    sm.streams = sender(bytes, async () => undefined);
    await sm.fetch('n2', 'leader:1', target(digest));
    await sm.close();
    assert.deepEqual(await generations(dataDir), before);
    assert.equal(storage.appliedIndex(), 3);
  });
});

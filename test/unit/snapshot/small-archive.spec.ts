/**
 * The in-memory archive of a small state (small-archive.ts) and the store's
 * choice between it and the streaming way (createFromRecords): the same
 * records give the same archive bytes either way, the archive reads back and
 * verifies, and the threshold is where its documentation says.
 */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { readArchive, writeArchiveFromRecords } from '../../../src/snapshot/archive.js';
import { StateFormatError } from '../../../src/snapshot/errors.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { SMALL_STATE_BYTES_MAX, buildSmallArchive, takeSmallState } from '../../../src/snapshot/small-archive.js';
import { checkedStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import { MEMBERSHIP, collect, inBatches, records, sha256, tempDir } from './helpers.js';

const CREATED_AT = '2026-01-02T03:04:05.678Z';
const META = { id: 'small-1', index: 42, term: 3, membership: MEMBERSHIP, createdAt: CREATED_AT, snapcoordVersion: '9.9.9' };

/** stateBytesOf: state.bin's size for `all` (8 bytes of lengths per record). */
function stateBytesOf(all: readonly StateRecord[]): number {
  return all.reduce((n, r) => n + 8 + r.key.length + r.value.length, 0);
}

/** random: incompressible bytes from a seed (so a block is stored, not deflated). */
function random(n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function streamed(all: readonly StateRecord[], dir: string, options: { gzipLevel?: number; gzipBlockBytes?: number } = {}) {
  const chunks: Buffer[] = [];
  const { Writable } = await import('node:stream');
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  const result = await writeArchiveFromRecords(META, { records: inBatches(all, 37), spoolPath: join(dir, 'spool') }, out, options);
  return { result, bytes: Buffer.concat(chunks) };
}

async function inMemory(all: readonly StateRecord[], options: { gzipLevel?: number; gzipBlockBytes?: number } = {}) {
  const taken = await takeSmallState(inBatches(all, 37), { ...(options.gzipBlockBytes !== undefined ? { gzipBlockBytes: options.gzipBlockBytes } : {}) });
  assert.equal(taken.kind, 'small');
  if (taken.kind !== 'small') throw new Error('unreachable');
  return buildSmallArchive(META, taken.encoder, options.gzipLevel !== undefined ? { gzipLevel: options.gzipLevel } : {});
}

async function readBack(bytes: Buffer): Promise<{ meta: unknown; stateSha256: string; records: [Buffer, Buffer][] }> {
  const read = await readArchive(Readable.from([bytes]), async (m, state) => {
    const got: [Buffer, Buffer][] = [];
    for await (const batch of checkedStateRecords(state, m)) for (const r of batch) got.push([Buffer.from(r.key), Buffer.from(r.value)]);
    return got;
  });
  return { meta: read.meta, stateSha256: read.stateSha256, records: read.result };
}

describe('snapshot: small states built in memory', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(() => cleanup());

  const cases: { name: string; all: () => StateRecord[]; options: { gzipLevel?: number; gzipBlockBytes?: number } }[] = [
    { name: 'an empty state', all: () => [], options: {} },
    { name: 'a few records', all: () => records(40), options: { gzipLevel: 1 } },
    { name: 'one member just under a 1 MiB block', all: () => records(650, 3), options: { gzipLevel: 6 } },
    {
      name: 'several 64 KiB members, some of random bytes',
      all: () => [
        ...records(120, 7),
        ...Array.from({ length: 40 }, (_, i) => ({ key: Buffer.from(`z-random-${String(i).padStart(3, '0')}`), value: random(5000, i + 1) })),
      ],
      options: { gzipLevel: 1, gzipBlockBytes: 64 * 1024 },
    },
  ];
  for (const c of cases) {
    it(`gives the streaming way's bytes and member table for ${c.name}, and reads back`, async () => {
      const all = c.all();
      assert.ok(stateBytesOf(all) <= SMALL_STATE_BYTES_MAX);
      const a = await streamed(all, dir, c.options);
      const b = await inMemory(all, c.options);
      assert.equal(b.bytes.length, a.bytes.length);
      assert.ok(b.bytes.equals(a.bytes), 'same archive bytes');
      assert.deepEqual(b.members, a.result.members);
      assert.deepEqual(b.meta, a.result.meta);
      assert.equal(b.stateSha256, a.result.stateSha256);
      if (c.options.gzipBlockBytes !== undefined) assert.ok(b.members.state.length > 2, `members ${b.members.state.length}`);
      const read = await readBack(b.bytes);
      assert.deepEqual(read.meta, b.meta);
      assert.equal(read.stateSha256, b.stateSha256);
      assert.deepEqual(
        read.records,
        all.map((r) => [Buffer.from(r.key), Buffer.from(r.value)]),
      );
    });
  }

  it('refuses a record out of order and closes the source', async () => {
    let closed = false;
    async function* source(): AsyncGenerator<StateRecord[]> {
      try {
        yield [{ key: Buffer.from('b'), value: Buffer.alloc(1) }];
        yield [{ key: Buffer.from('a'), value: Buffer.alloc(1) }];
        yield [{ key: Buffer.from('c'), value: Buffer.alloc(1) }];
      } finally {
        closed = true;
      }
    }
    await assert.rejects(takeSmallState(source()), (err: unknown) => err instanceof StateFormatError && err.code === 'key-order');
    assert.ok(closed);
  });

  it('past the limit (mid-batch), gives every batch again, each read from the source once', async () => {
    const all = records(200, 2);
    let pulls = 0;
    async function* source(): AsyncGenerator<StateRecord[]> {
      for await (const batch of inBatches(all, 30)) {
        pulls++;
        yield batch;
      }
    }
    const limit = stateBytesOf(all.slice(0, 45)) + 1; // passed by the 46th record, in the second batch
    const taken = await takeSmallState(source(), { maxStateBytes: limit });
    assert.equal(taken.kind, 'large');
    if (taken.kind !== 'large') throw new Error('unreachable');
    assert.equal(pulls, 2);
    const again: StateRecord[] = [];
    for await (const batch of taken.records) again.push(...batch);
    assert.equal(pulls, 7);
    assert.deepEqual(again, all);
  });

  describe('SnapshotStore.createFromRecords', () => {
    async function storeWith(name: string, smallStateBytesMax?: number, io?: MemorySnapshotIo) {
      return SnapshotStore.open(join(dir, name), { retain: 3, gzipLevel: 1, ...(smallStateBytesMax !== undefined ? { smallStateBytesMax } : {}), ...(io ? { io } : {}) });
    }
    const meta = { index: 42, term: 3, membership: MEMBERSHIP, createdAt: CREATED_AT };

    it('builds in memory up to smallStateBytesMax and streams above it, with the same bytes either way; both verify', async () => {
      const all = records(300, 9);
      const size = stateBytesOf(all);
      const atLimit = await storeWith('at', size);
      const overLimit = await storeWith('over', size - 1);
      const never = await storeWith('never', -1);
      const a = await atLimit.createFromRecords(meta, inBatches(all));
      const b = await overLimit.createFromRecords(meta, inBatches(all));
      const c = await never.createFromRecords(meta, inBatches(all));
      assert.deepEqual(atLimit.createStats, { inMemory: 1, streamed: 0, copied: 0 });
      assert.deepEqual(overLimit.createStats, { inMemory: 0, streamed: 1, copied: 0 });
      assert.deepEqual(never.createStats, { inMemory: 0, streamed: 1, copied: 0 });
      assert.equal(atLimit.writeStats.writeCalls, 1, 'one write');
      const bytes = await readFile(a.path);
      assert.ok(bytes.equals(await readFile(b.path)), 'same archive bytes');
      assert.ok(bytes.equals(await readFile(c.path)));
      assert.equal(a.archiveSha256, sha256(bytes));
      assert.equal(a.archiveSha256, b.archiveSha256);
      // The recorded hashes and member table are those of the streaming way.
      for (const name of ['chunks.sha256', 'members.json', 'meta.json']) {
        assert.ok((await readFile(join(dir, 'at', a.id, name))).equals(await readFile(join(dir, 'over', b.id, name))), name);
      }
      await atLimit.verify(a.id);
      const handle = await atLimit.open(a.id, { verify: true });
      try {
        const read = await readBack(await collect(handle.createReadStream()));
        assert.equal(read.records.length, all.length);
        assert.deepEqual(await atLimit.members(handle), await overLimit.members(b));
      } finally {
        handle.release();
      }
      assert.deepEqual((await readdir(join(dir, 'at'))).sort(), [a.id]);
      // What the creating store remembers of meta.json is what a fresh parse of it gives.
      const fresh = await storeWith('at', size);
      assert.deepEqual(await fresh.list(), await atLimit.list());
    });

    it('the default limit is SMALL_STATE_BYTES_MAX of state.bin: exactly that is built in memory, one byte more streams', async () => {
      const io = new MemorySnapshotIo();
      const store = await storeWith('d', undefined, io);
      const exact = (extra: number): StateRecord[] => [
        { key: Buffer.from('a'), value: Buffer.alloc(4096, 1) },
        { key: Buffer.from('b'), value: Buffer.alloc(SMALL_STATE_BYTES_MAX - 2 * 9 - 4096 + extra, 2) },
      ];
      assert.equal(stateBytesOf(exact(0)), SMALL_STATE_BYTES_MAX);
      const a = await store.createFromRecords(meta, inBatches(exact(0)));
      assert.deepEqual(store.createStats, { inMemory: 1, streamed: 0, copied: 0 });
      const b = await store.createFromRecords({ ...meta, index: 43 }, inBatches(exact(1)));
      assert.deepEqual(store.createStats, { inMemory: 1, streamed: 1, copied: 0 });
      assert.equal(a.meta.stateBytes, SMALL_STATE_BYTES_MAX);
      assert.equal(b.meta.stateBytes, SMALL_STATE_BYTES_MAX + 1);
      await store.verify(a.id);
      await store.verify(b.id);
    });

    it('a bad record leaves nothing behind', async () => {
      const store = await storeWith('bad');
      const bad = [
        { key: Buffer.from('b'), value: Buffer.alloc(1) },
        { key: Buffer.from('a'), value: Buffer.alloc(1) },
      ];
      await assert.rejects(store.createFromRecords(meta, inBatches(bad)), (err: unknown) => err instanceof StateFormatError);
      assert.deepEqual(await readdir(join(dir, 'bad')), []);
      assert.deepEqual(await store.list(), []);
    });
  });
});

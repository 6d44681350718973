import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { readArchive } from '../../../src/snapshot/archive.js';
import { CHUNK_HASH_BYTES } from '../../../src/snapshot/archive-sink.js';
import { readChunks } from '../../../src/snapshot/chunk-reader.js';
import { ArchiveError, SnapshotStoreError } from '../../../src/snapshot/errors.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { decodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import { MEMBERSHIP, inBatches, records, tempDir } from './helpers.js';

const META = { index: 42, term: 3, membership: MEMBERSHIP, createdAt: new Date(1_700_000_000_000).toISOString() };

describe('MemorySnapshotIo (the snapshot store on a file tree in memory)', () => {
  it('a store on it writes the very archive the real file system gets, and lists, opens, verifies and reads it back', async () => {
    const state = records(300);
    const tmp = await tempDir();
    const disk = await SnapshotStore.open(tmp.dir, { retain: 2 });
    const onDisk = await disk.createFromRecords(META, inBatches(state));
    const diskBytes = (await readFile(onDisk.path)).length;
    await tmp.cleanup();
    const io = new MemorySnapshotIo();
    const mem = await SnapshotStore.open('/sim/n1/store', { retain: 2, io });
    const inMem = await mem.createFromRecords(META, inBatches(state));
    assert.equal(inMem.archiveSha256, onDisk.archiveSha256);
    assert.equal(inMem.archiveBytes, diskBytes);
    assert.deepEqual((await mem.list()).map((s) => s.id), [inMem.id]);
    await mem.verify(inMem.id);
    const h = await mem.open(inMem.id);
    const { result } = await readArchive(
      h.createReadStream(),
      async (_m, s) => {
        const out: StateRecord[] = [];
        for await (const b of decodeStateRecords(s)) out.push(...b);
        return out;
      },
      { io },
    );
    h.release();
    assert.deepEqual(result.map((r) => Buffer.from(r.key).toString()), state.map((r) => Buffer.from(r.key).toString()));
  });

  it('a fetch into a second in-memory store gets the same bytes; a changed byte is refused by the digest and leaves nothing', async () => {
    const io = new MemorySnapshotIo();
    const leader = await SnapshotStore.open('/sim/n1/store', { retain: 2, io });
    const s = await leader.createFromRecords(META, inBatches(records(50)));
    const follower = await SnapshotStore.open('/sim/n2/store', { retain: 2, io });
    const target = { digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 42, term: 3 };
    const got = await follower.receiveArchive(
      target,
      async (sink) => {
        for await (const c of readChunks(s.path, 0, CHUNK_HASH_BYTES, undefined, io)) await sink.writeChunk(c.data, c.sha256);
      },
      { maxBytes: 1 << 20 },
    );
    assert.equal(got.archiveSha256, s.archiveSha256);
    await follower.verify(got.id);
    const n3 = await SnapshotStore.open('/sim/n3/store', { retain: 2, io });
    await assert.rejects(
      n3.receiveArchive(
        target,
        async (sink) => {
          for await (const c of readChunks(s.path, 0, CHUNK_HASH_BYTES, undefined, io)) {
            const data = Buffer.from(c.data);
            data[data.length - 1] = (data[data.length - 1] ?? 0) ^ 1;
            await sink.writeChunk(data, createHash('sha256').update(data).digest());
          }
        },
        { maxBytes: 1 << 20 },
      ),
      (e: unknown) => e instanceof SnapshotStoreError && e.code === 'digest-mismatch',
    );
    assert.deepEqual(await n3.list(), []);
    assert.deepEqual((await io.readdir('/sim/n3/store')).map((d) => d.name), []);
  });

  it('a truncated archive is refused as truncated, as zlib on the threadpool refuses it', async () => {
    const io = new MemorySnapshotIo();
    const store = await SnapshotStore.open('/s', { retain: 1, io });
    const s = await store.createFromRecords(META, inBatches(records(20)));
    const bytes = await io.readFile(s.path);
    await io.mkdir('/t', {});
    const f = await io.open('/t/cut.tar.gz', 'wx');
    await f.write(bytes, 0, bytes.length - 20, 0);
    await f.close();
    await assert.rejects(
      readArchive(io.createReadStream('/t/cut.tar.gz', {}), async () => undefined, { io }),
      (e: unknown) => e instanceof ArchiveError && e.code === 'truncated',
    );
  });
});

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { ArchiveSink, CHUNK_HASH_BYTES } from '../../../src/snapshot/archive-sink.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import type { SnapshotFile } from '../../../src/snapshot/snapshot-io.js';

const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();

/** ioWithDatasync: `io`, each opened file's datasync replaced by `datasync` (given the file's own). */
function ioWithDatasync(io: MemorySnapshotIo, datasync: (own: () => Promise<void>) => Promise<void>): MemorySnapshotIo {
  return Object.assign(Object.create(io) as MemorySnapshotIo, {
    open: async (path: string, flags: 'r' | 'w' | 'wx' | 'wx+', mode?: number): Promise<SnapshotFile> => {
      const h = await io.open(path, flags, mode);
      const own = h.datasync.bind(h);
      return Object.assign(h, { datasync: () => datasync(own) });
    },
  });
}

describe('ArchiveSink: background writeback while writing', () => {
  it('writeChunk starts an fdatasync each time writebackBytes have landed, one at a time; each byte still written once and fsynced once at the end', async () => {
    const io = new MemorySnapshotIo();
    await io.mkdir('/s', {});
    const data = randomBytes(5 * CHUNK_HASH_BYTES + 1234);
    const sink = await ArchiveSink.create('/s/archive.tar.gz', { io, writebackBytes: 2 * CHUNK_HASH_BYTES });
    for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
      const chunk = data.subarray(at, at + CHUNK_HASH_BYTES);
      await sink.writeChunk(chunk, sha(chunk));
    }
    const syncsBefore = io.syncs;
    const digest = await sink.finishChunks();
    assert.equal(io.syncs - syncsBefore, 1, 'one fsync at the end');
    assert.ok(sink.stats.writebackSyncs >= 1 && sink.stats.writebackSyncs <= 2, `writeback syncs ${sink.stats.writebackSyncs}`);
    assert.equal(io.datasyncs, sink.stats.writebackSyncs, 'each counted writeback is a datasync of the file');
    assert.equal(sink.stats.bytesWritten, data.length, 'each byte written once');
    assert.equal(digest.archiveSha256, sha(data).toString('hex'));
    assert.deepEqual(await io.readFile('/s/archive.tar.gz'), data);
  });

  it('stream writes (create, uploads) start the same writeback; writebackBytes 0 turns it off', async () => {
    const data = randomBytes(3 * CHUNK_HASH_BYTES);
    for (const writebackBytes of [CHUNK_HASH_BYTES, 0]) {
      const io = new MemorySnapshotIo();
      await io.mkdir('/s', {});
      const sink = await ArchiveSink.create('/s/a', { io, writebackBytes });
      await pipeline(Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20, 2 << 20), data.subarray(2 << 20)]), sink);
      assert.equal(sink.stats.bytesWritten, data.length);
      if (writebackBytes > 0) assert.ok(io.datasyncs >= 1, `datasyncs ${io.datasyncs}`);
      else assert.equal(io.datasyncs, 0);
      assert.equal(sink.digest().archiveSha256, sha(data).toString('hex'));
    }
  });

  it('a background datasync that fails fails the sink: the next writeChunk or the finish rejects with it, naming the file', async () => {
    const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', syscall: 'fdatasync' });
    const data = randomBytes(4 * CHUNK_HASH_BYTES);
    const base = new MemorySnapshotIo();
    await base.mkdir('/s', {});
    const io = ioWithDatasync(base, () => Promise.reject(eio));
    const sink = await ArchiveSink.create('/s/archive', { io, writebackBytes: CHUNK_HASH_BYTES });
    const run = async (): Promise<void> => {
      for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
        const chunk = data.subarray(at, at + CHUNK_HASH_BYTES);
        await sink.writeChunk(chunk, sha(chunk));
      }
      await sink.finishChunks();
    };
    await assert.rejects(run(), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'EIO');
      assert.match(err.message, /\/s\/archive/);
      return true;
    });
    assert.ok(sink.stats.writebackSyncs >= 1);
    sink.destroy();

    const sink2 = await ArchiveSink.create('/s/archive2', { io, writebackBytes: CHUNK_HASH_BYTES });
    await assert.rejects(pipeline(Readable.from([data.subarray(0, 2 << 20), data.subarray(2 << 20)]), sink2), /EIO/);
  });

  it('the finish waits for a datasync still in flight before its fsync (never two at once on the file)', async () => {
    const base = new MemorySnapshotIo();
    await base.mkdir('/s', {});
    let release: (() => void) | undefined;
    let inFlight = 0;
    const order: string[] = [];
    const io = ioWithDatasync(base, async (own) => {
      inFlight++;
      order.push('datasync');
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      await own();
      inFlight--;
    });
    const sink = await ArchiveSink.create('/s/a', { io, writebackBytes: CHUNK_HASH_BYTES });
    const data = randomBytes(2 * CHUNK_HASH_BYTES);
    await sink.writeChunk(data.subarray(0, CHUNK_HASH_BYTES));
    await sink.writeChunk(data.subarray(CHUNK_HASH_BYTES));
    const finished = sink.finishChunks().then(() => order.push('finished'));
    for (let i = 0; i < 100 && release === undefined; i++) await new Promise((r) => setImmediate(r));
    assert.ok(release !== undefined, 'a datasync started');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, ['datasync'], 'not finished while the datasync is in flight');
    assert.equal(inFlight, 1);
    release();
    await finished;
    assert.equal(inFlight, 0);
    assert.deepEqual(order, ['datasync', 'finished']);
    assert.equal(sink.stats.writebackSyncs, 1, 'one at a time: the second chunk landed while the first datasync was in flight');
  });
});

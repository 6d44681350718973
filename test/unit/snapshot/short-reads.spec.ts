/**
 * read(2) may return fewer bytes than asked before the end of a file (a
 * signal, a network or FUSE file system): SnapshotHandle.readFrames (what
 * GetSnapshot sends, c5f0701) hashes each CHUNK_HASH_BYTES chunk it reads
 * and compares it with the recorded hash, so its reader (chunk-reader.ts
 * readFrames) must hand over whole pieces, reading again until the piece is
 * full. Before, a short read became a short frame, hashed and compared as if
 * it were a whole chunk: a healthy archive failed its download as damaged
 * (SnapshotStoreError `corrupt`, DATA_LOSS to the client, and a re-hash of
 * the whole archive to quarantine it).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { CHUNK_HASH_BYTES, SnapshotStore } from '../../../src/snapshot/store.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { MEMBERSHIP, inBatches, tempDir } from './helpers.js';

/** SHORT_READ_BYTES_MAX: the most one read returns here (a third of a chunk, and not a divisor of it). */
const SHORT_READ_BYTES_MAX = 300 * 1024;

function writer(state: readonly StateRecord[]): (file: Writable) => Promise<{ stateKeys: number }> {
  return async (file) => {
    const enc = encodeStateRecords(inBatches(state));
    await pipeline(enc, file);
    return { stateKeys: enc.keys };
  };
}

describe('SnapshotStore readFrames with short reads', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => cleanup());

  it('a healthy archive read back in short reads passes its chunk check, whole and ranged', async () => {
    let shortReads = false;
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (path, flags, mode) => {
        const f = await nodeSnapshotIo.open(path, flags, mode);
        const read = f.read.bind(f);
        return Object.assign(f, {
          read: (buffer: Uint8Array, offset: number, length: number, position: number) => read(buffer, offset, shortReads ? Math.min(length, SHORT_READ_BYTES_MAX) : length, position),
        });
      },
    };
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, io });
    const state = Array.from({ length: 16 }, (_, i) => ({ key: Buffer.from(`rnd-${String(i).padStart(4, '0')}`), value: randomBytes(256 * 1024) }));
    const created = await store.create({ index: 10, term: 1, membership: MEMBERSHIP, createdAt: new Date(1_700_000_000_000).toISOString() }, writer(state));
    const archive = await readFile(created.path);
    assert.ok(archive.length > 3 * CHUNK_HASH_BYTES, `archive of ${archive.length} bytes`);
    shortReads = true;
    // Read back through the store of a later process (as after a restart): the store that wrote the archive trusts
    // its recorded hashes and reads without checking them; this one checks each chunk.
    const handle = await (await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, io })).open(created.id);
    try {
      for (const [from, to] of [
        [0, archive.length],
        [CHUNK_HASH_BYTES - 5, 3 * CHUNK_HASH_BYTES + 7],
      ] as const) {
        const parts: Buffer[] = [];
        for await (const f of handle.readFrames(from, to)) {
          parts.push(Buffer.from(f.data));
          f.release();
        }
        assert.ok(Buffer.concat(parts).equals(archive.subarray(from, to)), `bytes ${from}..${to}`);
      }
    } finally {
      handle.release();
    }
  });
});

import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import type { Membership } from '../raft/types.js';
import { decodeStateRecords, encodeStateRecords, readArchive, SnapshotStore } from '../snapshot/index.js';
import { fsyncDir, openFileSink, writeFileDurable } from '../snapshot/file-sink.js';
import type { SnapshotHandle } from '../snapshot/store.js';
import { RocksStorage } from '../storage/rocks-storage.js';
import { FORMAT_VERSION } from '../storage/types.js';
import { NodeError } from './errors.js';

/** MARKER_FILE marks a directory written by exportDirectory (so a later snapshot may replace it). */
export const MARKER_FILE = 'SNAPCOORD_SNAPSHOT';

/**
 * exportArchiveFile copies an opened snapshot archive to `path` atomically
 * (a temp file beside it, fsync, rename, fsync of the directory), read-only
 * (mode 0400). `progress` is called with the bytes copied so far.
 */
export async function exportArchiveFile(handle: SnapshotHandle, path: string, progress: (done: number) => void): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      progress(done);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(handle.createReadStream(0), counter, await openFileSink(tmp));
    await chmod(tmp, 0o400);
    await rename(tmp, path);
    await fsyncDir(dirname(path));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface DirectoryExport {
  readonly nodeId: string;
  readonly clusterId: string;
  /** selfAddress: this node's gRPC address, the one member of the copy's membership. */
  readonly selfAddress: string;
  readonly version: string;
}

/**
 * exportDirectory writes, into `target`, a data directory that `snapcoord
 * serve --data-dir target` starts from: the snapshot's state installed, the
 * log based at the snapshot, the snapshot itself, and a marker. The copy is
 * a one-node cluster (this node, at its address): start it alone, then add
 * members. It is built beside the target and swapped in; a target that holds
 * an earlier snapcoord snapshot is replaced, any other non-empty one refused.
 */
export async function exportDirectory(handle: SnapshotHandle, target: string, opts: DirectoryExport): Promise<void> {
  await checkTarget(target);
  const parent = dirname(target);
  const tmp = join(parent, `.${basename(target)}.${randomUUID()}.tmp`);
  const old = join(parent, `.${basename(target)}.${randomUUID()}.old`);
  const membership: Membership = { voters: [opts.nodeId], learners: [], addresses: { [opts.nodeId]: opts.selfAddress } };
  const { index, term } = handle.meta;
  try {
    await mkdir(tmp, { recursive: true, mode: 0o700 });
    const storage = await RocksStorage.open(tmp);
    try {
      await storage.checkIdentity({ nodeId: opts.nodeId, clusterId: opts.clusterId, formatVersion: FORMAT_VERSION }, { createIfNew: true });
      await readArchive(handle.createReadStream(0), async (_meta, state) => {
        await storage.installState(decodeStateRecords(state), { appliedIndex: index, membership });
      });
      await storage.compact({ index, term, membership });
      await storage.save({ hardState: { term, vote: '', commit: index } });
      const store = await SnapshotStore.open(join(tmp, 'snapshots', 'store'), { retain: 2, snapcoordVersion: opts.version });
      const reader = await storage.snapshotState();
      try {
        await store.create({ index, term, membership }, async (file) => {
          const records = encodeStateRecords(reader.batches());
          await pipeline(records, file);
          return { stateKeys: records.keys };
        });
      } finally {
        await reader.close();
      }
    } finally {
      await storage.close();
    }
    await writeFileDurable(
      join(tmp, MARKER_FILE),
      Buffer.from(`${JSON.stringify({ index, term, digest: handle.archiveSha256, nodeId: opts.nodeId, clusterId: opts.clusterId, createdAt: new Date().toISOString() })}\n`),
    );
    await fsyncDir(tmp);
    const exists = await stat(target).then(() => true, () => false);
    if (exists) await rename(target, old);
    await rename(tmp, target);
    await fsyncDir(parent);
    await rm(old, { recursive: true, force: true });
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** checkTarget refuses a target that is not a directory, or is non-empty and not an earlier snapcoord snapshot. */
async function checkTarget(target: string): Promise<void> {
  let st;
  try {
    st = await stat(target);
  } catch {
    return; // absent: created
  }
  if (!st.isDirectory()) throw new NodeError('invalid', `snapshot_path ${target} exists and is not a directory`);
  const entries = await readdir(target);
  if (entries.length === 0) return;
  const marker = await readFile(join(target, MARKER_FILE), 'utf8').catch(() => null);
  if (marker === null) {
    throw new NodeError('invalid', `snapshot_path ${target} is not empty and holds no earlier snapcoord snapshot; refusing to overwrite it`);
  }
}

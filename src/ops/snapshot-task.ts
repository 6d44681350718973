import type { Node } from '../node/node.js';
import { basename, dirname } from 'node:path';

import { checkArchiveTarget, exportArchiveFile, removeStaleCopies } from './snapshot-export.js';
import type { TaskRunner } from './task-queue.js';

/**
 * snapshotTaskRunner runs a snapshotCreation task: a snapshot of this node's
 * state now, copied atomically to `path` (read-only). Task snapshots hold only
 * the replicated key-value state, never the task queue, so a snapshot never
 * carries its own task as pending (Meilisearch #4653).
 */
export function snapshotTaskRunner(node: Node, path: string): TaskRunner {
  return async (_task, progress) => {
    await checkArchiveTarget(path); // before taking a snapshot that could not be written
    await removeStaleCopies(dirname(path), (name) => name === basename(path)); // copies of this file a crash left
    const handle = await node.downloadSnapshot(true, { toDisk: true });
    try {
      const total = handle.archiveBytes;
      progress({ path, bytesDone: 0, bytesTotal: total, digest: handle.archiveSha256, index: handle.meta.index });
      await exportArchiveFile(handle, path, (done) => progress({ bytesDone: done }));
      return { path, bytesDone: total, bytesTotal: total, digest: handle.archiveSha256, index: handle.meta.index };
    } finally {
      handle.release();
    }
  };
}

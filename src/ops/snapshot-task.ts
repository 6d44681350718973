import type { Node } from '../node/node.js';
import { basename, dirname } from 'node:path';

import { checkArchiveTarget, openAndExport, removeStaleCopies } from './snapshot-export.js';
import type { TaskRunner } from './task-queue.js';

/**
 * snapshotTaskRunner runs a snapshotCreation task: a snapshot of this node's
 * state now, copied atomically to `path` (read-only). Task snapshots hold only
 * the replicated key-value state, never the task queue, so a snapshot never
 * carries its own task as pending (Meilisearch #4653). A copy that would
 * leave less than `reserveBytes` free on its file system fails `disk_full`
 * before it starts (serve passes --min-free-bytes).
 */
export function snapshotTaskRunner(node: Node, path: string, reserveBytes = 0): TaskRunner {
  return async (_task, progress) => {
    await checkArchiveTarget(path); // before taking a snapshot that could not be written
    await removeStaleCopies(dirname(path), (name) => name === basename(path)); // copies of this file a crash left
    const handle = await openAndExport(
      () => node.downloadSnapshot(true, { toDisk: true }),
      (id) => node.quarantineDamagedSnapshot(id), // a stored archive damaged on disk: quarantined, and one built now
      path,
      (h) => progress({ path, bytesDone: 0, bytesTotal: h.archiveBytes, digest: h.archiveSha256, index: h.meta.index }),
      (done) => progress({ bytesDone: done }),
      'served',
      reserveBytes,
    );
    try {
      const total = handle.archiveBytes;
      return { path, bytesDone: total, bytesTotal: total, digest: handle.archiveSha256, index: handle.meta.index };
    } finally {
      handle.release();
    }
  };
}

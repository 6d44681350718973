import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { Node } from '../../../src/node/node.js';
import type { RocksCluster } from './rocks-cluster.js';

/** saveArchive downloads the leader's current snapshot into a file of the cluster's dir (what `snapshot save` writes); returns its path. */
export async function saveArchive(c: RocksCluster, leader: Node): Promise<string> {
  const handle = await leader.downloadSnapshot(false);
  try {
    const file = join(c.dir, `saved-${handle.meta.index}.tgz`);
    await writeFile(file, handle.createReadStream());
    return file;
  } finally {
    handle.release();
  }
}

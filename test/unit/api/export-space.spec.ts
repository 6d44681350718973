/**
 * Directory snapshots (Typesense's POST /operations/snapshot, CreateSnapshot
 * {directory}) and snapshot tasks (Meilisearch's POST /snapshots) leave the
 * node's free-space reserve alone: each export needs room for a whole data
 * dir (or archive), and a caller holding snapshots.write may name a new path
 * each time. Before, nothing measured the space: exports went on until the
 * file system was full (ENOSPC), taking the reserve the node keeps for what
 * it must still persist when the roots share its data dir's disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';

import type { CreateSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { mountTmpfs, unmountTmpfs } from '../../harness/tmpfs.js';
import { until } from '../../harness/until.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const MIB = 1024 * 1024;
/** RESERVE: the reserve the node is given (serve passes --min-free-bytes). */
const RESERVE = 12 * MIB;
/** EXPORTS_MAX: the most exports the test asks for (each ~2 MiB of state: the 40 MiB file system fills well before). */
const EXPORTS_MAX = 40;

const freeBytes = async (dir: string): Promise<number> => {
  const st = await statfs(dir);
  return st.bavail * st.bsize;
};

describe('exports and the free-space reserve', function () {
  this.timeout(180_000);

  it('directory snapshots to new paths stop before the file system goes below the reserve (RESOURCE_EXHAUSTED, nothing left behind), and a snapshot task\'s file does too (disk_full)', async function () {
    const n = await SnapshotNode.start({ exportReserveBytes: RESERVE });
    let mounted = false;
    try {
      // The root on a small file system of its own, as a root on the data dir's disk would be.
      mounted = await mountTmpfs(n.root, 'size=40m,mode=0700', 'export-space.spec');
      if (!mounted) return this.skip();
      // ~2 MiB of state that does not compress: each export holds it twice (installed, and in its archive).
      for (let i = 0; i < 32; i++) await n.node.propose({ op: 'put', key: new TextEncoder().encode(`k/${i}`), value: randomBytes(64 * 1024) });
      const client = n.snapshotClient();
      const create = (directory: string): Promise<CreateSnapshotResponse> => unaryCall<CreateSnapshotResponse>((r, cb) => client.createSnapshot(r, cb), { directory });
      let made = 0;
      let refusal: grpc.ServiceError | null = null;
      for (let i = 0; i < EXPORTS_MAX && refusal === null; i++) {
        try {
          await create(join(n.root, `copy-${i}`));
          made++;
        } catch (err) {
          refusal = err as grpc.ServiceError;
        }
      }
      assert.ok(made >= 2, `exports made before the refusal: ${made}`);
      assert.ok(refusal !== null, `all ${EXPORTS_MAX} exports were made`);
      assert.equal(refusal.code, 8, `refused RESOURCE_EXHAUSTED, not: ${refusal.code} ${refusal.details}`);
      assert.match(refusal.details, /free/);
      const free = await freeBytes(n.root);
      assert.ok(free >= RESERVE, `${free} bytes free after the exports, below the reserve of ${RESERVE}`);
      // The refused export left nothing beside the others (no build dir).
      const names = (await readdir(n.root)).filter((x) => !x.startsWith('copy-'));
      assert.deepEqual(names, []);
      // A snapshot task (its file n1.snapshot is in the root too) with 1 MiB more than the reserve free, less than
      // its ~2 MiB archive: it fails as a full disk, its temp file gone, the reserve kept.
      await writeFile(join(n.root, 'filler'), Buffer.alloc(Math.max(0, (await freeBytes(n.root)) - RESERVE - MIB)));
      const enqueued = await unaryCall<CreateSnapshotResponse>((r, cb) => client.createSnapshot(r, cb), { task: true });
      const task = await until('the task to finish', 60_000, () => {
        const t = n.tasks.get(Number(enqueued.task?.uid ?? 0n));
        return t.status === 'succeeded' || t.status === 'failed' ? t : undefined;
      });
      assert.equal(task.status, 'failed');
      assert.equal(task.error?.code, 'disk_full', JSON.stringify(task.error));
      assert.ok((await freeBytes(n.root)) >= RESERVE, `${await freeBytes(n.root)} bytes free after the task, below the reserve of ${RESERVE}`);
      assert.deepEqual((await readdir(n.root)).filter((x) => !x.startsWith('copy-') && x !== 'filler'), []);
    } finally {
      if (mounted) await unmountTmpfs(n.root);
      await n.close();
    }
  });
});

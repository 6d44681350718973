/**
 * Snapshot roots and the early snapshot_path check (issue 14 item 9): the
 * default roots hold no world-writable directory, only snapcoord-snapshots
 * made 0700 inside the OS temp dir; a root in a world-writable directory is
 * ours and private or refused; locateSnapshotPath refuses a symlink below the
 * root and the task file's path.
 */
import assert from 'node:assert/strict';
import { chmod, chown, lstat, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { defaultSnapshotRoots, locateSnapshotPath, prepareRoots, TMP_ROOT_NAME } from '../../../src/api/snapshot-path.js';

describe('snapshot roots and locateSnapshotPath', function () {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-roots-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the default roots are ./data/snapshots and <tmp>/snapcoord-snapshots, never the temp dir itself', () => {
    const roots = defaultSnapshotRoots('/srv/x');
    assert.deepEqual(roots, ['/srv/x/data/snapshots', join(tmpdir(), TMP_ROOT_NAME)]);
    assert.ok(!roots.includes(tmpdir()));
  });

  it('a root inside a world-writable directory is created 0700, narrowed if ours, refused if a symlink or someone else\'s', async () => {
    const shared = join(dir, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o1777);
    const root = join(shared, TMP_ROOT_NAME);
    const warnings: string[] = [];
    assert.deepEqual(await prepareRoots([root], { warn: (m) => warnings.push(m) }), [root]);
    assert.equal((await lstat(root)).mode & 0o777, 0o700);
    await chmod(root, 0o777);
    await prepareRoots([root]);
    assert.equal((await lstat(root)).mode & 0o777, 0o700, 'narrowed');
    await rm(root, { recursive: true });
    await mkdir(join(dir, 'elsewhere'));
    await symlink(join(dir, 'elsewhere'), root);
    await assert.rejects(prepareRoots([root]), /symlink/);
    await rm(root);
    if (process.getuid?.() === 0) {
      await mkdir(root);
      await chown(root, 65534, 65534);
      await assert.rejects(prepareRoots([root]), /belongs to uid 65534/);
    }
    // A world-writable root given on purpose works, with a warning.
    assert.deepEqual(await prepareRoots([shared], { warn: (m) => warnings.push(m) }), [shared]);
    assert.ok(warnings.some((w) => w.includes('writable by every user')));
  });

  it('locateSnapshotPath: root and names; refuses symlinks below the root, the task file and its ancestors; allows an alias above the root', async () => {
    const root = join(dir, 'root');
    await mkdir(join(root, 'sub', 'deep'), { recursive: true });
    await symlink(join(root, 'sub'), join(root, 'link'));
    await symlink(dir, join(dir, 'alias'));
    const [real] = await prepareRoots([root]);
    const roots = [real as string];
    assert.deepEqual(await locateSnapshotPath(join(root, 'sub', 'snap'), roots), { root, names: ['sub', 'snap'], path: join(root, 'sub', 'snap') });
    assert.deepEqual((await locateSnapshotPath(join(dir, 'alias', 'root', 'snap'), roots)).names, ['snap']);
    const taskFile = join(root, 'sub', 'deep', 'n1.snapshot');
    const refused = [
      join(root, 'link', 'snap'),
      join(root, 'link'),
      `${root}/sub/../x`,
      root,
      join(dir, 'other'),
      taskFile,
      join(root, 'sub', 'deep'),
      join(root, 'sub'),
      join(root, 'missing', 'snap'),
    ];
    for (const p of refused) {
      await assert.rejects(locateSnapshotPath(p, roots, { reserved: [taskFile] }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT, p);
    }
  });
});

/**
 * snapshot_path under attack (issue 14 item 9), through the real
 * SnapshotService.CreateSnapshot{directory} of a real node:
 * - a component swapped for a symlink while requests run (a worker thread
 *   swaps it as fast as it can, many tries) never makes the node write
 *   outside the allowed root;
 * - a directory that is a live data dir (its RocksDB lock held by a real open
 *   RocksStorage), or that a node has used since it was exported, is never
 *   replaced, and keeps its data;
 * - snapshot_path may not take <snapshot-dir>/<db>.snapshot, where snapshot
 *   tasks write their file; a directory put there anyway fails the task with
 *   a clear message, and tasks work again once it is gone.
 */
import assert from 'node:assert/strict';
import { chown, mkdir, readdir, readFile, realpath, rm, rmdir, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';

import type { CreateSnapshotResponse, Task } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { MARKER_FILE, exportDirectory } from '../../../src/ops/snapshot-export.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { until } from '../../harness/until.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * SWAPPER: a worker that swaps `<root>/a` between the real directory (about
 * 2 ms, so that the request's checks mostly pass) and a symlink to `outside`
 * (about 0.3 ms), until told to stop.
 */
const SWAPPER = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { a, real, outside, flag } = workerData;
const stop = new Int32Array(flag);
let swaps = 0;
while (Atomics.load(stop, 0) === 0 && swaps < 5_000_000) {
  try { fs.renameSync(a, real); fs.symlinkSync(outside, a); } catch {}
  Atomics.wait(stop, 0, 0, 0.3); // a moment as the link
  try { fs.unlinkSync(a); fs.renameSync(real, a); } catch {}
  swaps++;
  Atomics.wait(stop, 0, 0, 2);
}
Atomics.store(stop, 1, swaps);
`;

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) out.push(join(e.parentPath, e.name));
  return out;
}

describe('snapshot_path: symlink races, live data dirs, the task file', function () {
  this.timeout(180_000);
  let n: SnapshotNode;

  before(async () => {
    n = await SnapshotNode.start();
    for (let i = 0; i < 20; i++) await n.node.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
  });
  after(async () => {
    await n?.close();
  });

  const create = (directory: string): Promise<CreateSnapshotResponse> => unaryCall<CreateSnapshotResponse>((r, cb) => client.createSnapshot(r, cb), { directory });
  let client: ReturnType<SnapshotNode['snapshotClient']>;
  before(() => {
    client = n.snapshotClient();
  });

  it('a component swapped for a symlink while snapshots are written (many tries): nothing is ever written outside the root', async () => {
    const outside = join(n.dir, 'outside');
    await mkdir(outside);
    const a = join(n.root, 'a');
    const real = join(n.root, 'a-real');
    await mkdir(a);
    const flag = new SharedArrayBuffer(8);
    const worker = new Worker(SWAPPER, { eval: true, workerData: { a, real, outside, flag } });
    const tries = 40;
    let written = 0;
    let refused = 0;
    const otherErrors: string[] = [];
    try {
      for (let i = 0; i < tries; i++) {
        try {
          await create(join(a, `snap-${i}`));
          written++;
        } catch (err) {
          const e = err as grpc.ServiceError;
          if (e.code === grpc.status.INVALID_ARGUMENT) refused++;
          else otherErrors.push(e.message);
        }
        assert.deepEqual(await listTree(outside), [], `after try ${i}: the node wrote outside the root`);
      }
    } finally {
      Atomics.store(new Int32Array(flag), 0, 1);
      await new Promise((r) => worker.once('exit', r));
    }
    assert.deepEqual(otherErrors, [], 'refusals are INVALID_ARGUMENT');
    const swaps = new Int32Array(flag)[1] ?? 0;
    assert.ok(swaps > tries, `the worker swapped ${swaps} times`);
    assert.deepEqual(await listTree(outside), []);
    // Whatever was written sits in the real directory (wherever the swap left it), inside the root.
    const realNow = (await readdir(n.root)).includes('a-real') ? real : a;
    const inside = (await readdir(realNow)).filter((f) => f.startsWith('snap-'));
    assert.ok(written > 0, "some snapshots were written while the swaps went on");
    assert.equal(inside.length, written, `${written} written, ${refused} refused; found ${inside.join(',')}`);
    assert.equal(written + refused, tries);
  });

  it('a live data dir (its RocksDB lock held by an open RocksStorage) is never replaced, nor one a node has used since its export', async () => {
    const target = join(n.root, 'live');
    await create(target); // a pristine export ...
    await create(target); // ... may be replaced by a later one
    // A node starts from it (the marker is still there) and acknowledges a write.
    const live = await RocksStorage.open(target);
    try {
      await live.save({ entries: [{ index: live.lastIndex() + 1, term: 99, type: 'normal', data: enc.encode('acknowledged') }] });
      await assert.rejects(create(target), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /in use|lock/i.test(e.details), 'live');
      assert.ok((await readFile(join(target, MARKER_FILE), 'utf8')).length > 0);
    } finally {
      await live.close();
    }
    // Stopped now, but it holds writes made after the export: still refused.
    await assert.rejects(create(target), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /used as a data dir/i.test(e.details), 'used');
    const again = await RocksStorage.open(target);
    try {
      const entry = (await again.load()).entries.at(-1);
      assert.equal(dec.decode(entry?.data), 'acknowledged', 'the write is still there');
    } finally {
      await again.close();
    }
  });

  it('snapshot_path may not be <snapshot-dir>/<db>.snapshot; a directory there fails tasks clearly until it is gone', async () => {
    await assert.rejects(create(n.snapshotPath), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /snapshot tasks/.test(e.details));
    const tasks = n.taskClient();
    const runTask = async (): Promise<Task> => {
      const res = await unaryCall<CreateSnapshotResponse>((r, cb) => client.createSnapshot(r, cb), { task: true });
      return until('the task to finish', 20_000, async () => {
        const t = (await unaryCall<{ task?: Task | undefined }>((r, cb) => tasks.getTask(r, cb), { uid: res.task?.uid })).task;
        return t !== undefined && (t.status === 'succeeded' || t.status === 'failed') ? t : undefined;
      });
    };
    await mkdir(n.snapshotPath);
    await writeFile(join(n.snapshotPath, 'x'), 'someone else put this here');
    const failed = await runTask();
    assert.equal(failed.status, 'failed');
    assert.match(failed.error?.message ?? '', /is a directory/);
    assert.equal(await readFile(join(n.snapshotPath, 'x'), 'utf8'), 'someone else put this here');
    await rm(join(n.snapshotPath, 'x'));
    await rmdir(n.snapshotPath);
    assert.equal((await runTask()).status, 'succeeded');
  });

  it('an export whose earlier copy, moved aside, cannot be removed after the swap succeeds with a warning naming that copy (kept, 470eb9b)', async function () {
    // A real failure of the removal: a directory of the earlier export is a mount point (bound onto itself), which
    // rm cannot remove (EBUSY) once the new export is in place. Needs root (mount); skipped otherwise.
    const root = await realpath(n.root);
    const target = join(root, 'aside-warn');
    assert.equal((await create(target)).directorySnapshot?.warnings.length, 0);
    const sub = (await readdir(target, { withFileTypes: true })).find((e) => e.isDirectory());
    assert.ok(sub !== undefined, 'an export holds a directory');
    const bind = spawnSync('mount', ['--bind', join(target, sub.name), join(target, sub.name)]);
    if (bind.status !== 0) this.skip();
    try {
      const r = await create(target);
      const warnings = r.directorySnapshot?.warnings ?? [];
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      const aside = (await readdir(root)).filter((e) => e.startsWith('.snapcoord-old-'));
      assert.equal(aside.length, 1, 'the earlier export is kept moved aside');
      assert.ok(warnings[0]?.includes(join(root, aside[0] as string)), `the warning names the copy moved aside: ${warnings[0]}`);
      assert.match(warnings[0] ?? '', /EBUSY/);
      const marker = JSON.parse(await readFile(join(target, MARKER_FILE), 'utf8')) as { createdAt: string };
      assert.ok(marker.createdAt.length > 0, 'the new export is in place');
    } finally {
      // The mount moved with the earlier export (aside) or stayed (an export that failed before the swap).
      const aside = (await readdir(root)).filter((e) => e.startsWith('.snapcoord-old-'));
      for (const at of [join(target, sub.name), ...aside.map((e) => join(root, e, sub.name))]) spawnSync('umount', [at]);
      for (const e of aside) await rm(join(root, e), { recursive: true, force: true });
    }
  });

  it('leftovers of directory exports a crash cut short are removed by a later export beside them; one being built (its RocksDB lock held), an earlier export moved aside (maybe the only copy), another user\'s, recent ones and other names are left alone', async () => {
    const root = await realpath(n.root);
    const crashed = '.snapcoord-export-Crash1'; // a build the process died in: a whole data dir
    await (await RocksStorage.open(join(root, crashed))).close();
    // An earlier export moved aside, its target not yet replaced: a crash between the two renames leaves it the only
    // copy of that export (review20), and nothing says which target it was: kept, whatever its age.
    const aside = '.snapcoord-old-00000000-0000-4000-8000-000000000001';
    await mkdir(join(root, aside));
    await writeFile(join(root, aside, 'x'), 'an earlier export');
    const building = '.snapcoord-export-Build1'; // an export under way in another process
    const live = await RocksStorage.open(join(root, building));
    const others = '.snapcoord-export-Other1';
    await mkdir(join(root, others));
    const asRoot = process.getuid?.() === 0;
    if (asRoot) await chown(join(root, others), 65534, 65534);
    const unrelated = '.snapcoord-exports';
    await mkdir(join(root, unrelated));
    const dots = async (): Promise<string[]> => (await readdir(root)).filter((e) => e.startsWith('.snapcoord-')).sort();
    try {
      // Recent (the default age, 15 min): an export under way elsewhere may own them, so all stay.
      await create(join(root, 'beside-1'));
      assert.deepEqual(await dots(), [crashed, aside, building, others, unrelated].sort());
      // Old enough (age 0: a test cannot set a ctime back): the crashed build goes.
      const handle = await n.node.downloadSnapshot(true);
      try {
        await exportDirectory(
          handle,
          { root, names: ['beside-2'], path: join(root, 'beside-2') },
          { storage: rocksDataDir, nodeId: 'n1', clusterId: 'test', selfAddress: '127.0.0.1:1', version: 'test', staleExportMs: 0 },
        );
      } finally {
        handle.release();
      }
      assert.deepEqual(await dots(), (asRoot ? [aside, building, others, unrelated] : [aside, building, unrelated]).sort());
      assert.equal(await readFile(join(root, aside, 'x'), 'utf8'), 'an earlier export', 'the export moved aside is whole');
      assert.ok((await readFile(join(root, 'beside-2', MARKER_FILE), 'utf8')).length > 0, 'the export itself was written');
    } finally {
      await live.close();
    }
  });
});

/**
 * Disk full, on a real file system: one `snapcoord serve` node whose data dir
 * and snapshot dirs live on a 48 MiB tmpfs this test mounts (it needs root
 * and a kernel that lets it mount; elsewhere it is skipped with one line on
 * stderr saying why). A filler file eats the space:
 *
 * - below --min-free-bytes, writes (put, delete, snapshots through gRPC,
 *   Typesense and Meilisearch) are refused with RESOURCE_EXHAUSTED / 422 and
 *   a message saying why; the old values stay and reads are served;
 * - above it but short of room for a snapshot, the snapshot fails with a
 *   real ENOSPC naming the file, leaves no temporary file, and the previous
 *   snapshot (in the store and exported) is intact; the node serves on;
 * - with the filler gone, writes and snapshots succeed again, no restart.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, rm, stat, statfs, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { SnapshotClient } from '../../src/client/snapshot-client.js';
import { TaskClient } from '../../src/client/task-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import type { Task } from '../../src/gen/snapcoord/v1/snapshot.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { tmpfsUnderTemp, unmountTmpfs } from '../harness/tmpfs.js';
import { until } from '../harness/until.js';

const MiB = 1024 * 1024;
/** RESERVE: the node's --min-free-bytes. */
const RESERVE = 4 * MiB;
/** BLOBS x BLOB_BYTES of random (incompressible) values: the state, and about the size of a snapshot. */
const BLOBS = 24;
const BLOB_BYTES = 256 * 1024;
/** DISK_FULL: the node's own code for a full disk (gRPC metadata, a failed task); NO_SPACE: what the gateway's Meilisearch style says. */
const DISK_FULL = 'disk_full';
const NO_SPACE = 'no_space_left_on_device';

const enc = new TextEncoder();
const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const freeBytes = async (path: string): Promise<number> => {
  const st = await statfs(path);
  return st.bavail * st.bsize;
};
const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('chaos: disk full', function () {
  this.timeout(180_000);

  let dir = '';
  let mnt = '';
  let mounted = false;
  let dataDir = '';
  let exportsDir = '';
  let rootsDir = '';
  let filler = '';
  let http = '';
  let proc: ServeProcess | undefined;
  let kv: KvClient | undefined;
  let cluster: ClusterClient | undefined;
  let snapshots: SnapshotClient | undefined;
  let tasks: TaskClient | undefined;
  /** values: what each blob key holds now. */
  const values = new Map<string, Buffer>();
  /** kept: the snapshot taken before the disk filled up, in the store and exported by its task. */
  let kept = { id: '', digest: '', storeFile: '', exportFile: '', exportSha256: '' };

  before(async function () {
    ({ dir, mnt, mounted } = await tmpfsUnderTemp('snapcoord-disk-full-', 'size=48m,mode=0700', 'disk-full test'));
    if (!mounted) this.skip();
    dataDir = join(mnt, 'data');
    exportsDir = join(mnt, 'exports');
    rootsDir = join(mnt, 'roots');
    filler = join(mnt, 'filler');
    const started = await startServes(['d1'], (id, { d1 }) => ({
      id,
      grpc: d1.grpc,
      peer: d1.peer,
      peers: `d1=${d1.peer}`,
      dataDir,
      extra: ['--snapshot-dir', exportsDir, '--snapshot-root', rootsDir, '--min-free-bytes', String(RESERVE), '--snapshot-entries', '1000000'],
    }));
    proc = started.procs.d1;
    const grpcAddress = started.addrs.d1.grpc;
    http = (await proc.waitFor(/gateway listening on http (\S+)/))[1] ?? '';
    kv = new KvClient(grpcAddress);
    cluster = new ClusterClient(grpcAddress);
    snapshots = new SnapshotClient(grpcAddress);
    tasks = new TaskClient(grpcAddress);
    await until('d1 leads', 20_000, async () => ((await cluster!.status({ deadlineMs: 1_000 })).role === Role.ROLE_LEADER ? true : undefined));
  });

  after(async () => {
    for (const c of [kv, cluster, snapshots, tasks]) c?.close();
    await proc?.kill('SIGTERM');
    if (mounted) await unmountTmpfs(mnt);
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && proc !== undefined) console.error(`--- d1 (last lines)\n${proc.lastLines(40)}`);
  });

  /** diskFullGauge: snapcoord_disk_full from the node's /metrics. */
  const diskFullGauge = async (): Promise<number> => {
    const text = await (await fetch(`http://${http}/metrics`)).text();
    const m = /^snapcoord_disk_full (\d)$/m.exec(text);
    assert.ok(m !== null, 'snapcoord_disk_full is missing from /metrics');
    return Number(m[1]);
  };

  const waitDiskFull = (want: 0 | 1): Promise<true> =>
    until(`snapcoord_disk_full ${want}`, 10_000, async () => ((await diskFullGauge()) === want ? true : undefined));

  /** snapshotTask enqueues a snapshot task (CreateSnapshot{task}) and waits for it to succeed or fail. */
  const snapshotTask = async (): Promise<Task> => {
    const uid = (await snapshots!.createSnapshot({ task: true })).task?.uid;
    assert.ok(uid !== undefined, 'CreateSnapshot returns the task');
    return until(`task ${uid} finishes`, 60_000, async () => {
      const t = (await tasks!.getTask(uid, { deadlineMs: 5_000 })).task;
      return t !== undefined && (t.status === 'succeeded' || t.status === 'failed') ? t : undefined;
    });
  };

  const read = async (key: string, serializable = false): Promise<Buffer | undefined> => {
    const res = await kv!.get({ key: enc.encode(key), serializable }, { deadlineMs: 5_000 });
    return res.found ? Buffer.from(res.kv!.value) : undefined;
  };

  /** fillTo writes (or shrinks) the filler so that `free` bytes are left free, and checks it got there. */
  const fillTo = async (free: number): Promise<void> => {
    const have = await freeBytes(mnt);
    const size = await stat(filler).then(
      (st) => st.size,
      () => 0,
    );
    const want = size + have - free;
    assert.ok(want >= 0, `cannot leave ${free} bytes free: only ${have + size} are available`);
    if (want > size) await writeFile(filler, Buffer.alloc(want));
    else await truncate(filler, want);
    const now = await freeBytes(mnt);
    assert.ok(Math.abs(now - free) < MiB / 2, `wanted ${free} bytes free, got ${now}`);
  };

  /** tempLeftovers: every temporary file or directory in the snapshot dirs and beside the task queue. */
  const tempLeftovers = async (): Promise<string[]> => {
    const found: string[] = [];
    for (const d of [join(dataDir, 'snapshots'), exportsDir, rootsDir]) {
      for (const name of await readdir(d, { recursive: true })) {
        if (/(^|\/)[^/]*\.tmp(\/|$)/.test(name) || /^incoming\/./.test(name)) found.push(join(d, name));
      }
    }
    for (const name of await readdir(dataDir)) if (name.endsWith('.tmp')) found.push(join(dataDir, name));
    return found;
  };

  it('takes a snapshot of incompressible values (the one that must survive)', async () => {
    for (let i = 0; i < BLOBS; i++) {
      const key = `blob/${String(i).padStart(2, '0')}`;
      const value = randomBytes(BLOB_BYTES);
      await kv!.put({ key: enc.encode(key), value });
      values.set(key, value);
    }
    const t = await snapshotTask();
    assert.equal(t.status, 'succeeded', JSON.stringify(t.error));
    const list = (await snapshots!.listSnapshots()).snapshots;
    assert.equal(list.length, 1);
    const s = list[0]!;
    assert.equal(s.digest, t.details?.digest);
    assert.ok(s.sizeBytes > BigInt(BLOBS * BLOB_BYTES), `the archive (${s.sizeBytes} bytes) holds the incompressible state`);
    kept = {
      id: s.id,
      digest: s.digest,
      storeFile: join(dataDir, 'snapshots', 'store', s.id, 'archive.tar.gz'),
      exportFile: t.details?.path ?? '',
      exportSha256: '',
    };
    assert.equal(kept.exportFile, join(exportsDir, 'd1.snapshot'));
    kept.exportSha256 = await sha256(kept.exportFile);
    assert.equal(kept.exportSha256, s.digest, 'the exported file is the stored archive');
    assert.equal(await sha256(kept.storeFile), s.digest);
  });

  it('below the reserve: writes and snapshots are refused with a clear error; values stay and reads are served', async () => {
    await fillTo(RESERVE / 2);
    await waitDiskFull(1);
    const key = 'blob/00';
    const message = new RegExp(
      `^disk full: \\d+\\.\\d MiB free on ${escapeRe(dataDir)}, below the reserve of 4 MiB \\(--min-free-bytes\\); writes are refused, reads still served$`,
    );
    const refused = (err: unknown): boolean => {
      const e = err as grpc.ServiceError;
      assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED, e.message);
      assert.match(e.details, message);
      assert.deepEqual(e.metadata.get('x-snapcoord-error-code'), [DISK_FULL]);
      return true;
    };
    await assert.rejects(kv!.put({ key: enc.encode(key), value: randomBytes(BLOB_BYTES) }), refused);
    await assert.rejects(kv!.put({ key: enc.encode('new-key'), value: enc.encode('x') }), refused);
    await assert.rejects(kv!.delete({ key: enc.encode(key) }), refused);
    await assert.rejects(snapshots!.createSnapshot({ directory: join(rootsDir, 'typesense') }), refused);

    // Reads: linearizable, serializable, ranges and status all answer, with the values from before.
    assert.ok((await read(key))?.equals(values.get(key)!), 'the refused put changed nothing');
    assert.ok((await read(key, true))?.equals(values.get(key)!));
    assert.equal(await read('new-key'), undefined);
    let blobs = 0;
    for await (const page of kv!.rangePages({ prefix: enc.encode('blob/') }, 10_000)) blobs += page.kvs.length;
    assert.equal(blobs, BLOBS);
    assert.equal((await cluster!.status()).role, Role.ROLE_LEADER);

    // The gateways say so too: Typesense 422 {"message"}, Meilisearch's task fails with no_space_left_on_device.
    const ts = await fetch(`http://${http}/operations/snapshot?snapshot_path=${encodeURIComponent(join(rootsDir, 'typesense'))}`, { method: 'POST' });
    assert.equal(ts.status, 422);
    assert.match(((await ts.json()) as { message: string }).message, message);
    const meili = await fetch(`http://${http}/snapshots`, { method: 'POST' });
    assert.equal(meili.status, 202);
    const { taskUid } = (await meili.json()) as { taskUid: number };
    const failed = await until(`task ${taskUid} fails`, 20_000, async () => {
      const t = (await (await fetch(`http://${http}/tasks/${taskUid}`)).json()) as { status: string; error: { message: string; code: string; type: string } | null };
      return t.status === 'failed' || t.status === 'succeeded' ? t : undefined;
    });
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.code, NO_SPACE);
    assert.equal(failed.error?.type, 'system');
    assert.match(failed.error?.message ?? '', message);
    assert.deepEqual(await readdir(rootsDir), [], 'the refused directory snapshot wrote nothing');
    assert.match(proc!.output, /disk full: writes are refused until space is freed/);
  });

  it('above the reserve but short of room: a snapshot fails with ENOSPC naming the file, cleans up, and the previous one is intact', async () => {
    // More than the reserve is free, but less than the state: the snapshot's state.bin cannot be written.
    await fillTo(RESERVE + MiB);
    await waitDiskFull(0);
    assert.ok(await freeBytes(mnt) < BLOBS * BLOB_BYTES);
    // A write first: the state changed since the last snapshot, so the task must take a new one
    // (an unchanged state is served from the newest snapshot and only the export copy is written).
    await kv!.put({ key: enc.encode('marker/changed'), value: enc.encode('x') });
    const t = await snapshotTask();
    assert.equal(t.status, 'failed');
    // It names the file that could not be written (the archive's compressed state, in the snapshot's temp dir).
    assert.match(t.error?.message ?? '', /ENOSPC: no space left on device/);
    assert.match(t.error?.message ?? '', new RegExp(`${escapeRe(join(dataDir, 'snapshots'))}/[^' ]+`));
    assert.equal(t.error?.code, DISK_FULL);

    // Before anything lists the store (which would clean leftovers itself): no temporary file is left.
    assert.deepEqual(await tempLeftovers(), []);
    // The previous snapshot: the same bytes in the store and exported, and the store still lists and verifies it.
    assert.equal(await sha256(kept.storeFile), kept.digest);
    assert.equal(await sha256(kept.exportFile), kept.exportSha256);
    assert.deepEqual((await snapshots!.listSnapshots()).snapshots.map((s) => [s.id, s.digest]), [[kept.id, kept.digest]]);
    const inspected = await snapshots!.inspectSnapshot(kept.id);
    assert.equal(inspected.ok, true, inspected.problems.join('; '));

    // The node was not killed and still serves.
    assert.equal(proc!.running, true);
    assert.ok((await read('blob/01'))?.equals(values.get('blob/01')!));
    assert.equal((await cluster!.status()).role, Role.ROLE_LEADER);
  });

  it('with space back: writes and snapshots succeed again without a restart', async () => {
    await rm(filler);
    await waitDiskFull(0);
    const value = randomBytes(1024);
    await kv!.put({ key: enc.encode('blob/00'), value });
    assert.ok((await read('blob/00'))?.equals(value));
    const t = await snapshotTask();
    assert.equal(t.status, 'succeeded', JSON.stringify(t.error));
    assert.notEqual(t.details?.digest, kept.digest);
    assert.equal(await sha256(kept.exportFile), t.details?.digest, 'the new snapshot replaced the exported file');
    const ids = (await snapshots!.listSnapshots()).snapshots.map((s) => s.id);
    assert.equal(ids.length, 2);
    assert.ok(ids.includes(kept.id), 'the previous snapshot is kept (--snapshot-retain 2)');
    assert.deepEqual(await tempLeftovers(), []);
    assert.equal(proc!.running, true);
  });
});

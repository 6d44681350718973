import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import {
  SnapshotServiceClient,
  TaskFilter,
  TaskServiceClient,
  type CreateSnapshotResponse,
  type GetSnapshotResponse,
  type Task,
} from '../../../src/gen/snapcoord/v1/snapshot.js';
import type { Node } from '../../../src/node/node.js';
import { MARKER_FILE } from '../../../src/ops/snapshot-export.js';
import { inspectArchive } from '../../../src/snapshot/archive.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { RocksCluster, dumpKeys as dump, uploadArchive as upload } from '../node/rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function unaryCall<Res>(f: (req: any, cb: (e: grpc.ServiceError | null, r: Res) => void) => unknown, req: object): Promise<Res> {
  return new Promise((resolve, reject) => f(req, (e, r) => (e !== null ? reject(e) : resolve(r))));
}

async function download(client: SnapshotServiceClient, stale: boolean): Promise<{ info: GetSnapshotResponse['info']; bytes: Buffer }> {
  const parts: Buffer[] = [];
  let info: GetSnapshotResponse['info'];
  for await (const m of client.getSnapshot({ stale }) as AsyncIterable<GetSnapshotResponse>) {
    if (m.info !== undefined) info = m.info;
    if (m.data !== undefined) parts.push(Buffer.from(m.data));
  }
  return { info, bytes: Buffer.concat(parts) };
}



describe('SnapshotService and TaskService (gRPC)', function () {
  this.timeout(60_000);
  let c: RocksCluster;
  let leader: Node;
  let followerAddr: string;
  const snaps = new Map<string, SnapshotServiceClient>();
  const tasks = new Map<string, TaskServiceClient>();
  const snap = (addr: string): SnapshotServiceClient => {
    let x = snaps.get(addr);
    if (x === undefined) snaps.set(addr, (x = new SnapshotServiceClient(addr, grpc.credentials.createInsecure())));
    return x;
  };
  const task = (addr: string): TaskServiceClient => {
    let x = tasks.get(addr);
    if (x === undefined) tasks.set(addr, (x = new TaskServiceClient(addr, grpc.credentials.createInsecure())));
    return x;
  };

  before(async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    leader = await c.waitForLeader();
    followerAddr = c.members.find((m) => m.node !== leader)?.address ?? '';
    for (let i = 0; i < 30; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
  });

  after(async () => {
    for (const x of [...snaps.values(), ...tasks.values()]) x.close();
    await c.close();
  });

  it('GetSnapshot through a follower is answered by the leader; the bytes match the announced digest', async () => {
    const { info, bytes } = await download(snap(followerAddr), false);
    assert.ok(info !== undefined);
    assert.equal(Number(info.sizeBytes), bytes.length);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), info.digest);
    assert.ok(Number(info.index) >= 30);
    assert.equal(Number(info.stateKeys), 60, '30 keys and their 30 revision records');
  });

  it('RestoreSnapshot through a follower brings back the saved state on every node; a mangled upload changes nothing', async () => {
    const saved = await dump(leader);
    const { bytes } = await download(snap(followerAddr), false);
    await leader.propose({ op: 'put', key: enc.encode('k/0'), value: enc.encode('changed') });
    await leader.propose({ op: 'delete', key: enc.encode('k/1') });
    const bad = Buffer.from(bytes);
    const mid = Math.floor(bad.length / 2);
    bad[mid] = (bad[mid] ?? 0) ^ 0x55;
    const before = await dump(leader);
    await assert.rejects(upload(snap(followerAddr), bad), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(await dump(leader), before);
    const r = await upload(snap(followerAddr), bytes);
    for (const m of c.members) {
      const n = c.node(m.id);
      await until('restore applied', 10_000, () => (n.status().applied >= Number(r.index) ? true : undefined));
      assert.deepEqual(await dump(n), saved);
    }
  });

  it('CreateSnapshot as a task writes <snapshot-dir>/<db-name>.snapshot, read-only, and the task succeeds', async () => {
    const res = await unaryCall<CreateSnapshotResponse>((r, cb) => snap(followerAddr).createSnapshot(r, cb), { task: true });
    const uid = res.task?.uid ?? -1n;
    const done = await until('the task to finish', 10_000, async () => {
      const t = (await unaryCall<{ task?: Task | undefined }>((r, cb) => task(followerAddr).getTask(r, cb), { uid })).task;
      return t !== undefined && (t.status === 'succeeded' || t.status === 'failed') ? t : undefined;
    });
    assert.equal(done.status, 'succeeded', done.error?.message);
    assert.equal(done.type, 'snapshotCreation');
    assert.match(done.duration, /^PT[\d.]+S$/);
    const path = done.details?.path ?? '';
    assert.match(path, /n\d\.snapshot$/);
    assert.equal((await stat(path)).mode & 0o777, 0o400);
    const ins = await inspectArchive(path);
    assert.ok(ins.ok, ins.problems.join('; '));
    assert.equal(ins.archiveSha256, done.details?.digest);
    const list = await unaryCall<{ results: Task[]; total: bigint }>((r, cb) => task(followerAddr).listTasks(r, cb), {
      filter: TaskFilter.fromPartial({ statuses: ['succeeded'], types: ['snapshotCreation'] }),
      limit: 10,
    });
    assert.ok(list.results.some((t) => t.uid === uid));
    await assert.rejects(
      unaryCall((r, cb) => task(followerAddr).getTask(r, cb), { uid: 999_999n }),
      (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
    );
    await assert.rejects(
      unaryCall((r, cb) => task(followerAddr).listTasks(r, cb), { filter: TaskFilter.fromPartial({ statuses: ['bogus'] }), limit: 10 }),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT,
    );
  });

  it('CreateSnapshot into a directory writes a data dir holding the state; hostile paths are refused', async () => {
    const root = join(c.dir, 'roots');
    const target = join(root, 'backup-1');
    const res = await unaryCall<CreateSnapshotResponse>((r, cb) => snap(followerAddr).createSnapshot(r, cb), { directory: target });
    assert.equal(res.directorySnapshot?.path, target);
    assert.ok((await readFile(join(target, MARKER_FILE), 'utf8')).includes('"index"'));
    // A later snapshot replaces an earlier snapcoord snapshot that no node has opened.
    await unaryCall<CreateSnapshotResponse>((r, cb) => snap(followerAddr).createSnapshot(r, cb), { directory: target });
    const copy = await RocksStorage.open(target);
    try {
      assert.ok(copy.appliedIndex() > 0);
      assert.ok((await copy.get(enc.encode('k/5'))) !== undefined);
    } finally {
      await copy.close();
    }
    // Once opened as a data dir it is not a snapshot any more: never replaced (snapshot-path.spec.ts has the attacks).
    await assert.rejects(
      unaryCall((r, cb) => snap(followerAddr).createSnapshot(r, cb), { directory: target }),
      (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /used as a data dir/.test(e.details),
    );

    const foreign = join(root, 'foreign');
    await mkdir(foreign, { recursive: true });
    await writeFile(join(foreign, 'precious.txt'), 'do not touch');
    await symlink('/etc', join(root, 'link'));
    for (const bad of [join(root, '..', 'escape'), '/etc/snap', 'relative/path', join(root, 'a\0b'), foreign, join(root, 'link'), join(root, 'no', 'parent')]) {
      await assert.rejects(
        unaryCall((r, cb) => snap(followerAddr).createSnapshot(r, cb), { directory: bad }),
        (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT,
        bad,
      );
    }
    assert.equal(await readFile(join(foreign, 'precious.txt'), 'utf8'), 'do not touch');
  });

  it('ListSnapshots and InspectSnapshot describe and verify the kept snapshots', async () => {
    const addr = c.members.find((m) => m.node === leader)?.address ?? '';
    const list = await unaryCall<{ snapshots: { id: string; digest: string }[] }>((r, cb) => snap(addr).listSnapshots(r, cb), {});
    assert.ok(list.snapshots.length > 0);
    const first = list.snapshots[0];
    const ins = await unaryCall<{ ok: boolean; info?: { digest: string } | undefined }>((r, cb) => snap(addr).inspectSnapshot(r, cb), { id: first?.id });
    assert.ok(ins.ok);
    assert.equal(ins.info?.digest, first?.digest);
    await assert.rejects(
      unaryCall((r, cb) => snap(addr).inspectSnapshot(r, cb), { id: 'nope' }),
      (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND,
    );
  });
});

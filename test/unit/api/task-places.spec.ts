/**
 * Tasks shown to a key without admin (real gRPC with the real auth
 * interceptor, and GET /tasks through the real gateway): no server path, no
 * S3 URL, in details or in a failed task's error; an admin key still sees
 * them. Before, any snapshots.read key learned the node's file layout (the
 * snapshot dir, the data dir in error messages) and the bucket and key names
 * of its off-site copies.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { hidePlaces, PLACE_HIDDEN } from '../../../src/api/snapshot-service.js';
import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import type { CreateSnapshotResponse, GetTaskResponse, ListTasksResponse, Task } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { until } from '../../harness/until.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const ADMIN = 'task-places-admin-key-0123456789';
const READER = 'task-places-reader-key-0123456789';
const WRITER = 'task-places-writer-key-0123456789';
const DESTINATION = 's3://secret-bucket/site-a/data.ms-20261208T010203000Z.snapshot';

function md(key: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('authorization', `Bearer ${key}`);
  return m;
}

describe('TaskService: where the node keeps things goes to admin keys only', function () {
  this.timeout(60_000);
  let n: SnapshotNode;
  let gw: Gateway;
  let failNext = false;
  let failMessage = '';

  before(async () => {
    n = await SnapshotNode.start({
      interceptors: [
        clientAuthInterceptor({
          adminKey: ADMIN,
          keys: [
            { key: READER, actions: ['snapshots.read'] },
            { key: WRITER, actions: ['snapshots.read', 'snapshots.write'] },
          ],
        }),
      ],
      // A copy sent off-site, as the snapshot agent's tasks say; the second task fails saying where it wrote.
      wrapRunner: (real) => async (task, progress) => {
        if (failNext) throw new Error(failMessage);
        const d = await real(task, progress);
        return { ...d, phase: 'done', destination: DESTINATION, removed: 0, kept: 1 };
      },
    });
    gw = createGateway({ target: n.api.address, auth: { adminKey: ADMIN, keys: [{ key: READER, actions: ['snapshots.read'] }] } });
    await gw.app.ready();
  });
  after(async () => {
    await gw?.close();
    await n?.close();
  });

  const tasks = (): ReturnType<SnapshotNode['taskClient']> => n.taskClient();
  const getTask = async (uid: bigint, key: string): Promise<Task> => {
    const c = tasks();
    const r = await unaryCall<GetTaskResponse>((q, cb) => c.getTask(q, md(key), cb), { uid });
    assert.ok(r.task !== undefined);
    return r.task;
  };
  const finished = (uid: bigint): Promise<Task> =>
    until(`task ${uid} to finish`, 30_000, async () => {
      const t = await getTask(uid, ADMIN);
      return ['succeeded', 'failed', 'canceled'].includes(t.status) ? t : undefined;
    });
  const create = async (key: string): Promise<Task> => {
    const c = n.snapshotClient();
    const r = await unaryCall<CreateSnapshotResponse>((q, cb) => c.createSnapshot(q, md(key), cb), { task: true });
    assert.ok(r.task !== undefined);
    return r.task;
  };

  it('hidePlaces: absolute paths and URLs go, a lone slash between words stays', () => {
    assert.equal(hidePlaces("write '/data/n1/x.tmp' (s3://b/k): 5 / 10 parts, 1/2 done"), `write '${PLACE_HIDDEN}' (${PLACE_HIDDEN}): 5 / 10 parts, 1/2 done`);
    assert.equal(hidePlaces('/abs at the start, and http://minio:9000/b/k'), `${PLACE_HIDDEN} at the start, and ${PLACE_HIDDEN}`);
  });

  it('GetTask, ListTasks and CreateSnapshot: paths and URLs for admin, none for snapshots.read or snapshots.write', async () => {
    const created = await create(WRITER);
    assert.equal(created.details?.path, '', 'the writer is not told the server path either');
    const done = await finished(created.uid);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.details?.path, n.snapshotPath, 'admin sees the path');
    assert.equal(done.details?.destination, DESTINATION, 'admin sees the destination');

    failMessage = `copy to ${DESTINATION} failed: ENOSPC: no space left on device, write '${n.snapshotPath}.tmp' (data dir ${n.dir})`;
    failNext = true;
    const failed = await finished((await create(ADMIN)).uid);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error?.message, failMessage, 'admin reads the whole message');

    for (const key of [READER, WRITER]) {
      for (const t of [await getTask(done.uid, key), await getTask(failed.uid, key)]) {
        assert.equal(t.details?.path, '', `${key}: details.path`);
        assert.equal(t.details?.destination, '', `${key}: details.destination`);
      }
      const f = await getTask(failed.uid, key);
      assert.equal(f.error?.code, failed.error?.code, 'the code stays');
      assert.equal(
        f.error?.message,
        `copy to ${PLACE_HIDDEN} failed: ENOSPC: no space left on device, write '${PLACE_HIDDEN}' (data dir ${PLACE_HIDDEN})`,
      );
      const c = tasks();
      const page = await unaryCall<ListTasksResponse>((q, cb) => c.listTasks(q, md(key), cb), { limit: 20 });
      assert.equal(page.results.length, 2);
      const text = JSON.stringify(page.results, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v));
      assert.ok(!text.includes(n.dir) && !text.includes('secret-bucket'), text);
    }
    // The gateway forwards the caller's key: a read key's GET /tasks and GET /tasks/:uid show none of it.
    for (const url of ['/tasks', `/tasks/${failed.uid}`, `/tasks/${done.uid}`]) {
      const res = await gw.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${READER}` } });
      assert.equal(res.statusCode, 200, res.body);
      assert.ok(!res.body.includes(n.dir) && !res.body.includes('secret-bucket'), res.body);
    }
    const res = await gw.app.inject({ method: 'GET', url: `/tasks/${done.uid}`, headers: { authorization: `Bearer ${READER}` } });
    const body = JSON.parse(res.body) as { details: Record<string, unknown>; status: string };
    assert.equal(body.status, 'succeeded');
    assert.equal(body.details['path'], null);
    assert.equal(body.details['destination'], null);
    const adminRes = await gw.app.inject({ method: 'GET', url: `/tasks/${done.uid}`, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal((JSON.parse(adminRes.body) as { details: Record<string, unknown> }).details['path'], n.snapshotPath);
  });
});

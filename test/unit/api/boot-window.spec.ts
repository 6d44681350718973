/**
 * The client plane between bindApiServer and serve (the node still booting:
 * RocksDB opening, the log loading; seconds on a loaded host): a call answers
 * UNAVAILABLE "... is starting" (transient: our client and gRPC retry
 * policies retry it), not UNIMPLEMENTED (permanent: never retried; the
 * gateway maps it to 501). Found by chaos seed 3101 (3 nodes, TLS): 8
 * write-once puts to a node restarted after SIGKILL failed UNIMPLEMENTED.
 * After serve a service the node does not serve (SnapshotService and
 * TaskService without snapshotApi) still answers UNIMPLEMENTED.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { SNAPSHOT_SERVICE_DEFINITION } from '../../../src/api/snapshot-serializer.js';
import { ClusterServiceClient, StatusRequest } from '../../../src/gen/snapcoord/v1/cluster.js';
import { KVServiceClient, PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import { GetSnapshotRequest, GetTaskRequest, TaskServiceClient } from '../../../src/gen/snapcoord/v1/snapshot.js';
import type { Node } from '../../../src/node/node.js';
import { serveSolo } from './harness.js';

const enc = new TextEncoder();
const insecure = grpc.credentials.createInsecure();
const SnapshotClient = grpc.makeGenericClientConstructor(SNAPSHOT_SERVICE_DEFINITION, 'snapcoord.v1.SnapshotService');

interface Outcome {
  readonly code: number;
  readonly details: string;
}

/** unary calls `method` once with a 5 s deadline and resolves with its status (OK: code 0). */
function unary(client: grpc.Client, method: string, req: unknown): Promise<Outcome> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (r: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void>)[method];
    assert.ok(fn !== undefined, method);
    fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err) => resolve({ code: err?.code ?? grpc.status.OK, details: err?.details ?? '' }));
  });
}

/** serverStream opens `method`'s stream and resolves with the status it ends with. */
function serverStream(client: grpc.Client, method: string, req: unknown): Promise<Outcome> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (r: unknown, o: grpc.CallOptions) => grpc.ClientReadableStream<unknown>>)[method];
    assert.ok(fn !== undefined, method);
    const call = fn.call(client, req, { deadline: Date.now() + 5_000 });
    call.on('data', () => undefined);
    call.on('error', () => undefined);
    call.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
  });
}

/** clientStream opens `method`'s stream, ends it at once and resolves with its status. */
function clientStream(client: grpc.Client, method: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, (o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => grpc.ClientWritableStream<unknown>>)[method];
    assert.ok(fn !== undefined, method);
    const call = fn.call(client, { deadline: Date.now() + 5_000 }, (err) => resolve({ code: err?.code ?? grpc.status.OK, details: err?.details ?? '' }));
    call.end();
  });
}

describe('api: the client plane before serve (the node booting)', function () {
  this.timeout(30_000);
  let api: ApiServer | undefined;
  let node: Node | undefined;
  const clients: grpc.Client[] = [];

  after(async () => {
    for (const c of clients) c.close();
    await api?.close(100);
    await node?.stop();
  });

  it('answers UNAVAILABLE "starting" on every service until serve, then serves (and UNIMPLEMENTED for a service it does not serve)', async () => {
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' });
    const kv = new KVServiceClient(api.address, insecure);
    const cluster = new ClusterServiceClient(api.address, insecure);
    const tasks = new TaskServiceClient(api.address, insecure);
    const snaps = new SnapshotClient(api.address, insecure);
    clients.push(kv, cluster, tasks, snaps);
    const put = PutRequest.fromPartial({ key: enc.encode('k'), value: enc.encode('v') });
    const status = StatusRequest.fromPartial({});
    const getTask = GetTaskRequest.fromPartial({ uid: 1n });
    const getSnapshot = GetSnapshotRequest.fromPartial({});

    const before: Record<string, Outcome> = {
      'KV/Put': await unary(kv, 'put', put),
      'Cluster/Status': await unary(cluster, 'status', status),
      'Task/GetTask': await unary(tasks, 'getTask', getTask),
      'Snapshot/GetSnapshot (server stream)': await serverStream(snaps, 'getSnapshot', getSnapshot),
      'Snapshot/RestoreSnapshot (client stream)': await clientStream(snaps, 'restoreSnapshot'),
    };
    for (const [what, o] of Object.entries(before)) {
      assert.equal(grpc.status[o.code], 'UNAVAILABLE', `${what} before serve: ${grpc.status[o.code]} ${o.details}`);
      assert.match(o.details, /starting/, what);
    }

    node = await serveSolo(api);
    const after = await unary(kv, 'put', put);
    assert.equal(after.code, grpc.status.OK, `KV/Put after serve: ${grpc.status[after.code]} ${after.details}`);
    assert.equal((await unary(cluster, 'status', status)).code, grpc.status.OK);
    // Served without snapshotApi: those services are not there, and say so for good.
    assert.equal(grpc.status[(await unary(tasks, 'getTask', getTask)).code], 'UNIMPLEMENTED');
    assert.equal(grpc.status[(await serverStream(snaps, 'getSnapshot', getSnapshot)).code], 'UNIMPLEMENTED');
    assert.equal(grpc.status[(await clientStream(snaps, 'restoreSnapshot')).code], 'UNIMPLEMENTED');
  });
});

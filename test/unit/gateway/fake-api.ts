/**
 * FakeApi: an in-process grpc-js server on 127.0.0.1:0 serving
 * ClusterService, SnapshotService and TaskService with handlers a test
 * supplies (unsupplied methods answer UNIMPLEMENTED), so that gateway tests
 * exercise real gRPC clients, status codes, trailers and flow control.
 */
import * as grpc from '@grpc/grpc-js';
import { ClusterServiceService, Role, type StatusResponse } from '../../../src/gen/snapcoord/v1/cluster.js';
import { SnapshotServiceService, TaskServiceService, type Task } from '../../../src/gen/snapcoord/v1/snapshot.js';

// Handler maps, loosely typed: each test supplies the handlers it needs.
type Handlers = Record<string, grpc.UntypedHandleCall>;

export interface FakeApiHandlers {
  readonly cluster?: Handlers;
  readonly snapshots?: Handlers;
  readonly tasks?: Handlers;
}

export interface FakeApi {
  readonly address: string;
  readonly server: grpc.Server;
  close(): Promise<void>;
}

const unimplemented = (name: string): grpc.UntypedHandleCall =>
  ((call: unknown, callback?: (err: grpc.ServiceError | null) => void) => {
    const err = Object.assign(new Error(`${name} not implemented by this fake`), { code: grpc.status.UNIMPLEMENTED, details: `${name} not implemented`, metadata: new grpc.Metadata() });
    if (typeof callback === 'function') callback(err);
    else (call as { destroy(e: Error): void }).destroy(err);
  }) as grpc.UntypedHandleCall;

function fill(def: Record<string, unknown>, given: Handlers | undefined): Handlers {
  const out: Handlers = {};
  for (const name of Object.keys(def)) out[name] = given?.[name] ?? unimplemented(name);
  return out;
}

/** startFakeApi binds 127.0.0.1:0 and serves the given handlers. */
export async function startFakeApi(h: FakeApiHandlers): Promise<FakeApi> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 });
  server.addService(ClusterServiceService, fill(ClusterServiceService, h.cluster));
  server.addService(SnapshotServiceService, fill(SnapshotServiceService, h.snapshots));
  server.addService(TaskServiceService, fill(TaskServiceService, h.tasks));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1_000).unref();
      }),
  };
}

/** grpcError builds a ServiceError-like error with `code`, `details` and trailing metadata. */
export function grpcError(code: grpc.status, details: string, trailers: Record<string, string> = {}): grpc.ServiceError {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(trailers)) metadata.set(k, v);
  return Object.assign(new Error(details), { code, details, metadata });
}

/** unaryOk answers every call with `res`. */
export function unaryOk<Res>(res: Res | ((req: unknown) => Res)): grpc.UntypedHandleCall {
  return ((call: grpc.ServerUnaryCall<unknown, Res>, cb: grpc.sendUnaryData<Res>) =>
    cb(null, typeof res === 'function' ? (res as (r: unknown) => Res)(call.request) : res)) as grpc.UntypedHandleCall;
}

/** unaryFail answers every call with `err`. */
export function unaryFail(err: grpc.ServiceError): grpc.UntypedHandleCall {
  return ((_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(err)) as grpc.UntypedHandleCall;
}

/** status builds a StatusResponse. */
export function status(role: Role, leaderId: string): StatusResponse {
  return { id: 'n1', role, term: 3n, leaderId, leaderAddress: leaderId === '' ? '' : '127.0.0.1:1', commitIndex: 5n, appliedIndex: 5n, members: [], snapshotIndex: 0n, leaderClientAddress: '', snapshotLoss: undefined, snapshotScrub: undefined };
}

/** task builds a Task with defaults. */
export function task(over: Partial<Task> = {}): Task {
  return {
    uid: 7n,
    status: 'enqueued',
    type: 'snapshotCreation',
    details: undefined,
    error: undefined,
    duration: '',
    enqueuedAt: '2026-01-02T03:04:05.000Z',
    startedAt: '',
    finishedAt: '',
    ...over,
  };
}

export { Role };

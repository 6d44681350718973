/**
 * The client plane's auth interceptor on a real node: a single-node cluster
 * on RocksDB with its snapshot manager and task queue, the real KV, Cluster,
 * Snapshot and Task services, health and reflection, in a grpc.Server built
 * with clientAuthInterceptor. Every client RPC is called with no key, a wrong
 * key, every weaker key and the right keys; the cases come from RPC_ACTIONS
 * and from the services' definitions, so an RPC the table does not name
 * fails here. Each service's handlers are counted on their way in (the real
 * handlers run), which tells whether a call reached its handler.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath, service as healthService } from 'grpc-health-check';

import { ACTIONS, type Action, type ApiKeySpec } from '../../../src/auth/keys.js';
import {
  DEFAULT_NEED,
  INVALID_KEY_MESSAGE,
  MISSING_KEY_MESSAGE,
  RPC_ACTIONS,
  RPC_ACTION_REASONS,
  clientAuthInterceptor,
  rpcActionsMarkdown,
  rpcNeed,
  type RpcNeed,
} from '../../../src/api/auth-interceptor.js';
import { createClusterService } from '../../../src/api/cluster-service.js';
import { createKvService } from '../../../src/api/kv-service.js';
import { LeaderForwarder } from '../../../src/api/leader-forwarder.js';
import { PROTO_FILES, protoDir } from '../../../src/api/proto-dir.js';
import { prepareRoots } from '../../../src/api/snapshot-path.js';
import { createSnapshotService, createTaskService } from '../../../src/api/snapshot-service.js';
import { ClusterServiceService } from '../../../src/gen/snapcoord/v1/cluster.js';
import { KVServiceService } from '../../../src/gen/snapcoord/v1/kv.js';
import { SnapshotServiceService, TaskFilter, TaskServiceService, type GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { Node } from '../../../src/node/node.js';
import { snapshotTaskRunner } from '../../../src/ops/snapshot-task.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { TaskQueue } from '../../../src/ops/task-queue.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { FORMAT_VERSION } from '../../../src/storage/types.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const silent = { debug() {}, info() {}, warn() {}, error() {} };

const ADMIN_KEY = 'admin-key-for-auth-tests-0001';
/** ACTION_KEYS: one extra key per non-admin action, holding only that action. */
const ACTION_KEYS = Object.fromEntries(ACTIONS.filter((a) => a !== 'admin').map((a) => [a, `key-${a}-0123456789`])) as Record<
  Exclude<Action, 'admin'>,
  string
>;
const EXTRA_KEYS: ApiKeySpec[] = Object.entries(ACTION_KEYS).map(([a, key]) => ({ key, actions: [a as Action] }));
const WRONG_KEY = 'wrong-key-0123456789';

// The client services and the standard ones, as their definitions declare them.
const require = createRequire(import.meta.url);
const reflectionProtoDir = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
function loadService(file: string, dir: string, name: string[]): grpc.ServiceDefinition {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(file, { includeDirs: [dir], keepCase: true, defaults: true, oneofs: true }));
  let at: unknown = pkg;
  for (const part of name) at = (at as Record<string, unknown>)[part];
  return (at as { service: grpc.ServiceDefinition }).service;
}
const CLIENT_SERVICES: Readonly<Record<string, grpc.ServiceDefinition>> = {
  KVService: KVServiceService,
  ClusterService: ClusterServiceService,
  SnapshotService: SnapshotServiceService,
  TaskService: TaskServiceService,
};
const STANDARD_SERVICES: Readonly<Record<string, grpc.ServiceDefinition>> = {
  Health: healthService as unknown as grpc.ServiceDefinition,
  ReflectionV1: loadService('grpc/reflection/v1/reflection.proto', reflectionProtoDir, ['grpc', 'reflection', 'v1', 'ServerReflection']),
  ReflectionV1alpha: loadService('grpc/reflection/v1alpha/reflection.proto', reflectionProtoDir, [
    'grpc',
    'reflection',
    'v1alpha',
    'ServerReflection',
  ]),
};
// An extra service no table names: default deny.
const UNLISTED_PATH = '/snapcoord.test.Unlisted/Echo';
const identity = (b: Buffer): Buffer => b;
const UNLISTED_SERVICE: grpc.ServiceDefinition = {
  Echo: {
    path: UNLISTED_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

type AnyMethod = grpc.MethodDefinition<unknown, unknown>;
interface Rpc {
  readonly path: string;
  readonly def: AnyMethod;
}
const rpcsOf = (services: Readonly<Record<string, grpc.ServiceDefinition>>): Rpc[] =>
  Object.values(services).flatMap((s) => Object.values(s).map((def) => ({ path: def.path, def: def as AnyMethod })));
const CLIENT_RPCS = rpcsOf(CLIENT_SERVICES);

/**
 * sampleRequests: harmless requests the handlers can answer (or refuse on
 * their own terms) without changing membership or leadership; the messages
 * of a client stream for RestoreSnapshot. Anything not named: the request
 * decoded from no bytes (every field at its default).
 */
const SAMPLE_REQUESTS: Readonly<Record<string, unknown>> = {
  '/snapcoord.v1.KVService/Put': { key: enc.encode('auth/k'), value: enc.encode('v') },
  '/snapcoord.v1.KVService/Get': { key: enc.encode('auth/k') },
  '/snapcoord.v1.KVService/Delete': { key: enc.encode('auth/nothing-here') },
  '/snapcoord.v1.KVService/Range': { prefix: enc.encode('auth/') },
  '/snapcoord.v1.ClusterService/AddMember': { id: '' }, // INVALID_ARGUMENT from the handler
  '/snapcoord.v1.ClusterService/RemoveMember': { id: 'nobody' },
  '/snapcoord.v1.ClusterService/TransferLeadership': { targetId: 'nobody' },
  '/snapcoord.v1.SnapshotService/CreateSnapshot': { task: true },
  '/snapcoord.v1.SnapshotService/GetSnapshot': { stale: true },
  '/snapcoord.v1.SnapshotService/RestoreSnapshot': [{ data: Buffer.from('not an archive') }], // INVALID_ARGUMENT, nothing changes
  '/snapcoord.v1.SnapshotService/InspectSnapshot': { id: 'no-such-snapshot' },
  '/snapcoord.v1.TaskService/GetTask': { uid: 999_999n },
  '/snapcoord.v1.TaskService/CancelTasks': { filter: TaskFilter.fromPartial({ uids: [999_999n] }) },
  '/grpc.health.v1.Health/Check': { service: '' },
  '/grpc.health.v1.Health/Watch': { service: '' },
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo': [{ list_services: '' }],
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo': [{ list_services: '' }],
  [UNLISTED_PATH]: Buffer.from('echo'),
};

function requestsFor(rpc: Rpc): unknown[] {
  const sample = SAMPLE_REQUESTS[rpc.path];
  if (Array.isArray(sample)) return sample;
  const base = rpc.def.requestDeserialize(Buffer.alloc(0)) as object;
  if (Buffer.isBuffer(sample)) return [sample];
  return [{ ...base, ...(sample as object | undefined) }];
}

interface Outcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly responses: number;
}

/**
 * call runs one RPC to the end whatever its kind; streams read every answer
 * (a bidi stream is ended after its first answer). `requests` undefined: the
 * client stream is left open with nothing written (its status must come anyway).
 */
function call(client: grpc.Client, rpc: Rpc, metadata: grpc.Metadata, requests: unknown[] | undefined = requestsFor(rpc)): Promise<Outcome> {
  const { def, path } = rpc;
  const opts: grpc.CallOptions = { deadline: Date.now() + 15_000 };
  const ser = def.requestSerialize;
  const de = def.responseDeserialize;
  return new Promise<Outcome>((resolve) => {
    let responses = 0;
    const done = (err: grpc.ServiceError | null): void =>
      resolve({ code: err === null ? grpc.status.OK : err.code, details: err === null ? '' : err.details, responses });
    const cb = (err: grpc.ServiceError | null, res?: unknown): void => {
      if (res !== undefined) responses++;
      done(err);
    };
    if (!def.requestStream && !def.responseStream) {
      client.makeUnaryRequest(path, ser, de, requests?.[0], metadata, opts, cb);
    } else if (!def.requestStream) {
      const s = client.makeServerStreamRequest(path, ser, de, requests?.[0], metadata, opts);
      s.on('data', () => responses++);
      s.on('error', (e: grpc.ServiceError) => done(e));
      s.on('end', () => done(null));
    } else if (!def.responseStream) {
      const s = client.makeClientStreamRequest(path, ser, de, metadata, opts, cb);
      if (requests !== undefined) {
        for (const r of requests) s.write(r);
        s.end();
      }
    } else {
      const s = client.makeBidiStreamRequest(path, ser, de, metadata, opts);
      s.on('data', () => {
        responses++;
        s.end();
      });
      s.on('error', (e: grpc.ServiceError) => done(e));
      s.on('end', () => done(null));
      for (const r of requests ?? []) s.write(r);
    }
  });
}

function bearer(key: string | null, scheme = 'Bearer'): grpc.Metadata {
  const md = new grpc.Metadata();
  if (key !== null) md.set('authorization', `${scheme} ${key}`);
  return md;
}

/** weakerKeys: every configured key whose actions do not include `need` (admin never is one). */
function weakerKeys(need: RpcNeed): [string, string][] {
  if (need === 'open' || need === 'anyKey') return [];
  return Object.entries(ACTION_KEYS).filter(([a]) => a !== need);
}

/** rightKeys: the keys that may call a method needing `need`. */
function rightKeys(need: RpcNeed): [string, string][] {
  if (need === 'open' || need === 'anyKey') return [['admin', ADMIN_KEY], ...Object.entries(ACTION_KEYS)];
  if (need === 'admin') return [['admin', ADMIN_KEY]];
  return [
    [need, ACTION_KEYS[need]],
    ['admin', ADMIN_KEY],
  ];
}

const AUTH_CODES = new Set([grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);

describe('client-plane auth interceptor (real node, every client RPC)', function () {
  this.timeout(120_000);
  let dir: string;
  let storage: RocksStorage;
  let node: Node;
  let tasks: TaskQueue;
  let server: grpc.Server;
  let address: string;
  let client: grpc.Client;
  let closeSnapshots: () => void = () => undefined;
  let forwarder: LeaderForwarder;
  /** reached: the method paths whose (real) handler was called, in order. */
  const reached: string[] = [];
  const logLines: string[] = [];
  const logger = {
    warn(obj: object, msg?: string) {
      logLines.push(JSON.stringify({ obj, msg }));
    },
  };

  /** counted wraps every handler of a service implementation so that a call that reaches it is recorded. */
  function counted(def: grpc.ServiceDefinition, impl: object): grpc.UntypedServiceImplementation {
    const out: grpc.UntypedServiceImplementation = {};
    for (const [name, h] of Object.entries(impl as Record<string, (...args: unknown[]) => unknown>)) {
      const path = def[name]?.path;
      assert.ok(path !== undefined, `handler ${name} has a method in its definition`);
      out[name] = ((...args: unknown[]) => {
        reached.push(path);
        return h(...args);
      }) as grpc.UntypedHandleCall;
    }
    return out;
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-auth-'));
    server = new grpc.Server({
      interceptors: [clientAuthInterceptor({ adminKey: ADMIN_KEY, keys: EXTRA_KEYS, logger })],
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
    storage = await RocksStorage.open(join(dir, 'n1'));
    await storage.checkIdentity({ nodeId: 'n1', clusterId: 'test', formatVersion: FORMAT_VERSION }, { createIfNew: true });
    const snapshots = await SnapshotManager.open(join(dir, 'n1', 'snapshots'), storage, DEFAULT_SNAPSHOT_POLICY, silent, 'test', systemClock);
    const ref: { node: Node | null } = { node: null };
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m) });
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage,
      transport,
      initialMembership: { voters: ['n1'], learners: [], addresses: { n1: address } },
      snapshots,
    });
    ref.node = node;
    const snapshotPath = join(dir, 'task-snapshots', 'n1.snapshot');
    tasks = await TaskQueue.open(join(dir, 'n1', 'tasks.json'), { snapshotCreation: snapshotTaskRunner(node, snapshotPath) }, silent);
    forwarder = new LeaderForwarder(node);
    const snap = createSnapshotService(node, {
      snapshots,
      tasks: { queue: tasks, snapshotPath },
      realRoots: await prepareRoots([join(dir, 'roots')]),
      directoryExport: { storage: rocksDataDir, nodeId: 'n1', clusterId: 'test', selfAddress: address, version: 'test' },
    });
    closeSnapshots = snap.close;
    server.addService(KVServiceService, counted(KVServiceService, createKvService(node, forwarder)));
    server.addService(ClusterServiceService, counted(ClusterServiceService, createClusterService(node, forwarder)));
    server.addService(SnapshotServiceService, counted(SnapshotServiceService, snap.service));
    server.addService(TaskServiceService, counted(TaskServiceService, createTaskService(tasks)));
    server.addService(UNLISTED_SERVICE, {
      Echo: (c: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        reached.push(UNLISTED_PATH);
        cb(null, c.request);
      },
    });
    new HealthImplementation({ '': 'SERVING' }).addToServer(server);
    const reflectionPkg = protoLoader.loadSync([...PROTO_FILES, healthProtoPath], { includeDirs: [protoDir()], keepCase: true });
    new ReflectionService(reflectionPkg).addToServer(server);
    await until('n1 to lead', 10_000, () => (node.status().role === 'leader' ? true : undefined));
    await node.propose({ op: 'put', key: enc.encode('auth/k'), value: enc.encode('before') });
    client = new grpc.Client(address, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    forwarder?.close();
    closeSnapshots();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        server?.forceShutdown();
        resolve();
      }, 2_000);
      server?.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    await tasks?.close();
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('RPC_ACTIONS names every method of the client services and nothing else; every entry has its reason', () => {
    const table = Object.keys(RPC_ACTIONS);
    for (const { path } of CLIENT_RPCS) assert.ok(table.includes(path), `${path} has no RPC_ACTIONS entry (decide its action)`);
    for (const { path } of rpcsOf(STANDARD_SERVICES)) assert.notEqual(rpcNeed(path), DEFAULT_NEED, `${path} is covered by a wildcard`);
    const known = new Set([...CLIENT_RPCS, ...rpcsOf(STANDARD_SERVICES)].map((r) => r.path));
    for (const path of table) {
      if (path.endsWith('/*')) {
        const prefix = path.slice(0, -1);
        assert.ok([...known].some((p) => p.startsWith(prefix)), `${path} covers a real service`);
      } else {
        assert.ok(known.has(path), `${path} is a real method`);
      }
      assert.ok((RPC_ACTION_REASONS as Record<string, string>)[path]?.length, `${path} has a reason`);
    }
    assert.equal(rpcNeed(UNLISTED_PATH), 'admin', 'default deny');
    assert.equal(rpcNeed('/snapcoord.v1.RaftService/AppendEntries'), 'admin', 'the peer service is not a client RPC');
  });

  it('the action model: the whole state out or in needs snapshots.write; metadata reads snapshots.read; KV its own actions', () => {
    const need = (p: string): RpcNeed => rpcNeed(p);
    for (const m of ['GetSnapshot', 'RestoreSnapshot', 'CreateSnapshot']) assert.equal(need(`/snapcoord.v1.SnapshotService/${m}`), 'snapshots.write', m);
    for (const m of ['ListSnapshots', 'InspectSnapshot']) assert.equal(need(`/snapcoord.v1.SnapshotService/${m}`), 'snapshots.read', m);
    assert.equal(need('/snapcoord.v1.TaskService/CancelTasks'), 'snapshots.write');
    for (const m of ['AddMember', 'RemoveMember', 'TransferLeadership', 'Vote']) assert.equal(need(`/snapcoord.v1.ClusterService/${m}`), 'cluster', m);
    assert.equal(need('/snapcoord.v1.ClusterService/Status'), 'anyKey');
    assert.equal(need('/grpc.health.v1.Health/Check'), 'open');
    assert.equal(need('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo'), 'anyKey');
    const md = rpcActionsMarkdown();
    assert.match(md, /^\| method \| action \| why \|\n\|---\|---\|---\|\n/);
    assert.equal(md.split('\n').length, 2 + Object.keys(RPC_ACTIONS).length + 1);
    assert.match(md, /\| `\/snapcoord\.v1\.SnapshotService\/GetSnapshot` \| `snapshots\.write` \(or `admin`\) \|/);
    assert.match(md, /\| any other method \| `admin` \|/);
  });

  // One test per client RPC (and the unlisted one), generated from the definitions and the table.
  for (const rpc of [...CLIENT_RPCS, { path: UNLISTED_PATH, def: UNLISTED_SERVICE['Echo'] as AnyMethod }]) {
    const need = rpcNeed(rpc.path);
    it(`${rpc.path} (needs ${need}): no key, wrong key, weaker keys refused before the handler; right keys reach it`, async () => {
      const reaches = (): number => reached.filter((p) => p === rpc.path).length;
      const refusals: [string, grpc.Metadata, grpc.status, RegExp][] = [
        ['no key', new grpc.Metadata(), grpc.status.UNAUTHENTICATED, new RegExp(`^${MISSING_KEY_MESSAGE.replace(/[<>]/g, '.')}$`)],
        ['another scheme', bearer(ADMIN_KEY, 'Basic'), grpc.status.UNAUTHENTICATED, /^missing API key/],
        ['wrong key', bearer(WRONG_KEY), grpc.status.UNAUTHENTICATED, new RegExp(`^${INVALID_KEY_MESSAGE}$`)],
        ...weakerKeys(need).map(
          ([action, key]): [string, grpc.Metadata, grpc.status, RegExp] => [
            `weaker key (${action})`,
            bearer(key),
            grpc.status.PERMISSION_DENIED,
            new RegExp(`needs the "${need.replace('.', '\\.')}" action`),
          ],
        ),
      ];
      for (const [what, md, code, details] of refusals) {
        const before = reaches();
        const out = await call(client, rpc, md);
        assert.equal(out.code, code, `${what}: ${grpc.status[out.code]} ${out.details}`);
        assert.match(out.details, details, what);
        assert.equal(out.responses, 0, `${what}: no answer message`);
        assert.equal(reaches(), before, `${what}: the handler must not run`);
      }
      for (const [what, key] of rightKeys(need)) {
        const before = reaches();
        const out = await call(client, rpc, bearer(key));
        assert.ok(!AUTH_CODES.has(out.code), `right key (${what}): ${grpc.status[out.code]} ${out.details}`);
        assert.equal(reaches(), before + 1, `right key (${what}): the handler runs once`);
      }
    });
  }

  it('health Check answers without a key; Watch (a stream that never ends) and List need one', async () => {
    for (const rpc of rpcsOf({ Health: STANDARD_SERVICES['Health'] as grpc.ServiceDefinition })) {
      assert.equal(rpcNeed(rpc.path), rpc.path.endsWith('/Check') ? 'open' : 'anyKey', rpc.path);
    }
    const watch = rpcsOf({ Health: STANDARD_SERVICES['Health'] as grpc.ServiceDefinition }).find((r) => r.path.endsWith('/Watch'));
    assert.ok(watch);
    const refused = await call(client, watch, new grpc.Metadata());
    assert.equal(refused.code, grpc.status.UNAUTHENTICATED, refused.details);
    const check = rpcsOf({ Health: STANDARD_SERVICES['Health'] as grpc.ServiceDefinition }).find((r) => r.path.endsWith('/Check'));
    assert.ok(check);
    const out = await call(client, check, new grpc.Metadata());
    assert.equal(out.code, grpc.status.OK, out.details);
    assert.equal(out.responses, 1);
  });

  it('reflection (v1 and v1alpha) is refused without a key or with a wrong one, and answers any valid key', async () => {
    for (const rpc of rpcsOf({ v1: STANDARD_SERVICES['ReflectionV1']!, v1alpha: STANDARD_SERVICES['ReflectionV1alpha']! })) {
      const none = await call(client, rpc, new grpc.Metadata());
      assert.equal(none.code, grpc.status.UNAUTHENTICATED, `${rpc.path}: ${none.details}`);
      assert.equal(none.responses, 0);
      const wrong = await call(client, rpc, bearer(WRONG_KEY));
      assert.equal(wrong.code, grpc.status.UNAUTHENTICATED);
      for (const key of [ADMIN_KEY, ACTION_KEYS['kv.read'], ACTION_KEYS['snapshots.read']]) {
        const ok = await call(client, rpc, bearer(key));
        assert.equal(ok.code, grpc.status.OK, `${rpc.path}: ${ok.details}`);
        assert.equal(ok.responses, 1, 'the service list came back');
      }
    }
  });

  it('RestoreSnapshot is refused on its metadata alone: before any byte of the body, and a real archive changes nothing', async () => {
    const restore = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.SnapshotService/RestoreSnapshot');
    assert.ok(restore);
    const reachesRestore = (): number => reached.filter((p) => p === restore.path).length;
    const before = reachesRestore();
    // The stream is opened and nothing is written, nor is it half-closed: the status comes anyway.
    for (const [md, code] of [
      [new grpc.Metadata(), grpc.status.UNAUTHENTICATED],
      [bearer(WRONG_KEY), grpc.status.UNAUTHENTICATED],
      [bearer(ACTION_KEYS['snapshots.read']), grpc.status.PERMISSION_DENIED],
    ] as const) {
      const out = await call(client, restore, md, undefined);
      assert.equal(out.code, code, out.details);
    }
    // A real archive of another state, uploaded in full with a weaker key: refused, nothing changes.
    const saved = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      const get = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.SnapshotService/GetSnapshot');
      assert.ok(get);
      const s = client.makeServerStreamRequest(get.path, get.def.requestSerialize, get.def.responseDeserialize, { stale: true }, bearer(ADMIN_KEY));
      s.on('data', (m: GetSnapshotResponse) => {
        if (m.data !== undefined) parts.push(Buffer.from(m.data));
      });
      s.on('error', reject);
      s.on('end', () => resolve(Buffer.concat(parts)));
    });
    assert.ok(saved.length > 0);
    await node.propose({ op: 'put', key: enc.encode('auth/k'), value: enc.encode('after') });
    const chunks = [];
    for (let at = 0; at < saved.length; at += 16 * 1024) chunks.push({ data: saved.subarray(at, at + 16 * 1024) });
    for (const key of [ACTION_KEYS['snapshots.read'], ACTION_KEYS['kv.write'], ACTION_KEYS['cluster']]) {
      const out = await call(client, restore, bearer(key), chunks);
      assert.equal(out.code, grpc.status.PERMISSION_DENIED, out.details);
    }
    assert.equal(reachesRestore(), before, 'the restore handler never ran');
    const now = await node.get(enc.encode('auth/k'), true);
    assert.equal(Buffer.from(now ?? []).toString(), 'after', 'the state was not replaced');
  });

  it('Bearer scheme case-insensitive; a key over 4096 bytes is refused as invalid', async () => {
    const status = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.ClusterService/Status');
    assert.ok(status);
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const out = await call(client, status, bearer(ADMIN_KEY, scheme));
      assert.equal(out.code, grpc.status.OK, `${scheme}: ${out.details}`);
    }
    const long = await call(client, status, bearer('k'.repeat(4097)));
    assert.equal(long.code, grpc.status.UNAUTHENTICATED);
    assert.equal(long.details, INVALID_KEY_MESSAGE);
  });

  it('refusals are logged without the key, at most once a minute per client host', async () => {
    const status = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.ClusterService/Status');
    assert.ok(status);
    for (const key of [WRONG_KEY, ACTION_KEYS['kv.read']]) await call(client, status, bearer(key));
    const get = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.KVService/Get');
    assert.ok(get);
    assert.equal((await call(client, get, bearer(ACTION_KEYS['kv.write']))).code, grpc.status.PERMISSION_DENIED);
    const all = logLines.join('\n');
    assert.ok(logLines.length >= 1, 'a refusal was logged');
    assert.equal(logLines.length, 1, `one line for 127.0.0.1 in this run: ${all}`);
    for (const key of [ADMIN_KEY, WRONG_KEY, ...Object.values(ACTION_KEYS), 'k'.repeat(64)]) assert.ok(!all.includes(key), 'a key in the log');
    assert.match(all, /client call refused/);
  });

  it('insecureNoAuth lets every call through; no key configured is a startup error', async () => {
    assert.throws(() => clientAuthInterceptor({ adminKey: '' }), /no API key configured/);
    const warned: string[] = [];
    const open = new grpc.Server({
      interceptors: [clientAuthInterceptor({ adminKey: '', insecureNoAuth: true, logger: { warn: (_o, m) => warned.push(m ?? '') } })],
    });
    try {
      open.addService(KVServiceService, createKvService(node, forwarder));
      const port = await new Promise<number>((resolve, reject) =>
        open.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))),
      );
      const c = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      try {
        const get = CLIENT_RPCS.find((r) => r.path === '/snapcoord.v1.KVService/Get');
        assert.ok(get);
        const out = await call(c, get, new grpc.Metadata());
        assert.equal(out.code, grpc.status.OK, out.details);
      } finally {
        c.close();
      }
      assert.equal(warned.length, 1);
      assert.match(warned[0] ?? '', /insecure-no-auth/);
    } finally {
      open.forceShutdown();
    }
  });
});

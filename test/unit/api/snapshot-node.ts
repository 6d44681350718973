/**
 * SnapshotNode: one in-process single-voter node on RocksDB with its real
 * client API (SnapshotService, TaskService, KV) on 127.0.0.1:0, laid out as
 * `serve` lays out a data dir with its defaults: the snapshot directory (where
 * snapshot tasks write <db>.snapshot) is itself the allowed snapshot root.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { prepareRoots } from '../../../src/api/snapshot-path.js';
import { KVServiceClient } from '../../../src/gen/snapcoord/v1/kv.js';
import { SnapshotServiceClient, TaskServiceClient } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { Node } from '../../../src/node/node.js';
import { snapshotTaskRunner } from '../../../src/ops/snapshot-task.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager, type SnapshotPolicy } from '../../../src/node/snapshots.js';
import type { NodeMetrics } from '../../../src/node/metrics.js';
import { TaskQueue, type TaskQueueOptions, type TaskRunner } from '../../../src/ops/task-queue.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { FORMAT_VERSION } from '../../../src/storage/types.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { until } from '../../harness/until.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

export interface SnapshotNodeOptions {
  readonly tasks?: TaskQueueOptions;
  /** wrapRunner: wraps the real snapshot task runner (e.g. to hold it until the test says go). */
  readonly wrapRunner?: (real: TaskRunner) => TaskRunner;
  /** uploadIdleMs: SnapshotApiOptions.uploadIdleMs (default its default). */
  readonly uploadIdleMs?: number;
  /** downloadStallMs: SnapshotApiOptions.downloadStallMs (default its default). */
  readonly downloadStallMs?: number;
  /** policy: the snapshot policy's fields to change (default DEFAULT_SNAPSHOT_POLICY, snapshotEntries 1,000,000). */
  readonly policy?: Partial<SnapshotPolicy>;
  /** metrics: the node's metrics (NodeOptions.metrics; default none). */
  readonly metrics?: NodeMetrics;
  /** clientAnswerBytesPerCallerMax: BindOptions.clientAnswerBytesPerCallerMax (default its default). */
  readonly clientAnswerBytesPerCallerMax?: number;
  /** exportReserveBytes: the free space directory and task snapshots leave on their file system (as serve's --min-free-bytes; default none). */
  readonly exportReserveBytes?: number;
  /** interceptors: the client plane's server interceptors (BindOptions.interceptors; default none: no auth). */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
}

export class SnapshotNode {
  private readonly clients: grpc.Client[] = [];

  private constructor(
    /** dir: the temp dir holding everything (data dir n1/, snapshots/ = the root and the snapshot dir). */
    readonly dir: string,
    readonly root: string,
    readonly snapshotPath: string,
    readonly api: ApiServer,
    readonly node: Node,
    readonly tasks: TaskQueue,
    readonly tasksFile: string,
    /** snapshots: the node's snapshot manager (its store, uploads). */
    readonly snapshots: SnapshotManager,
  ) {}

  static async start(opts: SnapshotNodeOptions = {}): Promise<SnapshotNode> {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-snapnode-'));
    const root = join(dir, 'snapshots');
    await mkdir(root, { mode: 0o700 });
    const api = await bindApiServer({
      bindAddress: '127.0.0.1:0',
      peerBindAddress: '127.0.0.1:0',
      ...(opts.clientAnswerBytesPerCallerMax !== undefined ? { clientAnswerBytesPerCallerMax: opts.clientAnswerBytesPerCallerMax } : {}),
      ...(opts.interceptors !== undefined ? { interceptors: opts.interceptors } : {}),
    });
    const dataDir = join(dir, 'n1');
    const storage = await RocksStorage.open(dataDir);
    await storage.checkIdentity({ nodeId: 'n1', clusterId: 'test', formatVersion: FORMAT_VERSION }, { createIfNew: true });
    const snapshots = await SnapshotManager.open(join(dataDir, 'snapshots'), storage, { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 1_000_000, ...opts.policy }, silent, 'test', systemClock);
    snapshots.dial = peerDial('snapcoord', api.address);
    const ref: { node: Node | null } = { node: null };
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m), dial: peerDial('snapcoord', api.address) });
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage,
      transport,
      initialMembership: { voters: ['n1'], learners: [], addresses: { n1: api.peerAddress } },
      snapshots,
      ...(opts.metrics !== undefined ? { metrics: opts.metrics } : {}),
    });
    ref.node = node;
    const snapshotPath = join(root, 'n1.snapshot');
    const real = snapshotTaskRunner(node, snapshotPath, opts.exportReserveBytes ?? 0);
    const tasksFile = join(dataDir, 'tasks.json');
    const tasks = await TaskQueue.open(tasksFile, { snapshotCreation: opts.wrapRunner?.(real) ?? real }, silent, opts.tasks ?? {});
    api.serve({
      node,
      snapshotApi: {
        snapshots,
        tasks: { queue: tasks, snapshotPath },
        realRoots: await prepareRoots([root]),
        directoryExport: {
          storage: rocksDataDir,
          nodeId: 'n1',
          clusterId: 'test',
          selfAddress: api.peerAddress,
          version: 'test',
          ...(opts.exportReserveBytes !== undefined ? { reserveBytes: opts.exportReserveBytes } : {}),
        },
        ...(opts.uploadIdleMs !== undefined ? { uploadIdleMs: opts.uploadIdleMs } : {}),
        ...(opts.downloadStallMs !== undefined ? { downloadStallMs: opts.downloadStallMs } : {}),
      },
    });
    await until('n1 to lead', 10_000, () => (node.status().role === 'leader' ? true : undefined));
    return new SnapshotNode(dir, root, snapshotPath, api, node, tasks, tasksFile, snapshots);
  }

  snapshotClient(): SnapshotServiceClient {
    const c = new SnapshotServiceClient(this.api.address, grpc.credentials.createInsecure());
    this.clients.push(c);
    return c;
  }

  taskClient(): TaskServiceClient {
    const c = new TaskServiceClient(this.api.address, grpc.credentials.createInsecure());
    this.clients.push(c);
    return c;
  }

  kvClient(): KVServiceClient {
    const c = new KVServiceClient(this.api.address, grpc.credentials.createInsecure());
    this.clients.push(c);
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.close();
    await this.api.close(100);
    await this.tasks.close();
    await this.node.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function unaryCall<Res>(f: (req: any, cb: (e: grpc.ServiceError | null, r: Res) => void) => unknown, req: object): Promise<Res> {
  return new Promise((resolve, reject) => f(req, (e, r) => (e !== null ? reject(e) : resolve(r))));
}

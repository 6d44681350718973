/**
 * RocksCluster: N in-process nodes on RocksDB in a temp dir, each with its
 * snapshot manager, the real GrpcTransport and a real API server on
 * 127.0.0.1. A member can be stopped and restarted on the same address and
 * data dir, which is how a follower is cut off until the leader compacts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import type { SnapshotServiceClient, RestoreSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import type { DiskGuard } from '../../../src/node/disk-guard.js';
import { Node, type NodeTimings } from '../../../src/node/node.js';
import { prepareRoots } from '../../../src/api/snapshot-path.js';
import { snapshotTaskRunner } from '../../../src/ops/snapshot-task.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager, type SnapshotPolicy } from '../../../src/node/snapshots.js';
import { TaskQueue } from '../../../src/ops/task-queue.js';
import type { Membership } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { FORMAT_VERSION, type NodeStorage } from '../../../src/storage/types.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { until } from '../../harness/until.js';
import type { Logger } from '../../../src/node/logger.js';

export interface RocksMember {
  readonly id: string;
  /** address: the client plane; peerAddress: the peer plane (the membership's). */
  address: string;
  peerAddress: string;
  api: ApiServer | null;
  /** peers: the membership this member bootstraps from (its --peers; default the cluster's at start). */
  peers?: Membership;
  node: Node | null;
  storage: RocksStorage | null;
  snapshots: SnapshotManager | null;
  tasks: TaskQueue | null;
}

export class RocksCluster {
  readonly members: RocksMember[] = [];
  /**
   * wrapStorage: when set, what a member's node and snapshot manager see of
   * its RocksStorage at its next (re)start (a test slows parts of it down).
   */
  wrapStorage: ((id: string, storage: RocksStorage) => NodeStorage) | null = null;
  /**
   * stateImages: the members' NodeOptions.stateImages. Off unless start() is told: the restore tests
   * written before it check each member's install from its own archive copy.
   */
  stateImages = false;
  /** verifyImageRecords: the members' NodeOptions.verifyImageRecords (off, its default, unless start() is told). */
  verifyImageRecords = false;
  /** diskGuardFor: a member's NodeOptions.diskGuard at each (re)start, given its data dir (none unless start() is told). */
  diskGuardFor: ((id: string, dataDir: string) => DiskGuard) | null = null;
  private membership: Membership = { voters: [], learners: [], addresses: {} };
  private readonly logs = new Map<string, LogLine[]>();

  private constructor(
    readonly dir: string,
    private readonly policy: SnapshotPolicy,
    private readonly timings: Partial<NodeTimings>,
    private readonly snapshotIo: SnapshotIo,
  ) {}

  /** start boots `size` members; options.snapshotIo: the snapshot managers' file system and compression (a test gates parts of it). */
  static async start(
    size: number,
    policy: Partial<SnapshotPolicy> = {},
    timings: Partial<NodeTimings> = {},
    options: { readonly snapshotIo?: SnapshotIo; readonly stateImages?: boolean; readonly verifyImageRecords?: boolean; readonly diskGuardFor?: (id: string, dataDir: string) => DiskGuard } = {},
  ): Promise<RocksCluster> {
    const c = new RocksCluster(await mkdtemp(join(tmpdir(), 'snapcoord-rocks-cluster-')), { ...DEFAULT_SNAPSHOT_POLICY, ...policy }, timings, options.snapshotIo ?? nodeSnapshotIo);
    c.stateImages = options.stateImages ?? false;
    c.verifyImageRecords = options.verifyImageRecords ?? false;
    c.diskGuardFor = options.diskGuardFor ?? null;
    const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
    const apis: ApiServer[] = [];
    for (let i = 0; i < size; i++) apis.push(await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' }));
    const addresses = Object.fromEntries(ids.map((id, i) => [id, (apis[i] as ApiServer).peerAddress]));
    c.membership = { voters: ids, learners: [], addresses };
    for (let i = 0; i < size; i++) {
      const m: RocksMember = { id: ids[i] as string, address: (apis[i] as ApiServer).address, peerAddress: (apis[i] as ApiServer).peerAddress, api: apis[i] as ApiServer, node: null, storage: null, snapshots: null, tasks: null };
      c.members.push(m);
      await c.boot(m);
    }
    return c;
  }

  /**
   * join boots a new member `id` with an empty data dir, bootstrapping from
   * `peers(peerAddress)` (the --peers an operator gives it, given its own
   * peer address); it is not in the membership until a leader adds it.
   */
  /** join boots a new member `id` from `peers(its peer address)`, on `bound` (its API server, bound already) or a new one. */
  async join(id: string, peers: (peerAddress: string) => Membership, bound?: ApiServer): Promise<RocksMember> {
    if (this.members.some((x) => x.id === id)) throw new Error(`${id} is already a member`);
    const api = bound ?? (await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' }));
    const m: RocksMember = { id, address: api.address, peerAddress: api.peerAddress, api, peers: peers(api.peerAddress), node: null, storage: null, snapshots: null, tasks: null };
    this.members.push(m);
    await this.boot(m);
    return m;
  }

  member(id: string): RocksMember {
    const m = this.members.find((x) => x.id === id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  }

  /** recentLog: member `id`'s last logged lines (node, snapshots, transport; all levels), oldest first, one per line. */
  recentLog(id: string, lines = LOG_LINES_KEPT): string {
    return (this.logs.get(id) ?? []).slice(-lines).map(formatLine).join('\n');
  }

  private logRing(id: string): LogLine[] {
    let ring = this.logs.get(id);
    if (ring === undefined) this.logs.set(id, (ring = []));
    return ring;
  }

  node(id: string): Node {
    const n = this.member(id).node;
    if (n === null) throw new Error(`${id} is stopped`);
    return n;
  }

  private async boot(m: RocksMember): Promise<void> {
    const api = m.api ?? (await bindApiServer({ bindAddress: m.address, peerBindAddress: m.peerAddress }));
    m.api = api;
    const dataDir = join(this.dir, m.id);
    const storage = await RocksStorage.open(dataDir);
    await storage.checkIdentity({ nodeId: m.id, clusterId: 'test', formatVersion: FORMAT_VERSION }, { createIfNew: true });
    const seen = this.wrapStorage?.(m.id, storage) ?? storage;
    const log = memberLogger(m.id, this.logRing(m.id));
    const snapshots = await SnapshotManager.open(join(dataDir, 'snapshots'), seen, this.policy, log, 'test', systemClock, this.snapshotIo);
    snapshots.dial = peerDial('snapcoord', api.address);
    const ref: { node: Node | null } = { node: null };
    const transport = new GrpcTransport({ selfId: m.id, onMessage: (msg) => ref.node?.receive(msg), dial: peerDial('snapcoord', api.address), logger: log });
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: m.id,
      storage: seen,
      transport,
      initialMembership: m.peers ?? this.membership,
      snapshots,
      timings: this.timings,
      logger: log,
      stateImages: this.stateImages,
      verifyImageRecords: this.verifyImageRecords,
      ...(this.diskGuardFor !== null ? { diskGuard: this.diskGuardFor(m.id, dataDir) } : {}),
    });
    ref.node = node;
    const snapshotPath = join(this.dir, 'task-snapshots', `${m.id}.snapshot`);
    const tasks = await TaskQueue.open(join(dataDir, 'tasks.json'), { snapshotCreation: snapshotTaskRunner(node, snapshotPath) }, silent);
    api.serve({
      node,
      snapshotApi: {
        snapshots,
        tasks: { queue: tasks, snapshotPath },
        realRoots: await prepareRoots([join(this.dir, 'roots')]),
        directoryExport: { storage: rocksDataDir, nodeId: m.id, clusterId: 'test', selfAddress: m.peerAddress, version: 'test' },
      },
    });
    m.tasks = tasks;
    m.node = node;
    m.storage = storage;
    m.snapshots = snapshots;
  }

  /** stop stops one member (its node, storage and server); restart brings it back on the same address. */
  async stop(id: string): Promise<void> {
    const m = this.member(id);
    await m.api?.close(100);
    await m.tasks?.close();
    await m.node?.stop();
    m.api = null;
    m.node = null;
    m.storage = null;
    m.snapshots = null;
    m.tasks = null;
  }

  async restart(id: string): Promise<void> {
    await this.boot(this.member(id));
  }

  async waitForLeader(timeoutMs = 10_000): Promise<Node> {
    return until('a leader', timeoutMs, () => {
      for (const m of this.members) if (m.node?.status().role === 'leader') return m.node;
      return undefined;
    });
  }

  async close(): Promise<void> {
    for (const m of this.members) await this.stop(m.id).catch(() => undefined);
    // A stopped member's snapshot may still be removing its temporary directory: rm retries ENOTEMPTY (bounded).
    await rm(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** LOG_LINES_KEPT: the lines of each member's log a cluster keeps for a failing test to print (RocksCluster.recentLog). */
const LOG_LINES_KEPT = 400;

/** LogLine: one logged line, kept as given (formatted only when printed). */
type LogLine = readonly [atMs: number, level: string, msg: string, obj: object];

/**
 * memberLogger: keeps the member's last LOG_LINES_KEPT lines in `ring` (a
 * failing test prints them); with SNAPCOORD_TEST_LOG=1 also writes each to
 * stderr as it comes.
 */
function memberLogger(id: string, ring: LogLine[]): Logger {
  const echo = process.env['SNAPCOORD_TEST_LOG'] === '1';
  const line = (level: string) => (obj: object, msg?: string): void => {
    const l: LogLine = [Date.now(), level, msg ?? '', obj];
    if (ring.length >= LOG_LINES_KEPT) ring.shift();
    ring.push(l);
    if (echo) process.stderr.write(`${id} ${formatLine(l)}\n`);
  };
  return { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
}

function formatLine([atMs, level, msg, obj]: LogLine): string {
  return `${new Date(atMs).toISOString()} ${level} ${msg} ${JSON.stringify(obj, (_k, v: unknown) => (v instanceof Error ? v.message : typeof v === 'bigint' ? String(v) : v))}`;
}

/** uploadArchive sends `bytes` with RestoreSnapshot in 64 KiB pieces and resolves with the answer. */
export function uploadArchive(client: SnapshotServiceClient, bytes: Buffer): Promise<RestoreSnapshotResponse> {
  return new Promise((resolve, reject) => {
    const call = client.restoreSnapshot((e, r) => (e !== null ? reject(e) : resolve(r)));
    for (let at = 0; at < bytes.length; at += 64 * 1024) call.write({ data: bytes.subarray(at, at + 64 * 1024) });
    call.end();
  });
}

/** dumpKeys lists `n`'s keys under `k/` as "key=value" (a serializable read). */
export async function dumpKeys(n: Node): Promise<string[]> {
  const r = await n.range({ prefix: new TextEncoder().encode('k/'), limit: 1000 }, true);
  const dec = new TextDecoder();
  return r.kvs.map((kv) => `${dec.decode(kv.key)}=${dec.decode(kv.value)}`);
}

/**
 * runServe: one snapcoord node in this process. Opens (creating when new)
 * the RocksDB data dir and checks its identity (a data dir of another node
 * or cluster, or of an unknown format, refuses to start: CliError, exit 2),
 * binds the gRPC server, starts the Node over a GrpcTransport, prints
 * "snapcoord node <id> listening on grpc <addr>" and runs until SIGTERM or
 * SIGINT, then stops the server and the node and exits 0.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { bindApiServer, type ApiServer } from '../api/server.js';
import { DiskGuard } from '../node/disk-guard.js';
import { Node } from '../node/node.js';
import { NodeMetrics } from '../node/metrics.js';
import { snapshotTaskRunner } from '../node/snapshot-task.js';
import { checkImportFile, importSnapshot } from './import-snapshot.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../node/snapshots.js';
import { TaskQueue } from '../node/tasks.js';
import { prepareRoots } from '../api/snapshot-path.js';
import { SNAPCOORD_VERSION } from '../version.js';
import { RocksStorage } from '../storage/rocks-storage.js';
import { StorageError } from '../storage/storage-error.js';
import { FORMAT_VERSION } from '../storage/types.js';
import { GrpcTransport } from '../transport/grpc-transport.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import type { ServeConfig } from './config.js';

/** runServe resolves with the process exit code once the node has stopped. */
export async function runServe(cfg: ServeConfig): Promise<number> {
  const logger = pino({ level: cfg.logLevel, base: { node: cfg.id } });

  let storage: RocksStorage;
  try {
    storage = await RocksStorage.open(cfg.dataDir);
  } catch (err) {
    throw new CliError(err instanceof Error ? err.message : String(err), EXIT_CONFIG);
  }
  try {
    await storage.checkIdentity({ nodeId: cfg.id, clusterId: cfg.clusterId, formatVersion: FORMAT_VERSION }, { createIfNew: true });
  } catch (err) {
    await storage.close().catch(() => undefined);
    if (err instanceof StorageError) throw new CliError(`refusing to start: ${err.message}`, EXIT_CONFIG);
    throw err;
  }

  // A new data dir (nothing logged, nothing applied) may import an archive once it is up.
  const isNewDataDir = storage.appliedIndex() === 0 && storage.lastIndex() === 0;
  if (cfg.importSnapshot !== '') {
    try {
      await checkImportFile(cfg.importSnapshot);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  }

  let api: ApiServer;
  try {
    api = await bindApiServer({ bindAddress: cfg.grpcAddress, logger });
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw new CliError((err as Error).message);
  }

  let snapshots: SnapshotManager;
  try {
    snapshots = await SnapshotManager.open(
      join(cfg.dataDir, 'snapshots'),
      storage,
      {
        ...DEFAULT_SNAPSHOT_POLICY,
        snapshotEntries: cfg.snapshotEntries,
        trailingEntries: cfg.snapshotTrailingEntries,
        retain: cfg.snapshotRetain,
        chunkBytes: cfg.snapshotChunkBytes,
        maxTransfers: cfg.snapshotMaxTransfers,
        bandwidthBytesPerSec: cfg.snapshotBandwidth,
      },
      logger,
      SNAPCOORD_VERSION,
    );
  } catch (err) {
    await api.close(0);
    await storage.close().catch(() => undefined);
    throw new CliError(`cannot open the snapshot store: ${(err as Error).message}`);
  }

  const ref: { node: Node | null } = { node: null };
  const metrics = new NodeMetrics(() => {
    if (ref.node === null) throw new Error('the node is not started yet');
    return ref.node.status();
  });
  const transport = new GrpcTransport({ selfId: cfg.id, onMessage: (m) => ref.node?.receive(m), logger });
  let node: Node;
  try {
    node = await Node.start({
      id: cfg.id,
      storage,
      transport,
      initialMembership: { voters: Object.keys(cfg.peers), learners: [], addresses: cfg.peers },
      snapshots,
      metrics,
      dialAddresses: cfg.peerDial,
      ...(cfg.minFreeBytes > 0 ? { diskGuard: new DiskGuard(cfg.dataDir, cfg.minFreeBytes, logger) } : {}),
      timings: { tickMs: cfg.tickMs, electionTimeoutTicks: cfg.electionTimeoutTicks, heartbeatIntervalTicks: cfg.heartbeatTicks },
      logger,
    });
  } catch (err) {
    await api.close(0);
    await transport.close();
    await storage.close().catch(() => undefined);
    throw new CliError(`cannot start node ${cfg.id}: ${(err as Error).message}`);
  }
  ref.node = node;
  let tasks: TaskQueue;
  let realRoots: string[];
  const snapshotPath = join(cfg.snapshotDir, `${cfg.dbName}.snapshot`);
  try {
    realRoots = await prepareRoots(cfg.snapshotRoots);
    tasks = await TaskQueue.open(join(cfg.dataDir, 'tasks.json'), { snapshotCreation: snapshotTaskRunner(node, snapshotPath) }, logger);
    const queue = tasks;
    metrics.taskQueueDepth = () => queue.depth();
  } catch (err) {
    await api.close(0);
    await node.stop();
    throw new CliError(`cannot start node ${cfg.id}: ${(err as Error).message}`);
  }
  const schedule =
    cfg.scheduleSnapshotSecs > 0
      ? setInterval(() => {
          tasks.enqueue('snapshotCreation', { path: snapshotPath }).catch((err: unknown) => logger.warn({ err }, 'scheduled snapshot not enqueued'));
        }, cfg.scheduleSnapshotSecs * 1000)
      : undefined;
  schedule?.unref();
  api.serve({
    node,
    snapshotApi: {
      snapshots,
      tasks: { queue: tasks, snapshotPath },
      realRoots,
      directoryExport: { nodeId: cfg.id, clusterId: cfg.clusterId, selfAddress: cfg.peers[cfg.id] ?? api.address, version: SNAPCOORD_VERSION },
    },
  });
  logger.info(
    {
      id: cfg.id,
      clusterId: cfg.clusterId,
      grpc: api.address,
      http: cfg.httpAddress,
      peers: cfg.peers,
      dataDir: cfg.dataDir,
      apiKey: cfg.apiKey === '' ? 'none' : 'set',
      insecureNoAuth: cfg.insecureNoAuth,
    },
    'node serving',
  );
  // ===== BEGIN embedded REST gateway (src/gateway; the only gateway code in this file) =====
  // The gateway serves cfg.httpAddress and calls this node's own gRPC API. It is
  // stopped on shutdown by wrapping api.close (the gateway closes first), so the
  // stop path below needs no change. config.ts has already refused to get here
  // with no API key unless --insecure-no-auth.
  {
    const { createGateway, localTarget } = await import('../gateway/index.js');
    const gateway = createGateway({
      target: localTarget(api.address),
      auth: { adminKey: cfg.apiKey, keys: cfg.apiKeys, insecureNoAuth: cfg.insecureNoAuth },
      logger,
      metrics,
    });
    let httpAddress: string;
    try {
      httpAddress = await gateway.listen(cfg.httpAddress);
    } catch (err) {
      await gateway.close().catch(() => undefined);
      await api.close(0);
      await node.stop();
      throw new CliError(`cannot start the HTTP gateway on ${cfg.httpAddress}: ${(err as Error).message}`);
    }
    const apiServer = api;
    api = {
      ...apiServer,
      close: async (graceMs?: number): Promise<void> => {
        await gateway.close();
        await apiServer.close(graceMs);
      },
    };
    logger.info({ id: cfg.id, http: httpAddress, auth: cfg.insecureNoAuth ? 'none (insecure)' : 'api keys' }, 'http gateway serving');
    process.stdout.write(`snapcoord node ${cfg.id} gateway listening on http ${httpAddress}\n`);
  }
  // ===== END embedded REST gateway =====
  process.stdout.write(`snapcoord node ${cfg.id} listening on grpc ${api.address}\n`);
  if (cfg.importSnapshot !== '') {
    if (!isNewDataDir) {
      logger.warn({ file: cfg.importSnapshot, dataDir: cfg.dataDir }, '--import-snapshot ignored: the data dir already holds state');
    } else {
      importSnapshot(node, api.address, cfg.importSnapshot, logger).catch((err: unknown) =>
        logger.error({ file: cfg.importSnapshot, err: (err as Error).message }, 'importing the snapshot failed'),
      );
    }
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(watchdog);
      logger.info({ id: cfg.id, why }, 'shutting down');
      void (async () => {
        if (schedule !== undefined) clearInterval(schedule);
        await api.close();
        await tasks.close();
        await node.stop();
        logger.info({ id: cfg.id }, 'stopped');
        resolve(code);
      })().catch((err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        resolve(1);
      });
    };
    // Repeated signals (Ctrl-C reaches the whole process group, then `snapcoord local` sends SIGTERM) are one request.
    process.on('SIGTERM', () => stop('SIGTERM', 0));
    process.on('SIGINT', () => stop('SIGINT', 0));
    // A storage failure stops the Raft loop for good: exit rather than serve errors forever.
    const watchdog = setInterval(() => {
      const failure = node.failed();
      if (failure !== null) stop(`node failed: ${failure.message}`, 1);
    }, 1_000);
  });
}

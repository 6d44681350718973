/**
 * The node's one gRPC server: RaftService (peers), KVService and
 * ClusterService (clients), the standard health service and server
 * reflection. Raft and the public API share one port, so a member's address
 * in the configuration is also where its API listens.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ClusterServiceService } from '../gen/snapcoord/v1/cluster.js';
import { KVServiceService } from '../gen/snapcoord/v1/kv.js';
import { SnapshotServiceService, TaskServiceService } from '../gen/snapcoord/v1/snapshot.js';
import { silentLogger, type Logger, type Node } from '../node/node.js';
import { RAFT_SERVICE_DEFINITION } from '../transport/fetch-serializer.js';
import { createRaftService } from '../transport/raft-service.js';
import { serverFaultInterceptors } from '../transport/message-faults.js';
import type { RaftRequestHandler } from '../transport/transport.js';
import { formatHostPort, parseHostPort } from './address.js';
import { MESSAGE_BYTES_MAX } from './clients.js';
import { createClusterService } from './cluster-service.js';
import { createKvService } from './kv-service.js';
import { LeaderForwarder } from './leader-forwarder.js';
import { PROTO_FILES, protoDir } from './proto-dir.js';
import { createSnapshotService, createTaskService, type SnapshotApiOptions } from './snapshot-service.js';

/** SERVICE_NAMES: the services the health service reports on (plus '' for the whole server). */
export const SERVICE_NAMES = [
  'snapcoord.v1.RaftService',
  'snapcoord.v1.KVService',
  'snapcoord.v1.ClusterService',
  'snapcoord.v1.SnapshotService',
  'snapcoord.v1.TaskService',
] as const;

/** SHUTDOWN_GRACE_MS: how long close() lets running calls finish before cancelling them. */
export const SHUTDOWN_GRACE_MS = 2_000;

export interface BindOptions {
  /** bindAddress: "host:port"; port 0 asks the OS for a free one (see ApiServer.port). */
  readonly bindAddress: string;
  readonly logger?: Logger;
  readonly credentials?: grpc.ServerCredentials;
}

export interface ServeOptions {
  readonly node: Node;
  /** raftHandler serves RaftService; default the node itself. */
  readonly raftHandler?: RaftRequestHandler;
  /** snapshotApi: with it, SnapshotService and TaskService are served too. */
  readonly snapshotApi?: SnapshotApiOptions;
}

export type ApiServerOptions = BindOptions & ServeOptions;

/** ApiServer is a bound (and, after serve or startApiServer, serving) server. */
export interface ApiServer {
  readonly server: grpc.Server;
  /** port: the port actually bound. */
  readonly port: number;
  /** address: bindAddress with the real port. */
  readonly address: string;
  readonly health: HealthImplementation;
  /**
   * serve adds RaftService, KVService and ClusterService over `node` and
   * reports SERVING. Until then those services answer UNIMPLEMENTED and
   * health says NOT_SERVING. Call it once.
   */
  serve(opts: ServeOptions): void;
  /** close reports NOT_SERVING, lets running calls finish for up to graceMs, then cancels them. Idempotent. */
  close(graceMs?: number): Promise<void>;
}

/** serverOptions: 64 MiB messages both ways. */
export const serverOptions: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
};

let reflectionPackage: protoLoader.PackageDefinition | null = null;

function reflection(): ReflectionService {
  reflectionPackage ??= protoLoader.loadSync([...PROTO_FILES, healthProtoPath], {
    includeDirs: [protoDir()],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return new ReflectionService(reflectionPackage);
}

/**
 * bindApiServer binds a server at opts.bindAddress with health and reflection
 * (health NOT_SERVING), before the node exists: a caller that binds port 0
 * learns the real port first, builds the membership with it, then calls serve.
 * Errors: the bind error (e.g. EADDRINUSE: "No address added out of total 1 resolved").
 */
export async function bindApiServer(opts: BindOptions): Promise<ApiServer> {
  const log = opts.logger ?? silentLogger;
  const hp = parseHostPort(opts.bindAddress, true);
  if (hp === null) throw new Error(`bind address ${JSON.stringify(opts.bindAddress)} is not host:port`);
  // The chaos tests' fault injection (SNAPCOORD_MESSAGE_FAULTS) on incoming appends; none otherwise.
  const server = new grpc.Server({ ...serverOptions, interceptors: serverFaultInterceptors(log) });
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(SERVICE_NAMES.map((s) => [s, 'NOT_SERVING'])) });
  health.addToServer(server);
  reflection().addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(opts.bindAddress, opts.credentials ?? grpc.ServerCredentials.createInsecure(), (err, p) => {
      if (err !== null) reject(new Error(`cannot listen on ${opts.bindAddress}: ${err.message}`));
      else resolve(p);
    });
  });
  const address = formatHostPort({ host: hp.host, port });
  let forwarder: LeaderForwarder | null = null;
  let closeSnapshotService = (): void => undefined;
  let closing: Promise<void> | null = null;

  const setAll = (status: 'SERVING' | 'NOT_SERVING'): void => {
    health.setStatus('', status);
    for (const s of SERVICE_NAMES) health.setStatus(s, status);
  };

  return {
    server,
    port,
    address,
    health,
    serve({ node, raftHandler, snapshotApi }: ServeOptions): void {
      if (forwarder !== null) throw new Error('ApiServer.serve: already serving');
      if (closing !== null) throw new Error('ApiServer.serve: closed');
      forwarder = new LeaderForwarder(node);
      server.addService(RAFT_SERVICE_DEFINITION, createRaftService(raftHandler ?? node, { selfId: node.id, logger: log }));
      server.addService(KVServiceService, createKvService(node, forwarder));
      server.addService(ClusterServiceService, createClusterService(node, forwarder));
      if (snapshotApi !== undefined) {
        const snap = createSnapshotService(node, snapshotApi);
        closeSnapshotService = snap.close;
        server.addService(SnapshotServiceService, snap.service);
        server.addService(TaskServiceService, createTaskService(snapshotApi.tasks.queue));
      }
      setAll('SERVING');
      log.info({ id: node.id, address }, 'api server serving');
    },
    close(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
      closing ??= (async () => {
        setAll('NOT_SERVING');
        forwarder?.close();
        closeSnapshotService();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, graceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      })();
      return closing;
    },
  };
}

/** startApiServer binds opts.bindAddress and serves opts.node at once (see bindApiServer, ApiServer.serve). */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const api = await bindApiServer(opts);
  try {
    api.serve(opts);
  } catch (err) {
    await api.close(0);
    throw err;
  }
  return api;
}

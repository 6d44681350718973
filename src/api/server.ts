/**
 * The node's two gRPC planes, each its own server and listener (like etcd's
 * peer and client URLs):
 * - the peer plane serves RaftService only, to members: mutual TLS with the
 *   cluster CA, and a PeerGuard admits each message (cluster id, certificate
 *   identity = `from`, membership). A member's address in the configuration is
 *   its peer address.
 * - the client plane serves KVService, ClusterService, SnapshotService,
 *   TaskService, health and reflection: TLS, and the client auth interceptor
 *   (bearer keys and actions) given in BindOptions.interceptors.
 * Neither serves the other's services.
 */
import { lookup } from 'node:dns/promises';
import { setMaxListeners } from 'node:events';
import type { Http2Server, ServerHttp2Stream } from 'node:http2';
import { createServer as createNetServer, isIP, Socket, type AddressInfo, type Server as NetServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ClusterServiceService } from '../gen/snapcoord/v1/cluster.js';
import { KVServiceService } from '../gen/snapcoord/v1/kv.js';
import { TaskServiceService } from '../gen/snapcoord/v1/snapshot.js';
import { SNAPSHOT_SERVICE_DEFINITION } from './snapshot-serializer.js';
import type { Node } from '../node/node.js';
import { silentLogger, type Logger } from '../node/logger.js';
import { RAFT_SERVICE_DEFINITION } from '../transport/fetch-serializer.js';
import { createRaftService } from '../transport/raft-service.js';
import { serverFaultInterceptors } from '../transport/message-faults.js';
import type { RaftRequestHandler } from '../transport/transport.js';
import { PeerDirectory, PeerGuard, peerAdmissionInterceptor, type PeerCall, type PeerRevocation, type RefusalReason } from '../transport/peer-guard.js';
import type { ClientDial } from '../client/dial.js';
import { formatHostPort, parseHostPort } from '../client/address.js';
import { MESSAGE_BYTES_MAX } from '../client/dial.js';
import { apiKeyOwner, refusedKeyOwner, rpcNeed } from './auth-interceptor.js';
import { AnswerBudget, answerBudgetInterceptor } from './answer-budget.js';
import { metadataSizeInterceptor, PEER_METADATA_BYTES_MAX } from './metadata-size.js';
import { CallGate, callGateInterceptor } from './call-gate.js';
import { addWithBackpressure } from './stream-backpressure.js';
import { createClusterService, type ClusterServiceOptions } from './cluster-service.js';
import { clientRevocationInterceptor, serialOf, type ClientRevocationOptions } from './client-revocation.js';
import { ConnectionLimiter, provingInterceptor, refusedOwnerInterceptor, type ConnectionLimits } from './connection-limiter.js';
import { HostBudget, type HostBudgetLimits } from './host-budget.js';
import { createKvService } from './kv-service.js';
import { ServedLater } from './served-later.js';
import { LeaderForwarder } from './leader-forwarder.js';
import { PROTO_FILES, protoDir } from './proto-dir.js';
import { CLIENT_READ_LIMITS, ReadGate, readGateInterceptor, type ReadLimits } from './read-gate.js';
import { createSnapshotService, createTaskService, type SnapshotApiOptions } from './snapshot-service.js';

/** SERVICE_NAMES: the client-plane services the health service reports on (plus '' for the whole server). */
export const SERVICE_NAMES = [
  'snapcoord.v1.KVService',
  'snapcoord.v1.ClusterService',
  'snapcoord.v1.SnapshotService',
  'snapcoord.v1.TaskService',
] as const;

/** SHUTDOWN_GRACE_MS: how long close() lets running client calls finish before cancelling them. */
export const SHUTDOWN_GRACE_MS = 2_000;

/**
 * PEER_SHUTDOWN_GRACE_MS: how long close() lets the peer plane's calls other
 * than the append streams (votes, ReadIndex, snapshot transfers) finish once
 * those streams ended, before cancelling them; the peers retry elsewhere.
 */
export const PEER_SHUTDOWN_GRACE_MS = 200;

/** CLIENT_MESSAGE_BYTES_DEFAULT: the largest client-plane request message by default (1.5 MiB, like etcd's --max-request-bytes). */
export const CLIENT_MESSAGE_BYTES_DEFAULT = 1536 * 1024;
/** PEER_MESSAGE_BYTES_MAX: the largest peer-plane message: what one append may carry, with room for its framing. */
export const PEER_MESSAGE_BYTES_MAX = 64 * 1024 * 1024;
/** CLIENT_STREAMS_PER_CONNECTION_MAX: concurrent calls on one client connection. */
export const CLIENT_STREAMS_PER_CONNECTION_MAX = 256;
/**
 * PEER_STREAMS_PER_CONNECTION_MAX: concurrent calls on one peer connection. A member's transport uses at
 * most ~1030 on its channel (GrpcTransport's 1024 unary calls in flight, its append stream, two forwarded
 * Propose calls); snapshot fetches and stagings have their own connections.
 */
export const PEER_STREAMS_PER_CONNECTION_MAX = 2048;
/**
 * PEER_KEEPALIVE: the peer plane pings a connection every timeMs and closes it when no answer comes in
 * timeoutMs: a member whose host died or was cut off without a FIN holds no connection (nor its place
 * among PEER_CONNECTION_LIMITS' per-host ones, which a proven connection never yields) for ever.
 */
export const PEER_KEEPALIVE = { timeMs: 30_000, timeoutMs: 10_000 } as const;

export interface BindOptions {
  /** bindAddress: the client plane's "host:port"; port 0 asks the OS for a free one (see ApiServer.port). */
  readonly bindAddress: string;
  /** peerBindAddress: the peer plane's "host:port" (RaftService); port 0 asks the OS. */
  readonly peerBindAddress: string;
  readonly logger?: Logger;
  /** credentials: the client plane's (TLS); default insecure. */
  readonly credentials?: grpc.ServerCredentials;
  /** peerCredentials: the peer plane's (mutual TLS); default insecure. */
  readonly peerCredentials?: grpc.ServerCredentials;
  /** interceptors: the client plane's server interceptors (the auth interceptor). */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
  /** maxRequestBytes: the largest client-plane message accepted (default CLIENT_MESSAGE_BYTES_DEFAULT); larger ones fail RESOURCE_EXHAUSTED unread. */
  readonly maxRequestBytes?: number;
  /** clientConnections / peerConnections: the connections each plane holds (ConnectionLimiter; default CLIENT_CONNECTION_LIMITS, PEER_CONNECTION_LIMITS). */
  readonly clientConnections?: ConnectionLimits;
  readonly peerConnections?: ConnectionLimits;
  /**
   * clientHostBudget: what one remote host may cost the client plane before it proves a key (HostBudget;
   * default a HostBudget of CLIENT_HOST_BUDGET; null: none).
   */
  readonly clientHostBudget?: HostBudget | null;
  /** peerHostBudget: the same for the peer plane, before a member's call is admitted (default a HostBudget of PEER_HOST_BUDGET; null: none). */
  readonly peerHostBudget?: HostBudget | null;
  /** clientReads: how many client-plane calls read a request message at once (ReadGate; default CLIENT_READ_LIMITS). */
  readonly clientReads?: ReadLimits;
  /** clientCallsPerCallerMax: calls one API key has open at once on the client plane (CallGate; default CLIENT_CALLS_PER_CALLER_MAX). */
  readonly clientCallsPerCallerMax?: number;
  /** clientAnswersPerCallerMax: Get/Range/Txn calls one API key has running or answering at once (CallGate; default CLIENT_ANSWERS_PER_CALLER_MAX). */
  readonly clientAnswersPerCallerMax?: number;
  /** clientAnswerBytesPerCallerMax: answer bytes one API key has reserved or unread at once (AnswerBudget; default CLIENT_ANSWER_BYTES_PER_CALLER_MAX). */
  readonly clientAnswerBytesPerCallerMax?: number;
  /**
   * clientRevocation: the client CRL (serve --client-crl): a call over a client certificate it revokes is refused
   * UNAUTHENTICATED first of all (clientRevocationInterceptor, given each connection's serial as read at its handshake).
   */
  readonly clientRevocation?: Omit<ClientRevocationOptions, 'serialOf'>;
  /** peerKeepalive: the peer plane's keepalive pings (default PEER_KEEPALIVE; tests shorten it). */
  readonly peerKeepalive?: { readonly timeMs: number; readonly timeoutMs: number };
}

/**
 * CLIENT_CONNECTION_LIMITS: the client plane holds at most 1024 connections,
 * 256 from one host (clients multiplex their calls on one or a few), and one
 * API key proves at most 64 of them (its calls on more leave them unproven,
 * the first to go when another caller connects: before, a holder of any key,
 * kv.read alone, kept every place of its host, or of the plane from four
 * hosts, with one call per connection, and every other client was refused).
 */
export const CLIENT_CONNECTION_LIMITS: ConnectionLimits = { connectionsMax: 1024, perHostMax: 256, perOwnerMax: 64 };
/**
 * PEER_CONNECTION_LIMITS: the peer plane holds at most 256 connections, 64
 * from one host (a member opens a few: its transport's channel, snapshot
 * fetches and stagings; a local cluster's members share a host), and under
 * mutual TLS one member's certificate proves at most 16 of them (its calls
 * on more leave them unproven: the first to go when another connects).
 */
export const PEER_CONNECTION_LIMITS: ConnectionLimits = { connectionsMax: 256, perHostMax: 64, perOwnerMax: 16 };
/**
 * CLIENT_HOST_BUDGET: one remote host may open 1024 streams without a key at once (or 64 connections, 16
 * each for the TLS handshake), and 64 more a second; then it is locked out for 1 s, doubled at each lockout
 * in a row up to a minute: its connections that proved no key are closed and new ones refused at accept,
 * before TLS. Connections that prove a key cost nothing (their charges are given back); loopback is exempt
 * (hostKey); IPv6 hosts are budgeted by /64. A Kubernetes probe (one connection and one Health/Check every
 * few seconds) stays far below it. A flood without a key that reconnects before nghttp2's rapid-reset GOAWAY
 * (1,000 resets a connection) had a live leader serve ~99,000 streams in 10 s (its CPU 0.55 -> 4.9 s per 10 s,
 * writes 220 -> 33 a second); now about its first 1,000, then one accept and close per connection attempt
 * (0.67 -> 1.1 s).
 */
export const CLIENT_HOST_BUDGET: HostBudgetLimits = { tokensMax: 1024, refillPerSec: 64, connectionCost: 16, lockMs: 1_000, lockMsMax: 60_000, hostsMax: 16_384 };
/**
 * PEER_HOST_BUDGET: the peer plane's HostBudget, the client plane's numbers: a host is charged for its
 * connections (a mutual-TLS handshake each, failed or not) and for the streams on them until a call is
 * admitted (a member's certificate and the cluster id), which gives the charges back. Before, anyone who
 * could reach the peer port made it do handshakes without end: 1,848 in 10 s from one host with no
 * certificate (8 at a time) took a live leader's CPU from 0.58 to 1.94 s per 10 s; with a certificate of
 * the cluster CA for a non-member, ~20,800 refused RequestVote streams (reconnecting before nghttp2's
 * rapid-reset GOAWAY) took it from 0.56 to 2.95 s, RSS 178 MiB. Members on loopback are exempt (hostKey).
 */
export const PEER_HOST_BUDGET: HostBudgetLimits = CLIENT_HOST_BUDGET;
/** CONNECTION_REFUSAL_LOG_INTERVAL_MS: one log line a minute per plane about refused connections. */
export const CONNECTION_REFUSAL_LOG_INTERVAL_MS = 60_000;

/** Listeners: a plane's own TCP listeners, handing what its ConnectionLimiter accepts to grpc-js. */
interface Listeners {
  readonly port: number;
  /** stopAccepting closes the listening sockets (held connections go on). */
  stopAccepting(): void;
  /** close: stopAccepting, and every held connection is closed. */
  close(): void;
  /**
   * closeWhere closes every open TLS connection whose client certificate `condemned` names (a client CRL reloaded:
   * ApiServer.closeClientConnections) and answers how many; a connection without a client certificate is left alone.
   */
  closeWhere(condemned: (cert: PeerCertificate) => boolean): number;
  /**
   * clientSerialOf: the verified client certificate serial (normalizeSerial'd; null: none) of the open TLS connection
   * a call's getPeer() names, read at its handshake; undefined when no open TLS connection has that name.
   */
  clientSerialOf(peer: string): string | null | undefined;
}

/**
 * listen binds `address` for `srv` (every address a host name resolves to
 * that can be bound, as grpc-js's bindAsync does; port 0: one port from the
 * OS for them all)
 * and hands each accepted connection that `limiter` holds to grpc-js
 * (Server.createConnectionInjector; TLS is grpc-js's, as with bindAsync).
 * Errors: Error "cannot listen on <address>: ...".
 */
async function listen(srv: grpc.Server, address: string, credentials: grpc.ServerCredentials | undefined, limiter: ConnectionLimiter): Promise<Listeners> {
  const hp = parseHostPort(address, true) as { host: string; port: number };
  let hosts: string[];
  try {
    hosts = isIP(hp.host) !== 0 ? [hp.host] : (await lookup(hp.host, { all: true })).map((a) => a.address);
  } catch (err) {
    throw new Error(`cannot listen on ${address}: ${(err as Error).message}`, { cause: err });
  }
  const before = new Set(http2ServersOf(srv).keys());
  const injector = srv.createConnectionInjector(credentials ?? grpc.ServerCredentials.createInsecure());
  // Every HTTP/2 stream is charged to its connection's host while the connection has proven nothing (HostBudget),
  // whatever it asks for: a method that does not exist or a malformed call (which grpc-js answers itself, with
  // no interceptor) as much as one the auth gate refuses. grpc-js's own handler runs first: a call with a key
  // proves its connection (provingInterceptor) before this counts it.
  const h2 = [...http2ServersOf(srv).keys()].find((s) => !before.has(s));
  if (h2 === undefined) {
    injector.destroy();
    throw new Error(`cannot listen on ${address}: grpc-js made no HTTP/2 server for the connection injector`);
  }
  h2.on('stream', (stream: ServerHttp2Stream) => {
    const socket = stream.session?.socket;
    if (socket?.remoteAddress !== undefined) limiter.streamOpened(`${socket.remoteAddress}:${socket.remotePort ?? ''}`);
  });
  // The TLS connections open now (the limiter's caps bound them), for closeWhere: grpc-js checks a client's
  // certificate at the handshake only, so a connection outlives a revocation unless it is closed. (A plaintext
  // plane's HTTP/2 server emits no 'secureConnection': the set stays empty.)
  // Each with its client certificate's serial, read once (Node builds the whole certificate at each read), by the
  // name its calls' getPeer() give (`address:port`, as the limiter's).
  const secure = new Map<string, { readonly tls: TLSSocket; readonly serial: string | null }>();
  h2.on('secureConnection', (tls: TLSSocket) => {
    if (tls.destroyed) return;
    const cert = tls.authorized ? tls.getPeerCertificate() : null;
    const serial = cert !== null && typeof cert === 'object' && typeof cert.serialNumber === 'string' && cert.serialNumber !== '' ? serialOf(cert) : null;
    const key = `${tls.remoteAddress ?? ''}:${tls.remotePort ?? ''}`;
    const entry = { tls, serial };
    secure.set(key, entry);
    tls.once('close', () => {
      if (secure.get(key) === entry) secure.delete(key);
    });
  });
  const servers: NetServer[] = [];
  let port = hp.port;
  let firstError: unknown = null;
  // Like bindAsync: every address the name resolves to that can be bound (one is enough), on one port.
  for (const host of hosts) {
    const ns = createNetServer({ noDelay: true }, (socket) => {
      if (limiter.accept(socket)) injector.injectConnection(socket);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        ns.once('error', reject);
        ns.listen({ host, port, exclusive: true }, () => {
          ns.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      firstError ??= err;
      continue;
    }
    servers.push(ns);
    port = (ns.address() as AddressInfo).port;
  }
  if (servers.length === 0) {
    injector.destroy();
    const why = firstError instanceof Error ? firstError.message : `${hp.host} resolves to no address`;
    throw new Error(`cannot listen on ${address}: ${why}`, { cause: firstError });
  }
  const stopAccepting = (): void => {
    for (const ns of servers) if (ns.listening) ns.close();
  };
  return {
    port,
    stopAccepting,
    close() {
      stopAccepting();
      injector.destroy();
      limiter.destroyAll();
    },
    clientSerialOf(peer) {
      return secure.get(peer)?.serial;
    },
    closeWhere(condemned) {
      let closed = 0;
      for (const [key, { tls }] of [...secure]) {
        const cert = tls.getPeerCertificate();
        // {} when the client sent none
        if (cert === null || typeof cert !== 'object' || typeof cert.serialNumber !== 'string' || !condemned(cert)) continue;
        secure.delete(key);
        // The TCP socket under it too: the limiter holds that one, and it may not say 'close' itself.
        const tcp = (tls as unknown as { _parent?: unknown })._parent;
        tls.destroy();
        if (tcp instanceof Socket && tcp !== tls) tcp.destroy();
        closed++;
      }
      return closed;
    },
  };
}

/**
 * http2ServersOf: grpc-js's HTTP/2 servers (its private `http2Servers` map, keyed by server): the one
 * createConnectionInjector makes is the only way to see every stream of a plane, those no interceptor sees
 * included. Errors: Error when grpc-js no longer has the map (a grpc-js upgrade: listen cannot go on unguarded).
 *
 * Private, so grpc-js is pinned to its minor (package.json `~1.14.7`) and grpc-js-pin.spec fails when the map,
 * or what it holds, moves. No supported way sees every stream (dos24, Node 20.20, grpc-js 1.14.7):
 * createConnectionInjector returns only injectConnection/drain/destroy; grpc-js answers a method it does not
 * serve (UNIMPLEMENTED) and a malformed call itself, before any interceptor (server.js _streamHandler), so
 * an interceptor's count misses a flood of them (host-budget.spec's unknown-method case); the injected
 * socket is the raw TCP one (under TLS the HTTP/2 session is on a TLSSocket grpc-js makes), so no session is
 * reachable from it; Node 20 publishes no http2 diagnostics_channel events (a subscriber to
 * 'http2.server.stream.created' hears nothing on 20.20: the channel came with nodejs/node#58390, in later
 * Node lines; once the runtime has it, that process-wide channel with the stream's session socket can
 * replace this map).
 */
export function http2ServersOf(srv: grpc.Server): Map<Http2Server, unknown> {
  const servers = (srv as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) throw new Error('grpc-js Server has no http2Servers map: the host budget cannot count streams');
  return servers as Map<Http2Server, unknown>;
}

export interface ServeOptions {
  readonly node: Node;
  /** raftHandler serves RaftService; default the node itself. */
  readonly raftHandler?: RaftRequestHandler;
  /** snapshotApi: with it, SnapshotService and TaskService are served too. */
  readonly snapshotApi?: SnapshotApiOptions;
  /** clusterId: every peer message must carry it (default 'snapcoord'). */
  readonly clusterId?: string;
  /** identityOf: the member id of a peer call's TLS certificate; given when the peer plane runs mutual TLS. */
  readonly identityOf?: (call: PeerCall) => string | null;
  /** peerRevocation: the peer plane's CRL (PeerGuardOptions.revocation); given with --peer-crl. */
  readonly peerRevocation?: PeerRevocation;
  /** onPeerRefused: counts refused peer messages (metrics). */
  readonly onPeerRefused?: (reason: RefusalReason) => void;
  /** clientDial: how this node reaches other members' client planes when it forwards a call (TLS credentials). */
  readonly clientDial?: ClientDial;
  /** clientCredentialsFor: the credentials of a channel to member `id`'s client plane (ForwarderOptions.credentialsFor); default clientDial's. */
  readonly clientCredentialsFor?: (id: string) => grpc.ChannelCredentials;
  /** advertiseClient: the client address other members and clients are told (default the bound address). */
  readonly advertiseClient?: string;
  /** stateHash: the node's state hash with the exact index it covers (HashState's hashed_index, CheckConsistency); see ClusterServiceOptions. */
  readonly stateHash?: ClusterServiceOptions['stateHash'];
}

export type ApiServerOptions = BindOptions & ServeOptions;

/** ApiServer is a bound (and, after serve or startApiServer, serving) pair of servers: client plane and peer plane. */
export interface ApiServer {
  /** server: the client plane. */
  readonly server: grpc.Server;
  /** port: the client plane's port actually bound. */
  readonly port: number;
  /** address: bindAddress with the real port. */
  readonly address: string;
  /** peerServer: the peer plane (RaftService only). */
  readonly peerServer: grpc.Server;
  readonly peerPort: number;
  /** peerAddress: peerBindAddress with the real port. */
  readonly peerAddress: string;
  readonly health: HealthImplementation;
  /** readGate: the client plane's calls reading a request message now, and waiting to. */
  readonly readGate: ReadGate;
  /** answerBudget: the client plane's answer bytes reserved or unread, by caller. */
  readonly answerBudget: AnswerBudget;
  /** clientConnections: the client plane's connections (held, refused, evicted, locked out by the host budget). */
  readonly clientConnections: ConnectionLimiter;
  /** peerConnections: the peer plane's. */
  readonly peerConnections: ConnectionLimiter;
  /** guard: the peer plane's admission check (after serve). */
  readonly guard: PeerGuard | null;
  /** directory: the members' client addresses as they advertise them over the peer plane (give it to the GrpcTransport too). */
  readonly directory: PeerDirectory;
  /**
   * closeClientConnections closes the client plane's open TLS connections whose client certificate `condemned` names
   * (serve: the ones its --client-crl now revokes, at each reload) and answers how many. Their calls in flight, a
   * Watch held open included, end UNAVAILABLE; a new connection's calls are refused by the CRL.
   */
  closeClientConnections(condemned: (cert: PeerCertificate) => boolean): number;
  /**
   * serve serves RaftService (peer plane), and KVService and ClusterService
   * (client plane; SnapshotService and TaskService with snapshotApi, else they
   * answer UNIMPLEMENTED) over `node`, and reports SERVING. Until then the
   * services of both planes answer UNAVAILABLE "the node is starting" (see
   * ServedLater), and health says NOT_SERVING.
   * Call it once.
   */
  serve(opts: ServeOptions): void;
  /**
   * close stops both planes, client plane first: it reports NOT_SERVING,
   * takes no new calls and lets running client calls (forwarded ones
   * included) finish for up to graceMs (default SHUTDOWN_GRACE_MS), then
   * cancels the rest. Then the peer plane: every AppendEntries stream it
   * serves ends UNAVAILABLE "<id> is stopping" after the answers already
   * owed (so the peers stop streaming to this node at once instead of holding
   * the shutdown open), and other peer calls get up to
   * min(graceMs, PEER_SHUTDOWN_GRACE_MS) before they are cancelled.
   * Resolves once both servers are down. Idempotent.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * peerServerOptions: appends up to PEER_MESSAGE_BYTES_MAX, at most PEER_STREAMS_PER_CONNECTION_MAX calls
 * on one connection, a dead connection noticed by keepalive (PEER_KEEPALIVE). An idle live one stays
 * (a member's channel; PEER_CONNECTION_LIMITS bounds them).
 */
export function peerServerOptions(keepalive: { readonly timeMs: number; readonly timeoutMs: number } = PEER_KEEPALIVE): grpc.ServerOptions {
  return {
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': PEER_MESSAGE_BYTES_MAX,
    'grpc.max_send_message_length': PEER_MESSAGE_BYTES_MAX,
    'grpc.max_concurrent_streams': PEER_STREAMS_PER_CONNECTION_MAX,
    'grpc.keepalive_time_ms': keepalive.timeMs,
    'grpc.keepalive_timeout_ms': keepalive.timeoutMs,
  };
}

/**
 * clientServerOptions: requests capped at maxRequestBytes, answers up to MESSAGE_BYTES_MAX, a bounded number of calls per connection.
 *
 * Neither plane sets `grpc-node.max_session_memory` (grpc-js then passes Node an unbounded maxSessionMemory),
 * on measurements (dos24, Node 20.20, grpc-js 1.14.7). Node checks that limit only when a stream opens, and
 * counts a session's own buffers (HPACK tables, unacknowledged PINGs and SETTINGS, frames packed for the
 * socket), which Node already caps, not answers waiting in their streams' queues. A client that never reads
 * stops being read once its answers jam the socket (Node's own backpressure): only the streams it sends in
 * one burst are answered, and in a burst they all open before any answer exists. So the limit changed
 * nothing against unread answers: 64 unread Txn answers of 15 MiB on one connection took a live node to
 * 1,275 MiB with it at 64 MB and 1,294 MiB without (before AnswerBudget); with AnswerBudget, the same 64
 * sent 40 ms apart peaked at 475 MiB with it at 16 MB and 472 MiB without; a bare grpc-js server answering
 * 15 MiB at once answered 1 of 32 streams sent 40 ms apart with the limit unset, 16 or 64 MB. (Honest load never came near it either: 5 rounds of 64 concurrent 3.5 MiB Range
 * answers on one connection all passed with it at 1 MB.) What bounds a connection's unread answers is its
 * calls (CLIENT_STREAMS_PER_CONNECTION_MAX) and each key's CallGate places and AnswerBudget bytes.
 */
export function clientServerOptions(maxRequestBytes: number): grpc.ServerOptions {
  return {
    // No channelz: nothing here serves it, and grpc-js's tracking costs a Date and closures per call and Date.now() per message.
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': maxRequestBytes,
    'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
    'grpc.max_concurrent_streams': CLIENT_STREAMS_PER_CONNECTION_MAX,
    // An idle client connection is closed after 5 minutes; a dead one is noticed by keepalive.
    'grpc.max_connection_idle_ms': 300_000,
    // No connection lives forever (a held stream included): after a day it is drained (a grace of 10 minutes, then closed).
    'grpc.max_connection_age_ms': 86_400_000,
    'grpc.max_connection_age_grace_ms': 600_000,
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
  };
}

let reflectionPackage: protoLoader.PackageDefinition | null = null;

function reflection(): ReflectionService {
  // The client plane describes only its own services: raft.proto is the peer plane's.
  reflectionPackage ??= protoLoader.loadSync([...PROTO_FILES.filter((f) => !f.endsWith('/raft.proto')), healthProtoPath], {
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
 * connectionRefusalLog: what a plane's ConnectionLimiter calls for each
 * refused connection: one warn line a CONNECTION_REFUSAL_LOG_INTERVAL_MS at
 * most, timed on the monotonic clock (on the wall clock a step back, NTP or
 * a resumed VM, silenced the plane's refusals for the step's length).
 */
export function connectionRefusalLog(log: Pick<Logger, 'warn'>, plane: string): (host: string, why: string) => void {
  let lastMs = -Infinity;
  return (host, why) => {
    const now = performance.now();
    if (now - lastMs < CONNECTION_REFUSAL_LOG_INTERVAL_MS) return;
    lastMs = now;
    log.warn({ plane, host, why }, 'connection refused (logged once a minute)');
  };
}

/**
 * bindApiServer binds the client plane at opts.bindAddress (health and
 * reflection, health NOT_SERVING) and the peer plane at opts.peerBindAddress,
 * before the node exists: a caller that binds port 0
 * learns the real port first, builds the membership with it, then calls serve.
 * Errors: the bind error (e.g. EADDRINUSE: "No address added out of total 1 resolved").
 */
export async function bindApiServer(opts: BindOptions): Promise<ApiServer> {
  const log = opts.logger ?? silentLogger;
  for (const [what, a] of [['client', opts.bindAddress], ['peer', opts.peerBindAddress]] as const) {
    if (parseHostPort(a, true) === null) throw new Error(`${what} bind address ${JSON.stringify(a)} is not host:port`);
  }
  const maxRequestBytes = opts.maxRequestBytes ?? CLIENT_MESSAGE_BYTES_DEFAULT;
  const clientBudget = opts.clientHostBudget === undefined ? new HostBudget(CLIENT_HOST_BUDGET) : opts.clientHostBudget;
  const clientLimiter = new ConnectionLimiter(opts.clientConnections ?? CLIENT_CONNECTION_LIMITS, connectionRefusalLog(log, 'client'), clientBudget);
  const peerBudget = opts.peerHostBudget === undefined ? new HostBudget(PEER_HOST_BUDGET) : opts.peerHostBudget;
  const peerLimiter = new ConnectionLimiter(opts.peerConnections ?? PEER_CONNECTION_LIMITS, connectionRefusalLog(log, 'peer'), peerBudget);
  // grpc-js hands a call's metadata to its interceptors in their order: provingInterceptor, after the others,
  // sees only the calls every other one let through. A call that needs no key (Health/Check) proves nothing;
  // a key proves at most perOwnerMax connections (apiKeyOwner: a digest of the key names the owner).
  // A call whose metadata is over METADATA_BYTES_MAX is refused before any other gate (metadataSizeInterceptor, first).
  // A call the auth gate refused only for its action (a valid key: refusedKeyOwner) proves its connection too
  // (refusedOwnerInterceptor, first: it looks at the metadata again once the auth gate decided), and stays refused.
  // The read gate bounds the request bytes being read at once (a refused call never reads).
  const readGate = new ReadGate(opts.clientReads ?? CLIENT_READ_LIMITS);
  // The call gate bounds the calls one key has open (a Health/Watch never ends on its own).
  const callGate = new CallGate(opts.clientCallsPerCallerMax, opts.clientAnswersPerCallerMax);
  // The answer budget bounds the bytes of one key's answers being built or unread (last: it holds a request
  // the read gate has let go of, and sees each answer first).
  const answerBudget = new AnswerBudget(opts.clientAnswerBytesPerCallerMax);
  const server = new grpc.Server({
    ...clientServerOptions(maxRequestBytes),
    interceptors: [
      metadataSizeInterceptor(),
      ...(opts.clientRevocation !== undefined ? [clientRevocationInterceptor({ ...opts.clientRevocation, serialOf: (peer) => listeners[0]?.clientSerialOf(peer) })] : []),
      refusedOwnerInterceptor(clientLimiter, refusedKeyOwner),
      ...(opts.interceptors ?? []),
      provingInterceptor(clientLimiter, (path) => rpcNeed(path) !== 'open', apiKeyOwner),
      callGateInterceptor(callGate),
      readGateInterceptor(readGate),
      answerBudgetInterceptor(answerBudget),
    ],
  });
  let guard: PeerGuard | null = null;
  // Every peer call is admitted when it opens (cluster id, a member's certificate), before any of its messages
  // is read; then the chaos tests' fault injection (SNAPCOORD_MESSAGE_FAULTS) on incoming appends, if armed.
  // A call whose metadata is over PEER_METADATA_BYTES_MAX is refused before the admission (metadataSizeInterceptor, first).
  const peerServer = new grpc.Server({
    ...peerServerOptions(opts.peerKeepalive),
    interceptors: [metadataSizeInterceptor(PEER_METADATA_BYTES_MAX), peerAdmissionInterceptor(() => guard), ...serverFaultInterceptors(log), provingInterceptor(peerLimiter, () => true, (md, call) => guard?.memberOfOpening(md, call) ?? null)],
  });
  const health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(SERVICE_NAMES.map((s) => [s, 'NOT_SERVING'])) });
  health.addToServer(server);
  // The client plane's services are there from the bind: until serve (the node booting) they answer UNAVAILABLE
  // "starting", which clients retry; a method grpc-js does not know it answers UNIMPLEMENTED, which none retries.
  const later = {
    kv: new ServedLater(KVServiceService, 'the node'),
    cluster: new ServedLater(ClusterServiceService, 'the node'),
    snapshot: new ServedLater(SNAPSHOT_SERVICE_DEFINITION, 'the node'),
    task: new ServedLater(TaskServiceService, 'the node'),
  };
  for (const l of Object.values(later)) l.addTo(server);
  // The peer plane's too: until serve a member's call answers UNAVAILABLE "starting" (trailer UNSERVED_METADATA_KEY:
  // nothing done), not grpc-js's UNIMPLEMENTED. A follower's write forwarded to a member still booting (its view of
  // the leader one step behind) is kept and sent again (ForwardQueue), not failed `notLeader`; the leader's appends
  // and votes to it fail as for a member down, and are sent again after the transport's backoff.
  const laterRaft = new ServedLater(RAFT_SERVICE_DEFINITION, 'the node');
  laterRaft.addTo(peerServer);
  // Reflection answers each request of its stream without waiting for the last to be taken: read no faster than the client takes them.
  addWithBackpressure(server, reflection());
  const listeners: Listeners[] = [];
  let port: number;
  let peerPort: number;
  try {
    const client = await listen(server, opts.bindAddress, opts.credentials, clientLimiter);
    listeners.push(client);
    const peer = await listen(peerServer, opts.peerBindAddress, opts.peerCredentials, peerLimiter);
    listeners.push(peer);
    port = client.port;
    peerPort = peer.port;
  } catch (err) {
    for (const l of listeners) l.close();
    server.forceShutdown();
    peerServer.forceShutdown();
    throw err;
  }
  const address = formatHostPort({ host: (parseHostPort(opts.bindAddress, true) as { host: string }).host, port });
  const peerAddress = formatHostPort({ host: (parseHostPort(opts.peerBindAddress, true) as { host: string }).host, port: peerPort });
  let forwarder: LeaderForwarder | null = null;
  const directory = new PeerDirectory();
  let closeSnapshotService = (): void => undefined;
  let closing: Promise<void> | null = null;
  /** stopping: aborted by close() once the client plane is down; the served append streams then end. */
  const stopping = new AbortController();
  // One listener per served append stream (one per peer, a few more while leadership moves): no leak to warn of.
  setMaxListeners(0, stopping.signal);

  const setAll = (status: 'SERVING' | 'NOT_SERVING'): void => {
    health.setStatus('', status);
    for (const s of SERVICE_NAMES) health.setStatus(s, status);
  };

  const shutdown = (srv: grpc.Server, graceMs: number): Promise<void> => {
    const own = srv === server ? listeners[0] : listeners[1];
    own?.stopAccepting();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        srv.forceShutdown();
        own?.close();
        resolve();
      }, graceMs);
      srv.tryShutdown(() => {
        clearTimeout(timer);
        own?.close();
        resolve();
      });
    });
  };

  return {
    server,
    port,
    address,
    peerServer,
    peerPort,
    peerAddress,
    health,
    readGate,
    answerBudget,
    clientConnections: clientLimiter,
    peerConnections: peerLimiter,
    directory,
    get guard() {
      return guard;
    },
    closeClientConnections(condemned) {
      return listeners[0]?.closeWhere(condemned) ?? 0;
    },
    serve({ node, raftHandler, snapshotApi, clusterId, identityOf, peerRevocation, onPeerRefused, clientDial, clientCredentialsFor, advertiseClient, stateHash }: ServeOptions): void {
      if (forwarder !== null) throw new Error('ApiServer.serve: already serving');
      if (closing !== null) throw new Error('ApiServer.serve: closed');
      const g = new PeerGuard({
        clusterId: clusterId ?? 'snapcoord',
        isMember: (id) => node.isMember(id),
        wasRemoved: (id) => node.wasRemoved(id),
        reportedRemoved: (id) => node.removedRefusal(id),
        ...(node.peerVouch !== undefined ? { vouch: node.peerVouch } : {}),
        peerAddressOf: (id) => node.addressOf(id),
        ...(identityOf !== undefined ? { identityOf } : {}),
        ...(peerRevocation !== undefined ? { revocation: peerRevocation } : {}),
        ...(onPeerRefused !== undefined ? { onRefused: onPeerRefused } : {}),
        logger: log,
        directory,
      });
      guard = g;
      const selfClient = advertiseClient ?? address;
      const clientAddressOf = (id: string): string => (id === node.id ? selfClient : directory.get(id));
      forwarder = new LeaderForwarder(node, {
        clientAddressOf,
        ...(clientDial !== undefined ? { dial: clientDial } : {}),
        ...(clientCredentialsFor !== undefined ? { credentialsFor: clientCredentialsFor } : {}),
      });
      laterRaft.serve(createRaftService(raftHandler ?? node, { selfId: node.id, logger: log, guard: g, selfClientAddress: selfClient, stopping: stopping.signal }));
      later.kv.serve(createKvService(node, forwarder));
      later.cluster.serve(createClusterService(node, forwarder, stateHash !== undefined ? { stateHash } : {}));
      if (snapshotApi !== undefined) {
        const snap = createSnapshotService(node, snapshotApi, forwarder);
        closeSnapshotService = snap.close;
        later.snapshot.serve(snap.service);
        later.task.serve(createTaskService(snapshotApi.tasks.queue));
      } else {
        later.snapshot.serve(null);
        later.task.serve(null);
      }
      setAll('SERVING');
      log.info({ id: node.id, address, peerAddress, mutualTls: g.mutualTls }, 'api server serving');
    },
    close(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
      closing ??= (async () => {
        setAll('NOT_SERVING');
        // Client calls first, while this node still takes part in Raft: a write in flight here (or forwarded
        // from here) can still commit and be answered. The forwarding clients close once those calls are done.
        await shutdown(server, graceMs);
        forwarder?.close();
        closeSnapshotService();
        stopping.abort();
        await shutdown(peerServer, Math.min(graceMs, PEER_SHUTDOWN_GRACE_MS));
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

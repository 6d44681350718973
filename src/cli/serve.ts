/**
 * runServe: one snapcoord node in this process. Opens (creating when new)
 * the RocksDB data dir and checks its identity (a data dir of another node
 * or cluster, or of an unknown format, refuses to start: CliError, exit 2),
 * checks its TLS files, binds both gRPC planes (client at --grpc, peer at
 * --peer-listen), starts the Node over a GrpcTransport, prints
 * "snapcoord node <id> listening on grpc <addr> peer <addr>" and runs until SIGTERM or
 * SIGINT, then stops the server and the node and exits 0.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { tightenDataDir } from '../ops/data-dir-perms.js';
import { missingNodeSettings } from './node-runtime.js';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { parseHostPort } from '../client/address.js';
import { clientAuthInterceptor } from '../api/auth-interceptor.js';
import { checkTlsFiles, CLIENT_CRL_KEPT_FILE, crlFileOf, memberChannelCredentialsFromFiles, memberIdOf, normalizeSerial, PEER_CRL_KEPT_FILE, type MemberChannelCredentials, PeerCrl, serverCredentialsFromFiles } from '../tls/index.js';
import { x509 } from '../tls/x509.js';
import { X509MembershipProofs } from '../tls/membership-proof.js';
import { certificateRevocation, peerDial, type PeerCall } from '../transport/peer-guard.js';
import type { Logger } from '../node/logger.js';
import { bindApiServer, type ApiServer } from '../api/server.js';
import { dialChannel } from '../client/dial.js';
import { ClusterServiceClient } from '../gen/snapcoord/v1/cluster.js';
import { DiskGuard } from '../node/disk-guard.js';
import { BootRefusedError, Node } from '../node/node.js';
import { NodeMetrics } from '../node/metrics.js';
import { snapshotTaskRunner } from '../ops/snapshot-task.js';
import { checkImportFile, fetchImportFromS3, importSnapshot } from './import-snapshot.js';
import { SnapshotAgent } from '../ops/snapshot-agent.js';
import { hashStateAt, STATE_HASH_BYTES_PER_SEC_DEFAULT } from '../ops/consistency.js';
import { isS3Url, s3SettingsFrom } from '../ops/s3.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../node/snapshots.js';
import { TaskQueue } from '../ops/task-queue.js';
import { prepareRoots } from '../api/snapshot-path.js';
import { SNAPCOORD_VERSION } from '../version.js';
import { RocksStorage } from '../storage/rocks-storage.js';
import { StorageError } from '../storage/storage-error.js';
import { FORMAT_VERSION } from '../storage/types.js';
import { GrpcTransport, askMembership } from '../transport/grpc-transport.js';
import type { MembershipAnswer, MembershipQuery } from '../transport/transport.js';
import { JoinError, checkLogNotLost, joinMembership } from '../node/join.js';
import { STARTED_MEMBERS_FILE, StartedMembers, recordingHandler } from '../node/started-members.js';
import type { Membership } from '../raft/types.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { probeListenAddresses } from './listen-probe.js';
import { oneLine } from './client-options.js';
import { SNAPSHOT_STORE_DIR, type ServeConfig } from './config.js';
import { systemClock } from '../node/clock.js';
import { cryptoRng } from '../node/crypto-rng.js';
import { rocksDataDir } from '../storage/rocks-data-dir.js';
import { startExternalMemoryGc } from '../snapshot/external-memory-gc.js';

/** Planes: the credentials of both planes, server and dialling side. */
interface Planes {
  readonly peerServer: grpc.ServerCredentials;
  readonly peerChannel: grpc.ChannelCredentials;
  /** peerChannelFor: a channel to member `id`, which must present a certificate naming `id` (absent without peer TLS). */
  readonly peerChannelFor?: (id: string) => grpc.ChannelCredentials;
  readonly clientServer: grpc.ServerCredentials;
  /** clientChannel: how this node (forwarding, its gateway, an import) reaches members' client planes. */
  readonly clientChannel: grpc.ChannelCredentials;
  /** clientChannelFor: a channel to member `id`'s client plane, refusing a certificate that names another member (absent without peer TLS). */
  readonly clientChannelFor?: (id: string) => grpc.ChannelCredentials;
  /**
   * closeRevoked: closes this node's open connections to members (peer planes and client planes) whose certificate
   * the peer CRL now revokes, and answers how many (MemberChannelCredentials.closeRevoked; 0 without a CRL).
   */
  readonly closeRevoked: () => number;
}

/**
 * securePlanes checks every TLS file (CliError exit 2 naming the file and the
 * problem) and builds the credentials, which reload the files when they
 * change. Without TLS files a plane is plaintext (config.ts has refused that
 * on a non-loopback address unless --insecure-plaintext; warned here).
 */
function securePlanes(cfg: ServeConfig, logger: Logger, crl: PeerCrl | null = null): Planes {
  const check = (what: string, f: Parameters<typeof checkTlsFiles>[0]): ReturnType<typeof checkTlsFiles> => {
    try {
      const info = checkTlsFiles(f);
      const days = Math.floor((info.notAfter.getTime() - Date.now()) / 86_400_000);
      if (days < 30) logger.warn({ what, notAfter: info.notAfter.toISOString() }, `${what} certificate expires in ${days} day(s)`);
      return info;
    } catch (err) {
      throw new CliError(`refusing to start: ${what}: ${(err as Error).message}`, EXIT_CONFIG);
    }
  };
  const onError = (what: string) => (err: Error): void => logger.error({ what, err: err.message }, 'TLS files changed but cannot be used; keeping the previous ones');
  const onReload = (what: string) => (): void => logger.info({ what }, 'TLS files reloaded');
  const onExpired = (what: string) => (err: Error): void => logger.error({ what, err: err.message }, 'TLS certificate in use has expired: replace it');
  if (cfg.insecurePlaintext) {
    logger.warn({}, 'INSECURE: --insecure-plaintext: listeners on non-loopback addresses may run without TLS; anyone on the network can read and forge their traffic');
  }
  let peerServer = grpc.ServerCredentials.createInsecure();
  let peerChannel = grpc.credentials.createInsecure();
  let peerChannelFor: ((id: string) => grpc.ChannelCredentials) | undefined;
  const tracked: MemberChannelCredentials[] = [];
  if (cfg.peerTls !== null) {
    const t = cfg.peerTls;
    const ident = check('peer TLS', { certFile: t.certFile, keyFile: t.keyFile, caFile: t.caFile }).memberId;
    if (ident !== cfg.id) {
      throw new CliError(`refusing to start: --peer-cert ${t.certFile} names member ${ident ?? '(none)'}, not ${cfg.id} (issue one with \`snapcoord certs issue ${cfg.id}\`)`, EXIT_CONFIG);
    }
    // A reload must name this member too (memberId): another member's certificate is not taken, as at start.
    peerServer = serverCredentialsFromFiles({ certFile: t.certFile, keyFile: t.keyFile, caFile: t.caFile, memberId: cfg.id, requireClientCert: true, onError: onError('peer TLS'), onReload: onReload('peer TLS'), onExpired: onExpired('peer TLS') });
    // A member dialled must present its own certificate: any member's passes the CA and host checks.
    // A member whose certificate --peer-crl revokes fails the handshake: a removed member cannot answer (grant votes) as one.
    const members = memberChannelCredentialsFromFiles({ caFile: t.caFile, certFile: t.certFile, keyFile: t.keyFile, memberId: cfg.id, onError: onError('peer TLS'), onReload: onReload('peer TLS'), ...(crl !== null ? { revocation: crl } : {}) });
    tracked.push(members);
    peerChannel = members.any;
    peerChannelFor = (id) => members.forMember(id);
  }
  let clientServer = grpc.ServerCredentials.createInsecure();
  let clientChannel = grpc.credentials.createInsecure();
  let clientChannelFor: ((id: string) => grpc.ChannelCredentials) | undefined;
  if (cfg.clientTls !== null) {
    const t = cfg.clientTls;
    const info = check('client TLS', { certFile: t.certFile, keyFile: t.keyFile, ...(t.clientCaFile !== '' ? { caFile: t.clientCaFile } : {}), checkChain: false });
    // Clients (the CLI, gateways, this node's own gateway and forwarded calls) take only a server's certificate:
    // one naming no member without serverAuth is a client certificate to them (review18). Said here, not at each call.
    if (!info.servesClients) {
      throw new CliError(
        `refusing to start: client TLS: --cert ${t.certFile} names no member and its extended key usage does not name serverAuth: ` +
          `clients dialling with the CA refuse it as a client certificate (issue one with \`snapcoord certs issue ${cfg.id}\`, or add serverAuth)`,
        EXIT_CONFIG,
      );
    }
    clientServer = serverCredentialsFromFiles({
      certFile: t.certFile,
      keyFile: t.keyFile,
      ...(t.clientCaFile !== '' ? { caFile: t.clientCaFile } : {}),
      requireClientCert: t.clientCaFile !== '',
      checkChain: false,
      servesClients: true, // on every reload too: a client certificate rotated in would fail every client call
      onError: onError('client TLS'),
      onReload: onReload('client TLS'),
      onExpired: onExpired('client TLS'),
    });
    // Members reach each other's client planes trusting the cluster CA (--peer-ca), else the system's roots.
    // With --client-ca the node's own calls (gateway, forwarding, import) present its certificate too.
    const own = t.clientCaFile !== '' ? { certFile: t.certFile, keyFile: t.keyFile } : {};
    // Forwarded calls carry the callers' keys: a member's client plane must not present another member's
    // certificate (one naming no member is taken: a client-plane certificate of its own).
    if (cfg.peerTls !== null) {
      // Nor are writes, and their callers' keys, forwarded to a member whose certificate --peer-crl revokes.
      const members = memberChannelCredentialsFromFiles({ caFile: cfg.peerTls.caFile, ...own, checkChain: false, ...(crl !== null ? { revocation: crl } : {}) });
      tracked.push(members);
      clientChannel = members.any;
      clientChannelFor = (id) => members.forMember(id, true);
    } else {
      clientChannel = grpc.credentials.createSsl();
    }
  }
  if (cfg.httpTls !== null) check('gateway HTTPS', { certFile: cfg.httpTls.certFile, keyFile: cfg.httpTls.keyFile, checkChain: false });
  const closeRevoked = (): number => tracked.reduce((n, m) => n + m.closeRevoked(), 0);
  return { peerServer, peerChannel, ...(peerChannelFor !== undefined ? { peerChannelFor } : {}), clientServer, clientChannel, ...(clientChannelFor !== undefined ? { clientChannelFor } : {}), closeRevoked };
}

/** membershipProofsOf: the signer and verifier of configuration proofs (src/tls/membership-proof.ts) with the peer plane's files. */
function membershipProofsOf(cfg: ServeConfig, t: NonNullable<ServeConfig['peerTls']>, crl: PeerCrl | null): X509MembershipProofs {
  return new X509MembershipProofs({
    clusterId: cfg.clusterId,
    selfId: cfg.id,
    certFile: t.certFile,
    keyFile: t.keyFile,
    caFile: t.caFile,
    ...(crl !== null ? { isRevoked: (serial: string) => crl.isRevoked(serial) } : {}),
  });
}

/** CrlPlane: what openCrl says of one plane's CRL: its name in logs, its flag, and the flag of the CA that signs it. */
interface CrlPlane {
  /** what: 'peer CRL' or 'client CRL' (log lines and messages start with it). */
  readonly what: string;
  readonly flag: string;
  readonly crlFile: string;
  readonly caFile: string;
  readonly keptFile: string;
}

/**
 * openCrl opens one plane's CRL (PeerCrl, the same code and rules for both planes), checked against its CA and re-read
 * when it changes; CliError exit 2 when it does not load (not a CRL, not signed by the CA, too large). `reloaded` is
 * called after a changed CRL is taken. An expired CRL is used, and said so (see src/tls/crl.ts).
 */
async function openCrl(p: CrlPlane, logger: Logger, reloaded: () => void): Promise<PeerCrl> {
  try {
    return await PeerCrl.open({
      crlFile: p.crlFile,
      caFile: p.caFile,
      keptFile: p.keptFile,
      onReload: (info) => {
        logger.info({ what: p.what, revoked: info.revoked, thisUpdate: info.thisUpdate.toISOString() }, `${p.what} reloaded`);
        reloaded();
      },
      onError: (err) => logger.error({ what: p.what, err: err.message }, `${p.what} changed but cannot be used; keeping the previous one`),
      onStale: (err) => logger.error({ what: p.what, err: err.message }, `${p.what} expired: still used; issue a fresh one`),
    });
  } catch (err) {
    throw new CliError(`refusing to start: --${p.flag}: ${(err as Error).message}`, EXIT_CONFIG);
  }
}

/**
 * openPeerCrl opens --peer-crl (null without one), checked against --peer-ca
 * and re-read when it changes; CliError exit 2 when it does not load (not a
 * CRL, not signed by the CA, too large) or revokes this node's own
 * certificate. `reloaded` is called after a changed CRL is taken. An expired CRL is used, and said so (see src/tls/crl.ts).
 */
async function openPeerCrl(cfg: ServeConfig, logger: Logger, reloaded: () => void): Promise<PeerCrl | null> {
  const t = cfg.peerTls;
  if (t === null || t.crlFile === undefined || t.crlFile === '') {
    const forgotten = forgottenPeerCrl(cfg);
    if (forgotten !== null) {
      logger.warn(
        { what: 'peer CRL', crlFile: forgotten },
        `${forgotten} sits beside the peer certificates but --peer-crl is not given: the certificates it revokes are NOT refused; start with --peer-crl ${forgotten}`,
      );
    }
    return null;
  }
  const crl = await openCrl({ what: 'peer CRL', flag: 'peer-crl', crlFile: t.crlFile, caFile: t.caFile, keptFile: join(cfg.dataDir, PEER_CRL_KEPT_FILE) }, logger, reloaded);
  let own: string;
  try {
    own = new X509Certificate(readFileSync(t.certFile)).serialNumber;
  } catch (err) {
    crl.close();
    throw new CliError(`refusing to start: --peer-cert ${t.certFile}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  if (crl.isRevoked(own)) {
    crl.close();
    throw new CliError(`refusing to start: --peer-cert ${t.certFile} (serial ${own.toLowerCase()}) is revoked by --peer-crl ${t.crlFile}: every member refuses it (a removed member's certificate?)`, EXIT_CONFIG);
  }
  logger.info({ crlFile: t.crlFile, revoked: crl.latest.revoked, nextUpdate: crl.latest.nextUpdate?.toISOString() ?? null }, 'peer CRL loaded');
  return crl;
}

/**
 * ownClientCertRevoked: an Error when `crl` (the client CRL) revokes this node's own --cert, which it presents to the
 * members' client planes under --client-ca (its gateway's calls, forwarded writes, an import): they would all be
 * refused. Only a certificate of the CRL's issuer counts (a serial is unique per CA). Undefined when not revoked.
 */
function ownClientCertRevoked(t: NonNullable<ServeConfig['clientTls']>, crl: PeerCrl): Error | undefined {
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(readFileSync(t.certFile, 'latin1'));
  if (pem === null) throw new Error('no PEM certificate');
  const own = new (x509().X509Certificate)(pem[0]);
  if (own.issuer !== crl.latest.issuer || !crl.isRevoked(own.serialNumber)) return undefined;
  return new Error(
    `--cert ${t.certFile} (serial ${normalizeSerial(own.serialNumber)}) is revoked by --client-crl ${t.crlFile ?? ''}: this node presents it to the client planes (its gateway's calls, forwarded writes), which refuse it`,
  );
}

/**
 * openClientCrl opens --client-crl (null without one) as openCrl does, checked against --client-ca; CliError exit 2
 * when it does not load or revokes this node's own --cert (ownClientCertRevoked).
 */
async function openClientCrl(cfg: ServeConfig, logger: Logger, reloaded: () => void): Promise<PeerCrl | null> {
  const t = cfg.clientTls;
  if (t === null || t.crlFile === undefined || t.crlFile === '') return null;
  const crl = await openCrl({ what: 'client CRL', flag: 'client-crl', crlFile: t.crlFile, caFile: t.clientCaFile, keptFile: join(cfg.dataDir, CLIENT_CRL_KEPT_FILE) }, logger, reloaded);
  let revoked: Error | undefined;
  try {
    revoked = ownClientCertRevoked(t, crl);
  } catch (err) {
    crl.close();
    throw new CliError(`refusing to start: --cert ${t.certFile}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  if (revoked !== undefined) {
    crl.close();
    throw new CliError(`refusing to start: ${revoked.message}`, EXIT_CONFIG);
  }
  logger.info({ crlFile: t.crlFile, revoked: crl.latest.revoked, nextUpdate: crl.latest.nextUpdate?.toISOString() ?? null }, 'client CRL loaded');
  return crl;
}

/**
 * forgottenPeerCrl: the CRL `snapcoord certs revoke` would have written beside
 * --peer-ca or --peer-cert (crlFileOf their directory) when the peer plane has
 * mutual TLS but no --peer-crl, else null: an operator who revoked a removed
 * member's certificate and forgot the flag is told at start.
 */
export function forgottenPeerCrl(cfg: Pick<ServeConfig, 'peerTls'>): string | null {
  const t = cfg.peerTls;
  if (t === null || (t.crlFile !== undefined && t.crlFile !== '')) return null;
  for (const file of new Set([crlFileOf(dirname(t.caFile)), crlFileOf(dirname(t.certFile))])) {
    if (existsSync(file)) return file;
  }
  return null;
}

/** loopbackTarget: `address` with a wildcard host (0.0.0.0, ::) replaced by loopback, to dial our own listener. */
function loopbackTarget(address: string): string {
  const hp = parseHostPort(address, true);
  if (hp === null) return address;
  const h = hp.host.replace(/^\[|\]$/g, '');
  if (h === '0.0.0.0' || h === '') return `127.0.0.1:${hp.port}`;
  if (h === '::') return `[::1]:${hp.port}`;
  return address;
}

/** runServe resolves with the process exit code once the node has stopped. */
export async function runServe(cfg: ServeConfig): Promise<number> {
  const logger = pino({ level: cfg.logLevel, base: { node: cfg.id } });
  // Dead snapshot Buffers are collected before they pile up (issue 15: a node's RSS).
  const memoryGc = startExternalMemoryGc();
  // A key file others may read, API key or TLS private key: warned, not refused.
  if (cfg.apiKeyFileWarning !== '') logger.warn({ file: cfg.apiKeyFile }, cfg.apiKeyFileWarning);
  if (cfg.apiKeysFileWarning !== '') logger.warn({ file: cfg.apiKeysFile }, cfg.apiKeysFileWarning);
  for (const w of cfg.tlsKeyFileWarnings) logger.warn({}, w);
  if (cfg.s3CredentialsFileWarning !== '') logger.warn({ file: cfg.s3CredentialsFile }, cfg.s3CredentialsFileWarning);
  if (cfg.clusterIdWarning !== '') logger.warn({ clusterId: cfg.clusterId }, cfg.clusterIdWarning);

  // Everything this process creates is private (0700 directories, 0600 files), and what an older
  // version or an operator left wider in the data dir is narrowed, with a warning (as etcd does).
  process.umask(0o077);
  // The embedded gateway's code (Fastify, the routes) is loaded while the data dir opens, and is in before this node
  // serves or takes part in Raft: loaded after the node started (as it was), its module evaluation held the event loop
  // for 0.2-1.4 s (tsx, load 15) while the member already served clients and its peers counted on it: a restarted
  // member heard its leader only once the gateway was in (15-90 ms after, 6 of 8 planned restarts in bench:write),
  // its clients' writes waited meanwhile, and its heartbeat answers were late.
  const gatewayCode = import('../gateway/index.js');
  gatewayCode.catch(() => undefined); // awaited below; a failure to load surfaces there
  // A port another process holds is refused before the data dir is opened (listen-probe.ts).
  try {
    await probeListenAddresses([cfg.grpcAddress, cfg.peerListen, cfg.httpAddress]);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  if (existsSync(cfg.dataDir)) {
    const t = await tightenDataDir(cfg.dataDir);
    if (t.changed.length > 0) {
      logger.warn({ dataDir: cfg.dataDir, narrowed: t.changed.length, first: t.changed.slice(0, 5) }, 'data dir had files readable by others: narrowed to 0700 directories and 0600 files');
    }
    for (const f of t.failed.slice(0, 5)) logger.warn({ path: f.path, err: f.error }, 'data dir: cannot narrow the mode of this file');
  }

  let storage: RocksStorage;
  try {
    storage = await RocksStorage.open(cfg.dataDir, {
      onMigration: ({ database, path }) =>
        logger.info({ dataDir: cfg.dataDir, database, path }, 'data dir of an earlier build: migrating its records to checksummed ones (the state: one rewrite of all of it, minutes for gigabytes)'),
    });
  } catch (err) {
    throw new CliError(err instanceof Error ? err.message : String(err), EXIT_CONFIG);
  }
  if (storage.migrated !== null) {
    logger.info({ dataDir: cfg.dataDir, ...storage.migrated }, 'data dir of an earlier build migrated: every log entry and state record now ends with a CRC-32, checked when read');
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
  const s3Settings = s3SettingsFrom({
    endpoint: cfg.s3Endpoint,
    region: cfg.s3Region,
    ...(cfg.s3PathStyle ? { forcePathStyle: true } : {}),
    credentialsFile: cfg.s3CredentialsFile,
    ...(cfg.s3TimeoutMs > 0 ? { idleTimeoutMs: cfg.s3TimeoutMs } : {}),
    ...(cfg.s3DownloadTimeoutMs > 0 ? { downloadTimeoutMs: cfg.s3DownloadTimeoutMs } : {}),
  });
  let importFile = cfg.importSnapshot;
  if (cfg.importSnapshot !== '') {
    try {
      // An s3:// archive is downloaded into the data dir (checked against its stored SHA-256) when it will be imported.
      if (isS3Url(importFile)) importFile = isNewDataDir ? await fetchImportFromS3(importFile, cfg.dataDir, s3Settings, logger) : '';
      if (importFile !== '') await checkImportFile(importFile);
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  }

  let planes: Planes;
  let peerCrl: PeerCrl | null = null;
  let clientCrl: PeerCrl | null = null;
  let crlReloaded = (): void => undefined;
  let clientCrlReloaded = (): void => undefined;
  try {
    // Peer channels are made again when the CRL changes, so none made before a revocation outlives it.
    peerCrl = await openPeerCrl(cfg, logger, () => crlReloaded());
    // The client plane's connections of clients a reloaded client CRL revokes are closed (clientCrlReloaded).
    clientCrl = await openClientCrl(cfg, logger, () => clientCrlReloaded());
    planes = securePlanes(cfg, logger, peerCrl);
  } catch (err) {
    peerCrl?.close();
    clientCrl?.close();
    await storage.close().catch(() => undefined);
    throw err;
  }

  let createGateway: Awaited<typeof gatewayCode>['createGateway'];
  try {
    ({ createGateway } = await gatewayCode);
  } catch (err) {
    peerCrl?.close();
    await storage.close().catch(() => undefined);
    throw new CliError(`cannot load the HTTP gateway: ${(err as Error).message}`);
  }
  logger.debug({ id: cfg.id }, 'gateway code loaded');
  let api: ApiServer;
  // The metrics exist once the node's parts do; a call refused before then is not counted.
  const metricsRef: { metrics: NodeMetrics | null } = { metrics: null };
  try {
    api = await bindApiServer({
      bindAddress: cfg.grpcAddress,
      peerBindAddress: cfg.peerListen,
      logger,
      credentials: planes.clientServer,
      peerCredentials: planes.peerServer,
      interceptors: [clientAuthInterceptor({ adminKey: cfg.apiKey, keys: cfg.apiKeys, insecureNoAuth: cfg.insecureNoAuth, logger })],
      // A client certificate --client-crl revokes is refused before its API key is looked at.
      ...(clientCrl !== null ? { clientRevocation: { revocation: clientCrl, logger, onRefused: () => metricsRef.metrics?.clientRevokedRefusals.inc() } } : {}),
      maxRequestBytes: cfg.maxRequestBytes,
    });
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw new CliError((err as Error).message);
  }

  let snapshots: SnapshotManager;
  try {
    snapshots = await SnapshotManager.open(
      join(cfg.dataDir, SNAPSHOT_STORE_DIR),
      storage,
      {
        ...DEFAULT_SNAPSHOT_POLICY,
        snapshotEntries: cfg.snapshotEntries,
        snapshotLogBytes: cfg.snapshotLogBytes,
        trailingEntries: cfg.snapshotTrailingEntries,
        retain: cfg.snapshotRetain,
        chunkBytes: cfg.snapshotChunkBytes,
        maxTransfers: cfg.snapshotMaxTransfers,
        bandwidthBytesPerSec: cfg.snapshotBandwidth,
        scrubIntervalMs: cfg.snapshotScrubIntervalSecs * 1000,
        scrubBytesPerSec: cfg.snapshotScrubRate,
      },
      logger,
      SNAPCOORD_VERSION,
      systemClock,
    );
  } catch (err) {
    await api.close(0);
    await storage.close().catch(() => undefined);
    throw new CliError(`cannot open the snapshot store: ${(err as Error).message}`);
  }
  // Calls advertise this node's peer address too: a member that does not know it yet asks it there for its proofs.
  const dial = peerDial(cfg.clusterId, cfg.advertiseClient, planes.peerChannel, planes.peerChannelFor, cfg.peers[cfg.id] ?? '');
  snapshots.dial = dial;

  const ref: { node: Node | null } = { node: null };
  const metrics = new NodeMetrics(() => {
    if (ref.node === null) throw new Error('the node is not started yet');
    return ref.node.status();
  });
  metrics.rocksMemory = () => storage.memory();
  const crlGauges = (c: PeerCrl) => () => ({ revoked: c.latest.revoked, nextUpdateMs: c.latest.nextUpdate?.getTime() ?? null, fileRefused: c.fileRefused });
  if (peerCrl !== null) metrics.peerCrl = crlGauges(peerCrl);
  if (clientCrl !== null) metrics.clientCrl = crlGauges(clientCrl);
  metricsRef.metrics = metrics;
  // The members seen running with a log of their own (a new data dir under one of their ids is refused; started-members.ts).
  let started: StartedMembers;
  try {
    started = await StartedMembers.open(cfg.dataDir, logger);
  } catch (err) {
    await api.close(0);
    await storage.close().catch(() => undefined);
    throw new CliError(`refusing to start: data dir ${cfg.dataDir}: cannot read ${STARTED_MEMBERS_FILE}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  const transport = new GrpcTransport({
    selfId: cfg.id,
    onMessage: (m) => {
      // Only a member's answer is evidence: a removed one's, still in flight, must not undo its forgetting.
      started.observe(m, (id) => ref.node?.isMember(id) === true);
      ref.node?.receive(m);
    },
    logger,
    dial,
    directory: api.directory,
  });
  // A changed CRL: connections made before it closed, and what the node took on a certificate's word checked again.
  crlReloaded = () => {
    transport.reconnect();
    // Every other connection to a member it now revokes (forwarding, snapshot and state fetches, consistency checks).
    const closed = planes.closeRevoked();
    if (closed > 0) logger.warn({ what: 'peer CRL', closed }, 'peer CRL reloaded: open connections to members whose certificate it now revokes are closed');
    if (peerCrl !== null) ref.node?.peerCrlChanged((serial) => peerCrl.isRevoked(serial));
  };
  // A changed client CRL: the client plane's open connections over a certificate it now revokes are closed (a Watch
  // held open, a keep-alive channel); their next calls are refused by clientRevocationInterceptor.
  const clientCrlInUse = clientCrl;
  const clientTls = cfg.clientTls;
  if (clientCrlInUse !== null && clientTls !== null) {
    const apiNow = api;
    clientCrlReloaded = () => {
      const closed = apiNow.closeClientConnections((cert) => clientCrlInUse.isRevoked(cert.serialNumber));
      if (closed > 0) {
        metrics.clientRevokedClosed.inc(closed);
        logger.warn({ what: 'client CRL', closed }, 'client CRL reloaded: open client connections over certificates it now revokes are closed');
      }
      let own: Error | undefined;
      try {
        own = ownClientCertRevoked(clientTls, clientCrlInUse);
      } catch {
        own = undefined; // --cert unreadable now: the TLS reload says so
      }
      if (own !== undefined) logger.error({ what: 'client CRL', err: own.message }, 'client CRL revokes this node\'s own client-plane certificate');
    };
  }
  let initialMembership: Membership = { voters: Object.keys(cfg.peers), learners: [], addresses: cfg.peers };
  if (!isNewDataDir && cfg.join) logger.info({ dataDir: cfg.dataDir }, '--join: the data dir holds this node\'s state already; it starts from it');
  const ask = (address: string, q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer> => askMembership(dial, address, q, timeoutMs);
  try {
    // A voter must not vote without the log it acknowledged: not back on an empty data dir under its id, nor on a data
    // dir older than the one it ran on (a copy or a backup put back), which lacks those entries as an empty one does.
    // The members --peers names are asked (a node started alone on a copy, --peers naming itself only, asks no one: a
    // new one-node cluster from a directory snapshot).
    const own = isNewDataDir ? undefined : { lastIndex: storage.lastIndex(), term: (await storage.readHardState()).term };
    await checkLogNotLost({ selfId: cfg.id, peers: cfg.peers, ask, log: logger, ...(own !== undefined ? { own } : {}) });
    if (isNewDataDir && cfg.join) initialMembership = await joinMembership({ selfId: cfg.id, peers: cfg.peers, ask, clock: systemClock, log: logger });
  } catch (err) {
    await api.close(0);
    await transport.close();
    await storage.close().catch(() => undefined);
    // The message quotes what the members answered: one line, their control characters made visible.
    if (err instanceof JoinError) throw new CliError(`refusing to start: ${oneLine(err.message)}`, EXIT_CONFIG);
    throw err;
  }
  let node: Node;
  try {
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: cfg.id,
      storage,
      transport,
      initialMembership,
      snapshots,
      metrics,
      dialAddresses: cfg.peerDial,
      // Under mutual TLS the peer key signs this leader's configuration entries and the CA checks others' (vouching).
      ...(cfg.peerTls !== null ? { membershipProofs: membershipProofsOf(cfg, cfg.peerTls, peerCrl) } : {}),
      verifyImageRecords: cfg.verifyImageRecords,
      ...(cfg.minFreeBytes > 0 ? { diskGuard: new DiskGuard(cfg.dataDir, cfg.minFreeBytes, logger, systemClock) } : {}),
      timings: { tickMs: cfg.tickMs, electionTimeoutTicks: cfg.electionTimeoutTicks, heartbeatIntervalTicks: cfg.heartbeatTicks },
      logger,
      // A member removed is forgotten as it is applied: added back under its id, it is a new member (its first
      // start on a new data dir is no lost log). Before, only a GetMembership asked between the two pruned it.
      onMemberRemoved: (id) => started.forget(id),
    });
  } catch (err) {
    await api.close(0);
    await transport.close();
    await storage.close().catch(() => undefined);
    if (err instanceof BootRefusedError) throw new CliError(`refusing to start: data dir ${cfg.dataDir}: ${err.message}`, EXIT_CONFIG);
    throw new CliError(`cannot start node ${cfg.id}: ${(err as Error).message}`);
  }
  ref.node = node;
  metrics.peerTrust = () => {
    const n = node.removalNewsStats();
    return n === null ? null : { reportedRemoved: n.removed, leadershipHeld: n.leadershipHeld };
  };
  let tasks: TaskQueue;
  let agent: SnapshotAgent | undefined;
  let realRoots: string[];
  const snapshotPath = join(cfg.snapshotDir, `${cfg.dbName}.snapshot`);
  try {
    realRoots = await prepareRoots(cfg.snapshotRoots, { warn: (m) => logger.warn({ roots: cfg.snapshotRoots }, m) });
    agent = await SnapshotAgent.create({
      node,
      log: logger,
      dbName: cfg.dbName,
      snapshotDir: cfg.snapshotDir,
      snapshotPath,
      scheduleIntervalMs: cfg.scheduleSnapshotSecs * 1000,
      retention: { keepLast: cfg.scheduleKeepLast, keepDays: cfg.scheduleKeepDays, keepWeeks: cfg.scheduleKeepWeeks },
      destination: cfg.snapshotDestination,
      s3: s3Settings,
      consistencyCheckIntervalMs: cfg.consistencyCheckIntervalSecs * 1000,
      selfClientAddress: cfg.clientTls !== null ? cfg.advertiseClient : loopbackTarget(api.address),
      clientAddressOf: (id) => api.directory.get(id),
      connect: (address, id) => {
        const { credentials, options } = dialChannel({ credentials: planes.clientChannelFor?.(id) ?? planes.clientChannel, apiKey: cfg.apiKey });
        return new ClusterServiceClient(address, credentials, options);
      },
      registry: metrics.registry,
      reserveBytes: cfg.minFreeBytes,
    });
    tasks = await TaskQueue.open(join(cfg.dataDir, 'tasks.json'), { snapshotCreation: agent.runner(snapshotTaskRunner(node, snapshotPath, cfg.minFreeBytes)) }, logger, {
      enqueuedMax: cfg.taskQueueMax,
      finishedKeptMax: cfg.tasksKept,
    });
    const queue = tasks;
    metrics.taskQueueDepth = () => queue.depth();
  } catch (err) {
    await api.close(0);
    await node.stop();
    throw new CliError(`cannot start node ${cfg.id}: ${(err as Error).message}`);
  }
  // Scheduled snapshots (leader only, retention, S3) and the periodic consistency check: src/ops.
  const snapshotAgent = agent as SnapshotAgent;
  snapshotAgent.start(tasks);
  // Aborted when the process stops (stopNode): a paced state hash running then ends where it is.
  const stateHashStop = new AbortController();
  api.serve({
    node,
    raftHandler: recordingHandler(node, started, (id) => node.isMember(id)),
    clusterId: cfg.clusterId,
    ...(cfg.peerTls !== null ? { identityOf: (call: PeerCall) => memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate) } : {}),
    ...(peerCrl !== null ? { peerRevocation: certificateRevocation((serial) => peerCrl.isRevoked(serial)) } : {}),
    onPeerRefused: (reason) => metrics.peerRefusals.inc({ reason }),
    clientDial: { credentials: planes.clientChannel },
    ...(planes.clientChannelFor !== undefined ? { clientCredentialsFor: planes.clientChannelFor } : {}),
    advertiseClient: cfg.advertiseClient,
    stateHash: () => hashStateAt(storage, { clock: systemClock, bytesPerSec: STATE_HASH_BYTES_PER_SEC_DEFAULT, signal: stateHashStop.signal }),
    snapshotApi: {
      snapshots,
      tasks: { queue: tasks, snapshotPath },
      realRoots,
      directoryExport: { storage: rocksDataDir, nodeId: cfg.id, clusterId: cfg.clusterId, selfAddress: cfg.peers[cfg.id] ?? api.address, version: SNAPCOORD_VERSION, log: logger, reserveBytes: cfg.minFreeBytes },
    },
  });
  // Where this process reaches its own client plane: over TLS the advertised name (the certificate's), else loopback.
  const selfTarget = cfg.clientTls !== null ? cfg.advertiseClient : loopbackTarget(api.address);
  logger.info(
    {
      id: cfg.id,
      clusterId: cfg.clusterId,
      grpc: api.address,
      peer: api.peerAddress,
      advertiseClient: cfg.advertiseClient,
      peerTls: cfg.peerTls !== null ? 'mutual' : 'off',
      clientTls: cfg.clientTls !== null ? (cfg.clientTls.clientCaFile !== '' ? 'mutual' : 'on') : 'off',
      http: cfg.httpAddress,
      peers: cfg.peers,
      dataDir: cfg.dataDir,
      apiKey: cfg.apiKey === '' ? 'none' : 'set',
      insecureNoAuth: cfg.insecureNoAuth,
    },
    'node serving',
  );
  // Once serving (a start refused for its data dir or its files says that alone, in one line).
  const missing = missingNodeSettings(process.execArgv, process.env);
  if (missing.length > 0) {
    logger.warn({ missing }, "started without the node's memory settings (its peak RSS is tens of MiB higher): start it as `snapcoord local`, the image or README 'Running on several hosts' do");
  }
  // ===== BEGIN embedded REST gateway (src/gateway; the only gateway code in this file) =====
  // The gateway serves cfg.httpAddress and calls this node's own gRPC API. It is
  // stopped on shutdown by wrapping api.close (the gateway closes first), so the
  // stop path below needs no change. config.ts has already refused to get here
  // with no API key unless --insecure-no-auth.
  {
    const gateway = createGateway({
      target: selfTarget,
      dial: { credentials: planes.clientChannel },
      auth: { adminKey: cfg.apiKey, keys: cfg.apiKeys, insecureNoAuth: cfg.insecureNoAuth },
      logger,
      metrics,
      metricsOpen: cfg.metricsOpen,
      ...(cfg.httpTls !== null ? { tls: cfg.httpTls } : {}),
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
  process.stdout.write(`snapcoord node ${cfg.id} listening on grpc ${api.address} peer ${api.peerAddress}\n`);
  if (cfg.importSnapshot !== '') {
    if (!isNewDataDir || importFile === '') {
      logger.warn({ file: cfg.importSnapshot, dataDir: cfg.dataDir }, '--import-snapshot ignored: the data dir already holds state');
    } else {
      importSnapshot(node, selfTarget, importFile, logger, { credentials: planes.clientChannel, apiKey: cfg.apiKey })
        .catch((err: unknown) => logger.error({ file: cfg.importSnapshot, err: (err as Error).message }, 'importing the snapshot failed'))
        // The copy downloaded from S3 is not kept once the import is over.
        .finally(() => (importFile !== cfg.importSnapshot ? rm(importFile, { force: true }).catch(() => undefined) : undefined));
    }
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(watchdog);
      logger.info({ id: cfg.id, why }, 'shutting down');
      stopNode({ id: cfg.id, why, logger, memoryGc, snapshotAgent, stateHashStop, node, api, tasks }).then(
        () => resolve(code),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    // Repeated signals (Ctrl-C reaches the whole process group, then `snapcoord local` sends SIGTERM) are one request.
    process.on('SIGTERM', () => stop('SIGTERM', 0));
    process.on('SIGINT', () => stop('SIGINT', 0));
    // With --peer-crl or --client-crl, SIGHUP reads the CRL (and its CA) again now rather than at the next 5 s look.
    for (const [what, crl] of [['peer CRL', peerCrl], ['client CRL', clientCrl]] as const) {
      if (crl === null) continue;
      process.on('SIGHUP', () => {
        void crl.refresh({ force: true }).then(() => {
          const info = crl.latest;
          logger.info({ what, revoked: info.revoked, thisUpdate: info.thisUpdate.toISOString() }, `${what} read again (SIGHUP)`);
        });
      });
    }
    // A storage failure stops the Raft loop for good: exit rather than serve errors forever.
    const watchdog = setInterval(() => {
      const failure = node.failed();
      if (failure !== null) stop(`node failed: ${failure.message}`, 1);
    }, 1_000);
  });
}

/** StoppingParts: what stopNode stops, in its order. */
export interface StoppingParts {
  readonly id: string;
  readonly why: string;
  readonly logger: Logger;
  readonly memoryGc: { stop(): void };
  readonly snapshotAgent: { stop(): void };
  /** stateHashStop: aborted first: the state hashes running (HashState, paced) end where they are. */
  readonly stateHashStop?: Pick<AbortController, 'abort'>;
  readonly node: Pick<Node, 'status' | 'transferLeadership' | 'stop'>;
  readonly api: { close(): Promise<void> };
  readonly tasks: { close(): Promise<void> };
}

/**
 * stopNode is a serve process's shutdown: the snapshot agent, a leader's
 * handoff (SIGTERM, SIGINT), client calls drained, the task queue, then the
 * node, and the process's bound on dead Buffers (startExternalMemoryGc) last:
 * node.stop() lets an install, the applies and a snapshot being made finish
 * (up to 30 s each), and those go on making short-lived Buffers. Stopped
 * first, a restarted follower's full snapshot finished after SIGTERM with
 * nothing scavenging its RocksDB Buffers: its ArrayBuffers 6 -> 67 MiB in a
 * second, the node at 240 MiB in bench:snapshot-cluster's `stop` phase
 * (issue 15). Logs 'stopped' with the time of each step (ms).
 */
export async function stopNode(p: StoppingParts): Promise<void> {
  const stepsMs: Record<string, number> = {};
  let stepFromMs = Date.now();
  const step = (name: string): void => {
    const now = Date.now();
    stepsMs[name] = now - stepFromMs;
    stepFromMs = now;
  };
  p.snapshotAgent.stop();
  // A paced state hash takes minutes on a large state: left running, it held the client-call drain below for its
  // whole grace (SHUTDOWN_GRACE_MS), then ended on the closed storage.
  p.stateHashStop?.abort();
  // A planned stop of the leader hands leadership over first, so the cluster loses no election timeout.
  if (p.why === 'SIGTERM' || p.why === 'SIGINT') await handOffLeadership(p.node, p.logger);
  step('handoff');
  // Client calls drain (bounded), then the peers' append streams end: nothing waits for a grace to run out.
  await p.api.close();
  step('api');
  await p.tasks.close();
  await p.node.stop();
  step('node');
  p.memoryGc.stop();
  p.logger.info({ id: p.id, stepsMs }, 'stopped');
}

/** LEADER_HANDOFF_MS: how long a stopping leader waits for its successor to take over before it exits anyway. */
export const LEADER_HANDOFF_MS = 2_000;

/**
 * handOffLeadership: when `node` leads, transfers leadership to the most
 * caught-up other voter (highest match index) and waits at most
 * LEADER_HANDOFF_MS for it to lead. Never throws: a failed or timed-out
 * transfer is logged and the caller stops anyway (the others then elect a
 * leader after an election timeout, as after a crash). Resolves with the new
 * leader's id, or '' when there was nothing to hand over or the handoff failed.
 */
export async function handOffLeadership(node: Pick<Node, 'status' | 'transferLeadership'>, logger: Logger, timeoutMs = LEADER_HANDOFF_MS): Promise<string> {
  const st = node.status();
  if (st.role !== 'leader') return '';
  const candidates = st.membership.voters.filter((v) => v !== st.id);
  if (candidates.length === 0) return '';
  const to = candidates.reduce((best, v) => ((st.progress[v]?.match ?? 0) > (st.progress[best]?.match ?? 0) ? v : best));
  const startedMs = Date.now();
  try {
    await node.transferLeadership(to, timeoutMs);
    logger.info({ to, ms: Date.now() - startedMs }, 'leadership handed over before stopping');
    return to;
  } catch (err) {
    logger.warn({ to, err: (err as Error).message }, 'leadership handoff before stopping failed; stopping anyway');
    return '';
  }
}

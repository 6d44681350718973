/**
 * The configuration of `snapcoord serve`. Every option comes, in this order
 * of precedence, from its flag, its environment twin (SNAPCOORD_ + the flag
 * in upper snake case: --data-dir <-> SNAPCOORD_DATA_DIR), a JSON config file
 * (--config FILE / SNAPCOORD_CONFIG; keys are the camelCase names, e.g.
 * "dataDir", or the flag names, e.g. "data-dir") and finally the defaults,
 * which are filled in ONE place: normalise(). Every error is a CliError with
 * one clear line and exit code 2.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isLoopback, isNodeId, parseHostPort } from '../client/address.js';
import { defaultSnapshotRoots } from '../api/snapshot-path.js';
import { TASKS_ENQUEUED_MAX_DEFAULT, TASKS_FINISHED_KEPT_DEFAULT } from '../ops/task-queue.js';
import {
  S3Error,
  S3_DOWNLOAD_TIMEOUT_MS_DEFAULT,
  S3_DOWNLOAD_TIMEOUT_MS_MAX,
  S3_DOWNLOAD_TIMEOUT_MS_MIN,
  S3_IDLE_TIMEOUT_MS_DEFAULT,
  S3_IDLE_TIMEOUT_MS_MAX,
  S3_IDLE_TIMEOUT_MS_MIN,
  parseS3DownloadTimeoutMs,
  parseS3TimeoutMs,
} from '../ops/s3.js';
import { parseApiKeys, type ApiKeySpec } from '../gateway/auth.js';
import { API_KEY_CHARS_MIN } from '../auth/keys.js';
import { DEFAULT_MIN_FREE_BYTES } from '../node/disk-guard.js';
import { DEFAULT_TIMINGS } from '../node/node.js';
import { SCRUB_BYTES_PER_SEC_DEFAULT, SCRUB_BYTES_PER_SEC_MIN, SCRUB_INTERVAL_MS_DEFAULT, SCRUB_INTERVAL_MS_MAX, SCRUB_INTERVAL_MS_MIN } from '../node/scrub-pace.js';
import { DEFAULT_SNAPSHOT_POLICY } from '../node/snapshots.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { KEY_FILE_EMPTY, keyFileExposure, readApiKeysFile, readKeyFileLine, s3CredentialsFileExposure, tlsKeyFileWarnings } from './key-file.js';
import { LOG_LEVELS, envName, type LogLevel } from './config-env.js';

/** CLIENT_REQUEST_BYTES_DEFAULT: the default of --max-request-bytes (1.5 MiB, like etcd's). */
export const CLIENT_REQUEST_BYTES_DEFAULT = 1536 * 1024;

/** ServeConfig is the validated, complete configuration of one node. */
export interface ServeConfig {
  readonly id: string;
  /** grpcAddress: where the client plane (KV, Cluster, Snapshot, Task, health, reflection) listens. */
  readonly grpcAddress: string;
  /** advertiseClient: the client-plane address other members forward to and clients are told (default: grpcAddress, with a wildcard host replaced by the peer address's host). */
  readonly advertiseClient: string;
  /** peerListen: where the peer plane (RaftService) listens; default this node's address in peers. */
  readonly peerListen: string;
  /** peerTls: mutual TLS of the peer plane (certificate, key, cluster CA), null for plaintext. */
  readonly peerTls: { readonly certFile: string; readonly keyFile: string; readonly caFile: string; /** crlFile: --peer-crl, '' or absent for none. */ readonly crlFile?: string } | null;
  /** clientTls: TLS of the client plane and the gateway's calls to it; clientCaFile '' when client certificates are not asked for. */
  readonly clientTls: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile: string; /** crlFile: --client-crl, '' or absent for none. */ readonly crlFile?: string } | null;
  /** httpTls: HTTPS of the gateway, null for plain HTTP. */
  readonly httpTls: { readonly certFile: string; readonly keyFile: string } | null;
  /** insecurePlaintext: allow a non-loopback listener without TLS (a loud warning). */
  readonly insecurePlaintext: boolean;
  /** maxRequestBytes: the largest client-plane gRPC message accepted. */
  readonly maxRequestBytes: number;
  /** metricsOpen: /metrics answers without a key. */
  readonly metricsOpen: boolean;
  /** verifyImageRecords: NodeOptions.verifyImageRecords (a follower reads every record of a restore's state image before it commits it). */
  readonly verifyImageRecords: boolean;
  /** httpAddress: where the REST gateway listens (port 0: any free port). */
  readonly httpAddress: string;
  /** peers: the initial membership, id -> "host:port", in the order given; includes `id`. */
  readonly peers: Readonly<Record<string, string>>;
  /** peerDial: peers this node dials at another address than the membership's (id -> "host:port"); empty for none. */
  readonly peerDial: Readonly<Record<string, string>>;
  /** dataDir: absolute path of the node's data dir. */
  readonly dataDir: string;
  /** minFreeBytes: writes are refused while the data dir's file system has less free space than this; 0 disables the guard. */
  readonly minFreeBytes: number;
  readonly clusterId: string;
  /**
   * clusterIdWarning: under peer TLS with no --cluster-id given (the default, snapcoord), why that is a risk (serve
   * logs it): another cluster whose certificates the same CA signed, on the default id too, takes this one's peer
   * calls and membership proofs as its own members' (an id such as n1 names a member in both). '' when not.
   */
  readonly clusterIdWarning: string;
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatTicks: number;
  readonly logLevel: LogLevel;
  /** apiKey: the admin key of the client plane and the gateway, '' when none. */
  readonly apiKey: string;
  /** apiKeys: extra gateway keys and the actions each may do (config file `apiKeys`, env SNAPCOORD_API_KEYS as JSON). */
  readonly apiKeys: readonly ApiKeySpec[];
  /** apiKeyFile: where apiKey was read from ('' when not from a file). */
  readonly apiKeyFile: string;
  /** apiKeyFileWarning: apiKeyFile may be read by other users (keyFileExposure; serve logs it), '' when not. */
  readonly apiKeyFileWarning: string;
  /** apiKeysFile: where apiKeys were read from ('' when not from a file); apiKeysFileWarning: it may be read by other users ('' when not). */
  readonly apiKeysFile: string;
  readonly apiKeysFileWarning: string;
  /** tlsKeyFileWarnings: the TLS private keys (--peer-key, --key, --http-key) other users may read (tlsKeyFileWarnings; serve logs each). */
  readonly tlsKeyFileWarnings: readonly string[];
  /** insecureNoAuth: the client plane and the gateway ask for no key. Without it, serve refuses to start with no key at all. */
  readonly insecureNoAuth: boolean;
  /** snapshotEntries: snapshot and compact after this many applied entries. */
  readonly snapshotEntries: number;
  /** snapshotLogBytes: snapshot and compact once the entries applied since the last snapshot carry this many bytes (0: no such bound). */
  readonly snapshotLogBytes: number;
  /** snapshotTrailingEntries: log entries kept behind a snapshot for slow followers. */
  readonly snapshotTrailingEntries: number;
  /** snapshotRetain: snapshots kept on disk. */
  readonly snapshotRetain: number;
  readonly snapshotChunkBytes: number;
  /** snapshotMaxTransfers: snapshot streams served at once. */
  readonly snapshotMaxTransfers: number;
  /** snapshotBandwidth: bytes/s cap of one incoming snapshot transfer, 0 for none. */
  readonly snapshotBandwidth: number;
  /** snapshotScrubIntervalSecs: re-hash every stored archive about this often (jittered ±25%), 0 for never. */
  readonly snapshotScrubIntervalSecs: number;
  /** snapshotScrubRate: the periodic scrub's read rate in bytes/s, 0 for no limit. */
  readonly snapshotScrubRate: number;
  /** snapshotRoots: absolute, real directories that snapshot_path may point into. */
  readonly snapshotRoots: readonly string[];
  /** taskQueueMax: tasks enqueued or running at once. */
  readonly taskQueueMax: number;
  /** tasksKept: finished tasks kept. */
  readonly tasksKept: number;
  /** snapshotDir: where snapshot tasks write <dbName>.snapshot. */
  readonly snapshotDir: string;
  /** dbName: the file name stem of task snapshots (Meilisearch's "data.ms"). */
  readonly dbName: string;
  /** scheduleSnapshotSecs: enqueue a snapshot task every this many seconds, 0 for never. */
  readonly scheduleSnapshotSecs: number;
  /** importSnapshot: an archive (a file, or an s3:// URL) restored into the cluster once this new node is up ('' for none). */
  readonly importSnapshot: string;
  /** join: a new data dir starts from the configuration a member named in --peers gives (src/node/join.ts), not from --peers. */
  readonly join: boolean;
  /** scheduleKeepLast / scheduleKeepDays / scheduleKeepWeeks: the retention policy of scheduled snapshots (0: rule off; all 0: keep everything). */
  readonly scheduleKeepLast: number;
  readonly scheduleKeepDays: number;
  readonly scheduleKeepWeeks: number;
  /** snapshotDestination: an s3://bucket/prefix scheduled snapshots are also uploaded to ('' for none). */
  readonly snapshotDestination: string;
  /** s3Endpoint / s3Region / s3PathStyle / s3CredentialsFile: how to reach the S3-compatible store ('' / false: the SDK's defaults and the AWS environment). */
  readonly s3Endpoint: string;
  readonly s3Region: string;
  readonly s3PathStyle: boolean;
  readonly s3CredentialsFile: string;
  /** s3CredentialsFileWarning: s3CredentialsFile may be read by other users (s3CredentialsFileExposure; serve logs it), '' when not. */
  readonly s3CredentialsFileWarning: string;
  /** s3TimeoutMs: the silence (no byte either way) after which one S3 request fails, also its connect timeout (0: S3_IDLE_TIMEOUT_MS_DEFAULT). */
  readonly s3TimeoutMs: number;
  /** s3DownloadTimeoutMs: the longest a whole S3 download (--import-snapshot s3://) may take (0: S3_DOWNLOAD_TIMEOUT_MS_DEFAULT). */
  readonly s3DownloadTimeoutMs: number;
  /** consistencyCheckIntervalSecs: the leader compares every member's state hash this often (0: never). */
  readonly consistencyCheckIntervalSecs: number;
  /** configFile: the file read, '' when none. */
  readonly configFile: string;
}

type Kind = 'string' | 'int' | 'bool';

/** OptionKey: the name of one option: a ServeConfig field, or a file that goes into one (peerCert -> peerTls). */
export type OptionKey =
  | keyof Omit<ServeConfig, 'configFile' | 'peerTls' | 'clientTls' | 'httpTls'>
  | 'peerCert'
  | 'peerKey'
  | 'peerCa'
  | 'peerCrl'
  | 'cert'
  | 'key'
  | 'clientCa'
  | 'clientCrl'
  | 'httpCert'
  | 'httpKey';

/** ServeOption describes one option of `serve`: its flag, env twin, config-file key and kind. */
export interface ServeOption {
  readonly key: OptionKey;
  /** flag without dashes, e.g. "data-dir". */
  readonly flag: string;
  readonly env: string;
  readonly kind: Kind;
  readonly valueName: string;
  readonly description: string;
  /** aloneValue: the value of a flag given without one (e.g. --schedule-snapshot alone means 86400). */
  readonly aloneValue?: number;
}

function option(key: ServeOption['key'], flag: string, kind: Kind, valueName: string, description: string): ServeOption {
  return { key, flag, env: envName(flag), kind, valueName, description };
}

/** SERVE_OPTIONS: every option of `serve` (the CLI builds its flags from this table). */
/**
 * SNAPSHOT_STORE_DIR: the node's own snapshot store, `<data-dir>/snapshots` (its archives, uploads and their temp
 * files). A snapshot root or snapshot dir should neither be it nor hold it nor lie in it: callers' exports would land
 * among the node's own files (the deployment specs check the shipped files).
 */
export const SNAPSHOT_STORE_DIR = 'snapshots';

export const SERVE_OPTIONS: readonly ServeOption[] = [
  option('id', 'id', 'string', 'id', 'this node\'s id (default n1)'),
  option('grpcAddress', 'grpc', 'string', 'host:port', 'client gRPC listen address: KV, Cluster, Snapshot, Task, health, reflection (default 127.0.0.1:7001)'),
  option('advertiseClient', 'advertise-client', 'string', 'host:port', 'the client address other members forward writes to (default: --grpc, a wildcard host replaced by this node\'s peer host)'),
  option('peerListen', 'peer-listen', 'string', 'host:port', 'peer gRPC listen address, Raft only (default: this node\'s address in --peers)'),
  option('httpAddress', 'http', 'string', 'host:port', 'HTTP gateway listen address (default 127.0.0.1:8108)'),
  option('peers', 'peers', 'string', 'id=host:port,...', 'initial membership with each member\'s PEER address, including this node (default: this node alone at --peer-listen, else 127.0.0.1:7101)'),
  option('peerCert', 'peer-cert', 'string', 'file', 'peer-plane certificate (PEM; its SAN URI urn:snapcoord:node:<id> names this node; see `snapcoord certs`)'),
  option('peerKey', 'peer-key', 'string', 'file', 'peer-plane private key (PEM)'),
  option('peerCa', 'peer-ca', 'string', 'file', 'the cluster CA (PEM): peers must present a certificate it signed'),
  option(
    'peerCrl',
    'peer-crl',
    'string',
    'file',
    "a CRL (PEM or DER, at most 8 MiB) signed by --peer-ca: peers whose certificate it revokes are refused, incoming and outgoing; revoke a removed member's certificate with `snapcoord certs revoke`. Read again when it changes (looked at every 5 s) and on SIGHUP; refused at start if it does not verify against the CA, that CA lacks cRLSign, or its thisUpdate is over 5 min ahead; an expired one is still used, with an error logged; an older one than the CRL in use (kept in the data dir as `peer-crl-kept.der`), or one un-revoking a serial, is not taken",
  ),
  option('cert', 'cert', 'string', 'file', 'client-plane TLS certificate (PEM)'),
  option('key', 'key', 'string', 'file', 'client-plane TLS private key (PEM)'),
  option('clientCa', 'client-ca', 'string', 'file', 'ask gRPC clients for a certificate signed by this CA (PEM; default: keys only)'),
  option(
    'clientCrl',
    'client-crl',
    'string',
    'file',
    "a CRL (PEM or DER, at most 8 MiB) signed by --client-ca: a client whose certificate it revokes is refused on the client gRPC port, every call UNAUTHENTICATED \"certificate revoked\"; revoke one with `snapcoord certs revoke --cert client-NAME.pem` or `openssl ca -revoke`. Read again as --peer-crl is (every 5 s and on SIGHUP), and then the open connections of clients it now revokes are closed; refused at start as --peer-crl is (not a CRL, not the CA's, thisUpdate over 5 min ahead, or revoking this node's own --cert); an expired one is still used, with an error logged; no rollback (kept as `client-crl-kept.der`)",
  ),
  option('httpCert', 'http-cert', 'string', 'file', 'HTTPS certificate of the gateway (PEM; default plain HTTP)'),
  option('httpKey', 'http-key', 'string', 'file', 'HTTPS private key of the gateway (PEM)'),
  option('insecurePlaintext', 'insecure-plaintext', 'bool', '', 'allow peer, client or HTTP listeners on non-loopback addresses without TLS (anyone on the network can then read and forge traffic)'),
  option('maxRequestBytes', 'max-request-bytes', 'int', 'bytes', `largest client gRPC message accepted (default ${CLIENT_REQUEST_BYTES_DEFAULT}, 1.5 MiB; snapshot uploads stream in smaller chunks)`),
  option('metricsOpen', 'metrics-open', 'bool', '', 'serve /metrics without an API key'),
  option('peerDial', 'peer-dial', 'string', 'id=host:port,...', 'dial these peers at these addresses instead of the ones they advertise (a proxy or NAT in between; default none)'),
  option('dataDir', 'data-dir', 'string', 'dir', 'data directory (default ./data/<id>)'),
  option('minFreeBytes', 'min-free-bytes', 'int', 'bytes', `free space kept in reserve on the data dir's file system: below it writes, membership changes, restores and snapshots are refused (reads still served); a snapshot_path export, snapshot task or scheduled snapshot's copy that would leave less free on its own file system is refused too; 0 to disable (default ${DEFAULT_MIN_FREE_BYTES}, 64 MiB)`),
  option('verifyImageRecords', 'verify-image-records', 'bool', '', "a follower taking the leader's state image of a restore reads every record of it and checks them against the restore entry's records digest before it commits it (~2.5-3 s of CPU per million 1 KiB records; default off: the image's files are checked against the SHA-256s the leader recorded, and the leader checked its own install against the digest)"),
  option(
    'clusterId',
    'cluster-id',
    'string',
    'name',
    'cluster id recorded in the data dir and carried by every peer call (default snapcoord). Clusters whose peer certificates one CA signs need ids of their own: two on one id take each other\'s peer calls and proofs. Choose it when the cluster is made: a data dir keeps the id it was made with',
  ),
  option('tickMs', 'tick-ms', 'int', 'ms', `Raft tick length (default ${DEFAULT_TIMINGS.tickMs})`),
  option('electionTimeoutTicks', 'election-timeout-ticks', 'int', 'n', `election timeout in ticks (default ${DEFAULT_TIMINGS.electionTimeoutTicks})`),
  option('heartbeatTicks', 'heartbeat-ticks', 'int', 'n', `heartbeat interval in ticks (default ${DEFAULT_TIMINGS.heartbeatIntervalTicks})`),
  option('logLevel', 'log-level', 'string', 'level', `log level: ${LOG_LEVELS.join(', ')} (default info)`),
  option('apiKey', 'api-key', 'string', 'key', 'admin API key of the gRPC API and the HTTP gateway (prefer --api-key-file: a flag shows in /proc/*/cmdline)'),
  option('apiKeyFile', 'api-key-file', 'string', 'file', 'read the admin API key from this file (first line)'),
  option('apiKeys', 'api-keys', 'string', 'json', 'extra keys (gRPC API and gateway), a JSON array [{"key":"...","actions":[...]}]; actions: kv.read, kv.write, snapshots.read, snapshots.write, cluster, admin (prefer --api-keys-file: a flag shows in /proc/*/cmdline)'),
  option('apiKeysFile', 'api-keys-file', 'string', 'file', "read --api-keys' JSON array from this file (at most 1 MiB; keeps the keys out of /proc/*/cmdline)"),
  option('insecureNoAuth', 'insecure-no-auth', 'bool', '', 'allow the gateway to run without an API key'),
  option('snapshotRoots', 'snapshot-root', 'string', 'dir[,dir...]', 'directories snapshot_path may point into (default ./data/snapshots and <OS temp dir>/snapcoord-snapshots, made 0700; never the shared temp dir itself unless given)'),
  option('taskQueueMax', 'task-queue-max', 'int', 'n', `tasks enqueued or running at once; more are refused (429 / RESOURCE_EXHAUSTED) (default ${TASKS_ENQUEUED_MAX_DEFAULT})`),
  option('tasksKept', 'tasks-kept', 'int', 'n', `finished tasks kept; older ones are trimmed (default ${TASKS_FINISHED_KEPT_DEFAULT})`),
  option('snapshotDir', 'snapshot-dir', 'string', 'dir', 'where snapshot tasks write <db-name>.snapshot (default ./data/snapshots)'),
  option('dbName', 'db-name', 'string', 'name', 'file name stem of task snapshots (default: the node id)'),
  { ...option('scheduleSnapshotSecs', 'schedule-snapshot', 'int', 'secs', 'enqueue a snapshot task every SECS seconds; 0 for never (default 0; the flag alone means 86400)'), aloneValue: 86_400 },
  option('join', 'join', 'bool', '', 'this node is being added to a running cluster (after `cluster add`): with a new data dir it asks the members --peers names for the cluster\'s configuration and starts from it (--peers need name only one member and this node)'),
  option('importSnapshot', 'import-snapshot', 'string', 'file-or-s3-url', 'restore this archive (a file, or s3://bucket/key: downloaded and checked against its stored SHA-256) into the cluster once this node (with a new data dir) is up'),
  option('scheduleKeepLast', 'schedule-keep-last', 'int', 'n', 'retention of scheduled snapshots: keep the N newest (0: rule off; with every schedule-keep-* rule off each run replaces <db-name>.snapshot)'),
  option('scheduleKeepDays', 'schedule-keep-days', 'int', 'days', 'retention of scheduled snapshots: keep all of the last D days (0: rule off)'),
  option('scheduleKeepWeeks', 'schedule-keep-weeks', 'int', 'weeks', 'retention of scheduled snapshots: keep one a day (its newest) for W weeks (0: rule off)'),
  option('snapshotDestination', 'snapshot-destination', 'string', 's3-url', 'also upload each scheduled snapshot to s3://bucket/prefix (streamed multipart, SHA-256 stored with the object; retention applies to the bucket too)'),
  option('s3Endpoint', 's3-endpoint', 'string', 'url', 'endpoint of an S3-compatible store (default AWS; also AWS_ENDPOINT_URL_S3)'),
  option('s3Region', 's3-region', 'string', 'region', 'S3 region (default AWS_REGION, else us-east-1)'),
  option('s3PathStyle', 's3-path-style', 'bool', '', 'address buckets as http://host/bucket (most S3-compatible servers need it)'),
  option('s3CredentialsFile', 's3-credentials-file', 'string', 'file', 'S3 access key file (JSON {accessKeyId, secretAccessKey}, AWS credentials or env lines); default the AWS environment variables, profile and roles'),
  option('s3TimeoutMs', 's3-timeout-ms', 'int', 'ms', `an S3 request (one part of an upload, a head, a download) silent this long fails, and is retried (5 requests, 3 upload attempts); also the connect timeout; ${S3_IDLE_TIMEOUT_MS_MIN}..${S3_IDLE_TIMEOUT_MS_MAX} (default ${S3_IDLE_TIMEOUT_MS_DEFAULT})`),
  option('s3DownloadTimeoutMs', 's3-download-timeout-ms', 'int', 'ms', `an S3 download (--import-snapshot s3://) not finished within this long fails, nothing kept (a store that stalls or trickles never holds the node for ever); ${S3_DOWNLOAD_TIMEOUT_MS_MIN}..${S3_DOWNLOAD_TIMEOUT_MS_MAX} (default ${S3_DOWNLOAD_TIMEOUT_MS_DEFAULT}, an hour)`),
  option('consistencyCheckIntervalSecs', 'consistency-check-interval', 'int', 'secs', "the leader compares every member's state hash at one applied index every SECS seconds; a divergence is logged and counted in snapcoord_consistency_checks_total{result=\"divergent\"} (default 0: never)"),
  option('snapshotEntries', 'snapshot-entries', 'int', 'n', `snapshot and compact the log after this many applied entries (default ${DEFAULT_SNAPSHOT_POLICY.snapshotEntries})`),
  option('snapshotLogBytes', 'snapshot-log-bytes', 'int', 'bytes', `snapshot and compact the log once the entries applied since the last snapshot carry this many bytes, however few they are: bounds the in-memory log for large values; 0 for no such bound (default ${DEFAULT_SNAPSHOT_POLICY.snapshotLogBytes}, 16 MiB)`),
  option('snapshotTrailingEntries', 'snapshot-trailing-entries', 'int', 'n', `log entries kept behind a snapshot for slow followers (default ${DEFAULT_SNAPSHOT_POLICY.trailingEntries})`),
  option('snapshotRetain', 'snapshot-retain', 'int', 'n', `snapshots kept on disk, at least 1 (default ${DEFAULT_SNAPSHOT_POLICY.retain})`),
  option('snapshotChunkBytes', 'snapshot-chunk-bytes', 'int', 'bytes', `chunk size of snapshot transfers (default ${DEFAULT_SNAPSHOT_POLICY.chunkBytes})`),
  option('snapshotMaxTransfers', 'snapshot-max-transfers', 'int', 'n', `snapshot streams served at once, at most half of them to one member (default ${DEFAULT_SNAPSHOT_POLICY.maxTransfers})`),
  option('snapshotBandwidth', 'snapshot-bandwidth', 'int', 'bytes/s', 'bandwidth cap of one incoming snapshot transfer, 0 for none (default 0)'),
  option(
    'snapshotScrubIntervalSecs',
    'snapshot-scrub-interval',
    'int',
    'secs',
    `re-hash every stored snapshot archive about every SECS seconds (each run's wait jittered by ±25%, so members do not scrub together) and quarantine any whose bytes no longer match their recorded hashes (a lost newest snapshot is rebuilt); 0 for never (the boot scrub still runs); ${SCRUB_INTERVAL_MS_MIN / 1000}..${SCRUB_INTERVAL_MS_MAX / 1000} (default ${SCRUB_INTERVAL_MS_DEFAULT / 1000}, a day)`,
  ),
  option('snapshotScrubRate', 'snapshot-scrub-rate', 'int', 'bytes/s', `read rate of the snapshot scrub (the boot scrub and each periodic run), one archive at a time, paused while this node writes or installs a snapshot; 0 for no limit, else at least ${SCRUB_BYTES_PER_SEC_MIN} (default ${SCRUB_BYTES_PER_SEC_DEFAULT}, 64 MiB/s)`),
];

/** CONFIG_ENV: the environment twin of --config. */
export const CONFIG_ENV = envName('config');

type RawValue = string | number | boolean;
type Raw = Partial<Record<ServeOption['key'], RawValue>>;

function configError(message: string): CliError {
  return new CliError(message, EXIT_CONFIG);
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** parseKind converts one option value from a flag, env var or file to its kind. */
function parseKind(o: ServeOption, value: unknown, source: string): RawValue {
  const where = `${source} ${source === 'flag' ? `--${o.flag}` : source === 'env' ? o.env : `"${o.key}"`}`;
  switch (o.kind) {
    case 'string':
      if (typeof value !== 'string') throw configError(`${where}: expected a string, got ${JSON.stringify(value)}`);
      return value;
    case 'int': {
      if (value === true && o.aloneValue !== undefined) return o.aloneValue;
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      if (typeof value === 'string' && /^\d{1,15}$/.test(value.trim())) return Number(value.trim());
      throw configError(`${where}: expected a whole number, got ${JSON.stringify(value)}`);
    }
    case 'bool': {
      if (typeof value === 'boolean') return value;
      const v = typeof value === 'string' ? value.trim().toLowerCase() : null;
      if (v !== null && ['1', 'true', 'yes', 'on'].includes(v)) return true;
      if (v !== null && ['0', 'false', 'no', 'off', ''].includes(v)) return false;
      throw configError(`${where}: expected true or false, got ${JSON.stringify(value)}`);
    }
  }
}

/** readConfigFile reads a JSON object of options; unknown keys are errors. */
export function readConfigFile(path: string, read: (p: string) => string = (p) => readFileSync(p, 'utf8')): Raw {
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw configError(`config file ${path}: cannot read: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw configError(`config file ${path}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw configError(`config file ${path}: expected a JSON object of options`);
  }
  const raw: Raw = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const o = SERVE_OPTIONS.find((x) => x.key === k || x.flag === k);
    if (o === undefined) {
      throw configError(`config file ${path}: unknown option "${k}" (known: ${SERVE_OPTIONS.map((x) => x.key).join(', ')})`);
    }
    if (o.key === 'apiKeys' && Array.isArray(v)) {
      // apiKeys is a JSON array in the file (a JSON string from a flag or the environment)
      raw.apiKeys = JSON.stringify(v);
      continue;
    }
    if (o.key === 'peers' && typeof v === 'object' && v !== null && !Array.isArray(v)) {
      // peers may also be an object {"n1": "host:port", ...}
      raw.peers = Object.entries(v as Record<string, unknown>)
        .map(([id, a]) => `${id}=${String(a)}`)
        .join(',');
      continue;
    }
    raw[o.key] = parseKind(o, v, `config file ${path}:`);
  }
  return raw;
}

/** parsePeers parses "id=host:port,..." into an ordered map; `what` names the option in errors. */
export function parsePeers(text: string, what = 'peers'): Record<string, string> {
  const peers: Record<string, string> = {};
  for (const part of text.split(',').map((s) => s.trim())) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw configError(`${what}: "${part}" is not id=host:port`);
    const id = part.slice(0, eq).trim();
    const address = part.slice(eq + 1).trim();
    if (!isNodeId(id)) throw configError(`${what}: "${id}" is not a valid node id (letters, digits, '_', '-', '.'; at most 64)`);
    if (parseHostPort(address) === null) throw configError(`${what}: ${id}: "${address}" is not host:port`);
    if (Object.hasOwn(peers, id)) throw configError(`${what}: ${id} is listed twice`);
    peers[id] = address;
  }
  return peers;
}

/**
 * resolveServeConfig merges flags (commander's camelCase values, undefined
 * when not given), the environment and the config file, then normalises and
 * validates. Errors: CliError (exit 2) naming the option and the problem.
 */
export function resolveServeConfig(
  flags: Readonly<Record<string, unknown>>,
  env: Readonly<Record<string, string | undefined>> = process.env,
  read?: (path: string) => string,
): ServeConfig {
  const flagConfig = flags['config'];
  const configFile = typeof flagConfig === 'string' ? flagConfig : (env[CONFIG_ENV] ?? '');
  const file = configFile !== '' ? readConfigFile(configFile, read) : {};
  const raw: Raw = {};
  for (const o of SERVE_OPTIONS) {
    const f = flags[camel(o.flag)];
    const e = env[o.env];
    if (f !== undefined) raw[o.key] = parseKind(o, f, 'flag');
    else if (e !== undefined) raw[o.key] = parseKind(o, e, 'env');
    else if (file[o.key] !== undefined) raw[o.key] = file[o.key] as RawValue;
  }
  return normalise(raw, configFile, read);
}

function isWildcard(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === '0.0.0.0' || h === '::' || h === '';
}

function sameHost(a: string, b: string): boolean {
  return a === b || isWildcard(a) || isWildcard(b);
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/**
 * readKeyFile reads an API key from the first line of `path` (with `read`
 * when given, else readKeyFileLine: at most 4 KiB, so a device such as
 * /dev/zero or a huge file is not read whole); errors name the file (never the key).
 */
function readKeyFile(path: string, read?: (p: string) => string): string {
  if (read === undefined) {
    try {
      return readKeyFileLine(path);
    } catch (err) {
      throw configError(`api-key-file ${path}: ${(err as Error).message}`);
    }
  }
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    throw configError(`api-key-file ${path}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const key = (text.split(/\r?\n/)[0] ?? '').trim();
  if (key === '') throw configError(`api-key-file ${path}: ${KEY_FILE_EMPTY}`);
  return key;
}

/** normalise fills in every default (the only place defaults live) and validates the result. */
export function normalise(raw: Raw, configFile = '', read?: (path: string) => string): ServeConfig {
  const str = (k: ServeOption['key']): string | undefined => (raw[k] === undefined ? undefined : String(raw[k]));
  const int = (k: ServeOption['key'], dflt: number): number => (raw[k] === undefined ? dflt : Number(raw[k]));

  const id = str('id') ?? 'n1';
  if (!isNodeId(id)) throw configError(`id: "${id}" is not a valid node id (letters, digits, '_', '-', '.'; at most 64)`);
  const peersText = str('peers');
  const peerListenGiven = str('peerListen');
  if (peersText === undefined && peerListenGiven !== undefined && parseHostPort(peerListenGiven) === null && parseHostPort(peerListenGiven, true) !== null) {
    throw configError(`peer-listen: port 0 needs --peers to name this node's reachable peer address (${id}=host:port)`);
  }
  const peers = peersText !== undefined ? parsePeers(peersText) : { [id]: peerListenGiven ?? '127.0.0.1:7101' };
  if (Object.keys(peers).length === 0) throw configError('peers: empty; give at least this node, e.g. --peers n1=127.0.0.1:7101');
  if (!Object.hasOwn(peers, id)) {
    throw configError(`id: ${id} is not in peers (${Object.keys(peers).join(', ')}); the initial membership must include this node`);
  }
  const peerListen = peerListenGiven ?? peers[id] ?? '127.0.0.1:7101';
  const grpcAddress = str('grpcAddress') ?? '127.0.0.1:7001';
  const peerDialText = str('peerDial') ?? '';
  const peerDial = peerDialText.trim() === '' ? {} : parsePeers(peerDialText, 'peer-dial');
  const grpcHp = parseHostPort(grpcAddress, true);
  if (grpcHp === null) throw configError(`grpc: "${grpcAddress}" is not host:port`);
  const peerHp = parseHostPort(peerListen, true);
  if (peerHp === null) throw configError(`peer-listen: "${peerListen}" is not host:port`);
  const selfPeer = parseHostPort(peers[id] ?? '');
  if (selfPeer === null) throw configError(`peers: ${id}: "${peers[id]}" is not host:port`);
  if (grpcHp.port !== 0 && grpcHp.port === peerHp.port && sameHost(grpcHp.host, peerHp.host)) {
    throw configError(`grpc and peer-listen are both ${grpcAddress}: the client and peer planes need separate listeners (e.g. --grpc 127.0.0.1:7001 --peer-listen 127.0.0.1:7101)`);
  }
  const advertiseGiven = str('advertiseClient');
  const advertiseClient = advertiseGiven ?? (isWildcard(grpcHp.host) ? `${formatHost(selfPeer.host)}:${grpcHp.port}` : grpcAddress);
  if (parseHostPort(advertiseClient, true) === null) throw configError(`advertise-client: "${advertiseClient}" is not host:port`);
  const httpAddress = str('httpAddress') ?? '127.0.0.1:8108';
  const httpHp = parseHostPort(httpAddress, true);
  if (httpHp === null) throw configError(`http: "${httpAddress}" is not host:port`);

  const file = (k: ServeOption['key']): string => {
    const v = str(k);
    if (v === undefined || v.trim() === '') return '';
    return resolve(v.trim());
  };
  const peerCert = file('peerCert');
  const peerKey = file('peerKey');
  const peerCa = file('peerCa');
  const peerGiven = [peerCert, peerKey, peerCa].filter((f) => f !== '').length;
  if (peerGiven !== 0 && peerGiven !== 3) throw configError('peer-cert, peer-key and peer-ca go together: give all three for mutual TLS between peers, or none');
  const peerCrl = file('peerCrl');
  if (peerCrl !== '' && peerGiven !== 3) throw configError('peer-crl needs peer-cert, peer-key and peer-ca: a CRL revokes certificates of the peer plane\'s mutual TLS');
  const peerTls = peerGiven === 3 ? { certFile: peerCert, keyFile: peerKey, caFile: peerCa, ...(peerCrl !== '' ? { crlFile: peerCrl } : {}) } : null;
  const cert = file('cert');
  const key = file('key');
  const clientCa = file('clientCa');
  if ((cert === '') !== (key === '')) throw configError('cert and key go together: give both for TLS on the client plane, or neither');
  if (clientCa !== '' && cert === '') throw configError('client-ca needs cert and key: client certificates are asked for over TLS');
  const clientCrl = file('clientCrl');
  if (clientCrl !== '' && clientCa === '') throw configError('client-crl needs client-ca (and cert and key): a CRL revokes client certificates, which only --client-ca asks for');
  const clientTls = cert !== '' ? { certFile: cert, keyFile: key, clientCaFile: clientCa, ...(clientCrl !== '' ? { crlFile: clientCrl } : {}) } : null;
  const httpCert = file('httpCert');
  const httpKey = file('httpKey');
  if ((httpCert === '') !== (httpKey === '')) throw configError('http-cert and http-key go together: give both for HTTPS on the gateway, or neither');
  const httpTls = httpCert !== '' ? { certFile: httpCert, keyFile: httpKey } : null;
  const insecurePlaintext = raw.insecurePlaintext === true;
  if (!insecurePlaintext) {
    const open: string[] = [];
    if (peerTls === null && !isLoopback(peerHp.host)) open.push(`peer-listen ${peerListen} (give --peer-cert, --peer-key, --peer-ca)`);
    if (clientTls === null && !isLoopback(grpcHp.host)) open.push(`grpc ${grpcAddress} (give --cert, --key)`);
    if (httpTls === null && !isLoopback(httpHp.host)) open.push(`http ${httpAddress} (give --http-cert, --http-key)`);
    if (open.length > 0) {
      throw configError(
        `refusing to listen without TLS on a non-loopback address: ${open.join('; ')}. Make certificates with \`snapcoord certs init\` and \`snapcoord certs issue ${id} --ip ...\`, or accept plaintext with --insecure-plaintext`,
      );
    }
  }
  const maxRequestBytes = int('maxRequestBytes', CLIENT_REQUEST_BYTES_DEFAULT);
  if (maxRequestBytes < 64 * 1024 || maxRequestBytes > 64 * 1024 * 1024) {
    throw configError(`max-request-bytes: ${maxRequestBytes} is out of range ${64 * 1024}..${64 * 1024 * 1024}`);
  }
  const metricsOpen = raw.metricsOpen === true;
  const verifyImageRecords = raw.verifyImageRecords === true;

  const dataDir = resolve(str('dataDir') ?? `./data/${id}`);
  const minFreeBytes = int('minFreeBytes', DEFAULT_MIN_FREE_BYTES);
  if (minFreeBytes < 0) throw configError(`min-free-bytes: ${minFreeBytes} must be 0 (no reserve) or more bytes`);
  const clusterIdGiven = str('clusterId');
  const clusterId = clusterIdGiven ?? 'snapcoord';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(clusterId)) {
    throw configError(`cluster-id: "${clusterId}" is not valid (letters, digits, '_', '-', '.'; at most 64)`);
  }
  const s3TimeoutText = str('s3TimeoutMs');
  let s3TimeoutMs = 0;
  if (s3TimeoutText !== undefined) {
    try {
      s3TimeoutMs = parseS3TimeoutMs(s3TimeoutText, 's3-timeout-ms');
    } catch (err) {
      throw err instanceof S3Error ? configError(err.message) : err;
    }
  }
  const s3DownloadTimeoutText = str('s3DownloadTimeoutMs');
  let s3DownloadTimeoutMs = 0;
  if (s3DownloadTimeoutText !== undefined) {
    try {
      s3DownloadTimeoutMs = parseS3DownloadTimeoutMs(s3DownloadTimeoutText, 's3-download-timeout-ms');
    } catch (err) {
      throw err instanceof S3Error ? configError(err.message) : err;
    }
  }
  const tickMs = int('tickMs', DEFAULT_TIMINGS.tickMs);
  if (tickMs < 1 || tickMs > 10_000) throw configError(`tick-ms: ${tickMs} is out of range 1..10000`);
  const electionTimeoutTicks = int('electionTimeoutTicks', DEFAULT_TIMINGS.electionTimeoutTicks);
  const heartbeatTicks = int('heartbeatTicks', DEFAULT_TIMINGS.heartbeatIntervalTicks);
  if (heartbeatTicks < 1) throw configError(`heartbeat-ticks: ${heartbeatTicks} must be at least 1`);
  if (electionTimeoutTicks <= heartbeatTicks) {
    throw configError(`election-timeout-ticks: ${electionTimeoutTicks} must be greater than heartbeat-ticks (${heartbeatTicks})`);
  }
  const logLevel = str('logLevel') ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw configError(`log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const snapshotEntries = int('snapshotEntries', DEFAULT_SNAPSHOT_POLICY.snapshotEntries);
  if (snapshotEntries < 1) throw configError(`snapshot-entries: ${snapshotEntries} must be at least 1`);
  const snapshotLogBytes = int('snapshotLogBytes', DEFAULT_SNAPSHOT_POLICY.snapshotLogBytes ?? 0);
  if (snapshotLogBytes < 0) throw configError(`snapshot-log-bytes: ${snapshotLogBytes} must be 0 (no bound) or more bytes`);
  const snapshotTrailingEntries = int('snapshotTrailingEntries', DEFAULT_SNAPSHOT_POLICY.trailingEntries);
  const snapshotRetain = int('snapshotRetain', DEFAULT_SNAPSHOT_POLICY.retain);
  if (snapshotRetain < 1 || snapshotRetain > 1000) throw configError(`snapshot-retain: ${snapshotRetain} is out of range 1..1000`);
  const snapshotChunkBytes = int('snapshotChunkBytes', DEFAULT_SNAPSHOT_POLICY.chunkBytes);
  if (snapshotChunkBytes < 4096 || snapshotChunkBytes > 4 << 20) {
    throw configError(`snapshot-chunk-bytes: ${snapshotChunkBytes} is out of range 4096..${4 << 20}`);
  }
  const snapshotMaxTransfers = int('snapshotMaxTransfers', DEFAULT_SNAPSHOT_POLICY.maxTransfers);
  if (snapshotMaxTransfers < 1) throw configError(`snapshot-max-transfers: ${snapshotMaxTransfers} must be at least 1`);
  const snapshotBandwidth = int('snapshotBandwidth', DEFAULT_SNAPSHOT_POLICY.bandwidthBytesPerSec);
  const snapshotScrubIntervalSecs = int('snapshotScrubIntervalSecs', SCRUB_INTERVAL_MS_DEFAULT / 1000);
  if (snapshotScrubIntervalSecs !== 0 && (snapshotScrubIntervalSecs * 1000 < SCRUB_INTERVAL_MS_MIN || snapshotScrubIntervalSecs * 1000 > SCRUB_INTERVAL_MS_MAX)) {
    throw configError(`snapshot-scrub-interval: ${snapshotScrubIntervalSecs} is out of range ${SCRUB_INTERVAL_MS_MIN / 1000}..${SCRUB_INTERVAL_MS_MAX / 1000} seconds (0 for never)`);
  }
  const snapshotScrubRate = int('snapshotScrubRate', SCRUB_BYTES_PER_SEC_DEFAULT);
  if (snapshotScrubRate !== 0 && snapshotScrubRate < SCRUB_BYTES_PER_SEC_MIN) {
    throw configError(`snapshot-scrub-rate: ${snapshotScrubRate} bytes/s is below the minimum of ${SCRUB_BYTES_PER_SEC_MIN} (0 for no limit)`);
  }
  const rootsText = str('snapshotRoots');
  const snapshotRoots = (rootsText !== undefined ? rootsText.split(',') : defaultSnapshotRoots())
    .map((r) => r.trim())
    .filter((r) => r !== '')
    .map((r) => resolve(r));
  if (snapshotRoots.length === 0) throw configError('snapshot-root: give at least one directory');
  const taskQueueMax = int('taskQueueMax', TASKS_ENQUEUED_MAX_DEFAULT);
  if (taskQueueMax < 1 || taskQueueMax > 1_000_000) throw configError(`task-queue-max: ${taskQueueMax} is out of range 1..1000000`);
  const tasksKept = int('tasksKept', TASKS_FINISHED_KEPT_DEFAULT);
  if (tasksKept < 1 || tasksKept > 10_000_000) throw configError(`tasks-kept: ${tasksKept} is out of range 1..10000000`);
  const snapshotDir = resolve(str('snapshotDir') ?? './data/snapshots');
  const dbName = str('dbName') ?? id;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(dbName)) throw configError(`db-name: "${dbName}" is not a valid file name stem`);
  const scheduleSnapshotSecs = int('scheduleSnapshotSecs', 0);
  if (scheduleSnapshotSecs < 0) throw configError(`schedule-snapshot: ${scheduleSnapshotSecs} must be 0 or more seconds`);
  const keep = (k: 'scheduleKeepLast' | 'scheduleKeepDays' | 'scheduleKeepWeeks', flag: string): number => {
    const v = int(k, 0);
    if (v < 0 || v > 10_000) throw configError(`${flag}: ${v} is out of range 0..10000`);
    return v;
  };
  const scheduleKeepLast = keep('scheduleKeepLast', 'schedule-keep-last');
  const scheduleKeepDays = keep('scheduleKeepDays', 'schedule-keep-days');
  const scheduleKeepWeeks = keep('scheduleKeepWeeks', 'schedule-keep-weeks');
  const snapshotDestination = str('snapshotDestination') ?? '';
  if (snapshotDestination !== '' && !/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/.test(snapshotDestination)) {
    throw configError(`snapshot-destination: ${JSON.stringify(snapshotDestination.slice(0, 200))} is not an s3://bucket/prefix URL`);
  }
  const consistencyCheckIntervalSecs = int('consistencyCheckIntervalSecs', 0);
  if (consistencyCheckIntervalSecs < 0) throw configError(`consistency-check-interval: ${consistencyCheckIntervalSecs} must be 0 or more seconds`);
  const importText = str('importSnapshot') ?? '';
  if (importText !== '' && raw.join === true) throw configError('join and import-snapshot: a node joining a running cluster takes its state from it; import an archive on a new cluster, or restore it with `snapshot restore`');
  const apiKeyFile = file('apiKeyFile');
  if (apiKeyFile !== '' && str('apiKey') !== undefined) throw configError('api-key and api-key-file: give one of them');
  const apiKey = apiKeyFile !== '' ? readKeyFile(apiKeyFile, read) : (str('apiKey') ?? '');
  // As for the extra keys: a key of a few characters is found by trying them all (never named here: it is a secret).
  if (apiKey !== '' && apiKey.length < API_KEY_CHARS_MIN) {
    throw configError(
      `${apiKeyFile !== '' ? `api-key-file ${apiKeyFile}` : 'api-key'}: the admin API key has ${apiKey.length} characters; an API key has at least ${API_KEY_CHARS_MIN} (a random one: \`openssl rand -hex 24\`)`,
    );
  }
  const apiKeysFile = file('apiKeysFile');
  if (apiKeysFile !== '' && str('apiKeys') !== undefined) throw configError('api-keys and api-keys-file: give one of them');
  let apiKeysText = str('apiKeys') ?? '';
  if (apiKeysFile !== '') {
    try {
      apiKeysText = read !== undefined ? read(apiKeysFile) : readApiKeysFile(apiKeysFile);
    } catch (err) {
      throw configError(`api-keys-file ${apiKeysFile}: ${(err as Error).message}`);
    }
    if (apiKeysText.trim() === '') throw configError(`api-keys-file ${apiKeysFile}: empty (a JSON array like [{"key":"...","actions":["kv.read"]}] is expected)`);
  }
  let apiKeys: ApiKeySpec[];
  try {
    apiKeys = parseApiKeys(apiKeysText);
  } catch (err) {
    throw configError(`${apiKeysFile !== '' ? `api-keys-file ${apiKeysFile}` : 'api-keys'}: ${(err as Error).message}`);
  }
  const insecureNoAuth = raw.insecureNoAuth === true;
  if (apiKey === '' && apiKeys.length === 0 && !insecureNoAuth) {
    throw configError(
      `the gRPC API (${grpcAddress}) and the HTTP gateway (${httpAddress}) need an API key: give --api-key-file, --api-key or SNAPCOORD_API_KEY (or --api-keys), or run them open with --insecure-no-auth`,
    );
  }
  return {
    id,
    grpcAddress,
    advertiseClient,
    peerListen,
    peerTls,
    clientTls,
    httpTls,
    insecurePlaintext,
    maxRequestBytes,
    metricsOpen,
    verifyImageRecords,
    apiKeyFile,
    apiKeyFileWarning: apiKeyFile !== '' ? (keyFileExposure(apiKeyFile) ?? '') : '',
    apiKeysFile,
    apiKeysFileWarning: apiKeysFile !== '' ? (keyFileExposure(apiKeysFile, 'API keys file') ?? '') : '',
    tlsKeyFileWarnings: tlsKeyFileWarnings([
      ['--peer-key', peerTls?.keyFile ?? ''],
      ['--key', clientTls?.keyFile ?? ''],
      ['--http-key', httpTls?.keyFile ?? ''],
    ]),
    httpAddress,
    peers,
    peerDial,
    dataDir,
    minFreeBytes,
    clusterId,
    clusterIdWarning:
      peerTls !== null && clusterIdGiven === undefined
        ? 'no --cluster-id: this node uses the default, snapcoord. Another cluster whose peer certificates the same CA (--peer-ca) signed, on the default id too, takes this cluster\'s peer calls and membership proofs as its own members\' (n1 is n1 in both): give each cluster an id of its own when it is made (a data dir keeps the id it was made with: say --cluster-id snapcoord to keep this one, and this warning goes)'
        : '',
    tickMs,
    electionTimeoutTicks,
    heartbeatTicks,
    logLevel: logLevel as LogLevel,
    apiKey,
    apiKeys,
    insecureNoAuth,
    join: raw.join === true,
    snapshotEntries,
    snapshotLogBytes,
    snapshotTrailingEntries,
    snapshotRetain,
    snapshotChunkBytes,
    snapshotMaxTransfers,
    snapshotBandwidth,
    snapshotScrubIntervalSecs,
    snapshotScrubRate,
    snapshotRoots,
    taskQueueMax,
    tasksKept,
    snapshotDir,
    dbName,
    scheduleSnapshotSecs,
    importSnapshot: importText === '' ? '' : importText.startsWith('s3://') ? importText : resolve(importText),
    scheduleKeepLast,
    scheduleKeepDays,
    scheduleKeepWeeks,
    snapshotDestination,
    s3Endpoint: str('s3Endpoint') ?? '',
    s3Region: str('s3Region') ?? '',
    s3PathStyle: raw.s3PathStyle === true,
    s3CredentialsFile: str('s3CredentialsFile') !== undefined && str('s3CredentialsFile') !== '' ? resolve(str('s3CredentialsFile') ?? '') : '',
    s3CredentialsFileWarning: str('s3CredentialsFile') !== undefined && str('s3CredentialsFile') !== '' ? (s3CredentialsFileExposure(resolve(str('s3CredentialsFile') ?? '')) ?? '') : '',
    s3TimeoutMs,
    s3DownloadTimeoutMs,
    consistencyCheckIntervalSecs,
    configFile,
  };
}

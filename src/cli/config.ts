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
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { isNodeId, parseHostPort } from '../api/address.js';
import { parseApiKeys, type ApiKeySpec } from '../gateway/auth.js';
import { DEFAULT_MIN_FREE_BYTES } from '../node/disk-guard.js';
import { DEFAULT_TIMINGS } from '../node/node.js';
import { DEFAULT_SNAPSHOT_POLICY } from '../node/snapshots.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** ServeConfig is the validated, complete configuration of one node. */
export interface ServeConfig {
  readonly id: string;
  /** grpcAddress: where the gRPC server (Raft + API) listens. */
  readonly grpcAddress: string;
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
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatTicks: number;
  readonly logLevel: LogLevel;
  /** apiKey: the gateway's admin key, '' when none. */
  readonly apiKey: string;
  /** apiKeys: extra gateway keys and the actions each may do (config file `apiKeys`, env SNAPCOORD_API_KEYS as JSON). */
  readonly apiKeys: readonly ApiKeySpec[];
  /** insecureNoAuth: the gateway asks for no key. Without it, serve refuses to start with no key at all. */
  readonly insecureNoAuth: boolean;
  /** snapshotEntries: snapshot and compact after this many applied entries. */
  readonly snapshotEntries: number;
  /** snapshotTrailingEntries: log entries kept behind a snapshot for slow followers. */
  readonly snapshotTrailingEntries: number;
  /** snapshotRetain: snapshots kept on disk. */
  readonly snapshotRetain: number;
  readonly snapshotChunkBytes: number;
  /** snapshotMaxTransfers: snapshot streams served at once. */
  readonly snapshotMaxTransfers: number;
  /** snapshotBandwidth: bytes/s cap of one incoming snapshot transfer, 0 for none. */
  readonly snapshotBandwidth: number;
  /** snapshotRoots: absolute, real directories that snapshot_path may point into. */
  readonly snapshotRoots: readonly string[];
  /** snapshotDir: where snapshot tasks write <dbName>.snapshot. */
  readonly snapshotDir: string;
  /** dbName: the file name stem of task snapshots (Meilisearch's "data.ms"). */
  readonly dbName: string;
  /** scheduleSnapshotSecs: enqueue a snapshot task every this many seconds, 0 for never. */
  readonly scheduleSnapshotSecs: number;
  /** importSnapshot: an archive restored into the cluster once this new node is up ('' for none). */
  readonly importSnapshot: string;
  /** configFile: the file read, '' when none. */
  readonly configFile: string;
}

type Kind = 'string' | 'int' | 'bool';

/** ServeOption describes one option of `serve`: its flag, env twin, config-file key and kind. */
export interface ServeOption {
  readonly key: keyof Omit<ServeConfig, 'configFile'>;
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

/** envName: the environment twin of a flag ("data-dir" -> "SNAPCOORD_DATA_DIR"). */
export function envName(flag: string): string {
  return `SNAPCOORD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** SERVE_OPTIONS: every option of `serve` (the CLI builds its flags from this table). */
export const SERVE_OPTIONS: readonly ServeOption[] = [
  option('id', 'id', 'string', 'id', 'this node\'s id (default n1)'),
  option('grpcAddress', 'grpc', 'string', 'host:port', 'gRPC listen address, Raft and API (default: this node\'s address in --peers, else 127.0.0.1:7001)'),
  option('httpAddress', 'http', 'string', 'host:port', 'HTTP gateway listen address (default 127.0.0.1:8108)'),
  option('peers', 'peers', 'string', 'id=host:port,...', 'initial membership, including this node (default: this node alone)'),
  option('peerDial', 'peer-dial', 'string', 'id=host:port,...', 'dial these peers at these addresses instead of the ones they advertise (a proxy or NAT in between; default none)'),
  option('dataDir', 'data-dir', 'string', 'dir', 'data directory (default ./data/<id>)'),
  option('minFreeBytes', 'min-free-bytes', 'int', 'bytes', `free space kept in reserve on the data dir's file system: below it writes, membership changes, restores and snapshots are refused (reads still served); 0 to disable (default ${DEFAULT_MIN_FREE_BYTES}, 64 MiB)`),
  option('clusterId', 'cluster-id', 'string', 'name', 'cluster id recorded in the data dir (default snapcoord)'),
  option('tickMs', 'tick-ms', 'int', 'ms', `Raft tick length (default ${DEFAULT_TIMINGS.tickMs})`),
  option('electionTimeoutTicks', 'election-timeout-ticks', 'int', 'n', `election timeout in ticks (default ${DEFAULT_TIMINGS.electionTimeoutTicks})`),
  option('heartbeatTicks', 'heartbeat-ticks', 'int', 'n', `heartbeat interval in ticks (default ${DEFAULT_TIMINGS.heartbeatIntervalTicks})`),
  option('logLevel', 'log-level', 'string', 'level', `log level: ${LOG_LEVELS.join(', ')} (default info)`),
  option('apiKey', 'api-key', 'string', 'key', 'admin API key of the HTTP gateway'),
  option('apiKeys', 'api-keys', 'string', 'json', 'extra gateway keys, a JSON array [{"key":"...","actions":["snapshots.read","snapshots.write","cluster","admin"]}]'),
  option('insecureNoAuth', 'insecure-no-auth', 'bool', '', 'allow the gateway to run without an API key'),
  option('snapshotRoots', 'snapshot-root', 'string', 'dir[,dir...]', 'directories snapshot_path may point into (default ./data/snapshots and the OS temp dir)'),
  option('snapshotDir', 'snapshot-dir', 'string', 'dir', 'where snapshot tasks write <db-name>.snapshot (default ./data/snapshots)'),
  option('dbName', 'db-name', 'string', 'name', 'file name stem of task snapshots (default: the node id)'),
  { ...option('scheduleSnapshotSecs', 'schedule-snapshot', 'int', 'secs', 'enqueue a snapshot task every SECS seconds; 0 for never (default 0; the flag alone means 86400)'), aloneValue: 86_400 },
  option('importSnapshot', 'import-snapshot', 'string', 'file', 'restore this archive into the cluster once this node (with a new data dir) is up'),
  option('snapshotEntries', 'snapshot-entries', 'int', 'n', `snapshot and compact the log after this many applied entries (default ${DEFAULT_SNAPSHOT_POLICY.snapshotEntries})`),
  option('snapshotTrailingEntries', 'snapshot-trailing-entries', 'int', 'n', `log entries kept behind a snapshot for slow followers (default ${DEFAULT_SNAPSHOT_POLICY.trailingEntries})`),
  option('snapshotRetain', 'snapshot-retain', 'int', 'n', `snapshots kept on disk, at least 1 (default ${DEFAULT_SNAPSHOT_POLICY.retain})`),
  option('snapshotChunkBytes', 'snapshot-chunk-bytes', 'int', 'bytes', `chunk size of snapshot transfers (default ${DEFAULT_SNAPSHOT_POLICY.chunkBytes})`),
  option('snapshotMaxTransfers', 'snapshot-max-transfers', 'int', 'n', `snapshot streams served at once (default ${DEFAULT_SNAPSHOT_POLICY.maxTransfers})`),
  option('snapshotBandwidth', 'snapshot-bandwidth', 'int', 'bytes/s', 'bandwidth cap of one incoming snapshot transfer, 0 for none (default 0)'),
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
  return normalise(raw, configFile);
}

/** normalise fills in every default (the only place defaults live) and validates the result. */
export function normalise(raw: Raw, configFile = ''): ServeConfig {
  const str = (k: ServeOption['key']): string | undefined => (raw[k] === undefined ? undefined : String(raw[k]));
  const int = (k: ServeOption['key'], dflt: number): number => (raw[k] === undefined ? dflt : Number(raw[k]));

  const id = str('id') ?? 'n1';
  if (!isNodeId(id)) throw configError(`id: "${id}" is not a valid node id (letters, digits, '_', '-', '.'; at most 64)`);
  const peersText = str('peers');
  const grpcGiven = str('grpcAddress');
  if (peersText === undefined && grpcGiven !== undefined && parseHostPort(grpcGiven)?.port === undefined && parseHostPort(grpcGiven, true) !== null) {
    throw configError(`grpc: port 0 needs --peers to name this node's reachable address (${id}=host:port)`);
  }
  const peers = peersText !== undefined ? parsePeers(peersText) : { [id]: grpcGiven ?? '127.0.0.1:7001' };
  if (Object.keys(peers).length === 0) throw configError('peers: empty; give at least this node, e.g. --peers n1=127.0.0.1:7001');
  if (!Object.hasOwn(peers, id)) {
    throw configError(`id: ${id} is not in peers (${Object.keys(peers).join(', ')}); the initial membership must include this node`);
  }
  const grpcAddress = grpcGiven ?? peers[id] ?? '127.0.0.1:7001';
  const peerDialText = str('peerDial') ?? '';
  const peerDial = peerDialText.trim() === '' ? {} : parsePeers(peerDialText, 'peer-dial');
  if (parseHostPort(grpcAddress, true) === null) throw configError(`grpc: "${grpcAddress}" is not host:port`);
  if (parseHostPort(peers[id] ?? '') === null) throw configError(`peers: ${id}: "${peers[id]}" is not host:port`);
  const httpAddress = str('httpAddress') ?? '127.0.0.1:8108';
  if (parseHostPort(httpAddress, true) === null) throw configError(`http: "${httpAddress}" is not host:port`);

  const dataDir = resolve(str('dataDir') ?? `./data/${id}`);
  const minFreeBytes = int('minFreeBytes', DEFAULT_MIN_FREE_BYTES);
  if (minFreeBytes < 0) throw configError(`min-free-bytes: ${minFreeBytes} must be 0 (no reserve) or more bytes`);
  const clusterId = str('clusterId') ?? 'snapcoord';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(clusterId)) {
    throw configError(`cluster-id: "${clusterId}" is not valid (letters, digits, '_', '-', '.'; at most 64)`);
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
  const rootsText = str('snapshotRoots');
  const snapshotRoots = (rootsText !== undefined ? rootsText.split(',') : ['./data/snapshots', tmpdir()])
    .map((r) => r.trim())
    .filter((r) => r !== '')
    .map((r) => resolve(r));
  if (snapshotRoots.length === 0) throw configError('snapshot-root: give at least one directory');
  const snapshotDir = resolve(str('snapshotDir') ?? './data/snapshots');
  const dbName = str('dbName') ?? id;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(dbName)) throw configError(`db-name: "${dbName}" is not a valid file name stem`);
  const scheduleSnapshotSecs = int('scheduleSnapshotSecs', 0);
  if (scheduleSnapshotSecs < 0) throw configError(`schedule-snapshot: ${scheduleSnapshotSecs} must be 0 or more seconds`);
  const apiKey = str('apiKey') ?? '';
  let apiKeys: ApiKeySpec[];
  try {
    apiKeys = parseApiKeys(str('apiKeys') ?? '');
  } catch (err) {
    throw configError(`api-keys: ${(err as Error).message}`);
  }
  const insecureNoAuth = raw.insecureNoAuth === true;
  if (apiKey === '' && apiKeys.length === 0 && !insecureNoAuth) {
    throw configError(
      `the HTTP gateway (${httpAddress}) needs an API key: give --api-key or SNAPCOORD_API_KEY (or --api-keys), or run it open with --insecure-no-auth`,
    );
  }
  return {
    id,
    grpcAddress,
    httpAddress,
    peers,
    peerDial,
    dataDir,
    minFreeBytes,
    clusterId,
    tickMs,
    electionTimeoutTicks,
    heartbeatTicks,
    logLevel: logLevel as LogLevel,
    apiKey,
    apiKeys,
    insecureNoAuth,
    snapshotEntries,
    snapshotTrailingEntries,
    snapshotRetain,
    snapshotChunkBytes,
    snapshotMaxTransfers,
    snapshotBandwidth,
    snapshotRoots,
    snapshotDir,
    dbName,
    scheduleSnapshotSecs,
    importSnapshot: str('importSnapshot') !== undefined && str('importSnapshot') !== '' ? resolve(str('importSnapshot') ?? '') : '',
    configFile,
  };
}

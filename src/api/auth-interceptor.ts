/**
 * The client plane's one auth check: a grpc-js server interceptor that asks
 * every call for `authorization: Bearer <key>` metadata and decides it with
 * the same keys and actions as the HTTP gateway (src/auth/keys.ts).
 *
 * RPC_ACTIONS is the one table of what each client RPC needs; a method it
 * does not name needs `admin` (default deny), so a new RPC is closed until
 * someone decides otherwise. Answers:
 *  - no key (no `authorization`, another scheme, or an empty token):
 *    UNAUTHENTICATED "missing API key: send authorization: Bearer <key>";
 *  - a key no one configured (or one over API_KEY_BYTES_MAX, refused without
 *    hashing): UNAUTHENTICATED "invalid API key";
 *  - a known key without the action: PERMISSION_DENIED naming the action.
 * The decision is taken on the request's metadata, before the handler runs
 * and before any request message is read: a refused call never reaches its
 * handler, and a refused stream (RestoreSnapshot) has none of its body read.
 * Keys are looked up in constant time (KeyRing.lookup) and never logged; a
 * refusal is logged (method, peer, code) at most once a minute per client host.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';

import { bearerToken } from '../auth/bearer.js';
import { allows, KeyRing, type Action, type ApiKeySpec, type AuthVerdict } from '../auth/keys.js';
import type { Logger } from '../node/logger.js';
import { MetadataGateCall, type GateRefusal, type MetadataGate } from '../transport/metadata-gate.js';

/** RpcNeed: what a method needs: an action; `open` (no key at all); `anyKey` (any valid key, whatever its actions). */
export type RpcNeed = Action | 'open' | 'anyKey';

/**
 * RPC_ACTIONS: what each client RPC needs, by method path
 * (`/package.Service/Method`; `/package.Service/*` covers every method of a
 * service). Anything not named here needs `admin`. The reasons are in
 * RPC_ACTION_REASONS and the README table comes from rpcActionsMarkdown().
 */
export const RPC_ACTIONS = {
  // KVService: the data, key by key. Its own pair of actions, so an application key need not be an operator key.
  '/snapcoord.v1.KVService/Get': 'kv.read',
  '/snapcoord.v1.KVService/Range': 'kv.read',
  '/snapcoord.v1.KVService/Put': 'kv.write',
  '/snapcoord.v1.KVService/Delete': 'kv.write',
  '/snapcoord.v1.KVService/Txn': 'kv.write',
  // ClusterService
  '/snapcoord.v1.ClusterService/Status': 'anyKey',
  '/snapcoord.v1.ClusterService/HashState': 'snapshots.read',
  '/snapcoord.v1.ClusterService/CheckConsistency': 'snapshots.read',
  '/snapcoord.v1.ClusterService/AddMember': 'cluster',
  '/snapcoord.v1.ClusterService/RemoveMember': 'cluster',
  '/snapcoord.v1.ClusterService/TransferLeadership': 'cluster',
  '/snapcoord.v1.ClusterService/Vote': 'cluster',
  // SnapshotService: the whole state going out or coming in is a write action (Nomad and Consul ask a management token).
  '/snapcoord.v1.SnapshotService/ListSnapshots': 'snapshots.read',
  '/snapcoord.v1.SnapshotService/InspectSnapshot': 'snapshots.read',
  '/snapcoord.v1.SnapshotService/CreateSnapshot': 'snapshots.write',
  '/snapcoord.v1.SnapshotService/GetSnapshot': 'snapshots.write',
  '/snapcoord.v1.SnapshotService/RestoreSnapshot': 'snapshots.write',
  // TaskService
  '/snapcoord.v1.TaskService/GetTask': 'snapshots.read',
  '/snapcoord.v1.TaskService/ListTasks': 'snapshots.read',
  '/snapcoord.v1.TaskService/CancelTasks': 'snapshots.write',
  // Standard services
  '/grpc.health.v1.Health/Check': 'open',
  '/grpc.health.v1.Health/Watch': 'anyKey',
  '/grpc.health.v1.Health/List': 'anyKey',
  '/grpc.reflection.v1.ServerReflection/*': 'anyKey',
  '/grpc.reflection.v1alpha.ServerReflection/*': 'anyKey',
} as const satisfies Record<string, RpcNeed>;

/** RpcPath: a method path (or service wildcard) RPC_ACTIONS names. */
export type RpcPath = keyof typeof RPC_ACTIONS;

/** RPC_ACTION_REASONS: why each entry of RPC_ACTIONS needs what it needs (the README's "why" column). */
export const RPC_ACTION_REASONS: Readonly<Record<RpcPath, string>> = {
  '/snapcoord.v1.KVService/Get': 'reads one key: application data',
  '/snapcoord.v1.KVService/Range': 'reads many keys: application data',
  '/snapcoord.v1.KVService/Put': 'changes the replicated data',
  '/snapcoord.v1.KVService/Delete': 'changes the replicated data',
  '/snapcoord.v1.KVService/Txn': 'compare-and-swap: changes the replicated data',
  '/snapcoord.v1.ClusterService/Status':
    'every client needs it to find the leader and the members; it shows roles, terms and indexes, no data',
  '/snapcoord.v1.ClusterService/HashState':
    'a digest of the whole state and its index: metadata like the digests ListSnapshots shows, not the data; it reads the whole state, so not for any key',
  '/snapcoord.v1.ClusterService/CheckConsistency':
    "every member's HashState compared (made with the caller's own key on each member): digests and indexes, not the data",
  '/snapcoord.v1.ClusterService/AddMember': 'changes who holds the data and who votes (etcd: root only)',
  '/snapcoord.v1.ClusterService/RemoveMember': 'changes who holds the data and who votes; can break quorum',
  '/snapcoord.v1.ClusterService/TransferLeadership': 'moves leadership: an operator action',
  '/snapcoord.v1.ClusterService/Vote': 'makes this node the leader (Typesense /operations/vote): an operator action',
  '/snapcoord.v1.SnapshotService/ListSnapshots': 'snapshot ids, sizes and digests: metadata, not the data',
  '/snapcoord.v1.SnapshotService/InspectSnapshot': 'verifies a kept snapshot and describes it: metadata, not the data',
  '/snapcoord.v1.SnapshotService/CreateSnapshot':
    'writes a copy of the whole state to the server\'s disk (a directory under a snapshot root, or a task)',
  '/snapcoord.v1.SnapshotService/GetSnapshot':
    'the whole state leaves the node: never snapshots.read alone (Nomad and Consul ask a management token)',
  '/snapcoord.v1.SnapshotService/RestoreSnapshot': 'replaces the whole state on every node',
  '/snapcoord.v1.TaskService/GetTask': 'task status and progress: metadata (the server paths and S3 URLs a task names only to admin keys)',
  '/snapcoord.v1.TaskService/ListTasks': 'task status and progress: metadata (the server paths and S3 URLs a task names only to admin keys)',
  '/snapcoord.v1.TaskService/CancelTasks': 'stops snapshot work others asked for',
  '/grpc.health.v1.Health/Check': 'load balancers and orchestrators probe without credentials; it tells only SERVING or not',
  '/grpc.health.v1.Health/Watch': 'a stream that never ends: an open one would let anyone hold connections and streams forever',
  '/grpc.health.v1.Health/List': 'lists every service\'s status: the API\'s shape, like reflection',
  '/grpc.reflection.v1.ServerReflection/*': 'the API\'s shape helps an attacker map it: only for callers with a key',
  '/grpc.reflection.v1alpha.ServerReflection/*': 'the same as v1 (older grpcurl asks v1alpha)',
};

/** DEFAULT_NEED: what a method RPC_ACTIONS does not name needs (default deny). */
export const DEFAULT_NEED: Action = 'admin';

/**
 * rpcNeed answers what calling `path` needs: its RPC_ACTIONS entry, else its
 * service's `/package.Service/*` entry, else DEFAULT_NEED.
 */
export function rpcNeed(path: string): RpcNeed {
  const table: Readonly<Record<string, RpcNeed>> = RPC_ACTIONS;
  const exact = table[path];
  if (exact !== undefined) return exact;
  const slash = path.lastIndexOf('/');
  if (slash > 0) {
    const wildcard = table[`${path.slice(0, slash)}/*`];
    if (wildcard !== undefined) return wildcard;
  }
  return DEFAULT_NEED;
}

/** describeNeed: a table cell for a need: `admin`, `snapshots.read (or admin)`, `any valid key`, `none (open)`. */
function describeNeed(need: RpcNeed): string {
  if (need === 'open') return 'none (open)';
  if (need === 'anyKey') return 'any valid key';
  if (need === 'admin') return '`admin`';
  return `\`${need}\` (or \`admin\`)`;
}

/**
 * rpcActionsMarkdown renders RPC_ACTIONS as a markdown table (method, action,
 * why) for the README, in the table's order, with a closing row for the
 * default (anything else: admin).
 */
export function rpcActionsMarkdown(): string {
  const rows = (Object.keys(RPC_ACTIONS) as RpcPath[]).map(
    (path) => `| \`${path}\` | ${describeNeed(RPC_ACTIONS[path])} | ${RPC_ACTION_REASONS[path].replaceAll('|', '\\|')} |`,
  );
  return [
    '| method | action | why |',
    '|---|---|---|',
    ...rows,
    `| any other method | ${describeNeed(DEFAULT_NEED)} | default deny: a new RPC is closed until this table names it |`,
  ].join('\n');
}

/** MISSING_KEY_MESSAGE / INVALID_KEY_MESSAGE: the UNAUTHENTICATED details. */
export const MISSING_KEY_MESSAGE = 'missing API key: send authorization: Bearer <key>';
export const INVALID_KEY_MESSAGE = 'invalid API key';

/** REFUSAL_LOG_INTERVAL_MS: at most one refusal log line per client host in this interval. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;

/** REFUSAL_LOG_HOSTS_MAX: the refusal log's memory of client hosts (forgotten all at once when full). */
const REFUSAL_LOG_HOSTS_MAX = 1024;

/** ClientAuthOptions: the client plane's keys, the same configuration as the gateway's. */
export interface ClientAuthOptions {
  /** adminKey: '' for none. */
  readonly adminKey: string;
  readonly keys?: readonly ApiKeySpec[] | undefined;
  /** insecureNoAuth: every call is allowed (a warning is logged once). */
  readonly insecureNoAuth?: boolean | undefined;
  readonly logger?: Pick<Logger, 'warn'> | undefined;
}

/** AuthRefusal: a refused call's gRPC status. */
export type AuthRefusal = GateRefusal;

/**
 * authorize decides a call to `path` carrying `metadata` against `ring`:
 * null when it may go on, else the refusal. Only the first `authorization`
 * value counts, and only with the Bearer scheme (like the gateway).
 */
export function authorize(ring: KeyRing, path: string, metadata: grpc.Metadata): AuthRefusal | null {
  const need = rpcNeed(path);
  if (need === 'open') return null;
  return decide(ring, path, need, metadata);
}

/** decide is authorize() once `path`'s need is known (and not `open`). */
function decide(ring: KeyRing, path: string, need: Exclude<RpcNeed, 'open'>, metadata: grpc.Metadata): AuthRefusal | null {
  const first = metadata.get('authorization')[0];
  const token = typeof first === 'string' ? bearerToken(first) : null;
  // The key's actions, looked up once (as checkKey would): kept for the handler (callKeyMay).
  const actions = token === null || ring.insecureNoAuth ? null : ring.lookup(token);
  let verdict: AuthVerdict;
  if (actions !== null) verdict = allows(actions, need) ? 'ok' : 'forbidden';
  else if (token === null) verdict = ring.check([], need);
  else verdict = ring.insecureNoAuth ? 'ok' : 'invalid';
  switch (verdict) {
    case 'ok':
      if (token !== null) checkedOwners.set(metadata, keyOwnerName(token));
      if (actions !== null) checkedActions.set(metadata, actions);
      return null;
    case 'missing':
      return MISSING_KEY_REFUSAL;
    case 'invalid':
      return INVALID_KEY_REFUSAL;
    case 'forbidden':
      if (token !== null) refusedOwners.set(metadata, keyOwnerName(token));
      return {
        code: grpc.status.PERMISSION_DENIED,
        details: `this API key may not call ${path}: it needs the "${need}" action (or "admin")`,
      };
  }
}

/**
 * checkedOwners: the owner (apiKeyOwner) of each call whose key the auth gate
 * checked and let through (decide), by the call's metadata object, which
 * grpc-js hands on to every later interceptor.
 */
const checkedOwners = new WeakMap<grpc.Metadata, string>();

/**
 * checkedActions: the actions of each call's key the auth gate checked and let
 * through (decide), by the call's metadata object (callKeyMay).
 */
const checkedActions = new WeakMap<grpc.Metadata, ReadonlySet<Action>>();

/**
 * callKeyMay tells whether the key of a call the auth gate let through may do
 * `action` (it holds it, or admin): true or false; null when no key was
 * checked for the call (no auth gate: insecureNoAuth, a server without the
 * interceptor), where every caller may do everything anyway. A handler asks
 * it to answer less to a key with fewer rights (TaskService: the server's
 * paths and S3 URLs go to admin keys only).
 */
export function callKeyMay(metadata: grpc.Metadata, action: Action): boolean | null {
  const actions = checkedActions.get(metadata);
  return actions === undefined ? null : allows(actions, action);
}

/**
 * refusedOwners: the owner of each call the auth gate refused although its key
 * is valid (the key lacks the method's action: PERMISSION_DENIED), by the
 * call's metadata object (refusedKeyOwner).
 */
const refusedOwners = new WeakMap<grpc.Metadata, string>();

/** keyOwnerName: `key:` and the first 16 bytes of the key's SHA-256 in hex (the key itself is never kept). */
function keyOwnerName(token: string): string {
  return `key:${createHash('sha256').update(token).digest('hex').slice(0, 32)}`;
}

/**
 * apiKeyOwner names the API key of a call whose key the auth gate (this
 * file's interceptor, put before the others) checked and let through, for
 * ConnectionLimiter.prove, ReadGate and CallGate: `key:` and the first 16
 * bytes of the key's SHA-256 in hex (the key itself is never kept). Null for
 * any other call: none carried, a call to an open method (Health/Check), a
 * server run with insecureNoAuth; those count against their remote host.
 * Before, it named whatever Bearer value a call carried, checked or not: a
 * caller with no key sent each open call (or, with insecureNoAuth, any call)
 * with a made-up value and was a new caller each time, past every
 * per-caller cap.
 */
export function apiKeyOwner(metadata: grpc.Metadata): string | null {
  return checkedOwners.get(metadata) ?? null;
}

/**
 * refusedKeyOwner names the API key of a call the auth gate refused only for
 * the action (the key is valid: PERMISSION_DENIED), as apiKeyOwner would
 * have; null for any other call. The client plane proves such a call's
 * connection (ConnectionLimiter.prove, refusedOwnerInterceptor) while the
 * call stays refused: a valid key costs its host's budget nothing, whatever
 * it asks for. Before, a client whose key lacked an action was charged like
 * a caller with no key, and its retries locked its host out (with every
 * honest client behind the same NAT).
 */
export function refusedKeyOwner(metadata: grpc.Metadata): string | null {
  return refusedOwners.get(metadata) ?? null;
}

const MISSING_KEY_REFUSAL: AuthRefusal = Object.freeze({ code: grpc.status.UNAUTHENTICATED, details: MISSING_KEY_MESSAGE });
const INVALID_KEY_REFUSAL: AuthRefusal = Object.freeze({ code: grpc.status.UNAUTHENTICATED, details: INVALID_KEY_MESSAGE });

/**
 * clientAuthInterceptor is the client plane's auth interceptor (pass it in
 * the grpc.Server options' `interceptors`). Every call is decided by
 * authorize() when its metadata arrives; a refused call is answered with its
 * status at once (trailers only), its handler never runs and none of its
 * request messages is read. With insecureNoAuth every call passes.
 * Errors: Error when no key is configured and insecureNoAuth is not set (such
 * a server would refuse every call), or for an invalid key entry (KeyRing).
 */
export function clientAuthInterceptor(opts: ClientAuthOptions): grpc.ServerInterceptor {
  const ring = new KeyRing({ adminKey: opts.adminKey, keys: opts.keys ?? [], insecureNoAuth: opts.insecureNoAuth === true });
  const log = opts.logger;
  if (ring.insecureNoAuth) {
    log?.warn({}, 'client gRPC API: --insecure-no-auth: every call is allowed without an API key');
  } else if (!ring.hasKeys) {
    throw new Error('client gRPC API: no API key configured: give --api-key (or --api-keys), or --insecure-no-auth');
  }
  const lastLogMs = new Map<string, number>();
  const logRefusal = (path: string, peer: string, refusal: AuthRefusal): void => {
    if (log === undefined) return;
    const host = peer.replace(/:\d+$/, '');
    // The monotonic clock: on the wall clock a step back (NTP, a resumed VM) silenced a host's refusals for the
    // step's length (an hour), and a step forward let a line through at once.
    const now = performance.now();
    const last = lastLogMs.get(host);
    if (last !== undefined && now - last < REFUSAL_LOG_INTERVAL_MS) return;
    if (lastLogMs.size >= REFUSAL_LOG_HOSTS_MAX) lastLogMs.clear();
    lastLogMs.set(host, now);
    // Never the key, nor the metadata that carries it.
    log.warn({ method: path, peer, code: grpc.status[refusal.code], details: refusal.details }, 'client call refused (logged once a minute per host)');
  };

  // What each method path needs, decided once per path (grpc-js calls interceptors only for registered methods),
  // and its gate: shared by every call of the path, so a call costs one object and no closures.
  const gates = new Map<string, MetadataGate | 'open'>();
  const gateOf = (path: string): MetadataGate | 'open' => {
    let gate = gates.get(path);
    if (gate === undefined) {
      const need = rpcNeed(path);
      gate =
        need === 'open'
          ? 'open'
          : {
              decide: (metadata) => decide(ring, path, need, metadata),
              refused: (refusal, call) => logRefusal(path, call.getPeer(), refusal),
            };
      if (gates.size < NEEDS_CACHED_MAX) gates.set(path, gate);
    }
    return gate;
  };

  return (method, inner) => {
    const gate = ring.insecureNoAuth ? 'open' : gateOf(method.path);
    // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
    if (gate === 'open') return inner as grpc.ServerInterceptingCall;
    return new MetadataGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall;
  };
}

/** NEEDS_CACHED_MAX: the method paths whose gate the interceptor remembers (more are made each call). */
const NEEDS_CACHED_MAX = 256;

/**
 * Typesense-style routes (cluster operations, health, debug):
 *
 * - POST /operations/snapshot?snapshot_path=DIR -> SnapshotService.CreateSnapshot{directory}
 *   201 {"success":true} (with "warnings":[...] when the node's DirectorySnapshot has any); 400 without snapshot_path or for a path the node refuses;
 *   409 while another snapshot runs (FAILED_PRECONDITION / ALREADY_EXISTS).
 * - POST /operations/vote -> ClusterService.Vote: 200 {"success":true|false}.
 * - GET /health (open) -> ClusterService.Status: 200 {"ok":true,"status":"available"}
 *   when the node knows a leader, else 503 {"ok":false,"status":"unavailable"}.
 * - GET /debug -> ClusterService.Status: {"version","state"} with Typesense's
 *   (braft's) state numbers: 1 leader, 3 candidate (pre-candidates too: they
 *   are campaigning and know no leader), 4 follower, 6 uninitialized (role
 *   unspecified).
 */
import { isAbsolute, relative, resolve } from 'node:path';
import { AUTHORIZATION_METADATA_KEY } from '../client/authorization.js';
import { Role } from '../gen/snapcoord/v1/cluster.js';
import type { RouteContext, RouteSpec } from './route-spec.js';
import { sendGrpcError, sendJson, sendTypesenseError } from './styles.js';

/** CREATE_SNAPSHOT_DEADLINE_MS: how long a directory snapshot may take. */
export const CREATE_SNAPSHOT_DEADLINE_MS = 60 * 60_000;
/** VOTE_DEADLINE_MS: a vote waits for the leadership transfer (the node allows 5 s). */
export const VOTE_DEADLINE_MS = 15_000;
/** STATUS_DEADLINE_MS: /health and /debug answer quickly or not at all. */
export const STATUS_DEADLINE_MS = 3_000;

/** TYPESENSE_STATES: ClusterService roles as Typesense's /debug `state` numbers (braft's node states). */
export const TYPESENSE_STATES: Readonly<Record<Role, number>> = {
  [Role.ROLE_LEADER]: 1,
  [Role.ROLE_CANDIDATE]: 3,
  [Role.ROLE_PRE_CANDIDATE]: 3,
  [Role.ROLE_FOLLOWER]: 4,
  [Role.ROLE_UNSPECIFIED]: 6,
  [Role.UNRECOGNIZED]: 6,
};

/** WARNINGS_MAX: the most warnings of one directory snapshot passed on in its answer (the node gives at most one today). */
export const WARNINGS_MAX = 16;

/** MISSING_SNAPSHOT_PATH: Typesense's own message. */
export const MISSING_SNAPSHOT_PATH = 'Parameter `snapshot_path` is required.';

/**
 * outsideRoots explains why `path` may not be a snapshot target given
 * `roots` (lexically: absolute, strictly inside a root), or null when it may.
 */
export function outsideRoots(path: string, roots: readonly string[]): string | null {
  if (!isAbsolute(path)) return `snapshot_path must be an absolute path: ${path}`;
  const p = resolve(path);
  for (const root of roots) {
    const rel = relative(resolve(root), p);
    if (rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)) return null;
  }
  return `snapshot_path ${path} is outside the allowed snapshot roots (${roots.join(', ')})`;
}

function queryString(q: unknown, name: string): string | undefined {
  const v = (q as Record<string, unknown> | undefined)?.[name];
  const s = Array.isArray(v) ? v[0] : v;
  return typeof s === 'string' ? s : undefined;
}

export function typesenseRoutes(ctx: RouteContext): RouteSpec[] {
  /** health: the Status calls running for /health, by the key they carry (the requests now waiting share them). */
  const health = new Map<string, Promise<boolean>>();
  const { cluster, snapshots } = ctx.clients;
  return [
    {
      method: 'POST',
      url: '/operations/snapshot',
      style: 'typesense',
      action: 'snapshots.write',
      handler: async (req, reply) => {
        const path = queryString(req.query, 'snapshot_path');
        if (path === undefined || path.trim() === '') return sendTypesenseError(reply, 400, MISSING_SNAPSHOT_PATH);
        if (ctx.snapshotRoots !== null) {
          const why = outsideRoots(path, ctx.snapshotRoots);
          if (why !== null) return sendTypesenseError(reply, 400, why);
        }
        let warnings: string[];
        try {
          const res = await snapshots.createSnapshot({ directory: path }, { deadlineMs: CREATE_SNAPSHOT_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          warnings = res.directorySnapshot?.warnings ?? [];
        } catch (err) {
          return sendGrpcError(reply, 'typesense', err);
        }
        // The export is in place; what needs an operator beside it (DirectorySnapshot.warnings: an earlier export
        // moved aside that could not be removed) goes with the answer, as a field Typesense's clients ignore.
        return sendJson(reply, 201, warnings.length > 0 ? { success: true, warnings: warnings.slice(0, WARNINGS_MAX) } : { success: true });
      },
    },
    {
      method: 'POST',
      url: '/operations/vote',
      style: 'typesense',
      action: 'cluster',
      handler: async (req, reply) => {
        try {
          const res = await cluster.vote({ deadlineMs: VOTE_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          return sendJson(reply, 200, { success: res.success });
        } catch (err) {
          return sendGrpcError(reply, 'typesense', err);
        }
      },
    },
    {
      method: 'GET',
      url: '/health',
      style: 'typesense',
      action: null,
      handler: async (req, reply) => {
        // Open to anyone, so one Status call serves every /health that arrives while it runs with the same key
        // (the gateway's own, or a caller's that passed: a configured one, so few): a flood of them costs the node
        // one call at a time, not one each, and one caller's key never answers for another's request.
        const metadata = ctx.callMetadata(req);
        const key = String(metadata.get(AUTHORIZATION_METADATA_KEY)[0] ?? '');
        let shared = health.get(key);
        if (shared === undefined) {
          shared = cluster.status({ deadlineMs: STATUS_DEADLINE_MS, metadata }).then(
            (st) => st.leaderId !== '',
            (err: unknown) => {
              reply.log.debug({ err }, 'health: status failed');
              return false;
            },
          );
          health.set(key, shared);
          void shared.finally(() => health.delete(key));
        }
        const ok = await shared;
        return sendJson(reply, ok ? 200 : 503, ok ? { ok: true, status: 'available' } : { ok: false, status: 'unavailable' });
      },
    },
    {
      method: 'GET',
      url: '/debug',
      style: 'typesense',
      action: 'cluster',
      handler: async (req, reply) => {
        try {
          const st = await cluster.status({ deadlineMs: STATUS_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          return sendJson(reply, 200, { version: ctx.version, state: TYPESENSE_STATES[st.role] ?? 6 });
        } catch (err) {
          return sendGrpcError(reply, 'typesense', err);
        }
      },
    },
  ];
}

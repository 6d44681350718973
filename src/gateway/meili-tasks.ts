/**
 * Meilisearch's task API shapes: task JSON from the gRPC Task, and task
 * filters (GET /tasks, POST /tasks/cancel) from the query string, with
 * Meilisearch's error codes for bad parameters.
 */
import type { ListTasksRequest, Task, TaskFilter } from '../gen/snapcoord/v1/snapshot.js';
import { emptyTaskFilter } from '../client/task-client.js';
import { isDiskFullCode, MEILI_NO_SPACE_CODE, meiliError, type MeiliError } from './styles.js';

/** TASK_STATUSES: Meilisearch's task statuses. */
export const TASK_STATUSES = ['enqueued', 'processing', 'succeeded', 'failed', 'canceled'] as const;

/** TASK_TYPES: Meilisearch's task types (snapcoord runs snapshotCreation and taskCancelation; the others never match). */
export const TASK_TYPES = [
  'documentAdditionOrUpdate',
  'documentEdition',
  'documentDeletion',
  'settingsUpdate',
  'indexCreation',
  'indexDeletion',
  'indexUpdate',
  'indexSwap',
  'indexCompaction',
  'taskCancelation',
  'taskDeletion',
  'dumpCreation',
  'snapshotCreation',
  'export',
  'upgradeDatabase',
  'networkTopologyChange',
] as const;

/** TaskJson: one task as Meilisearch answers it. */
export interface TaskJson {
  readonly uid: number;
  readonly batchUid: number | null;
  readonly indexUid: string | null;
  readonly status: string;
  readonly type: string;
  readonly canceledBy: number | null;
  readonly details: Record<string, unknown> | null;
  readonly error: { message: string; code: string; type: string; link: string } | null;
  readonly duration: string | null;
  readonly enqueuedAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
}

/** SummarizedTaskJson: the 202 answer of an enqueuing call. */
export interface SummarizedTaskJson {
  readonly taskUid: number;
  readonly indexUid: string | null;
  readonly status: string;
  readonly type: string;
  readonly enqueuedAt: string;
}

const num = (v: bigint): number => Number(v);

/**
 * meiliTaskError: a failed task's error as Meilisearch shows it, from the
 * node's code: a full disk is no_space_left_on_device (type system, its own
 * link); any other failure keeps its code (snapshot_creation_failed,
 * internal) with type internal and the link of `internal`.
 */
export function meiliTaskError(code: string, message: string): MeiliError {
  if (isDiskFullCode(code)) return meiliError(MEILI_NO_SPACE_CODE, message, 'system');
  return { message, code, type: 'internal', link: meiliError('internal', message).link };
}
const orNull = (s: string): string | null => (s === '' ? null : s);

/**
 * taskJson converts a gRPC Task: unset optionals and empty strings become
 * null; `details` holds Meilisearch's {matchedTasks, canceledTasks,
 * originalFilter} for a taskCancelation and snapcoord's {path, bytesDone,
 * bytesTotal, digest, index} for a snapshotCreation.
 */
export function taskJson(t: Task): TaskJson {
  let details: Record<string, unknown> | null = null;
  const d = t.details;
  if (d !== undefined) {
    details =
      t.type === 'taskCancelation'
        ? { matchedTasks: num(d.matchedTasks), canceledTasks: num(d.canceledTasks), originalFilter: d.originalFilter }
        : {
            path: orNull(d.path),
            bytesDone: num(d.bytesDone),
            bytesTotal: num(d.bytesTotal),
            digest: orNull(d.digest),
            index: num(d.index),
            // A scheduled snapshot (the snapshot agent) also says its phase, destination and retention.
            ...((d.phase ?? '') !== '' ? { phase: d.phase, destination: orNull(d.destination ?? ''), removed: num(d.removed ?? 0n), kept: num(d.kept ?? 0n) } : {}),
          };
  }
  const e = t.error;
  return {
    uid: num(t.uid),
    batchUid: t.batchUid === undefined ? null : num(t.batchUid),
    indexUid: t.indexUid ?? null,
    status: t.status,
    type: t.type,
    canceledBy: t.canceledBy === undefined ? null : num(t.canceledBy),
    details,
    error: e !== undefined && e.message !== '' ? meiliTaskError(e.code, e.message) : null,
    duration: orNull(t.duration),
    enqueuedAt: t.enqueuedAt,
    startedAt: orNull(t.startedAt),
    finishedAt: orNull(t.finishedAt),
  };
}

/**
 * summarizedTaskJson is the `{taskUid, indexUid, status, type, enqueuedAt}`
 * answer (202) of an enqueuing call. Its status is always "enqueued", as in
 * Meilisearch: it describes the task as it was enqueued, even when the node
 * has already started (or finished) it by the time it answers; GET
 * /tasks/:uid tells the current status.
 */
export function summarizedTaskJson(t: Task): SummarizedTaskJson {
  return { taskUid: num(t.uid), indexUid: t.indexUid ?? null, status: 'enqueued', type: t.type, enqueuedAt: t.enqueuedAt };
}

/** TaskQueryError: a bad query parameter, with Meilisearch's error body (400). */
export class TaskQueryError extends Error {
  override readonly name = 'TaskQueryError';
  readonly body: MeiliError;
  constructor(code: string, message: string) {
    super(message);
    this.body = meiliError(code, message);
  }
}

type Query = Readonly<Record<string, unknown>>;

const FILTER_PARAMS = [
  'uids',
  'batchUids',
  'indexUids',
  'statuses',
  'types',
  'canceledBy',
  'beforeEnqueuedAt',
  'afterEnqueuedAt',
  'beforeStartedAt',
  'afterStartedAt',
  'beforeFinishedAt',
  'afterFinishedAt',
] as const;
const LIST_PARAMS = ['limit', 'from', 'reverse', ...FILTER_PARAMS] as const;
/** Query parameters every route ignores (an API key in the query string, Typesense style). */
const IGNORED_PARAMS = new Set(['x-typesense-api-key']);

/** TASK_FILTER_PARAMS: the filters POST /tasks/cancel takes (at least one is required). */
export const TASK_FILTER_PARAMS: readonly string[] = FILTER_PARAMS;
/** TASK_LIST_PARAMS: the parameters GET /tasks takes. */
export const TASK_LIST_PARAMS: readonly string[] = LIST_PARAMS;

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const paramCode = (p: string): string => `invalid_task_${snake(p)}`;
const list = (xs: readonly string[]): string => xs.map((x) => `\`${x}\``).join(', ');

/** text reads one query parameter as a string (repeated parameters are joined with commas, as lists). */
function text(q: Query, name: string): string | undefined {
  const v = q[name];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.map(String).join(',');
  return String(v);
}

function items(q: Query, name: string): string[] | undefined {
  const v = text(q, name);
  if (v === undefined) return undefined;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** uint parses a non-negative integer ("could not parse `x` as a positive integer" otherwise). */
function uint(name: string, code: string, s: string): bigint {
  if (!/^\d{1,19}$/.test(s) || BigInt(s) > 0xffff_ffff_ffff_ffffn) {
    throw new TaskQueryError(code, `Invalid value in parameter \`${name}\`: could not parse \`${s}\` as a positive integer`);
  }
  return BigInt(s);
}

function uintList(q: Query, name: string): bigint[] {
  const xs = items(q, name);
  if (xs === undefined || xs.includes('*')) return [];
  return xs.map((s) => uint(name, paramCode(name), s));
}

function enumList(q: Query, name: string, allowed: readonly string[], what: string): string[] {
  const xs = items(q, name);
  if (xs === undefined || xs.includes('*')) return [];
  for (const s of xs) {
    if (!allowed.includes(s)) {
      throw new TaskQueryError(
        paramCode(name),
        `Invalid value in parameter \`${name}\`: \`${s}\` is not a valid task ${what}. Available ${what === 'status' ? 'statuses' : 'types'} are ${list(allowed)}.`,
      );
    }
  }
  return [...new Set(xs)];
}

/** date parses YYYY-MM-DD or an RFC 3339 date-time into an ISO 8601 UTC string. */
function date(q: Query, name: string): string {
  const s = text(q, name);
  if (s === undefined) return '';
  const ok = /^\d{4}-\d{2}-\d{2}$/.test(s) || /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(s);
  const ms = ok ? Date.parse(s) : NaN;
  if (Number.isNaN(ms)) {
    throw new TaskQueryError(
      paramCode(name),
      `Invalid value in parameter \`${name}\`: \`${s}\` is an invalid date-time. It should follow the YYYY-MM-DD or RFC 3339 date-time format.`,
    );
  }
  return new Date(ms).toISOString();
}

function checkKnown(q: Query, known: readonly string[]): void {
  for (const k of Object.keys(q)) {
    if (!known.includes(k) && !IGNORED_PARAMS.has(k)) {
      throw new TaskQueryError('bad_request', `Unknown parameter \`${k}\`: expected one of ${list(known)}`);
    }
  }
}

/**
 * taskFilterOf parses Meilisearch's filter parameters (comma-separated lists;
 * `*` in a list matches everything). `indexUids` accepts only `*`:
 * snapcoord has no indexes. Errors: TaskQueryError (invalid_task_<param>).
 */
export function taskFilterOf(q: Query): TaskFilter {
  const indexUids = items(q, 'indexUids');
  if (indexUids !== undefined && !(indexUids.length === 1 && indexUids[0] === '*')) {
    throw new TaskQueryError('invalid_task_index_uids', 'Invalid value in parameter `indexUids`: snapcoord has no indexes; only `*` is accepted.');
  }
  return {
    ...emptyTaskFilter(),
    uids: uintList(q, 'uids'),
    batchUids: uintList(q, 'batchUids'),
    statuses: enumList(q, 'statuses', TASK_STATUSES, 'status'),
    types: enumList(q, 'types', TASK_TYPES, 'type'),
    canceledBy: uintList(q, 'canceledBy'),
    beforeEnqueuedAt: date(q, 'beforeEnqueuedAt'),
    afterEnqueuedAt: date(q, 'afterEnqueuedAt'),
    beforeStartedAt: date(q, 'beforeStartedAt'),
    afterStartedAt: date(q, 'afterStartedAt'),
    beforeFinishedAt: date(q, 'beforeFinishedAt'),
    afterFinishedAt: date(q, 'afterFinishedAt'),
  };
}

/** listTasksRequestOf parses GET /tasks's query: filters plus limit (default 20), from and reverse. */
export function listTasksRequestOf(q: Query): ListTasksRequest {
  checkKnown(q, LIST_PARAMS);
  const filter = taskFilterOf(q);
  const limitText = text(q, 'limit');
  const limit = limitText === undefined ? 20 : Number(uint('limit', 'invalid_task_limit', limitText));
  if (limit > 0xffff_ffff) throw new TaskQueryError('invalid_task_limit', `Invalid value in parameter \`limit\`: \`${limitText}\` is too large`);
  const fromText = text(q, 'from');
  const reverseText = text(q, 'reverse');
  if (reverseText !== undefined && reverseText !== 'true' && reverseText !== 'false') {
    throw new TaskQueryError(
      'invalid_task_reverse',
      `Invalid value in parameter \`reverse\`: could not parse \`${reverseText}\` as a boolean, expected either \`true\` or \`false\``,
    );
  }
  const req: ListTasksRequest = { filter, limit, reverse: reverseText === 'true' };
  if (fromText !== undefined) req.from = uint('from', 'invalid_task_from', fromText);
  return req;
}

/** cancelFilterOf parses POST /tasks/cancel's query: at least one filter (missing_task_filters otherwise). */
export function cancelFilterOf(q: Query): TaskFilter {
  checkKnown(q, FILTER_PARAMS);
  if (!FILTER_PARAMS.some((p) => q[p] !== undefined)) {
    throw new TaskQueryError(
      'missing_task_filters',
      `Query parameters to filter the tasks to cancel are missing. Available query parameters are: ${list(FILTER_PARAMS)}.`,
    );
  }
  return taskFilterOf(q);
}

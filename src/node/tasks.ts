import { readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

import { fsyncDir, writeFileDurable } from '../snapshot/file-sink.js';
import { NO_SPACE_ERROR_CODE, isNoSpace } from './disk-guard.js';
import type { Logger } from './node.js';

/** TaskStatus follows Meilisearch: enqueued → processing → succeeded | failed | canceled. */
export type TaskStatus = 'enqueued' | 'processing' | 'succeeded' | 'failed' | 'canceled';
export type TaskType = 'snapshotCreation' | 'taskCancelation';

export interface TaskDetails {
  path?: string;
  bytesDone?: number;
  bytesTotal?: number;
  digest?: string;
  index?: number;
  matchedTasks?: number;
  canceledTasks?: number;
  originalFilter?: string;
}

export interface TaskError {
  readonly message: string;
  readonly code: string;
  readonly type: string;
  readonly link: string;
}

/** Task is one unit of work with Meilisearch's fields (dates ISO 8601 UTC, null when unset). */
export interface Task {
  readonly uid: number;
  batchUid: number | null;
  status: TaskStatus;
  readonly type: TaskType;
  canceledBy: number | null;
  details: TaskDetails;
  error: TaskError | null;
  readonly enqueuedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** TaskFilter: Meilisearch's filters; empty or absent lists match everything. */
export interface TaskFilter {
  readonly uids?: readonly number[];
  readonly statuses?: readonly string[];
  readonly types?: readonly string[];
  readonly canceledBy?: readonly number[];
  readonly batchUids?: readonly number[];
  readonly beforeEnqueuedAt?: string;
  readonly afterEnqueuedAt?: string;
  readonly beforeStartedAt?: string;
  readonly afterStartedAt?: string;
  readonly beforeFinishedAt?: string;
  readonly afterFinishedAt?: string;
}

export interface TaskPage {
  readonly results: Task[];
  readonly total: number;
  readonly limit: number;
  readonly from: number | null;
  readonly next: number | null;
}

/** TaskRunner does one task's work; it reports progress by mutating details and returns the final details. */
export type TaskRunner = (task: Readonly<Task>, progress: (d: TaskDetails) => void) => Promise<TaskDetails>;

export const TASKS_KEPT_MAX = 1000;
export const TASK_LIST_LIMIT_MAX = 1000;
const STATUSES: readonly string[] = ['enqueued', 'processing', 'succeeded', 'failed', 'canceled'];
const TYPES: readonly string[] = ['snapshotCreation', 'taskCancelation'];

/** TaskQueueError: a bad filter or an unknown task; `code` is Meilisearch's error code. */
export class TaskQueueError extends Error {
  override readonly name = 'TaskQueueError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** durationIso: ISO 8601 duration of ms ("PT0.412S"). */
export function durationIso(ms: number): string {
  return `PT${(Math.max(0, ms) / 1000).toFixed(3).replace(/\.?0+$/, '')}S`;
}

/**
 * TaskQueue keeps a node's tasks in one JSON file, rewritten atomically (temp
 * file, fsync, rename, fsync of the directory) on every change, so tasks
 * survive restarts; a task that was processing when the node stopped runs
 * again. One task runs at a time; snapshot tasks go before any other queued
 * task. The newest TASKS_KEPT_MAX tasks are kept.
 */
export class TaskQueue {
  private tasks: Task[] = [];
  private nextUid = 0;
  private running = false;
  private closed = false;
  private saving: Promise<void> = Promise.resolve();
  private idleWaiters: (() => void)[] = [];

  private constructor(
    private readonly file: string,
    private readonly runners: Partial<Record<TaskType, TaskRunner>>,
    private readonly log: Logger,
    private readonly now: () => Date,
  ) {}

  static async open(file: string, runners: Partial<Record<TaskType, TaskRunner>>, log: Logger, now: () => Date = () => new Date()): Promise<TaskQueue> {
    const q = new TaskQueue(file, runners, log, now);
    let text: string | null = null;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read tasks file ${file}: ${(err as Error).message}`, { cause: err });
    }
    if (text !== null) {
      let parsed: { nextUid?: unknown; tasks?: unknown };
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch (err) {
        throw new Error(`tasks file ${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      if (!Array.isArray(parsed.tasks) || typeof parsed.nextUid !== 'number') throw new Error(`tasks file ${file} is malformed`);
      q.tasks = parsed.tasks as Task[];
      q.nextUid = parsed.nextUid;
      for (const t of q.tasks) {
        if (t.status === 'processing') {
          t.status = 'enqueued';
          t.startedAt = null;
        }
      }
    }
    q.kick();
    return q;
  }

  /** enqueue adds a task; it is durable when the returned promise resolves. */
  async enqueue(type: TaskType, details: TaskDetails = {}): Promise<Task> {
    if (this.closed) throw new TaskQueueError('internal', 'the task queue is closed');
    const task: Task = {
      uid: this.nextUid++,
      batchUid: null,
      status: 'enqueued',
      type,
      canceledBy: null,
      details,
      error: null,
      enqueuedAt: this.now().toISOString(),
      startedAt: null,
      finishedAt: null,
    };
    this.tasks.push(task);
    this.trim();
    await this.save();
    const enqueued = { ...task, details: { ...task.details } };
    this.kick();
    return enqueued;
  }

  get(uid: number): Task {
    const t = this.tasks.find((x) => x.uid === uid);
    if (t === undefined) throw new TaskQueueError('task_not_found', `Task \`${uid}\` not found.`);
    return { ...t, details: { ...t.details } };
  }

  /** list: newest first (oldest first with reverse), `from` a uid to start at, at most `limit`. */
  list(filter: TaskFilter = {}, limit = 20, from: number | null = null, reverse = false): TaskPage {
    checkFilter(filter);
    if (!Number.isInteger(limit) || limit < 1 || limit > TASK_LIST_LIMIT_MAX) {
      throw new TaskQueueError('invalid_task_limit', `Invalid value in parameter \`limit\`: expected an integer in 1..${TASK_LIST_LIMIT_MAX}.`);
    }
    const matching = this.tasks.filter((t) => matches(t, filter));
    matching.sort((a, b) => (reverse ? a.uid - b.uid : b.uid - a.uid));
    const start = from === null ? 0 : matching.findIndex((t) => (reverse ? t.uid >= from : t.uid <= from));
    const page = start < 0 ? [] : matching.slice(start, start + limit + 1);
    const results = page.slice(0, limit).map((t) => ({ ...t, details: { ...t.details } }));
    const next = page.length > limit ? (page[limit]?.uid ?? null) : null;
    return { results, total: matching.length, limit, from: results[0]?.uid ?? null, next };
  }

  /** cancel cancels the enqueued tasks matching filter, recorded as a taskCancelation task. */
  async cancel(filter: TaskFilter, filterText: string): Promise<Task> {
    checkFilter(filter);
    const matched = this.tasks.filter((t) => matches(t, filter) && t.type !== 'taskCancelation');
    const at = this.now().toISOString();
    const cancelation: Task = {
      uid: this.nextUid++,
      batchUid: null,
      status: 'succeeded',
      type: 'taskCancelation',
      canceledBy: null,
      details: { matchedTasks: matched.length, canceledTasks: 0, originalFilter: filterText },
      error: null,
      enqueuedAt: at,
      startedAt: at,
      finishedAt: at,
    };
    let canceled = 0;
    for (const t of matched) {
      if (t.status !== 'enqueued') continue;
      t.status = 'canceled';
      t.canceledBy = cancelation.uid;
      t.finishedAt = at;
      canceled++;
    }
    cancelation.details.canceledTasks = canceled;
    this.tasks.push(cancelation);
    this.trim();
    await this.save();
    return { ...cancelation };
  }

  /** depth: tasks enqueued or processing. */
  depth(): number {
    return this.tasks.filter((t) => t.status === 'enqueued' || t.status === 'processing').length;
  }

  /** idle resolves once no task is running or enqueued. */
  idle(): Promise<void> {
    if (!this.running && this.depth() === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.saving;
  }

  private kick(): void {
    if (this.running || this.closed) return;
    const next = this.pickNext();
    if (next === undefined) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
      return;
    }
    this.running = true;
    void this.run(next).finally(() => {
      this.running = false;
      this.kick();
    });
  }

  /** pickNext: snapshot tasks first, then the oldest enqueued task. */
  private pickNext(): Task | undefined {
    const enqueued = this.tasks.filter((t) => t.status === 'enqueued');
    return enqueued.find((t) => t.type === 'snapshotCreation') ?? enqueued[0];
  }

  private async run(task: Task): Promise<void> {
    const runner = this.runners[task.type];
    task.status = 'processing';
    task.startedAt = this.now().toISOString();
    task.batchUid = task.uid;
    await this.saveOrLog();
    try {
      if (runner === undefined) throw new Error(`no runner for tasks of type ${task.type}`);
      task.details = await runner(task, (d) => {
        task.details = { ...task.details, ...d };
      });
      task.status = 'succeeded';
    } catch (err) {
      task.status = 'failed';
      // A full disk is Meilisearch's no_space_left_on_device (a system error), not an internal one.
      const noSpace = isNoSpace(err);
      const code = noSpace ? NO_SPACE_ERROR_CODE : task.type === 'snapshotCreation' ? 'snapshot_creation_failed' : 'internal';
      task.error = {
        message: (err as Error).message,
        code,
        type: noSpace ? 'system' : 'internal',
        link: `https://docs.meilisearch.com/errors#${noSpace ? code : 'internal'}`,
      };
      this.log.warn({ uid: task.uid, type: task.type, err: (err as Error).message }, 'task failed');
    }
    task.finishedAt = this.now().toISOString();
    await this.saveOrLog();
  }

  /**
   * saveOrLog saves the queue from the task runner, where a failed save (a
   * full disk) must not stop the queue: the task's state stays in memory and
   * is saved with the next change.
   */
  private async saveOrLog(): Promise<void> {
    try {
      await this.save();
    } catch (err) {
      this.log.error({ file: this.file, err: (err as Error).message }, 'cannot save the task queue; tasks are kept in memory and saved with the next change');
    }
  }

  private trim(): void {
    while (this.tasks.length > TASKS_KEPT_MAX) {
      const i = this.tasks.findIndex((t) => t.status !== 'enqueued' && t.status !== 'processing');
      if (i < 0) break;
      this.tasks.splice(i, 1);
    }
  }

  /** save writes the whole queue atomically; saves are serialised. */
  private save(): Promise<void> {
    const body = JSON.stringify({ nextUid: this.nextUid, tasks: this.tasks });
    const write = async (): Promise<void> => {
      const tmp = `${this.file}.tmp`;
      await rm(tmp, { force: true }); // left by a crash
      try {
        await writeFileDurable(tmp, new TextEncoder().encode(body));
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      await rename(tmp, this.file);
      await fsyncDir(dirname(this.file));
    };
    const run = this.saving.then(write);
    this.saving = run.catch(() => undefined); // a failed save neither blocks the next one nor close()
    return run;
  }
}

/** durationOf: a finished task's duration (ISO 8601), null otherwise. */
export function durationOf(t: Task): string | null {
  if (t.startedAt === null || t.finishedAt === null) return null;
  return durationIso(Date.parse(t.finishedAt) - Date.parse(t.startedAt));
}

function checkFilter(f: TaskFilter): void {
  for (const s of f.statuses ?? []) {
    if (!STATUSES.includes(s)) {
      throw new TaskQueueError('invalid_task_statuses', `Invalid value in parameter \`statuses\`: \`${s}\` is not a valid task status. Available statuses are ${STATUSES.map((x) => `\`${x}\``).join(', ')}.`);
    }
  }
  for (const t of f.types ?? []) {
    if (!TYPES.includes(t)) {
      throw new TaskQueueError('invalid_task_types', `Invalid value in parameter \`types\`: \`${t}\` is not a valid task type. Available types are ${TYPES.map((x) => `\`${x}\``).join(', ')}.`);
    }
  }
  for (const [name, v] of Object.entries(f)) {
    if ((name.startsWith('before') || name.startsWith('after')) && v !== undefined) {
      if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) {
        throw new TaskQueueError(`invalid_task_${name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`, `Invalid value in parameter \`${name}\`: \`${String(v)}\` is not a valid date.`);
      }
    }
  }
}

function matches(t: Task, f: TaskFilter): boolean {
  const inList = <T>(list: readonly T[] | undefined, v: T): boolean => list === undefined || list.length === 0 || list.includes(v);
  if (!inList(f.uids, t.uid) || !inList(f.statuses, t.status) || !inList(f.types, t.type)) return false;
  if (f.canceledBy !== undefined && f.canceledBy.length > 0 && (t.canceledBy === null || !f.canceledBy.includes(t.canceledBy))) return false;
  if (f.batchUids !== undefined && f.batchUids.length > 0 && (t.batchUid === null || !f.batchUids.includes(t.batchUid))) return false;
  const cmp = (date: string | null, before?: string, after?: string): boolean => {
    if (before === undefined && after === undefined) return true;
    if (date === null) return false;
    const d = Date.parse(date);
    return (before === undefined || d < Date.parse(before)) && (after === undefined || d > Date.parse(after));
  };
  return (
    cmp(t.enqueuedAt, f.beforeEnqueuedAt, f.afterEnqueuedAt) &&
    cmp(t.startedAt, f.beforeStartedAt, f.afterStartedAt) &&
    cmp(t.finishedAt, f.beforeFinishedAt, f.afterFinishedAt)
  );
}

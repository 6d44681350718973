import { open as openFile, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

import { FILE_MODE, fsyncDir, withPath, writeFileDurable } from '../snapshot/file-sink.js';
import { isNoSpace } from '../node/disk-guard.js';
import type { Logger } from '../node/logger.js';

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
  /** destination: where a scheduled snapshot was copied (a file path or an s3:// URL). */
  destination?: string;
  /** phase: what a running scheduled snapshot is doing: snapshot, copy, upload, retention, done. */
  phase?: string;
  /** removed: archives the retention policy deleted after a scheduled snapshot. */
  removed?: number;
  /** kept: archives the retention policy kept after a scheduled snapshot. */
  kept?: number;
}

/**
 * TaskErrorCode: why a task failed, in snapcoord's own words: `disk_full`
 * (the file system is full or below the node's reserve; the same value as
 * the client library's DISK_FULL_ERROR_CODE), `snapshot_creation_failed`
 * (any other failure of a snapshot), `internal`. A gateway maps it to its
 * product's vocabulary (Meilisearch: code, type and link).
 */
export type TaskErrorCode = 'disk_full' | 'snapshot_creation_failed' | 'internal';

/** TaskError: a failed task's message and code (journals of earlier versions may also hold Meilisearch's type and link: ignored). */
export interface TaskError {
  readonly message: string;
  readonly code: TaskErrorCode | string;
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

/**
 * TaskRunner does one batch's work: `task` is the batch's first task (every
 * task of a batch has the same type and the same details.path); it reports
 * progress (applied to every task of the batch) and returns the final details.
 */
export type TaskRunner = (task: Readonly<Task>, progress: (d: TaskDetails) => void) => Promise<TaskDetails>;

/** TASKS_ENQUEUED_MAX_DEFAULT: the default cap on tasks enqueued or processing at once. */
export const TASKS_ENQUEUED_MAX_DEFAULT = 1000;
/** TASKS_FINISHED_KEPT_DEFAULT: the default number of finished tasks kept (the oldest are trimmed). */
export const TASKS_FINISHED_KEPT_DEFAULT = 10_000;
/** TASK_JOURNAL_COMPACT_BYTES_DEFAULT: the journal is rewritten once it passes max(this, 2 x its last compacted size). */
export const TASK_JOURNAL_COMPACT_BYTES_DEFAULT = 4 << 20;
/** TASK_JOURNAL_BYTES_MAX: a journal larger than this is refused at open (it cannot be the queue's). */
export const TASK_JOURNAL_BYTES_MAX = 256 << 20;
export const TASK_LIST_LIMIT_MAX = 1000;
/**
 * TASK_FILTER_VALUES_MAX: the values one filter list (uids, statuses, types,
 * canceledBy, batchUids) may hold; a longer one is refused before any task
 * is looked at.
 */
export const TASK_FILTER_VALUES_MAX = 1000;
/** ORIGINAL_FILTER_CHARS_MAX: what a taskCancelation keeps of its filter's text (details.originalFilter); a longer one is cut, ending in '…'. */
export const ORIGINAL_FILTER_CHARS_MAX = 2048;
/**
 * TASK_ERROR_CHARS_MAX: what a failed task keeps of its error's message; a
 * longer one is cut, ending in '…' (a message can carry what a remote
 * server said: a hostile S3 endpoint's 1 MB error body, kept in each of up
 * to finishedKeptMax tasks, made a journal the node refused to open).
 */
export const TASK_ERROR_CHARS_MAX = 4096;
const STATUSES: readonly string[] = ['enqueued', 'processing', 'succeeded', 'failed', 'canceled'];
const TYPES: readonly string[] = ['snapshotCreation', 'taskCancelation'];
const JOURNAL_VERSION = 1;

/**
 * TaskQueueError: a bad filter, an unknown task or a full queue; `code` names
 * which (`invalid_task_<parameter>`, `task_not_found`, `too_many_tasks`), sent
 * as the call's x-snapcoord-error-code (the names follow Meilisearch's, so its
 * gateway style passes them through).
 */
export class TaskQueueError extends Error {
  override readonly name = 'TaskQueueError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** TaskQueueOptions: limits of a TaskQueue; every field has a default. */
export interface TaskQueueOptions {
  /** enqueuedMax: most tasks enqueued or processing at once (default 1,000); enqueue beyond it is TaskQueueError `too_many_tasks`. */
  readonly enqueuedMax?: number;
  /** finishedKeptMax: most finished tasks kept (default 10,000); the oldest (lowest uid) are trimmed. */
  readonly finishedKeptMax?: number;
  /** journalCompactBytes: compact the journal once it passes max(this, 2 x its last compacted size) (default 4 MiB). */
  readonly journalCompactBytes?: number;
  /** now: the clock (tests). */
  readonly now?: () => Date;
}

/** TaskJournalStats counts what the queue wrote to its journal since it was opened. */
export interface TaskJournalStats {
  /** records: task records appended, one per change of one task. */
  records: number;
  /** appendedBytes: bytes of those records. */
  appendedBytes: number;
  /** writes: append write calls (records made while a write is in flight share the next one). */
  writes: number;
  /** syncs: fsyncs of the journal after appends. */
  syncs: number;
  /** compactions: whole-journal rewrites (one at open, then once it outgrows its compacted size or after a failed append). */
  compactions: number;
  /** compactedBytes: bytes written by compactions. */
  compactedBytes: number;
}

/** durationIso: ISO 8601 duration of ms ("PT0.412S"). */
export function durationIso(ms: number): string {
  return `PT${(Math.max(0, ms) / 1000).toFixed(3).replace(/\.?0+$/, '')}S`;
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
  /** durable: called once the records are durable, before any waiter resumes. */
  durable?: () => void;
}

/**
 * TaskQueue keeps a node's tasks (Meilisearch's task queue) in an
 * append-only journal: one JSON line per change of one task (an upsert of
 * the whole task), appended and fsynced; records made while a write is in
 * flight go out together in the next write and fsync (fsync batching). At
 * open the journal is replayed (a torn last line, left by a crash mid-write,
 * is dropped) and rewritten compactly (a header, then one line per kept
 * task: temp file, fsync, rename, fsync of the directory); it is compacted
 * the same way once it passes
 * max(journalCompactBytes, 2 x its compacted size), and after a failed
 * append (so a torn record never sits in the middle). A file in the old
 * format (one JSON object {nextUid, tasks}) is read and rewritten as a
 * journal. A task that was processing when the node stopped runs again.
 *
 * Bounds: at most enqueuedMax tasks enqueued or processing (enqueue beyond
 * is TaskQueueError `too_many_tasks`: RESOURCE_EXHAUSTED, HTTP 429); at most
 * finishedKeptMax finished tasks, the oldest trimmed.
 *
 * Running: one batch at a time; a task runs only once its record is durable
 * (an enqueue whose record cannot be written fails with nothing enqueued).
 * Snapshot tasks go first, and every snapshotCreation task enqueued (and
 * durable) when a run starts (with the same path)
 * joins that run, as Meilisearch batches them: they share one batchUid,
 * start and finish together and get the same result. Other tasks run one
 * per batch, oldest first.
 */
export class TaskQueue {
  /** tasks: every kept task by uid, in uid order. */
  private tasks = new Map<number, Task>();
  /** active: the enqueued or processing tasks by uid, in uid order. */
  private active = new Map<number, Task>();
  /** unsaved: enqueued tasks whose record is not yet durable: not run until it is (a failed append removes them). */
  private readonly unsaved = new Set<number>();
  private nextUid = 0;
  private nextBatchUid = 0;
  private running = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private handle: FileHandle | null = null;
  private journalBytes = 0;
  private compactedBytes = 0;
  private mustCompact = false;
  private pendingLines: string[] = [];
  private pendingWaiters: Waiter[] = [];
  private writing = false;
  private drainWaiters: (() => void)[] = [];
  private readonly enqueuedMax: number;
  private readonly finishedKeptMax: number;
  private readonly journalCompactBytes: number;
  private readonly now: () => Date;
  /** stats: what was written to the journal since open (tests and metrics read it). */
  readonly stats: TaskJournalStats = { records: 0, appendedBytes: 0, writes: 0, syncs: 0, compactions: 0, compactedBytes: 0 };

  private constructor(
    private readonly file: string,
    private readonly runners: Partial<Record<TaskType, TaskRunner>>,
    private readonly log: Logger,
    options: TaskQueueOptions,
  ) {
    this.enqueuedMax = positiveInt(options.enqueuedMax ?? TASKS_ENQUEUED_MAX_DEFAULT, 'enqueuedMax');
    this.finishedKeptMax = positiveInt(options.finishedKeptMax ?? TASKS_FINISHED_KEPT_DEFAULT, 'finishedKeptMax');
    this.journalCompactBytes = positiveInt(options.journalCompactBytes ?? TASK_JOURNAL_COMPACT_BYTES_DEFAULT, 'journalCompactBytes');
    this.now = options.now ?? (() => new Date());
  }

  /**
   * TaskQueue.open reads (or creates) the journal `file` and starts running
   * what is enqueued. Errors: an unreadable file, a journal over
   * TASK_JOURNAL_BYTES_MAX, or a malformed record before its last line.
   */
  static async open(file: string, runners: Partial<Record<TaskType, TaskRunner>>, log: Logger, options: TaskQueueOptions = {}): Promise<TaskQueue> {
    const q = new TaskQueue(file, runners, log, options);
    await rm(`${file}.tmp`, { force: true }); // left by a crash during a compaction
    let text: string | null = null;
    try {
      const st = await stat(file);
      if (st.size > TASK_JOURNAL_BYTES_MAX) throw new Error(`tasks file ${file} is ${st.size} bytes, more than ${TASK_JOURNAL_BYTES_MAX}`);
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read tasks file ${file}: ${(err as Error).message}`, { cause: err });
    }
    if (text !== null) q.replay(text);
    for (const t of q.active.values()) {
      if (t.status === 'processing') {
        t.status = 'enqueued';
        t.startedAt = null;
        t.batchUid = null;
      }
    }
    q.trim();
    await q.compact(); // one rewrite per start: stale records, a torn tail, trimmed tasks and the restarted ones
    q.handle = await openFile(file, 'a', FILE_MODE);
    q.kick();
    return q;
  }

  /**
   * enqueue adds a task; it is durable when the returned promise resolves.
   * Errors: TaskQueueError `too_many_tasks` when the queue is full; the
   * journal's write error (ENOSPC, EIO), and then nothing is enqueued (the
   * task does not run, is not listed, and is not journaled later).
   */
  async enqueue(type: TaskType, details: TaskDetails = {}): Promise<Task> {
    if (this.closed) throw new TaskQueueError('internal', 'the task queue is closed');
    if (this.active.size >= this.enqueuedMax) {
      throw new TaskQueueError('too_many_tasks', `the task queue is full (${this.active.size} tasks enqueued or processing, at most ${this.enqueuedMax}); retry later`);
    }
    const task: Task = {
      uid: this.nextUid++,
      batchUid: null,
      status: 'enqueued',
      type,
      canceledBy: null,
      details: { ...details },
      error: null,
      enqueuedAt: this.now().toISOString(),
      startedAt: null,
      finishedAt: null,
    };
    this.tasks.set(task.uid, task);
    this.active.set(task.uid, task);
    this.unsaved.add(task.uid); // not run before its record is durable (nextBatch skips it)
    const enqueued = copyTask(task);
    try {
      // Runnable once durable, before any waiter of the same write resumes: the tasks of one write join one batch.
      await this.append([task], () => this.unsaved.delete(task.uid));
    } catch (err) {
      // Refused with nothing enqueued: the caller is told it failed, so the task must not run, be listed, or
      // reach the journal with a later compaction (the failed append left mustCompact set: the next write rewrites
      // the journal from memory, without it).
      this.tasks.delete(task.uid);
      this.active.delete(task.uid);
      this.unsaved.delete(task.uid);
      this.mustCompact = true;
      throw err;
    }
    this.kick();
    return enqueued;
  }

  get(uid: number): Task {
    const t = this.tasks.get(uid);
    if (t === undefined) throw new TaskQueueError('task_not_found', `Task \`${uid}\` not found.`);
    return copyTask(t);
  }

  /** list: newest first (oldest first with reverse), `from` a uid to start at, at most `limit`. */
  list(filter: TaskFilter = {}, limit = 20, from: number | null = null, reverse = false): TaskPage {
    checkFilter(filter);
    if (!Number.isInteger(limit) || limit < 1 || limit > TASK_LIST_LIMIT_MAX) {
      throw new TaskQueueError('invalid_task_limit', `Invalid value in parameter \`limit\`: expected an integer in 1..${TASK_LIST_LIMIT_MAX}.`);
    }
    const matches = matcherOf(filter);
    const matching = [...this.tasks.values()].filter(matches);
    if (!reverse) matching.reverse();
    const start = from === null ? 0 : matching.findIndex((t) => (reverse ? t.uid >= from : t.uid <= from));
    const page = start < 0 ? [] : matching.slice(start, start + limit + 1);
    const results = page.slice(0, limit).map(copyTask);
    const next = page.length > limit ? (page[limit]?.uid ?? null) : null;
    return { results, total: matching.length, limit, from: results[0]?.uid ?? null, next };
  }

  /**
   * cancel cancels the enqueued tasks matching filter, recorded as a
   * taskCancelation task (its details.originalFilter: filterText, cut to
   * ORIGINAL_FILTER_CHARS_MAX). Errors: the journal's write error (ENOSPC,
   * EIO), and then nothing is canceled (the tasks stay enqueued and run).
   */
  async cancel(filter: TaskFilter, filterText: string): Promise<Task> {
    checkFilter(filter);
    if (this.closed) throw new TaskQueueError('internal', 'the task queue is closed');
    const matches = matcherOf(filter);
    const matched = [...this.tasks.values()].filter((t) => matches(t) && t.type !== 'taskCancelation');
    const at = this.now().toISOString();
    const cancelation: Task = {
      uid: this.nextUid++,
      batchUid: null,
      status: 'succeeded',
      type: 'taskCancelation',
      canceledBy: null,
      details: {
        matchedTasks: matched.length,
        canceledTasks: 0,
        originalFilter: filterText.length > ORIGINAL_FILTER_CHARS_MAX ? `${filterText.slice(0, ORIGINAL_FILTER_CHARS_MAX - 1)}…` : filterText,
      },
      error: null,
      enqueuedAt: at,
      startedAt: at,
      finishedAt: at,
    };
    const changed: Task[] = [];
    for (const t of matched) {
      if (t.status !== 'enqueued') continue;
      t.status = 'canceled';
      t.canceledBy = cancelation.uid;
      t.finishedAt = at;
      this.active.delete(t.uid);
      changed.push(t);
    }
    cancelation.details.canceledTasks = changed.length;
    this.tasks.set(cancelation.uid, cancelation);
    const canceled = [...changed];
    changed.push(cancelation);
    const out = copyTask(cancelation);
    try {
      await this.append(changed);
    } catch (err) {
      // Refused with nothing changed: the caller is told the cancelation failed, so its tasks stay enqueued (and
      // run), and the failed append left mustCompact set: the next write rewrites the journal from memory, as it is.
      this.tasks.delete(cancelation.uid);
      for (const t of canceled) {
        t.status = 'enqueued';
        t.canceledBy = null;
        t.finishedAt = null;
        this.active.set(t.uid, t);
      }
      this.active = new Map([...this.active.entries()].sort((a, b) => a[0] - b[0])); // uid order: oldest first
      this.mustCompact = true;
      this.kick();
      throw err;
    }
    this.trim();
    return out;
  }

  /** depth: tasks enqueued or processing. */
  depth(): number {
    return this.active.size;
  }

  /** idle resolves once no task is running or enqueued. */
  idle(): Promise<void> {
    if (!this.running && this.active.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** close stops starting tasks, waits for the journal writes in flight, and closes the journal. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.writing || this.pendingLines.length > 0) {
      await new Promise<void>((r) => {
        this.drainWaiters.push(r);
        this.pump();
      });
    }
    const h = this.handle;
    this.handle = null;
    await h?.close();
  }

  private kick(): void {
    if (this.running || this.closed) return;
    const batch = this.nextBatch();
    if (batch.length === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
      return;
    }
    this.running = true;
    void this.runBatch(batch).finally(() => {
      this.running = false;
      this.kick();
    });
  }

  /** nextBatch: every enqueued snapshot task with the first one's path; else the oldest enqueued task alone. */
  private nextBatch(): Task[] {
    let oldest: Task | undefined;
    let firstSnapshot: Task | undefined;
    for (const t of this.active.values()) {
      if (t.status !== 'enqueued' || this.unsaved.has(t.uid)) continue;
      oldest ??= t;
      if (t.type === 'snapshotCreation') {
        firstSnapshot = t;
        break;
      }
    }
    if (firstSnapshot === undefined) return oldest === undefined ? [] : [oldest];
    const path = firstSnapshot.details.path;
    return [...this.active.values()].filter((t) => t.status === 'enqueued' && !this.unsaved.has(t.uid) && t.type === 'snapshotCreation' && t.details.path === path);
  }

  private async runBatch(batch: Task[]): Promise<void> {
    const first = batch[0] as Task;
    const runner = this.runners[first.type];
    const batchUid = this.nextBatchUid++;
    const startedAt = this.now().toISOString();
    for (const t of batch) {
      t.status = 'processing';
      t.startedAt = startedAt;
      t.batchUid = batchUid;
    }
    await this.appendOrLog(batch);
    let status: TaskStatus;
    let details: TaskDetails | null = null;
    let error: TaskError | null = null;
    try {
      if (runner === undefined) throw new Error(`no runner for tasks of type ${first.type}`);
      details = await runner(copyTask(first), (d) => {
        for (const t of batch) t.details = { ...t.details, ...d };
      });
      status = 'succeeded';
    } catch (err) {
      status = 'failed';
      // A full disk is a condition of its own (the operator frees space and retries), not an internal error.
      const code: TaskErrorCode = isNoSpace(err) ? 'disk_full' : first.type === 'snapshotCreation' ? 'snapshot_creation_failed' : 'internal';
      const message = String((err as Error).message);
      error = { message: message.length > TASK_ERROR_CHARS_MAX ? `${message.slice(0, TASK_ERROR_CHARS_MAX - 1)}…` : message, code };
      this.log.warn({ batchUid, tasks: batch.length, type: first.type, err: error.message }, 'task failed');
    }
    const finishedAt = this.now().toISOString();
    for (const t of batch) {
      t.status = status;
      if (details !== null) t.details = { ...details };
      t.error = error === null ? null : { ...error };
      t.finishedAt = finishedAt;
      this.active.delete(t.uid);
    }
    this.trim();
    await this.appendOrLog(batch);
  }

  /**
   * appendOrLog appends from the task runner, where a failed write (a full
   * disk) must not stop the queue: the tasks' state stays in memory and the
   * next change rewrites the whole journal.
   */
  private async appendOrLog(tasks: readonly Task[]): Promise<void> {
    try {
      await this.append(tasks);
    } catch (err) {
      this.log.error({ file: this.file, err: (err as Error).message }, 'cannot save the task queue; tasks are kept in memory and saved with the next change');
    }
  }

  /** trim drops the oldest finished tasks beyond finishedKeptMax (not journaled: replay trims the same way). */
  private trim(): void {
    let excess = this.tasks.size - this.active.size - this.finishedKeptMax;
    if (excess <= 0) return;
    for (const uid of this.tasks.keys()) {
      if (excess <= 0) break;
      if (this.active.has(uid)) continue;
      this.tasks.delete(uid);
      excess--;
    }
  }

  /** append journals one record per task (its whole state now); resolves once written and fsynced. */
  private append(tasks: readonly Task[], durable?: () => void): Promise<void> {
    for (const t of tasks) this.pendingLines.push(`${JSON.stringify({ task: t })}\n`);
    this.stats.records += tasks.length;
    return new Promise<void>((resolve, reject) => {
      this.pendingWaiters.push({ resolve, reject, ...(durable !== undefined ? { durable } : {}) });
      this.pump();
    });
  }

  /** pump writes what is pending in one write and one fsync (or compacts), one at a time. */
  private pump(): void {
    if (this.writing) return;
    if (this.pendingLines.length === 0) {
      const d = this.drainWaiters;
      this.drainWaiters = [];
      for (const f of d) f();
      return;
    }
    this.writing = true;
    const lines = this.pendingLines;
    const waiters = this.pendingWaiters;
    this.pendingLines = [];
    this.pendingWaiters = [];
    void (async () => {
      const body = Buffer.from(lines.join(''));
      if (this.mustCompact || this.journalBytes + body.length > Math.max(this.journalCompactBytes, 2 * this.compactedBytes)) {
        await this.compact(); // the tasks in memory already hold these changes
      } else {
        const h = this.handle;
        if (h === null) throw new Error('the task queue is closed');
        const before = this.journalBytes;
        try {
          await writeAll(h, body);
          this.stats.writes++;
          this.stats.appendedBytes += body.length;
          this.journalBytes += body.length;
          await h.datasync();
          this.stats.syncs++;
        } catch (err) {
          this.mustCompact = true; // a torn record must not stay in the middle of the journal
          // The callers are told these records failed, so none may be read back at the next start: a write cut short
          // by a full disk leaves the records before the torn one whole (only a torn last line is dropped at replay),
          // and a failed sync may still have stored them all (review19, review20). The journal is cut back to where
          // it ended; when that fails too, the compaction this forces at the next write (from memory, which does not
          // hold them) is what removes them.
          await h
            .truncate(before)
            .then(() => h.datasync())
            .then(
              () => void (this.journalBytes = before),
              () => undefined,
            );
          throw withPath(err, this.file);
        }
      }
    })().then(
      () => {
        for (const w of waiters) w.durable?.();
        for (const w of waiters) w.resolve();
      },
      (err: unknown) => {
        for (const w of waiters) w.reject(err);
      },
    ).finally(() => {
      this.writing = false;
      this.pump();
    });
  }

  /** compact rewrites the journal from memory (temp file, fsync, rename, fsync of the directory) and reopens it for appends. */
  private async compact(): Promise<void> {
    const header = { v: JOURNAL_VERSION, nextUid: this.nextUid, nextBatchUid: this.nextBatchUid };
    const parts = [`${JSON.stringify(header)}\n`];
    for (const t of this.tasks.values()) parts.push(`${JSON.stringify({ task: t })}\n`);
    const body = Buffer.from(parts.join(''));
    const tmp = `${this.file}.tmp`;
    await rm(tmp, { force: true });
    try {
      await writeFileDurable(tmp, body);
      await rename(tmp, this.file);
    } catch (err) {
      await rm(tmp, { force: true });
      this.mustCompact = true;
      throw err;
    }
    await fsyncDir(dirname(this.file));
    this.mustCompact = false;
    this.journalBytes = body.length;
    this.compactedBytes = body.length;
    this.stats.compactions++;
    this.stats.compactedBytes += body.length;
    if (this.handle !== null) {
      const old = this.handle;
      this.handle = await openFile(this.file, 'a', FILE_MODE);
      await old.close().catch(() => undefined);
    }
  }

  /**
   * replay loads a journal (or an old-format file) into memory: the header
   * (first line), then each task record upserted by uid. A last line that
   * does not parse is a record torn by a crash mid-write and is dropped; any
   * other malformed line is an error.
   */
  private replay(text: string): void {
    const lines = text.split('\n');
    while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] as string;
      if (line === '') continue;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (err) {
        if (i === lines.length - 1) continue; // torn: the write that made it never completed
        throw new Error(`tasks file ${this.file}: line ${i + 1} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      if (!isObject(rec)) throw new Error(`tasks file ${this.file}: line ${i + 1} is malformed`);
      if (i === 0 && Array.isArray(rec['tasks']) && typeof rec['nextUid'] === 'number') {
        // The old format: one object {nextUid, tasks}.
        for (const t of rec['tasks'] as unknown[]) this.load(t, i);
        this.nextUid = Math.max(this.nextUid, rec['nextUid']);
        continue;
      }
      if (i === 0 && rec['v'] === JOURNAL_VERSION) {
        if (Number.isSafeInteger(rec['nextUid'])) this.nextUid = Math.max(this.nextUid, rec['nextUid'] as number);
        if (Number.isSafeInteger(rec['nextBatchUid'])) this.nextBatchUid = Math.max(this.nextBatchUid, rec['nextBatchUid'] as number);
        continue;
      }
      if (!isObject(rec['task'])) throw new Error(`tasks file ${this.file}: line ${i + 1} is not a task record`);
      this.load(rec['task'], i);
    }
    const sorted = [...this.tasks.values()].sort((a, b) => a.uid - b.uid);
    this.tasks = new Map(sorted.map((t) => [t.uid, t]));
    this.active = new Map(sorted.filter((t) => t.status === 'enqueued' || t.status === 'processing').map((t) => [t.uid, t]));
  }

  /** load upserts one task read from the file, after checking its shape. */
  private load(raw: unknown, line: number): void {
    if (!isObject(raw) || !Number.isSafeInteger(raw['uid']) || (raw['uid'] as number) < 0 || !STATUSES.includes(String(raw['status'])) || !TYPES.includes(String(raw['type']))) {
      throw new Error(`tasks file ${this.file}: line ${line + 1} holds a malformed task`);
    }
    const t = raw as unknown as Task;
    const task: Task = {
      uid: t.uid,
      batchUid: typeof t.batchUid === 'number' ? t.batchUid : null,
      status: t.status,
      type: t.type,
      canceledBy: typeof t.canceledBy === 'number' ? t.canceledBy : null,
      details: isObject(t.details) ? (t.details as TaskDetails) : {},
      error: isObject(t.error) ? t.error : null,
      enqueuedAt: String(t.enqueuedAt),
      startedAt: typeof t.startedAt === 'string' ? t.startedAt : null,
      finishedAt: typeof t.finishedAt === 'string' ? t.finishedAt : null,
    };
    this.tasks.set(task.uid, task);
    this.nextUid = Math.max(this.nextUid, task.uid + 1);
    if (task.batchUid !== null) this.nextBatchUid = Math.max(this.nextBatchUid, task.batchUid + 1);
  }
}

function positiveInt(v: number, name: string): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`TaskQueue: ${name} must be a whole number >= 1, got ${v}`);
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function copyTask(t: Task): Task {
  return { ...t, details: { ...t.details }, error: t.error === null ? null : { ...t.error } };
}

async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset, null);
    offset += bytesWritten;
  }
}

/** durationOf: a finished task's duration (ISO 8601), null otherwise. */
export function durationOf(t: Task): string | null {
  if (t.startedAt === null || t.finishedAt === null) return null;
  return durationIso(Date.parse(t.finishedAt) - Date.parse(t.startedAt));
}

/** FILTER_LISTS: each filter list with the error code naming it (Meilisearch's). */
const FILTER_LISTS = [
  ['uids', 'invalid_task_uids'],
  ['statuses', 'invalid_task_statuses'],
  ['types', 'invalid_task_types'],
  ['canceledBy', 'invalid_task_canceled_by'],
  ['batchUids', 'invalid_task_batch_uids'],
] as const;

function checkFilter(f: TaskFilter): void {
  for (const [name, code] of FILTER_LISTS) {
    const n = f[name]?.length ?? 0;
    if (n > TASK_FILTER_VALUES_MAX) throw new TaskQueueError(code, `Invalid value in parameter \`${name}\`: ${n} values, at most ${TASK_FILTER_VALUES_MAX} values are allowed.`);
  }
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

/**
 * matcherOf compiles a (checked) filter once: its lists as sets, its dates
 * parsed, so that a call costs one lookup per list and task.
 */
function matcherOf(f: TaskFilter): (t: Task) => boolean {
  const set = <T>(list: readonly T[] | undefined): Set<T> | null => (list === undefined || list.length === 0 ? null : new Set(list));
  const uids = set(f.uids);
  const statuses = set(f.statuses);
  const types = set(f.types);
  const canceledBy = set(f.canceledBy);
  const batchUids = set(f.batchUids);
  const time = (v: string | undefined): number | undefined => (v === undefined ? undefined : Date.parse(v));
  const span = (before: string | undefined, after: string | undefined) => ({ before: time(before), after: time(after) });
  const enqueued = span(f.beforeEnqueuedAt, f.afterEnqueuedAt);
  const started = span(f.beforeStartedAt, f.afterStartedAt);
  const finished = span(f.beforeFinishedAt, f.afterFinishedAt);
  const within = (date: string | null, s: { before: number | undefined; after: number | undefined }): boolean => {
    if (s.before === undefined && s.after === undefined) return true;
    if (date === null) return false;
    const d = Date.parse(date);
    return (s.before === undefined || d < s.before) && (s.after === undefined || d > s.after);
  };
  return (t) =>
    (uids === null || uids.has(t.uid)) &&
    (statuses === null || statuses.has(t.status)) &&
    (types === null || types.has(t.type)) &&
    (canceledBy === null || (t.canceledBy !== null && canceledBy.has(t.canceledBy))) &&
    (batchUids === null || (t.batchUid !== null && batchUids.has(t.batchUid))) &&
    within(t.enqueuedAt, enqueued) &&
    within(t.startedAt, started) &&
    within(t.finishedAt, finished);
}

/**
 * Scheduled snapshots (the snapshot agent): `--schedule-snapshot SECS` with a
 * retention policy and an optional S3 destination.
 *
 * - SnapshotSchedule decides when: only the leader enqueues (one copy per
 *   cluster, not one per member). The time of the last run is replicated as
 *   an ops record (fsm/ops-record.ts: in the state, where clients never see
 *   it; named SCHEDULE_RECORD_PREFIX + db name, a JSON {lastRunAtMs,
 *   nodeId}), written through the log before the task is enqueued, so a new
 *   leader knows when the old one last ran. (Before, it was a client-visible
 *   key, LEGACY_SCHEDULE_KEY_PREFIX + db name: still read when no record
 *   exists, and deleted once the record is written.) A run missed
 *   while no node led (a restart, a leader change, a long outage) runs once
 *   when it is next checked, never once per missed interval. A cluster that
 *   never ran starts counting when the schedule first runs.
 * - scheduledSnapshotRunner does one run as a snapshotCreation task (its
 *   `details.path` is `<snapshot-dir>/<db>-<time>.snapshot`): phase
 *   `snapshot` (a snapshot of the state now), `copy` (the archive copied
 *   atomically, read-only, to details.path; bytesDone / bytesTotal),
 *   `upload` (streamed to the S3 destination, when one is set; bytesDone
 *   counts uploaded bytes), `retention` (the policy applied to the local
 *   directory's scheduled archives of this db, then to the bucket's),
 *   `done`; details.removed / kept count the archives.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import type { Logger } from '../node/logger.js';
import { openAndExport, removeStaleCopies } from './snapshot-export.js';
import type { SnapshotHandle } from '../snapshot/store.js';
import type { KvCommand } from '../fsm/kv-command.js';
import type { Task, TaskDetails, TaskRunner } from './task-queue.js';
import { hasRetention, planRetention, type RetentionPolicy } from './retention.js';
import { S3Error, SNAPSHOT_NAME_PATTERN, snapshotName, timeOfName, type S3Destination } from './s3.js';

/** SCHEDULE_RECORD_PREFIX: the ops record holding a schedule's last run is named this plus the db name. */
export const SCHEDULE_RECORD_PREFIX = 'schedule/';
/** LEGACY_SCHEDULE_KEY_PREFIX: the client-visible key where versions before the ops record kept it (read once, then deleted). */
export const LEGACY_SCHEDULE_KEY_PREFIX = 'snapcoord.agent/schedule/';

/** ScheduleState: what the replicated key holds. */
export interface ScheduleState {
  readonly lastRunAtMs: number;
  readonly nodeId: string;
}

/** ScheduleNode: the part of Node the schedule uses. */
export interface ScheduleNode {
  readonly id: string;
  status(): { readonly role: string; readonly term: number };
  opsRecord(name: string): Promise<Uint8Array | undefined>;
  proposeOpsRecord(name: string, value: Uint8Array): Promise<unknown>;
  /** get and propose: only for the legacy key. */
  get(key: Uint8Array): Promise<Uint8Array | undefined>;
  propose(cmd: KvCommand): Promise<unknown>;
}

export interface ScheduleOptions {
  readonly node: ScheduleNode;
  readonly intervalMs: number;
  readonly dbName: string;
  /** snapshotDir: where scheduled archives are written. */
  readonly snapshotDir: string;
  /** enqueue: enqueues a snapshotCreation task writing `path` (TaskQueue.enqueue). */
  readonly enqueue: (path: string) => Promise<Task>;
  /** busy: a scheduled run is enqueued or running on this node. */
  readonly busy: () => boolean;
  readonly log: Logger;
  /** fixedPath: every run writes this one file (no retention, no destination: the behaviour before the agent); default a new timestamped file per run. */
  readonly fixedPath?: string;
  /** checkEveryMs: how often the schedule looks (default min(intervalMs, 1000)). */
  readonly checkEveryMs?: number;
  readonly now?: () => number;
}

/** TickResult: what one check did ('backoff': nothing, a failed attempt's retry delay has not passed). */
export type TickResult = 'notLeader' | 'notDue' | 'busy' | 'started' | 'enqueued' | 'failed' | 'backoff';

/** SCHEDULE_RETRY_MS_MAX: the longest wait between two attempts of a schedule that keeps failing (the delay doubles from the check interval up to it). */
export const SCHEDULE_RETRY_MS_MAX = 5 * 60_000;
/** SCHEDULE_FAILURE_REMINDER_MS: a schedule failing with the same error is logged again this often (each new error at once). */
export const SCHEDULE_FAILURE_REMINDER_MS = 30 * 60_000;

/** SnapshotSchedule: see the file comment. */
export class SnapshotSchedule {
  private timer: NodeJS.Timeout | null = null;
  private checking = false;
  /** known: the last run as this node last read or wrote it, with the term it was read in. */
  private known: { term: number; lastRunAtMs: number } | null = null;
  private readonly now: () => number;
  private readonly record: string;
  private readonly legacyKey: Buffer;
  /** legacySeen: the last read found only the legacy key: the next write deletes it. */
  private legacySeen = false;
  /**
   * failing: the attempts that failed in a row (tick's 'failed'), when the next may be made (the delay doubles from
   * the check interval up to SCHEDULE_RETRY_MS_MAX), the error last logged and when; null once an attempt succeeds.
   */
  private failing: { count: number; sinceMs: number; retryAtMs: number; loggedErr: string; loggedAtMs: number } | null = null;

  constructor(private readonly opts: ScheduleOptions) {
    if (!(opts.intervalMs > 0)) throw new RangeError(`SnapshotSchedule: intervalMs must be positive, got ${opts.intervalMs}`);
    this.now = opts.now ?? Date.now;
    this.record = `${SCHEDULE_RECORD_PREFIX}${opts.dbName}`;
    this.legacyKey = Buffer.from(`${LEGACY_SCHEDULE_KEY_PREFIX}${opts.dbName}`);
  }

  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => void this.tick(), this.opts.checkEveryMs ?? Math.min(this.opts.intervalMs, 1_000));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** pathFor: the archive path of a run at `atMs`. */
  pathFor(atMs: number): string {
    if (this.opts.fixedPath !== undefined) return this.opts.fixedPath;
    return join(this.opts.snapshotDir, snapshotName(this.opts.dbName, new Date(atMs)));
  }

  /** tick checks once: on the leader, when the interval since the cluster's last run has passed and no run is in flight, it records the run and enqueues it. */
  async tick(): Promise<TickResult> {
    if (this.checking) return 'busy';
    this.checking = true;
    try {
      const st = this.opts.node.status();
      if (st.role !== 'leader') {
        this.known = null;
        return 'notLeader';
      }
      if (this.opts.busy()) return 'busy';
      if (this.failing !== null && this.now() < this.failing.retryAtMs) return 'backoff';
      const r = await this.attempt(st);
      this.recovered();
      return r;
    } catch (err) {
      this.known = null;
      this.noteFailure(err as Error);
      return 'failed';
    } finally {
      this.checking = false;
    }
  }

  /** attempt: tick's work on the leader once it may try (see tick); throws when the run could not be recorded or enqueued. */
  private async attempt(st: { readonly term: number }): Promise<TickResult> {
    if (this.known === null || this.known.term !== st.term) {
      const state = await this.read();
      if (state === null) {
        // Never ran in this cluster: the first run is one interval from now.
        const now = this.now();
        await this.write(now);
        this.known = { term: st.term, lastRunAtMs: now };
        return 'started';
      }
      // A last run dated after now counts as now: the next run is one interval away at most. The legacy key is
      // client-visible (any kv.write key may put a run a century ahead there, read whenever the ops record is missing:
      // a schedule first turned on, or after a restore, which drops ops records), and a leader's clock may have run
      // ahead. Before, such a date held every scheduled run back until it came, with nothing logged.
      const readAtMs = this.now();
      if (state.lastRunAtMs > readAtMs) {
        this.opts.log.warn({ lastRunAt: new Date(Math.min(state.lastRunAtMs, 8.64e15)).toISOString(), nodeId: state.nodeId.slice(0, 64) }, 'the schedule\'s last run is dated in the future: counted as now');
      }
      this.known = { term: st.term, lastRunAtMs: Math.min(state.lastRunAtMs, readAtMs) };
    }
    const now = this.now();
    const sinceMs = now - this.known.lastRunAtMs;
    if (sinceMs < this.opts.intervalMs) return 'notDue';
    // Recorded through the log first: a leader elected after this point does not run it again.
    const previous = this.known.lastRunAtMs;
    await this.write(now);
    this.known = { term: st.term, lastRunAtMs: now };
    let task: Task;
    try {
      task = await this.opts.enqueue(this.pathFor(now));
    } catch (err) {
      // Not enqueued (the task journal on a full disk, a full queue): the run did not happen, so the record goes
      // back to the last run that did (best effort) and the next check tries again, not one interval later.
      await this.write(previous).catch((e: unknown) => this.opts.log.warn({ err: (e as Error).message }, 'the schedule record of a run not enqueued could not be put back'));
      throw err;
    }
    // Runs missed while no node could run them are not made up: this one run covers them.
    const missedRuns = Math.max(0, Math.floor(sinceMs / this.opts.intervalMs) - 1);
    this.opts.log.info({ taskUid: task.uid, path: task.details.path, missedRuns }, 'scheduled snapshot enqueued');
    return 'enqueued';
  }

  /**
   * noteFailure: an attempt failed. The next waits the check interval, doubled at each failure in a row, at most
   * SCHEDULE_RETRY_MS_MAX; the failure is logged when its error differs from the one last logged, else once every
   * SCHEDULE_FAILURE_REMINDER_MS (before, a warning every check: every second, for as long as it failed).
   */
  private noteFailure(err: Error): void {
    const now = this.now();
    const f = this.failing ?? { count: 0, sinceMs: now, retryAtMs: now, loggedErr: '', loggedAtMs: -Infinity };
    f.count++;
    const baseMs = this.opts.checkEveryMs ?? Math.min(this.opts.intervalMs, 1_000);
    const retryInMs = Math.min(SCHEDULE_RETRY_MS_MAX, baseMs * 2 ** Math.min(f.count - 1, 30));
    f.retryAtMs = now + retryInMs;
    this.failing = f;
    if (err.message !== f.loggedErr) {
      f.loggedErr = err.message;
      f.loggedAtMs = now;
      this.opts.log.warn({ err: err.message, failures: f.count, retryInMs }, 'scheduled snapshot not enqueued; retrying later');
    } else if (now - f.loggedAtMs >= SCHEDULE_FAILURE_REMINDER_MS) {
      f.loggedAtMs = now;
      this.opts.log.warn({ err: err.message, failures: f.count, failingForMs: now - f.sinceMs, retryInMs }, 'scheduled snapshot still not enqueued; retrying later');
    }
  }

  /** recovered: an attempt succeeded (the record read or written, a run enqueued): the backoff ends, and a failure before it is said to be over. */
  private recovered(): void {
    const f = this.failing;
    if (f === null) return;
    this.failing = null;
    this.opts.log.info({ failures: f.count, failedForMs: this.now() - f.sinceMs }, 'scheduled snapshots are enqueued again');
  }

  /** read: the replicated state (null when the schedule never ran), read linearizably on the leader; the legacy key when no record exists. */
  async read(): Promise<ScheduleState | null> {
    let v = await this.opts.node.opsRecord(this.record);
    if (v === undefined) {
      v = await this.opts.node.get(this.legacyKey);
      this.legacySeen = v !== undefined;
    }
    if (v === undefined) return null;
    try {
      const j = JSON.parse(Buffer.from(v).toString('utf8')) as Partial<ScheduleState>;
      if (typeof j.lastRunAtMs === 'number' && Number.isFinite(j.lastRunAtMs)) return { lastRunAtMs: j.lastRunAtMs, nodeId: String(j.nodeId ?? '') };
    } catch {
      // unreadable: treated as never run
    }
    return null;
  }

  private async write(atMs: number): Promise<void> {
    const state: ScheduleState = { lastRunAtMs: atMs, nodeId: this.opts.node.id };
    await this.opts.node.proposeOpsRecord(this.record, Buffer.from(JSON.stringify(state)));
    if (this.legacySeen) {
      await this.opts.node.propose({ op: 'delete', key: this.legacyKey });
      this.legacySeen = false;
    }
  }
}

/** isScheduledPath: `path` is a scheduled archive of `db` in `dir`. */
export function isScheduledPath(path: string | undefined, dir: string, db: string): boolean {
  if (path === undefined || dirname(path) !== dir) return false;
  return SNAPSHOT_NAME_PATTERN.exec(basename(path))?.[1] === db;
}

/** LocalRetentionResult: the scheduled archives of the directory kept and removed (names). */
export interface LocalRetentionResult {
  readonly kept: string[];
  readonly removed: string[];
}

/**
 * applyLocalRetention deletes the scheduled archives of `db` in `dir` that
 * `policy` does not keep (other files, and anything not a regular file, are
 * left alone); the archive named
 * `protect` (the run's own) is always kept.
 */
export async function applyLocalRetention(
  dir: string,
  db: string,
  policy: RetentionPolicy,
  nowMs: number,
  protect?: string,
  mayRemove?: (name: string) => Promise<boolean>,
): Promise<LocalRetentionResult> {
  // Regular files only: a directory or link dropped under an archive's name is neither counted nor removed
  // (a directory made every run's retention fail, so that no archive was ever removed again).
  const items = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isFile() && SNAPSHOT_NAME_PATTERN.exec(e.name)?.[1] === db)
    .map(({ name }) => ({ name, createdAtMs: timeOfName(name) ?? 0 }));
  const plan = planRetention(items, policy, nowMs, protect);
  const kept = plan.keep.map((i) => i.name);
  const removed: string[] = [];
  for (const i of plan.remove) {
    if (mayRemove !== undefined && !(await mayRemove(i.name))) {
      kept.push(i.name);
      continue;
    }
    await rm(join(dir, i.name), { force: true });
    removed.push(i.name);
  }
  return { kept, removed };
}

/**
 * uploadedTo: whether `d` holds the archive `name` whole (its head's size is
 * the local file's), for a local retention that keeps only what the bucket
 * has: an archive of a run whose upload failed (the store down) was removed
 * by the next good run's keep-last-1 though it never reached the bucket
 * (review19). A head the credentials may not make (a write-only policy) is
 * taken as held, as the upload itself was (unchecked); any other failure
 * keeps the file for a later run.
 */
export function uploadedTo(d: S3Destination, dir: string): (name: string) => Promise<boolean> {
  return async (name) => {
    try {
      const [h, st] = await Promise.all([d.head(`${d.prefix}${name}`), stat(join(dir, name))]);
      return h.sizeBytes === st.size;
    } catch (err) {
      return err instanceof S3Error && err.code === 'accessDenied';
    }
  };
}

export interface ScheduledRunnerOptions {
  /** snapshot: a snapshot of the state now, opened (Node.downloadSnapshot(true)). */
  readonly snapshot: () => Promise<SnapshotHandle>;
  /** damaged: quarantines a stored snapshot whose copy found it damaged (Node.quarantineDamagedSnapshot): the run then takes one again, once. */
  readonly damaged?: (id: string) => Promise<boolean>;
  readonly dbName: string;
  readonly snapshotDir: string;
  readonly retention: RetentionPolicy;
  /** localRetention: the policy of the local directory (default `retention`). */
  readonly localRetention?: RetentionPolicy;
  readonly destination: S3Destination | null;
  readonly log: Logger;
  readonly now?: () => number;
  /**
   * reserveBytes: the free space a run's copy must leave on snapshotDir's file system (serve: --min-free-bytes,
   * as for exports and task files: checkExportSpace); a copy that would leave less fails `disk_full` before it
   * writes anything. Default 0 (none).
   */
  readonly reserveBytes?: number;
}

/** scheduledSnapshotRunner: the TaskRunner of one scheduled run (see the file comment). */
export function scheduledSnapshotRunner(o: ScheduledRunnerOptions): TaskRunner {
  const now = o.now ?? Date.now;
  return async (task, progress) => {
    const path = task.details.path;
    if (path === undefined) throw new Error('a scheduled snapshot task without a path');
    progress({ phase: 'snapshot' });
    // Copies of earlier runs that a crash left (a restarted run writes a new one): never removed otherwise.
    const stale = await removeStaleCopies(o.snapshotDir, (name) => SNAPSHOT_NAME_PATTERN.exec(name)?.[1] === o.dbName);
    if (stale.length > 0) o.log.info({ removed: stale }, 'temp copies of scheduled snapshots left by an earlier crash removed');
    const handle = await openAndExport(
      o.snapshot,
      o.damaged,
      path,
      (h) => progress({ path, bytesTotal: h.archiveBytes, digest: h.archiveSha256, index: h.meta.index, phase: 'copy', bytesDone: 0 }),
      (done) => progress({ bytesDone: done }),
      // Checked as copied, trusted or not (ExportCheck): retention removes the copies this one replaces.
      'checked',
      o.reserveBytes ?? 0,
    );
    try {
      const total = handle.archiveBytes;
      const base: TaskDetails = { path, bytesTotal: total, digest: handle.archiveSha256, index: handle.meta.index };
      let destination = path;
      if (o.destination !== null) {
        const d = o.destination;
        destination = d.url(`${d.prefix}${basename(path)}`);
        progress({ phase: 'upload', bytesDone: 0, destination });
        const startedMs = Date.now();
        const up = await d.upload(
          basename(path),
          // Read as GetSnapshot serves it: on its recorded hashes if this process hashed it (no hash here), else checked
          // chunk by chunk as read; the local copy just checked every chunk of it. The object carries its SHA-256 for
          // every download to check.
          () => handle.createServedReadStream(),
          { sha256: handle.archiveSha256, sizeBytes: total, index: handle.meta.index, term: handle.meta.term, id: handle.id },
          {
            sourceChecked: true,
            onProgress: (n) => progress({ bytesDone: n }),
            onRetry: (err, attempt) => o.log.warn({ destination, attempt, err: err.message }, 'upload of a scheduled snapshot failed; retrying'),
          },
        );
        if (up.unchecked !== undefined) {
          // A write-only policy (s3:PutObject, no s3:GetObject): the upload stands on the store's answer alone.
          o.log.warn({ destination, why: up.unchecked }, 'scheduled snapshot uploaded but not read back (the credentials may not head it): only the object store says it was kept whole');
        }
        const seconds = (Date.now() - startedMs) / 1000;
        o.log.info({ destination, bytes: total, seconds, mbPerSec: Number((total / 1e6 / Math.max(seconds, 1e-3)).toFixed(1)), attempts: up.attempts }, 'scheduled snapshot uploaded');
      }
      let removed = 0;
      let kept = 0;
      const localPolicy = o.localRetention ?? o.retention;
      if (hasRetention(o.retention) || hasRetention(localPolicy)) {
        progress({ phase: 'retention' });
        const at = now();
        // The run's own archive is kept whatever the other names say (a later-named one must not get it removed).
        // With a destination and no policy of its own the directory keeps only what the bucket holds besides the newest.
        const uploaded = o.destination !== null && o.localRetention !== undefined ? uploadedTo(o.destination, o.snapshotDir) : undefined;
        const local = await applyLocalRetention(o.snapshotDir, o.dbName, localPolicy, at, basename(path), uploaded);
        removed += local.removed.length;
        kept += local.kept.length;
        if (o.destination !== null && hasRetention(o.retention)) {
          const remote = await o.destination.applyRetention(o.dbName, o.retention, at, basename(path));
          removed += remote.removed.length;
          kept += remote.kept.length;
        }
        if (removed > 0) o.log.info({ removed, kept, local: local.removed }, 'scheduled snapshots removed by the retention policy');
      }
      return { ...base, bytesDone: total, destination, phase: 'done', removed, kept };
    } finally {
      handle.release();
    }
  };
}

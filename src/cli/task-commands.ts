/**
 * `snapcoord tasks ls|get|wait`: Meilisearch-style tasks of the endpoint node
 * (tasks belong to the node that runs them). `wait` polls until the task is
 * succeeded, failed or canceled and exits 0 only when it succeeded.
 */
import { performance } from 'node:perf_hooks';
import type { Command } from 'commander';
import { TaskClient } from '../client/task-client.js';
import { TaskFilter, type Task } from '../gen/snapcoord/v1/snapshot.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { callError, cliDial, clientOptions, endpointOf, formatBytes, jsonOut, positiveInt, table, visible, withClient, type ClientOpts } from './client-options.js';

/** TASK_STATUSES / TASK_TYPES: the values --status and --type accept. */
export const TASK_STATUSES = ['enqueued', 'processing', 'succeeded', 'failed', 'canceled'] as const;
export const TASK_TYPES = ['snapshotCreation', 'taskCancelation'] as const;
const FINISHED: readonly string[] = ['succeeded', 'failed', 'canceled'];

/** WAIT_POLL_MS: how often `tasks wait` asks. */
export const WAIT_POLL_MS = 250;
/** TASK_WAIT_MS_DEFAULT: how long `tasks wait` waits without --timeout-ms (an hour); TASK_WAIT_MS_MAX: the most it takes (a week). */
export const TASK_WAIT_MS_DEFAULT = 3_600_000;
export const TASK_WAIT_MS_MAX = 604_800_000;

function taskClient(endpoint: string): TaskClient {
  return new TaskClient(endpoint, cliDial());
}

/** parseUid: a task uid (a whole number); exit 2 otherwise. */
export function parseUid(text: string): bigint {
  if (!/^\d{1,18}$/.test(text)) throw new CliError(`uid: "${text}" is not a task uid (a whole number)`, EXIT_CONFIG);
  return BigInt(text);
}

/** parseList splits "a,b" and checks each value against `allowed` (exit 2 for anything else). */
export function parseList(name: string, text: string | undefined, allowed: readonly string[]): string[] {
  if (text === undefined) return [];
  const values = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const v of values) {
    if (!allowed.includes(v)) throw new CliError(`${name}: "${v}" is not one of ${allowed.join(', ')}`, EXIT_CONFIG);
  }
  return values;
}

/** taskJson: a Task as Meilisearch's JSON task object (null for unset fields). */
export function taskJson(t: Task): object {
  const d = t.details;
  return {
    uid: Number(t.uid),
    batchUid: t.batchUid === undefined ? null : Number(t.batchUid),
    indexUid: t.indexUid ?? null,
    status: t.status,
    type: t.type,
    canceledBy: t.canceledBy === undefined ? null : Number(t.canceledBy),
    details:
      d === undefined
        ? null
        : t.type === 'taskCancelation'
          ? { matchedTasks: Number(d.matchedTasks), canceledTasks: Number(d.canceledTasks), originalFilter: d.originalFilter }
          : {
              path: d.path,
              bytesDone: Number(d.bytesDone),
              bytesTotal: Number(d.bytesTotal),
              digest: d.digest,
              index: Number(d.index),
              ...((d.phase ?? '') !== '' ? { phase: d.phase, destination: d.destination ?? '', removed: Number(d.removed ?? 0n), kept: Number(d.kept ?? 0n) } : {}),
            },
    // The node's own code (disk_full, snapshot_creation_failed, internal): Meilisearch's type and link are the gateway's.
    error: t.error === undefined || t.error.message === '' ? null : { message: t.error.message, code: t.error.code },
    duration: t.duration === '' ? null : t.duration,
    enqueuedAt: t.enqueuedAt,
    startedAt: t.startedAt === '' ? null : t.startedAt,
    finishedAt: t.finishedAt === '' ? null : t.finishedAt,
  };
}

function detailsText(t: Task): string {
  const d = t.details;
  if (d === undefined) return '';
  if (t.type === 'taskCancelation') return `matched ${d.matchedTasks}, canceled ${d.canceledTasks}`;
  const parts: string[] = [];
  if (d.path !== '') parts.push(d.path);
  if (d.bytesTotal > 0n) parts.push(t.status === 'processing' ? `${formatBytes(Number(d.bytesDone))} of ${formatBytes(Number(d.bytesTotal))}` : formatBytes(Number(d.bytesTotal)));
  if (d.index > 0n) parts.push(`index ${d.index}`);
  if ((d.phase ?? '') !== '' && t.status === 'processing') parts.push(`phase ${d.phase}`);
  if ((d.destination ?? '') !== '' && d.destination !== d.path) parts.push(`to ${d.destination}`);
  if ((d.removed ?? 0n) > 0n) parts.push(`retention removed ${d.removed}`);
  return parts.join(', ');
}

function taskText(t: Task): string {
  const rows: [string, string][] = [
    ['uid', String(t.uid)],
    ['type', t.type],
    ['status', t.status],
    ['enqueued', t.enqueuedAt],
    ['started', t.startedAt || '-'],
    ['finished', t.finishedAt || '-'],
    ['duration', t.duration || '-'],
  ];
  if (t.batchUid !== undefined) rows.push(['batch', String(t.batchUid)]);
  if (t.canceledBy !== undefined) rows.push(['canceled by', String(t.canceledBy)]);
  const d = t.details;
  if (d !== undefined) {
    if (d.path !== '') rows.push(['path', d.path]);
    if (d.bytesTotal > 0n) rows.push(['bytes', `${d.bytesDone} of ${d.bytesTotal}`]);
    if (d.digest !== '') rows.push(['sha256', d.digest]);
    if (d.index > 0n) rows.push(['index', String(d.index)]);
    if ((d.phase ?? '') !== '') rows.push(['phase', d.phase ?? '']);
    if ((d.destination ?? '') !== '') rows.push(['destination', d.destination ?? '']);
    if ((d.phase ?? '') !== '') rows.push(['retention', `${d.removed ?? 0n} removed, ${d.kept ?? 0n} kept`]);
    if (t.type === 'taskCancelation') rows.push(['canceled', `${d.canceledTasks} of ${d.matchedTasks} matched (${d.originalFilter})`]);
  }
  if (t.error !== undefined && t.error.message !== '') rows.push(['error', `${t.error.code}: ${t.error.message}`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  // The values are the server's (a task's error can hold what an S3 store said): shown, never obeyed by the terminal.
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${visible(v)}`).join('\n');
}

async function getTask(c: TaskClient, uid: bigint, deadlineMs: number): Promise<Task> {
  const r = await c.getTask(uid, { deadlineMs });
  if (r.task === undefined) throw new CliError(`the node answered without task ${uid}`);
  return r.task;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * waitForTask polls task `uid` every WAIT_POLL_MS until it is succeeded,
 * failed or canceled, for at most `timeoutMs`, timed on the monotonic clock
 * (performance.now): a wall clock stepped back (NTP, a resumed VM) held a
 * wait timed on Date.now for the step's length. `onStatus` hears each new
 * status. Errors: CliError "is still STATUS after N ms"; a failed call's.
 */
export async function waitForTask(c: TaskClient, uid: bigint, timeoutMs: number, onStatus: (status: string) => void = () => undefined): Promise<Task> {
  const giveUpAt = performance.now() + timeoutMs;
  let last = '';
  for (;;) {
    let t: Task;
    try {
      t = await getTask(c, uid, Math.max(1, Math.min(5_000, Math.ceil(giveUpAt - performance.now()))));
    } catch (err) {
      // A poll whose deadline was the wait's own (a slow answer at the end): the wait ran out, as the task last was.
      if (last !== '' && performance.now() >= giveUpAt) throw new CliError(`task ${uid} is still ${last} after ${timeoutMs} ms`);
      throw err;
    }
    if (FINISHED.includes(t.status)) return t;
    if (t.status !== last) onStatus(t.status);
    last = t.status;
    if (performance.now() + WAIT_POLL_MS > giveUpAt) throw new CliError(`task ${uid} is still ${t.status} after ${timeoutMs} ms`);
    await sleep(WAIT_POLL_MS);
  }
}

/** addTaskCommands adds `tasks ls|get|wait` to `program`. */
export function addTaskCommands(program: Command): void {
  const tasks = program.command('tasks').description("list, show and wait for the endpoint node's tasks");

  clientOptions(
    tasks
      .command('ls')
      .option('--status <s,...>', `only these statuses (${TASK_STATUSES.join(', ')})`)
      .option('--type <t,...>', `only these types (${TASK_TYPES.join(', ')})`)
      .option('--limit <n>', 'at most N tasks (1..1000, default 20)')
      .option('--from <uid>', 'start from this uid (newest first)')
      .option('--json', 'print Meilisearch\'s {results,total,limit,from,next} as JSON')
      .description('list tasks, newest first'),
  ).action(async (opts: ClientOpts & { status?: string; type?: string; limit?: string; from?: string; json?: boolean }) => {
    const statuses = parseList('status', opts.status, TASK_STATUSES);
    const types = parseList('type', opts.type, TASK_TYPES);
    const limit = opts.limit === undefined ? 20 : positiveInt('limit', opts.limit, 1, 1000);
    const from = opts.from === undefined ? undefined : parseUid(opts.from);
    const res = await withClient(opts, taskClient, (c, deadlineMs) =>
      c.listTasks({ filter: TaskFilter.fromPartial({ statuses, types }), limit, reverse: false, ...(from !== undefined ? { from } : {}) }, { deadlineMs }),
    );
    if (opts.json === true) {
      jsonOut({
        results: res.results.map(taskJson),
        total: Number(res.total),
        limit: res.limit,
        from: res.from === undefined ? null : Number(res.from),
        next: res.next === undefined ? null : Number(res.next),
      });
      return;
    }
    if (res.results.length === 0) {
      process.stderr.write('no tasks match\n');
      return;
    }
    const rows = res.results.map((t) => [String(t.uid), t.type, t.status, t.enqueuedAt, t.duration || '-', detailsText(t)]);
    process.stdout.write(`${table(['UID', 'TYPE', 'STATUS', 'ENQUEUED', 'DURATION', 'DETAILS'], rows)}\n`);
    if (res.next !== undefined) process.stderr.write(`(${res.results.length} of ${res.total}; next page: --from ${res.next})\n`);
  });

  clientOptions(tasks.command('get').argument('<uid>').option('--json', 'print the task as JSON').description('show one task')).action(
    async (uidText: string, opts: ClientOpts & { json?: boolean }) => {
      const uid = parseUid(uidText);
      const t = await withClient(opts, taskClient, (c, deadlineMs) => getTask(c, uid, deadlineMs));
      if (opts.json === true) jsonOut(taskJson(t));
      else process.stdout.write(`${taskText(t)}\n`);
    },
  );

  tasks
    .command('wait')
    .argument('<uid>')
    .option('--endpoint <host:port>', 'node to talk to (env SNAPCOORD_ENDPOINT, default 127.0.0.1:7001)')
    .option('--timeout-ms <ms>', `give up after this long (default ${TASK_WAIT_MS_DEFAULT}, an hour; at most ${TASK_WAIT_MS_MAX})`)
    .option('--json', 'print the finished task as JSON')
    .description('wait until the task succeeded, failed or was canceled (exit 0 only when it succeeded)')
    .action(async (uidText: string, opts: ClientOpts & { json?: boolean }) => {
      const uid = parseUid(uidText);
      const endpoint = endpointOf(opts);
      const timeoutMs = opts.timeoutMs === undefined ? TASK_WAIT_MS_DEFAULT : positiveInt('timeout-ms', opts.timeoutMs, 1, TASK_WAIT_MS_MAX);
      const c = taskClient(endpoint);
      let t: Task;
      try {
        t = await waitForTask(c, uid, timeoutMs, (status) => {
          if (process.stderr.isTTY) process.stderr.write(`task ${uid}: ${status}\n`);
        });
      } catch (err) {
        throw callError(err, endpoint);
      } finally {
        c.close();
      }
      if (opts.json === true) jsonOut(taskJson(t));
      else process.stdout.write(`${visible(`task ${uid} ${t.status}${t.duration !== '' ? ` in ${t.duration}` : ''}${detailsText(t) !== '' ? `: ${detailsText(t)}` : ''}`)}\n`);
      if (t.status !== 'succeeded') {
        const why = t.error !== undefined && t.error.message !== '' ? `: ${t.error.message}` : '';
        throw new CliError(`task ${uid} ${t.status}${why}`);
      }
    });
}

/**
 * TaskQueue on real files (issue 14 item 10): a bounded queue, snapshot tasks
 * batched into one run, finished tasks trimmed past a retention count, and a
 * journal that grows by one record per change (fsyncs batched), replayed and
 * compacted at open.
 */
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { TASK_ERROR_CHARS_MAX, TaskQueue, TaskQueueError, type Task, type TaskDetails, type TaskRunner } from '../../../src/ops/task-queue.js';
import { fillFs, tmpfsUnderTemp, unmountTmpfs } from '../../harness/tmpfs.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** Gate: a promise the test opens when it wants the runner to go on. */
function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe('TaskQueue (journal, bounds, batches)', function () {
  this.timeout(60_000);
  let dir: string;
  let file: string;
  const queues: TaskQueue[] = [];
  const openQueue = async (runners: Record<string, TaskRunner>, opts: Parameters<typeof TaskQueue.open>[3] = {}): Promise<TaskQueue> => {
    const q = await TaskQueue.open(file, runners, silent, opts);
    queues.push(q);
    return q;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-tasks-'));
    file = join(dir, 'tasks.json');
  });
  afterEach(async () => {
    for (const q of queues.splice(0)) await q.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('a failed task keeps its message and snapcoord\'s own code (disk_full for a full disk), no product vocabulary; both survive a reopen', async () => {
    let fail: Error = new Error('x');
    const q = await openQueue({
      snapshotCreation: async () => {
        throw fail;
      },
    });
    fail = Object.assign(new Error("ENOSPC: no space left on device, write '/d/snapshots/tmp'"), { code: 'ENOSPC' });
    const full = await q.enqueue('snapshotCreation', { path: '/x/a.snapshot' });
    await q.idle();
    fail = new Error('the archive could not be read');
    const other = await q.enqueue('snapshotCreation', { path: '/x/b.snapshot' });
    await q.idle();
    const expect = (r: TaskQueue): void => {
      assert.equal(r.get(full.uid).status, 'failed');
      assert.deepEqual(r.get(full.uid).error, { message: "ENOSPC: no space left on device, write '/d/snapshots/tmp'", code: 'disk_full' });
      assert.deepEqual(r.get(other.uid).error, { message: 'the archive could not be read', code: 'snapshot_creation_failed' });
    };
    expect(q);
    await q.close();
    expect(await openQueue({}));
  });

  it('a failed task keeps at most TASK_ERROR_CHARS_MAX of its error message (a remote server\'s huge error body is not journaled whole)', async () => {
    const huge = `S3Error: upload to s3://b/x: InternalError (HTTP 500): ${'A'.repeat(1_000_000)}`;
    const q = await openQueue({
      snapshotCreation: async () => {
        throw new Error(huge);
      },
    });
    const t = await q.enqueue('snapshotCreation', { path: '/x/a.snapshot' });
    await q.idle();
    const message = q.get(t.uid).error?.message ?? '';
    assert.equal(message.length, TASK_ERROR_CHARS_MAX);
    assert.ok(message.startsWith('S3Error: upload to s3://b/x: InternalError (HTTP 500): AAA') && message.endsWith('…'));
    assert.ok((await stat(file)).size < 3 * TASK_ERROR_CHARS_MAX + 4096, `journal of ${(await stat(file)).size} bytes`);
  });

  it('2,000 snapshot tasks in a burst: the queue holds at most its cap, its first task runs, the rest as one batch, the journal grows O(1) per task', async () => {
    const g = gate();
    const runs: Task[] = [];
    const q = await openQueue(
      {
        snapshotCreation: async (task, progress) => {
          runs.push(task);
          await g.wait;
          progress({ bytesDone: 1 });
          return { path: task.details.path ?? '', bytesDone: 10, bytesTotal: 10, digest: `d${runs.length}`, index: runs.length };
        },
      },
      { enqueuedMax: 1000 },
    );
    const before = { ...q.stats };
    const results = await Promise.allSettled(Array.from({ length: 2000 }, () => q.enqueue('snapshotCreation', { path: '/x/db.snapshot' })));
    const accepted = results.filter((r): r is PromiseFulfilledResult<Task> => r.status === 'fulfilled').map((r) => r.value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(accepted.length, 1000, 'exactly the cap is accepted');
    assert.equal(refused.length, 1000);
    for (const r of refused) assert.ok(r.reason instanceof TaskQueueError && r.reason.code === 'too_many_tasks', String(r.reason));
    assert.equal(q.depth(), 1000);
    // A task runs only once its record is durable: the burst's first write held the first task alone, which runs
    // (processing ones count against the cap too); the other 999, durable while it runs, make one batch after it.
    assert.equal(runs.length, 1);
    await assert.rejects(q.enqueue('snapshotCreation', { path: '/x/db.snapshot' }), (e: TaskQueueError) => e.code === 'too_many_tasks');
    g.open();
    await q.idle();
    assert.equal(runs.length, 2, 'two snapshot runs for the burst: its first task, then one batch of the rest');
    const done = q.list({ uids: accepted.map((t) => t.uid) }, 1000, null, true).results;
    assert.equal(done.length, 1000);
    assert.ok(done.every((t) => t.status === 'succeeded'));
    const [alone, ...batch] = done;
    assert.equal(alone?.details.digest, 'd1');
    assert.equal(new Set(batch.map((t) => t.batchUid)).size, 1, 'one batchUid shared by the batch');
    assert.notEqual(alone?.batchUid, batch[0]?.batchUid);
    assert.ok(batch.every((t) => t.details.digest === 'd2' && t.details.bytesDone === 10 && t.startedAt === batch[0]?.startedAt && t.finishedAt === batch[0]?.finishedAt));
    // Disk: three records per task (enqueued, processing, finished), each write serving many tasks, no rewrite of the queue.
    const records = q.stats.records - before.records;
    assert.equal(records, 3 * 1000);
    const bytesPerTask = (q.stats.appendedBytes - before.appendedBytes + q.stats.compactedBytes - before.compactedBytes) / 1000;
    assert.ok(bytesPerTask < 1500, `${bytesPerTask} bytes written per task`);
    assert.ok(q.stats.syncs - before.syncs <= 1000, `${q.stats.syncs - before.syncs} fsyncs for 1000 tasks`);
    assert.equal(q.stats.compactions, before.compactions, 'no compaction below the threshold');
    // Room again once the batch is done; tasks enqueued while a run goes on join the next run together.
    const g2 = gate();
    runs.length = 0;
    await q.close();
    const q2 = await openQueue({ snapshotCreation: async (task) => (runs.push(task), await g2.wait, { index: runs.length }) });
    const first = await q2.enqueue('snapshotCreation', { path: '/x/db.snapshot' });
    await new Promise((r) => setImmediate(r));
    const later = await Promise.all(Array.from({ length: 20 }, () => q2.enqueue('snapshotCreation', { path: '/x/db.snapshot' })));
    g2.open();
    await q2.idle();
    assert.equal(runs.length, 2);
    assert.notEqual(q2.get(first.uid).batchUid, q2.get(later[0]?.uid ?? -1).batchUid);
    assert.equal(new Set(later.map((t) => q2.get(t.uid).batchUid)).size, 1);
  });

  it('keeps at most finishedKeptMax finished tasks, in memory and after a restart', async () => {
    const runner: TaskRunner = async () => ({ bytesDone: 1 });
    const q = await openQueue({ snapshotCreation: runner }, { finishedKeptMax: 50 });
    for (let i = 0; i < 120; i++) {
      await q.enqueue('snapshotCreation', { path: `/p/${i}` }); // different paths: one task per run
      await q.idle();
    }
    const page = q.list({}, 1000);
    assert.equal(page.total, 50);
    assert.equal(page.results.at(-1)?.uid, 70, 'the oldest were trimmed');
    await q.close();
    const again = await openQueue({ snapshotCreation: runner }, { finishedKeptMax: 50 });
    assert.equal(again.list({}, 1000).total, 50);
    const t = await again.enqueue('snapshotCreation', { path: '/p' });
    assert.equal(t.uid, 120, 'uids keep counting after a restart');
  });

  it('replays the journal after a restart: processing tasks run again, a torn last record is dropped, the journal is compacted', async () => {
    const g = gate();
    const q = await openQueue({ snapshotCreation: async () => g.wait.then(() => ({})) });
    await q.enqueue('snapshotCreation', { path: '/a' });
    await q.enqueue('snapshotCreation', { path: '/b' });
    await q.close(); // the first was processing, the second enqueued
    await appendFile(file, '{"task":{"uid":7,"stat'); // a crash in the middle of a write
    const ran: string[] = [];
    const again = await openQueue({
      snapshotCreation: async (task): Promise<TaskDetails> => {
        ran.push(task.details.path ?? '');
        return {};
      },
    });
    await again.idle();
    assert.deepEqual(ran, ['/a', '/b']);
    assert.equal(again.list({}, 10).total, 2);
    const text = await readFile(file, 'utf8');
    assert.ok(!text.includes('"stat"'), 'the torn record is gone after the compaction at open');
    const lines = text.trim().split('\n');
    assert.equal(JSON.parse(lines[0] ?? '').v, 1);
  });

  it('refuses a journal with a malformed record before its last line; reads the old tasks.json format', async () => {
    await writeFile(file, '{"v":1,"nextUid":0,"nextBatchUid":0}\nnot json\n{"task":{"uid":1}}\n');
    await assert.rejects(TaskQueue.open(file, {}, silent), /line 2 is not valid JSON/);
    const old: Task = {
      uid: 4,
      batchUid: 4,
      status: 'succeeded',
      type: 'snapshotCreation',
      canceledBy: null,
      details: { path: '/old' },
      error: null,
      enqueuedAt: '2026-01-01T00:00:00.000Z',
      startedAt: '2026-01-01T00:00:00.000Z',
      finishedAt: '2026-01-01T00:00:01.000Z',
    };
    await writeFile(file, JSON.stringify({ nextUid: 5, tasks: [old] }));
    const q = await openQueue({});
    assert.deepEqual(q.get(4), old);
    assert.equal((await q.enqueue('snapshotCreation', { path: '/n' })).uid, 5);
    assert.match(await readFile(file, 'utf8'), /^\{"v":1,/);
  });

  it('compacts the journal once it outgrows its threshold; cancelations are journaled', async () => {
    const g = gate();
    const q = await openQueue({ snapshotCreation: async () => g.wait.then(() => ({})) }, { journalCompactBytes: 4096 });
    const compactionsAtOpen = q.stats.compactions;
    for (let i = 0; i < 40; i++) await q.enqueue('snapshotCreation', { path: '/c' });
    assert.ok(q.stats.compactions > compactionsAtOpen, 'compacted while growing');
    assert.ok((await stat(file)).size < 3 * 4096 + 40 * 400);
    const c = await q.cancel({ statuses: ['enqueued'] }, 'statuses=enqueued');
    assert.equal(c.details.canceledTasks, 39);
    g.open();
    await q.idle();
    await q.close();
    const again = await openQueue({});
    assert.equal(again.list({ statuses: ['canceled'] }, 100).total, 39);
    assert.equal(again.get(c.uid).type, 'taskCancelation');
  });

  it('an enqueue whose record was written but not synced (EIO at fsync) is not read back after a crash: the journal is cut back to where it ended', async () => {
    const first = await openQueue({ snapshotCreation: async () => ({}) });
    const kept = await first.enqueue('snapshotCreation', { path: '/kept' });
    await first.idle();
    await first.close();
    const q = await openQueue({ snapshotCreation: async () => ({}) });
    const handle = (q as unknown as { handle: { datasync: () => Promise<void> } }).handle;
    const datasync = handle.datasync.bind(handle);
    let failed = false;
    handle.datasync = async () => {
      if (failed) return datasync();
      failed = true;
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    };
    await assert.rejects(q.enqueue('snapshotCreation', { path: '/refused' }), /EIO/);
    // The process dies here (no close, no later write): a restart reads what the file holds.
    const again = await TaskQueue.open(file, {}, silent, {});
    queues.push(again);
    assert.deepEqual(again.list({}, 1000, null, true).results.map((t) => t.uid), [kept.uid], 'the refused task is not there after the restart');
    assert.equal(again.get(kept.uid).status, 'succeeded');
  });

  it('an enqueue that cannot be journaled (a full disk) fails with nothing enqueued: the task never runs, is not listed, and is not there after a restart', async function () {
    const fs = await tmpfsUnderTemp('snapcoord-tasks-full-', 'size=256k,mode=0700', 'task queue on a full disk');
    if (!fs.mounted) {
      await rm(fs.dir, { recursive: true, force: true });
      this.skip();
    }
    try {
      file = join(fs.mnt, 'tasks.json');
      const g = gate();
      const ran: string[] = [];
      const q = await openQueue({
        snapshotCreation: async (task): Promise<TaskDetails> => {
          ran.push(task.details.path ?? '');
          await g.wait;
          return {};
        },
      });
      const first = await q.enqueue('snapshotCreation', { path: '/first' }); // runs, held by the gate
      const filler = await fillFs(fs.mnt);
      const accepted: string[] = [];
      const acceptedUids = [first.uid];
      let refused: { path: string; err: unknown } | null = null;
      for (let i = 0; i < 200 && refused === null; i++) {
        const path = `/t${i}`;
        try {
          acceptedUids.push((await q.enqueue('snapshotCreation', { path })).uid);
          accepted.push(path);
        } catch (err) {
          refused = { path, err };
        }
      }
      assert.ok(refused !== null, 'an enqueue failed once the disk was full');
      assert.equal((refused.err as NodeJS.ErrnoException).code, 'ENOSPC', String(refused.err));
      const listed = (): string[] => q.list({}, 1000).results.map((t) => t.details.path ?? '');
      assert.ok(!listed().includes(refused.path), 'the refused task is not listed');
      await rm(filler); // space freed
      g.open();
      await q.idle();
      assert.deepEqual(ran, ['/first', ...accepted], 'the refused task never ran');
      await q.close();
      const again = await openQueue({});
      assert.deepEqual(again.list({}, 1000, null, true).results.map((t) => t.uid), acceptedUids, 'the accepted tasks, and only they');
      await again.close();
    } finally {
      for (const q of queues.splice(0)) await q.close().catch(() => undefined);
      await unmountTmpfs(fs.mnt);
      await rm(fs.dir, { recursive: true, force: true });
    }
  });

  it('a cancelation that cannot be journaled (a full disk) fails with nothing canceled: the tasks stay enqueued, run, and no cancelation task is kept', async function () {
    const fs = await tmpfsUnderTemp('snapcoord-tasks-cancel-', 'size=256k,mode=0700', 'task cancelation on a full disk');
    if (!fs.mounted) {
      await rm(fs.dir, { recursive: true, force: true });
      this.skip();
    }
    try {
      file = join(fs.mnt, 'tasks.json');
      const g = gate();
      const ran: string[] = [];
      const q = await openQueue({
        snapshotCreation: async (task): Promise<TaskDetails> => {
          ran.push(task.details.path ?? '');
          await g.wait;
          return {};
        },
      });
      await q.enqueue('snapshotCreation', { path: '/first' }); // runs, held by the gate
      const waiting = [await q.enqueue('snapshotCreation', { path: '/a' }), await q.enqueue('snapshotCreation', { path: '/b' })];
      const filler = await fillFs(fs.mnt);
      // A cancelation's record is small: fill what the journal's last page still holds with tasks first.
      for (let i = 0; i < 200; i++) {
        try {
          waiting.push(await q.enqueue('snapshotCreation', { path: `/t${i}` }));
        } catch {
          break;
        }
      }
      await assert.rejects(q.cancel({ statuses: ['enqueued'] }, 'statuses=enqueued'), (e: NodeJS.ErrnoException) => e.code === 'ENOSPC');
      assert.deepEqual(q.list({ types: ['taskCancelation'] }).results, [], 'no cancelation task is kept');
      assert.deepEqual(waiting.map((t) => q.get(t.uid).status), waiting.map(() => 'enqueued'), 'nothing was canceled');
      await rm(filler);
      g.open();
      await q.idle();
      assert.deepEqual(ran, ['/first', ...waiting.map((t) => t.details.path ?? '')], 'they ran, oldest first');
      await q.close();
      const again = await openQueue({});
      assert.ok(waiting.every((t) => again.get(t.uid).status === 'succeeded'));
      assert.equal(again.list({ types: ['taskCancelation'] }).total, 0);
      await again.close();
    } finally {
      for (const q of queues.splice(0)) await q.close().catch(() => undefined);
      await unmountTmpfs(fs.mnt);
      await rm(fs.dir, { recursive: true, force: true });
    }
  });
});

/**
 * 2,000 POST /snapshots in a burst (issue 14 item 10), through the real
 * gateway and the real node (gRPC SnapshotService, TaskQueue, snapshot task
 * runner): the queue holds at most its cap and answers the rest 429 in
 * Meilisearch's style; every task enqueued while a run goes on ends in one
 * snapshot run, one batchUid, one result; the journal grows by O(1) bytes
 * and records per task and is never rewritten whole for a task.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';

import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import type { TaskRunner } from '../../../src/ops/task-queue.js';
import { SnapshotNode } from '../api/snapshot-node.js';

const CAP = 1000;
const BURST = 2000;

describe('gateway: 2,000 POST /snapshots in a burst', function () {
  this.timeout(120_000);
  let n: SnapshotNode;
  let gw: Gateway;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let runs = 0;

  before(async () => {
    // The real runner, held at its start until the burst is in, so the queue fills deterministically.
    const wrapRunner = (real: TaskRunner): TaskRunner => async (task, progress) => {
      runs++;
      await held;
      return real(task, progress);
    };
    n = await SnapshotNode.start({ tasks: { enqueuedMax: CAP }, wrapRunner });
    gw = createGateway({ target: n.api.address, auth: { adminKey: '', keys: [], insecureNoAuth: true } });
    await gw.app.ready();
  });
  after(async () => {
    release();
    await gw?.close();
    await n?.close();
  });

  it('bounded queue (429 beyond the cap), one snapshot run for the batch, O(1) journal writes per task', async () => {
    const stats0 = { ...n.tasks.stats };
    const journal0 = (await stat(n.tasksFile)).size;
    // Warm up: one task starts a run, held; everything after it waits for the next run.
    const first = await gw.app.inject({ method: 'POST', url: '/snapshots', headers: { 'content-type': 'application/json' }, payload: '' });
    assert.equal(first.statusCode, 202, first.body);
    const answers = await Promise.all(
      Array.from({ length: BURST }, () => gw.app.inject({ method: 'POST', url: '/snapshots', headers: { 'content-type': 'application/json' }, payload: '' })),
    );
    const accepted = answers.filter((a) => a.statusCode === 202);
    const refused = answers.filter((a) => a.statusCode === 429);
    assert.equal(accepted.length + refused.length, BURST, answers.find((a) => a.statusCode !== 202 && a.statusCode !== 429)?.body);
    assert.equal(accepted.length, CAP - 1, 'the queue took exactly up to its cap');
    const body = JSON.parse(refused[0]?.body ?? '{}') as { code?: string; type?: string; message?: string };
    assert.equal(body.code, 'too_many_requests');
    assert.equal(body.type, 'system');
    assert.match(body.message ?? '', /task queue is full/);
    assert.equal(n.tasks.depth(), CAP);
    const uids = accepted.map((a) => (JSON.parse(a.body) as { taskUid: number }).taskUid);

    release();
    await n.tasks.idle();
    assert.equal(runs, 2, 'the held first run, then one run for the whole burst');
    const tasks = await Promise.all(uids.map(async (uid) => JSON.parse((await gw.app.inject({ method: 'GET', url: `/tasks/${uid}` })).body) as Record<string, unknown>));
    assert.ok(tasks.every((t) => t['status'] === 'succeeded'), JSON.stringify(tasks.find((t) => t['status'] !== 'succeeded')));
    assert.equal(new Set(tasks.map((t) => t['batchUid'])).size, 1, 'one batchUid for the batch');
    assert.equal(new Set(tasks.map((t) => JSON.stringify(t['details']))).size, 1, 'one result for the batch');
    assert.notEqual(tasks[0]?.['batchUid'], (JSON.parse((await gw.app.inject({ method: 'GET', url: `/tasks/${(JSON.parse(first.body) as { taskUid: number }).taskUid}` })).body) as Record<string, unknown>)['batchUid']);

    // Disk: 3 records per task (enqueued, processing, finished); bytes per task bounded; no whole rewrite.
    const tasksWritten = CAP; // the warm-up task and the CAP - 1 of the burst
    const s = n.tasks.stats;
    assert.equal(s.records - stats0.records, 3 * tasksWritten);
    assert.equal(s.compactions, stats0.compactions, 'the journal was never rewritten');
    const bytesPerTask = (s.appendedBytes - stats0.appendedBytes) / tasksWritten;
    assert.ok(bytesPerTask < 1500, `${bytesPerTask} bytes appended per task`);
    assert.ok(s.writes - stats0.writes <= tasksWritten, `${s.writes - stats0.writes} writes for ${tasksWritten} tasks (fsyncs batched)`);
    const journal1 = (await stat(n.tasksFile)).size;
    assert.equal(journal1 - journal0, s.appendedBytes - stats0.appendedBytes, 'the file grew by exactly the appended records');
    assert.equal((await readFile(n.tasksFile, 'utf8')).split('\n').filter((l) => l !== '').length, 1 + s.records, 'a header, then one line per record');
  });
});

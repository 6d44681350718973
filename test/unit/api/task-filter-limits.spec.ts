/**
 * TaskService filters from a caller holding snapshots.read (real gRPC): a
 * filter list longer than TASK_FILTER_VALUES_MAX is refused INVALID_ARGUMENT
 * before any task is looked at, and what a cancelation records of its filter
 * (details.originalFilter, kept with up to 10,000 finished tasks in memory and
 * in the task journal) is at most ORIGINAL_FILTER_CHARS_MAX characters.
 * Before, ListTasks with 200,000 uids over 10,000 kept tasks held the event
 * loop (and the node's Raft ticks) for 4.7 s per call, and each CancelTasks
 * kept its whole filter (up to a request's 1.5 MiB) in the journal, which
 * is refused at the next start once it passes 256 MiB.
 */
import assert from 'node:assert/strict';
import type * as grpc from '@grpc/grpc-js';

import { TaskFilter, type CancelTasksResponse, type Task } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { ORIGINAL_FILTER_CHARS_MAX, TASK_FILTER_VALUES_MAX } from '../../../src/ops/task-queue.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

describe('TaskService: filter sizes (real gRPC)', function () {
  this.timeout(60_000);
  let n: SnapshotNode;

  before(async () => {
    n = await SnapshotNode.start();
  });
  after(async () => {
    await n?.close();
  });

  it(`a filter list of more than ${TASK_FILTER_VALUES_MAX} values is refused INVALID_ARGUMENT, on ListTasks and CancelTasks`, async () => {
    const tasks = n.taskClient();
    const many = Array.from({ length: TASK_FILTER_VALUES_MAX + 1 }, (_, i) => BigInt(1_000_000 + i));
    const filters = [
      TaskFilter.fromPartial({ uids: many }),
      TaskFilter.fromPartial({ canceledBy: many }),
      TaskFilter.fromPartial({ batchUids: many }),
      TaskFilter.fromPartial({ statuses: Array.from({ length: TASK_FILTER_VALUES_MAX + 1 }, () => 'enqueued') }),
    ];
    for (const filter of filters) {
      for (const call of [
        () => unaryCall((r, cb) => tasks.listTasks(r, cb), { filter, limit: 10 }),
        () => unaryCall((r, cb) => tasks.cancelTasks(r, cb), { filter }),
      ]) {
        await assert.rejects(call(), (e: grpc.ServiceError) => {
          assert.equal(e.code, 3, e.message); // INVALID_ARGUMENT
          assert.match(e.details, new RegExp(`at most ${TASK_FILTER_VALUES_MAX} values`));
          return true;
        });
      }
    }
    // At the cap it is taken.
    const ok = await unaryCall<{ results: Task[] }>((r, cb) => tasks.listTasks(r, cb), { filter: TaskFilter.fromPartial({ uids: many.slice(1) }), limit: 10 });
    assert.equal(ok.results.length, 0);
  });

  it(`a cancelation records at most ${ORIGINAL_FILTER_CHARS_MAX} characters of its filter`, async () => {
    const tasks = n.taskClient();
    const uids = Array.from({ length: TASK_FILTER_VALUES_MAX }, (_, i) => BigInt(Number.MAX_SAFE_INTEGER - i));
    const r = await unaryCall<CancelTasksResponse>((q, cb) => tasks.cancelTasks(q, cb), { filter: TaskFilter.fromPartial({ uids }) });
    const text = r.task?.details?.originalFilter ?? '';
    assert.ok(text.length > 0 && text.length <= ORIGINAL_FILTER_CHARS_MAX, `originalFilter is ${text.length} characters`);
    assert.ok(text.startsWith('{"uids":[9007199254740991,'), text.slice(0, 40));
  });
});

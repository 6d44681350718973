/**
 * `snapcoord tasks wait` (waitForTask) against a real node whose task is held
 * processing: it gives up at its deadline, timed on the monotonic clock, also
 * when the wall clock is stepped back an hour mid-wait (NTP, a resumed VM).
 * Before, the wait was timed on Date.now: a step back held it for the step's
 * length (and without --timeout-ms it had no deadline at all).
 */
import assert from 'node:assert/strict';

import { TASK_WAIT_MS_DEFAULT, waitForTask } from '../../../src/cli/task-commands.js';
import { TaskClient } from '../../../src/client/task-client.js';
import type { TaskRunner } from '../../../src/ops/task-queue.js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';
import { until } from '../../harness/until.js';
import { SnapshotNode } from '../api/snapshot-node.js';

describe('tasks wait: a deadline on the monotonic clock', function () {
  this.timeout(60_000);
  let n: SnapshotNode;
  let release: (() => void) | null = null;
  const clocks = new SteppedClocks();

  before(async () => {
    n = await SnapshotNode.start({
      // The task stays processing until the test lets it go.
      wrapRunner:
        (real): TaskRunner =>
        async (task, progress) => {
          await new Promise<void>((r) => (release = r));
          return real(task, progress);
        },
    });
  });
  after(async () => {
    clocks.restore();
    release?.();
    await n?.close();
  });

  it('gives up after its timeout although the wall clock stepped back an hour mid-wait', async () => {
    assert.equal(TASK_WAIT_MS_DEFAULT, 3_600_000, 'the documented default (README, --help)');
    const task = await n.tasks.enqueue('snapshotCreation', { path: n.snapshotPath });
    await until('the task to be processing', 10_000, () => (release !== null ? true : undefined));
    const c = new TaskClient(n.api.address);
    clocks.install();
    try {
      const seen: string[] = [];
      const wait = waitForTask(c, BigInt(task.uid), 4_000, (s) => {
        seen.push(s);
        clocks.stepWall(-HOUR_MS);
      });
      const guard = new Promise<never>((_r, reject) => setTimeout(() => reject(new Error('still waiting 20 s later: the step back held it')), 20_000).unref());
      await assert.rejects(Promise.race([wait, guard]), /task \d+ is still processing after 4000 ms/);
      assert.deepEqual(seen, ['processing']);
    } finally {
      clocks.restore();
      c.close();
    }
    release?.();
    const c2 = new TaskClient(n.api.address);
    try {
      assert.equal((await waitForTask(c2, BigInt(task.uid), 20_000)).status, 'succeeded');
    } finally {
      c2.close();
    }
  });
});

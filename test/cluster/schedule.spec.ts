/** --schedule-snapshot SECS: a node enqueues snapshot tasks on its own, and each writes <snapshot-dir>/<db-name>.snapshot. */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { TaskClient } from '../../src/client/task-client.js';
import { TaskFilter } from '../../src/gen/snapcoord/v1/snapshot.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

describe('cluster: scheduled snapshots', function () {
  this.timeout(60_000);
  let dir = '';
  let p: ServeProcess | undefined;
  let client: TaskClient | undefined;

  after(async () => {
    client?.close();
    await p?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('--schedule-snapshot 1 enqueues snapshotCreation tasks that succeed and write the file', async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-schedule-'));
    const snapshotDir = join(dir, 'snapshots');
    const started = await startServes(['s1'], (id, { s1 }) => ({
      id,
      grpc: s1.grpc,
      peer: s1.peer,
      peers: `s1=${s1.peer}`,
      dataDir: join(dir, 's1'),
      extra: ['--schedule-snapshot', '1', '--snapshot-dir', snapshotDir, '--db-name', 'data.ms'],
    }));
    p = started.procs.s1;
    const address = started.addrs.s1.grpc;
    client = new TaskClient(address);
    const c = client;
    const done = await until('two scheduled snapshot tasks to succeed', 30_000, async () => {
      const r = await c.listTasks({ filter: TaskFilter.fromPartial({ statuses: ['succeeded'], types: ['snapshotCreation'] }), limit: 10, reverse: false });
      return r.results.length >= 2 ? r : undefined;
    });
    assert.ok(done.results.every((t) => t.details?.path === join(snapshotDir, 'data.ms.snapshot')));
    assert.equal((await stat(join(snapshotDir, 'data.ms.snapshot'))).mode & 0o777, 0o400);
  });
});

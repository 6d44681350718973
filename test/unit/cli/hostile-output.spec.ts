/**
 * What a client command prints of a server's answer cannot drive the
 * operator's terminal: a node (or whoever answers at its address; a hostile
 * S3 endpoint whose error text a task keeps) answering with escape sequences
 * (ESC, BEL, C1 controls) in a task's status, path or error, or in a kept
 * snapshot's id, has them printed as visible \xNN, in tables, in `tasks get`,
 * and in the one error line a failed command ends with. Before, they reached
 * the terminal raw: an OSC 52 could write the operator's clipboard, a CSI
 * clear the screen or rewrite what was shown.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { SnapshotServiceService, TaskServiceService, type SnapshotInfo, type Task } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { describeRun, runCli } from '../../harness/child.js';

/** EVIL: an OSC 52 (clipboard write) with BEL, a CSI clear screen, a C1 CSI, and a newline to forge a line. */
const EVIL = '\u001b]52;c;cm0gLXJmIH4K\u0007\u001b[2J\u009b31m\nsnapcoord: all good';
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

const task: Task = {
  uid: 0n,
  status: 'failed',
  type: `snapshotCreation${EVIL}`,
  details: { path: `/x${EVIL}`, bytesDone: 0n, bytesTotal: 1n, digest: EVIL, index: 1n, matchedTasks: 0n, canceledTasks: 0n, originalFilter: '', destination: `s3://b/k${EVIL}` },
  error: { message: `upload failed: ${EVIL}`, code: `snapshot_creation_failed${EVIL}`, type: EVIL, link: EVIL },
  duration: EVIL,
  enqueuedAt: EVIL,
  startedAt: EVIL,
  finishedAt: EVIL,
};

const info: SnapshotInfo = {
  id: `s1${EVIL}`,
  index: 1n,
  term: 1n,
  sizeBytes: 1n,
  digest: EVIL,
  createdAt: EVIL,
  stateBytes: 1n,
  stateKeys: 1n,
  snapcoordVersion: EVIL,
  formatVersion: 1,
};

describe('client commands print a hostile server\'s strings as visible text', function () {
  this.timeout(120_000);
  let server: grpc.Server;
  let endpoint = '';

  before(async () => {
    server = new grpc.Server();
    const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<never>): void => cb({ code: grpc.status.UNIMPLEMENTED, details: 'no' } as grpc.ServiceError, null);
    server.addService(TaskServiceService, {
      getTask: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { task }),
      listTasks: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { results: [task], total: 1n, limit: 20 }),
      cancelTasks: unimplemented,
    });
    server.addService(SnapshotServiceService, {
      listSnapshots: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { snapshots: [info] }),
      createSnapshot: unimplemented,
      inspectSnapshot: unimplemented,
      getSnapshot: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'no' }),
      restoreSnapshot: (_call: unknown, cb: grpc.sendUnaryData<never>) => cb({ code: grpc.status.UNIMPLEMENTED, details: 'no' } as grpc.ServiceError, null),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
    endpoint = `127.0.0.1:${port}`;
  });
  after(() => {
    server?.forceShutdown();
  });

  for (const args of [
    ['tasks', 'get', '0'],
    ['tasks', 'get', '0', '--json'],
    ['tasks', 'ls'],
    ['tasks', 'wait', '0'],
    ['snapshot', 'ls'],
  ]) {
    it(`snapcoord ${args.join(' ')}`, async () => {
      // `tasks wait` takes the endpoint only (runCli's environment: plaintext, no key).
      const all = [...args, '--endpoint', endpoint, ...(args[1] === 'wait' ? [] : ['--plaintext', '--api-key', 'k'])];
      const r = await runCli(all);
      const out = `${r.stdout}${r.stderr}`;
      // It did print the answer (escaped), not fail before.
      assert.match(out, /\\(x1b|u001b)\]52;c;/, describeRun(all, r));
      assert.doesNotMatch(out, CONTROL, describeRun(all, r));
      assert.doesNotMatch(r.stderr, /\nsnapcoord: all good/, describeRun(all, r));
    });
  }
});

/**
 * ServeClusterOptions.logsDir: every process of a node leaves its whole
 * output in <logsDir>/<id>.log, the earlier incarnations included (a chaos
 * run kills and restarts nodes dozens of times; before, a failing run kept
 * only the last process's last 40 lines, and the start of a bug was gone).
 * One real `snapcoord serve`, started, SIGKILLed, restarted, stopped.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServeCluster } from '../harness/serve-cluster.js';

describe('ServeCluster logsDir: every process\'s output is kept', function () {
  this.timeout(120_000);
  let dir: string | undefined;
  let c: ServeCluster | undefined;

  after(async () => {
    await c?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('a killed and restarted node leaves both processes\' whole output in <logsDir>/<id>.log, in order', async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-serve-logs-'));
    const logsDir = join(dir, 'logs');
    c = await ServeCluster.start({ ids: ['n1'], dir: join(dir, 'cluster'), logsDir });
    const first = c.node('n1').proc?.output ?? '';
    assert.match(first, /listening on grpc/);
    await c.kill('n1');
    await c.restart('n1');
    await c.leader();
    await c.stop();
    c = undefined;
    const log = await readFile(join(logsDir, 'n1.log'), 'utf8');
    const headers = [...log.matchAll(/^=== n1 process (\d+) \((\S+)\) ===$/gm)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(headers, ['1 SIGKILL', '2 SIGKILL']);
    assert.equal(log.match(/listening on grpc/g)?.length, 2, log.slice(0, 2_000));
    // The first process's output is there whole, not its last lines only.
    assert.ok(log.includes(first.trimEnd()), 'the first process\'s whole output');
  });
});

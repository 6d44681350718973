/**
 * `snapcoord kv cas` and `kv txn` as a user runs them (child processes)
 * against three real `snapcoord serve` processes, through a follower: exit 0
 * when swapped, 1 when the compare failed (printing the current value), 2 for
 * bad arguments or a malformed transaction file; --absent creates a key once.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeRun, runCli, type CliResult } from '../harness/child.js';
import { ServeCluster } from '../harness/serve-cluster.js';

async function cli(args: readonly string[], expectCode: number, env: Record<string, string>): Promise<CliResult> {
  const r = await runCli(args, { env });
  assert.equal(r.code, expectCode, describeRun(args, r));
  return r;
}

describe('cli: kv cas and kv txn against three serve processes', function () {
  this.timeout(180_000);
  let cluster: ServeCluster;
  let env: Record<string, string>;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-cas-cli-'));
    cluster = await ServeCluster.start({ snapshotDirs: true });
    env = { SNAPCOORD_ENDPOINT: (await cluster.follower()).grpc };
  });
  after(async () => {
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('kv cas: --absent creates once; a swap from the current value exits 0; a stale one exits 1 printing the current value', async () => {
    assert.match((await cli(['kv', 'cas', '--absent', 'lock', 'owner-a'], 0, env)).stdout, /^OK \(revision \d+\)\n$/);
    const taken = await cli(['kv', 'cas', '--absent', 'lock', 'owner-b'], 1, env);
    assert.equal(taken.stdout, 'owner-a\n');
    assert.match(taken.stderr, /^snapcoord: compare failed: "lock" holds another value \(mod revision \d+, version 1\)\n$/);
    await cli(['kv', 'cas', 'lock', 'owner-a', 'owner-c'], 0, env);
    const stale = await cli(['kv', 'cas', 'lock', 'owner-a', 'owner-d'], 1, env);
    assert.equal(stale.stdout, 'owner-c\n');
    assert.equal((await cli(['kv', 'get', 'lock'], 0, env)).stdout, 'owner-c\n');
    const missing = await cli(['kv', 'cas', 'no-such-key', 'x', 'y'], 1, env);
    assert.equal(missing.stdout, '');
    assert.match(missing.stderr, /"no-such-key" is absent/);
    // usage: EXPECTED and --absent are exclusive, NEW is required
    await cli(['kv', 'cas', 'lock', 'owner-c'], 2, env);
    await cli(['kv', 'cas', '--absent', 'lock', 'a', 'b'], 2, env);
  });

  it('kv txn: runs a JSON transaction from a file, prints its result, exits 1 when the compares fail, 2 when malformed', async () => {
    await cli(['kv', 'put', 'acct/a', '10'], 0, env);
    const file = join(dir, 'move.json');
    await writeFile(
      file,
      JSON.stringify({
        compare: [
          { key: 'acct/a', target: 'value', result: 'equal', value: '10' },
          { key: 'acct/b', target: 'version', result: 'equal', version: 0 },
        ],
        success: [
          { op: 'put', key: 'acct/a', value: '0', prevKv: true },
          { op: 'put', key: 'acct/b', value: '10' },
          { op: 'get', key: 'acct/b' },
        ],
        failure: [{ op: 'get', key: 'acct/a' }],
      }),
    );
    const first = await cli(['kv', 'txn', file], 0, env);
    const res = JSON.parse(first.stdout) as { succeeded: boolean; revision: number; responses: { op: string; prevKv?: { value: string }; kv?: { value: string; modRevision: number } }[] };
    assert.equal(res.succeeded, true);
    assert.equal(res.responses[0]?.prevKv?.value, '10');
    assert.equal(res.responses[2]?.kv?.value, '10');
    assert.equal(res.responses[2]?.kv?.modRevision, res.revision, 'every write of the transaction at its one revision');
    const again = await cli(['kv', 'txn', file], 1, env);
    const failed = JSON.parse(again.stdout) as { succeeded: boolean; responses: { op: string; found: boolean; kv: { value: string } }[] };
    assert.equal(failed.succeeded, false);
    assert.deepEqual([failed.responses[0]?.op, failed.responses[0]?.found, failed.responses[0]?.kv.value], ['get', true, '0']);

    const broken = join(dir, 'broken.json');
    await writeFile(broken, JSON.stringify({ compare: [{ key: 'k', target: 'colour', result: 'equal' }] }));
    const bad = await cli(['kv', 'txn', broken], 2, env);
    assert.match(bad.stderr, /^snapcoord: txn: compare\[0\]\.target must be one of value, version, create, mod\n$/);
    await writeFile(broken, JSON.stringify({ success: Array.from({ length: 129 }, () => ({ op: 'get', key: 'k' })) }));
    const tooMany = await cli(['kv', 'txn', broken], 1, env);
    assert.match(tooMany.stderr, /INVALID_ARGUMENT.*129 success ops, more than 128/);
  });
});

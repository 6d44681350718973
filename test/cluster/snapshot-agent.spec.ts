/**
 * The snapshot agent end to end through `snapcoord serve` and the CLI, with
 * a real S3-compatible server (s3rver) on 127.0.0.1: --schedule-snapshot 1
 * with --schedule-keep-last 2 and --snapshot-destination s3://… leaves two
 * archives in the snapshot dir and two in the bucket, each run a task whose
 * details say where it went and what retention removed (`tasks ls`);
 * `snapshot ls --destination` lists the bucket; `snapshot restore s3://…`
 * restores one; a new node started with `--import-snapshot s3://…` imports
 * it; a corrupted object is refused by both.
 */
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { KVServiceClient, type GetResponse } from '../../src/gen/snapcoord/v1/kv.js';
import { Child, plaintextClientEnv } from '../harness/child.js';
import { freeNodeAddresses } from '../harness/ports.js';
import { ServeProcess, startServes } from '../harness/serve-process.js';
import { until } from '../harness/until.js';
import { BUCKET, S3Server } from '../unit/ops/s3-server.js';

async function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const c = new Child(args, plaintextClientEnv(env));
  await c.exited;
  return { code: c.exitCode, out: c.output };
}

function get(kv: KVServiceClient, key: string): Promise<string | null> {
  return new Promise((ok, fail) =>
    kv.get({ key: Buffer.from(key), serializable: false }, (e: grpc.ServiceError | null, r: GetResponse) => (e !== null ? fail(e) : ok(r.kv !== undefined ? Buffer.from(r.kv.value).toString() : null))),
  );
}

describe('agent: scheduled snapshots to S3 through serve and the CLI', function () {
  this.timeout(180_000);
  let s3: S3Server;
  let dir = '';
  const procs: ServeProcess[] = [];

  before(async () => {
    s3 = await S3Server.start();
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-agent-e2e-'));
  });

  after(async () => {
    for (const p of procs) await p.kill('SIGKILL');
    await s3?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('schedule + retention + S3 upload; ls --destination; restore s3://; --import-snapshot s3://; a corrupted object refused', async () => {
    const env = s3.env();
    const snapshotDir = join(dir, 'snaps');
    const {
      addrs: { a1 },
      procs: { a1: p },
    } = await startServes(['a1'], (id, { a1 }) => ({
      id,
      grpc: a1.grpc,
      peer: a1.peer,
      peers: `a1=${a1.peer}`,
      dataDir: join(dir, 'a1'),
      env,
      extra: ['--schedule-snapshot', '1', '--schedule-keep-last', '2', '--snapshot-destination', `s3://${BUCKET}/e2e/`, '--snapshot-dir', snapshotDir, '--db-name', 'data.ms'],
    }));
    procs.push(p);
    let kv = new KVServiceClient(a1.grpc, grpc.credentials.createInsecure());
    try {
      await new Promise<void>((ok, fail) => kv.put({ key: Buffer.from('greeting'), value: Buffer.from('hello'), prevKv: false, clientId: '', requestId: 0n }, (e) => (e !== null ? fail(e) : ok())));
      // Four runs: retention has removed two archives here and two in the bucket by then.
      const tasks = await until('four scheduled runs', 60_000, async () => {
        const r = await runCli(['tasks', 'ls', '--status', 'succeeded', '--json', '--endpoint', a1.grpc], env);
        const j = JSON.parse(r.out.slice(r.out.indexOf('{'))) as { results: { details: { path: string; destination: string; removed: number; kept: number; phase: string } }[] };
        return j.results.length >= 4 ? j.results : undefined;
      });
      const newest = tasks[0]!.details;
      assert.equal(newest.phase, 'done');
      assert.match(newest.destination, new RegExp(`^s3://${BUCKET}/e2e/data\\.ms-\\d{8}T\\d{9}Z\\.snapshot$`));
      assert.ok(tasks.some((t) => t.details.removed === 2), JSON.stringify(tasks.map((t) => t.details)));
      const local = (await readdir(snapshotDir)).filter((n) => n.startsWith('data.ms-'));
      assert.ok(local.length >= 2 && local.length <= 3, `local archives kept: ${local}`);

      const ls = await runCli(['snapshot', 'ls', '--destination', `s3://${BUCKET}/e2e/`, '--json'], env);
      assert.equal(ls.code, 0, ls.out);
      const listed = JSON.parse(ls.out.slice(ls.out.indexOf('['))) as { url: string; digest: string; index: number }[];
      assert.ok(listed.length >= 2 && listed.length <= 3, ls.out);
      assert.ok(listed.every((o) => /^[0-9a-f]{64}$/.test(o.digest) && o.index > 0));
      const url = listed[0]!.url;

      // The schedule stops (a1 restarts without it) so retention keeps that object.
      await p.kill('SIGTERM');
      kv.close();
      const p2 = new ServeProcess({ id: 'a1', grpc: a1.grpc, peer: a1.peer, peers: `a1=${a1.peer}`, dataDir: join(dir, 'a1'), env, extra: ['--snapshot-dir', snapshotDir] });
      procs.push(p2);
      await p2.ready();
      kv = new KVServiceClient(a1.grpc, grpc.credentials.createInsecure());
      await until('a1 leads again', 20_000, async () => ((await get(kv, 'greeting')) === 'hello' ? true : undefined));

      // Restore from the bucket: the write made after that snapshot is undone.
      await new Promise<void>((ok, fail) => kv.put({ key: Buffer.from('greeting'), value: Buffer.from('changed'), prevKv: false, clientId: '', requestId: 0n }, (e) => (e !== null ? fail(e) : ok())));
      const restored = await runCli(['snapshot', 'restore', url, '--no-progress', '--endpoint', a1.grpc], env);
      assert.equal(restored.code, 0, restored.out);
      assert.match(restored.out, /Restored /);
      assert.equal(await get(kv, 'greeting'), 'hello');

      // A new node imports the same object.
      const {
        addrs: { b1 },
        procs: { b1: b },
      } = await startServes(['b1'], (id, { b1 }) => ({ id, grpc: b1.grpc, peer: b1.peer, peers: `b1=${b1.peer}`, dataDir: join(dir, 'b1'), env, extra: ['--import-snapshot', url] }));
      procs.push(b);
      const kvB = new KVServiceClient(b1.grpc, grpc.credentials.createInsecure());
      try {
        await until('the import', 30_000, async () => ((await get(kvB, 'greeting')) === 'hello' ? true : undefined));
      } finally {
        kvB.close();
      }

      // Corrupt the object behind the bucket's back: refused at restore and at import.
      const key = url.slice(`s3://${BUCKET}/`.length);
      const file = (await s3.objectFiles()).find((f) => f.includes(join(...key.split('/'))));
      assert.ok(file !== undefined);
      const fh = await open(file, 'r+');
      const byte = Buffer.alloc(1);
      await fh.read(byte, 0, 1, 100);
      await fh.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 100);
      await fh.close();
      const refused = await runCli(['snapshot', 'restore', url, '--no-progress', '--endpoint', b1.grpc], env);
      assert.equal(refused.code, 1, refused.out);
      assert.match(refused.out, /SHA-256 [0-9a-f]{64} does not match the recorded/);
      const { c1 } = await freeNodeAddresses(['c1']);
      const c = new ServeProcess({ id: 'c1', grpc: c1.grpc, peer: c1.peer, peers: `c1=${c1.peer}`, dataDir: join(dir, 'c1'), env, extra: ['--import-snapshot', url] });
      procs.push(c);
      await c.exited;
      assert.equal(c.exitCode, 2, c.output);
      assert.match(c.output, /--import-snapshot s3:\/\/.*does not match the recorded/);
      // The access key (id and secret are both S3RVER) appears in no log line.
      assert.doesNotMatch(p.output + p2.output + b.output + c.output, /S3RVER/);
    } finally {
      kv.close();
    }
  });
});

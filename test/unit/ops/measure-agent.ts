/**
 * measure-agent: the measured run of the snapshot agent (issue 19), not a CI
 * test. One `snapcoord serve` node holding a large state (default 1 GiB of
 * incompressible values, restored from a generated archive), then:
 *  1. a scheduled snapshot with --snapshot-destination s3:// (s3rver on
 *     127.0.0.1) and --schedule-keep-last 2: upload MB/s and the node's RSS
 *     while it uploads;
 *  2. `snapshot restore s3://…` through the CLI: download + restore time and
 *     the CLI's peak RSS;
 *  3. `snapshot save` through a TCP proxy that cuts the connection twice:
 *     resumed, byte-identical (SHA-256 checked);
 * and prints each command's output.
 *
 *   npx tsx test/unit/ops/measure-agent.ts [--mib 1024]
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as grpc from '@grpc/grpc-js';

import { writeArchive } from '../../../src/snapshot/archive.js';
import { encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { TaskFilter, TaskServiceClient, type ListTasksResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { Child, plaintextClientEnv } from '../../harness/child.js';
import type { NodeAddresses } from '../../harness/ports.js';
import { ServeProcess, startServes, type ServeArgs } from '../../harness/serve-process.js';
import { sleep, until } from '../../harness/until.js';
import { BUCKET, S3Server } from './s3-server.js';

const VALUE_BYTES = 64 * 1024;

function rssMiB(pid: number | undefined, field: 'VmRSS' | 'VmHWM'): number {
  if (pid === undefined) return 0;
  try {
    const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

/** runSampled runs a CLI command, sampling its RSS; resolves with its output, seconds and peak RSS. */
async function runSampled(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string; seconds: number; peakRssMiB: number }> {
  const t0 = Date.now();
  const c = new Child(args, plaintextClientEnv(env));
  let peak = 0;
  const timer = setInterval(() => (peak = Math.max(peak, rssMiB(c.proc.pid, 'VmHWM'))), 50);
  await c.exited;
  clearInterval(timer);
  return { code: c.exitCode, out: c.output, seconds: (Date.now() - t0) / 1000, peakRssMiB: peak };
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path) as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

async function main(): Promise<void> {
  const mibArg = process.argv.indexOf('--mib');
  const mib = mibArg > 0 ? Number(process.argv[mibArg + 1]) : 1024;
  const keys = Math.ceil((mib * 1024 * 1024) / VALUE_BYTES);
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-measure-'));
  const s3 = await S3Server.start();
  const env = s3.env();
  const procs: ServeProcess[] = [];
  try {
    // The archive: `keys` keys of 64 KiB random values.
    let t0 = Date.now();
    async function* batches(): AsyncGenerator<StateRecord[]> {
      for (let i = 0; i < keys; i += 64) {
        const b: StateRecord[] = [];
        for (let j = i; j < Math.min(keys, i + 64); j++) b.push({ key: Buffer.from(`fill/${String(j).padStart(8, '0')}`), value: randomBytes(VALUE_BYTES) });
        yield b;
      }
    }
    const statePath = join(dir, 'state.bin');
    await pipeline(encodeStateRecords(batches()), createWriteStream(statePath));
    const archivePath = join(dir, 'big.tar.gz');
    const out = createWriteStream(archivePath, { mode: 0o600 });
    const closed = once(out, 'close');
    const w = await writeArchive(
      { id: 'measure', index: 1, term: 1, membership: { voters: ['m1'], learners: [], addresses: { m1: '127.0.0.1:1' } }, createdAt: new Date().toISOString(), snapcoordVersion: 'measure', stateKeys: keys },
      statePath,
      out,
    );
    out.end();
    await closed;
    await rm(statePath);
    process.stdout.write(`archive: ${keys} keys, ${(w.archiveBytes / 2 ** 20).toFixed(0)} MiB, built in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

    const snapDir = join(dir, 'snaps');
    await mkdir(snapDir, { mode: 0o700 });
    const common = ['--snapshot-dir', snapDir, '--db-name', 'big', '--min-free-bytes', '0', '--snapshot-entries', '1000000', '--log-level', 'info'];
    const argsOf = (a: NodeAddresses, extra: string[]): ServeArgs => ({ id: 'm1', grpc: a.grpc, peer: a.peer, peers: `m1=${a.peer}`, dataDir: join(dir, 'm1'), env, extra: [...common, ...extra] });
    // The first start on new ports (made again on others if one is taken); the later ones on the same.
    const first = await startServes(['m1'], (_id, { m1 }) => argsOf(m1, []));
    const m1 = first.addrs.m1;
    const serve = (extra: string[]): ServeProcess => {
      const p = new ServeProcess(argsOf(m1, extra));
      procs.push(p);
      return p;
    };
    let node = first.procs.m1;
    procs.push(node);
    const restore = await runSampled(['snapshot', 'restore', archivePath, '--no-progress', '--endpoint', m1.grpc], env);
    process.stdout.write(`$ snapcoord snapshot restore big.tar.gz   (${restore.seconds.toFixed(1)} s, exit ${restore.code})\n${restore.out}`);
    await rm(archivePath);
    await node.kill('SIGTERM');

    // 1. The scheduled run: snapshot, copy, upload to S3, retention.
    node = serve(['--schedule-snapshot', '5', '--schedule-keep-last', '2', '--snapshot-destination', `s3://${BUCKET}/big/`]);
    await node.ready();
    const tasks = new TaskServiceClient(m1.grpc, grpc.credentials.createInsecure());
    let uploadPeakRss = 0;
    let uploadStartRss = 0;
    const list = (): Promise<ListTasksResponse> =>
      new Promise((ok, fail) => tasks.listTasks({ filter: TaskFilter.fromPartial({ types: ['snapshotCreation'] }), limit: 5, reverse: false }, (e, r) => (e !== null ? fail(e) : ok(r))));
    t0 = Date.now();
    const done = await until('a scheduled run', 600_000, async () => {
      const r = await list();
      const t = r.results[r.results.length - 1];
      if (t?.details?.phase === 'upload') {
        const rss = rssMiB(node.proc.pid, 'VmRSS');
        if (uploadStartRss === 0) uploadStartRss = rss;
        uploadPeakRss = Math.max(uploadPeakRss, rss);
      }
      return t?.status === 'succeeded' || t?.status === 'failed' ? t : undefined;
    });
    tasks.close();
    const uploaded = /"mbPerSec":([\d.]+).*scheduled snapshot uploaded/.exec(node.output);
    process.stdout.write(
      `scheduled run: ${done.status} in ${done.duration}; destination ${done.details?.destination}; ${((Number(done.details?.bytesTotal ?? 0n)) / 2 ** 20).toFixed(0)} MiB; upload ${uploaded?.[1] ?? '?'} MB/s; node RSS during the upload ${uploadStartRss.toFixed(0)} -> peak ${uploadPeakRss.toFixed(0)} MiB (node VmHWM since start ${rssMiB(node.proc.pid, 'VmHWM').toFixed(0)} MiB)\n`,
    );
    const tasksLs = await runSampled(['tasks', 'ls', '--endpoint', m1.grpc], env);
    process.stdout.write(`$ snapcoord tasks ls\n${tasksLs.out}`);
    const ls = await runSampled(['snapshot', 'ls', '--destination', `s3://${BUCKET}/big/`], env);
    process.stdout.write(`$ snapcoord snapshot ls --destination s3://${BUCKET}/big/\n${ls.out}`);
    const url = done.details?.destination ?? '';
    await node.kill('SIGTERM');

    // 2. Restore from S3 through the CLI (download checked against the stored SHA-256, then the upload to the node).
    node = serve([]);
    await node.ready();
    const fromS3 = await runSampled(['snapshot', 'restore', url, '--no-progress', '--endpoint', m1.grpc], env);
    process.stdout.write(`$ snapcoord snapshot restore ${url}   (${fromS3.seconds.toFixed(1)} s, exit ${fromS3.code}, CLI peak RSS ${fromS3.peakRssMiB.toFixed(0)} MiB)\n${fromS3.out}`);

    // 3. A resumed download: `snapshot save` through a proxy that cuts the connection twice.
    let cuts = 3; // the first connection is save's Status call, which carries too little to be cut
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const at = m1.grpc.lastIndexOf(':');
      const up = connect(Number(m1.grpc.slice(at + 1)), m1.grpc.slice(0, at));
      sockets.add(client).add(up);
      let n = 0;
      const cutAt = cuts > 0 ? Math.floor(((Math.random() * 0.3 + 0.2) * mib * 2 ** 20)) : Infinity;
      if (cuts > 0) cuts--;
      client.pipe(up);
      up.on('data', (d: Buffer) => {
        n += d.length;
        if (n > cutAt) {
          client.destroy();
          up.destroy();
          return;
        }
        if (!client.write(d)) {
          up.pause();
          client.once('drain', () => up.resume());
        }
      });
      up.on('end', () => client.end());
      const kill = (): void => {
        client.destroy();
        up.destroy();
      };
      client.on('error', kill);
      up.on('error', kill);
      client.on('close', kill);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as { port: number }).port;
    const saved = join(dir, 'saved.tgz');
    const save = await runSampled(['snapshot', 'save', saved, '--endpoint', `127.0.0.1:${port}`], env);
    for (const s of sockets) s.destroy();
    proxy.close();
    process.stdout.write(`$ snapcoord snapshot save saved.tgz (through a proxy cutting twice)   (${save.seconds.toFixed(1)} s, exit ${save.code}, CLI peak RSS ${save.peakRssMiB.toFixed(0)} MiB)\n${save.out.replace(/\r[^\n]*/g, '')}`);
    if (save.code === 0) process.stdout.write(`sha256sum saved.tgz: ${await sha256File(saved)} (${((await stat(saved)).size / 2 ** 20).toFixed(0)} MiB)\n`);
    await sleep(100);
  } finally {
    for (const p of procs) await p.kill('SIGKILL');
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

/**
 * The gateway end to end: three real `snapcoord serve` processes (client and
 * peer planes and HTTP on ports from the OS, data in a temp dir, the API key in
 * SNAPCOORD_API_KEY, which the gRPC clients here send too), driven with
 * the official Typesense and Meilisearch clients and with curl for Nomad.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Meilisearch, MeilisearchApiError } from 'meilisearch';
import Typesense from 'typesense';
import type { ClusterClient } from '../../src/client/cluster-client.js';
import type { KvClient } from '../../src/client/kv-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import { Child, cleanEnv } from '../harness/child.js';
import { freePorts } from '../harness/ports.js';
import { ServeCluster } from '../harness/serve-cluster.js';
import { sleep, until } from '../harness/until.js';

const KEY = 'gateway-test-admin-key-0123456789';
/** STANDALONE_KEY: the key of `snapcoord gateway` run alone; it sends its callers' keys on to the node, which must know this one too. */
const STANDALONE_KEY = 'standalone-key-123';
const IDS = ['n1', 'n2', 'n3'] as const;
type Id = (typeof IDS)[number];
const enc = new TextEncoder();
const dec = new TextDecoder();

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** run spawns a command (curl, tar), optionally feeding `stdinFile`, and collects its output. */
function run(cmd: string, args: readonly string[], stdinFile?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: [stdinFile === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    if (stdinFile !== undefined && p.stdin !== null) {
      void readFile(stdinFile).then((b) => p.stdin!.end(b));
    }
  });
}


/** headersOf parses a curl -D dump: the last response's status and headers (lower-case names). */
function headersOf(dump: string): { status: number; headers: Record<string, string> } {
  const blocks = dump.trim().split(/\r?\n\r?\n/);
  const last = blocks[blocks.length - 1] ?? '';
  const [statusLine, ...lines] = last.split(/\r?\n/);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(/HTTP\/[\d.]+ (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers };
}

describe('gateway: three serve processes', function () {
  this.timeout(240_000);

  let dir = '';
  let roots = '';
  let nodes: ServeCluster | undefined;
  const http = new Map<Id, string>();
  const grpcAddr = new Map<Id, string>();
  const cluster = new Map<Id, ClusterClient>();
  const kv = new Map<Id, KvClient>();
  const extra: Child[] = [];

  const url = (id: Id, path: string): string => `http://${http.get(id)}${path}`;
  const port = (id: Id): number => Number(http.get(id)!.split(':')[1]);

  const leaderOf = (timeoutMs = 30_000): Promise<Id> =>
    until('a leader all nodes agree on', timeoutMs, async () => {
      const sts = await Promise.all(IDS.map((id) => cluster.get(id)!.status({ deadlineMs: 1_000 })));
      const leader = sts.find((s) => s.role === Role.ROLE_LEADER);
      if (leader === undefined) return undefined;
      return sts.every((s) => s.leaderId === leader.id) ? (leader.id as Id) : undefined;
    });

  const followerOf = async (): Promise<Id> => {
    const leader = await leaderOf();
    return IDS.find((id) => id !== leader)!;
  };

  const typesense = (id: Id, apiKey = KEY): InstanceType<typeof Typesense.Client> =>
    new Typesense.Client({
      nodes: [{ host: '127.0.0.1', port: port(id), protocol: 'http' }],
      apiKey,
      connectionTimeoutSeconds: 60,
      numRetries: 0,
      logLevel: 'silent',
    });

  /** meili: the official client; apiKey null sends none. */
  const meili = (id: Id, apiKey: string | null = KEY): Meilisearch =>
    new Meilisearch({ host: `http://${http.get(id)}`, ...(apiKey !== null ? { apiKey } : {}) });

  const RETRYABLE = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.ABORTED, grpc.status.FAILED_PRECONDITION];

  /** state reads every key under `gw/` from the leader (linearizable), retrying (20 s) what an election explains. */
  const state = async (): Promise<Record<string, string>> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const res = await kv.get(await leaderOf())!.range({ prefix: enc.encode('gw/'), limit: 10_000 }, { deadlineMs: 5_000 });
        return Object.fromEntries(res.kvs.map((p) => [dec.decode(p.key), dec.decode(p.value)]));
      } catch (err) {
        if (!RETRYABLE.includes((err as grpc.ServiceError).code) || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  };

  /** term: the highest term any node reports. */
  const term = async (): Promise<bigint> => {
    const sts = await Promise.all(IDS.map((id) => cluster.get(id)!.status({ deadlineMs: 1_000 })));
    return sts.reduce((m, s) => (s.term > m ? s.term : m), 0n);
  };

  const put = async (key: string, value: string): Promise<void> => {
    const retryable = RETRYABLE;
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await kv.get(await leaderOf())!.put({ key: enc.encode(key), value: enc.encode(value) }, { deadlineMs: 5_000 });
        return;
      } catch (err) {
        if (!retryable.includes((err as grpc.ServiceError).code) || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  };

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-gateway-'));
    roots = join(dir, 'roots');
    await mkdir(roots, { recursive: true });
    // The API key in SNAPCOORD_API_KEY, as `npm start` passes it; the client plane asks for it too: authorization: Bearer KEY.
    nodes = await ServeCluster.start({
      ids: IDS,
      dir,
      apiKey: KEY,
      apiKeyInEnv: true,
      logLevel: 'warn',
      env: { SNAPCOORD_API_KEYS: JSON.stringify([{ key: STANDALONE_KEY, actions: ['admin'] }]) },
      extra: (id) => ['--snapshot-root', roots, '--snapshot-dir', join(dir, `tasks-${id}`)],
    });
    for (const n of nodes.nodes) {
      const id = n.id as Id;
      grpcAddr.set(id, n.grpc);
      http.set(id, n.http);
      cluster.set(id, n.cluster);
      kv.set(id, n.kv);
    }
    await leaderOf();
  });

  after(async () => {
    await nodes?.stop();
    await Promise.all(extra.map((p) => p.kill('SIGKILL')));
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') {
      for (const id of IDS) process.stderr.write(`--- ${id} (last lines)\n${nodes?.logsOf(id, 10) ?? ''}\n`);
    }
  });

  describe('Typesense', () => {
    it('GET /health (open) is available on every node; Meilisearch\'s client reads it too', async () => {
      for (const id of IDS) {
        const r = await fetch(url(id, '/health'));
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
        assert.deepEqual(await r.json(), { ok: true, status: 'available' });
        assert.equal(await typesense(id).health.retrieve().then((h) => h.ok), true);
      }
      assert.deepEqual(await meili('n1', null).health(), { ok: true, status: 'available' } as unknown);
    });

    it('GET /debug: state 1 on the leader, 4 on followers; version; 401 without a key', async () => {
      // One pass with the same leader before and after it (an election in between, on a loaded machine, is retried).
      let leader: Id = IDS[0];
      await until('a /debug pass with one leader throughout', 30_000, async () => {
        leader = await leaderOf();
        const states: Record<string, number> = {};
        for (const id of IDS) {
          const d = (await typesense(id).debug.retrieve()) as { state: number; version: string };
          assert.match(d.version, /^\d+\.\d+\.\d+/);
          states[id] = d.state;
        }
        if ((await leaderOf()) !== leader) return undefined;
        for (const id of IDS) assert.equal(states[id], id === leader ? 1 : 4, id);
        return true;
      });
      const r = await fetch(url(leader, '/debug'));
      assert.equal(r.status, 401);
      assert.deepEqual(await r.json(), { message: 'Forbidden - a valid `x-typesense-api-key` header must be sent.' });
    });

    it('operations.perform("vote"): false on the leader; true on a follower, which then leads', async () => {
      const leader = await leaderOf();
      assert.deepEqual(await typesense(leader).operations.perform('vote'), { success: false });
      const follower = IDS.find((id) => id !== leader)!;
      assert.deepEqual(await typesense(follower).operations.perform('vote'), { success: true });
      assert.equal(await leaderOf(), follower);
      const st = await cluster.get(follower)!.status();
      assert.equal(st.role, Role.ROLE_LEADER);
    });

    it('operations.perform("snapshot", {snapshot_path}) writes a data directory on that node', async () => {
      await put('gw/ts', 'typesense');
      const target = join(roots, 'typesense-data-snapshot');
      const follower = await followerOf();
      assert.deepEqual(await typesense(follower).operations.perform('snapshot', { snapshot_path: target }), { success: true });
      assert.ok((await readdir(target)).length > 0, 'the snapshot directory is not empty');
      // Taking it again replaces the earlier snapcoord snapshot.
      assert.deepEqual(await typesense(follower).operations.perform('snapshot', { snapshot_path: target }), { success: true });
    });

    it('snapshot: 400 without snapshot_path, 400 outside the roots, 409 or 201 when concurrent, 401 with a wrong key', async () => {
      const leader = await leaderOf();
      const noPath = await fetch(url(leader, '/operations/snapshot'), { method: 'POST', headers: { 'X-TYPESENSE-API-KEY': KEY, 'Content-Type': 'application/json' } });
      assert.equal(noPath.status, 400);
      assert.deepEqual(await noPath.json(), { message: 'Parameter `snapshot_path` is required.' });

      await assert.rejects(typesense(leader).operations.perform('snapshot', { snapshot_path: join(dir, 'not-a-root', 'x') }), (err: Error) => {
        assert.equal(err.name, 'RequestMalformed');
        assert.equal((err as unknown as { httpStatus: number }).httpStatus, 400);
        return true;
      });
      // A non-empty directory that is not a snapcoord snapshot is refused, never overwritten.
      const foreign = join(roots, 'foreign');
      await mkdir(foreign, { recursive: true });
      await writeFile(join(foreign, 'precious.txt'), 'keep me');
      const refused = await fetch(url(leader, `/operations/snapshot?snapshot_path=${encodeURIComponent(foreign)}`), { method: 'POST', headers: { 'X-TYPESENSE-API-KEY': KEY } });
      assert.equal(refused.status, 400, await refused.clone().text());
      assert.equal(await readFile(join(foreign, 'precious.txt'), 'utf8'), 'keep me');

      const many = await Promise.all(
        [1, 2, 3, 4].map((i) =>
          fetch(url(leader, `/operations/snapshot?snapshot_path=${encodeURIComponent(join(roots, `concurrent-${i}`))}`), { method: 'POST', headers: { 'X-TYPESENSE-API-KEY': KEY } }),
        ),
      );
      const codes = many.map((r) => r.status);
      assert.ok(codes.every((c) => c === 201 || c === 409), `codes ${codes.join(',')}`);
      assert.ok(codes.includes(201));
      for (const r of many.filter((x) => x.status === 409)) assert.equal(typeof ((await r.json()) as { message: unknown }).message, 'string');

      await assert.rejects(typesense(leader, 'wrong-key').operations.perform('snapshot', { snapshot_path: join(roots, 'x') }), (err: Error) => {
        assert.equal(err.name, 'RequestUnauthorized');
        return true;
      });
    });

    it('404 and 405 in Typesense style', async () => {
      const nf = await fetch(url('n1', '/collections'), { headers: { 'X-TYPESENSE-API-KEY': KEY } });
      assert.equal(nf.status, 404);
      assert.deepEqual(await nf.json(), { message: 'Not Found' });
      const na = await fetch(url('n1', '/operations/snapshot'), { headers: { 'X-TYPESENSE-API-KEY': KEY } });
      assert.equal(na.status, 405);
      assert.equal(na.headers.get('allow'), 'POST');
    });
  });

  describe('Meilisearch', () => {
    it('createSnapshot() -> enqueued task; waitForTask -> succeeded; the file lands in the snapshot dir; getTasks lists it', async () => {
      const leader = await leaderOf();
      const client = meili(leader);
      const enq = await client.createSnapshot();
      assert.equal(enq.status, 'enqueued');
      assert.equal(enq.type, 'snapshotCreation');
      assert.equal(enq.indexUid, null);
      assert.equal(typeof enq.taskUid, 'number');
      assert.ok(!Number.isNaN(Date.parse(String(enq.enqueuedAt))));
      const done = await client.tasks.waitForTask(enq.taskUid, { timeout: 60_000, interval: 100 });
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      assert.equal(done.uid, enq.taskUid);
      assert.equal(done.error, null);
      assert.equal(typeof done.duration, 'string');
      assert.ok(done.startedAt !== null && done.finishedAt !== null);
      const file = join(dir, `tasks-${leader}`, `${leader}.snapshot`);
      assert.ok(existsSync(file), `${file} exists`);
      assert.ok((await stat(file)).size > 0);

      const page = await client.tasks.getTasks();
      assert.ok(page.results.some((t) => t.uid === enq.taskUid));
      assert.equal(typeof page.total, 'number');
      assert.equal(page.limit, 20);
      const filtered = await client.tasks.getTasks({ statuses: ['succeeded'], types: ['snapshotCreation'], uids: [enq.taskUid] });
      assert.deepEqual(
        filtered.results.map((t) => t.uid),
        [enq.taskUid],
      );
      const one = await client.tasks.getTask(enq.taskUid);
      assert.equal(one.status, 'succeeded');
    });

    it('POST /tasks/cancel via the client -> a taskCancelation task that succeeds', async () => {
      const leader = await leaderOf();
      const client = meili(leader);
      const enq = await client.tasks.cancelTasks({ statuses: ['enqueued'] });
      assert.equal(enq.type, 'taskCancelation');
      const done = await client.tasks.waitForTask(enq.taskUid, { timeout: 30_000, interval: 100 });
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      assert.equal(typeof (done.details as { matchedTasks?: unknown } | null)?.matchedTasks, 'number');
    });

    it('errors: task_not_found 404, invalid_task_uids 400, missing key 401, wrong key 403', async () => {
      const client = meili('n2');
      await assert.rejects(client.tasks.getTask(987_654), (err: unknown) => {
        assert.ok(err instanceof MeilisearchApiError);
        assert.equal(err.response.status, 404);
        assert.equal(err.cause?.code, 'task_not_found');
        assert.equal(err.cause?.type, 'invalid_request');
        assert.match(err.cause?.link ?? '', /^https:\/\/docs\.meilisearch\.com\/errors#task_not_found$/);
        return true;
      });
      const bad = await fetch(url('n2', '/tasks?uids=one'), { headers: { Authorization: `Bearer ${KEY}` } });
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { code: string }).code, 'invalid_task_uids');
      await assert.rejects(meili('n2', null).tasks.getTasks(), (err: unknown) => {
        assert.ok(err instanceof MeilisearchApiError);
        assert.equal(err.response.status, 401);
        assert.equal(err.cause?.code, 'missing_authorization_header');
        return true;
      });
      await assert.rejects(meili('n2', 'wrong-key').createSnapshot(), (err: unknown) => {
        assert.ok(err instanceof MeilisearchApiError);
        assert.equal(err.response.status, 403);
        assert.equal(err.cause?.code, 'invalid_api_key');
        assert.equal(err.cause?.type, 'auth');
        return true;
      });
      const nf = await fetch(url('n2', '/tasks/1/nothing'), { headers: { Authorization: `Bearer ${KEY}` } });
      assert.equal(nf.status, 404);
      assert.equal(((await nf.json()) as { code: string }).code, 'not_found');
      const na = await fetch(url('n2', '/snapshots'), { headers: { Authorization: `Bearer ${KEY}` } });
      assert.equal(na.status, 405);
    });
  });

  describe('Nomad (curl)', () => {
    const token = ['-H', `X-Nomad-Token: ${KEY}`];

    /** download saves GET /v1/operator/snapshot from `id` into `file` and returns the parsed headers. */
    const download = async (id: Id, file: string, query = ''): Promise<Record<string, string>> => {
      const headersFile = `${file}.headers`;
      const r = await run('curl', ['-sS', '-o', file, '-D', headersFile, ...token, url(id, `/v1/operator/snapshot${query}`)]);
      assert.equal(r.code, 0, r.stderr);
      const { status, headers } = headersOf(await readFile(headersFile, 'utf8'));
      assert.equal(status, 200, await readFile(file, 'utf8').catch(() => ''));
      return headers;
    };

    it('GET: a tar.gz of meta.json, state.bin, SHA256SUMS, with Nomad headers and a matching Digest', async () => {
      await put('gw/a', '1');
      const file = join(dir, 'get.tgz');
      const follower = await followerOf();
      const headers = await download(follower, file);
      assert.equal(headers['content-type'], 'application/x-gzip');
      const bytes = await readFile(file);
      assert.equal(headers['digest'], `sha-256=${createHash('sha256').update(bytes).digest('base64')}`);
      assert.match(headers['x-nomad-index'] ?? '', /^[1-9]\d*$/);
      assert.equal(headers['x-nomad-knownleader'], 'true');
      assert.match(headers['x-nomad-lastcontact'] ?? '', /^\d+$/);
      const tar = await run('tar', ['-tzf', file]);
      assert.equal(tar.code, 0, tar.stderr);
      const names = tar.stdout.split('\n').filter((s) => s !== '');
      for (const n of ['meta.json', 'state.bin', 'SHA256SUMS']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
      // ?stale: the follower answers from its own state.
      const staleHeaders = await download(follower, join(dir, 'stale.tgz'), '?stale');
      assert.equal(staleHeaders['content-type'], 'application/x-gzip');
    });

    it('PUT --data-binary restores exactly the saved state; so does curl -T (chunked, Expect: 100-continue) and POST, through a follower', async () => {
      const saved: Record<string, string> = {};
      for (let i = 0; i < 50; i++) {
        await put(`gw/k${i}`, `v${i}`);
      }
      Object.assign(saved, await state());
      assert.equal(saved['gw/k7'], 'v7');
      const file = join(dir, 'saved.tgz');
      await download(await leaderOf(), file);

      const mess = async (): Promise<void> => {
        await put('gw/k7', 'changed');
        await put('gw/new', 'should vanish');
        await kv.get(await leaderOf())!.delete({ key: enc.encode('gw/k8') });
        assert.notDeepEqual(await state(), saved);
      };

      // curl --data-binary: labelled application/x-www-form-urlencoded.
      await mess();
      const a = await run('curl', ['-sS', '-o', join(dir, 'a.out'), '-w', '%{http_code} %{content_type}', '-X', 'PUT', '--data-binary', `@${file}`, ...token, url(await leaderOf(), '/v1/operator/snapshot')]);
      assert.equal(a.code, 0, a.stderr);
      assert.match(a.stdout, /^200 text\/plain/);
      assert.equal(await readFile(join(dir, 'a.out'), 'utf8'), '');
      assert.deepEqual(await state(), saved);

      // curl -T file, chunked with Expect: 100-continue, through a follower (which forwards to the leader).
      await mess();
      const follower = await followerOf();
      const b = await run('curl', ['-sS', '-v', '-o', '/dev/null', '-w', '%{http_code}', '-T', file, '-X', 'PUT', '-H', 'Transfer-Encoding: chunked', '-H', 'Expect: 100-continue', ...token, url(follower, '/v1/operator/snapshot')]);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(b.stdout, '200', b.stderr);
      assert.match(b.stderr, /Transfer-Encoding: chunked/i);
      assert.match(b.stderr, /HTTP\/1\.1 100 Continue/);
      assert.deepEqual(await state(), saved);

      // curl -T - (stdin), POST.
      await mess();
      const c = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-T', '-', '-X', 'POST', ...token, url('n3', '/v1/operator/snapshot')], file);
      assert.equal(c.code, 0, c.stderr);
      assert.equal(c.stdout, '200');
      assert.deepEqual(await state(), saved);
    });

    it('a mangled archive (one byte flipped in the middle) -> 400 plain text, nothing changes', async () => {
      const file = join(dir, 'mangle.tgz');
      await download(await leaderOf(), file);
      const bytes = await readFile(file);
      const mid = Math.floor(bytes.length / 2);
      bytes[mid] = (bytes[mid] ?? 0) ^ 0xff;
      const bad = join(dir, 'mangled.tgz');
      await writeFile(bad, bytes);
      await put('gw/after-save', 'must survive');
      const before = await state();
      const r = await run('curl', ['-sS', '-o', join(dir, 'bad.out'), '-D', join(dir, 'bad.headers'), '-X', 'PUT', '--data-binary', `@${bad}`, ...token, url(await leaderOf(), '/v1/operator/snapshot')]);
      assert.equal(r.code, 0, r.stderr);
      const { status, headers } = headersOf(await readFile(join(dir, 'bad.headers'), 'utf8'));
      assert.equal(status, 400);
      assert.match(headers['content-type'] ?? '', /^text\/plain/);
      const message = await readFile(join(dir, 'bad.out'), 'utf8');
      assert.ok(message.trim().length > 0, 'a clear error message');
      assert.deepEqual(await state(), before);
      // Garbage that is not even gzip.
      const junk = await fetch(url('n1', '/v1/operator/snapshot'), { method: 'PUT', headers: { 'X-Nomad-Token': KEY }, body: Buffer.from('not an archive') });
      assert.equal(junk.status, 400);
      assert.deepEqual(await state(), before);
    });

    it('a 32 MiB archive of incompressible values round-trips (curl -T - through a follower); a download cut short leaves the node serving', async () => {
      const big: Record<string, string> = {};
      for (let i = 0; i < 64; i++) {
        const v = randomBytes(384 * 1024).toString('base64'); // 512 KiB of base64
        big[`gw/big/${i}`] = v;
        await put(`gw/big/${i}`, v);
      }
      const saved = await state();
      const file = join(dir, 'big.tgz');
      const headers = await download(await followerOf(), file);
      const bytes = await readFile(file);
      assert.ok(bytes.length > 24 * 1024 * 1024, `archive of ${bytes.length} bytes`);
      assert.equal(headers['digest'], `sha-256=${createHash('sha256').update(bytes).digest('base64')}`);

      // A client that reads 1 MiB and hangs up.
      for (let i = 0; i < 3; i++) {
        const ctl = new AbortController();
        const res = await fetch(url('n1', '/v1/operator/snapshot'), { headers: { 'X-Nomad-Token': KEY }, signal: ctl.signal });
        const reader = res.body!.getReader();
        let got = 0;
        while (got < 1024 * 1024) {
          const { value, done } = await reader.read();
          if (done) break;
          got += value.byteLength;
        }
        ctl.abort();
      }

      await put('gw/big/0', 'changed');
      await kv.get(await leaderOf())!.delete({ key: enc.encode('gw/big/1') });
      const termBefore = await term();
      const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-T', '-', '-X', 'PUT', ...token, url(await followerOf(), '/v1/operator/snapshot')], file);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '200');
      assert.deepEqual(await state(), saved);
      const termAfter = await term();
      if (termAfter !== termBefore) process.stderr.write(`      (note: the 32 MiB restore was followed by an election: term ${termBefore} -> ${termAfter})\n`);
      // The node still serves downloads and directory snapshots after the cut ones.
      await download(await leaderOf(), join(dir, 'after-cut.tgz'));
      const snap = await fetch(url(await leaderOf(), `/operations/snapshot?snapshot_path=${encodeURIComponent(join(roots, 'after-cut'))}`), { method: 'POST', headers: { 'X-TYPESENSE-API-KEY': KEY } });
      assert.equal(snap.status, 201);
    });

    it('auth 403 Permission denied; 404 and 405 plain text', async () => {
      const denied = await run('curl', ['-sS', '-w', '\n%{http_code}', '-H', 'X-Nomad-Token: wrong', url('n1', '/v1/operator/snapshot')]);
      assert.equal(denied.stdout, 'Permission denied\n\n403');
      const noToken = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'PUT', '--data-binary', 'x', url('n1', '/v1/operator/snapshot')]);
      assert.equal(noToken.stdout, '403');
      const nf = await fetch(url('n1', '/v1/jobs'), { headers: { 'X-Nomad-Token': KEY } });
      assert.equal(nf.status, 404);
      assert.match(nf.headers.get('content-type') ?? '', /^text\/plain/);
      const na = await fetch(url('n1', '/v1/operator/snapshot'), { method: 'DELETE', headers: { 'X-Nomad-Token': KEY } });
      assert.equal(na.status, 405);
      assert.equal(await na.text(), 'Invalid method\n');
    });
  });

  describe('OpenAPI and the CLI', () => {
    it('GET /openapi.json (open) on a node', async () => {
      const r = await fetch(url('n3', '/openapi.json'));
      assert.equal(r.status, 200);
      const doc = (await r.json()) as { openapi: string; paths: Record<string, unknown> };
      assert.match(doc.openapi, /^3\./);
      assert.ok(doc.paths['/v1/operator/snapshot'] !== undefined);
    });

    it('`snapcoord gateway --target --http` runs the gateway alone', async () => {
      // Its port from the OS when it binds (no window for another socket to take it), read from its output.
      const g = new Child(['gateway', '--target', grpcAddr.get('n2')!, '--http', '127.0.0.1:0', '--log-level', 'warn'], cleanEnv({ SNAPCOORD_API_KEY: STANDALONE_KEY }));
      extra.push(g);
      const at = (await g.waitFor(/snapcoord gateway listening on http (127\.0\.0\.1:\d+)/))[1] as string;
      const h = await fetch(`http://${at}/health`);
      assert.equal(h.status, 200);
      const d = await fetch(`http://${at}/debug`, { headers: { 'X-TYPESENSE-API-KEY': STANDALONE_KEY } });
      assert.equal(d.status, 200);
      assert.equal((await fetch(`http://${at}/debug`, { headers: { 'X-TYPESENSE-API-KEY': KEY } })).status, 401);
      await g.kill('SIGTERM');
      assert.equal(g.exitCode, 0, g.lastLines());
    });

    it('serve and gateway refuse to start with no key unless --insecure-no-auth (exit 2)', async () => {
      const [p1, p2, p3] = await freePorts(3);
      const serve = new Child(
        ['serve', '--id', 'x1', '--grpc', `127.0.0.1:${p1}`, '--peer-listen', `127.0.0.1:${p3}`, '--peers', `x1=127.0.0.1:${p3}`, '--http', `127.0.0.1:${p2}`, '--data-dir', join(dir, 'x1')],
        cleanEnv(),
      );
      extra.push(serve);
      await serve.exited;
      assert.equal(serve.exitCode, 2, serve.output);
      assert.match(serve.output, /need an API key.*--insecure-no-auth/);
      assert.ok(!existsSync(join(dir, 'x1')), 'nothing was created');
      const gw = new Child(['gateway', '--target', '127.0.0.1:1', '--http', '127.0.0.1:0'], cleanEnv());
      extra.push(gw);
      await gw.exited;
      assert.equal(gw.exitCode, 2, gw.output);
      assert.match(gw.output, /needs an API key/);
    });
  });
});

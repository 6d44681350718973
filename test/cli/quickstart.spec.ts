/**
 * The README's quick start as a user runs it: `snapcoord local` (what
 * `npm start` runs) in a fresh directory, secure by default (a CA and node
 * certificates under ./data/tls, the key in ./data/api-key), then the
 * README's CLI commands from the same directory, which find the key and the
 * CA by themselves, and its HTTP examples with the key. Every port comes from
 * a free block; every process is stopped, also after a failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../../src/cli/node-runtime.js';
import { REPO_ROOT } from '../harness/child.js';

const MAIN = join(REPO_ROOT, 'src', 'cli', 'main.ts');
const TSX = fileURLToPath(import.meta.resolve('tsx'));

/** freeBlock finds `n` consecutive free ports on 127.0.0.1 (bounded tries). */
async function freeBlock(n: number): Promise<number> {
  const free = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let i = 0; i < 200; i++) {
    // Below Linux's ephemeral range (32768-60999), so no outgoing connection takes a port between the probe and the bind.
    const base = 20_000 + Math.floor(Math.random() * (32_768 - 20_000 - n));
    let ok = true;
    for (let p = base; p < base + n && ok; p++) ok = await free(p);
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports`);
}

function cli(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd, env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SNAPCOORD_')));
}

describe('README quick start: `snapcoord local` secure by default, the README commands as written', function () {
  this.timeout(180_000);
  let dir: string;
  let local: ChildProcess | null = null;
  let output = '';
  let grpcBase = 0;
  let httpBase = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-quickstart-'));
    const base = await freeBlock(9);
    grpcBase = base;
    httpBase = base + 6;
    local = spawn(
      process.execPath,
      ['--import', TSX, MAIN, 'local', '--grpc-base-port', String(base), '--peer-base-port', String(base + 3), '--http-base-port', String(httpBase), '--log-level', 'warn'],
      { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    local.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    local.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 90_000;
    while (!/cluster ready: leader n\d/.test(output)) {
      if (Date.now() > deadline || local.exitCode !== null) throw new Error(`local cluster not ready:\n${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  after(async () => {
    if (local !== null && local.exitCode === null && local.pid !== undefined) {
      const exited = new Promise((r) => local?.once('exit', r));
      process.kill(-local.pid, 'SIGINT');
      const timer = setTimeout(() => local?.pid !== undefined && process.kill(-local.pid, 'SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('prints both planes, the key and the TLS files; keys and certificate keys are private', () => {
    assert.match(output, new RegExp(`n1  grpc 127\\.0\\.0\\.1:${grpcBase}  peer 127\\.0\\.0\\.1:${grpcBase + 3}  http 127\\.0\\.0\\.1:${httpBase}`));
    assert.match(output, /API key: \S{20,} {2}\(from data\/api-key \(generated\)\)/);
    assert.match(output, /TLS: CA data\/tls\/ca\.pem, node certificates in data\/tls \(client TLS, peer mutual TLS\); CA key data\/ca\/ca-key\.pem \(given to no node\)/);
    for (const f of ['data/api-key', 'data/ca/ca-key.pem', 'data/tls/n1-key.pem']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
    assert.ok(!existsSync(join(dir, 'data/tls/ca-key.pem')), 'the CA key is not beside the node keys');
    assert.equal(statSync(join(dir, 'data', 'n1')).mode & 0o777, 0o700);
  });

  it('starts its nodes as every launcher does: the V8 flags and malloc environment of node-runtime.ts', () => {
    // The nodes are the processes whose command line is `… serve --id nX …` with a data dir under this test's dir.
    const nodes = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((pid) => {
        try {
          return { cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'), env: readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0') };
        } catch {
          return null; // gone meanwhile
        }
      })
      .filter((p): p is { cmd: string[]; env: string[] } => p !== null && p.cmd.includes('serve') && p.cmd.some((a) => a.startsWith(join(dir, 'data'))));
    assert.equal(nodes.length, 3, 'three node processes found');
    for (const n of nodes) {
      for (const f of NODE_V8_FLAGS) assert.ok(n.cmd.includes(f), `${n.cmd.join(' ')}: ${f}`);
      for (const [k, v] of Object.entries(NODE_MALLOC_ENV)) assert.ok(n.env.includes(`${k}=${v}`), `${k}=${v} in a node's environment`);
      assert.ok(!n.cmd.some((a) => a.includes('ca-key')) && !n.env.some((e) => e.includes('ca-key')), 'no node is handed the CA key');
    }
    // So none of them warns that it runs without them (serve does when started plainly: node-runtime.spec).
    for (const id of ['n1', 'n2', 'n3']) assert.doesNotMatch(readFileSync(join(dir, 'data', `${id}.log`), 'utf8'), /without the node's memory settings/, id);
  });

  it('kv put through a follower and kv get, as written: TLS and the key found from the working directory', async () => {
    const put = await cli(dir, ['kv', 'put', 'greeting', 'hello', '--endpoint', `127.0.0.1:${grpcBase + 1}`]);
    assert.equal(put.code, 0, put.out);
    assert.match(put.out, /^OK \(revision \d+\)/);
    const get = await cli(dir, ['kv', 'get', 'greeting', '--endpoint', `127.0.0.1:${grpcBase}`]);
    assert.equal(get.code, 0, get.out);
    assert.equal(get.out.trim(), 'hello');
    // Without the key or without TLS the same command is refused.
    const noKey = await cli(dir, ['kv', 'get', 'greeting', '--endpoint', `127.0.0.1:${grpcBase}`], { SNAPCOORD_API_KEY: '' });
    assert.equal(noKey.code, 1);
    assert.match(noKey.out, /UNAUTHENTICATED/);
    const plain = await cli(dir, ['kv', 'get', 'greeting', '--endpoint', `127.0.0.1:${grpcBase}`, '--plaintext']);
    assert.equal(plain.code, 1);
    assert.match(plain.out, /UNAVAILABLE/);
  });

  it('the README\'s HTTP examples answer as documented with the key, and refuse without it', async () => {
    const key = readFileSync(join(dir, 'data', 'api-key'), 'utf8').trim();
    const http = (port: number, path: string, init: RequestInit = {}): Promise<Response> => fetch(`http://127.0.0.1:${port}${path}`, init);
    const ts = { 'X-TYPESENSE-API-KEY': key };
    const snap = await http(httpBase, `/operations/snapshot?snapshot_path=${encodeURIComponent(join(dir, 'data', 'snapshots', 'typesense-data-snapshot'))}`, {
      method: 'POST',
      headers: { ...ts, 'Content-Type': 'application/json' },
    });
    assert.equal(snap.status, 201, await snap.clone().text());
    assert.deepEqual(await snap.json(), { success: true });
    const health = await http(httpBase, '/health');
    assert.deepEqual(await health.json(), { ok: true, status: 'available' });
    const meili = await http(httpBase, '/snapshots', { method: 'POST', headers: { Authorization: `Bearer ${key}` } });
    assert.equal(meili.status, 202);
    const nomad = await http(httpBase, '/v1/operator/snapshot', { headers: { 'X-Nomad-Token': key } });
    assert.equal(nomad.status, 200);
    assert.equal(nomad.headers.get('content-type'), 'application/x-gzip');
    const archive = Buffer.from(await nomad.arrayBuffer());
    const put = await http(httpBase, '/v1/operator/snapshot', { method: 'PUT', headers: { 'X-Nomad-Token': key }, body: archive });
    assert.equal(put.status, 200, await put.clone().text());
    const refused = await http(httpBase, '/v1/operator/snapshot');
    assert.equal(refused.status, 403);
    assert.equal((await refused.text()).trim(), 'Permission denied');
  });

  it('certs revoke n3 while it runs: n1 and n2 refuse n3 as revoked within seconds, no restart (every node has --peer-crl data/tls/crl.pem from its start)', async () => {
    const key = readFileSync(join(dir, 'data', 'api-key'), 'utf8').trim();
    const revoked = async (port: number): Promise<number> => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: `Bearer ${key}` } });
      const m = /^snapcoord_peer_messages_refused_total\{reason="revoked"\} (\d+)$/m.exec(await res.text());
      return m === null ? 0 : Number(m[1]);
    };
    assert.equal(await revoked(httpBase), 0);
    const r = await cli(dir, ['certs', 'revoke', 'n3', '--dir', 'data/tls']);
    assert.equal(r.code, 0, r.out);
    const deadline = Date.now() + 30_000;
    while ((await revoked(httpBase)) === 0 || (await revoked(httpBase + 1)) === 0) {
      assert.ok(Date.now() < deadline, `n1 and n2 still take n3's messages 30 s after the revocation:\n${output}`);
      await new Promise((res) => setTimeout(res, 250));
    }
    assert.equal(local?.exitCode, null, 'snapcoord local still runs');
  });

  it('SIGHUP (a closed terminal) to snapcoord local stops every node, then it, exit 0', async () => {
    const p = local;
    assert.ok(p !== null && p.pid !== undefined && p.exitCode === null);
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => p.once('exit', (code, signal) => res([code, signal])));
    process.kill(p.pid, 'SIGHUP');
    const [code, signal] = await exited;
    assert.deepEqual([code, signal], [0, null], output);
    assert.match(output, /all nodes stopped/);
  });
});

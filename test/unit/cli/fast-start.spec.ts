/**
 * The client commands' fast start (src/cli/fast-start.ts, scripts/bundle-cli.ts):
 * program.ts bundled as the build bundles it, run through startFromBundle
 * from an entry beside the bundle, as dist/src/cli/main.js runs it. The
 * bundle must answer as the CLI from its modules does (help, usage errors,
 * exit codes, a real save over TLS), keep the code cache it wrote, and stand
 * aside for other commands and when older than its entry.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { bundleCli, warmCodeCache } from '../../../scripts/bundle-cli.js';
import { BUNDLE_FILE, CODE_CACHE_FILE } from '../../../src/cli/fast-start.js';
import { plaintextClientEnv, REPO_ROOT } from '../../harness/child.js';
import { freePorts } from '../../harness/ports.js';
import { ServeCluster } from '../../harness/serve-cluster.js';
import { S3Destination, s3SettingsFrom } from '../../../src/ops/s3.js';
import { ACCESS_KEY, BUCKET, S3Server, SECRET_KEY } from '../ops/s3-server.js';

/** NOT_FROM_THE_BUNDLE: the exit code of the test entry when startFromBundle ran nothing. */
const NOT_FROM_THE_BUNDLE = 97;

interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** run: node with `args` to its end (SIGKILL after a minute); asynchronous, for the S3 server runs in this process. */
async function run(args: readonly string[], env: NodeJS.ProcessEnv): Promise<Ran> {
  const p = spawn(process.execPath, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
  const [code] = (await once(p, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe('CLI fast start: client commands from the bundle with its code cache', function () {
  this.timeout(120_000);
  let root = '';
  let cli = '';
  let entry = '';

  /** viaBundle: the command through the test entry (beside the bundle); fromModules: through src/cli/main.ts. */
  const viaBundle = (args: readonly string[], env: NodeJS.ProcessEnv = plaintextClientEnv()): Promise<Ran> => run(['--import', 'tsx', entry, ...args], env);
  const fromModules = (args: readonly string[], env: NodeJS.ProcessEnv = plaintextClientEnv()): Promise<Ran> => run(['--import', 'tsx', 'src/cli/main.ts', ...args], env);

  before(async () => {
    // A package root as the build leaves it: package.json, proto and node_modules beside dist/src/cli.
    root = mkdtempSync(join(tmpdir(), 'snapcoord-fast-start-'));
    for (const f of ['package.json', 'proto', 'node_modules']) symlinkSync(join(REPO_ROOT, f), join(root, f));
    cli = join(root, 'dist', 'src', 'cli');
    mkdirSync(cli, { recursive: true });
    // The entry first: a bundle older than its entry is not used.
    entry = join(cli, 'main.mjs');
    const fastStart = pathToFileURL(join(REPO_ROOT, 'src', 'cli', 'fast-start.ts')).href;
    writeFileSync(entry, `import { startFromBundle } from ${JSON.stringify(fastStart)};\nif (!startFromBundle(import.meta.url)) process.exit(${NOT_FROM_THE_BUNDLE});\n`);
    utimesSync(entry, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await bundleCli(join(REPO_ROOT, 'src', 'cli', 'program.ts'), cli);
  });

  after(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true });
  });

  it('help and usage errors are those of the CLI from its modules, with the same exit codes', async () => {
    for (const args of [
      ['snapshot', 'save', '--help'],
      ['snapshot', '--help'],
      ['snapshot'],
      ['kv', 'put', '--help'],
      ['cluster', 'status', '--help'],
      ['tasks', 'ls', '--help'],
      ['snapshot', 'save'],
      ['snapshot', 'save', '--frobnicate', 'x.snap'],
      ['kv', 'get', 'k', '--endpoint', 'not-an-address'],
    ]) {
      const want = await fromModules(args);
      const got = await viaBundle(args);
      assert.deepEqual(got, want, args.join(' '));
    }
  });

  it('holds no import(): a script run from a code cache has no loader for it', () => {
    assert.doesNotMatch(readFileSync(join(cli, BUNDLE_FILE), 'utf8'), /\bimport\(/);
  });

  it("routes grpc-js's node:net and commander's node:child_process through scripts/bundle-shims", () => {
    const bundle = readFileSync(join(cli, BUNDLE_FILE), 'utf8');
    for (const shim of ['net.cjs', 'child-process.cjs']) assert.match(bundle, new RegExp(`"scripts/bundle-shims/${shim.replace('.', '\\.')}"`), shim);
    // Left to the built-in: grpc-js requires `net` by that name, the shim by `node:net` (and so do our modules).
    assert.doesNotMatch(bundle, /require\("net"\)|require\("child_process"\)/);
  });

  it('writes its code cache once and keeps it (V8 took it: a rejected cache is written again)', async () => {
    rmSync(join(cli, CODE_CACHE_FILE), { force: true });
    assert.equal((await viaBundle(['snapshot', 'save', '--help'])).code, 0);
    const first = statSync(join(cli, CODE_CACHE_FILE));
    assert.ok(first.size > 0);
    assert.equal((await viaBundle(['kv', 'get', '--help'])).code, 0);
    const second = statSync(join(cli, CODE_CACHE_FILE));
    assert.deepEqual([second.ino, second.mtimeMs], [first.ino, first.mtimeMs], 'the cache was written again: V8 rejected it');
    // A cache of other bytes is rejected and replaced.
    writeFileSync(join(cli, CODE_CACHE_FILE), Buffer.alloc(first.size, 7));
    assert.equal((await viaBundle(['snapshot', 'save', '--help'])).code, 0);
    assert.notDeepEqual(readFileSync(join(cli, CODE_CACHE_FILE)), Buffer.alloc(first.size, 7));
  });

  it('a cache warmed under the V8 flags the CLI runs with is kept by it; under other flags it is rejected and written again', async () => {
    const flags = ['--max-semi-space-size=16', '--initial-old-space-size=64'];
    rmSync(join(cli, CODE_CACHE_FILE), { force: true });
    // (warmCodeCache runs in a directory of its own: tsx by its path)
    assert.ok(await warmCodeCache(entry, ['--import', pathToFileURL(join(REPO_ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href, ...flags]));
    const warmed = statSync(join(cli, CODE_CACHE_FILE));
    assert.equal((await run(['--import', 'tsx', ...flags, entry, 'kv', 'get', '--help'], plaintextClientEnv())).code, 0);
    const kept = statSync(join(cli, CODE_CACHE_FILE));
    assert.deepEqual([kept.ino, kept.mtimeMs], [warmed.ino, warmed.mtimeMs], 'V8 rejected a cache made under the same flags');
    assert.equal((await viaBundle(['kv', 'get', '--help'])).code, 0);
    const other = statSync(join(cli, CODE_CACHE_FILE));
    assert.notDeepEqual([other.ino, other.mtimeMs], [warmed.ino, warmed.mtimeMs], 'V8 took a cache made under other flags');
  });

  it('runs nothing for the other commands, nor when the bundle is older than its entry', async () => {
    for (const args of [['--help'], ['serve', '--help'], ['certs', '--help'], ['bench', '--help'], ['local', '--help']]) {
      assert.equal((await viaBundle(args)).code, NOT_FROM_THE_BUNDLE, args.join(' '));
    }
    const bundle = join(cli, BUNDLE_FILE);
    const t = statSync(bundle).mtime;
    utimesSync(entry, new Date(t.getTime() + 1_000), new Date(t.getTime() + 1_000));
    try {
      assert.equal((await viaBundle(['snapshot', 'save', '--help'])).code, NOT_FROM_THE_BUNDLE);
    } finally {
      utimesSync(entry, new Date(t.getTime() - 60_000), new Date(t.getTime() - 60_000));
    }
  });

  it('an unreachable endpoint: the same one-line error and exit code', async () => {
    const [port] = await freePorts(1);
    const args = ['kv', 'get', 'k', '--endpoint', `127.0.0.1:${port}`];
    const want = await fromModules(args);
    assert.equal(want.code, 1);
    assert.deepEqual(await viaBundle(args), want);
  });

  it('saves a snapshot over TLS with an API key, twice, byte for byte what the node serves; lists and restores from S3', async () => {
    const cluster = await ServeCluster.start({ ids: ['n1'], tls: true });
    try {
      const tls = cluster.tls;
      assert.ok(tls !== null);
      const env = plaintextClientEnv({ SNAPCOORD_CACERT: tls.caFile, SNAPCOORD_API_KEY: tls.apiKey, SNAPCOORD_ENDPOINT: cluster.nodes[0]?.grpc ?? '' });
      assert.equal((await viaBundle(['kv', 'put', 'fast/start', 'yes'], env)).code, 0);
      assert.equal((await viaBundle(['kv', 'get', 'fast/start'], env)).stdout.trim(), 'yes');
      const digests: string[] = [];
      for (const name of ['a.tar.gz', 'b.tar.gz']) {
        const file = join(root, name);
        const r = await viaBundle(['snapshot', 'save', file, '--no-progress', '--json'], env);
        assert.equal(r.code, 0, r.stderr);
        const saved = JSON.parse(r.stdout) as { digest?: string };
        const digest = createHash('sha256').update(readFileSync(file)).digest('hex');
        assert.equal(digest, saved.digest, r.stdout);
        digests.push(digest);
      }
      assert.equal(digests[0], digests[1], 'no write between: the same snapshot twice');
      const again = join(root, 'c.tar.gz');
      assert.equal((await fromModules(['snapshot', 'save', again, '--no-progress'], env)).code, 0);
      assert.equal(createHash('sha256').update(readFileSync(again)).digest('hex'), digests[0]);

      // The S3 client (left out of the bundle, required from beside it): list a bucket, restore from it.
      const s3 = await S3Server.start();
      try {
        const s3env = { ...env, ...s3.env() };
        const body = readFileSync(join(root, 'a.tar.gz'));
        const credentialsFile = join(root, 's3-credentials.json');
        writeFileSync(credentialsFile, JSON.stringify({ accessKeyId: ACCESS_KEY, secretAccessKey: SECRET_KEY }));
        const dest = await S3Destination.open(`s3://${BUCKET}/fast/`, s3SettingsFrom({ credentialsFile }, s3env));
        try {
          await dest.upload('a.snapshot', () => Readable.from([body]), { sha256: digests[0] ?? '', sizeBytes: body.length, index: 1, term: 1, id: 'fast' });
        } finally {
          dest.close();
        }
        const ls = ['snapshot', 'ls', '--destination', `s3://${BUCKET}/fast/`, '--json'];
        const want = await fromModules(ls, s3env);
        assert.equal(want.code, 0, want.stderr);
        assert.deepEqual(await viaBundle(ls, s3env), want);
        const restored = await viaBundle(['snapshot', 'restore', `s3://${BUCKET}/fast/a.snapshot`, '--no-progress'], s3env);
        assert.equal(restored.code, 0, restored.stderr);
        assert.equal((await viaBundle(['kv', 'get', 'fast/start'], env)).stdout.trim(), 'yes');
      } finally {
        await s3.close();
      }
    } finally {
      await cluster.stop();
    }
  });
});

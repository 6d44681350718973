/**
 * bundle-cli: the client commands' fast start (src/cli/fast-start.ts). Writes
 * dist/src/cli/program.js and everything it loads for a client command as one
 * CommonJS file beside it (esbuild), then runs a `snapshot save` from it once
 * (warmCodeCache), which leaves V8's code cache of that file beside it.
 * `npm run build` runs it after tsc: main.js runs the bundle only while it is
 * as new as main.js itself.
 *
 *   tsx scripts/bundle-cli.ts
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';
import { BUNDLE_FILE, CODE_CACHE_FILE } from '../src/cli/fast-start.js';
import { writeCa } from '../src/tls/index.js';

/**
 * NOT_FOR_CLIENTS: the modules program.ts loads only for the commands that
 * are not run from the bundle (serve, local, gateway, certs, bench): left out,
 * as imports of the files beside the bundle (never reached from it).
 */
const NOT_FOR_CLIENTS = /^(\.\/(serve|local|config|certs-commands|bench\/commands)|\.\.\/gateway\/index)\.js$/;

/** SHIMS: the modules beside this script that stand in for node built-ins inside the bundle (bundle-shims/). */
const SHIMS = join(dirname(fileURLToPath(import.meta.url)), 'bundle-shims');

/**
 * clientShims: two built-ins, as one library of the bundle sees them, are
 * replaced by thin stand-ins that answer the same (each file says why):
 * grpc-js's node:net (isIPv6/isIP without Node's IPv6 expression for a string
 * without ':') and commander's node:child_process (loaded on first use).
 * About 5 ms of every client command's start (issue 15: the second save).
 */
const clientShims: Plugin = {
  name: 'client-shims',
  setup(b) {
    b.onResolve({ filter: /^(node:)?net$/ }, (args) => (/[/\\]@grpc[/\\]grpc-js[/\\]/.test(args.importer) ? { path: join(SHIMS, 'net.cjs') } : undefined));
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) => (/[/\\]commander[/\\]/.test(args.importer) ? { path: join(SHIMS, 'child-process.cjs') } : undefined));
  },
};

const leaveOut: Plugin = {
  name: 'not-for-clients',
  setup(b) {
    b.onResolve({ filter: NOT_FOR_CLIENTS }, (args) => (/[/\\]program\.(ts|js)$/.test(args.importer) ? { path: args.path, external: true } : undefined));
  },
};

/**
 * bundleCli writes `entry` (program.ts or its compiled program.js) and what it
 * loads as `outDir`/BUNDLE_FILE, and removes a code cache of an older bundle
 * there. Packages are bundled (grpc-js is most of the start-up) but for the
 * S3 client, which a save never loads.
 */
export async function bundleCli(entry: string, outDir: string): Promise<string> {
  const outfile = join(outDir, BUNDLE_FILE);
  rmSync(join(outDir, CODE_CACHE_FILE), { force: true });
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['@aws-sdk/*'],
    // import() of what is left out becomes require(): a script run from its code cache has no module loader for import().
    supported: { 'dynamic-import': false },
    plugins: [leaveOut, clientShims],
    // Without comments and spare syntax (names kept: --debug stacks still read): 1.5 -> 0.97 MB to read and hash
    // at each start, and smaller cached code.
    minifyWhitespace: true,
    minifySyntax: true,
    // Modules that find files beside themselves (the package root, a require of their own) do so from the bundle.
    define: { 'import.meta.url': '__bundleUrl' },
    banner: { js: "var __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
    logLevel: 'error',
  });
  return outfile;
}

/** closedPort: a loopback port nothing listens on (one the OS gave and took back). */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * warmCodeCache runs, through `mainJs`, a `snapshot save` over TLS to a port
 * nothing listens on: it fails (exit 1) after it has run a save's start-up,
 * its TLS setup and its connection attempt, and the code cache it writes at
 * exit holds those functions compiled. Returns whether the cache exists.
 * `nodeFlags` are those the CLI will run with: V8 rejects a cache made under
 * other flags (the image's ENTRYPOINT passes NODE_V8_FLAGS; its build sets
 * BUNDLE_CLI_NODE_FLAGS to them, since the CLI cannot rewrite the cache in
 * the image, where dist/ is not the node user's).
 */
export async function warmCodeCache(mainJs: string, nodeFlags: readonly string[] = []): Promise<boolean> {
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-warm-'));
  try {
    const { caFile } = await writeCa(dir);
    const args = [...nodeFlags, mainJs, 'snapshot', 'save', join(dir, 'never.tar.gz'), '--endpoint', `127.0.0.1:${await closedPort()}`, '--cacert', caFile, '--no-progress'];
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SNAPCOORD_')));
    spawnSync(process.execPath, args, { cwd: dir, env, stdio: 'ignore', timeout: 60_000 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return existsSync(join(dirname(mainJs), CODE_CACHE_FILE));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const cli = join(root, 'dist', 'src', 'cli');
  await bundleCli(join(cli, 'program.js'), cli);
  const flags = (process.env.BUNDLE_CLI_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
  if (!(await warmCodeCache(join(cli, 'main.js'), flags))) process.stderr.write(`bundle-cli: no ${CODE_CACHE_FILE} was written; client commands start without it\n`);
}

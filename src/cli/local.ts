/**
 * runLocal (`snapcoord local`, what `npm start` runs): a local cluster of
 * `serve` child processes on 127.0.0.1 — nodes n1..nN, client gRPC on
 * grpcBasePort.. (TLS), peer gRPC on peerBasePort.. (mutual TLS), HTTP on
 * httpBasePort.., data under <baseDir>/<id>, each node's log in
 * <baseDir>/<id>.log. Secure by default: a CA and one certificate per node
 * under <baseDir>/tls (made once, reused while valid; the CA key apart, in
 * <baseDir>/ca/ca-key.pem, whose path no node is given) and the API key in
 * <baseDir>/api-key, which the CLI finds from the working directory. It prints the nodes' addresses and the
 * API key, then "cluster ready: leader nX" with example commands once a
 * leader is elected. SIGINT / SIGTERM / SIGHUP stop every child (SIGTERM, then SIGKILL
 * after 5 s) and it exits 0; if every child dies on its own it exits 1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants as fsConstants, existsSync, fchmodSync, fstatSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ClusterClient } from '../client/cluster-client.js';
import { dialWithCa, type ClientDial } from '../client/dial.js';
import { writeFileAtomic } from '../tls/files.js';
import { KEY_FILE_EMPTY, keyFileExposure, readKeyFileLine } from './key-file.js';
import { crlFileOf, ensureLocalCrl, ensureLocalTls, type LocalTls, type NodeCertFiles } from '../tls/index.js';
import { Role } from '../gen/snapcoord/v1/cluster.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { NODE_V8_FLAGS, nodeProcessEnv } from './node-runtime.js';

export interface LocalOptions {
  readonly baseDir: string;
  readonly nodes: number;
  readonly grpcBasePort: number;
  /** peerBasePort: the peer plane's port of n1 (default grpcBasePort + 100). */
  readonly peerBasePort?: number;
  readonly httpBasePort: number;
  readonly logLevel: string;
}

/** KILL_AFTER_MS: how long a child may take to stop after SIGTERM before SIGKILL. */
export const KILL_AFTER_MS = 5_000;
/** READY_WAIT_MS: how long to wait for a leader before saying so. */
export const READY_WAIT_MS = 60_000;

interface Child {
  readonly id: string;
  readonly grpc: string;
  readonly peer: string;
  readonly http: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly proc: ChildProcess;
  exited: boolean;
}

/** selfInvocation: how to run this CLI again (node + loader flags + entry), and how to show it to a person. */
export function selfInvocation(): { command: string; args: string[]; display: string } {
  const entry = process.argv[1] ?? '';
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--inspect'));
  const rel = relative(process.cwd(), entry) || entry;
  const display = entry.endsWith('.ts') ? `npx tsx ${rel}` : `node ${rel}`;
  return { command: process.execPath, args: [...execArgv, entry], display };
}

/**
 * apiKeyFor: SNAPCOORD_API_KEY (handed to the nodes in their environment),
 * else <baseDir>/api-key (made once, 0600; the nodes read it with
 * --api-key-file). A new key is written through a temp file renamed into
 * place, so a link planted at api-key (dangling or not) is replaced, never
 * written through. `warning`: the file is readable by others (keyFileExposure).
 */
export async function apiKeyFor(baseDir: string, env: NodeJS.ProcessEnv = process.env): Promise<{ key: string; source: string; file: string; warning: string | null }> {
  const fromEnv = env['SNAPCOORD_API_KEY'];
  if (fromEnv !== undefined && fromEnv !== '') return { key: fromEnv, source: 'SNAPCOORD_API_KEY', file: '', warning: null };
  const file = join(baseDir, 'api-key');
  if (existsSync(file)) {
    let key = '';
    try {
      key = readKeyFileLine(file);
    } catch (err) {
      // An empty file gets a new key (as before); anything else is the operator's to look at.
      if ((err as Error).message !== KEY_FILE_EMPTY) throw new CliError(`${file}: ${(err as Error).message}`, EXIT_CONFIG);
    }
    if (key !== '') return { key, source: file, file, warning: keyFileExposure(file) };
  }
  const key = randomBytes(24).toString('base64url');
  await writeFileAtomic(file, `${key}\n`, 0o600);
  return { key, source: `${file} (generated)`, file, warning: null };
}

/**
 * openNodeLog opens a node's log `file` for appending, private: created 0600,
 * and an existing file set to 0600 whatever its mode was (a log reopened by
 * a later `local` kept its wider mode before: a 0644 log, readable by every
 * user of the machine, holds the node's addresses, peers' names and errors).
 * Never through a link (O_NOFOLLOW): a link planted at the log's name would
 * have the nodes' output appended wherever it pointed.
 * Errors: CliError (EXIT_CONFIG) naming the file when it is a link, not a
 * regular file, or cannot be opened or made private; nothing is written.
 */
export function openNodeLog(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new CliError(`${file} is a symbolic link; not written through (remove it)`, EXIT_CONFIG);
    throw new CliError(`cannot open the node log ${file}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new Error('not a regular file (remove it)');
    fchmodSync(fd, 0o600);
  } catch (err) {
    closeSync(fd);
    throw new CliError(`cannot use ${file} as a node log: ${(err as Error).message}`, EXIT_CONFIG);
  }
  return fd;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function checkPort(name: string, port: number, count: number): void {
  if (!Number.isSafeInteger(port) || port < 1 || port + count - 1 > 65535) {
    throw new CliError(`${name}: ${port} is not a port that leaves room for ${count} nodes`, EXIT_CONFIG);
  }
}

/**
 * localPeerCrlArgs: `--peer-crl <tlsDir>/crl.pem` when that CRL exists, else
 * nothing. runLocal makes it first (ensureLocalCrl: empty until `snapcoord
 * certs revoke --dir <tlsDir>` extends it), so every node has the flag from
 * its first start and reads the file again within 5 s of a change: a
 * certificate revoked while the cluster runs is refused without a restart.
 */
export function localPeerCrlArgs(tlsDir: string): string[] {
  const file = crlFileOf(tlsDir);
  return existsSync(file) ? ['--peer-crl', file] : [];
}

export async function runLocal(opts: LocalOptions): Promise<number> {
  if (!Number.isSafeInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 9) {
    throw new CliError(`nodes: ${opts.nodes} is out of range 1..9`, EXIT_CONFIG);
  }
  checkPort('grpc-base-port', opts.grpcBasePort, opts.nodes);
  const peerBasePort = opts.peerBasePort ?? opts.grpcBasePort + 100;
  checkPort('peer-base-port', peerBasePort, opts.nodes);
  if (Math.abs(peerBasePort - opts.grpcBasePort) < opts.nodes) {
    throw new CliError(`peer-base-port: ${peerBasePort} overlaps the gRPC ports ${opts.grpcBasePort}..${opts.grpcBasePort + opts.nodes - 1}`, EXIT_CONFIG);
  }
  checkPort('http-base-port', opts.httpBasePort, opts.nodes);
  const baseDir = resolve(opts.baseDir);
  mkdirSync(baseDir, { recursive: true, mode: 0o700 });
  const show = (p: string): string => {
    const rel = relative(process.cwd(), p);
    return rel === '' ? '.' : rel.startsWith('..') ? p : rel;
  };
  const ids = Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`);
  const grpcOf = (i: number): string => `127.0.0.1:${opts.grpcBasePort + i}`;
  const peerOf = (i: number): string => `127.0.0.1:${peerBasePort + i}`;
  const peers = ids.map((id, i) => `${id}=${peerOf(i)}`).join(',');
  const apiKey = await apiKeyFor(baseDir);
  if (apiKey.warning !== null) process.stderr.write(`snapcoord: warning: ${apiKey.warning}\n`);
  let tls: LocalTls;
  try {
    tls = await ensureLocalTls(join(baseDir, 'tls'), ids);
    await ensureLocalCrl(tls);
  } catch (err) {
    throw new CliError(`cannot prepare the local cluster's certificates under ${join(baseDir, 'tls')}: ${(err as Error).message}`, EXIT_CONFIG);
  }
  const self = selfInvocation();

  // Every log opened (and made private) before any node starts: a refused one starts none.
  const logFds: number[] = [];
  try {
    for (const id of ids) logFds.push(openNodeLog(join(baseDir, `${id}.log`)));
  } catch (err) {
    for (const fd of logFds) closeSync(fd);
    throw err;
  }

  process.stdout.write(`snapcoord local cluster: ${opts.nodes} node(s), data under ${show(baseDir)}\n`);
  const children: Child[] = [];
  let stopping = false;
  let finish: (code: number) => void = () => undefined;
  const done = new Promise<number>((r) => (finish = r));

  const stopAll = (code: number): void => {
    if (stopping) return;
    stopping = true;
    const live = children.filter((c) => !c.exited);
    if (live.length === 0) return finish(code);
    process.stdout.write(`stopping ${live.length} node(s)...\n`);
    for (const c of live) {
      c.proc.kill('SIGTERM');
      setTimeout(() => {
        if (!c.exited) {
          process.stdout.write(`${c.id} did not stop within ${KILL_AFTER_MS / 1000} s: SIGKILL\n`);
          c.proc.kill('SIGKILL');
        }
      }, KILL_AFTER_MS).unref();
    }
    void Promise.all(live.map((c) => new Promise<void>((r) => (c.exited ? r() : c.proc.once('exit', () => r()))))).then(() => {
      process.stdout.write('all nodes stopped\n');
      finish(code);
    });
  };

  ids.forEach((id, i) => {
    const grpc = grpcOf(i);
    const peer = peerOf(i);
    const http = `127.0.0.1:${opts.httpBasePort + i}`;
    const cert = tls.nodes[id] as NodeCertFiles;
    const dataDir = join(baseDir, id);
    const logFile = join(baseDir, `${id}.log`);
    const fd = logFds[i] as number;
    const proc = spawn(
      self.command,
      [
        // The node's V8 flags (node-runtime.ts) before the entry, unless this process was started with its own.
        ...NODE_V8_FLAGS.filter((f) => !self.args.some((a) => a.startsWith(f.split('=')[0] ?? f))),
        ...self.args,
        'serve',
        '--id',
        id,
        '--grpc',
        grpc,
        '--peer-listen',
        peer,
        '--http',
        http,
        '--peers',
        peers,
        '--data-dir',
        dataDir,
        '--log-level',
        opts.logLevel,
        '--peer-cert',
        cert.certFile,
        '--peer-key',
        cert.keyFile,
        '--peer-ca',
        tls.caFile,
        // The CA under ./data/tls is this cluster's alone (made by `local`): the default id, said, warns of no sharing.
        '--cluster-id',
        'snapcoord',
        ...localPeerCrlArgs(tls.dir),
        '--cert',
        cert.certFile,
        '--key',
        cert.keyFile,
        ...(apiKey.file !== '' ? ['--api-key-file', apiKey.file] : []),
      ],
      { stdio: ['ignore', fd, fd], env: nodeProcessEnv(apiKey.file !== '' ? process.env : { ...process.env, SNAPCOORD_API_KEY: apiKey.key }) },
    );
    closeSync(fd);
    const child: Child = { id, grpc, peer, http, dataDir, logFile, proc, exited: false };
    children.push(child);
    proc.on('error', (err) => process.stderr.write(`snapcoord: cannot start ${id}: ${err.message}\n`));
    proc.on('exit', (code, signal) => {
      child.exited = true;
      if (!stopping) {
        process.stderr.write(`node ${id} exited (${signal ?? `code ${code}`}); last lines of ${show(logFile)}:\n${tail(logFile, 5)}\n`);
        if (children.every((c) => c.exited)) {
          process.stderr.write('every node has exited\n');
          stopAll(1);
        }
      }
    });
    process.stdout.write(`  ${id}  grpc ${grpc}  peer ${peer}  http ${http}  data ${show(dataDir)}  log ${show(logFile)}\n`);
  });
  process.stdout.write(`API key: ${apiKey.key}  (from ${show(apiKey.source)})\n`);
  process.stdout.write(`TLS: CA ${show(tls.caFile)}, node certificates in ${show(tls.dir)} (client TLS, peer mutual TLS); CA key ${show(tls.caKeyFile)} (given to no node)\n`);
  const dial: ClientDial = dialWithCa(tls.caFile, apiKey.key);
  process.stdout.write('Ctrl-C stops every node.\n');

  // The first signal stops the nodes gracefully. A terminal's Ctrl-C reaches every process of the
  // group (and tsx relays it once more), so repeats within a second are the same request; a later
  // one (a second Ctrl-C) kills what is left at once.
  // Timed on the monotonic clock: on the wall clock a step back made a second Ctrl-C "the same request" for the step's length.
  let firstSignalMs: number | null = null;
  const onSignal = (): void => {
    if (firstSignalMs === null) {
      firstSignalMs = performance.now();
      stopAll(0);
    } else if (performance.now() - firstSignalMs > 1_000) {
      for (const c of children) if (!c.exited) c.proc.kill('SIGKILL');
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed terminal (SIGHUP) stops the cluster too: its nodes, which take SIGHUP as "read the CRL again"
  // (serve --peer-crl), would otherwise outlive this process and hold its ports.
  process.on('SIGHUP', onSignal);

  void waitReady(children, dial, () => stopping).then((leader) => {
    if (stopping) return;
    if (leader === null) {
      process.stdout.write(`no leader after ${READY_WAIT_MS / 1000} s; see the logs under ${show(baseDir)}\n`);
      return;
    }
    const other = children.find((c) => c.id !== leader.id) ?? leader;
    process.stdout.write(
      `cluster ready: leader ${leader.id}\n` +
        'try:\n' +
        `  ${self.display} kv put greeting hello --endpoint ${other.grpc}\n` +
        `  ${self.display} kv get greeting --endpoint ${leader.grpc}\n`,
    );
  });

  return done;
}

/** waitReady polls Cluster.Status on every node until one reports itself leader (null after READY_WAIT_MS). */
async function waitReady(children: readonly Child[], dial: ClientDial, stopped: () => boolean): Promise<Child | null> {
  // Each node is asked expecting its own certificate: the API key goes with every call.
  const clients = children.map((c) => ({ child: c, client: new ClusterClient(c.grpc, dial.credentialsFor !== undefined ? { ...dial, credentials: dial.credentialsFor(c.id) } : dial) }));
  try {
    // The monotonic clock: a wall clock stepped back held this wait for the step's length.
    const deadline = performance.now() + READY_WAIT_MS;
    while (performance.now() < deadline && !stopped()) {
      for (const { child, client } of clients) {
        if (child.exited) continue;
        try {
          const st = await client.status({ deadlineMs: 500 });
          if (st.role === Role.ROLE_LEADER) return child;
        } catch {
          // not up yet
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    return null;
  } finally {
    for (const { client } of clients) client.close();
  }
}

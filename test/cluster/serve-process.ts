/**
 * Child: a CLI child process (`node --import tsx src/cli/main.ts ...`) with its
 * output kept for diagnostics; ServeProcess: one real `snapcoord serve` with its
 * two planes (client gRPC on `grpc`, Raft on `peer`); plus freePorts() and
 * freeNodeAddresses() for ports from the OS and until() for bounded polling.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** REPO_ROOT: where `--import tsx` resolves and src/cli/main.ts lives. */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** freePorts asks the OS for n distinct free ports (bind 127.0.0.1:0, note the port, close). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new Error('no port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** NodeAddresses: where one node listens: the client plane (`--grpc`), the peer plane (`--peer-listen`) and the gateway (`--http`). */
export interface NodeAddresses {
  readonly grpc: string;
  readonly peer: string;
  readonly http: string;
}

/**
 * freeNodeAddresses gives each id a client, a peer and an HTTP address on
 * 127.0.0.1: 3 * ids.length distinct ports from one freePorts call.
 */
export async function freeNodeAddresses<Id extends string>(ids: readonly Id[]): Promise<Record<Id, NodeAddresses>> {
  const ports = await freePorts(3 * ids.length);
  const at = (i: number): string => `127.0.0.1:${ports[i] ?? 0}`;
  const out = {} as Record<Id, NodeAddresses>;
  ids.forEach((id, i) => {
    out[id] = { grpc: at(i), peer: at(ids.length + i), http: at(2 * ids.length + i) };
  });
  return out;
}

/** peersFlag: the `--peers` value of `addrs`: "id=<peer address>,..." in the order given (members are named by their PEER addresses). */
export function peersFlag<Id extends string>(addrs: Readonly<Record<Id, NodeAddresses>>): string {
  return (Object.entries(addrs) as [Id, NodeAddresses][]).map(([id, a]) => `${id}=${a.peer}`).join(',');
}

export interface ServeArgs {
  readonly id: string;
  /** grpc: the client plane's listen address (--grpc). */
  readonly grpc: string;
  /** peer: the peer plane's listen address (--peer-listen); without it serve listens at this node's address in `peers`. */
  readonly peer?: string;
  /** peers: the membership, "id=<peer address>,..." (see peersFlag). */
  readonly peers: string;
  readonly dataDir: string;
  readonly clusterId?: string;
  /** http: the gateway's listen address (default 127.0.0.1:0). */
  readonly http?: string;
  /** apiKey: the gateway's admin key (default: none, --insecure-no-auth). */
  readonly apiKey?: string;
  /** extra: more `serve` flags. */
  readonly extra?: readonly string[];
  /** env: extra environment (the rest is this process's, without SNAPCOORD_* variables). */
  readonly env?: Record<string, string>;
}

/** cleanEnv: this process's environment without any SNAPCOORD_* variable, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SNAPCOORD_'))), ...extra };
}

/**
 * plaintextClientEnv: cleanEnv for a CLI client command that talks to a
 * plaintext test cluster: SNAPCOORD_CACERT='' (plaintext) and
 * SNAPCOORD_API_KEY='' (no key), so the CLI never picks up a developer's
 * ./data/tls/ca.pem or ./data/api-key from the working directory; `extra`
 * overrides both.
 */
export function plaintextClientEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return cleanEnv({ SNAPCOORD_CACERT: '', SNAPCOORD_API_KEY: '', ...extra });
}

/** Child: a CLI child process with its output. */
export class Child {
  readonly proc: ChildProcess;
  output = '';
  exitCode: number | null = null;
  signal: NodeJS.Signals | null = null;
  readonly exited: Promise<void>;

  constructor(args: readonly string[], env: NodeJS.ProcessEnv) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exitCode = code;
        this.signal = signal;
        resolve();
      });
    });
  }

  get running(): boolean {
    return this.exitCode === null && this.signal === null;
  }

  /** waitFor resolves once the output matches `re` (returns the match); rejects if the child exits first or after timeoutMs. */
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = re.exec(this.output);
      if (m !== null) return m;
      if (!this.running) throw new Error(`child exited (${this.signal ?? this.exitCode}) before ${re}:\n${this.lastLines()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no ${re} within ${timeoutMs} ms:\n${this.lastLines()}`);
  }

  /** kill sends `signal` and waits for the exit (SIGKILL after 5 s). */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }

  lastLines(n = 20): string {
    return this.output.trimEnd().split('\n').slice(-n).join('\n');
  }
}

/** ServeProcess runs `snapcoord serve` until stopped; `output` holds its stdout and stderr. */
export class ServeProcess extends Child {
  readonly args: ServeArgs;

  constructor(args: ServeArgs) {
    const argv = ['serve', '--id', args.id, '--grpc', args.grpc, ...(args.peer !== undefined ? ['--peer-listen', args.peer] : []), '--peers', args.peers];
    argv.push('--data-dir', args.dataDir, '--log-level', 'info');
    // The embedded HTTP gateway: any free port, open (these tests talk gRPC; test/gateway covers auth).
    argv.push('--http', args.http ?? '127.0.0.1:0', ...(args.apiKey !== undefined ? ['--api-key', args.apiKey] : ['--insecure-no-auth']));
    argv.push(...(args.extra ?? []));
    if (args.clusterId !== undefined) argv.push('--cluster-id', args.clusterId);
    super(argv, cleanEnv(args.env));
    this.args = args;
  }

  /**
   * ready resolves once the process prints its "listening on grpc <client> peer <peer>"
   * line, with those two addresses; rejects if it exits first or after timeoutMs.
   */
  async ready(timeoutMs = 60_000): Promise<{ grpc: string; peer: string }> {
    const m = await this.waitFor(new RegExp(`snapcoord node ${escapeRe(this.args.id)} listening on grpc (\\S+) peer (\\S+)\\n`), timeoutMs);
    return { grpc: m[1] ?? '', peer: m[2] ?? '' };
  }

  /** kill sends `signal` (default SIGKILL: a crash) and waits for the exit. */
  override kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    return super.kill(signal);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** until polls f until it returns a value, or fails after timeoutMs with the last error. */
export async function until<T>(what: string, timeoutMs: number, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last === null ? '' : ` (last error: ${(last as Error).message})`}`);
}

/** httpPut sends `body` with PUT to http://address/path and resolves with the status and body text. */
export function httpPut(address: string, path: string, body: Buffer): Promise<{ status: number; text: string }> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: address.slice(0, at), port: Number(address.slice(at + 1)), path, method: 'PUT', headers: { 'content-type': 'application/octet-stream', 'content-length': body.length } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

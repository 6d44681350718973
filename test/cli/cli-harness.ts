/**
 * Test harness for the CLI: runCli() runs `node --import tsx src/cli/main.ts
 * ...` as a user would (SNAPCOORD_* scrubbed from the environment; plaintext
 * and no key unless the test says otherwise), and CliCluster starts three real
 * `snapcoord serve` processes on 127.0.0.1 (client and peer planes on ports
 * from the OS, plaintext, --insecure-no-auth) with data in a temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import { REPO_ROOT, freeNodeAddresses, peersFlag, plaintextClientEnv, sleep } from '../cluster/serve-process.js';

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** cleanEnv: this process's environment without any SNAPCOORD_* variable, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SNAPCOORD_'))), ...extra };
}

/**
 * runCli runs the CLI with `args` and resolves with its exit code and output
 * (kills it after timeoutMs). Its environment is plaintextClientEnv(opts.env):
 * SNAPCOORD_CACERT='' and SNAPCOORD_API_KEY='' unless opts.env sets them, so
 * a developer's ./data/tls/ca.pem and ./data/api-key are never picked up.
 */
export function runCli(args: readonly string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      cwd: REPO_ROOT,
      env: plaintextClientEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** describeRun: a CliResult for an assertion message. */
export function describeRun(args: readonly string[], r: CliResult): string {
  return `snapcoord ${args.join(' ')} -> exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** CliNode: one `snapcoord serve` child process. */
export class CliNode {
  readonly id: string;
  /** grpc: the client plane (what the CLI's --endpoint names). */
  readonly grpc: string;
  /** peer: the peer plane (the node's address in the membership). */
  readonly peer: string;
  readonly http: string;
  readonly proc: ChildProcess;
  output = '';
  readonly exited: Promise<void>;
  private running = true;

  constructor(id: string, grpc: string, peer: string, http: string, peers: string, dir: string) {
    this.id = id;
    this.grpc = grpc;
    this.peer = peer;
    this.http = http;
    const argv = ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--id', id, '--grpc', grpc, '--peer-listen', peer, '--http', http, '--peers', peers];
    argv.push('--data-dir', join(dir, id), '--snapshot-dir', join(dir, 'snapshots', id), '--snapshot-root', dir);
    argv.push('--insecure-no-auth', '--log-level', 'info');
    this.proc = spawn(process.execPath, argv, { cwd: REPO_ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', () => {
        this.running = false;
        resolve();
      });
    });
  }

  async ready(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.output.includes(`snapcoord node ${this.id} listening on grpc ${this.grpc} peer ${this.peer}\n`)) return;
      if (!this.running) throw new Error(`serve ${this.id} exited:\n${this.output.slice(-2000)}`);
      await sleep(50);
    }
    throw new Error(`serve ${this.id} not listening within ${timeoutMs} ms:\n${this.output.slice(-2000)}`);
  }

  async kill(): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** CliCluster: three serve processes n1 n2 n3 and their temp dir. */
export class CliCluster {
  readonly dir: string;
  readonly nodes: readonly CliNode[];

  private constructor(dir: string, nodes: readonly CliNode[]) {
    this.dir = dir;
    this.nodes = nodes;
  }

  static async start(): Promise<CliCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-cli-'));
    const ids = ['n1', 'n2', 'n3'] as const;
    const planes = await freeNodeAddresses(ids);
    const peers = peersFlag(planes);
    const nodes = ids.map((id) => new CliNode(id, planes[id].grpc, planes[id].peer, planes[id].http, peers, dir));
    const cluster = new CliCluster(dir, nodes);
    try {
      await Promise.all(nodes.map((n) => n.ready()));
      await cluster.leader();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  node(id: string): CliNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** leader waits (up to timeoutMs) until every node agrees on one leader and returns it. */
  async leader(timeoutMs = 20_000): Promise<CliNode> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const clients = this.nodes.map((n) => new ClusterClient(n.grpc));
      try {
        const sts = await Promise.all(clients.map((c) => c.status({ deadlineMs: 1_000 })));
        const l = sts.find((s) => s.role === Role.ROLE_LEADER);
        if (l !== undefined && sts.every((s) => s.leaderId === l.id)) return this.node(l.id);
        last = sts.map((s) => `${s.id}:${s.role}/${s.leaderId}`).join(' ');
      } catch (err) {
        last = (err as Error).message;
      } finally {
        for (const c of clients) c.close();
      }
      await sleep(100);
    }
    throw new Error(`no agreed leader within ${timeoutMs} ms (${last})`);
  }

  /** follower: some node that is not the leader. */
  async follower(): Promise<CliNode> {
    const l = await this.leader();
    const f = this.nodes.find((n) => n.id !== l.id);
    if (f === undefined) throw new Error('no follower');
    return f;
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()));
    await rm(this.dir, { recursive: true, force: true });
  }
}

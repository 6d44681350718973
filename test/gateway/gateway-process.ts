/**
 * GatewayServe: one real `snapcoord serve` child process with its embedded
 * HTTP gateway (the API key comes through the environment, as `npm start`
 * passes it), and GatewayAlone: `snapcoord gateway --target ...`. Output is
 * kept for diagnostics; kill() always ends the child (SIGKILL after 5 s).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { REPO_ROOT } from '../cluster/serve-process.js';

export { freePorts, sleep, REPO_ROOT } from '../cluster/serve-process.js';

/** cleanEnv: this process's environment without any SNAPCOORD_* variable, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SNAPCOORD_'))), ...extra };
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

export interface GatewayServeArgs {
  readonly id: string;
  readonly grpc: string;
  readonly http: string;
  readonly peers: string;
  readonly dataDir: string;
  readonly apiKey: string;
  readonly snapshotRoot: string;
  readonly snapshotDir: string;
}

/** GatewayServe: `snapcoord serve` with SNAPCOORD_API_KEY in its environment. */
export class GatewayServe extends Child {
  readonly args: GatewayServeArgs;

  constructor(args: GatewayServeArgs) {
    super(
      [
        'serve',
        '--id', args.id,
        '--grpc', args.grpc,
        '--http', args.http,
        '--peers', args.peers,
        '--data-dir', args.dataDir,
        '--snapshot-root', args.snapshotRoot,
        '--snapshot-dir', args.snapshotDir,
        '--log-level', 'warn',
      ],
      cleanEnv({ SNAPCOORD_API_KEY: args.apiKey }),
    );
    this.args = args;
  }

  /** ready waits for both the gateway and the gRPC "listening" lines. */
  async ready(timeoutMs = 30_000): Promise<void> {
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} gateway listening on http `), timeoutMs);
    await this.waitFor(new RegExp(`snapcoord node ${this.args.id} listening on grpc`), timeoutMs);
  }
}

/**
 * Child: one child process of a real-process test or bench (by default the
 * snapcoord CLI from source: `node --import tsx src/cli/main.ts ...`) with
 * its output kept for diagnosis; runCli and cli run one CLI command to its
 * end. Every live child is SIGKILLed when the test process exits, so a
 * failed test never leaves a server behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddressInUseError, addressInUseIn } from './ports.js';

/** REPO_ROOT: where `--import tsx` resolves and src/cli/main.ts lives (every child's working directory). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

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

/** ChildOptions: how a Child is started. */
export interface ChildOptions {
  /** command: run this program with the args as given instead of the snapcoord CLI (etcd, etcdctl, ...). */
  readonly command?: string;
  /** wrap: a command the CLI's node runs under, which must exec it in place so signals reach it (e.g. `ip netns exec ns1`). */
  readonly wrap?: readonly string[];
  /** nodeImports: more `--import` modules for the CLI's node, after tsx (paths relative to REPO_ROOT). */
  readonly nodeImports?: readonly string[];
  /** outputCapBytes: keep only the last ~outputCapBytes of output (default: all of it). */
  readonly outputCapBytes?: number;
  /** name: what messages call the child (default the program and its first argument). */
  readonly name?: string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** Child: a child process with its output (stdout and stderr interleaved in `output`, and apart). */
export class Child {
  readonly name: string;
  readonly proc: ChildProcess;
  output = '';
  stdout = '';
  stderr = '';
  exitCode: number | null = null;
  signal: NodeJS.Signals | null = null;
  /** exitedAtMs: performance.now() when the process exited (0 while it runs). */
  exitedAtMs = 0;
  /** exited: resolves once the process exited and its output is read to the end. */
  readonly exited: Promise<void>;

  /** constructor starts the CLI with `args` (or opts.command) in REPO_ROOT with `env` (default cleanEnv()). */
  constructor(args: readonly string[], env: NodeJS.ProcessEnv = cleanEnv(), opts: ChildOptions = {}) {
    const [cmd, argv] =
      opts.command !== undefined
        ? [opts.command, [...args]]
        : cliCommand(args, opts);
    this.name = opts.name ?? `${opts.command ?? 'snapcoord'} ${args[0] ?? ''}`.trim();
    this.proc = spawn(cmd, argv, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.proc);
    const cap = opts.outputCapBytes ?? Infinity;
    const keep = (s: string): string => (s.length > cap ? s.slice(-Math.ceil(cap / 2)) : s);
    this.proc.stdout?.on('data', (d: Buffer) => {
      this.stdout = keep(this.stdout + d.toString());
      this.output = keep(this.output + d.toString());
    });
    this.proc.stderr?.on('data', (d: Buffer) => {
      this.stderr = keep(this.stderr + d.toString());
      this.output = keep(this.output + d.toString());
    });
    this.proc.once('error', (err) => {
      this.output += `\n[spawn ${cmd}: ${err.message}]\n`;
      if (this.exitCode === null && this.signal === null) this.exitCode = -1;
    });
    this.proc.once('exit', (code, signal) => {
      this.exitedAtMs = performance.now();
      this.exitCode = code;
      this.signal = signal;
      live.delete(this.proc);
    });
    this.exited = new Promise((resolve) => this.proc.once('close', () => resolve()));
  }

  get running(): boolean {
    return this.exitCode === null && this.signal === null;
  }

  /**
   * waitFor resolves once the output matches `re` (returns the match);
   * rejects if the child exits first or after timeoutMs, with its last
   * lines: with an AddressInUseError naming the address when it exited
   * because one of its listen addresses was taken (addressInUseIn).
   */
  async waitFor(re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = re.exec(this.output);
      if (m !== null) return m;
      if (!this.running) {
        await this.exited; // its output read to the end
        const exited = `${this.name} exited (${this.signal ?? this.exitCode}) before ${re}:\n${this.lastLines()}`;
        const taken = addressInUseIn(this.output);
        if (taken !== null) throw new AddressInUseError(taken, `${this.name}: ${taken || 'a listen address'} is taken (address in use): ${exited}`);
        throw new Error(exited);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${this.name}: no ${re} within ${timeoutMs} ms:\n${this.lastLines()}`);
  }

  /** kill sends `signal` and waits for the exit (SIGKILL after graceMs). */
  async kill(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** lastLines: the last n lines of the output, for an error message. */
  lastLines(n = 20): string {
    return this.output.trimEnd().split('\n').slice(-n).join('\n');
  }
}

function cliCommand(args: readonly string[], opts: ChildOptions): [string, string[]] {
  const node = [process.execPath, '--import', 'tsx', ...(opts.nodeImports ?? []).flatMap((m) => ['--import', m]), 'src/cli/main.ts', ...args];
  const wrap = opts.wrap ?? [];
  return wrap.length > 0 ? [wrap[0] as string, [...wrap.slice(1), ...node]] : [node[0] as string, node.slice(1)];
}

/** CliResult: how one CLI command ended. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * runCli runs the CLI with `args` to its end and resolves with its exit code
 * and output (SIGKILL after timeoutMs). Its environment is
 * plaintextClientEnv(opts.env): SNAPCOORD_CACERT='' and SNAPCOORD_API_KEY=''
 * unless opts.env sets them, so a developer's ./data/tls/ca.pem and
 * ./data/api-key are never picked up.
 */
export async function runCli(args: readonly string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const c = new Child(args, plaintextClientEnv(opts.env));
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
  await c.exited;
  clearTimeout(timer);
  return { code: c.exitCode, stdout: c.stdout, stderr: c.stderr };
}

/** describeRun: a CliResult for an assertion message. */
export function describeRun(args: readonly string[], r: CliResult): string {
  return `snapcoord ${args.join(' ')} -> exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
}

/** cli runs `snapcoord <args>` with cleanEnv() and resolves with its output; rejects on a non-zero exit (or after timeoutMs) with its last lines. */
export async function cli(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  const c = new Child(args, cleanEnv());
  const timer = setTimeout(() => c.proc.kill('SIGKILL'), timeoutMs);
  await c.exited;
  clearTimeout(timer);
  if (c.exitCode !== 0) throw new Error(`snapcoord ${args.join(' ')} exited ${c.signal ?? c.exitCode}:\n${c.lastLines()}`);
  return c.output;
}

/**
 * startProgram starts `command args` (etcd, a node script, ...) in REPO_ROOT
 * with this process's environment plus `env`, keeping the last 64 KiB of its
 * output for an error report (benches: long runs, chatty programs).
 */
export function startProgram(name: string, command: string, args: readonly string[], env: Record<string, string> = {}): Child {
  return new Child(args, { ...process.env, ...env }, { command, name, outputCapBytes: 64 * 1024 });
}

/**
 * ServeProcess: one real `snapcoord serve` child process with its two planes
 * (client gRPC on `grpc`, Raft on `peer`) and its embedded gateway, output
 * kept for diagnosis.
 */
import { Child, cleanEnv, type ChildOptions } from './child.js';
import { AddressInUseError, addressInUseIn } from './ports.js';

/** ServeArgs: the flags of one `snapcoord serve`. */
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
  /** apiKey: the admin key (default: none, --insecure-no-auth). */
  readonly apiKey?: string;
  /** apiKeyInEnv: pass apiKey as SNAPCOORD_API_KEY, as `npm start` does, instead of --api-key. */
  readonly apiKeyInEnv?: boolean;
  /** logLevel: --log-level (default info). */
  readonly logLevel?: string;
  /** extra: more `serve` flags. */
  readonly extra?: readonly string[];
  /** env: extra environment (the rest is this process's, without SNAPCOORD_* variables). */
  readonly env?: Record<string, string>;
  /** child: how the process is started (a wrapping command, more node imports). */
  readonly child?: ChildOptions;
}

/** serveArgv: the `serve ...` argument list of `args`. */
export function serveArgv(args: ServeArgs): string[] {
  const argv = ['serve', '--id', args.id, '--grpc', args.grpc, ...(args.peer !== undefined ? ['--peer-listen', args.peer] : []), '--peers', args.peers];
  argv.push('--data-dir', args.dataDir, '--log-level', args.logLevel ?? 'info');
  // The embedded HTTP gateway: any free port unless told; open unless given a key.
  argv.push('--http', args.http ?? '127.0.0.1:0');
  if (args.apiKey === undefined) argv.push('--insecure-no-auth');
  else if (args.apiKeyInEnv !== true) argv.push('--api-key', args.apiKey);
  argv.push(...(args.extra ?? []));
  if (args.clusterId !== undefined) argv.push('--cluster-id', args.clusterId);
  return argv;
}

/** ServeProcess runs `snapcoord serve` until stopped; `output` holds its stdout and stderr. */
export class ServeProcess extends Child {
  readonly args: ServeArgs;

  constructor(args: ServeArgs) {
    const keyEnv = args.apiKey !== undefined && args.apiKeyInEnv === true ? { SNAPCOORD_API_KEY: args.apiKey } : {};
    super(serveArgv(args), cleanEnv({ ...keyEnv, ...args.env }), args.child);
    this.args = args;
  }

  /**
   * ready resolves once the process prints its "listening on grpc <client> peer <peer>"
   * line (printed after the gateway listens), with those two addresses;
   * rejects if it exits first or after timeoutMs: with an AddressInUseError
   * (the address named) when it exited because one of its listen addresses
   * was taken (EADDRINUSE), else with an Error; both hold its last lines.
   */
  async ready(timeoutMs = 60_000): Promise<{ grpc: string; peer: string }> {
    let m: RegExpMatchArray;
    try {
      m = await this.waitFor(new RegExp(`snapcoord node ${escapeRe(this.args.id)} listening on grpc (\\S+) peer (\\S+)\\n`), timeoutMs);
    } catch (err) {
      if (this.running) throw err;
      await this.exited; // its output read to the end
      const taken = addressInUseIn(this.output);
      if (taken === null) throw err;
      throw new AddressInUseError(taken, `${this.args.id}: ${taken || 'a listen address'} is taken (EADDRINUSE): ${(err as Error).message}`, { cause: err });
    }
    return { grpc: m[1] ?? '', peer: m[2] ?? '' };
  }

  /** kill sends `signal` (default SIGKILL: a crash) and waits for the exit. */
  override kill(signal: NodeJS.Signals = 'SIGKILL', graceMs?: number): Promise<void> {
    return super.kill(signal, graceMs);
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * ServeProcess: one real `snapcoord serve` child process with its two planes
 * (client gRPC on `grpc`, Raft on `peer`) and its embedded gateway, output
 * kept for diagnosis.
 */
import { Child, cleanEnv, type ChildOptions } from './child.js';
import { rm } from 'node:fs/promises';
import { freeNodeAddresses, startOnFreshPorts, type NodeAddresses } from './ports.js';

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
   * rejects if it exits first or after timeoutMs (as waitFor).
   */
  async ready(timeoutMs = 60_000): Promise<{ grpc: string; peer: string }> {
    return serveListening(this, this.args.id, timeoutMs);
  }

  /** kill sends `signal` (default SIGKILL: a crash) and waits for the exit. */
  override kill(signal: NodeJS.Signals = 'SIGKILL', graceMs?: number): Promise<void> {
    return super.kill(signal, graceMs);
  }
}

/**
 * serveListening waits (up to timeoutMs) for `child`, a `snapcoord serve`
 * of node `id` started any way (a bench's startProgram too), to print its
 * "listening on grpc <client> peer <peer>" line, and resolves with those
 * addresses; rejects as Child.waitFor (an AddressInUseError when a listen
 * address was taken).
 */
export async function serveListening(child: Child, id: string, timeoutMs = 60_000): Promise<{ grpc: string; peer: string }> {
  const m = await child.waitFor(new RegExp(`snapcoord node ${escapeRe(id)} listening on grpc (\\S+) peer (\\S+)\\n`), timeoutMs);
  return { grpc: m[1] ?? '', peer: m[2] ?? '' };
}

/** StartedServes: what startServes started: each id's addresses and process. */
export interface StartedServes<Id extends string> {
  readonly addrs: Record<Id, NodeAddresses>;
  readonly procs: Record<Id, ServeProcess>;
}

/** StartServesOptions: how startServes starts. */
export interface StartServesOptions {
  readonly readyTimeoutMs?: number;
  /** attempts: how many first starts, each on new addresses (default FRESH_PORT_ATTEMPTS). */
  readonly attempts?: number;
  /** addresses: where the processes listen, asked once per attempt (default freeNodeAddresses: new ports from the OS). */
  readonly addresses?: (ids: readonly string[]) => Promise<Record<string, NodeAddresses>>;
}

/**
 * startServes: the first start of one `snapcoord serve` per id, on new
 * addresses from the OS (freeNodeAddresses): argsOf(id, addrs) gives each
 * its ServeArgs; resolves once every process listens. When one finds an
 * address taken (EADDRINUSE), every process is killed, every data dir
 * (ServeArgs.dataDir: it must be new, it is removed) too, and the whole
 * start made again on new addresses (startOnFreshPorts, `attempts` times);
 * any other failure kills them all and rejects. Restarts are the caller's:
 * on the same addresses, with `new ServeProcess`.
 */
export async function startServes<Id extends string>(
  ids: readonly Id[],
  argsOf: (id: Id, addrs: Readonly<Record<Id, NodeAddresses>>) => ServeArgs,
  opts: StartServesOptions = {},
): Promise<StartedServes<Id>> {
  return startOnFreshPorts(
    `starting ${ids.join(',')}`,
    async () => {
      const addrs = (await (opts.addresses ?? freeNodeAddresses)(ids)) as Record<Id, NodeAddresses>;
      if (ids.some((id) => addrs[id] === undefined)) throw new Error(`startServes: no addresses for some of ${ids.join(',')}`);
      const procs = {} as Record<Id, ServeProcess>;
      try {
        for (const id of ids) procs[id] = new ServeProcess(argsOf(id, addrs));
        await Promise.all(ids.map((id) => procs[id].ready(opts.readyTimeoutMs)));
      } catch (err) {
        const started = Object.values<ServeProcess>(procs);
        await Promise.all(started.map((p) => p.kill('SIGKILL')));
        await Promise.all(started.map((p) => rm(p.args.dataDir, { recursive: true, force: true })));
        throw err;
      }
      return { addrs, procs };
    },
    opts.attempts,
  );
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

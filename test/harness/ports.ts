/**
 * Ports from the OS for real-process tests and benches: freePorts,
 * freeNodeAddresses (a node's three planes) and peersFlag (`--peers`); and
 * what to do when one was taken before the process bound it: AddressInUseError
 * and startOnFreshPorts, the one retry of every harness's first start.
 *
 * Why a first start can find its port taken: freePorts binds 127.0.0.1:0,
 * notes the port and closes it; until the child listens, the kernel may hand
 * the same port to an outgoing connection (both come from the ephemeral
 * range), or another test process may take it. Only new addresses help then.
 */
import { createServer, type Server } from 'node:net';

/** freePorts asks the OS for n distinct free ports (bind 127.0.0.1:0 n times at once, note the ports, close). */
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

/** FRESH_PORT_ATTEMPTS: how many first starts startOnFreshPorts tries, each on new addresses, before it gives up. */
export const FRESH_PORT_ATTEMPTS = 3;

/**
 * AddressInUseError: a process could not listen on `address` ("host:port",
 * or '' when its output did not name it) because something else held it
 * (EADDRINUSE). The message holds the process's last lines.
 */
export class AddressInUseError extends Error {
  readonly address: string;

  constructor(address: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AddressInUseError';
    this.address = address;
  }
}

/**
 * addressInUseIn: the address a process's output says it could not listen
 * on because it was in use (Node's "listen EADDRINUSE: address already in
 * use 127.0.0.1:37659", Go's (etcd) "listen tcp 127.0.0.1:2380: bind:
 * address already in use"; '' when the line names none), or null when the
 * output has no such line.
 */
export function addressInUseIn(output: string): string | null {
  const line = /^.*(?:\bEADDRINUSE\b|address already in use).*$/im.exec(output)?.[0];
  if (line === undefined) return null;
  return /((?:\d{1,3}\.){3}\d{1,3}:\d+|\[[0-9a-fA-F:.]+\]:\d+)/.exec(line)?.[1] ?? '';
}

/** addressInUseOf: the AddressInUseError in `err`, its causes or (AggregateError) its errors, at most 8 deep; else null. */
export function addressInUseOf(err: unknown, depth = 0): AddressInUseError | null {
  if (err instanceof AddressInUseError) return err;
  if (depth >= 8 || !(err instanceof Error)) return null;
  for (const e of [err.cause, ...(err instanceof AggregateError ? err.errors : [])]) {
    const found = addressInUseOf(e, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

/**
 * startOnFreshPorts runs `attempt` (a first start: it takes new addresses
 * from the OS itself, e.g. freeNodeAddresses, and starts everything that
 * listens on them) up to `attempts` times (default FRESH_PORT_ATTEMPTS),
 * and resolves with the first that succeeds. Contract of `attempt`: when it
 * fails it has already stopped what it started and removed what it wrote
 * (data dirs), so the next attempt starts clean. Only a failure with an
 * AddressInUseError (addressInUseOf) is retried; any other is thrown as it
 * is, at once. After the last attempt it rejects with an AddressInUseError
 * naming `what`, every taken address and the last failure (its cause).
 * Never for a restart: a restarted node keeps its addresses (its peers name
 * it by them), so there a taken address is an error (ServeCluster.restart).
 */
export async function startOnFreshPorts<T>(what: string, attempt: (n: number) => Promise<T>, attempts = FRESH_PORT_ATTEMPTS): Promise<T> {
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > 10) throw new Error(`startOnFreshPorts: attempts ${attempts} is out of range 1..10`);
  const taken: string[] = [];
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      const inUse = addressInUseOf(err);
      if (inUse === null) throw err;
      taken.push(inUse.address || '(an address)');
      if (n >= attempts) {
        throw new AddressInUseError(
          inUse.address,
          `${what}: an address was taken before the process listened on it at each of ${attempts} starts, each on new ports from the OS (taken: ${taken.join(', ')}); last: ${inUse.message}`,
          { cause: err },
        );
      }
    }
  }
}

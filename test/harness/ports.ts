/**
 * Ports from the OS for real-process tests and benches: freePorts,
 * freeNodeAddresses (a node's three planes) and peersFlag (`--peers`).
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

/**
 * probeListenAddresses: `serve` refuses, before anything touches its data
 * dir, a listen address it cannot bind now (another process holds the port:
 * a local cluster still running; an address this host does not have). For
 * each of `addresses` whose port is not 0, every address its host resolves to
 * is bound as the servers bind it (net listen, exclusive) and released at
 * once; one that binds is enough, as for the servers (src/api/server.ts).
 * Before, the data dir was opened (RocksDB rewrites its MANIFEST and OPTIONS)
 * and only then did the bind fail, so a Typesense snapshot directory given as
 * --data-dir while its cluster still ran was a used data dir ever after.
 * A check, not a reservation: a port taken between it and the servers' bind
 * still fails there, as before.
 * Errors: Error "cannot listen on <address>: <why>" (the servers' wording).
 */
import { lookup } from 'node:dns/promises';
import { createServer, isIP } from 'node:net';
import { parseHostPort } from '../client/address.js';

export async function probeListenAddresses(addresses: readonly string[]): Promise<void> {
  for (const address of addresses) {
    const hp = parseHostPort(address, true);
    if (hp === null || hp.port === 0) continue; // refused elsewhere, or any free port
    const host = hp.host.replace(/^\[|\]$/g, '');
    let hosts: string[];
    try {
      hosts = isIP(host) !== 0 ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
    } catch (err) {
      throw new Error(`cannot listen on ${address}: ${(err as Error).message}`, { cause: err });
    }
    let firstError: unknown = null;
    let bound = false;
    for (const h of hosts) {
      const srv = createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ host: h, port: hp.port, exclusive: true }, () => resolve());
        });
        bound = true;
      } catch (err) {
        firstError ??= err;
      } finally {
        if (srv.listening) await new Promise<void>((resolve) => srv.close(() => resolve()));
      }
      if (bound) break;
    }
    if (!bound) {
      const why = firstError instanceof Error ? firstError.message : `${host} resolves to no address`;
      throw new Error(`cannot listen on ${address}: ${why}`, { cause: firstError });
    }
  }
}

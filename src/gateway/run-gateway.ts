/**
 * runGateway (`snapcoord gateway`): the REST gateway alone, in front of a
 * node's gRPC API at `target`. Prints
 * "snapcoord gateway listening on http <addr> (target <target>)" and runs
 * until SIGTERM or SIGINT, then closes and resolves with exit code 0.
 * Errors: the listen error (e.g. EADDRINUSE), as an Error.
 */
import { pino } from 'pino';
import type { AuthConfig } from './auth.js';
import type { ClientDial } from '../client/dial.js';
import { createGateway } from './gateway.js';

export interface RunGatewayOptions {
  readonly target: string;
  readonly http: string;
  readonly auth: AuthConfig;
  readonly logLevel: string;
  readonly restoreBytesMax?: number;
  /** metricsOpen: GET /metrics without a key (`--metrics-open`). */
  readonly metricsOpen?: boolean;
  /** idleTimeoutMs, keepAliveTimeoutMs, connectionsMax: see GatewayOptions (defaults there). */
  readonly idleTimeoutMs?: number;
  readonly keepAliveTimeoutMs?: number;
  readonly connectionsMax?: number;
  /** dial: TLS credentials to reach the target's client plane (each call carries the caller's key). */
  readonly dial?: ClientDial;
  /** tls: serve HTTPS with this certificate and key (PEM files, reloaded when they change); default plain HTTP. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

export async function runGateway(opts: RunGatewayOptions): Promise<number> {
  const logger = pino({ level: opts.logLevel, base: { gateway: opts.target } });
  const gateway = createGateway({
    target: opts.target,
    auth: opts.auth,
    logger,
    ...(opts.dial !== undefined ? { dial: opts.dial } : {}),
    ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
    ...(opts.restoreBytesMax !== undefined ? { restoreBytesMax: opts.restoreBytesMax } : {}),
    ...(opts.metricsOpen !== undefined ? { metricsOpen: opts.metricsOpen } : {}),
    ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
    ...(opts.keepAliveTimeoutMs !== undefined ? { keepAliveTimeoutMs: opts.keepAliveTimeoutMs } : {}),
    ...(opts.connectionsMax !== undefined ? { connectionsMax: opts.connectionsMax } : {}),
  });
  let address: string;
  try {
    address = await gateway.listen(opts.http);
  } catch (err) {
    await gateway.close().catch(() => undefined);
    throw new Error(`cannot listen on ${opts.http}: ${(err as Error).message}`, { cause: err });
  }
  logger.info({ http: address, https: opts.tls !== undefined, target: opts.target, auth: opts.auth.insecureNoAuth === true ? 'none (insecure)' : 'api keys' }, 'gateway serving');
  process.stdout.write(`snapcoord gateway listening on http ${address} (target ${opts.target})\n`);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ why }, 'gateway shutting down');
      gateway.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'gateway shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

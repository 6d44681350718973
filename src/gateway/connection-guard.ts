/**
 * guardConnections: the gateway's limits on what one HTTP/1 connection may
 * hold, on the Node http server fastify created.
 *
 * - Idle time: every socket gets `idleTimeoutMs` of inactivity (Node's socket
 *   timeout, refreshed by every byte read or written). When it fires:
 *   - no request in flight (a connection that has not sent a whole request
 *     head yet): closed (a kept-alive connection between requests is closed
 *     after `keepAliveTimeoutMs` instead);
 *   - a request whose body is still arriving and is not paused by its handler
 *     (the client stalls its upload): closed;
 *   - a response the client has stopped reading (bytes queued on the socket,
 *     none taken): closed;
 *   - otherwise the server is the one working (a handler waiting for the
 *     node, an upload paused for backpressure): kept, and checked again one
 *     idle period later. A handler resuming a paused body restarts the clock,
 *     so the client gets a whole idle period to send again.
 *   A steady upload is never cut, however long it takes; a trickle with gaps
 *   of `idleTimeoutMs` is. A request head must also be complete within
 *   `idleTimeoutMs` of its first byte (Node's headersTimeout), so a head
 *   trickled faster than the idle timeout is cut too.
 * - Connection count: at most `connectionsMax` sockets are held. A new
 *   connection over the cap evicts the connection that has been idle (no
 *   request in flight) the longest; when every held connection has a request
 *   in flight, the new one is closed instead. So any number of idle or
 *   half-sent connections cannot keep `/health` from being answered: the next
 *   connection pushes the oldest of them out.
 * - HTTPS (a tls.Server): connections are counted from the TCP accept, so a
 *   handshake never finished is an idle connection like any other (its own
 *   deadline is the server's `handshakeTimeout`, which the gateway sets to
 *   `idleTimeoutMs`); requests and timeouts arrive on the TLS socket and
 *   are charged to the TCP connection under it.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/** DEFAULT_IDLE_TIMEOUT_MS: how long a connection may stay silent while the gateway waits for it (10 s). */
export const DEFAULT_IDLE_TIMEOUT_MS = 10_000;
/**
 * DEFAULT_KEEP_ALIVE_TIMEOUT_MS: how long a kept-alive connection may wait
 * for its next request (72 s, fastify's default: longer than the 60 s idle
 * time of common load balancers, so that they close first). Such a
 * connection is the first to be evicted when the cap is reached.
 */
export const DEFAULT_KEEP_ALIVE_TIMEOUT_MS = 72_000;
/** DEFAULT_CONNECTIONS_MAX: the default cap of open gateway connections. */
export const DEFAULT_CONNECTIONS_MAX = 1024;
/** CONNECTIONS_CHECK_INTERVAL_MS_MAX: the longest interval at which Node checks request-head deadlines. */
export const CONNECTIONS_CHECK_INTERVAL_MS_MAX = 1_000;

export interface ConnectionLimits {
  /** idleTimeoutMs: > 0; see the file comment. */
  readonly idleTimeoutMs: number;
  /** connectionsMax: >= 1. */
  readonly connectionsMax: number;
  /** keepAliveTimeoutMs: > 0; how long a connection may wait between requests (default DEFAULT_KEEP_ALIVE_TIMEOUT_MS). */
  readonly keepAliveTimeoutMs?: number;
}

/** ConnectionStats: counters since start (for logs and metrics). */
export interface ConnectionStats {
  /** open: connections held now. */
  readonly open: number;
  /** evicted: idle connections closed to admit a new one. */
  readonly evicted: number;
  /** refused: new connections closed because every held one had a request in flight. */
  readonly refused: number;
  /** idleClosed: connections closed by the idle timeout (silent client, stalled upload or stalled reader). */
  readonly idleClosed: number;
}

export interface ConnectionGuard {
  stats(): ConnectionStats;
}

/** connectionsCheckingIntervalMs: the http.Server `connectionsCheckingInterval` that makes headersTimeout honour `idleTimeoutMs`. */
export function connectionsCheckingIntervalMs(idleTimeoutMs: number): number {
  return Math.max(100, Math.min(CONNECTIONS_CHECK_INTERVAL_MS_MAX, Math.floor(idleTimeoutMs / 2)));
}

/**
 * validateLimits checks the options.
 * Errors: Error naming the option when idleTimeoutMs is not a positive integer or connectionsMax not an integer >= 1.
 */
export function validateLimits(l: ConnectionLimits): void {
  if (!Number.isSafeInteger(l.idleTimeoutMs) || l.idleTimeoutMs <= 0) throw new Error(`idleTimeoutMs must be a positive integer, got ${l.idleTimeoutMs}`);
  if (!Number.isSafeInteger(l.connectionsMax) || l.connectionsMax < 1) throw new Error(`connectionsMax must be an integer >= 1, got ${l.connectionsMax}`);
  const k = l.keepAliveTimeoutMs;
  if (k !== undefined && (!Number.isSafeInteger(k) || k <= 0)) throw new Error(`keepAliveTimeoutMs must be a positive integer, got ${k}`);
}

interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}

interface ConnState {
  /** exchanges: requests in flight on this connection, oldest first (HTTP/1 pipelining answers in order). */
  readonly exchanges: Exchange[];
}

/** tcpSocketOf: the TCP socket under a TLS socket (Node keeps it as `_parent`), or the socket itself. */
function tcpSocketOf(socket: Socket): Socket {
  if (socket instanceof TLSSocket) {
    const parent = (socket as unknown as { _parent?: unknown })._parent;
    if (parent !== null && typeof parent === 'object' && 'remotePort' in parent) return parent as Socket;
  }
  return socket;
}

/**
 * guardConnections applies `limits` to `server` (an http.Server that was
 * created with `connectionsCheckingInterval: connectionsCheckingIntervalMs(idleTimeoutMs)`
 * for the head deadline to be checked often enough). It sets the server's
 * `timeout`, `keepAliveTimeout` and `headersTimeout`, sets `requestTimeout`
 * to 0 (no limit on a whole request: a 10 GB upload takes as long as it
 * takes) and handles the server's 'timeout' event itself.
 * Errors: as validateLimits.
 */
export function guardConnections(server: Server, limits: ConnectionLimits): ConnectionGuard {
  validateLimits(limits);
  const { idleTimeoutMs, connectionsMax } = limits;
  server.timeout = idleTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS;
  server.requestTimeout = 0;
  server.headersTimeout = idleTimeoutMs;

  const conns = new Map<Socket, ConnState>();
  /** idle: connections with no request in flight, in the order they became idle (oldest first). */
  const idle = new Set<Socket>();
  let evicted = 0;
  let refused = 0;
  let idleClosed = 0;

  const drop = (socket: Socket): void => {
    conns.delete(socket);
    idle.delete(socket);
  };

  server.on('connection', (socket: Socket) => {
    if (conns.size >= connectionsMax) {
      const victim = idle.values().next().value;
      if (victim === undefined) {
        refused++;
        socket.destroy();
        return;
      }
      evicted++;
      drop(victim);
      victim.destroy();
    }
    conns.set(socket, { exchanges: [] });
    idle.add(socket);
    socket.once('close', () => drop(socket));
  });

  // HTTPS: the TLS socket closing ends the connection too (its TCP socket may not say so itself).
  server.on('secureConnection', (tls: TLSSocket) => {
    const tcp = tcpSocketOf(tls);
    if (tcp !== tls) tls.once('close', () => drop(tcp));
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const tcp = tcpSocketOf(socket);
    const st = conns.get(tcp);
    if (st === undefined) return;
    const ex: Exchange = { req, res };
    st.exchanges.push(ex);
    idle.delete(tcp);
    // A handler resuming a paused body: the client gets a whole idle period from now.
    req.on('resume', () => {
      if (!socket.destroyed) socket.setTimeout(idleTimeoutMs);
    });
    res.once('close', () => {
      const i = st.exchanges.indexOf(ex);
      if (i >= 0) st.exchanges.splice(i, 1);
      if (st.exchanges.length === 0 && conns.has(tcp) && !socket.destroyed) {
        idle.delete(tcp);
        idle.add(tcp);
      }
    });
  });

  // With a listener here Node no longer destroys timed-out sockets itself: this decides.
  server.on('timeout', (socket: Socket) => {
    const ex = conns.get(tcpSocketOf(socket))?.exchanges[0];
    let cut: boolean;
    if (ex === undefined) {
      cut = true; // silent before or between requests, or a head that stopped half-way
    } else if (!ex.req.complete && !ex.req.isPaused()) {
      cut = true; // the body stopped arriving while the handler wants it
    } else {
      cut = ex.res.headersSent && !ex.res.writableFinished && socket.writableLength > 0; // the client stopped reading
    }
    if (cut) {
      idleClosed++;
      socket.destroy();
      return;
    }
    socket.setTimeout(idleTimeoutMs); // the server is working: look again one idle period later
  });

  return {
    stats: () => ({ open: conns.size, evicted, refused, idleClosed }),
  };
}

/**
 * createGateway: the REST gateway, a Fastify app whose every route is a thin
 * call to the gRPC API of one target node (ClusterService, SnapshotService,
 * TaskService), answered in the style of the product the path comes from
 * (Typesense, Meilisearch, Nomad: see styles.ts and the *-routes.ts files).
 *
 * Shared rules:
 * - Auth (auth.ts) runs in onRequest, before any body is read; /health and
 *   /openapi.json are open; 404 and 405 answers need no key; /metrics needs
 *   any valid key (whatever its actions) unless `metricsOpen`. A refused
 *   request is answered with `Connection: close` and its connection closed.
 * - Connection limits (connection-guard.ts): `idleTimeoutMs` of silence cuts
 *   a connection the gateway is waiting for (a client trickling its head or
 *   body), never one the server is busy on nor a steady upload; at most
 *   `connectionsMax` connections, the longest-idle one evicted for a new one.
 * - Errors for a caller that has not passed auth (404, 405, open routes,
 *   malformed requests) never echo anything: a fixed message per status, so
 *   no path (the caller's or the server's) goes back to an anonymous caller.
 * - `Expect: 100-continue` is answered by the gateway where it starts reading
 *   a body (after auth and the size checks), never by Node before auth
 *   (expect-continue.ts): a refused caller is never invited to upload.
 * - Bodies are read as raw bytes whatever their Content-Type (both official
 *   clients POST an empty body labelled application/json; curl labels
 *   --data-binary as form data). The restore route gets the raw stream; every
 *   other route refuses a declared length over jsonBytesMax (413) and reads
 *   none of its body (it uses none): Node discards it once the answer is sent.
 *   A request whose key has not passed (404, 405, an open route) is also
 *   answered with `Connection: close`, body or not (one keyless request a
 *   connection: pipelined ones read slowly kept every place in flight). Before, each handler waited for up to
 *   64 KiB of body, so a caller trickling one a byte every few seconds (no
 *   key at all on a 404 path; any key on GET /metrics) held its connection
 *   for days as a request in flight, never evicted: connectionsMax of them
 *   and every new connection was refused.
 * - 405 (with Allow) for a known path and a wrong method, 404 otherwise, both
 *   in the path's style.
 * - The request log: one line a request, at its end, at info when its key passed and at debug otherwise
 *   (their count at info at most once a minute: GatewayLogController). It never holds a key: headers are not logged and key-like
 *   query parameters (`x-typesense-api-key` in any case or percent-encoding)
 *   are redacted from logged URLs, which are cut to URL_LOG_CHARS_MAX characters (logUrl).
 */
import { readFileSync, statSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import type { Server as TlsServer } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { formatHostPort, parseHostPort } from '../client/address.js';
import { SNAPCOORD_VERSION } from '../version.js';
import { allows } from '../auth/keys.js';
import { AUTH_HEADERS, KeyRing, presentedKeys, redactUrl, type AuthConfig, type AuthVerdict } from './auth.js';
import {
  DEFAULT_CONNECTIONS_MAX,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  connectionsCheckingIntervalMs,
  guardConnections,
  validateLimits,
  type ConnectionStats,
} from './connection-guard.js';
import * as grpc from '@grpc/grpc-js';
import { AUTHORIZATION_METADATA_KEY } from '../client/authorization.js';
import type { ClientDial } from '../client/dial.js';
import { closeClients, connectClients, type NodeClients } from '../client/node-clients.js';
import { meilisearchRoutes } from './meilisearch-routes.js';
import { DEFAULT_RESTORE_BYTES_MAX, nomadRoutes } from './nomad-routes.js';
import { OPENAPI } from './openapi.js';
import { acceptRequestsExpectingContinue, continueBody } from './expect-continue.js';
import type { RouteContext, RouteSpec } from './route-spec.js';
import { JSON_TYPE, meiliError, sendMeiliError, sendNomadError, sendStyledError, sendTypesenseError, styleOfPath, type Style } from './styles.js';
import { typesenseRoutes } from './typesense-routes.js';
import { checkTlsBytes } from '../tls/check-tls-files.js';

/** processMetrics: the default Node.js process metrics, in a registry of their own. */
function processMetrics(): { text(): Promise<string>; readonly contentType: string } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return { text: () => registry.metrics(), contentType: registry.contentType };
}

/** DEFAULT_JSON_BYTES_MAX: the cap of every body but a restore's (64 KiB). */
export const DEFAULT_JSON_BYTES_MAX = 64 * 1024;
/** URL_LOG_CHARS_MAX: the most characters of a request's URL (keys redacted) its log lines hold; the rest is counted, not logged. */
export const URL_LOG_CHARS_MAX = 256;
/**
 * logUrl: a request URL as the request log holds it: key-like query values
 * redacted (redactUrl), then cut to URL_LOG_CHARS_MAX characters, saying how
 * many more there were. A request head may be 16 KiB, and every request is
 * logged, a caller's with no key too: whole, its URL was a caller's way to
 * write ~15 KB of log per request.
 */
export function logUrl(url: string): string {
  const shown = redactUrl(url);
  return shown.length <= URL_LOG_CHARS_MAX ? shown : `${shown.slice(0, URL_LOG_CHARS_MAX)}...(${shown.length - URL_LOG_CHARS_MAX} more characters)`;
}

/** DEFAULT_KEY_CONNECTIONS_MAX: the default bound of one key's connections with requests in flight (the client plane's bound of connections one key proves). */
export const DEFAULT_KEY_CONNECTIONS_MAX = 64;
/** CLOSE_GRACE_MS: how long close() lets running requests finish before cutting their connections. */
export const CLOSE_GRACE_MS = 2_000;

export interface GatewayOptions {
  /** target: "host:port" of the node's gRPC API. */
  readonly target: string;
  /** dial: how to reach it (TLS credentials); each call carries the caller's own key. */
  readonly dial?: ClientDial;
  /** tls: serve HTTPS with this certificate and key (PEM files, re-read when they change); default plain HTTP. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  readonly auth: AuthConfig;
  /** logger: a pino logger (fastify's request log goes to a child of it); none: no log. */
  readonly logger?: FastifyBaseLogger;
  /** snapshotRoots: when given, a snapshot_path outside them is refused (400) before any call; the node checks again. */
  readonly snapshotRoots?: readonly string[];
  /** restoreBytesMax: the largest restore body (default 64 GiB). */
  readonly restoreBytesMax?: number;
  /** jsonBytesMax: the largest body of every other route (default 64 KiB). */
  readonly jsonBytesMax?: number;
  /** clients: the gRPC clients to use (tests); default: new clients to `target`, closed by close(). */
  readonly clients?: NodeClients;
  /** version: reported by GET /debug (default the package version). */
  readonly version?: string;
  /** metrics: with it, GET /metrics serves them (Prometheus text); default the process's own metrics. */
  readonly metrics?: { text(): Promise<string>; readonly contentType: string };
  /** metricsOpen: GET /metrics needs no key (default false: any valid key, whatever its actions). */
  readonly metricsOpen?: boolean;
  /**
   * idleTimeoutMs: how long a connection may stay silent while the gateway
   * waits for it (a request head, a body it is reading, a response the
   * client should be reading); default DEFAULT_IDLE_TIMEOUT_MS (10 s). Also
   * the deadline of a whole request head.
   */
  readonly idleTimeoutMs?: number;
  /** keepAliveTimeoutMs: how long a kept-alive connection may wait for its next request (default DEFAULT_KEEP_ALIVE_TIMEOUT_MS, 72 s). */
  readonly keepAliveTimeoutMs?: number;
  /** connectionsMax: open connections held at most (default DEFAULT_CONNECTIONS_MAX, 1024); the longest-idle one makes way for a new one. */
  readonly connectionsMax?: number;
  /**
   * keyConnectionsMax: the most connections with requests in flight one key may have at once (default
   * DEFAULT_KEY_CONNECTIONS_MAX, 64); beyond, a keyed route answers 429 and an open route's answer closes its
   * connection, both with `Connection: close`.
   */
  readonly keyConnectionsMax?: number;
  /** tlsReloadCheckMs: how often the HTTPS files are looked at for a change (default TLS_RELOAD_CHECK_MS; tests shorten it). */
  readonly tlsReloadCheckMs?: number;
}

/** RegisteredRoute: one registered route as fastify's onRoute hook saw it. */
export interface RegisteredRoute {
  readonly method: string;
  readonly url: string;
  readonly methodNotAllowed: boolean;
}

export interface Gateway {
  readonly app: FastifyInstance;
  readonly clients: NodeClients;
  readonly keyRing: KeyRing;
  /** routes: every route registered (405 answers included, marked methodNotAllowed). */
  readonly routes: readonly RegisteredRoute[];
  /** listen binds "host:port" (port 0: any free port) and resolves with the bound "host:port". */
  listen(address: string): Promise<string>;
  /** close stops listening, lets requests finish for CLOSE_GRACE_MS, then closes the gRPC clients. Idempotent. */
  close(): Promise<void>;
  /** connectionStats: open connections and how many were evicted, refused or cut for idleness. */
  connectionStats(): ConnectionStats;
}

/** METHODS: the methods a known path answers 405 to when it has no route for them. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;

/** PayloadTooLarge: a body over its cap (413). */
class PayloadTooLarge extends Error {
  readonly statusCode = 413;
  readonly code = 'FST_ERR_CTP_BODY_TOO_LARGE';
  constructor(max: number) {
    super(`Request body is too large (at most ${max} bytes)`);
  }
}

/** NO_BODY: what a request whose body is never read is handed. */
const NO_BODY = Buffer.alloc(0);

/**
 * sendAuthError answers a refused request in its style, with
 * `Connection: close`: the connection is closed once the answer is sent (an
 * unread body is never read, a key-guessing client reconnects for each try).
 */
function sendAuthError(reply: FastifyReply, style: Style, verdict: Exclude<AuthVerdict, 'ok'>): FastifyReply {
  reply.header('Connection', 'close');
  switch (style) {
    case 'typesense':
      return sendTypesenseError(reply, 401, 'Forbidden - a valid `x-typesense-api-key` header must be sent.');
    case 'meilisearch':
      return verdict === 'missing'
        ? sendMeiliError(
            reply,
            401,
            meiliError('missing_authorization_header', 'The Authorization header is missing. It must use the bearer authorization method.', 'auth'),
          )
        : sendMeiliError(reply, 403, meiliError('invalid_api_key', 'The provided API key is invalid.', 'auth'));
    case 'nomad':
      return sendNomadError(reply, 403, 'Permission denied');
  }
}

/** meiliCodeOfStatus: Meilisearch's code for an HTTP-level error. */
function meiliCodeOfStatus(status: number): string {
  switch (status) {
    case 404:
      return 'not_found';
    case 405:
      return 'method_not_allowed';
    case 413:
      return 'payload_too_large';
    case 415:
      return 'invalid_content_type';
    default:
      return status >= 500 ? 'internal' : 'bad_request';
  }
}

/** childLogger: the gateway's request log; URLs without keys and cut (logUrl), no headers. */
function childLogger(logger: FastifyBaseLogger): FastifyBaseLogger {
  return logger.child(
    { component: 'gateway' },
    {
      serializers: {
        req: (req: FastifyRequest) => ({ method: req.method, url: logUrl(req.url), remoteAddress: req.ip }),
      },
      redact: { paths: AUTH_HEADERS.flatMap((h) => [`req.headers["${h}"]`, `headers["${h}"]`]), censor: '<redacted>' },
    },
  );
}

/** UNKEYED_LOG_EVERY_MS: how often, at most, the count of requests whose key did not pass is logged at info. */
export const UNKEYED_LOG_EVERY_MS = 60_000;

/**
 * GatewayLogController: one line a request, at its end (the request, the
 * answer's status, the time taken), at info for a request whose key passed
 * (`passed`) and at debug for any other (open routes, 404s, refusals), whose
 * count goes at info at most once every UNKEYED_LOG_EVERY_MS, with the last
 * one's method, URL and address. Before, fastify wrote two info lines per
 * request, a caller's with no key too: anyone who reached the port could
 * fill the log at megabytes a second.
 */
class GatewayLogController extends LogController {
  private unkeyed = 0;
  private unkeyedLoggedAtMs = -Infinity;

  constructor(private readonly passed: (req: FastifyRequest) => boolean) {
    super();
  }

  override incomingRequest(): void {
    // Logged once, at the end (requestCompleted).
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const fields = { req: request, res: reply, responseTime: reply.elapsedTime };
    if (error !== null && error !== undefined) {
      reply.log.error({ ...fields, err: error }, 'request errored');
      return;
    }
    if (this.passed(request)) {
      reply.log.info(fields, 'request completed');
      return;
    }
    reply.log.debug(fields, 'request completed (no valid key)');
    this.unkeyed++;
    // The monotonic clock: on the wall clock a step back (NTP, a resumed VM) kept the count quiet for the step's length.
    const now = performance.now();
    if (now - this.unkeyedLoggedAtMs >= UNKEYED_LOG_EVERY_MS) {
      reply.log.info({ ...fields, requests: this.unkeyed }, `requests without a valid key since the last such line (each at debug; this line at most once every ${UNKEYED_LOG_EVERY_MS / 1000} s), the last one here`);
      this.unkeyed = 0;
      this.unkeyedLoggedAtMs = now;
    }
  }
}

/**
 * anyValidKey turns a verdict for the `admin` action into one for "any valid
 * key": a known key without admin (forbidden) passes.
 */
function anyValidKey(verdict: AuthVerdict): AuthVerdict {
  return verdict === 'forbidden' ? 'ok' : verdict;
}

/** localTarget: where to reach a server bound to `address` from this host (0.0.0.0 / :: become loopback). */
export function localTarget(address: string): string {
  const hp = parseHostPort(address, true);
  if (hp === null) return address;
  if (hp.host === '0.0.0.0') return formatHostPort({ host: '127.0.0.1', port: hp.port });
  if (hp.host === '::') return formatHostPort({ host: '::1', port: hp.port });
  return address;
}

/**
 * createGateway builds the app (routes registered, not listening).
 * Errors: Error for an invalid auth config (see KeyRing).
 */
export function createGateway(opts: GatewayOptions): Gateway {
  const keyRing = new KeyRing(opts.auth);
  const ownClients = opts.clients === undefined;
  const clients = opts.clients ?? connectClients(opts.target, opts.dial ?? {});
  const jsonBytesMax = opts.jsonBytesMax ?? DEFAULT_JSON_BYTES_MAX;
  const limits = {
    idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    connectionsMax: opts.connectionsMax ?? DEFAULT_CONNECTIONS_MAX,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  };
  validateLimits(limits);
  const metricsOpen = opts.metricsOpen === true;
  const keyConnectionsMax = opts.keyConnectionsMax ?? DEFAULT_KEY_CONNECTIONS_MAX;
  if (!Number.isSafeInteger(keyConnectionsMax) || keyConnectionsMax < 1) throw new Error(`keyConnectionsMax must be an integer >= 1, got ${keyConnectionsMax}`);
  /**
   * inFlightByKey: per key presented (none on a gateway without auth is not counted), the connections with its requests in flight and
   * how many on each. A connection with a request in flight is never evicted (connection-guard.ts), so without a
   * bound one key, a read-only one too, held every place with pipelined requests read slowly.
   */
  const inFlightByKey = new Map<string, Map<Socket, number>>();
  /** keysOfConn: the keys whose requests a connection has carried (its 'close' clears its counts). */
  const keysOfConn = new WeakMap<Socket, Set<string>>();
  /**
   * holdPlace counts `req`'s connection for `key` until its answer is done (or the connection closes); false, with
   * nothing counted, when the key already has keyConnectionsMax other connections with requests in flight.
   */
  const holdPlace = (req: FastifyRequest, reply: FastifyReply, key: string): boolean => {
    // No key at all passes only on a gateway without auth (--insecure-no-auth), where every caller may do anything.
    if (key === '') return true;
    const conn = req.raw.socket;
    let held = inFlightByKey.get(key);
    if (held === undefined) {
      held = new Map();
      inFlightByKey.set(key, held);
    }
    const n = held.get(conn) ?? 0;
    if (n === 0 && held.size >= keyConnectionsMax) {
      for (const c of held.keys()) if (c.destroyed) held.delete(c);
      if (held.size >= keyConnectionsMax) return false;
    }
    held.set(conn, n + 1);
    const release = (all: boolean): void => {
      const h = inFlightByKey.get(key);
      if (h === undefined) return;
      const m = all ? 0 : (h.get(conn) ?? 1) - 1;
      if (m > 0) h.set(conn, m);
      else h.delete(conn);
      if (h.size === 0) inFlightByKey.delete(key);
    };
    // A connection closed with answers never sent (pipelined requests cut off) leaves no count: one listener a
    // connection, whatever the number of requests and keys it carries.
    let keys = keysOfConn.get(conn);
    if (keys === undefined) {
      const ks = new Set<string>();
      keys = ks;
      keysOfConn.set(conn, ks);
      conn.once('close', () => {
        for (const k of ks) {
          const h = inFlightByKey.get(k);
          h?.delete(conn);
          if (h?.size === 0) inFlightByKey.delete(k);
        }
      });
    }
    keys.add(key);
    reply.raw.once('close', () => release(false));
    return true;
  };
  /** callerKeys: the key each authenticated request passed with, sent on to the node as the call's own. */
  const callerKeys = new WeakMap<FastifyRequest, string>();
  // Open routes (/health) ask the node with the gateway's own key: the admin key, else the first configured one.
  const serviceKey = opts.auth.adminKey !== '' ? opts.auth.adminKey : (opts.auth.keys?.[0]?.key ?? '');
  const ctx: RouteContext = {
    clients,
    version: opts.version ?? SNAPCOORD_VERSION,
    snapshotRoots: opts.snapshotRoots ?? null,
    restoreBytesMax: opts.restoreBytesMax ?? DEFAULT_RESTORE_BYTES_MAX,
    callMetadata(req) {
      const md = new grpc.Metadata();
      // The gateway's own key goes only with an open route's call (/health's Status): a caller who presented no
      // key that passed never borrows it, also when the gateway itself runs with --insecure-no-auth.
      const { action, anyKey } = req.routeOptions.config;
      const open = (action === undefined || action === null) && anyKey !== true;
      const key = callerKeys.get(req) ?? (open ? serviceKey : '');
      if (key !== '') md.set(AUTHORIZATION_METADATA_KEY, `Bearer ${key}`);
      return md;
    },
  };

  const httpsFiles = opts.tls;
  const readPair = (): { cert: Buffer; key: Buffer } | null =>
    httpsFiles === undefined ? null : { cert: readFileSync(httpsFiles.certFile), key: readFileSync(httpsFiles.keyFile) };
  // The pair is checked as the node's planes check theirs (parse, key matches, not expired, not before its start)
  // at start (a clear Error naming the file) and on every reload (a bad set is not taken, the previous one stays).
  const checkPair = (p: { cert: Buffer; key: Buffer }, files: { readonly certFile: string; readonly keyFile: string }): number =>
    checkTlsBytes(p, files, { checkChain: false }).notAfter.getTime();
  const pair = readPair();
  /** inUseNotAfterMs: when the certificate being served expires (logged once then, as the gRPC planes do: 71d2632). */
  let inUseNotAfterMs = pair !== null && httpsFiles !== undefined ? checkPair(pair, httpsFiles) : Infinity;
  /** httpServerOptions: what only the server's constructor takes (how often head deadlines are checked). */
  const httpServerOptions = { connectionsCheckingInterval: connectionsCheckingIntervalMs(limits.idleTimeoutMs), headersTimeout: limits.idleTimeoutMs, requestTimeout: 0 };
  /** authenticated: requests whose key passed (their errors may say why they failed; their log lines are at info). */
  const authenticated = new WeakSet<FastifyRequest>();
  const app = Fastify({
    logController: new GatewayLogController((req) => authenticated.has(req)),
    // HTTPS when given a certificate (the server type stays http.Server for the routes: both emit the same events).
    // A TLS handshake has idleTimeoutMs to finish (Node's default is 120 s); fastify gives `https` (not `http`) to the server.
    ...(pair !== null ? ({ https: { ...pair, ...httpServerOptions, handshakeTimeout: limits.idleTimeoutMs } } as unknown as Record<string, never>) : {}),
    ...(opts.logger !== undefined ? { loggerInstance: childLogger(opts.logger) } : {}),
    exposeHeadRoutes: false,
    routerOptions: { ignoreTrailingSlash: true },
    // No time limit on a whole request: a 10 GB restore upload takes as long as it takes.
    // Idle time and connection count are guarded below (guardConnections).
    requestTimeout: 0,
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    http: httpServerOptions,
    bodyLimit: jsonBytesMax,
    // A URL that does not decode (FST_ERR_BAD_URL): fastify would echo it back; answer in the path's style, echoing nothing.
    frameworkErrors: (err, req, reply) => {
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      return sendStyledError(reply, styleOfPath(req.raw.url ?? '/'), status, STATUS_CODES[status] ?? 'Bad Request', meiliCodeOfStatus(status));
    },
  });
  const guard = guardConnections(app.server, limits);
  // `Expect: 100-continue` is answered where a body is read (after auth and size checks), not by Node at once.
  acceptRequestsExpectingContinue(app.server);

  const registered: RegisteredRoute[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of Array.isArray(r.method) ? r.method : [r.method]) {
      registered.push({ method, url: r.url, methodNotAllowed: r.config?.methodNotAllowed === true });
    }
  });

  // Raw bytes for every Content-Type (see the file comment).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (req, payload, done) => {
    if (req.routeOptions.config.rawBody === true) {
      done(null, payload);
      return;
    }
    if (!authenticated.has(req)) {
      done(null, NO_BODY); // never read: the answer closes the connection (preParsing)
      return;
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > jsonBytesMax) {
      done(new PayloadTooLarge(jsonBytesMax));
      return;
    }
    // No other route uses its body: it is not read (Node discards what comes of it once the answer is sent, the
    // connection then idle, so evictable). Before, a body trickled under the idle timeout (a byte every few
    // seconds, 64 KiB) kept a request in flight for days, its connection never evicted: any valid key (GET
    // /metrics needs no more) could hold every place, and new connections were refused.
    done(null, NO_BODY);
  });

  app.addHook('onRequest', async (req, reply) => {
    const { action, style, anyKey } = req.routeOptions.config;
    let verdict: AuthVerdict;
    if (action !== undefined && action !== null) {
      verdict = keyRing.checkRequest(req.headers, req.query as Record<string, unknown>, action);
    } else if (anyKey === true && !metricsOpen) {
      verdict = anyValidKey(keyRing.checkRequest(req.headers, req.query as Record<string, unknown>, 'admin'));
    } else {
      // An open route. A caller whose key passes keeps its connection (the official clients send theirs with every
      // request, /health's included), within its key's bound; any other's answer closes it (preParsing).
      const query = req.query as Record<string, unknown>;
      const presented = presentedKeys(req.headers, query);
      if (presented.length > 0 && keyRing.checkRequest(req.headers, query, 'anyKey') === 'ok') {
        const key = presented.find((k) => keyRing.insecureNoAuth || keyRing.lookup(k) !== null) ?? '';
        if (holdPlace(req, reply, key)) authenticated.add(req);
      }
      return;
    }
    if (verdict === 'ok') {
      const key = presentedKeys(req.headers, req.query as Record<string, unknown>).find((k) => {
        const actions = keyRing.lookup(k);
        return actions !== null && (action === undefined || action === null || allows(actions, action));
      });
      if (!holdPlace(req, reply, key ?? '')) {
        reply.header('Connection', 'close');
        const why = `this API key has requests in flight on ${keyConnectionsMax} connections already (at most ${keyConnectionsMax}); retry once one is answered`;
        return sendStyledError(reply, style ?? styleOfPath(req.url), 429, why, 'too_many_requests');
      }
      authenticated.add(req);
      if (key !== undefined) callerKeys.set(req, key);
      return;
    }
    return sendAuthError(reply, style ?? styleOfPath(req.url), verdict);
  });

  // After auth (onRequest: a refused request never gets here), before the body is read: `100 Continue` for a body
  // within jsonBytesMax (the restore route answers it itself, after its own size check). A request with no key
  // passed (404, 405, an open route) is not invited: its body is never read and its answer closes the connection,
  // body or not: a connection with a request in flight is never evicted, and before, pipelined keyless requests
  // (GET /openapi.json, read a little at a time) kept every place in flight and every new connection was refused.
  // One keyless request a connection: its answer is written at once and the place is free again.
  app.addHook('preParsing', async (req, reply, payload) => {
    if (req.routeOptions.config.rawBody === true) return payload;
    if (!authenticated.has(req)) {
      reply.header('Connection', 'close');
      return payload;
    }
    if (Number(req.headers['content-length'] ?? 0) <= jsonBytesMax) continueBody(req.raw, reply.raw);
    return payload;
  });

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
    if (status >= 500) req.log.error({ err }, 'gateway error');
    if (status === 413) reply.header('Connection', 'close');
    // Only a caller whose key passed hears the error's own words (they may name paths).
    const message = status >= 500 ? 'Internal Server Error' : authenticated.has(req) ? err.message : (STATUS_CODES[status] ?? 'Error');
    return sendStyledError(reply, req.routeOptions.config.style ?? styleOfPath(req.url), status, message, meiliCodeOfStatus(status));
  });

  app.setNotFoundHandler((req, reply) => {
    const style = styleOfPath(req.url);
    return sendStyledError(reply, style, 404, style === 'nomad' ? '404 page not found' : 'Not Found', 'not_found');
  });

  const routes: RouteSpec[] = [
    ...typesenseRoutes(ctx),
    ...meilisearchRoutes(ctx),
    ...nomadRoutes(ctx),
    {
      method: 'GET',
      url: '/openapi.json',
      style: 'typesense',
      action: null,
      handler: async (_req, reply) => reply.code(200).type(JSON_TYPE).send(JSON.stringify(OPENAPI)),
    },
  ];
  // The embedded gateway serves its node's metrics; a standalone one, its own process's.
  let metrics = opts.metrics;
  routes.push({
    method: 'GET',
    url: '/metrics',
    style: 'typesense',
    action: null,
    anyKey: true,
    handler: async (_req, reply) => {
      metrics ??= processMetrics();
      return reply.code(200).type(metrics.contentType).send(await metrics.text());
    },
  });
  const byUrl = new Map<string, { style: Style; methods: Set<string> }>();
  for (const r of routes) {
    app.route({
      method: r.method,
      url: r.url,
      config: { style: r.style, action: r.action, rawBody: r.rawBody === true, anyKey: r.anyKey === true },
      handler: r.handler,
    });
    const entry = byUrl.get(r.url) ?? { style: r.style, methods: new Set<string>() };
    entry.methods.add(r.method);
    byUrl.set(r.url, entry);
  }
  for (const [url, { style, methods }] of byUrl) {
    const others = METHODS.filter((m) => !methods.has(m));
    const allow = [...methods].join(', ');
    app.route({
      method: others,
      url,
      config: { style, methodNotAllowed: true },
      handler: async (_req, reply) => {
        reply.header('Allow', allow);
        return sendStyledError(reply, style, 405, style === 'nomad' ? 'Invalid method' : 'Method Not Allowed', 'method_not_allowed');
      },
    });
  }

  // Certificate rotation: re-read the files when their mtimes change; new connections get the new pair.
  let tlsStamp = httpsFiles === undefined ? '' : tlsFilesStamp(httpsFiles);
  /** badStamp: the stamp of the last set that could not be used (logged once, not every check). */
  let badStamp = '';
  /** expiredReported: the notAfter (ms) of the certificate in use whose expiry was logged. */
  let expiredReported = 0;
  const tlsWatch =
    httpsFiles === undefined
      ? undefined
      : setInterval(() => {
          // A certificate in use that expires is said once (clients begin refusing the gateway), until it is replaced.
          if (Date.now() > inUseNotAfterMs && expiredReported !== inUseNotAfterMs) {
            expiredReported = inUseNotAfterMs;
            app.log.error(
              { cert: httpsFiles.certFile, notAfter: new Date(inUseNotAfterMs).toISOString() },
              'gateway: HTTPS certificate in use has expired: replace it (HTTPS clients refuse it until a new certificate and key are written)',
            );
          }
          const stamp = tlsFilesStamp(httpsFiles);
          if (stamp === tlsStamp || stamp === badStamp) return;
          try {
            const next = readPair();
            if (next !== null) {
              const notAfterMs = checkPair(next, httpsFiles);
              (app.server as unknown as TlsServer).setSecureContext(next);
              inUseNotAfterMs = notAfterMs;
            }
            tlsStamp = stamp;
            badStamp = '';
            app.log.info({ cert: httpsFiles.certFile }, 'gateway: HTTPS certificate reloaded');
          } catch (err) {
            badStamp = stamp;
            app.log.error({ err: (err as Error).message }, 'gateway: HTTPS certificate files changed but cannot be used; keeping the previous ones');
          }
        }, opts.tlsReloadCheckMs ?? TLS_RELOAD_CHECK_MS);
  tlsWatch?.unref();
  let closing: Promise<void> | null = null;
  return {
    app,
    clients,
    keyRing,
    routes: registered,
    connectionStats: () => guard.stats(),
    async listen(address: string): Promise<string> {
      const hp = parseHostPort(address, true);
      if (hp === null) throw new Error(`gateway listen address ${JSON.stringify(address)} is not host:port`);
      await app.listen({ host: hp.host, port: hp.port });
      const bound = app.server.address() as AddressInfo | null;
      return formatHostPort({ host: hp.host, port: bound?.port ?? hp.port });
    },
    close(): Promise<void> {
      closing ??= (async () => {
        if (tlsWatch !== undefined) clearInterval(tlsWatch);
        const timer = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
        try {
          await app.close();
        } finally {
          clearTimeout(timer);
          if (ownClients) closeClients(clients);
        }
      })();
      return closing;
    },
  };
}

/** TLS_RELOAD_CHECK_MS: how often the gateway looks for a changed HTTPS certificate. */
export const TLS_RELOAD_CHECK_MS = 5_000;

/** tlsFilesStamp: the files' sizes and mtimes ('' parts for missing files): a change means reload. */
function tlsFilesStamp(f: { readonly certFile: string; readonly keyFile: string }): string {
  return [f.certFile, f.keyFile]
    .map((p) => {
      try {
        const st = statSync(p);
        return `${st.size}:${st.mtimeMs}`;
      } catch {
        return '';
      }
    })
    .join('|');
}

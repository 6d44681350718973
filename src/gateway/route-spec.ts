/**
 * RouteSpec: one gateway route as the style modules declare it (method,
 * path, style, the auth action it needs) and what every handler receives.
 */
import type * as grpc from '@grpc/grpc-js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Action } from './auth.js';
import type { NodeClients } from '../client/node-clients.js';
import type { Style } from './styles.js';

/** RouteContext: what handlers share. */
export interface RouteContext {
  readonly clients: NodeClients;
  /** version: reported by GET /debug. */
  readonly version: string;
  /** snapshotRoots: when set, snapshot_path outside them is refused before any call (the node checks again). */
  readonly snapshotRoots: readonly string[] | null;
  /** restoreBytesMax: the largest restore body, counted while streaming. */
  readonly restoreBytesMax: number;
  /**
   * callMetadata: the gRPC metadata of a call made for `req`: the caller's own
   * key as `authorization: Bearer`, so the node decides (an open route, e.g.
   * /health, calls with the gateway's own key).
   */
  callMetadata(req: FastifyRequest): grpc.Metadata;
}

export type RouteMethod = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';

/**
 * RouteSpec: one route. `action` null: open (no key needed), unless `anyKey`:
 * then any valid key, whatever its actions (the gateway may open it, see
 * GatewayOptions.metricsOpen). `rawBody`: the handler reads request.body as
 * the raw stream.
 */
export interface RouteSpec {
  readonly method: RouteMethod;
  readonly url: string;
  readonly style: Style;
  readonly action: Action | null;
  readonly anyKey?: boolean;
  readonly rawBody?: boolean;
  readonly handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
}

/** What each registered route carries in its fastify `config` (405 answers set methodNotAllowed). */
declare module 'fastify' {
  interface FastifyContextConfig {
    style?: Style;
    action?: Action | null;
    rawBody?: boolean;
    anyKey?: boolean;
    methodNotAllowed?: boolean;
  }
}

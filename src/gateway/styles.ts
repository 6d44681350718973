/**
 * The three answer styles of the gateway and the one mapping from gRPC
 * status codes to HTTP statuses.
 *
 * - Typesense: JSON `{"message": "..."}`.
 * - Meilisearch: JSON `{"message","code","type","link"}`.
 * - Nomad (paths under /v1/): plain text.
 *
 * Every JSON answer carries `Content-Type: application/json; charset=utf-8`
 * (the Typesense client parses nothing else); a style is chosen by path
 * (styleOfPath), so 404 and 405 answers also speak the product's language.
 */
import * as grpc from '@grpc/grpc-js';
import type { FastifyReply } from 'fastify';
import { DISK_FULL_ERROR_CODE, ERROR_CODE_METADATA_KEY } from '../client/error-metadata.js';

export type Style = 'typesense' | 'meilisearch' | 'nomad';

/** styleOfPath: /v1/... is Nomad, /snapshots and /tasks... are Meilisearch, everything else Typesense. */
export function styleOfPath(url: string): Style {
  const path = url.split('?', 1)[0] ?? '';
  if (path === '/v1' || path.startsWith('/v1/')) return 'nomad';
  if (/^\/(snapshots|tasks)(\/|$)/.test(path)) return 'meilisearch';
  return 'typesense';
}

/** MeiliErrorType: Meilisearch's error types. */
export type MeiliErrorType = 'invalid_request' | 'internal' | 'auth' | 'system';

/** MeiliError: Meilisearch's error body. */
export interface MeiliError {
  readonly message: string;
  readonly code: string;
  readonly type: MeiliErrorType;
  readonly link: string;
}

/** MEILI_NO_SPACE_CODE: Meilisearch's error code for a full disk (type `system`, HTTP 422). */
export const MEILI_NO_SPACE_CODE = 'no_space_left_on_device';

/**
 * isDiskFullCode: the node's error code says its disk is full: DISK_FULL_ERROR_CODE, or
 * Meilisearch's own code (what nodes of earlier versions sent, and what their failed tasks hold).
 */
export function isDiskFullCode(code: string): boolean {
  return code === DISK_FULL_ERROR_CODE || code === MEILI_NO_SPACE_CODE;
}

/** meiliError builds Meilisearch's error body; the link follows Meilisearch's `https://docs.meilisearch.com/errors#<code>`. */
export function meiliError(code: string, message: string, type: MeiliErrorType = 'invalid_request'): MeiliError {
  return { message, code, type, link: `https://docs.meilisearch.com/errors#${code}` };
}

/** JSON_TYPE: the Content-Type of every JSON answer. */
export const JSON_TYPE = 'application/json; charset=utf-8';
/** TEXT_TYPE: the Content-Type of every plain-text answer. */
export const TEXT_TYPE = 'text/plain; charset=utf-8';

/** sendJson answers `status` with a JSON body. */
export function sendJson(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).type(JSON_TYPE).send(JSON.stringify(body));
}

/** sendText answers `status` with a plain-text body. */
export function sendText(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply.code(status).type(TEXT_TYPE).send(body);
}

/** sendTypesenseError answers `{"message"}`. */
export function sendTypesenseError(reply: FastifyReply, status: number, message: string): FastifyReply {
  return sendJson(reply, status, { message });
}

/** sendMeiliError answers Meilisearch's `{message,code,type,link}`. */
export function sendMeiliError(reply: FastifyReply, status: number, err: MeiliError): FastifyReply {
  return sendJson(reply, status, err);
}

/** sendNomadError answers plain text (Nomad's API errors are plain text). */
export function sendNomadError(reply: FastifyReply, status: number, message: string): FastifyReply {
  return sendText(reply, status, message.endsWith('\n') ? message : `${message}\n`);
}

/** GrpcFailure: what the gateway knows of a failed call. */
export interface GrpcFailure {
  readonly code: grpc.status;
  readonly message: string;
  /** errorCode: the node's own error code (trailing metadata `x-snapcoord-error-code`, e.g. `disk_full`, `invalid_task_uids`), '' when none. */
  readonly errorCode: string;
}

/**
 * grpcFailure reads a grpc-js ServiceError (or anything else: UNKNOWN with
 * its message). `details` is the server's message without grpc-js's
 * "<code> <NAME>: " prefix.
 */
export function grpcFailure(err: unknown): GrpcFailure {
  const e = err as { code?: unknown; details?: unknown; message?: unknown; metadata?: unknown } | null;
  if (e !== null && typeof e === 'object' && typeof e.code === 'number' && e.code >= 0 && e.code <= 16) {
    const details = typeof e.details === 'string' && e.details !== '' ? e.details : String(e.message ?? '');
    const v = e.metadata instanceof grpc.Metadata ? e.metadata.get(ERROR_CODE_METADATA_KEY)[0] : undefined;
    const errorCode = typeof v === 'string' && /^[a-z_]{1,64}$/.test(v) ? v : '';
    return { code: e.code as grpc.status, message: details, errorCode };
  }
  return { code: grpc.status.UNKNOWN, message: err instanceof Error ? err.message : String(err), errorCode: '' };
}

/**
 * httpStatusOf maps a gRPC status to the HTTP status every style answers:
 * INVALID_ARGUMENT, OUT_OF_RANGE -> 400; UNAUTHENTICATED -> 401;
 * PERMISSION_DENIED (the node refused the caller's key this action) -> 403; NOT_FOUND -> 404;
 * ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED -> 409 (e.g. another snapshot
 * is running); RESOURCE_EXHAUSTED -> 429; UNIMPLEMENTED -> 501;
 * UNAVAILABLE, CANCELLED -> 503 (the node is unreachable, shutting down or
 * has no leader: retry); DEADLINE_EXCEEDED -> 504; anything else -> 500.
 */
export function httpStatusOf(code: grpc.status): number {
  switch (code) {
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.OUT_OF_RANGE:
      return 400;
    case grpc.status.UNAUTHENTICATED:
      return 401;
    case grpc.status.PERMISSION_DENIED:
      return 403;
    case grpc.status.NOT_FOUND:
      return 404;
    case grpc.status.ALREADY_EXISTS:
    case grpc.status.FAILED_PRECONDITION:
    case grpc.status.ABORTED:
      return 409;
    case grpc.status.RESOURCE_EXHAUSTED:
      return 429;
    case grpc.status.UNIMPLEMENTED:
      return 501;
    case grpc.status.UNAVAILABLE:
    case grpc.status.CANCELLED:
      return 503;
    case grpc.status.DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

/**
 * httpStatusOfFailure: httpStatusOf, except that a full disk (error code
 * disk_full, RESOURCE_EXHAUSTED) is 422, as Meilisearch answers
 * it, rather than the 429 "retry later" of a busy node.
 */
export function httpStatusOfFailure(f: GrpcFailure): number {
  return isDiskFullCode(f.errorCode) ? 422 : httpStatusOf(f.code);
}

/** messageOf: the server's message for 4xx answers; for 5xx too (they say why the node cannot answer), never empty. */
function messageOf(f: GrpcFailure): string {
  return f.message !== '' ? f.message : `gRPC ${grpc.status[f.code] ?? f.code}`;
}

/**
 * meiliCodeOf: Meilisearch's code and type for a failed call: a full disk is
 * no_space_left_on_device (system); the node's own code when it names
 * another (x-snapcoord-error-code: the task queue's follow Meilisearch's), else by status
 * (`notFoundCode` for NOT_FOUND, e.g. task_not_found).
 */
export function meiliCodeOf(f: GrpcFailure, notFoundCode = 'not_found'): { code: string; type: MeiliErrorType } {
  if (isDiskFullCode(f.errorCode)) return { code: MEILI_NO_SPACE_CODE, type: 'system' };
  const status = httpStatusOf(f.code);
  if (f.errorCode !== '') return { code: f.errorCode, type: status >= 500 ? 'internal' : 'invalid_request' };
  if (status === 404) return { code: notFoundCode, type: 'invalid_request' };
  if (status === 429) return { code: 'too_many_requests', type: 'system' };
  if (status === 503 || status === 504) return { code: 'unavailable', type: 'system' };
  if (status < 500) return { code: 'bad_request', type: 'invalid_request' };
  return { code: 'internal', type: 'internal' };
}

/** sendGrpcError answers a failed call in `style` (see httpStatusOfFailure). */
export function sendGrpcError(reply: FastifyReply, style: Style, err: unknown, opts: { notFoundCode?: string } = {}): FastifyReply {
  const f = grpcFailure(err);
  const status = httpStatusOfFailure(f);
  if (status >= 500) reply.log.warn({ grpcCode: grpc.status[f.code] ?? f.code, grpcMessage: f.message }, 'gRPC call failed');
  switch (style) {
    case 'typesense':
      return sendTypesenseError(reply, status, messageOf(f));
    case 'meilisearch': {
      const { code, type } = meiliCodeOf(f, opts.notFoundCode);
      return sendMeiliError(reply, status, meiliError(code, messageOf(f), type));
    }
    case 'nomad':
      return sendNomadError(reply, status, messageOf(f));
  }
}

/** sendStyledError answers an HTTP-level error (404, 405, 413, 400 ...) in `style`; `meiliCode` names Meilisearch's code. */
export function sendStyledError(reply: FastifyReply, style: Style, status: number, message: string, meiliCode: string): FastifyReply {
  switch (style) {
    case 'typesense':
      return sendTypesenseError(reply, status, message);
    case 'meilisearch':
      return sendMeiliError(reply, status, meiliError(meiliCode, message, status >= 500 ? 'internal' : 'invalid_request'));
    case 'nomad':
      return sendNomadError(reply, status, message);
  }
}

/**
 * KVService over a Node: Put / Delete go through the Raft log on the leader
 * (a follower forwards them, one hop); Get / Range are linearizable (ReadIndex,
 * served by any node, the leader confirming the read point) unless
 * `serializable` asks for this node's applied state.
 *
 * Errors (gRPC status): INVALID_ARGUMENT for an empty or oversize key, an
 * oversize value or a range limit outside 0..RANGE_LIMIT_MAX; the NodeError
 * mapping of api-error.ts otherwise (FAILED_PRECONDITION not the leader on a
 * forwarded call, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, UNAVAILABLE).
 *
 * `prev_kv` and Delete's `deleted` count come from a linearizable read made
 * on the leader just before the write: exact unless another client writes the
 * same key concurrently (a Delete carrying a request id takes `deleted` from
 * the state machine: exact). `mod_revision` is not tracked yet (always 0).
 *
 * Idempotent writes: a Put or Delete with `client_id` and `request_id`
 * (both or neither: INVALID_ARGUMENT otherwise) is proposed with that stamp;
 * the state machine applies it at most once (src/storage/sessions.ts) and a
 * repeat is answered with the first revision, `replayed` set. A request id
 * older than the ones its client's record still holds fails
 * FAILED_PRECONDITION (not applied; the first outcome is unknown).
 */
import * as grpc from '@grpc/grpc-js';
import type {
  DeleteRequest,
  DeleteResponse,
  GetRequest,
  GetResponse,
  KVServiceServer,
  KeyValue,
  PutRequest,
  PutResponse,
  RangeRequest,
  RangeResponse,
  ResponseHeader,
} from '../gen/snapcoord/v1/kv.js';
import type { Node } from '../node/node.js';
import { KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../storage/kv-command.js';
import { isReservedKey, sessionStampProblem, type SessionStamp } from '../storage/sessions.js';
import { RANGE_LIMIT_MAX, type ApplyResult, type RangeQuery } from '../storage/types.js';
import { ApiError, invalidArgument } from './api-error.js';
import { requireLeader, type LeaderForwarder, type NodeView } from './leader-forwarder.js';
import { unary } from './unary-handler.js';

/** RANGE_LIMIT_DEFAULT: the pairs a Range returns when the request names no limit. */
export const RANGE_LIMIT_DEFAULT = 1000;

/** KvNode is the part of Node the KV service uses. */
export type KvNode = NodeView & Pick<Node, 'propose' | 'get' | 'range'>;

/** checkKey throws INVALID_ARGUMENT for an empty key, one longer than KEY_BYTES_MAX, or a reserved one ("\x00snapcoord/..."). */
export function checkKey(key: Uint8Array, field = 'key'): void {
  if (key.length === 0) throw invalidArgument(`${field} is empty`);
  checkKeyLength(key, field);
  if (isReservedKey(key)) throw invalidArgument(`${field}: keys starting with "\\x00snapcoord/" are reserved for the store's own records`);
}

/**
 * sessionOf returns the session stamp of a write's `client_id` / `request_id`
 * (undefined when both are unset). Errors: INVALID_ARGUMENT when only one is
 * set, or the client id or request id breaks the rules of sessions.ts.
 */
export function sessionOf(clientId: string, requestId: bigint): SessionStamp | undefined {
  if (clientId === '' && requestId === 0n) return undefined;
  if (clientId === '') throw invalidArgument('request_id is set without a client_id');
  if (requestId <= 0n) throw invalidArgument('client_id is set without a request_id (1..2^53-1)');
  if (requestId > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`request_id ${requestId} is above 2^53-1`);
  const stamp = { clientId, seq: Number(requestId) };
  const problem = sessionStampProblem(stamp);
  if (problem !== null) throw invalidArgument(problem);
  return stamp;
}

function checkKeyLength(key: Uint8Array, field: string): void {
  if (key.length > KEY_BYTES_MAX) throw invalidArgument(`${field} is ${key.length} bytes, more than ${KEY_BYTES_MAX}`);
}

/** checkValue throws INVALID_ARGUMENT for a value longer than VALUE_BYTES_MAX. */
export function checkValue(value: Uint8Array): void {
  if (value.length > VALUE_BYTES_MAX) throw invalidArgument(`value is ${value.length} bytes, more than ${VALUE_BYTES_MAX}`);
}

/** rangeQueryOf validates a RangeRequest and returns the storage query (limit 0 means RANGE_LIMIT_DEFAULT). */
export function rangeQueryOf(req: RangeRequest): RangeQuery {
  if (!Number.isInteger(req.limit) || req.limit < 0 || req.limit > RANGE_LIMIT_MAX) {
    throw invalidArgument(`limit ${req.limit} is out of range 1..${RANGE_LIMIT_MAX} (0 means ${RANGE_LIMIT_DEFAULT})`);
  }
  checkKeyLength(req.prefix, 'prefix');
  checkKeyLength(req.start, 'start');
  checkKeyLength(req.end, 'end');
  const limit = req.limit === 0 ? RANGE_LIMIT_DEFAULT : req.limit;
  if (req.prefix.length > 0) return { prefix: req.prefix, limit };
  return {
    ...(req.start.length > 0 ? { start: req.start } : {}),
    ...(req.end.length > 0 ? { end: req.end } : {}),
    limit,
  };
}

function kvOf(key: Uint8Array, value: Uint8Array): KeyValue {
  return { key, value, modRevision: 0n };
}

/** checkApplied throws for a failed apply: FAILED_PRECONDITION for an expired request id, INTERNAL otherwise. */
function checkApplied(r: ApplyResult): Extract<ApplyResult, { ok: true }> {
  if (!r.ok) {
    if (r.code === 'requestIdExpired') throw new ApiError(grpc.status.FAILED_PRECONDITION, r.error);
    throw new ApiError(grpc.status.INTERNAL, `the write was applied with an error: ${r.code}: ${r.error}`);
  }
  return r;
}

/** createKvService implements KVService over `node`, forwarding writes through `forwarder`. */
export function createKvService(node: KvNode, forwarder: LeaderForwarder): KVServiceServer {
  const header = (revision?: number): ResponseHeader => {
    const st = node.status();
    return { memberId: node.id, raftTerm: BigInt(st.term), revision: BigInt(revision ?? st.applied) };
  };

  return {
    put: unary(async (call: grpc.ServerUnaryCall<PutRequest, PutResponse>) => {
      const req = call.request;
      checkKey(req.key);
      checkValue(req.value);
      const session = sessionOf(req.clientId, req.requestId);
      return forwarder.run(
        call,
        async (): Promise<PutResponse> => {
          requireLeader(node);
          const prev = req.prevKv ? await node.get(req.key) : undefined;
          const r = checkApplied(await node.propose({ op: 'put', key: req.key, value: req.value, ...(session !== undefined ? { session } : {}) }));
          if (r.firstIndex !== undefined) return { header: header(r.firstIndex), prevKv: undefined, replayed: true };
          return {
            header: header(r.index),
            prevKv: prev !== undefined ? kvOf(req.key, prev) : undefined,
            replayed: false,
          };
        },
        (leader, opts) => forwarder.kv(leader.address).put(req, opts),
      );
    }),

    delete: unary(async (call: grpc.ServerUnaryCall<DeleteRequest, DeleteResponse>) => {
      const req = call.request;
      checkKey(req.key);
      const session = sessionOf(req.clientId, req.requestId);
      return forwarder.run(
        call,
        async (): Promise<DeleteResponse> => {
          requireLeader(node);
          const prev = await node.get(req.key);
          const r = checkApplied(await node.propose({ op: 'delete', key: req.key, ...(session !== undefined ? { session } : {}) }));
          // With a request id the state machine tells whether the key existed when the delete applied.
          const deleted = r.deleted !== undefined ? BigInt(r.deleted) : prev === undefined ? 0n : 1n;
          if (r.firstIndex !== undefined) return { header: header(r.firstIndex), deleted, prevKv: undefined, replayed: true };
          return {
            header: header(r.index),
            deleted,
            prevKv: req.prevKv && prev !== undefined ? kvOf(req.key, prev) : undefined,
            replayed: false,
          };
        },
        (leader, opts) => forwarder.kv(leader.address).delete(req, opts),
      );
    }),

    get: unary(async (call: grpc.ServerUnaryCall<GetRequest, GetResponse>) => {
      const req = call.request;
      checkKey(req.key);
      // A linearizable read needs a leader to confirm the read point: wait out an election first.
      if (!req.serializable) await forwarder.waitForLeader(Date.now() + 5_000);
      const value = await node.get(req.key, req.serializable);
      return value === undefined
        ? { header: header(), found: false, kv: undefined }
        : { header: header(), found: true, kv: kvOf(req.key, value) };
    }),

    range: unary(async (call: grpc.ServerUnaryCall<RangeRequest, RangeResponse>) => {
      const req = call.request;
      const q = rangeQueryOf(req);
      if (!req.serializable) await forwarder.waitForLeader(Date.now() + 5_000);
      const r = await node.range(q, req.serializable);
      return { header: header(), kvs: r.kvs.map((kv) => kvOf(kv.key, kv.value)), more: r.more };
    }),
  };
}

/**
 * KVService over a Node: Put / Delete / Txn go through the Raft log: a
 * follower hands them to the leader over the peer plane, batched with its
 * other clients' writes (Node.propose, ForwardQueue), and answers once it
 * applied them itself; only when it cannot (no forwarding transport) does it
 * forward the call over the client plane (LeaderForwarder, one hop). Get /
 * Range are linearizable (ReadIndex, served by any node, the leader
 * confirming the read point) unless `serializable` asks for this node's
 * applied state.
 *
 * A Range answers at most its limit of pairs and KV_RANGE_BYTES_MAX bytes
 * of keys and values besides its first pair (`more` set when either cut it),
 * so an answer is never built beyond what one message may carry.
 *
 * Errors (gRPC status): INVALID_ARGUMENT for an empty or oversize key, an
 * oversize value or a range limit outside 0..KV_RANGE_LIMIT_MAX; the NodeError
 * mapping of api-error.ts otherwise (FAILED_PRECONDITION not the leader on a
 * forwarded call, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED, UNAVAILABLE).
 *
 * Put and Delete are ONE proposal each: `prev_kv` and Delete's `deleted`
 * count come from the state machine as it applied the write (exact: no read
 * before the write). Txn is one proposal too: the compares are evaluated and
 * the branch run at the transaction's log index (one revision). Pairs from
 * the apply path carry their revisions (mod, create, version); Get and Range
 * leave them 0.
 *
 * Idempotent writes: a Put or Delete with `client_id` and `request_id`
 * (both or neither: INVALID_ARGUMENT otherwise) is proposed with that stamp,
 * its client id bound to the caller's API key (boundClientId);
 * the state machine applies it at most once (src/fsm/sessions.ts) and a
 * repeat is answered with the first revision, `replayed` set. A request id
 * older than the ones its client's record still holds fails
 * FAILED_PRECONDITION (not applied; the first outcome is unknown). A Txn
 * with `client_id` / `request_id` is idempotent the same way: a repeat
 * answers the first `succeeded` and revision, `replayed` set, no responses.
 *
 * A Txn whose answer would carry more than TXN_ANSWER_BYTES_MAX bytes of
 * keys and values is applied but answered FAILED_PRECONDITION naming its
 * revision and outcome (not retryable), the answer never built.
 *
 * Txn limits: at most TXN_COMPARES_MAX compares and TXN_OPS_MAX ops per
 * branch; every compare and op names a valid key, a compare a known target
 * and result, an op a known type (INVALID_ARGUMENT otherwise, naming the
 * field, e.g. `compare[2].target`).
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
  TxnOp,
  TxnOpResponse,
  TxnRequest,
  TxnResponse,
} from '../gen/snapcoord/v1/kv.js';
import { CompareResult, CompareTarget, TxnOpType } from '../gen/snapcoord/v1/kv.js';
import type { Node } from '../node/node.js';
import {
  KEY_BYTES_MAX,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  VALUE_BYTES_MAX,
  type KvCompare,
  type KvTxn,
  type KvTxnOp,
} from '../fsm/kv-command.js';
import { isReservedKey, sessionStampProblem, type SessionStamp } from '../fsm/sessions.js';
import { KV_RANGE_LIMIT_MAX, TXN_ANSWER_BYTES_MAX, type ApplyResult, type KvRangeQuery, type StoredKeyValue, type TxnOpResult } from '../fsm/types.js';
import { txnAnswerBytes } from '../fsm/apply-result-codec.js';
import { ApiError, invalidArgument } from './api-error.js';
import { requireLeader, type LeaderForwarder, type NodeView } from './leader-forwarder.js';
import { unary } from './unary-handler.js';
import { boundClientId } from './bound-client-id.js';
import { bearerToken } from '../auth/bearer.js';
import { AUTHORIZATION_METADATA_KEY } from '../client/authorization.js';

/** RANGE_LIMIT_DEFAULT: the pairs a Range returns when the request names no limit. */
export const RANGE_LIMIT_DEFAULT = 1000;

/** KvNode is the part of Node the KV service uses. */
export type KvNode = NodeView & Pick<Node, 'propose' | 'get' | 'range'>;

export { TXN_COMPARES_MAX, TXN_OPS_MAX };

/** checkKey throws INVALID_ARGUMENT for an empty key, one longer than KEY_BYTES_MAX, or a reserved one ("\x00snapcoord/..."). */
export function checkKey(key: Uint8Array, field = 'key'): void {
  if (key.length === 0) throw invalidArgument(`${field} is empty`);
  checkKeyLength(key, field);
  if (isReservedKey(key)) throw invalidArgument(`${field}: keys starting with "\\x00snapcoord/" are reserved for the store's own records`);
}

/**
 * sessionOf returns the session stamp of a write's `client_id` / `request_id`
 * (undefined when both are unset), its client id bound to the API key the
 * call `md` presents (boundClientId: another key's holder cannot name the
 * same session). Errors: INVALID_ARGUMENT when only one is set, or the client
 * id or request id breaks the rules of sessions.ts.
 */
export function sessionOf(md: grpc.Metadata, clientId: string, requestId: bigint): SessionStamp | undefined {
  if (clientId === '' && requestId === 0n) return undefined;
  if (clientId === '') throw invalidArgument('request_id is set without a client_id');
  if (requestId <= 0n) throw invalidArgument('client_id is set without a request_id (1..2^53-1)');
  if (requestId > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`request_id ${requestId} is above 2^53-1`);
  const problem = sessionStampProblem({ clientId, seq: Number(requestId) });
  if (problem !== null) throw invalidArgument(problem);
  const authorization = md.get(AUTHORIZATION_METADATA_KEY)[0];
  const apiKey = typeof authorization === 'string' ? (bearerToken(authorization) ?? '') : '';
  return { clientId: boundClientId(apiKey, clientId), seq: Number(requestId) };
}

function checkKeyLength(key: Uint8Array, field: string): void {
  if (key.length > KEY_BYTES_MAX) throw invalidArgument(`${field} is ${key.length} bytes, more than ${KEY_BYTES_MAX}`);
}

/** checkValue throws INVALID_ARGUMENT for a value longer than VALUE_BYTES_MAX. */
export function checkValue(value: Uint8Array): void {
  if (value.length > VALUE_BYTES_MAX) throw invalidArgument(`value is ${value.length} bytes, more than ${VALUE_BYTES_MAX}`);
}

/** rangeQueryOf validates a RangeRequest and returns the storage query (limit 0 means RANGE_LIMIT_DEFAULT). */
export function rangeQueryOf(req: RangeRequest): KvRangeQuery {
  if (!Number.isInteger(req.limit) || req.limit < 0 || req.limit > KV_RANGE_LIMIT_MAX) {
    throw invalidArgument(`limit ${req.limit} is out of range 1..${KV_RANGE_LIMIT_MAX} (0 means ${RANGE_LIMIT_DEFAULT})`);
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
  return { key, value, modRevision: 0n, createRevision: 0n, version: 0n };
}

/** storedKv: the wire pair of a pair from the apply path (with its revisions); undefined for none. */
function storedKv(kv: StoredKeyValue | null | undefined): KeyValue | undefined {
  if (kv === null || kv === undefined) return undefined;
  return {
    key: kv.key,
    value: kv.value,
    modRevision: BigInt(kv.modRevision),
    createRevision: BigInt(kv.createRevision),
    version: BigInt(kv.version),
  };
}

const COMPARE_TARGETS = new Map<CompareTarget, KvCompare['target']>([
  [CompareTarget.COMPARE_TARGET_VALUE, 'value'],
  [CompareTarget.COMPARE_TARGET_VERSION, 'version'],
  [CompareTarget.COMPARE_TARGET_CREATE, 'create'],
  [CompareTarget.COMPARE_TARGET_MOD, 'mod'],
]);
const COMPARE_RESULTS = new Map<CompareResult, KvCompare['result']>([
  [CompareResult.COMPARE_RESULT_EQUAL, 'equal'],
  [CompareResult.COMPARE_RESULT_NOT_EQUAL, 'notEqual'],
  [CompareResult.COMPARE_RESULT_GREATER, 'greater'],
  [CompareResult.COMPARE_RESULT_LESS, 'less'],
]);

function operandOf(n: bigint, field: string): number {
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${field} ${n} is above 2^53-1`);
  return Number(n);
}

function txnOpOf(op: TxnOp, field: string): KvTxnOp {
  checkKey(op.key, `${field}.key`);
  switch (op.type) {
    case TxnOpType.TXN_OP_TYPE_GET:
      return { op: 'get', key: op.key };
    case TxnOpType.TXN_OP_TYPE_PUT:
      checkValue(op.value);
      return { op: 'put', key: op.key, value: op.value, ...(op.prevKv ? { prevKv: true } : {}) };
    case TxnOpType.TXN_OP_TYPE_DELETE:
      return { op: 'delete', key: op.key, ...(op.prevKv ? { prevKv: true } : {}) };
    default:
      throw invalidArgument(`${field}.type must be GET, PUT or DELETE`);
  }
}

/**
 * txnOf validates a TxnRequest and returns the state machine's command.
 * Errors: INVALID_ARGUMENT beyond TXN_COMPARES_MAX compares or TXN_OPS_MAX
 * ops in a branch, for a bad key or value, an unknown compare target or
 * result or op type, an operand above 2^53-1.
 */
export function txnOf(req: TxnRequest): KvTxn {
  if (req.compare.length > TXN_COMPARES_MAX) throw invalidArgument(`${req.compare.length} compares, more than ${TXN_COMPARES_MAX}`);
  if (req.success.length > TXN_OPS_MAX) throw invalidArgument(`${req.success.length} success ops, more than ${TXN_OPS_MAX}`);
  if (req.failure.length > TXN_OPS_MAX) throw invalidArgument(`${req.failure.length} failure ops, more than ${TXN_OPS_MAX}`);
  const compares = req.compare.map((c, i): KvCompare => {
    const field = `compare[${i}]`;
    checkKey(c.key, `${field}.key`);
    const target = COMPARE_TARGETS.get(c.target);
    if (target === undefined) throw invalidArgument(`${field}.target must be VALUE, VERSION, CREATE or MOD`);
    const result = COMPARE_RESULTS.get(c.result);
    if (result === undefined) throw invalidArgument(`${field}.result must be EQUAL, NOT_EQUAL, GREATER or LESS`);
    if (target === 'value') {
      checkValue(c.value);
      return { key: c.key, target, result, value: c.value };
    }
    const n = target === 'version' ? c.version : target === 'create' ? c.createRevision : c.modRevision;
    const name = target === 'version' ? 'version' : target === 'create' ? 'create_revision' : 'mod_revision';
    return { key: c.key, target, result, operand: operandOf(n, `${field}.${name}`) };
  });
  return {
    op: 'txn',
    compares,
    success: req.success.map((op, i) => txnOpOf(op, `success[${i}]`)),
    failure: req.failure.map((op, i) => txnOpOf(op, `failure[${i}]`)),
  };
}

function txnOpResponse(r: TxnOpResult): TxnOpResponse {
  if (r.op === 'get') {
    return { type: TxnOpType.TXN_OP_TYPE_GET, found: r.kv !== null, kv: storedKv(r.kv), prevKv: undefined, deleted: 0n };
  }
  if (r.op === 'put') return { type: TxnOpType.TXN_OP_TYPE_PUT, found: false, kv: undefined, prevKv: storedKv(r.prev), deleted: 0n };
  return { type: TxnOpType.TXN_OP_TYPE_DELETE, found: false, kv: undefined, prevKv: storedKv(r.prev), deleted: BigInt(r.deleted) };
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
    const st = node.brief();
    return { memberId: node.id, raftTerm: BigInt(st.term), revision: BigInt(revision ?? st.applied) };
  };

  return {
    put: unary(async (call: grpc.ServerUnaryCall<PutRequest, PutResponse>) => {
      const req = call.request;
      checkKey(req.key);
      checkValue(req.value);
      const session = sessionOf(call.metadata, req.clientId, req.requestId);
      return forwarder.run(
        call,
        async (forwarded): Promise<PutResponse> => {
          if (forwarded) requireLeader(node);
          const r = checkApplied(
            await node.propose({
              op: 'put',
              key: req.key,
              value: req.value,
              ...(req.prevKv ? { prevKv: true } : {}),
              ...(session !== undefined ? { session } : {}),
            }),
          );
          if (r.firstIndex !== undefined) return { header: header(r.firstIndex), prevKv: undefined, replayed: true };
          return { header: header(r.index), prevKv: storedKv(r.prev), replayed: false };
        },
        (leader, opts) => forwarder.kv(leader).put(req, opts),
      );
    }),

    delete: unary(async (call: grpc.ServerUnaryCall<DeleteRequest, DeleteResponse>) => {
      const req = call.request;
      checkKey(req.key);
      const session = sessionOf(call.metadata, req.clientId, req.requestId);
      return forwarder.run(
        call,
        async (forwarded): Promise<DeleteResponse> => {
          if (forwarded) requireLeader(node);
          const r = checkApplied(
            await node.propose({
              op: 'delete',
              key: req.key,
              ...(req.prevKv ? { prevKv: true } : {}),
              ...(session !== undefined ? { session } : {}),
            }),
          );
          // The state machine tells whether the key existed when the delete applied (and, replayed, when it first did).
          const deleted = BigInt(r.deleted ?? 0);
          if (r.firstIndex !== undefined) return { header: header(r.firstIndex), deleted, prevKv: undefined, replayed: true };
          return { header: header(r.index), deleted, prevKv: storedKv(r.prev), replayed: false };
        },
        (leader, opts) => forwarder.kv(leader).delete(req, opts),
      );
    }),

    txn: unary(async (call: grpc.ServerUnaryCall<TxnRequest, TxnResponse>) => {
      const req = call.request;
      const txn = txnOf(req);
      const session = sessionOf(call.metadata, req.clientId, req.requestId);
      return forwarder.run(
        call,
        async (forwarded): Promise<TxnResponse> => {
          if (forwarded) requireLeader(node);
          const r = checkApplied(await node.propose({ ...txn, ...(session !== undefined ? { session } : {}) }));
          const succeeded = r.succeeded === true;
          if (r.firstIndex !== undefined) return { header: header(r.firstIndex), succeeded, responses: [], replayed: true };
          // A follower's forwarded write comes back without an answer this large (encodeApplyResult): its size only.
          const bytes = r.answerBytes ?? txnAnswerBytes(r.responses ?? []);
          if (bytes > TXN_ANSWER_BYTES_MAX) {
            // Not retryable: the transaction is applied; what is refused is only an answer this large.
            throw new ApiError(
              grpc.status.FAILED_PRECONDITION,
              `the transaction was applied at revision ${r.index} (${succeeded ? 'succeeded' : 'failed'}), but its answer holds ${bytes} bytes of keys and values, more than ${TXN_ANSWER_BYTES_MAX}: read them with Get or Range`,
            );
          }
          return { header: header(r.index), succeeded, responses: (r.responses ?? []).map(txnOpResponse), replayed: false };
        },
        (leader, opts) => forwarder.kv(leader).txn(req, opts),
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

/**
 * Promise wrappers around the generated KV and Cluster clients, for the CLI,
 * tests and leader forwarding. Every call has a deadline (`deadlineMs`,
 * default 10 s) and rejects with the call's grpc-js ServiceError.
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import {
  ClusterServiceClient,
  type AddMemberResponse,
  type RemoveMemberResponse,
  type StatusResponse,
  type TransferLeadershipResponse,
  type VoteResponse,
  type HashStateResponse,
} from '../gen/snapcoord/v1/cluster.js';
import {
  KVServiceClient,
  type DeleteRequest,
  type DeleteResponse,
  type GetRequest,
  type GetResponse,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type TxnRequest,
  type TxnResponse,
} from '../gen/snapcoord/v1/kv.js';

/** MESSAGE_BYTES_MAX: the largest gRPC message the API sends or receives (64 MiB). */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;

/** DEFAULT_DEADLINE_MS: the deadline of a call that names none. */
export const DEFAULT_DEADLINE_MS = 10_000;

/** CallOptions: per-call deadline, extra request metadata and per-call client interceptors. */
export interface CallOptions {
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
  readonly interceptors?: grpc.Interceptor[];
}

/** clientChannelOptions: what every API client channel uses. */
export const clientChannelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
};

/** CLIENT_ID_METADATA_KEY / REQUEST_ID_METADATA_KEY: the request id of an idempotent RestoreSnapshot (see snapshot.proto). */
export const CLIENT_ID_METADATA_KEY = 'x-snapcoord-client-id';
export const REQUEST_ID_METADATA_KEY = 'x-snapcoord-request-id';
/** REPLAYED_METADATA_KEY: trailing metadata `1` when a restore's request id had already taken effect. */
export const REPLAYED_METADATA_KEY = 'x-snapcoord-replayed';

/** AUTHORIZATION_METADATA_KEY: where a client-plane call carries its API key (`Bearer <key>`). */
export const AUTHORIZATION_METADATA_KEY = 'authorization';

/**
 * ClientDial: how a client reaches a node's client plane: channel credentials
 * (TLS verified against the cluster CA; default insecure, for loopback) and
 * the API key sent as `authorization: Bearer <key>` on every call ('' or
 * absent: none; a call whose metadata already holds an authorization, such
 * as a forwarded one, keeps it).
 */
export interface ClientDial {
  readonly credentials?: grpc.ChannelCredentials;
  readonly apiKey?: string;
}

/** bearerInterceptor adds `authorization: Bearer <apiKey>` to every call that carries none. */
export function bearerInterceptor(apiKey: string): grpc.Interceptor {
  const value = `Bearer ${apiKey}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        if (metadata.get(AUTHORIZATION_METADATA_KEY).length === 0) metadata.set(AUTHORIZATION_METADATA_KEY, value);
        next(metadata, listener);
      },
    });
}

/** dialChannel: the credentials and channel options (base + the key's interceptor) of a client channel. */
export function dialChannel(dial: ClientDial, base: grpc.ChannelOptions = clientChannelOptions): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const interceptors = dial.apiKey !== undefined && dial.apiKey !== '' ? [bearerInterceptor(dial.apiKey)] : [];
  return {
    credentials: dial.credentials ?? grpc.credentials.createInsecure(),
    options: interceptors.length === 0 ? base : { ...base, interceptors: [...((base['interceptors'] as grpc.Interceptor[] | undefined) ?? []), ...interceptors] },
  };
}

/** copyAuthorization copies the caller's authorization metadata onto a call this node makes on its behalf (forwarding). */
export function copyAuthorization(from: grpc.Metadata, to: grpc.Metadata): grpc.Metadata {
  const v = from.get(AUTHORIZATION_METADATA_KEY)[0];
  if (typeof v === 'string') to.set(AUTHORIZATION_METADATA_KEY, v);
  return to;
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/** callUnary runs one unary call with a deadline and resolves with its response. */
export function callUnary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, opts: CallOptions = {}): Promise<Res> {
  const deadline = Date.now() + (opts.deadlineMs ?? DEFAULT_DEADLINE_MS);
  return new Promise<Res>((resolve, reject) => {
    const callOptions: Partial<grpc.CallOptions> = opts.interceptors === undefined ? { deadline } : { deadline, interceptors: opts.interceptors };
    method(request, opts.metadata ?? new grpc.Metadata(), callOptions, (err, res) => {
      if (err !== null) reject(err);
      else resolve(res);
    });
  });
}

/** RequestId: the `client_id` / `request_id` pair that makes one write idempotent (see kv.proto). */
export interface RequestId {
  readonly clientId: string;
  readonly requestId: bigint;
}

/**
 * RequestIds hands out the request ids of one writer: one client id (by
 * default `c-` and a random UUID, so two processes never share one) and
 * serial numbers from 1, as the state machine's session table expects
 * (increasing per client id).
 */
export class RequestIds {
  readonly clientId: string;
  #next = 1n;

  constructor(clientId = `c-${randomUUID()}`) {
    this.clientId = clientId;
  }

  /** next: a fresh id; every retry of the same write must reuse the one its first attempt got. */
  next(): RequestId {
    return { clientId: this.clientId, requestId: this.#next++ };
  }
}

/** RetryOptions: how an idempotent write is retried (attempts and the pause between them). */
export interface RetryOptions {
  /** attempts: the most calls made, the first included (default 4). */
  readonly attempts?: number;
  /** backoffMs: the pause after the first failure, doubled after each (default 100, at most 2,000). */
  readonly backoffMs?: number;
  /** onRetry: told of each failure that is retried. */
  readonly onRetry?: (err: grpc.ServiceError, attempt: number) => void;
}

const RETRYABLE_CODES: ReadonlySet<number> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.ABORTED,
  grpc.status.RESOURCE_EXHAUSTED,
]);

/**
 * isRetryableWriteError: true for the failures after which a write may or
 * may not have been applied, or was refused for now (UNAVAILABLE,
 * DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED): safe to retry only with
 * the same request id.
 */
export function isRetryableWriteError(err: unknown): err is grpc.ServiceError {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' && RETRYABLE_CODES.has(code);
}

/**
 * retryWrite runs `attempt` until it succeeds, fails with an error that is
 * not retryable, or `attempts` calls were made (then the last error is
 * thrown). The caller makes every attempt carry the same request id.
 */
export async function retryWrite<T>(attempt: (n: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = Math.max(1, opts.attempts ?? 4);
  let pauseMs = opts.backoffMs ?? 100;
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (n >= attempts || !isRetryableWriteError(err)) throw err;
      opts.onRetry?.(err, n);
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(2_000, pauseMs * 2);
    }
  }
}

/** KvClient: KVService as promises. */
export class KvClient {
  readonly raw: KVServiceClient;
  /** ids: the request ids of this client's idempotent writes (putIdempotent, deleteIdempotent). */
  readonly ids: RequestIds;

  constructor(address: string, dial: ClientDial = {}, ids: RequestIds = new RequestIds()) {
    const { credentials, options } = dialChannel(dial);
    this.raw = new KVServiceClient(address, credentials, options);
    this.ids = ids;
  }

  /**
   * putIdempotent: Put with a fresh request id from `ids`, retried (see
   * retryWrite) with that same id, so it is applied once however many
   * attempts reach the cluster; `replayed` in the answer tells that an
   * earlier attempt had applied it. `opts` apply to each attempt.
   */
  putIdempotent(req: Omit<Partial<PutRequest>, 'clientId' | 'requestId'> & Pick<PutRequest, 'key' | 'value'>, opts: CallOptions & RetryOptions = {}): Promise<PutResponse> {
    const id = this.ids.next();
    return retryWrite(() => this.put({ ...req, ...id }, opts), opts);
  }

  /** deleteIdempotent: Delete with a fresh request id, retried like putIdempotent. */
  deleteIdempotent(req: Omit<Partial<DeleteRequest>, 'clientId' | 'requestId'> & Pick<DeleteRequest, 'key'>, opts: CallOptions & RetryOptions = {}): Promise<DeleteResponse> {
    const id = this.ids.next();
    return retryWrite(() => this.delete({ ...req, ...id }, opts), opts);
  }

  put(req: Partial<PutRequest> & Pick<PutRequest, 'key' | 'value'>, opts?: CallOptions): Promise<PutResponse> {
    return callUnary(this.raw.put.bind(this.raw), { prevKv: false, clientId: '', requestId: 0n, ...req }, opts);
  }

  get(req: Partial<GetRequest> & Pick<GetRequest, 'key'>, opts?: CallOptions): Promise<GetResponse> {
    return callUnary(this.raw.get.bind(this.raw), { serializable: false, ...req }, opts);
  }

  delete(req: Partial<DeleteRequest> & Pick<DeleteRequest, 'key'>, opts?: CallOptions): Promise<DeleteResponse> {
    return callUnary(this.raw.delete.bind(this.raw), { prevKv: false, clientId: '', requestId: 0n, ...req }, opts);
  }

  /** txn: Txn (compare-and-swap); `txnIdempotent` retries it with one request id. */
  txn(req: Partial<TxnRequest>, opts?: CallOptions): Promise<TxnResponse> {
    return callUnary(this.raw.txn.bind(this.raw), { compare: [], success: [], failure: [], clientId: '', requestId: 0n, ...req }, opts);
  }

  /** txnIdempotent: Txn with a fresh request id, retried like putIdempotent (a retry never applies it twice). */
  txnIdempotent(req: Omit<Partial<TxnRequest>, 'clientId' | 'requestId'>, opts: CallOptions & RetryOptions = {}): Promise<TxnResponse> {
    const id = this.ids.next();
    return retryWrite(() => this.txn({ ...req, ...id }, opts), opts);
  }

  range(req: Partial<RangeRequest>, opts?: CallOptions): Promise<RangeResponse> {
    const empty = new Uint8Array(0);
    return callUnary(
      this.raw.range.bind(this.raw),
      { prefix: empty, start: empty, end: empty, limit: 0, serializable: false, ...req },
      opts,
    );
  }

  close(): void {
    this.raw.close();
  }
}

/** ClusterClient: ClusterService as promises. */
export class ClusterClient {
  readonly raw: ClusterServiceClient;

  constructor(address: string, dial: ClientDial = {}) {
    const { credentials, options } = dialChannel(dial);
    this.raw = new ClusterServiceClient(address, credentials, options);
  }

  status(opts?: CallOptions): Promise<StatusResponse> {
    return callUnary(this.raw.status.bind(this.raw), {}, opts);
  }

  addMember(id: string, address: string, learner: boolean, opts?: CallOptions): Promise<AddMemberResponse> {
    return callUnary(this.raw.addMember.bind(this.raw), { id, address, learner }, opts);
  }

  removeMember(id: string, opts?: CallOptions): Promise<RemoveMemberResponse> {
    return callUnary(this.raw.removeMember.bind(this.raw), { id }, opts);
  }

  transferLeadership(targetId: string, opts?: CallOptions): Promise<TransferLeadershipResponse> {
    return callUnary(this.raw.transferLeadership.bind(this.raw), { targetId }, opts);
  }

  vote(opts?: CallOptions): Promise<VoteResponse> {
    return callUnary(this.raw.vote.bind(this.raw), {}, opts);
  }

  hashState(opts?: CallOptions): Promise<HashStateResponse> {
    return callUnary(this.raw.hashState.bind(this.raw), {}, opts);
  }

  close(): void {
    this.raw.close();
  }
}

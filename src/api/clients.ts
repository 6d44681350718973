/**
 * Promise wrappers around the generated KV and Cluster clients, for the CLI,
 * tests and leader forwarding. Every call has a deadline (`deadlineMs`,
 * default 10 s) and rejects with the call's grpc-js ServiceError.
 */
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
} from '../gen/snapcoord/v1/kv.js';

/** MESSAGE_BYTES_MAX: the largest gRPC message the API sends or receives (64 MiB). */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;

/** DEFAULT_DEADLINE_MS: the deadline of a call that names none. */
export const DEFAULT_DEADLINE_MS = 10_000;

/** CallOptions: per-call deadline and extra request metadata. */
export interface CallOptions {
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
}

/** clientChannelOptions: what every API client channel uses. */
export const clientChannelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
};

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
    method(request, opts.metadata ?? new grpc.Metadata(), { deadline }, (err, res) => {
      if (err !== null) reject(err);
      else resolve(res);
    });
  });
}

/** KvClient: KVService as promises. */
export class KvClient {
  readonly raw: KVServiceClient;

  constructor(address: string, dial: ClientDial = {}) {
    const { credentials, options } = dialChannel(dial);
    this.raw = new KVServiceClient(address, credentials, options);
  }

  put(req: Partial<PutRequest> & Pick<PutRequest, 'key' | 'value'>, opts?: CallOptions): Promise<PutResponse> {
    return callUnary(this.raw.put.bind(this.raw), { prevKv: false, ...req }, opts);
  }

  get(req: Partial<GetRequest> & Pick<GetRequest, 'key'>, opts?: CallOptions): Promise<GetResponse> {
    return callUnary(this.raw.get.bind(this.raw), { serializable: false, ...req }, opts);
  }

  delete(req: Partial<DeleteRequest> & Pick<DeleteRequest, 'key'>, opts?: CallOptions): Promise<DeleteResponse> {
    return callUnary(this.raw.delete.bind(this.raw), { prevKv: false, ...req }, opts);
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

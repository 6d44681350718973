/**
 * KvClient: KVService as promises. Every call has a deadline (`deadlineMs`,
 * default DEFAULT_DEADLINE_MS) and rejects with the call's grpc-js
 * ServiceError; the *Idempotent writes carry a request id and are retried
 * with it.
 */
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
import { dialChannel, type ClientDial } from './dial.js';
import { RequestIds } from './request-ids.js';
import { retryWrite, type RetryOptions } from './retry-write.js';
import { callUnary, type CallOptions } from './unary-call.js';

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

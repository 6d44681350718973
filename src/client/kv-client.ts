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

  /**
   * rangePages: the pairs `req` selects, one Range call a page (each answer
   * is cut by the server's limit and its byte cap, KV_RANGE_BYTES_MAX: a
   * page of large values holds few pairs), in key order, until `pairsMax`
   * pairs were yielded or no key is left. A prefix is paged on as the keys
   * in [last key + 0x00, the prefix's end). The last page's `more` tells
   * whether keys beyond matched. `opts` apply to each call.
   */
  async *rangePages(req: Partial<RangeRequest>, pairsMax: number, opts?: CallOptions): AsyncGenerator<RangeResponse> {
    const prefix = req.prefix ?? new Uint8Array(0);
    let next: Partial<RangeRequest> = req;
    let left = pairsMax;
    while (left > 0) {
      const page = await this.range({ ...next, limit: Math.min(left, RANGE_PAGE_PAIRS_MAX) }, opts);
      left -= page.kvs.length;
      const last = page.kvs[page.kvs.length - 1];
      yield page;
      if (!page.more || last === undefined) return;
      const start = new Uint8Array(last.key.length + 1);
      start.set(last.key);
      next = prefix.length > 0 ? { ...req, prefix: new Uint8Array(0), start, end: prefixEnd(prefix) } : { ...req, start };
    }
  }

  close(): void {
    this.raw.close();
  }
}

/** RANGE_PAGE_PAIRS_MAX: the most pairs one Range call may ask for (the server's KV_RANGE_LIMIT_MAX). */
const RANGE_PAGE_PAIRS_MAX = 10_000;

/** prefixEnd: the first key after every key with `prefix` (empty: none, the prefix is all 0xff). */
function prefixEnd(prefix: Uint8Array): Uint8Array {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  const out = prefix.slice(0, end);
  if (end > 0) out[end - 1] = (out[end - 1] ?? 0) + 1;
  return out;
}

/**
 * Request ids: the `client_id` / `request_id` pair that makes one write
 * idempotent (see kv.proto; RestoreSnapshot carries it as metadata, see
 * snapshot.proto).
 */
import { randomUUID } from 'node:crypto';

/** CLIENT_ID_METADATA_KEY / REQUEST_ID_METADATA_KEY: the request id of an idempotent RestoreSnapshot (see snapshot.proto). */
export const CLIENT_ID_METADATA_KEY = 'x-snapcoord-client-id';
export const REQUEST_ID_METADATA_KEY = 'x-snapcoord-request-id';
/** REPLAYED_METADATA_KEY: trailing metadata `1` when a restore's request id had already taken effect. */
export const REPLAYED_METADATA_KEY = 'x-snapcoord-replayed';

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

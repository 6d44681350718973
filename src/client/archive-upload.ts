/**
 * uploadArchive: one RestoreSnapshot upload with backpressure, shared by
 * `snapcoord snapshot restore` and `serve --import-snapshot`.
 */
import { once } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import type { RestoreSnapshotRequest, RestoreSnapshotResponse } from '../gen/snapcoord/v1/snapshot.js';
import type { SnapshotClient, StreamOptions } from './snapshot-client.js';

/** EarlyAnswerError: the node answered a RestoreSnapshot before the whole archive was sent (the upload is void). */
export class EarlyAnswerError extends Error {
  override readonly name = 'EarlyAnswerError';
  constructor() {
    super('the node answered before the upload ended');
  }
}

/** UploadOptions: the call's deadline and metadata (e.g. a request id), and hooks into the upload. */
export interface UploadOptions extends StreamOptions {
  /** onCall: told of the call as soon as it starts (to cancel it: Ctrl-C, an idle timer). */
  readonly onCall?: (call: grpc.ClientWritableStream<RestoreSnapshotRequest>) => void;
  /** beforeEnd: runs (and is awaited) after the last piece, before end(); a throw cancels the call (e.g. the file changed, or its check failed). */
  readonly beforeEnd?: () => void | Promise<void>;
}

/**
 * uploadArchive writes each piece of `pieces` as one RestoreSnapshot message,
 * waiting for 'drain' whenever write() returns false (so no more than the
 * stream's buffer is ever held), ends the call and resolves with the node's
 * answer once it has verified and applied the archive.
 * Errors: the call's grpc-js ServiceError; EarlyAnswerError when the node
 * answers before the end; an error thrown by `pieces` or `beforeEnd` cancels
 * the call and is rethrown.
 */
export async function uploadArchive(
  client: Pick<SnapshotClient, 'restoreSnapshot'>,
  pieces: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: UploadOptions = {},
): Promise<RestoreSnapshotResponse> {
  let call: grpc.ClientWritableStream<RestoreSnapshotRequest> | undefined;
  const response = new Promise<RestoreSnapshotResponse>((resolve, reject) => {
    call = client.restoreSnapshot((err, res) => (err !== null || res === undefined ? reject(err ?? new Error('RestoreSnapshot answered nothing')) : resolve(res)), opts);
  });
  response.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
  const answeredEarly = response.then(() => {
    throw new EarlyAnswerError();
  });
  answeredEarly.catch(() => undefined);
  const c = call!;
  opts.onCall?.(c);
  try {
    for await (const piece of pieces) {
      if (!c.write({ data: piece })) await Promise.race([once(c, 'drain'), answeredEarly]);
    }
    await Promise.race([opts.beforeEnd?.(), answeredEarly]);
  } catch (err) {
    c.cancel();
    throw err;
  }
  c.end();
  return response;
}

/**
 * SnapshotClient: SnapshotService as promises (unary calls) and grpc-js
 * streams (GetSnapshot, RestoreSnapshot). Unary calls have a deadline
 * (CallOptions.deadlineMs, default DEFAULT_DEADLINE_MS) and reject with the
 * call's grpc-js ServiceError. Streaming calls have no deadline unless one is
 * given: a 10 GB archive takes as long as it takes; cancel() ends them.
 */
import * as grpc from '@grpc/grpc-js';
import {
  SnapshotServiceClient,
  type CreateSnapshotRequest,
  type CreateSnapshotResponse,
  type GetSnapshotRequest,
  type GetSnapshotResponse,
  type InspectSnapshotResponse,
  type ListSnapshotsResponse,
  type RestoreSnapshotRequest,
  type RestoreSnapshotResponse,
} from '../gen/snapcoord/v1/snapshot.js';
import { clientChannelOptions, dialChannel, type ClientDial } from './dial.js';
import { callUnary, type CallOptions } from './unary-call.js';

/** StreamOptions: an optional deadline for a streaming call (none by default). */
export interface StreamOptions {
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
}

function streamCallOptions(opts: StreamOptions): Partial<grpc.CallOptions> {
  return opts.deadlineMs === undefined ? {} : { deadline: Date.now() + opts.deadlineMs };
}

/**
 * SNAPSHOT_FLOW_CONTROL_WINDOW_BYTES: the HTTP/2 receive window of the
 * snapshot channel (grpc-js's default is 64 KiB, slow for multi-GB streams).
 * It is also the most a paused download holds in the gateway per stream.
 */
export const SNAPSHOT_FLOW_CONTROL_WINDOW_BYTES = 4 << 20;

/** SnapshotClient: SnapshotService as promises (unary) and raw grpc-js streams (GetSnapshot, RestoreSnapshot). */
export class SnapshotClient {
  readonly raw: SnapshotServiceClient;

  constructor(address: string, dial: ClientDial = {}) {
    const { credentials, options } = dialChannel(dial, { ...clientChannelOptions, 'grpc-node.flow_control_window': SNAPSHOT_FLOW_CONTROL_WINDOW_BYTES });
    this.raw = new SnapshotServiceClient(address, credentials, options);
  }

  createSnapshot(req: CreateSnapshotRequest, opts?: CallOptions): Promise<CreateSnapshotResponse> {
    return callUnary(this.raw.createSnapshot.bind(this.raw), req, opts);
  }

  /**
   * getSnapshot starts the download: the first message carries `info`, the
   * others `data`. The returned stream is a Node Readable in object mode;
   * grpc-js stops reading from HTTP/2 while it is paused (backpressure).
   */
  getSnapshot(stale: boolean, opts: StreamOptions = {}, pin: Omit<GetSnapshotRequest, 'stale'> = {}): grpc.ClientReadableStream<GetSnapshotResponse> {
    return this.raw.getSnapshot({ stale, ...pin }, opts.metadata ?? new grpc.Metadata(), streamCallOptions(opts));
  }

  /**
   * restoreSnapshot starts an upload: write({data}) pieces of the archive
   * (respecting write()'s false / 'drain'), then end(); `callback` gets the
   * answer once the server has verified and applied the archive.
   */
  restoreSnapshot(
    callback: (err: grpc.ServiceError | null, res?: RestoreSnapshotResponse) => void,
    opts: StreamOptions = {},
  ): grpc.ClientWritableStream<RestoreSnapshotRequest> {
    return this.raw.restoreSnapshot(opts.metadata ?? new grpc.Metadata(), streamCallOptions(opts), callback);
  }

  listSnapshots(opts?: CallOptions): Promise<ListSnapshotsResponse> {
    return callUnary(this.raw.listSnapshots.bind(this.raw), {}, opts);
  }

  inspectSnapshot(id: string, opts?: CallOptions): Promise<InspectSnapshotResponse> {
    return callUnary(this.raw.inspectSnapshot.bind(this.raw), { id }, opts);
  }

  close(): void {
    this.raw.close();
  }
}

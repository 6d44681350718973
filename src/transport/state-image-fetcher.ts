/**
 * The client side of FetchStateImage (issue 15): a follower asks
 * a member (the leader) for the state image of a restore entry.
 */
import * as grpc from '@grpc/grpc-js';

import type { FetchStateImageResponse, RaftServiceClient } from '../gen/snapcoord/v1/raft.js';
import type { NodeId } from '../raft/types.js';
import type { SnapshotMeta, StateImageChunk, StateImageFile } from '../raft/types.js';
import { CodecError, fromU64, refuseUndecoded, snapshotMetaFromProto } from './codec.js';
import { RaftPeerClient } from './raft-client.js';

export { STATE_IMAGE_FILES_MAX } from './codec.js';
import { credentialsTo, type PeerDial } from './peer-guard.js';
import { FLOW_CONTROL_WINDOW_BYTES, realTimeClock, type FetchClock, type FetchTimer } from './snapshot-fetcher.js';
import type { StateImageCall, StateImageMessage, StateImageStream, StateImageStreamOpener } from './transport.js';

/** MANIFEST_MESSAGE_BYTES_MAX: the largest message of a state image stream (a manifest of many files; chunks are 1 MiB). */
const MANIFEST_MESSAGE_BYTES_MAX = 16 * 1024 * 1024;

export interface StateImageFetchOptions {
  readonly selfId: NodeId;
  /** to: the member asked (the leader); address: where to reach it (its peer plane). */
  readonly to: NodeId;
  readonly address: string;
  /** index: the restore entry whose image is wanted. */
  readonly index: number;
  /** recordFormat: the stored form of state records this member reads (the storage's STATE_RECORD_FORMAT). */
  readonly recordFormat: number;
  readonly dial?: PeerDial;
  /** manifestTimeoutMs: how long the manifest may take (the member may still be building the image). */
  readonly manifestTimeoutMs: number;
  /** idleTimeoutMs: a stream that delivers nothing for this long after the manifest is cut. */
  readonly idleTimeoutMs: number;
  /**
   * bytesPerSecondMin: with it, the whole image must arrive within idleTimeoutMs plus its bytes at this rate
   * from the manifest on (DEADLINE_EXCEEDED otherwise): a sender that trickles (a byte, or an empty message,
   * within each idle timeout) cannot hold the receiver for ever.
   */
  readonly bytesPerSecondMin?: number;
  readonly signal?: AbortSignal;
  /** streams: opens the FetchStateImage stream (default: a gRPC call to `address` with `dial`). */
  readonly streams?: StateImageStreamOpener;
  /** clock: the manifest, idle and whole-image timeouts run on it (default realTimeClock; a node passes its own). */
  readonly clock?: FetchClock;
}

/**
 * OpenedStateImage: a state image stream from a peer; cancel() ends it (the chunks' iteration then throws).
 * sentSnapshot: once the chunks' iteration ended, the sender's snapshot of the same state if it named one.
 */
export interface OpenedStateImage extends StateImageStream {
  cancel(): void;
  readonly sentSnapshot: SnapshotMeta | null;
}

function coded(code: grpc.status, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** grpcImageStreams opens FetchStateImage as a gRPC call on `client`, its responses decoded (CodecError for a malformed one). */
function grpcImageStreams(client: RaftServiceClient): StateImageStreamOpener {
  return {
    openStateImageStream: (_address, p): StateImageCall => {
      const call = client.fetchStateImage({ from: p.from, to: p.to, index: BigInt(p.index), recordFormat: p.recordFormat });
      async function* messages(): AsyncGenerator<StateImageMessage, void, undefined> {
        for await (const m of call as AsyncIterable<FetchStateImageResponse>) {
          refuseUndecoded(m);
          yield {
            files: m.files.map((f) => ({ name: f.name, sizeBytes: fromU64(f.sizeBytes, 'sizeBytes'), sha256: f.sha256 })),
            file: m.file,
            offset: fromU64(m.offset, 'offset'),
            data: m.data,
            snapshot: m.snapshot === undefined ? null : snapshotMetaFromProto(m.snapshot),
          };
        }
      }
      return { messages: messages(), cancel: () => call.cancel() };
    },
  };
}

/**
 * openStateImage opens FetchStateImage on `o.address` (over `o.streams`, else
 * a gRPC call) and resolves with the manifest once it arrives; the chunks
 * follow as they are iterated (once). Rejects, and the iteration throws, with
 * the call's gRPC error (a numeric `code`: NOT_FOUND when the member has no
 * such image, DEADLINE_EXCEEDED after a timeout on `o.clock`, CANCELLED on
 * cancel or abort), or INVALID_ARGUMENT for a malformed message. The channel
 * is closed once the stream ends.
 */
export async function openStateImage(o: StateImageFetchOptions): Promise<OpenedStateImage> {
  const clock = o.clock ?? realTimeClock;
  const client =
    o.streams !== undefined
      ? null
      : new RaftPeerClient(o.address, credentialsTo(o.dial, o.to), {
          'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
          'grpc.max_receive_message_length': MANIFEST_MESSAGE_BYTES_MAX,
          'grpc.use_local_subchannel_pool': 1,
          interceptors: [...(o.dial?.interceptors ?? [])],
        });
  const streams = o.streams ?? grpcImageStreams(client as RaftServiceClient);
  const call = streams.openStateImageStream(o.address, { from: o.selfId, to: o.to, index: o.index, recordFormat: o.recordFormat });
  let reason: Error | null = null;
  const cancel = (why: Error): void => {
    reason ??= why;
    call.cancel();
  };
  const onAbort = (): void => cancel(coded(grpc.status.CANCELLED, 'the state image fetch was aborted'));
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let timer: FetchTimer | undefined;
  let wholeTimer: FetchTimer | undefined;
  const arm = (ms: number, what: string): void => {
    clock.clearTimeout(timer);
    timer = clock.setTimeout(() => cancel(coded(grpc.status.DEADLINE_EXCEEDED, `${what} within ${ms} ms`)), ms);
  };
  const close = (): void => {
    clock.clearTimeout(timer);
    clock.clearTimeout(wholeTimer);
    o.signal?.removeEventListener('abort', onAbort);
    client?.close();
  };
  const messages = call.messages[Symbol.asyncIterator]();
  const next = async (): Promise<StateImageMessage | null> => {
    try {
      const r = await messages.next();
      return r.done === true ? null : r.value;
    } catch (err) {
      throw reason ?? err;
    }
  };
  let files: StateImageFile[];
  try {
    if (o.signal?.aborted === true) onAbort();
    arm(o.manifestTimeoutMs, 'no manifest');
    const first = await next();
    if (first === null) throw coded(grpc.status.INVALID_ARGUMENT, 'the state image stream ended before its manifest');
    files = [...first.files];
    if (o.bytesPerSecondMin !== undefined) {
      const bytes = files.reduce((n, f) => n + f.sizeBytes, 0);
      const ms = Math.ceil(o.idleTimeoutMs + (bytes / o.bytesPerSecondMin) * 1000);
      wholeTimer = clock.setTimeout(() => cancel(coded(grpc.status.DEADLINE_EXCEEDED, `the image's ${bytes} bytes did not arrive within ${ms} ms (${o.bytesPerSecondMin} bytes/s at least)`)), ms);
    }
  } catch (err) {
    call.cancel();
    close();
    throw err instanceof CodecError ? coded(grpc.status.INVALID_ARGUMENT, err.message) : err;
  }
  const out: { sentSnapshot: SnapshotMeta | null } = { sentSnapshot: null };
  async function* chunks(): AsyncGenerator<StateImageChunk, void, undefined> {
    try {
      for (;;) {
        arm(o.idleTimeoutMs, 'nothing received');
        const m = await next();
        if (m === null) return;
        if (m.files.length > 0) throw coded(grpc.status.INVALID_ARGUMENT, 'a second manifest in a state image stream');
        if (m.snapshot !== null) {
          out.sentSnapshot = m.snapshot;
          continue;
        }
        yield { file: m.file, offset: m.offset, data: m.data };
      }
    } finally {
      call.cancel();
      close();
    }
  }
  return {
    files,
    get sentSnapshot() {
      return out.sentSnapshot;
    },
    chunks: chunks(),
    cancel: () => {
      cancel(coded(grpc.status.CANCELLED, 'the state image fetch was canceled'));
      close();
    },
  };
}

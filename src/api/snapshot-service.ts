/**
 * SnapshotService and TaskService over a Node.
 *
 * - CreateSnapshot{directory}: Typesense's snapshot: a data directory under an
 *   allowed root (checked by locateSnapshotPath, then opened without following
 *   links by exportDirectory), never the task file's path, one at a time
 *   (FAILED_PRECONDITION while another runs). CreateSnapshot{task}: enqueues a
 *   snapshotCreation task (Meilisearch), which writes
 *   <snapshot-dir>/<db-name>.snapshot.
 * - GetSnapshot: a fresh snapshot streamed in chunks with backpressure; a
 *   follower forwards non-stale calls to the leader.
 * - RestoreSnapshot: the uploaded archive, streamed into the leader's store,
 *   validated, then restored through the log; a follower forwards the stream.
 *   An upload silent for uploadIdleMs is given up (DEADLINE_EXCEEDED); the
 *   leader receives at most RESTORE_UPLOADS_MAX at once (RESOURCE_EXHAUSTED).
 *   A download whose client reads nothing for downloadStallMs is given up
 *   (DEADLINE_EXCEEDED), its snapshot released; at most downloadsMax are
 *   served at once (RESOURCE_EXHAUSTED).
 */
import { once } from 'node:events';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';

import {
  SnapshotServiceClient,
  type CreateSnapshotRequest,
  type CreateSnapshotResponse,
  type GetSnapshotRequest,
  type GetSnapshotResponse,
  type RestoreSnapshotRequest,
  type RestoreSnapshotResponse,
  type SnapshotInfo,
  type SnapshotServiceServer,
  type Task as PbTask,
  type TaskFilter as PbTaskFilter,
  type TaskServiceServer,
} from '../gen/snapcoord/v1/snapshot.js';
import type { Node } from '../node/node.js';
import { exportDirectory, type DirectoryExport } from '../ops/snapshot-export.js';
import type { SnapshotManager } from '../node/snapshots.js';
import { durationOf, TaskQueueError, type Task, type TaskFilter, type TaskQueue } from '../ops/task-queue.js';
import { inspectArchive } from '../snapshot/archive.js';
import { SnapshotStoreError } from '../snapshot/errors.js';
import type { SnapshotHandle, StoredSnapshot } from '../snapshot/store.js';
import { RESERVED_KEY_PREFIX, type SessionStamp } from '../fsm/sessions.js';
import { ApiError, invalidArgument, notLeaderError, toApiError } from './api-error.js';
import { callKeyMay } from './auth-interceptor.js';
import { ERROR_CODE_METADATA_KEY } from '../client/error-metadata.js';
import { CLIENT_ID_METADATA_KEY, REPLAYED_METADATA_KEY, REQUEST_ID_METADATA_KEY } from '../client/request-ids.js';
import { MESSAGE_BYTES_MAX } from '../client/dial.js';
import { sessionOf } from './kv-service.js';
import { LeaderForwarder, isForwarded, type ServerCall } from './leader-forwarder.js';
import { MemberClients } from './member-clients.js';
import { locateSnapshotPath } from './snapshot-path.js';
import { unary } from './unary-handler.js';
import { STREAM_UNSENT_MAX, StreamWriteWindow } from '../transport/stream-write-window.js';

export interface SnapshotApiOptions {
  readonly snapshots: SnapshotManager;
  readonly tasks: TaskApi;
  /** realRoots: real paths of the allowed snapshot roots (prepareRoots). */
  readonly realRoots: readonly string[];
  readonly directoryExport: DirectoryExport;
  /**
   * uploadIdleMs: a RestoreSnapshot upload that receives no message for this
   * long while the node waits for one is given up, DEADLINE_EXCEEDED, nothing
   * changed (default UPLOAD_IDLE_MS_DEFAULT). The time the import holds the
   * upload back (backpressure) does not count.
   */
  readonly uploadIdleMs?: number;
  /**
   * downloadStallMs: a GetSnapshot download none of whose messages could be
   * sent for this long (the client stopped reading) is given up, releasing
   * the snapshot it pinned (default DOWNLOAD_STALL_MS_DEFAULT).
   */
  readonly downloadStallMs?: number;
  /**
   * downloadsMax: GetSnapshot downloads this node serves at once (forwarded
   * ones included); more are refused RESOURCE_EXHAUSTED (HTTP 429) at once
   * (default DOWNLOADS_MAX_DEFAULT).
   */
  readonly downloadsMax?: number;
}

/**
 * DOWNLOADS_MAX_DEFAULT: downloads served at once. Each holds a snapshot open
 * (pinned against retention: a fresh download after a write takes one of its
 * own, a whole-state archive on disk) until its client has read it or it
 * stalls for downloadStallMs.
 */
export const DOWNLOADS_MAX_DEFAULT = 8;

/**
 * INSPECTIONS_AT_ONCE_MAX: InspectSnapshot calls served at once. Each reads,
 * gunzips and checks a whole archive: without a cap any key with
 * snapshots.read could make the node read its archives as many times over
 * at once as its calls allow. More are refused RESOURCE_EXHAUSTED.
 */
export const INSPECTIONS_AT_ONCE_MAX = 2;

/** DOWNLOAD_STALL_MS_DEFAULT: how long a download may wait for its client to read (60 s). */
export const DOWNLOAD_STALL_MS_DEFAULT = 60_000;

/** UPLOAD_IDLE_MS_DEFAULT: how long a restore upload may send nothing before it is given up (60 s). */
export const UPLOAD_IDLE_MS_DEFAULT = 60_000;

export function infoOf(s: StoredSnapshot): SnapshotInfo {
  return {
    id: s.id,
    index: BigInt(s.meta.index),
    term: BigInt(s.meta.term),
    sizeBytes: BigInt(s.archiveBytes),
    digest: s.archiveSha256,
    createdAt: s.meta.createdAt,
    stateBytes: BigInt(s.meta.stateBytes),
    stateKeys: BigInt(s.meta.stateKeys),
    snapcoordVersion: s.meta.snapcoordVersion,
    formatVersion: s.meta.formatVersion,
  };
}

/** openPinned opens the held snapshot `id` (or, when id is '', the newest held one of log index `index`); null when this node holds none. */
async function openPinned(snapshots: SnapshotManager, id: string, index: number): Promise<SnapshotHandle | null> {
  const held = await snapshots.store.list();
  const found = id !== '' ? held.find((s) => s.id === id) : held.filter((s) => s.meta.index === index).sort((a, b) => (a.id < b.id ? 1 : -1))[0];
  if (found === undefined) return null;
  try {
    return await snapshots.store.open(found.id);
  } catch {
    return null; // pruned between list and open
  }
}

function pinnedGone(req: GetSnapshotRequest): string {
  return (req.id ?? '') !== '' ? `snapshot ${JSON.stringify(req.id)} is no longer held; start the download again` : `no snapshot of index ${req.index ?? 0n} is held; start the download again`;
}

/**
 * PLACE_PATTERN: what a task's error message may say of where the node keeps
 * things: a URL (s3://bucket/key, http://endpoint) or an absolute path
 * (after the start, a space, a quote, a bracket, `=`, `:` or `,`).
 */
const PLACE_PATTERN = /\b[a-z][a-z0-9+.-]*:\/\/[^\s'"<>)]*|(?<=^|[\s'"([=:,])\/[^\s'"<>)\],]+/gi;

/** PLACE_HIDDEN: what stands for a path or URL a caller may not see. */
export const PLACE_HIDDEN = '(hidden)';

/** hidePlaces: `message` with every path and URL (PLACE_PATTERN) replaced by PLACE_HIDDEN. */
export function hidePlaces(message: string): string {
  return message.replace(PLACE_PATTERN, PLACE_HIDDEN);
}

/**
 * taskToPb converts a task for a caller. `places` false (a key without admin)
 * leaves out where the node keeps things: details.path and
 * details.destination are empty and the error message's paths and URLs read
 * PLACE_HIDDEN. Meilisearch's own snapshotCreation tasks show none of them;
 * before, any snapshots.read key (GET /tasks) learned the node's file layout
 * and its S3 bucket and key names.
 */
export function taskToPb(t: Task, places = true): PbTask {
  const d = t.details;
  return {
    uid: BigInt(t.uid),
    ...(t.batchUid !== null ? { batchUid: BigInt(t.batchUid) } : {}),
    status: t.status,
    type: t.type,
    ...(t.canceledBy !== null ? { canceledBy: BigInt(t.canceledBy) } : {}),
    details: {
      path: places ? (d.path ?? '') : '',
      bytesDone: BigInt(d.bytesDone ?? 0),
      bytesTotal: BigInt(d.bytesTotal ?? 0),
      digest: d.digest ?? '',
      index: BigInt(d.index ?? 0),
      matchedTasks: BigInt(d.matchedTasks ?? 0),
      canceledTasks: BigInt(d.canceledTasks ?? 0),
      originalFilter: d.originalFilter ?? '',
      destination: places ? (d.destination ?? '') : '',
      phase: d.phase ?? '',
      removed: BigInt(d.removed ?? 0),
      kept: BigInt(d.kept ?? 0),
    },
    // The task's own code only: each gateway style derives its product's type and link from it.
    error: t.error === null ? { message: '', code: '', type: '', link: '' } : { message: places ? t.error.message : hidePlaces(t.error.message), code: t.error.code, type: '', link: '' },
    duration: durationOf(t) ?? '',
    enqueuedAt: t.enqueuedAt,
    startedAt: t.startedAt ?? '',
    finishedAt: t.finishedAt ?? '',
  };
}

/** mayKnowPlaces: whether a call's key may see the node's paths and URLs (admin, or no auth gate at all: callKeyMay). */
function mayKnowPlaces(md: grpc.Metadata): boolean {
  return callKeyMay(md, 'admin') !== false;
}

function filterOf(f: PbTaskFilter | undefined): TaskFilter {
  if (f === undefined) return {};
  const dates = (['beforeEnqueuedAt', 'afterEnqueuedAt', 'beforeStartedAt', 'afterStartedAt', 'beforeFinishedAt', 'afterFinishedAt'] as const)
    .filter((k) => typeof f[k] === 'string' && f[k] !== '')
    .map((k) => [k, f[k]]);
  return {
    uids: (f.uids ?? []).map(Number),
    statuses: f.statuses ?? [],
    types: f.types ?? [],
    canceledBy: (f.canceledBy ?? []).map(Number),
    batchUids: (f.batchUids ?? []).map(Number),
    ...Object.fromEntries(dates),
  };
}

function taskError(err: unknown): ApiError {
  if (err instanceof TaskQueueError) {
    // A full queue is RESOURCE_EXHAUSTED (HTTP 429, Meilisearch's too_many_requests): no error code of its own.
    if (err.code === 'too_many_tasks') return new ApiError(grpc.status.RESOURCE_EXHAUSTED, err.message);
    const code = err.code === 'task_not_found' ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT;
    const md = new grpc.Metadata();
    md.set(ERROR_CODE_METADATA_KEY, err.code);
    return new ApiError(code, err.message, md);
  }
  return toApiError(err);
}

function leaderClient(
  node: Node,
  clients: MemberClients<SnapshotServiceClient>,
  forwarder: LeaderForwarder,
  call: ServerCall,
): { client: SnapshotServiceClient; md: grpc.Metadata } {
  const st = node.status();
  const address = st.leader === '' ? '' : forwarder.clientAddressOf(st.leader);
  if (address === '') throw notLeaderError('', '');
  return { client: clients.get(st.leader, address), md: forwarder.forwardMetadata(call) };
}

/** restoreSessionOf: the session stamp a RestoreSnapshot call's metadata names, if any. Errors: INVALID_ARGUMENT as sessionOf. */
function restoreSessionOf(md: grpc.Metadata): SessionStamp | undefined {
  const clientId = md.get(CLIENT_ID_METADATA_KEY)[0];
  const requestId = md.get(REQUEST_ID_METADATA_KEY)[0];
  const id = typeof requestId === 'string' ? requestId.trim() : '';
  if (id !== '' && !/^\d{1,16}$/.test(id)) throw new ApiError(grpc.status.INVALID_ARGUMENT, `${REQUEST_ID_METADATA_KEY} is not a whole number`);
  return sessionOf(md, typeof clientId === 'string' ? clientId : '', id === '' ? 0n : BigInt(id));
}

function copyRestoreRequestId(from: grpc.Metadata, to: grpc.Metadata): void {
  for (const key of [CLIENT_ID_METADATA_KEY, REQUEST_ID_METADATA_KEY]) {
    const v = from.get(key)[0];
    if (typeof v === 'string') to.set(key, v);
  }
}

/** UPLOAD_BUFFER_BYTES: the bytes of a restore upload read ahead of its import (the CLI sends 1 MiB pieces). */
const UPLOAD_BUFFER_BYTES = 1024 * 1024;

export function createSnapshotService(
  node: Node,
  opts: SnapshotApiOptions,
  forwarder: LeaderForwarder = new LeaderForwarder(node),
): { service: SnapshotServiceServer; close(): void } {
  let directoryBusy = false;
  // One channel per member, at its last address (MemberClients).
  const clients = new MemberClients(
    (id, address) =>
      new SnapshotServiceClient(address, forwarder.dialFor(id).credentials ?? grpc.credentials.createInsecure(), {
        'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
        'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
        'grpc-node.flow_control_window': 16 << 20,
      }),
  );
  const uploadIdleMs = opts.uploadIdleMs ?? UPLOAD_IDLE_MS_DEFAULT;
  const downloadStallMs = opts.downloadStallMs ?? DOWNLOAD_STALL_MS_DEFAULT;
  const downloadsMax = opts.downloadsMax ?? DOWNLOADS_MAX_DEFAULT;
  let downloads = 0;
  let inspecting = 0;

  const service: SnapshotServiceServer = {
    createSnapshot: unary(async (call: grpc.ServerUnaryCall<CreateSnapshotRequest, CreateSnapshotResponse>) => {
      const req = call.request;
      if (req.task === true) {
        const path = opts.tasks.snapshotPath;
        try {
          return { task: taskToPb(await opts.tasks.queue.enqueue('snapshotCreation', { path }), mayKnowPlaces(call.metadata)) };
        } catch (err) {
          throw taskError(err);
        }
      }
      if (req.directory === undefined) throw invalidArgument('give a directory or task');
      const target = await locateSnapshotPath(req.directory, opts.realRoots, { reserved: [opts.tasks.snapshotPath] });
      if (directoryBusy) throw new ApiError(grpc.status.FAILED_PRECONDITION, 'another snapshot is being created; try again when it is done');
      directoryBusy = true;
      try {
        const handle = await node.downloadSnapshot(true, { toDisk: true });
        try {
          const warnings = await exportDirectory(handle, target, opts.directoryExport);
          return { directorySnapshot: { path: target.path, info: infoOf(handle), warnings } };
        } finally {
          handle.release();
        }
      } finally {
        directoryBusy = false;
      }
    }),

    getSnapshot(call: grpc.ServerWritableStream<GetSnapshotRequest, GetSnapshotResponse>): void {
      if (downloads >= downloadsMax) {
        call.emit('error', new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${downloads} snapshot downloads are being served here already (at most ${downloadsMax} at once); retry when one is done`));
        return;
      }
      downloads++;
      void (async () => {
        const req = call.request;
        const st = node.status();
        const knownLeader = st.leader !== '';
        const lastContactMs = BigInt(Math.max(0, Math.floor(node.lastLeaderContactMs())));
        const pinId = req.id ?? '';
        const pinIndex = Number(req.index ?? 0n);
        const pinned = pinId !== '' || pinIndex > 0;
        // At most STREAM_UNSENT_MAX messages (1 MiB pieces) wait unsent per download, not grpc-js's 16.
        const outbox = new StreamWriteWindow<GetSnapshotResponse>(call, STREAM_UNSENT_MAX, downloadStallMs);
        // A pinned read is served by whichever node holds that archive: this one first.
        let handle = pinned ? await openPinned(opts.snapshots, pinId, pinIndex) : null;
        if (handle === null && !req.stale && st.role !== 'leader') {
          if (isForwarded(call)) {
            if (pinned) throw new ApiError(grpc.status.NOT_FOUND, pinnedGone(req));
            throw notLeaderError(st.leader, forwarder.clientAddressOf(st.leader));
          }
          const { client, md } = leaderClient(node, clients, forwarder, call);
          const upstream = client.getSnapshot(req, md);
          call.on('cancelled', () => upstream.cancel());
          for await (const msg of upstream as AsyncIterable<GetSnapshotResponse>) await outbox.write(msg);
          call.end();
          return;
        }
        if (handle === null) {
          if (pinned) throw new ApiError(grpc.status.NOT_FOUND, pinnedGone(req));
          // A download given up while its snapshot is made lets a newer request supersede that creation.
          const gone = new AbortController();
          const onCancel = (): void => gone.abort();
          call.once('cancelled', onCancel);
          try {
            handle = await node.downloadSnapshot(req.stale, { signal: gone.signal });
          } finally {
            call.off('cancelled', onCancel);
          }
        }
        let cancelled = false;
        call.on('cancelled', () => {
          cancelled = true;
        });
        try {
          const offset = Number(req.offset ?? 0n);
          // The info goes first even for an offset past the end, so the caller learns the size it asked beyond
          // (the gateway answers 416 with `Content-Range: bytes */SIZE`, as for an offset at the end).
          await outbox.write({ info: infoOf(handle), knownLeader, lastContactMs });
          if (offset > handle.archiveBytes) {
            throw new ApiError(grpc.status.OUT_OF_RANGE, `offset ${offset} is past the end of snapshot ${handle.id} (${handle.archiveBytes} bytes)`);
          }
          const length = Number(req.length ?? 0n);
          const end = length > 0 ? Math.min(handle.archiveBytes, offset + length) : handle.archiveBytes;
          if (end > offset) {
            // 1 MiB pieces, each read straight into a frame with room for the message's fields (the serializer
            // encodes around it in place: grpc-js's framing is the one copy) and read into again once grpc-js has
            // sent its message: no fresh buffer per piece. An archive this process has not hashed itself (found on
            // the disk at start, not yet scrubbed) is checked against the chunk hashes recorded when it was written,
            // hashed once as read (readFrames): a byte damaged on this disk fails the download at its chunk
            // (DATA_LOSS), the archive quarantined. One it wrote or verified is sent on its recorded hashes (damage
            // since: the client's digest check fails the download, and the scrub quarantines it).
            try {
              for await (const f of handle.readFrames(offset, end)) {
                if (cancelled) break;
                await outbox.write({ data: f.data, knownLeader, lastContactMs }, f.release);
              }
            } catch (err) {
              if (!(err instanceof SnapshotStoreError && err.code === 'corrupt')) throw err;
              const id = handle.id;
              handle.release();
              handle = null;
              const moved = await node.quarantineDamagedSnapshot(id).catch(() => false);
              throw new ApiError(
                grpc.status.DATA_LOSS,
                `snapshot ${id} is damaged on this node's disk (${err.message})${moved ? '; it was moved to quarantine: download again for a snapshot built anew' : ''}`,
              );
            }
          }
          if (!cancelled) call.end();
        } finally {
          handle?.release();
        }
      })()
        .catch((err: unknown) => {
          // emit('error') sends the status to the client; destroy() would leave it waiting.
          call.emit('error', toApiError(err));
        })
        .finally(() => downloads--);
    },

    restoreSnapshot(call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, callback: grpc.sendUnaryData<RestoreSnapshotResponse>): void {
      const replayedTrailer = new grpc.Metadata();
      /** gaveUp: the upload was given up for want of bytes (its answer, whatever the import made of the cut body). */
      let gaveUp: ApiError | null = null;
      void (async (): Promise<RestoreSnapshotResponse> => {
        const session = restoreSessionOf(call.metadata);
        // A canceled upload looks whole to the handler (its end comes first, then the cancel): the node checks this.
        const canceled = new AbortController();
        call.once('cancelled', () => canceled.abort());
        const st = node.status();
        const body = Readable.from(
          (async function* () {
            const messages = (call as AsyncIterable<RestoreSnapshotRequest>)[Symbol.asyncIterator]();
            try {
              for (;;) {
                // The clock runs only while the upload waits for the client, not while the import holds it back.
                let timer: NodeJS.Timeout | undefined;
                const idle = new Promise<never>((_resolve, reject) => {
                  timer = setTimeout(() => {
                    gaveUp = new ApiError(grpc.status.DEADLINE_EXCEEDED, `no bytes of the upload arrived for ${uploadIdleMs} ms: the restore was given up, nothing changed`);
                    reject(gaveUp);
                  }, uploadIdleMs);
                });
                let r: IteratorResult<RestoreSnapshotRequest>;
                try {
                  r = await Promise.race([messages.next(), idle]);
                } finally {
                  clearTimeout(timer);
                }
                if (r.done === true) return;
                yield Buffer.from(r.value.data.buffer, r.value.data.byteOffset, r.value.data.byteLength);
              }
            } finally {
              void messages.return?.();
            }
          })(),
          // Bytes, not objects: at most about one piece waits here (an object stream would queue 16 of them).
          { objectMode: false, highWaterMark: UPLOAD_BUFFER_BYTES },
        );
        if (st.role !== 'leader') {
          if (isForwarded(call)) throw notLeaderError(st.leader, forwarder.clientAddressOf(st.leader));
          const { client, md } = leaderClient(node, clients, forwarder, call);
          return new Promise<RestoreSnapshotResponse>((resolve, reject) => {
            copyRestoreRequestId(call.metadata, md);
            const upstream = client.restoreSnapshot(md, (err, res) => (err !== null ? reject(err) : resolve(res)));
            // Canceled here, canceled at the leader too (the end forwarded first is then refused there).
            if (canceled.signal.aborted) upstream.cancel();
            else canceled.signal.addEventListener('abort', () => upstream.cancel(), { once: true });
            upstream.on('status', (s: grpc.StatusObject) => {
              if (s.metadata.get(REPLAYED_METADATA_KEY)[0] === '1') replayedTrailer.set(REPLAYED_METADATA_KEY, '1');
            });
            void (async () => {
              for await (const chunk of body as AsyncIterable<Buffer>) {
                if (!upstream.write({ data: chunk })) await once(upstream, 'drain');
              }
              upstream.end();
              // The body fails when the client cancels (premature close): cancel the leader's call too. Destroying it
              // with that error emitted an 'error' event nobody listens to (the callback reports), which ended the
              // process: a CLI canceling the upload of a file that failed its check took the follower down.
            })().catch(() => upstream.cancel());
          });
        }
        const r = await node.restore(body, session, canceled.signal);
        if (r.replayed) replayedTrailer.set(REPLAYED_METADATA_KEY, '1');
        return { index: BigInt(r.index), archive: infoOf(r.archive) };
      })().then(
        (res) => callback(null, res, replayedTrailer),
        (err: unknown) => callback(gaveUp ?? toApiError(err)),
      );
    },

    listSnapshots: unary(async () => ({ snapshots: (await opts.snapshots.store.list()).map(infoOf) })),

    inspectSnapshot: unary(async (call) => {
      const id = call.request.id;
      const stored = (await opts.snapshots.store.list()).find((s) => s.id === id);
      if (stored === undefined) throw new ApiError(grpc.status.NOT_FOUND, `no snapshot ${JSON.stringify(id)} on this node`);
      if (inspecting >= INSPECTIONS_AT_ONCE_MAX) {
        throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${inspecting} snapshots are being inspected here already (at most ${INSPECTIONS_AT_ONCE_MAX} at once); retry when one is done`);
      }
      inspecting++;
      let r: Awaited<ReturnType<typeof inspectArchive>>;
      try {
        r = await inspectArchive(stored.path, { reservedKeyPrefix: RESERVED_KEY_PREFIX });
      } finally {
        inspecting--;
      }
      const ok = r.ok && r.archiveSha256 === stored.archiveSha256;
      const problems = [...r.problems, ...(r.archiveSha256 !== stored.archiveSha256 ? ['the archive does not match its recorded SHA-256'] : [])];
      return { info: { ...infoOf(stored), stateKeys: BigInt(r.keys) }, ok, problems };
    }),
  };
  return {
    service,
    close() {
      clients.close();
    },
  };
}

export interface TaskApi {
  readonly queue: TaskQueue;
  /** snapshotPath: where snapshot tasks write (<snapshot-dir>/<db-name>.snapshot). */
  readonly snapshotPath: string;
}

export function createTaskService(queue: TaskQueue): TaskServiceServer {
  return {
    getTask: unary(async (call) => {
      try {
        return { task: taskToPb(queue.get(Number(call.request.uid)), mayKnowPlaces(call.metadata)) };
      } catch (err) {
        throw taskError(err);
      }
    }),
    listTasks: unary(async (call) => {
      const r = call.request;
      try {
        const places = mayKnowPlaces(call.metadata);
        const page = queue.list(filterOf(r.filter), r.limit === 0 ? 20 : r.limit, r.from === undefined ? null : Number(r.from), r.reverse);
        return {
          results: page.results.map((t) => taskToPb(t, places)),
          total: BigInt(page.total),
          limit: page.limit,
          ...(page.from !== null ? { from: BigInt(page.from) } : {}),
          ...(page.next !== null ? { next: BigInt(page.next) } : {}),
        };
      } catch (err) {
        throw taskError(err);
      }
    }),
    cancelTasks: unary(async (call) => {
      try {
        const f = filterOf(call.request.filter);
        return { task: taskToPb(await queue.cancel(f, JSON.stringify(f)), mayKnowPlaces(call.metadata)) };
      } catch (err) {
        throw taskError(err);
      }
    }),
  };
}

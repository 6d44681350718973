/**
 * `snapcoord snapshot save|restore|inspect|ls`: the operator's snapshot
 * commands (after etcdctl snapshot, nomad operator snapshot, consul snapshot).
 *
 * - save FILE: asks the endpoint's Status (unreachable, or no leader
 *   without --stale: fail before creating anything; GetSnapshot starts
 *   alongside it and is cancelled then), then streams GetSnapshot into
 *   FILE.tmp (0600) with backpressure,
 *   hashing on the way; checks size and SHA-256 against the node's `info`,
 *   fsyncs, then links/renames to FILE and fsyncs the directory. An existing
 *   FILE is never overwritten. A download cut mid-way is resumed (pinned to
 *   the same archive, from the last byte written; --retries). On any failure
 *   (Ctrl-C included) FILE.tmp is removed.
 * - restore FILE: uploads while inspectArchive checks the file (every hash,
 *   every record) and ends the upload only once that check passed: a bad
 *   file's upload is canceled, and nothing changes. The upload is hashed as
 *   it streams and is canceled, not completed, if the file changed since it
 *   was checked.
 *   FILE may be s3://bucket/key: downloaded first, refused when its bytes
 *   do not match the SHA-256 stored with the object.
 * - inspect FILE: describes a local archive and checks every hash (exit 1 when
 *   one does not check out).
 * - ls: the snapshots the endpoint node keeps; --destination s3://… lists a bucket.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, lstat, mkdtemp, open, rename, rm, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as grpc from '@grpc/grpc-js';
import type { Command } from 'commander';
import { CLIENT_ID_METADATA_KEY, REQUEST_ID_METADATA_KEY, RequestIds } from '../client/request-ids.js';
import { ClusterClient } from '../client/cluster-client.js';
import { SnapshotClient } from '../client/snapshot-client.js';
import { Role } from '../gen/snapcoord/v1/cluster.js';
import type { GetSnapshotResponse, RestoreSnapshotRequest, RestoreSnapshotResponse, SnapshotInfo } from '../gen/snapcoord/v1/snapshot.js';
import type { ArchiveMeta, InspectResult } from '../snapshot/archive.js';
import { fsyncDir } from '../snapshot/file-sink.js';
import { CliError, EXIT_CONFIG } from './cli-error.js';
import { callError, cliDial, clientOptions, endpointOf, formatBytes, jsonOut, oneLine, positiveInt, table, visible, withClient, type ClientOpts } from './client-options.js';
import { s3CredentialsFileExposure } from './key-file.js';
import { Progress } from './progress.js';
import type * as S3 from '../ops/s3.js';
import type { S3Destination, S3Settings } from '../ops/s3.js';

/** s3Module: the S3 client, loaded only by the commands that read a destination (a save never does). */
const s3Module = (): Promise<typeof S3> => import('../ops/s3.js');

/** STATUS_DEADLINE_MS: the deadline of the Status call `save` starts with. */
const STATUS_DEADLINE_MS = 5_000;

/** EXIT_INTERRUPTED: the exit code after Ctrl-C (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/** TRANSFER_CHUNK_BYTES: the size of each uploaded piece (the node reads 1 MiB pieces too). */
const TRANSFER_CHUNK_BYTES = 1024 * 1024;

/** SAVE_FLOW_CONTROL_WINDOW_BYTES: the HTTP/2 receive window of the CLI's snapshot channel (bulk downloads). */
const SAVE_FLOW_CONTROL_WINDOW_BYTES = 16 << 20;

/** snapshotClient: a SnapshotService client with a large receive window (bulk downloads). */
export function snapshotClient(endpoint: string): SnapshotClient {
  const dial = cliDial();
  return new SnapshotClient(endpoint, { ...dial, channelOptions: { ...dial.channelOptions, 'grpc-node.flow_control_window': SAVE_FLOW_CONTROL_WINDOW_BYTES } });
}

/** infoJson: a SnapshotInfo as plain JSON (uint64 as numbers). */
export function infoJson(i: SnapshotInfo): Record<string, string | number> {
  return {
    id: i.id,
    index: Number(i.index),
    term: Number(i.term),
    sizeBytes: Number(i.sizeBytes),
    digest: i.digest,
    createdAt: i.createdAt,
    stateBytes: Number(i.stateBytes),
    stateKeys: Number(i.stateKeys),
    snapcoordVersion: i.snapcoordVersion,
    formatVersion: i.formatVersion,
  };
}

function fsMessage(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code !== undefined ? `${e.code}: ${e.message.replace(/^[A-Z]+: /, '')}` : String((err as Error).message ?? err);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** writeAt writes every byte of `buf` at `position`. */
async function writeAt(handle: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await handle.write(buf, off, buf.length - off, position + off);
    off += bytesWritten;
  }
}

/**
 * SAVE_WRITEBACK_BYTES: `snapshot save` starts an fdatasync of FILE.tmp in
 * the background each time this many bytes have landed since the last one
 * began (one at a time), so the disk writes the archive while the rest
 * arrives and the final fsync has only the tail left (as ArchiveSink's
 * writeback on a node, at a smaller step: a save is often a few MiB). 8.3
 * MiB: the final fsync took ~5 ms alone on this machine's disk.
 */
const SAVE_WRITEBACK_BYTES = 2 * 1024 * 1024;

/**
 * Writeback: the background fdatasyncs of a save's FILE.tmp (see
 * SAVE_WRITEBACK_BYTES). settled() waits for the one in flight and rejects
 * with its error, if any: the save then fails as after a failed write.
 */
class Writeback {
  #since = 0;
  #inFlight: Promise<void> | null = null;
  #error: unknown = null;

  constructor(private readonly handle: FileHandle) {}

  /** landed counts `n` bytes written and starts a datasync once SAVE_WRITEBACK_BYTES landed since the last began. */
  landed(n: number): void {
    this.#since += n;
    if (this.#since < SAVE_WRITEBACK_BYTES || this.#inFlight !== null) return;
    this.#since = 0;
    this.#inFlight = this.handle.datasync().then(
      () => {
        this.#inFlight = null;
      },
      (err: unknown) => {
        this.#inFlight = null;
        this.#error ??= err;
      },
    );
  }

  async settled(): Promise<void> {
    if (this.#inFlight !== null) await this.#inFlight;
    if (this.#error !== null) throw this.#error;
  }
}

/**
 * publish makes `tmp` visible as `path` without ever replacing an existing
 * file: a hard link fails with EEXIST atomically; where links are not
 * supported it falls back to check-then-rename.
 */
async function publish(tmp: string, path: string, shown: string): Promise<void> {
  try {
    await link(tmp, path);
    await unlink(tmp);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`${shown} appeared while the snapshot was being saved; refusing to overwrite it`);
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EMLINK', 'ENOSYS'].includes(code ?? '')) throw err;
  }
  if (await exists(path)) throw new CliError(`${shown} appeared while the snapshot was being saved; refusing to overwrite it`);
  await rename(tmp, path);
}

/**
 * checkCanServe fails fast, before any file is created, when the endpoint is
 * unreachable or (without --stale) knows no leader to answer the download.
 */
async function checkCanServe(endpoint: string, stale: boolean, channel: ReturnType<grpc.Client['getChannel']>): Promise<void> {
  // On the download's own connection (one TLS handshake for both); closed with it.
  const c = new ClusterClient(endpoint, cliDial(), channel);
  try {
    const st = await c.status({ deadlineMs: STATUS_DEADLINE_MS });
    if (!stale && st.role !== Role.ROLE_LEADER && st.leaderId === '') {
      throw new CliError(`${st.id} knows no leader (an election may be in progress); retry, or give --stale to save ${st.id}'s own state`);
    }
  } catch (err) {
    throw callError(err, endpoint);
  }
}

/**
 * HeldCall: a GetSnapshot call started before anything reads it. grpc-js
 * ends a failed call's stream and emits its error once, to whoever listens
 * then (with nobody listening, the process would die of it): `failure` keeps
 * that error for the reader.
 */
interface HeldCall {
  readonly call: grpc.ClientReadableStream<GetSnapshotResponse>;
  failure: unknown;
}

function holdCall(call: grpc.ClientReadableStream<GetSnapshotResponse>): HeldCall {
  const held: HeldCall = { call, failure: undefined };
  call.on('error', (err: unknown) => {
    held.failure ??= err;
  });
  return held;
}

export interface SaveOptions {
  readonly endpoint: string;
  readonly stale: boolean;
  /** timeoutMs: deadline of the whole download, 0 for none. */
  readonly timeoutMs: number;
  /**
   * idleTimeoutMs: give up when no archive byte comes for this long (0:
   * never); before the first message, while the node builds the snapshot,
   * ten times as long. Guards against a node that goes quiet without ending
   * the call, or sends only messages carrying no byte.
   */
  readonly idleTimeoutMs: number;
  readonly progress: boolean;
  /** resumeRetries: how many times a cut download is resumed from where it stopped (default SAVE_RESUME_RETRIES_DEFAULT). */
  readonly resumeRetries?: number;
  /** resumeBackoffMs: the wait before each resume (default 500). */
  readonly resumeBackoffMs?: number;
}

/** DEFAULT_IDLE_TIMEOUT_MS: `snapshot save --idle-timeout-ms` by default. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** SAVE_RESUME_RETRIES_DEFAULT: `snapshot save --retries` by default. */
export const SAVE_RESUME_RETRIES_DEFAULT = 5;

/** SaveResult: what `snapshot save` wrote. */
export interface SaveResult {
  readonly file: string;
  readonly info: SnapshotInfo;
  /** resumes: how many times the download was resumed after a cut. */
  readonly resumes: number;
}

/**
 * isCut: the call failed because the connection went away (UNAVAILABLE, or
 * the HTTP/2 stream was reset), not because the node refused or failed:
 * such a download is resumed, pinned to the same archive, from the last byte
 * written.
 */
export function isCut(err: unknown): boolean {
  const e = err as { code?: unknown; details?: unknown };
  if (e.code === grpc.status.UNAVAILABLE) return true;
  return e.code === grpc.status.INTERNAL && typeof e.details === 'string' && /RST_STREAM|Connection (dropped|closed)|ECONNRESET|socket hang up/i.test(e.details);
}

/**
 * saveSnapshot downloads a snapshot from the endpoint into `file` (see the
 * file comment). A download cut mid-way (isCut) is resumed up to
 * resumeRetries times: GetSnapshot again pinned to the archive's id from the
 * byte after the last one written (every piece written at its offset), and
 * the SHA-256 of the whole file is checked at the end. Errors: CliError
 * (exit 1; 130 when interrupted), with `file`.tmp removed.
 */
export async function saveSnapshot(file: string, opts: SaveOptions): Promise<SaveResult> {
  const path = resolve(file);
  const tmp = `${path}.tmp`;
  if (await exists(path)) throw new CliError(`${file} already exists; refusing to overwrite it (choose another name or remove it)`);
  const client = snapshotClient(opts.endpoint);
  // The monotonic clock: on the wall clock a step back gave a resumed call the step's length more.
  const deadline = opts.timeoutMs > 0 ? performance.now() + opts.timeoutMs : 0;
  const callOpts = (): { deadlineMs?: number } => (deadline > 0 ? { deadlineMs: Math.max(1, Math.ceil(deadline - performance.now())) } : {});
  // The download starts with the Status check, on the same connection (one round trip for both): the node finds
  // (or makes) the snapshot while the check's answer comes back, and the first messages wait (grpc-js's stream
  // buffer, then HTTP/2 flow control) until FILE.tmp exists. A failed check cancels it before any file is made.
  let held: HeldCall | null = null;
  let handle: FileHandle;
  try {
    held = holdCall(client.getSnapshot(opts.stale, callOpts()));
    await checkCanServe(opts.endpoint, opts.stale, client.raw.getChannel());
    handle = await open(tmp, 'wx', 0o600).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new CliError(`${file}.tmp exists: another save is writing it, or one was killed; remove it and retry`);
      }
      throw new CliError(`cannot create ${file}.tmp: ${fsMessage(err)}`);
    });
  } catch (err) {
    held?.call.cancel();
    client.close();
    throw err;
  }

  const retries = opts.resumeRetries ?? SAVE_RESUME_RETRIES_DEFAULT;
  let call: grpc.ClientReadableStream<GetSnapshotResponse> | undefined;
  let interrupted = false;
  const onSigint = (): void => {
    interrupted = true;
    call?.cancel();
  };
  process.once('SIGINT', onSigint);
  let idleTimer: NodeJS.Timeout | undefined;
  let idleExpired = false;
  const touch = (first = false): void => {
    if (opts.idleTimeoutMs <= 0) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(
      () => {
        idleExpired = true;
        call?.cancel();
      },
      first ? opts.idleTimeoutMs * 10 : opts.idleTimeoutMs,
    );
  };

  let info: SnapshotInfo | undefined;
  let progress: Progress | undefined;
  /** bytes: archive bytes written to FILE.tmp (and hashed), in order. */
  let bytes = 0;
  let resumes = 0;
  const hash = createHash('sha256');
  const writeback = new Writeback(handle);
  /** lastWrite: the newest piece's write to FILE.tmp (hashed already). */
  let lastWrite: Promise<void> = Promise.resolve();
  let handleOpen = true;
  try {
    for (;;) {
      const resumeAt = bytes;
      const pin = info === undefined ? {} : { id: info.id, offset: BigInt(resumeAt) };
      const first = held;
      held = null;
      const c = first?.call ?? client.getSnapshot(opts.stale, callOpts(), pin);
      call = c;
      touch(true);
      let sawInfo = false;
      /** received: bytes this call has sent so far (from resumeAt). */
      let received = 0;
      const extract = new Transform({
        writableObjectMode: true,
        readableObjectMode: false,
        transform(msg: GetSnapshotResponse, _enc: BufferEncoding, cb: TransformCallback): void {
          // Only progress resets the idle timer: the info, or archive bytes. A message carrying no byte (empty, or
          // empty data) does not, else a server sending nothing but those held the save for as long as it liked.
          if (msg.info !== undefined || (msg.data !== undefined && msg.data.byteLength > 0)) touch();
          if (msg.info !== undefined) {
            if (sawInfo) return cb(new CliError('the node sent the snapshot info twice'));
            sawInfo = true;
            if (info === undefined) {
              info = msg.info;
              progress = new Progress({ label: 'downloading', totalBytes: Number(info.sizeBytes), enabled: opts.progress });
              // Refused at once when it cannot fit (not after gigabytes written, with ENOSPC): nothing is saved.
              const size = Number(info.sizeBytes);
              return void statfs(dirname(tmp)).then(
                (st) => {
                  const free = st.bavail * st.bsize;
                  if (size > free) cb(new CliError(`the archive is ${formatBytes(size)} (${size} bytes) but ${dirname(path)} has ${formatBytes(free)} free; nothing saved`));
                  else cb();
                },
                () => cb(), // no answer: the writes themselves will say
              );
            } else if (msg.info.id !== info.id || msg.info.digest !== info.digest) {
              return cb(new CliError(`resuming: the node answered with snapshot ${msg.info.id}, not ${info.id}; nothing saved`));
            }
            return cb();
          }
          if (msg.data === undefined) return cb();
          if (info === undefined || !sawInfo) return cb(new CliError('the node sent snapshot data before its info'));
          const chunk = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
          received += chunk.length;
          if (resumeAt + received > Number(info.sizeBytes)) return cb(new CliError(`the node sent more than the ${info.sizeBytes} bytes it announced`));
          cb(null, chunk);
        },
      });
      const sink = new Writable({
        highWaterMark: 4 * TRANSFER_CHUNK_BYTES,
        write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
          const written = writeAt(handle, chunk, bytes);
          lastWrite = written;
          // Hashed while the thread pool writes it (a failed write fails the save, a resume waits for the write).
          hash.update(chunk);
          written.then(() => {
            // Counted once on disk: a resume starts after the last byte written.
            bytes += chunk.length;
            progress?.update(bytes);
            writeback.landed(chunk.length);
            cb();
          }, cb);
        },
      });
      try {
        await pipeline(c, extract, sink);
        // A held call that failed before it was read ended its stream as if complete: its error is kept.
        if (first !== null && first.failure !== undefined) throw first.failure;
        if (info === undefined) throw new CliError('the node ended the download without sending the snapshot info');
        if (bytes === Number(info.sizeBytes)) break;
        if (resumeAt === 0 && resumes === 0) throw new CliError(`the download ended after ${bytes} of ${info.sizeBytes} bytes`);
        throw Object.assign(new Error(`the download ended after ${bytes} of ${info.sizeBytes} bytes`), { code: grpc.status.UNAVAILABLE, details: 'ended early' });
      } catch (err) {
        clearTimeout(idleTimer);
        // A piece hashed while its write was under way when the call failed: resumed only once it landed (or failed).
        const writeError = await lastWrite.then(
          () => null,
          (e: unknown) => e,
        );
        if (writeError !== null) throw writeError;
        // A cut before the snapshot's info was read (the held first call can fail while the check runs, the node
        // streaming a current snapshot at once) wrote nothing: it is retried from the start, unpinned.
        if (interrupted || idleExpired || !isCut(err) || resumes >= retries) throw err;
        if (deadline > 0 && performance.now() >= deadline) throw err;
        resumes++;
        progress?.clear();
        if (opts.progress) {
          const at = info === undefined ? 'before its first byte' : `after ${bytes} of ${info.sizeBytes} bytes`;
          process.stderr.write(`snapcoord: download cut ${at} (${oneLine((err as { details?: string }).details ?? (err as Error).message)}); resuming (${resumes}/${retries})\n`);
        }
        await new Promise((r) => setTimeout(r, opts.resumeBackoffMs ?? 500));
        if (interrupted) throw err;
      }
    }
    if (info === undefined) throw new CliError('the node ended the download without sending the snapshot info');
    const digest = hash.digest('hex');
    if (digest !== info.digest.toLowerCase()) {
      throw new CliError(`the downloaded archive's SHA-256 ${digest} does not match the node's ${info.digest}; nothing saved`);
    }
    await writeback.settled();
    await handle.sync();
    handleOpen = false;
    await handle.close();
    await publish(tmp, path, file);
    await fsyncDir(dirname(path)).catch(() => undefined);
    progress?.finish();
    return { file: path, info, resumes };
  } catch (err) {
    progress?.clear();
    call?.cancel();
    await writeback.settled().catch(() => undefined);
    if (handleOpen) await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    if (interrupted) throw new CliError('interrupted; nothing saved', EXIT_INTERRUPTED);
    if (idleExpired) {
      const ms = info === undefined ? opts.idleTimeoutMs * 10 : opts.idleTimeoutMs;
      throw new CliError(`the node sent nothing for ${ms} ms after ${bytes} bytes; gave up, nothing saved`);
    }
    if (err instanceof CliError) throw err;
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number') {
      if (code === grpc.status.NOT_FOUND && resumes > 0) throw new CliError(`resuming: ${oneLine((err as { details?: string }).details ?? 'the snapshot is gone')}; nothing saved`);
      if (resumes > 0) {
        const e = callError(err, opts.endpoint);
        throw new CliError(`${e.message} (after ${resumes} resume(s), ${bytes} bytes); nothing saved`, e.exitCode);
      }
      throw callError(err, opts.endpoint);
    }
    throw new CliError(`cannot write ${basename(file)}.tmp: ${fsMessage(err)}`);
  } finally {
    clearTimeout(idleTimer);
    process.off('SIGINT', onSigint);
    client.close();
  }
}

/** RESTORE_RETRIES_DEFAULT: uploads retried (with the same request id) after UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED. */
export const RESTORE_RETRIES_DEFAULT = 2;

export interface RestoreOptions {
  readonly endpoint: string;
  readonly timeoutMs: number;
  readonly progress: boolean;
  /** retries: see RESTORE_RETRIES_DEFAULT. */
  readonly retries?: number;
}

export interface RestoreResult {
  readonly file: string;
  readonly inspected: InspectResult;
  readonly response: RestoreSnapshotResponse;
}

/** inspectFile runs inspectArchive on `file`; an unreadable file is a CliError. */
export async function inspectFile(file: string): Promise<InspectResult> {
  // Loaded here, not at start-up: `snapshot save` needs neither the archive reader nor the state machine's key rules.
  const [{ inspectArchive }, { RESERVED_KEY_PREFIX, SESSION_KEY_PREFIX }] = await Promise.all([import('../snapshot/archive.js'), import('../fsm/sessions.js')]);
  try {
    return await inspectArchive(resolve(file), { reservedKeyPrefix: RESERVED_KEY_PREFIX, sessionKeyPrefix: SESSION_KEY_PREFIX });
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${fsMessage(err)}`);
  }
}

/**
 * restoreSnapshot uploads `file` with RestoreSnapshot while it checks it
 * completely (inspectArchive: every hash, every record), and ends the upload
 * only once the check has passed: the node stores an upload and proposes the
 * restore only after the upload has ended (it checks every hash and record
 * itself as the bytes arrive), so a bad file is refused, its upload canceled,
 * and nothing changes on the cluster. The file's check and the node's run
 * side by side instead of one after the other (issue 15: a restore of 1 GB
 * spent ~3 s in the CLI's check before the first byte was sent). A file that
 * changes during the upload cancels the call too (the bytes sent must be the
 * ones checked).
 */
export async function restoreSnapshot(file: string, opts: RestoreOptions): Promise<RestoreResult> {
  const path = resolve(file);
  const checking = inspectFile(file);
  checking.catch(() => undefined); // awaited before the upload ends, or when it fails
  const refused = (r: InspectResult): CliError =>
    new CliError(`${file} is not a valid snapshot archive; the upload was canceled and nothing changed: ${r.problems.join('; ')}`);
  /** badFile: the check's refusal once it has failed (null while it runs or when it passed). */
  let badFile: CliError | null = null;
  void checking.then(
    (r) => {
      if (!r.ok || r.meta === null) badFile = refused(r);
    },
    (err: unknown) => {
      badFile = err instanceof CliError ? err : new CliError(`cannot read ${file}: ${fsMessage(err)}`);
    },
  );
  /** checked: the check's result once it has passed; a bad or unreadable file throws its CliError. */
  const checked = async (): Promise<InspectResult> => {
    const r = await checking;
    if (!r.ok || r.meta === null) throw refused(r);
    return r;
  };
  let sizeBytes: number;
  try {
    sizeBytes = (await stat(path)).size;
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${fsMessage(err)}`);
  }
  // Loaded here: only a restore uploads.
  const [{ EarlyAnswerError, uploadArchive }, { retryWrite }] = await Promise.all([import('../client/archive-upload.js'), import('../client/retry-write.js')]);
  // One request id for every attempt: a retry of a restore that already took effect is answered
  // with the first one's index and does not wipe the writes made since (issue 14, item 8).
  const id = new RequestIds(`cli-${randomUUID()}`).next();
  const client = snapshotClient(opts.endpoint);
  let interrupted = false;
  let call: grpc.ClientWritableStream<RestoreSnapshotRequest> | undefined;
  const onSigint = (): void => {
    interrupted = true;
    call?.cancel();
  };
  process.once('SIGINT', onSigint);
  const progress = new Progress({ label: 'uploading', totalBytes: sizeBytes, enabled: opts.progress });
  const attempt = async (): Promise<RestoreSnapshotResponse> => {
    const metadata = new grpc.Metadata();
    metadata.set(CLIENT_ID_METADATA_KEY, id.clientId);
    metadata.set(REQUEST_ID_METADATA_KEY, id.requestId.toString());
    const hash = createHash('sha256');
    let sent = 0;
    async function* pieces(): AsyncGenerator<Buffer> {
      for await (const chunk of createReadStream(path, { highWaterMark: TRANSFER_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
        if (badFile !== null) throw badFile; // refused by the check already: the upload stops here
        hash.update(chunk);
        sent += chunk.length;
        yield chunk;
        progress.update(sent);
      }
    }
    try {
      return await uploadArchive(client, pieces(), {
        metadata,
        ...(opts.timeoutMs > 0 ? { deadlineMs: opts.timeoutMs } : {}),
        onCall: (c) => {
          call = c;
        },
        beforeEnd: async () => {
          const inspected = await checked();
          if (sent !== inspected.archiveBytes || hash.digest('hex') !== inspected.archiveSha256) {
            throw new CliError(`${file} changed after it was checked; the restore was canceled and nothing changed`);
          }
        },
      });
    } catch (err) {
      // The node may refuse a bad file before the check here has ended: the check's own words, not the node's.
      if (!(err instanceof CliError)) await checked();
      if (err instanceof EarlyAnswerError) throw new CliError(err.message);
      // A full disk or an archive over the node's limits will not pass on a second upload.
      if ((err as { code?: unknown }).code === grpc.status.RESOURCE_EXHAUSTED) throw callError(err, opts.endpoint);
      throw err;
    }
  };
  try {
    const res = await retryWrite(attempt, {
      attempts: 1 + (opts.retries ?? RESTORE_RETRIES_DEFAULT),
      backoffMs: 500,
      onRetry: (err, n) => {
        if (interrupted) throw new CliError('interrupted; the restore was canceled before it completed', EXIT_INTERRUPTED);
        progress.clear();
        process.stderr.write(`snapcoord: restore attempt ${n} failed (${grpc.status[err.code] ?? err.code}: ${oneLine(err.details)}); retrying with the same request id\n`);
      },
    });
    progress.finish();
    return { file: path, inspected: await checked(), response: res };
  } catch (err) {
    progress.clear();
    call?.cancel();
    if (interrupted) throw new CliError('interrupted; the restore was canceled before it completed', EXIT_INTERRUPTED);
    if (err instanceof CliError) throw err;
    if (typeof (err as { code?: unknown }).code === 'number') throw callError(err, opts.endpoint);
    throw new CliError(`cannot read ${file}: ${fsMessage(err)}`);
  } finally {
    process.off('SIGINT', onSigint);
    client.close();
  }
}

function membershipText(m: ArchiveMeta['membership']): string {
  const who = (ids: readonly string[]): string => (ids.length === 0 ? 'none' : ids.map((id) => `${id} (${m.addresses[id] ?? '?'})`).join(', '));
  return `voters ${who(m.voters)}; learners ${who(m.learners)}`;
}

/** inspectJson: the JSON of `snapshot inspect --json`. */
export function inspectJson(file: string, r: InspectResult): object {
  const m = r.meta;
  return {
    file,
    ok: r.ok,
    problems: r.problems,
    sizeBytes: r.archiveBytes,
    digest: r.archiveSha256,
    id: m?.id ?? null,
    index: m?.index ?? null,
    term: m?.term ?? null,
    formatVersion: m?.formatVersion ?? null,
    createdAt: m?.createdAt ?? null,
    snapcoordVersion: m?.snapcoordVersion ?? null,
    stateBytes: m?.stateBytes ?? null,
    stateKeys: m?.stateKeys ?? null,
    keys: r.keys,
    reservedRecords: r.reservedRecords,
    sessionRecords: r.sessionRecords,
    membership: m?.membership ?? null,
  };
}

function inspectText(file: string, r: InspectResult): string {
  const m = r.meta;
  const rows: [string, string][] = [
    ['File', file],
    ['ID', m?.id ?? '?'],
    ['Size', `${formatBytes(r.archiveBytes)} (${r.archiveBytes} bytes)`],
    ['SHA-256', r.archiveSha256],
    ['Index', m !== null ? String(m.index) : '?'],
    ['Term', m !== null ? String(m.term) : '?'],
    ['Format version', m !== null ? String(m.formatVersion) : '?'],
    ['Created', m?.createdAt ?? '?'],
    ['snapcoord version', m?.snapcoordVersion ?? '?'],
    ['Keys', m !== null ? String(r.keys) : '?'],
    ['State size', m !== null ? `${formatBytes(m.stateBytes)} (${m.stateBytes} bytes)` : '?'],
    ['Membership', m !== null ? membershipText(m.membership) : '?'],
    ['Hashes', r.ok ? 'ok (meta.json, state.bin and the key count check out)' : 'FAILED'],
    ...r.problems.map((p): [string, string] => ['Problem', p]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  // The file's own text (ids, addresses, versions: meta.json refuses C0 controls, not C1 ones) is shown, never obeyed.
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${visible(v)}`).join('\n');
}

interface TransferOpts extends ClientOpts {
  json?: boolean;
  progress?: boolean;
}

/** S3Opts: the --s3-* options of the commands that read an S3 destination. */
interface S3Opts {
  s3Endpoint?: string;
  s3Region?: string;
  s3PathStyle?: boolean;
  s3CredentialsFile?: string;
  s3TimeoutMs?: string;
  s3DownloadTimeoutMs?: string;
}

/** s3Options adds --s3-endpoint, --s3-region, --s3-path-style, --s3-credentials-file, --s3-timeout-ms and --s3-download-timeout-ms (each with its SNAPCOORD_S3_* env twin). */
function s3Options(cmd: Command): Command {
  return cmd
    .option('--s3-endpoint <url>', 'endpoint of an S3-compatible store (env SNAPCOORD_S3_ENDPOINT or AWS_ENDPOINT_URL_S3; default AWS)')
    .option('--s3-region <region>', 'S3 region (env SNAPCOORD_S3_REGION or AWS_REGION; default us-east-1)')
    .option('--s3-path-style', 'address buckets as http://host/bucket (env SNAPCOORD_S3_PATH_STYLE=true)')
    .option('--s3-credentials-file <file>', 'S3 access key file (env SNAPCOORD_S3_CREDENTIALS_FILE; default AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, roles)')
    .option('--s3-timeout-ms <ms>', 'an S3 request silent this long fails (and is retried); also the connect timeout; 1000..600000 (env SNAPCOORD_S3_TIMEOUT_MS; default 60000)')
    .option('--s3-download-timeout-ms <ms>', 'an S3 download not finished within this long fails, nothing kept; 1000..604800000 (env SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS; default 3600000, an hour)');
}

async function s3SettingsOf(o: S3Opts): Promise<S3Settings> {
  const s3 = await s3Module();
  try {
    const settings = s3.s3SettingsFrom({
      ...(o.s3Endpoint !== undefined ? { endpoint: o.s3Endpoint } : {}),
      ...(o.s3Region !== undefined ? { region: o.s3Region } : {}),
      ...(o.s3PathStyle === true ? { forcePathStyle: true } : {}),
      ...(o.s3CredentialsFile !== undefined ? { credentialsFile: resolve(o.s3CredentialsFile) } : {}),
      ...(o.s3TimeoutMs !== undefined ? { idleTimeoutMs: s3.parseS3TimeoutMs(o.s3TimeoutMs) } : {}),
      ...(o.s3DownloadTimeoutMs !== undefined ? { downloadTimeoutMs: s3.parseS3DownloadTimeoutMs(o.s3DownloadTimeoutMs) } : {}),
    });
    // A credentials file others may read is warned about, as API key files and TLS keys are: not refused.
    const exposed = settings.credentialsFile !== '' ? s3CredentialsFileExposure(settings.credentialsFile) : null;
    if (exposed !== null) process.stderr.write(`snapcoord: warning: ${exposed}\n`);
    return settings;
  } catch (err) {
    throw s3CliError(err, s3);
  }
}

/** s3CliError: an S3Error as a CliError (exit 1), its message as is (it never holds a credential). */
function s3CliError(err: unknown, { S3Error }: typeof S3): unknown {
  return err instanceof S3Error ? new CliError(err.message) : err;
}

/**
 * fetchFromS3 downloads `url` into a private temp directory, checking its
 * bytes against the SHA-256 stored with the object (a corrupted or
 * unverifiable object is refused: CliError), and resolves with the file and
 * a cleanup that removes it.
 */
export async function fetchFromS3(url: string, settings: S3Settings, progress: boolean): Promise<{ file: string; cleanup: () => Promise<void> }> {
  const s3 = await s3Module();
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-s3-'));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  // Ctrl-C stops the download and removes the temp dir (Node's default exit left the partial archive in it).
  const interrupt = new AbortController();
  const onSigint = (): void => interrupt.abort();
  process.once('SIGINT', onSigint);
  let d: S3Destination | null = null;
  try {
    d = await s3.S3Destination.open(url, settings);
    const head = await d.head(d.prefix);
    const bar = new Progress({ label: 'downloading', totalBytes: head.sizeBytes, enabled: progress });
    const file = join(dir, 'archive.snapshot');
    try {
      await d.downloadToFile(d.prefix, file, (n) => bar.update(n), interrupt.signal);
      bar.finish();
    } catch (err) {
      bar.clear();
      throw err;
    }
    if (interrupt.signal.aborted) throw new CliError('interrupted; nothing restored', EXIT_INTERRUPTED);
    return { file, cleanup };
  } catch (err) {
    await cleanup();
    if (interrupt.signal.aborted) throw new CliError('interrupted; nothing restored', EXIT_INTERRUPTED);
    throw s3CliError(err, s3);
  } finally {
    process.off('SIGINT', onSigint);
    d?.close();
  }
}

/**
 * TRANSFER_TIMEOUT_MS_DEFAULT: the deadline of a whole `snapshot save` or
 * `snapshot restore` without --timeout-ms (an hour: a node that sends or takes
 * a byte now and then no longer holds the CLI for ever); TRANSFER_TIMEOUT_MS_MAX: the most --timeout-ms takes (a week).
 */
export const TRANSFER_TIMEOUT_MS_DEFAULT = 3_600_000;
export const TRANSFER_TIMEOUT_MS_MAX = 604_800_000;

function transferTimeout(opts: ClientOpts): number {
  return opts.timeoutMs === undefined ? TRANSFER_TIMEOUT_MS_DEFAULT : positiveInt('timeout-ms', opts.timeoutMs, 1, TRANSFER_TIMEOUT_MS_MAX);
}

/** listDestination prints the archives under an s3:// destination, newest first, with their stored SHA-256 and index. */
async function listDestination(url: string, settings: S3Settings, json: boolean): Promise<void> {
  const s3 = await s3Module();
  let d: S3Destination | null = null;
  try {
    if (!s3.isS3Url(url)) throw new CliError(`--destination: ${JSON.stringify(url.slice(0, 200))} is not an s3://bucket/prefix URL`, EXIT_CONFIG);
    d = await s3.S3Destination.open(url, settings);
    const dest = d;
    // The newest 1,000 (each is a HEAD request): list holds no more than that while it walks the prefix.
    const rows = await dest.describe(await dest.list({ keptMax: 1000 }));
    if (json) {
      jsonOut(
        rows.map((o) => ({
          url: o.url,
          key: o.key,
          sizeBytes: o.sizeBytes,
          lastModified: o.lastModified,
          createdAt: new Date(o.createdAtMs).toISOString(),
          index: o.index,
          digest: o.sha256,
          ...(o.unverifiable !== undefined ? { unverifiable: o.unverifiable } : {}),
        })),
      );
      return;
    }
    if (rows.length === 0) {
      process.stderr.write(`nothing under ${url}\n`);
      return;
    }
    process.stdout.write(
      `${table(
        ['URL', 'INDEX', 'SIZE', 'CREATED', 'SHA256'],
        rows.map((o) => [o.url, o.index > 0 ? String(o.index) : '-', formatBytes(o.sizeBytes), new Date(o.createdAtMs).toISOString(), o.sha256 !== '' ? o.sha256.slice(0, 16) : '(unverifiable)']),
      )}\n`,
    );
    // Why each unverifiable one is (a head refused for it, no recorded SHA-256): the listing itself stands.
    for (const o of rows) if (o.unverifiable !== undefined) process.stderr.write(`unverifiable: ${visible(o.unverifiable)}\n`);
  } catch (err) {
    throw s3CliError(err, s3);
  } finally {
    d?.close();
  }
}

/** addSnapshotCommands adds `snapshot save|restore|inspect|ls` to `program`. */
export function addSnapshotCommands(program: Command): void {
  const snapshot = program.command('snapshot').description('save, restore, inspect and list snapshots');

  clientOptions(
    snapshot
      .command('save')
      .argument('<file>', 'where to write the archive (must not exist)')
      .option('--stale', 'let the endpoint node answer from its own state, without the leader')
      .option('--json', 'print the result as one JSON object')
      .option('--no-progress', 'print no progress')
      .option('--idle-timeout-ms <ms>', `give up when the node sends nothing for this long mid-download, 0 for never (default ${DEFAULT_IDLE_TIMEOUT_MS})`)
      .option('--retries <n>', `resume a download cut mid-way (connection lost) up to N times, from the last byte written, pinned to the same archive (default ${SAVE_RESUME_RETRIES_DEFAULT})`)
      .description('download a point-in-time snapshot of the cluster into FILE'),
    `deadline of the whole download (default ${TRANSFER_TIMEOUT_MS_DEFAULT}, an hour)`,
  ).action(async (file: string, opts: TransferOpts & { stale?: boolean; idleTimeoutMs?: string; retries?: string }) => {
    const endpoint = endpointOf(opts);
    const idleTimeoutMs = opts.idleTimeoutMs === undefined ? DEFAULT_IDLE_TIMEOUT_MS : positiveInt('idle-timeout-ms', opts.idleTimeoutMs, 0);
    const resumeRetries = opts.retries === undefined ? SAVE_RESUME_RETRIES_DEFAULT : positiveInt('retries', opts.retries, 0);
    const r = await saveSnapshot(file, { endpoint, stale: opts.stale === true, timeoutMs: transferTimeout(opts), idleTimeoutMs, progress: opts.progress !== false, resumeRetries });
    if (opts.json === true) {
      jsonOut({ file: r.file, ...infoJson(r.info), resumes: r.resumes });
      return;
    }
    process.stdout.write(
      [
        `Snapshot saved to ${file}`,
        `  index   ${r.info.index}`,
        `  term    ${r.info.term}`,
        `  size    ${formatBytes(Number(r.info.sizeBytes))} (${r.info.sizeBytes} bytes)`,
        `  sha256  ${r.info.digest}`,
        ...(r.resumes > 0 ? [`  resumed ${r.resumes} time(s) after a cut; the whole SHA-256 checks out`] : []),
      ].join('\n') + '\n',
    );
  });

  clientOptions(
    s3Options(
      snapshot
        .command('restore')
        .argument('<file>', 'the archive to restore: a file, or s3://bucket/key (downloaded and checked against the SHA-256 stored with it first)')
        .option('--json', 'print the result as one JSON object')
        .option('--no-progress', 'print no progress')
        .description("replace the cluster's key-value state with FILE's (checked completely while it uploads; a bad file's upload is canceled)"),
    ),
    `deadline of the whole upload and restore (default ${TRANSFER_TIMEOUT_MS_DEFAULT}, an hour)`,
  ).action(async (file: string, opts: TransferOpts & S3Opts) => {
    const endpoint = endpointOf(opts);
    let local = file;
    let cleanup = async (): Promise<void> => undefined;
    if ((await s3Module()).isS3Url(file)) ({ file: local, cleanup } = await fetchFromS3(file, await s3SettingsOf(opts), opts.progress !== false));
    let r: RestoreResult;
    try {
      r = await restoreSnapshot(local, { endpoint, timeoutMs: transferTimeout(opts), progress: opts.progress !== false });
    } finally {
      await cleanup();
    }
    const a = r.response.archive;
    if (opts.json === true) {
      jsonOut({ file: r.file, restoredIndex: Number(r.response.index), archive: a !== undefined ? infoJson(a) : null });
      return;
    }
    const m = r.inspected.meta!;
    process.stdout.write(
      `Restored ${file} (snapshot ${m.id}: index ${m.index}, term ${m.term}, ${r.inspected.keys} keys) at log index ${r.response.index}\n`,
    );
  });

  snapshot
    .command('inspect')
    .argument('<file>', 'a snapshot archive')
    .option('--json', 'print one JSON object')
    .description('describe a snapshot archive and check every hash (exit 1 when one does not check out)')
    .action(async (file: string, opts: { json?: boolean }) => {
      const r = await inspectFile(file);
      process.stdout.write(`${opts.json === true ? JSON.stringify(inspectJson(file, r), null, 2) : inspectText(file, r)}\n`);
      if (!r.ok) throw new CliError(`${file} does not check out: ${r.problems.join('; ')}`);
    });

  clientOptions(
    s3Options(
      snapshot
        .command('ls')
        .option('--json', 'print a JSON array')
        .option('--destination <s3-url>', 'list the archives in s3://bucket/prefix instead (with the SHA-256 stored with each)')
        .description('list the snapshots the endpoint node keeps (or a destination holds), newest first'),
    ),
  ).action(async (opts: ClientOpts & S3Opts & { json?: boolean; destination?: string }) => {
    if (opts.destination !== undefined) {
      await listDestination(opts.destination, await s3SettingsOf(opts), opts.json === true);
      return;
    }
    const res = await withClient(opts, snapshotClient, async (c, deadlineMs) => (await c.listSnapshots({ deadlineMs })).snapshots);
    if (opts.json === true) {
      jsonOut(res.map(infoJson));
      return;
    }
    if (res.length === 0) {
      process.stderr.write('no snapshots on this node\n');
      return;
    }
    const rows = res.map((s) => [s.id, String(s.index), String(s.term), formatBytes(Number(s.sizeBytes)), String(s.stateKeys), s.createdAt, s.digest.slice(0, 16)]);
    process.stdout.write(`${table(['ID', 'INDEX', 'TERM', 'SIZE', 'KEYS', 'CREATED', 'SHA256'], rows)}\n`);
  });
}

/**
 * Nomad-style routes (operator snapshot), plain-text errors:
 *
 * - GET /v1/operator/snapshot[?stale] -> SnapshotService.GetSnapshot (stream):
 *   200 application/x-gzip with `Digest: sha-256=<base64>`, `X-Nomad-Index`,
 *   `X-Nomad-KnownLeader`, `X-Nomad-LastContact`; the body is piped from the
 *   gRPC stream with backpressure (grpc-js stops reading HTTP/2 while the HTTP
 *   response is full), never buffered whole. The bytes are hashed on the way:
 *   when they do not match the announced digest or size the response is cut
 *   (no final chunk), so a client never takes a bad archive for a whole one.
 * - PUT / POST /v1/operator/snapshot -> SnapshotService.RestoreSnapshot
 *   (client stream) from the raw body whatever its Content-Type, chunk by
 *   chunk, waiting for 'drain' when write() says so; at most restoreBytesMax
 *   bytes (413 beyond, counted while streaming). 200 with an empty text/plain
 *   body; a bad archive (INVALID_ARGUMENT) answers 400 with the node's message.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { GetSnapshotResponse, RestoreSnapshotResponse, SnapshotInfo } from '../gen/snapcoord/v1/snapshot.js';
import type { RouteContext, RouteSpec } from './route-spec.js';
import { TEXT_TYPE, sendGrpcError, sendNomadError } from './styles.js';

/** SNAPSHOT_PATH: Nomad's operator snapshot path. */
export const SNAPSHOT_PATH = '/v1/operator/snapshot';

/** DEFAULT_RESTORE_BYTES_MAX: the default cap of a restore body (64 GiB). */
export const DEFAULT_RESTORE_BYTES_MAX = 64 * 1024 ** 3;

type Query = Readonly<Record<string, unknown>>;

/** staleOf: `?stale`, `?stale=` and `?stale=true` ask for a stale read; `?stale=false` does not. */
export function staleOf(q: Query): boolean {
  const v = q['stale'];
  if (v === undefined) return false;
  const s = String(Array.isArray(v) ? v[0] : v).toLowerCase();
  return s !== 'false' && s !== '0';
}

/** digestHeader: `sha-256=<base64 of the raw digest>` from a hex SHA-256, or null when it is not one. */
export function digestHeader(hex: string): string | null {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return null;
  return `sha-256=${Buffer.from(hex, 'hex').toString('base64')}`;
}

/** firstMessage waits for the stream's first message (null if it ends first) and leaves the stream paused. */
function firstMessage(call: grpc.ClientReadableStream<GetSnapshotResponse>): Promise<GetSnapshotResponse | null> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      call.off('data', onData);
      call.off('error', onError);
      call.off('end', onEnd);
    };
    const onData = (m: GetSnapshotResponse): void => {
      call.pause();
      cleanup();
      resolve(m);
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(null);
    };
    call.on('data', onData);
    call.on('error', onError);
    call.on('end', onEnd);
  });
}

/**
 * ArchiveBody turns GetSnapshotResponse messages into archive bytes, hashing
 * them; at the end it fails (cutting the HTTP response) when the size or the
 * SHA-256 differ from what `info` announced.
 */
export class ArchiveBody extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private readonly info: SnapshotInfo | undefined;

  constructor(info: SnapshotInfo | undefined) {
    super({ writableObjectMode: true, writableHighWaterMark: 1 });
    this.info = info;
  }

  override _transform(msg: GetSnapshotResponse, _enc: BufferEncoding, cb: TransformCallback): void {
    const d = msg.data;
    if (d === undefined || d.byteLength === 0) return cb();
    const buf = Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    this.hash.update(buf);
    this.bytes += buf.byteLength;
    cb(null, buf);
  }

  override _flush(cb: TransformCallback): void {
    const info = this.info;
    if (info !== undefined && info.sizeBytes > 0n && BigInt(this.bytes) !== info.sizeBytes) {
      return cb(new Error(`snapshot stream size ${this.bytes} differs from the announced ${info.sizeBytes}`));
    }
    const got = this.hash.digest('hex');
    if (info !== undefined && info.digest !== '' && got !== info.digest.toLowerCase()) {
      return cb(new Error(`snapshot stream SHA-256 ${got} differs from the announced ${info.digest}`));
    }
    cb();
  }
}

async function getSnapshot(ctx: RouteContext, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const call = ctx.clients.snapshots.getSnapshot(staleOf(req.query as Query), { metadata: ctx.callMetadata(req) });
  call.on('error', () => undefined); // errors are handled by firstMessage / pipeline; never unhandled
  // The HTTP client went away (or the response is done): the call has nothing left to do.
  reply.raw.once('close', () => call.cancel());
  let first: GetSnapshotResponse | null;
  try {
    first = await firstMessage(call);
  } catch (err) {
    return sendGrpcError(reply, 'nomad', err);
  }
  if (first === null) return sendNomadError(reply, 500, 'snapshot stream ended before its first message');
  const info = first.info;
  reply.code(200).header('Content-Type', 'application/x-gzip');
  const digest = info === undefined ? null : digestHeader(info.digest);
  if (digest !== null) reply.header('Digest', digest);
  if (info !== undefined) reply.header('X-Nomad-Index', info.index.toString());
  reply.header('X-Nomad-KnownLeader', String(first.knownLeader));
  reply.header('X-Nomad-LastContact', first.lastContactMs.toString());
  const body = new ArchiveBody(info);
  if (first.data !== undefined && first.data.byteLength > 0) body.write(first);
  pipeline(call, body, (err) => {
    if (err !== undefined && err !== null) {
      call.cancel();
      req.log.warn({ err: err.message }, 'snapshot download cut');
    }
  });
  return reply.send(body);
}

type RestoreOutcome =
  | { readonly kind: 'ok'; readonly res: RestoreSnapshotResponse | undefined }
  | { readonly kind: 'grpcError'; readonly err: grpc.ServiceError }
  | { readonly kind: 'tooLarge' }
  | { readonly kind: 'aborted' };

/**
 * pumpRestore streams `body` into a RestoreSnapshot call: one message per
 * HTTP chunk, pausing the body while the call's write() buffer is full,
 * counting bytes against `bytesMax`. Resolves once the node answers, the
 * body is too large, or the HTTP client goes away (the call is cancelled).
 */
function pumpRestore(ctx: RouteContext, body: Readable | null, bytesMax: number, metadata: grpc.Metadata): Promise<RestoreOutcome> {
  return new Promise<RestoreOutcome>((resolve) => {
    let settled = false;
    let bytes = 0;
    const finish = (o: RestoreOutcome): void => {
      if (settled) return;
      settled = true;
      if (body !== null) {
        body.off('data', onData);
        body.off('end', onEnd);
      }
      resolve(o);
    };
    const call = ctx.clients.snapshots.restoreSnapshot((err, res) => finish(err !== null ? { kind: 'grpcError', err } : { kind: 'ok', res }), {
      metadata,
    });
    call.on('error', () => undefined); // the callback carries the status
    const onData = (chunk: Buffer): void => {
      bytes += chunk.byteLength;
      if (bytes > bytesMax) {
        call.cancel();
        finish({ kind: 'tooLarge' });
        return;
      }
      if (!call.write({ data: chunk })) {
        body?.pause();
        call.once('drain', () => {
          if (!settled) body?.resume();
        });
      }
    };
    const onEnd = (): void => {
      call.end();
    };
    if (body === null) {
      call.end();
      return;
    }
    body.on('data', onData);
    body.on('end', onEnd);
    body.on('error', () => {
      call.cancel();
      finish({ kind: 'aborted' });
    });
    body.on('close', () => {
      if (!(body as { complete?: boolean }).complete && !body.readableEnded) {
        call.cancel();
        finish({ kind: 'aborted' });
      }
    });
  });
}

async function restoreSnapshot(ctx: RouteContext, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > ctx.restoreBytesMax) {
    reply.header('Connection', 'close');
    return sendNomadError(reply, 413, `request body too large: ${declared} bytes (at most ${ctx.restoreBytesMax})`);
  }
  const body = isReadable(req.body) ? req.body : null;
  const outcome = await pumpRestore(ctx, body, ctx.restoreBytesMax, ctx.callMetadata(req));
  // Unread body left (an early answer): close the connection rather than read the rest.
  if (body !== null && !body.readableEnded) reply.header('Connection', 'close');
  switch (outcome.kind) {
    case 'ok':
      req.log.info({ index: outcome.res?.index.toString(), digest: outcome.res?.archive?.digest }, 'snapshot restored');
      return reply.code(200).type(TEXT_TYPE).send('');
    case 'grpcError':
      return sendGrpcError(reply, 'nomad', outcome.err);
    case 'tooLarge':
      return sendNomadError(reply, 413, `request body too large: more than ${ctx.restoreBytesMax} bytes`);
    case 'aborted':
      req.log.info('restore upload aborted by the client');
      reply.hijack();
      reply.raw.destroy();
      return undefined;
  }
}

function isReadable(v: unknown): v is Readable {
  return typeof v === 'object' && v !== null && typeof (v as Readable).on === 'function' && typeof (v as Readable).pause === 'function';
}

export function nomadRoutes(ctx: RouteContext): RouteSpec[] {
  const restore = (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => restoreSnapshot(ctx, req, reply);
  return [
    { method: 'GET', url: SNAPSHOT_PATH, style: 'nomad', action: 'snapshots.write', handler: (req, reply) => getSnapshot(ctx, req, reply) },
    { method: 'PUT', url: SNAPSHOT_PATH, style: 'nomad', action: 'snapshots.write', rawBody: true, handler: restore },
    { method: 'POST', url: SNAPSHOT_PATH, style: 'nomad', action: 'snapshots.write', rawBody: true, handler: restore },
  ];
}

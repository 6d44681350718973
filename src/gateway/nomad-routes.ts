/**
 * Nomad-style routes (operator snapshot), plain-text errors:
 *
 * - GET /v1/operator/snapshot[?stale][&id=ID|&index=N] -> SnapshotService.GetSnapshot (stream):
 *   200 application/x-gzip with `Digest: sha-256=<base64>`, `X-Nomad-Index`,
 *   `X-Nomad-KnownLeader`, `X-Nomad-LastContact`; the body is piped from the
 *   gRPC stream with backpressure (grpc-js stops reading HTTP/2 while the HTTP
 *   response is full), never buffered whole. The bytes are hashed on the way:
 *   when they do not match the announced digest or size the response is cut
 *   (no final chunk), so a client never takes a bad archive for a whole one.
 *   Resumable: `Accept-Ranges: bytes`, `ETag` (the digest), `Range` and
 *   `If-Range` answered with 206 / 416; `?id=` or `?index=` pins the archive
 *   (see getSnapshot).
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
import type { GetSnapshotRequest, GetSnapshotResponse, RestoreSnapshotResponse, SnapshotInfo } from '../gen/snapcoord/v1/snapshot.js';
import type { RouteContext, RouteSpec } from './route-spec.js';
import { TEXT_TYPE, sendGrpcError, sendNomadError } from './styles.js';
import { continueBody } from './expect-continue.js';

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

/** ByteRange: one satisfiable-looking byte range of a `Range: bytes=` header (`end` inclusive, null for "to the end"). */
export interface ByteRange {
  readonly start: number;
  readonly end: number | null;
}

/**
 * parseRange reads a `Range` header: `bytes=START-` or `bytes=START-END`
 * gives that range; anything else (no header, another unit, several ranges,
 * a suffix range `bytes=-N`, malformed) is null, and the whole archive is
 * served (RFC 9110 §14.2 lets a server ignore Range).
 */
export function parseRange(header: string | undefined): ByteRange | null {
  if (header === undefined) return null;
  const m = /^\s*bytes\s*=\s*(\d{1,16})\s*-\s*(\d{0,16})\s*$/i.exec(header);
  if (m === null) return null;
  const start = Number(m[1]);
  const end = m[2] === '' || m[2] === undefined ? null : Number(m[2]);
  if (end !== null && end < start) return null;
  return { start, end };
}

/** etagOf: the strong ETag of an archive, its quoted hex SHA-256. */
export function etagOf(digest: string): string {
  return `"${digest.toLowerCase()}"`;
}

/** ARCHIVE_BYTES_HEADER: the size of the whole archive, on a 200. */
export const ARCHIVE_BYTES_HEADER = 'X-Snapcoord-Archive-Bytes';

/** SNAPSHOT_ID_HEADER: the header naming the served archive's id (give it back as ?id= to pin it). */
export const SNAPSHOT_ID_HEADER = 'X-Snapcoord-Snapshot-Id';

/** pinOf: `?id=` or `?index=` of the query; an error text when malformed. */
function pinOf(q: Query): { id?: string; index?: bigint } | string {
  const one = (k: string): string | undefined => {
    const v = q[k];
    if (v === undefined) return undefined;
    return String(Array.isArray(v) ? v[0] : v);
  };
  const id = one('id');
  const index = one('index');
  if (id !== undefined && id !== '') {
    if (!/^[0-9A-Za-z._-]{1,128}$/.test(id)) return `invalid id ${JSON.stringify(id.slice(0, 40))}`;
    return { id };
  }
  if (index !== undefined && index !== '') {
    if (!/^\d{1,19}$/.test(index) || BigInt(index) === 0n) return `invalid index ${JSON.stringify(index.slice(0, 40))}: a positive log index`;
    return { index: BigInt(index) };
  }
  return {};
}

/** RangeBody passes `expected` bytes of GetSnapshotResponse data through and fails (cutting the response) on fewer or more. */
class RangeBody extends Transform {
  private bytes = 0;
  constructor(private readonly expected: number) {
    super({ writableObjectMode: true, writableHighWaterMark: 1 });
  }

  override _transform(msg: GetSnapshotResponse, _enc: BufferEncoding, cb: TransformCallback): void {
    const d = msg.data;
    if (d === undefined || d.byteLength === 0) return cb();
    this.bytes += d.byteLength;
    if (this.bytes > this.expected) return cb(new Error(`snapshot range stream sent more than the ${this.expected} bytes asked for`));
    cb(null, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
  }

  override _flush(cb: TransformCallback): void {
    if (this.bytes !== this.expected) return cb(new Error(`snapshot range stream ended after ${this.bytes} of ${this.expected} bytes`));
    cb();
  }
}

/**
 * getSnapshot serves GET /v1/operator/snapshot: the whole archive (200) or,
 * with `Range: bytes=START-[END]`, that range (206, `Content-Range`); 416
 * with `Content-Range: bytes * /SIZE` when START is at or past the end.
 * `If-Range: "<etag>"` that does not name the archive served gets the whole
 * archive. Every answer carries `Accept-Ranges: bytes`, `ETag` (the quoted
 * hex SHA-256) and `X-Snapcoord-Snapshot-Id`; a 200 `X-Snapcoord-Archive-Bytes`
 * (and no Content-Length, see below), a 206 Content-Length; `?id=ID` or
 * `?index=N` pins a held archive (404 once it is no longer held), so every
 * range of one download comes from one archive.
 */
async function getSnapshot(ctx: RouteContext, req: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const q = req.query as Query;
  const pin = pinOf(q);
  if (typeof pin === 'string') return sendNomadError(reply, 400, pin);
  const range = parseRange(req.headers.range);
  const ifRange = req.headers['if-range'];
  const open = (p: Omit<GetSnapshotRequest, 'stale'>): grpc.ClientReadableStream<GetSnapshotResponse> => {
    const c = ctx.clients.snapshots.getSnapshot(staleOf(q), { metadata: ctx.callMetadata(req) }, p);
    c.on('error', () => undefined); // errors are handled by firstMessage / pipeline; never unhandled
    return c;
  };
  const ranged = (r: ByteRange): Omit<GetSnapshotRequest, 'stale'> => ({
    ...pin,
    offset: BigInt(r.start),
    ...(r.end !== null ? { length: BigInt(r.end - r.start + 1) } : {}),
  });
  let call = open(range !== null ? ranged(range) : pin);
  // The HTTP client went away (or the response is done): the call has nothing left to do.
  reply.raw.once('close', () => call.cancel());
  let first: GetSnapshotResponse | null;
  try {
    first = await firstMessage(call);
  } catch (err) {
    return sendGrpcError(reply, 'nomad', err);
  }
  if (first === null) return sendNomadError(reply, 500, 'snapshot stream ended before its first message');
  let info = first.info;
  let partial = range !== null && info !== undefined;
  // If-Range naming another archive (or a date): the whole of this archive, pinned to it.
  if (partial && info !== undefined && ifRange !== undefined && ifRange !== etagOf(info.digest)) {
    call.cancel();
    call = open({ id: info.id });
    try {
      first = await firstMessage(call);
    } catch (err) {
      return sendGrpcError(reply, 'nomad', err);
    }
    if (first === null) return sendNomadError(reply, 500, 'snapshot stream ended before its first message');
    info = first.info;
    partial = false;
  }
  reply.header('Accept-Ranges', 'bytes');
  if (info !== undefined) {
    reply.header('ETag', etagOf(info.digest));
    reply.header(SNAPSHOT_ID_HEADER, info.id);
    reply.header('X-Nomad-Index', info.index.toString());
    const digest = digestHeader(info.digest);
    if (digest !== null) reply.header('Digest', digest);
  }
  reply.header('X-Nomad-KnownLeader', String(first.knownLeader));
  reply.header('X-Nomad-LastContact', first.lastContactMs.toString());
  if (partial && info !== undefined && range !== null) {
    const size = Number(info.sizeBytes);
    if (range.start >= size) {
      call.cancel();
      reply.header('Content-Range', `bytes */${size}`);
      return sendNomadError(reply, 416, `range start ${range.start} is not before the end of the archive (${size} bytes)`);
    }
    const end = range.end === null ? size - 1 : Math.min(range.end, size - 1);
    reply.code(206).header('Content-Type', 'application/x-gzip');
    reply.header('Content-Range', `bytes ${range.start}-${end}/${size}`);
    reply.header('Content-Length', String(end - range.start + 1));
    const body = new RangeBody(end - range.start + 1);
    if (first.data !== undefined && first.data.byteLength > 0) body.write(first);
    const c = call;
    pipeline(c, body, (err) => {
      if (err !== undefined && err !== null) {
        c.cancel();
        req.log.warn({ err: err.message }, 'snapshot range download cut');
      }
    });
    return reply.send(body);
  }
  reply.code(200).header('Content-Type', 'application/x-gzip');
  // No Content-Length on the whole archive: it goes chunked, so a digest mismatch found at the end can
  // still withhold the final chunk (a client never takes a bad archive for a whole one). The size is in
  // X-Snapcoord-Archive-Bytes; a 206 says it in Content-Range.
  if (info !== undefined) reply.header(ARCHIVE_BYTES_HEADER, info.sizeBytes.toString());
  const body = new ArchiveBody(info);
  if (first.data !== undefined && first.data.byteLength > 0) body.write(first);
  const c = call;
  pipeline(c, body, (err) => {
    if (err !== undefined && err !== null) {
      c.cancel();
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
  continueBody(req.raw, reply.raw);
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

/**
 * S3-compatible object storage as a snapshot destination and source.
 *
 * - Uploads stream the archive with multipart (@aws-sdk/lib-storage): at most
 *   queueSize parts of partBytes in memory whatever the archive's size (flat
 *   memory); each part is retried by the SDK (maxAttempts) and the whole
 *   upload `attempts` times from a fresh read of the archive. The object
 *   appears only when CompleteMultipartUpload succeeds, so a cut upload
 *   leaves no visible partial object; its parts are aborted (best effort;
 *   a bucket lifecycle rule for incomplete uploads cleans what an abort
 *   could not).
 * - The archive's SHA-256 travels with the object as user metadata
 *   (x-amz-meta-snapcoord-sha256, with the size, index, term and id) and is
 *   checked while downloading: an object whose bytes do not hash to it is
 *   refused (S3Error `corrupt`), and so is one without it (`unverifiable`).
 * - Credentials: the SDK's default chain (AWS_ACCESS_KEY_ID /
 *   AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, shared files,
 *   instance roles) or a credentials file (--s3-credentials-file). They are
 *   never logged: errors carry the S3 error code and message only.
 * - Every request is bounded by an idle timeout (S3Settings.idleTimeoutMs,
 *   default S3_IDLE_TIMEOUT_MS_DEFAULT): a connection that carries no byte
 *   either way for that long (a server or middlebox that hangs) fails the
 *   request, which the SDK retries (maxAttempts) and then fails the upload
 *   or download (S3Error `failed`, "timed out"). Before, nothing bounded it:
 *   a hung server held a scheduled snapshot task, and every task queued
 *   behind it, forever.
 * - Flexible checksums are sent only when an operation requires them
 *   (requestChecksumCalculation WHEN_REQUIRED): with WHEN_SUPPORTED the SDK
 *   streams parts with aws-chunked trailing CRC32s, which S3-compatible
 *   servers such as s3rver do not decode.
 * - The archive's bytes are not hashed for the request signature over HTTPS
 *   (AWS's default endpoint, or an https:// one): SigV4 signs each uploaded
 *   part's payload as UNSIGNED-PAYLOAD (payloadSigningOf), and the part
 *   carries a CRC-32 header (x-amz-checksum-crc32, ChecksumAlgorithm CRC32,
 *   zlib's native CRC: ~3x cheaper than SHA-256 here) that the store checks
 *   against the bytes it received, as it checks the multipart object's
 *   composite CRC-32 at completion; TLS covers the transit. Before, the SDK
 *   hashed every part with SHA-256 for the signature, on top of the
 *   archive's own hashing (issue 15). Over plain HTTP, where nothing else
 *   protects the bytes on the way, each part's payload SHA-256 is still
 *   signed, as before.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { rename, open, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import type * as S3Sdk from '@aws-sdk/client-s3';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import type * as S3Storage from '@aws-sdk/lib-storage';
import { planRetention, type RetentionPolicy } from './retention.js';

/** SHA256_META: the user metadata key holding the archive's hex SHA-256 (x-amz-meta-snapcoord-sha256). */
export const SHA256_META = 'snapcoord-sha256';
/** LIST_KEPT_MAX: the most listed objects list() keeps (the newest; ~300 bytes each, ~30 MB in all). */
export const LIST_KEPT_MAX = 100_000;
/** LIST_PAGES_MAX: the most ListObjectsV2 pages list() asks for (1,000 objects each by default). */
const LIST_PAGES_MAX = 10_000;

/** ListOptions: what S3Destination.list keeps, and its page size. */
export interface ListOptions {
  /** match: only objects whose name (the key past the prefix) it accepts are kept. */
  readonly match?: (name: string) => boolean;
  /** keptMax: at most this many objects are kept, the newest (default LIST_KEPT_MAX). */
  readonly keptMax?: number;
  /** pageSize: objects per ListObjectsV2 page (S3's default: 1,000). */
  readonly pageSize?: number;
}

/** DESCRIBE_HEADS_AT_ONCE: the heads describe() has in flight at once (it was every listed object's, up to 1,000). */
const DESCRIBE_HEADS_AT_ONCE = 16;
/** PART_BYTES_DEFAULT: multipart part size (S3's minimum is 5 MiB). */
export const PART_BYTES_DEFAULT = 8 * 1024 * 1024;
/** QUEUE_SIZE_DEFAULT: parts uploaded (and held in memory) at once. */
export const QUEUE_SIZE_DEFAULT = 4;
/** S3_IDLE_TIMEOUT_MS_DEFAULT: a request whose connection is silent this long (no byte sent or received) fails; it is also the connect timeout. */
export const S3_IDLE_TIMEOUT_MS_DEFAULT = 60_000;
/**
 * S3_IDLE_TIMEOUT_MS_MIN / _MAX: the bounds of --s3-timeout-ms. Below 1 s a
 * store answering from another region (or a connect with TLS) fails for
 * nothing; above 10 min a hung server holds a part for 5 requests x 3
 * attempts of it (2.5 h) before the run fails.
 */
export const S3_IDLE_TIMEOUT_MS_MIN = 1_000;
export const S3_IDLE_TIMEOUT_MS_MAX = 600_000;

/**
 * parseS3TimeoutMs reads an --s3-timeout-ms value (`from` names where it came from, for the message): a whole number
 * of milliseconds within S3_IDLE_TIMEOUT_MS_MIN..S3_IDLE_TIMEOUT_MS_MAX. Errors: S3Error `badSetting` saying which.
 */
export function parseS3TimeoutMs(text: string, from = '--s3-timeout-ms'): number {
  const t = text.trim();
  const ms = /^[0-9]{1,10}$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(ms) || ms < S3_IDLE_TIMEOUT_MS_MIN || ms > S3_IDLE_TIMEOUT_MS_MAX) {
    throw new S3Error(
      'badSetting',
      `${from}: ${JSON.stringify(text.slice(0, 40))} is not a whole number of milliseconds from ${S3_IDLE_TIMEOUT_MS_MIN} to ${S3_IDLE_TIMEOUT_MS_MAX} (the silence after which one S3 request fails; default ${S3_IDLE_TIMEOUT_MS_DEFAULT})`,
    );
  }
  return ms;
}
/**
 * S3_DOWNLOAD_TIMEOUT_MS_DEFAULT: a download (its HEAD, GET and every byte)
 * not done within this long fails (S3Error `failed`, nothing left): the idle
 * timeout alone let a store that sends a byte every minute hold the CLI (and a
 * node's --import-snapshot) for ever. An hour takes 3.6 GB at 1 MB/s.
 * S3_DOWNLOAD_TIMEOUT_MS_MIN / _MAX: the bounds of --s3-download-timeout-ms.
 */
export const S3_DOWNLOAD_TIMEOUT_MS_DEFAULT = 3_600_000;
export const S3_DOWNLOAD_TIMEOUT_MS_MIN = 1_000;
export const S3_DOWNLOAD_TIMEOUT_MS_MAX = 604_800_000;

/**
 * parseS3DownloadTimeoutMs reads an --s3-download-timeout-ms value: a whole number of milliseconds within
 * S3_DOWNLOAD_TIMEOUT_MS_MIN..S3_DOWNLOAD_TIMEOUT_MS_MAX. Errors: S3Error `badSetting` saying which.
 */
export function parseS3DownloadTimeoutMs(text: string, from = '--s3-download-timeout-ms'): number {
  const t = text.trim();
  const ms = /^[0-9]{1,10}$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(ms) || ms < S3_DOWNLOAD_TIMEOUT_MS_MIN || ms > S3_DOWNLOAD_TIMEOUT_MS_MAX) {
    throw new S3Error(
      'badSetting',
      `${from}: ${JSON.stringify(text.slice(0, 40))} is not a whole number of milliseconds from ${S3_DOWNLOAD_TIMEOUT_MS_MIN} to ${S3_DOWNLOAD_TIMEOUT_MS_MAX} (the longest a whole download may take; default ${S3_DOWNLOAD_TIMEOUT_MS_DEFAULT})`,
    );
  }
  return ms;
}
/** UPLOAD_ATTEMPTS_DEFAULT: whole-upload attempts (each part is also retried by the SDK). */
export const UPLOAD_ATTEMPTS_DEFAULT = 3;

/** S3ErrorCode: what went wrong, for callers and messages. */
export type S3ErrorCode = 'badUrl' | 'badSetting' | 'accessDenied' | 'noBucket' | 'notFound' | 'corrupt' | 'unverifiable' | 'credentials' | 'failed';

/** S3Error: a destination failure with a message fit for an operator (no credentials in it). */
export class S3Error extends Error {
  override readonly name = 'S3Error';
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** S3Location: bucket and key (or key prefix) of an s3:// URL. */
export interface S3Location {
  readonly bucket: string;
  readonly key: string;
}

/** parseS3Url reads `s3://bucket[/key-or-prefix]`. Errors: S3Error `badUrl`. */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (m === null) throw new S3Error('badUrl', `${JSON.stringify(url.slice(0, 200))} is not an s3://bucket/prefix URL (bucket: 3-63 lowercase letters, digits, '.', '-')`);
  return { bucket: m[1] as string, key: m[2] ?? '' };
}

/** isS3Url: `s` starts with s3://. */
export function isS3Url(s: string): boolean {
  return s.startsWith('s3://');
}

/** S3Settings: how to reach the object store; '' fields mean "the SDK's default". */
export interface S3Settings {
  /** endpoint: an S3-compatible server's URL (http://127.0.0.1:9000); '' for AWS. */
  readonly endpoint: string;
  readonly region: string;
  /** forcePathStyle: http://host/bucket/key instead of http://bucket.host/key (most S3-compatible servers need it). */
  readonly forcePathStyle: boolean;
  /** credentialsFile: a file holding the access key (see readCredentialsFile); '' for the SDK's default chain. */
  readonly credentialsFile: string;
  /** idleTimeoutMs: a request whose connection is silent this long fails (default S3_IDLE_TIMEOUT_MS_DEFAULT). */
  readonly idleTimeoutMs?: number;
  /** downloadTimeoutMs: a whole download not done within this long fails (default S3_DOWNLOAD_TIMEOUT_MS_DEFAULT). */
  readonly downloadTimeoutMs?: number;
}

/**
 * s3SettingsFrom: `given` fields, else the environment: SNAPCOORD_S3_ENDPOINT
 * (or AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), SNAPCOORD_S3_REGION (or
 * AWS_REGION, AWS_DEFAULT_REGION; default us-east-1), SNAPCOORD_S3_PATH_STYLE
 * (1/true), SNAPCOORD_S3_CREDENTIALS_FILE, SNAPCOORD_S3_TIMEOUT_MS (idleTimeoutMs,
 * checked by parseS3TimeoutMs: S3Error `badSetting`; a given idleTimeoutMs is
 * checked against the same bounds), SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS
 * (downloadTimeoutMs, parseS3DownloadTimeoutMs, the same way).
 */
export function s3SettingsFrom(given: Partial<S3Settings> = {}, env: NodeJS.ProcessEnv = process.env): S3Settings {
  const pick = (...vs: (string | undefined)[]): string => vs.find((v) => v !== undefined && v !== '') ?? '';
  const ps = env['SNAPCOORD_S3_PATH_STYLE'];
  return {
    endpoint: pick(given.endpoint, env['SNAPCOORD_S3_ENDPOINT'], env['AWS_ENDPOINT_URL_S3'], env['AWS_ENDPOINT_URL']),
    region: pick(given.region, env['SNAPCOORD_S3_REGION'], env['AWS_REGION'], env['AWS_DEFAULT_REGION'], 'us-east-1'),
    forcePathStyle: given.forcePathStyle ?? (ps !== undefined && /^(1|true|yes)$/i.test(ps)),
    credentialsFile: pick(given.credentialsFile, env['SNAPCOORD_S3_CREDENTIALS_FILE']),
    ...s3TimeoutFrom(given.idleTimeoutMs, env['SNAPCOORD_S3_TIMEOUT_MS']),
    ...downloadTimeoutFrom(given.downloadTimeoutMs, env['SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS']),
  };
}

/** downloadTimeoutFrom: `given` (checked), else the environment's text (parsed), else none (the default). */
function downloadTimeoutFrom(given: number | undefined, envText: string | undefined): { downloadTimeoutMs?: number } {
  if (given !== undefined) return { downloadTimeoutMs: parseS3DownloadTimeoutMs(String(given)) };
  if (envText !== undefined && envText !== '') return { downloadTimeoutMs: parseS3DownloadTimeoutMs(envText, 'SNAPCOORD_S3_DOWNLOAD_TIMEOUT_MS') };
  return {};
}

/** s3TimeoutFrom: `given` (checked), else the environment's text (parsed), else none (the default). */
function s3TimeoutFrom(given: number | undefined, envText: string | undefined): { idleTimeoutMs?: number } {
  if (given !== undefined) return { idleTimeoutMs: parseS3TimeoutMs(String(given)) };
  if (envText !== undefined && envText !== '') return { idleTimeoutMs: parseS3TimeoutMs(envText, 'SNAPCOORD_S3_TIMEOUT_MS') };
  return {};
}

/** S3Credentials: an access key. */
export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** CREDENTIALS_FILE_BYTES_MAX: the largest S3 credentials file read (an AWS shared credentials file of many profiles fits). */
export const CREDENTIALS_FILE_BYTES_MAX = 1024 * 1024;

/**
 * readCredentialsFile reads an access key from `file`: JSON
 * {"accessKeyId","secretAccessKey"[,"sessionToken"]}, or lines
 * `aws_access_key_id = ...` / `AWS_ACCESS_KEY_ID=...` (an AWS shared
 * credentials file's first profile, or an env file). Errors: S3Error
 * `credentials` naming the file, never its content.
 */
export async function readCredentialsFile(file: string): Promise<S3Credentials> {
  let text: string;
  try {
    // Bounded: a device (/dev/zero) or a huge file given by mistake is refused, not read until memory runs out.
    const fh = await open(file, 'r');
    try {
      const buf = Buffer.alloc(CREDENTIALS_FILE_BYTES_MAX + 1);
      let n = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
        if (bytesRead === 0) break;
        n += bytesRead;
        if (n === buf.length) throw new S3Error('credentials', `the S3 credentials file ${file} is larger than ${CREDENTIALS_FILE_BYTES_MAX} bytes; refusing to read it`);
      }
      text = buf.subarray(0, n).toString('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (err instanceof S3Error) throw err;
    throw new S3Error('credentials', `cannot read the S3 credentials file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let id = '';
  let secret = '';
  let token = '';
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    try {
      const j = JSON.parse(trimmed) as Record<string, unknown>;
      id = typeof j['accessKeyId'] === 'string' ? j['accessKeyId'] : '';
      secret = typeof j['secretAccessKey'] === 'string' ? j['secretAccessKey'] : '';
      token = typeof j['sessionToken'] === 'string' ? j['sessionToken'] : '';
    } catch {
      throw new S3Error('credentials', `the S3 credentials file ${file} is not valid JSON`);
    }
  } else {
    let sections = 0;
    for (const raw of trimmed.split('\n')) {
      const line = raw.trim();
      if (line.startsWith('[')) {
        if (++sections > 1) break; // the first profile only
        continue;
      }
      const m = /^(?:export\s+)?([A-Za-z_]+)\s*=\s*"?([^"]*)"?$/.exec(line);
      if (m === null) continue;
      const k = (m[1] as string).toLowerCase();
      const v = (m[2] as string).trim();
      if (k === 'aws_access_key_id') id = v;
      else if (k === 'aws_secret_access_key') secret = v;
      else if (k === 'aws_session_token') token = v;
    }
  }
  if (id === '' || secret === '') throw new S3Error('credentials', `the S3 credentials file ${file} holds no access key id and secret`);
  return { accessKeyId: id, secretAccessKey: secret, ...(token !== '' ? { sessionToken: token } : {}) };
}

let sdkLoad: Promise<{ s3: typeof S3Sdk; storage: typeof S3Storage }> | null = null;

/**
 * sdk loads the AWS SDK on first use: importing it costs a node ~15 MB of
 * RSS and start-up time, and most nodes never talk to S3.
 */
function sdk(): Promise<{ s3: typeof S3Sdk; storage: typeof S3Storage }> {
  sdkLoad ??= Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')]).then(([s3, storage]) => ({ s3, storage }));
  return sdkLoad;
}

/**
 * PayloadSigning: how an upload's bytes are covered. 'unsigned' (HTTPS): SigV4 signs UNSIGNED-PAYLOAD, and each part
 * carries its CRC-32 (x-amz-checksum-crc32), checked by the store; 'signed' (plain HTTP): SigV4 signs each part's
 * payload SHA-256, as the SDK does by default.
 */
export type PayloadSigning = 'unsigned' | 'signed';

/** payloadSigningOf: 'unsigned' for an HTTPS endpoint (AWS's, settings.endpoint ''), 'signed' for any other (http://). */
export function payloadSigningOf(settings: Pick<S3Settings, 'endpoint'>): PayloadSigning {
  return settings.endpoint === '' || /^https:\/\//i.test(settings.endpoint) ? 'unsigned' : 'signed';
}

/** UNSIGNED_PAYLOAD_COMMANDS: the requests that carry an archive's bytes (lib-storage's parts, or its one PutObject for a small archive). */
const UNSIGNED_PAYLOAD_COMMANDS = new Set(['UploadPartCommand', 'PutObjectCommand']);

/**
 * addUnsignedPayload makes the client's requests that carry archive bytes, over HTTPS only, sign UNSIGNED-PAYLOAD:
 * SigV4 takes an x-amz-content-sha256 header already set as the payload's hash (@smithy/signature-v4
 * getPayloadHash), so the SDK hashes nothing of the body. Added at the build step, before signing (finalizeRequest);
 * a request over plain HTTP (whatever the settings said) keeps its signed payload SHA-256.
 */
function addUnsignedPayload(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { protocol?: string; headers?: Record<string, string> } | undefined;
      const headers = request?.headers;
      if (headers !== undefined && request?.protocol === 'https:' && UNSIGNED_PAYLOAD_COMMANDS.has(context.commandName ?? '') && !Object.keys(headers).some((h) => h.toLowerCase() === 'x-amz-content-sha256')) {
        headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      }
      return next(args);
    },
    { step: 'build', name: 'snapcoordUnsignedPayload' },
  );
}

/**
 * makeS3Client builds the SDK client of `settings` (credentials from the file when one is named); over HTTPS
 * (payloadSigningOf) its uploads sign UNSIGNED-PAYLOAD (addUnsignedPayload; S3Destination.upload adds the CRC-32).
 */
export async function makeS3Client(settings: S3Settings, maxAttempts = 5): Promise<S3Client> {
  // The SDK warns once per process that its releases after January 2027 need Node 22: advice for the
  // SDK's own upgrade path, not for an operator, and a second stderr line in every CLI command.
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const idleMs = settings.idleTimeoutMs ?? S3_IDLE_TIMEOUT_MS_DEFAULT;
  if (!Number.isSafeInteger(idleMs) || idleMs < 1) throw new RangeError(`S3 idleTimeoutMs must be a whole number of ms >= 1, got ${idleMs}`);
  const config: S3ClientConfig = {
    region: settings.region,
    forcePathStyle: settings.forcePathStyle,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts,
    // socketTimeout: no byte either way for idleMs fails the request (a slow but moving transfer is not cut).
    requestHandler: { socketTimeout: idleMs, connectionTimeout: idleMs },
    ...(settings.endpoint !== '' ? { endpoint: settings.endpoint } : {}),
    ...(settings.credentialsFile !== '' ? { credentials: await readCredentialsFile(settings.credentialsFile) } : {}),
  };
  const client = new (await sdk()).s3.S3Client(config);
  if (payloadSigningOf(settings) === 'unsigned') addUnsignedPayload(client);
  return client;
}

/** ArchiveObjectMeta: what is stored with an uploaded archive. */
export interface ArchiveObjectMeta {
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly index: number;
  readonly term: number;
  readonly id: string;
}

/**
 * DescribedSnapshot: a listed object with its recorded SHA-256 (lowercase
 * hex; '' when it cannot be checked) and Raft index (0 when none);
 * `unverifiable` says why when sha256 is '' (its head was refused, or it
 * carries no SHA-256 a download would accept).
 */
export interface DescribedSnapshot extends RemoteSnapshot {
  readonly sha256: string;
  readonly index: number;
  readonly unverifiable?: string;
}

/** RemoteSnapshot: one archive in the bucket. */
export interface RemoteSnapshot {
  readonly key: string;
  /** name: the key without the prefix. */
  readonly name: string;
  readonly url: string;
  readonly sizeBytes: number;
  readonly lastModified: string;
  /** createdAtMs: from the name's timestamp, else the object's LastModified. */
  readonly createdAtMs: number;
}

/** SNAPSHOT_NAME_PATTERN: names of scheduled snapshot archives, `<db>-<YYYYMMDDTHHMMSSmmmZ>.snapshot`. */
export const SNAPSHOT_NAME_PATTERN = /^(.+)-(\d{8}T\d{9}Z)\.snapshot$/;

/** snapshotName: the archive name of a scheduled snapshot of `db` made at `at`. */
export function snapshotName(db: string, at: Date): string {
  return `${db}-${at.toISOString().replace(/[-:.]/g, '')}.snapshot`;
}

/** timeOfName: the creation time a snapshotName encodes (ms), null when `name` is not one. */
export function timeOfName(name: string): number | null {
  const m = SNAPSHOT_NAME_PATTERN.exec(name);
  if (m === null) return null;
  const s = m[2] as string;
  const iso = `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(9, 11)}:${s.slice(11, 13)}:${s.slice(13, 15)}.${s.slice(15, 18)}Z`;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

/** describe: an SDK error as "Code: message" (never the request, so never a credential). */
function describe(err: unknown): string {
  const e = err as { name?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const code = e.Code ?? e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  return `${code}${status !== undefined ? ` (HTTP ${status})` : ''}: ${e.message ?? String(err)}`;
}

/** classify maps an SDK error to an S3Error saying what to check. */
function classify(err: unknown, what: string, loc: string): S3Error {
  if (err instanceof S3Error) return err;
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  const code = e.Code ?? e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (code === 'AccessDenied' || code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch' || code === 'Forbidden' || status === 403) {
    return new S3Error('accessDenied', `${what} ${loc}: the object store refused it (${describe(err)}); check that the credentials may ${what === 'upload to' ? 's3:PutObject on' : 'use'} this bucket and prefix`, { cause: err });
  }
  if (code === 'NoSuchBucket') return new S3Error('noBucket', `${what} ${loc}: no such bucket (${describe(err)})`, { cause: err });
  if (code === 'NoSuchKey' || code === 'NotFound' || status === 404) return new S3Error('notFound', `${what} ${loc}: no such object (${describe(err)})`, { cause: err });
  if (code === 'CredentialsProviderError') return new S3Error('credentials', `${what} ${loc}: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --s3-credentials-file)`, { cause: err });
  return new S3Error('failed', `${what} ${loc}: ${describe(err)}`, { cause: err });
}

/**
 * HashCheck passes bytes through, hashing them; it fails as soon as they
 * exceed `sizeBytes` (when >= 0), and at the end when they do not hash to
 * `sha256` or count `sizeBytes`. With `sha256` null it hashes nothing and
 * checks the count alone (an upload whose source checks its own bytes:
 * UploadOptions.sourceChecked).
 */
class HashCheck extends Transform {
  private readonly hash: Hash | null;
  bytes = 0;
  constructor(
    private readonly sha256: string | null,
    private readonly sizeBytes: number,
    private readonly onBytes: (n: number) => void,
    private readonly what: string,
  ) {
    super();
    this.hash = sha256 === null ? null : createHash('sha256');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // More bytes than recorded fail at once, not at the end: a server that lies about the size cannot fill the disk.
    if (this.sizeBytes >= 0 && this.bytes + chunk.length > this.sizeBytes) {
      return cb(new S3Error('corrupt', `${this.what}: more than the ${this.sizeBytes} bytes recorded`));
    }
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    this.onBytes(this.bytes);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.sizeBytes >= 0 && this.bytes !== this.sizeBytes) return cb(new S3Error('corrupt', `${this.what}: ${this.bytes} bytes, not the ${this.sizeBytes} recorded`));
    if (this.hash === null || this.sha256 === null) return cb();
    const got = this.hash.digest('hex');
    if (got !== this.sha256.toLowerCase()) return cb(new S3Error('corrupt', `${this.what}: SHA-256 ${got} does not match the recorded ${this.sha256}`));
    cb();
  }
}

/** UploadOptions: progress and limits of one upload. */
export interface UploadOptions {
  readonly onProgress?: (bytes: number) => void;
  readonly signal?: AbortSignal;
  readonly partBytes?: number;
  readonly queueSize?: number;
  /** attempts: whole-upload attempts (default UPLOAD_ATTEMPTS_DEFAULT). */
  readonly attempts?: number;
  /** onRetry: told about each failed attempt that will be retried. */
  readonly onRetry?: (err: S3Error, attempt: number) => void;
  /**
   * sourceChecked: what `open()` reads checks its own bytes, so the upload hashes none of them (it still counts
   * them against meta.sizeBytes): a stored snapshot read as GetSnapshot serves it (SnapshotHandle.createServedReadStream:
   * on its recorded hashes if this process hashed it, else chunk by chunk). The object still carries meta.sha256,
   * which every download checks. Default false: the upload hashes what it sends and fails on a mismatch.
   */
  readonly sourceChecked?: boolean;
}

/**
 * S3Destination: one bucket and key prefix (`s3://bucket/prefix`; the prefix
 * is used as given, so `backups/` puts archives "in a folder").
 */
export class S3Destination {
  private constructor(
    readonly client: S3Client,
    readonly bucket: string,
    readonly prefix: string,
    /** payloadSigning: how uploads cover their bytes (payloadSigningOf the settings). */
    readonly payloadSigning: PayloadSigning,
    /** downloadTimeoutMs: the longest one download may take (S3Settings.downloadTimeoutMs). */
    readonly downloadTimeoutMs: number,
  ) {}

  /** open parses `url` and builds the client (each request tried up to maxAttempts times, default 5). Errors: S3Error `badUrl` / `credentials`. */
  static async open(url: string, settings: S3Settings, maxAttempts = 5): Promise<S3Destination> {
    const loc = parseS3Url(url);
    const downloadTimeoutMs = settings.downloadTimeoutMs ?? S3_DOWNLOAD_TIMEOUT_MS_DEFAULT;
    if (!Number.isSafeInteger(downloadTimeoutMs) || downloadTimeoutMs < 1) throw new RangeError(`S3 downloadTimeoutMs must be a whole number of ms >= 1, got ${downloadTimeoutMs}`);
    return new S3Destination(await makeS3Client(settings, maxAttempts), loc.bucket, loc.key, payloadSigningOf(settings), downloadTimeoutMs);
  }

  /** url: the s3:// URL of `key` (or of this destination when no key). */
  url(key = this.prefix): string {
    return `s3://${this.bucket}/${key}`;
  }

  /**
   * upload streams the archive that `open()` reads to `<prefix><name>` with
   * `meta` as object metadata, hashing it on the way (unless
   * opts.sourceChecked): bytes that do not match meta.sha256 fail the
   * upload before it completes, and the object
   * is headed after it (checkStored: a store's 200 alone is not taken for
   * a kept write; where the credentials may not read it back, a write-only
   * policy allowing s3:PutObject but not s3:GetObject, the store's 200 stands
   * and `unchecked` says why). Retries the whole
   * upload (a fresh open()) up to `attempts` times; a refusal (accessDenied,
   * noBucket, credentials) is not retried. Errors: S3Error.
   */
  async upload(name: string, open: () => Readable, meta: ArchiveObjectMeta, opts: UploadOptions = {}): Promise<{ key: string; attempts: number; unchecked?: string }> {
    const key = `${this.prefix}${name}`;
    const attempts = Math.max(1, opts.attempts ?? UPLOAD_ATTEMPTS_DEFAULT);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.uploadOnce(key, open(), meta, opts);
        const unchecked = await this.checkStored(key, meta);
        return { key, attempts: attempt, ...(unchecked !== undefined ? { unchecked } : {}) };
      } catch (err) {
        const e = classify(err, 'upload to', this.url(key));
        if (opts.signal?.aborted === true || attempt >= attempts || e.code === 'accessDenied' || e.code === 'noBucket' || e.code === 'credentials' || e.code === 'corrupt') throw e;
        opts.onRetry?.(e, attempt);
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  }

  /**
   * checkStored heads the object just uploaded: a store that answered 200 to
   * a write it did not keep whole (no object, another size, another
   * recorded SHA-256) fails the attempt (S3Error `failed`, retried), and a
   * wrong object is removed (best effort), so the upload is never reported
   * done (and retention never weighs it) on the store's word alone. A head
   * the credentials may not make (accessDenied: a write-only backup policy,
   * s3:PutObject without s3:GetObject, which uploaded before this check was
   * added) cannot check anything: the store's 200 stands, and the reason is
   * returned (undefined when the object was checked).
   */
  private async checkStored(key: string, meta: ArchiveObjectMeta): Promise<string | undefined> {
    const why = `upload to ${this.url(key)}: the object store acknowledged it`;
    let h: { sha256: string; sizeBytes: number };
    try {
      h = await this.head(key);
    } catch (err) {
      if (err instanceof S3Error && err.code === 'notFound') throw new S3Error('failed', `${why} but holds no such object; not counted as uploaded`, { cause: err });
      if (err instanceof S3Error && err.code === 'accessDenied') return `${this.url(key)} not checked after the upload: its head was refused (${err.message})`;
      throw err;
    }
    if (h.sizeBytes !== meta.sizeBytes || h.sha256.toLowerCase() !== meta.sha256.toLowerCase()) {
      await this.remove(key).catch(() => undefined);
      throw new S3Error('failed', `${why} but holds ${h.sizeBytes} bytes recorded as SHA-256 ${h.sha256 === '' ? '(none)' : h.sha256}, not the ${meta.sizeBytes} bytes of ${meta.sha256} sent; not counted as uploaded`);
    }
    return undefined;
  }

  private async uploadOnce(key: string, source: Readable, meta: ArchiveObjectMeta, opts: UploadOptions): Promise<void> {
    const check = new HashCheck(opts.sourceChecked === true ? null : meta.sha256, meta.sizeBytes, (n) => opts.onProgress?.(n), `archive read for ${this.url(key)}`);
    source.on('error', (err) => check.destroy(err));
    source.pipe(check);
    const upload = new (await sdk()).storage.Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: check,
        ContentType: 'application/x-gzip',
        // Unsigned payloads (HTTPS): each part's CRC-32 in a header, checked by the store; declared when the multipart
        // upload is created, as S3 wants, and its completion then checks the parts' composite CRC-32.
        ...(this.payloadSigning === 'unsigned' ? { ChecksumAlgorithm: 'CRC32' as const } : {}),
        Metadata: {
          [SHA256_META]: meta.sha256,
          'snapcoord-size': String(meta.sizeBytes),
          'snapcoord-index': String(meta.index),
          'snapcoord-term': String(meta.term),
          'snapcoord-id': meta.id,
        },
      },
      partSize: opts.partBytes ?? PART_BYTES_DEFAULT,
      queueSize: opts.queueSize ?? QUEUE_SIZE_DEFAULT,
      // Parts are aborted here (an abort that fails must not hide the upload's own error).
      leavePartsOnError: true,
      ...(opts.signal !== undefined ? { abortController: abortControllerOf(opts.signal) } : {}),
    });
    try {
      await upload.done();
    } catch (err) {
      source.destroy();
      check.destroy();
      if (upload.uploadId !== undefined) {
        await this.client.send(new (await sdk()).s3.AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: upload.uploadId })).catch(() => undefined);
      }
      throw err;
    }
  }

  /** head: the recorded metadata of `key`. Errors: S3Error (`notFound`, ...). */
  async head(key: string): Promise<{ sha256: string; sizeBytes: number; metadata: Record<string, string> }> {
    try {
      const h = await this.client.send(new (await sdk()).s3.HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      const md = h.Metadata ?? {};
      return { sha256: md[SHA256_META] ?? '', sizeBytes: h.ContentLength ?? -1, metadata: md };
    } catch (err) {
      throw classify(err, 'read', this.url(key));
    }
  }

  /**
   * list: the objects under the prefix (paged) that `match` accepts, newest
   * first by createdAtMs: at most keptMax (LIST_KEPT_MAX) of them, the newest
   * (a prefix of millions of objects is walked, not held: it held every
   * listed object, up to 10,000 pages of 1,000).
   */
  async list(opts: ListOptions = {}): Promise<RemoteSnapshot[]> {
    const keptMax = opts.keptMax ?? LIST_KEPT_MAX;
    if (!Number.isSafeInteger(keptMax) || keptMax < 1) throw new RangeError(`list: keptMax must be a positive integer, not ${keptMax}`);
    const newestFirst = (objects: RemoteSnapshot[]): RemoteSnapshot[] => objects.sort((a, b) => b.createdAtMs - a.createdAtMs);
    let out: RemoteSnapshot[] = [];
    let token: string | undefined;
    try {
      for (let page = 0; page < LIST_PAGES_MAX; page++) {
        const r = await this.client.send(
          new (await sdk()).s3.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix,
            ...(opts.pageSize !== undefined ? { MaxKeys: opts.pageSize } : {}),
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        );
        for (const o of r.Contents ?? []) {
          if (o.Key === undefined) continue;
          const name = o.Key.slice(this.prefix.length);
          if (opts.match !== undefined && !opts.match(name)) continue;
          const modified = o.LastModified?.getTime() ?? 0;
          out.push({ key: o.Key, name, url: this.url(o.Key), sizeBytes: o.Size ?? 0, lastModified: o.LastModified?.toISOString() ?? '', createdAtMs: timeOfName(name) ?? modified });
          // Held: at most twice keptMax between cuts to the newest keptMax.
          if (out.length >= 2 * keptMax) out = newestFirst(out).slice(0, keptMax);
        }
        if (r.IsTruncated !== true || r.NextContinuationToken === undefined) break;
        token = r.NextContinuationToken;
      }
    } catch (err) {
      throw classify(err, 'list', this.url());
    }
    return newestFirst(out).slice(0, keptMax);
  }

  /**
   * describe heads each of `objects` (from list()) for its recorded SHA-256
   * and index, in their order, DESCRIBE_HEADS_AT_ONCE at a time.
   * An object gone since it was listed (retention, another client) is left
   * out. One whose head fails otherwise (a policy that allows
   * s3:ListBucket but not s3:GetObject on it: 403; an SSE-C object: 400; a
   * network failure past the retries) is still listed, unverifiable, with
   * the error (naming the object) in `unverifiable`, as is one whose
   * recorded SHA-256 is missing or not hex (download() refuses those): the
   * listing is what it was before the heads, never lost to one object.
   */
  async describe(objects: readonly RemoteSnapshot[]): Promise<DescribedSnapshot[]> {
    const rows: (DescribedSnapshot | null)[] = new Array<DescribedSnapshot | null>(objects.length).fill(null);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < objects.length) {
        const i = next++;
        const o = objects[i] as RemoteSnapshot;
        try {
          const h = await this.head(o.key);
          const index = Number(h.metadata['snapcoord-index'] ?? 0);
          const row = { ...o, index: Number.isSafeInteger(index) && index > 0 ? index : 0 };
          rows[i] = /^[0-9a-f]{64}$/i.test(h.sha256)
            ? { ...row, sha256: h.sha256.toLowerCase() }
            : { ...row, sha256: '', unverifiable: `${o.url} carries no snapcoord SHA-256 (x-amz-meta-${SHA256_META})` };
        } catch (err) {
          if (err instanceof S3Error && err.code === 'notFound') continue;
          rows[i] = { ...o, sha256: '', index: 0, unverifiable: err instanceof S3Error ? err.message : classify(err, 'read', o.url).message };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(DESCRIBE_HEADS_AT_ONCE, objects.length) }, worker));
    return rows.filter((r): r is DescribedSnapshot => r !== null);
  }

  /**
   * download streams `key` into `sink`, checking its bytes against the
   * recorded SHA-256 and size (a body longer than the size is cut at that
   * size, whatever the GET announces). Errors: S3Error `unverifiable` (no recorded
   * SHA-256), `corrupt` (bytes differ; the sink then holds bad bytes: callers
   * write to a temp file), `notFound`, ...; what `beforeBody` throws, called
   * with the size before the GET (e.g. a free-space check). The whole of it
   * (HEAD, GET, body) is bounded by downloadTimeoutMs (a timer: the monotonic
   * clock): past it S3Error `failed` "not downloaded within".
   */
  async download(
    key: string,
    sink: NodeJS.WritableStream,
    onProgress?: (bytes: number) => void,
    signal?: AbortSignal,
    beforeBody?: (sizeBytes: number) => Promise<void>,
  ): Promise<{ sha256: string; sizeBytes: number }> {
    const late = new AbortController();
    const timer = setTimeout(() => late.abort(), this.downloadTimeoutMs);
    const both = signal === undefined ? late.signal : AbortSignal.any([signal, late.signal]);
    try {
      return await this.downloadUntil(key, sink, onProgress, both, beforeBody);
    } catch (err) {
      if (late.signal.aborted && signal?.aborted !== true) {
        throw new S3Error(
          'failed',
          `${this.url(key)} was not downloaded within ${this.downloadTimeoutMs} ms (the store stalled or sends too slowly; --s3-download-timeout-ms sets the limit); nothing kept`,
          { cause: err },
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async downloadUntil(
    key: string,
    sink: NodeJS.WritableStream,
    onProgress: ((bytes: number) => void) | undefined,
    signal: AbortSignal,
    beforeBody?: (sizeBytes: number) => Promise<void>,
  ): Promise<{ sha256: string; sizeBytes: number }> {
    const h = await untilAborted(this.head(key), signal);
    if (!/^[0-9a-f]{64}$/i.test(h.sha256)) throw new S3Error('unverifiable', `${this.url(key)} carries no snapcoord SHA-256 (x-amz-meta-${SHA256_META}); refusing an archive that cannot be checked`);
    // The size bounds the download (HashCheck): the HEAD's length, else the size recorded at upload; neither is refused.
    const recorded = h.metadata['snapcoord-size'];
    const sizeBytes = h.sizeBytes >= 0 ? h.sizeBytes : recorded !== undefined && /^\d{1,15}$/.test(recorded) ? Number(recorded) : -1;
    if (sizeBytes < 0) throw new S3Error('unverifiable', `${this.url(key)}: the store gave no size for it (no Content-Length, no x-amz-meta-snapcoord-size); refusing a download without a bound`);
    await beforeBody?.(sizeBytes);
    signal.throwIfAborted();
    let body: Readable;
    try {
      const r = await this.client.send(new (await sdk()).s3.GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
      body = r.Body as Readable;
    } catch (err) {
      throw classify(err, 'read', this.url(key));
    }
    const check = new HashCheck(h.sha256, sizeBytes, onProgress ?? (() => undefined), this.url(key));
    try {
      await pipeline(body, check, sink, { signal });
    } catch (err) {
      throw err instanceof S3Error ? err : classify(err, 'read', this.url(key));
    }
    return { sha256: h.sha256.toLowerCase(), sizeBytes: check.bytes };
  }

  /**
   * downloadToFile downloads `key` to `file` (0600) through `file`.part,
   * renamed only once every byte checks out; on any failure (`signal`
   * aborted included) nothing is left. An object larger than the free space
   * of `file`'s directory is refused (S3Error `failed`) before its GET.
   */
  async downloadToFile(key: string, file: string, onProgress?: (bytes: number) => void, signal?: AbortSignal): Promise<{ sha256: string; sizeBytes: number }> {
    const part = `${file}.part`;
    // Never through a link: a `.part` planted as a symlink (a shared directory) would have this process write the
    // object wherever it points, and a leftover file's wider mode would be kept: O_NOFOLLOW, then 0600 whatever it was.
    let fh: FileHandle;
    try {
      fh = await open(part, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new S3Error('failed', `${part} is a symbolic link; not downloaded (remove it)`);
      throw err;
    }
    let closed = false;
    try {
      await fh.chmod(0o600);
      const sink = new Writable({
        write(chunk: Buffer, _enc, cb): void {
          // Every byte: one write(2) may take fewer (a disk filling up: the rest then fails with ENOSPC), and a
          // short last write went unnoticed, renaming a truncated file into place as checked.
          void (async () => {
            for (let off = 0; off < chunk.length; ) off += (await fh.write(chunk, off, chunk.length - off, null)).bytesWritten;
          })().then(() => cb(), cb);
        },
      });
      const r = await this.download(key, sink, onProgress, signal, async (size) => {
        const st = await statfs(dirname(file));
        const free = st.bavail * st.bsize;
        if (size > free) throw new S3Error('failed', `${this.url(key)} is ${size} bytes but ${dirname(file)} has ${free} bytes free; not downloaded`);
      });
      await fh.sync();
      await fh.close();
      closed = true;
      await rename(part, file);
      return r;
    } catch (err) {
      if (!closed) await fh.close().catch(() => undefined);
      await unlink(part).catch(() => undefined);
      throw err;
    }
  }

  /** remove deletes `key`. Errors: S3Error. */
  async remove(key: string): Promise<void> {
    try {
      await this.client.send(new (await sdk()).s3.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      throw classify(err, 'delete', this.url(key));
    }
  }

  /**
   * applyRetention deletes the scheduled archives of `db` under the prefix
   * that `policy` does not keep (objects with other names are left alone);
   * the archive named `protect` (the run's own upload) is always kept. It
   * weighs the newest LIST_KEPT_MAX archives of `db` (list's bound: `listing`
   * sets it and the page size): older ones are left to later runs, which see
   * them once this run's removals have made room.
   */
  async applyRetention(
    db: string,
    policy: RetentionPolicy,
    nowMs: number,
    protect?: string,
    listing: Pick<ListOptions, 'keptMax' | 'pageSize'> = {},
  ): Promise<{ kept: RemoteSnapshot[]; removed: RemoteSnapshot[] }> {
    const mine = await this.list({ ...listing, match: (name) => SNAPSHOT_NAME_PATTERN.exec(name)?.[1] === db });
    const plan = planRetention(mine, policy, nowMs, protect);
    for (const o of plan.remove) await this.remove(o.key);
    return { kept: plan.keep, removed: plan.remove };
  }

  close(): void {
    this.client.destroy();
  }
}

/** untilAborted: `p`, or the signal's reason once it is aborted (p is then left to settle unheard). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

function abortControllerOf(signal: AbortSignal): AbortController {
  const c = new AbortController();
  if (signal.aborted) c.abort();
  else signal.addEventListener('abort', () => c.abort(), { once: true });
  return c;
}

/**
 * S3Server: a real S3-compatible server (s3rver, a dev dependency) on
 * 127.0.0.1 in a temp dir, with bucket `snaps`, behind a TCP proxy the test
 * can turn against the client: `cutAfterBytes` cuts connections once they
 * have carried that many request bytes (`cuts` of them; Infinity for all),
 * and `readOnly` answers every write (PUT, POST, DELETE) with S3's own 403
 * AccessDenied, as a bucket policy denying s3:PutObject does; `deniedHeads`
 * answers a HEAD of a path containing it with 403 (no body, as S3 answers a
 * HEAD the credentials may not read: a policy allowing s3:ListBucket but not
 * s3:GetObject on that object); `stall` swallows every request byte from then
 * on, answering nothing and closing nothing (a server or a middlebox that hangs);
 * `fakePuts` answers every PUT with 200 and an ETag at once, storing nothing (a
 * store that acknowledges a write it lost).
 *
 * `requests` records each request the proxy forwards (method, path, headers, and for one with a
 * Content-Length body its size and CRC-32), so a test sees how the client signed and checksummed
 * it. Started with `{ tls: true }`, the proxy speaks HTTPS (a certificate of a fresh CA, `caPem`,
 * for 127.0.0.1) in front of s3rver's plain HTTP, as a TLS-terminating gateway would.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { crc32 } from 'node:zlib';

import { createCa, issueNodeCert } from '../../../src/tls/certs.js';

/** RecordedRequest: a request as the proxy forwarded it; bodyCrc32 is the body's CRC-32 as S3's x-amz-checksum-crc32 writes it (base64 of 4 bytes, big-endian). */
export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  bodyBytes: number;
  bodyCrc32: string;
}

/** REQUESTS_KEPT_MAX: the requests `requests` keeps (the oldest dropped past it). */
const REQUESTS_KEPT_MAX = 10_000;
/** HEAD_BYTES_MAX: a request head longer than this is not parsed (the rest of that connection is not recorded). */
const HEAD_BYTES_MAX = 64 * 1024;

/**
 * RequestLog follows one connection's request bytes (heads and Content-Length bodies, as the AWS SDK sends them) and
 * records each request into `into`. A body without a Content-Length (chunked) ends the recording of that connection.
 */
class RequestLog {
  #head = Buffer.alloc(0);
  #body: { req: RecordedRequest; left: number; crc: number } | null = null;
  #off = false;

  constructor(private readonly into: RecordedRequest[]) {}

  feed(d: Buffer): void {
    let at = 0;
    while (at < d.length && !this.#off) {
      if (this.#body !== null) {
        const n = Math.min(this.#body.left, d.length - at);
        this.#body.crc = crc32(d.subarray(at, at + n), this.#body.crc);
        this.#body.left -= n;
        this.#body.req.bodyBytes += n;
        at += n;
        if (this.#body.left === 0) this.#endBody();
        continue;
      }
      this.#head = Buffer.concat([this.#head, d.subarray(at)]);
      const end = this.#head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.#head.length > HEAD_BYTES_MAX) this.#off = true;
        return;
      }
      const lines = this.#head.subarray(0, end).toString('latin1').split('\r\n');
      const rest = this.#head.subarray(end + 4);
      this.#head = Buffer.alloc(0);
      const [method = '', path = ''] = (lines[0] ?? '').split(' ');
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const req: RecordedRequest = { method, path, headers, bodyBytes: 0, bodyCrc32: '' };
      this.into.push(req);
      if (this.into.length > REQUESTS_KEPT_MAX) this.into.shift();
      if (headers['transfer-encoding'] !== undefined) {
        this.#off = true;
        return;
      }
      const length = Number(headers['content-length'] ?? '0');
      if (length > 0) this.#body = { req, left: length, crc: 0 };
      if (rest.length > 0) this.feed(rest);
      return; // the rest of `d` was taken into the head, and fed on from there
    }
  }

  #endBody(): void {
    const b = this.#body as { req: RecordedRequest; crc: number };
    const out = Buffer.alloc(4);
    out.writeUInt32BE(b.crc >>> 0);
    b.req.bodyCrc32 = out.toString('base64');
    this.#body = null;
  }
}

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverCtor = new (o: Record<string, unknown>) => S3rverInstance;

export const BUCKET = 'snaps';
export const ACCESS_KEY = 'S3RVER';
export const SECRET_KEY = 'S3RVER';

const ACCESS_DENIED = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>test</RequestId></Error>',
);

export class S3Server {
  cutAfterBytes = Infinity;
  cuts = 0;
  readOnly = false;
  deniedHeads: string | null = null;
  stall = false;
  fakePuts = false;
  /** cutsDone: connections cut so far. */
  cutsDone = 0;
  /** requests: the requests forwarded so far (RecordedRequest; the test empties it as it likes). */
  readonly requests: RecordedRequest[] = [];
  /** caPem: the CA of the proxy's certificate (with `tls`), else ''. */
  caPem = '';
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly dir: string,
    private readonly s3: S3rverInstance,
    private readonly s3Port: number,
    private readonly proxy: Server,
    /** endpoint: the proxy's URL (what clients use). */
    readonly endpoint: string,
  ) {}

  static async start(opts: { readonly tls?: boolean } = {}): Promise<S3Server> {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-s3-'));
    const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
    const s3 = new S3rver({ address: '127.0.0.1', port: 0, directory: dir, silent: true, configureBuckets: [{ name: BUCKET }] });
    const { port } = await s3.run();
    const holder: { self: S3Server | null } = { self: null };
    let caPem = '';
    let proxy: Server;
    if (opts.tls === true) {
      const ca = await createCa({ commonName: 's3 test CA' });
      const cert = await issueNodeCert(ca, { id: 's3', ips: ['127.0.0.1'] });
      caPem = ca.certPem;
      proxy = createTlsServer({ key: cert.keyPem, cert: cert.certPem }, (c) => holder.self?.onConnection(c));
    } else {
      proxy = createServer((c) => holder.self?.onConnection(c));
    }
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const p = (proxy.address() as { port: number }).port;
    const self = new S3Server(dir, s3, port, proxy, `${opts.tls === true ? 'https' : 'http'}://127.0.0.1:${p}`);
    self.caPem = caPem;
    holder.self = self;
    return self;
  }

  /** env: the environment a CLI or serve child needs to reach this server. */
  env(): Record<string, string> {
    return {
      AWS_ACCESS_KEY_ID: ACCESS_KEY,
      AWS_SECRET_ACCESS_KEY: SECRET_KEY,
      AWS_REGION: 'us-east-1',
      SNAPCOORD_S3_ENDPOINT: this.endpoint,
      SNAPCOORD_S3_PATH_STYLE: 'true',
    };
  }

  /** objectFiles: the files s3rver keeps object bodies in (to corrupt one behind its back). */
  async objectFiles(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.name.endsWith('._S3rver_object')) out.push(p);
      }
    };
    await walk(join(this.dir, BUCKET));
    return out;
  }

  private onConnection(client: Socket): void {
    const upstream = connect(this.s3Port, '127.0.0.1');
    this.sockets.add(client).add(upstream);
    let sent = 0;
    let head = '';
    let denied = false;
    const log = new RequestLog(this.requests);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    // Requests go through the checks below; answers are piped (with backpressure, ending the client
    // only once every buffered byte is written: the server closing an idle keep-alive connection must
    // not cut an answer the client is still reading).
    upstream.pipe(client);
    client.on('data', (d: Buffer) => {
      if (denied) return;
      if (this.stall) {
        // The client's side stays open and silent: the server closing its side (an idle keep-alive timeout) must not reach it.
        upstream.unpipe(client);
        upstream.destroy();
        return;
      }
      if (this.readOnly && sent === 0) {
        head += d.toString('latin1');
        const method = /^([A-Z]+) /.exec(head)?.[1];
        if (method !== undefined && method !== 'GET' && method !== 'HEAD') {
          denied = true;
          upstream.unpipe(client);
          upstream.destroy();
          client.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: ${ACCESS_DENIED.length}\r\nConnection: close\r\n\r\n${ACCESS_DENIED.toString()}`);
          return;
        }
      }
      // Each request's head starts a chunk of its own (the client writes it before the body): on a reused connection too.
      if (this.fakePuts && d.subarray(0, 4).toString('latin1') === 'PUT ') {
        denied = true;
        upstream.unpipe(client);
        upstream.destroy();
        client.end('HTTP/1.1 200 OK\r\nETag: "d41d8cd98f00b204e9800998ecf8427e"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      // A HEAD has no body: each one starts a chunk of its own on a connection (the client awaits each answer).
      if (this.deniedHeads !== null && d.subarray(0, 5).toString('latin1') === 'HEAD ') {
        const path = /^HEAD (\S+) /.exec(d.toString('latin1'))?.[1] ?? '';
        if (decodeURIComponent(path).includes(this.deniedHeads)) {
          denied = true;
          upstream.unpipe(client);
          upstream.destroy();
          client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
      }
      log.feed(d);
      sent += d.length;
      if (sent > this.cutAfterBytes && this.cutsDone < this.cuts) {
        this.cutsDone++;
        kill();
        return;
      }
      if (!upstream.write(d)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
    });
    client.on('end', () => upstream.end());
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', () => upstream.destroy());
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.proxy.close(() => r()));
    await this.s3.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

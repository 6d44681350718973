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
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly dir: string,
    private readonly s3: S3rverInstance,
    private readonly s3Port: number,
    private readonly proxy: Server,
    /** endpoint: the proxy's URL (what clients use). */
    readonly endpoint: string,
  ) {}

  static async start(): Promise<S3Server> {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-s3-'));
    const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;
    const s3 = new S3rver({ address: '127.0.0.1', port: 0, directory: dir, silent: true, configureBuckets: [{ name: BUCKET }] });
    const { port } = await s3.run();
    const holder: { self: S3Server | null } = { self: null };
    const proxy = createServer((c) => holder.self?.onConnection(c));
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const p = (proxy.address() as { port: number }).port;
    const self = new S3Server(dir, s3, port, proxy, `http://127.0.0.1:${p}`);
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

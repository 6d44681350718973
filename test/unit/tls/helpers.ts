/**
 * Helpers for the TLS tests: a real grpc-js server on 127.0.0.1:0 with one
 * trivial unary method that answers the caller's member id (from
 * call.getAuthContext()), a client call with a deadline, and a raw TLS
 * handshake that reports the serial of the certificate the server presented;
 * a CA, member certificates and a peer CRL in a temp dir (crlFixture).
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { memberIdOf } from '../../../src/tls/credentials.js';
import type { CertKeyPem } from '../../../src/tls/certs.js';
import { PeerCrl, caFiles, createCrl, nodeCertFiles, readCa, writeCa, writeNodeCert } from '../../../src/tls/index.js';

const WHO_AM_I_PATH = '/snapcoord.test.Tls/WhoAmI';
const identity = (b: Buffer): Buffer => b;

/** WHO_AM_I: a unary method that answers "<member id or -> <transportSecurityType or ->". */
const service: grpc.ServiceDefinition = {
  whoAmI: {
    path: WHO_AM_I_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: 'whoAmI',
  },
};

/** TestServer: a running server, how many calls its handler saw, and its port. */
export interface TestServer {
  readonly port: number;
  readonly server: grpc.Server;
  handled: number;
  close(): Promise<void>;
}

/** startServer binds a grpc-js server with `creds` on 127.0.0.1:0. */
export async function startServer(creds: grpc.ServerCredentials): Promise<TestServer> {
  const server = new grpc.Server();
  const ts: TestServer = {
    port: 0,
    server,
    handled: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000).unref();
      }),
  };
  server.addService(service, {
    whoAmI: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      ts.handled += 1;
      const auth = call.getAuthContext();
      cb(null, Buffer.from(`${memberIdOf(auth.sslPeerCertificate) ?? '-'} ${auth.transportSecurityType ?? '-'}`));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', creds, (err, p) => (err !== null ? reject(err) : resolve(p))),
  );
  (ts as { port: number }).port = port;
  return ts;
}

/** callWhoAmI makes one call to 127.0.0.1:port (or `host`:port) and resolves with the answer or the ServiceError. */
export function callWhoAmI(port: number, creds: grpc.ChannelCredentials, host = '127.0.0.1'): Promise<string | grpc.ServiceError> {
  const client = new grpc.Client(`${host}:${port}`, creds);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      WHO_AM_I_PATH,
      identity,
      identity,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, res) => {
        client.close();
        resolve(err !== null && err !== undefined ? err : (res ?? Buffer.alloc(0)).toString());
      },
    );
  });
}

/** expectRefused: `r` is an UNAVAILABLE error (the connection never got to a call). */
export function isRefused(r: string | grpc.ServiceError): r is grpc.ServiceError {
  return typeof r !== 'string' && r.code === grpc.status.UNAVAILABLE;
}

/** describe a call result for assertion messages. */
export function show(r: string | grpc.ServiceError): string {
  return typeof r === 'string' ? `answer "${r}"` : `${grpc.status[r.code]}: ${r.details}`;
}

/**
 * serverCertSerial completes a TLS handshake with 127.0.0.1:port (trusting
 * `caPem`, offering h2, presenting `client` when given) and resolves with the
 * serial number (hex, upper case) of the certificate the server presented.
 */
export function serverCertSerial(port: number, caPem: string, client?: CertKeyPem): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      ca: caPem,
      ALPNProtocols: ['h2'],
      ...(client !== undefined ? { cert: client.certPem, key: client.keyPem } : {}),
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error('TLS handshake timed out')));
    socket.once('secureConnect', () => {
      const serial = socket.getPeerCertificate().serialNumber.toUpperCase();
      socket.destroy();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

/** TmpDir: a temp directory removed by cleanup(). */
export async function tmpDir(prefix = 'snapcoord-tls-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** writePair writes a certificate and key to `<dir>/<name>.pem` and `<dir>/<name>-key.pem` and returns the paths. */
export async function writePair(dir: string, name: string, pair: CertKeyPem): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}-key.pem`);
  await writeFile(certFile, pair.certPem);
  await writeFile(keyFile, pair.keyPem, { mode: 0o600 });
  return { certFile, keyFile };
}

/** sleep resolves after ms. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** waitFor polls `probe` until it returns true or timeoutMs passes (then throws with `what`). */
export async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * CrlFixture: a temp dir holding a cluster CA (`writeCa`), a member
 * certificate for each id (127.0.0.1 in its SANs, `writeNodeCert`) and a peer
 * CRL file (`crl.pem`), and the PeerCrl reading it (as serve's --peer-crl).
 */
export interface CrlFixture {
  readonly dir: string;
  readonly caFile: string;
  readonly crlFile: string;
  readonly crl: PeerCrl;
  /** serialOf: the serial of `id`'s certificate, as X509Certificate spells it. */
  serialOf(id: string): Promise<string>;
  /** revoke rewrites the CRL to revoke `id`'s certificate, has the PeerCrl read it, asserts it revokes it; resolves with the serial. */
  revoke(id: string): Promise<string>;
  /** close stops the PeerCrl and removes the dir. */
  close(): Promise<void>;
}

/** crlFixture makes a CrlFixture under a new temp dir `prefix`: `revoked` ids' certificates in the CRL from the start; refreshMs as PeerCrl.open takes it (default its own). */
export async function crlFixture(prefix: string, ids: readonly string[], opts: { readonly revoked?: readonly string[]; readonly refreshMs?: number } = {}): Promise<CrlFixture> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await writeCa(dir);
  for (const id of ids) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
  const caFile = caFiles(dir).caFile;
  const crlFile = join(dir, 'crl.pem');
  const serialOf = async (id: string): Promise<string> => new X509Certificate(await readFile(nodeCertFiles(dir, id).certFile)).serialNumber;
  const writeCrl = async (revoked: readonly string[]): Promise<void> =>
    writeFile(crlFile, await createCrl(await readCa(dir), await Promise.all(revoked.map(async (id) => ({ serialNumber: await serialOf(id) })))));
  await writeCrl(opts.revoked ?? []);
  const crl = await PeerCrl.open({ crlFile, caFile, ...(opts.refreshMs !== undefined ? { refreshMs: opts.refreshMs } : {}) });
  return {
    dir,
    caFile,
    crlFile,
    crl,
    serialOf,
    async revoke(id) {
      await writeCrl([id]);
      await crl.refresh();
      const serial = await serialOf(id);
      assert.equal(crl.isRevoked(serial), true, `the CRL revokes ${id}`);
      return serial;
    },
    async close() {
      crl.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A call a follower forwards to the leader's client plane carries the
 * caller's API key (review16). Under TLS with the cluster CA every member's
 * certificate passes the CA and host checks at an address members share, so
 * a member listening where the forwarder dials the leader was handed the
 * callers' keys. LeaderForwarder dials each member with credentialsFor(id):
 * a certificate naming another member is refused; one naming no member (a
 * client-plane certificate of its own) is taken.
 */
import { strict as assert } from 'node:assert';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { LeaderForwarder, type NodeView } from '../../../src/api/leader-forwarder.js';
import { KVServiceService, type PutRequest, type PutResponse } from '../../../src/gen/snapcoord/v1/kv.js';
import { caFiles, memberChannelCredentialsFromFiles, nodeCertFiles, readCa, writeCa, writeNodeCert, type CertKeyPem } from '../../../src/tls/index.js';
import { serverCredentialsFromFiles } from '../../../src/tls/credentials.js';
import { x509 } from '../../../src/tls/x509.js';

const KEY = 'caller-key-0123456789abcdef';

/** noMemberCert: a CA-signed server certificate for 127.0.0.1 that names no member (a client plane's own). */
async function noMemberCert(ca: CertKeyPem): Promise<CertKeyPem> {
  const lib = x509();
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const signingKey = await webcrypto.subtle.importKey('pkcs8', createPrivateKey(ca.keyPem).export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']);
  const cert = await lib.X509CertificateGenerator.create({
    subject: 'CN=client-plane',
    issuer: new X509Certificate(ca.certPem).subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    // A server certificate (serverAuth): one with no extended key usage is a client's and refused (review18).
    extensions: [new lib.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]), new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.serverAuth])],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: lib.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

/** A KV server presenting `certFile`/`keyFile` that records the authorization of every Put it is handed. */
async function kvServer(certFile: string, keyFile: string): Promise<{ address: string; seen: string[]; close: () => void }> {
  const server = new grpc.Server();
  const seen: string[] = [];
  const impl: Partial<grpc.UntypedServiceImplementation> = {
    put: (call: grpc.ServerUnaryCall<PutRequest, PutResponse>, cb: grpc.sendUnaryData<PutResponse>) => {
      seen.push(String(call.metadata.get('authorization')[0] ?? ''));
      cb(null, { header: { memberId: 'n2', raftTerm: 1n, revision: 7n }, prevKv: undefined, replayed: false });
    },
  };
  server.addService(KVServiceService, impl as grpc.UntypedServiceImplementation);
  const creds = serverCredentialsFromFiles({ certFile, keyFile, requireClientCert: false });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err !== null ? reject(err) : resolve(p))));
  return { address: `127.0.0.1:${port}`, seen, close: () => server.forceShutdown() };
}

describe('forwarding to the leader: the member dialled must be the one that answers (review16)', function () {
  this.timeout(30_000);
  let dir: string;
  let forwarder: LeaderForwarder;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-forward-identity-'));
    await writeCa(dir);
    for (const id of ['n2', 'n3']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
    const own = await noMemberCert(await readCa(dir));
    await writeFile(join(dir, 'plane.pem'), own.certPem);
    await writeFile(join(dir, 'plane-key.pem'), own.keyPem, { mode: 0o600 });
    const members = memberChannelCredentialsFromFiles({ caFile: caFiles(dir).caFile });
    forwarder = new LeaderForwarder({ id: 'n1' } as NodeView, { dial: { credentials: members.any }, credentialsFor: (id) => members.forMember(id, true) });
  });

  after(async () => {
    forwarder.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function forwardPut(address: string): Promise<string> {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${KEY}`);
    try {
      const r = await forwarder.kv({ id: 'n2', address }).put({ key: Buffer.from('k'), value: Buffer.from('v') }, { deadlineMs: 5_000, metadata: md });
      return `revision ${r.header?.revision ?? '?'}`;
    } catch (err) {
      return grpc.status[(err as grpc.ServiceError).code] ?? String(err);
    }
  }

  it("n2's certificate (the control), or one naming no member: the call reaches n2's plane", async () => {
    for (const [cert, key] of [
      [nodeCertFiles(dir, 'n2').certFile, nodeCertFiles(dir, 'n2').keyFile],
      [join(dir, 'plane.pem'), join(dir, 'plane-key.pem')],
    ] as const) {
      const s = await kvServer(cert, key);
      try {
        assert.equal(await forwardPut(s.address), 'revision 7');
        assert.deepEqual(s.seen, [`Bearer ${KEY}`]);
      } finally {
        s.close();
      }
    }
  });

  it("n3's certificate where n1 forwards to n2: refused at the handshake, the caller's key never sent", async () => {
    const s = await kvServer(nodeCertFiles(dir, 'n3').certFile, nodeCertFiles(dir, 'n3').keyFile);
    try {
      assert.equal(await forwardPut(s.address), 'UNAVAILABLE');
      assert.deepEqual(s.seen, [], 'n3 was handed the key');
    } finally {
      s.close();
    }
  });
});

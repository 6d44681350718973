/**
 * Mutual TLS on real grpc-js servers (127.0.0.1:0) with credentials from
 * files: who gets in, who is refused at the handshake, what the handler sees
 * of the caller (getAuthContext + memberIdOf), the client's host name and
 * member checks of the server, and checkTlsFiles' messages.
 */
import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createCa, issueNodeCert, readCa, writeCa, writeNodeCert, type CertKeyPem } from '../../../src/tls/certs.js';
import { channelCredentialsFromFiles, checkTlsFiles, serverCredentialsFromFiles } from '../../../src/tls/credentials.js';
import { callWhoAmI, isRefused, show, startServer, tmpDir, writePair, type TestServer } from './helpers.js';

const DAY_MS = 86_400_000;

describe('tls credentials: mutual TLS on a real grpc-js server', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  let ca: { caFile: string; caKeyFile: string };
  let n1: { certFile: string; keyFile: string };
  let n2: { certFile: string; keyFile: string };
  let servers: TestServer[] = [];

  before(async () => {
    ({ dir, cleanup } = await tmpDir());
    ca = await writeCa(dir);
    n1 = await writeNodeCert(dir, 'n1', { dns: ['localhost'], ips: ['127.0.0.1'] });
    n2 = await writeNodeCert(dir, 'n2', { ips: ['127.0.0.1'] });
  });

  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
  });

  after(async () => {
    await cleanup?.();
  });

  async function mtlsServer(): Promise<TestServer> {
    const s = await startServer(serverCredentialsFromFiles({ ...n1, caFile: ca.caFile, requireClientCert: true }));
    servers.push(s);
    return s;
  }

  it('serves a client with a CA-signed certificate, and the handler sees its member id (getAuthContext().sslPeerCertificate)', async () => {
    const s = await mtlsServer();
    const r = await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: ca.caFile, ...n2 }));
    assert.equal(r, 'n2 ssl', show(r));
    assert.equal(s.handled, 1);
  });

  it('refuses at the handshake a client with no certificate', async () => {
    const s = await mtlsServer();
    const r = await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: ca.caFile }));
    assert.ok(isRefused(r), show(r));
    assert.equal(s.handled, 0, 'no handler ran');
  });

  it('refuses at the handshake a client whose certificate comes from another CA (even naming a member)', async () => {
    const s = await mtlsServer();
    const { dir: otherDir, cleanup: otherCleanup } = await tmpDir();
    try {
      const otherCa = await createCa({ commonName: 'snapcoord CA' }); // same name, different key
      const forged = await writePair(otherDir, 'n2', await issueNodeCert(otherCa, { id: 'n2', ips: ['127.0.0.1'] }));
      // The client trusts the real CA (so it accepts the server) but presents the forged certificate.
      const r = await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: ca.caFile, ...forged, checkChain: false }));
      assert.ok(isRefused(r), show(r));
      assert.equal(s.handled, 0, 'no handler ran');
    } finally {
      await otherCleanup();
    }
  });

  it('refuses at the handshake a client whose certificate has expired', async () => {
    const s = await mtlsServer();
    const expired = await issueNodeCert(await readCa(dir), {
      id: 'n3',
      ips: ['127.0.0.1'],
      notBefore: new Date(Date.now() - 10 * DAY_MS),
      notAfter: new Date(Date.now() - DAY_MS),
    });
    const { dir: d2, cleanup: c2 } = await tmpDir();
    try {
      const files = await writePair(d2, 'n3', expired);
      assert.throws(() => channelCredentialsFromFiles({ caFile: ca.caFile, ...files }), /n3\.pem: expired on /);
      // Our own check refuses it at start; a client that skips the check (another implementation) is refused by the server.
      const raw = grpc.credentials.createSsl(Buffer.from((await readCa(dir)).certPem), Buffer.from(expired.keyPem), Buffer.from(expired.certPem));
      const r = await callWhoAmI(s.port, raw);
      assert.ok(isRefused(r), show(r));
      assert.equal(s.handled, 0, 'no handler ran');
      // The same client with a valid certificate gets in (the refusal was about the certificate).
      const fresh = await issueNodeCert(await readCa(dir), { id: 'n3', ips: ['127.0.0.1'] });
      const ok = await callWhoAmI(s.port, grpc.credentials.createSsl(Buffer.from((await readCa(dir)).certPem), Buffer.from(fresh.keyPem), Buffer.from(fresh.certPem)));
      assert.equal(ok, 'n3 ssl', show(ok));
    } finally {
      await c2();
    }
  });

  it('without requireClientCert serves a client with no certificate, with no identity', async () => {
    const s = await startServer(serverCredentialsFromFiles({ ...n1, caFile: ca.caFile, requireClientCert: false }));
    servers.push(s);
    // grpc-js 1.14 answers getAuthContext() with {} unless the client presented a verified certificate:
    // no member id and not even transportSecurityType, although the connection is TLS.
    assert.equal(await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: ca.caFile })), '- -');
    assert.equal(await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: ca.caFile, ...n2 })), 'n2 ssl');
  });

  it('the client checks the server certificate: host name / IP SANs, the CA, and optionally the member id', async () => {
    const s = await mtlsServer();
    const creds = (extra: { serverMemberId?: string } = {}): grpc.ChannelCredentials => channelCredentialsFromFiles({ caFile: ca.caFile, ...n2, ...extra });
    assert.equal(await callWhoAmI(s.port, creds(), 'localhost'), 'n2 ssl', 'DNS SAN localhost');
    assert.equal(await callWhoAmI(s.port, creds({ serverMemberId: 'n1' })), 'n2 ssl', 'the server is n1');
    const wrongMember = await callWhoAmI(s.port, creds({ serverMemberId: 'n9' }));
    assert.ok(isRefused(wrongMember), show(wrongMember));

    // n2's certificate has no DNS name: a server presenting it is refused when dialled as localhost.
    const s2 = await startServer(serverCredentialsFromFiles({ ...n2, caFile: ca.caFile, requireClientCert: true }));
    servers.push(s2);
    assert.equal(await callWhoAmI(s2.port, creds()), 'n2 ssl', 'IP SAN 127.0.0.1');
    const noDns = await callWhoAmI(s2.port, creds(), 'localhost');
    assert.ok(isRefused(noDns), show(noDns));
    assert.equal(s2.handled, 1);

    // A client trusting another CA refuses the server.
    const { dir: d2, cleanup: c2 } = await tmpDir();
    try {
      const other = await writeCa(d2);
      const r = await callWhoAmI(s.port, channelCredentialsFromFiles({ caFile: other.caFile }));
      assert.ok(isRefused(r), show(r));
    } finally {
      await c2();
    }
  });

  it('refuses bad configurations when the credentials are made', async () => {
    assert.throws(() => serverCredentialsFromFiles({ ...n1, requireClientCert: true }), /requireClientCert needs caFile/);
    assert.throws(() => serverCredentialsFromFiles({ ...n1, keyFile: n2.keyFile, requireClientCert: false }), /n2-key\.pem: the key does not belong to the certificate .*n1\.pem/);
    assert.throws(() => channelCredentialsFromFiles({ caFile: join(dir, 'nope.pem') }), /nope\.pem: missing/);
    assert.throws(() => channelCredentialsFromFiles({ caFile: ca.caFile, certFile: n2.certFile }), /needs its key/);
  });
});

describe('tls credentials: checkTlsFiles names the file and the problem', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  let caPair: CertKeyPem;
  let caFile: string;
  let good: { certFile: string; keyFile: string };

  before(async () => {
    ({ dir, cleanup } = await tmpDir());
    caFile = (await writeCa(dir)).caFile;
    caPair = await readCa(dir);
    good = await writeNodeCert(dir, 'n1', { dns: ['localhost'], ips: ['127.0.0.1', '::1'] });
  });

  after(async () => {
    await cleanup?.();
  });

  it('answers expiry, identities and member id for good files', () => {
    const info = checkTlsFiles({ ...good, caFile });
    assert.deepEqual(info.identities, ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', 'URI:urn:snapcoord:node:n1']);
    assert.equal(info.memberId, 'n1');
    const days = (info.notAfter.getTime() - Date.now()) / DAY_MS;
    assert.ok(days > 824 && days <= 825, `825 days, got ${days}`);
    const caOnly = checkTlsFiles({ caFile });
    assert.deepEqual(caOnly.identities, []);
    assert.ok((caOnly.notAfter.getTime() - Date.now()) / DAY_MS > 3649);
  });

  it('a missing file', () => {
    assert.throws(() => checkTlsFiles({ ...good, caFile: join(dir, 'gone.pem') }), (err: Error) => err.message === `${join(dir, 'gone.pem')}: missing`);
    assert.throws(() => checkTlsFiles({ certFile: join(dir, 'x.pem'), keyFile: good.keyFile }), /x\.pem: missing/);
  });

  it('an unreadable file', async function () {
    if (process.getuid?.() === 0) this.skip(); // root reads anything
    const f = join(dir, 'locked.pem');
    await writeFile(f, caPair.certPem);
    await chmod(f, 0o000);
    assert.throws(() => checkTlsFiles({ caFile: f }), /locked\.pem: cannot be read \(EACCES\)/);
  });

  it('a file that is not PEM', async () => {
    const junk = join(dir, 'junk.pem');
    await writeFile(junk, 'hello\n');
    assert.throws(() => checkTlsFiles({ caFile: junk }), /junk\.pem: not a PEM certificate/);
    assert.throws(() => checkTlsFiles({ certFile: junk, keyFile: good.keyFile }), /junk\.pem: not a PEM certificate/);
    assert.throws(() => checkTlsFiles({ certFile: good.certFile, keyFile: junk }), /junk\.pem: not a PEM private key/);
  });

  it('a key that does not match the certificate', async () => {
    const other = await writeNodeCert(dir, 'n2', { ips: ['127.0.0.1'] });
    assert.throws(() => checkTlsFiles({ certFile: good.certFile, keyFile: other.keyFile, caFile }), /n2-key\.pem: the key does not belong to the certificate .*n1\.pem/);
  });

  it('an expired or not yet valid certificate', async () => {
    const expired = await writePair(dir, 'old', await issueNodeCert(caPair, { id: 'old', notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) }));
    assert.throws(() => checkTlsFiles({ ...expired, caFile }), /old\.pem: expired on \d{4}-\d\d-\d\dT/);
    const future = await writePair(dir, 'future', await issueNodeCert(caPair, { id: 'future', notBefore: new Date(Date.now() + DAY_MS), days: 10 }));
    assert.throws(() => checkTlsFiles({ ...future, caFile }), /future\.pem: not valid before /);
    const expiredCa = await createCa({ notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) });
    const expiredCaFile = join(dir, 'expired-ca.pem');
    await writeFile(expiredCaFile, expiredCa.certPem);
    assert.throws(() => checkTlsFiles({ caFile: expiredCaFile }), /expired-ca\.pem: expired on /);
  });

  it('a certificate not signed by the CA (unless checkChain is false); a CA bundle of two works', async () => {
    const otherCa = await createCa();
    const stray = await writePair(dir, 'stray', await issueNodeCert(otherCa, { id: 'n1' }));
    assert.throws(() => checkTlsFiles({ ...stray, caFile }), /stray\.pem: not signed by the CA in .*ca\.pem/);
    assert.equal(checkTlsFiles({ ...stray, caFile, checkChain: false }).memberId, 'n1');
    const bundle = join(dir, 'bundle.pem');
    await writeFile(bundle, caPair.certPem + otherCa.certPem);
    assert.equal(checkTlsFiles({ ...stray, caFile: bundle }).memberId, 'n1');
    assert.equal(checkTlsFiles({ ...good, caFile: bundle }).memberId, 'n1');
  });
});

/**
 * Issuing certificates: what createCa and issueNodeCert put in them (checked
 * with node:crypto and by parsing the extensions), what they refuse, and the
 * files writeCa, writeNodeCert and ensureLocalTls leave behind (modes,
 * atomic writes, no CA overwritten, reuse of what is still good).
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  createCa,
  ensureLocalTls,
  localCaKeyFile,
  issueNodeCert,
  readCa,
  writeCa,
  writeNodeCert,
  type CertKeyPem,
} from '../../../src/tls/certs.js';
import { x509 } from '../../../src/tls/x509.js';
import { tmpDir } from './helpers.js';

const X = x509();

const DAY_MS = 86_400_000;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

function daysLeft(cert: X509Certificate): number {
  return (Date.parse(cert.validTo) - Date.now()) / DAY_MS;
}

async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

describe('tls certs: createCa and issueNodeCert', function () {
  this.timeout(30_000);
  let ca: CertKeyPem;
  let caCert: X509Certificate;

  before(async () => {
    ca = await createCa();
    caCert = new X509Certificate(ca.certPem);
  });

  it('makes a self-signed P-256 CA for 10 years with cA, keyCertSign and cRLSign', () => {
    assert.equal(caCert.ca, true);
    assert.ok(caCert.checkIssued(caCert) && caCert.verify(caCert.publicKey), 'self-signed');
    assert.equal(caCert.subject, 'CN=snapcoord CA');
    const key = createPrivateKey(ca.keyPem);
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(caCert.checkPrivateKey(key));
    const left = daysLeft(caCert);
    assert.ok(left > 3649 && left <= 3650, `10 years, got ${left} days`);
    const parsed = new X.X509Certificate(caCert.raw);
    assert.equal((parsed.signatureAlgorithm as { name?: string }).name, 'ECDSA');
    assert.equal((parsed.signatureAlgorithm as { hash?: { name: string } }).hash?.name, 'SHA-256');
    const bc = parsed.getExtension(X.BasicConstraintsExtension);
    assert.ok(bc?.ca === true && bc.critical, 'basicConstraints cA, critical');
    const ku = parsed.getExtension(X.KeyUsagesExtension);
    assert.ok(ku !== null && ku.critical);
    assert.equal(ku.usages, X.KeyUsageFlags.keyCertSign | X.KeyUsageFlags.cRLSign);
  });

  it('issues a node certificate that chains to the CA, with the DNS, IP and member URI SANs and both EKUs', async () => {
    const n = await issueNodeCert(ca, { id: 'n1', dns: ['localhost', 'n1.internal'], ips: ['127.0.0.1', '::1', '10.0.0.7'] });
    const cert = new X509Certificate(n.certPem);
    assert.ok(cert.checkIssued(caCert), 'issuer is the CA');
    assert.ok(cert.verify(caCert.publicKey), 'signed by the CA key');
    assert.ok(!cert.verify(new X509Certificate((await createCa()).certPem).publicKey), 'not by another CA');
    assert.equal(cert.ca, false);
    assert.equal(cert.subject, 'CN=n1');
    assert.equal(
      cert.subjectAltName,
      'DNS:localhost, DNS:n1.internal, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7, URI:urn:snapcoord:node:n1',
    );
    assert.deepEqual([...(cert.keyUsage ?? [])].sort(), [SERVER_AUTH, CLIENT_AUTH].sort(), 'extended key usage');
    assert.ok(cert.checkPrivateKey(createPrivateKey(n.keyPem)));
    assert.equal(createPrivateKey(n.keyPem).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.ok(cert.checkHost('localhost') !== undefined && cert.checkIP('127.0.0.1') !== undefined && cert.checkIP('::1') !== undefined);
    const left = daysLeft(cert);
    assert.ok(left > 824 && left <= 825, `825 days, got ${left}`);
    const parsed = new X.X509Certificate(cert.raw);
    assert.equal(parsed.getExtension(X.BasicConstraintsExtension)?.ca, false);
    assert.equal(parsed.getExtension(X.KeyUsagesExtension)?.usages, X.KeyUsageFlags.digitalSignature);
    const aki = parsed.getExtension(X.AuthorityKeyIdentifierExtension)?.keyId;
    const ski = new X.X509Certificate(caCert.raw).getExtension(X.SubjectKeyIdentifierExtension)?.keyId;
    assert.ok(aki !== undefined && aki === ski, 'authority key id is the CA subject key id');
  });

  it('gives every certificate its own serial and key; honours days and notBefore/notAfter (also in the past)', async () => {
    const a = new X509Certificate((await issueNodeCert(ca, { id: 'n1' })).certPem);
    const b = new X509Certificate((await issueNodeCert(ca, { id: 'n1' })).certPem);
    assert.notEqual(a.serialNumber, b.serialNumber);
    assert.notEqual(a.publicKey.export({ type: 'spki', format: 'pem' }), b.publicKey.export({ type: 'spki', format: 'pem' }));
    assert.ok(Math.abs(daysLeft(new X509Certificate((await issueNodeCert(ca, { id: 'n1', days: 7 })).certPem)) - 7) < 0.01);
    const notBefore = new Date(Date.now() - 10 * DAY_MS);
    const notAfter = new Date(Date.now() - DAY_MS);
    const old = new X509Certificate((await issueNodeCert(ca, { id: 'n1', notBefore, notAfter })).certPem);
    assert.equal(Date.parse(old.validTo), Math.floor(notAfter.getTime() / 1000) * 1000);
    assert.equal(Date.parse(old.validFrom), Math.floor(notBefore.getTime() / 1000) * 1000);
  });

  it('refuses bad ids, names, addresses, validity and a CA that is not one', async () => {
    for (const id of ['', '../n1', 'a/b', '.hidden', 'x'.repeat(65), 'n 1']) {
      await assert.rejects(issueNodeCert(ca, { id }), /member id .* is not valid/, JSON.stringify(id));
    }
    await assert.rejects(issueNodeCert(ca, { id: 'n1', dns: ['bad name'] }), /DNS name "bad name" is not a valid host name/);
    await assert.rejects(issueNodeCert(ca, { id: 'n1', ips: ['999.1.1.1'] }), /IP address "999\.1\.1\.1" is not/);
    await assert.rejects(issueNodeCert(ca, { id: 'n1', days: 0 }), /days: 0 is not a whole number/);
    await assert.rejects(issueNodeCert(ca, { id: 'n1', notBefore: new Date(), notAfter: new Date(Date.now() - 1000) }), /is not after notBefore/);
    const leaf = await issueNodeCert(ca, { id: 'n1' });
    await assert.rejects(issueNodeCert(leaf, { id: 'n2' }), /is not a CA/);
    await assert.rejects(issueNodeCert({ certPem: ca.certPem, keyPem: leaf.keyPem }, { id: 'n2' }), /CA key does not belong to the CA certificate/);
    await assert.rejects(createCa({ commonName: 'a,b=c' }), /commonName/);
  });
});

describe('tls certs: files on disk', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    ({ dir, cleanup } = await tmpDir());
  });

  afterEach(async () => {
    await cleanup?.();
  });

  it('writeCa creates the dir 0700, the key 0600 and the certificate 0644 whatever the umask, and leaves no temp file', async () => {
    const tls = join(dir, 'data', 'tls');
    const old = process.umask(0o000);
    try {
      const files = await writeCa(tls);
      assert.equal(await modeOf(tls), 0o700);
      assert.equal(await modeOf(files.caKeyFile), 0o600);
      assert.equal(await modeOf(files.caFile), 0o644);
      const n1 = await writeNodeCert(tls, 'n1', { ips: ['127.0.0.1'] });
      assert.equal(await modeOf(n1.keyFile), 0o600);
      assert.equal(await modeOf(n1.certFile), 0o644);
    } finally {
      process.umask(old);
    }
    assert.deepEqual((await readdir(tls)).sort(), ['ca-key.pem', 'ca.pem', 'n1-key.pem', 'n1.pem']);
    const ca = await readCa(tls);
    const n1 = new X509Certificate(readFileSync(join(tls, 'n1.pem')));
    assert.ok(n1.checkIssued(new X509Certificate(ca.certPem)) && n1.verify(new X509Certificate(ca.certPem).publicKey));
  });

  it('writeCa never replaces an existing CA unless forced', async () => {
    const files = await writeCa(dir);
    const before = readFileSync(files.caFile, 'utf8');
    const beforeKey = readFileSync(files.caKeyFile, 'utf8');
    await assert.rejects(writeCa(dir), /ca\.pem already exists.*--force/);
    assert.equal(readFileSync(files.caFile, 'utf8'), before);
    assert.equal(readFileSync(files.caKeyFile, 'utf8'), beforeKey);
    // A key alone (a half-copied directory) is not overwritten either.
    await rm(files.caFile);
    await assert.rejects(writeCa(dir), /ca-key\.pem already exists/);
    assert.equal(readFileSync(files.caKeyFile, 'utf8'), beforeKey);
    await writeCa(dir, { force: true });
    assert.notEqual(readFileSync(files.caKeyFile, 'utf8'), beforeKey);
    await readCa(dir); // the new pair matches
    assert.deepEqual((await readdir(dir)).sort(), ['ca-key.pem', 'ca.pem']);
  });

  it('writeNodeCert needs a CA and replaces an earlier certificate (rotation)', async () => {
    await assert.rejects(writeNodeCert(dir, 'n1'), /ca\.pem: missing \(no CA here: run `snapcoord certs init` first\)/);
    await writeCa(dir);
    const f = await writeNodeCert(dir, 'n1');
    const first = new X509Certificate(readFileSync(f.certFile)).serialNumber;
    await writeNodeCert(dir, 'n1', { dns: ['node1.example'] });
    const second = new X509Certificate(readFileSync(f.certFile));
    assert.notEqual(second.serialNumber, first);
    assert.match(second.subjectAltName ?? '', /DNS:node1\.example/);
    assert.ok(second.checkPrivateKey(createPrivateKey(readFileSync(f.keyFile))));
    await writeFile(join(dir, 'ca-key.pem'), (await createCa()).keyPem);
    await assert.rejects(writeNodeCert(dir, 'n2'), /ca-key\.pem: the key does not belong to .*ca\.pem/);
  });

  it('ensureLocalTls makes a CA and one certificate per id once, then reuses them', async () => {
    const tls = join(dir, 'tls');
    const first = await ensureLocalTls(tls, ['n1', 'n2', 'n3']);
    assert.deepEqual(first.written.map((p) => p.slice(tls.length + 1)), ['ca.pem', 'n1.pem', 'n2.pem', 'n3.pem']);
    assert.equal(await modeOf(tls), 0o700);
    const caCert = new X509Certificate(readFileSync(first.caFile));
    for (const id of ['n1', 'n2', 'n3']) {
      const f = first.nodes[id];
      assert.ok(f !== undefined);
      const cert = new X509Certificate(readFileSync(f.certFile));
      assert.ok(cert.verify(caCert.publicKey));
      assert.equal(cert.subjectAltName, `DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:urn:snapcoord:node:${id}`);
      assert.equal(await modeOf(f.keyFile), 0o600);
    }
    const snapshot = (): string[] => [...['ca.pem', 'n1.pem', 'n2.pem', 'n3.pem'].map((n) => join(tls, n)), localCaKeyFile(tls)].map((f) => readFileSync(f, 'utf8'));
    const before = snapshot();
    const again = await ensureLocalTls(tls, ['n1', 'n2', 'n3']);
    assert.deepEqual(again.written, []);
    assert.deepEqual(snapshot(), before, 'nothing rewritten');

    // A missing certificate, one lacking a requested name, and a new id: only those are issued.
    await rm(join(tls, 'n2.pem'));
    const n3 = await issueNodeCert(await readCa(tls, localCaKeyFile(tls)), { id: 'n3', dns: ['localhost'], ips: ['127.0.0.1'] });
    await writeFile(join(tls, 'n3.pem'), n3.certPem);
    await writeFile(join(tls, 'n3-key.pem'), n3.keyPem);
    const third = await ensureLocalTls(tls, ['n1', 'n2', 'n3', 'n4']);
    assert.deepEqual(third.written.map((p) => p.slice(tls.length + 1)), ['n2.pem', 'n3.pem', 'n4.pem']);
    assert.equal(readFileSync(join(tls, 'n1.pem'), 'utf8'), before[1], 'n1 kept');
    assert.match(new X509Certificate(readFileSync(join(tls, 'n3.pem'))).subjectAltName ?? '', /IP Address:0:0:0:0:0:0:0:1/);
  });

  it('ensureLocalTls reissues a certificate that expires within 30 days or has a mismatched key, and replaces an expiring CA with all its certificates', async () => {
    const tls = join(dir, 'tls');
    await ensureLocalTls(tls, ['n1', 'n2']);
    const ca = await readCa(tls, localCaKeyFile(tls));
    const soon = await issueNodeCert(ca, { id: 'n1', dns: ['localhost'], ips: ['127.0.0.1', '::1'], days: 20 });
    await writeFile(join(tls, 'n1.pem'), soon.certPem);
    await writeFile(join(tls, 'n1-key.pem'), soon.keyPem);
    await writeFile(join(tls, 'n2-key.pem'), soon.keyPem); // n2's key no longer matches
    const r = await ensureLocalTls(tls, ['n1', 'n2']);
    assert.deepEqual(r.written.map((p) => p.slice(tls.length + 1)), ['n1.pem', 'n2.pem']);
    assert.ok(daysLeft(new X509Certificate(readFileSync(join(tls, 'n1.pem')))) > 800);

    const oldCa = await createCa({ days: 10 });
    await writeFile(join(tls, 'ca.pem'), oldCa.certPem);
    await writeFile(localCaKeyFile(tls), oldCa.keyPem);
    const replaced = await ensureLocalTls(tls, ['n1', 'n2']);
    assert.deepEqual(replaced.written.map((p) => p.slice(tls.length + 1)), ['ca.pem', 'n1.pem', 'n2.pem']);
    const newCa = new X509Certificate(readFileSync(join(tls, 'ca.pem')));
    assert.ok(daysLeft(newCa) > 3600);
    assert.ok(new X509Certificate(readFileSync(join(tls, 'n1.pem'))).verify(newCa.publicKey));
  });

  it('ensureLocalTls keeps the CA key outside the certificate directory the nodes are handed (0600, in a 0700 dir of its own), and moves an older one out (review18)', async () => {
    const tls = join(dir, 'data', 'tls');
    const first = await ensureLocalTls(tls, ['n1', 'n2']);
    assert.equal(first.caKeyFile, join(dir, 'data', 'ca', 'ca-key.pem'));
    assert.deepEqual((await readdir(tls)).sort(), ['ca.pem', 'n1-key.pem', 'n1.pem', 'n2-key.pem', 'n2.pem'], 'no CA key beside the node keys');
    assert.equal(await modeOf(first.caKeyFile), 0o600);
    assert.equal(await modeOf(join(dir, 'data', 'ca')), 0o700);
    assert.ok(new X509Certificate(readFileSync(first.caFile)).checkPrivateKey(createPrivateKey(readFileSync(first.caKeyFile))));

    // A directory an older version made (the key in tls/): the key is moved out, the CA and certificates kept.
    const caBefore = readFileSync(first.caFile, 'utf8');
    const keyBefore = readFileSync(first.caKeyFile, 'utf8');
    await rm(join(dir, 'data', 'ca'), { recursive: true });
    await writeFile(join(tls, 'ca-key.pem'), keyBefore, { mode: 0o600 });
    const moved = await ensureLocalTls(tls, ['n1', 'n2']);
    assert.deepEqual(moved.written, []);
    assert.equal(readFileSync(moved.caKeyFile, 'utf8'), keyBefore);
    assert.equal(readFileSync(moved.caFile, 'utf8'), caBefore);
    assert.ok(!(await readdir(tls)).includes('ca-key.pem'));
    // The same key in both places: the one in tls/ is removed; a different one: refused, both kept.
    await writeFile(join(tls, 'ca-key.pem'), keyBefore, { mode: 0o600 });
    await ensureLocalTls(tls, ['n1', 'n2']);
    assert.ok(!(await readdir(tls)).includes('ca-key.pem'));
    const other = (await createCa()).keyPem;
    await writeFile(join(tls, 'ca-key.pem'), other, { mode: 0o600 });
    await assert.rejects(ensureLocalTls(tls, ['n1', 'n2']), /hold different CA keys/);
    assert.equal(readFileSync(join(tls, 'ca-key.pem'), 'utf8'), other);
    assert.equal(readFileSync(moved.caKeyFile, 'utf8'), keyBefore);
  });

  it('ensureLocalTls refuses (and keeps) a CA it cannot read', async () => {
    const tls = join(dir, 'tls');
    await ensureLocalTls(tls, ['n1']);
    await writeFile(join(tls, 'ca.pem'), 'garbage\n');
    await assert.rejects(ensureLocalTls(tls, ['n1']), /ca\.pem: not a PEM certificate/);
    assert.equal(readFileSync(join(tls, 'ca.pem'), 'utf8'), 'garbage\n');
    await assert.rejects(ensureLocalTls(tls, ['bad/id']), /member id "bad\/id" is not valid/);
  });
});

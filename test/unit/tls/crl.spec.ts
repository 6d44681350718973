/**
 * The peer plane's CRL (--peer-crl): a CRL signed by the cluster CA is
 * loaded and its serials revoked; one another CA signed, one that is not a
 * CRL, or one too large is refused with an error naming the file; a changed
 * file is read again (an operator revokes without a restart) and a bad
 * change keeps the last good CRL; an expired CRL is still used, and said so;
 * a CRL signed by a CA certificate without cRLSign, one dated ahead of the
 * node's clock, or one whose nextUpdate precedes its thisUpdate is refused;
 * no rollback: an older CRL, or one un-revoking a serial, never replaces the
 * one in use, at a reload or (through the kept copy) at the next start.
 */
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, createCrl, issueNodeCert, readCa, writeCa, type CertKeyPem } from '../../../src/tls/certs.js';
import { CRL_BYTES_MAX, CRL_CLOCK_SKEW_MS, loadCrl, normalizeSerial, PeerCrl } from '../../../src/tls/crl.js';
import { x509 } from '../../../src/tls/x509.js';
import { tmpDir } from './helpers.js';

/** nodeSerial: a certificate's serial as Node's TLS layer reports it (PeerCertificate.serialNumber: upper-case hex). */
function nodeSerial(pem: string): string {
  return new X509Certificate(pem).serialNumber;
}

/**
 * caWithUsages: a self-signed CA made with @peculiar/x509 directly, its keyUsage extension carrying `usages` only
 * (null: no keyUsage extension at all), and a signer of CRLs with its key that, unlike createCrl, does not look at it.
 */
async function caWithUsages(usages: number | null): Promise<{ ca: CertKeyPem; sign: (serials: string[], thisUpdate?: Date, nextUpdate?: Date) => Promise<Buffer> }> {
  const lib = x509();
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01a2b3c4',
    name: 'CN=snapcoord CA',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys: keys as Parameters<typeof lib.X509CertificateGenerator.createSelfSigned>[0]['keys'],
    signingAlgorithm: alg,
    extensions: [new lib.BasicConstraintsExtension(true, 0, true), ...(usages !== null ? [new lib.KeyUsagesExtension(usages, true)] : [])],
  });
  const keyPem = lib.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  const sign = async (serials: string[], thisUpdate = new Date(), nextUpdate = new Date(thisUpdate.getTime() + 86_400_000)): Promise<Buffer> => {
    const crl = await lib.X509CrlGenerator.create({
      issuer: cert.subject,
      thisUpdate,
      nextUpdate,
      entries: serials.map((serialNumber) => ({ serialNumber })),
      signingKey: keys.privateKey as Parameters<typeof lib.X509CrlGenerator.create>[0]['signingKey'],
      signingAlgorithm: alg,
    });
    return Buffer.from(crl.rawData);
  };
  return { ca: { certPem: cert.toString('pem'), keyPem }, sign };
}

describe('tls crl: the peer plane\'s certificate revocation list', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  let caFile: string;
  let ca: CertKeyPem;
  let r: CertKeyPem;
  let a: CertKeyPem;
  let crlFile: string;
  const opened: PeerCrl[] = [];

  beforeEach(async () => {
    ({ dir, cleanup } = await tmpDir());
    caFile = (await writeCa(dir)).caFile;
    ca = await readCa(dir);
    r = await issueNodeCert(ca, { id: 'r', ips: ['127.0.0.1'] });
    a = await issueNodeCert(ca, { id: 'a', ips: ['127.0.0.1'] });
    crlFile = join(dir, 'crl.pem');
  });

  afterEach(async () => {
    for (const p of opened.splice(0)) p.close();
    await cleanup();
  });

  async function open(extra: Partial<Parameters<typeof PeerCrl.open>[0]> = {}): Promise<PeerCrl> {
    const p = await PeerCrl.open({ crlFile, caFile, refreshMs: 60_000, ...extra });
    opened.push(p);
    return p;
  }

  it('revokes the serials a CRL signed by the CA lists (PEM and DER), and only those', async () => {
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: new X509Certificate(r.certPem).serialNumber }]));
    const p = await open();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true);
    assert.equal(p.isRevoked(nodeSerial(r.certPem).toLowerCase()), true);
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), false);
    assert.equal(p.latest.revoked, 1);
    const err = p.revocationError({ serialNumber: nodeSerial(r.certPem) } as never, "the peer's");
    assert.match(err?.message ?? '', /revoked by the CRL/);
    // DER, made directly with @peculiar/x509's generator (a serial with a leading zero octet, as OpenSSL writes them)
    const lib = x509();
    const key = await webcrypto.subtle.importKey('pkcs8', lib.PemConverter.decodeFirst(ca.keyPem), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    const der = await lib.X509CrlGenerator.create({
      issuer: new lib.X509Certificate(ca.certPem).subject,
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + 86_400_000),
      entries: [{ serialNumber: `00${normalizeSerial(nodeSerial(a.certPem))}` }],
      signingKey: key as Parameters<typeof lib.X509CrlGenerator.create>[0]['signingKey'],
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    await writeFile(crlFile, Buffer.from(der.rawData));
    const d = await open();
    assert.equal(d.isRevoked(nodeSerial(a.certPem)), true);
    assert.equal(d.isRevoked(nodeSerial(r.certPem)), false);
  });

  it('refuses a CRL another CA signed, one that is not a CRL, garbage, and one too large, naming the file', async () => {
    const other = await createCa({ commonName: 'snapcoord CA' }); // same subject: only the signature tells them apart
    await writeFile(crlFile, await createCrl(other, [{ serialNumber: nodeSerial(r.certPem) }]));
    await assert.rejects(open(), (e: Error) => e.message.includes(crlFile) && /signature does not verify against the CA/.test(e.message));
    await writeFile(crlFile, r.certPem);
    await assert.rejects(open(), (e: Error) => e.message.includes(crlFile) && /not a CRL/.test(e.message));
    await writeFile(crlFile, Buffer.from('0123456789abcdef'));
    await assert.rejects(open(), (e: Error) => e.message.includes(crlFile) && /not a CRL/.test(e.message));
    await writeFile(crlFile, Buffer.alloc(CRL_BYTES_MAX + 1));
    await assert.rejects(open(), (e: Error) => e.message.includes(crlFile) && /more than/.test(e.message));
    await assert.rejects(open({ crlFile: join(dir, 'absent.pem') }), /absent\.pem: missing/);
    await assert.rejects(loadCrl(Buffer.alloc(10), Buffer.from(''), 'x.crl', 'ca.pem'), /x\.crl: not a CRL/);
  });

  it('reads a changed CRL again (revoked without a restart); a bad change keeps the last good one and says so once', async () => {
    await writeFile(crlFile, await createCrl(ca, []));
    const errors: string[] = [];
    const reloads: number[] = [];
    const p = await open({ onError: (e) => errors.push(e.message), onReload: (i) => reloads.push(i.revoked) });
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), false);
    assert.equal(p.fileRefused, false);
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }]));
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true);
    assert.deepEqual(reloads, [1]);
    const other = await createCa();
    await writeFile(crlFile, await createCrl(other, []));
    await p.refresh();
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true, 'the last good CRL stays in use');
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0] ?? '', /CRL not reloaded, the previous one stays in use: .*signature does not verify/);
    assert.equal(p.fileRefused, true, 'the file on disk is refused (snapcoord_peer_crl_file_refused)');
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }, { serialNumber: nodeSerial(a.certPem) }]));
    await p.refresh();
    assert.equal(p.fileRefused, false);
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), true);
  });

  it('no rollback at a reload: an older CRL, or one that no longer lists a revoked serial, is refused (the one in use stays); a newer superset is taken', async () => {
    const t0 = new Date(Date.now() - 3_600_000);
    const t1 = new Date(Date.now() - 60_000);
    const rOnly = [{ serialNumber: nodeSerial(r.certPem) }];
    await writeFile(crlFile, await createCrl(ca, rOnly, { thisUpdate: t1 }));
    const errors: string[] = [];
    const p = await open({ onError: (e) => errors.push(e.message) });
    // the CRL of an hour before, which did not revoke r yet
    await writeFile(crlFile, await createCrl(ca, [], { thisUpdate: t0 }));
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true, 'r stays revoked');
    assert.equal(p.fileRefused, true);
    assert.match(errors[0] ?? '', /an older CRL \(thisUpdate .*\) than the one in use.*a rollback is refused/);
    // freshly signed, but un-revoking r
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(a.certPem) }]));
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true, 'r stays revoked');
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), false, 'nothing of the refused CRL is taken');
    assert.match(errors[1] ?? '', new RegExp(`no longer revokes serial\\(s\\) ${normalizeSerial(nodeSerial(r.certPem))} .*revocation is permanent`));
    await writeFile(crlFile, await createCrl(ca, [...rOnly, { serialNumber: nodeSerial(a.certPem) }]));
    await p.refresh();
    assert.equal(p.fileRefused, false);
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), true);
  });

  it('no rollback across a restart: the CRL in use is kept (keptFile); an older file is refused at open, the kept one used, until the kept file is deleted; a kept CRL of another CA is passed over', async () => {
    const keptFile = join(dir, 'data', 'peer-crl-kept.der');
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }], { thisUpdate: new Date(Date.now() - 60_000) }));
    await mkdir(join(dir, 'data'));
    let p = await open({ keptFile });
    assert.equal(p.fileRefused, false);
    const kept = await readFile(keptFile);
    p.close();
    // restored from a backup: the CRL of the day before
    await writeFile(crlFile, await createCrl(ca, [], { thisUpdate: new Date(Date.now() - 86_400_000) }));
    const errors: string[] = [];
    p = await open({ keptFile, onError: (e) => errors.push(e.message) });
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true, 'the kept CRL is used');
    assert.equal(p.fileRefused, true);
    assert.match(errors[0] ?? '', new RegExp(`an older CRL .*${keptFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*delete`));
    assert.deepEqual(await readFile(keptFile), kept, 'the kept copy is not replaced by the refused file');
    p.close();
    // the operator means it: the kept copy deleted, the file's CRL is taken (and kept)
    await rm(keptFile);
    p = await open({ keptFile });
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), false);
    assert.equal(p.fileRefused, false);
    p.close();
    // a new CA: the kept CRL (of the old one) no longer verifies and is passed over
    await writeFile(keptFile, kept);
    const other = await createCa();
    await writeFile(caFile, other.certPem);
    await writeFile(crlFile, await createCrl(other, [], { thisUpdate: new Date(Date.now() - 86_400_000) }));
    p = await open({ keptFile });
    assert.equal(p.fileRefused, false);
    assert.equal(p.latest.revoked, 0);
  });

  it('no rollback across a CA rotation: while the bundle still trusts the CA of the CRL in use, a CRL of the new CA is refused; once the old CA has left the bundle it is taken', async () => {
    const next = await createCa({ commonName: 'snapcoord CA 2' });
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }]));
    const errors: string[] = [];
    const p = await open({ onError: (e) => errors.push(e.message) });
    // the rotation: both CAs trusted, and the CRL file now the new CA's (which revokes nothing yet)
    await writeFile(caFile, ca.certPem + next.certPem);
    await writeFile(crlFile, await createCrl(next, []));
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true, 'r, of the old CA still trusted, stays revoked');
    assert.equal(p.fileRefused, true);
    assert.match(errors[0] ?? '', /a CRL of another CA \(CN=snapcoord CA 2\) while the CA bundle still trusts CN=snapcoord CA, whose CRL in use .* revokes 1 certificate/);
    // the old CA retired: nothing it issued is taken any more, and the new CA's CRL is
    await writeFile(caFile, next.certPem);
    await p.refresh();
    assert.equal(p.fileRefused, false);
    assert.equal(p.latest.issuer, 'CN=snapcoord CA 2');
  });

  it('the timer reads the file again', async () => {
    await writeFile(crlFile, await createCrl(ca, []));
    const p = await open({ refreshMs: 50 });
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(a.certPem) }]));
    const deadline = Date.now() + 5_000;
    while (!p.isRevoked(nodeSerial(a.certPem)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), true);
  });

  it('an expired CRL (past nextUpdate) is still used, and reported once', async () => {
    const thisUpdate = new Date(Date.now() - 10 * 86_400_000);
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }], { thisUpdate, nextUpdate: new Date(Date.now() - 86_400_000) }));
    const stale: string[] = [];
    const p = await open({ onStale: (e) => stale.push(e.message) });
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), true);
    assert.equal(stale.length, 1);
    assert.match(stale[0] ?? '', /past its nextUpdate.*still used/);
  });

  it('refuses a CRL whose CA certificate has a keyUsage without cRLSign; takes one whose CA has no keyUsage at all; createCrl will not sign with the first', async () => {
    const lib = x509();
    const serial = normalizeSerial(nodeSerial(r.certPem));
    const noCrlSign = await caWithUsages(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.digitalSignature);
    await assert.rejects(
      loadCrl(await noCrlSign.sign([serial]), Buffer.from(noCrlSign.ca.certPem), 'nosign.crl', 'ca.pem'),
      /nosign\.crl: signed by the CA certificate of ca\.pem \(CN=snapcoord CA, serial 1a2b3c4\), whose keyUsage does not allow signing CRLs \(no cRLSign\)/,
    );
    await assert.rejects(createCrl(noCrlSign.ca, []), /may not sign CRLs \(its keyUsage lacks cRLSign\)/);
    const withCrlSign = await caWithUsages(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign);
    assert.equal((await loadCrl(await withCrlSign.sign([serial]), Buffer.from(withCrlSign.ca.certPem), 'ok.crl', 'ca.pem')).serials.has(serial), true);
    const noUsage = await caWithUsages(null);
    assert.equal((await loadCrl(await noUsage.sign([serial]), Buffer.from(noUsage.ca.certPem), 'ok.crl', 'ca.pem')).serials.has(serial), true);
    // A bundle holding the cRLSign-less certificate beside the real CA: the real one's CRL is taken.
    const bundle = Buffer.from(noCrlSign.ca.certPem + ca.certPem);
    assert.equal((await loadCrl(Buffer.from(await createCrl(ca, [{ serialNumber: serial }])), bundle, 'ok.crl', 'bundle.pem')).serials.has(serial), true);
  });

  it('refuses a CRL dated ahead of this node\'s clock by more than CRL_CLOCK_SKEW_MS, at open and at a reload (the last good one stays); takes one within it', async () => {
    const now = Date.now();
    const ahead = new Date(now + CRL_CLOCK_SKEW_MS + 60_000);
    const future = await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }], { thisUpdate: ahead });
    await assert.rejects(loadCrl(Buffer.from(future), Buffer.from(ca.certPem), 'future.crl', 'ca.pem', now), /future\.crl: its thisUpdate \(.*\) is in the future \(this node's clock: .*; 5 min of skew allowed\)/);
    await writeFile(crlFile, future);
    await assert.rejects(open(), /is in the future/);
    const within = await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }], { thisUpdate: new Date(now + CRL_CLOCK_SKEW_MS - 60_000) });
    assert.equal((await loadCrl(Buffer.from(within), Buffer.from(ca.certPem), 'x.crl', 'ca.pem', now)).info.revoked, 1);
    // at a reload
    await writeFile(crlFile, await createCrl(ca, []));
    const errors: string[] = [];
    const p = await open({ onError: (e) => errors.push(e.message) });
    await writeFile(crlFile, future);
    await p.refresh();
    assert.equal(p.isRevoked(nodeSerial(r.certPem)), false, 'the CRL from the future is not used');
    assert.equal(errors.length, 1);
    assert.match(errors[0] ?? '', /CRL not reloaded, the previous one stays in use: .*is in the future/);
    // the node's clock catches up: the same file is taken
    const later = await open({ nowMs: () => ahead.getTime() });
    assert.equal(later.isRevoked(nodeSerial(r.certPem)), true);
  });

  it('refuses a CRL whose nextUpdate is before its thisUpdate', async () => {
    const thisUpdate = new Date(Date.now() - 60_000);
    const bad = await createCrl(ca, [], { thisUpdate, nextUpdate: new Date(thisUpdate.getTime() - 1_000) });
    await assert.rejects(loadCrl(Buffer.from(bad), Buffer.from(ca.certPem), 'back.crl', 'ca.pem'), /back\.crl: its nextUpdate \(.*\) is before its thisUpdate/);
  });

  it('reads the files again only when their stat changed (or when forced); a changed file is taken', async () => {
    await writeFile(crlFile, await createCrl(ca, []));
    const p = await open();
    assert.equal(p.reads, 1);
    await p.refresh();
    await p.refresh();
    assert.equal(p.reads, 1, 'unchanged files are not read again');
    await p.refresh({ force: true });
    assert.equal(p.reads, 2, 'forced (SIGHUP)');
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(a.certPem) }]));
    await p.refresh();
    assert.equal(p.reads, 3);
    assert.equal(p.isRevoked(nodeSerial(a.certPem)), true);
  });

  it('reads at most CRL_BYTES_MAX + 1 bytes of a file that never ends (a FIFO fed forever), at open and at a reload: refused, the last good CRL kept', async function () {
    if (process.platform !== 'linux') this.skip();
    await writeFile(crlFile, await createCrl(ca, [{ serialNumber: nodeSerial(r.certPem) }]));
    const p = await open();
    const fifo = join(dir, 'endless.pem');
    execFileSync('mkfifo', [fifo]);
    const feed = (): ChildProcess => {
      const c = spawn('sh', ['-c', `exec yes 0123456789abcdef > '${fifo}'`], { stdio: 'ignore' });
      c.on('error', () => undefined);
      return c;
    };
    const feeders: ChildProcess[] = [];
    try {
      feeders.push(feed());
      await assert.rejects(open({ crlFile: fifo }), (e: Error) => e.message.includes(fifo) && /more than 8388608 bytes/.test(e.message));
      feeders.push(feed());
      const errors: string[] = [];
      const q = await open({ onError: (e) => errors.push(e.message) });
      await rename(fifo, crlFile);
      await q.refresh();
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.match(errors[0] ?? '', /CRL not reloaded, the previous one stays in use: .*more than 8388608 bytes/);
      assert.equal(q.isRevoked(nodeSerial(r.certPem)), true);
      assert.equal(p.isRevoked(nodeSerial(r.certPem)), true);
    } finally {
      for (const c of feeders) c.kill('SIGKILL');
    }
  });
});

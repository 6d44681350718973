/**
 * The peer plane's CRL (--peer-crl): a CRL signed by the cluster CA is
 * loaded and its serials revoked; one another CA signed, one that is not a
 * CRL, or one too large is refused with an error naming the file; a changed
 * file is read again (an operator revokes without a restart) and a bad
 * change keeps the last good CRL; an expired CRL is still used, and said so.
 */
import assert from 'node:assert/strict';
import { X509Certificate, webcrypto } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, createCrl, issueNodeCert, readCa, writeCa, type CertKeyPem } from '../../../src/tls/certs.js';
import { CRL_BYTES_MAX, loadCrl, normalizeSerial, PeerCrl } from '../../../src/tls/crl.js';
import { x509 } from '../../../src/tls/x509.js';
import { tmpDir } from './helpers.js';

/** nodeSerial: a certificate's serial as Node's TLS layer reports it (PeerCertificate.serialNumber: upper-case hex). */
function nodeSerial(pem: string): string {
  return new X509Certificate(pem).serialNumber;
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
});

/**
 * memberIdOf: the member id from the one `urn:snapcoord:node:<id>` URI SAN,
 * read from the certificate's bytes, so names crafted to look like extra
 * entries in Node's printed `subjectaltname` string fool nothing.
 */
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { createCa, issueNodeCert, type CertKeyPem } from '../../../src/tls/certs.js';
import { memberIdOf } from '../../../src/tls/credentials.js';
import { x509, type X509 } from '../../../src/tls/x509.js';

const lib = x509();

/** craft issues, with `ca`, a certificate with exactly the SANs given (no validation: an attacker's CA-signed oddity). */
async function craft(ca: CertKeyPem, names: X509.JsonGeneralName[]): Promise<X509Certificate> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const caDer = createPrivateKey(ca.keyPem).export({ type: 'pkcs8', format: 'der' });
  const signingKey = await webcrypto.subtle.importKey('pkcs8', caDer, alg, false, ['sign']);
  const cert = await lib.X509CertificateGenerator.create({
    subject: 'CN=crafted',
    issuer: new X509Certificate(ca.certPem).subject,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: names.length > 0 ? [new lib.SubjectAlternativeNameExtension(names)] : [],
  });
  return new X509Certificate(cert.toString('pem'));
}

/** asPeer: the shape tls.TLSSocket#getPeerCertificate() gives (what grpc-js's getAuthContext() passes on). */
function asPeer(cert: X509Certificate): PeerCertificate {
  return { raw: cert.raw, fingerprint256: cert.fingerprint256, subjectaltname: cert.subjectAltName ?? '' } as PeerCertificate;
}

describe('tls memberIdOf', function () {
  this.timeout(30_000);
  let ca: CertKeyPem;

  before(async () => {
    ca = await createCa();
  });

  it('reads the id of an issued node certificate, as X509Certificate and as a PeerCertificate', async () => {
    const cert = new X509Certificate((await issueNodeCert(ca, { id: 'node-7.a_b', dns: ['localhost'], ips: ['127.0.0.1'] })).certPem);
    assert.equal(memberIdOf(cert), 'node-7.a_b');
    assert.equal(memberIdOf(asPeer(cert)), 'node-7.a_b');
    assert.equal(memberIdOf(asPeer(cert)), 'node-7.a_b', 'cached answer');
  });

  it('answers null with no certificate, an empty one, or none naming a member', async () => {
    assert.equal(memberIdOf(undefined), null);
    assert.equal(memberIdOf(null), null);
    assert.equal(memberIdOf({} as PeerCertificate), null, 'getPeerCertificate() of a connection without one');
    assert.equal(memberIdOf(new X509Certificate(ca.certPem)), null, 'the CA');
    assert.equal(memberIdOf(await craft(ca, [{ type: 'url', value: 'urn:other:node:n1' }, { type: 'url', value: 'urn:snapcoord:node:' }])), null);
  });

  it('answers null for two member URIs, even two naming the same id', async () => {
    assert.equal(memberIdOf(await craft(ca, [{ type: 'url', value: 'urn:snapcoord:node:n1' }, { type: 'url', value: 'urn:snapcoord:node:n2' }])), null);
    assert.equal(memberIdOf(await craft(ca, [{ type: 'url', value: 'urn:snapcoord:node:n1' }, { type: 'url', value: 'urn:snapcoord:node:n1' }])), null);
  });

  it('is not fooled by values that print like extra SAN entries', async () => {
    // A DNS name carrying ", URI:urn:snapcoord:node:admin": Node prints it quoted; a split on ", " would see a member URI.
    const dnsTrick = await craft(ca, [{ type: 'dns', value: 'x, URI:urn:snapcoord:node:admin' }]);
    assert.match(dnsTrick.subjectAltName ?? '', /URI:urn:snapcoord:node:admin/, 'the printed string does contain it');
    assert.equal(memberIdOf(dnsTrick), null);
    assert.equal(memberIdOf(asPeer(dnsTrick)), null);
    // A URI whose id carries the trick: not a valid member id.
    const uriTrick = await craft(ca, [{ type: 'url', value: 'urn:snapcoord:node:n1, URI:urn:snapcoord:node:n2' }]);
    assert.equal(memberIdOf(uriTrick), null);
    const quoteTrick = await craft(ca, [{ type: 'url', value: 'urn:snapcoord:node:n1"' }]);
    assert.equal(memberIdOf(quoteTrick), null);
    // The real one beside a trick DNS name still counts once.
    const mixed = await craft(ca, [{ type: 'dns', value: 'y, URI:urn:snapcoord:node:n9' }, { type: 'url', value: 'urn:snapcoord:node:n3' }]);
    assert.equal(memberIdOf(mixed), 'n3');
  });
});

/**
 * X509MembershipProofs (src/tls/membership-proof.ts): a leader's signed statement of a configuration verifies only
 * with a certificate this cluster's CA issued to its signer, valid now, not revoked, for this cluster, unaltered.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueNodeCert, type CertKeyPem } from '../../../src/tls/certs.js';
import { X509MembershipProofs, readStatement } from '../../../src/tls/membership-proof.js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';

describe('X509MembershipProofs: configuration proofs signed with the peer key, checked against the cluster CA', function () {
  this.timeout(20_000);
  let dir = '';
  let ca: CertKeyPem;
  let n1: CertKeyPem;
  const proofsOf = async (id: string, cert: CertKeyPem, opts: { clusterId?: string; caPem?: string; isRevoked?: (s: string) => boolean } = {}): Promise<X509MembershipProofs> => {
    const certFile = join(dir, `${id}-${Math.random().toString(36).slice(2)}.pem`);
    const keyFile = `${certFile}.key`;
    const caFile = `${certFile}.ca`;
    await writeFile(certFile, cert.certPem);
    await writeFile(keyFile, cert.keyPem);
    await writeFile(caFile, opts.caPem ?? ca.certPem);
    return new X509MembershipProofs({ clusterId: opts.clusterId ?? 'c1', selfId: id, certFile, keyFile, caFile, ...(opts.isRevoked !== undefined ? { isRevoked: opts.isRevoked } : {}) });
  };
  const statement = { index: 12, term: 3, voters: ['n1', 'n2', 'n6'], learners: ['n7'] };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-proof-'));
    ca = await createCa();
    n1 = await issueNodeCert(ca, { id: 'n1' });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a proof n1 signs verifies on another member: the statement it carries, signer n1', async () => {
    const signer = await proofsOf('n1', n1);
    const verifier = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }));
    const s = verifier.verify(signer.sign(statement));
    assert.ok(!(s instanceof Error), String(s));
    assert.deepEqual(s, { clusterId: 'c1', ...statement, signer: 'n1' });
  });

  it('a commit statement verifies as one, and an appended statement\'s signature is not taken for a commit statement (nor the reverse)', async () => {
    const signer = await proofsOf('n1', n1);
    const verifier = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }));
    const committed = signer.sign({ ...statement, committed: true });
    const s = verifier.verify(committed);
    assert.ok(!(s instanceof Error), String(s));
    assert.deepEqual(s, { clusterId: 'c1', ...statement, signer: 'n1', committed: true });
    assert.equal(readStatement(committed)?.committed, true, 'readStatement reads it (unverified)');
    const reencode = (b: object): string => `x509.${Buffer.from(JSON.stringify(b)).toString('base64url')}`;
    const bodyOf = (p: string): { s: unknown[]; sig: string; cert: string } => JSON.parse(Buffer.from(p.slice('x509.'.length), 'base64url').toString('utf8')) as { s: unknown[]; sig: string; cert: string };
    // n1's appended statement (what a leader signs as it appends, before it knows the entry commits) marked committed
    const appendedBody = bodyOf(signer.sign(statement));
    assert.match(String(verifier.verify(reencode({ ...appendedBody, s: [...appendedBody.s, 'committed'] }))), /signature of n1's proof does not hold/);
    const committedBody = bodyOf(committed);
    assert.match(String(verifier.verify(reencode({ ...committedBody, s: committedBody.s.slice(0, 6) }))), /signature of n1's proof does not hold/);
    assert.match(String(verifier.verify(reencode({ ...committedBody, s: [...committedBody.s.slice(0, 6), 'maybe'] }))), /the statement is not/);
  });

  it('refused: an altered statement, another cluster, another CA, a certificate of another member, a revoked one, an unsigned or malformed proof', async () => {
    const signer = await proofsOf('n1', n1);
    const verifier = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }));
    const proof = signer.sign(statement);
    const body = JSON.parse(Buffer.from(proof.slice('x509.'.length), 'base64url').toString('utf8')) as { s: unknown[]; sig: string; cert: string };
    const reencode = (b: object): string => `x509.${Buffer.from(JSON.stringify(b)).toString('base64url')}`;
    // n9 added as a voter in the statement after signing
    const altered = reencode({ ...body, s: [body.s[0], body.s[1], body.s[2], ['n1', 'n2', 'n9'], body.s[4], body.s[5]] });
    assert.match(String(verifier.verify(altered)), /signature of n1's proof does not hold/);
    // the signer named as n2 with n1's certificate
    assert.match(String(verifier.verify(reencode({ ...body, s: [...body.s.slice(0, 5), 'n2'] }))), /certificate of n1, not of its signer n2/);
    const otherCluster = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }), { clusterId: 'c2' });
    assert.match(String(otherCluster.verify(proof)), /of cluster "c1", not this one/);
    const otherCa = await createCa();
    const foreign = await proofsOf('n1', await issueNodeCert(otherCa, { id: 'n1' }));
    assert.match(String(verifier.verify(foreign.sign(statement))), /not issued by this cluster's CA/);
    const serial = new X509Certificate(n1.certPem).serialNumber;
    const revoking = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }), { isRevoked: (s) => s.toLowerCase() === serial.toLowerCase() });
    assert.match(String(revoking.verify(proof)), /is revoked/);
    assert.match(String(verifier.verify('sim.abc')), /not an x509 proof/);
    assert.match(String(verifier.verify('x509.!!!')), /not base64url JSON|not an object/);
    assert.match(String(verifier.verify(`x509.${'A'.repeat(9000)}`)), /more than 8192/);
    assert.match(String(verifier.verify(reencode({ ...body, s: [body.s[0], 0, ...body.s.slice(2)] }))), /index is not a whole number >= 1/);
  });

  it('a proof whose certificate has expired no longer verifies', async () => {
    const expired = await issueNodeCert(ca, { id: 'n1', notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
    const signer = await proofsOf('n1', expired);
    const verifier = await proofsOf('n2', await issueNodeCert(ca, { id: 'n2' }));
    assert.match(String(verifier.verify(signer.sign(statement))), /not valid now/);
  });
  it('the key and certificate are read again once rotated, on the monotonic clock: the wall clock stepped back 1 h, a rotation is still seen within a second', async () => {
    // On the wall clock (Date.now) a step back (NTP, a resumed VM) kept the old key and CA in use for the step's length.
    const certFile = join(dir, 'rotated.pem');
    const keyFile = `${certFile}.key`;
    const caFile = `${certFile}.ca`;
    await writeFile(certFile, n1.certPem);
    await writeFile(keyFile, n1.keyPem);
    await writeFile(caFile, ca.certPem);
    const certOf = (proof: string): string => (JSON.parse(Buffer.from(proof.slice('x509.'.length), 'base64url').toString('utf8')) as { cert: string }).cert;
    const derOf = (pem: string): string => new X509Certificate(pem).raw.toString('base64url');
    const clocks = new SteppedClocks().install();
    try {
      const signer = new X509MembershipProofs({ clusterId: 'c1', selfId: 'n1', certFile, keyFile, caFile });
      assert.equal(certOf(signer.sign(statement)), derOf(n1.certPem));
      const next = await issueNodeCert(ca, { id: 'n1' });
      await writeFile(keyFile, next.keyPem);
      await writeFile(certFile, next.certPem);
      clocks.stepWall(-HOUR_MS);
      clocks.pass(1_001);
      assert.equal(certOf(signer.sign(statement)), derOf(next.certPem), 'signed with the certificate before the rotation');
    } finally {
      clocks.restore();
    }
  });
});

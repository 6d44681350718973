/**
 * The gateway's HTTPS certificate files (review16): checked as the node's
 * gRPC planes check theirs. Before, `snapcoord gateway` served an expired or
 * not-yet-valid certificate given at start (only `serve` checked its files),
 * and a reload took any pair Node could load, an expired one included (and
 * logged a bad set again every 5 s).
 */
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { createGateway, type Gateway } from '../../../src/gateway/gateway.js';
import { createCa, issueNodeCert, type CertKeyPem } from '../../../src/tls/certs.js';
import { writeFileAtomic } from '../../../src/tls/files.js';
import { logLines } from '../../harness/log-lines.js';

const DAY_MS = 86_400_000;
const KEY = 'gateway-admin-key-0123456789';

/** servedSerial: the serial number of the certificate a TLS handshake with 127.0.0.1:port is shown. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost', rejectUnauthorized: false }, () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial.toUpperCase());
    });
    s.on('error', reject);
  });
}

const serialOf = (c: CertKeyPem): string => new X509Certificate(c.certPem).serialNumber.toUpperCase();

describe('gateway HTTPS files: checked at start and on reload (review16)', function () {
  this.timeout(30_000);
  let dir: string;
  let ca: CertKeyPem;
  let gw: Gateway | null = null;
  const certFile = (): string => join(dir, 'gw.pem');
  const keyFile = (): string => join(dir, 'gw-key.pem');

  /** put writes the pair as a rotation does (each file renamed into place: a reload may see the new key beside the old certificate). */
  async function put(c: CertKeyPem): Promise<void> {
    await writeFileAtomic(keyFile(), c.keyPem, 0o600);
    await writeFileAtomic(certFile(), c.certPem, 0o644);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-gw-https-'));
    ca = await createCa();
  });

  afterEach(async () => {
    await gw?.close();
    gw = null;
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an expired or not yet valid certificate at start: createGateway throws naming the file', async () => {
    await put(await issueNodeCert(ca, { id: 'gw', dns: ['localhost'], notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) }));
    assert.throws(() => createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY }, tls: { certFile: certFile(), keyFile: keyFile() } }), new RegExp(`${certFile()}: expired on `));
    await put(await issueNodeCert(ca, { id: 'gw', dns: ['localhost'], notBefore: new Date(Date.now() + DAY_MS), notAfter: new Date(Date.now() + 10 * DAY_MS) }));
    assert.throws(() => createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY }, tls: { certFile: certFile(), keyFile: keyFile() } }), new RegExp(`${certFile()}: not valid before `));
  });

  it('an expired certificate swapped in is not served: the previous one stays, the error is logged once; a good one is then taken', async () => {
    const first = await issueNodeCert(ca, { id: 'gw', dns: ['localhost'] });
    await put(first);
    const { lines, logger } = logLines('info');
    gw = createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY }, tls: { certFile: certFile(), keyFile: keyFile() }, logger, tlsReloadCheckMs: 20 });
    const port = Number((await gw.listen('127.0.0.1:0')).split(':').pop());
    assert.equal(await servedSerial(port, ca.certPem), serialOf(first));

    await put(await issueNodeCert(ca, { id: 'gw', dns: ['localhost'], notBefore: new Date(Date.now() - 10 * DAY_MS), notAfter: new Date(Date.now() - DAY_MS) }));
    const refused = (): string[] => lines.filter((l) => l.includes('cannot be used') && l.includes('expired on'));
    for (let i = 0; i < 100 && refused().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(refused()[0] ?? '', /gw\.pem: expired on /);
    assert.equal(await servedSerial(port, ca.certPem), serialOf(first), 'the expired certificate was served');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(refused().length, 1, 'the same bad set is logged once');

    const next = await issueNodeCert(ca, { id: 'gw', dns: ['localhost'] });
    await put(next);
    for (let i = 0; i < 100 && (await servedSerial(port, ca.certPem)) !== serialOf(next); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await servedSerial(port, ca.certPem), serialOf(next));
  });

  it('a certificate in use that expires is logged once, and again for a replacement that expires in turn (review18)', async () => {
    const soon = await issueNodeCert(ca, { id: 'gw', dns: ['localhost'], notBefore: new Date(Date.now() - DAY_MS), notAfter: new Date(Date.now() + 2_000) });
    await put(soon);
    const { lines, logger } = logLines('info');
    gw = createGateway({ target: '127.0.0.1:1', auth: { adminKey: KEY }, tls: { certFile: certFile(), keyFile: keyFile() }, logger, tlsReloadCheckMs: 20 });
    await gw.listen('127.0.0.1:0');
    const expired = (): string[] => lines.filter((l) => l.includes('HTTPS certificate in use has expired'));
    for (let i = 0; i < 400 && expired().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(expired().length, 1, 'logged when it expired');
    assert.ok(expired()[0]?.includes(certFile()) && expired()[0]?.includes(new Date(new X509Certificate(soon.certPem).validTo).toISOString()), expired()[0]);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(expired().length, 1, 'once, not every check');

    // A replacement (taken: it is valid) that expires in its turn is logged again.
    await put(await issueNodeCert(ca, { id: 'gw', dns: ['localhost'], notBefore: new Date(Date.now() - DAY_MS), notAfter: new Date(Date.now() + 2_000) }));
    for (let i = 0; i < 400 && expired().length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(lines.some((l) => l.includes('HTTPS certificate reloaded')), 'the replacement was taken');
    assert.equal(expired().length, 2);
  });
});

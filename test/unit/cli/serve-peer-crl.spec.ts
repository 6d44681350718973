/**
 * serve --peer-crl at start: a CRL that does not verify against --peer-ca,
 * or that revokes this node's own peer certificate, is refused with exit 2
 * and a message naming the problem (nothing is served). A crl.pem beside
 * the peer certificates without --peer-crl is warned about at start. The
 * CRL in use is kept in the data dir: a restart on an older CRL file keeps
 * the newer one (no rollback) and says so.
 */
import { strict as assert } from 'node:assert';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { forgottenPeerCrl } from '../../../src/cli/serve.js';
import { createCa, createCrl, PEER_CRL_KEPT_FILE, readCa, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { ServeProcess } from '../../harness/serve-process.js';
import { describeRun, runCli } from '../../harness/child.js';
import { tmpDir } from '../tls/helpers.js';

describe('serve --peer-crl at start', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    ({ dir, cleanup } = await tmpDir('snapcoord-serve-crl-'));
    await writeCa(dir);
    await writeNodeCert(dir, 'n1', { ips: ['127.0.0.1'] });
  });

  after(async () => {
    await cleanup();
  });

  const args = (crl: string): string[] => [
    'serve', '--id', 'n1', '--grpc', '127.0.0.1:0', '--peers', 'n1=127.0.0.1:1', '--peer-listen', '127.0.0.1:0', '--http', '127.0.0.1:0',
    '--data-dir', join(dir, 'data-n1'), '--api-key', 'serve-admin-key-0123456789',
    '--peer-cert', join(dir, 'n1.pem'), '--peer-key', join(dir, 'n1-key.pem'), '--peer-ca', join(dir, 'ca.pem'), '--peer-crl', crl,
  ];

  it('refuses a CRL another CA signed, and one that is not a CRL (exit 2)', async () => {
    const crl = join(dir, 'other-crl.pem');
    await writeFile(crl, await createCrl(await createCa(), []));
    const r = await runCli(args(crl));
    assert.equal(r.code, 2, describeRun(args(crl), r));
    assert.match(r.stderr, /refusing to start: --peer-crl: .*other-crl\.pem: its signature does not verify against the CA/);
    const r2 = await runCli(args(join(dir, 'n1.pem')));
    assert.equal(r2.code, 2, describeRun(args(join(dir, 'n1.pem')), r2));
    assert.match(r2.stderr, /refusing to start: --peer-crl: .*n1\.pem: not a CRL/);
  });

  it('refuses to start with its own peer certificate revoked (exit 2)', async () => {
    const crl = join(dir, 'crl.pem');
    await writeFile(crl, await createCrl(await readCa(dir), [{ serialNumber: new X509Certificate(readFileSync(join(dir, 'n1.pem'))).serialNumber }]));
    const r = await runCli(args(crl));
    assert.equal(r.code, 2, describeRun(args(crl), r));
    assert.match(r.stderr, /refusing to start: --peer-cert .*n1\.pem \(serial [0-9a-f]+\) is revoked by --peer-crl/);
  });

  it('keeps the CRL in use in the data dir: restarted on an older CRL file, it keeps the newer one and says so', async () => {
    await writeNodeCert(dir, 'r', { ips: ['127.0.0.1'] });
    const rSerial = new X509Certificate(readFileSync(join(dir, 'r.pem'))).serialNumber;
    const crl = join(dir, 'kept-crl.pem');
    await writeFile(crl, await createCrl(await readCa(dir), [{ serialNumber: rSerial }], { thisUpdate: new Date(Date.now() - 60_000) }));
    const dataDir = join(dir, 'data-kept');
    const start = (): ServeProcess => {
      const a = args(crl);
      return new ServeProcess({ id: 'n1', grpc: '127.0.0.1:0', peer: '127.0.0.1:0', peers: 'n1=127.0.0.1:1', dataDir, apiKey: 'serve-admin-key-0123456789', extra: a.slice(a.indexOf('--peer-cert')) });
    };
    let p = start();
    try {
      await p.ready();
    } finally {
      await p.kill();
    }
    const kept = await readFile(join(dataDir, PEER_CRL_KEPT_FILE));
    // the CRL file rolled back to one signed the day before, which did not revoke r
    await writeFile(crl, await createCrl(await readCa(dir), [], { thisUpdate: new Date(Date.now() - 86_400_000) }));
    p = start();
    try {
      await p.ready();
      assert.match(p.output, /an older CRL \(thisUpdate .*\) than the one in use .*peer-crl-kept\.der.*a rollback is refused/, p.output);
    } finally {
      await p.kill();
    }
    assert.deepEqual(await readFile(join(dataDir, PEER_CRL_KEPT_FILE)), kept);
  });

  it('warns once at start when a crl.pem sits beside --peer-ca or --peer-cert and --peer-crl is not given; not with --peer-crl', async () => {
    const other = join(dir, 'elsewhere');
    await mkdir(other, { recursive: true });
    const peerTls = (caFile: string, certFile: string, crlFile?: string) => ({ peerTls: { caFile, certFile, keyFile: join(dir, 'n1-key.pem'), ...(crlFile !== undefined ? { crlFile } : {}) } });
    const crl = join(dir, 'crl.pem');
    await writeFile(crl, await createCrl(await readCa(dir), []));
    assert.equal(forgottenPeerCrl(peerTls(join(dir, 'ca.pem'), join(other, 'n1.pem'))), crl, 'beside --peer-ca');
    assert.equal(forgottenPeerCrl(peerTls(join(other, 'ca.pem'), join(dir, 'n1.pem'))), crl, 'beside --peer-cert');
    assert.equal(forgottenPeerCrl(peerTls(join(other, 'ca.pem'), join(other, 'n1.pem'))), null, 'none beside either');
    assert.equal(forgottenPeerCrl(peerTls(join(dir, 'ca.pem'), join(dir, 'n1.pem'), crl)), null, '--peer-crl given');
    assert.equal(forgottenPeerCrl({ peerTls: null }), null, 'no peer TLS');
    // A real serve: the warning in its log, once.
    const noCrl = args(crl).slice(0, -2);
    const p = new ServeProcess({ id: 'n1', grpc: '127.0.0.1:0', peer: '127.0.0.1:0', peers: 'n1=127.0.0.1:1', dataDir: join(dir, 'data-warn'), apiKey: 'serve-admin-key-0123456789', extra: noCrl.slice(noCrl.indexOf('--peer-cert')) });
    try {
      await p.ready();
      const warned = p.output.split('\n').filter((l) => l.includes('sits beside the peer certificates but --peer-crl is not given'));
      assert.equal(warned.length, 1, p.output);
      assert.ok(warned[0]?.includes(`start with --peer-crl ${crl}`), warned[0]);
    } finally {
      await p.kill();
    }
  });
});

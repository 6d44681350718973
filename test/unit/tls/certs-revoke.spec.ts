/**
 * `snapcoord certs revoke`: the README's own CA flow revokes a removed
 * member's certificate end to end: the CRL it writes is signed by the CA,
 * loads as serve --peer-crl loads it, and revokes exactly what was named; a
 * second run extends it (earlier serials and their dates kept); a file that is
 * not a CRL of this CA is refused, never overwritten. revokeCerts directly too.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createCa, createCrl, ensureLocalCrl, ensureLocalTls, revokeCerts, writeCa, writeNodeCert } from '../../../src/tls/certs.js';
import { loadCrl, normalizeSerial } from '../../../src/tls/crl.js';
import { localPeerCrlArgs } from '../../../src/cli/local.js';
import { describeRun, runCli } from '../../harness/child.js';
import { tmpDir } from './helpers.js';

describe('cli: snapcoord certs revoke', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    ({ dir, cleanup } = await tmpDir('snapcoord-revoke-'));
    await writeCa(dir);
    for (const id of ['n1', 'n2', 'n3']) await writeNodeCert(dir, id);
  });

  afterEach(async () => {
    await cleanup();
  });

  const serial = (id: string): string => new X509Certificate(readFileSync(join(dir, `${id}.pem`))).serialNumber;
  const load = async (file = join(dir, 'crl.pem')) => loadCrl(readFileSync(file), readFileSync(join(dir, 'ca.pem')), file, 'ca.pem');
  const revoked = async (id: string, file?: string): Promise<boolean> => (await load(file)).serials.has(serial(id).toLowerCase().replace(/^0+/, ''));

  it('revoke ID writes a CRL the CA signed naming ID\'s certificate; a second run (--cert, --serial) extends it', async () => {
    const a1 = ['certs', 'revoke', 'n3', '--dir', dir];
    const r1 = await runCli(a1);
    assert.equal(r1.code, 0, describeRun(a1, r1));
    assert.match(r1.stdout, /crl\.pem \(1 newly revoked, 1 in all\)[\s\S]*--peer-crl/);
    assert.equal(await revoked('n3'), true);
    assert.equal(await revoked('n1'), false);
    const when = (await load()).serials.get(serial('n3').toLowerCase().replace(/^0+/, ''));
    const a2 = ['certs', 'revoke', '--dir', dir, '--cert', join(dir, 'n2.pem'), '--serial', serial('n3')];
    const r2 = await runCli(a2);
    assert.equal(r2.code, 0, describeRun(a2, r2));
    assert.match(r2.stdout, /\(1 newly revoked, 2 in all\)/);
    assert.equal(await revoked('n2'), true);
    assert.equal(await revoked('n3'), true);
    assert.equal(await revoked('n1'), false);
    assert.equal((await load()).serials.get(serial('n3').toLowerCase().replace(/^0+/, ''))?.getTime(), when?.getTime(), 'the earlier revocation date is kept');
  });

  it('refuses (exit 2, file unchanged) a --crl another CA signed, a bad serial, a missing certificate', async () => {
    const crl = join(dir, 'other.pem');
    const other = await createCrl(await createCa(), []);
    writeFileSync(crl, other);
    const a = ['certs', 'revoke', 'n3', '--dir', dir, '--crl', crl];
    const r = await runCli(a);
    assert.equal(r.code, 2, describeRun(a, r));
    assert.match(r.stderr, /other\.pem: its signature does not verify against the CA/);
    assert.equal(readFileSync(crl, 'utf8'), other);
    const b = ['certs', 'revoke', '--dir', dir, '--serial', 'xyz'];
    assert.equal((await runCli(b)).code, 2);
    const c = ['certs', 'revoke', '--dir', dir, '--cert', join(dir, 'absent.pem')];
    const rc = await runCli(c);
    assert.equal(rc.code, 2, describeRun(c, rc));
    assert.match(rc.stderr, /absent\.pem: cannot be read/);
  });

  it('revokeCerts: days sets nextUpdate; serials in any case or with leading zeros are one', async () => {
    const s = serial('n1');
    const r = await revokeCerts(dir, [s, s.toLowerCase(), `00${s}`], { days: 7 });
    assert.equal(r.added, 1);
    assert.equal(r.revoked, 1);
    const info = (await load()).info;
    assert.ok(info.nextUpdate !== null && Math.abs(info.nextUpdate.getTime() - info.thisUpdate.getTime() - 7 * 86_400_000) < 2_000);
  });
});

describe('snapcoord local and the CRL certs revoke writes', () => {
  it('localPeerCrlArgs: --peer-crl <dir>/crl.pem once certs revoke has written it, nothing before', async () => {
    const { dir, cleanup } = await tmpDir('snapcoord-local-crl-');
    try {
      await writeCa(dir);
      await writeNodeCert(dir, 'n3');
      assert.deepEqual(localPeerCrlArgs(dir), []);
      await revokeCerts(dir, [new X509Certificate(readFileSync(join(dir, 'n3.pem'))).serialNumber]);
      assert.deepEqual(localPeerCrlArgs(dir), ['--peer-crl', join(dir, 'crl.pem')]);
    } finally {
      await cleanup();
    }
  });

  it('ensureLocalCrl: an empty CRL of the local CA before any revocation (so every node gets --peer-crl from its first start); kept with what it lists; signed again near its nextUpdate; replaced with the CA; anything else refused, unchanged', async () => {
    const { dir: base, cleanup } = await tmpDir('snapcoord-local-crl-');
    try {
      const dir = join(base, 'tls');
      const caKeyFile = join(base, 'ca', 'ca-key.pem');
      const tls = await ensureLocalTls(dir, ['n1', 'n2', 'n3'], { caKeyFile });
      const crlFile = join(dir, 'crl.pem');
      assert.equal(await ensureLocalCrl(tls), crlFile);
      const load = async (): Promise<Awaited<ReturnType<typeof loadCrl>>> => loadCrl(readFileSync(crlFile), readFileSync(tls.caFile), crlFile, tls.caFile);
      assert.equal((await load()).info.revoked, 0);
      assert.deepEqual(localPeerCrlArgs(dir), ['--peer-crl', crlFile]);
      const n3 = normalizeSerial(new X509Certificate(readFileSync(join(dir, 'n3.pem'))).serialNumber);
      await revokeCerts(dir, [n3], { caKeyFile });
      const signed = readFileSync(crlFile);
      await ensureLocalCrl({ ...tls, written: [] });
      assert.deepEqual(readFileSync(crlFile), signed, 'a current CRL of this CA is kept as it is');
      // one day left: signed again, n3 still listed, 30 days ahead
      await revokeCerts(dir, [], { caKeyFile, days: 1 });
      await ensureLocalCrl({ ...tls, written: [] });
      const renewed = await load();
      assert.equal(renewed.serials.has(n3), true);
      assert.ok((renewed.info.nextUpdate?.getTime() ?? 0) > Date.now() + 20 * 86_400_000, String(renewed.info.nextUpdate));
      // a CRL another CA signed, with the local CA not replaced: refused, left as it is
      const other = await createCrl(await createCa(), []);
      writeFileSync(crlFile, other);
      await assert.rejects(ensureLocalCrl({ ...tls, written: [] }), /signature does not verify/);
      assert.equal(readFileSync(crlFile, 'utf8'), other);
      // the same after ensureLocalTls replaced the CA (written anew): an empty CRL of the new CA
      await ensureLocalCrl({ ...tls, written: [tls.caFile] });
      assert.equal((await load()).info.revoked, 0);
    } finally {
      await cleanup();
    }
  });
});

/** How client commands connect (dialOf): the key and the CA found from the working directory, and no key in plaintext off loopback. */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliError } from '../../../src/cli/cli-error.js';
import { dialOf } from '../../../src/cli/client-options.js';
import { metricsSources, writeReport } from '../../../src/cli/bench/commands.js';
import { writeCa } from '../../../src/tls/index.js';

describe('client commands: dialOf', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-dial-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('without ./data: plaintext and no key; --api-key and SNAPCOORD_API_KEY give the key', () => {
    assert.deepEqual(dialOf({}, {}, dir), { apiKey: '' });
    assert.equal(dialOf({ apiKey: 'flag-key' }, { SNAPCOORD_API_KEY: 'env-key' }, dir).apiKey, 'flag-key');
    assert.equal(dialOf({}, { SNAPCOORD_API_KEY: 'env-key' }, dir).apiKey, 'env-key');
  });

  it('finds ./data/api-key and ./data/tls/ca.pem (what npm start makes) and dials TLS; SNAPCOORD_CACERT= or --plaintext turn TLS off', async () => {
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-dial-local-'));
    try {
      mkdirSync(join(d, 'data'), { recursive: true });
      writeFileSync(join(d, 'data', 'api-key'), 'local-key-0123456789\n');
      await writeCa(join(d, 'data', 'tls'));
      const local = dialOf({}, {}, d);
      assert.equal(local.apiKey, 'local-key-0123456789');
      assert.ok(local.credentials !== undefined && local.credentials._isSecure(), 'TLS');
      assert.equal(dialOf({}, { SNAPCOORD_CACERT: '' }, d).credentials, undefined);
      assert.equal(dialOf({ plaintext: true }, {}, d).credentials, undefined);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('refuses to send a key in plaintext to another machine, unless --plaintext', () => {
    assert.throws(
      () => dialOf({ endpoint: '10.0.0.7:7001', apiKey: 'secret-key-0123456789' }, {}, dir),
      (err: unknown) => err instanceof CliError && err.exitCode === 2 && /refusing to send the API key in plaintext to 10\.0\.0\.7:7001/.test(err.message) && !err.message.includes('secret-key'),
    );
    assert.equal(dialOf({ endpoint: '10.0.0.7:7001', apiKey: 'k', plaintext: true }, {}, dir).apiKey, 'k');
    assert.equal(dialOf({ endpoint: '127.0.0.1:7001', apiKey: 'k' }, {}, dir).apiKey, 'k');
    assert.equal(dialOf({ endpoint: '10.0.0.7:7001' }, {}, dir).apiKey, '', 'no key, nothing to leak');
  });

  it('bench --metrics: refuses to send the key over http:// to another machine, unless --plaintext', () => {
    // Before, the key went as authorization: Bearer to any --metrics URL, in the clear for http:// (a gateway
    // off loopback serves HTTPS: an http:// typo sent the admin key across the network before failing).
    const key = 'secret-key-0123456789';
    assert.throws(
      () => metricsSources({ metrics: ['http://10.0.0.7:8108/metrics'] }, key),
      (err: unknown) =>
        err instanceof CliError && err.exitCode === 2 && /refusing to send the API key in plaintext to http:\/\/10\.0\.0\.7:8108\/metrics/.test(err.message) && !err.message.includes(key),
    );
    assert.throws(() => metricsSources({ metrics: ['http://[2001:db8::1]:8108/metrics'] }, key), /refusing to send the API key in plaintext/);
    assert.equal(metricsSources({ metrics: ['http://10.0.0.7:8108/metrics'], plaintext: true }, key).length, 1);
    assert.equal(metricsSources({ metrics: ['https://10.0.0.7:8108/metrics'] }, key).length, 1);
    assert.equal(metricsSources({ metrics: ['http://127.0.0.1:8108/metrics', 'http://[::1]:8108/metrics', 'http://localhost:8108/metrics'] }, key).length, 3);
    assert.equal(metricsSources({ metrics: ['http://10.0.0.7:8108/metrics'] }, '').length, 1, 'no key, nothing to leak');
  });

  it('bench --report: writes through a temp file of its own, never through a link planted at a guessable name', async () => {
    // Before, the temp name was FILE.tmp-<pid> opened with O_CREAT and no O_EXCL: in a shared directory (/tmp),
    // a link planted there made the report overwrite the file it points to, any file the operator may write.
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-report-'));
    try {
      const victim = join(d, 'victim');
      writeFileSync(victim, 'precious\n');
      const report = join(d, 'bench.html');
      for (let pid = process.pid - 5; pid <= process.pid + 5; pid++) symlinkSync(victim, `${report}.tmp-${pid}`);
      await writeReport(report, '<html>report</html>');
      assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
      assert.equal(readFileSync(report, 'utf8'), '<html>report</html>');
      assert.deepEqual(readdirSync(d).filter((f) => !f.startsWith('bench.html.tmp-') && f !== 'victim' && f !== 'bench.html'), [], 'no temp file left');
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});

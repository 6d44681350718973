/** How client commands connect (dialOf): the key and the CA found from the working directory, and no key in plaintext off loopback. */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliError } from '../../../src/cli/cli-error.js';
import { clientOptions, dialOf } from '../../../src/cli/client-options.js';
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

  it('--api-key-file FILE (or SNAPCOORD_API_KEY_FILE): the key from its first line, out of /proc/*/cmdline; a file others may read is warned about', async () => {
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-dial-keyfile-'));
    try {
      const key = 'file-key-0123456789abcdef';
      writeFileSync(join(d, 'key'), `${key}\n`);
      chmodSync(join(d, 'key'), 0o600);
      const warned: string[] = [];
      const warn = (m: string): void => void warned.push(m);
      assert.ok(clientOptions(new Command('x')).options.some((o) => o.long === '--api-key-file'), 'the option exists');
      assert.equal(dialOf({ apiKeyFile: 'key' }, { SNAPCOORD_API_KEY: 'env-key' }, d, warn).apiKey, key, 'relative to the working directory; beats the env');
      assert.equal(dialOf({}, { SNAPCOORD_API_KEY_FILE: join(d, 'key') }, d, warn).apiKey, key);
      assert.equal(dialOf({}, { SNAPCOORD_API_KEY: 'env-key', SNAPCOORD_API_KEY_FILE: join(d, 'key') }, d, warn).apiKey, 'env-key');
      assert.deepEqual(warned, []);
      chmodSync(join(d, 'key'), 0o644);
      assert.equal(dialOf({ apiKeyFile: 'key' }, {}, d, warn).apiKey, key);
      assert.equal(warned.length, 1);
      assert.match(warned[0] ?? '', /readable by every user of this machine \(mode 0644\): .*chmod 600/);
      assert.ok(!(warned[0] ?? '').includes(key));
      const refusedWith = (opts: Parameters<typeof dialOf>[0], re: RegExp, env: NodeJS.ProcessEnv = {}): void =>
        assert.throws(() => dialOf(opts, env, d, warn), (err: unknown) => err instanceof CliError && err.exitCode === 2 && re.test(err.message) && !err.message.includes(key));
      refusedWith({ apiKeyFile: 'key', apiKey: key }, /^api-key and api-key-file: give one of them$/);
      refusedWith({ apiKeyFile: 'missing' }, /^api-key-file missing: cannot read: ENOENT$/);
      refusedWith({}, /^SNAPCOORD_API_KEY_FILE \/nonexistent\/key: cannot read: ENOENT$/, { SNAPCOORD_API_KEY_FILE: '/nonexistent/key' });
      writeFileSync(join(d, 'empty'), '\n');
      refusedWith({ apiKeyFile: 'empty' }, /^api-key-file empty: the first line is empty$/);
      // ./data/api-key with a blank first line is no key, as before.
      mkdirSync(join(d, 'data'));
      writeFileSync(join(d, 'data', 'api-key'), '\n');
      assert.equal(dialOf({}, {}, d, warn).apiKey, '');
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

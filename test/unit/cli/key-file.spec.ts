/**
 * API key files: a key file others may read is warned about (serve --api-key-file, local's data/api-key, the
 * client commands' key files), local never writes its new key through a link planted at data/api-key, and a key
 * file is read with a bound.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveServeConfig } from '../../../src/cli/config.js';
import { API_KEYS_FILE_BYTES_MAX, KEY_FILE_READ_MAX, keyFileExposure, readKeyFileLine } from '../../../src/cli/key-file.js';
import { apiKeyFor } from '../../../src/cli/local.js';
import { gatewayAdminKey, gatewayApiKeysText } from '../../../src/cli/program.js';
import { CliError } from '../../../src/cli/cli-error.js';
import { CREDENTIALS_FILE_BYTES_MAX, readCredentialsFile, S3Error } from '../../../src/ops/s3.js';

describe('cli API key files', () => {
  let dir: string;
  const key = 'secret-key-0123456789abcdef';

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'h-review15-keyfile-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keyFileExposure: a file its group or others may read is named with its mode and the fix; 0600 and 0400 are fine', () => {
    const f = join(dir, 'k');
    writeFileSync(f, `${key}\n`);
    chmodSync(f, 0o644);
    assert.equal(keyFileExposure(f), `API key file ${f} is readable by every user of this machine (mode 0644): anyone who reads it holds the key; chmod 600 ${f}`);
    chmodSync(f, 0o640);
    assert.match(keyFileExposure(f) ?? '', /readable by the file's group \(mode 0640\)/);
    for (const mode of [0o600, 0o400, 0o700]) {
      chmodSync(f, mode);
      assert.equal(keyFileExposure(f), null, mode.toString(8));
    }
    assert.equal(keyFileExposure(join(dir, 'missing')), null, 'the read reports a missing file');
  });

  it('readKeyFileLine: the first line, trimmed; empty, missing and over-long first lines are clear errors', () => {
    const f = join(dir, 'k');
    writeFileSync(f, ` ${key} \r\nsecond line\n`);
    assert.equal(readKeyFileLine(f), key);
    writeFileSync(f, key);
    assert.equal(readKeyFileLine(f), key, 'no newline at the end');
    writeFileSync(f, '\nsomething\n');
    assert.throws(() => readKeyFileLine(f), /^Error: the first line is empty$/);
    writeFileSync(f, 'k'.repeat(KEY_FILE_READ_MAX + 10));
    assert.throws(() => readKeyFileLine(f), /the first line is longer than 4096 bytes/);
    assert.throws(() => readKeyFileLine(join(dir, 'missing')), /cannot read: ENOENT/);
  });

  it('local: a new key is never written through a link planted at data/api-key (dangling or not); a readable key file is warned about', async () => {
    // Before, writeFileSync followed a dangling link at data/api-key and created the file it pointed to.
    const victim = join(dir, 'victim');
    symlinkSync(victim, join(dir, 'api-key'));
    const made = await apiKeyFor(dir, {});
    assert.equal(existsSync(victim), false, 'nothing written through the link');
    const st = lstatSync(join(dir, 'api-key'));
    assert.ok(st.isFile(), 'a regular file replaced the link');
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(readFileSync(join(dir, 'api-key'), 'utf8'), `${made.key}\n`);
    assert.equal(made.warning, null);
    // A link to an existing file with a blank first line (a new key is made): the link is replaced, the file kept.
    writeFileSync(victim, '\nprecious\n');
    await rm(join(dir, 'api-key'));
    symlinkSync(victim, join(dir, 'api-key'));
    await apiKeyFor(dir, {});
    assert.equal(readFileSync(victim, 'utf8'), '\nprecious\n');
    assert.ok(lstatSync(join(dir, 'api-key')).isFile());
    // An existing key is reused; readable by others, it is warned about.
    chmodSync(join(dir, 'api-key'), 0o644);
    const again = await apiKeyFor(dir, {});
    assert.equal(again.key, readFileSync(join(dir, 'api-key'), 'utf8').trim());
    assert.match(again.warning ?? '', /readable by every user of this machine \(mode 0644\): .*chmod 600/);
    assert.ok(!(again.warning ?? '').includes(again.key));
    assert.equal((await apiKeyFor(dir, { SNAPCOORD_API_KEY: key })).key, key);
  });

  it('serve --api-key-file: a key file others may read gives a warning (logged at start), a private one none', () => {
    const f = join(dir, 'serve-key');
    writeFileSync(f, `${key}\n`);
    chmodSync(f, 0o644);
    const open = resolveServeConfig({ apiKeyFile: f }, {});
    assert.equal(open.apiKey, key);
    assert.match(open.apiKeyFileWarning, /readable by every user of this machine \(mode 0644\)/);
    assert.ok(!open.apiKeyFileWarning.includes(key));
    chmodSync(f, 0o600);
    assert.equal(resolveServeConfig({ apiKeyFile: f }, {}).apiKeyFileWarning, '');
  });

  it('serve: a TLS private key others may read gives a warning naming the file, its option and mode (once for a key two options share), a private one none (review16: only API key files were warned about)', () => {
    const f = (name: string, mode: number): string => {
      const p = join(dir, name);
      writeFileSync(p, 'pem\n');
      chmodSync(p, mode);
      return p;
    };
    const cert = f('n1.pem', 0o644);
    const ca = f('ca.pem', 0o644);
    const nodeKey = f('n1-key.pem', 0o644);
    const httpKey = f('http-key.pem', 0o640);
    const cfg = resolveServeConfig({ apiKey: key, peerCert: cert, peerKey: nodeKey, peerCa: ca, cert, key: nodeKey, httpCert: cert, httpKey }, {});
    assert.deepEqual(cfg.tlsKeyFileWarnings, [
      `TLS private key ${nodeKey} (--peer-key, --key) is readable by every user of this machine (mode 0644): anyone who reads it can pose as this node; chmod 600 ${nodeKey}`,
      `TLS private key ${httpKey} (--http-key) is readable by the file's group (mode 0640): anyone who reads it can pose as this node; chmod 600 ${httpKey}`,
    ]);
    chmodSync(nodeKey, 0o600);
    chmodSync(httpKey, 0o400);
    assert.deepEqual(resolveServeConfig({ apiKey: key, peerCert: cert, peerKey: nodeKey, peerCa: ca, cert, key: nodeKey, httpCert: cert, httpKey }, {}).tlsKeyFileWarnings, []);
  });

  it('serve --s3-credentials-file: warned when others may read it (its secret key reaches every archive uploaded), as API key files and TLS keys are; read with a bound (a device or a huge file is refused, not read whole)', async () => {
    const f = join(dir, 's3.json');
    writeFileSync(f, JSON.stringify({ accessKeyId: 'AK', secretAccessKey: 'SK-secret' }));
    chmodSync(f, 0o644);
    const cfg = resolveServeConfig({ apiKey: key, s3CredentialsFile: f }, {});
    assert.equal(cfg.s3CredentialsFileWarning, `S3 credentials file ${f} is readable by every user of this machine (mode 0644): anyone who reads it holds the object store's access key; chmod 600 ${f}`);
    assert.ok(!cfg.s3CredentialsFileWarning.includes('SK-secret'));
    chmodSync(f, 0o600);
    assert.equal(resolveServeConfig({ apiKey: key }, { SNAPCOORD_S3_CREDENTIALS_FILE: f }).s3CredentialsFileWarning, '');
    assert.deepEqual(await readCredentialsFile(f), { accessKeyId: 'AK', secretAccessKey: 'SK-secret' });
    // Past the bound: refused whole, naming the bound, never the secret (before: read into memory and parsed).
    writeFileSync(f, `aws_access_key_id = AK\naws_secret_access_key = SK-secret\n${'#'.repeat(CREDENTIALS_FILE_BYTES_MAX)}\n`);
    await assert.rejects(readCredentialsFile(f), (e: Error) => e instanceof S3Error && e.code === 'credentials' && e.message.includes(`larger than ${CREDENTIALS_FILE_BYTES_MAX} bytes`) && !e.message.includes('SK-secret'));
    await assert.rejects(readCredentialsFile('/dev/zero'), (e: Error) => e instanceof S3Error && e.message.includes(`larger than ${CREDENTIALS_FILE_BYTES_MAX} bytes`));
  });

  it('serve --api-keys-file: the extra keys from a file, out of /proc/*/cmdline (review16: --api-keys had no file form); warned when others may read it; bounded; not with --api-keys', () => {
    const f = join(dir, 'keys.json');
    const keys = [{ key: 'reader-key-0123456789', actions: ['kv.read'] }];
    writeFileSync(f, JSON.stringify(keys));
    chmodSync(f, 0o644);
    const cfg = resolveServeConfig({ apiKeysFile: f }, {});
    assert.deepEqual(cfg.apiKeys, keys);
    assert.equal(cfg.apiKeysFileWarning, `API keys file ${f} is readable by every user of this machine (mode 0644): anyone who reads it holds the keys; chmod 600 ${f}`);
    chmodSync(f, 0o600);
    assert.equal(resolveServeConfig({}, { SNAPCOORD_API_KEYS_FILE: f }).apiKeysFileWarning, '');
    assert.deepEqual(resolveServeConfig({}, { SNAPCOORD_API_KEYS_FILE: f }).apiKeys, keys);
    assert.throws(() => resolveServeConfig({ apiKeysFile: f, apiKeys: JSON.stringify(keys) }, {}), /api-keys and api-keys-file: give one of them/);
    writeFileSync(f, '[{"key":"short","actions":["kv.read"]}]');
    assert.throws(() => resolveServeConfig({ apiKeysFile: f }, {}), (err: Error) => err.message.startsWith(`api-keys-file ${f}: [0]: "key" must be`) && !err.message.includes('short'));
    writeFileSync(f, '');
    assert.throws(() => resolveServeConfig({ apiKeysFile: f, apiKey: key }, {}), /api-keys-file .*: empty/);
    assert.throws(() => resolveServeConfig({ apiKeysFile: '/dev/zero', apiKey: key }, {}), new RegExp(`api-keys-file /dev/zero: larger than ${API_KEYS_FILE_BYTES_MAX} bytes`));
    assert.throws(() => resolveServeConfig({ apiKeysFile: join(dir, 'nope'), apiKey: key }, {}), /api-keys-file .*nope: cannot read: ENOENT/);
  });

  it('gateway --api-keys-file (or SNAPCOORD_API_KEYS_FILE): the extra keys from a file; a readable one is warned about; a flag wins over the environment', () => {
    const f = join(dir, 'gw-keys.json');
    const text = JSON.stringify([{ key: 'reader-key-0123456789', actions: ['kv.read'] }]);
    writeFileSync(f, text);
    chmodSync(f, 0o640);
    const warned: string[] = [];
    assert.equal(gatewayApiKeysText({ apiKeysFile: f }, {}, (m) => warned.push(m)), text);
    assert.match(warned[0] ?? '', /API keys file .* is readable by the file's group \(mode 0640\)/);
    assert.equal(gatewayApiKeysText({}, { SNAPCOORD_API_KEYS_FILE: f }, () => undefined), text);
    assert.equal(gatewayApiKeysText({ apiKeys: '[]' }, { SNAPCOORD_API_KEYS_FILE: f }, () => undefined), '[]');
    assert.equal(gatewayApiKeysText({}, { SNAPCOORD_API_KEYS: '[]', SNAPCOORD_API_KEYS_FILE: f }, () => undefined), '[]');
    assert.throws(() => gatewayApiKeysText({ apiKeys: '[]', apiKeysFile: f }, {}), (err: Error) => err instanceof CliError && /give one of them/.test(err.message));
  });

  it('serve --api-key-file: read with a bound (a device or a huge file is refused, not read whole)', () => {
    // Before, the whole file was read: --api-key-file /dev/zero never returned; a long first line became the key.
    const f = join(dir, 'long-key');
    writeFileSync(f, 'k'.repeat(KEY_FILE_READ_MAX + 1));
    assert.throws(() => resolveServeConfig({ apiKeyFile: f }, {}), (err: unknown) => err instanceof CliError && err.exitCode === 2 && /api-key-file .*long-key: the first line is longer than 4096 bytes/.test(err.message));
    assert.throws(() => resolveServeConfig({ apiKeyFile: '/dev/zero' }, {}), /api-key-file \/dev\/zero: the first line is longer than 4096 bytes/);
    assert.throws(() => resolveServeConfig({ apiKeyFile: join(dir, 'missing') }, {}), /cannot read: ENOENT/);
  });

  it('gateway --api-key-file (or SNAPCOORD_API_KEY_FILE): the admin key from a file, out of /proc/*/cmdline; a readable file is warned about', () => {
    const f = join(dir, 'gw-key');
    writeFileSync(f, `${key}\n`);
    chmodSync(f, 0o600);
    const warned: string[] = [];
    const warn = (m: string): void => void warned.push(m);
    assert.equal(gatewayAdminKey({ apiKeyFile: f }, { SNAPCOORD_API_KEY: 'env-key' }, warn), key);
    assert.equal(gatewayAdminKey({}, { SNAPCOORD_API_KEY_FILE: f }, warn), key);
    assert.equal(gatewayAdminKey({ apiKey: 'flag-key' }, { SNAPCOORD_API_KEY_FILE: f }, warn), 'flag-key');
    assert.equal(gatewayAdminKey({}, { SNAPCOORD_API_KEY: 'env-key', SNAPCOORD_API_KEY_FILE: f }, warn), 'env-key');
    assert.equal(gatewayAdminKey({}, {}, warn), '');
    assert.deepEqual(warned, []);
    chmodSync(f, 0o640);
    gatewayAdminKey({ apiKeyFile: f }, {}, warn);
    assert.match(warned[0] ?? '', /readable by the file's group \(mode 0640\)/);
    const refused = (opts: { apiKey?: string; apiKeyFile?: string }, re: RegExp): void =>
      assert.throws(() => gatewayAdminKey(opts, {}, warn), (err: unknown) => err instanceof CliError && err.exitCode === 2 && re.test(err.message) && !err.message.includes(key));
    refused({ apiKey: key, apiKeyFile: f }, /^api-key and api-key-file: give one of them$/);
    refused({ apiKeyFile: join(dir, 'missing') }, /^api-key-file .*missing: cannot read: ENOENT$/);
  });
});

/** The gateway's options of `snapcoord serve`: --api-key, --api-keys (flag, env, config file) and the no-key refusal. */
import assert from 'node:assert/strict';
import { CliError } from '../../../src/cli/cli-error.js';
import { resolveServeConfig } from '../../../src/cli/config.js';

const KEYS = [{ key: 'reader-key-123', actions: ['snapshots.read'] }];

describe('gateway: serve configuration', () => {
  it('refuses to start with no key unless --insecure-no-auth (exit 2, names the fix)', () => {
    assert.throws(
      () => resolveServeConfig({}, {}),
      (err: unknown) => {
        assert.ok(err instanceof CliError);
        assert.equal(err.exitCode, 2);
        assert.match(err.message, /need an API key.*--api-key.*SNAPCOORD_API_KEY.*--insecure-no-auth/);
        return true;
      },
    );
    assert.equal(resolveServeConfig({ insecureNoAuth: true }, {}).insecureNoAuth, true);
    assert.equal(resolveServeConfig({}, { SNAPCOORD_INSECURE_NO_AUTH: 'true' }).insecureNoAuth, true);
  });

  it('the admin key comes from --api-key or SNAPCOORD_API_KEY', () => {
    assert.equal(resolveServeConfig({ apiKey: 'flag-key' }, { SNAPCOORD_API_KEY: 'env-key-1' }).apiKey, 'flag-key');
    assert.equal(resolveServeConfig({}, { SNAPCOORD_API_KEY: 'env-key-1' }).apiKey, 'env-key-1');
    assert.equal(resolveServeConfig({}, { SNAPCOORD_API_KEY: 'env-key-1' }).httpAddress, '127.0.0.1:8108');
  });

  it('an admin key shorter than 8 characters is refused, from the flag, the environment or the file, without naming it', () => {
    for (const [raw, env, read] of [
      [{ apiKey: 'k' }, {}, undefined],
      [{}, { SNAPCOORD_API_KEY: 'seven77' }, undefined],
      [{ apiKeyFile: '/keys/short' }, {}, () => 'abc\n'],
    ] as const) {
      assert.throws(
        () => resolveServeConfig(raw, env, read),
        (err: Error) => /the admin API key has \d characters; an API key has at least 8/.test(err.message) && !/seven77|: abc|'k'/.test(err.message),
      );
    }
    assert.equal(resolveServeConfig({}, { SNAPCOORD_API_KEY: 'eight888' }).apiKey, 'eight888');
  });

  it('extra keys: config file array, SNAPCOORD_API_KEYS JSON, --api-keys; bad entries are clear errors', () => {
    const file = resolveServeConfig({}, { SNAPCOORD_CONFIG: '/x.json' }, () => JSON.stringify({ apiKeys: KEYS }));
    assert.deepEqual(file.apiKeys, KEYS);
    assert.equal(file.apiKey, '');
    assert.deepEqual(resolveServeConfig({}, { SNAPCOORD_API_KEYS: JSON.stringify(KEYS) }).apiKeys, KEYS);
    assert.deepEqual(resolveServeConfig({ apiKeys: JSON.stringify(KEYS) }, {}).apiKeys, KEYS);
    assert.throws(() => resolveServeConfig({ apiKeys: '[{"key":"reader-key-123","actions":["root"]}]' }, {}), /api-keys: \[0\]: unknown action "root"/);
    assert.throws(() => resolveServeConfig({}, { SNAPCOORD_API_KEYS: 'nope' }), /api-keys: not valid JSON/);
  });
});

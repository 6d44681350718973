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

  it('--s3-timeout-ms / SNAPCOORD_S3_TIMEOUT_MS set the S3 request timeout; a value out of 1000..600000 or not a whole number is refused, naming the flag and the bounds', () => {
    const base = { insecureNoAuth: true };
    assert.equal(resolveServeConfig(base, {}).s3TimeoutMs, 0, 'none given: the default');
    assert.equal(resolveServeConfig({ ...base, s3TimeoutMs: '5000' }, {}).s3TimeoutMs, 5000);
    assert.equal(resolveServeConfig(base, { SNAPCOORD_S3_TIMEOUT_MS: '120000' }).s3TimeoutMs, 120_000);
    assert.equal(resolveServeConfig({ ...base, s3TimeoutMs: '2000' }, { SNAPCOORD_S3_TIMEOUT_MS: '120000' }).s3TimeoutMs, 2000, 'the flag wins');
    for (const bad of ['0', '999', '600001']) {
      assert.throws(
        () => resolveServeConfig({ ...base, s3TimeoutMs: bad }, {}),
        (err: unknown) => err instanceof CliError && err.exitCode === 2 && /s3-timeout-ms: .* is not a whole number of milliseconds from 1000 to 600000/.test(err.message),
        bad,
      );
    }
    for (const bad of ['1.5', 'abc', '-5']) assert.throws(() => resolveServeConfig({ ...base, s3TimeoutMs: bad }, {}), /--s3-timeout-ms: expected a whole number/, bad);
    assert.throws(() => resolveServeConfig(base, { SNAPCOORD_S3_TIMEOUT_MS: '100' }), /s3-timeout-ms: "100" is not a whole number of milliseconds from 1000 to 600000/);
  });
  it('--snapshot-scrub-interval / --snapshot-scrub-rate (and their SNAPCOORD_ twins): a day and 64 MiB/s by default, 0 turns each off; out of range is refused, naming the flag and the bounds', () => {
    const base = { insecureNoAuth: true };
    const d = resolveServeConfig(base, {});
    assert.equal(d.snapshotScrubIntervalSecs, 86_400);
    assert.equal(d.snapshotScrubRate, 64 * 1024 * 1024);
    assert.equal(resolveServeConfig({ ...base, snapshotScrubInterval: '0' }, {}).snapshotScrubIntervalSecs, 0);
    assert.equal(resolveServeConfig(base, { SNAPCOORD_SNAPSHOT_SCRUB_INTERVAL: '3600', SNAPCOORD_SNAPSHOT_SCRUB_RATE: '0' }).snapshotScrubIntervalSecs, 3600);
    assert.equal(resolveServeConfig(base, { SNAPCOORD_SNAPSHOT_SCRUB_RATE: '0' }).snapshotScrubRate, 0);
    assert.throws(() => resolveServeConfig({ ...base, snapshotScrubInterval: '31536001' }, {}), (err: unknown) => err instanceof CliError && err.exitCode === 2 && /snapshot-scrub-interval: 31536001 is out of range 1\.\.31536000 seconds \(0 for never\)/.test(err.message));
    assert.throws(() => resolveServeConfig({ ...base, snapshotScrubRate: '1000' }, {}), /snapshot-scrub-rate: 1000 bytes\/s is below the minimum of 1048576 \(0 for no limit\)/);
    assert.throws(() => resolveServeConfig({ ...base, snapshotScrubInterval: '-1' }, {}), /--snapshot-scrub-interval: expected a whole number/);
  });
});

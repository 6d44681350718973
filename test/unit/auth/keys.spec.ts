// The key model shared by the gateway and the client-plane interceptor (src/auth).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { ESLint } from 'eslint';

import { bearerToken } from '../../../src/auth/bearer.js';
import { ACTIONS, API_KEY_BYTES_MAX, API_KEYS_MAX, KeyRing, allows, parseApiKeys, type Action } from '../../../src/auth/keys.js';
import { ACTIONS as GATEWAY_ACTIONS, parseApiKeys as gatewayParseApiKeys } from '../../../src/gateway/auth.js';

const ADMIN = 'admin-key-0123456789';
const READ = 'read-key-0123456789';
const KV = 'kv-key-0123456789';

/** watch replaces crypto[name] with a recorder of its calls for the duration of f, then restores it. */
function watch<K extends 'timingSafeEqual' | 'createHash' | 'hash', T>(name: K, f: (calls: unknown[][]) => T): T {
  const real = crypto[name] as (...args: unknown[]) => unknown;
  const calls: unknown[][] = [];
  (crypto as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    calls.push(args);
    return real.apply(crypto, args);
  };
  try {
    return f(calls);
  } finally {
    (crypto as unknown as Record<string, unknown>)[name] = real;
  }
}

describe('src/auth: keys and actions', () => {
  it('ACTIONS: the gateway\'s four plus kv.read and kv.write; the gateway uses the same list and parser', () => {
    assert.deepEqual([...ACTIONS].sort(), ['admin', 'cluster', 'kv.read', 'kv.write', 'snapshots.read', 'snapshots.write']);
    assert.equal(GATEWAY_ACTIONS, ACTIONS);
    assert.equal(gatewayParseApiKeys, parseApiKeys);
  });

  it('allows: the action itself, or admin (which implies every action); anyKey for any known key', () => {
    for (const a of ACTIONS) {
      assert.equal(allows(['admin'], a), true, `admin implies ${a}`);
      assert.equal(allows([a], a), true);
      assert.equal(allows([a], 'anyKey'), true);
    }
    assert.equal(allows([], 'anyKey'), true);
    assert.equal(allows(['snapshots.read'], 'snapshots.write'), false, 'read does not imply write');
    assert.equal(allows(['snapshots.write'], 'snapshots.read'), false, 'no implication but admin');
    assert.equal(allows(['kv.write'], 'kv.read'), false);
    assert.equal(allows(['cluster', 'kv.read'], 'admin'), false);
    assert.equal(allows([], 'kv.read'), false);
  });

  it('KeyRing.lookup: the actions of a known key (union over entries), null for an unknown one', () => {
    const ring = new KeyRing({
      adminKey: ADMIN,
      keys: [
        { key: READ, actions: ['snapshots.read'] },
        { key: KV, actions: ['kv.read'] },
        { key: KV, actions: ['kv.write'] },
      ],
    });
    assert.deepEqual([...(ring.lookup(ADMIN) ?? [])], ['admin']);
    assert.deepEqual([...(ring.lookup(READ) ?? [])], ['snapshots.read']);
    assert.deepEqual([...(ring.lookup(KV) ?? [])].sort(), ['kv.read', 'kv.write']);
    assert.equal(ring.lookup('nope-nope-nope'), null);
    assert.equal(ring.lookup(''), null);
    assert.equal(ring.lookup(ADMIN.slice(0, -1)), null, 'a prefix is not the key');
    assert.equal(ring.lookup(`${ADMIN}x`), null);
    assert.equal(ring.lookup(ADMIN.toUpperCase()), null, 'keys are case-sensitive');
  });

  it('KeyRing.lookup compares SHA-256 digests with crypto.timingSafeEqual, against every known key, every time', () => {
    const ring = new KeyRing({
      adminKey: ADMIN,
      keys: [
        { key: READ, actions: ['snapshots.read'] },
        { key: KV, actions: ['kv.read'] },
      ],
    });
    const known = 3;
    // The first key matching, the last, none, a near miss, and keys of other lengths: always `known` comparisons
    // of 32-byte digests (so neither the position of a match nor the key's length shows in the time taken).
    for (const presented of [ADMIN, KV, 'nope', `${ADMIN.slice(0, -1)}!`, 'x'.repeat(API_KEY_BYTES_MAX), 'é']) {
      const calls = watch('timingSafeEqual', (c) => {
        ring.lookup(presented);
        return c;
      });
      assert.equal(calls.length, known, `comparisons for a ${presented.length}-char key`);
      for (const [a, b] of calls) {
        assert.ok(Buffer.isBuffer(a) && Buffer.isBuffer(b));
        assert.equal(a.byteLength, 32);
        assert.equal(b.byteLength, 32);
      }
    }
    // check() goes through lookup: one round of comparisons per presented key.
    const calls = watch('timingSafeEqual', (c) => {
      assert.equal(ring.check(['wrong', ADMIN], 'cluster'), 'ok');
      return c;
    });
    assert.equal(calls.length, 2 * known);
  });

  it(`KeyRing: a key over ${API_KEY_BYTES_MAX} bytes is refused without hashing`, () => {
    const long = 'k'.repeat(API_KEY_BYTES_MAX + 1);
    const ring = new KeyRing({ adminKey: ADMIN });
    // Hashed by crypto.hash where Node has it (20.12+), else by createHash: both are watched.
    const hashCalls = (f: () => void): number => watch('hash', (h) => watch('createHash', (c) => (f(), h.length + c.length)));
    const hashed = hashCalls(() => {
      assert.equal(ring.lookup(long), null);
      assert.equal(ring.check([long], 'snapshots.read'), 'invalid');
      // 4096 bytes of a 2-byte character: 2049 characters are over the limit too.
      assert.equal(ring.lookup('é'.repeat(API_KEY_BYTES_MAX / 2 + 1)), null);
    });
    assert.equal(hashed, 0);
    const atLimit = hashCalls(() => {
      ring.lookup('k'.repeat(API_KEY_BYTES_MAX));
    });
    assert.equal(atLimit, 1, 'a key at the limit is hashed and compared');
  });

  it('KeyRing.check: missing / invalid / forbidden / ok; anyKey; insecure; no keys', () => {
    const ring = new KeyRing({ adminKey: ADMIN, keys: [{ key: READ, actions: ['snapshots.read'] }, { key: KV, actions: ['kv.read', 'kv.write'] }] });
    assert.equal(ring.check([], 'snapshots.read'), 'missing');
    assert.equal(ring.check(['nope-nope-nope'], 'snapshots.read'), 'invalid');
    assert.equal(ring.check([READ], 'snapshots.write'), 'forbidden');
    assert.equal(ring.check([READ], 'snapshots.read'), 'ok');
    assert.equal(ring.check([READ], 'anyKey'), 'ok');
    assert.equal(ring.check(['nope-nope-nope'], 'anyKey'), 'invalid');
    assert.equal(ring.check([KV], 'kv.write'), 'ok');
    assert.equal(ring.check([KV], 'snapshots.read'), 'forbidden');
    for (const a of ACTIONS) assert.equal(ring.check([ADMIN], a), 'ok', `admin may ${a}`);
    const extraAdmin = new KeyRing({ adminKey: '', keys: [{ key: READ, actions: ['admin'] }] });
    for (const a of ACTIONS) assert.equal(extraAdmin.check([READ], a), 'ok', `an extra admin key may ${a}`);
    assert.equal(new KeyRing({ adminKey: '', insecureNoAuth: true }).check([], 'admin'), 'ok');
    const none = new KeyRing({ adminKey: '' });
    assert.equal(none.hasKeys, false);
    assert.equal(none.check([ADMIN], 'anyKey'), 'invalid', 'no keys configured: nothing passes');
  });

  it('KeyRing: bad entries are errors that never echo the key', () => {
    assert.throws(() => new KeyRing({ adminKey: '', keys: [{ key: '', actions: ['cluster'] }] }), /apiKeys\[0\]: empty key/);
    try {
      new KeyRing({ adminKey: '', keys: [{ key: 'secret-value-123', actions: ['root' as Action] }] });
      assert.fail('expected an error');
    } catch (err) {
      assert.match((err as Error).message, /unknown action "root"/);
      assert.doesNotMatch((err as Error).message, /secret-value-123/);
    }
  });

  it('parseApiKeys accepts every action (kv.read, kv.write included) and names bad entries without the key', () => {
    assert.deepEqual(parseApiKeys('[{"key":"abcdefgh","actions":["kv.read","kv.write"]}]'), [{ key: 'abcdefgh', actions: ['kv.read', 'kv.write'] }]);
    assert.deepEqual(parseApiKeys(ACTIONS.map((a, i) => ({ key: `key-number-${i}`, actions: [a] }))).length, ACTIONS.length);
    assert.deepEqual(parseApiKeys('  '), []);
    assert.throws(() => parseApiKeys([{ key: 'abcdefgh', actions: ['kv'] }]), /unknown action "kv" \(known: .*kv\.read, kv\.write/);
    assert.throws(() => parseApiKeys([{ key: 'x'.repeat(API_KEY_BYTES_MAX + 1), actions: ['admin'] }]), /longer than 4096 bytes/);
    try {
      parseApiKeys([{ key: 'secret-key-value', actions: ['nope'] }]);
      assert.fail('expected an error');
    } catch (err) {
      assert.doesNotMatch((err as Error).message, /secret-key-value/);
    }
  });

  it('parseApiKeys takes at most API_KEYS_MAX keys: each call is compared with every one (review16: the list had no bound)', () => {
    const keys = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `key-number-${i}`, actions: ['kv.read'] }));
    assert.equal(parseApiKeys(keys(API_KEYS_MAX)).length, API_KEYS_MAX);
    assert.throws(() => parseApiKeys(JSON.stringify(keys(API_KEYS_MAX + 1))), new RegExp(`^Error: ${API_KEYS_MAX + 1} keys: at most ${API_KEYS_MAX} `));
  });

  it('bearerToken: the Bearer scheme, case-insensitive, trimmed; anything else is no token', () => {
    assert.equal(bearerToken('Bearer abc'), 'abc');
    assert.equal(bearerToken('bearer abc'), 'abc');
    assert.equal(bearerToken('BEARER   abc'), 'abc');
    assert.equal(bearerToken('  Bearer abc  '), 'abc');
    assert.equal(bearerToken('Bearer\tabc'), 'abc');
    assert.equal(bearerToken('Basic abc'), null);
    assert.equal(bearerToken('Bearer'), null);
    assert.equal(bearerToken('Bearer '), null);
    assert.equal(bearerToken('abc'), null);
    assert.equal(bearerToken('Bearerabc'), null);
  });
});

describe('src/auth: the bottom layer (eslint)', () => {
  const eslint = new ESLint({ cwd: process.cwd() });
  const errors = async (filePath: string, code: string): Promise<string[]> => {
    const [result] = await eslint.lintText(code, { filePath });
    assert.ok(result);
    assert.deepEqual(result.messages.filter((m) => m.fatal), []);
    return result.messages.filter((m) => m.severity === 2).map((m) => m.ruleId ?? '');
  };
  const snippet = (from: string): string => `import type { X } from '${from}';\nexport type Y = X;\n`;

  it('src/auth imports packages and its own files, nothing from other src directories', async () => {
    for (const other of ['../node/node.js', '../api/clients.js', '../gateway/auth.js', '../gen/snapcoord/v1/kv.js', '../version.js', '..']) {
      assert.deepEqual(await errors('src/auth/x.ts', snippet(other)), ['no-restricted-imports'], other);
    }
    assert.deepEqual(await errors('src/auth/deeper/x.ts', snippet('../../raft/types.js')), ['no-restricted-imports']);
    assert.deepEqual(await errors('src/auth/x.ts', snippet('./keys.js')), []);
    assert.deepEqual(await errors('src/auth/deeper/x.ts', snippet('../keys.js')), []);
    assert.deepEqual(await errors('src/auth/x.ts', snippet('node:crypto')), []);
  });

  it('src/auth may import the other bottom layer, src/hash, and src/hash imports nothing from src', async () => {
    assert.deepEqual(await errors('src/auth/x.ts', snippet('../hash/sha256.js')), []);
    assert.deepEqual(await errors('src/auth/deeper/x.ts', snippet('../../hash/sha256.js')), []);
    assert.deepEqual(await errors('src/auth/x.ts', snippet('../hashes/x.js')), ['no-restricted-imports']);
    for (const other of ['../auth/keys.js', '../snapshot/archive.js', '../raft/types.js', '..']) {
      assert.deepEqual(await errors('src/hash/x.ts', snippet(other)), ['no-restricted-imports'], other);
    }
    assert.deepEqual(await errors('src/hash/x.ts', snippet('node:crypto')), []);
    assert.deepEqual(await errors('src/snapshot/x.ts', snippet('../hash/sha256.js')), []);
  });

  it('every layer may import src/auth', async () => {
    for (const layer of ['api', 'gateway', 'node', 'cli']) assert.deepEqual(await errors(`src/${layer}/x.ts`, snippet('../auth/keys.js')), [], layer);
  });
});

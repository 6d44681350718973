/**
 * A follower's install of a fetched snapshot checks state.bin's records as a
 * restore does (checkedStateRecords): keys strictly increasing, as many
 * records and bytes as meta.json declares. Before, it only decoded them: a
 * snapshot whose keys were out of order was installed sorted, one with a key
 * twice installed with its last value, one whose meta.json lied about its
 * count installed as it was (found by the archive fuzzer's install runs:
 * accepted, each a state other than the one the snapshot says). Refused now
 * (StateFormatError: the node asks its leader again), the state unchanged,
 * the snapshot removed from the store.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';

import { StateFormatError } from '../../../src/snapshot/errors.js';
import { goodEntries, rawState, tarGz } from '../snapshot/helpers.js';
import { followerInstall } from './follower-install.js';

const enc = new TextEncoder();

describe('a follower installs a fetched snapshot whose records break the state rules', function () {
  this.timeout(20_000);
  const f = followerInstall('snapcoord-install-checked-');

  for (const [name, recs, keys, code, message] of [
    ['keys out of order', [{ key: 'k/b', value: 'v' }, { key: 'k/a', value: 'v' }], 2, 'key-order', /"k\/a" comes after "k\/b"/],
    ['a key twice', [{ key: 'k/a', value: 'v' }, { key: 'k/a', value: 'w' }], 2, 'key-order', /"k\/a" appears twice/],
    ['a record count that lies', [{ key: 'k/a', value: 'v' }, { key: 'k/b', value: 'v' }], 1, 'count-mismatch', /more than the 1 records meta.json declares/],
  ] as const) {
    it(`refuses ${name}: the state unchanged, the snapshot removed`, async () => {
      const before = await f.storage.stateDigest();
      const archive = await tarGz(goodEntries(rawState(recs), keys).entries);
      const stored = await f.sm.store.importArchive(Readable.from([archive]), { maxBytes: 1e8 });
      await assert.rejects(f.sm.install(stored), (e: unknown) => e instanceof StateFormatError && e.code === code && message.test(e.message));
      assert.equal(await f.storage.stateDigest(), before);
      assert.equal(f.storage.appliedIndex(), 3);
      assert.deepEqual((await f.sm.store.list()).map((x) => x.id), []);
    });
  }

  it('installs a state that keeps the rules', async () => {
    const recs = [{ key: 'k/a', value: 'v' }, { key: 'k/b', value: 'w' }];
    await f.sm.install(await f.sm.store.importArchive(Readable.from([await tarGz(goodEntries(rawState(recs), 2).entries)]), { maxBytes: 1e8 }));
    assert.equal(f.storage.appliedIndex(), 42);
    assert.equal(Buffer.from((await f.storage.get(enc.encode('k/b'))) ?? []).toString(), 'w');
  });
});

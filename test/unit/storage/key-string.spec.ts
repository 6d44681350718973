/**
 * keyString: the latin1 string of a key's bytes, built by String.fromCharCode for short
 * keys and by Buffer.toString for long ones: both give Buffer's latin1
 * string, and strings of keys compare as their bytes do.
 */
import assert from 'node:assert/strict';

import { compareBytes } from '../../../src/storage/key-range.js';
import { keyString } from '../../../src/storage/key-string.js';
import { heapRetained } from '../../harness/heap-retained.js';

describe('keyString', function () {
  it("is Buffer's latin1 string of the bytes, for every byte value, short and long keys, and views into larger buffers", function () {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    for (const len of [0, 1, 2, 16, 31, 32, 33, 64, 256]) {
      for (const offset of [0, 3]) {
        if (offset + len > all.length) continue;
        const key = all.subarray(offset, offset + len);
        assert.equal(keyString(key), Buffer.from(key).toString('latin1'), `length ${len} at offset ${offset}`);
      }
    }
  });

  it('orders strings as compareBytes orders the keys (a prefix first, high bytes last)', function () {
    const keys = [[], [0], [0, 0], [1], [0x7f], [0x80], [0xff], [0xff, 0], [0x61, 0x62], Array.from({ length: 40 }, () => 0xff), Array.from({ length: 40 }, () => 0x01)].map((b) => Uint8Array.from(b));
    for (const a of keys) {
      for (const b of keys) {
        const byBytes = Math.sign(compareBytes(a, b));
        const sa = keyString(a);
        const sb = keyString(b);
        assert.equal(sa < sb ? -1 : sa > sb ? 1 : 0, byBytes, `${Buffer.from(a).toString('hex')} vs ${Buffer.from(b).toString('hex')}`);
      }
    }
  });

  it('makes flat strings: 50k keys of 30 bytes held in a Map cost at most 256 bytes each of heap', function () {
    // A string grown char by char with += is a chain of ConsStrings (32 bytes per char past the 13th): held as map
    // keys (the changed keys of a snapshot, the revision cache) 30-byte keys cost ~600 bytes each of old generation.
    const keys = Array.from({ length: 50_000 }, (_, i) => Uint8Array.from(Buffer.from(`\x00snapcoord/rev/kbench/${String(i).padStart(8, '0')}`, 'latin1')));
    assert.equal(keys[0]?.length, 30);
    const { held, bytesPerItem } = heapRetained(keys.length, () => {
      const map = new Map<string, number>();
      for (let i = 0; i < keys.length; i++) map.set(keyString(keys[i] as Uint8Array), i);
      return map;
    });
    assert.equal(held.size, keys.length);
    assert.ok(bytesPerItem <= 256, `${bytesPerItem.toFixed(0)} bytes of heap per key held`);
  });
});

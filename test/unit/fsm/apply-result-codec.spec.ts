/**
 * The wire form of an ApplyResult (a leader's answer to a forwarded write):
 * every shape reads back equal, byte strings included (Buffers too, whose
 * toJSON would otherwise turn them into number arrays); other bytes are refused.
 */
import assert from 'node:assert/strict';

import { decodeApplyResult, encodeApplyResult } from '../../../src/fsm/apply-result-codec.js';
import type { ApplyResult } from '../../../src/fsm/types.js';

const kv = (key: string, value: Uint8Array) => ({ key: Buffer.from(key), value, createRevision: 3, modRevision: 9, version: 4 });

describe('fsm: apply result codec', () => {
  it('reads back every shape equal, byte strings as Uint8Array', () => {
    const results: ApplyResult[] = [
      { index: 1, ok: true },
      { index: 2, ok: true, firstIndex: 1 },
      { index: 3, ok: true, deleted: 1, prev: kv('a', Buffer.from([0, 255, 7])) },
      { index: 4, ok: true, prev: null },
      {
        index: 5,
        ok: true,
        succeeded: false,
        responses: [
          { op: 'get', kv: kv('b', new Uint8Array([1, 2])) },
          { op: 'get', kv: null },
          { op: 'put', prev: null },
          { op: 'delete', deleted: 0 },
        ],
      },
      { index: 6, ok: false, code: 'requestIdExpired', error: 'too old' },
    ];
    for (const r of results) {
      const back = decodeApplyResult(encodeApplyResult(r));
      assert.deepEqual(JSON.parse(JSON.stringify(back, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v))), JSON.parse(JSON.stringify(r, function (this: Record<string, unknown>, k: string, v: unknown) {
        const own = this[k];
        return own instanceof Uint8Array ? [...own] : v;
      })));
    }
    const back = decodeApplyResult(encodeApplyResult(results[2] as ApplyResult));
    assert.ok(back.ok && back.prev instanceof Uint8Array === false && back.prev?.value instanceof Uint8Array);
    assert.deepEqual([...(back.ok ? (back.prev?.value ?? []) : [])], [0, 255, 7]);
    assert.deepEqual(Buffer.from(back.ok ? (back.prev?.key ?? []) : []).toString(), 'a');
  });

  it('refuses bytes that are not an apply result', () => {
    for (const bad of ['', '{}', '{"index":1}', '{"index":"1","ok":true}', '{"index":1,"ok":false}', 'null', '[1]']) {
      assert.throws(() => decodeApplyResult(Buffer.from(bad)));
    }
  });
});

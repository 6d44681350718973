/**
 * planApply given the commands applyProbeKeys decoded (ApplyContext.decoded,
 * as the state machine passes them: each command decoded once per apply)
 * plans what it plans decoding every entry itself: the same writes and
 * results, a malformed entry failing alike, entries at or below the applied
 * index skipped.
 */
import assert from 'node:assert/strict';

import { applyProbeKeys, planApply, type KeyProbe } from '../../../src/fsm/apply-plan.js';
import { encodeCommand, type KvCommand } from '../../../src/fsm/kv-command.js';
import type { ApplyItem } from '../../../src/fsm/types.js';

const enc = new TextEncoder();

function item(index: number, data: Uint8Array): ApplyItem {
  return { entry: { index, term: 1, type: 'normal', data } };
}

describe('planApply with the commands applyProbeKeys decoded', function () {
  it('plans the same writes and results as decoding each entry itself', function () {
    const items = [
      item(4, encodeCommand({ op: 'put', key: enc.encode('a'), value: enc.encode('0') })), // at the applied index: skipped
      item(5, encodeCommand({ op: 'put', key: enc.encode('a'), value: enc.encode('1') })),
      item(6, Uint8Array.from([0xee, 1, 2])), // malformed
      item(7, encodeCommand({ op: 'delete', key: enc.encode('b') })),
      item(8, encodeCommand({ op: 'txn', compares: [{ key: enc.encode('a'), target: 'value', result: 'equal', value: enc.encode('1') }], success: [{ op: 'put', key: enc.encode('c'), value: enc.encode('2') }], failure: [] })),
      item(9, new Uint8Array(0)),
    ];
    const read = (): KeyProbe => ({ value: undefined, revision: undefined });
    const decoded = new Map<Uint8Array, KvCommand>();
    const keys = applyProbeKeys(items, 4, decoded);
    assert.deepEqual(keys.map((k) => new TextDecoder().decode(k.key)).sort(), ['a', 'b', 'c']);
    assert.deepEqual([...decoded.keys()], [items[1], items[3], items[4]].map((i) => i?.entry.data));
    const withDecoded = planApply(items, 4, 'test', { read, decoded });
    const itself = planApply(items, 4, 'test', { read });
    assert.deepEqual(withDecoded, itself);
    assert.equal(withDecoded.appliedIndex, 9);
    assert.equal(withDecoded.results.find((r) => r.index === 6)?.ok, false);
  });
});

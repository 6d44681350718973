/**
 * ChangedKeys: the changes a view lists are each key's last write after the
 * point asked about, up to the view, in bytewise order, whatever segments
 * (views) the writes fell between; sortInTurns sorts as Array.sort does.
 */
import assert from 'node:assert/strict';

import { CHANGES_LISTED_PER_TURN, ChangedKeys, sortInTurns } from '../../../src/storage/changed-keys.js';
import type { StateChanges } from '../../../src/storage/types.js';

const limits = { keptBytesMax: 1 << 20, listedMax: 1 << 16, valueBytesMax: 1 << 24 };
const turn = (): Promise<void> => Promise.resolve();

function shown(c: StateChanges | null): [string, string | null][] | null {
  return c === null ? null : c.entries.map((e) => [Buffer.from(e.key).toString('latin1'), e.value === null ? null : Buffer.from(e.value).toString()]);
}

async function listed(c: ChangedKeys, since: number, applied: number, read: (keys: readonly string[]) => (Uint8Array | undefined)[] = () => []): Promise<[string, string | null][] | null> {
  const v = c.view(since, applied);
  return v === null ? null : shown(await c.list(v, read(v.unknown), turn));
}

describe('ChangedKeys', () => {
  it('lists each key\'s last write after the point asked, across the views the writes fell between', async () => {
    const c = new ChangedKeys(0, limits);
    c.note('b', 1, Buffer.from('b1'));
    c.note('a', 2, Buffer.from('a2'));
    assert.deepEqual(await listed(c, 0, 2), [['a', 'a2'], ['b', 'b1']]);
    c.note('b', 3, null);
    c.note('c', 4, Buffer.from('c4'));
    // Since 1: the sealed segment of the first view straddles it (a at 2 is after, b at 1 is not; b's delete at 3 is).
    assert.deepEqual(await listed(c, 1, 4), [['a', 'a2'], ['b', null], ['c', 'c4']]);
    c.note('a', 5, Buffer.from('a5'));
    assert.deepEqual(await listed(c, 4, 5), [['a', 'a5']]);
    assert.equal(c.view(3, 5), null, 'forgotten at and before 4');
    assert.equal(c.view(6, 5), null, 'past the view');
    assert.deepEqual(await listed(c, 5, 5), []);
    c.forget(9);
    assert.equal(c.size, 0);
    assert.equal(c.view(8, 9), null);
  });

  it('keeps value copies up to its bound; the others are read as of the view', async () => {
    const c = new ChangedKeys(0, { ...limits, keptBytesMax: 4 });
    const big = Buffer.from('xxxx-abc-yyyy');
    c.note('k1', 1, big.subarray(5, 8));
    c.note('k2', 2, Buffer.from('dd'));
    c.note('k1', 3, Buffer.from('e'));
    big.fill(0);
    assert.equal(c.keptBytes, 1);
    c.note('k3', 4, Buffer.from('fff'));
    c.note('k4', 5, Buffer.from('ggggg'));
    const v = c.view(0, 5);
    assert.ok(v !== null);
    assert.deepEqual([...v.unknown].sort(), ['k2', 'k4']);
    const values = v.unknown.map((k) => Buffer.from(`read ${k}`));
    assert.deepEqual(shown(await c.list(v, values, turn)), [['k1', 'e'], ['k2', 'read k2'], ['k3', 'fff'], ['k4', 'read k4']]);
  });

  it('answers null past its listing bounds', async () => {
    const c = new ChangedKeys(0, { ...limits, listedMax: 2 });
    for (const k of ['a', 'b', 'c']) c.note(k, 1, Buffer.from(k));
    assert.equal(await listed(c, 0, 1), null);
    const d = new ChangedKeys(0, { ...limits, valueBytesMax: 2 });
    for (const k of ['a', 'b', 'c']) d.note(k, 1, Buffer.from(k));
    assert.equal(await listed(d, 0, 1), null);
  });

  it('sortInTurns sorts as Array.sort, giving turns on long inputs', async () => {
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const n of [0, 1, CHANGES_LISTED_PER_TURN, CHANGES_LISTED_PER_TURN + 1, 5 * CHANGES_LISTED_PER_TURN + 17]) {
      const items = Array.from({ length: n }, () => String.fromCharCode(...Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => Math.floor(rnd() * 256))));
      let turns = 0;
      const sorted = await sortInTurns([...items], async () => {
        turns++;
      });
      assert.deepEqual(sorted, [...items].sort(), `n=${n}`);
      if (n > CHANGES_LISTED_PER_TURN) assert.ok(turns > 0);
    }
  });
});

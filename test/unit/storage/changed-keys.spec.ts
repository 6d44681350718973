/**
 * ChangedKeys: the changes a view lists are each key's last write after the
 * point asked about, up to the view, in bytewise order, whatever segments
 * (views) the writes fell between; sortInTurns sorts as Array.sort does.
 */
import assert from 'node:assert/strict';

import { CHANGES_LISTED_PER_TURN, ChangedKeys, KEPT_CHUNK_BYTES, sortInTurns } from '../../../src/storage/changed-keys.js';
import type { StateChanges } from '../../../src/storage/types.js';
import { heapRetained } from '../../harness/heap-retained.js';

const limits = { trackedMax: 1_000_000, keptBytesMax: 1 << 20, listedMax: 1 << 16, valueBytesMax: 1 << 24 };
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

  it('keeps value copies up to its bound (a rewrite of another length counts again, one of the same length is copied over); the others are read as of the view', async () => {
    const c = new ChangedKeys(0, { ...limits, keptBytesMax: 5 });
    const big = Buffer.from('xxxx-abc-yyyy');
    c.note('k1', 1, big.subarray(5, 8));
    c.note('k2', 2, Buffer.from('dd'));
    assert.equal(c.keptBytes, 5);
    c.note('k1', 3, Buffer.from('efg'));
    big.fill(0);
    assert.equal(c.keptBytes, 5, 'the same length: copied over');
    c.note('k2', 3, Buffer.from('h'));
    assert.equal(c.keptBytes, 5, 'past the bound: not kept');
    c.note('k3', 4, Buffer.from('fff'));
    c.note('k4', 5, null);
    const v = c.view(0, 5);
    assert.ok(v !== null);
    assert.deepEqual([...v.unknown].sort(), ['k2', 'k3']);
    const values = v.unknown.map((k) => Buffer.from(`read ${k}`));
    assert.deepEqual(shown(await c.list(v, values, turn)), [['k1', 'efg'], ['k2', 'read k2'], ['k3', 'read k3'], ['k4', null]]);
    const d = new ChangedKeys(0, { ...limits, keptBytesMax: 4 });
    d.note('k1', 1, Buffer.from('ab'));
    d.note('k1', 2, Buffer.from('c'));
    assert.equal(d.keptBytes, 3, 'another length: the first copy stays until its segment goes');
    d.note('k2', 3, Buffer.from('de'));
    const w = d.view(0, 3);
    assert.ok(w !== null);
    assert.deepEqual(w.unknown, ['k2']);
    assert.deepEqual(shown(await d.list(w, [Buffer.from('DE')], turn)), [['k1', 'c'], ['k2', 'DE']]);
    assert.equal(d.view(3, 3)?.segments.length, 0);
    assert.equal(d.keptBytes, 0, 'the sealed segment went with its copies');
  });

  it('keeps values of any length across chunks, each listed as written, after the writes that followed the view', async () => {
    const c = new ChangedKeys(0, limits);
    const lengths = [0, 1, 700, 1000, 3000, KEPT_CHUNK_BYTES - 1, KEPT_CHUNK_BYTES + 5, 20, KEPT_CHUNK_BYTES, 9];
    const valueOf = (i: number, round: number): Buffer => Buffer.alloc(lengths[i] as number, `${round}:${i};`);
    lengths.forEach((_, i) => c.note(`k${i}`, 1, valueOf(i, 1)));
    const v = c.view(0, 1);
    assert.ok(v !== null);
    lengths.forEach((_, i) => c.note(`k${i}`, 2, valueOf(i, 2))); // the open segment: the sealed one is not touched
    const listedOnce = await c.list(v, [], turn);
    assert.ok(listedOnce !== null);
    const byKey = new Map(listedOnce.entries.map((e) => [Buffer.from(e.key).toString('latin1'), e.value]));
    lengths.forEach((_, i) => assert.ok(valueOf(i, 1).equals(byKey.get(`k${i}`) as Uint8Array), `k${i} as of the view`));
    const later = await listed(c, 1, 2);
    assert.ok(later !== null);
    assert.equal(later.length, lengths.length);
    const now = c.view(1, 2);
    assert.ok(now !== null);
    const second = await c.list(now, [], turn);
    assert.ok(second !== null);
    for (const e of second.entries) {
      const i = Number(Buffer.from(e.key).toString('latin1').slice(1));
      assert.ok(valueOf(i, 2).equals(e.value as Uint8Array), `k${i} rewritten`);
    }
  });

  it('holds a changed key and its kept value in at most 120 bytes of heap besides the key string (50k keys, 25-byte values)', function () {
    // A Buffer per value and an object per key cost ~180 bytes of heap a key (in the old generation until the next view).
    const n = 50_000;
    const keys = Array.from({ length: n }, (_, i) => `\x00snapcoord/rev/kbench/${String(i).padStart(8, '0')}`);
    const values = Array.from({ length: n }, (_, i) => Buffer.alloc(25, i));
    const { held, bytesPerItem } = heapRetained(n, () => {
      const c = new ChangedKeys(0, { ...limits, keptBytesMax: 1 << 24 });
      for (let i = 0; i < n; i++) c.note(keys[i] as string, i + 1, values[i] as Buffer);
      return c;
    });
    assert.equal(held.size, n);
    assert.equal(held.keptBytes, 25 * n);
    assert.ok(bytesPerItem <= 120, `${bytesPerItem.toFixed(0)} bytes of heap per changed key`);
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

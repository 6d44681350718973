/**
 * RocksStorage.snapshotState({ changesSince }) (and MemoryStorage's, the same
 * ChangedKeys: the simulator's nodes make their snapshots from the previous
 * one through it): the view lists every key
 * written or deleted after that applied index, with its value in the view,
 * in bytewise key order (what a snapshot made from the previous one needs);
 * it says it cannot (null) when asked about a point before what it tracks:
 * before the store was opened, before an install, or before changes it was
 * told to forget.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { NodeStorage, StateChanges } from '../../../src/storage/types.js';
import { CHANGES_LISTED_PER_TURN } from '../../../src/storage/changed-keys.js';
import { stepsUntil, ThreadpoolHold, turnsUntil } from './helpers.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };
const b = (s: string): Buffer => Buffer.from(s);

function shown(c: StateChanges | null | undefined): [string, string | null][] | null | undefined {
  if (c === null || c === undefined) return c;
  return c.entries.map((e) => [Buffer.from(e.key).toString('latin1'), e.value === null ? null : Buffer.from(e.value).toString()]);
}

async function changesOf(s: NodeStorage, since: number): Promise<StateChanges | null | undefined> {
  const reader = await s.snapshotState({ changesSince: since });
  await reader.close();
  return reader.changes;
}

describe('state changes since an applied index (RocksStorage, MemoryStorage)', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'snapcoord-changes-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  for (const kind of ['rocks', 'memory'] as const) {
    /** opener: storage of `kind` on one data dir, opened again on the same one by each call. */
    const opener = (): (() => Promise<NodeStorage>) => {
      const mem = new MemoryDataDir('changes');
      return kind === 'rocks' ? () => RocksStorage.open(dir) : () => MemoryStorage.open(mem);
    };

    it(`${kind}: lists the keys written and deleted since, with their values in the view, in bytewise order`, async () => {
      const s = await opener()();
      try {
        await s.installState([[{ key: b('a'), value: b('1') }, { key: b('m'), value: b('2') }]], { appliedIndex: 5, membership });
        await s.write({ writes: [{ key: b('z'), value: b('3') }], appliedIndex: 6 });
        await s.write({ writes: [{ key: b('\u00ff\u0001'), value: b('hi') }, { key: b('a'), value: null }], appliedIndex: 7 });
        await s.write({ writes: [{ key: b('m'), value: b('2b') }, { key: b('\u0001'), value: b('lo') }], appliedIndex: 8 });
        await s.write({ writes: [{ key: b('gone'), value: b('x') }], appliedIndex: 9 });
        await s.write({ writes: [{ key: b('gone'), value: null }], appliedIndex: 10 });
        // A view without the option lists nothing; asking is what it is for.
        const plain = await s.snapshotState();
        assert.equal(plain.changes, undefined);
        await plain.close();
        assert.deepEqual(shown(await changesOf(s, 6)), [
          ['\u0001', 'lo'],
          ['a', null],
          ['gone', null],
          ['m', '2b'],
          ['\u00c3\u00bf\u0001', 'hi'],
        ]);
        // What was asked about is forgotten at and before that index: 7 still answers, 5 cannot any more.
        assert.deepEqual(shown(await changesOf(s, 8)), [['gone', null]]);
        assert.equal(await changesOf(s, 5), null);
        assert.deepEqual(shown(await changesOf(s, 10)), []);
        assert.equal(await changesOf(s, 11), null, 'a point past the view');
      } finally {
        await s.close();
      }
    });

    it(`${kind}: cannot say for a point before it was opened or before an install`, async () => {
      const open = opener();
      let s = await open();
      await s.installState([[{ key: b('a'), value: b('1') }]], { appliedIndex: 5, membership });
      await s.write({ writes: [{ key: b('b'), value: b('2') }], appliedIndex: 6 });
      assert.deepEqual(shown(await changesOf(s, 5)), [['b', '2']]);
      await s.close();
      s = await open();
      try {
        await s.write({ writes: [{ key: b('c'), value: b('3') }], appliedIndex: 7 });
        assert.equal(await changesOf(s, 5), null, 'the write at 6 happened before this open');
        assert.deepEqual(shown(await changesOf(s, 6)), [['c', '3']]);
        await s.installState([[{ key: b('x'), value: b('9') }]], { appliedIndex: 20, membership });
        assert.equal(await changesOf(s, 7), null, 'an install replaced everything');
        await s.write({ writes: [{ key: b('y'), value: b('8') }], appliedIndex: 21 });
        assert.deepEqual(shown(await changesOf(s, 20)), [['y', '8']]);
      } finally {
        await s.close();
      }
    });
  }

  it('lets applies go on while the changed values are read, which stay those of the view', async () => {
    // No value kept: every one is read at the view.
    const s = await RocksStorage.open(dir, { changesValuesKeptBytes: 0 });
    // Every threadpool thread is held: the values' read (a threadpool job) waits.
    const pool = new ThreadpoolHold(dir);
    try {
      await s.installState([[{ key: b('a'), value: b('1') }]], { appliedIndex: 5, membership });
      await s.write({ writes: [{ key: b('m'), value: b('2') }], appliedIndex: 6 });
      pool.holdAll();
      const view = s.snapshotState({ changesSince: 5 });
      // The apply queue is free again before the values are read: another view opens (its iterator is made
      // on this thread, no threadpool job), and an apply is queued behind nothing but the threadpool.
      let opened = false;
      const plain = s.snapshotState().then((r) => {
        opened = true;
        return r;
      });
      assert.ok(await turnsUntil(() => opened), 'a view opened while the first view\'s values were being read');
      const applied = s.write({ writes: [{ key: b('m'), value: b('after the view') }], appliedIndex: 7 });
      await pool.releaseAll();
      const first = await view;
      await first.close();
      await (await plain).close();
      await applied;
      assert.equal(first.appliedIndex, 6);
      assert.deepEqual(shown(first.changes), [['m', '2']], 'the values of the view, not of the apply made after it');
      assert.deepEqual(shown(await changesOf(s, 6)), [['m', 'after the view']]);
    } finally {
      await pool.releaseAll();
      await s.close();
    }
  });

  it('keeps the changed values it applied, up to its bound, and reads only the others at the view', async () => {
    for (const kept of [undefined, 5]) {
      const sub = join(dir, `kept-${kept ?? 'default'}`);
      const s = await RocksStorage.open(sub, kept === undefined ? {} : { changesValuesKeptBytes: kept });
      try {
        await s.installState([[{ key: b('a'), value: b('1') }, { key: b('b'), value: b('2') }]], { appliedIndex: 5, membership });
        // A value held in a larger buffer (as a decoded append's): what is kept is a copy, not that buffer.
        const message = Buffer.from('xxxx-abc-yyyy');
        await s.write({ writes: [{ key: b('c'), value: message.subarray(5, 8) }, { key: b('a'), value: null }], appliedIndex: 6 });
        await s.write({ writes: [{ key: b('d'), value: b('dddd') }, { key: b('b'), value: b('22') }], appliedIndex: 7 });
        message.fill(0);
        const reads = s.stateCalls().getMany;
        assert.deepEqual(shown(await changesOf(s, 5)), [['a', null], ['b', '22'], ['c', 'abc'], ['d', 'dddd']]);
        // Default: all 9 bytes kept, nothing read; a bound of 5: 'abc' and '22' kept, 'dddd' read.
        assert.equal(s.stateCalls().getMany - reads, kept === undefined ? 0 : 1);
        // Changes a view forgot (at or before what it was asked about) give their bytes back: another 5 fit.
        assert.deepEqual(shown(await changesOf(s, 7)), []);
        await s.write({ writes: [{ key: b('e'), value: b('eeeee') }], appliedIndex: 8 });
        const again = s.stateCalls().getMany;
        assert.deepEqual(shown(await changesOf(s, 7)), [['e', 'eeeee']]);
        assert.equal(s.stateCalls().getMany - again, 0);
      } finally {
        await s.close();
      }
    }
  });

  it('memory: keeps the changed values it applied up to its bound; the others are those in its map at the view', async () => {
    const s = await MemoryStorage.open(new MemoryDataDir('changes'), { changesValuesKeptBytes: 5 });
    try {
      await s.installState([[{ key: b('a'), value: b('1') }]], { appliedIndex: 5, membership });
      const message = Buffer.from('xxxx-abc-yyyy');
      await s.write({ writes: [{ key: b('c'), value: message.subarray(5, 8) }, { key: b('a'), value: null }], appliedIndex: 6 });
      await s.write({ writes: [{ key: b('d'), value: b('dddd') }], appliedIndex: 7 });
      message.fill(0);
      const view = s.snapshotState({ changesSince: 5 });
      // Written after the view was asked for: the view's changes still hold the value as of it.
      const after = s.write({ writes: [{ key: b('d'), value: b('later') }], appliedIndex: 8 });
      const r = await view;
      await r.close();
      await after;
      assert.equal(r.appliedIndex, 7);
      assert.deepEqual(shown(r.changes), [['a', null], ['c', 'abc'], ['d', 'dddd']]);
      assert.deepEqual(shown(await changesOf(s, 7)), [['d', 'later']]);
    } finally {
      await s.close();
    }
  });

  it('lists the changes after letting the apply queue go, in turns, and they stay those of the view', async () => {
    // Every turn the listing gives back waits for the test: applies must go on meanwhile.
    let turnsAsked = 0;
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const s = await RocksStorage.open(dir, {
      yieldTurn: () => {
        turnsAsked++;
        return held;
      },
    });
    try {
      await s.installState([[{ key: b('a'), value: b('1') }]], { appliedIndex: 5, membership });
      const n = 2 * CHANGES_LISTED_PER_TURN + 5;
      const key = (i: number): Buffer => b(`k${String(i).padStart(6, '0')}`);
      await s.write({ writes: Array.from({ length: n }, (_, i) => ({ key: key(n - 1 - i), value: b(`v${n - 1 - i}`) })), appliedIndex: 6 });
      let listed = false;
      const view = s.snapshotState({ changesSince: 5 }).then((r) => {
        listed = true;
        return r;
      });
      assert.ok(await turnsUntil(() => turnsAsked > 0), 'the listing gave the event loop a turn');
      // Held in the listing: an apply of keys it lists, and of a new one, lands; the view does not see it.
      let applied = false;
      const write = s.write({ writes: [{ key: key(0), value: b('after') }, { key: b('new'), value: b('x') }, { key: b('a'), value: null }], appliedIndex: 7 }).then(() => (applied = true));
      assert.ok(await stepsUntil(() => applied), 'an apply completed while the view listed its changes');
      assert.equal(listed, false);
      release();
      const r = await view;
      await r.close();
      await write;
      assert.equal(r.appliedIndex, 6);
      assert.deepEqual(shown(r.changes), Array.from({ length: n }, (_, i) => [`k${String(i).padStart(6, '0')}`, `v${i}`]));
      assert.deepEqual(shown(await changesOf(s, 6)), [['a', null], ['k000000', 'after'], ['new', 'x']]);
    } finally {
      release();
      await s.close();
    }
  });
});

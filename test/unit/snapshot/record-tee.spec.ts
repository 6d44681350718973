import assert from 'node:assert/strict';

import { RecordTee } from '../../../src/snapshot/record-tee.js';

/** settled: whether `p` has settled after the pending microtasks and one macrotask. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

describe('RecordTee', () => {
  it('hands every batch over in order, and holds the producer while batchesMax are queued', async () => {
    const tee = new RecordTee<number>(2);
    await tee.write(1);
    await tee.write(2);
    const third = tee.write(3);
    assert.equal(await settled(third), false, 'the third write waits: two batches are queued and none taken');
    const it = tee.records();
    assert.deepEqual(await it.next(), { value: 1, done: false });
    assert.equal(await settled(third), true, 'taking one makes room');
    tee.end();
    const rest: number[] = [];
    for await (const b of { [Symbol.asyncIterator]: () => it }) rest.push(b);
    assert.deepEqual(rest, [2, 3]);
  });

  it('fail() makes the consumer throw, whatever is queued (a failed install never ends a copy cleanly)', async () => {
    const tee = new RecordTee<number>(4);
    await tee.write(1);
    tee.fail(new Error('install failed'));
    await assert.rejects(async () => {
      for await (const b of tee.records()) void b;
    }, /install failed/);
    await assert.rejects(tee.write(2), /after end or fail/);
  });

  it('never holds the producer once the consumer is gone (it stopped early, or never started)', async () => {
    const early = new RecordTee<number>(1);
    const consumer = (async () => {
      for await (const b of early.records()) if (b === 1) return;
    })();
    await early.write(1);
    await consumer;
    for (let i = 0; i < 10; i++) assert.equal(await settled(early.write(i)), true);
    assert.equal(early.dropped, true);

    const never = new RecordTee<number>(1);
    await never.write(1);
    const blocked = never.write(2);
    assert.equal(await settled(blocked), false);
    never.abandon();
    assert.equal(await settled(blocked), true);
    assert.equal(never.dropped, true);
  });
});

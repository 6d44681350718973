/**
 * eachOnItsOwnTurn (own-turns.ts), the simulator's step loop: each step runs
 * on its own macrotask, after everything the previous step started (promise
 * chains, process.nextTick, microtasks queued by either) has run, however
 * many batches of immediates the steps take; a throwing step rejects and
 * ends the steps.
 */
import assert from 'node:assert/strict';

import { TURNS_BATCH, eachOnItsOwnTurn } from './own-turns.js';

/** settleLater: marks `i` settled after a chain of promise hops, nextTicks and a queued microtask. */
function settleLater(settled: number[], i: number): void {
  void (async () => {
    for (let k = 0; k < 20; k++) await Promise.resolve();
    await new Promise<void>((resolve) => process.nextTick(resolve));
    queueMicrotask(() => process.nextTick(() => settled.push(i)));
  })();
}

describe('sim: eachOnItsOwnTurn', () => {
  it('runs each step after everything the previous step started has settled, across batches', async () => {
    const steps = 2 * TURNS_BATCH + 17;
    const settled: number[] = [];
    const firsts: boolean[] = [];
    let calls = 0;
    await eachOnItsOwnTurn((first) => {
      firsts.push(first);
      // every earlier step's work has settled before this one runs
      assert.equal(settled.length, calls, `step ${calls} ran before step ${calls - 1}'s work settled`);
      if (calls === steps) return false;
      settleLater(settled, calls);
      calls++;
      return true;
    });
    assert.equal(calls, steps);
    assert.deepEqual(settled, Array.from({ length: steps }, (_, i) => i));
    assert.deepEqual(firsts, [true, ...Array.from({ length: steps }, () => false)]);
  });

  it('rejects with what a step threw and calls no step after it', async () => {
    let calls = 0;
    const boom = new Error('boom');
    await assert.rejects(
      eachOnItsOwnTurn(() => {
        calls++;
        if (calls === 5) throw boom;
        return true;
      }),
      (e: unknown) => e === boom,
    );
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve)); // the batch's other immediates were cleared
    assert.equal(calls, 5);
  });

  it('resolves at once when the first step says there is nothing to do', async () => {
    let calls = 0;
    await eachOnItsOwnTurn(() => {
      calls++;
      return false;
    });
    assert.equal(calls, 1);
  });
});

/**
 * StateMachine.apply of a batch of KV commands (no restore entry: the common
 * case, once per batch on every node) takes as few turns of the microtask
 * queue as its store needs: no wrapping async call of its own adds one (a
 * promise and a turn each, ~230 batches a simulator seed).
 */
import assert from 'node:assert/strict';

import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import type { ApplyItem } from '../../../src/fsm/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const put = (index: number, key: string): ApplyItem => ({ entry: { index, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: bytes(key), value: bytes(`v${index}`) }) } });

/** TURNS_MAX: a bound on the turns counted (an apply that never settles fails the test, not hangs it). */
const TURNS_MAX = 1_000;

/** turnsUntil: microtask turns until `p` settles (each `await null` is one). */
async function turnsUntil(p: Promise<unknown>): Promise<number> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  let n = 0;
  while (!settled) {
    if (++n > TURNS_MAX) throw new Error(`not settled within ${TURNS_MAX} turns`);
    await null;
  }
  return n;
}

describe('StateMachine.apply: the turns of a batch of commands', () => {
  it('an apply of puts settles in no more turns than its store read and write take, and applies them', async () => {
    const store = await MemoryStorage.open(new MemoryDataDir('fsm-turns'));
    const fsm = await StateMachine.open(store);
    await fsm.apply([put(1, 'warm')]);
    // The store's own turns for one probe read and one write, measured alone (on a store of their own).
    const other = await MemoryStorage.open(new MemoryDataDir('store-turns'));
    const storeTurns = (await turnsUntil(other.getMany([bytes('a')]))) + (await turnsUntil(other.write({ writes: [{ key: bytes('a'), value: bytes('v') }], appliedIndex: 1 })));
    assert.equal(other.appliedIndex(), 1);
    const turns = await turnsUntil(fsm.apply([put(2, 'a'), put(3, 'b')]));
    assert.equal(fsm.appliedIndex(), 3);
    assert.equal(new TextDecoder().decode(await fsm.get(bytes('b'))), 'v3');
    // Beyond the store's: the apply queue's turn, the apply's own promise, and the await of it (3; there were 6).
    assert.ok(turns <= storeTurns + 3, `${turns} turns for an apply whose store read and write take ${storeTurns}`);
    // An empty batch settles at once.
    assert.deepEqual(await fsm.apply([]), []);
  });
});

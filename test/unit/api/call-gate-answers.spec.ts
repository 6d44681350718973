/**
 * CallGate's answer places (071f93f), the gate's own bookkeeping: a place
 * freed by one caller while the gate is handing a place to another caller's
 * waiting call (the hand-over starts that call's handler, which can end a
 * call of another key within the same stack: a ReadGate place given back,
 * the next key's buffered Get read and answered at once, NOT_LEADER or
 * INVALID_ARGUMENT) goes to that caller's waiting call too. The calls here
 * are minimal objects with the one method the gate calls on a waiting call
 * (granted); the interceptor around real calls is call-gate.spec's.
 */
import assert from 'node:assert/strict';

import { CallGate } from '../../../src/api/call-gate.js';

type Waiter = Parameters<CallGate['askAnswer']>[1];

describe('CallGate answer places: hand-overs', () => {
  it('a place another caller frees during a hand-over goes to its waiting call (before: lost until another of its calls ended)', () => {
    const gate = new CallGate(100, 1);
    const started: string[] = [];
    // Key B: one call holding its one place, one waiting.
    assert.equal(gate.askAnswer('B', { granted: () => started.push('b1') } as unknown as Waiter), true);
    assert.equal(gate.askAnswer('B', { granted: () => started.push('b2') } as unknown as Waiter), false);
    // Key A: the same; A's waiting call, once started, ends B's running call in the same stack.
    assert.equal(gate.askAnswer('A', { granted: () => started.push('a1') } as unknown as Waiter), true);
    const a2 = {
      granted: () => {
        started.push('a2');
        gate.releaseAnswer('B');
      },
    };
    assert.equal(gate.askAnswer('A', a2 as unknown as Waiter), false);
    gate.releaseAnswer('A');
    assert.deepEqual(started, ['a2', 'b2']);
    assert.equal(gate.answeringOf('A'), 1);
    assert.equal(gate.answeringOf('B'), 1);
    assert.equal(gate.waitingOf('B'), 0);
  });

  it('a caller\'s own call ended during its hand-over lets the next one start (the loop goes round)', () => {
    const gate = new CallGate(100, 1);
    const started: string[] = [];
    assert.equal(gate.askAnswer('A', { granted: () => started.push('a1') } as unknown as Waiter), true);
    // a2 fails at once when started (its status sent within the hand-over): its place goes to a3.
    assert.equal(gate.askAnswer('A', { granted: () => (started.push('a2'), gate.releaseAnswer('A')) } as unknown as Waiter), false);
    assert.equal(gate.askAnswer('A', { granted: () => started.push('a3') } as unknown as Waiter), false);
    gate.releaseAnswer('A');
    assert.deepEqual(started, ['a2', 'a3']);
    assert.equal(gate.answeringOf('A'), 1);
    assert.equal(gate.waitingOf('A'), 0);
  });
});

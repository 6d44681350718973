/**
 * The simulator's HardState Durability checker (checkers.ts onDepart): an
 * append ack promises its term's leader's entries, durable up to its index
 * (Raft §5.1, Figure 2). Seed 621018 (3 nodes, on 5fc2f82) sent an ack of
 * entry 102 of term 4 after a term-5 append had truncated the log to 91 and
 * that save was done: caught because 102 was past the durable log's end. An
 * ack whose index is still inside the log, over entries a later term's
 * append replaced, is caught by the entry's term.
 */
import assert from 'node:assert/strict';

import { Checkers, SafetyViolation } from './checkers.js';
import type { Entry, Message } from '../../src/raft/types.js';

function ents(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: 'normal', data: new Uint8Array([i, term]) });
  return out;
}

function ack(term: number, index: number): Message {
  return { type: 'appendResp', from: 'n1', to: 'n2', term, reject: false, index, hintIndex: 0, hintTerm: 0 };
}

/** follower: n1 holds entries 1-5 of term 1 durably, then a term-2 leader's append replaced 4-5 with entry 4 of term 2. */
function follower(): Checkers {
  const c = new Checkers(['n1', 'n2', 'n3']);
  c.onHardState('n1', { term: 0, vote: '', commit: 0 }, { term: 1, vote: '', commit: 0 });
  c.onPersistEntries('n1', ents(1, 5, 1), false);
  c.onHardState('n1', { term: 1, vote: '', commit: 0 }, { term: 2, vote: '', commit: 0 });
  c.onPersistEntries('n1', ents(4, 4, 2), false);
  return c;
}

function violation(f: () => void): string {
  try {
    f();
  } catch (e) {
    if (e instanceof SafetyViolation) return e.message;
    throw e;
  }
  return '';
}

describe('sim checkers: HardState Durability of an append ack', () => {
  it('passes acks of what is durable: term 1 up to 3, term 2 up to 4', () => {
    const c = follower();
    assert.equal(violation(() => c.onDepart('n1', ack(1, 3))), '');
    assert.equal(violation(() => c.onDepart('n1', ack(2, 4))), '');
  });

  it('catches an ack past the durable log', () => {
    assert.match(violation(() => follower().onDepart('n1', ack(2, 5))), /acknowledged entries up to 5 while its durable log ended at 4/);
  });

  it("catches an ack of term 1 over the entry a term-2 append replaced (inside the log: the index alone misses it)", () => {
    assert.match(violation(() => follower().onDepart('n1', ack(1, 4))), /acknowledged entries up to 4 in term 1 while its durable entry there is of term 2/);
  });
});

/** checkCas: the compare-and-swap chain check finds lost updates and values never written, and passes valid chains. */
import assert from 'node:assert/strict';
import { checkCas, type CasOp } from './cas.js';

const op = (expected: string | null, next: string, callMs: number, returnMs: number, outcome: CasOp['outcome'] = 'ok', succeeded = true): CasOp => ({ client: 0, key: 'cas/0', expected, next, callMs, returnMs, outcome, succeeded });

describe('checkCas', () => {
  it('passes a chain, with a refused swap and one of unknown outcome that a later swap consumed', () => {
    const v = checkCas([op(null, 'a', 0, 1), op('a', 'b', 2, 3), op('a', 'z', 2.5, 3.5, 'ok', false), op('b', 'c', 4, 5, 'unknown'), op('c', 'd', 6, 7)]);
    assert.deepEqual(v.violations, []);
    assert.equal(v.swapped, 3);
    assert.equal(v.refused, 1);
    assert.equal(v.unknown, 1);
  });

  it('finds a value consumed twice (a lost update), also the initial absence', () => {
    assert.match(checkCas([op(null, 'a', 0, 1), op('a', 'b', 2, 3), op('a', 'c', 2, 4)]).violations.join(), /a consumed twice/);
    assert.match(checkCas([op(null, 'a', 0, 1), op(null, 'b', 0, 2)]).violations.join(), /\(absent\) consumed twice/);
  });

  it('finds a swap of a value no possible swap wrote, or written only after the swap returned', () => {
    assert.match(checkCas([op(null, 'a', 0, 1), op('q', 'b', 2, 3)]).violations.join(), /no swap that may have happened wrote/);
    assert.match(checkCas([op(null, 'a', 0, 1), op('a', 'b', 2, 3, 'fail', false), op('b', 'c', 4, 5)]).violations.join(), /no swap that may have happened wrote/);
    assert.match(checkCas([op(null, 'a', 0, 1), op('b', 'c', 2, 3), op('a', 'b', 4, 5)]).violations.join(), /before that was written/);
  });
});

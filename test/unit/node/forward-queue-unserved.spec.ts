/**
 * ForwardQueue and a Propose call that no handler took (boot32): an
 * UNAVAILABLE the transport marks `unserved` (the leader's server refused it
 * before any handler ran: still booting) and UNIMPLEMENTED appended nothing,
 * so the write is sent again, at most FORWARD_UNSERVED_RETRIES_MAX times;
 * a plain UNAVAILABLE (the call failed: maybe appended) still fails the
 * write `timeout` (outcome unknown), never sent again.
 */
import assert from 'node:assert/strict';

import { encodeApplyResult } from '../../../src/fsm/apply-result-codec.js';
import { FORWARD_UNSERVED_RETRIES_MAX, ForwardQueue } from '../../../src/node/forward-queue.js';
import { NodeError } from '../../../src/node/errors.js';
import type { ForwardedProposals, ForwardProposalsParams } from '../../../src/transport/transport.js';
import { ManualClock } from './manual-clock.js';

type Answer = (p: ForwardProposalsParams) => Promise<ForwardedProposals>;

function queueWith(clock: ManualClock, answer: Answer): { queue: ForwardQueue; calls: () => number } {
  let calls = 0;
  const queue = new ForwardQueue({
    id: 'n2',
    clock,
    maxQueued: 8,
    rpcTimeoutMs: 5_000,
    retryMs: 10,
    view: () => ({ leader: 'n1', term: 3 }),
    send: (p) => {
      calls++;
      return answer(p);
    },
    proposeHere: () => Promise.reject(new Error('not here')),
  });
  return { queue, calls: () => calls };
}

/** settle runs `n` rounds of: let the answers arrive (microtasks), move the clock one retry on, flush. */
async function settle(clock: ManualClock, queue: ForwardQueue, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await new Promise<void>((r) => setImmediate(r));
    clock.advance(10);
    queue.flush();
  }
}

const coded = (code: number, extra: object = {}): Error => Object.assign(new Error(`${code} refused`), { code }, extra);
const okAnswer = (p: ForwardProposalsParams): Promise<ForwardedProposals> =>
  Promise.resolve({ term: 3, outcomes: p.data.map(() => ({ result: encodeApplyResult({ index: 7, ok: true }) })) });

describe('node: ForwardQueue and a Propose no handler took (a member still booting)', () => {
  for (const [what, err] of [
    ['UNAVAILABLE unserved', () => coded(14, { unserved: true })],
    ['UNIMPLEMENTED', () => coded(12)],
  ] as const) {
    it(`sends the write again after ${what} and resolves it once the leader serves`, async () => {
      const clock = new ManualClock();
      let refusals = 3;
      const { queue, calls } = queueWith(clock, (p) => (refusals-- > 0 ? Promise.reject(err()) : okAnswer(p)));
      const out: { ok?: boolean; err?: Error } = {};
      queue.forward(new Uint8Array([1]), 10_000).then(
        (r) => (out.ok = r.ok),
        (e: Error) => (out.err = e),
      );
      await settle(clock, queue, 10);
      assert.equal(out.err, undefined, out.err?.message);
      assert.equal(out.ok, true);
      assert.equal(calls(), 4);
      assert.equal(queue.size, 0);
    });
  }

  it(`gives up after ${FORWARD_UNSERVED_RETRIES_MAX} unserved refusals: unavailable, not applied`, async () => {
    const clock = new ManualClock();
    const { queue, calls } = queueWith(clock, () => Promise.reject(coded(14, { unserved: true })));
    const out: { err?: Error } = {};
    queue.forward(new Uint8Array([1]), 60_000).catch((e: Error) => (out.err = e));
    await settle(clock, queue, FORWARD_UNSERVED_RETRIES_MAX + 5);
    assert.ok(out.err instanceof NodeError, String(out.err));
    assert.equal(out.err.code, 'unavailable');
    assert.match(out.err.message, /not applied/);
    assert.equal(calls(), FORWARD_UNSERVED_RETRIES_MAX + 1);
    assert.equal(queue.size, 0);
  });

  it('fails a write whose call failed UNAVAILABLE without the mark `timeout` (its outcome unknown), sent once', async () => {
    const clock = new ManualClock();
    const { queue, calls } = queueWith(clock, () => Promise.reject(coded(14)));
    const out: { err?: Error } = {};
    queue.forward(new Uint8Array([1]), 10_000).catch((e: Error) => (out.err = e));
    await settle(clock, queue, 5);
    assert.ok(out.err instanceof NodeError, String(out.err));
    assert.equal(out.err.code, 'timeout');
    assert.equal(calls(), 1);
  });
});

/**
 * A follower that learns a commit from a heartbeat applies it at once, not at
 * its next tick. A heartbeat's answer promises nothing durable, so
 * handleRequest returns it without waiting for a save, and before, nothing
 * started the Ready loop: the entries the heartbeat committed waited for the
 * next tick's kick (up to --tick-ms later; a linearizable read on that
 * follower waited with them). Here the clock never moves, so no tick runs.
 */
import assert from 'node:assert/strict';

import { Node, type MessageSender } from '../../../src/node/node.js';
import type { Entry, Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { until } from '../../harness/until.js';
import { ManualClock } from './manual-clock.js';

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
const none: MessageSender = { send: () => undefined, setPeers: () => undefined, close: async () => undefined };

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: 'normal', data: new Uint8Array(0) });
  return out;
}

describe('node: a commit learned from a heartbeat', function () {
  this.timeout(20_000);

  it('is applied without waiting for a tick', async () => {
    const clock = new ManualClock();
    const node = await Node.start({
      clock,
      rng: cryptoRng,
      id: 'n1',
      storage: await MemoryStorage.open(new MemoryDataDir('n1')),
      transport: none,
      initialMembership: membership,
      timings: { tickMs: 10, electionTimeoutTicks: 100, heartbeatIntervalTicks: 1 },
    });
    try {
      const append: Message = { type: 'append', from: 'n2', to: 'n1', term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: entries(1, 3, 1), commit: 0 };
      const acked = await node.handleRequest(append);
      assert.deepEqual(
        acked.map((m) => m.type === 'appendResp' && !m.reject && m.index),
        [3],
      );
      await until('the append to settle', 5_000, () => (node.status().lastIndex === 3 ? true : undefined));
      assert.equal(node.brief().applied, 0, 'nothing committed yet');
      const replies = await node.handleRequest({ type: 'heartbeat', from: 'n2', to: 'n1', term: 1, commit: 3, readSeq: 0 });
      assert.deepEqual(
        replies.map((m) => m.type),
        ['heartbeatResp'],
      );
      await until('entries 1-3 applied, with no tick', 2_000, () => (node.brief().applied === 3 ? true : undefined));
    } finally {
      await node.stop().catch(() => undefined);
    }
  });
});

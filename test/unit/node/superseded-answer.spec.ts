/**
 * An answer held for a save promises the state it was computed on (Raft §5.1,
 * Figure 2: entries durable before they are acknowledged, the vote before it
 * is granted). A request of a newer term stepped before that state reached a
 * Ready can replace it: a newer leader's conflicting append truncates entries
 * not saved yet, a newer term's hard state replaces a vote not saved yet. The
 * older term's answer is then dropped (as a lost message), never sent for a
 * state that was never durable (real-node simulator seed 621018, 3 nodes, on
 * 5fc2f82: learner n4 acknowledged entry 102 of term 4 after a term-5 append
 * had truncated its log to 91; its durable log ended at 91).
 */
import assert from 'node:assert/strict';

import { Node, type MessageSender } from '../../../src/node/node.js';
import type { Entry, Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir } from '../../../src/storage/memory-storage.js';
import { FaultyStorage } from './faulty-storage.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { until } from '../../harness/until.js';

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
// No campaign of its own: n1 only answers what the test steps into it.
const timings = { tickMs: 10, electionTimeoutTicks: 100_000, heartbeatIntervalTicks: 1_000 };

class NullSender implements MessageSender {
  send(): void {}
  setPeers(): void {}
  async close(): Promise<void> {}
}

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ index: i, term, type: 'normal', data: new Uint8Array([i]) });
  return out;
}

function append(from: string, term: number, prevLogIndex: number, prevLogTerm: number, ents: Entry[]): Message {
  return { type: 'append', from, to: 'n1', term, prevLogIndex, prevLogTerm, entries: ents, commit: 0 };
}

/** promised: what the answers promise, in a comparable form. */
function promised(replies: readonly Message[]): unknown[] {
  return replies.map((m) => {
    if (m.type === 'appendResp') return { type: m.type, term: m.term, reject: m.reject, index: m.index };
    if (m.type === 'voteResp') return { type: m.type, term: m.term, granted: m.granted };
    return { type: m.type };
  });
}

describe('node: an answer whose state a newer term replaced before it was saved is dropped', function () {
  this.timeout(20_000);
  const nodes: Node[] = [];
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
  });

  async function start(dir: MemoryDataDir): Promise<{ node: Node; storage: FaultyStorage }> {
    const storage = await FaultyStorage.open(dir);
    const node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage, transport: new NullSender(), initialMembership: membership, timings });
    nodes.push(node);
    return { node, storage };
  }

  it("an append ack of entries a newer leader's append truncated before their save is not sent", async () => {
    const dir = new MemoryDataDir('n1');
    const { node, storage } = await start(dir);
    // Entries 1-3 of term 1 are durable here.
    assert.deepEqual(promised(await node.handleRequest(append('n2', 1, 0, 0, entries(1, 3, 1)))), [{ type: 'appendResp', term: 1, reject: false, index: 3 }]);
    // Entry 4's save is in flight (as the simulator's 101) when entry 5 of term 1 arrives: its ack waits for the next save.
    const release = storage.holdSaves();
    let four: Promise<Message[]>, five: Promise<Message[]>, newer: Promise<Message[]>;
    try {
      four = node.handleRequest(append('n2', 1, 3, 1, entries(4, 4, 1)));
      await until('the save of entry 4 to start', 5_000, () => (storage.savesHeld > 0 ? true : undefined));
      five = node.handleRequest(append('n2', 1, 4, 1, entries(5, 5, 1)));
      // The leader of term 2 (n3) holds entry 3 of term 2: its append truncates 3-5 before entry 5 was in any Ready.
      newer = node.handleRequest(append('n3', 2, 2, 1, entries(3, 3, 2)));
    } finally {
      release();
    }
    const [a4, a5, a3] = await Promise.all([four, five, newer]);
    assert.deepEqual(promised(a3), [{ type: 'appendResp', term: 2, reject: false, index: 3 }]);
    assert.deepEqual(
      dir.log.map((e) => `${e.index}/${e.term}`),
      ['1/1', '2/1', '3/2'],
      'the durable log: entry 5 of term 1 never reached the disk',
    );
    // The ack of 5 (term 1) would promise an entry the disk never held.
    assert.deepEqual(promised(a5), [], 'no answer for entries that were never durable');
    // Entry 4 was saved before the truncation, but its answer too is released only after the node moved to term 2:
    // the rule is by term (a term-1 answer helps no leader of term 2), so it is dropped as well.
    assert.deepEqual(promised(a4), [], 'an older term\'s ack released in a newer term is dropped');
  });

  it('a vote granted in a term that a newer term replaced before the vote was saved is not sent', async () => {
    const dir = new MemoryDataDir('n1');
    const { node } = await start(dir);
    const vote = (from: string, term: number): Message => ({ type: 'vote', from, to: 'n1', term, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
    // Both requests arrive in one turn: the grant in term 5 and the step to term 6 go into one Ready.
    const five = node.handleRequest(vote('n2', 5));
    const six = node.handleRequest(vote('n3', 6));
    const [g5, g6] = await Promise.all([five, six]);
    assert.deepEqual(dir.hardState && { term: dir.hardState.term, vote: dir.hardState.vote }, { term: 6, vote: 'n3' });
    assert.deepEqual(promised(g6), [{ type: 'voteResp', term: 6, granted: true }]);
    // The vote for n2 in term 5 was never durable: granting it would promise what a restart forgets.
    assert.deepEqual(promised(g5), [], 'no grant for a vote that was never durable');
  });
});

/**
 * The Ready loop starts only when there is something for it to do: a tick
 * or an RPC answer that leaves the core with no Ready (no message, no entry,
 * no state to save), no fetched snapshot and no held answer starts no loop
 * (each empty one was a turn and two promises: about half the loops of a
 * simulator seed). One that leaves work starts it as before.
 */
import assert from 'node:assert/strict';

import { Node, type MessageSender } from '../../../src/node/node.js';
import { systemClock, type Clock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { until } from '../../harness/until.js';

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
// Ticks every 10 ms; no election of its own and no heartbeat within a test: n1 does only what the test steps into it.
const timings = { tickMs: 10, electionTimeoutTicks: 200_000, heartbeatIntervalTicks: 100_000 };

class RecordingSender implements MessageSender {
  readonly sent: Message[] = [];
  send(m: Message): void {
    this.sent.push(m);
  }
  setPeers(): void {}
  async close(): Promise<void> {}
}

/** countingClock: systemClock, counting the defer() calls (each starts one Ready loop). */
function countingClock(): { clock: Clock; defers: () => number } {
  let n = 0;
  const clock: Clock = {
    ...systemClock,
    defer: (fn) => {
      n++;
      systemClock.defer(fn);
    },
  };
  return { clock, defers: () => n };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('node: the Ready loop starts only when it has work', function () {
  this.timeout(20_000);
  const nodes: Node[] = [];
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
  });

  /** leader: n1 leads with its term's no-op acknowledged by n2 and n3 and applied, everything settled. */
  async function leader(): Promise<{ node: Node; sender: RecordingSender; defers: () => number; term: number; noop: number }> {
    const { clock, defers } = countingClock();
    const sender = new RecordingSender();
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const node = await Node.start({ clock, rng: cryptoRng, id: 'n1', storage, transport: sender, initialMembership: membership, timings });
    nodes.push(node);
    node.campaign();
    const answered = new Set<Message>();
    const term = await until('n1 to lead', 5_000, () => {
      for (const m of sender.sent) {
        if (m.type !== 'vote' || answered.has(m)) continue;
        answered.add(m);
        node.receive({ type: 'voteResp', from: m.to, to: 'n1', term: m.term, preVote: m.preVote, granted: true });
      }
      const st = node.status();
      return st.role === 'leader' ? st.term : undefined;
    });
    const noop = await until('the no-op append', 5_000, () => sender.sent.find((m) => m.type === 'append' && m.to === 'n2' && m.entries.length > 0)?.term === term ? node.status().lastIndex : undefined);
    for (const from of ['n2', 'n3']) node.receive({ type: 'appendResp', from, to: 'n1', term, reject: false, index: noop, hintIndex: 0, hintTerm: 0 });
    await until('the no-op applied', 5_000, () => (node.status().applied >= noop ? true : undefined));
    await sleep(50); // every loop started so far has ended
    return { node, sender, defers, term, noop };
  }

  it('ticks that change nothing start no loop', async () => {
    const { defers } = await leader();
    const before = defers();
    await sleep(100); // ~10 ticks, none of them a heartbeat or an election
    assert.equal(defers(), before, 'no loop started by a quiet tick');
  });

  it('an answer that changes nothing starts no loop; one that leaves work does', async () => {
    const { node, sender, defers, term, noop } = await leader();
    const before = defers();
    // n2 acknowledges again what it acknowledged: nothing to send, save or apply.
    node.receive({ type: 'appendResp', from: 'n2', to: 'n1', term, reject: false, index: noop, hintIndex: 0, hintTerm: 0 });
    node.receive({ type: 'heartbeatResp', from: 'n3', to: 'n1', term, readSeq: 0, installingIndex: 0, applied: noop });
    await sleep(20);
    assert.equal(defers(), before, 'no loop started by an answer that changed nothing');
    // A write, saved and sent: then n2's acknowledgement of it commits it, which leaves work (apply, commit to send).
    const written = node.propose({ op: 'put', key: new TextEncoder().encode('a'), value: new Uint8Array([1]) });
    await until('the write sent to n2', 5_000, () => (sender.sent.some((m) => m.type === 'append' && m.to === 'n2' && m.entries.some((e) => e.index === noop + 1)) ? true : undefined));
    await sleep(50);
    const beforeAck = defers();
    node.receive({ type: 'appendResp', from: 'n2', to: 'n1', term, reject: false, index: noop + 1, hintIndex: 0, hintTerm: 0 });
    assert.equal(defers(), beforeAck + 1, 'a loop started by the answer that committed the write');
    assert.equal((await written).index, noop + 1);
  });
});

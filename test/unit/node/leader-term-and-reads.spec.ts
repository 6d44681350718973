/**
 * Issue 14, item 7 (driver side): a leader sends appends only once its term
 * is durable, a single voter too (Raft §5.1: currentTerm is persisted before
 * any message that depends on it leaves); ReadIndex request ids are unique
 * across restarts (dissertation §6.4: a read must not be served by an answer
 * meant for another read).
 */
import assert from 'node:assert/strict';

import { NodeError } from '../../../src/node/errors.js';
import { Node, type MessageSender } from '../../../src/node/node.js';
import type { Membership, Message, Rng } from '../../../src/raft/types.js';
import { MemoryDataDir } from '../../../src/storage/memory-storage.js';
import { FaultyStorage } from './faulty-storage.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { until } from '../../harness/until.js';

/** Sent: a message as it left the node, with the term a restart would have loaded at that moment. */
interface Sent {
  readonly m: Message;
  readonly durableTerm: number;
}

class RecordingSender implements MessageSender {
  readonly sent: Sent[] = [];
  storage: FaultyStorage | null = null;
  send(m: Message): void {
    this.sent.push({ m, durableTerm: this.storage?.durableTerm ?? 0 });
  }
  setPeers(): void {}
  async close(): Promise<void> {}
}

describe('node: a leader sends appends only after its term is saved', function () {
  this.timeout(20_000);
  let node: Node | null = null;
  afterEach(async () => {
    await node?.stop();
    node = null;
  });

  it('a single voter electing itself sends no append to its learner before the new term is durable', async () => {
    const membership: Membership = { voters: ['n1'], learners: ['n2'], addresses: { n1: 'mem:1', n2: 'mem:2' } };
    const storage = await FaultyStorage.open(new MemoryDataDir('n1'));
    storage.saveDelayMs = 20; // a slow fsync: the window in which an early append would leave
    const sender = new RecordingSender();
    sender.storage = storage;
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage,
      transport: sender,
      initialMembership: membership,
      timings: { tickMs: 5, electionTimeoutTicks: 4, heartbeatIntervalTicks: 2 },
    });
    const n = node;
    await until('n1 to lead', 5_000, () => (n.status().role === 'leader' ? true : undefined));
    await until('appends to the learner', 5_000, () => (sender.sent.some((s) => s.m.type === 'append') ? true : undefined));
    // Later appends (a new entry) still leave before their own fsync, as the pipelining allows.
    const write = n.propose({ op: 'put', key: new TextEncoder().encode('k'), value: new Uint8Array([1]) });
    await write;
    const appends = sender.sent.filter((s) => s.m.type === 'append');
    assert.ok(appends.length > 0);
    for (const s of appends) {
      assert.ok(s.m.term <= s.durableTerm, `an append of term ${s.m.term} left while the durable term was ${s.durableTerm}`);
    }
  });
});

describe('node: ReadIndex request ids are unique across restarts', function () {
  this.timeout(20_000);
  const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
  const timings = { tickMs: 10, electionTimeoutTicks: 100_000, heartbeatIntervalTicks: 3, readTimeoutMs: 200 };

  /** readContextOfOneBoot boots n1 on dir as a follower of n2, issues one linearizable read and returns the id it sent to n2. */
  async function readContextOfOneBoot(dir: MemoryDataDir, rng?: Rng): Promise<string> {
    const storage = await FaultyStorage.open(dir);
    const sender = new RecordingSender();
    const node = await Node.start({ clock: systemClock, rng: rng ?? cryptoRng, id: 'n1', storage, transport: sender, initialMembership: membership, timings });
    try {
      await node.handleRequest({ type: 'heartbeat', from: 'n2', to: 'n1', term: 2, commit: 0, readSeq: 1 });
      assert.equal(node.status().leader, 'n2');
      // n2 never answers here: the read times out, after its request left.
      await assert.rejects(node.get(new TextEncoder().encode('k')), (e: unknown) => e instanceof NodeError && e.code === 'timeout');
      const asks = sender.sent.flatMap((s) => (s.m.type === 'readIndex' ? [s.m.context] : []));
      assert.equal(asks.length, 1, JSON.stringify(asks));
      return asks[0] as string;
    } finally {
      await node.stop();
    }
  }

  it('the same read after a restart carries another id (an answer meant for the first boot matches nothing)', async () => {
    const dir = new MemoryDataDir('n1');
    const first = await readContextOfOneBoot(dir);
    const second = await readContextOfOneBoot(dir);
    assert.notEqual(first, second);
    assert.match(first, /^n1\/[0-9a-f]{16}\/1$/);
  });

  it('the per-boot part comes from the randomness the node is given', async () => {
    const rng: Rng = { nextInt: (n) => 0xabcd % n };
    const context = await readContextOfOneBoot(new MemoryDataDir('n1'), rng);
    assert.equal(context, 'n1/abcdabcdabcdabcd/1');
  });
});

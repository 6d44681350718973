import assert from 'node:assert/strict';

import type { Message, NodeId } from '../../../src/raft/types.js';
import { MemoryNetwork, type MemoryTransport } from '../../../src/transport/memory-transport.js';
import type { RaftRequestHandler } from '../../../src/transport/transport.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** EchoHandler answers appends and votes like a follower `id`, with random delays (answers resolve out of order). */
class EchoHandler implements RaftRequestHandler {
  readonly requests: Message[] = [];
  readonly reports: Message[] = [];
  failNext = false;

  constructor(readonly id: NodeId) {}

  async handleRequest(m: Message): Promise<Message[]> {
    this.requests.push(m);
    if (this.failNext) {
      this.failNext = false;
      throw new Error('disk on fire');
    }
    await sleep(Math.floor(Math.random() * 3));
    const hdr = { from: this.id, to: m.from, term: m.term };
    switch (m.type) {
      case 'append':
        return [{ type: 'appendResp', ...hdr, reject: false, index: m.prevLogIndex + m.entries.length, hintIndex: 0, hintTerm: 0 }];
      case 'heartbeat':
        return [{ type: 'heartbeatResp', ...hdr, readSeq: m.readSeq, installingIndex: 0 }];
      case 'vote':
        return m.term === 1
          ? []
          : [
              { type: 'voteResp', ...hdr, preVote: false, granted: true },
              // a reply the RPC cannot carry: dropped
              { type: 'heartbeatResp', ...hdr, readSeq: 0, installingIndex: 0 },
            ];
      default:
        return [];
    }
  }

  handleReport(m: Message): void {
    this.reports.push(m);
  }
}

const append = (from: NodeId, to: NodeId, index: number): Message => ({
  type: 'append',
  from,
  to,
  term: 1,
  prevLogIndex: index - 1,
  prevLogTerm: 1,
  commit: 0,
  entries: [{ index, term: 1, type: 'normal', data: new Uint8Array([index & 0xff]) }],
});

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

describe('MemoryNetwork / MemoryTransport', () => {
  const ids = ['n1', 'n2', 'n3'];
  const addresses = { n1: 'mem:n1', n2: 'mem:n2', n3: 'mem:n3' };
  let net: MemoryNetwork;
  let handlers: Map<NodeId, EchoHandler>;
  let transports: Map<NodeId, MemoryTransport>;
  let inbox: Map<NodeId, Message[]>;

  beforeEach(() => {
    net = new MemoryNetwork();
    handlers = new Map();
    transports = new Map();
    inbox = new Map();
    for (const id of ids) {
      const h = new EchoHandler(id);
      handlers.set(id, h);
      net.listen(addresses[id as keyof typeof addresses], h);
      const box: Message[] = [];
      inbox.set(id, box);
      const t = net.transport({ selfId: id, onMessage: (m) => box.push(m) });
      t.setPeers(addresses);
      transports.set(id, t);
    }
  });

  afterEach(async () => {
    for (const t of transports.values()) await t.close();
  });

  it('delivers appends in order and their replies in order, asynchronously', async () => {
    const t1 = transports.get('n1')!;
    for (let i = 1; i <= 300; i++) t1.send(append('n1', 'n2', i));
    assert.equal(handlers.get('n2')!.requests.length, 0, 'nothing is handled synchronously');
    await waitFor('300 replies', () => inbox.get('n1')!.length === 300);
    assert.deepEqual(
      handlers.get('n2')!.requests.map((m) => (m.type === 'append' ? m.entries[0]!.index : 0)),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    assert.deepEqual(
      inbox.get('n1')!.map((m) => (m.type === 'appendResp' ? m.index : 0)),
      Array.from({ length: 300 }, (_, i) => i + 1),
    );
    assert.deepEqual(t1.stats(), { sent: 300, dropped: 0, received: 300 });
  });

  it('answers a vote with the matching reply only; nothing for "no reply"; reports go to handleReport', async () => {
    const t1 = transports.get('n1')!;
    t1.send({ type: 'vote', from: 'n1', to: 'n3', term: 1, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
    t1.send({ type: 'vote', from: 'n1', to: 'n3', term: 2, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
    t1.send({ type: 'snapshotResp', from: 'n1', to: 'n2', term: 2, index: 9, reject: false });
    await waitFor('the reply and the report', () => inbox.get('n1')!.length === 1 && handlers.get('n2')!.reports.length === 1);
    await sleep(10);
    assert.deepEqual(inbox.get('n1'), [{ type: 'voteResp', from: 'n3', to: 'n1', term: 2, preVote: false, granted: true }]);
  });

  it('drops reply types, unknown peers and messages across a cut link', async () => {
    const t1 = transports.get('n1')!;
    t1.send({ type: 'voteResp', from: 'n1', to: 'n2', term: 1, preVote: false, granted: true });
    t1.send(append('n1', 'n9', 1));
    net.cut('n1', 'n2');
    t1.send(append('n1', 'n2', 1));
    t1.send(append('n1', 'n3', 1));
    await waitFor('n3 reply', () => inbox.get('n1')!.length === 1);
    assert.equal(handlers.get('n2')!.requests.length, 0);
    assert.equal(t1.stats().dropped, 3);

    // One-way cut: requests pass, replies are lost.
    net.heal();
    net.cut('n2', 'n1', { oneWay: true });
    t1.send(append('n1', 'n2', 1));
    await waitFor('n2 handled it', () => handlers.get('n2')!.requests.length === 1);
    await sleep(10);
    assert.equal(inbox.get('n1')!.length, 1);
  });

  it('partition() splits the cluster into groups; heal() joins it', async () => {
    net.partition(['n1'], ['n2', 'n3']);
    const t2 = transports.get('n2')!;
    t2.send(append('n2', 'n1', 1));
    t2.send(append('n2', 'n3', 1));
    await waitFor('n3 reply', () => inbox.get('n2')!.length === 1);
    assert.equal(handlers.get('n1')!.requests.length, 0);
    net.heal();
    t2.send(append('n2', 'n1', 1));
    await waitFor('n1 reply', () => inbox.get('n2')!.length === 2);
  });

  it('setDropRate(1) loses everything; the rng decides', () => {
    net.setDropRate(1);
    transports.get('n1')!.send(append('n1', 'n2', 1));
    assert.equal(transports.get('n1')!.stats().dropped, 1);
    assert.throws(() => net.setDropRate(2), RangeError);
    const seeded = new MemoryNetwork({ rng: () => 0.3 });
    seeded.setDropRate(0.5);
    assert.equal(seeded.passes('a', 'b'), false);
    seeded.setDropRate(0.2);
    assert.equal(seeded.passes('a', 'b'), true);
  });

  it('a handler failure loses that reply only; a restarted listener does not get the old replies', async () => {
    const t1 = transports.get('n1')!;
    handlers.get('n2')!.failNext = true;
    t1.send(append('n1', 'n2', 1));
    t1.send(append('n1', 'n2', 2));
    await waitFor('one reply', () => inbox.get('n1')!.length === 1);
    assert.equal((inbox.get('n1')![0] as { index: number }).index, 2);

    // A node "restarts": a new listener on the same address.
    const slow: RaftRequestHandler = {
      handleRequest: async (m) => {
        await sleep(20);
        return [{ type: 'appendResp', from: 'n3', to: m.from, term: 1, reject: false, index: 1, hintIndex: 0, hintTerm: 0 }];
      },
      handleReport: () => undefined,
    };
    const fresh = new EchoHandler('n3');
    assert.throws(() => net.listen('mem:n2', slow), /in use/);
    // Swap the listener while a request is in flight.
    const net2 = new MemoryNetwork();
    const l = net2.listen('mem:x', slow);
    const tx = net2.transport({ selfId: 'n1', onMessage: (m) => inbox.get('n1')!.push(m) });
    tx.setPeers({ n3: 'mem:x' });
    tx.send(append('n1', 'n3', 1));
    await sleep(5);
    l.close();
    net2.listen('mem:x', fresh);
    await sleep(40);
    assert.equal(inbox.get('n1')!.length, 1, 'the reply of the old listener is lost');
    await tx.close();
  });

  it('close() stops delivery; setPeers forgets removed peers', async () => {
    const t1 = transports.get('n1')!;
    t1.setPeers({ n1: 'mem:n1', n3: 'mem:n3' });
    t1.send(append('n1', 'n2', 1));
    assert.equal(t1.stats().dropped, 1);
    t1.send(append('n1', 'n3', 1));
    await t1.close();
    await sleep(10);
    assert.equal(inbox.get('n1')!.length, 0);
    t1.send(append('n1', 'n3', 2));
    assert.equal(t1.stats().dropped, 2);
  });
});

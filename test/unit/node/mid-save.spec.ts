/**
 * Issue 16, item 5: while the Ready loop waits for a save, what was stepped
 * meanwhile does not wait for it: a leader's appends of the writes proposed
 * during the save leave at once, and committed entries that are already
 * durable here are applied at once (the write answered) — while entries
 * that are not yet durable here are never applied, and held answers stay
 * held until their save (issue 14's failure-path rules).
 */
import assert from 'node:assert/strict';

import { Node, type MessageSender } from '../../../src/node/node.js';
import type { ApplyResult } from '../../../src/fsm/types.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir } from '../../../src/storage/memory-storage.js';
import { FaultyStorage } from './faulty-storage.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { until } from '../../harness/until.js';

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
// No election of its own and no heartbeat traffic to speak of: n1 does only what the test steps into it.
const timings = { tickMs: 10, electionTimeoutTicks: 100_000, heartbeatIntervalTicks: 1_000 };
const enc = new TextEncoder();

class RecordingSender implements MessageSender {
  readonly sent: Message[] = [];
  send(m: Message): void {
    this.sent.push(m);
  }
  setPeers(): void {}
  async close(): Promise<void> {}
}

/** appendedIndexes: the entry indexes the appends in `sent` carried to `to`. */
function appendedIndexes(sent: readonly Message[], to: string): number[] {
  return sent.flatMap((m) => (m.type === 'append' && m.to === to ? m.entries.map((e) => e.index) : []));
}

async function start(dir: MemoryDataDir): Promise<{ node: Node; storage: FaultyStorage; sender: RecordingSender }> {
  const storage = await FaultyStorage.open(dir);
  const sender = new RecordingSender();
  const node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage, transport: sender, initialMembership: membership, timings });
  return { node, storage, sender };
}

/** lead makes n1 the leader: it campaigns and n2 grants its (pre-)votes. Returns the term. */
async function lead(node: Node, sender: RecordingSender): Promise<number> {
  node.campaign();
  const answered = new Set<Message>();
  return until('n1 to lead', 5_000, () => {
    for (const m of sender.sent) {
      if (m.type !== 'vote' || m.to !== 'n2' || answered.has(m)) continue;
      answered.add(m);
      node.receive({ type: 'voteResp', from: 'n2', to: 'n1', term: m.term, preVote: m.preVote, granted: true });
    }
    const st = node.status();
    return st.role === 'leader' ? st.term : undefined;
  });
}

function ack(node: Node, term: number, index: number): void {
  node.receive({ type: 'appendResp', from: 'n2', to: 'n1', term, reject: false, index, hintIndex: 0, hintTerm: 0 });
}

/** startLeader: n1 leads (kept in `nodes` for cleanup), the no-op of its term committed (n2 acknowledged it) and applied. */
async function startLeader(nodes: Node[]): Promise<{ node: Node; storage: FaultyStorage; sender: RecordingSender; term: number; noop: number }> {
  const { node, storage, sender } = await start(new MemoryDataDir('n1'));
  nodes.push(node);
  const term = await lead(node, sender);
  await until('the no-op append', 5_000, () => (appendedIndexes(sender.sent, 'n2').length > 0 ? true : undefined));
  const noop = Math.max(...appendedIndexes(sender.sent, 'n2'));
  ack(node, term, noop);
  await until('the no-op applied', 5_000, () => (node.status().applied >= noop ? true : undefined));
  return { node, storage, sender, term, noop };
}

describe('node: nothing waits for a save it does not depend on', function () {
  this.timeout(20_000);
  const nodes: Node[] = [];
  const releases: (() => void)[] = [];
  afterEach(async () => {
    for (const r of releases.splice(0)) r();
    for (const n of nodes.splice(0)) await n.stop().catch(() => undefined);
  });

  it("a leader's appends of writes proposed during a save leave for an idle follower before that save ends", async () => {
    const { node, storage, sender } = await start(new MemoryDataDir('n1'));
    nodes.push(node);
    const term = await lead(node, sender);
    // The followers acknowledge the no-op of the new term, so the leader streams to them (no longer probing).
    await until('the no-op append', 5_000, () => (appendedIndexes(sender.sent, 'n3').length > 0 ? true : undefined));
    const noop = Math.max(...appendedIndexes(sender.sent, 'n2'));
    ack(node, term, noop);
    node.receive({ type: 'appendResp', from: 'n3', to: 'n1', term, reject: false, index: noop, hintIndex: 0, hintTerm: 0 });
    await until('the no-op applied', 5_000, () => (node.status().applied >= noop ? true : undefined));
    const release = storage.holdSaves();
    releases.push(release);
    const first = node.propose({ op: 'put', key: enc.encode('a'), value: new Uint8Array([1]) });
    await until('the save of the first write to start', 5_000, () => (storage.savesHeld > 0 ? true : undefined));
    const firstIndex = Math.max(...appendedIndexes(sender.sent, 'n2'));
    const second = node.propose({ op: 'put', key: enc.encode('b'), value: new Uint8Array([2]) });
    // n2 acknowledges the first write (n2 is idle again): the second leaves for n2 while the first save still runs.
    ack(node, term, firstIndex);
    await until("the second write's append", 5_000, () => (appendedIndexes(sender.sent, 'n2').includes(firstIndex + 1) ? true : undefined));
    assert.equal(storage.savesHeld, 1, 'the first save is still in flight');
    release();
    void first.catch(() => undefined);
    void second.catch(() => undefined);
  });

  it('a committed write already durable here is applied and answered while a later save is in flight', async () => {
    const { node, storage, sender, term, noop } = await startLeader(nodes);
    // Write A is saved here (not yet acknowledged by anyone else: not committed).
    let answeredA: ApplyResult | null = null;
    const a = node.propose({ op: 'put', key: enc.encode('a'), value: new Uint8Array([1]) }).then((r) => (answeredA = r));
    await until('write A durable here', 5_000, () => (storage.saves.some((b) => b.entries?.some((e) => e.index === noop + 1)) && storage.savesHeld === 0 && node.status().lastIndex === noop + 1 ? true : undefined));
    await until('write A sent', 5_000, () => (appendedIndexes(sender.sent, 'n2').includes(noop + 1) ? true : undefined));
    // Now every save stalls: write B's save is in flight when n2 acknowledges A.
    const release = storage.holdSaves();
    releases.push(release);
    const b = node.propose({ op: 'put', key: enc.encode('b'), value: new Uint8Array([2]) });
    await until("write B's save to start", 5_000, () => (storage.savesHeld > 0 ? true : undefined));
    ack(node, term, noop + 1);
    await until('write A answered', 5_000, () => (answeredA !== null ? true : undefined));
    assert.equal(storage.savesHeld, 1, "write B's save is still in flight");
    assert.equal(node.status().applied, noop + 1, 'A applied, B (not durable, not committed) not');
    await a;
    release();
    await until('write B saved', 5_000, () => (storage.savesHeld === 0 ? true : undefined));
    void b.catch(() => undefined);
  });

  it('a follower never applies a committed entry before it is durable here, nor acknowledges it', async () => {
    const { node, storage } = await start(new MemoryDataDir('n1'));
    nodes.push(node);
    const release = storage.holdSaves();
    releases.push(release);
    const append: Message = {
      type: 'append',
      from: 'n2',
      to: 'n1',
      term: 3,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [
        { index: 1, term: 3, type: 'normal', data: new Uint8Array(0) },
        { index: 2, term: 3, type: 'normal', data: new Uint8Array(0) },
      ],
      commit: 2,
    };
    let answered = false;
    const out = node.handleRequest(append).then((r) => {
      answered = true;
      return r;
    });
    await until('the save to start', 5_000, () => (storage.savesHeld > 0 ? true : undefined));
    // A heartbeat carrying the commit arrives while the entries are being saved: still nothing applied or acknowledged
    // (its answer waits for the save too: the term it is given in is not durable yet).
    const heartbeat = node.handleRequest({ type: 'heartbeat', from: 'n2', to: 'n1', term: 3, commit: 2, readSeq: 1 });
    await until('the heartbeat stepped', 5_000, () => (node.status().commit === 2 ? true : undefined));
    assert.equal(node.status().applied, 0, 'nothing applied before it is durable here');
    assert.equal(answered, false, 'the append is not acknowledged before it is durable');
    release();
    await heartbeat;
    const replies = await out;
    assert.deepEqual(replies.map((m) => (m.type === 'appendResp' ? { reject: m.reject, index: m.index } : m.type)), [{ reject: false, index: 2 }]);
    await until('both applied once durable', 5_000, () => (node.status().applied === 2 ? true : undefined));
  });
  it('writes that arrive in one turn, each on its own promise chain (as grpc-js hands calls over), go into one save', async () => {
    const { node, storage, noop } = await startLeader(nodes);
    await new Promise((r) => setTimeout(r, 20)); // the loop is idle: nothing in flight
    const before = storage.saves.length;
    const writes = Array.from({ length: 8 }, (_, i) =>
      Promise.resolve()
        .then(() => undefined)
        .then(() => node.propose({ op: 'put', key: enc.encode(`k${i}`), value: new Uint8Array([i]) })),
    );
    await until('the 8 writes saved', 5_000, () => (node.status().lastIndex === noop + 8 && storage.savesHeld === 0 ? true : undefined));
    const saved = storage.saves.slice(before).filter((b) => (b.entries?.length ?? 0) > 0);
    assert.deepEqual(saved.map((b) => b.entries?.map((e) => e.index)), [Array.from({ length: 8 }, (_, i) => noop + 1 + i)]);
    for (const w of writes) void w.catch(() => undefined);
  });
});

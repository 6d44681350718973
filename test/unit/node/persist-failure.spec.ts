/**
 * A failed persist never releases what depended on it (issue 14, item 1):
 * the answers a node holds until their state is durable (vote grants, append
 * acks) are dropped when that write fails, the Raft loop stops, and the node
 * says so in one line. Raft §5.1, Figure 2: currentTerm and votedFor are
 * persisted before responding to RPCs; log entries before acknowledging them.
 */
import assert from 'node:assert/strict';

import { NodeError } from '../../../src/node/errors.js';
import { Node, type MessageSender } from '../../../src/node/node.js';
import type { Logger } from '../../../src/node/logger.js';
import type { Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir } from '../../../src/storage/memory-storage.js';
import { FaultyStorage } from './faulty-storage.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';

const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:1', n2: 'mem:2', n3: 'mem:3' } };
// No campaign of its own during a test: n1 only answers what the test steps into it.
const timings = { tickMs: 10, electionTimeoutTicks: 100_000, heartbeatIntervalTicks: 3 };

class RecordingSender implements MessageSender {
  readonly sent: Message[] = [];
  send(m: Message): void {
    this.sent.push(m);
  }
  setPeers(): void {}
  async close(): Promise<void> {}
}

class RecordingLogger implements Logger {
  readonly errors: string[] = [];
  debug(): void {}
  info(): void {}
  warn(): void {}
  error(_obj: object, msg?: string): void {
    this.errors.push(msg ?? '');
  }
}

function voteFrom(candidate: NodeId, term: number): Message {
  return { type: 'vote', from: candidate, to: 'n1', term, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false };
}

interface Life {
  node: Node;
  storage: FaultyStorage;
  sender: RecordingSender;
  log: RecordingLogger;
}

async function boot(dir: MemoryDataDir): Promise<Life> {
  const storage = await FaultyStorage.open(dir);
  const sender = new RecordingSender();
  const log = new RecordingLogger();
  const node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage, transport: sender, initialMembership: membership, timings, logger: log });
  return { node, storage, sender, log };
}

/** answer steps m into the node as its RaftService would and returns what leaves the node (RPC answers), or the error. */
async function answer(life: Life, m: Message): Promise<Message[] | Error> {
  try {
    return await life.node.handleRequest(m);
  } catch (e) {
    return e as Error;
  }
}

describe('node: a failed persist never releases what depended on it', function () {
  this.timeout(20_000);
  const lives: Life[] = [];
  afterEach(async () => {
    for (const l of lives.splice(0)) await l.node.stop().catch(() => undefined);
  });

  it('control: a vote grant leaves only once the vote is durable', async () => {
    const dir = new MemoryDataDir('n1');
    const life = await boot(dir);
    lives.push(life);
    const out = await answer(life, voteFrom('n2', 5));
    assert.ok(Array.isArray(out), String(out));
    assert.deepEqual(
      out.map((m) => (m.type === 'voteResp' ? { granted: m.granted, term: m.term } : m.type)),
      [{ granted: true, term: 5 }],
    );
    assert.deepEqual(dir.hardState && { term: dir.hardState.term, vote: dir.hardState.vote }, { term: 5, vote: 'n2' }, 'persisted before it was answered');
  });

  it('a vote whose HardState write fails is never granted; after a restart no second vote in that term', async () => {
    const dir = new MemoryDataDir('n1');
    const grants: { term: number; to: NodeId }[] = [];
    const collect = (ms: readonly Message[]): void => {
      for (const m of ms) if (m.type === 'voteResp' && m.granted && !m.preVote) grants.push({ term: m.term, to: m.to });
    };

    const first = await boot(dir);
    lives.push(first);
    first.storage.failSaves = true;
    const out = await answer(first, voteFrom('n2', 5));
    collect(first.sender.sent);
    if (Array.isArray(out)) collect(out);
    assert.ok(out instanceof NodeError && out.code === 'unavailable', `the vote RPC fails instead of answering: ${String(out)}`);
    assert.equal(grants.length, 0, 'no vote grant left the node');
    assert.ok(first.storage.saves.some((b) => b.hardState?.vote === 'n2'), 'the vote was attempted');
    // The Raft loop stopped: the node answers nothing more, and said why in one line.
    assert.ok(first.node.failed() !== null);
    const later = await answer(first, { type: 'heartbeat', from: 'n2', to: 'n1', term: 5, commit: 0, readSeq: 1 });
    assert.ok(later instanceof NodeError, 'a failed node answers no further request');
    assert.equal(first.log.errors.length, 1, `one error line: ${JSON.stringify(first.log.errors)}`);
    assert.match(first.log.errors[0] ?? '', /node failed/);
    await first.node.stop();
    lives.length = 0;

    // Restart on the same persisted state (the failed write left nothing) with a healthy disk.
    const second = await boot(dir);
    lives.push(second);
    const out2 = await answer(second, voteFrom('n3', 5));
    assert.ok(Array.isArray(out2), String(out2));
    collect(out2);
    collect(second.sender.sent);
    const againN2 = await answer(second, voteFrom('n2', 5));
    if (Array.isArray(againN2)) collect(againN2);
    collect(second.sender.sent.slice());

    const byTerm = new Map<number, Set<NodeId>>();
    for (const g of grants) byTerm.set(g.term, (byTerm.get(g.term) ?? new Set()).add(g.to));
    for (const [term, candidates] of byTerm) {
      assert.equal(candidates.size, 1, `term ${term}: votes granted to ${[...candidates].join(', ')} (two leaders possible)`);
    }
    assert.deepEqual([...(byTerm.get(5) ?? [])], ['n3'], 'the one vote of term 5 went to the candidate asking after the restart');
  });

  it('entries whose write fails are never acknowledged', async () => {
    const dir = new MemoryDataDir('n1');
    const first = await boot(dir);
    lives.push(first);
    first.storage.failSaves = true;
    const append: Message = {
      type: 'append',
      from: 'n2',
      to: 'n1',
      term: 3,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [
        { index: 1, term: 3, type: 'normal', data: new Uint8Array(0) },
        { index: 2, term: 3, type: 'normal', data: new Uint8Array([1, 2, 3]) },
      ],
      commit: 0,
    };
    const out = await answer(first, append);
    const acks = [...first.sender.sent, ...(Array.isArray(out) ? out : [])].filter((m) => m.type === 'appendResp' && !m.reject);
    assert.equal(acks.length, 0, 'no append ack left the node');
    assert.ok(out instanceof NodeError, `the append RPC fails instead of answering: ${String(out)}`);
    assert.ok(first.node.failed() !== null);
    assert.equal(first.log.errors.length, 1);
    await first.node.stop();
    lives.length = 0;

    // Nothing was persisted: after a restart the node holds no entry it could have acknowledged.
    const second = await boot(dir);
    lives.push(second);
    assert.equal(second.node.status().lastIndex, 0);
    const out2 = await answer(second, append);
    assert.ok(Array.isArray(out2), String(out2));
    assert.deepEqual(
      out2.map((m) => (m.type === 'appendResp' ? { reject: m.reject, index: m.index } : m.type)),
      [{ reject: false, index: 2 }],
      'a healthy node acknowledges the same append once it is durable',
    );
    assert.equal(dir.log.length, 2);
  });
});

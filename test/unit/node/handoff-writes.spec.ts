/**
 * Writes during a leadership handoff (a planned stop's SIGTERM hands
 * leadership over first): one that reaches the leader, and one a follower
 * forwards to it, wait and are applied once by the new leader, instead of
 * failing busy (RESOURCE_EXHAUSTED) at once.
 *
 * Deterministic (boot32; the test of 54b01b1 was flaky: it muted every send
 * of the target, whose vote requests were then dropped too): three Nodes on
 * one ManualClock, so no tick runs unless the test advances it (the transfer
 * is abandoned only after an election timeout of ticks); the transfer is held
 * by keeping back only the leader's TimeoutNow to the target, and once that
 * is let through the target campaigns with every message delivered.
 */
import assert from 'node:assert/strict';

import type { ApplyResult } from '../../../src/fsm/types.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node, type MessageSender } from '../../../src/node/node.js';
import type { Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork, type MemoryTransport } from '../../../src/transport/memory-transport.js';
import type { ForwardedProposals, ForwardProposalsParams } from '../../../src/transport/transport.js';
import { ManualClock } from './manual-clock.js';

const IDS = ['n1', 'n2', 'n3'] as const;
const enc = new TextEncoder();
const TICK_MS = 10;
const ELECTION_TICKS = 15;

/** HoldingSender: the in-memory transport, keeping back the TimeoutNow messages while `holdTimeoutNow` is set. */
class HoldingSender implements MessageSender {
  holdTimeoutNow = false;
  readonly held: Message[] = [];
  constructor(private readonly inner: MemoryTransport) {}
  send(m: Message): void {
    if (this.holdTimeoutNow && m.type === 'timeoutNow') {
      if (this.held.length < 100) this.held.push(m);
      return;
    }
    this.inner.send(m);
  }
  release(): void {
    this.holdTimeoutNow = false;
    for (const m of this.held.splice(0)) this.inner.send(m);
  }
  setPeers(addresses: Readonly<Record<NodeId, string>>): void {
    this.inner.setPeers(addresses);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  forwardProposals(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals> {
    return this.inner.forwardProposals(p, timeoutMs);
  }
}

/** step advances the clock by `ticks` ticks, one at a time, letting the in-memory messages and the disk work settle after each. */
async function step(clock: ManualClock, ticks: number): Promise<void> {
  await clock.advanceSettled(ticks * TICK_MS, TICK_MS, 30);
}

describe('node: writes during a leadership handoff', function () {
  this.timeout(60_000);
  const nodes = new Map<NodeId, Node>();
  const senders = new Map<NodeId, HoldingSender>();
  const closers: { close(): void }[] = [];

  after(async () => {
    for (const s of senders.values()) s.release();
    for (const c of closers) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
  });

  it('wait, at the leader and at a follower, and are applied once by the new leader, not refused busy', async () => {
    const clock = new ManualClock(1_000_000);
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const sender = new HoldingSender(net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }));
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: sender,
        initialMembership: membership,
        timings: { tickMs: TICK_MS, electionTimeoutTicks: ELECTION_TICKS, heartbeatIntervalTicks: 2, proposalTimeoutMs: 60_000 },
        clock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      senders.set(id, sender);
      closers.push(net.listen(`mem:${id}`, node));
    }
    const oneLeader = (): NodeId | undefined => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    };
    for (let i = 0; i < 200 && oneLeader() === undefined; i++) await step(clock, 1);
    const leader = oneLeader();
    assert.ok(leader !== undefined, 'no leader within 200 ticks');
    const [target, third] = IDS.filter((id) => id !== leader) as [NodeId, NodeId];
    const old = nodes.get(leader) as Node;
    // Every member holds the leader's no-op: the target is caught up, so the transfer's TimeoutNow goes out at once.
    for (let i = 0; i < 50 && [...nodes.values()].some((n) => n.brief().applied < old.brief().commit || old.brief().commit === 0); i++) await step(clock, 1);
    const lastBefore = old.status().lastIndex;

    (senders.get(leader) as HoldingSender).holdTimeoutNow = true;
    const moved = old.transferLeadership(target, 60_000).then(
      () => 'moved',
      (e: Error) => `failed: ${e.message}`,
    );
    const settled: string[] = ['pending', 'pending'];
    const track = (i: number, p: Promise<ApplyResult>): Promise<ApplyResult | Error> =>
      p.then(
        (r) => ((settled[i] = r.ok ? 'applied' : `failed: ${r.error}`), r),
        (e: Error) => ((settled[i] = `rejected: ${e.message}`), e),
      );
    const atLeader = track(0, old.propose({ op: 'put', key: enc.encode('handoff/leader'), value: enc.encode('a') }));
    const atFollower = track(1, (nodes.get(third) as Node).propose({ op: 'put', key: enc.encode('handoff/follower'), value: enc.encode('b') }));

    // Less than an election timeout of ticks (the transfer is not abandoned): the leader is still handing over.
    await step(clock, ELECTION_TICKS / 3);
    assert.ok((senders.get(leader) as HoldingSender).held.length > 0, 'the TimeoutNow was sent (and held)');
    assert.equal(old.brief().role, 'leader');
    assert.deepEqual(settled, ['pending', 'pending'], 'a write during the handoff was answered before the handoff ended');

    (senders.get(leader) as HoldingSender).release();
    for (let i = 0; i < 200 && (settled.includes('pending') || nodes.get(target)?.brief().role !== 'leader'); i++) await step(clock, 1);
    assert.equal(await moved, 'moved');
    assert.deepEqual(settled, ['applied', 'applied']);
    const [a, b] = (await Promise.all([atLeader, atFollower])) as [ApplyResult, ApplyResult];
    const n = nodes.get(target) as Node;
    assert.equal(n.brief().role, 'leader');
    // Applied by the new leader: after the no-op it appended on winning (lastBefore + 1), not by the old one; once each.
    assert.ok(a.index > lastBefore + 1 && b.index > lastBefore + 1, `applied at ${a.index} and ${b.index}; the old leader's log ended at ${lastBefore}`);
    assert.notEqual(a.index, b.index);
  });
});

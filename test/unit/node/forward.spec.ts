/**
 * Issue 16: a follower takes client writes and hands them to the leader in
 * batches over the peer plane (ForwardQueue, RaftService.Propose), and
 * answers each with the leader's apply result. Three real Nodes (core, driver, state
 * machine) on in-memory storage and the in-memory transport; a wrapper on
 * each transport counts the Propose calls, can hold their answers, and can
 * mute a node's own Raft messages (a leader that takes writes but can no
 * longer replicate them).
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { toApiError } from '../../../src/api/api-error.js';
import type { ApplyResult } from '../../../src/fsm/types.js';
import { NodeError } from '../../../src/node/errors.js';
import { Node, WRITE_SHARES, type MessageSender } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork, type MemoryTransport } from '../../../src/transport/memory-transport.js';
import type { ForwardProposalsParams, ForwardedProposals } from '../../../src/transport/transport.js';
import { until } from '../../harness/until.js';

const IDS = ['n1', 'n2', 'n3'] as const;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** ForwardingSender: the in-memory transport, with Propose calls counted (and held while `hold` is set) and own messages muted on demand. */
class ForwardingSender implements MessageSender {
  calls = 0;
  proposals = 0;
  muted = false;
  private held: (() => void)[] = [];
  hold = false;
  constructor(private readonly inner: MemoryTransport) {}
  send(m: Message): void {
    if (!this.muted) this.inner.send(m);
  }
  setPeers(addresses: Readonly<Record<NodeId, string>>): void {
    this.inner.setPeers(addresses);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  async forwardProposals(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals> {
    this.calls++;
    this.proposals += p.data.length;
    if (this.hold) await new Promise<void>((r) => this.held.push(r));
    return this.inner.forwardProposals(p, timeoutMs);
  }
  release(): void {
    this.hold = false;
    for (const r of this.held.splice(0)) r();
  }
}

interface Cluster {
  readonly nodes: Map<NodeId, Node>;
  readonly senders: Map<NodeId, ForwardingSender>;
  leader(): Promise<NodeId>;
  stop(): Promise<void>;
}

async function startCluster(opts: { maxPendingProposals?: number } = {}): Promise<Cluster> {
  const net = new MemoryNetwork();
  const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
  const nodes = new Map<NodeId, Node>();
  const senders = new Map<NodeId, ForwardingSender>();
  const closers: { close(): void }[] = [];
  for (const id of IDS) {
    const ref: { node: Node | null } = { node: null };
    const sender = new ForwardingSender(net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }));
    const node = await Node.start({
      id,
      storage: await MemoryStorage.open(new MemoryDataDir(id)),
      transport: sender,
      initialMembership: membership,
      timings: { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, proposalTimeoutMs: 4_000 },
      clock: systemClock,
      rng: cryptoRng,
      ...(opts.maxPendingProposals !== undefined ? { maxPendingProposals: opts.maxPendingProposals } : {}),
    });
    ref.node = node;
    nodes.set(id, node);
    senders.set(id, sender);
    closers.push(net.listen(`mem:${id}`, node));
  }
  return {
    nodes,
    senders,
    leader: () =>
      until('one leader that every node knows', 10_000, () => {
        const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
        const [l] = [...ls];
        return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
      }),
    async stop() {
      for (const c of closers) c.close();
      for (const n of nodes.values()) await n.stop().catch(() => undefined);
    },
  };
}

function get(node: Node, key: string): Promise<ApplyResult> {
  // A read inside a Txn: through the log, with the pair's revisions (version counts the writes of the key).
  return node.propose({ op: 'txn', compares: [], success: [{ op: 'get', key: enc.encode(key) }], failure: [] });
}

function versionOf(r: ApplyResult): number {
  assert.ok(r.ok);
  const g = r.responses?.[0];
  return g?.op === 'get' && g.kv !== null ? g.kv.version : 0;
}

describe('node: a follower forwards client writes to the leader in batches', function () {
  this.timeout(30_000);
  let c: Cluster | null = null;
  afterEach(async () => {
    for (const s of c?.senders.values() ?? []) s.release();
    await c?.stop();
    c = null;
  });

  it('applies each forwarded write once and answers it with the state machine result, in fewer Propose calls than writes', async () => {
    c = await startCluster();
    const leader = await c.leader();
    const fid = IDS.find((id) => id !== leader) as NodeId;
    const follower = c.nodes.get(fid) as Node;
    const sender = c.senders.get(fid) as ForwardingSender;

    const first = await follower.propose({ op: 'put', key: enc.encode('x'), value: enc.encode('v0') });
    assert.ok(first.ok);
    const second = await follower.propose({ op: 'put', key: enc.encode('x'), value: enc.encode('v1'), prevKv: true });
    assert.ok(second.ok && second.index > first.index);
    assert.equal(dec.decode(second.prev?.value), 'v0', 'the previous value the apply saw');
    assert.equal(second.prev?.modRevision, first.index);

    // Many at once: they queue behind the call in flight and travel together.
    const callsBefore = sender.calls;
    const proposalsBefore = sender.proposals;
    const writes = 200;
    const results = await Promise.all(Array.from({ length: writes }, (_, i) => follower.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v/${i}`) })));
    assert.equal(sender.proposals - proposalsBefore, writes, 'each write handed to the leader once');
    assert.ok(sender.calls - callsBefore < writes / 4, `${sender.calls - callsBefore} Propose calls for ${writes} writes`);
    const indexes = new Set(results.map((r) => r.index));
    assert.equal(indexes.size, writes, 'one log index per write');
    assert.ok(results.every((r) => r.ok));
    // Applied once on every node: each key written one time (version 1), at the index it was answered with.
    const l = c.nodes.get(leader) as Node;
    for (const i of [0, 57, 199]) {
      const r = await get(l, `k/${i}`);
      assert.equal(versionOf(r), 1);
      assert.ok(r.ok);
      const g = r.responses?.[0];
      assert.equal(g?.op === 'get' ? g.kv?.modRevision : -1, (results[i] as ApplyResult).index);
    }
    assert.equal(versionOf(await get(follower, 'x')), 2);
  });

  it("answers busy (RESOURCE_EXHAUSTED) beyond a follower's queue bound, and runs the queued writes once the leader answers", async () => {
    // 32 write slots: a follower forwards at most its share of them (32 / WRITE_SHARES = 8) at once.
    c = await startCluster({ maxPendingProposals: 8 * WRITE_SHARES });
    const leader = await c.leader();
    const fid = IDS.find((id) => id !== leader) as NodeId;
    const follower = c.nodes.get(fid) as Node;
    const sender = c.senders.get(fid) as ForwardingSender;
    sender.hold = true;
    const queued = Array.from({ length: 8 }, (_, i) => follower.propose({ op: 'put', key: enc.encode(`q/${i}`), value: enc.encode('v') }));
    let refused: unknown = null;
    try {
      await follower.propose({ op: 'put', key: enc.encode('q/over'), value: enc.encode('v') });
    } catch (e) {
      refused = e;
    }
    assert.ok(refused instanceof NodeError && refused.code === 'busy', `refused ${String(refused)}`);
    assert.equal(toApiError(refused).code, grpc.status.RESOURCE_EXHAUSTED);
    sender.release();
    const done = await Promise.all(queued);
    assert.ok(done.every((r) => r.ok));
    assert.equal(versionOf(await get(follower, 'q/over')), 0, 'the refused write was not applied');
  });

  it('never acknowledges a forwarded write that a leader change replaced', async () => {
    c = await startCluster();
    const leader = await c.leader();
    const fid = IDS.find((id) => id !== leader) as NodeId;
    const follower = c.nodes.get(fid) as Node;
    // The leader still takes Propose calls and appends, but its appends and heartbeats no longer leave it: the
    // others elect a new leader, whose entries take the indexes of what the old one appended.
    (c.senders.get(leader) as ForwardingSender).muted = true;
    const settled = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => follower.propose({ op: 'put', key: enc.encode(`w/${i}`), value: enc.encode('v') })),
    );
    (c.senders.get(leader) as ForwardingSender).muted = false;
    const next = await c.leader();
    assert.notEqual(next, leader);
    const n = c.nodes.get(next) as Node;
    let lost = 0;
    for (const [i, s] of settled.entries()) {
      const r = await get(n, `w/${i}`);
      assert.ok(r.ok);
      const g = r.responses?.[0];
      const kv = g?.op === 'get' ? g.kv : null;
      if (s.status === 'fulfilled') {
        // Acknowledged: applied once, at the index it was answered with (re-sent to the new leader after a refusal).
        assert.equal(kv?.version, 1, `w/${i} acknowledged at ${s.value.index} but not in the state`);
        assert.equal(kv?.modRevision, s.value.index);
        continue;
      }
      const e = s.reason as unknown;
      assert.ok(e instanceof NodeError && (e.code === 'lost' || e.code === 'timeout'), `failed with ${String(e)}`);
      if (e.code === 'lost') {
        lost++;
        assert.equal(kv, null, `w/${i} reported lost but applied`);
      }
    }
    assert.ok(lost > 0, 'the writes the old leader alone held are reported lost (not applied)');
    // The follower's writes go through afterwards.
    const after = await follower.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('v') });
    assert.ok(after.ok);
  });

});

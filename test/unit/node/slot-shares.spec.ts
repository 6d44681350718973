/**
 * The leader's slots are shared fairly. Reads (READ_SHARES): a member
 * forwarding reads (ReadIndex, as its certificate's member id) holds at most
 * its share of the leader's ReadIndex slots, refused RESOURCE_EXHAUSTED "busy"
 * beyond it; the leader's own clients are held to the same share. Writes
 * (WRITE_SHARES): a member forwarding its clients' writes (Propose) has at
 * most its share of the leader's write slots in flight, refused `busy`
 * beyond it; a follower holds its own forward queue to the same share. So
 * one member cannot starve the leader's own clients or the other members.
 * Three real Nodes on the in-memory transport; the read rounds (every
 * heartbeat answer's) or the append answers are held from the leader so
 * that reads stay waiting and writes in flight, then let go.
 */
import assert from 'node:assert/strict';

import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { NodeError } from '../../../src/node/errors.js';
import { Node, READ_SHARES, WRITE_SHARES } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import { until } from '../../harness/until.js';

const IDS = ['n1', 'n2', 'n3'] as const;
/** PENDING_READS: the core's read slots here; each source's share is PENDING_READS / READ_SHARES. */
const PENDING_READS = 40;
const SHARE = PENDING_READS / READ_SHARES;
/** PENDING_WRITES: the nodes' write slots; each member's share is PENDING_WRITES / WRITE_SHARES. */
const PENDING_WRITES = 40;
const WRITE_SHARE = PENDING_WRITES / WRITE_SHARES;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const put = (k: string): Uint8Array => encodeCommand({ op: 'put', key: enc(k), value: enc('v') });

describe('node: each member and the leader\'s own clients get a share of the leader\'s read and write slots', function () {
  this.timeout(30_000);
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];
  /** holdReads: heartbeat answers reach their leader without their read round: no read is confirmed. */
  let holdReads = false;
  /** holdAcks: append answers do not reach the leader: nothing commits. */
  let holdAcks = false;

  beforeEach(async () => {
    holdReads = false;
    holdAcks = false;
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const onMessage = (m: Message): void => {
        if (holdAcks && m.type === 'appendResp') return;
        ref.node?.receive(holdReads && m.type === 'heartbeatResp' ? { ...m, readSeq: 0 } : m);
      };
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: net.transport({ selfId: id, onMessage }),
        initialMembership: membership,
        timings: { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, readTimeoutMs: 10_000, proposalTimeoutMs: 20_000 },
        raft: { maxPendingReads: PENDING_READS },
        maxPendingProposals: PENDING_WRITES,
        clock: systemClock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
  });

  afterEach(async () => {
    holdReads = false;
    holdAcks = false;
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });

  /** leaderId: once every node names the same leader, that leader. */
  const leaderId = (): Promise<NodeId> =>
    until('a leader that every node knows', 10_000, () => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    });

  it('a member forwarding reads is refused RESOURCE_EXHAUSTED beyond its share; another member and the leader\'s clients are still served', async () => {
    const leader = await leaderId();
    const L = nodes.get(leader) as Node;
    const [greedy, other] = IDS.filter((id) => id !== leader) as [NodeId, NodeId];
    // A write of the leader's term is committed: reads are answered from here on.
    await L.propose({ op: 'put', key: new TextEncoder().encode('k'), value: new Uint8Array([1]) });
    holdReads = true;
    const term = L.brief().term;
    const ask = (from: NodeId, context: string): Promise<Message[]> => L.handleRequest({ type: 'readIndex', from, to: leader, term, context });

    // The greedy member asks for every slot the core has: it gets its share, the rest are refused at once.
    const asked = Array.from({ length: PENDING_READS }, (_, i) => ask(greedy, `${greedy}/x/${i}`));
    const refusals: (Error & { code?: unknown })[] = [];
    const greedyReads = asked.map((p) => p.catch((e: Error & { code?: unknown }) => (refusals.push(e), null)));
    await until('the reads beyond its share to be refused', 5_000, () => (refusals.length >= PENDING_READS - SHARE ? true : undefined));
    for (const e of refusals) {
      assert.equal(e.code, 8, e.message); // RESOURCE_EXHAUSTED
      assert.match(e.message, new RegExp(`^busy: ${greedy} has ${SHARE} reads waiting on ${leader}, its share`));
    }
    await assert.rejects(ask(greedy, `${greedy}/x/0`), (e: Error & { code?: unknown }) => e.code === 3 && /already waiting/.test(e.message));

    // The leader's own clients: their share too, and no more.
    const localReads = Array.from({ length: SHARE }, () => L.get(new TextEncoder().encode('k')));
    await assert.rejects(L.get(new TextEncoder().encode('k')), (e: unknown) => e instanceof NodeError && e.code === 'busy' && /share/.test(e.message));
    const otherRead = ask(other, `${other}/y/0`);

    holdReads = false;
    const answered = (await Promise.all([...greedyReads, otherRead])).filter((r) => r !== null);
    assert.equal(answered.length, SHARE + 1);
    assert.equal(refusals.length, PENDING_READS - SHARE);
    for (const r of answered) {
      const m = r[0];
      assert.ok(m?.type === 'readIndexResp', JSON.stringify(r));
      assert.equal(m.reject, false, `the read of ${m.to} was refused by the core`);
    }
    for (const v of await Promise.all(localReads)) assert.deepEqual(v, new Uint8Array([1]));
    // Once answered, the slots are free again.
    const again = await ask(greedy, `${greedy}/x/again`);
    assert.ok(again[0]?.type === 'readIndexResp' && !again[0].reject);
  });

  it('a member forwarding writes is refused busy beyond its share; another member and the leader\'s clients are still taken', async () => {
    const leader = await leaderId();
    const L = nodes.get(leader) as Node;
    const [greedy, other] = IDS.filter((id) => id !== leader) as [NodeId, NodeId];
    await L.propose({ op: 'put', key: enc('first'), value: enc('1') });
    holdAcks = true;
    const term = L.brief().term;
    const forward = (from: NodeId, keys: string[]) => L.proposeForwarded({ from, to: leader, term, data: keys.map(put) });

    // The greedy member forwards more than its share in one call: its share is appended, the rest refused.
    const first = forward(greedy, Array.from({ length: WRITE_SHARE + 5 }, (_, i) => `g/${i}`));
    await until('its share in flight', 5_000, () => (L.status().lastIndex >= 2 + WRITE_SHARE ? true : undefined));
    // A second call while those are in flight: refused at once, nothing appended.
    const second = await forward(greedy, ['g/again']);
    assert.deepEqual(second.outcomes, []);
    assert.equal(second.refused?.code, 'busy');
    assert.match(second.refused?.message ?? '', new RegExp(`${greedy} has ${WRITE_SHARE} forwarded writes in flight on the leader \\(at most ${WRITE_SHARE}, a member's share\\)`));
    // Another member and the leader's own clients are taken.
    const third = forward(other, ['o/0']);
    const own = L.propose({ op: 'put', key: enc('own'), value: enc('1') });

    holdAcks = false;
    const [a, c] = await Promise.all([first, third]);
    assert.equal(a.outcomes.length, WRITE_SHARE);
    assert.equal(a.refused?.code, 'busy', 'the entries past its share');
    assert.ok(a.outcomes.every((o) => 'result' in o), JSON.stringify(a.outcomes));
    assert.equal(c.outcomes.length, 1);
    assert.equal(c.refused, undefined);
    await own;
    // Settled: the share is free again.
    const again = await forward(greedy, ['g/later']);
    assert.equal(again.refused, undefined);
    assert.equal(again.outcomes.length, 1);
  });

  it('a follower holds its own forward queue to its share: an honest one is refused by itself, not by its leader', async () => {
    const leader = await leaderId();
    await (nodes.get(leader) as Node).propose({ op: 'put', key: enc('first'), value: enc('1') });
    const follower = nodes.get(IDS.find((id) => id !== leader) as NodeId) as Node;
    holdAcks = true;
    const writes = Array.from({ length: WRITE_SHARE }, (_, i) => follower.propose({ op: 'put', key: enc(`f/${i}`), value: enc('v') }));
    await assert.rejects(follower.propose({ op: 'put', key: enc('f/over'), value: enc('v') }), (e: unknown) => e instanceof NodeError && e.code === 'busy' && /this member's share/.test(e.message));
    holdAcks = false;
    await Promise.all(writes);
  });
});

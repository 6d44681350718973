/**
 * The leader's ReadIndex slots are shared fairly (READ_SHARES): a member
 * forwarding reads (ReadIndex, as its certificate's member id) holds at most
 * its share of them, refused RESOURCE_EXHAUSTED "busy" beyond it, so that it
 * cannot starve the leader's own clients or the other members; the leader's
 * own clients are held to the same share. Three real Nodes on the in-memory
 * transport; the read rounds are held (every heartbeat answer's read round is
 * hidden from the leader) so that reads stay waiting, then let go.
 */
import assert from 'node:assert/strict';

import { NodeError } from '../../../src/node/errors.js';
import { Node, READ_SHARES } from '../../../src/node/node.js';
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

describe('node: each member and the leader\'s own clients get a share of the leader\'s read slots', function () {
  this.timeout(30_000);
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];
  /** holdReads: heartbeat answers reach their leader without their read round: no read is confirmed. */
  let holdReads = false;

  beforeEach(async () => {
    holdReads = false;
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const onMessage = (m: Message): void => ref.node?.receive(holdReads && m.type === 'heartbeatResp' ? { ...m, readSeq: 0 } : m);
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: net.transport({ selfId: id, onMessage }),
        initialMembership: membership,
        timings: { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, readTimeoutMs: 10_000 },
        raft: { maxPendingReads: PENDING_READS },
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
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });

  it('a member forwarding reads is refused RESOURCE_EXHAUSTED beyond its share; another member and the leader\'s clients are still served', async () => {
    const leader = await until('a leader that every node knows', 10_000, () => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    });
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
});

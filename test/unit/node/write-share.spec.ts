/**
 * The leader's write slots are shared (WRITE_SHARES): a member forwarding
 * its clients' writes (Propose, as its certificate's member id) has at most
 * its share of them in flight on the leader, refused `busy` beyond it, so it
 * cannot starve the leader's own clients or the other members; a follower
 * holds its own forward queue to the same share. Three real Nodes on the
 * in-memory transport; the followers' append answers are held from the
 * leader (nothing commits) so that writes stay in flight, then let go.
 */
import assert from 'node:assert/strict';

import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { NodeError } from '../../../src/node/errors.js';
import { Node, WRITE_SHARES } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import { until } from '../../harness/until.js';

const IDS = ['n1', 'n2', 'n3'] as const;
/** PENDING: the nodes' write slots; each member's share is PENDING / WRITE_SHARES. */
const PENDING = 40;
const SHARE = PENDING / WRITE_SHARES;
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const put = (k: string): Uint8Array => encodeCommand({ op: 'put', key: enc(k), value: enc('v') });

describe('node: each member gets a share of the leader\'s write slots', function () {
  this.timeout(30_000);
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];
  /** holdAcks: append answers do not reach the leader: nothing commits. */
  let holdAcks = false;

  beforeEach(async () => {
    holdAcks = false;
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const onMessage = (m: Message): void => {
        if (holdAcks && m.type === 'appendResp') return;
        ref.node?.receive(m);
      };
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: net.transport({ selfId: id, onMessage }),
        initialMembership: membership,
        timings: { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, proposalTimeoutMs: 20_000 },
        maxPendingProposals: PENDING,
        clock: systemClock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
  });

  afterEach(async () => {
    holdAcks = false;
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });

  it('a member forwarding writes is refused busy beyond its share; another member and the leader\'s clients are still taken', async () => {
    const leader = await until('a leader that every node knows', 10_000, () => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    });
    const L = nodes.get(leader) as Node;
    const [greedy, other] = IDS.filter((id) => id !== leader) as [NodeId, NodeId];
    await L.propose({ op: 'put', key: enc('first'), value: enc('1') });
    holdAcks = true;
    const term = L.brief().term;
    const forward = (from: NodeId, keys: string[]) => L.proposeForwarded({ from, to: leader, term, data: keys.map(put) });

    // The greedy member forwards more than its share in one call: its share is appended, the rest refused.
    const first = forward(greedy, Array.from({ length: SHARE + 5 }, (_, i) => `g/${i}`));
    await until('its share in flight', 5_000, () => (L.status().lastIndex >= 2 + SHARE ? true : undefined));
    // A second call while those are in flight: refused at once, nothing appended.
    const second = await forward(greedy, ['g/again']);
    assert.deepEqual(second.outcomes, []);
    assert.equal(second.refused?.code, 'busy');
    assert.match(second.refused?.message ?? '', new RegExp(`${greedy} has ${SHARE} forwarded writes in flight on the leader \\(at most ${SHARE}, a member's share\\)`));
    // Another member and the leader's own clients are taken.
    const third = forward(other, ['o/0']);
    const own = L.propose({ op: 'put', key: enc('own'), value: enc('1') });

    holdAcks = false;
    const [a, c] = await Promise.all([first, third]);
    assert.equal(a.outcomes.length, SHARE);
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
    const leader = await until('a leader that every node knows', 10_000, () => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    });
    await (nodes.get(leader) as Node).propose({ op: 'put', key: enc('first'), value: enc('1') });
    const follower = nodes.get(IDS.find((id) => id !== leader) as NodeId) as Node;
    holdAcks = true;
    const writes = Array.from({ length: SHARE }, (_, i) => follower.propose({ op: 'put', key: enc(`f/${i}`), value: enc('v') }));
    await assert.rejects(follower.propose({ op: 'put', key: enc('f/over'), value: enc('v') }), (e: unknown) => e instanceof NodeError && e.code === 'busy' && /this member's share/.test(e.message));
    holdAcks = false;
    await Promise.all(writes);
  });
});

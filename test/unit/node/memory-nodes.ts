/**
 * memoryNodes: mocha hooks for tests of real Nodes on the in-memory
 * transport and storage: `start(ids, timings)` starts one Node per id of a
 * three-voter membership {n1, n2, n3} (ids not started are voters that never
 * run), each listening at mem:<id>, signing membership proofs with
 * `options.proofs` when given; after each test every one is closed and
 * stopped.
 */
import type { MembershipProofs } from '../../../src/node/membership-proofs.js';
import { Node, type NodeTimings } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Membership, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';

/** MEMORY_MEMBERSHIP: the membership memoryNodes' nodes start with. */
export const MEMORY_MEMBERSHIP: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:n1', n2: 'mem:n2', n3: 'mem:n3' } };

export interface MemoryNodes {
  readonly nodes: Map<NodeId, Node>;
  start(ids: readonly NodeId[], timings: Partial<NodeTimings>, options?: { readonly proofs?: (id: NodeId) => MembershipProofs }): Promise<void>;
}

export function memoryNodes(): MemoryNodes {
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });
  return {
    nodes,
    async start(ids, timings, options = {}) {
      const net = new MemoryNetwork();
      for (const id of ids) {
        const ref: { node: Node | null } = { node: null };
        const node = await Node.start({
          id,
          storage: await MemoryStorage.open(new MemoryDataDir(id)),
          transport: net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }),
          initialMembership: MEMORY_MEMBERSHIP,
          timings,
          clock: systemClock,
          rng: cryptoRng,
          ...(options.proofs !== undefined ? { membershipProofs: options.proofs(id) } : {}),
        });
        ref.node = node;
        nodes.set(id, node);
        closers.push(net.listen(`mem:${id}`, node));
      }
    },
  };
}

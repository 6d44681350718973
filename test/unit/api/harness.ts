/**
 * TestCluster: N in-process Nodes (MemoryStorage) with the real GrpcTransport
 * and real API servers on 127.0.0.1:0. The servers are bound first (to learn
 * their ports), then the nodes are built with a membership naming those ports.
 */
import assert from 'node:assert/strict';

import { ClusterClient } from '../../../src/client/cluster-client.js';
import { KvClient } from '../../../src/client/kv-client.js';
import { bindApiServer, type ApiServer, type BindOptions } from '../../../src/api/server.js';
import { Node } from '../../../src/node/node.js';
import type { Membership } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { until } from '../../harness/until.js';

export interface TestMember {
  readonly id: string;
  readonly address: string;
  readonly api: ApiServer;
  readonly node: Node;
  readonly kv: KvClient;
  readonly cluster: ClusterClient;
}

export interface TestCluster {
  readonly members: readonly TestMember[];
  member(id: string): TestMember;
  /** waitForLeader resolves with the member every node agrees leads (bounded by timeoutMs). */
  waitForLeader(timeoutMs?: number): Promise<TestMember>;
  followers(leaderId: string): TestMember[];
  stop(): Promise<void>;
}

export async function startTestCluster(size = 3): Promise<TestCluster> {
  const ids = Array.from({ length: size }, (_, i) => `n${i + 1}`);
  const apis: ApiServer[] = [];
  const members: TestMember[] = [];
  const stop = async (): Promise<void> => {
    for (const m of members) {
      m.kv.close();
      m.cluster.close();
    }
    await Promise.all(apis.map((a) => a.close(500)));
    await Promise.all(members.map((m) => m.node.stop()));
  };
  try {
    for (let i = 0; i < size; i++) apis.push(await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' }));
    const addresses = Object.fromEntries(ids.map((id, i) => [id, (apis[i] as ApiServer).peerAddress]));
    const membership: Membership = { voters: ids, learners: [], addresses };
    for (let i = 0; i < size; i++) {
      const id = ids[i] as string;
      const api = apis[i] as ApiServer;
      const ref: { node: Node | null } = { node: null };
      const transport = new GrpcTransport({ selfId: id, onMessage: (m) => ref.node?.receive(m), dial: peerDial('snapcoord', api.address) });
      const node = await Node.start({
        clock: systemClock,
        rng: cryptoRng,
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport,
        initialMembership: membership,
      });
      ref.node = node;
      api.serve({ node });
      members.push({ id, address: api.address, api, node, kv: new KvClient(api.address), cluster: new ClusterClient(api.address) });
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const member = (id: string): TestMember => {
    const m = members.find((x) => x.id === id);
    if (m === undefined) throw new Error(`no member ${id}`);
    return m;
  };
  return {
    members,
    member,
    async waitForLeader(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const leaders = new Set(members.map((m) => m.node.status().leader));
        const [only] = [...leaders];
        if (leaders.size === 1 && only !== undefined && only !== '' && member(only).node.status().role === 'leader') {
          return member(only);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`no agreed leader within ${timeoutMs} ms`);
    },
    followers(leaderId: string) {
      return members.filter((m) => m.id !== leaderId);
    },
    stop,
  };
}

/**
 * assertSameStateEverywhere: every member of `cluster`, once at the leader's
 * applied index (each waits at most 3 s), hashes the same state (HashState:
 * reserved records such as sessions and key revisions included).
 */
export async function assertSameStateEverywhere(cluster: TestCluster): Promise<void> {
  const leader = await cluster.waitForLeader();
  const target = leader.node.status().applied;
  for (const m of cluster.members) {
    for (let i = 0; i < 300 && m.node.status().applied < target; i++) await new Promise((res) => setTimeout(res, 10));
  }
  const hashes = await Promise.all(cluster.members.map((m) => m.cluster.hashState()));
  assert.equal(new Set(hashes.map((h) => h.appliedIndex)).size, 1, 'all nodes at one applied index');
  assert.equal(new Set(hashes.map((h) => h.sha256)).size, 1, 'all nodes hold the same state (reserved records included)');
  assert.match(hashes[0]?.sha256 ?? '', /^[0-9a-f]{64}$/);
}

/** serveSolo starts a one-node cluster (n1, in memory) behind `api` and resolves once it leads. */
export async function serveSolo(api: ApiServer): Promise<Node> {
  const ref: { node: Node | null } = { node: null };
  const node = await Node.start({
    clock: systemClock,
    rng: cryptoRng,
    id: 'n1',
    storage: await MemoryStorage.open(new MemoryDataDir('n1')),
    transport: new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m), dial: peerDial('snapcoord', api.address) }),
    initialMembership: { voters: ['n1'], learners: [], addresses: { n1: api.peerAddress } },
  });
  ref.node = node;
  api.serve({ node });
  await until('n1 to lead', 10_000, () => (node.status().role === 'leader' ? true : undefined));
  return node;
}

/** SoloServer: what soloServer's hooks start, read by the tests of its describe once its before hook ran. */
export interface SoloServer {
  readonly api: ApiServer;
  /** node: n1 serving behind api, leading (serveSolo); none when soloServer was told `{ node: false }`. */
  readonly node: Node;
}

/**
 * soloServer registers, in the describe that calls it, a before hook that
 * binds an ApiServer with `options` on 127.0.0.1:0 (both planes) and starts
 * a one-node cluster behind it (serveSolo; `{ node: false }`: no node, the
 * server alone), and an after hook that closes the server (100 ms grace) and
 * stops the node. Reading api or node before the before hook ran (or node
 * with `{ node: false }`) throws.
 */
export function soloServer(options: Omit<BindOptions, 'bindAddress' | 'peerBindAddress'>, what: { readonly node?: boolean } = {}): SoloServer {
  let api: ApiServer | undefined;
  let node: Node | undefined;
  before(async () => {
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', ...options });
    if (what.node !== false) node = await serveSolo(api);
  });
  after(async () => {
    await api?.close(100);
    await node?.stop();
  });
  return {
    get api(): ApiServer {
      if (api === undefined) throw new Error('soloServer: the server is not bound (its before hook has not run)');
      return api;
    },
    get node(): Node {
      if (node === undefined) throw new Error(what.node === false ? 'soloServer: started with no node' : 'soloServer: the node is not started (its before hook has not run)');
      return node;
    },
  };
}

/**
 * Membership proofs against real nodes over mutual TLS (src/node/membership-proofs.ts, src/tls/membership-proof.ts):
 * a member that was down while a member was added and the other voters it knows were removed and lost is vouched for
 * the new member by its signed configuration chain, and the two make the quorum they are: a write commits. Without
 * proofs no voter of its configuration can answer and no leader is ever elected (the campaign's seeds 2442, 3134).
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, memberChannelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { X509MembershipProofs } from '../../../src/tls/membership-proof.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial, type PeerCall, type RefusalReason } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';

const CLUSTER = 'proof-test';
const VOTERS = ['n1', 'n2', 'n3'];
const text = new TextEncoder();

interface Member {
  readonly id: string;
  readonly api: ApiServer;
  readonly node: Node;
  readonly refusals: RefusalReason[];
}

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

describe('membership proofs: a member whose known voters are all gone follows the newest configuration (real nodes, mutual TLS)', function () {
  this.timeout(120_000);
  let dir: string;
  const members = new Map<string, Member>();
  const stopped = new Set<string>();
  const dataDirs = new Map<string, MemoryDataDir>();

  async function start(id: string, api: ApiServer, membership: Membership): Promise<Member> {
    const ca = caFiles(dir).caFile;
    const f = nodeCertFiles(dir, id);
    const ref: { node: Node | null } = { node: null };
    const creds = memberChannelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile });
    // As serve dials: per-member credentials, and calls that advertise this node's peer address.
    const transport = new GrpcTransport({ selfId: id, onMessage: (m) => ref.node?.receive(m), dial: peerDial(CLUSTER, api.address, creds.any, (to) => creds.forMember(to), api.peerAddress) });
    const data = dataDirs.get(id) ?? new MemoryDataDir(id);
    dataDirs.set(id, data);
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id,
      storage: await MemoryStorage.open(data),
      transport,
      initialMembership: membership,
      timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 },
      membershipProofs: new X509MembershipProofs({ clusterId: CLUSTER, selfId: id, certFile: f.certFile, keyFile: f.keyFile, caFile: ca }),
    });
    ref.node = node;
    const refusals: RefusalReason[] = [];
    api.serve({ node, clusterId: CLUSTER, identityOf, onPeerRefused: (r) => refusals.push(r) });
    const m = { id, api, node, refusals };
    members.set(id, m);
    stopped.delete(id);
    return m;
  }

  async function bind(id: string, peerPort = 0): Promise<ApiServer> {
    const f = nodeCertFiles(dir, id);
    return bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: `127.0.0.1:${peerPort}`, peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: caFiles(dir).caFile, requireClientCert: true }) });
  }

  async function stop(m: Member): Promise<void> {
    stopped.add(m.id);
    await m.api.close(0);
    await m.node.stop();
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-proof-vouch-'));
    await writeCa(dir);
    for (const id of [...VOTERS, 'n4']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
  });

  after(async () => {
    const live = [...members.values()].filter((m) => !stopped.has(m.id));
    await Promise.all(live.map((m) => m.api.close(200)));
    await Promise.all(live.map((m) => m.node.stop()));
    members.clear();
    await rm(dir, { recursive: true, force: true });
  });

  it('B, down while n4 was added and A removed, restarts after the leader is lost: B and n4 elect a leader and commit', async () => {
    const apis = new Map<string, ApiServer>();
    for (const id of VOTERS) apis.set(id, await bind(id));
    const addresses = Object.fromEntries(VOTERS.map((id) => [id, (apis.get(id) as ApiServer).peerAddress]));
    for (const id of VOTERS) await start(id, apis.get(id) as ApiServer, { voters: VOTERS, learners: [], addresses });
    const leader = await until('a leader', 15_000, () => [...members.values()].find((m) => m.node.status().role === 'leader'));
    await leader.node.propose({ op: 'put', key: text.encode('k/before'), value: text.encode('v') });
    const [a, b] = VOTERS.filter((id) => id !== leader.id).map((id) => members.get(id) as Member) as [Member, Member];
    const bPeerPort = Number(b.api.peerAddress.split(':').pop());
    await stop(b); // B misses everything below
    const n4api = await bind('n4');
    const n4 = await start('n4', n4api, { voters: VOTERS, learners: ['n4'], addresses: { ...addresses, n4: n4api.peerAddress } });
    await leader.node.changeMembership({ op: 'addLearner', nodeId: 'n4', address: n4api.peerAddress });
    await until('n4 to catch up', 20_000, () => (n4.node.status().applied >= leader.node.status().commit ? true : undefined));
    await leader.node.changeMembership({ op: 'addVoter', nodeId: 'n4', address: n4api.peerAddress });
    await leader.node.changeMembership({ op: 'removeNode', nodeId: a.id });
    await until('n4 to apply A\'s removal', 20_000, () => (n4.node.status().membership.voters.includes(a.id) ? undefined : true));
    assert.deepEqual([...n4.node.status().membership.voters].sort(), [leader.id, b.id, 'n4'].sort());
    await stop(a); // removed
    await stop(leader); // lost for good
    // B comes back where the others know it, knowing only {n1, n2, n3}: its other voters are gone.
    const b2 = await start(b.id, await bind(b.id, bPeerPort), { voters: VOTERS, learners: [], addresses });
    assert.ok(b2.node.status().membership.voters.includes(a.id), 'B restarted on its old configuration');
    const next = await until('a leader of {B, n4}', 40_000, () => [b2, n4].find((m) => m.node.status().role === 'leader'));
    await next.node.propose({ op: 'put', key: text.encode('k/after'), value: text.encode('w') });
    await until('B to apply the write', 20_000, () => (b2.node.status().applied >= next.node.status().commit ? true : undefined));
    assert.equal(new TextDecoder().decode(await b2.node.get(text.encode('k/after'), true)), 'w');
    assert.ok(b2.refusals.includes('unvouched'), 'B refused n4 until its proofs vouched for it');
  });
});

/**
 * A removed member's still-valid certificate against a member that missed its removal, over real gRPC and mutual TLS
 * (review24's reproduction, branch removed-cert-repro, 4ae8e127, made a test). n1 was away while n3 was removed: its
 * configuration ({n1, n2, n3, n4}, the bootstrap's) still names n3, so its peer plane admits n3's certificate
 * (vouching is for senders it does not name; no --peer-crl here). n1 cannot be reached by the leader (the others dial
 * it at an address where nothing listens), but it reaches the voters n2 and n4. On main, n3's certificate alone made
 * n1 take n3 as the leader of a later term and apply a forged write within ~0.5 s (review24: with n2 down). Now n1
 * asks the voters of its configuration (src/node/removal-news.ts) when it campaigns (as it does, led by nobody) and
 * when a member it names claims to lead: n2 and n4 hold committed a configuration without n3, so n3's messages are
 * refused and n1 never applies the forged write. (Where n1 reaches no voter but n3, nothing tells it: the CRL.)
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, channelCredentialsFromFiles, memberChannelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { CLUSTER_ID_METADATA_KEY, peerDial, type PeerCall } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';
import { sendAppend } from './tls-members.js';

const CLUSTER = 'removed-cert';
const text = new TextEncoder();
/** NOBODY: addresses where nothing listens (port 1 and 2 of loopback: privileged, unused). */
const NOBODY = ['127.0.0.1:1', '127.0.0.1:2'] as const;

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

interface Member {
  readonly id: string;
  readonly api: ApiServer;
  readonly node: Node;
}

describe('a removed member\'s still-valid certificate against a member that missed its removal (real nodes, mutual TLS)', function () {
  this.timeout(60_000);
  let dir: string;
  const live: Member[] = [];

  async function bind(id: string): Promise<ApiServer> {
    const f = nodeCertFiles(dir, id);
    return bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: caFiles(dir).caFile, requireClientCert: true }) });
  }

  async function start(id: string, api: ApiServer, membership: Membership): Promise<Member> {
    const ca = caFiles(dir).caFile;
    const f = nodeCertFiles(dir, id);
    const ref: { node: Node | null } = { node: null };
    const creds = memberChannelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile });
    const transport = new GrpcTransport({ selfId: id, onMessage: (m) => ref.node?.receive(m), dial: peerDial(CLUSTER, api.address, creds.any, (to) => creds.forMember(to)) });
    const node = await Node.start({ clock: systemClock, rng: cryptoRng, id, storage: await MemoryStorage.open(new MemoryDataDir(id)), transport, initialMembership: membership, timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 } });
    ref.node = node;
    api.serve({ node, clusterId: CLUSTER, identityOf });
    const m = { id, api, node };
    live.push(m);
    return m;
  }

  async function stop(m: Member): Promise<void> {
    live.splice(live.indexOf(m), 1);
    await m.api.close(0);
    await m.node.stop();
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-removed-'));
    await writeCa(dir);
    for (const id of ['n1', 'n2', 'n3', 'n4']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
  });

  afterEach(async () => {
    for (const m of [...live]) await stop(m).catch(() => undefined);
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * removeN3: n2, n3 and n4 run the cluster (n1 a voter they cannot reach), n3 is removed (committed on n2 and n4)
   * and stopped; then n1 starts on the bootstrap's configuration, which still names n3.
   */
  async function removeN3(): Promise<Member> {
    const apis = new Map<string, ApiServer>();
    for (const id of ['n1', 'n2', 'n3', 'n4']) apis.set(id, await bind(id));
    const at = (id: string): string => (apis.get(id) as ApiServer).peerAddress;
    // The cluster as n2, n3 and n4 run it: n1 is a voter they cannot reach.
    const theirs: Membership = { voters: ['n1', 'n2', 'n3', 'n4'], learners: [], addresses: { n1: NOBODY[0], n2: at('n2'), n3: at('n3'), n4: at('n4') } };
    const members: Member[] = [];
    for (const id of ['n2', 'n3', 'n4']) members.push(await start(id, apis.get(id) as ApiServer, theirs));
    const leader = await until('a leader among n2, n3, n4', 20_000, () => members.find((m) => m.node.status().role === 'leader'));
    if (leader.id === 'n3') await leader.node.transferLeadership('n2', 10_000);
    const lead = await until('n2 or n4 leads', 20_000, () => members.find((m) => m.id !== 'n3' && m.node.status().role === 'leader'));
    await until('n3 removed', 20_000, () => lead.node.changeMembership({ op: 'removeNode', nodeId: 'n3' }).then(() => true));
    await lead.node.propose({ op: 'put', key: text.encode('k/real'), value: text.encode('v') });
    const removedAt = lead.node.status().commit;
    await until('n2 and n4 hold the removal committed', 10_000, () => (members.every((m) => m.id === 'n3' || m.node.status().commit >= removedAt) ? true : undefined));
    await stop(members.find((m) => m.id === 'n3') as Member);
    // n1 missed all of it: its configuration is the bootstrap's and still names n3 (at an address nobody serves now).
    return start('n1', apis.get('n1') as ApiServer, { voters: ['n1', 'n2', 'n3', 'n4'], learners: [], addresses: { n1: at('n1'), n2: at('n2'), n3: NOBODY[1], n4: at('n4') } });
  }

  /** attack sends n3's forged append to n1 with n3's certificate every 50 ms until n1 applies it or `ms` pass; the appends sent. */
  async function attack(n1: Member, ms: number): Promise<number> {
    const ca = caFiles(dir).caFile;
    const cert = nodeCertFiles(dir, 'n3');
    const c = new RaftServiceClient(n1.api.peerAddress, channelCredentialsFromFiles({ caFile: ca, certFile: cert.certFile, keyFile: cert.keyFile }), { 'grpc.use_local_subchannel_pool': 1 });
    let sent = 0;
    try {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline && (await forgedOn(n1)) === '') {
        const st = n1.node.status();
        const term = st.term + 1;
        const data = encodeCommand({ op: 'put', key: text.encode('k/forged'), value: text.encode('forged by removed n3') });
        // prevLogIndex 0: n1's log is empty; the forged entry is entry 1, with a `base` naming n3's chosen membership.
        const msg: Message = { type: 'append', from: 'n3', to: 'n1', term, prevLogIndex: 0, prevLogTerm: 0, commit: 1, entries: [{ index: 1, term, type: 'normal', data }], base: { voters: ['n1', 'n3'], learners: [], addresses: {} } };
        await sendAppend(c, CLUSTER, msg as Message & { type: 'append' });
        sent++;
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      c.close();
    }
    return sent;
  }

  /** getMembershipAs: one GetMembership call to `to` with member `as`'s certificate: its status code and details. */
  async function getMembershipAs(as: string, to: Member): Promise<{ code: number; details: string }> {
    const cert = nodeCertFiles(dir, as);
    const c = new RaftServiceClient(to.api.peerAddress, channelCredentialsFromFiles({ caFile: caFiles(dir).caFile, certFile: cert.certFile, keyFile: cert.keyFile }), { 'grpc.use_local_subchannel_pool': 1 });
    const md = new grpc.Metadata();
    md.set(CLUSTER_ID_METADATA_KEY, CLUSTER);
    try {
      return await new Promise((resolve) =>
        c.getMembership({ from: as, to: to.id, probeIndex: 0n }, md, { deadline: Date.now() + 5_000 }, (err) => resolve(err === null ? { code: grpc.status.OK, details: '' } : { code: err.code, details: err.details })),
      );
    } finally {
      c.close();
    }
  }

  function forgedOn(n1: Member): Promise<string> {
    return n1.node.get(text.encode('k/forged'), true).then((v) => (v === undefined ? '' : new TextDecoder().decode(v)));
  }

  it('n1 asks the voters it reaches, learns n3 was removed, and never applies n3\'s forged write (on main it did within ~0.5 s)', async () => {
    const n1 = await removeN3();
    // The attacker comes once n1 has gone without a leader (cut off from it): n1's campaigns asked n2 and n4.
    await until('n1 to learn from n2 or n4 that n3 was removed', 20_000, () => (n1.node.reportedRemoved('n3') ? true : undefined));

    const sent = await attack(n1, 6_000);
    const news = n1.node.removalNewsStats();
    assert.equal(await forgedOn(n1), '', `n1 applied the removed member's forged write (status ${JSON.stringify({ leader: n1.node.status().leader, term: n1.node.status().term })}, ${JSON.stringify(news)})`);
    assert.ok(sent > 10, `the attacker kept at it (${sent} appends)`);
    assert.ok(n1.node.reportedRemoved('n3'), 'n1 learned that n3 was removed');
    assert.ok((news?.refused ?? 0) > 0, `n3 refused as removed (${JSON.stringify(news)})`);
    assert.notEqual(n1.node.status().leader, 'n3');
    assert.equal(news?.leadershipHeld, false, 'n1\'s own log is the cluster\'s (empty)');
    // n3's other peer calls are refused with the same reason while the report stands (PeerGuard's reportedRemoved):
    // GetMembership (and snapshot and state image fetches, archive staging, read indexes, forwarded writes) was served.
    const asked = await getMembershipAs('n3', n1);
    assert.equal(asked.code, grpc.status.PERMISSION_DENIED, `n3's GetMembership was answered (${JSON.stringify(asked)})`);
    assert.match(asked.details, /refused: n3 was removed from this cluster: voters of this node's configuration \(n[24](, n[24])?\) hold committed configurations/);
    const member = await getMembershipAs('n2', n1);
    assert.equal(member.code, grpc.status.OK, `a member's question is answered (${JSON.stringify(member)})`);
  });

});

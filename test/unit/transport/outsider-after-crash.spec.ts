/**
 * review23: a certificate of an id the configuration does not name (n9: a removed member's on a node restarted since,
 * one never added) against real nodes over mutual TLS once their leader crashed. Its Raft messages reach the core
 * (peer-guard.ts, scope 'message'); the voters left must elect one of them, not follow it.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, channelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial, type PeerCall } from '../../../src/transport/peer-guard.js';
import { sendAppend } from './tls-members.js';

const CLUSTER = 'outsider-test';
const IDS = ['n1', 'n2', 'n3'];
const text = new TextEncoder();

interface Member {
  readonly id: string;
  readonly api: ApiServer;
  readonly node: Node;
}

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

describe('an outsider\'s certificate after the leader crashed (real nodes, mutual TLS; review23)', function () {
  this.timeout(60_000);
  let dir: string;
  let members: Member[] = [];
  const stopped = new Set<string>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-outsider-'));
    await writeCa(dir);
    for (const id of [...IDS, 'n9']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
    const ca = caFiles(dir).caFile;
    const apis: ApiServer[] = [];
    for (const id of IDS) {
      const f = nodeCertFiles(dir, id);
      apis.push(await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: ca, requireClientCert: true }) }));
    }
    const membership: Membership = { voters: IDS, learners: [], addresses: Object.fromEntries(IDS.map((id, i) => [id, (apis[i] as ApiServer).peerAddress])) };
    for (const [i, id] of IDS.entries()) {
      const api = apis[i] as ApiServer;
      const f = nodeCertFiles(dir, id);
      const ref: { node: Node | null } = { node: null };
      const transport = new GrpcTransport({ selfId: id, onMessage: (m) => ref.node?.receive(m), dial: peerDial(CLUSTER, api.address, channelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile })) });
      const node = await Node.start({ clock: systemClock, rng: cryptoRng, id, storage: await MemoryStorage.open(new MemoryDataDir(id)), transport, initialMembership: membership, timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 } });
      ref.node = node;
      api.serve({ node, clusterId: CLUSTER, identityOf });
      members.push({ id, api, node });
    }
  });

  after(async () => {
    const live = members.filter((m) => !stopped.has(m.id));
    await Promise.all(live.map((m) => m.api.close(200)));
    await Promise.all(live.map((m) => m.node.stop()));
    members = [];
    await rm(dir, { recursive: true, force: true });
  });

  async function stableLeader(among: Member[]): Promise<Member> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const leader = among.find((m) => m.node.status().role === 'leader');
      if (leader !== undefined && among.every((m) => m.node.status().leader === leader.id && m.node.status().commit === leader.node.status().lastIndex)) return leader;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no stable leader among ${among.map((m) => m.id).join(', ')}`);
  }


  it('its appends of the next term, sent to each voter left from the crash on, are taken by neither: no forged write applied (before, each applied its own, the replicas split), and they elect one of them', async () => {
    const leader = await stableLeader(members);
    const left = members.filter((m) => m !== leader);
    const { term, lastIndex } = (left[0] as Member).node.status();
    stopped.add(leader.id);
    await leader.api.close(0);
    await leader.node.stop();
    const ca = caFiles(dir).caFile;
    const cert = nodeCertFiles(dir, 'n9');
    const clients = left.map((m) => ({ m, c: new RaftServiceClient(m.api.peerAddress, channelCredentialsFromFiles({ caFile: ca, certFile: cert.certFile, keyFile: cert.keyFile, checkChain: false }), { 'grpc.use_local_subchannel_pool': 1 }) }));
    let sent = 0;
    try {
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && !left.some((m) => m.node.status().role === 'leader')) {
        for (const { m, c } of clients) {
          if (m.node.status().term > term) continue;
          const data = encodeCommand({ op: 'put', key: text.encode('k/forged'), value: text.encode(`forged for ${m.id}`) });
          await sendAppend(c, CLUSTER, { type: 'append', from: 'n9', to: m.id, term: term + 1, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term: term + 1, type: 'normal', data }] });
          sent++;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      for (const { c } of clients) c.close();
    }
    assert.ok(sent > 0);
    const next = await stableLeader(left);
    const dec = new TextDecoder();
    const seen = await Promise.all(left.map(async (m) => `${m.id}: ${dec.decode((await m.node.get(text.encode('k/forged'), true)) ?? new Uint8Array(0))}`));
    assert.deepEqual(seen, left.map((m) => `${m.id}: `), 'no forged write applied');
    assert.ok(left.includes(next));
  });
});

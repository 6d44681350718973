import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, channelCredentialsFromFiles, memberChannelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, type PeerCrl } from '../../../src/tls/index.js';
import { appendRequestToProto } from '../../../src/transport/codec.js';
import { RAFT_SERVICE_DEFINITION } from '../../../src/transport/fetch-serializer.js';
import { askMembership, GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import type { RaftRequestHandler } from '../../../src/transport/transport.js';
import { certificateRevocation, CLUSTER_ID_METADATA_KEY, peerDial, type PeerCall, type PeerDial, type RefusalReason } from '../../../src/transport/peer-guard.js';
import { callWhoAmI, crlFixture, show, startServer, type CrlFixture } from '../tls/helpers.js';

const CLUSTER = 'revoked-cert';
const text = new TextEncoder();

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

/**
 * review24's reproduction (4ae8e127), with the fix: member n1 missed n3's removal (its configuration still
 * names n3), n2 (the real leader) is out of reach. n3's certificate, still valid but revoked in the CRL n1 is
 * given (--peer-crl), no longer makes n1 follow n3: each call is refused 'revoked' when it opens, nothing is
 * applied. Without the CRL check n1 applied "forged by removed n3" within ~0.5 s. n2's certificate (not
 * revoked) is still followed. Real gRPC, mutual TLS.
 */
describe('a removed member\'s certificate revoked by --peer-crl (real node, mutual TLS)', function () {
  this.timeout(60_000);
  let fx: CrlFixture;
  let dir: string;
  let api: ApiServer;
  let node: Node;
  let crl: PeerCrl;
  const refusals: RefusalReason[] = [];

  before(async () => {
    fx = await crlFixture('snapcoord-revoked-', ['n1', 'n2', 'n3'], { revoked: ['n3'] });
    ({ dir, crl } = fx);
    const ca = fx.caFile;
    const f = nodeCertFiles(dir, 'n1');
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: ca, requireClientCert: true }) });
    const ref: { node: Node | null } = { node: null };
    const creds = memberChannelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile, revocation: crl });
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m), dial: peerDial(CLUSTER, api.address, creds.any, (to) => creds.forMember(to)) });
    const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: api.peerAddress, n2: '127.0.0.1:1', n3: '127.0.0.1:2' } };
    node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage: await MemoryStorage.open(new MemoryDataDir('n1')), transport, initialMembership: membership, timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 } });
    ref.node = node;
    api.serve({ node, clusterId: CLUSTER, identityOf, peerRevocation: certificateRevocation((s) => crl.isRevoked(s)), onPeerRefused: (r) => refusals.push(r) });
  });

  after(async () => {
    await api.close(200);
    await node.stop();
    await fx.close();
  });

  const read = (key: string): Promise<string> => node.get(text.encode(key), true).then((v) => (v === undefined ? '' : new TextDecoder().decode(v)));

  function appendAs(id: string, key: string, value: string): Promise<string> {
    const ca = caFiles(dir).caFile;
    const cert = nodeCertFiles(dir, id);
    const c = new RaftServiceClient(api.peerAddress, channelCredentialsFromFiles({ caFile: ca, certFile: cert.certFile, keyFile: cert.keyFile }), { 'grpc.use_local_subchannel_pool': 1 });
    const st = node.status();
    const term = st.term + 1;
    const index = st.lastIndex + 1;
    const data = encodeCommand({ op: 'put', key: text.encode(key), value: text.encode(value) });
    const msg: Message = { type: 'append', from: id, to: 'n1', term, prevLogIndex: st.lastIndex, prevLogTerm: st.lastIndex === 0 ? 0 : st.term, commit: index, entries: [{ index, term, type: 'normal', data }], ...(st.lastIndex === 0 ? { base: { voters: ['n1', id], learners: [], addresses: {} } } : {}) };
    const md = new grpc.Metadata();
    md.set(CLUSTER_ID_METADATA_KEY, CLUSTER);
    return new Promise((resolve) => {
      const call = c.appendEntries(md, { deadline: Date.now() + 2_000 });
      call.on('data', () => undefined);
      call.on('error', (e: grpc.ServiceError) => {
        c.close();
        resolve(`${grpc.status[e.code]}: ${e.details}`);
      });
      call.on('end', () => {
        c.close();
        resolve('ok');
      });
      call.write(appendRequestToProto(msg as Message & { type: 'append' }));
      call.end();
    });
  }

  it('n3\'s revoked certificate is refused at call open: nothing it forges is applied', async () => {
    let last = '';
    const deadline = Date.now() + 3_000;
    while (Date.now() < deadline) {
      last = await appendAs('n3', 'k/forged', 'forged by removed n3');
      assert.equal(await read('k/forged'), '', 'n1 applied the removed member\'s forged write');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(last, /PERMISSION_DENIED: refused: the certificate of n3 \(serial [0-9a-f]+\) is revoked/);
    assert.ok(refusals.includes('revoked'), `refusals: ${refusals.join(',')}`);
    assert.equal(node.status().leader === 'n3', false);
  });

  it('n2\'s certificate (not revoked) is still followed: its append is applied', async () => {
    const deadline = Date.now() + 8_000;
    while (Date.now() < deadline && (await read('k/real')) === '') {
      await appendAs('n2', 'k/real', 'from the real leader n2');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await read('k/real'), 'from the real leader n2');
    assert.equal(node.status().leader, 'n2');
  });

  it('outgoing: a channel to a member whose server certificate the CRL revokes fails, naming the revocation', async () => {
    const ca = caFiles(dir).caFile;
    const n1 = nodeCertFiles(dir, 'n1');
    const n3 = nodeCertFiles(dir, 'n3');
    const server = await startServer(serverCredentialsFromFiles({ certFile: n3.certFile, keyFile: n3.keyFile, caFile: ca, requireClientCert: true }));
    try {
      const plain = memberChannelCredentialsFromFiles({ caFile: ca, certFile: n1.certFile, keyFile: n1.keyFile });
      const r0 = await callWhoAmI(server.port, plain.forMember('n3'));
      assert.equal(typeof r0, 'string', `without the CRL the call goes through: ${show(r0)}`);
      const revoking = memberChannelCredentialsFromFiles({ caFile: ca, certFile: n1.certFile, keyFile: n1.keyFile, revocation: crl });
      for (const creds of [revoking.forMember('n3'), revoking.any]) {
        const r = await callWhoAmI(server.port, creds);
        assert.notEqual(typeof r, 'string', `a revoked server was answered: ${show(r)}`);
        assert.match(show(r), /UNAVAILABLE: .*certificate \(serial [0-9a-f]+\) is revoked by the CRL/);
      }
      assert.equal(server.handled, 1);
    } finally {
      await server.close();
    }
  });
});

/**
 * A connection made before a member's certificate was revoked must not outlive the revocation: serve calls
 * GrpcTransport.reconnect when its --peer-crl changes, and the new handshake fails on the revoked certificate,
 * so that member's answers (vote grants here) stop reaching this node.
 */
describe('GrpcTransport.reconnect after a CRL change: a removed member\'s grants stop at once (real gRPC, mutual TLS)', function () {
  this.timeout(30_000);
  let fx: CrlFixture;
  let dir: string;
  let server: grpc.Server;
  let transport: GrpcTransport;
  let dial: PeerDial;
  let crl: PeerCrl;
  const answers: Message[] = [];

  before(async () => {
    fx = await crlFixture('snapcoord-revoked-reconnect-', ['n1', 'n3'], { refreshMs: 60_000 });
    ({ dir, crl } = fx);
    const ca = fx.caFile;
    // n3: removed, still running, granting every vote asked of it.
    const n3 = nodeCertFiles(dir, 'n3');
    server = new grpc.Server();
    const handler: RaftRequestHandler = {
      handleRequest: (m) => Promise.resolve(m.type === 'vote' ? [{ type: 'voteResp', from: 'n3', to: m.from, term: m.term, preVote: m.preVote, granted: true }] : []),
      handleReport: () => undefined,
      membershipFor: () => ({ from: 'n3', term: 1, membership: { voters: ['n1', 'n3'], learners: [], addresses: {} }, membershipIndex: 1, commitIndex: 1 }),
    };
    server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler, { selfId: 'n3' }));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentialsFromFiles({ certFile: n3.certFile, keyFile: n3.keyFile, caFile: ca, requireClientCert: true }), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
    const n1 = nodeCertFiles(dir, 'n1');
    const creds = memberChannelCredentialsFromFiles({ caFile: ca, certFile: n1.certFile, keyFile: n1.keyFile, revocation: crl });
    dial = peerDial(CLUSTER, '127.0.0.1:1', creds.any, (to) => creds.forMember(to));
    transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => answers.push(m), dial });
    transport.setPeers({ n1: '127.0.0.1:1', n3: `127.0.0.1:${port}` });
  });

  after(async () => {
    await transport.close();
    server.forceShutdown();
    await fx.close();
  });

  async function grantsFor(term: number, waitMs: number): Promise<number> {
    transport.send({ type: 'vote', from: 'n1', to: 'n3', term, preVote: false, lastLogIndex: 0, lastLogTerm: 0 } as Message);
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && !answers.some((a) => a.type === 'voteResp' && a.term === term)) await new Promise((r) => setTimeout(r, 20));
    return answers.filter((a) => a.type === 'voteResp' && a.term === term).length;
  }

  it('an answer to GetMembership carries the serial of the certificate n3 presented (what removal news drops once the CRL revokes it), over the peer channel and over one of its own', async () => {
    const serial = await fx.serialOf('n3');
    const a = await transport.askMembership({ from: 'n1', to: 'n3' }, 5_000);
    assert.equal(a.from, 'n3');
    assert.equal(a.serial, serial);
    const port = (transport as unknown as { peers: Map<string, { address: string }> }).peers.get('n3')?.address ?? '';
    const b = await askMembership(dial, port, { from: 'n1', to: 'n3' }, 5_000);
    assert.equal(b.serial, serial);
  });

  it('n3 grants over its connection; once the CRL revokes it and the transport reconnects, no grant arrives', async () => {
    assert.equal(await grantsFor(2, 5_000), 1, 'n3 answers before its revocation');
    await fx.revoke('n3');
    transport.reconnect();
    assert.equal(await grantsFor(3, 1_500), 0, 'a grant from the revoked n3 arrived');
  });
});

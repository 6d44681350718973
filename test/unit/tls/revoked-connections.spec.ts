/**
 * A certificate the peer CRL revokes while connections to its holder are open (review30, crl31): grpc-js checks a
 * server's certificate at the TLS handshake only, so a channel made before the revocation kept carrying calls (the
 * forwarder's writes with their callers' keys, the consistency checks' admin key) to the revoked member for as long
 * as its connection lasted; a channel closed and made again took the same connection from grpc-js's global
 * subchannel pool (kept up to 10 s after its last channel closed) without a new handshake. Real gRPC, mutual TLS.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { LeaderForwarder, type NodeView } from '../../../src/api/leader-forwarder.js';
import { GetResponse, KVServiceService } from '../../../src/gen/snapcoord/v1/kv.js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, channelCredentialsFromFiles, memberChannelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, type PeerCrl } from '../../../src/tls/index.js';
import { appendRequestToProto, getMembershipRequestToProto } from '../../../src/transport/codec.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { certificateRevocation, peerMetadataInterceptor, type PeerCall } from '../../../src/transport/peer-guard.js';
import { crlFixture, type CrlFixture } from './helpers.js';

const enc = new TextEncoder();
const CLUSTER = 'revoked-connections';

describe('connections to a member whose certificate a reloaded peer CRL revokes (real gRPC, mutual TLS)', function () {
  this.timeout(30_000);
  let fx: CrlFixture;
  let dir: string;
  let server: grpc.Server;
  let port = 0;
  let crl: PeerCrl;
  let handled = 0;

  before(async () => {
    fx = await crlFixture('snapcoord-revoked-conn-', ['n1', 'n3'], { refreshMs: 60_000 });
    ({ dir, crl } = fx);
    // n3's client plane: a KV service answering every get.
    const n3 = nodeCertFiles(dir, 'n3');
    server = new grpc.Server();
    server.addService(KVServiceService, {
      get: (_call: unknown, cb: grpc.sendUnaryData<GetResponse>) => {
        handled++;
        cb(null, GetResponse.fromPartial({ found: true }));
      },
    } as unknown as grpc.UntypedServiceImplementation);
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentialsFromFiles({ certFile: n3.certFile, keyFile: n3.keyFile, caFile: caFiles(dir).caFile, requireClientCert: false }), (err, p) => (err !== null ? reject(err) : resolve(p))),
    );
  });

  after(async () => {
    server.forceShutdown();
    await fx.close();
  });

  it('the forwarder: once the CRL revokes n3 and serve tells the credentials (closeRevoked), no forwarded call reaches n3 over the connection made before', async () => {
    const n1 = nodeCertFiles(dir, 'n1');
    const members = memberChannelCredentialsFromFiles({ caFile: caFiles(dir).caFile, certFile: n1.certFile, keyFile: n1.keyFile, checkChain: false, revocation: crl });
    const node = { id: 'n1', brief: () => ({ role: 'follower', leader: 'n3' }), dialAddressOf: () => '' } as unknown as NodeView;
    const f = new LeaderForwarder(node, { credentialsFor: (id) => members.forMember(id, true) });
    const leader = { id: 'n3', address: `127.0.0.1:${port}` };
    const get = (): Promise<string> =>
      f
        .kv(leader)
        .get({ key: enc.encode('k') }, { deadlineMs: 3_000 })
        .then(
          (r) => `found ${String(r.found)}`,
          (e: grpc.ServiceError) => `${grpc.status[e.code]}: ${e.details}`,
        );
    try {
      assert.equal(await get(), 'found true');
      assert.equal(members.openConnections, 1);
      assert.equal(members.closeRevoked(), 0, 'nothing revoked yet: nothing closed');
      assert.equal(await get(), 'found true', 'the connection still serves');
      const before = handled;
      await fx.revoke('n3');
      assert.equal(members.closeRevoked(), 1, 'one connection to n3 closed');
      assert.equal(members.openConnections, 0);
      for (let i = 0; i < 3; i++) {
        const r = await get();
        assert.notEqual(r, 'found true', 'a forwarded call reached the revoked n3');
      }
      assert.equal(handled, before, 'n3 handled a call after its revocation');
      assert.match(await get(), /UNAVAILABLE: .*certificate \(serial [0-9a-f]+\) is revoked by the CRL/);
    } finally {
      f.close();
    }
  });
});

/**
 * The other way: n3's calls to n1's peer plane over the connection (and the append stream) it opened before n1's
 * CRL revoked it. grpc-js checks the client's certificate at the handshake only; the peer guard asks the CRL in use
 * about the call's certificate at every call it opens and every message of a stream, so the reload refuses both at
 * once, on the same connection.
 */
describe('n3\'s open connection to n1\'s peer plane once n1\'s reloaded CRL revokes n3 (real node, mutual TLS)', function () {
  this.timeout(30_000);
  let fx: CrlFixture;
  let dir: string;
  let api: ApiServer;
  let node: Node;
  let crl: PeerCrl;
  let client: RaftServiceClient;

  before(async () => {
    fx = await crlFixture('snapcoord-revoked-inbound-', ['n1', 'n3'], { refreshMs: 60_000 });
    ({ dir, crl } = fx);
    const ca = fx.caFile;
    const f = nodeCertFiles(dir, 'n1');
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0', peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: ca, requireClientCert: true }) });
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: () => undefined });
    const membership: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: api.peerAddress, n2: '127.0.0.1:1', n3: '127.0.0.1:2' } };
    node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage: await MemoryStorage.open(new MemoryDataDir('n1')), transport, initialMembership: membership, timings: { electionTimeoutTicks: 500, heartbeatIntervalTicks: 5 } });
    const identityOf = (call: PeerCall): string | null => memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
    api.serve({ node, clusterId: CLUSTER, identityOf, peerRevocation: certificateRevocation((s) => crl.isRevoked(s)) });
    const n3 = nodeCertFiles(dir, 'n3');
    client = new RaftServiceClient(api.peerAddress, channelCredentialsFromFiles({ caFile: ca, certFile: n3.certFile, keyFile: n3.keyFile }), { 'grpc.use_local_subchannel_pool': 1, interceptors: [peerMetadataInterceptor(CLUSTER, '')] });
  });

  after(async () => {
    client.close();
    await api.close(200);
    await node.stop();
    await fx.close();
  });

  const ask = (): Promise<string> =>
    new Promise((resolve) =>
      client.getMembership(getMembershipRequestToProto({ from: 'n3', to: 'n1' }), new grpc.Metadata(), { deadline: Date.now() + 3_000 }, (err) =>
        resolve(err === null ? 'answered' : `${grpc.status[err.code]}: ${err.details}`),
      ),
    );

  it('a call opened on the connection made before, and the next message of a stream opened before, are refused as revoked', async () => {
    assert.equal(await ask(), 'answered');
    const stream = client.appendEntries();
    const answers: string[] = [];
    const ended = new Promise<string>((resolve) => {
      stream.on('data', () => answers.push('answer'));
      stream.on('error', (e: grpc.ServiceError) => resolve(`${grpc.status[e.code]}: ${e.details}`));
      stream.on('end', () => resolve('ended'));
    });
    const heartbeat = (term: number) => appendRequestToProto({ type: 'heartbeat', from: 'n3', to: 'n1', term, commit: 0, readSeq: 0 } as Message & { type: 'heartbeat' });
    stream.write(heartbeat(1));
    const deadline = Date.now() + 5_000;
    while (answers.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(answers.length, 1, 'n1 answers n3\'s heartbeat before the revocation');
    await fx.revoke('n3');
    stream.write(heartbeat(1));
    assert.match(await ended, /PERMISSION_DENIED: refused: the certificate of n3 \(serial [0-9a-f]+\) is revoked/);
    assert.equal(answers.length, 1, 'the stream opened before answered after the revocation');
    assert.match(await ask(), /PERMISSION_DENIED: refused: the certificate of n3 \(serial [0-9a-f]+\) is revoked/);
  });
});

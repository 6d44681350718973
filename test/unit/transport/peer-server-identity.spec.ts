/**
 * The peer plane seen from the dialling side (review16): under mutual TLS
 * every member's certificate is signed by the cluster CA and, in a local
 * cluster or on a shared host, names the same 127.0.0.1, so the CA and host
 * checks alone let one member answer at another's address: n3 listening where
 * n1 dials n2 (a port it took over, a DNS name pointed at it) granted votes
 * and told the membership as n2, and n1 took them for n2's. The dialling side
 * must also check that the server's certificate names the member dialled.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import type { Message } from '../../../src/raft/types.js';
import { caFiles, memberChannelCredentialsFromFiles, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { getMembershipResponseToProto, voteRequestFromProto, voteResponseToProto } from '../../../src/transport/codec.js';
import { GrpcTransport, askMembership } from '../../../src/transport/grpc-transport.js';
import { peerDial, type PeerDial } from '../../../src/transport/peer-guard.js';
import { until } from '../../harness/until.js';

const CLUSTER = 'identity-test';

/** A RaftService that answers as n2 whoever it is: grants every vote, tells a membership. */
async function startAnsweringAsN2(dir: string, certOf: string): Promise<{ address: string; handled: () => number; close: () => void }> {
  const f = nodeCertFiles(dir, certOf);
  const server = new grpc.Server();
  let handled = 0;
  const impl: Partial<grpc.UntypedServiceImplementation> = {
    requestVote: (call: grpc.ServerUnaryCall<pb.RequestVoteRequest, pb.RequestVoteResponse>, cb: grpc.sendUnaryData<pb.RequestVoteResponse>) => {
      handled += 1;
      const req = voteRequestFromProto(call.request);
      cb(null, voteResponseToProto({ type: 'voteResp', from: 'n2', to: req.from, term: req.term, preVote: req.preVote, granted: true }));
    },
    getMembership: (_call: grpc.ServerUnaryCall<pb.GetMembershipRequest, pb.GetMembershipResponse>, cb: grpc.sendUnaryData<pb.GetMembershipResponse>) => {
      handled += 1;
      cb(null, getMembershipResponseToProto({ from: 'n2', term: 7, membership: { voters: ['n2'], learners: [], addresses: { n2: '127.0.0.1:1' } } }));
    },
  };
  server.addService(pb.RaftServiceService, impl as grpc.UntypedServiceImplementation);
  const creds = serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: caFiles(dir).caFile, requireClientCert: true });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err !== null ? reject(err) : resolve(p))));
  return { address: `127.0.0.1:${port}`, handled: () => handled, close: () => server.forceShutdown() };
}

describe('peer plane: the member dialled must be the one that answers (review16)', function () {
  this.timeout(30_000);
  let dir: string;
  let dial: PeerDial;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-peer-server-identity-'));
    await writeCa(dir);
    for (const id of ['n1', 'n2', 'n3']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
    const f = nodeCertFiles(dir, 'n1');
    const members = memberChannelCredentialsFromFiles({ caFile: caFiles(dir).caFile, certFile: f.certFile, keyFile: f.keyFile });
    dial = peerDial(CLUSTER, '', members.any, (id) => members.forMember(id));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** voteVia: n1's GrpcTransport asks "n2" (at `address`) for a vote; resolves with what it delivered once the call is over. */
  async function voteVia(address: string): Promise<Message[]> {
    const got: Message[] = [];
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => got.push(m), dial, unaryDeadlineMs: 5_000 });
    try {
      transport.setPeers({ n2: address });
      transport.send({ type: 'vote', from: 'n1', to: 'n2', term: 5, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
      await until('the vote call to end', 10_000, () => (transport.peerInfo('n2')?.inflightCalls === 0 ? true : undefined));
    } finally {
      await transport.close();
    }
    return got;
  }

  it("n2's own certificate: its granted vote is delivered (the control)", async () => {
    const real = await startAnsweringAsN2(dir, 'n2');
    try {
      const got = await voteVia(real.address);
      assert.deepEqual(got.map((m) => [m.type, m.from, (m as { granted?: boolean }).granted]), [['voteResp', 'n2', true]]);
      const answer = await askMembership(dial, real.address, { from: 'n1', to: 'n2' }, 5_000);
      assert.equal(answer.from, 'n2');
    } finally {
      real.close();
    }
  });

  it("n3's certificate where n1 dials n2: no vote is taken for n2's and no membership answer either; n3's server is never called", async () => {
    const impostor = await startAnsweringAsN2(dir, 'n3');
    try {
      const got = await voteVia(impostor.address);
      assert.deepEqual(got, [], `n3 answered as n2: ${JSON.stringify(got)}`);
      await assert.rejects(askMembership(dial, impostor.address, { from: 'n1', to: 'n2' }, 5_000), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
        return true;
      });
      assert.equal(impostor.handled(), 0);
    } finally {
      impostor.close();
    }
  });
});

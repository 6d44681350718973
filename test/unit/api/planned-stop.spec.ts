/**
 * ApiServer.close on a member peers stream appends to: the peer plane tells
 * them it is leaving (their AppendEntries streams end UNAVAILABLE
 * "<id> is stopping", not cancelled when a grace runs out), and the rest of
 * the cluster writes on.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import { peerMetadata } from '../../../src/transport/peer-guard.js';
import { startTestCluster, type TestCluster } from './harness.js';

const enc = new TextEncoder();

describe('api: a planned stop ends the peers\' append streams', function () {
  this.timeout(30_000);
  let c: TestCluster | undefined;
  let client: pb.RaftServiceClient | undefined;

  after(async () => {
    client?.close();
    await c?.stop();
  });

  it('close() of a follower ends an open AppendEntries stream with UNAVAILABLE "<id> is stopping", and the leader writes on', async () => {
    c = await startTestCluster(3);
    const leader = await c.waitForLeader();
    const follower = c.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    await leader.kv.put({ key: enc.encode('before'), value: enc.encode('1') }, { deadlineMs: 10_000 });
    // A stream of the follower's peer plane held open as a peer's is (this cluster's id, admitted when it opens; it sends nothing).
    client = new pb.RaftServiceClient(follower.api.peerAddress, grpc.credentials.createInsecure());
    const stream = client.appendEntries(peerMetadata('snapcoord', ''));
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    stream.on('data', () => undefined);
    await new Promise<void>((resolve, reject) => client?.waitForReady(Date.now() + 10_000, (err) => (err !== undefined ? reject(err) : resolve())));
    await new Promise((r) => setTimeout(r, 100));
    await follower.api.close(600_000);
    const err = await ended;
    assert.equal(err.code, grpc.status.UNAVAILABLE, `${grpc.status[err.code]}: ${err.details}`);
    assert.equal(err.details, `${follower.id} is stopping`);
    await leader.kv.put({ key: enc.encode('after'), value: enc.encode('2') }, { deadlineMs: 10_000 });
    const got = await leader.kv.get({ key: enc.encode('after') }, { deadlineMs: 10_000 });
    assert.equal(got.found, true);
  });
});

/**
 * StageArchive on the peer plane (issue 14 item 3): the leader asks a
 * follower to hold a durable copy of a restore's archive before proposing it.
 * The RPC passes PeerGuard like every peer call (cluster id, membership), is
 * refused when misaddressed or malformed, and carries the handler's outcome
 * (its gRPC code) back; GrpcTransport and its in-memory twin agree.
 */
import assert from 'node:assert/strict';

import * as grpc from '@grpc/grpc-js';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import { PeerGuard, peerDial, type RefusalReason } from '../../../src/transport/peer-guard.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import type { Message } from '../../../src/raft/types.js';
import type { ArchiveStager, RaftRequestHandler, StageArchiveParams } from '../../../src/transport/transport.js';

const CLUSTER = 'stage-test';
const DIGEST = 'ab'.repeat(32);

function params(over: Partial<StageArchiveParams> = {}): StageArchiveParams {
  return { from: 'n1', to: 'n2', term: 3, archive: { index: 42, term: 7, sizeBytes: 1234, digest: DIGEST }, ...over };
}

/** StagingFollower records what it is asked and answers as told (resolve, or reject with a coded error, or after a delay). */
class StagingFollower implements RaftRequestHandler {
  readonly staged: StageArchiveParams[] = [];
  /** signals: the cancellation signal of each request, in order. */
  readonly signals: (AbortSignal | undefined)[] = [];
  answer: () => Promise<void> = () => Promise.resolve();
  handleRequest(_m: Message): Promise<Message[]> {
    return Promise.resolve([]);
  }
  handleReport(_m: Message): void {}
  stageArchive(p: StageArchiveParams, signal?: AbortSignal): Promise<void> {
    this.staged.push(p);
    this.signals.push(signal);
    return this.answer();
  }
}

function coded(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function rejectsWithCode(p: Promise<unknown>, code: number, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal((e as { code?: number }).code, code, `code of ${String(e)}`);
    if (pattern !== undefined) assert.match((e as Error).message, pattern);
    return true;
  });
}

describe('StageArchive over gRPC (RaftService + GrpcTransport)', function () {
  this.timeout(20_000);
  let server: grpc.Server;
  let address: string;
  let follower: StagingFollower;
  let members: Set<string>;
  let refusals: RefusalReason[];
  let transport: GrpcTransport;

  beforeEach(async () => {
    follower = new StagingFollower();
    members = new Set(['n1', 'n2', 'n3']);
    refusals = [];
    const guard = new PeerGuard({ clusterId: CLUSTER, isMember: (id) => members.has(id), onRefused: (r) => refusals.push(r) });
    server = new grpc.Server();
    server.addService(pb.RaftServiceService, createRaftService(follower, { selfId: 'n2', guard }));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
    transport = new GrpcTransport({ selfId: 'n1', onMessage: () => undefined, dial: peerDial(CLUSTER, '127.0.0.1:1') });
    transport.setPeers({ n2: address });
  });

  afterEach(async () => {
    await transport.close();
    server.forceShutdown();
  });

  it('resolves once the follower says it holds the archive, with every field carried', async () => {
    let release: () => void = () => undefined;
    follower.answer = () => new Promise<void>((r) => (release = r));
    let done = false;
    const call = transport.stageArchive(params(), 5_000).then(() => (done = true));
    await sleep(100);
    assert.equal(done, false, 'waits for the follower');
    release();
    await call;
    assert.deepEqual(follower.staged, [params()]);
  });

  it("carries the follower's refusal and its code back", async () => {
    follower.answer = () => Promise.reject(coded(grpc.status.RESOURCE_EXHAUSTED, 'the disk is below its reserve'));
    await rejectsWithCode(transport.stageArchive(params(), 5_000), grpc.status.RESOURCE_EXHAUSTED, /below its reserve/);
    follower.answer = () => Promise.reject(new Error('plain failure'));
    await rejectsWithCode(transport.stageArchive(params(), 5_000), grpc.status.INTERNAL, /plain failure/);
  });

  it('a sender that is not a member is refused by the peer guard before the node sees it', async () => {
    members.delete('n1');
    await rejectsWithCode(transport.stageArchive(params(), 5_000), grpc.status.PERMISSION_DENIED, /not a member/);
    assert.deepEqual(refusals, ['not_member']);
    assert.equal(follower.staged.length, 0);
  });

  it('a call without the cluster id is refused', async () => {
    const bare = new pb.RaftServiceClient(address, grpc.credentials.createInsecure());
    try {
      const req: pb.StageArchiveRequest = { from: 'n1', to: 'n2', term: 1n, index: 1n, archiveTerm: 1n, sizeBytes: 10n, digest: DIGEST };
      await rejectsWithCode(
        new Promise((resolve, reject) => bare.stageArchive(req, (err, res) => (err ? reject(err) : resolve(res)))),
        grpc.status.PERMISSION_DENIED,
      );
      assert.deepEqual(refusals, ['cluster_id']);
      assert.equal(follower.staged.length, 0);
    } finally {
      bare.close();
    }
  });

  it('misaddressed: FAILED_PRECONDITION; malformed: INVALID_ARGUMENT (never reaching the node)', async () => {
    transport.setPeers({ n2: address, n3: address });
    await rejectsWithCode(transport.stageArchive(params({ to: 'n3' }), 5_000), grpc.status.FAILED_PRECONDITION);
    const raw = new pb.RaftServiceClient(address, grpc.credentials.createInsecure(), { interceptors: [...peerDial(CLUSTER, '').interceptors] });
    try {
      const call = (req: pb.StageArchiveRequest): Promise<unknown> =>
        new Promise((resolve, reject) => raw.stageArchive(req, (err, res) => (err ? reject(err) : resolve(res))));
      const good: pb.StageArchiveRequest = { from: 'n1', to: 'n2', term: 1n, index: 1n, archiveTerm: 1n, sizeBytes: 10n, digest: DIGEST };
      await rejectsWithCode(call({ ...good, digest: '../../etc/passwd' }), grpc.status.INVALID_ARGUMENT, /digest/);
      await rejectsWithCode(call({ ...good, sizeBytes: 0n }), grpc.status.INVALID_ARGUMENT, /sizeBytes/);
      await rejectsWithCode(call({ ...good, index: 1n << 60n }), grpc.status.INVALID_ARGUMENT, /index/);
      await rejectsWithCode(call({ ...good, from: '' }), grpc.status.INVALID_ARGUMENT, /from/);
      assert.equal(follower.staged.length, 0);
      await call(good);
      assert.equal(follower.staged.length, 1);
    } finally {
      raw.close();
    }
  });

  it('a node that cannot stage answers UNIMPLEMENTED', async () => {
    const plain: RaftRequestHandler = { handleRequest: () => Promise.resolve([]), handleReport: () => undefined };
    const s = new grpc.Server();
    s.addService(pb.RaftServiceService, createRaftService(plain, { selfId: 'n2' }));
    const port = await new Promise<number>((resolve, reject) =>
      s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    try {
      transport.setPeers({ n2: `127.0.0.1:${port}` });
      await rejectsWithCode(transport.stageArchive(params(), 5_000), grpc.status.UNIMPLEMENTED);
    } finally {
      s.forceShutdown();
    }
  });

  it('bounded: a follower that does not answer in time is DEADLINE_EXCEEDED; an abort cancels; an unknown peer fails at once', async () => {
    follower.answer = () => new Promise<void>(() => undefined);
    await rejectsWithCode(transport.stageArchive(params(), 200), grpc.status.DEADLINE_EXCEEDED);
    const abort = new AbortController();
    const p = transport.stageArchive(params(), 5_000, abort.signal);
    await sleep(50);
    abort.abort();
    await rejectsWithCode(p, grpc.status.CANCELLED);
    await rejectsWithCode(transport.stageArchive(params({ to: 'n9' }), 5_000), grpc.status.UNAVAILABLE, /no channel to n9/);
  });

  it("the caller's cancel or deadline reaches the node's handler as an aborted signal (it can stop the fetch)", async () => {
    follower.answer = () => new Promise<void>(() => undefined);
    const aborted = (i: number): boolean => follower.signals[i]?.aborted === true;
    const abort = new AbortController();
    const p = transport.stageArchive(params(), 5_000, abort.signal);
    await sleep(100);
    assert.equal(aborted(0), false, 'not aborted while the caller waits');
    abort.abort();
    await rejectsWithCode(p, grpc.status.CANCELLED);
    for (let i = 0; i < 50 && !aborted(0); i++) await sleep(20);
    assert.equal(aborted(0), true, 'the handler saw the cancel');
    await rejectsWithCode(transport.stageArchive(params(), 200), grpc.status.DEADLINE_EXCEEDED);
    for (let i = 0; i < 50 && !aborted(1); i++) await sleep(20);
    assert.equal(aborted(1), true, 'and the deadline');
  });
});

describe('StageArchive over the in-memory twin (MemoryNetwork)', () => {
  function setup(): { net: MemoryNetwork; follower: StagingFollower; stager: ArchiveStager } {
    const net = new MemoryNetwork();
    const follower = new StagingFollower();
    net.listen('mem:n2', follower);
    const t = net.transport({ selfId: 'n1', onMessage: () => undefined });
    t.setPeers({ n2: 'mem:n2' });
    return { net, follower, stager: t };
  }

  it('resolves when the follower holds it, carries its refusal code, and fails over a cut link or after the timeout', async () => {
    const { net, follower, stager } = setup();
    await stager.stageArchive(params(), 1_000);
    assert.deepEqual(follower.staged, [params()]);
    follower.answer = () => Promise.reject(coded(grpc.status.RESOURCE_EXHAUSTED, 'full'));
    await rejectsWithCode(stager.stageArchive(params(), 1_000), grpc.status.RESOURCE_EXHAUSTED, /full/);
    follower.answer = () => new Promise<void>(() => undefined);
    await rejectsWithCode(stager.stageArchive(params(), 50), grpc.status.DEADLINE_EXCEEDED);
    follower.answer = () => Promise.resolve();
    net.cut('n1', 'n2');
    await rejectsWithCode(stager.stageArchive(params(), 1_000), grpc.status.UNAVAILABLE);
    net.heal();
    const abort = new AbortController();
    abort.abort();
    await rejectsWithCode(stager.stageArchive(params(), 1_000, abort.signal), grpc.status.CANCELLED);
    // A cancel while the follower works reaches it, as over gRPC.
    follower.answer = () => new Promise<void>(() => undefined);
    const later = new AbortController();
    const p = stager.stageArchive(params(), 1_000, later.signal);
    await sleep(20);
    const signal = follower.signals.at(-1);
    assert.equal(signal?.aborted, false);
    later.abort();
    await rejectsWithCode(p, grpc.status.CANCELLED);
    assert.equal(signal?.aborted, true);
  });
});

/**
 * The peer plane's client side counts what a peer's answer holds before it decodes it, as the peer server counts
 * requests (codec.ts decodeAppendRequest, decodeInstallSnapshotRequest, decodeProposeRequest): a GetMembership
 * answer's membership ids (membershipBytesOverLimits), a Propose answer's outcomes (FORWARD_PROPOSALS_MAX), and the
 * files (STATE_IMAGE_FILES_MAX) and snapshot membership of each FetchStateImage message.
 *
 * Who answers: a member asked over its channel (64 MiB messages), and a sender no member's channel reaches, asked at
 * the peer address its own calls advertise (src/node/vouches.ts: a CA-signed certificate of an id no member knows
 * is enough; 4 MiB). Before, the generated decoders took whatever came and the limits were checked after: a 64 MiB
 * GetMembership answer of 7.6 million 1-4 character address keys took 22.9 s of the main thread and 950 MB of heap
 * to decode (22.4 million voter ids: 11.8 s, 760 MB); the 4 MiB one at an advertised address 0.43 s and 54 MB, as
 * often as a vouch round asks; a 16 MiB state image manifest of 8.4 million empty files 16 s and 2 GB (review30).
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { RAFT_SERVICE_DEFINITION } from '../../../src/transport/fetch-serializer.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { RAFT_CLIENT_DEFINITION } from '../../../src/transport/raft-client.js';
import { CodecError, refuseUndecoded, getMembershipResponseFromProto, OTHER_FIELDS_MAX, decodeFetchStateImageResponse, decodeGetMembershipResponse, decodeProposeResponse } from '../../../src/transport/codec.js';
import { MEMBERSHIP_IDS_MAX } from '../../../src/raft/membership.js';
import { FORWARD_PROPOSALS_MAX } from '../../../src/transport/transport.js';
import { STATE_IMAGE_FILES_MAX, openStateImage } from '../../../src/transport/state-image-fetcher.js';
import { IMAGE_FILES_MAX } from '../../../src/storage/state-image.js';

describe('the peer plane\'s client counts a peer\'s answer before it decodes it (GetMembership, Propose, FetchStateImage)', function () {
  this.timeout(20_000);
  let server: grpc.Server;
  let address = '';
  /** answers: what the fake peer answers next, already encoded (as a peer of its own making would). */
  let membershipAnswer: Uint8Array = new Uint8Array(0);
  let proposeAnswer: Uint8Array = new Uint8Array(0);
  let imageAnswer: Uint8Array[] = [];

  before(async () => {
    server = new grpc.Server();
    const raw = (b: Uint8Array): Buffer => Buffer.from(b);
    server.addService(
      {
        getMembership: { ...pb.RaftServiceService.getMembership, responseSerialize: raw },
        propose: { ...pb.RaftServiceService.propose, responseSerialize: raw },
        fetchStateImage: { ...pb.RaftServiceService.fetchStateImage, responseSerialize: raw },
      } as unknown as grpc.ServiceDefinition,
      {
        getMembership: (_call: unknown, cb: grpc.sendUnaryData<Uint8Array>) => cb(null, membershipAnswer),
        propose: (_call: unknown, cb: grpc.sendUnaryData<Uint8Array>) => cb(null, proposeAnswer),
        fetchStateImage: (call: grpc.ServerWritableStream<unknown, Uint8Array>) => {
          for (const m of imageAnswer) call.write(m);
          call.end();
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))));
    address = `127.0.0.1:${port}`;
  });
  after(() => server.forceShutdown());

  /** counting: how often `fns.decode` runs while `f` runs. */
  async function counting<T>(fns: { decode: (...a: never[]) => unknown }, f: () => Promise<T>): Promise<{ calls: number; result: T | Error }> {
    const original = fns.decode;
    let calls = 0;
    fns.decode = ((...a: never[]) => {
      calls++;
      return original.apply(fns, a);
    }) as typeof original;
    try {
      const result = await f().catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
      return { calls, result };
    } finally {
      fns.decode = original;
    }
  }

  const ids = (n: number): string[] => Array.from({ length: n }, (_, i) => `v${i}`);
  const membershipOf = (m: pb.Membership): Uint8Array => pb.GetMembershipResponse.encode({ from: 'n2', term: 3n, membership: m, askerMatchIndex: 0n, askerStarted: false, membershipIndex: 7n, commitIndex: 7n, probeTerm: 0n }).finish();
  const overs: [string, pb.Membership, RegExp][] = [
    ['addresses', { voters: ['n2'], learners: [], addresses: Object.fromEntries(ids(2 * MEMBERSHIP_IDS_MAX + 1).map((id) => [id, 'a:1'])), proofs: [] }, /membership\.addresses: .*more than 2 \* MEMBERSHIP_IDS_MAX \(2000\)/],
    ['voters', { voters: ids(MEMBERSHIP_IDS_MAX + 1), learners: [], addresses: {}, proofs: [] }, /membership\.voters: .*more than MEMBERSHIP_IDS_MAX \(1000\)/],
    ['proofs', { voters: ['n2'], learners: [], addresses: {}, proofs: Array.from({ length: 17 }, () => 'p') }, /membership\.proofs: .*more than MEMBERSHIP_PROOFS_MAX \(16\)/],
  ];

  for (const via of ['a member\'s channel', 'an advertised address'] as const) {
    it(`GetMembership over ${via}: an answer over a membership limit is refused naming it, its membership never decoded; one within is taken`, async () => {
      const transport = new GrpcTransport({ selfId: 'n1', onMessage: () => undefined });
      if (via === 'a member\'s channel') transport.setPeers({ n1: '127.0.0.1:1', n2: address });
      const q = via === 'a member\'s channel' ? { from: 'n1', to: 'n2' } : { from: 'n1', to: 'n2', address };
      try {
        for (const [what, m, want] of overs) {
          membershipAnswer = membershipOf(m);
          const { calls, result } = await counting(pb.Membership, () => transport.askMembership(q, 5_000));
          assert.ok(result instanceof CodecError && want.test(result.message), `${what}: ${String(result)}`);
          assert.equal(calls, 0, `${what}: the membership of an answer over its limit was decoded`);
        }
        membershipAnswer = membershipOf({ voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n2: address }, proofs: [] });
        const { calls, result } = await counting(pb.Membership, () => transport.askMembership(q, 5_000));
        assert.ok(!(result instanceof Error), String(result));
        assert.deepEqual(result.membership.voters, ['n1', 'n2', 'n3']);
        assert.equal(result.membershipIndex, 7);
        assert.equal(calls, 1);
      } finally {
        await transport.close();
      }
    });
  }

  it('Propose: an answer of more than FORWARD_PROPOSALS_MAX outcomes is refused, none decoded; as many are taken', async () => {
    const transport = new GrpcTransport({ selfId: 'n1', onMessage: () => undefined });
    transport.setPeers({ n1: '127.0.0.1:1', n2: address });
    const answerOf = (n: number): Uint8Array =>
      pb.ProposeResponse.encode({ from: 'n2', term: 3n, refusedCode: '', refusedMessage: '', outcome: Array.from({ length: n }, () => ({ result: new Uint8Array([1]), errorCode: '', errorMessage: '' })) }).finish();
    const data = Array.from({ length: FORWARD_PROPOSALS_MAX }, () => new Uint8Array([1]));
    try {
      proposeAnswer = answerOf(FORWARD_PROPOSALS_MAX + 1);
      const over = await counting(pb.ProposeOutcome, () => transport.forwardProposals({ from: 'n1', to: 'n2', term: 3, data }, 5_000));
      assert.ok(over.result instanceof Error && /a malformed Propose answer from n2: outcome: /.test(over.result.message), String(over.result));
      assert.equal(over.calls, 0, 'the outcomes of an answer over the limit were decoded');
      proposeAnswer = answerOf(FORWARD_PROPOSALS_MAX);
      const within = await counting(pb.ProposeOutcome, () => transport.forwardProposals({ from: 'n1', to: 'n2', term: 3, data }, 5_000));
      assert.ok(!(within.result instanceof Error), String(within.result));
      assert.equal(within.result.outcomes.length, FORWARD_PROPOSALS_MAX);
    } finally {
      await transport.close();
    }
  });

  it('within the limits (repeated, unknown or out-of-order fields too) they decode what the generated decoders decode; more than OTHER_FIELDS_MAX other fields are refused', () => {
    const honest = membershipOf({ voters: ids(MEMBERSHIP_IDS_MAX), learners: ids(3), addresses: Object.fromEntries(ids(2 * MEMBERSHIP_IDS_MAX).map((id) => [id, `${id}:1`])), proofs: ['p1', 'p2'] });
    const again = membershipOf({ voters: ['n9'], learners: [], addresses: { n9: 'a:1' }, proofs: [] });
    // term twice (the last wins), an unknown field 12, then a second membership (the last wins, not merged).
    const odd = new Uint8Array([...honest, 0x10, 0x09, 0x62, 0x01, 0x00, ...again]);
    for (const bytes of [honest, odd, new Uint8Array(0)]) assert.deepEqual(decodeGetMembershipResponse(bytes), pb.GetMembershipResponse.decode(bytes));
    const propose = pb.ProposeResponse.encode({ from: 'n2', term: 3n, refusedCode: 'busy', refusedMessage: 'm', outcome: [{ result: new Uint8Array([1]), errorCode: '', errorMessage: '' }, { result: new Uint8Array(0), errorCode: 'lost', errorMessage: 'x' }] }).finish();
    const proposeOdd = new Uint8Array([...propose, 0x62, 0x01, 0x00, 0x10, 0x04]);
    for (const bytes of [propose, proposeOdd, new Uint8Array(0)]) assert.deepEqual(decodeProposeResponse(bytes), pb.ProposeResponse.decode(bytes));
    const image = pb.FetchStateImageResponse.encode({ files: [{ name: 'a.sst', sizeBytes: 9n, sha256: new Uint8Array(32).fill(7) }], file: 2, offset: 5n, data: new Uint8Array([1, 2, 3]), snapshot: { index: 9n, term: 2n, membership: { voters: ['n1'], learners: [], addresses: { n1: 'a:1' }, proofs: [] }, sizeBytes: 1n, digest: 'd' } }).finish();
    const imageOdd = new Uint8Array([...image, 0x62, 0x01, 0x00, 0x10, 0x04, 0x22, 0x01, 0x09]);
    for (const bytes of [image, imageOdd, new Uint8Array(0)]) assert.deepEqual(decodeFetchStateImageResponse(bytes), pb.FetchStateImageResponse.decode(bytes));
    const filler = new Uint8Array(Array.from({ length: OTHER_FIELDS_MAX + 1 }, () => [0x10, 0x01]).flat());
    assert.throws(() => getMembershipResponseFromProto(decodeGetMembershipResponse(new Uint8Array([...honest, ...filler]))), /more than OTHER_FIELDS_MAX \(256\) fields/);
  });

  it('FetchStateImage: a message listing more than STATE_IMAGE_FILES_MAX files (a manifest, or one after it) is refused, no file decoded; as many are taken', async () => {
    const manifestOf = (n: number, membership?: pb.Membership): Uint8Array =>
      pb.FetchStateImageResponse.encode({
        files: Array.from({ length: n }, (_, i) => ({ name: `f${i}.sst`, sizeBytes: 0n, sha256: new Uint8Array(0) })),
        file: 0,
        offset: 0n,
        data: new Uint8Array(0),
        snapshot: membership === undefined ? undefined : { index: 9n, term: 2n, membership, sizeBytes: 1n, digest: '' },
      }).finish();
    const open = () => openStateImage({ selfId: 'n1', to: 'n2', address, index: 9, recordFormat: 2, manifestTimeoutMs: 5_000, idleTimeoutMs: 5_000 });
    const drain = async (): Promise<unknown> => {
      const image = await open();
      for await (const _ of image.chunks);
      return image;
    };
    imageAnswer = [manifestOf(STATE_IMAGE_FILES_MAX + 1)];
    const over = await counting(pb.StateImageFile, drain);
    assert.ok(over.result instanceof Error && /files: more than STATE_IMAGE_FILES_MAX \(65536\) files/.test(over.result.message), String(over.result));
    assert.equal(over.calls, 0, 'the files of a manifest over the limit were decoded');
    imageAnswer = [manifestOf(1), manifestOf(STATE_IMAGE_FILES_MAX + 1)];
    const second = await counting(pb.StateImageFile, drain);
    assert.ok(second.result instanceof Error && /more than STATE_IMAGE_FILES_MAX/.test(second.result.message), String(second.result));
    assert.equal(second.calls, 1, 'the files of a message over the limit after the manifest were decoded');
    // The sender's snapshot (its membership) is counted as every membership is.
    imageAnswer = [manifestOf(1), manifestOf(0, { voters: ids(MEMBERSHIP_IDS_MAX + 1), learners: [], addresses: {}, proofs: [] })];
    const meta = await counting(pb.Membership, drain);
    assert.ok(meta.result instanceof Error && /membership\.voters: .*more than MEMBERSHIP_IDS_MAX \(1000\)/.test(meta.result.message), String(meta.result));
    assert.equal(meta.calls, 0, 'the membership of the sender\'s snapshot over the limit was decoded');
    imageAnswer = [manifestOf(STATE_IMAGE_FILES_MAX)];
    const within = await counting(pb.StateImageFile, async () => (await open()).files.length);
    assert.equal(within.result, STATE_IMAGE_FILES_MAX);
  });

  it('STATE_IMAGE_FILES_MAX is the storage\'s IMAGE_FILES_MAX (an honest manifest lists no more)', () => {
    assert.equal(STATE_IMAGE_FILES_MAX, IMAGE_FILES_MAX);
  });
});

describe('every other peer request and answer is refused past OTHER_FIELDS_MAX fields before it is decoded (review30)', () => {
  const unknown = (n: number): number[] => Array.from({ length: n }, () => [0x78, 0x00]).flat(); // field 15, varint 0
  const requests = {
    requestVote: pb.RequestVoteRequest.encode(pb.RequestVoteRequest.fromPartial({ from: 'n1', to: 'n2', term: 3n })).finish(),
    timeoutNow: pb.TimeoutNowRequest.encode(pb.TimeoutNowRequest.fromPartial({ from: 'n1', to: 'n2', term: 3n })).finish(),
    readIndex: pb.ReadIndexRequest.encode(pb.ReadIndexRequest.fromPartial({ from: 'n1', to: 'n2', term: 3n, context: 'c' })).finish(),
    reportSnapshot: pb.ReportSnapshotRequest.encode(pb.ReportSnapshotRequest.fromPartial({ from: 'n1', to: 'n2', term: 3n, index: 4n })).finish(),
    stageArchive: pb.StageArchiveRequest.encode(pb.StageArchiveRequest.fromPartial({ from: 'n1', to: 'n2' })).finish(),
    getMembership: pb.GetMembershipRequest.encode(pb.GetMembershipRequest.fromPartial({ from: 'n1', to: 'n2' })).finish(),
    fetchSnapshot: pb.FetchSnapshotRequest.encode(pb.FetchSnapshotRequest.fromPartial({ from: 'n1', index: 4n })).finish(),
    fetchStateImage: pb.FetchStateImageRequest.encode(pb.FetchStateImageRequest.fromPartial({ from: 'n1', to: 'n2', index: 4n })).finish(),
  } as const;
  const answers = {
    requestVote: pb.RequestVoteResponse.encode(pb.RequestVoteResponse.fromPartial({ hasReply: true })).finish(),
    appendEntries: pb.AppendEntriesResponse.encode(pb.AppendEntriesResponse.fromPartial({ from: 'n2', to: 'n1', term: 3n })).finish(),
    installSnapshot: pb.InstallSnapshotResponse.encode(pb.InstallSnapshotResponse.fromPartial({})).finish(),
    reportSnapshot: new Uint8Array(0),
    timeoutNow: new Uint8Array(0),
    readIndex: pb.ReadIndexResponse.encode(pb.ReadIndexResponse.fromPartial({})).finish(),
    stageArchive: pb.StageArchiveResponse.encode(pb.StageArchiveResponse.fromPartial({ from: 'n2', durable: true })).finish(),
    fetchSnapshot: pb.FetchSnapshotResponse.encode(pb.FetchSnapshotResponse.fromPartial({ offset: 3n, data: new Uint8Array([1, 2]), last: true })).finish(),
  } as const;
  type Deserializer = { requestDeserialize?: (b: Buffer) => unknown; responseDeserialize?: (b: Buffer) => unknown };
  const serverDefinition = RAFT_SERVICE_DEFINITION as unknown as Record<string, Deserializer>;
  const clientDefinition = RAFT_CLIENT_DEFINITION as unknown as Record<string, Deserializer>;
  const generated = pb.RaftServiceService as unknown as Record<string, Deserializer>;

  it('a request of more than OTHER_FIELDS_MAX fields comes back undecoded and is refused naming the limit; within, as the generated decoder decodes it', () => {
    const taken: string[] = [];
    for (const [method, bytes] of Object.entries(requests)) {
      const deserialize = serverDefinition[method]?.requestDeserialize as (b: Buffer) => object;
      const over = deserialize(Buffer.from([...bytes, ...unknown(OTHER_FIELDS_MAX + 1)]));
      try {
        refuseUndecoded(over);
        taken.push(method);
      } catch (err) {
        assert.ok(err instanceof CodecError && /more than OTHER_FIELDS_MAX \(256\) fields/.test(err.message), `${method}: ${(err as Error).message}`);
      }
      const within = Buffer.from([...bytes, ...unknown(OTHER_FIELDS_MAX - 16)]);
      assert.deepEqual(deserialize(within), (generated[method]?.requestDeserialize as (b: Buffer) => unknown)(within), method);
    }
    assert.deepEqual(taken, [], 'requests of more than OTHER_FIELDS_MAX fields decoded and taken');
  });

  it('an answer of more than OTHER_FIELDS_MAX fields is refused before it is decoded; within, as the generated decoder decodes it', () => {
    const taken: string[] = [];
    for (const [method, bytes] of Object.entries(answers)) {
      const deserialize = clientDefinition[method]?.responseDeserialize as (b: Buffer) => unknown;
      try {
        deserialize(Buffer.from([...bytes, ...unknown(OTHER_FIELDS_MAX + 1)]));
        taken.push(method);
      } catch (err) {
        assert.ok(err instanceof CodecError && /answer: more than OTHER_FIELDS_MAX \(256\) fields/.test(err.message), `${method}: ${(err as Error).message}`);
      }
      const within = Buffer.from([...bytes, ...unknown(OTHER_FIELDS_MAX - 16)]);
      assert.deepEqual(deserialize(within), (generated[method]?.responseDeserialize as (b: Buffer) => unknown)(within), method);
    }
    assert.deepEqual(taken, [], 'answers of more than OTHER_FIELDS_MAX fields decoded');
  });

  it('over gRPC, the peer server answers such a request INVALID_ARGUMENT naming the limit (unary and server-streaming RPCs)', async () => {
    const handler = { handleRequest: () => Promise.resolve([]), handleReport: () => undefined, membershipFor: () => { throw new Error('not reached'); }, openSnapshot: () => Promise.reject(new Error('not reached')), openStateImage: () => Promise.reject(new Error('not reached')) };
    const srv = new grpc.Server();
    srv.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler as never, { selfId: 'n2' }));
    const port = await new Promise<number>((resolve, reject) => srv.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))));
    const raw = (b: Uint8Array): Buffer => Buffer.from(b);
    const Raw = grpc.makeGenericClientConstructor(
      Object.fromEntries(['requestVote', 'getMembership', 'fetchSnapshot', 'fetchStateImage'].map((m) => [m, { ...generated[m], requestSerialize: raw }])) as unknown as grpc.ServiceDefinition,
      'raw',
    );
    const client = new Raw(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as Record<string, (...a: unknown[]) => unknown>;
    const over = (bytes: Uint8Array): Uint8Array => new Uint8Array([...bytes, ...unknown(OTHER_FIELDS_MAX + 1)]);
    try {
      const codes: string[] = [];
      for (const m of ['requestVote', 'getMembership'] as const) {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => (client[m] as (...a: unknown[]) => unknown).call(client, over(requests[m]), (e: grpc.ServiceError | null) => resolve(e)));
        codes.push(`${m}: ${err?.code ?? 'ok'} ${err?.details ?? ''}`);
      }
      for (const m of ['fetchSnapshot', 'fetchStateImage'] as const) {
        const call = (client[m] as (...a: unknown[]) => grpc.ClientReadableStream<unknown>).call(client, over(requests[m]));
        const err = await new Promise<grpc.ServiceError | null>((resolve) => {
          call.on('data', () => undefined);
          call.on('error', (e: grpc.ServiceError) => resolve(e));
          call.on('end', () => resolve(null));
        });
        codes.push(`${m}: ${err?.code ?? 'ok'} ${err?.details ?? ''}`);
      }
      for (const c of codes) assert.match(c, /^\w+: 3 \w+: more than OTHER_FIELDS_MAX \(256\) fields$/);
    } finally {
      (client as unknown as grpc.Client).close();
      srv.forceShutdown();
    }
  });
});

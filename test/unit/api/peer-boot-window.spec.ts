/**
 * The peer plane between bindApiServer and serve (the node booting: RocksDB
 * opening, the snapshot store, the log check; seconds on a loaded host).
 * It listens from the bind (port 0: the caller learns its port first), so a
 * call to it must not meet grpc-js's UNIMPLEMENTED (a method not added yet):
 * a follower's ForwardQueue took that for "this member takes no forwarded
 * writes" and failed its callers' writes `notLeader` at once (the boot
 * window of a planned leader restart, boot32). Now RaftService answers
 * UNAVAILABLE "starting" with the unserved trailer until serve, the
 * transport marks such a Propose refusal `unserved` (nothing appended), and
 * the ForwardQueue sends the write again until the member serves it.
 */
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';

import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import type { ApplyResult } from '../../../src/fsm/types.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { ForwardQueue } from '../../../src/node/forward-queue.js';
import { Node } from '../../../src/node/node.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RAFT_SERVICE_DEFINITION } from '../../../src/transport/fetch-serializer.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { RequestVoteRequest } from '../../../src/gen/snapcoord/v1/raft.js';
import { UNSERVED_METADATA_KEY, type ForwardedProposals, type ForwardProposalsParams } from '../../../src/transport/transport.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const RaftClient = grpc.makeGenericClientConstructor(RAFT_SERVICE_DEFINITION, 'snapcoord.v1.RaftService');

describe('api: the peer plane before serve (the node booting)', function () {
  this.timeout(30_000);
  let api: ApiServer | undefined;
  let node: Node | undefined;
  let transport: GrpcTransport | undefined;
  let raw: grpc.Client | undefined;
  let flusher: NodeJS.Timeout | undefined;

  after(async () => {
    clearInterval(flusher);
    raw?.close();
    await transport?.close();
    await api?.close(100);
    await node?.stop();
  });

  it('answers UNAVAILABLE "starting" (unserved), and a write forwarded to it meanwhile is sent again and applied once it serves', async () => {
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' });
    const bound = api;

    // A raw RequestVote: not UNIMPLEMENTED (permanent), but UNAVAILABLE "starting" with the trailer that says no handler ran.
    raw = new RaftClient(bound.peerAddress, grpc.credentials.createInsecure());
    const vote = await new Promise<grpc.ServiceError | null>((resolve) => {
      const fn = (raw as unknown as Record<string, (r: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void>).requestVote;
      assert.ok(fn !== undefined);
      fn.call(raw, RequestVoteRequest.fromPartial({}), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (e) => resolve(e));
    });
    assert.equal(grpc.status[vote?.code ?? 0], 'UNAVAILABLE', `RequestVote before serve: ${vote?.details}`);
    assert.match(vote?.details ?? '', /starting/);
    assert.deepEqual(vote?.metadata.get(UNSERVED_METADATA_KEY), ['starting']);

    // n2, a follower whose view names n1 its leader, forwards a write to n1 while n1 boots.
    transport = new GrpcTransport({ selfId: 'n2', onMessage: () => undefined, dial: peerDial('snapcoord', '127.0.0.1:1') });
    transport.setPeers({ n1: bound.peerAddress });
    const peer = transport;
    const sent: string[] = [];
    const queue = new ForwardQueue({
      id: 'n2',
      clock: systemClock,
      maxQueued: 16,
      rpcTimeoutMs: 5_000,
      retryMs: 10,
      view: () => ({ leader: 'n1', term: 1 }),
      send: (p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals> =>
        peer.forwardProposals(p, timeoutMs).catch((err: unknown) => {
          sent.push(`${grpc.status[(err as { code?: number }).code ?? 0]}${(err as { unserved?: boolean }).unserved === true ? ' unserved' : ''}`);
          throw err;
        }),
      proposeHere: () => Promise.reject(new Error('n2 never leads here')),
    });
    flusher = setInterval(() => queue.flush(), 10);
    const outcome: { result?: ApplyResult; error?: Error } = {};
    const write = queue.forward(encodeCommand({ op: 'put', key: enc.encode('k'), value: enc.encode('v') }), 20_000).then(
      (r) => (outcome.result = r),
      (e: Error) => (outcome.error = e),
    );
    await until('the write refused twice by the booting member and kept', 10_000, () => (sent.length >= 2 || outcome.error !== undefined ? true : undefined));
    assert.equal(outcome.error, undefined, `the write failed while n1 booted: ${outcome.error?.message}`);
    assert.ok(sent.every((s) => s === 'UNAVAILABLE unserved'), sent.join(', '));

    // n1 finishes booting: a one-voter cluster (n2 a learner, so its calls are a member's) serving behind the bound planes.
    const ref: { node: Node | null } = { node: null };
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage: await MemoryStorage.open(new MemoryDataDir('n1')),
      transport: new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m), dial: peerDial('snapcoord', bound.address) }),
      initialMembership: { voters: ['n1'], learners: ['n2'], addresses: { n1: bound.peerAddress, n2: '127.0.0.1:1' } },
    });
    ref.node = node;
    const leading = node;
    await until('n1 to lead', 10_000, () => (leading.status().role === 'leader' ? true : undefined));
    bound.serve({ node });

    await write;
    assert.equal((outcome as { error?: Error }).error?.message, undefined, 'the write failed');
    assert.equal(outcome.result?.ok, true);
    const got = await node.get(enc.encode('k'));
    assert.equal(new TextDecoder().decode(got), 'v');
  });

  it('marks a Propose that never left (nobody listens on the member\'s port: its process down) unserved too', async () => {
    // A port nobody listens on: bound once, then closed.
    const probe = createServer();
    const port = await new Promise<number>((resolve) => probe.listen(0, '127.0.0.1', () => resolve((probe.address() as AddressInfo).port)));
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const t = new GrpcTransport({ selfId: 'n2', onMessage: () => undefined, dial: peerDial('snapcoord', '127.0.0.1:1') });
    try {
      t.setPeers({ n1: `127.0.0.1:${port}` });
      const data = [encodeCommand({ op: 'put', key: enc.encode('k'), value: enc.encode('v') })];
      const err = await t.forwardProposals({ from: 'n2', to: 'n1', term: 1, data }, 5_000).then(
        () => null,
        (e: Error & { code?: number; unserved?: boolean }) => e,
      );
      assert.ok(err !== null, 'a Propose to nobody was answered');
      assert.equal(grpc.status[err.code ?? 0], 'UNAVAILABLE', err.message);
      assert.equal(err.unserved, true, `not marked unserved: ${err.message}`);
    } finally {
      await t.close();
    }
  });
});

/**
 * HashState reads the whole state (and holds a storage snapshot while it
 * does): calls share the running read, and while nothing is applied a call
 * reads nothing (StateHashes), so a key with snapshots.read (metadata only)
 * cannot make the node read its whole state as many times over as its
 * calls allow, nor keep other callers out. Real node and gRPC; the real hash (hashStateAt) held at a gate
 * until the test has counted how many started.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { APPLIED_WAITERS_MAX, STATE_HASH_REUSE_MS, StateHashes } from '../../../src/api/cluster-service.js';
import type { HashStateResponse } from '../../../src/gen/snapcoord/v1/cluster.js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { ClusterClient } from '../../../src/client/cluster-client.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import { hashStateAt } from '../../../src/ops/consistency.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { sleep, until } from '../../harness/until.js';

describe('HashState: state hashes shared, and the calls waiting for an index', function () {
  this.timeout(30_000);
  let api: ApiServer;
  let node: Node;
  let started = 0;
  let open: () => void = () => undefined;
  let gate: Promise<void> = Promise.resolve();

  before(async () => {
    api = await bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: '127.0.0.1:0' });
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    const ref: { node: Node | null } = { node: null };
    node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id: 'n1',
      storage,
      transport: new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m), dial: peerDial('snapcoord', api.address) }),
      initialMembership: { voters: ['n1'], learners: [], addresses: { n1: api.peerAddress } },
    });
    ref.node = node;
    api.serve({
      node,
      stateHash: async () => {
        started++;
        // The read's storage snapshot is taken now, as in production; its answer waits for the gate.
        const h = hashStateAt(storage);
        await gate;
        return h;
      },
    });
    await until('n1 to lead', 10_000, () => (node.status().role === 'leader' ? true : undefined));
    await node.propose({ op: 'put', key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') });
  });

  after(async () => {
    open();
    await api?.close(100);
    await node?.stop();
  });

  it('calls share one read of the whole state; while nothing is applied a call reads nothing; a call needing a newer index than the running read covers waits for it, then reads its own', async () => {
    gate = new Promise<void>((r) => (open = r));
    const c = new ClusterClient(api.address);
    try {
      const base = started;
      const calls = Array.from({ length: 6 }, () =>
        c.hashState({ deadlineMs: 20_000 }).then(
          (r) => r,
          (e: grpc.ServiceError) => e,
        ),
      );
      await until('a read to start', 10_000, () => (started > base ? true : undefined));
      await sleep(300);
      // Before: each call started a read of its own, STATE_HASHES_AT_ONCE_MAX at once, the others refused
      // RESOURCE_EXHAUSTED: a snapshots.read key asking in a loop kept two reads running and every other caller out.
      assert.equal(started - base, 1, `${started - base} reads of the whole state for 6 calls at once`);
      open();
      const answers = await Promise.all(calls);
      for (const a of answers) assert.ok(!(a instanceof Error), String(a));
      const ok = answers as HashStateResponse[];
      assert.equal(new Set(ok.map((a) => a.sha256)).size, 1);
      assert.match(ok[0]?.sha256 ?? '', /^[0-9a-f]{64}$/);
      // Nothing applied since: the same answer, no read.
      const again = await c.hashState({ deadlineMs: 10_000 });
      assert.equal(again.sha256, ok[0]?.sha256);
      assert.equal(started - base, 1, 'a call while nothing was applied read the state again');
      // A write: the next call reads the new state (once).
      await node.propose({ op: 'put', key: new TextEncoder().encode('shared'), value: new TextEncoder().encode('1') });
      const after = await c.hashState({ deadlineMs: 10_000 });
      assert.notEqual(after.sha256, ok[0]?.sha256);
      assert.equal(started - base, 2);
      // A read running for an older index: a call asking for a newer one waits for it, then reads its own.
      gate = new Promise<void>((r) => (open = r));
      await node.propose({ op: 'put', key: new TextEncoder().encode('shared'), value: new TextEncoder().encode('older') });
      const older = c.hashState({ deadlineMs: 20_000 });
      await until('the older read to start', 10_000, () => (started - base === 3 ? true : undefined));
      await node.propose({ op: 'put', key: new TextEncoder().encode('shared'), value: new TextEncoder().encode('2') });
      const wanted = BigInt(node.status().applied);
      const newer = new Promise<HashStateResponse | grpc.ServiceError>((resolve) =>
        c.raw.hashState({ atIndex: wanted, waitMs: 5_000 }, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (e, r) => resolve(e ?? r)),
      );
      await sleep(300);
      assert.equal(started - base, 3, 'it waits for the running read');
      open();
      const [o, n] = await Promise.all([older, newer]);
      assert.ok(!(n instanceof Error), String(n));
      assert.ok(o.hashedIndex < wanted, 'the older read was taken before the index asked for');
      assert.equal(started - base, 4, 'the newer call read its own');
      assert.ok(n.hashedIndex > o.hashedIndex);
    } finally {
      open();
      c.close();
    }
  });

  it(`at most ${APPLIED_WAITERS_MAX} calls wait for an index at once, more refused RESOURCE_EXHAUSTED at once; a waiter is answered when its index applies`, async () => {
    // Before, each waiting call polled node.status() every 5 ms for up to a minute, as many as the connections
    // carried (2,000 of them: half a core and 350 ms of event-loop delay on this node, its writes with it).
    const c = new ClusterClient(api.address);
    const hashAt = (atIndex: number, waitMs: number, deadlineMs: number): Promise<HashStateResponse | grpc.ServiceError> =>
      new Promise((resolve) =>
        c.raw.hashState({ atIndex: BigInt(atIndex), waitMs }, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) => resolve(e ?? r)),
      );
    try {
      const next = node.status().applied + 1;
      const waiting = Array.from({ length: APPLIED_WAITERS_MAX }, () => hashAt(next, 20_000, 25_000));
      await sleep(500);
      const over = await hashAt(next, 20_000, 5_000);
      assert.ok(over instanceof Error, 'the call beyond the cap is refused');
      assert.equal(over.code, grpc.status.RESOURCE_EXHAUSTED, over.message);
      assert.match(over.details, /wait for an index to be applied on n1 already/);
      // The index applies: every waiter is answered (the hashes themselves are capped as above: some RESOURCE_EXHAUSTED).
      await node.propose({ op: 'put', key: new TextEncoder().encode('k2'), value: new TextEncoder().encode('v') });
      const answers = await Promise.all(waiting);
      const hashed = answers.filter((a): a is HashStateResponse => !(a instanceof Error));
      assert.ok(hashed.length >= 1, 'some waiter got its hash');
      for (const a of hashed) assert.ok(a.appliedIndex >= BigInt(next));
      for (const a of answers) if (a instanceof Error) assert.equal(a.code, grpc.status.RESOURCE_EXHAUSTED, a.message);
      // The places are free again.
      const again = await hashAt(node.status().applied, 1_000, 10_000);
      assert.ok(!(again instanceof Error), String(again));
    } finally {
      c.close();
    }
  });

  it('a waiter whose caller is gone (cancelled) gives its place back at once, not when its waitMs ends', async () => {
    // Before, 64 calls with an index far ahead and a minute to wait, cancelled at once by the caller, kept every
    // other HashState and CheckConsistency on this node refused RESOURCE_EXHAUSTED for that minute.
    const c = new ClusterClient(api.address);
    try {
      const far = node.status().applied + 1_000_000;
      const cancelled = Array.from({ length: APPLIED_WAITERS_MAX }, () => {
        let call: grpc.ClientUnaryCall | undefined;
        const done = new Promise<grpc.ServiceError | null>((resolve) => {
          call = c.raw.hashState({ atIndex: BigInt(far), waitMs: 60_000 }, new grpc.Metadata(), { deadline: Date.now() + 90_000 }, (e) => resolve(e));
        });
        return { call, done };
      });
      await sleep(500);
      for (const x of cancelled) x.call?.cancel();
      for (const e of await Promise.all(cancelled.map((x) => x.done))) assert.equal(e?.code, grpc.status.CANCELLED);
      const answer = await until('a place to wait in', 5_000, () =>
        new Promise<HashStateResponse | grpc.ServiceError>((resolve) =>
          c.raw.hashState({ atIndex: BigInt(far), waitMs: 200 }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e, r) => resolve(e ?? r)),
        ).then((r) => (r instanceof Error && r.code === grpc.status.RESOURCE_EXHAUSTED ? undefined : r)),
      );
      assert.ok(!(answer instanceof Error), String(answer));
    } finally {
      c.close();
    }
  });
});

describe('StateHashes: a hash is answered again while nothing is applied, for STATE_HASH_REUSE_MS', () => {
  it('reads again once the kept hash is that old, though nothing was applied (a state altered behind the node\'s back shows)', async () => {
    let now = 0;
    let reads = 0;
    const node = { id: 'n1', brief: () => ({ applied: 7 }), stateDigest: () => Promise.resolve('') } as unknown as ConstructorParameters<typeof StateHashes>[0];
    const hashes = new StateHashes(node, () => Promise.resolve({ sha256: `h${++reads}`, index: 7 }), () => now);
    assert.equal((await hashes.hash(0)).sha256, 'h1');
    now = STATE_HASH_REUSE_MS - 1;
    assert.equal((await hashes.hash(7)).sha256, 'h1');
    now = STATE_HASH_REUSE_MS;
    assert.equal((await hashes.hash(0)).sha256, 'h2');
    assert.equal(hashes.computed, 2);
  });
});

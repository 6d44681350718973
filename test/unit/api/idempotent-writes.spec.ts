/**
 * Idempotent writes through the KV API on an in-process 3-node cluster (real
 * nodes, real gRPC): a Put or Delete carrying client_id + request_id is
 * applied once however often it arrives, including when the first answer is
 * lost on its way back and the client retries (KvClient.putIdempotent); and a
 * single node that restarts still remembers the id (Raft dissertation §6.3).
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { KvClient } from '../../../src/client/kv-client.js';
import { RequestIds } from '../../../src/client/request-ids.js';
import { SESSION_CLIENTS_MAX } from '../../../src/fsm/sessions.js';
import { Node } from '../../../src/node/node.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { assertSameStateEverywhere, startTestCluster, type TestCluster } from './harness.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * losingAnswers: a client interceptor that lets the first `n` calls reach the
 * server (which applies them) and replaces their answers with UNAVAILABLE, as
 * a connection dropped on the way back would.
 */
function losingAnswers(n: number): { interceptor: grpc.Interceptor; lost: () => number } {
  let calls = 0;
  let lost = 0;
  const interceptor: grpc.Interceptor = (options, nextCall) => {
    const drop = calls++ < n;
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        next(metadata, {
          // (the message must be passed on for the status to follow; a non-OK status makes the call fail anyway)
          onReceiveMessage(message: unknown, nextMessage: (m: unknown) => void) {
            nextMessage(message);
          },
          onReceiveStatus(status: grpc.StatusObject, nextStatus: (s: grpc.StatusObject) => void) {
            if (!drop || status.code !== grpc.status.OK) {
              nextStatus(status);
              return;
            }
            lost++;
            nextStatus({ code: grpc.status.UNAVAILABLE, details: 'connection lost before the answer (test)', metadata: new grpc.Metadata() });
          },
        });
      },
    });
  };
  return { interceptor, lost: () => lost };
}

function codeOf(err: unknown): number | undefined {
  return (err as { code?: number }).code;
}

describe('idempotent writes on a 3-node cluster', function () {
  this.timeout(60_000);
  let cluster: TestCluster;

  before(async () => {
    cluster = await startTestCluster(3);
    await cluster.waitForLeader();
  });
  after(async () => {
    await cluster.stop();
  });

  async function valueEverywhere(key: string): Promise<string[]> {
    const leader = await cluster.waitForLeader();
    const r = await leader.kv.get({ key: enc.encode(key) }); // linearizable: everything before is applied on the leader
    const index = Number(r.header?.revision ?? 0);
    const out: string[] = [];
    for (const m of cluster.members) {
      for (let i = 0; i < 200 && m.node.status().applied < index; i++) await new Promise((res) => setTimeout(res, 10));
      const v = await m.node.get(enc.encode(key), true);
      out.push(v === undefined ? '<none>' : dec.decode(v));
    }
    return out;
  }

  it('A retried Put with the same request id applies once', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    const id = { clientId: 'test-client-a', requestId: 1n };
    const first = await follower.kv.put({ key: enc.encode('idem/k'), value: enc.encode('v1'), ...id });
    assert.equal(first.replayed, false);
    // Another writer changes the key in between.
    await leader.kv.put({ key: enc.encode('idem/k'), value: enc.encode('v2') });
    // The retry (through another node) is answered with the first result and writes nothing.
    const retry = await leader.kv.put({ key: enc.encode('idem/k'), value: enc.encode('v1'), ...id });
    assert.equal(retry.replayed, true);
    assert.equal(retry.header?.revision, first.header?.revision);
    assert.equal(retry.prevKv, undefined);
    assert.deepEqual(await valueEverywhere('idem/k'), ['v2', 'v2', 'v2']);
    // Every node holds the same state, session records included (nothing else writes meanwhile).
    await assertSameStateEverywhere(cluster);
  });

  it('a Put whose answer is lost is retried with its id and applied once (KvClient.putIdempotent)', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    const client = new KvClient(follower.address, {}, new RequestIds('test-client-lost'));
    try {
      const losing = losingAnswers(1);
      const retried: number[] = [];
      const before = leader.node.status().applied;
      const res = await client.putIdempotent(
        { key: enc.encode('idem/lost'), value: enc.encode('once') },
        { interceptors: [losing.interceptor], backoffMs: 10, onRetry: (err) => retried.push(err.code) },
      );
      assert.equal(losing.lost(), 1, 'the first answer was lost after the server applied the write');
      assert.deepEqual(retried, [grpc.status.UNAVAILABLE]);
      assert.equal(res.replayed, true, 'the retry was answered from the session table');
      const revision = Number(res.header?.revision ?? 0);
      assert.ok(revision > before);
      // The value was written by the first attempt only: the next id applies normally and gets a later revision.
      const next = await client.putIdempotent({ key: enc.encode('idem/lost'), value: enc.encode('twice') });
      assert.equal(next.replayed, false);
      assert.ok(Number(next.header?.revision ?? 0) > revision + 1, 'the replayed retry took its own (no-op) entry');
      assert.deepEqual(await valueEverywhere('idem/lost'), ['twice', 'twice', 'twice']);
    } finally {
      client.close();
    }
  });

  it('a retried Delete reports the first answer and does not delete a newer value', async () => {
    const leader = await cluster.waitForLeader();
    await leader.kv.put({ key: enc.encode('idem/d'), value: enc.encode('old') });
    const id = { clientId: 'test-client-d', requestId: 5n };
    const first = await leader.kv.delete({ key: enc.encode('idem/d'), ...id });
    assert.equal(first.deleted, 1n);
    await leader.kv.put({ key: enc.encode('idem/d'), value: enc.encode('new') });
    const retry = await leader.kv.delete({ key: enc.encode('idem/d'), ...id });
    assert.equal(retry.replayed, true);
    assert.equal(retry.deleted, 1n);
    assert.equal(retry.header?.revision, first.header?.revision);
    assert.deepEqual(await valueEverywhere('idem/d'), ['new', 'new', 'new']);
  });

  it('refuses half an id, a bad client id, reserved keys, and a request id older than those remembered', async () => {
    const leader = await cluster.waitForLeader();
    const invalid = async (p: Promise<unknown>): Promise<void> => {
      await assert.rejects(p, (err: unknown) => codeOf(err) === grpc.status.INVALID_ARGUMENT);
    };
    await invalid(leader.kv.put({ key: enc.encode('k'), value: enc.encode('v'), clientId: 'c' }));
    await invalid(leader.kv.put({ key: enc.encode('k'), value: enc.encode('v'), requestId: 3n }));
    await invalid(leader.kv.put({ key: enc.encode('k'), value: enc.encode('v'), clientId: 'bad id', requestId: 1n }));
    await invalid(leader.kv.put({ key: enc.encode('\u0000snapcoord/session/x'), value: enc.encode('v') }));
    await invalid(leader.kv.get({ key: enc.encode('\u0000snapcoord/session/test-client-a') }));
    const listed = await leader.kv.range({ limit: 10_000 });
    assert.ok(listed.kvs.every((kv) => kv.key[0] !== 0), 'Range shows no session record');

    for (let seq = 1n; seq <= 40n; seq++) await leader.kv.put({ key: enc.encode('idem/many'), value: enc.encode(String(seq)), clientId: 'test-client-many', requestId: seq });
    await assert.rejects(
      leader.kv.put({ key: enc.encode('idem/many'), value: enc.encode('1'), clientId: 'test-client-many', requestId: 1n }),
      (err: unknown) => codeOf(err) === grpc.status.FAILED_PRECONDITION && /older than the ones remembered/.test((err as Error).message),
    );
    assert.deepEqual(await valueEverywhere('idem/many'), ['40', '40', '40']);
  });

  it('a client id is bound to the API key that sends it: another key\'s holder can neither answer nor expire its retries', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    // No auth interceptor here: the binding reads the presented key (production's interceptor has checked it).
    const victim = new KvClient(follower.address, { apiKey: 'victim-key-0123456789' });
    const attacker = new KvClient(leader.address, { apiKey: 'attacker-key-0123456789' });
    const victimAtLeader = new KvClient(leader.address, { apiKey: 'victim-key-0123456789' });
    try {
      // The attacker writes first with the victim's next request id: the victim's write is still applied, not "replayed".
      await attacker.put({ key: enc.encode('bind/attacker'), value: enc.encode('x'), clientId: 'victim', requestId: 7n });
      const mine = await victim.put({ key: enc.encode('bind/victim'), value: enc.encode('v7'), clientId: 'victim', requestId: 7n });
      assert.equal(mine.replayed, false, 'the victim\'s write was answered with the attacker\'s result');
      assert.deepEqual(await valueEverywhere('bind/victim'), ['v7', 'v7', 'v7']);
      // Request ids far above the victim's, more than a client's record keeps: the victim's next ones are not expired.
      for (let seq = 1000n; seq < 1040n; seq++) await attacker.put({ key: enc.encode('bind/attacker'), value: enc.encode(String(seq)), clientId: 'victim', requestId: seq });
      const next = await victim.put({ key: enc.encode('bind/victim'), value: enc.encode('v8'), clientId: 'victim', requestId: 8n });
      assert.equal(next.replayed, false);
      // The victim's own retries still answer with the first result, through either node.
      const retry = await victimAtLeader.put({ key: enc.encode('bind/victim'), value: enc.encode('v8'), clientId: 'victim', requestId: 8n });
      assert.equal(retry.replayed, true);
      assert.equal(retry.header?.revision, next.header?.revision);
    } finally {
      victim.close();
      attacker.close();
      victimAtLeader.close();
    }
  });

  it('a key writing with more than SESSION_CLIENTS_MAX fresh client ids cannot push out another key\'s session: its retry is still replayed, on every node alike', async function () {
    this.timeout(180_000);
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    const victim = new KvClient(follower.address, { apiKey: 'quota-victim-key-0123456789' });
    const hog = new KvClient(leader.address, { apiKey: 'quota-hog-key-0123456789' });
    try {
      const first = await victim.put({ key: enc.encode('quota/victim'), value: enc.encode('once'), clientId: 'victim', requestId: 1n });
      assert.equal(first.replayed, false);
      // The hog's fresh ids, 32 calls at a time: enough to fill the table and push it over once more.
      const total = SESSION_CLIENTS_MAX + 64;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < total) {
          const i = next++;
          await hog.put({ key: enc.encode('quota/hog'), value: enc.encode(String(i)), clientId: `hog-${i}`, requestId: 1n });
        }
      };
      await Promise.all(Array.from({ length: 32 }, worker));
      await leader.kv.put({ key: enc.encode('quota/victim'), value: enc.encode('newer') }); // another writer in between
      // The victim's retry (its answer lost, say) is answered with the first result and does not write again.
      const retry = await victim.put({ key: enc.encode('quota/victim'), value: enc.encode('once'), clientId: 'victim', requestId: 1n });
      assert.equal(retry.replayed, true, 'the victim\'s session was pushed out: its retry applied twice');
      assert.equal(retry.header?.revision, first.header?.revision);
      assert.deepEqual(await valueEverywhere('quota/victim'), ['newer', 'newer', 'newer']);
      // The hog's own oldest ids went first: its first one is new again (applied, not replayed).
      const hogFirst = await hog.put({ key: enc.encode('quota/hog'), value: enc.encode('again'), clientId: 'hog-0', requestId: 1n });
      assert.equal(hogFirst.replayed, false);
      // Every node holds the same state, session table included.
      await assertSameStateEverywhere(cluster);
    } finally {
      victim.close();
      hog.close();
    }
  });
});

describe('idempotent writes across a restart', function () {
  this.timeout(30_000);

  it('a node restarted on its data dir still answers a retried request id with the first result', async () => {
    const dir = new MemoryDataDir('restart-n1');
    const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };
    const start = async (): Promise<Node> => {
      const ref: { node: Node | null } = { node: null };
      const transport = new GrpcTransport({ selfId: 'n1', onMessage: (m) => ref.node?.receive(m) });
      const node = await Node.start({ clock: systemClock, rng: cryptoRng, id: 'n1', storage: await MemoryStorage.open(dir), transport, initialMembership: membership });
      ref.node = node;
      for (let i = 0; i < 500 && node.status().role !== 'leader'; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(node.status().role, 'leader');
      return node;
    };
    let node = await start();
    try {
      const session = { clientId: 'restart-client', seq: 1 };
      const first = await node.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v1'), session });
      assert.ok(first.ok && first.firstIndex === undefined);
      await node.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v2') });
      await node.stop();
      node = await start();
      const retry = await node.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v1'), session });
      assert.ok(retry.ok);
      assert.equal(retry.firstIndex, first.index);
      assert.equal(dec.decode(await node.get(enc.encode('k'), true)), 'v2');
    } finally {
      await node.stop();
    }
  });
});

/**
 * The public gRPC API end to end over three in-process nodes: KV with leader
 * forwarding, Cluster status / transfer / vote, input validation, health and
 * reflection.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { service as healthService } from 'grpc-health-check';
import { LEADER_METADATA_KEY } from '../../../src/client/error-metadata.js';
import { FORWARDED_METADATA_KEY } from '../../../src/api/leader-forwarder.js';
import { Role, Suffrage } from '../../../src/gen/snapcoord/v1/cluster.js';
import { KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../../../src/fsm/kv-command.js';
import { startTestCluster, type TestCluster } from './harness.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string): Uint8Array => enc.encode(s);

async function rejectsWith(p: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    return e;
  }
  assert.fail(`expected ${grpc.status[code]}, the call succeeded`);
}

describe('api: KV and Cluster services over three nodes', function () {
  this.timeout(30_000);
  let c: TestCluster;

  before(async () => {
    c = await startTestCluster(3);
    await c.waitForLeader();
  });

  after(async () => {
    await c?.stop();
  });

  it('forwards a Put from a follower and reads it linearizably from every node', async () => {
    const leader = await c.waitForLeader();
    const follower = c.followers(leader.id)[0]!;
    const put = await follower.kv.put({ key: b('greeting'), value: b('hello') });
    // The follower handed the proposal to the leader over the peer plane and answers once it applied it itself (as etcd).
    assert.equal(put.header?.memberId, follower.id, 'the follower answered the forwarded write');
    assert.ok((put.header?.revision ?? 0n) > 0n);
    for (const m of c.members) {
      const got = await m.kv.get({ key: b('greeting') });
      assert.equal(got.found, true, `found on ${m.id}`);
      assert.equal(dec.decode(got.kv?.value), 'hello', `value on ${m.id}`);
      assert.equal(got.header?.memberId, m.id);
    }
    const missing = await follower.kv.get({ key: b('nope') });
    assert.equal(missing.found, false);
  });

  it('deletes through a follower and reports the count', async () => {
    const leader = await c.waitForLeader();
    const follower = c.followers(leader.id)[1]!;
    await follower.kv.put({ key: b('doomed'), value: b('x') });
    const del = await follower.kv.delete({ key: b('doomed'), prevKv: true });
    assert.equal(del.deleted, 1n);
    assert.equal(dec.decode(del.prevKv?.value), 'x');
    const again = await follower.kv.delete({ key: b('doomed') });
    assert.equal(again.deleted, 0n);
    assert.equal((await leader.kv.get({ key: b('doomed') })).found, false);
  });

  it('ranges by prefix with a limit', async () => {
    const leader = await c.waitForLeader();
    for (let i = 0; i < 5; i++) await leader.kv.put({ key: b(`r/${i}`), value: b(`v${i}`) });
    const follower = c.followers(leader.id)[0]!;
    const page = await follower.kv.range({ prefix: b('r/'), limit: 3 });
    assert.deepEqual(page.kvs.map((kv) => dec.decode(kv.key)), ['r/0', 'r/1', 'r/2']);
    assert.equal(page.more, true);
    const all = await follower.kv.range({ prefix: b('r/') });
    assert.equal(all.kvs.length, 5);
    assert.equal(all.more, false);
    const serializable = await leader.kv.range({ start: b('r/3'), end: b('r/5'), serializable: true });
    assert.deepEqual(serializable.kvs.map((kv) => dec.decode(kv.value)), ['v3', 'v4']);
  });

  it('answers INVALID_ARGUMENT for bad keys, values and limits', async () => {
    const m = c.members[0]!;
    await rejectsWith(m.kv.put({ key: new Uint8Array(0), value: b('v') }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.kv.put({ key: new Uint8Array(KEY_BYTES_MAX + 1), value: b('v') }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.kv.put({ key: b('k'), value: new Uint8Array(VALUE_BYTES_MAX + 1) }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.kv.get({ key: new Uint8Array(0) }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.kv.delete({ key: new Uint8Array(0) }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.kv.range({ limit: 10_001 }), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.cluster.addMember('', '127.0.0.1:1', false), grpc.status.INVALID_ARGUMENT);
    await rejectsWith(m.cluster.addMember('n9', 'no-port', false), grpc.status.INVALID_ARGUMENT);
  });

  it('a forwarded write that lands on a follower is refused with the leader named', async () => {
    const leader = await c.waitForLeader();
    const follower = c.followers(leader.id)[0]!;
    const md = new grpc.Metadata();
    md.set(FORWARDED_METADATA_KEY, '1');
    const e = await rejectsWith(follower.kv.put({ key: b('k'), value: b('v') }, { metadata: md }), grpc.status.FAILED_PRECONDITION);
    assert.equal(e.details, `not the leader; the leader is ${leader.id} at ${leader.address}`);
    assert.deepEqual(e.metadata.get(LEADER_METADATA_KEY), [`${leader.id}@${leader.address}`]);
  });

  it('Status shows three voters and, on the leader, their match indexes', async () => {
    const leader = await c.waitForLeader();
    const st = await leader.cluster.status();
    assert.equal(st.id, leader.id);
    assert.equal(st.role, Role.ROLE_LEADER);
    assert.equal(st.leaderId, leader.id);
    // leader_address and members' address are peer-plane addresses; the client addresses come beside them.
    assert.equal(st.leaderAddress, leader.api.peerAddress);
    assert.equal(st.leaderClientAddress, leader.address);
    assert.equal(st.members.length, 3);
    assert.deepEqual(st.members.map((m) => m.id).sort(), ['n1', 'n2', 'n3']);
    for (const m of st.members) {
      assert.equal(m.suffrage, Suffrage.SUFFRAGE_VOTER);
      assert.equal(m.address, c.member(m.id).api.peerAddress);
      assert.equal(m.clientAddress, c.member(m.id).address, `client address of ${m.id}, learned over the peer plane`);
      assert.ok(m.matchIndex > 0n, `match index of ${m.id}`);
    }
    assert.ok(st.commitIndex > 0n && st.appliedIndex > 0n);
    const fst = await c.followers(leader.id)[0]!.cluster.status();
    assert.equal(fst.role, Role.ROLE_FOLLOWER);
    assert.equal(fst.leaderId, leader.id);
  });

  it('HashState: nodes at the same applied index answer the same hash, which changes with the state', async () => {
    const leader = await c.waitForLeader();
    await leader.kv.put({ key: b('hash/a'), value: b('1') });
    const settled = async (): Promise<string[]> => {
      for (let i = 0; i < 200; i++) {
        const hs = await Promise.all(c.members.map((m) => m.cluster.hashState()));
        if (hs.every((h) => h.appliedIndex === hs[0]!.appliedIndex && h.sha256 === hs[0]!.sha256)) return hs.map((h) => h.sha256);
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error('hashes never agreed');
    };
    const before = await settled();
    assert.match(before[0]!, /^[0-9a-f]{64}$/);
    await leader.kv.put({ key: b('hash/a'), value: b('2') });
    const after = await settled();
    assert.notEqual(after[0], before[0]);
  });

  it('TransferLeadership from a follower moves leadership to the target', async () => {
    const leader = await c.waitForLeader();
    const [via, target] = c.followers(leader.id) as [typeof leader, typeof leader];
    const res = await via.cluster.transferLeadership(target.id);
    assert.equal(res.leaderId, target.id);
    const now = await c.waitForLeader();
    assert.equal(now.id, target.id);
    // Writes work through the old leader, now a follower.
    await leader.kv.put({ key: b('after-transfer'), value: b('1') });
    assert.equal((await target.kv.get({ key: b('after-transfer') })).found, true);
  });

  it('Vote on a follower makes it the leader; Vote on the leader answers false', async () => {
    const leader = await c.waitForLeader();
    const follower = c.followers(leader.id)[1]!;
    assert.equal((await follower.cluster.vote()).success, true);
    assert.equal(follower.node.status().role, 'leader');
    const now = await c.waitForLeader();
    assert.equal(now.id, follower.id);
    assert.equal((await now.cluster.vote()).success, false);
    await c.followers(now.id)[0]!.kv.put({ key: b('after-vote'), value: b('1') });
  });

  it('health reports SERVING', async () => {
    const m = c.members[0]!;
    const Health = grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'grpc.health.v1.Health');
    const client = new Health(m.address, grpc.credentials.createInsecure()) as unknown as {
      check(req: { service: string }, opts: Partial<grpc.CallOptions>, cb: (e: grpc.ServiceError | null, r: { status: string }) => void): void;
      close(): void;
    };
    try {
      for (const service of ['', 'snapcoord.v1.KVService']) {
        const res = await new Promise<{ status: string }>((resolve, reject) =>
          client.check({ service }, { deadline: Date.now() + 5000 }, (e, r) => (e ? reject(e) : resolve(r))),
        );
        assert.equal(res.status, 'SERVING');
      }
    } finally {
      client.close();
    }
  });

  it('reflection lists the services', async () => {
    const m = c.members[0]!;
    const require = createRequire(import.meta.url);
    const reflectionDir = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
    const def = protoLoader.loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [reflectionDir], keepCase: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & {
        ServerReflectionInfo(): grpc.ClientDuplexStream<object, { list_services_response?: { service: { name: string }[] } }>;
      } } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(m.address, grpc.credentials.createInsecure());
    try {
      const names = await new Promise<string[]>((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on('data', (res) => {
          resolve((res.list_services_response?.service ?? []).map((s: { name: string }) => s.name));
          call.end();
        });
        call.on('error', reject);
        call.write({ list_services: '' });
      });
      for (const s of ['snapcoord.v1.KVService', 'snapcoord.v1.ClusterService', 'grpc.health.v1.Health']) {
        assert.ok(names.includes(s), `${s} in ${names.join(', ')}`);
      }
      // The client plane describes only its own services: RaftService lives on the peer plane.
      assert.ok(!names.includes('snapcoord.v1.RaftService'), names.join(', '));
    } finally {
      client.close();
    }
  });
});

/**
 * Three real `snapcoord serve` processes on 127.0.0.1 (ports from the OS,
 * data in a temp dir): replication, leader failure, catch-up after restart,
 * durability across a full restart, and refusal of a foreign data dir.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import { STARTED_MEMBERS_FILE } from '../../src/node/started-members.js';
import { type NodeAddresses, peersFlag } from '../harness/ports.js';
import { ServeProcess, startServes } from '../harness/serve-process.js';
import { sleep, until } from '../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const IDS = ['n1', 'n2', 'n3'] as const;
type Id = (typeof IDS)[number];


describe('cluster: three serve processes', function () {
  this.timeout(180_000);

  let dir = '';
  /** addresses: each node's client (grpc) and peer listen addresses. */
  let addresses: Record<Id, NodeAddresses>;
  let peers = '';
  const procs = new Map<Id, ServeProcess>();
  const extra: ServeProcess[] = [];
  const kv = new Map<Id, KvClient>();
  const cluster = new Map<Id, ClusterClient>();
  /** acked: every write the cluster acknowledged, key -> value. */
  const acked = new Map<string, string>();

  const start = async (id: Id): Promise<ServeProcess> => {
    const p = new ServeProcess({ id, grpc: addresses[id].grpc, peer: addresses[id].peer, peers, dataDir: join(dir, id) });
    procs.set(id, p);
    // The stdout line names both planes: "listening on grpc <client> peer <peer>".
    assert.deepEqual(await p.ready(), { grpc: addresses[id].grpc, peer: addresses[id].peer });
    return p;
  };

  const leaderOf = (alive: readonly Id[], timeoutMs = 20_000): Promise<Id> =>
    until(`a leader among ${alive.join(', ')}`, timeoutMs, async () => {
      const sts = await Promise.all(alive.map((id) => cluster.get(id)!.status({ deadlineMs: 1_000 })));
      const leader = sts.find((s) => s.role === Role.ROLE_LEADER);
      if (leader === undefined) return undefined;
      return sts.every((s) => s.leaderId === leader.id) ? (leader.id as Id) : undefined;
    });

  /** put writes through `via`, retrying (for 20 s) only what an election explains; records the acknowledged write. */
  const put = async (via: Id, key: string, value: string): Promise<void> => {
    const retryable = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.ABORTED, grpc.status.FAILED_PRECONDITION];
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await kv.get(via)!.put({ key: enc.encode(key), value: enc.encode(value) }, { deadlineMs: 5_000 });
        break;
      } catch (err) {
        // An outcome-unknown put may still apply: retrying the same value is harmless.
        if (!retryable.includes((err as grpc.ServiceError).code) || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
    acked.set(key, value);
  };

  const read = async (via: Id, key: string, serializable = false): Promise<string | undefined> => {
    const res = await kv.get(via)!.get({ key: enc.encode(key), serializable }, { deadlineMs: 5_000 });
    return res.found ? dec.decode(res.kv?.value) : undefined;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-cluster-'));
    // A port taken between freeNodeAddresses() and the bind: the whole cluster again on new ones, fresh data dirs.
    const s = await startServes(IDS, (id, a) => ({ id, grpc: a[id].grpc, peer: a[id].peer, peers: peersFlag(a), dataDir: join(dir, id) }));
    addresses = s.addrs;
    peers = peersFlag(addresses);
    for (const id of IDS) {
      procs.set(id, s.procs[id]);
      // The stdout line names both planes: "listening on grpc <client> peer <peer>".
      assert.deepEqual(await s.procs[id].ready(), { grpc: addresses[id].grpc, peer: addresses[id].peer });
    }
    for (const id of IDS) {
      kv.set(id, new KvClient(addresses[id].grpc));
      cluster.set(id, new ClusterClient(addresses[id].grpc));
    }
  });

  after(async () => {
    for (const c of kv.values()) c.close();
    for (const c of cluster.values()) c.close();
    await Promise.all([...procs.values(), ...extra].map((p) => p.kill('SIGKILL')));
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') {
      for (const [id, p] of procs) console.error(`--- ${id} (last lines)\n${p.lastLines()}`);
    }
  });

  it('elects a leader; a write through one node is read through each', async () => {
    const leader = await leaderOf(IDS);
    const follower = IDS.find((id) => id !== leader)!;
    await put(follower, 'alpha', 'one');
    for (const id of IDS) assert.equal(await read(id, 'alpha'), 'one', `read on ${id}`);
  });

  it('each plane serves only its own services: no KV on the peer port, no Raft on the client port', async () => {
    const raw = (address: string, method: string): Promise<grpc.ServiceError | null> =>
      new Promise((resolve) => {
        const c = new grpc.Client(address, grpc.credentials.createInsecure());
        const ident = (b: Buffer): Buffer => b;
        c.makeUnaryRequest(method, ident, ident, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err) => {
          c.close();
          resolve(err);
        });
      });
    const id = IDS[0];
    assert.equal((await raw(addresses[id].peer, '/snapcoord.v1.KVService/Get'))?.code, grpc.status.UNIMPLEMENTED, 'KV on the peer plane');
    assert.equal((await raw(addresses[id].peer, '/snapcoord.v1.ClusterService/Status'))?.code, grpc.status.UNIMPLEMENTED, 'Status on the peer plane');
    assert.equal((await raw(addresses[id].grpc, '/snapcoord.v1.RaftService/RequestVote'))?.code, grpc.status.UNIMPLEMENTED, 'Raft on the client plane');
    // ... while the client plane answers KV (an empty request: no key) with its own error, not UNIMPLEMENTED.
    const kvOnClient = await raw(addresses[id].grpc, '/snapcoord.v1.KVService/Get');
    assert.notEqual(kvOnClient?.code, grpc.status.UNIMPLEMENTED, String(kvOnClient?.details));
  });

  it('SIGKILL of the leader: a new leader is elected and writes succeed again', async () => {
    const old = await leaderOf(IDS);
    await procs.get(old)!.kill('SIGKILL');
    const alive = IDS.filter((id) => id !== old);
    const leader = await leaderOf(alive);
    assert.notEqual(leader, old);
    await put(alive[0]!, 'beta', 'two');
    await put(alive[1]!, 'gamma', 'three');
    for (const id of alive) assert.equal(await read(id, 'beta'), 'two');

    // Restart it: it catches up with what it missed.
    await start(old);
    const caughtUp = await until(`${old} catches up`, 20_000, async () => ((await read(old, 'gamma', true)) === 'three' ? true : undefined));
    assert.equal(caughtUp, true);
    assert.equal(await read(old, 'beta'), 'two');
    await leaderOf(IDS);
  });

  it('after a restart of every node, every acknowledged write is still there', async () => {
    for (let i = 0; i < 10; i++) await put(IDS[i % 3]!, `bulk/${i}`, `v${i}`);
    await Promise.all(IDS.map((id) => procs.get(id)!.kill('SIGKILL')));
    await Promise.all(IDS.map((id) => start(id)));
    await leaderOf(IDS);
    for (const id of IDS) {
      for (const [key, value] of acked) {
        assert.equal(await until(`read ${key} on ${id}`, 10_000, () => read(id, key)), value, `${key} on ${id}`);
      }
    }
    const range = await kv.get('n1')!.range({ prefix: enc.encode('bulk/'), limit: 5 });
    assert.equal(range.kvs.length, 5);
    assert.equal(range.more, true);
  });

  /** oneNode: a one-node cluster `id` on data dir `name` (in this spec's dir), started; its addresses and process. */
  async function oneNode(id: string, name: string, clusterId?: string): Promise<{ dataDir: string; a: NodeAddresses; owner: ServeProcess }> {
    const dataDir = join(dir, name);
    const { addrs, procs } = await startServes([id], (_, all) => ({ id, grpc: all[id]!.grpc, peer: all[id]!.peer, peers: `${id}=${all[id]!.peer}`, dataDir, ...(clusterId !== undefined ? { clusterId } : {}) }));
    extra.push(procs[id]!);
    return { dataDir, a: addrs[id]!, owner: procs[id]! };
  }

  /** refusedStart: `serve` of `id` at `a` on `dataDir` exits within 20 s with code 2; its output lines. */
  async function refusedStart(id: string, a: NodeAddresses, dataDir: string, clusterId?: string): Promise<string[]> {
    const p = new ServeProcess({ id, grpc: a.grpc, peer: a.peer, peers: `${id}=${a.peer}`, dataDir, ...(clusterId !== undefined ? { clusterId } : {}) });
    extra.push(p);
    await Promise.race([p.exited, sleep(20_000)]);
    assert.equal(p.running, false, 'the process exits');
    assert.equal(p.exitCode, 2, p.output);
    return p.output.trim().split('\n');
  }

  it('a node started on a foreign data dir refuses with a clear error', async () => {
    // Make a data dir that belongs to node x1 of cluster c1.
    const { dataDir, a, owner } = await oneNode('x1', 'foreign', 'c1');
    await owner.kill('SIGTERM');
    assert.equal(owner.exitCode, 0, `clean exit on SIGTERM:\n${owner.lastLines()}`);

    for (const args of [
      { id: 'x2', clusterId: 'c1', wrong: 'node "x1" of cluster "c1", not node "x2" of cluster "c1"' },
      { id: 'x1', clusterId: 'c2', wrong: 'node "x1" of cluster "c1", not node "x1" of cluster "c2"' },
    ]) {
      const lines = await refusedStart(args.id, a, dataDir, args.clusterId);
      assert.equal(lines.length, 1, `one line: ${lines.join('\n')}`);
      assert.match(lines[0]!, /^snapcoord: refusing to start: data dir .* belongs to /);
      assert.ok(lines[0]!.includes(args.wrong), lines[0]);
    }
  });

  it('a node started on a corrupt data dir refuses with a clear error and changes nothing', async () => {
    const { dataDir, a, owner } = await oneNode('y1', 'corrupt');
    await owner.kill('SIGTERM');
    // The pointer to the state machine's generation is garbage: the data dir cannot be trusted.
    await writeFile(join(dataDir, 'STATE'), 'not json at all');
    const lines = await refusedStart('y1', a, dataDir);
    assert.equal(lines.length, 1, `one line: ${lines.join('\n')}`);
    assert.match(lines[0]!, /^snapcoord: .*STATE/);
    assert.equal(await readFile(join(dataDir, 'STATE'), 'utf8'), 'not json at all', 'nothing was rewritten');
  });

  it('a node whose record of members seen running cannot be read refuses with a clear error and exit 2', async () => {
    // Before: the bare errno, exit 1, with serve's client port still listening and its log open meanwhile.
    const { dataDir, a, owner } = await oneNode('s1', 'unreadable-started');
    await owner.kill('SIGTERM');
    await rm(join(dataDir, STARTED_MEMBERS_FILE), { force: true });
    await mkdir(join(dataDir, STARTED_MEMBERS_FILE)); // read as a file: EISDIR
    const lines = await refusedStart('s1', a, dataDir);
    // Its last line says why (the lines before are the client port's warnings, logged as it opened).
    assert.match(lines.at(-1)!, new RegExp(`^snapcoord: refusing to start: data dir .*: cannot read ${STARTED_MEMBERS_FILE}: .*EISDIR`), lines.join('\n'));
    assert.equal(lines.filter((l) => l.startsWith('snapcoord:')).length, 1, lines.join('\n'));
  });

  it('a node whose Raft log lost its CURRENT file refuses with one line and changes nothing; given the file back it starts with its writes', async () => {
    // Before: serve's open made a new, empty RocksDB log over the old one's files (its SSTs deleted) and, at the next
    // start, ran with no term, no vote and no entries.
    const { dataDir: lostDir, a, owner } = await oneNode('z1', 'lost-current');
    const client = new ClusterClient(a.grpc);
    const kvz = new KvClient(a.grpc);
    try {
      await until('z1 leads', 20_000, async () => ((await client.status({ deadlineMs: 1_000 })).role === Role.ROLE_LEADER ? true : undefined));
      for (let i = 0; i < 5; i++) await kvz.put({ key: enc.encode(`lost/${i}`), value: enc.encode(`v${i}`) }, { deadlineMs: 5_000 });
    } finally {
      client.close();
      kvz.close();
    }
    await owner.kill('SIGTERM');
    // A restart in between: the log's records move from its WAL into an SST, which a new database would delete.
    const again = new ServeProcess({ id: 'z1', grpc: a.grpc, peer: a.peer, peers: `z1=${a.peer}`, dataDir: lostDir });
    extra.push(again);
    await again.ready();
    await again.kill('SIGKILL');
    const logDir = join(lostDir, 'log');
    const current = await readFile(join(logDir, 'CURRENT'));
    await rm(join(logDir, 'CURRENT'));
    const listing = async (): Promise<string> => (await readdir(logDir)).sort().join(' ');
    const before = await listing();
    assert.match(before, /\.sst/);
    const lines = await refusedStart('z1', a, lostDir);
    assert.equal(lines.length, 1, `one line: ${lines.join('\n')}`);
    assert.match(lines[0]!, /^snapcoord: .*its Raft log has no .*log\/CURRENT .*refusing to open it/);
    assert.equal(await listing(), before, 'nothing in log/ was touched');
    await writeFile(join(logDir, 'CURRENT'), current);
    const back = new ServeProcess({ id: 'z1', grpc: a.grpc, peer: a.peer, peers: `z1=${a.peer}`, dataDir: lostDir });
    extra.push(back);
    await back.ready();
    const kvb = new KvClient(a.grpc);
    try {
      for (let i = 0; i < 5; i++) {
        const got = await until(`lost/${i} reads back`, 20_000, async () => {
          const r = await kvb.get({ key: enc.encode(`lost/${i}`) }, { deadlineMs: 2_000 }).catch(() => undefined);
          return r?.found === true ? dec.decode(r.kv!.value) : undefined;
        });
        assert.equal(got, `v${i}`);
      }
    } finally {
      kvb.close();
    }
    await back.kill('SIGTERM');
  });
});

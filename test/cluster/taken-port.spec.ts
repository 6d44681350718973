/**
 * A port the harness was given but taken before the process listened on it
 * (CI: `listen EADDRINUSE` of a chaos node): a first start is made again on
 * new ports from the OS (startOnFreshPorts, for ServeCluster and
 * ChaosCluster); a restart keeps its addresses and fails naming the port.
 * The port is taken for real: a listener of this process holds it between
 * freeNodeAddresses and the start.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChaosCluster } from '../chaos/cluster.js';
import { AddressInUseError, addressInUseIn, freeNodeAddresses, type NodeAddresses } from '../harness/ports.js';
import { ServeCluster } from '../harness/serve-cluster.js';
import { startServes, type ServeProcess } from '../harness/serve-process.js';

type Plane = keyof NodeAddresses;

/** hold listens on `address` ("127.0.0.1:port") until closed: the port is taken. */
async function hold(address: string): Promise<Server> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(Number(address.split(':')[1]), '127.0.0.1', () => resolve());
  });
  return s;
}

/** takingFirst: an address source whose first answer has `plane` of every node taken (held in `held`), later ones not. */
function takingFirst(plane: Plane, held: Server[], taken: string[]): (ids: readonly string[]) => Promise<Record<string, NodeAddresses>> {
  let calls = 0;
  return async (ids) => {
    const addrs = await freeNodeAddresses(ids);
    if (calls++ === 0) {
      for (const id of ids) {
        const a = (addrs[id] as NodeAddresses)[plane];
        held.push(await hold(a));
        taken.push(a);
      }
    }
    return addrs;
  };
}

describe('a taken port: first starts retried on new ports, restarts keep theirs', function () {
  this.timeout(120_000);
  const held: Server[] = [];
  const clusters: { stop(): Promise<void> }[] = [];

  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.stop()));
    await Promise.all(held.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
  });

  it('addressInUseIn reads the taken address from a node\'s (Node) or etcd\'s (Go) last words; null when none', () => {
    assert.equal(addressInUseIn('{"level":30}\nsnapcoord: cannot listen on 127.0.0.1:40479: listen EADDRINUSE: address already in use 127.0.0.1:40479\n'), '127.0.0.1:40479');
    assert.equal(addressInUseIn('snapcoord: cannot start the HTTP gateway on 127.0.0.1:39903: listen EADDRINUSE: address already in use 127.0.0.1:39903'), '127.0.0.1:39903');
    assert.equal(addressInUseIn('{"level":"fatal","msg":"listen tcp 127.0.0.1:2380: bind: address already in use"}'), '127.0.0.1:2380');
    assert.equal(addressInUseIn('Error: listen EADDRINUSE'), '');
    assert.equal(addressInUseIn('snapcoord: refusing to start: data dir /tmp/x belongs to node "x1"\nconnect ECONNREFUSED 127.0.0.1:1'), null);
  });

  for (const plane of ['grpc', 'peer', 'http'] as const) {
    it(`ServeCluster.start: a 1-node cluster whose ${plane} port is taken starts on new ports`, async () => {
      const taken: string[] = [];
      const c = await ServeCluster.start({ ids: ['n1'], addresses: takingFirst(plane, held, taken) });
      clusters.push(c);
      const n1 = c.node('n1');
      assert.equal(taken.length, 1);
      assert.notEqual(n1[plane], taken[0], 'the node listens elsewhere than the taken port');
      assert.equal(n1.starts, 1, 'this cluster is the second attempt: its node started once');
      assert.equal((await c.leader()).id, 'n1');
    });
  }

  it('ServeCluster.start with startAttempts 1 (no retry): rejects with an AddressInUseError naming the taken port', async () => {
    const taken: string[] = [];
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-taken-'));
    try {
      await assert.rejects(ServeCluster.start({ ids: ['n1'], dir, addresses: takingFirst('peer', held, taken), startAttempts: 1 }), (err: Error) => {
        assert.ok(err instanceof AddressInUseError, err.stack);
        assert.equal(err.address, taken[0]);
        assert.match(err.message, /at each of 1 starts/);
        assert.ok(err.message.includes(taken[0] as string), err.message);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ServeCluster.start on a caller dir: the retry starts on fresh data dirs and certificates', async () => {
    const taken: string[] = [];
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-taken-'));
    try {
      const c = await ServeCluster.start({ ids: ['n1', 'n2'], dir, tls: true, snapshotDirs: true, addresses: takingFirst('http', held, taken) });
      clusters.push(c);
      assert.equal(taken.length, 2);
      // One membership: the nodes of the second attempt agree on a leader (a data dir of the first would name other peer addresses).
      const l = await c.leader();
      await l.kv.put({ key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') }, { deadlineMs: 5_000 });
    } finally {
      await Promise.all(clusters.splice(0).map((c) => c.stop()));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ChaosCluster.start: a node whose peer port is taken (behind its proxies) starts on new ports', async () => {
    const taken: string[] = [];
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-taken-'));
    try {
      const c = await ChaosCluster.start({ nodes: 1, dir, seed: 1, tls: false, addresses: takingFirst('peer', held, taken) });
      clusters.push(c);
      assert.equal(taken.length, 1);
      assert.notEqual(c.node('n1').peer, taken[0]);
      assert.equal((await c.waitForLeader(20_000)).id, 'n1');
    } finally {
      await Promise.all(clusters.splice(0).map((c) => c.stop()));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('startServes (a spec\'s own serve processes): a taken grpc port is retried on new ports; with attempts 1 it rejects naming the port', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-taken-'));
    const procs: ServeProcess[] = [];
    try {
      const argsOf = (id: string, a: Readonly<Record<string, NodeAddresses>>) => {
        const n = a[id] as NodeAddresses;
        return { id, grpc: n.grpc, peer: n.peer, http: n.http, peers: `${id}=${n.peer}`, dataDir: join(dir, id) };
      };
      const taken: string[] = [];
      const s = await startServes<'s1'>(['s1'], argsOf, { addresses: takingFirst('grpc', held, taken) });
      procs.push(s.procs.s1);
      assert.equal(taken.length, 1);
      assert.notEqual(s.addrs.s1.grpc, taken[0]);
      assert.equal((await s.procs.s1.ready()).grpc, s.addrs.s1.grpc);

      const taken2: string[] = [];
      await assert.rejects(startServes(['s2'], argsOf, { addresses: takingFirst('grpc', held, taken2), attempts: 1 }), (err: Error) => {
        assert.ok(err instanceof AddressInUseError, err.stack);
        assert.equal(err.address, taken2[0]);
        return true;
      });
    } finally {
      await Promise.all(procs.map((p) => p.kill('SIGKILL')));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ServeCluster.restart keeps its addresses: on a taken port it rejects, naming the node, the plane and the port', async () => {
    const c = await ServeCluster.start({ ids: ['n1'] });
    clusters.push(c);
    const n1 = c.node('n1');
    await c.kill('n1');
    const s = await hold(n1.peer);
    held.push(s);
    await assert.rejects(c.restart('n1', 2), (err: Error) => {
      assert.ok(err instanceof AddressInUseError, err.stack);
      assert.equal(err.address, n1.peer);
      assert.ok(err.message.includes(`n1 did not restart: its peer address ${n1.peer} is taken`), err.message);
      return true;
    });
    // Once the port is free again the same node restarts on the same addresses.
    await new Promise<void>((r) => s.close(() => r()));
    held.splice(held.indexOf(s), 1);
    await c.restart('n1');
    assert.equal((await c.leader()).id, 'n1');
  });
});

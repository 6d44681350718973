/**
 * A serve process's shutdown (stopNode) keeps its bound on dead Buffers
 * (startExternalMemoryGc) running until the node has stopped: node.stop()
 * lets a snapshot being made finish, and that snapshot's short-lived Buffers
 * are still noted and scavenged (issue 15: a node's peak RSS in its `stop`).
 * A real node on RocksDB (RocksCluster), its snapshot held at a gate while it
 * stops; the bound's probe counts what it is asked to do.
 */
import assert from 'node:assert/strict';

import { stopNode } from '../../../src/cli/serve.js';
import { noteExternalGarbage, startExternalMemoryGc, type ExternalMemoryProbe } from '../../../src/snapshot/external-memory-gc.js';
import { GatedIo } from '../node/gated-io.js';
import { RocksCluster } from '../node/rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const silent = { debug() {}, info() {}, warn() {}, error() {} };

describe('serve: stopNode', function () {
  this.timeout(60_000);
  let c: RocksCluster | undefined;
  let gate: GatedIo | undefined;
  afterEach(async () => {
    gate?.open();
    await c?.close();
    c = undefined;
  });

  it('stops the bound on dead Buffers after the node: a snapshot finishing during the stop still has its garbage scavenged', async () => {
    const g = new GatedIo();
    gate = g;
    const cluster = await RocksCluster.start(1, { snapshotEntries: 1_000_000 }, {}, { snapshotIo: g.io });
    c = cluster;
    const node = await cluster.waitForLeader();
    for (let i = 0; i < 50; i++) await node.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode('v'.repeat(100)) });
    g.closed = true;
    const made = node.snapshotNow();
    made.catch(() => undefined);
    await until('the snapshot to be held at its gzip', 10_000, () => (g.waiting > 0 ? true : undefined));

    let scavenges = 0;
    const probe: ExternalMemoryProbe = {
      externalBytes: () => 0,
      scavenge: () => {
        scavenges++;
      },
      collect: () => Promise.resolve(),
    };
    const memoryGc = startExternalMemoryGc(probe);
    const m = cluster.member('n1');
    const { api, tasks } = m;
    assert.ok(api !== null && tasks !== null);
    const stopping = stopNode({ id: 'n1', why: 'test', logger: silent, memoryGc, snapshotAgent: { stop() {} }, node, api, tasks });
    // The node is stopping (it refuses writes) and waits for its snapshot.
    await until('the node to be stopping', 10_000, () =>
      node.propose({ op: 'put', key: enc.encode('late'), value: enc.encode('x') }).then(
        () => undefined,
        () => true,
      ),
    );
    noteExternalGarbage(8 * 1024 * 1024);
    assert.equal(scavenges, 1, 'the garbage of the snapshot being finished is scavenged while the node stops');
    g.open();
    await stopping;
    await made;
    m.api = null;
    m.tasks = null;
    m.node = null;
    noteExternalGarbage(8 * 1024 * 1024);
    assert.equal(scavenges, 1, 'the bound is stopped once the node is');
  });

  it('ends the state hashes running (a paced HashState) before it drains the client calls', async () => {
    const order: string[] = [];
    const stateHashStop = new AbortController();
    stateHashStop.signal.addEventListener('abort', () => order.push('state hashes'));
    await stopNode({
      id: 'n1',
      why: 'test',
      logger: silent,
      memoryGc: { stop: () => order.push('memory gc') },
      snapshotAgent: { stop: () => order.push('snapshot agent') },
      stateHashStop,
      node: { status: () => assert.fail('no hand-over asked'), transferLeadership: () => assert.fail('no hand-over asked'), stop: async () => void order.push('node') },
      api: { close: async () => void order.push('client calls') },
      tasks: { close: async () => void order.push('tasks') },
    });
    assert.deepEqual(order, ['snapshot agent', 'state hashes', 'client calls', 'tasks', 'node', 'memory gc']);
  });
});

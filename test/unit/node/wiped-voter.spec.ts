/**
 * A voter that comes back with a new, empty data dir under its id (a lost
 * disk or volume, started again with the same id and --peers, not removed
 * first): its leader still holds the match it acknowledged before the wipe.
 * Real nodes on RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('a voter back with a wiped data dir', function () {
  this.timeout(60_000);
  let c: RocksCluster | null = null;
  afterEach(async () => {
    await c?.close();
    c = null;
  });

  it('under the same leader, it catches up (before: the leader sent it the append after its old match for ever)', async () => {
    const cluster = await RocksCluster.start(3);
    c = cluster;
    const leader = await cluster.waitForLeader();
    const lid = leader.status().id;
    const [wiped, other] = ['n1', 'n2', 'n3'].filter((id) => id !== lid) as [string, string];
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    await until(`${wiped} to apply the writes`, 10_000, () => (cluster.node(wiped).status().applied >= leader.status().commit ? true : undefined));
    await cluster.stop(wiped);
    await rm(join(cluster.dir, wiped), { recursive: true, force: true });
    await cluster.restart(wiped);
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    await until(`${wiped} to catch up`, 20_000, () => (cluster.node(wiped).status().applied >= leader.status().commit ? true : undefined));
    assert.equal(dec.decode((await cluster.node(wiped).get(enc.encode('k/after'), true)) ?? new Uint8Array()), 'x');
    // Caught up, it holds the log again: without the leader, the next one (it or `other`) has the write.
    await cluster.stop(lid);
    const next = await cluster.waitForLeader(15_000);
    assert.ok([wiped, other].includes(next.status().id));
    assert.equal(dec.decode((await next.get(enc.encode('k/after'))) ?? new Uint8Array()), 'x');
  });
});

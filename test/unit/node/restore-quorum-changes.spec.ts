/**
 * After a restore, a change of the voters waits until the voters after it
 * that applied the restore make a quorum of them (simulator seeds 717880,
 * 843202, 844972): the archive lives outside the log, on the voters of its
 * day, and reaches a new configuration only through members that applied it.
 * Real nodes on RocksDB and gRPC (RocksCluster): the followers' applied
 * index travels in their heartbeat answers (AppendEntriesResponse.applied).
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';

import { NodeError } from '../../../src/node/errors.js';
import { RocksCluster } from './rocks-cluster.js';
import { saveArchive } from './save-archive.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

describe('membership changes after a restore (real nodes)', function () {
  this.timeout(90_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('a voter change that would leave the restore\'s holders short of a quorum is refused UNAVAILABLE, nothing changed; made once the member that missed the restore has applied it', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    for (let i = 0; i < 50; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const file = await saveArchive(cluster, leader);
    const [holder = '', away = ''] = cluster.members.filter((m) => m.node !== leader).map((m) => m.id);
    // `away` misses the restore: the archive is staged on the leader and `holder`, who apply it.
    await cluster.stop(away);
    const r = await leader.restore(createReadStream(file));
    await until(`${holder} to apply the restore and say so in a heartbeat answer`, 20_000, () => ((leader.status().progress[holder]?.applied ?? 0) >= r.index ? true : undefined));

    // Without `holder`: {leader, away}, of which only the leader applied it (1 of a quorum of 2).
    await assert.rejects(leader.changeMembership({ op: 'removeNode', nodeId: holder }), (e: unknown) => {
      assert.ok(e instanceof NodeError && e.code === 'unavailable', String(e));
      assert.match(e.message, new RegExp(`removeNode ${holder}: of the voters after it, only ${leader.status().id} has applied entry ${r.index} \\(a restore`));
      return true;
    });
    assert.deepEqual([...leader.status().membership.voters].sort(), cluster.members.map((m) => m.id).sort(), 'nothing changed');

    // `away` back: once it has applied the restore and said so, the same change is made.
    await cluster.restart(away);
    await until(`${away} to apply the restore and say so`, 30_000, () => ((leader.status().progress[away]?.applied ?? 0) >= r.index ? true : undefined));
    await leader.changeMembership({ op: 'removeNode', nodeId: holder });
    assert.ok(!leader.status().membership.voters.includes(holder));
  });
});

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
import { join } from 'node:path';

import { RESTORE_FLOOR_KEY } from '../../../src/fsm/restore-floor.js';
import { NodeError } from '../../../src/node/errors.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
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

  it('a leader restarted after compacting its log past the restore still refuses that change (its state records the restore, not only its log); made once the member that missed it has installed a snapshot past it', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    const first = await cluster.waitForLeader();
    for (let i = 0; i < 20; i++) await first.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const file = await saveArchive(cluster, first);
    const id = first.status().id;
    const [holder = '', away = ''] = cluster.members.filter((m) => m.node !== first).map((m) => m.id);
    await cluster.stop(away);
    const r = await first.restore(createReadStream(file));
    await until(`${holder} to apply the restore`, 20_000, () => ((first.status().progress[holder]?.applied ?? 0) >= r.index ? true : undefined));
    // A snapshot past the restore, the log compacted up to it: the restore entry is in no log this leader reads at its next start.
    await first.snapshotNow();
    assert.ok(first.status().firstIndex > r.index, `log compacted past ${r.index}: first index ${first.status().firstIndex}`);
    await cluster.stop(id);
    await cluster.restart(id);
    // It leads again (`holder`, whose log still holds the entry, hands over if it won the election).
    const leader = await until(`${id} to lead again`, 30_000, async () => {
      const n = cluster.node(id);
      if (n.status().role === 'leader') return n;
      const other = cluster.member(holder).node;
      if (other?.status().role === 'leader') await other.transferLeadership(id, 2_000).catch(() => undefined);
      return undefined;
    });
    assert.ok(leader.status().firstIndex > r.index, 'the restarted leader\'s log starts after the restore entry');
    await leader.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('restart') }); // an entry of its term committed

    // Without `holder`: {leader, away}, of which only the leader applied it. Bounded: without the floor the change is
    // proposed, and it never commits while `away` is down.
    const refusal = Promise.race([
      leader.changeMembership({ op: 'removeNode', nodeId: holder }).then(() => 'made'),
      new Promise<string>((resolve) => setTimeout(() => resolve('neither refused nor made within 10 s'), 10_000).unref()),
    ]);
    await assert.rejects(
      refusal.then((what) => {
        throw new Error(`removeNode ${holder}: ${what}`);
      }),
      (e: unknown) => {
        assert.ok(e instanceof NodeError && e.code === 'unavailable', String(e));
        assert.match(e.message, new RegExp(`removeNode ${holder}: of the voters after it, only ${id} has applied entry ${r.index} \\(a restore`));
        return true;
      },
    );
    assert.deepEqual([...leader.status().membership.voters].sort(), cluster.members.map((m) => m.id).sort(), 'nothing changed');

    // `away` back: the leader's log no longer holds the restore, so `away` installs its snapshot past it, and says so.
    await cluster.restart(away);
    await until(`${away} to install a snapshot past the restore and say so`, 30_000, () => ((leader.status().progress[away]?.applied ?? 0) >= r.index ? true : undefined));
    await leader.changeMembership({ op: 'removeNode', nodeId: holder });
    assert.ok(!leader.status().membership.voters.includes(holder));
  });

  it('a restore record this build cannot read (a later build\'s format) holds no change for good: the state\'s applied index stands for it (a voter change waits until a quorum of the new voters applied up to it), a learner change is made', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    let leader = await cluster.waitForLeader();
    for (let i = 0; i < 5; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    // Every member's state holds a record of another format (as after a rollback from a build that wrote one):
    // written into each stopped member's store at its applied index (the states stay alike).
    for (const m of cluster.members) await cluster.stop(m.id);
    for (const m of cluster.members) {
      const s = await RocksStorage.open(join(cluster.dir, m.id));
      try {
        await s.write({ writes: [{ key: RESTORE_FLOOR_KEY, value: Uint8Array.from([2, 0, 0, 0, 0, 0, 0, 0, 1, 0]) }], appliedIndex: s.appliedIndex() });
      } finally {
        await s.close();
      }
    }
    for (const m of cluster.members) await cluster.restart(m.id);
    leader = await cluster.waitForLeader(20_000);
    await leader.propose({ op: 'put', key: enc.encode('after'), value: enc.encode('restart') }); // an entry of its term committed
    const id = leader.status().id;
    assert.equal((await cluster.member(id).storage?.get(RESTORE_FLOOR_KEY))?.[0], 2, 'the leader\'s state still holds the record of format 2');

    // A learner change leaves the voters as they are: no floor needed.
    await leader.changeMembership({ op: 'addLearner', nodeId: 'n9', address: '127.0.0.1:9' });
    await leader.changeMembership({ op: 'removeNode', nodeId: 'n9' });

    // `away` stopped, then an entry it misses: without `other`, {leader, away} of which only the leader applied
    // up to the leader's applied index: refused UNAVAILABLE (retry), nothing changed. Bounded: taken for 0, the
    // change would be proposed and never commit while `away` is down.
    const [other = '', away = ''] = cluster.members.filter((m) => m.id !== id).map((m) => m.id);
    await cluster.stop(away);
    await leader.propose({ op: 'put', key: enc.encode('missed'), value: enc.encode('by away') });
    const refusal = Promise.race([
      leader.changeMembership({ op: 'removeNode', nodeId: other }).then(() => 'made'),
      new Promise<string>((resolve) => setTimeout(() => resolve('neither refused nor made within 10 s'), 10_000).unref()),
    ]);
    await assert.rejects(refusal.then((what) => Promise.reject(new Error(`removeNode ${other}: ${what}`))), (e: unknown) => {
      assert.ok(e instanceof NodeError && e.code === 'unavailable', String(e));
      assert.match(e.message, new RegExp(`removeNode ${other}: of the voters after it, only ${id} has applied entry`));
      return true;
    });
    assert.deepEqual([...leader.status().membership.voters].sort(), cluster.members.map((m) => m.id).sort(), 'nothing changed');

    // `away` back and caught up: the change is made.
    await cluster.restart(away);
    const target = leader.status().applied;
    await until(`${away} to catch up to ${target} and say so`, 30_000, () => ((leader.status().progress[away]?.applied ?? 0) >= target ? true : undefined));
    await leader.changeMembership({ op: 'removeNode', nodeId: other });
    assert.ok(!leader.status().membership.voters.includes(other));
  });
});

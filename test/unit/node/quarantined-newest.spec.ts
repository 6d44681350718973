/**
 * A leader's newest snapshot found damaged on its disk (an export's chunk
 * check, the scrub) is moved to quarantine; the Raft core had it as the
 * snapshot it offers followers. Before, the core went on offering it: a
 * follower cut off past the log fetched it, got NOT_FOUND, was offered it
 * again, and so on until enough new writes made the leader take another
 * snapshot (with no writes: never). Now the node tells its core at once
 * (RaftNode.snapshotLost: nothing offered until it holds one again) and
 * builds a good snapshot of its state, which the follower then gets.
 * Real nodes on RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { statusOf } from '../../../src/api/cluster-service.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { systemClock } from '../../../src/node/clock.js';
import { DiskGuard } from '../../../src/node/disk-guard.js';
import { silentLogger } from '../../../src/node/logger.js';
import type { Node } from '../../../src/node/node.js';
import { RocksCluster } from './rocks-cluster.js';
import { flipByte } from '../../harness/flip-byte.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

/**
 * cutOffAndQuarantine: stops a follower of `cluster`'s leader, writes 300
 * entries until the leader has compacted past it, has the leader take a
 * snapshot (the one its core then offers), damages that snapshot's archive,
 * runs `beforeQuarantine` and has the leader find it damaged and move it to
 * quarantine.
 */
async function cutOffAndQuarantine(cluster: RocksCluster, beforeQuarantine: (leader: Node) => void | Promise<void> = () => undefined) {
  const leader = await cluster.waitForLeader();
  const f = cluster.members.find((m) => m.node !== leader)?.id as string;
  await cluster.stop(f);
  for (let i = 0; i < 300; i += 50) {
    await Promise.all(Array.from({ length: 50 }, (_, j) => leader.propose({ op: 'put', key: enc.encode(`k/${i + j}`), value: enc.encode('x'.repeat(100)) })));
  }
  await until('the leader to compact past the stopped follower', 30_000, () => (leader.status().firstIndex > 50 ? true : undefined));
  const sm = cluster.member(leader.id).snapshots;
  assert.ok(sm !== null);
  // A snapshot of the state now (none other due after it: no more writes), the one the core names.
  const taken = await leader.snapshotNow();
  await until('the core to name it', 30_000, () => (leader.status().snapshotIndex === taken.index && sm.newestMeta()?.digest === taken.digest ? true : undefined));
  const newest = (await sm.store.list()).find((s) => s.meta.index === taken.index && s.archiveSha256 === taken.digest);
  assert.ok(newest !== undefined);
  await flipByte(newest.path);
  await beforeQuarantine(leader);
  assert.equal(await leader.quarantineDamagedSnapshot(newest.id), true, 'found damaged and moved to quarantine');
  return { leader, f, sm, taken, newest };
}

describe('node: a quarantined newest snapshot is rebuilt, not offered', function () {
  this.timeout(120_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  it('a follower cut off past the log gets a good snapshot with no new writes after the quarantine', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 100, trailingEntries: 10, retain: 2 }, { electionTimeoutTicks: 60 });
    const cluster = c;
    const { leader, f, sm, newest } = await cutOffAndQuarantine(cluster);

    await cluster.restart(f);
    const fn = cluster.node(f);
    await until(`${f} to install a snapshot`, 30_000, () => (fn.snapshotStats.installed > 0 ? true : undefined)).catch((err: Error) => {
      throw new Error(`${err.message}; fetch failures ${fn.snapshotStats.fetchFailures}; leader's snapshot ${leader.status().snapshotIndex}\n${cluster.recentLog(leader.id, 30)}`);
    });
    assert.equal(fn.snapshotStats.fetchFailures, 0, 'the quarantined snapshot was never offered');
    assert.notEqual(sm.newestMeta()?.digest, newest.archiveSha256, 'the leader holds a new snapshot');
    assert.ok((sm.newestMeta()?.index ?? 0) >= newest.meta.index);
    await until(`${f} to catch up`, 30_000, () => (fn.status().applied >= leader.status().commit ? true : undefined));
    assert.equal(await cluster.member(f).storage?.stateDigest(), await cluster.member(leader.id).storage?.stateDigest());
  });

  /**
   * The same, but the leader's disk then refuses every snapshot write (EIO),
   * so rebuilding fails, again and again (the node's backoff, up to 60 s).
   * Before, the leader kept leading with nothing to offer: the follower cut
   * off past the log waited for as long as the disk stayed bad. Now leadership
   * goes at once to the other voter, which holds a snapshot and brings the
   * follower up to date (RaftNode.snapshotRebuildFailed); the old leader, its
   * snapshot still lost, stands for no election, so leadership does not come
   * back to it.
   */
  it('a leader whose rebuild fails hands leadership to a voter that holds a snapshot, and the follower cut off catches up', async () => {
    let failWritesUnder: string | null = null;
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (path, flags, mode) => {
        if (failWritesUnder !== null && flags !== 'r' && path.startsWith(failWritesUnder)) {
          throw Object.assign(new Error(`EIO: i/o error, open '${path}'`), { code: 'EIO', errno: -5, syscall: 'open', path });
        }
        return nodeSnapshotIo.open(path, flags, mode);
      },
    };
    c = await RocksCluster.start(3, { snapshotEntries: 100, trailingEntries: 10, retain: 2 }, { electionTimeoutTicks: 60 }, { snapshotIo: io });
    const cluster = c;
    const { leader, f, sm, taken } = await cutOffAndQuarantine(cluster, async (l) => {
      // The stopped follower silent for over an election timeout (600 ms) first: one heard within it counts as
      // waiting for a snapshot (RaftStatus.snapshotStranded), and the hand-over below came before the follower's
      // restart (a run in eight under load).
      await new Promise((r) => setTimeout(r, 2_000));
      failWritesUnder = join(cluster.dir, l.id);
    });
    const other = cluster.members.find((m) => m.id !== leader.id && m.id !== f)?.id as string;
    const otherNode = cluster.node(other);
    await until(`${other} to hold a snapshot`, 30_000, () => (otherNode.status().snapshotIndex > 0 ? true : undefined));
    await until('the rebuild to fail', 30_000, () => (/automatic snapshot failed/.test(cluster.recentLog(leader.id)) ? true : undefined));
    assert.equal(leader.status().role, 'leader', 'no follower needs a snapshot yet: leadership stays');
    // `cluster status` is told (StatusResponse.snapshot_loss, from the real node's status): nobody waits yet, the
    // rebuild failed, no hand-over.
    const loss = await until('Status to carry the failed rebuild', 10_000, () => statusOf(leader).snapshotLoss);
    assert.deepEqual(loss, { stranded: [], rebuildFailed: true, handOffTo: '' });

    await cluster.restart(f);
    const fn = cluster.node(f);
    // The new leader offers its snapshot, or sends the entries if its own log still holds them (a follower compacts
    // no further than its leader's announced snapshot): either way the follower catches up.
    await until(`${f} to catch up`, 30_000, () => (fn.status().applied >= taken.index && fn.status().applied >= otherNode.status().commit ? true : undefined)).catch((err: Error) => {
      throw new Error(`${err.message}; leader ${cluster.members.find((m) => m.node?.status().role === 'leader')?.id}\n${cluster.recentLog(leader.id, 30)}`);
    });
    assert.equal(fn.snapshotStats.fetchFailures, 0, 'the quarantined snapshot was never offered');
    assert.equal(otherNode.status().role, 'leader', `${other}, which holds a snapshot, leads`);
    assert.ok((sm.newestMeta()?.index ?? 0) < taken.index, 'the old leader still holds no snapshot of its state');
    assert.equal(await cluster.member(f).storage?.stateDigest(), await cluster.member(other).storage?.stateDigest());
    // The old leader, its snapshot still lost, stands for no election: leadership stays with the one that can offer it.
    await new Promise((r) => setTimeout(r, 2_000));
    assert.equal(otherNode.status().role, 'leader');
    assert.ok(/handing leadership to/.test(cluster.recentLog(leader.id, 400)), 'the hand-over is logged');
  });

  /**
   * The same with the leader's disk below its free-space reserve
   * (--min-free-bytes) when the snapshot is lost: no rebuild is even tried
   * (none is taken on a full disk), which counts as a failed one. Before,
   * nothing told the core, and the leader kept leading.
   */
  it('a leader whose disk is below its reserve when its snapshot is lost hands leadership over too', async () => {
    const guards = new Map<string, DiskGuard>();
    const diskGuardFor = (id: string, dataDir: string): DiskGuard => {
      const g = new DiskGuard(dataDir, 0, silentLogger, systemClock, 50);
      guards.set(id, g);
      return g;
    };
    c = await RocksCluster.start(3, { snapshotEntries: 100, trailingEntries: 10, retain: 2 }, { electionTimeoutTicks: 60 }, { diskGuardFor });
    const cluster = c;
    const { leader, f, sm, taken } = await cutOffAndQuarantine(cluster, async (l) => {
      // The reserve raised past what is free: the disk is "full" for this node from its next measurement.
      const g = guards.get(l.id) as DiskGuard;
      (g as { minFreeBytes: number }).minFreeBytes = Number.MAX_SAFE_INTEGER;
      await g.refresh();
    });
    assert.equal(guards.get(leader.id)?.isFull, true);
    const other = cluster.members.find((m) => m.id !== leader.id && m.id !== f)?.id as string;
    const otherNode = cluster.node(other);
    await until(`${other} to hold a snapshot`, 30_000, () => (otherNode.status().snapshotIndex > 0 ? true : undefined));
    await cluster.restart(f);
    const fn = cluster.node(f);
    await until(`${f} to catch up`, 30_000, () => (fn.status().applied >= taken.index && fn.status().applied >= otherNode.status().commit ? true : undefined)).catch((err: Error) => {
      throw new Error(`${err.message}; leader ${cluster.members.find((m) => m.node?.status().role === 'leader')?.id}\n${cluster.recentLog(leader.id, 30)}`);
    });
    assert.equal(otherNode.status().role, 'leader', `${other}, which holds a snapshot, leads`);
    assert.ok((sm.newestMeta()?.index ?? 0) < taken.index, 'the old leader took no snapshot on its full disk');
    assert.equal(await cluster.member(f).storage?.stateDigest(), await cluster.member(other).storage?.stateDigest());
  });
});

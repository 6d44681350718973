import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';

import type { Node } from '../../../src/node/node.js';
import { RocksCluster } from './rocks-cluster.js';
import { saveArchive } from './save-archive.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function dump(n: Node): Promise<[string, string][]> {
  const r = await n.range({ prefix: enc.encode('k/'), limit: 10_000 }, true);
  return r.kvs.map((kv) => [dec.decode(kv.key), dec.decode(kv.value)]);
}

/** restoreOnAll: saves the state, changes it, restores the save and waits until every member applied it; returns the saved records and the restore's index. */
async function restoreOnAll(c: RocksCluster, leader: Node): Promise<{ saved: [string, string][]; index: number }> {
  for (let i = 0; i < 200; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
  const saved = await dump(leader);
  const file = await saveArchive(c, leader);
  await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('changed') });
  await leader.propose({ op: 'delete', key: enc.encode('k/2') });
  const r = await leader.restore(createReadStream(file));
  for (const m of c.members) {
    const n = c.node(m.id);
    await until(`${m.id} to apply the restore`, 30_000, () => (n.status().applied >= r.index ? true : undefined));
  }
  return { saved, index: r.index };
}

/** checkMembers: every member holds `saved` and the same state digest; each follower took the path `followers` counts. */
async function checkMembers(c: RocksCluster, leader: Node, saved: [string, string][], followers: { imageRestores: number; imageFallbacks: number }): Promise<void> {
  const digests = new Set<string>();
  for (const m of c.members) {
    const n = c.node(m.id);
    assert.deepEqual(await dump(n), saved, `state of ${m.id}`);
    digests.add(await n.stateDigest());
    if (n === leader) continue;
    assert.equal(n.snapshotStats.imageRestores, followers.imageRestores, `${m.id}: restores from the leader's image`);
    assert.equal(n.snapshotStats.imageFallbacks, followers.imageFallbacks, `${m.id}: fallbacks to its archive`);
  }
  assert.equal(digests.size, 1, 'every member holds the same state');
}

describe('restore: followers take the leader\'s state image (issue 15)', function () {
  this.timeout(90_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('each follower commits the leader\'s image of the restored state: the same state digest everywhere', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true });
    const leader = await c.waitForLeader();
    const { saved } = await restoreOnAll(c, leader);
    await checkMembers(c, leader, saved, { imageRestores: 1, imageFallbacks: 0 });
    assert.equal(leader.snapshotStats.imagesServed, 2, 'the leader served its image to both followers');
    // Each follower's snapshot of the restored state is the leader's copy, fetched, not one built from its state.
    const restored = leader.status().applied;
    const leaderSnapshots = c.members.find((m) => m.node === leader)?.snapshots;
    assert.ok(leaderSnapshots);
    await until('the leader to keep its copy of the restore as a snapshot', 20_000, () => ((leaderSnapshots.newestMeta()?.index ?? 0) >= restored ? true : undefined));
    const digest = leaderSnapshots.newestMeta()?.digest;
    for (const m of c.members) {
      const sm = m.snapshots;
      assert.ok(sm !== null);
      await until(`${m.id} to keep a snapshot of the restored state`, 20_000, () => ((sm.newestMeta()?.index ?? 0) >= restored ? true : undefined));
      assert.equal(sm.newestMeta()?.digest, digest, `${m.id} keeps the leader's snapshot of the restored state`);
      // and takes it as its snapshot (the core's, compacting the log), without a write to wake it
      const n = c.node(m.id);
      await until(`${m.id} to take its snapshot of the restored state`, 20_000, () => (n.status().snapshotIndex >= restored ? true : undefined));
    }
    // Writes go on after it, on every member.
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    const index = leader.status().applied;
    for (const m of c.members) await until(`${m.id} to apply a write after the restore`, 10_000, () => (c.node(m.id).status().applied >= index ? true : undefined));
  });

  it('a follower whose leader has no image installs from its own copy of the archive', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true });
    const leader = await c.waitForLeader();
    const lead = c.members.find((m) => m.node === leader);
    assert.ok(lead?.storage);
    // The leader exports, but serves nothing: the followers are answered NOT_FOUND once it applied the entry.
    Object.defineProperty(lead.storage, 'stateImage', { value: () => null });
    const { saved } = await restoreOnAll(c, leader);
    await checkMembers(c, leader, saved, { imageRestores: 0, imageFallbacks: 1 });
  });
});

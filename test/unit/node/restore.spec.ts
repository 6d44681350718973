import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';

import { NodeError } from '../../../src/node/errors.js';
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


describe('restore through the log', function () {
  this.timeout(60_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('brings back exactly the saved state on every node, keeping the membership', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 50; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const saved = await dump(leader);
    const file = await saveArchive(c, leader);
    // Change the state after the save: overwrite, delete, add.
    await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('changed') });
    await leader.propose({ op: 'delete', key: enc.encode('k/2') });
    await leader.propose({ op: 'put', key: enc.encode('k/new'), value: enc.encode('new') });
    const membership = leader.status().membership;

    const r = await leader.restore(createReadStream(file));
    assert.ok(r.index > 0);
    for (const m of c.members) {
      const n = c.node(m.id);
      await until(`${m.id} to apply the restore`, 20_000, () => (n.status().applied >= r.index ? true : undefined));
      assert.deepEqual(await dump(n), saved, `state of ${m.id}`);
    }
    assert.deepEqual(leader.status().membership, membership);
    // Writes go on after a restore.
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
  });

  it('a mangled or truncated archive is refused and nothing changes', async () => {
    c = await RocksCluster.start(1, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 20; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const file = await saveArchive(c, leader);
    await leader.propose({ op: 'put', key: enc.encode('k/x'), value: enc.encode('after-save') });
    const before = await dump(leader);
    const applied = leader.status().applied;
    const good = await readFile(file);
    const flipped = Buffer.from(good);
    const mid = Math.floor(flipped.length / 2);
    flipped[mid] = (flipped[mid] ?? 0) ^ 0xff;
    const truncated = good.subarray(0, Math.floor(good.length * 0.7));
    for (const [what, bytes] of [['flipped', flipped], ['truncated', truncated], ['not an archive', Buffer.from('hello')]] as const) {
      await assert.rejects(leader.restore(Readable.from([bytes])), (e: unknown) => e instanceof NodeError && e.code === 'invalid', what);
      assert.deepEqual(await dump(leader), before, `${what}: state unchanged`);
      assert.equal(leader.status().applied, applied, `${what}: nothing proposed`);
    }
  });

  it('a follower that missed the restore entry catches up by snapshot', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 10; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const saved = await dump(leader);
    const file = await saveArchive(c, leader);
    const follower = c.members.find((m) => m.node !== leader)?.id ?? '';
    await c.stop(follower);
    await leader.propose({ op: 'put', key: enc.encode('k/0'), value: enc.encode('changed') });
    const r = await leader.restore(createReadStream(file));
    // The leader snapshots after a restore; compact past the restore so the follower must install.
    await until('a snapshot after the restore', 10_000, () => (leader.status().snapshotIndex >= r.index ? true : undefined));
    // Whichever live node leads now (an install can cost an election), its log no longer reaches back.
    for (const m of c.members) {
      if (m.id === follower) continue;
      const n = c.node(m.id);
      await until(`${m.id} to apply the restore`, 10_000, () => (n.status().applied >= r.index ? true : undefined));
      await n.snapshotNow();
    }
    await c.restart(follower);
    const f = c.node(follower);
    await until('the follower to catch up', 20_000, () => (f.status().applied >= r.index ? true : undefined));
    assert.deepEqual(await dump(f), saved);
    await until('the install to be counted', 10_000, () => (f.snapshotStats.installed > 0 ? true : undefined));
    assert.equal(f.snapshotStats.installed, 1, 'it installed the post-restore snapshot');
  });
});

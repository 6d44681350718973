/**
 * Boot starts from the membership persisted with the log base and never
 * from a state older than the log (issue 14 item 4). Real nodes on RocksDB
 * and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import { BootRefusedError, type Node } from '../../../src/node/node.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';
import { flipByte } from '../../harness/flip-byte.js';

const enc = new TextEncoder();

/** corruptArchive flips one byte in the middle of a stored snapshot's archive. */
async function corruptArchive(storeDir: string, id: string): Promise<void> {
  await flipByte(join(storeDir, id, 'archive.tar.gz'));
}

async function writeKeys(node: Node, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) await node.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
}

describe('node boot and the persisted membership (issue 14 item 4)', function () {
  this.timeout(60_000);
  let c: RocksCluster | undefined;

  afterEach(async () => {
    await c?.close();
    c = undefined;
  });

  /** compactedNode: one node whose log was compacted past two stored snapshots; returns its store dir, newest first. */
  async function compactedNode(): Promise<{ c: RocksCluster; store: string; ids: string[]; base: number }> {
    const cluster = await RocksCluster.start(1, { snapshotEntries: 20, trailingEntries: 2, retain: 2 });
    c = cluster;
    const n1 = await cluster.waitForLeader();
    await writeKeys(n1, 0, 70);
    await until('two snapshots and a compacted log', 10_000, async () => {
      const list = (await cluster.member('n1').snapshots?.store.list()) ?? [];
      return list.length === 2 && n1.status().firstIndex > (list[1]?.meta.index ?? 0) + 1 ? true : undefined;
    });
    // An automatic snapshot may still be under way (and prune one listed here): take the list once it holds still.
    const view = async (): Promise<string> => JSON.stringify([n1.status().firstIndex, ((await cluster.member('n1').snapshots?.store.list()) ?? []).map((s) => s.id)]);
    let seen = await view();
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await view();
      if (now === seen) break;
      seen = now;
    }
    const [first, ids] = JSON.parse(seen) as [number, string[]];
    const base = first - 1;
    await cluster.stop('n1');
    return { c: cluster, store: join(cluster.dir, 'n1', 'snapshots', 'store'), ids, base };
  }

  it('refuses to start when no stored snapshot verifies and the log was compacted', async () => {
    const { c, store, ids, base } = await compactedNode();
    for (const id of ids) await corruptArchive(store, id);
    await assert.rejects(c.restart('n1'), (err: unknown) => {
      assert.ok(err instanceof BootRefusedError, String(err));
      assert.match(err.message, new RegExp(`the log was compacted up to index ${base} `));
      assert.match(err.message, /no stored snapshot verifies \(2 failed verification, 2 of them kept in .*quarantine\)/);
      assert.match(err.message, /Repair: /);
      return true;
    });
  });

  it('refuses to start when the stored snapshots that verify are older than the log base', async () => {
    const { c, store, ids } = await compactedNode();
    const [newest = ''] = ids;
    await corruptArchive(store, newest);
    await assert.rejects(c.restart('n1'), (err: unknown) => {
      assert.ok(err instanceof BootRefusedError, String(err));
      assert.match(err.message, /the newest stored snapshot that verifies is at index \d+ \(1 newer failed verification, 1 of them kept in .*quarantine\)/);
      return true;
    });
    assert.ok((await readdir(store)).length >= 2, 'nothing was deleted');
  });

  it('in a cluster, a follower whose stored snapshots are all corrupt starts without a base and installs its leader\'s snapshot (alone it refuses, above)', async () => {
    const cluster = await RocksCluster.start(3, { snapshotEntries: 20, trailingEntries: 2, retain: 2 });
    c = cluster;
    const leader = await cluster.waitForLeader();
    const f = cluster.members.find((m) => m.node !== leader)?.id as string;
    await writeKeys(leader, 0, 70);
    const store = join(cluster.dir, f, 'snapshots', 'store');
    await until(`${f} to compact its log past a stored snapshot`, 20_000, async () => {
      const list = (await cluster.member(f).snapshots?.store.list()) ?? [];
      return list.length > 0 && cluster.node(f).status().firstIndex > 20 ? true : undefined;
    });
    await cluster.stop(f);
    for (const id of await readdir(store)) await corruptArchive(store, id);
    // Past every voter's next snapshot (snapshotEntries 20, the staggered offsets 0, 3, 6): the leader, whoever it
    // is, compacts its log past f's last entry, so f's catching up needs the leader's snapshot.
    await writeKeys(leader, 70, 100);
    await cluster.restart(f);
    const fn = cluster.node(f);
    assert.ok(fn.status().firstIndex > 20, 'it kept its log');
    await until(`${f} to install a snapshot and catch up`, 30_000, () => (fn.snapshotStats.installed > 0 && fn.status().applied >= leader.status().commit ? true : undefined));
    await writeKeys(leader, 100, 105);
    await until(`${f} to apply later writes`, 10_000, () => (fn.status().applied >= leader.status().commit ? true : undefined));
    assert.equal(new TextDecoder().decode((await fn.get(enc.encode('k/104'))) ?? new Uint8Array()), 'v104');
    assert.equal(await cluster.member(f).storage?.stateDigest(), await cluster.member(leader.status().id).storage?.stateDigest());
  });

  it('starts when the snapshots verify (the control of the two above)', async () => {
    const { c } = await compactedNode();
    await c.restart('n1');
    const n1 = await c.waitForLeader();
    assert.equal(n1.status().applied >= 70, true);
    assert.equal(new TextDecoder().decode((await n1.get(enc.encode('k/69'))) ?? new Uint8Array()), 'v69');
  });

  it('a learner survives restarts, before and after the log is compacted past its conf entry', async () => {
    const cluster = await RocksCluster.start(3, { snapshotEntries: 20, trailingEntries: 2 });
    c = cluster;
    let leader = await cluster.waitForLeader();
    await writeKeys(leader, 0, 3);
    await leader.changeMembership({ op: 'addLearner', nodeId: 'n4', address: '127.0.0.1:9' });
    const hasLearner = (n: Node): boolean => n.status().membership.learners.includes('n4');
    const all = (): string[] => cluster.members.map((m) => m.id);
    await until('every member to know the learner', 10_000, () => (all().every((id) => hasLearner(cluster.node(id))) ? true : undefined));
    // Restart every member with its log still holding the conf entry.
    for (const id of all()) {
      await cluster.stop(id);
      await cluster.restart(id);
      assert.ok(hasLearner(cluster.node(id)), `${id} lost the learner at a restart`);
    }
    leader = await cluster.waitForLeader();
    // Write until every member compacted past the conf entry, then restart them all again.
    await writeKeys(leader, 3, 90);
    await until('every member to compact', 20_000, () => (all().every((id) => cluster.node(id).status().firstIndex > 10) ? true : undefined));
    for (const id of all()) {
      await cluster.stop(id);
      await cluster.restart(id);
      assert.ok(hasLearner(cluster.node(id)), `${id} lost the learner at a restart after compaction`);
    }
    leader = await cluster.waitForLeader();
    assert.ok(hasLearner(leader));
    assert.deepEqual([...leader.status().membership.voters].sort(), ['n1', 'n2', 'n3']);
  });
});

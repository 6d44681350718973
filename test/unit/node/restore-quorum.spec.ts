/**
 * A restore entry commits only once a quorum holds a durable, verified copy
 * of its archive (issue 14 item 3): the leader stages the upload on the other
 * voters (StageArchive: each pulls it with FetchSnapshot) and proposes only
 * then; and retention never deletes an archive a restore entry in the log
 * names. Real nodes on RocksDB with the gRPC peer plane (RocksCluster).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { NodeError } from '../../../src/node/errors.js';
import type { Node } from '../../../src/node/node.js';
import type { SnapshotManager } from '../../../src/node/snapshots.js';
import { RocksCluster, waitUntil, type RocksMember } from './rocks-cluster.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function dump(n: Node): Promise<[string, string][]> {
  const r = await n.range({ prefix: enc.encode('k/'), limit: 10_000 }, true);
  return r.kvs.map((kv) => [dec.decode(kv.key), dec.decode(kv.value)]);
}

/** saveArchive downloads a snapshot of the leader's state into a file. */
async function saveArchive(c: RocksCluster, leader: Node, name: string): Promise<string> {
  const handle = await leader.downloadSnapshot(false);
  try {
    const file = join(c.dir, `${name}.tgz`);
    await writeFile(file, handle.createReadStream());
    return file;
  } finally {
    handle.release();
  }
}

/** breakFetches makes member m's uploads fetches fail: all of them, or only those of a restore entry being applied (not staging). */
function breakFetches(m: RocksMember, which: 'all' | 'apply'): () => void {
  const sm = m.snapshots as SnapshotManager;
  const original = sm.fetchUpload.bind(sm);
  sm.fetchUpload = (...args: Parameters<SnapshotManager['fetchUpload']>) => {
    const staging = args[3]?.checkRecords === true;
    if (which === 'all' || !staging) return Promise.reject(new Error(`injected: ${m.id} cannot fetch`));
    return original(...args);
  };
  return () => {
    sm.fetchUpload = original;
  };
}

describe('restore: the archive is staged on a quorum before the entry is proposed', function () {
  this.timeout(90_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  async function prepared(): Promise<{ leader: Node; file: string; saved: [string, string][]; digest: string }> {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    for (let i = 0; i < 40; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const saved = await dump(leader);
    const file = await saveArchive(c, leader, 'saved');
    await leader.propose({ op: 'put', key: enc.encode('k/0'), value: enc.encode('changed after the save') });
    await leader.propose({ op: 'put', key: enc.encode('k/zz'), value: enc.encode('added after the save') });
    const digest = createHash('sha256').update(await readFile(file)).digest('hex');
    return { leader, file, saved, digest };
  }

  it('every voter holds the archive before the entry commits: the uploader is stopped right after, the others apply it and go on', async () => {
    const { leader, file, saved, digest } = await prepared();
    const followers = c.members.filter((m) => m.node !== leader);
    // The followers may not fetch the archive when they apply the entry: only staging can give it to them.
    for (const f of followers) breakFetches(f, 'apply');
    const r = await leader.restore(createReadStream(file));
    for (const f of followers) assert.notEqual(await f.snapshots?.findUpload(digest), null, `${f.id} holds the archive`);
    await c.stop(leader.id);
    const next = await c.waitForLeader(20_000);
    for (const f of followers) {
      const n = c.node(f.id);
      await waitUntil(`${f.id} to apply the restore`, 20_000, () => (n.status().applied >= r.index ? true : undefined));
      assert.deepEqual(await dump(n), saved, `state of ${f.id}`);
      assert.equal(n.status().restoreFailure, null);
    }
    await next.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    const other = followers.map((f) => c.node(f.id)).find((n) => n !== next) as Node;
    await waitUntil('the write to reach the other survivor', 10_000, () => (other.status().applied >= next.status().commit ? true : undefined));
    assert.equal(dec.decode((await other.get(enc.encode('k/after'), true)) ?? new Uint8Array()), 'x');
  });

  it('one of two followers cannot store the archive: a quorum (leader and the other) still holds it and the restore commits', async () => {
    const { leader, file, saved, digest } = await prepared();
    const [bad, good] = c.members.filter((m) => m.node !== leader) as [RocksMember, RocksMember];
    const heal = breakFetches(bad, 'all');
    const r = await leader.restore(createReadStream(file));
    assert.notEqual(await good.snapshots?.findUpload(digest), null, `${good.id} staged it`);
    assert.equal(await bad.snapshots?.findUpload(digest), null, `${bad.id} could not`);
    heal(); // it fetches the archive from a holder when it applies the entry
    for (const m of c.members) {
      const n = c.node(m.id);
      await waitUntil(`${m.id} to apply the restore`, 20_000, () => (n.status().applied >= r.index ? true : undefined));
      assert.deepEqual(await dump(n), saved, `state of ${m.id}`);
    }
  });

  it('neither follower can store it: refused with UNAVAILABLE, nothing proposed, nothing changed', async () => {
    const { leader, file } = await prepared();
    for (const f of c.members.filter((m) => m.node !== leader)) breakFetches(f, 'all');
    const before = await dump(leader);
    const lastIndex = leader.status().lastIndex;
    await assert.rejects(leader.restore(createReadStream(file)), (e: unknown) => {
      assert.ok(e instanceof NodeError, String(e));
      assert.equal(e.code, 'unavailable');
      assert.match(e.message, /not proposed, nothing changed/);
      assert.match(e.message, /1 of 3 voters hold a durable copy/);
      assert.match(e.message, /cannot fetch/);
      return true;
    });
    assert.equal(leader.status().lastIndex, lastIndex, 'no entry was proposed');
    assert.deepEqual(await dump(leader), before);
    // The cluster goes on.
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
  });

  it('a follower that is down does not count: with two of three down the restore is refused (bounded wait)', async () => {
    const { leader, file } = await prepared();
    const lastIndex = leader.status().lastIndex;
    const followers = c.members.filter((m) => m.node !== leader);
    // Stop them without an election in between: the leader refuses at once, unreachable peers fail fast.
    await Promise.all(followers.map((f) => c.stop(f.id)));
    const t0 = Date.now();
    await assert.rejects(leader.restore(createReadStream(file)), (e: unknown) => e instanceof NodeError && (e.code === 'unavailable' || e.code === 'notLeader'));
    assert.ok(Date.now() - t0 < 60_000);
    assert.equal(leader.status().lastIndex, lastIndex, 'no restore entry was proposed');
  });
});

describe('restore: retention keeps the archives the log still names', function () {
  this.timeout(90_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('four restores keep four archives on every node while their entries are in the log (restarts too); after compaction only the two most recent stay', async () => {
    // A restore is followed by a snapshot; 10 trailing entries keep the four restore entries in the log.
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 10 });
    const leader = await c.waitForLeader();
    const files: string[] = [];
    for (let a = 0; a < 4; a++) {
      await leader.propose({ op: 'put', key: enc.encode(`k/${a}`), value: enc.encode(`archive ${a}`) });
      files.push(await saveArchive(c, leader, `a${a}`));
    }
    const digests: string[] = [];
    for (const f of files) digests.push((await leader.restore(createReadStream(f))).archive.archiveSha256);
    // A follower staged them (no upload of its own pins them); a snapshot there prunes its uploads.
    const f = c.members.find((m) => m.node !== leader) as RocksMember;
    const held = async (): Promise<string[]> => [...new Set((await (f.snapshots as SnapshotManager).uploads.list()).map((u) => u.archiveSha256))].sort();
    const n = c.node(f.id);
    await waitUntil(`${f.id} to apply the restores`, 20_000, () => (n.status().applied >= leader.status().commit ? true : undefined));
    await n.snapshotNow();
    assert.deepEqual(await held(), [...digests].sort(), 'all four kept while the log names them (the old retention kept 2)');
    // After a restart the restore entries are found in the log again.
    await c.stop(f.id);
    await c.restart(f.id);
    const n2 = c.node(f.id);
    await waitUntil(`${f.id} to catch up`, 20_000, () => (n2.status().applied >= leader.status().commit ? true : undefined));
    await n2.snapshotNow();
    assert.deepEqual(await held(), [...digests].sort(), 'all four kept after a restart');
    // Writes, then a snapshot compacts the log past every restore entry: only the two most recent uploads stay.
    for (let i = 0; i < 20; i++) await leader.propose({ op: 'put', key: enc.encode(`k/later/${i}`), value: enc.encode('x') });
    await waitUntil(`${f.id} to apply the writes`, 20_000, () => (n2.status().applied >= leader.status().commit ? true : undefined));
    // A follower compacts no further than its leader's announced snapshot: the leader snapshots first.
    const leaderSnapshot = await leader.snapshotNow();
    await waitUntil(`${f.id} to hear of the leader's snapshot`, 5_000, () => (n2.status().compactionFloor >= leaderSnapshot.index ? true : undefined));
    await n2.snapshotNow();
    assert.ok(n2.status().firstIndex > n2.status().snapshotIndex - 11, 'compacted past the restore entries');
    const left = await held();
    assert.equal(left.length, 2, `two left: ${left.join(', ')}`);
  });
});

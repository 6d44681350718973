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
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { NodeError } from '../../../src/node/errors.js';
import type { Node } from '../../../src/node/node.js';
import type { SnapshotManager } from '../../../src/node/snapshots.js';
import { poisonedArchives } from '../snapshot/helpers.js';
import { RocksCluster, type RocksMember } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
    const staging = args[3]?.staging === true;
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
      await until(`${f.id} to apply the restore`, 20_000, () => (n.status().applied >= r.index ? true : undefined));
      assert.deepEqual(await dump(n), saved, `state of ${f.id}`);
      assert.equal(n.status().restoreFailure, null);
    }
    await next.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    const other = followers.map((f) => c.node(f.id)).find((n) => n !== next) as Node;
    await until('the write to reach the other survivor', 10_000, () => (other.status().applied >= next.status().commit ? true : undefined));
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
      await until(`${m.id} to apply the restore`, 20_000, () => (n.status().applied >= r.index ? true : undefined));
      assert.deepEqual(await dump(n), saved, `state of ${m.id}`);
    }
  });

  it('a node stopping while it fetches a restore archive at apply time ends that fetch', async () => {
    const { leader, file } = await prepared();
    const [bad] = c.members.filter((m) => m.node !== leader) as [RocksMember, RocksMember];
    const sm = bad.snapshots as SnapshotManager;
    // bad cannot stage; when it applies the entry its fetch hangs until its signal aborts.
    const applySignals: (AbortSignal | undefined)[] = [];
    sm.fetchUpload = (...args: Parameters<SnapshotManager['fetchUpload']>) => {
      if (args[3]?.staging === true) return Promise.reject(new Error(`injected: ${bad.id} cannot stage`));
      const signal = args[3]?.signal;
      applySignals.push(signal);
      return new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(new Error('fetch aborted')), { once: true }));
    };
    await leader.restore(createReadStream(file));
    await until(`${bad.id} to fetch the archive to apply it`, 20_000, () => (applySignals.length > 0 ? true : undefined));
    assert.equal(applySignals[0]?.aborted, false);
    await c.stop(bad.id);
    assert.equal(applySignals[0]?.aborted, true, 'stop() aborted the fetch');
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

describe('restore: a staging nobody waits for any more stops', function () {
  this.timeout(60_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('the fetch goes on while one caller still waits and stops when the last one cancels; a later request stages afresh', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('v') });
    const lsm = c.members.find((m) => m.node === leader)?.snapshots as SnapshotManager;
    const stored = await lsm.importUpload(createReadStream(await saveArchive(c, leader, 'cancel')), 60_000);
    const archive = { index: stored.meta.index, term: stored.meta.term, sizeBytes: stored.archiveBytes, digest: stored.archiveSha256 };
    const f = c.members.find((m) => m.node !== leader) as RocksMember;
    const sm = f.snapshots as SnapshotManager;
    // f's fetch hangs until its signal aborts (a slow leader disk), so the callers' cancels decide.
    const original = sm.fetchUpload.bind(sm);
    const fetchSignals: AbortSignal[] = [];
    sm.fetchUpload = (...args: Parameters<SnapshotManager['fetchUpload']>) => {
      const signal = args[3]?.signal;
      if (signal === undefined) return Promise.reject(new Error('a staging fetch without a signal'));
      fetchSignals.push(signal);
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('fetch aborted')), { once: true }));
    };
    const n = c.node(f.id);
    const p = { from: leader.id, to: f.id, term: leader.status().term, archive };
    const first = new AbortController();
    const second = new AbortController();
    const a = n.stageArchive(p, first.signal);
    const b = n.stageArchive(p, second.signal);
    await until('the fetch to start', 5_000, () => (fetchSignals.length > 0 ? true : undefined));
    first.abort();
    await assert.rejects(a, (e: unknown) => (e as { code?: number }).code === 1);
    await sleep(100);
    assert.equal(fetchSignals.length, 1, 'one fetch shared by both requests');
    assert.equal(fetchSignals[0]?.aborted, false, 'the fetch goes on for the caller still waiting');
    second.abort();
    await assert.rejects(b, (e: unknown) => (e as { code?: number }).code === 1);
    assert.equal(fetchSignals[0]?.aborted, true, 'nobody waits: the fetch stopped');
    // A new request after that fetches again, and completes.
    sm.fetchUpload = original;
    await n.stageArchive(p, new AbortController().signal);
    assert.notEqual(await sm.findUpload(archive.digest), null);
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
    await until(`${f.id} to apply the restores`, 20_000, () => (n.status().applied >= leader.status().commit ? true : undefined));
    await n.snapshotNow();
    assert.deepEqual(await held(), [...digests].sort(), 'all four kept while the log names them (the old retention kept 2)');
    // After a restart the restore entries are found in the log again.
    await c.stop(f.id);
    await c.restart(f.id);
    const n2 = c.node(f.id);
    await until(`${f.id} to catch up`, 20_000, () => (n2.status().applied >= leader.status().commit ? true : undefined));
    await n2.snapshotNow();
    assert.deepEqual(await held(), [...digests].sort(), 'all four kept after a restart');
    // Writes, then a snapshot compacts the log past every restore entry: only the two most recent uploads stay.
    for (let i = 0; i < 20; i++) await leader.propose({ op: 'put', key: enc.encode(`k/later/${i}`), value: enc.encode('x') });
    await until(`${f.id} to apply the writes`, 20_000, () => (n2.status().applied >= leader.status().commit ? true : undefined));
    // A follower compacts no further than its leader's announced snapshot: the leader snapshots first.
    const leaderSnapshot = await leader.snapshotNow();
    await until(`${f.id} to hear of the leader's snapshot`, 5_000, () => (n2.status().compactionFloor >= leaderSnapshot.index ? true : undefined));
    await n2.snapshotNow();
    assert.ok(n2.status().firstIndex > n2.status().snapshotIndex - 11, 'compacted past the restore entries');
    const left = await held();
    assert.equal(left.length, 2, `two left: ${left.join(', ')}`);
  });

  it('archives staged for restores not yet proposed are not pruned by other restores or snapshots', async () => {
    // Four restores staged at once on a follower (no entry in its log yet): the two-newest rule alone would
    // delete two of them and the quorum's durable copies would be gone before their entries commit.
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 10 });
    const leader = await c.waitForLeader();
    const lsm = c.members.find((m) => m.node === leader)?.snapshots as SnapshotManager;
    const archives: { index: number; term: number; sizeBytes: number; digest: string }[] = [];
    for (let a = 0; a < 4; a++) {
      await leader.propose({ op: 'put', key: enc.encode(`k/${a}`), value: enc.encode(`archive ${a}`) });
      const stored = await lsm.importUpload(createReadStream(await saveArchive(c, leader, `s${a}`)), 60_000);
      archives.push({ index: stored.meta.index, term: stored.meta.term, sizeBytes: stored.archiveBytes, digest: stored.archiveSha256 });
    }
    const f = c.members.find((m) => m.node !== leader) as RocksMember;
    const n = c.node(f.id);
    for (const archive of archives) await n.stageArchive({ from: leader.id, to: f.id, term: leader.status().term, archive });
    await n.snapshotNow(); // prunes the uploads
    const held = [...new Set((await (f.snapshots as SnapshotManager).uploads.list()).map((u) => u.archiveSha256))].sort();
    assert.deepEqual(held, archives.map((a) => a.digest).sort(), 'all four staged archives kept');
  });
});

describe('restore: only the leader may have a follower stage an archive (review11)', function () {
  this.timeout(90_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('a member that is not the leader, or a request of another term, is refused and nothing is fetched or kept; the leader\'s request is served', async () => {
    // Before, any member could name an archive it held: every node fetched it from that member and kept it
    // (up to 16 staged archives protected from pruning, down to the disk's reserve).
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('v') });
    const [f1, f2] = c.members.filter((m) => m.node !== leader) as [RocksMember, RocksMember];
    const n1 = c.node(f1.id);
    await until(`${f1.id} to follow ${leader.id}`, 10_000, () => (n1.status().leader === leader.id ? true : undefined));
    const term = leader.status().term;
    // f2 holds an archive of its own and asks f1 to stage it.
    const stored = await (f2.snapshots as SnapshotManager).importUpload(createReadStream(await saveArchive(c, leader, 'by-f2')), 60_000);
    const archive = { index: stored.meta.index, term: stored.meta.term, sizeBytes: stored.archiveBytes, digest: stored.archiveSha256 };
    const f1sm = f1.snapshots as SnapshotManager;
    const codeOf = async (p: Promise<void>): Promise<number | undefined> => {
      try {
        await p;
        return undefined;
      } catch (e) {
        return (e as { code?: number }).code;
      }
    };
    assert.equal(await codeOf(n1.stageArchive({ from: f2.id, to: f1.id, term, archive })), 7, 'PERMISSION_DENIED: not the leader');
    assert.equal(await codeOf(n1.stageArchive({ from: f2.id, to: f1.id, term: term + 1, archive })), 9, 'FAILED_PRECONDITION: another term');
    assert.equal(await codeOf(n1.stageArchive({ from: leader.id, to: f1.id, term: term - 1, archive })), 9, 'FAILED_PRECONDITION: an earlier term');
    assert.equal(await f1sm.findUpload(archive.digest), null, 'nothing fetched or kept');
    // The control: the same archive, held by the leader and asked by it, is staged.
    const lsm = c.members.find((m) => m.node === leader)?.snapshots as SnapshotManager;
    const mine = await lsm.importUpload(createReadStream(join(c.dir, 'by-f2.tgz')), 60_000);
    assert.equal(mine.archiveSha256, archive.digest);
    await n1.stageArchive({ from: leader.id, to: f1.id, term, archive });
    assert.notEqual(await f1sm.findUpload(archive.digest), null);
  });
});

describe('restore: staging trusts the digest the leader checked, and only the bytes that hash to it', function () {
  this.timeout(90_000);
  let c: RocksCluster;

  afterEach(async () => {
    await c?.close();
  });

  it('a follower keeps the bytes the leader vouched for without decoding their records again; a byte changed on the way is refused and nothing is kept', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    const leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('v') });
    const lsm = c.members.find((m) => m.node === leader)?.snapshots as SnapshotManager;
    const [f1, f2] = c.members.filter((m) => m.node !== leader) as [RocksMember, RocksMember];
    const term = leader.status().term;

    // An archive with keys out of order put straight into the leader's uploads (importUpload, the only
    // way in, would refuse it): a follower asked to stage it holds it byte for byte, because it hashes
    // what it writes and checks the size, and does not decode the records the leader vouched for.
    const poisoned = (await poisonedArchives()).find((p) => p.name === 'keys out of order');
    assert.ok(poisoned !== undefined);
    const vouched = await lsm.uploads.importArchive(Readable.from([poisoned.archive]), { maxBytes: 1e9 });
    const vouchedTarget = { index: vouched.meta.index, term: vouched.meta.term, sizeBytes: vouched.archiveBytes, digest: vouched.archiveSha256 };
    await c.node(f1.id).stageArchive({ from: leader.id, to: f1.id, term, archive: vouchedTarget });
    const held = await (f1.snapshots as SnapshotManager).findUpload(vouched.archiveSha256);
    assert.ok(held !== null, 'staged without a record check');
    assert.deepEqual(await readFile(held.path), poisoned.archive, 'the very bytes the leader holds');

    // A good archive whose copy on the leader's disk has one byte changed after the leader checked it:
    // what reaches the follower does not hash to the digest it was asked for, so it is refused.
    const good = await lsm.importUpload(createReadStream(await saveArchive(c, leader, 'good')), 60_000);
    // (the leader holds it twice: the snapshot the download made, and the upload; both are changed)
    const copies = [...(await lsm.store.list()), ...(await lsm.uploads.list())].filter((s) => s.archiveSha256 === good.archiveSha256);
    assert.equal(copies.length, 2);
    for (const copy of copies) {
      const bytes = await readFile(copy.path);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      await writeFile(copy.path, bytes);
    }
    const target = { index: good.meta.index, term: good.meta.term, sizeBytes: good.archiveBytes, digest: good.archiveSha256 };
    await assert.rejects(c.node(f2.id).stageArchive({ from: leader.id, to: f2.id, term, archive: target }));
    const f2sm = f2.snapshots as SnapshotManager;
    assert.equal(await f2sm.findUpload(good.archiveSha256), null, 'nothing kept');
    const leftovers = (await readdir(f2sm.uploads.dir)).filter((n) => n.endsWith('.tmp'));
    assert.deepEqual(leftovers, [], 'no partial copy left behind');
  });
});

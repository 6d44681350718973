import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';

import { NodeError } from '../../../src/node/errors.js';
import type { Node } from '../../../src/node/node.js';
import { toRaftMeta, type SnapshotManager, type UploadedArchive } from '../../../src/node/snapshots.js';
import type { SnapshotMeta } from '../../../src/raft/types.js';
import { decodeStateRecords, readArchive, type StateRecord } from '../../../src/snapshot/index.js';
import type { KeyValue, StateStore } from '../../../src/storage/types.js';
import { RocksCluster, type RocksMember } from './rocks-cluster.js';
import { saveArchive } from './save-archive.js';
import { framedRecordsDigest } from './state-records.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * carriedDigest: the records digest as restore-digest.ts defines it, computed here on its own: SHA-256 over the
 * records outside "\x00snapcoord/" or under "\x00snapcoord/rev/", in key order, each u32be key length, key,
 * u32be value length, value.
 */
function carriedDigest(records: readonly StateRecord[]): string {
  const reserved = Buffer.from('\x00snapcoord/', 'latin1');
  const revisions = Buffer.from('\x00snapcoord/rev/', 'latin1');
  const carried = records.filter(({ key }) => {
    const k = Buffer.from(key);
    return !k.subarray(0, reserved.length).equals(reserved) || k.subarray(0, revisions.length).equals(revisions);
  });
  return framedRecordsDigest(carried.sort((a, b) => Buffer.compare(a.key, b.key)));
}

/** archiveState: an archive file's records (readArchive: every rule and hash). */
async function archiveState(file: string): Promise<StateRecord[]> {
  const records: StateRecord[] = [];
  await readArchive(createReadStream(file), async (_meta, state) => {
    for await (const batch of decodeStateRecords(state)) records.push(...batch);
  });
  return records;
}

/** storedState: the whole state of a member's storage, reserved records included. */
async function storedState(storage: StateStore): Promise<StateRecord[]> {
  const reader = await storage.snapshotState();
  const records: StateRecord[] = [];
  for await (const batch of reader.batches()) records.push(...batch);
  return records;
}

/** uploadsDigests: the records digest each upload the leader checks is given (what its restore entry carries), as they come. */
function uploadsDigests(m: RocksMember, change: (digest: string) => string = (d) => d): string[] {
  const sm = m.snapshots as SnapshotManager;
  const importUpload = sm.importUpload.bind(sm);
  const seen: string[] = [];
  Object.defineProperty(sm, 'importUpload', {
    value: async (...args: Parameters<SnapshotManager['importUpload']>): Promise<UploadedArchive> => {
      const u = await importUpload(...args);
      seen.push(u.recordsDigest);
      return { ...u, recordsDigest: change(u.recordsDigest) };
    },
  });
  return seen;
}

async function dump(n: Node): Promise<[string, string][]> {
  const r = await n.range({ prefix: enc.encode('k/'), limit: 10_000 }, true);
  return r.kvs.map((kv) => [dec.decode(kv.key), dec.decode(kv.value)]);
}

/** savedFiles: the archive restoreOnAll restored last, per cluster. */
const savedFiles = new Map<RocksCluster, string>();

/** savedFile: the archive restoreOnAll saved and restored on `c`. */
function savedFile(c: RocksCluster): string {
  const file = savedFiles.get(c);
  assert.ok(file !== undefined);
  return file;
}

/** restoreOnAll: saves the state, changes it, restores the save and waits until every member applied it; returns the saved records and the restore's index. */
async function restoreOnAll(c: RocksCluster, leader: Node, afterSave?: () => Promise<void>): Promise<{ saved: [string, string][]; index: number }> {
  for (let i = 0; i < 200; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`.repeat(20)) });
  const saved = await dump(leader);
  const file = await saveArchive(c, leader);
  savedFiles.set(c, file);
  await afterSave?.();
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
    const lead = c.members.find((m) => m.node === leader) as RocksMember;
    const recordsDigests = uploadsDigests(lead);
    // A client session in the saved state (the archive's, which a restore drops) and one made after (this cluster's, kept).
    await leader.propose({ op: 'put', key: enc.encode('k/s'), value: enc.encode('with a request id'), session: { clientId: 'c1', seq: 1 } });
    const { saved } = await restoreOnAll(c, leader, async () => {
      await leader.propose({ op: 'put', key: enc.encode('k/t'), value: enc.encode('x'), session: { clientId: 'c2', seq: 1 } });
    });
    await checkMembers(c, leader, saved, { imageRestores: 1, imageFallbacks: 0 });
    // The records digest the leader put in the entry (computed as it checked the upload) is the archive's carried
    // records', and every member's restored state has it: the followers' checks of the image passed (no fallback).
    assert.equal(recordsDigests.length, 1);
    const archive = await archiveState(savedFile(c));
    assert.ok(archive.some((r) => Buffer.from(r.key).toString('latin1').startsWith('\x00snapcoord/session/c1')), 'the archive holds a session record');
    assert.equal(recordsDigests[0], carriedDigest(archive), 'the leader\'s records digest is the archive\'s');
    for (const m of c.members) {
      const state = await storedState(m.storage as StateStore);
      assert.ok(state.some((r) => Buffer.from(r.key).toString('latin1').startsWith('\x00snapcoord/session/c2')), `${m.id} kept this cluster's session`);
      assert.equal(carriedDigest(state), recordsDigests[0], `${m.id}: the records digest of its restored state`);
    }
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

  it('a follower\'s next snapshot after the image is a delta from the leader\'s snapshot it keeps (its member table found and recorded), not a read of its whole state', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true });
    const leader = await c.waitForLeader();
    const { index } = await restoreOnAll(c, leader);
    const digest = (c.members.find((m) => m.node === leader)?.snapshots as SnapshotManager).newestMeta()?.digest;
    const followers = c.members.filter((m) => m.node !== leader);
    for (const m of followers) {
      const sm = m.snapshots as SnapshotManager;
      await until(`${m.id} to keep the leader's snapshot of the restored state`, 20_000, () => (sm.newestMeta()?.index === index && sm.newestMeta()?.digest === digest ? true : undefined));
      const kept = (await sm.store.list()).find((s) => s.archiveSha256 === digest);
      assert.ok(kept !== undefined && (await sm.store.members(kept)) !== null, `${m.id}: the kept snapshot has a member table that checks`);
    }
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('x') });
    const applied = leader.status().applied;
    for (const m of followers) {
      const n = c.node(m.id);
      const sm = m.snapshots as SnapshotManager;
      await until(`${m.id} to apply the write`, 10_000, () => (n.status().applied >= applied ? true : undefined));
      const deltas = sm.deltas;
      const meta = await n.snapshotNow();
      assert.ok(meta.index >= applied);
      assert.equal(sm.deltas, deltas + 1, `${m.id}: its first snapshot after the restore is a delta`);
      const h = await sm.openStored(meta);
      const hex = (rs: readonly StateRecord[]): string[] => rs.map((r) => `${Buffer.from(r.key).toString('hex')}=${Buffer.from(r.value).toString('hex')}`);
      try {
        assert.deepEqual(hex(await archiveState(h.path)), hex(await storedState(m.storage as StateStore)), `${m.id}: the delta holds its state`);
      } finally {
        h.release();
      }
    }
  });

  it('a follower whose fetch of the leader\'s snapshot of the restored state stalls gives it up and takes its own snapshot: snapshots and compactions do not wait for it without end', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 40, trailingEntries: 0 }, {}, { stateImages: true });
    const leader = await c.waitForLeader();
    const followers = c.members.filter((m) => m.node !== leader);
    // The followers' fetches of the leader's snapshot never deliver a byte (a leader gone quiet): left alone, each
    // would end only at the node's stop.
    let held = 0;
    for (const m of followers) {
      const sm = m.snapshots as SnapshotManager;
      Object.defineProperty(sm, 'fetch', {
        value: (_selfId: string, _address: string, _meta: unknown, signal?: AbortSignal) =>
          new Promise((_resolve, reject) => {
            held++;
            signal?.addEventListener('abort', () => reject(new Error('stopped')), { once: true });
          }),
      });
    }
    const { index } = await restoreOnAll(c, leader);
    await until('both followers to begin fetching the leader\'s snapshot', 20_000, () => (held >= 2 ? true : undefined));
    for (let i = 0; i < 400; i++) await leader.propose({ op: 'put', key: enc.encode(`w/${i}`), value: enc.encode('x') });
    const applied = leader.status().applied;
    for (const m of followers) {
      const n = c.node(m.id);
      await until(`${m.id} to apply the writes`, 20_000, () => (n.status().applied >= applied ? true : undefined));
      // 400 entries past the restore, 10x the policy's 40: once the stalled fetch is given up (FETCH_STALL_FROM_LEADER_MS_MIN,
      // 15 s), a snapshot (and a compaction) is taken.
      await until(`${m.id} to take a snapshot past the restore (its snapshot index ${n.status().snapshotIndex})`, 40_000, () => (n.status().snapshotIndex > index ? true : undefined));
    }
  });

  it('with --verify-image-records, an image whose files are whole but whose records are not the archive\'s (a leader exporting a changed value) is refused: the follower keeps its state and installs the archive', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true, verifyImageRecords: true });
    const leader = await c.waitForLeader();
    const lead = c.members.find((m) => m.node === leader) as RocksMember;
    const storage = lead.storage;
    assert.ok(storage !== null);
    // A buggy (or compromised) leader: the generation it builds and exports for the restore holds one value
    // changed. Its image's files are its own, so every name, size and SHA-256 in its manifest matches.
    const installState = storage.installState.bind(storage);
    Object.defineProperty(storage, 'installState', {
      value: (source: AsyncIterable<readonly KeyValue[]>, meta: Parameters<typeof installState>[1], options?: { readonly exportImage?: boolean }) =>
        installState(options?.exportImage === true ? forgeValue(source, 'k/10', 'forged') : source, meta, options),
    });
    const followers = c.members.filter((m) => m !== lead);
    // Each follower's state just before the image: kept whole when it is refused (watched as the import runs).
    let refusedWhileKept = 0;
    for (const f of followers) {
      const fs = f.storage as NonNullable<RocksMember['storage']>;
      const importStateImage = fs.importStateImage.bind(fs);
      Object.defineProperty(fs, 'importStateImage', {
        value: async (...args: Parameters<typeof importStateImage>): Promise<void> => {
          const before = await fs.stateDigest();
          const applied = fs.appliedIndex();
          await importStateImage(...args).catch(async (err: unknown) => {
            if (fs.appliedIndex() === applied && (await fs.stateDigest()) === before) refusedWhileKept++;
            throw err;
          });
        },
      });
    }
    const { saved } = await restoreOnAll(c, leader);
    assert.ok((await dump(leader)).some(([k, v]) => k === 'k/10' && v === 'forged'), 'the leader built the forged state');
    for (const f of followers) {
      const n = c.node(f.id);
      assert.deepEqual(await dump(n), saved, `${f.id} holds the archive's state`);
      assert.equal(n.snapshotStats.imageRestores, 0, `${f.id}: the image was not taken`);
      assert.equal(n.snapshotStats.imageFallbacks, 1, `${f.id}: it installed from its archive`);
      assert.equal(n.failed(), null);
      assert.equal(n.status().restoreFailure, null, `${f.id}: the restore itself applied`);
      assert.match(c.recentLog(f.id), /its \d+ carried records have records digest [0-9a-f]{64}, but the restore entry names [0-9a-f]{64}/);
    }
    assert.equal(refusedWhileKept, followers.length, 'each refused import left the follower\'s state as it was');
    const states = new Set(await Promise.all(followers.map((f) => c.node(f.id).stateDigest())));
    assert.equal(states.size, 1, 'the followers agree');
  });

  it('with --verify-image-records, a follower keeps the leader\'s snapshot of the restored state once its records check', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true, verifyImageRecords: true });
    const leader = await c.waitForLeader();
    const lead = c.members.find((m) => m.node === leader) as RocksMember;
    const { index } = await restoreOnAll(c, leader);
    const lsm = lead.snapshots as SnapshotManager;
    await until('the leader to keep its copy of the restore as a snapshot', 20_000, () => ((lsm.newestMeta()?.index ?? 0) >= index ? true : undefined));
    const digest = lsm.newestMeta()?.digest;
    for (const m of c.members.filter((x) => x !== lead)) {
      const sm = m.snapshots as SnapshotManager;
      await until(`${m.id} to keep the leader's snapshot of the restored state`, 20_000, () => (sm.newestMeta()?.digest === digest ? true : undefined));
    }
  });

  it('with --verify-image-records, a follower does not keep a leader\'s snapshot of the restored state whose records are not the entry\'s (a leader bug there): it builds its own', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true, verifyImageRecords: true });
    const leader = await c.waitForLeader();
    const lead = c.members.find((m) => m.node === leader) as RocksMember;
    const lsm = lead.snapshots as SnapshotManager;
    // The leader's image is right; the snapshot of the restored state it names beside it holds one value changed
    // (made once, as the first image is served; its archive is whole, its digest the one named).
    let forged: SnapshotMeta | null = null;
    let forging: Promise<void> | null = null;
    const copied = lsm.copied.bind(lsm);
    const newestMeta = lsm.newestMeta.bind(lsm);
    Object.defineProperty(lsm, 'copied', {
      value: async () => {
        await copied();
        forging ??= (async () => {
          const real = newestMeta();
          assert.ok(real !== null);
          const h = await lsm.openStored(real);
          try {
            const records = await archiveState(h.path);
            const stored = await lsm.store.createFromRecords(
              { index: real.index, term: real.term, membership: real.membership },
              forgeValue((async function* () {
                yield records;
              })(), 'k/10', 'forged'),
            );
            forged = toRaftMeta(stored);
          } finally {
            h.release();
          }
        })();
        await forging;
      },
    });
    Object.defineProperty(lsm, 'newestMeta', { value: () => forged ?? newestMeta() });
    const { saved, index } = await restoreOnAll(c, leader);
    assert.ok(forged !== null, 'the leader named its forged snapshot');
    const forgedDigest = (forged as SnapshotMeta).digest;
    for (const m of c.members.filter((x) => x !== lead)) {
      const sm = m.snapshots as SnapshotManager;
      const n = c.node(m.id);
      assert.deepEqual(await dump(n), saved, `${m.id} took the leader's (right) image`);
      await until(`${m.id} to take a snapshot of the restored state`, 20_000, () => (n.status().snapshotIndex >= index ? true : undefined));
      assert.notEqual(sm.newestMeta()?.digest, forgedDigest, `${m.id} does not keep the leader's forged snapshot as its own`);
      const h = await sm.openStored(sm.newestMeta() as SnapshotMeta);
      try {
        assert.ok((await archiveState(h.path)).every((r) => Buffer.from(r.key).toString('latin1') !== 'k/10' || dec.decode(r.value) !== 'forged'), `${m.id}: its snapshot holds its state`);
      } finally {
        h.release();
      }
    }
  });

  it('a restore entry whose records digest is not its archive\'s is refused at apply on every node (a recorded no-op, no crash loop)', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true });
    let leader = await c.waitForLeader();
    const lead = c.members.find((m) => m.node === leader) as RocksMember;
    // A leader that puts another records digest in the entry than its archive's.
    const seen = uploadsDigests(lead, (d) => `${d.slice(0, 63)}${d.endsWith('0') ? '1' : '0'}`);
    for (let i = 0; i < 50; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) });
    const file = await saveArchive(c, leader);
    await leader.propose({ op: 'put', key: enc.encode('k/1'), value: enc.encode('after the save') });
    const before = await dump(leader);
    await assert.rejects(leader.restore(createReadStream(file)), (e: unknown) => {
      assert.ok(e instanceof NodeError && e.code === 'invalid', String(e));
      assert.match(e.message, /records digest [0-9a-f]{64}, but the restore entry names [0-9a-f]{64}: the entry does not describe its own archive/);
      return true;
    });
    assert.equal(seen.length, 1);
    const index = leader.status().applied;
    for (const m of c.members) {
      const n = c.node(m.id);
      await until(`${m.id} to pass the entry`, 30_000, () => (n.status().applied >= index || n.failed() !== null ? true : undefined));
      assert.equal(n.failed(), null, `${m.id} is up`);
      const failure = n.status().restoreFailure;
      assert.ok(failure !== null, `${m.id} recorded the skipped restore`);
      assert.match(failure.error, /skipped, the state is unchanged: .*records digest/);
      assert.equal(n.snapshotStats.restoresFailed, 1);
      assert.deepEqual(await dump(n), before, `${m.id}: the state is the one before the entry`);
    }
    // A follower restarted replays nothing that fails; writes go on everywhere.
    const follower = c.members.find((m) => m !== lead) as RocksMember;
    await c.stop(follower.id);
    await c.restart(follower.id);
    leader = await c.waitForLeader();
    await leader.propose({ op: 'put', key: enc.encode('k/next'), value: enc.encode('x') });
    const last = leader.status().applied;
    for (const m of c.members) {
      const n = c.node(m.id);
      await until(`${m.id} to apply a write after it`, 20_000, () => (n.status().applied >= last || n.failed() !== null ? true : undefined));
      assert.equal(n.failed(), null, `${m.id} is up`);
      assert.deepEqual(await dump(n), [...before, ['k/next', 'x'] as [string, string]].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
    }
  });

  it('a follower that loses its leader for a moment in the same term (a pre-vote refused, as on a loaded machine) keeps waiting for the image and takes it', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 }, {}, { stateImages: true });
    const leader = await c.waitForLeader();
    const leaderId = leader.status().id;
    // The leader answers FetchStateImage only once `release` is called: the followers wait for its manifest.
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const asked: string[] = [];
    const open = leader.openStateImage.bind(leader);
    Object.defineProperty(leader, 'openStateImage', {
      value: async (...args: Parameters<Node['openStateImage']>) => {
        asked.push(args[0].from);
        await released;
        return open(...args);
      },
    });
    const restoring = restoreOnAll(c, leader);
    await until('a follower to ask the leader for its image', 30_000, () => asked[0]);
    const follower = c.node(asked[0] as string);
    const term = follower.status().term;
    // Its election timer fires: a pre-candidate, no leader known, its pre-votes refused (the others hear from the leader)
    // until the leader's next heartbeat makes it a follower of the same leader again, in the same term.
    follower.campaign();
    assert.equal(follower.status().leader, '', 'no leader known for a moment');
    await until('the follower to follow its leader again', 10_000, () => (follower.status().leader === leaderId ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 100)); // a few ticks of the image wait's watch
    assert.equal(follower.status().term, term, 'the same term');
    release();
    const { saved } = await restoring;
    await checkMembers(c, leader, saved, { imageRestores: 1, imageFallbacks: 0 });
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

/** forgeValue: `source` with the value of `key` (a data key) replaced by `value`, the rest as it is. */
async function* forgeValue(source: AsyncIterable<readonly KeyValue[]>, key: string, value: string): AsyncGenerator<readonly KeyValue[], void, undefined> {
  const k = Buffer.from(key);
  for await (const batch of source) yield batch.map((r) => (k.equals(r.key) ? { key: r.key, value: enc.encode(value) } : r));
}

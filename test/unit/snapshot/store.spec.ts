import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { readArchive } from '../../../src/snapshot/archive.js';
import { ArchiveError, SnapshotStoreError, type SnapshotStoreErrorCode } from '../../../src/snapshot/errors.js';
import { FAILPOINT_ENV, FAILPOINT_NAMES } from '../../../src/snapshot/failpoint.js';
import { decodeStateRecords, encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { QUARANTINE_KEEP, SnapshotStore, isReadFailure, snapshotId, type SnapshotHandle } from '../../../src/snapshot/store.js';
import { CHUNK_HASH_BYTES, type ArchiveSink } from '../../../src/snapshot/archive-sink.js';
import { nodeSnapshotIo, type SnapshotFile, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { MEMBERSHIP, collect, inBatches, records, sha256, tempDir, writeCounting } from './helpers.js';

function writer(state: readonly StateRecord[]): (file: Writable) => Promise<{ stateKeys: number }> {
  return async (file) => {
    const enc = encodeStateRecords(inBatches(state));
    await pipeline(enc, file);
    return { stateKeys: enc.keys };
  };
}

/** randomRecords: count records of valueBytes random (incompressible) bytes, keys in order. */
function randomRecords(count: number, valueBytes: number): StateRecord[] {
  return Array.from({ length: count }, (_, i) => ({ key: Buffer.from(`rnd-${String(i).padStart(6, '0')}`), value: randomBytes(valueBytes) }));
}

function meta(index: number, term = 1, ms = 1_700_000_000_000 + index): { index: number; term: number; membership: typeof MEMBERSHIP; createdAt: string } {
  return { index, term, membership: MEMBERSHIP, createdAt: new Date(ms).toISOString() };
}

async function storeError(promise: Promise<unknown>, code: SnapshotStoreErrorCode, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SnapshotStoreError, `expected SnapshotStoreError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

async function readState(handle: SnapshotHandle): Promise<StateRecord[]> {
  const { result } = await readArchive(handle.createReadStream(), async (_m, s) => {
    const out: StateRecord[] = [];
    for await (const batch of decodeStateRecords(s)) out.push(...batch);
    return out;
  });
  return result;
}

/** sendChunks writes `data` into a fetch's sink in CHUNK_HASH_BYTES chunks, each with its SHA-256 (as a sender hashes them). */
async function sendChunks(sink: ArchiveSink, data: Buffer): Promise<void> {
  for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
    const chunk = data.subarray(at, at + CHUNK_HASH_BYTES);
    await sink.writeChunk(chunk, createHash('sha256').update(chunk).digest());
  }
}

describe('SnapshotStore', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(() => cleanup());

  it('names snapshots so that ids sort by term, index, time', () => {
    assert.equal(snapshotId(3, 42, 1_700_000_000_123), '00000000000000000003-00000000000000000042-1700000000123');
    const ids = [snapshotId(2, 10, 5), snapshotId(1, 99, 9), snapshotId(2, 9, 7)].sort();
    assert.deepEqual(ids, [snapshotId(1, 99, 9), snapshotId(2, 9, 7), snapshotId(2, 10, 5)]);
  });

  it('create / list / open round trip', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, snapcoordVersion: '9.9.9' });
    const state = records(1000);
    const created = await store.create(meta(10, 2), writer(state));
    assert.equal(created.id, snapshotId(2, 10, 1_700_000_000_010));
    assert.equal(created.meta.stateKeys, 1000);
    assert.equal(created.meta.snapcoordVersion, '9.9.9');
    assert.deepEqual(created.meta.membership, MEMBERSHIP);
    assert.deepEqual((await readdir(join(dir, 'snaps', created.id))).sort(), ['archive.tar.gz', 'chunks.sha256', 'meta.json']);
    // each byte of the archive went through the sink once
    assert.equal(store.writeStats.bytesWritten, created.archiveBytes);
    const stored = JSON.parse(await readFile(join(dir, 'snaps', created.id, 'meta.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(stored['archiveSha256'], created.archiveSha256);
    assert.equal(stored['archiveBytes'], created.archiveBytes);
    assert.equal(stored['stateKeys'], 1000);

    assert.deepEqual(await store.list(), [created]);
    const handle = await store.open(created.id);
    try {
      assert.equal(handle.archiveSha256, sha256(await readFile(handle.path)));
      const back = await readState(handle);
      assert.deepEqual(back.map((r) => Buffer.from(r.key).toString()), state.map((r) => Buffer.from(r.key).toString()));
      const whole = await collect(handle.createReadStream());
      const tail = await collect(handle.createReadStream(100));
      assert.deepEqual(tail, whole.subarray(100));
      assert.equal((await collect(handle.createReadStream(handle.archiveBytes))).length, 0);
      assert.throws(() => handle.createReadStream(handle.archiveBytes + 1), SnapshotStoreError);
    } finally {
      handle.release();
    }
    const latest = await store.latest();
    assert.equal(latest?.id, created.id);
    latest?.release();
  });

  // list() reads every meta.json each time; bytes equal to the last ones read are not parsed again. What changed on
  // disk must still be seen (and refused when invalid), and each caller gets its own copy.
  it('list and open see a meta.json changed on disk, refuse one made invalid, and hand each caller its own copy', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 });
    const created = await store.create(meta(10, 2), writer(records(10)));
    const metaPath = join(dir, 'snaps', created.id, 'meta.json');
    await store.list();
    const again = await store.list(); // the same bytes as the list before
    (again[0]?.meta.membership.voters as string[]).push('n9');
    (again[0]?.meta.membership.addresses as Record<string, string>)['n9'] = 'x:1';
    assert.deepEqual((await store.list())[0]?.meta.membership, MEMBERSHIP, 'a caller changing its copy changes no other');
    const stored = JSON.parse(await readFile(metaPath, 'utf8')) as Record<string, unknown>;
    await writeFile(metaPath, `${JSON.stringify({ ...stored, snapcoordVersion: '7.7.7' }, null, 2)}\n`);
    assert.equal((await store.list())[0]?.meta.snapcoordVersion, '7.7.7');
    await writeFile(metaPath, `${JSON.stringify({ ...stored, snapcoordVersion: '7.7.7' }, null, 2).slice(0, -2)}\n`);
    assert.deepEqual(await store.list(), []);
    await assert.rejects(store.open(created.id), (err: unknown) => err instanceof SnapshotStoreError && err.code === 'corrupt');
    await writeFile(metaPath, `${JSON.stringify(stored, null, 2)}\n`);
    assert.deepEqual(await store.list(), [created]);
  });

  // loadMeta reads a meta.json in a small first read (2 KiB) and a second one only when it fills that: a file
  // ending just before, at and past that edge is read whole, and one past the 65 KiB cap is still refused.
  it('reads a meta.json of any size up to its cap whole, across the first read, and refuses a larger one', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 });
    const voters = Array.from({ length: 7 }, (_, i) => `n${i + 1}`);
    const addresses = Object.fromEntries(voters.map((v) => [v, `${v}.${'a'.repeat(300)}.example:7001`]));
    const created = await store.create({ ...meta(10, 2), membership: { voters, learners: [], addresses } }, writer(records(10)));
    const metaPath = join(dir, 'snaps', created.id, 'meta.json');
    const text = await readFile(metaPath, 'utf8');
    assert.ok(text.length > 2048, `meta.json is ${text.length} bytes`);
    assert.deepEqual((await store.list())[0]?.meta.membership.addresses, addresses);
    const reopened = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 }); // nothing remembered: parsed from the bytes read
    assert.deepEqual(await reopened.list(), [created]);
    for (const size of [2047, 2048, 2049, 65 * 1024]) {
      const stored = JSON.parse(text) as Record<string, unknown>;
      const compact = JSON.stringify({ ...stored, membership: MEMBERSHIP });
      await writeFile(metaPath, compact.padEnd(size, ' '));
      const fresh = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 });
      assert.deepEqual((await fresh.list())[0]?.meta.membership, MEMBERSHIP, `a meta.json of ${size} bytes`);
      const h = await fresh.open(created.id);
      h.release();
    }
    await writeFile(metaPath, JSON.stringify(JSON.parse(text)).padEnd(65 * 1024 + 1, ' '));
    const fresh = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 });
    assert.deepEqual(await fresh.list(), []);
    await storeError(fresh.open(created.id), 'corrupt', /more than 66560 bytes/);
  });

  // A meta.json that parses but breaks the schema is a bad snapshot, like one that does not parse: not listed, open()
  // says why. It used to fail list() itself as an unreadable store (the schema error's code was taken for an errno),
  // which fails boot, latest() and every snapshot operation on account of one damaged file.
  it('a meta.json that is valid JSON but breaks the schema is skipped by list(), refused by open(), not taken for a read failure', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3 });
    const older = await store.create(meta(5, 1), writer(records(5)));
    const created = await store.create(meta(10, 2), writer(records(10)));
    const metaPath = join(dir, 'snaps', created.id, 'meta.json');
    const stored = JSON.parse(await readFile(metaPath, 'utf8')) as Record<string, unknown>;
    await writeFile(metaPath, `${JSON.stringify({ ...stored, index: 'ten' }, null, 2)}\n`);
    assert.deepEqual(await store.list(), [older]);
    await assert.rejects(store.open(created.id), (err: unknown) => err instanceof SnapshotStoreError && err.code === 'corrupt' && !isReadFailure(err) && /meta\.json is invalid/.test(err.message));
    const latest = await store.latest();
    assert.equal(latest?.id, older.id);
    latest?.release();
  });

  // The directory exporter opens its stores under /proc/self/fd/N (a directory it holds open), whose parents cannot
  // be fsynced (EINVAL): opening a store there failed every export once open fsynced every parent on the path.
  it('opens a store below a directory that cannot be fsynced (/proc/self/fd/N/...)', async () => {
    const held = await open(dir, 'r');
    try {
      const store = await SnapshotStore.open(`/proc/self/fd/${held.fd}/export/snapshots/store`, { retain: 1 });
      const created = await store.create(meta(10), writer(records(5)));
      assert.deepEqual((await store.list()).map((s) => s.id), [created.id]);
      assert.deepEqual(await readdir(join(dir, 'export', 'snapshots', 'store')), [created.id]);
    } finally {
      await held.close();
    }
  });

  it('lists newest first and keeps only the newest K (retention)', async () => {
    const store = await SnapshotStore.open(dir, { retain: 2 });
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) ids.push((await store.create(meta(i * 10), writer(records(10, i)))).id);
    assert.deepEqual((await store.list()).map((s) => s.id), [ids[4], ids[3]]);
    assert.deepEqual((await readdir(dir)).sort(), [ids[3], ids[4]].sort());
  });

  it('does not delete a snapshot that is open (pinned) until it is released', async () => {
    const store = await SnapshotStore.open(dir, { retain: 1 });
    const first = await store.create(meta(1), writer(records(10)));
    const handle = await store.open(first.id);
    const second = await store.create(meta(2), writer(records(10)));
    assert.deepEqual((await store.list()).map((s) => s.id), [second.id, first.id]);
    await storeError(store.remove(first.id), 'busy');
    assert.equal((await collect(handle.createReadStream())).length, first.archiveBytes);
    handle.release();
    handle.release();
    await store.create(meta(3), writer(records(10)));
    assert.equal((await store.list()).length, 1);
  });

  it('the quarantine keeps the last 3 snapshots moved there, removing older ones (and nothing else in it)', async () => {
    // Before: every quarantined snapshot stayed for ever, an archive-sized copy each: a disk or memory damaging every
    // archive filled the disk with them.
    const store = await SnapshotStore.open(dir, { retain: 10 });
    const made: string[] = [];
    for (let i = 1; i <= 6; i++) made.push((await store.create(meta(i), writer(records(20)))).id);
    await mkdir(join(dir, 'quarantine'), { recursive: true });
    await writeFile(join(dir, 'quarantine', 'operator-notes.txt'), 'kept');
    for (const id of made) await store.quarantine(id);
    const names = (await store.quarantined()).names;
    assert.deepEqual(
      names.filter((n) => n !== 'operator-notes.txt').map((n) => n.slice(0, n.lastIndexOf('-'))),
      made.slice(-3),
    );
    assert.equal(QUARANTINE_KEEP, 3);
    assert.ok(names.includes('operator-notes.txt'), names.join(' '));
    assert.deepEqual(await store.list(), []);
  });

  it('open trusts the recorded hashes after a cheap check; verify() and scrub() catch a flipped byte, scrub quarantines it, latest() falls back', async () => {
    const store = await SnapshotStore.open(dir, { retain: 3 });
    const older = await store.create(meta(1), writer(records(100)));
    const newer = await store.create(meta(2), writer(records(100)));
    const good = await readFile(newer.path);
    const bytes = Buffer.from(good);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(newer.path, bytes);
    // same size: the cheap check passes, the recorded chunk hashes are served
    const cheap = await store.open(newer.id);
    assert.equal(cheap.chunkSha256s.length, 1);
    assert.deepEqual(Buffer.from(cheap.chunkSha256s[0]!), createHash('sha256').update(good).digest());
    cheap.release();
    await storeError(store.verify(newer.id), 'corrupt', /SHA-256 is [0-9a-f]{64} but meta\.json says/);
    await storeError(store.open(newer.id, { verify: true }), 'corrupt');
    await store.verify(older.id);

    const scrubbed = await store.scrub();
    assert.deepEqual(scrubbed.checked.sort(), [older.id, newer.id].sort());
    assert.deepEqual(scrubbed.quarantined.map((q) => q.id), [newer.id]);
    assert.match(scrubbed.quarantined[0]!.reason, /SHA-256/);
    assert.deepEqual((await store.list()).map((s) => s.id), [older.id]);
    const quarantined = await readdir(join(dir, 'quarantine'));
    assert.equal(quarantined.length, 1);
    assert.ok(quarantined[0]!.startsWith(newer.id));
    const latest = await store.latest();
    assert.equal(latest?.id, older.id);
    latest?.release();

    const third = await store.create(meta(3), writer(records(100)));
    await writeFile(third.path, bytes.subarray(0, 100));
    await storeError(store.open(third.id), 'corrupt', /is 100 bytes but meta\.json says/);
    await storeError(store.open('../../etc'), 'invalid-argument');
    await storeError(store.open(snapshotId(9, 9, 9)), 'not-found');
  });

  it('scrub catches recorded chunk hashes that disagree with the bytes, and a chunks.sha256 whose own checksum fails on open', async () => {
    const store = await SnapshotStore.open(dir, { retain: 3 });
    const big = randomRecords(1500, 1024); // > 1 MiB of state: several chunks
    const a = await store.create(meta(1), writer(big));
    const b = await store.create(meta(2), writer(big));
    assert.ok(a.archiveBytes > 1024 * 1024, `archive of ${a.archiveBytes} bytes should span chunks`);
    // a: a recorded chunk hash replaced and the file's own checksum recomputed (recorded hashes disagree with the bytes)
    const chunksA = join(dir, a.id, 'chunks.sha256');
    const fileA = await readFile(chunksA);
    const body = Buffer.from(fileA.subarray(0, fileA.length - 32));
    body[body.length - 1]! ^= 0x80; // last chunk hash
    await writeFile(chunksA, Buffer.concat([body, createHash('sha256').update(body).digest()]));
    (await store.open(a.id)).release(); // the cheap check cannot see it
    await storeError(store.verify(a.id), 'corrupt', /chunk 1 of archive\.tar\.gz does not match its hash in chunks\.sha256/);
    // b: chunks.sha256 damaged: its own checksum fails, so even open refuses it
    const chunksB = join(dir, b.id, 'chunks.sha256');
    const fileB = await readFile(chunksB);
    fileB[fileB.length - 40]! ^= 0x01;
    await writeFile(chunksB, fileB);
    await storeError(store.open(b.id), 'corrupt', /chunks\.sha256 is invalid: its own checksum does not match/);
    const scrubbed = await store.scrub();
    assert.deepEqual(scrubbed.quarantined.map((q) => q.id).sort(), [a.id, b.id].sort());
    assert.deepEqual(await store.list(), []);
  });

  it('a snapshot stored without chunks.sha256 (an older version) is hashed once on open and its hashes recorded', async () => {
    const store = await SnapshotStore.open(dir, { retain: 3 });
    const s = await store.create(meta(1), writer(records(100)));
    const chunks = join(dir, s.id, 'chunks.sha256');
    const recorded = await readFile(chunks);
    await rm(chunks);
    const h = await store.open(s.id);
    assert.deepEqual(Buffer.from(h.chunkSha256s[0]!), createHash('sha256').update(await readFile(s.path)).digest());
    h.release();
    assert.deepEqual(await readFile(chunks), recorded);
  });

  it('receiveArchive: verified chunks written once straight into the store, hashes reused; a wrong digest, snapshot or configuration leaves nothing', async () => {
    const leader = await SnapshotStore.open(join(dir, 'leader'), { retain: 3 });
    const s = await leader.create(meta(7, 3), writer(randomRecords(1500, 1024)));
    const bytes = await readFile(s.path);
    const send = async (sink: ArchiveSink, data: Buffer): Promise<void> => {
      for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
        const chunk = data.subarray(at, at + CHUNK_HASH_BYTES);
        await sink.writeChunk(chunk, createHash('sha256').update(chunk).digest());
      }
    };
    const follower = await SnapshotStore.open(join(dir, 'follower'), { retain: 3 });
    const got = await follower.receiveArchive({ digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 7, term: 3, membership: s.meta.membership }, (sink) => send(sink, bytes), { maxBytes: 1e8 });
    assert.equal(got.id, s.id);
    assert.deepEqual(got.meta, s.meta);
    assert.equal(follower.writeStats.bytesWritten, s.archiveBytes);
    assert.equal(follower.writeStats.chunkHashesReused, Math.floor(s.archiveBytes / CHUNK_HASH_BYTES));
    const h = await follower.open(s.id, { verify: true });
    const lh = await leader.open(s.id);
    assert.deepEqual(h.chunkSha256s.map((x) => Buffer.from(x).toString('hex')), lh.chunkSha256s.map((x) => Buffer.from(x).toString('hex')));
    h.release();
    lh.release();

    const other = await SnapshotStore.open(join(dir, 'other'), { retain: 3 });
    const flipped = Buffer.from(bytes);
    flipped[10]! ^= 1;
    await storeError(other.receiveArchive({ digest: s.archiveSha256, sizeBytes: s.archiveBytes }, (sink) => send(sink, flipped), { maxBytes: 1e8 }), 'digest-mismatch');
    await storeError(other.receiveArchive({ digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 8 }, (sink) => send(sink, bytes), { maxBytes: 1e8 }), 'digest-mismatch', /holds snapshot 7/);
    // Offered with another configuration than the archive's (a lying leader): the core would take one, the store the other.
    const otherVoters = { ...s.meta.membership, voters: [...s.meta.membership.voters, 'n9'], addresses: { ...s.meta.membership.addresses, n9: 'x:1' } };
    await storeError(other.receiveArchive({ digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 7, term: 3, membership: otherVoters }, (sink) => send(sink, bytes), { maxBytes: 1e8 }), 'digest-mismatch', /not the configuration its snapshot was offered with/);
    await storeError(other.receiveArchive({ digest: s.archiveSha256, sizeBytes: s.archiveBytes }, (sink) => send(sink, bytes), { maxBytes: 1000 }), 'too-large');
    await storeError(other.receiveArchive({ digest: s.archiveSha256, sizeBytes: 1000 }, (sink) => send(sink, bytes), { maxBytes: 1e8 }), 'too-large');
    assert.deepEqual(await other.list(), []);
    assert.deepEqual(await readdir(join(dir, 'other')), []);
  });

  it('receiveArchive with deferWholeDigest: each byte hashed once (per chunk), the claimed digest recorded unverified; open() verifies it before any reader sees it, a checked read confirms it', async () => {
    const leader = await SnapshotStore.open(join(dir, 'leader'), { retain: 3 });
    const s = await leader.create(meta(7, 3), writer(randomRecords(3000, 1024)));
    const bytes = await readFile(s.path);
    assert.ok(s.archiveBytes > 2 * CHUNK_HASH_BYTES, 'several chunks');
    const target = { digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 7, term: 3 };
    const deferred = { maxBytes: 1e8, deferWholeDigest: true };
    const metaJson = async (st: SnapshotStore): Promise<Record<string, unknown>> =>
      JSON.parse(await readFile(join(st.dir, s.id, 'meta.json'), 'utf8')) as Record<string, unknown>;

    // A checked read (the install's) confirms the claimed digest and records it.
    const a = await SnapshotStore.open(join(dir, 'a'), { retain: 3 });
    const got = await a.receiveArchive(target, (sink) => sendChunks(sink, bytes), deferred);
    assert.equal(got.archiveSha256, s.archiveSha256);
    assert.equal(a.writeStats.bytesWritten, s.archiveBytes, 'each byte written once');
    assert.equal(a.writeStats.wholeHashedBytes, 0, 'the whole archive is not hashed while it arrives');
    assert.equal(a.writeStats.chunkHashesReused, Math.floor(s.archiveBytes / CHUNK_HASH_BYTES), 'the checked chunk hashes are recorded, not recomputed');
    assert.equal((await metaJson(a)).archiveVerified, false);
    const h = await a.open(s.id, { allowUnverified: true });
    assert.equal(h.verified, false);
    const { stream, confirm } = h.createCheckedReadStream();
    const { stateSha256 } = await readArchive(stream, async (_m, st) => {
      for await (const _ of st) void _;
    });
    assert.match(stateSha256, /^[0-9a-f]{64}$/);
    await confirm();
    h.release();
    assert.equal('archiveVerified' in (await metaJson(a)), false, 'meta.json records it as verified');
    const again = await a.open(s.id, { allowUnverified: true });
    assert.equal(again.verified, true);
    again.release();

    // Any other reader: open() hashes it first, then records it as verified.
    const b = await SnapshotStore.open(join(dir, 'b'), { retain: 3 });
    await b.receiveArchive(target, (sink) => sendChunks(sink, bytes), deferred);
    const hb = await b.open(s.id);
    assert.equal(hb.verified, true);
    hb.release();
    assert.equal('archiveVerified' in (await metaJson(b)), false);
    // and the recorded state survives reopening the store (a restart).
    const b2 = await SnapshotStore.open(join(dir, 'b'), { retain: 3 });
    const hb2 = await b2.open(s.id, { allowUnverified: true });
    assert.equal(hb2.verified, true);
    hb2.release();
  });

  it('deferWholeDigest and a sender whose chunks are self-consistent but not the claimed archive: never served, refused by the checked read and by open(), quarantined by scrub', async () => {
    const leader = await SnapshotStore.open(join(dir, 'leader'), { retain: 3 });
    const s = await leader.create(meta(7, 3), writer(randomRecords(1500, 1024)));
    // A valid archive (gunzip ignores the gzip header's MTIME) that is not the one named:
    // a hostile sender hashes its own chunks, so every chunk check passes.
    const forged = Buffer.from(await readFile(s.path));
    forged[4]! ^= 0xff;
    assert.notEqual(sha256(forged), s.archiveSha256);
    const target = { digest: s.archiveSha256, sizeBytes: s.archiveBytes, index: 7, term: 3 };
    const deferred = { maxBytes: 1e8, deferWholeDigest: true };
    const f = await SnapshotStore.open(join(dir, 'f'), { retain: 3 });
    await f.receiveArchive(target, (sink) => sendChunks(sink, forged), deferred);
    // Every reader but a checked one verifies first: refused.
    await storeError(f.open(s.id), 'corrupt', /SHA-256/);
    await storeError(f.verify(s.id), 'corrupt');
    // The checked read: readArchive accepts the bytes, the digest does not.
    const h = await f.open(s.id, { allowUnverified: true });
    const { stream, confirm } = h.createCheckedReadStream();
    await readArchive(stream, async (_m, st) => {
      for await (const _ of st) void _;
    });
    await storeError(confirm(), 'corrupt', /not the .* its sender claimed/);
    h.release();
    assert.equal((JSON.parse(await readFile(join(f.dir, s.id, 'meta.json'), 'utf8')) as { archiveVerified?: boolean }).archiveVerified, false, 'still unverified');
    const r = await f.scrub();
    assert.deepEqual(r.quarantined.map((q) => q.id), [s.id]);
    assert.deepEqual(await f.list(), []);
  });

  it('createChunkCheckedReadStream reads the archive as stored, and fails corrupt at a chunk changed on disk since', async () => {
    const store = await SnapshotStore.open(join(dir, 'cc'), { retain: 3 });
    const s = await store.create(meta(5), writer(randomRecords(2500, 1024)));
    assert.ok(s.archiveBytes > 2 * CHUNK_HASH_BYTES, 'several chunks');
    const h = await store.open(s.id);
    assert.deepEqual(await collect(h.createChunkCheckedReadStream()), await readFile(s.path));
    h.release();
    // One byte of the second chunk flipped on disk (open() trusts the recorded hashes; this read does not).
    const fd = await open(s.path, 'r+');
    const b = Buffer.alloc(1);
    await fd.read(b, 0, 1, CHUNK_HASH_BYTES + 10);
    b[0]! ^= 0x01;
    await fd.write(b, 0, 1, CHUNK_HASH_BYTES + 10);
    await fd.close();
    const h2 = await store.open(s.id);
    await storeError(collect(h2.createChunkCheckedReadStream()), 'corrupt', /chunk 1 of .* does not match its hash/);
    h2.release();
  });

  it('uses mode 0600 for files and 0700 for directories', async () => {
    const prevUmask = process.umask(0o000);
    try {
      const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 1 });
      const s = await store.create(meta(1), writer(records(10)));
      assert.equal((await stat(join(dir, 'snaps'))).mode & 0o777, 0o700);
      assert.equal((await stat(join(dir, 'snaps', s.id))).mode & 0o777, 0o700);
      for (const f of ['archive.tar.gz', 'meta.json']) assert.equal((await stat(join(dir, 'snaps', s.id, f))).mode & 0o777, 0o600, f);
    } finally {
      process.umask(prevUmask);
    }
  });

  it('cleans *.tmp leftovers and ignores strangers when listing', async () => {
    const store = await SnapshotStore.open(dir, { retain: 3 });
    const s = await store.create(meta(1), writer(records(10)));
    await mkdir(join(dir, `${snapshotId(5, 5, 5)}.tmp`));
    await writeFile(join(dir, `${snapshotId(5, 5, 5)}.tmp`, 'state.bin'), 'partial');
    await mkdir(join(dir, 'lost+found'));
    await mkdir(join(dir, snapshotId(6, 6, 6))); // no meta.json
    assert.deepEqual((await store.list()).map((x) => x.id), [s.id]);
    assert.deepEqual((await readdir(dir)).sort(), [s.id, snapshotId(6, 6, 6), 'lost+found'].sort());
  });

  it('removes the temporary directory when writeState fails, and passes its error on', async () => {
    // Every file the store opens is counted, and so is each close: the archive's file is closed, not left to the GC.
    const opened = new Set<SnapshotFile>();
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (path, flags, mode) => {
        const f = await nodeSnapshotIo.open(path, flags, mode);
        opened.add(f);
        const close = f.close.bind(f);
        return Object.assign(f, { close: () => (opened.delete(f), close()) });
      },
    };
    const store = await SnapshotStore.open(dir, { retain: 3, io });
    const boom = new Error('state source failed');
    await assert.rejects(store.create(meta(1), async (file) => {
      file.write(Buffer.alloc(100));
      throw boom;
    }), (err: unknown) => err === boom);
    assert.deepEqual(await readdir(dir), []);
    assert.equal(opened.size, 0, 'every file the store opened is closed');
    await storeError(store.create({ ...meta(1), createdAt: 'now' }, writer([])), 'invalid-argument');
    const s = await store.create(meta(1), writer([]));
    await storeError(store.create(meta(1), writer([])), 'already-exists');
    assert.equal(s.meta.stateBytes, 0);
  });

  it('a failed fsync of the store directory after the rename undoes it: the snapshot is not listed (create, import)', async () => {
    // The store directory's fsync fails once after a snapshot was renamed into it: create() reports the failure, so
    // the snapshot must not stay listed (served, taken as the newest, retained in place of older ones).
    const snaps = join(dir, 'snaps');
    let failDirSync = false;
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (path, flags, mode) => {
        const f = await nodeSnapshotIo.open(path, flags, mode);
        if (path !== snaps || flags !== 'r' || !failDirSync) return f;
        failDirSync = false;
        return Object.assign(f, { sync: () => Promise.reject(Object.assign(new Error(`EIO: i/o error, fsync '${snaps}'`), { code: 'EIO' })) });
      },
    };
    const store = await SnapshotStore.open(snaps, { retain: 3, io });
    const first = await store.create(meta(1), writer(records(10)));
    failDirSync = true;
    await assert.rejects(store.create(meta(2), writer(records(20))), /EIO/);
    assert.deepEqual((await store.list()).map((x) => x.id), [first.id], 'the failed create is not listed');
    assert.deepEqual(await readdir(snaps), [first.id], 'nor on the disk');
    assert.equal((await store.latest())?.id, first.id);
    (await store.latest())?.release();
    // The same through an import (staged()).
    const other = await SnapshotStore.open(join(dir, 'other'), { retain: 3 });
    const s = await other.create(meta(3), writer(records(30)));
    failDirSync = true;
    await assert.rejects(store.importArchive(createReadStream(s.path), { expectedSha256: s.archiveSha256, maxBytes: 1e7 }), /EIO/);
    assert.deepEqual((await store.list()).map((x) => x.id), [first.id], 'the failed import is not listed');
    // A later attempt stores it.
    const again = await store.create(meta(2), writer(records(20)));
    assert.deepEqual((await store.list()).map((x) => x.id), [again.id, first.id]);
  });

  it('imports an archive from outside (hashed, validated, renamed in); refuses bad ones and changes nothing', async () => {
    const leader = await SnapshotStore.open(join(dir, 'leader'), { retain: 3 });
    const follower = await SnapshotStore.open(join(dir, 'follower'), { retain: 3 });
    const s = await leader.create(meta(7, 3), writer(records(300)));

    const imported = await follower.importArchive(createReadStream(s.path), { expectedSha256: s.archiveSha256, maxBytes: 10 * 1024 * 1024 });
    assert.equal(imported.id, s.id);
    assert.equal(imported.archiveSha256, s.archiveSha256);
    assert.deepEqual(imported.meta, s.meta);
    const h = await follower.open(s.id);
    h.release();
    const again = await follower.importArchive(createReadStream(s.path), { maxBytes: 10 * 1024 * 1024 });
    assert.equal(again.id, s.id);

    const other = await SnapshotStore.open(join(dir, 'other'), { retain: 3 });
    await storeError(other.importArchive(createReadStream(s.path), { expectedSha256: '0'.repeat(64), maxBytes: 1e7 }), 'digest-mismatch');
    await storeError(other.importArchive(createReadStream(s.path), { maxBytes: 1000 }), 'too-large', /1000 bytes/);
    const mangled = await readFile(s.path);
    mangled[mangled.length - 20]! ^= 0xff;
    await assert.rejects(other.importArchive(Readable.from([mangled]), { maxBytes: 1e7 }), ArchiveError);
    await assert.rejects(other.importArchive(Readable.from([Buffer.from('hello')]), { maxBytes: 1e7 }), (err: unknown) => err instanceof ArchiveError && err.code === 'not-gzip');
    assert.deepEqual(await other.list(), []);
    assert.deepEqual(await readdir(join(dir, 'other')), []);
  });

  it('two different archives naming the same term, index and creation time are both kept (the next free millisecond), each found by its digest', async () => {
    const a = await (await SnapshotStore.open(join(dir, 'a'), { retain: 3 })).create(meta(7, 3), writer(records(300)));
    const b = await (await SnapshotStore.open(join(dir, 'b'), { retain: 3 })).create(meta(7, 3), writer(records(301)));
    assert.equal(a.id, b.id, 'the same id where they were made');
    assert.notEqual(a.archiveSha256, b.archiveSha256);
    const uploads = await SnapshotStore.open(join(dir, 'uploads'), { retain: 10 });
    const first = await uploads.importArchive(createReadStream(a.path), { maxBytes: 1e7 });
    const second = await uploads.importArchive(createReadStream(b.path), { maxBytes: 1e7 });
    assert.equal(first.id, a.id);
    assert.notEqual(second.id, first.id, 'before: already-exists, and that restore could never be staged here');
    assert.deepEqual(second.meta, b.meta);
    assert.equal((await uploads.importArchive(createReadStream(b.path), { maxBytes: 1e7 })).id, second.id, 'the same bytes again: the stored one');
    const kept = await uploads.list();
    assert.deepEqual(kept.map((x) => x.archiveSha256).sort(), [a.archiveSha256, b.archiveSha256].sort());
    for (const x of kept) (await uploads.open(x.id)).release();
  });

  it('createDelta writes each archive byte once (issue 15): the changed members are merged first, nothing goes through a spool', async () => {
    const { io, written } = writeCounting();
    const store = await SnapshotStore.open(join(dir, 'delta-once'), { retain: 3, io, gzipBlockBytes: 64 * 1024, smallStateBytesMax: -1 });
    const state = randomRecords(3000, 1000);
    const base = await store.createFromRecords(meta(100), inBatches(state));
    const table = await store.members(base);
    assert.ok(table !== null && table.state.length >= 20, 'the base has a member table of several members');
    const key = (state[1500] as StateRecord).key;
    const changes = [{ key, value: Buffer.from('changed') }];
    const h = await store.open(base.id);
    written.all = 0;
    written.spool = 0;
    let made;
    try {
      made = await store.createDelta(meta(101), h, table, changes);
    } finally {
      h.release();
    }
    assert.equal(written.spool, 0, `${written.spool} bytes written into the spool for a ${made.archiveBytes}-byte archive`);
    // The archive once, plus its small files (chunk hashes, meta, member table).
    assert.ok(written.all < made.archiveBytes + 64 * 1024, `${written.all} bytes written for a ${made.archiveBytes}-byte archive`);
    await store.verify(made.id);
    const dh = await store.open(made.id);
    try {
      const got = await readState(dh);
      assert.equal(got.length, state.length);
      assert.deepEqual(Buffer.from((got[1500] as StateRecord).value), Buffer.from('changed'));
      assert.deepEqual(Buffer.from((got[1499] as StateRecord).value), Buffer.from((state[1499] as StateRecord).value));
    } finally {
      dh.release();
    }
  });

  it('a delta of a small base (under one chunk) opens its base archive once, no spool, no member table or meta.json read back (issue 17: fixed cost)', async () => {
    const opened = new Map<string, number>();
    const read = new Map<string, number>();
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: (path, flags, mode) => {
        const name = path.slice(path.lastIndexOf('/') + 1);
        opened.set(name, (opened.get(name) ?? 0) + 1);
        return nodeSnapshotIo.open(path, flags, mode);
      },
      readFile: (path) => {
        const name = path.slice(path.lastIndexOf('/') + 1);
        read.set(name, (read.get(name) ?? 0) + 1);
        return nodeSnapshotIo.readFile(path);
      },
    };
    const store = await SnapshotStore.open(join(dir, 'delta-small'), { retain: 3, io, gzipBlockBytes: 64 * 1024, gzipLevel: 1 });
    const state = records(40);
    const base = await store.createFromRecords(meta(100), inBatches(state));
    assert.ok(base.archiveBytes < CHUNK_HASH_BYTES, `a base of ${base.archiveBytes} bytes`);
    const held = await store.openWritten(base);
    let made;
    opened.clear();
    read.clear();
    try {
      const table = await store.members(base);
      assert.ok(table !== null, 'the base has a member table');
      const pinned = await store.hold(held);
      try {
        const key = (state[20] as StateRecord).key;
        made = await store.createDelta(meta(101), pinned, table, [{ key, value: Buffer.from('changed') }]);
      } finally {
        pinned.release();
      }
    } finally {
      held.release();
    }
    assert.equal(opened.get('archive.tar.gz'), 2, `the base read once and the new archive written: ${JSON.stringify([...opened])}`);
    assert.equal(opened.get('state.spool'), undefined, `a spool opened: ${JSON.stringify([...opened])}`);
    // The new one's written, the base's read by retention's listing; the base is not opened again (hold).
    assert.equal(opened.get('meta.json'), 2, `meta.json read back: ${JSON.stringify([...opened])}`);
    assert.equal(opened.get('chunks.sha256'), 1, `chunks.sha256 read back (only the new one written): ${JSON.stringify([...opened])}`);
    assert.equal(read.get('members.json'), undefined, `the member table read back: ${JSON.stringify([...read])}`);
    // Every check still made: the delta's state is the base's with the change, and its bytes verify.
    await store.verify(made.id);
    const table = await store.members(made);
    assert.ok(table !== null, 'the delta has a member table');
    const dh = await store.open(made.id);
    try {
      const got = await readState(dh);
      assert.equal(got.length, state.length);
      assert.deepEqual(Buffer.from((got[20] as StateRecord).value), Buffer.from('changed'));
      assert.deepEqual(Buffer.from((got[19] as StateRecord).value), Buffer.from((state[19] as StateRecord).value));
    } finally {
      dh.release();
    }
  });

  it('a small base whose archive was changed on the disk: the delta fails (corrupt), nothing stored', async () => {
    const store = await SnapshotStore.open(join(dir, 'delta-small-flip'), { retain: 3, gzipBlockBytes: 64 * 1024, gzipLevel: 1 });
    const state = records(40);
    const base = await store.createFromRecords(meta(100), inBatches(state));
    const table = await store.members(base);
    assert.ok(table !== null);
    const bytes = await readFile(base.path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] as number) ^ 0x10;
    await writeFile(base.path, bytes);
    const h = await store.open(base.id);
    try {
      await storeError(store.createDelta(meta(101), h, table, [{ key: (state[3] as StateRecord).key, value: null }]), 'corrupt', /chunk 0/);
    } finally {
      h.release();
    }
    assert.deepEqual((await store.list()).map((s) => s.id), [base.id]);
  });

  describe('crash safety (a child process SIGKILLed at each failpoint)', function () {
    this.timeout(60_000);
    const fixture = fileURLToPath(new URL('./fixtures/crash-create.ts', import.meta.url));

    function runChild(storeDir: string, failpoint: string, mode = ''): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', fixture, storeDir, mode], {
          env: { ...process.env, [FAILPOINT_ENV]: failpoint },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('error', reject);
        child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
      });
    }

    for (const failpoint of FAILPOINT_NAMES) {
      it(`${failpoint}: the previous snapshot survives, no half-written one is listed`, async () => {
        const storeDir = join(dir, 'store');
        const before = await SnapshotStore.open(storeDir, { retain: 3 });
        const good = await before.create(meta(100, 1), writer(records(200)));

        const result = await runChild(storeDir, failpoint);
        assert.equal(result.signal, 'SIGKILL', `child was not killed: code ${result.code}, stdout ${result.stdout}, stderr ${result.stderr}`);

        const leftovers = await readdir(storeDir);
        const after = await SnapshotStore.open(storeDir, { retain: 3 });
        const listed = await after.list();
        assert.ok(listed.some((s) => s.id === good.id), `previous snapshot missing after ${failpoint}`);
        const h = await after.open(good.id);
        assert.equal(h.archiveSha256, good.archiveSha256);
        h.release();
        if (failpoint === 'snapshot-after-rename') {
          assert.equal(listed.length, 2);
          const fresh = await after.open(listed[0]!.id);
          assert.equal(fresh.meta.index, 200);
          assert.equal((await readState(fresh)).length, 64 * 16);
          fresh.release();
        } else {
          assert.ok(leftovers.some((n) => n.endsWith('.tmp')), `expected a *.tmp leftover, found ${leftovers.join(', ')}`);
          assert.deepEqual(listed.map((s) => s.id), [good.id]);
        }
        assert.ok(!(await readdir(storeDir)).some((n) => n.endsWith('.tmp')), 'tmp leftovers cleaned on open');
      });
    }

    it('snapshot-mid-write in a delta: no snapshot listed, and what was left holds the archive alone (no spool: each byte written once)', async () => {
      const storeDir = join(dir, 'store');
      const result = await runChild(storeDir, 'snapshot-mid-write', 'delta');
      assert.equal(result.signal, 'SIGKILL', `child was not killed: code ${result.code}, stdout ${result.stdout}, stderr ${result.stderr}`);
      const leftovers = await readdir(storeDir);
      const tmp = leftovers.filter((n) => n.endsWith('.tmp'));
      assert.equal(tmp.length, 1, `one *.tmp leftover, found ${leftovers.join(', ')}`);
      assert.deepEqual(await readdir(join(storeDir, tmp[0] as string)), ['archive.tar.gz'], 'the delta killed half way had written its archive only');
      const after = await SnapshotStore.open(storeDir, { retain: 3 });
      const listed = await after.list();
      assert.deepEqual(listed.map((s) => s.meta.index), [150], 'the base alone is listed');
      assert.ok(!(await readdir(storeDir)).some((n) => n.endsWith('.tmp')), 'tmp leftovers cleaned on open');
    });

    it('without a failpoint the child completes', async () => {
      const storeDir = join(dir, 'store');
      const result = await runChild(storeDir, '');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /survived/);
    });
  });
});

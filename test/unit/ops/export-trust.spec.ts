/**
 * Exports of a stored archive (a task's file, a scheduled copy and its S3
 * upload) read it as GetSnapshot serves it (SnapshotHandle.createServedReadStream,
 * issue 15): an archive this process hashed itself (written through its
 * sink, or verified whole) is read once and hashed zero times on the main
 * thread; any other is checked chunk by chunk as read (each byte hashed
 * once), damage failing the export, and is trusted once such a read has
 * checked it whole. The copy still carries the archive's SHA-256 for a user
 * to check. Before, every export hashed every chunk (exportArchiveFile's
 * chunk check), and a scheduled upload hashed it all again (S3's HashCheck).
 *
 * Counted with a spy on the hasher (node:crypto's createHash and hash, SHA-256
 * hashes made by our code: the AWS SDK's own request signing is not ours) and
 * a read counter through the store's SnapshotIo.
 */
import assert from 'node:assert/strict';
import crypto, { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import zlib from 'node:zlib';

import { exportArchiveFile, exportDirectory, MARKER_FILE } from '../../../src/ops/snapshot-export.js';
import { readArchive } from '../../../src/snapshot/archive.js';
import { decodeStateRecords } from '../../../src/snapshot/state-format.js';
import { rocksDataDir } from '../../../src/storage/rocks-data-dir.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { scheduledSnapshotRunner } from '../../../src/ops/schedule.js';
import { NO_RETENTION } from '../../../src/ops/retention.js';
import { S3Destination, s3SettingsFrom, snapshotName } from '../../../src/ops/s3.js';
import type { Task } from '../../../src/ops/task-queue.js';
import { encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { nodeSnapshotIo, type SnapshotFile, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { ARCHIVE_FILE, CHUNKS_FILE, CHUNK_HASH_BYTES, SnapshotStore } from '../../../src/snapshot/store.js';
import { SnapshotStoreError } from '../../../src/snapshot/errors.js';
import { MEMBERSHIP, inBatches, sha256, tempDir } from '../snapshot/helpers.js';
import { BUCKET, S3Server } from './s3-server.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * spyOnSha256 counts the bytes our code feeds to SHA-256 from now until restore(): node:crypto's one-shot hash
 * (src/hash/sha256.ts) and the Hash objects createHash makes, whose caller is not under node_modules (the AWS
 * SDK signs each request's payload itself).
 */
function spyOnSha256(): { readonly bytes: () => number; restore(): void } {
  const realCreateHash = crypto.createHash;
  const realHash = crypto.hash;
  let bytes = 0;
  const ours = (): boolean => !/node_modules/.test(new Error().stack?.split('\n')[3] ?? '');
  const lengthOf = (d: unknown): number => (typeof d === 'string' ? Buffer.byteLength(d) : (d as ArrayBufferView).byteLength);
  crypto.createHash = ((algorithm: string, options?: crypto.HashOptions) => {
    const h = realCreateHash(algorithm, options);
    if (algorithm.toLowerCase() !== 'sha256' || !ours()) return h;
    const update = h.update.bind(h) as (d: unknown, e?: unknown) => crypto.Hash;
    (h as { update: unknown }).update = (d: unknown, e?: unknown) => {
      bytes += lengthOf(d);
      return update(d, e);
    };
    return h;
  }) as typeof crypto.createHash;
  crypto.hash = ((algorithm: string, data: crypto.BinaryLike, encoding?: crypto.BinaryToTextEncoding) => {
    if (algorithm.toLowerCase() === 'sha256') bytes += lengthOf(data);
    return realHash(algorithm, data, encoding as crypto.BinaryToTextEncoding);
  }) as typeof crypto.hash;
  syncBuiltinESMExports();
  return {
    bytes: () => bytes,
    restore: () => {
      crypto.createHash = realCreateHash;
      crypto.hash = realHash;
      syncBuiltinESMExports();
    },
  };
}

/** spyOnGzip counts the bytes node:zlib's gzip (each archive member a store compresses: SnapshotIo.gzip) is given from now until restore(). */
function spyOnGzip(): { readonly bytes: () => number; restore(): void } {
  const real = zlib.gzip;
  let bytes = 0;
  zlib.gzip = ((buf: zlib.InputType, ...rest: unknown[]) => {
    bytes += typeof buf === 'string' ? Buffer.byteLength(buf) : (buf as ArrayBufferView).byteLength;
    return (real as (...a: unknown[]) => void)(buf, ...rest);
  }) as typeof zlib.gzip;
  syncBuiltinESMExports();
  return {
    bytes: () => bytes,
    restore: () => {
      zlib.gzip = real;
      syncBuiltinESMExports();
    },
  };
}

/** countingIo: the real SnapshotIo, counting the bytes read from archive files (by handle and by stream). */
function countingIo(): { readonly io: SnapshotIo; readonly read: { bytes: number } } {
  const read = { bytes: 0 };
  const counted = (s: Readable): Readable => s.on('data', (c: Buffer) => (read.bytes += c.length));
  const io: SnapshotIo = {
    ...nodeSnapshotIo,
    open: async (path, flags, mode) => {
      const fh = await nodeSnapshotIo.open(path, flags, mode);
      if (flags !== 'r' || !path.endsWith(ARCHIVE_FILE)) return fh;
      return new Proxy(fh, {
        get(target, prop) {
          if (prop === 'read') {
            return async (...args: Parameters<SnapshotFile['read']>) => {
              const r = await target.read(...args);
              read.bytes += r.bytesRead;
              return r;
            };
          }
          if (prop === 'createReadStream') return (o: Parameters<SnapshotFile['createReadStream']>[0]) => counted(target.createReadStream(o));
          const v = (target as unknown as Record<string | symbol, unknown>)[prop];
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    },
    createReadStream: (path, options) => {
      const s = nodeSnapshotIo.createReadStream(path, options);
      return path.endsWith(ARCHIVE_FILE) ? counted(s) : s;
    },
  };
  return { io, read };
}

function writer(state: readonly StateRecord[]): (file: Writable) => Promise<{ stateKeys: number }> {
  return async (file) => {
    const enc = encodeStateRecords(inBatches(state));
    await pipeline(enc, file);
    return { stateKeys: enc.keys };
  };
}

/** randomState: ~`chunks` CHUNK_HASH_BYTES of incompressible values. */
function randomState(chunks: number): StateRecord[] {
  return Array.from({ length: chunks * 4 }, (_, i) => ({ key: Buffer.from(`k-${String(i).padStart(5, '0')}`), value: randomBytes(CHUNK_HASH_BYTES / 4) }));
}

const CREATED_AT = new Date(1_700_000_000_000).toISOString();

describe('exports of a stored archive: on its recorded hashes when this process hashed it', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir('snapcoord-export-trust-')));
  afterEach(async () => cleanup());

  it('a file export of an archive the store wrote reads each byte once and hashes none; the file carries the digest', async () => {
    const { io, read } = countingIo();
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, io });
    const created = await store.create({ index: 5, term: 1, membership: MEMBERSHIP, createdAt: CREATED_AT }, writer(randomState(4)));
    const h = await store.open(created.id);
    assert.equal(h.trusted(), true, 'written through its sink: hashed by this store');
    const out = join(dir, 'out', 'db.snapshot');
    read.bytes = 0;
    const spy = spyOnSha256();
    try {
      await exportArchiveFile(h, out, () => undefined);
    } finally {
      spy.restore();
      h.release();
    }
    assert.equal(spy.bytes(), 0, 'no byte hashed by the export');
    assert.equal(read.bytes, created.archiveBytes, 'each byte read once');
    assert.equal(sha256(await readFile(out)), created.archiveSha256, 'the file is the archive its digest names');
    assert.equal((await stat(out)).mode & 0o777, 0o400);

    // Damaged on the disk after its hashing: copied as it is (trusted), but the copy fails the digest it carries
    // (what `snapshot inspect` and a restore check), and the scrub quarantines the stored archive.
    const bytes = await readFile(created.path);
    bytes[CHUNK_HASH_BYTES + 3] = (bytes[CHUNK_HASH_BYTES + 3] ?? 0) ^ 0x08;
    await writeFile(created.path, bytes);
    const again = await store.open(created.id);
    try {
      await exportArchiveFile(again, join(dir, 'out', 'rotten.snapshot'), () => undefined);
    } finally {
      again.release();
    }
    assert.notEqual(sha256(await readFile(join(dir, 'out', 'rotten.snapshot'))), created.archiveSha256, "the copy's digest check fails it");
    assert.deepEqual((await store.scrub()).quarantined.map((q) => q.id), [created.id]);
  });

  it('an archive this process has not hashed is checked chunk by chunk as exported (damage fails it), and trusted once a whole export checked it', async () => {
    const snaps = join(dir, 'snaps');
    const first = await SnapshotStore.open(snaps, { retain: 3 });
    const created = await first.create({ index: 5, term: 1, membership: MEMBERSHIP, createdAt: CREATED_AT }, writer(randomState(4)));
    // A later process: nothing hashed yet.
    const { io, read } = countingIo();
    const later = await SnapshotStore.open(snaps, { retain: 3, io });
    const h = await later.open(created.id);
    try {
      assert.equal(h.trusted(), false);
      read.bytes = 0;
      const spy = spyOnSha256();
      try {
        await exportArchiveFile(h, join(dir, 'a.snapshot'), () => undefined);
      } finally {
        spy.restore();
      }
      assert.equal(spy.bytes(), created.archiveBytes, 'each byte hashed once (the chunk check)');
      assert.equal(read.bytes, created.archiveBytes, 'each byte read once');
      assert.equal(h.trusted(), true, 'every chunk checked: hashed whole by this process');
      const spy2 = spyOnSha256();
      try {
        await exportArchiveFile(h, join(dir, 'b.snapshot'), () => undefined);
      } finally {
        spy2.restore();
      }
      assert.equal(spy2.bytes(), 0, 'the next export hashes nothing');
    } finally {
      h.release();
    }

    // Damaged on disk, in a store that has not hashed it: the export fails at the chunk, nothing left behind.
    const third = await SnapshotStore.open(snaps, { retain: 3 });
    const file = await readFile(created.path);
    file[2 * CHUNK_HASH_BYTES + 7] = (file[2 * CHUNK_HASH_BYTES + 7] ?? 0) ^ 0x20;
    await writeFile(created.path, file);
    const d = await third.open(created.id);
    try {
      await assert.rejects(exportArchiveFile(d, join(dir, 'c.snapshot'), () => undefined), (err: unknown) => err instanceof SnapshotStoreError && err.code === 'corrupt' && /chunk 2/.test(err.message));
      await assert.rejects(stat(join(dir, 'c.snapshot')), /ENOENT/);
    } finally {
      d.release();
    }
  });

  it('a snapshot the store writes is hashed whole once, by its sink (with its chunk hashes), not again by the writer: each way it builds one', async () => {
    const state = randomState(6);
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 10, smallStateBytesMax: -1 });
    const small = await SnapshotStore.open(join(dir, 'small'), { retain: 10 });
    const stateBytes = state.reduce((n, r) => n + 8 + r.key.length + r.value.length, 0);
    const ways: [string, () => Promise<{ archiveBytes: number; archiveSha256: string; path: string }>][] = [
      ['create (state.bin file)', () => store.create({ index: 1, term: 1, membership: MEMBERSHIP, createdAt: CREATED_AT }, writer(state))],
      ['createFromRecords (streamed)', () => store.createFromRecords({ index: 2, term: 1, membership: MEMBERSHIP, createdAt: CREATED_AT }, inBatches(state))],
      ['createFromRecords (in memory)', () => small.createFromRecords({ index: 3, term: 1, membership: MEMBERSHIP, createdAt: CREATED_AT }, inBatches(state.slice(0, 8)))],
    ];
    for (const [way, make] of ways) {
      const spy = spyOnSha256();
      let made;
      try {
        made = await make();
      } finally {
        spy.restore();
      }
      // state.bin's SHA-256 (for SHA256SUMS), then the archive: whole and per 1 MiB chunk, as the sink writes it.
      const want = stateBytes + 2 * made.archiveBytes + 64 * 1024;
      assert.ok(spy.bytes() <= want, `${way}: ${spy.bytes()} bytes hashed, want at most ${want} (state.bin once, the ${made.archiveBytes}-byte archive twice)`);
      assert.equal(sha256(await readFile(made.path)), made.archiveSha256, `${way}: the recorded digest is the file's`);
    }
  });

  it('a directory export copies the stored archive\'s compressed state members into its snapshot (gzips only meta.json and SHA256SUMS, hashes no state.bin), read once; one of another layout is still built from the installed state', async () => {
    const state = randomState(6);
    const { io, read } = countingIo();
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, io });
    // As a node stores its snapshots: state members of whole records (createFromRecords), and, for the other case,
    // one whole tar cut into blocks (create: the head member runs into state.bin).
    const members = await store.createFromRecords({ index: 7, term: 2, membership: MEMBERSHIP, createdAt: CREATED_AT }, inBatches(state));
    const plain = await store.create({ index: 6, term: 2, membership: MEMBERSHIP, createdAt: CREATED_AT }, writer(state));
    const opts = { storage: rocksDataDir, nodeId: 'n1', clusterId: 'c1', selfAddress: '127.0.0.1:9', version: 'test' };
    const exportOf = async (stored: typeof members, name: string): Promise<{ gzipped: number; hashed: number; target: string }> => {
      const h = await store.open(stored.id);
      const target = join(dir, name);
      read.bytes = 0;
      const gz = spyOnGzip();
      const spy = spyOnSha256();
      try {
        await exportDirectory(h, { root: dir, names: [name], path: target }, opts);
      } finally {
        spy.restore();
        gz.restore();
        h.release();
      }
      assert.equal(read.bytes, stored.archiveBytes, 'the stored archive read once');
      return { gzipped: gz.bytes(), hashed: spy.bytes(), target };
    };
    const stateBytes = members.meta.stateBytes;

    const copied = await exportOf(members, 'copied');
    assert.ok(copied.gzipped < 64 * 1024, `${copied.gzipped} bytes gzipped by the export: want only meta.json's and SHA256SUMS' members, not the ${stateBytes}-byte state`);
    await checkExport(copied.target, state, members.archiveBytes);
    // Hashed: the new archive as its sink writes it (whole and per chunk), and small files; state.bin not again (its
    // digest is the stored one's).
    const exported = await exportedSnapshot(copied.target);
    assert.ok(copied.hashed <= 2 * exported.archiveBytes + 64 * 1024, `${copied.hashed} bytes hashed: want at most the new archive's ${exported.archiveBytes} twice (its sink) and no state.bin (${stateBytes})`);

    const rebuilt = await exportOf(plain, 'rebuilt');
    assert.ok(rebuilt.gzipped >= stateBytes, 'another layout: built from the installed state (gzipped whole)');
    await checkExport(rebuilt.target, state, null);

    // A byte of a state member damaged on the disk after its hashing (trusted: read as it is): its gzip CRC-32 fails
    // the export, the copy is not kept and nothing is left at the target.
    const bytes = await readFile(members.path);
    bytes[3 * CHUNK_HASH_BYTES + 11] = (bytes[3 * CHUNK_HASH_BYTES + 11] ?? 0) ^ 0x40;
    await writeFile(members.path, bytes);
    const h = await store.open(members.id);
    try {
      await assert.rejects(exportDirectory(h, { root: dir, names: ['rotten'], path: join(dir, 'rotten') }, opts));
    } finally {
      h.release();
    }
    await assert.rejects(stat(join(dir, 'rotten')), /ENOENT/);
  });

  it('a scheduled run with an S3 destination: the copy and the upload each read the archive once; only the copy hashes it (once: it replaces older copies), the upload none; the object carries the digest', async () => {
    const { io, read } = countingIo();
    const store = await SnapshotStore.open(join(dir, 'snaps'), { retain: 3, io });
    const created = await store.create({ index: 9, term: 2, membership: MEMBERSHIP, createdAt: CREATED_AT }, writer(randomState(6)));
    const s3 = await S3Server.start();
    const env = s3.env();
    const saved = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'].map((n) => [n, process.env[n]] as const);
    for (const [n] of saved) process.env[n] = env[n];
    const dest = await S3Destination.open(`s3://${BUCKET}/t/`, s3SettingsFrom({ endpoint: env['SNAPCOORD_S3_ENDPOINT']!, forcePathStyle: true, credentialsFile: '' }, { ...env }));
    try {
      const now = Date.parse('2026-12-07T10:00:00Z');
      const name = snapshotName('db', new Date(now));
      const runner = scheduledSnapshotRunner({ snapshot: () => store.open(created.id), dbName: 'db', snapshotDir: join(dir, 'local'), retention: NO_RETENTION, destination: dest, log: silent, now: () => now });
      read.bytes = 0;
      const spy = spyOnSha256();
      let details;
      try {
        details = await runner({ uid: 1, details: { path: join(dir, 'local', name) } } as Task, () => undefined);
      } finally {
        spy.restore();
      }
      assert.equal(details.phase, 'done');
      assert.equal(details.digest, created.archiveSha256);
      // The run opens the snapshot (the open's cheap check hashes chunks.sha256 for its own checksum), the local copy
      // checks every chunk as it copies (retention keeps it in place of older ones, whatever the trust), the upload
      // hashes none.
      const chunkFile = (await stat(join(dirname(created.path), CHUNKS_FILE))).size;
      assert.ok(
        spy.bytes() >= created.archiveBytes && spy.bytes() <= created.archiveBytes + chunkFile,
        `${spy.bytes()} bytes hashed by our code: want the archive's ${created.archiveBytes} once (the copy's check) and at most the open's check of a ${chunkFile}-byte chunks.sha256, the upload none`,
      );
      assert.equal(read.bytes, 2 * created.archiveBytes, 'read once for the copy, once for the upload');
      // What a user checks: the object's recorded SHA-256, and its bytes against it (the download checks them).
      const head = await dest.head(`t/${name}`);
      assert.equal(head.sha256, created.archiveSha256);
      const got = await dest.downloadToFile(`t/${name}`, join(dir, 'back.snapshot'));
      assert.equal(got.sha256, created.archiveSha256);
      assert.equal(sha256(await readFile(join(dir, 'back.snapshot'))), created.archiveSha256);
    } finally {
      for (const [n, v] of saved) {
        if (v === undefined) delete process.env[n];
        else process.env[n] = v;
      }
      dest.close();
      await s3.close();
    }
  });
});

/** exportedSnapshot: the one snapshot in a directory export's store. */
async function exportedSnapshot(target: string): Promise<{ readonly id: string; readonly archiveBytes: number; readonly store: SnapshotStore }> {
  const store = await SnapshotStore.open(join(target, 'snapshots', 'store'), { retain: 2 });
  const list = await store.list();
  assert.equal(list.length, 1);
  const only = list[0] as (typeof list)[number];
  return { id: only.id, archiveBytes: only.archiveBytes, store };
}

/**
 * checkExport: a directory export holds `state` in its RocksDB and one snapshot of it whose archive passes every
 * check (state.bin's digest included), with the copy's one-node membership, and (`tableFor` not null) a member table.
 */
async function checkExport(target: string, state: readonly StateRecord[], tableFor: number | null): Promise<void> {
  assert.ok((await readFile(join(target, MARKER_FILE), 'utf8')).includes('"index"'));
  const { id, store } = await exportedSnapshot(target);
  const h = await store.open(id, { verify: true });
  try {
    const got: StateRecord[] = [];
    const r = await readArchive(h.createReadStream(), async (meta, s) => {
      assert.deepEqual(meta.membership, { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:9' } });
      for await (const batch of decodeStateRecords(s)) got.push(...batch);
    });
    assert.equal(r.stateSha256, r.declaredStateSha256, 'state.bin hashes to its SHA256SUMS line');
    assert.equal(got.length, state.length);
    assert.ok(got.every((x, i) => Buffer.compare(x.key, state[i]!.key) === 0 && Buffer.compare(x.value, state[i]!.value) === 0));
    if (tableFor !== null) assert.notEqual(await store.members(h), null, 'its member table recorded (a later delta starts from it)');
  } finally {
    h.release();
  }
  const copy = await RocksStorage.open(target);
  try {
    assert.equal(copy.appliedIndex() > 0, true);
    const last = state[state.length - 1]!;
    assert.deepEqual(Buffer.from((await copy.get(last.key)) ?? []), Buffer.from(last.value));
  } finally {
    await copy.close();
  }
}

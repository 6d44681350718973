/**
 * State images (issue 15): a generation exported by the store that
 * built it and imported by another as its next generation.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { CarriedRecordsDigest, verifyImageRecords } from '../../../src/fsm/restore-digest.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import { readStateImageChunks, type StateImage, type StateImageChunk, type StateImageSource } from '../../../src/storage/state-image.js';
import type { KeyValue } from '../../../src/storage/types.js';
import { tmpfsUnderTemp, run, unmountTmpfs } from '../../harness/tmpfs.js';
import { until } from '../../harness/until.js';
import { rejectsWith } from './helpers.js';

const membership = { voters: ['n1', 'n2'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002' } };

function* records(count: number, tag: string): Generator<KeyValue[]> {
  for (let i = 0; i < count; i += 1000) {
    const batch: KeyValue[] = [];
    for (let j = i; j < Math.min(count, i + 1000); j++) batch.push({ key: Buffer.from(`k/${String(j).padStart(6, '0')}`), value: Buffer.from(`${tag}${j}`.repeat(40)) });
    yield batch;
  }
}

/** sourceOf: the image as a peer would send it, with `change` applied to each chunk first. */
function sourceOf(image: StateImage, change: (c: StateImageChunk) => StateImageChunk = (c) => c): StateImageSource {
  return {
    files: image.files,
    chunks: (async function* () {
      for await (const c of readStateImageChunks(image, 64 * 1024)) yield change(c);
    })(),
  };
}

describe('RocksStorage state images', function () {
  this.timeout(120_000);
  let dir: string;
  let leader: RocksStorage;
  let follower: RocksStorage;
  let image: { readonly image: StateImage; release(): void };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-image-'));
    leader = await RocksStorage.open(join(dir, 'leader'));
    follower = await RocksStorage.open(join(dir, 'follower'));
    await follower.installState(records(3_000, 'old'), { appliedIndex: 4, membership });
    await leader.installState(records(40_000, 'new'), { appliedIndex: 7, membership }, { exportImage: true }); // ~15 MB: SSTs and a WAL
    const held = leader.stateImage(7);
    assert.ok(held !== null, 'the exporting install kept an image');
    image = held;
  });
  afterEach(async () => {
    image.release();
    await leader.close();
    await follower.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('an imported image holds the exporter\'s state (equal state digests), also after a reopen', async () => {
    assert.equal(leader.stateImage(6), null, 'no image of another index');
    await follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership });
    assert.equal(follower.appliedIndex(), 7);
    const digest = await leader.stateDigest();
    assert.equal(await follower.stateDigest(), digest);
    await follower.close();
    follower = await RocksStorage.open(join(dir, 'follower'));
    assert.equal(follower.appliedIndex(), 7);
    assert.deepEqual(follower.membership(), membership);
    assert.equal(await follower.stateDigest(), digest);
    // The exporter's own generation was reopened after the export and still takes writes.
    await leader.write({ writes: [{ key: Buffer.from('k/x'), value: Buffer.from('y') }], appliedIndex: 8 });
    assert.equal(leader.appliedIndex(), 8);
  });

  it('a file whose bytes changed on the way is refused and the old state kept', async () => {
    const before = await follower.stateDigest();
    // The largest file (an SST, or the WAL when RocksDB flushed nothing yet), its first chunk.
    const largest = image.image.files.reduce((at, f, i, all) => (f.sizeBytes > (all[at]?.sizeBytes ?? 0) ? i : at), 0);
    const flipped = sourceOf(image.image, (c) => {
      if (c.file !== largest || c.offset !== 0) return c;
      const data = Buffer.from(c.data);
      data[data.length >> 1] = (data[data.length >> 1] ?? 0) ^ 1;
      return { ...c, data };
    });
    await rejectsWith(follower.importStateImage(flipped, { appliedIndex: 7, membership }), 'corrupt', /does not match its SHA-256/);
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
    assert.deepEqual((await readdir(join(dir, 'follower'))).filter((n) => n.startsWith('state-')), ['state-2'], 'the new generation was deleted');
  });

  it('verifyRecords sees the imported state\'s records whole, in key order, before the commit: a records digest that differs refuses the image (both digests named), the old state kept', async () => {
    const before = await follower.stateDigest();
    const digestOf = (changeAt: number): string => {
      const d = new CarriedRecordsDigest();
      for (const batch of records(40_000, 'new')) for (const [i, r] of batch.entries()) d.add(i === changeAt ? { key: r.key, value: Buffer.from('changed') } : r);
      return d.hex();
    };
    // What the restore entry names is not what the (self-consistent) image holds: one value differs.
    const named = digestOf(17);
    await rejectsWith(
      follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership }, { verifyRecords: verifyImageRecords(named) }),
      'corrupt',
      new RegExp(`state image for .*state-3: its 40000 carried records have records digest ${digestOf(-1)}, but the restore entry names ${named}`),
    );
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
    assert.deepEqual((await readdir(join(dir, 'follower'))).filter((n) => n.startsWith('state-')), ['state-2'], 'the new generation was deleted');
    // The records as they are: taken.
    const held = leader.stateImage(7);
    assert.ok(held !== null);
    try {
      await follower.importStateImage(sourceOf(held.image), { appliedIndex: 7, membership }, { verifyRecords: verifyImageRecords(digestOf(-1)) });
    } finally {
      held.release();
    }
    assert.equal(await follower.stateDigest(), await leader.stateDigest());
  });

  it('refuses names that are not RocksDB files, a short file, and an image of another index or membership', async () => {
    const before = await follower.stateDigest();
    const renamed = (name: string): StateImageSource => ({ files: image.image.files.map((f, i) => (i === 0 ? { ...f, name } : f)), chunks: sourceOf(image.image).chunks });
    for (const name of ['../x.sst', '/etc/passwd', 'LOCK', '.hidden', 'a/000001.sst', '000001.sst\u0000']) {
      await rejectsWith(follower.importStateImage(renamed(name), { appliedIndex: 7, membership }), 'invalidArgument', /is not a RocksDB file name/);
    }
    const short: StateImageSource = { files: image.image.files, chunks: (async function* () {
      for await (const c of readStateImageChunks(image.image)) if (c.file !== 0) yield c;
    })() };
    await rejectsWith(follower.importStateImage(short, { appliedIndex: 7, membership }), 'corrupt');
    await rejectsWith(follower.importStateImage(sourceOf(image.image), { appliedIndex: 9, membership }), 'corrupt', /applied index 7, not 9/);
    const other = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };
    await rejectsWith(follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership: other }), 'corrupt', /membership/);
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
  });

  it('a CURRENT that points out of the new generation (at the live one\'s MANIFEST) is refused, the live generation untouched', async () => {
    const before = await follower.stateDigest();
    const live = join(dir, 'follower', 'state-2');
    const liveFiles = (await readdir(live)).sort();
    const manifest = liveFiles.find((n) => n.startsWith('MANIFEST-'));
    assert.ok(manifest !== undefined);
    // A sender's own manifest: its CURRENT names ../state-2/MANIFEST-…, with that content's SHA-256.
    const current = Buffer.from(`../state-2/${manifest}\n`);
    const at = image.image.files.findIndex((f) => f.name === 'CURRENT');
    const files = image.image.files.map((f, i) => (i === at ? { ...f, sizeBytes: current.length, sha256: createHash('sha256').update(current).digest() } : f));
    const source: StateImageSource = {
      files,
      chunks: (async function* () {
        for await (const c of readStateImageChunks(image.image, 64 * 1024)) yield c.file === at ? { ...c, data: current } : c;
      })(),
    };
    // RocksDB reads CURRENT as a file name of its own kind (MANIFEST-<number>) and refuses anything else.
    await assert.rejects(follower.importStateImage(source, { appliedIndex: 7, membership }), (err: unknown) => err instanceof StorageError && /CURRENT file corrupted/.test(err.message));
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
    assert.deepEqual((await readdir(live)).sort(), liveFiles, 'the live generation\'s files are as they were');
    assert.deepEqual((await readdir(join(dir, 'follower'))).filter((n) => n.startsWith('state-')), ['state-2'], 'the new generation was deleted');
  });

  it('an image that would leave less free disk than the reserve is refused before a byte is read or written, the old state kept', async () => {
    const before = await follower.stateDigest();
    const st = await statfs(dir);
    // A reserve beyond what is free: any image is too large (this disk has more free than an image may hold, 64 GiB).
    const reserveBytes = 2 * st.bavail * st.bsize;
    let chunksRead = 0;
    const counted = sourceOf(image.image, (c) => {
      chunksRead++;
      return c;
    });
    await rejectsWith(follower.importStateImage(counted, { appliedIndex: 7, membership }, { reserveBytes }), 'io', /bytes free \(with a reserve of \d+\), but \d+ are free: not imported/);
    assert.equal(chunksRead, 0, 'nothing was read from the sender');
    assert.equal(follower.appliedIndex(), 4);
    assert.equal(await follower.stateDigest(), before);
    assert.deepEqual((await readdir(join(dir, 'follower'))).filter((n) => n.startsWith('state-')), ['state-2'], 'no new generation was made');
    // The control: the same image with the default reserve (none) is imported.
    await follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership });
    assert.equal(follower.appliedIndex(), 7);
  });

  it('a dropped image is gone once its last reader releases it; none is kept across a restart', async () => {
    leader.dropStateImage();
    assert.equal(leader.stateImage(7), null);
    assert.ok((await readdir(join(dir, 'leader', 'images'))).length === 1, 'kept while read');
    image.release();
    // The release removes the files in the background: wait for it (bounded), do not guess how long it takes.
    await until('the released image removed', 10_000, async () => ((await readdir(join(dir, 'leader', 'images'))).length === 0 ? true : undefined));
    await leader.installState(records(100, 'again'), { appliedIndex: 9, membership }, { exportImage: true });
    await leader.close();
    leader = await RocksStorage.open(join(dir, 'leader'));
    assert.equal(leader.stateImage(9), null);
    assert.deepEqual(await readdir(dir + '/leader').then((n) => n.includes('images')), false);
  });
});

describe('RocksStorage state images: the disk fills up during an import (a tmpfs; needs root and a kernel that lets it mount)', function () {
  this.timeout(120_000);
  let dir = '';
  let mnt = '';
  let mounted = false;
  let exporter: RocksStorage;
  let follower: RocksStorage;
  let image: { readonly image: StateImage; release(): void };
  let oldDigest = '';

  before(async function () {
    ({ dir, mnt, mounted } = await tmpfsUnderTemp('snapcoord-image-full-', 'size=96m,nr_inodes=4096,mode=0700', 'state image disk-full test'));
    if (!mounted) this.skip();
    exporter = await RocksStorage.open(join(dir, 'exporter'));
    // ~24 MiB of incompressible values: the image's SSTs and WAL.
    const batches = function* (): Generator<KeyValue[]> {
      for (let b = 0; b < 24; b++) yield Array.from({ length: 1024 }, (_, i) => ({ key: Buffer.from(`k/${b}/${i}`), value: randomBytes(1024) }));
    };
    await exporter.installState(batches(), { appliedIndex: 7, membership }, { exportImage: true });
    const held = exporter.stateImage(7);
    assert.ok(held !== null);
    image = held;
    follower = await RocksStorage.open(join(mnt, 'follower'));
    await follower.installState(records(3_000, 'old'), { appliedIndex: 4, membership });
    oldDigest = await follower.stateDigest();
  });

  after(async () => {
    image?.release();
    await exporter?.close();
    await follower?.close();
    if (mounted) await unmountTmpfs(mnt);
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  /** checkOld: the follower holds its old state, no other generation, and takes writes. */
  async function checkOld(label: string): Promise<void> {
    assert.equal(follower.appliedIndex(), 4, label);
    assert.equal(await follower.stateDigest(), oldDigest, label);
    assert.deepEqual((await readdir(join(mnt, 'follower'))).filter((n) => n.startsWith('state-')), ['state-2'], `${label}: the new generation was deleted`);
  }

  it('no space for the bytes mid-file (ENOSPC on a write): a clear io error, the old state kept', async () => {
    const filler = join(mnt, 'filler');
    let chunks = 0;
    const source: StateImageSource = {
      files: image.image.files,
      chunks: (async function* () {
        for await (const c of readStateImageChunks(image.image, 256 * 1024)) {
          yield c;
          // After the first chunk another writer takes what is left of the disk (the free-space check passed before).
          if (++chunks === 1) {
            const st = await statfs(mnt);
            await writeFile(filler, Buffer.alloc(st.bavail * st.bsize)).catch(() => undefined);
          }
        }
      })(),
    };
    try {
      await rejectsWith(follower.importStateImage(source, { appliedIndex: 7, membership }), 'io', /cannot (write|create|fsync).*ENOSPC/);
    } finally {
      await rm(filler, { force: true });
    }
    await checkOld('after ENOSPC on a write');
  });

  it('no inode left for the next file (ENOSPC on a create): a clear io error, the old state kept; with room again the same image is imported', async () => {
    const st = await statfs(mnt);
    const used = st.files - st.ffree;
    // Room for the new generation's directory and half the image's files.
    await run('mount', ['-o', `remount,nr_inodes=${used + 1 + (image.image.files.length >> 1)}`, mnt]);
    try {
      await rejectsWith(follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership }), 'io', /cannot create.*ENOSPC/);
    } finally {
      await run('mount', ['-o', 'remount,nr_inodes=4096', mnt]);
    }
    await checkOld('after ENOSPC on a create');
    await follower.importStateImage(sourceOf(image.image), { appliedIndex: 7, membership });
    assert.equal(follower.appliedIndex(), 7);
    assert.equal(await follower.stateDigest(), await exporter.stateDigest());
  });
});

/**
 * writeArchiveFromRecords: the archive it builds from records is a valid
 * multi-member gzip tar that `tar`, `sha256sum -c` and readArchive all read;
 * the state round-trips byte for byte (also through RocksStorage); it is
 * deterministic; bad records fail with nothing left behind; memory stays flat
 * (the compressed state waits in the spool, not in memory).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { access, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';

import { readArchive, writeArchive, writeArchiveFromRecords } from '../../../src/snapshot/archive.js';
import { StateBlockEncoder, writeArchiveFromMembers, type StateMembersProducer } from '../../../src/snapshot/archive-writer.js';
import { ArchiveSink } from '../../../src/snapshot/archive-sink.js';
import { ArchiveError, StateFormatError } from '../../../src/snapshot/errors.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { checkedStateRecords, decodeStateRecords, encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { MEMBERSHIP, writeCounting, collect, inBatches, records, sha256, sink, tempDir } from './helpers.js';

const run = promisify(execFile);
const META = { id: 'snap-7', index: 7, term: 2, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' };
const BLOCK = 64 * 1024;

async function build(all: readonly StateRecord[], dir: string, name: string, options: Parameters<typeof writeArchiveFromRecords>[3] = {}) {
  const chunks: Buffer[] = [];
  const result = await writeArchiveFromRecords(
    META,
    { records: inBatches(all, 37), spoolPath: join(dir, `${name}.spool`) },
    sink((c) => chunks.push(c)),
    { gzipBlockBytes: BLOCK, ...options },
  );
  return { result, bytes: Buffer.concat(chunks) };
}

describe('writeArchiveFromRecords', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(() => cleanup());

  it('keeps each state member\'s first key in memory of its own (no shared pool slab held for the whole write)', async () => {
    // The member table lives until the archive is written: a key in one of Node's 8 KiB pool slabs held the slab.
    const { result } = await build(records(600), dir, 'k');
    const state = result.members.state;
    assert.ok(state.length > 3, `members ${state.length}`);
    for (const m of state) assert.equal(m.firstKey.buffer.byteLength, m.firstKey.length, `a ${m.firstKey.length}-byte first key holds ${m.firstKey.buffer.byteLength} bytes`);
  });

  it('writes a multi-member gzip tar that tar, sha256sum -c and readArchive read, with state.bin byte for byte', async () => {
    const all = records(600);
    const { result, bytes } = await build(all, dir, 'a');
    const stateBin = await collect(encodeStateRecords(inBatches(all)));
    assert.ok(result.gzipMembers > 3, `members ${result.gzipMembers}`);
    assert.equal(result.meta.stateBytes, stateBin.length);
    assert.equal(result.meta.stateKeys, all.length);
    assert.equal(result.stateSha256, sha256(stateBin));
    assert.equal(result.archiveSha256, sha256(bytes));
    assert.equal(result.archiveBytes, bytes.length);
    assert.deepEqual(await readdir(dir), [], 'the spool file is removed');

    const path = join(dir, 'a.tar.gz');
    await writeFile(path, bytes);
    await run('gzip', ['-t', path]);
    const { stdout: list } = await run('tar', ['tzf', path]);
    assert.deepEqual(list.trim().split('\n'), ['meta.json', 'state.bin', 'SHA256SUMS']);
    const out = join(dir, 'x');
    await run('mkdir', [out]);
    await run('tar', ['xzf', path, '-C', out]);
    assert.deepEqual(await readFile(join(out, 'state.bin')), stateBin);
    await run('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out });
    assert.deepEqual(JSON.parse(await readFile(join(out, 'meta.json'), 'utf8')), result.meta);

    const read = await readArchive(Readable.from([bytes]), async (m, state) => {
      const got: StateRecord[] = [];
      for await (const batch of checkedStateRecords(state, m)) got.push(...batch);
      return got;
    });
    assert.deepEqual(read.meta, result.meta);
    assert.equal(read.stateSha256, result.stateSha256);
    assert.deepEqual(
      read.result.map((r) => [Buffer.from(r.key), Buffer.from(r.value)]),
      all.map((r) => [Buffer.from(r.key), Buffer.from(r.value)]),
    );
  });

  it('is deterministic, and holds the same state.bin as writeArchive from a file', async () => {
    const all = records(300, 5);
    const a = await build(all, dir, 'a');
    const b = await build(all, dir, 'b', { gzipInFlightMax: 1 });
    assert.deepEqual(a.bytes, b.bytes);
    const statePath = join(dir, 'state.bin');
    await writeFile(statePath, await collect(encodeStateRecords(inBatches(all))));
    const viaFile = await writeArchive(META, statePath, sink());
    assert.equal(viaFile.stateSha256, a.result.stateSha256);
    assert.deepEqual(viaFile.meta, a.result.meta);
  });

  it('writes the spool file and reads it back in pieces of about 1 MiB of whole members, not one call per member', async () => {
    // 8 MiB of state as 128 members of 64 KiB that compress to a few hundred bytes each (the etcd mix).
    const all = Array.from({ length: 8192 }, (_, i) => ({ key: Buffer.from(`k-${String(i).padStart(6, '0')}`), value: Buffer.alloc(1000, 'f') }));
    const calls = { write: 0, read: 0 };
    const io = {
      ...nodeSnapshotIo,
      open: async (...args: Parameters<typeof nodeSnapshotIo.open>) => {
        const f = await nodeSnapshotIo.open(...args);
        return Object.assign(Object.create(f) as typeof f, {
          write: (...w: Parameters<typeof f.write>) => (calls.write++, f.write(...w)),
          read: (...r: Parameters<typeof f.read>) => (calls.read++, f.read(...r)),
        });
      },
    };
    const counted = await build(all, dir, 'counted', { io });
    const plain = await build(all, dir, 'plain');
    assert.deepEqual(counted.bytes, plain.bytes);
    const members = counted.result.members.state.length;
    assert.ok(members >= 100, `${members} members`);
    assert.ok(calls.write <= 2 && calls.read <= 2, `${calls.write} writes and ${calls.read} reads of the spool for ${members} members`);
  });

  it('archives an empty state', async () => {
    const { result, bytes } = await build([], dir, 'e');
    assert.equal(result.meta.stateBytes, 0);
    assert.equal(result.meta.stateKeys, 0);
    const read = await readArchive(Readable.from([bytes]), async (_m, state) => (await collect(state)).length);
    assert.equal(read.result, 0);
  });

  for (const [name, bad, code] of [
    ['keys out of order', [{ key: Buffer.from('b'), value: Buffer.alloc(1) }, { key: Buffer.from('a'), value: Buffer.alloc(1) }], 'key-order'],
    ['a duplicate key', [{ key: Buffer.from('a'), value: Buffer.alloc(1) }, { key: Buffer.from('a'), value: Buffer.alloc(1) }], 'key-order'],
    ['an empty key', [{ key: Buffer.alloc(0), value: Buffer.alloc(1) }], 'empty-key'],
    ['a key over the limit', [{ key: Buffer.alloc(4097, 1), value: Buffer.alloc(1) }], 'key-too-large'],
  ] as const) {
    it(`refuses ${name} (StateFormatError ${code}); out is destroyed and the spool removed`, async () => {
      const out = sink();
      await assert.rejects(
        writeArchiveFromRecords(META, { records: inBatches(bad as readonly StateRecord[]), spoolPath: join(dir, 's.spool') }, out),
        (err: unknown) => err instanceof StateFormatError && err.code === code,
      );
      assert.ok(out.destroyed);
      assert.deepEqual(await readdir(dir), []);
    });
  }

  // StateBlockEncoder keeps the previous key (for the order check) in a buffer that starts at 256 bytes and grows
  // with the keys, and its first record-aligned block starts at 2 KiB: keys of every length up to the limit, in
  // order, encode and read back whole; the order check still sees a long previous key; the cap stays 64 KiB.
  it('StateBlockEncoder encodes keys growing to the limit and checks their order across its buffers growing', async () => {
    const all: StateRecord[] = [];
    for (let n = 1; n <= 4096; n = n < 200 ? n + 1 : n * 2 > 4096 && n < 4096 ? 4096 : n * 2) all.push({ key: Buffer.alloc(n, 0x61), value: Buffer.alloc(n % 7, n & 0xff) });
    const enc = new StateBlockEncoder(64 * 1024, {}, true);
    for (const r of all) enc.encode(r);
    enc.finish();
    const back: StateRecord[] = [];
    for await (const batch of decodeStateRecords(Readable.from(enc.ready))) back.push(...batch);
    assert.deepEqual(back.map((r) => [Buffer.from(r.key).toString('hex'), Buffer.from(r.value).toString('hex')]), all.map((r) => [Buffer.from(r.key).toString('hex'), Buffer.from(r.value).toString('hex')]));
    const order = new StateBlockEncoder(64 * 1024, {}, true);
    order.encode({ key: Buffer.alloc(3000, 0x62), value: Buffer.alloc(0) });
    assert.throws(() => order.encode({ key: Buffer.alloc(300, 0x62), value: Buffer.alloc(0) }), (err: unknown) => err instanceof StateFormatError && err.code === 'key-order' && /comes after/.test(err.message));
    const wide = new StateBlockEncoder(64 * 1024, { keyBytesMax: 100_000 }, true);
    wide.encode({ key: Buffer.alloc(64 * 1024, 0x63), value: Buffer.alloc(0) });
    assert.throws(() => wide.encode({ key: Buffer.alloc(64 * 1024 + 1, 0x64), value: Buffer.alloc(0) }), (err: unknown) => err instanceof StateFormatError && err.code === 'key-too-large' && /more than 65536/.test(err.message));
  });

  it('refuses to overwrite an existing spool file, and leaves it alone', async () => {
    const spoolPath = join(dir, 'taken.spool');
    await writeFile(spoolPath, 'someone else');
    await assert.rejects(writeArchiveFromRecords(META, { records: inBatches(records(3)), spoolPath }, sink()), /spool/);
    assert.equal(await readFile(spoolPath, 'utf8'), 'someone else');
  });

  it('passes the source error on and removes the spool', async () => {
    async function* failing(): AsyncGenerator<StateRecord[]> {
      yield records(10);
      throw new Error('iterator broke');
    }
    await assert.rejects(writeArchiveFromRecords(META, { records: failing(), spoolPath: join(dir, 'f.spool') }, sink()), /iterator broke/);
    await assert.rejects(access(join(dir, 'f.spool')));
  });

  it('an output that fails while the spool is being opened: the producer is stopped, the spool closed and removed (none left to the garbage collector)', async () => {
    const spoolPath = join(dir, 'out-fails.spool');
    const out = new Writable({ write: (_chunk, _encoding, callback) => callback() });
    const handles = { opened: 0, closed: 0 };
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      // The output fails while the spool is being opened (a slow disk): the stream has given up when it opens.
      open: async (path, flags, mode) => {
        const gone = new Promise((resolve) => out.once('close', resolve));
        out.destroy(new Error('the disk went away'));
        await gone;
        await new Promise((r) => setTimeout(r, 20));
        const h = await nodeSnapshotIo.open(path, flags, mode);
        handles.opened++;
        const close = h.close.bind(h);
        return Object.assign(h, { close: () => (handles.closed++, close()) });
      },
    };
    let delivered = 0;
    const producer: StateMembersProducer = async (deliver) => {
      for (let i = 0; i < 1_000; i++) {
        await deliver(Buffer.alloc(16), { stateBytes: 16, keys: 1, firstKey: Buffer.from(`k${String(i).padStart(4, '0')}`) });
        delivered++;
        await new Promise((r) => setTimeout(r, 1));
      }
      return { stateSha256: '0'.repeat(64), stateBytes: 16 * delivered, stateKeys: delivered };
    };
    await assert.rejects(writeArchiveFromMembers(META, producer, spoolPath, out, { io }), /the disk went away/);
    assert.equal(handles.opened, 1);
    assert.equal(handles.closed, 1, 'the spool was left open');
    await assert.rejects(access(spoolPath), 'the spool was left on disk');
    const stoppedAt = delivered;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(delivered, stoppedAt, 'the producer ran on');
    assert.equal(delivered, 0);
  });

  it('writes the delivered members into the spool as they are, several in one writev, never copied into one Buffer (issue 15)', async () => {
    const spoolPath = join(dir, 'writev.spool');
    const delivered = new Set<Uint8Array>();
    const written = { buffers: 0, bytes: 0, copies: 0 };
    const io: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (path, flags, mode) => {
        const h = await nodeSnapshotIo.open(path, flags, mode);
        if (path !== spoolPath) return h;
        const seen = (b: Uint8Array): void => {
          written.buffers++;
          written.bytes += b.length;
          if (!delivered.has(b)) written.copies++;
        };
        const write = h.write.bind(h);
        const writev = h.writev.bind(h);
        return Object.assign(h, {
          write: (b: Uint8Array, offset: number, length: number, position: number | null) => (seen(b), write(b, offset, length, position)),
          writev: (bs: Uint8Array[], position?: number) => (bs.forEach(seen), writev(bs, position)),
        });
      },
    };
    // 24 members of 96 KiB..160 KiB (several to each ~1 MiB spool write), bytes that are not a gzip stream: the writer does not read them.
    const members = Array.from({ length: 24 }, (_, i) => Buffer.alloc(96 * 1024 + (i % 5) * 16 * 1024, i + 1));
    const producer: StateMembersProducer = async (deliver) => {
      for (const [i, m] of members.entries()) {
        delivered.add(m);
        await deliver(m, { stateBytes: m.length, keys: 1, firstKey: Buffer.from(`k${String(i).padStart(4, '0')}`) });
      }
      return { stateSha256: '0'.repeat(64), stateBytes: members.reduce((n, m) => n + m.length, 0), stateKeys: members.length };
    };
    const chunks: Buffer[] = [];
    await writeArchiveFromMembers(META, producer, spoolPath, sink((c) => chunks.push(c)), { io });
    const total = members.reduce((n, m) => n + m.length, 0);
    assert.deepEqual(written, { buffers: members.length, bytes: total, copies: 0 });
    // ...and they lie in the archive in order, between its head and tail members.
    const archive = Buffer.concat(chunks);
    const at = archive.indexOf(members[0] as Buffer);
    assert.ok(at > 0);
    assert.ok(archive.subarray(at, at + total).equals(Buffer.concat(members)));
  });

  it('keeps memory flat: 192 MiB of incompressible state grows RSS by far less than the state (it waits in the spool)', async () => {
    // Large enough that a pipeline holding the state (or the compressed state) in memory could not pass,
    // with room for the garbage a collector has not reclaimed yet on a loaded machine.
    const stateBytesTarget = 192 * 1024 * 1024;
    async function* lazy(): AsyncGenerator<StateRecord[]> {
      let x = 0x2545f491;
      let produced = 0;
      for (let i = 0; produced < stateBytesTarget; ) {
        const batch: StateRecord[] = [];
        for (let n = 0; n < 256; n++, i++) {
          const value = Buffer.allocUnsafe(4096);
          for (let j = 0; j < value.length; j += 4) {
            x ^= x << 13;
            x ^= x >>> 17;
            x ^= x << 5;
            value.writeInt32LE(x | 0, j);
          }
          const key = Buffer.from(`k/${String(i).padStart(10, '0')}`);
          produced += 8 + key.length + value.length;
          batch.push({ key, value });
        }
        yield batch;
      }
    }
    global.gc?.();
    const startRss = process.memoryUsage().rss;
    let peakRss = startRss;
    const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 10);
    try {
      const result = await writeArchiveFromRecords(META, { records: lazy(), spoolPath: join(dir, 'm.spool') }, sink());
      assert.ok(result.meta.stateBytes >= stateBytesTarget);
      assert.ok(result.archiveBytes >= stateBytesTarget, 'incompressible: the archive is as large as the state');
    } finally {
      clearInterval(timer);
    }
    const growthMb = (peakRss - startRss) / 1024 / 1024;
    assert.ok(growthMb < 80, `RSS grew by ${growthMb.toFixed(0)} MiB for a 192 MiB state`);
  });

  it('round-trips a RocksStorage state: snapshotState -> archive -> readArchive -> installState gives the same digest', async () => {
    const a = await RocksStorage.open(join(dir, 'a'));
    const b = await RocksStorage.open(join(dir, 'b'));
    try {
      await a.installState(inBatches(records(2000, 9), 250), { appliedIndex: 42, membership: MEMBERSHIP });
      const reader = await a.snapshotState();
      const path = join(dir, 'snap.tar.gz');
      await writeArchiveFromRecords(META, { records: reader.batches(), spoolPath: join(dir, 'r.spool') }, createWriteStream(path));
      await readArchive(createReadStream(path), async (m, state) => {
        await b.installState(checkedStateRecords(state, m), { appliedIndex: 42, membership: MEMBERSHIP });
      });
      assert.equal(await b.stateDigest(), await a.stateDigest());
    } finally {
      await a.close();
      await b.close();
    }
  });
});


describe('writeArchiveFromMembers: a producer that knows the totals first (begin)', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(() => cleanup());

  /** members: the state of `all` as record-aligned gzip members (what a producer delivers), with their infos and totals. */
  async function membersOf(all: readonly StateRecord[]) {
    const encoder = new StateBlockEncoder(BLOCK, {}, true);
    for (const r of all) encoder.encode(r);
    const blocks = encoder.take(true);
    const out = await Promise.all(blocks.map(async ({ block, info }) => ({ member: await nodeSnapshotIo.gzip(block, { level: 1 }), info: info as NonNullable<typeof info>, block })));
    return { out, stateBytes: encoder.bytes, stateKeys: encoder.keys, stateSha256: sha256(Buffer.concat(blocks.map((b) => b.block))) };
  }

  it('writes the members delivered after begin straight into the archive (only those before wait in the spool): the same bytes', async () => {
    const all = records(600, 9);
    const m = await membersOf(all);
    assert.ok(m.out.length >= 8, `${m.out.length} members`);
    const made: { bytes: Buffer; spooled: number; sha: string }[] = [];
    // begin never, before the first member, after the third.
    for (const beginAt of [-1, 0, 3]) {
      const { io, written } = writeCounting();
      const chunks: Buffer[] = [];
      const r = await writeArchiveFromMembers(
        META,
        async (deliver, begin) => {
          for (let i = 0; i < m.out.length; i++) {
            if (i === beginAt) await begin({ stateBytes: m.stateBytes, stateKeys: m.stateKeys });
            const x = m.out[i] as (typeof m.out)[0];
            await deliver(x.member, x.info);
          }
          return { stateSha256: m.stateSha256, stateBytes: m.stateBytes, stateKeys: m.stateKeys };
        },
        join(dir, `b${beginAt}.spool`),
        sink((c) => chunks.push(c)),
        { io, gzipLevel: 1 },
      );
      made.push({ bytes: Buffer.concat(chunks), spooled: written.spool, sha: r.archiveSha256 });
      await assert.rejects(access(join(dir, `b${beginAt}.spool`)), 'the spool is removed');
    }
    const [never, first, third] = made as [(typeof made)[0], (typeof made)[0], (typeof made)[0]];
    const compressed = m.out.reduce((n, x) => n + x.member.length, 0);
    assert.equal(never.spooled, compressed, 'without begin, the whole compressed state is spooled');
    assert.equal(first.spooled, 0);
    const beforeBegin = m.out.slice(0, 3).reduce((n, x) => n + x.member.length, 0);
    assert.ok(third.spooled <= beforeBegin, `begun after 3 members (${beforeBegin} bytes): ${third.spooled} bytes spooled`);
    assert.ok(first.bytes.equals(never.bytes) && third.bytes.equals(never.bytes), 'the same archive bytes');
    assert.equal(first.sha, sha256(never.bytes));
    const read = await readArchive(Readable.from([first.bytes]), async (meta, state) => {
      let n = 0;
      for await (const batch of checkedStateRecords(state, meta)) n += batch.length;
      return n;
    });
    assert.equal(read.result, all.length);
  });

  it('reads the spool back into buffers reused once an ArchiveSink has written them (never those another out was given): the same bytes', async () => {
    // 120 members of 200-300 KiB (about 30 MiB, ~36 read-back spans), bytes that are not a gzip stream: the writer does not read them.
    const members = Array.from({ length: 120 }, (_, i) => randomBytes(200 * 1024 + (i % 7) * 16 * 1024));
    const total = members.reduce((n, m) => n + m.length, 0);
    const producer: StateMembersProducer = async (deliver) => {
      for (const [i, m] of members.entries()) await deliver(m, { stateBytes: m.length, keys: 1, firstKey: Buffer.from(`k${String(i).padStart(4, '0')}`) });
      return { stateSha256: '0'.repeat(64), stateBytes: total, stateKeys: members.length };
    };
    /** reads: the spool reads, and the distinct buffers they read into. */
    const readsOf = (): { io: SnapshotIo; reads: { calls: number; into: Set<ArrayBufferLike> } } => {
      const reads = { calls: 0, into: new Set<ArrayBufferLike>() };
      const io: SnapshotIo = {
        ...nodeSnapshotIo,
        open: async (path, flags, mode) => {
          const h = await nodeSnapshotIo.open(path, flags, mode);
          if (!path.endsWith('.spool')) return h;
          const read = h.read.bind(h);
          return Object.assign(h, {
            read: (...args: Parameters<typeof h.read>) => {
              reads.calls++;
              reads.into.add((args[0] as Uint8Array).buffer);
              return read(...args);
            },
          });
        },
      };
      return { io, reads };
    };
    const kept: Buffer[] = [];
    const plain = readsOf();
    await writeArchiveFromMembers(META, producer, join(dir, 'kept.spool'), sink((c) => kept.push(c)), { io: plain.io });
    const path = join(dir, 'archive.tar.gz');
    const toSink = readsOf();
    // The archive's disk is slow: its writes land a few ms after they are asked for (a buffer given back before is overwritten first).
    const slowDisk: SnapshotIo = {
      ...nodeSnapshotIo,
      open: async (p, flags, mode) => {
        const h = await nodeSnapshotIo.open(p, flags, mode);
        const later = async (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 3));
        const write = h.write.bind(h);
        const writev = h.writev.bind(h);
        return Object.assign(h, {
          write: async (...args: Parameters<typeof h.write>) => (await later(), write(...args)),
          writev: async (...args: Parameters<typeof h.writev>) => (await later(), writev(...args)),
        });
      },
    };
    await writeArchiveFromMembers(META, producer, join(dir, 'sink.spool'), await ArchiveSink.create(path, { io: slowDisk }), { io: toSink.io });
    const want = Buffer.concat(kept);
    assert.ok(want.length > total, `${want.length} bytes`);
    assert.ok((await readFile(path)).equals(want), 'the archive file holds the same bytes');
    // An out that keeps its chunks never gives a buffer back: each read is into a buffer of its own.
    assert.ok(plain.reads.calls >= 8, `${plain.reads.calls} reads`);
    assert.equal(plain.reads.into.size, plain.reads.calls);
    assert.ok(toSink.reads.into.size < toSink.reads.calls / 2, `${toSink.reads.calls} reads into ${toSink.reads.into.size} buffers`);
  });

  it('gives a spooled member back (deliver\'s `spooled`) only once its bytes are in the spool, never one that went on to out', async () => {
    const all = records(600, 9);
    const m = await membersOf(all);
    const want: Buffer[] = [];
    await writeArchiveFromMembers(
      META,
      async (deliver) => {
        for (const x of m.out) await deliver(x.member, x.info);
        return { stateSha256: m.stateSha256, stateBytes: m.stateBytes, stateKeys: m.stateKeys };
      },
      join(dir, 'plain.spool'),
      sink((c) => want.push(Buffer.from(c))),
      { gzipLevel: 1 },
    );
    // begin never, after the third member: each member's own copy is overwritten as soon as it is given back (as a
    // reused buffer would be); out keeps every chunk it is handed as it is (a consumer that still holds them).
    for (const beginAt of [-1, 3]) {
      const given: number[] = [];
      const chunks: Buffer[] = [];
      await writeArchiveFromMembers(
        META,
        async (deliver, begin) => {
          for (let i = 0; i < m.out.length; i++) {
            if (i === beginAt) await begin({ stateBytes: m.stateBytes, stateKeys: m.stateKeys });
            const x = m.out[i] as (typeof m.out)[0];
            const own = Buffer.from(x.member);
            await deliver(own, x.info, () => {
              given.push(i);
              own.fill(0xee);
            });
          }
          return { stateSha256: m.stateSha256, stateBytes: m.stateBytes, stateKeys: m.stateKeys };
        },
        join(dir, `given-${beginAt}.spool`),
        sink((c) => chunks.push(c)),
        { gzipLevel: 1 },
      );
      assert.ok(Buffer.concat(chunks).equals(Buffer.concat(want)), `begun at ${beginAt}: the same archive bytes`);
      if (beginAt < 0) assert.deepEqual(given, [...m.out.keys()], 'every member given back once, in order');
      else assert.ok(given.every((i) => i < beginAt), `given back: ${given.join(',')} (only members spooled before begin)`);
    }
  });

  it('refuses a state other than the one it began with (size-mismatch): out is destroyed, the spool removed', async () => {
    const m = await membersOf(records(300, 9));
    for (const wrong of [{ stateBytes: m.stateBytes + 1, stateKeys: m.stateKeys }, { stateBytes: m.stateBytes, stateKeys: m.stateKeys - 1 }]) {
      const out = sink();
      await assert.rejects(
        writeArchiveFromMembers(
          META,
          async (deliver, begin) => {
            await begin(wrong);
            for (const x of m.out) await deliver(x.member, x.info);
            return { stateSha256: m.stateSha256, stateBytes: m.stateBytes, stateKeys: m.stateKeys };
          },
          join(dir, 'wrong.spool'),
          out,
        ),
        (err: unknown) => err instanceof ArchiveError && err.code === 'size-mismatch',
      );
      assert.ok(out.destroyed, 'out is destroyed');
      await assert.rejects(access(join(dir, 'wrong.spool')));
    }
  });
});

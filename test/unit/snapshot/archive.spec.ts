import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { GUNZIP_CHUNK_BYTES, inspectArchive, readArchive, readArchiveHead, writeArchive, type ArchiveMeta } from '../../../src/snapshot/archive.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { encodeTarHeader, decodeTarHeader } from '../../../src/snapshot/tar-header.js';
import { decodeStateRecords, encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, collect, goodEntries, inBatches, records, rejectsWith, sha256, sink, tarGz, tempDir } from './helpers.js';

const CREATED_AT = '2024-05-01T12:34:56.789Z';
const META = { id: 'snap-7', index: 1234, term: 5, membership: MEMBERSHIP, createdAt: CREATED_AT, snapcoordVersion: '0.1.0' };

describe('snapshot archive', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let statePath: string;
  let state: StateRecord[];

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    statePath = join(dir, 'state.bin');
    state = records(2000);
    await pipeline(encodeStateRecords(inBatches(state)), createWriteStream(statePath));
  });
  afterEach(() => cleanup());

  async function writeTo(path: string, meta: Parameters<typeof writeArchive>[0] = META): ReturnType<typeof writeArchive> {
    return writeArchive(meta, statePath, createWriteStream(path));
  }

  it('round-trips: writeArchive then readArchive gives the meta and the state back', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    const written = await writeTo(archivePath);
    const file = await readFile(archivePath);
    assert.equal(written.archiveBytes, file.length);
    assert.equal(written.archiveSha256, sha256(file));
    assert.equal(written.meta.stateKeys, state.length);
    assert.equal(written.meta.stateBytes, (await readFile(statePath)).length);
    assert.equal(written.stateSha256, sha256(await readFile(statePath)));

    const got = await readArchive(createReadStream(archivePath), async (meta, s) => {
      assert.deepEqual(meta, written.meta);
      const out: StateRecord[] = [];
      for await (const batch of decodeStateRecords(s)) out.push(...batch);
      return out;
    });
    assert.deepEqual(got.meta, written.meta);
    assert.equal(got.stateSha256, written.stateSha256);
    assert.deepEqual(got.result.map((r) => Buffer.from(r.key).toString()), state.map((r) => Buffer.from(r.key).toString()));
    assert.ok(got.result.every((r, i) => Buffer.from(r.value).equals(Buffer.from(state[i]!.value))));
  });

  it('hands state.bin over in pieces below 128 KiB (GUNZIP_CHUNK_BYTES: an install\'s queued records pin their pieces, issue 15 peak RSS; below a node\'s mmap threshold, issue 15 page faults)', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    const written = await writeTo(archivePath);
    assert.ok(written.meta.stateBytes > 4 * 256 * 1024, `a state of ${written.meta.stateBytes} B spans several pieces`);
    const sizes = await readArchive(createReadStream(archivePath), async (_meta, s) => {
      const out: number[] = [];
      for await (const chunk of s) out.push((chunk as Buffer).length);
      return out;
    });
    assert.equal(sizes.result.reduce((a, b) => a + b, 0), written.meta.stateBytes);
    const largest = Math.max(...sizes.result);
    // NODE_MALLOC_ENV fixes glibc's mmap threshold at 128 KiB: a larger piece is a fresh mapping, faulted in page by page.
    assert.ok(largest < 128 * 1024 && largest <= GUNZIP_CHUNK_BYTES, `a piece of ${largest} B`);
  });

  it('writes meta.json, state.bin, SHA256SUMS as plain 0600 files with mtime = createdAt (read by tar-stream)', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    const written = await writeTo(archivePath);
    const extract = tar.extract();
    const seen: { name: string; mode?: number | undefined; uid?: number | undefined; gid?: number | undefined; type?: string | null | undefined; mtime?: Date | undefined; body: Buffer }[] = [];
    const done = (async () => {
      for await (const entry of extract) {
        seen.push({ ...entry.header, body: await collect(entry as unknown as AsyncIterable<Buffer>) });
      }
    })();
    extract.end(gunzipSync(await readFile(archivePath)));
    await done;
    assert.deepEqual(seen.map((e) => e.name), ['meta.json', 'state.bin', 'SHA256SUMS']);
    for (const e of seen) {
      assert.equal(e.type, 'file');
      assert.equal(e.mode, 0o600);
      assert.equal(e.uid, 0);
      assert.equal(e.gid, 0);
      assert.equal(e.mtime?.getTime(), Math.floor(Date.parse(CREATED_AT) / 1000) * 1000);
    }
    const meta = JSON.parse(seen[0]!.body.toString()) as ArchiveMeta;
    assert.deepEqual(meta, written.meta);
    assert.deepEqual(Object.keys(meta), ['formatVersion', 'id', 'index', 'term', 'membership', 'stateBytes', 'stateKeys', 'createdAt', 'snapcoordVersion']);
    assert.equal(meta.formatVersion, 1);
    assert.equal(
      seen[2]!.body.toString(),
      `${sha256(seen[0]!.body)}  meta.json\n${sha256(seen[1]!.body)}  state.bin\n`,
    );
  });

  it('is deterministic: the same state and meta give the same bytes', async () => {
    const a = await writeTo(join(dir, 'a.tar.gz'));
    const b = await writeTo(join(dir, 'b.tar.gz'), { ...META, stateKeys: state.length });
    assert.equal(a.archiveSha256, b.archiveSha256);
    assert.deepEqual(await readFile(join(dir, 'a.tar.gz')), await readFile(join(dir, 'b.tar.gz')));
  });

  it('reads a valid archive built by another tar writer (tar-stream)', async () => {
    const stateBytes = await readFile(statePath);
    const { entries } = goodEntries(stateBytes, state.length);
    const gz = await tarGz(entries);
    const got = await readArchive(Readable.from([gz]), async (_m, s) => (await collect(s)).length);
    assert.equal(got.result, stateBytes.length);
  });

  it('refuses a meta it would not read back', async () => {
    await rejectsWith(writeTo(join(dir, 'x.tar.gz'), { ...META, id: '../evil' }), 'bad-meta', /id/);
    await rejectsWith(writeTo(join(dir, 'x.tar.gz'), { ...META, createdAt: 'yesterday' }), 'bad-meta', /createdAt/);
    await rejectsWith(writeTo(join(dir, 'x.tar.gz'), { ...META, term: -1 }), 'bad-meta', /term/);
  });

  it('lets a consumer stop early: the rest is still read and verified', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    const written = await writeTo(archivePath);
    const got = await readArchive(createReadStream(archivePath), async () => 'ignored');
    assert.equal(got.stateSha256, written.stateSha256);
    const destroyed = await readArchive(createReadStream(archivePath), async (_m, s) => {
      for await (const _c of s) break; // destroys the stream
      return 'partial';
    });
    assert.equal(destroyed.stateSha256, written.stateSha256);
  });

  it('rejects with the consumer error and destroys the input when consume throws', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    await writeTo(archivePath);
    const input = createReadStream(archivePath, { highWaterMark: 1024 });
    const boom = new Error('consumer failed');
    await assert.rejects(
      readArchive(input, async (_m, s) => {
        for await (const _c of s) throw boom;
      }),
      (err: unknown) => err === boom,
    );
    assert.ok(input.destroyed);
  });

  it('inspectArchive verifies every hash and counts keys', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    const written = await writeTo(archivePath);
    const report = await inspectArchive(archivePath);
    assert.deepEqual(report, {
      meta: written.meta,
      archiveSha256: written.archiveSha256,
      archiveBytes: written.archiveBytes,
      keys: state.length,
      reservedRecords: 0,
      sessionRecords: 0,
      ok: true,
      problems: [],
    });
  });

  it('inspectArchive counts the records under its caller\'s reserved prefix apart from the keys', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    await writeTo(archivePath);
    // Keys key-1-000000 .. key-1-001999: those of 001xxx under the prefix, and a prefix longer than some key.
    const report = await inspectArchive(archivePath, { reservedKeyPrefix: Buffer.from('key-1-001') });
    assert.equal(report.ok, true);
    assert.equal(report.reservedRecords, 1000);
    assert.equal(report.keys, state.length - 1000);
    const none = await inspectArchive(archivePath, { reservedKeyPrefix: Buffer.from('key-1-0019999') });
    assert.equal(none.reservedRecords, 0);
    assert.equal(none.keys, state.length);
    const all = await inspectArchive(archivePath);
    assert.equal(all.reservedRecords, 0);
    assert.equal(all.keys, state.length);
  });

  it('inspectArchive counts the session records among the reserved ones by their own prefix', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    await writeTo(archivePath);
    // Reserved: key-1-001xxx (1000 records); sessions among them: key-1-0015xx (100).
    const report = await inspectArchive(archivePath, { reservedKeyPrefix: Buffer.from('key-1-001'), sessionKeyPrefix: Buffer.from('key-1-0015') });
    assert.equal(report.ok, true);
    assert.equal(report.reservedRecords, 1000);
    assert.equal(report.sessionRecords, 100);
    assert.equal(report.keys, state.length - 1000);
    const noSessions = await inspectArchive(archivePath, { reservedKeyPrefix: Buffer.from('key-1-001') });
    assert.equal(noSessions.sessionRecords, 0);
  });

  it('inspectArchive reports a corrupted archive, and a stateKeys that lies', async () => {
    const archivePath = join(dir, 'a.tar.gz');
    await writeTo(archivePath);
    const bytes = await readFile(archivePath);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    await writeFile(archivePath, bytes);
    const bad = await inspectArchive(archivePath);
    assert.equal(bad.ok, false);
    assert.ok(bad.problems.length >= 1);
    assert.match(bad.problems.join('\n'), /gzip stream is damaged/);

    const liar = join(dir, 'liar.tar.gz');
    await writeTo(liar, { ...META, stateKeys: 5 });
    const report = await inspectArchive(liar);
    assert.equal(report.ok, false);
    assert.match(report.problems.join('\n'), /holds more than the 5 records meta.json declares/);
    await assert.rejects(inspectArchive(join(dir, 'missing.tar.gz')), /ENOENT/);
  });

  it('encodes sizes beyond 8 GiB in base-256 and reads them back', () => {
    const size = 20 * 1024 ** 3 + 3;
    const h = decodeTarHeader(encodeTarHeader({ name: 'state.bin', size, mode: 0o600, mtimeSec: 1 }));
    assert.equal(h.size, size);
    const small = decodeTarHeader(encodeTarHeader({ name: 'state.bin', size: 8 ** 11 - 1, mode: 0o600, mtimeSec: 1 }));
    assert.equal(small.size, 8 ** 11 - 1);
  });

  it('streams to any Writable and reports the bytes written', async () => {
    let n = 0;
    const written = await writeArchive(META, statePath, sink((c) => (n += c.length)));
    assert.equal(written.archiveBytes, n);
  });

  // A fetch hung for ever in readArchiveHead (install-guard spec, about one run in three): the consumer stopped after
  // meta.json, but a small archive had been read whole by then, so destroying the input failed nothing, and the
  // reader waited for the unread state stream to drain.
  it('a consumer that fails after the input has ended fails readArchive (never left pending with the state unread)', async () => {
    const big = Array.from({ length: 4_000 }, (_, i) => ({ key: Buffer.from(`big/${String(i).padStart(5, '0')}`), value: Buffer.alloc(1024, 0x76) }));
    const bigState = join(dir, 'big-state.bin');
    await pipeline(encodeStateRecords(inBatches(big)), createWriteStream(bigState));
    const archivePath = join(dir, 'big.tar.gz');
    await writeArchive(META, bigState, createWriteStream(archivePath));
    const stop = new Error('stop after meta.json');
    for (const readAhead of [1 << 20, 64 * 1024]) {
      const input = createReadStream(archivePath, { highWaterMark: readAhead });
      const read = readArchive(input, async () => {
        if (!input.readableEnded) await new Promise<void>((resolve) => input.once('end', () => resolve()));
        throw stop;
      });
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        read.then(
          () => 'resolved',
          (err: unknown) => err,
        ),
        new Promise((resolve) => (timer = setTimeout(() => resolve('still pending after 10 s'), 10_000))),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, stop, `read ahead ${readAhead}`);
    }
  });

  describe('readArchiveHead', () => {
    async function onDisk(io: MemorySnapshotIo, name: string, bytes: Buffer): Promise<string> {
      await io.mkdir('/a', { recursive: true });
      const f = await io.open(`/a/${name}`, 'wx');
      await f.write(bytes, 0, bytes.length, 0);
      await f.close();
      return `/a/${name}`;
    }

    it('refuses an archive that breaks a rule before state.bin with readArchive\'s error (an unsafe first entry, stateBytes past the limit, not gzip)', async () => {
      const good = goodEntries(Buffer.from('state'), 0);
      const io = new MemorySnapshotIo();
      const unsafe = await onDisk(io, 'unsafe.tar.gz', await tarGz([{ header: { name: '../x' }, body: Buffer.from('x') }, ...good.entries]));
      await rejectsWith(readArchiveHead(unsafe, { io }), 'unsafe-path', /climbs out/);
      const ok = await onDisk(io, 'ok.tar.gz', await tarGz(good.entries));
      await rejectsWith(readArchiveHead(ok, { io, stateBytesMax: 2 }), 'too-large', /stateBytes 5, more than the limit 2/);
      await rejectsWith(readArchiveHead(await onDisk(io, 'not.gz', Buffer.from('not gzip at all')), { io }), 'not-gzip');
    });
  });
});

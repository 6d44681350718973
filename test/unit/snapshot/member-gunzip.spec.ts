/**
 * MemberGunzip: the same bytes as zlib's Gunzip for archives of every layout
 * (our members of whole records, writeArchive's 1 MiB tar blocks, one big
 * member, headers with optional fields), fed in odd-sized pieces, on the
 * real zlib and on the memory twin; every member reported where it lies,
 * with the record counts and first keys of the member table the writer
 * recorded; the first member held back until it ends (headBytes); damage
 * refused as gunzip refuses it (CRC with checkCrc, ISIZE always,
 * truncation, trailing garbage).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32, deflateRawSync, gunzipSync, gzipSync } from 'node:zlib';

import { writeArchive, writeArchiveFromRecords } from '../../../src/snapshot/archive.js';
import { ArchiveError } from '../../../src/snapshot/errors.js';
import { GZIP_HEADER_STRING_BYTES_MAX, MemberGunzip, type GzipMemberRead, type MemberGunzipOptions } from '../../../src/snapshot/member-gunzip.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import { encodeStateRecords } from '../../../src/snapshot/state-format.js';
import { MEMBERSHIP, collect, inBatches, records, sink, tempDir } from './helpers.js';

const META = { id: 'snap-9', index: 9, term: 2, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' };

function pieces(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

async function gunzipMembers(bytes: Buffer, pieceBytes: number, options: MemberGunzipOptions = {}): Promise<{ out: Buffer; members: GzipMemberRead[]; g: MemberGunzip }> {
  const members: GzipMemberRead[] = [];
  const g = new MemberGunzip({ chunkSize: 16 * 1024, ...options, onMember: (m) => void members.push(m) });
  const chunks: Buffer[] = [];
  await pipeline(Readable.from(pieces(bytes, pieceBytes)), g, sink((c) => chunks.push(c)));
  assert.equal(g.bytesWritten, bytes.length);
  return { out: Buffer.concat(chunks), members, g };
}

/** member: one gzip member with the optional header fields of `flags`. */
function member(data: Buffer, flags: { name?: string; comment?: string; extra?: Buffer; hcrc?: boolean } = {}): Buffer {
  let flg = 0;
  const parts: Buffer[] = [];
  if (flags.extra !== undefined) {
    flg |= 0x04;
    const len = Buffer.alloc(2);
    len.writeUInt16LE(flags.extra.length);
    parts.push(len, flags.extra);
  }
  if (flags.name !== undefined) {
    flg |= 0x08;
    parts.push(Buffer.from(`${flags.name}\0`, 'latin1'));
  }
  if (flags.comment !== undefined) {
    flg |= 0x10;
    parts.push(Buffer.from(`${flags.comment}\0`, 'latin1'));
  }
  if (flags.hcrc === true) {
    flg |= 0x02;
    parts.push(Buffer.alloc(2));
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data), 0);
  trailer.writeUInt32LE(data.length, 4);
  return Buffer.concat([Buffer.from([0x1f, 0x8b, 8, flg, 0, 0, 0, 0, 0, 3]), ...parts, deflateRawSync(data), trailer]);
}

describe('MemberGunzip', function () {
  this.timeout(60_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir()));
  after(async () => cleanup());

  it('gives gunzip\'s bytes and reports each member of an archive built from records as its member table says', async () => {
    const all = records(900, 3);
    const chunks: Buffer[] = [];
    const built = await writeArchiveFromRecords(META, { records: inBatches(all, 37), spoolPath: join(dir, 'a.spool') }, sink((c) => chunks.push(c)), { gzipBlockBytes: 64 * 1024 });
    const bytes = Buffer.concat(chunks);
    assert.ok(built.members.state.length > 5, 'several state members');
    for (const pieceBytes of [7, 1000, 65_537, bytes.length]) {
      const { out, members, g } = await gunzipMembers(bytes, pieceBytes);
      assert.ok(out.equals(gunzipSync(bytes)), `same bytes, pieces of ${pieceBytes}`);
      assert.equal(members.length, built.gzipMembers);
      assert.ok(Buffer.concat(members.map((m) => m.bytes)).equals(bytes), 'the members are the archive, in order');
      assert.equal(g.headBytes, (members[0] as GzipMemberRead).outBytes);
      assert.equal((members[0] as GzipMemberRead).bytes.length, built.members.headBytes);
      built.members.state.forEach((e, i) => {
        const m = members[i + 1] as GzipMemberRead;
        assert.equal(m.bytes.length, e.compressedBytes);
        assert.equal(m.outBytes, e.stateBytes);
        assert.deepEqual(m.records, { keys: e.keys, firstKey: e.firstKey });
        assert.equal(m.outStart, (members[i] as GzipMemberRead).outStart + (members[i] as GzipMemberRead).outBytes);
      });
      assert.equal((members.at(-1) as GzipMemberRead).records, null, 'the tail is not records');
      // sizesOnly: the same report, without the members' bytes or output (an install finding a member table).
      const sizes = await gunzipMembers(bytes, pieceBytes, { sizesOnly: true });
      assert.ok(sizes.out.equals(out));
      assert.deepEqual(
        sizes.members.map((m) => ({ ...m, bytes: m.bytes.length, output: m.output.length })),
        members.map((m) => ({ ...m, bytes: 0, output: 0 })),
      );
      members.forEach((m) => assert.equal(m.compressedBytes, m.bytes.length));
    }
  });

  it('gives the same on the memory twin', async () => {
    const chunks: Buffer[] = [];
    await writeArchiveFromRecords(META, { records: inBatches(records(300, 5), 10), spoolPath: join(dir, 'b.spool') }, sink((c) => chunks.push(c)), { gzipBlockBytes: 64 * 1024 });
    const bytes = Buffer.concat(chunks);
    const real = await gunzipMembers(bytes, 4096);
    const twin = await gunzipMembers(bytes, 4096, { io: new MemorySnapshotIo() });
    assert.ok(twin.out.equals(real.out));
    assert.deepEqual(
      twin.members.map((m) => [m.bytes.length, m.outBytes, m.records?.keys]),
      real.members.map((m) => [m.bytes.length, m.outBytes, m.records?.keys]),
    );
  });

  it('reads other layouts: writeArchive\'s tar blocks (headBytes past the head), one big member (headBytes null), optional header fields', async () => {
    const state = await collect(Readable.from(encodeStateRecords(inBatches(records(400, 7)))));
    const statePath = join(dir, 'state.bin');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(statePath, state);
    const chunks: Buffer[] = [];
    await writeArchive(META, statePath, sink((c) => chunks.push(c)), { gzipBlockBytes: 64 * 1024 });
    const blocks = Buffer.concat(chunks);
    const a = await gunzipMembers(blocks, 3001);
    assert.ok(a.out.equals(gunzipSync(blocks)));
    assert.equal(a.g.headBytes, 64 * 1024, 'its first member holds 64 KiB of tar, meta.json and the start of state.bin');

    const big = gzipSync(gunzipSync(blocks));
    const b = await gunzipMembers(big, 9999);
    assert.ok(b.out.equals(a.out));
    assert.equal(b.members.length, 1);
    assert.equal(b.g.headBytes, null);

    const small = [Buffer.from('hello '), Buffer.from('members'), Buffer.alloc(0)];
    const odd = Buffer.concat([member(small[0] as Buffer, { name: 'a.txt', extra: Buffer.from('xyz'), hcrc: true }), member(small[1] as Buffer, { comment: 'c' }), member(small[2] as Buffer)]);
    for (const size of [1, 3, odd.length]) {
      const c = await gunzipMembers(odd, size);
      assert.equal(c.out.toString(), 'hello members');
      assert.deepEqual(c.members.map((m) => m.outBytes), [6, 7, 0]);
      assert.equal(c.g.headBytes, 6);
    }
  });

  it('refuses a bad CRC (checkCrc), a bad ISIZE, a truncated stream and trailing garbage', async () => {
    const good = Buffer.concat([member(Buffer.from('one')), member(Buffer.from('two'))]);
    const badCrc = Buffer.from(good);
    badCrc.writeUInt32LE(badCrc.readUInt32LE(good.length - 8) ^ 1, good.length - 8);
    await assert.rejects(gunzipMembers(badCrc, 5), (e: unknown) => e instanceof ArchiveError && e.code === 'corrupt-gzip' && /data check/.test(e.message));
    const unchecked = await gunzipMembers(badCrc, 5, { checkCrc: false });
    assert.equal(unchecked.out.toString(), 'onetwo', 'checkCrc false leaves the CRC to the caller');
    const badSize = Buffer.from(good);
    badSize.writeUInt32LE(4, good.length - 4);
    await assert.rejects(gunzipMembers(badSize, 5, { checkCrc: false }), (e: unknown) => e instanceof ArchiveError && e.code === 'corrupt-gzip' && /ISIZE/.test(e.message));
    for (const cut of [good.length - 1, good.length - 9, good.length - 15]) {
      await assert.rejects(gunzipMembers(good.subarray(0, cut), 4), (e: unknown) => e instanceof ArchiveError && e.code === 'truncated');
    }
    await assert.rejects(gunzipMembers(Buffer.concat([good, Buffer.from('junk')]), 6), (e: unknown) => e instanceof ArchiveError && e.code === 'trailing-garbage');
    const damaged = Buffer.from(good);
    damaged[12] = 0xff; // inside the first member's deflate data
    await assert.rejects(gunzipMembers(damaged, 64), (e: unknown) => e instanceof ArchiveError && e.code === 'corrupt-gzip');
  });

  it('refuses a header name or comment longer than GZIP_HEADER_STRING_BYTES_MAX as soon as it is, without reading on', async () => {
    // Before: a name that never ends was carried whole and joined again with each chunk (the whole input read,
    // copying quadratic in it), refused only at the end of the stream.
    const chunkBytes = 64 * 1024;
    const totalBytes = 16 * 1024 * 1024;
    for (const [flag, first] of [[0x08, true], [0x10, true], [0x08, false]] as const) {
      let pulled = 0;
      const prefix = first ? Buffer.alloc(0) : member(Buffer.from('head'));
      const header = Buffer.from([0x1f, 0x8b, 8, flag, 0, 0, 0, 0, 0, 3]);
      const source = async function* (): AsyncGenerator<Buffer> {
        const start = Buffer.concat([prefix, header]);
        pulled += start.length;
        yield start;
        while (pulled < totalBytes) {
          pulled += chunkBytes;
          yield Buffer.alloc(chunkBytes, 'a');
        }
      };
      const g = new MemberGunzip({ chunkSize: 16 * 1024, onMember: () => undefined });
      await assert.rejects(
        pipeline(Readable.from(source()), g, sink(() => undefined)),
        (e: unknown) => e instanceof ArchiveError && e.code === (first ? 'corrupt-gzip' : 'trailing-garbage') && /longer than/.test(e.message),
      );
      assert.ok(pulled <= GZIP_HEADER_STRING_BYTES_MAX + 2 * 1024 * 1024, `read ${pulled} bytes of a header`);
    }
    // The longest allowed name (its zero byte included) is read as before.
    const longest = await gunzipMembers(member(Buffer.from('x'), { name: 'n'.repeat(GZIP_HEADER_STRING_BYTES_MAX - 1) }), 4096);
    assert.equal(longest.out.toString(), 'x');
    await assert.rejects(gunzipMembers(member(Buffer.from('x'), { name: 'n'.repeat(GZIP_HEADER_STRING_BYTES_MAX) }), 4096), (e: unknown) => e instanceof ArchiveError && /longer than/.test(e.message));
  });

  it('holds to backpressure: a slow reader gets every byte of a highly compressible stream', async () => {
    const data = Buffer.alloc(8 * 1024 * 1024, 'f');
    const bytes = Buffer.concat([member(data.subarray(0, 100)), member(data), member(data.subarray(0, 3 * 1024 * 1024))]);
    const g = new MemberGunzip({ chunkSize: 64 * 1024 });
    const slow = new PassThrough({ highWaterMark: 16 * 1024 });
    let got = 0;
    let maxBuffered = 0;
    const done = (async () => {
      for await (const c of slow) {
        got += (c as Buffer).length;
        maxBuffered = Math.max(maxBuffered, g.readableLength);
        await new Promise((r) => setImmediate(r));
      }
    })();
    await pipeline(Readable.from(pieces(bytes, 1024 * 1024)), g, slow);
    await done;
    assert.equal(got, 100 + 11 * 1024 * 1024);
    assert.ok(maxBuffered <= 1024 * 1024, `at most about one piece buffered (${maxBuffered})`);
  });
});

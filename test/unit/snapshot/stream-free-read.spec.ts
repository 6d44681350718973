/**
 * The install's read on its worker (install-read-job.ts StreamFreeRead: no
 * stream; blocking reads, SyncMemberGunzip, ArchiveScan) against readArchive
 * (the stream pipeline every other read uses, with the MemberGunzip the
 * install's read used before) on the same bytes, with every record checked as
 * an install checks them (checkedStateRecords): both accept with the same
 * meta, records, digests and member table, or both refuse with the same error
 * class and code (and, where one check alone can speak, the same message).
 * Cases: hostile archives (archive-hostile.spec's kinds), poisoned states
 * (valid hashes, bad records), seeded fuzzed contents (fuzz-archives.ts),
 * damaged bytes of a real writer's multi-member archive; each read with 1 MiB
 * reads and with small ones (headers and trailers split across reads).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';

import { readArchive, writeArchiveFromRecords } from '../../../src/snapshot/archive.js';
import { ArchiveError, StateFormatError } from '../../../src/snapshot/errors.js';
import { StreamFreeRead } from '../../../src/snapshot/install-read-job.js';
import { INSTALL_DECODE_OPTIONS, checkedStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { MemberTableRecorder } from '../../../src/snapshot/store.js';
import { nodeSnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { SeededRng } from '../../harness/rng.js';
import { baseArchive, fuzzArchive, fuzzCases, fuzzSeed } from './fuzz-archives.js';
import { MEMBERSHIP, goodEntries, metaJson, poisonedArchives, sha256, tarGz, tempDir, type TarEntry } from './helpers.js';

/** Outcome: what a read found: its meta, records (as hex), state digest and member table; or its error. */
type Outcome = { readonly ok: true; readonly meta: unknown; readonly records: string[]; readonly stateSha256: string; readonly table: unknown } | { readonly ok: false; readonly error: Error };

const hexOf = (batch: readonly StateRecord[]): string[] => batch.map((r) => `${Buffer.from(r.key).toString('hex')}=${Buffer.from(r.value).toString('hex')}`);

/** viaStreams: readArchive with the member gunzip the install's read used (CRC checked, member table recorded). */
async function viaStreams(bytes: Buffer, hashState: boolean): Promise<Outcome> {
  const recorder = new MemberTableRecorder({ checkCrc: true, io: nodeSnapshotIo });
  const records: string[] = [];
  try {
    const read = await readArchive(
      Readable.from([bytes]),
      async (meta, state, _v, where) => {
        recorder.stateBegins(meta, where);
        for await (const batch of checkedStateRecords(state, meta, INSTALL_DECODE_OPTIONS)) records.push(...hexOf(batch));
      },
      { skipStateDigest: !hashState, gunzip: recorder.gunzip },
    );
    return { ok: true, meta: read.meta, records, stateSha256: read.stateSha256, table: recorder.table(bytes.length) };
  } catch (err) {
    return { ok: false, error: err as Error };
  }
}

/** viaStreamFree: the install worker's read of the same bytes from a file. */
async function viaStreamFree(path: string, bytes: Buffer, hashState: boolean, readBytes: number): Promise<Outcome> {
  await writeFile(path, bytes);
  const recorder = new MemberTableRecorder({ checkCrc: true, io: nodeSnapshotIo });
  const records: string[] = [];
  const read = new StreamFreeRead(path, true, hashState, recorder, readBytes);
  try {
    const meta = await read.untilState();
    recorder.stateBegins(meta, { stateTarOffset: read.scan.stateTarOffset });
    for await (const batch of checkedStateRecords(read.statePieces(), meta, INSTALL_DECODE_OPTIONS)) records.push(...hexOf(batch));
    read.toEnd();
    assert.equal(read.archiveBytes, bytes.length);
    assert.equal(read.digest(), createHash('sha256').update(bytes).digest('hex'), 'the whole digest of the bytes read');
    return { ok: true, meta, records, stateSha256: read.scan.stateSha256, table: recorder.table(bytes.length) };
  } catch (err) {
    return { ok: false, error: err as Error };
  } finally {
    read.close();
  }
}

const describeErr = (e: Error): string => `${e.constructor.name} ${(e as { code?: string }).code ?? ''}: ${e.message}`;

/**
 * same: both reads of `bytes` (whole reads and small ones) agree. `sameMessage`: also the message (false where two
 * checks may speak first: a damaged member's CRC or the garbage it decodes to, a race in the stream pipeline).
 */
async function same(dir: string, what: string, bytes: Buffer, sameMessage = true): Promise<Outcome> {
  for (const hashState of [true, false]) {
    const a = await viaStreams(bytes, hashState);
    for (const readBytes of [1024 * 1024, 4096, 7]) {
      if (readBytes === 7 && bytes.length > 64 * 1024) continue;
      const b = await viaStreamFree(join(dir, 'archive.tar.gz'), bytes, hashState, readBytes);
      const label = `${what} (hashState ${hashState}, reads of ${readBytes} B)`;
      if (a.ok && b.ok) {
        assert.deepEqual(b, a, label);
      } else if (!a.ok && !b.ok) {
        assert.ok(a.error instanceof ArchiveError || a.error instanceof StateFormatError, `${label}: streams: ${describeErr(a.error)}`);
        assert.equal(b.error.constructor, a.error.constructor, `${label}: ${describeErr(b.error)} against ${describeErr(a.error)}`);
        if (sameMessage) {
          assert.equal((b.error as ArchiveError).code, (a.error as ArchiveError).code, `${label}: ${describeErr(b.error)} against ${describeErr(a.error)}`);
          assert.equal(b.error.message, a.error.message, label);
        }
      } else {
        assert.fail(`${label}: streams ${a.ok ? 'accepted' : describeErr(a.error)}, stream-free ${b.ok ? 'accepted' : describeErr(b.error)}`);
      }
    }
    if (!a.ok) return a;
  }
  return viaStreams(bytes, true);
}

/** bigArchive: a real writer's archive of `keys` records (several gzip members: the leader's layout). */
async function bigArchive(dir: string, keys: number, valueBytes: number): Promise<Buffer> {
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += 500) {
      const b: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + 500); j++) b.push({ key: Buffer.from(`k/${String(j).padStart(8, '0')}`), value: Buffer.alloc(valueBytes, (j * 7) % 251) });
      yield b;
    }
  }
  const parts: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      cb();
    },
  });
  const meta = { id: 't', index: 42, term: 2, membership: MEMBERSHIP, createdAt: '2026-12-07T00:00:00.000Z', snapcoordVersion: 'test' };
  await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, `spool-${keys}`) }, out);
  await new Promise<void>((resolve) => out.end(resolve));
  return Buffer.concat(parts);
}

describe('the install worker\'s stream-free read refuses and accepts exactly as readArchive does (issue 15)', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('snapcoord-stream-free-'));
  });
  afterEach(async () => cleanup());

  const STATE = Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('k'), Buffer.from([0, 0, 0, 2]), Buffer.from('v1')]);
  const good = goodEntries(STATE, 1);
  const [META_E, STATE_E, SUMS_E] = good.entries as [TarEntry, TarEntry, TarEntry];

  it('a real writer\'s archive of many members: the same records, digests and member table, whole reads or split ones', async () => {
    const bytes = await bigArchive(dir, 6000, 700);
    const got = await same(dir, 'good', bytes);
    assert.ok(got.ok && got.records.length === 6000 && got.table !== null, 'read whole, member table found');
    // Each member's trailer alone wrong (its CRC-32, its ISIZE): only the gunzip's own checks see it.
    const { table } = got.table as { table: { headBytes: number; state: { compressedBytes: number }[] } };
    assert.ok(table.state.length > 2, `${table.state.length} state members`);
    let end = table.headBytes;
    for (const [i, m] of table.state.slice(0, 3).entries()) {
      end += m.compressedBytes;
      for (const [field, at] of [['CRC-32', end - 8], ['ISIZE', end - 4]] as const) {
        const bad = Buffer.from(bytes);
        bad[at]! ^= 0x10;
        const refused = await same(dir, `state member ${i + 1}'s ${field}`, bad);
        assert.ok(!refused.ok && refused.error instanceof ArchiveError && refused.error.code === 'corrupt-gzip', `${field}: ${refused.ok ? 'accepted' : refused.error.message}`);
      }
    }
  });

  it('hostile archives: the same refusal (class, code, message)', async () => {
    const tarBytes = gunzipSync(await tarGz(good.entries));
    const bombMeta = Buffer.from(JSON.stringify(metaJson(10, 0)));
    const state10 = Buffer.alloc(10);
    const bombSums = Buffer.from(`${sha256(bombMeta)}  meta.json\n${sha256(state10)}  state.bin\n`);
    const cases: [string, Buffer][] = [
      ['the baseline (accepted)', await tarGz(good.entries)],
      ['../x', await tarGz([{ header: { name: '../x' }, body: Buffer.from('x') }, ...good.entries])],
      ['an absolute path', await tarGz([{ header: { name: '/etc/x' }, body: Buffer.from('x') }, ...good.entries])],
      ['a symlink', await tarGz([{ header: { name: 'meta.json', type: 'symlink', linkname: '/etc/passwd' } }, STATE_E, SUMS_E])],
      ['an extra entry', await tarGz([...good.entries, { header: { name: 'extra' }, body: Buffer.from('x') }])],
      ['a duplicate entry', await tarGz([META_E, META_E, STATE_E, SUMS_E])],
      ['out of order', await tarGz([STATE_E, META_E, SUMS_E])],
      ['no SHA256SUMS', await tarGz([META_E, STATE_E])],
      ['a wrong state hash', await tarGz([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: Buffer.from(`${sha256(good.meta)}  meta.json\n${'0'.repeat(64)}  state.bin\n`) }])],
      ['a wrong meta hash', await tarGz([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: Buffer.from(`${'0'.repeat(64)}  meta.json\n${sha256(STATE)}  state.bin\n`) }])],
      ['an oversize meta.json', await tarGz([{ header: { name: 'meta.json' }, body: Buffer.alloc(70 * 1024, 0x20) }, STATE_E, SUMS_E])],
      ['state.bin not stateBytes long', await tarGz(goodEntries(Buffer.concat([STATE, STATE]), 1, { stateBytes: STATE.length }).entries)],
      ['a malformed meta.json', await tarGz(goodEntries(STATE, 1, { formatVersion: 99 }).entries)],
      ['no end-of-archive blocks', gzipSync(tarBytes.subarray(0, tarBytes.length - 1024))],
      ['data after the tar', await tarGz(good.entries, { tail: Buffer.from('hello, I am hidden data') })],
      ['zeros after the gzip stream', await tarGz(good.entries, { gzipTail: Buffer.alloc(100) })],
      ['junk after the gzip stream', await tarGz(good.entries, { gzipTail: Buffer.from('junk junk junk') })],
      ['a second gzip member of garbage', Buffer.concat([await tarGz(good.entries), gzipSync(Buffer.from('more'))])],
      ['not gzip', Buffer.from('PK\u0003\u0004 this is a zip')],
      ['empty', Buffer.alloc(0)],
      ['one byte', Buffer.from([0x1f])],
      ['a plain tar', tarBytes],
      ['gzip of garbage', gzipSync(Buffer.alloc(2048, 0x41))],
      ['gzip of nothing', gzipSync(Buffer.alloc(0))],
      [
        'a bomb: state.bin claims 100 MB',
        await tarGz([{ header: { name: 'meta.json' }, body: bombMeta }, { header: { name: 'state.bin' }, zeroBytes: 100 * 1024 * 1024 }, { header: { name: 'SHA256SUMS' }, body: bombSums }], { level: 9 }),
      ],
      [
        'a bomb: 100 MB of zeros after the tar',
        await tarGz([{ header: { name: 'meta.json' }, body: bombMeta }, { header: { name: 'state.bin' }, body: state10 }, { header: { name: 'SHA256SUMS' }, body: bombSums }], { level: 9, tail: Buffer.alloc(100 * 1024 * 1024) }),
      ],
    ];
    const gzBase = await tarGz(good.entries);
    for (const cut of [gzBase.length - 1, gzBase.length - 8, Math.floor(gzBase.length / 2), 12, 3]) cases.push([`cut at ${cut}`, gzBase.subarray(0, cut)]);
    let refused = 0;
    for (const [what, bytes] of cases) {
      const got = await same(dir, what, bytes);
      if (!got.ok) refused++;
    }
    assert.equal(refused, cases.length - 1, 'every case but the baseline refused');
  });

  it('poisoned states (every hash right, records wrong): the same StateFormatError', async () => {
    for (const p of await poisonedArchives()) {
      const got = await same(dir, p.name, p.archive);
      assert.ok(!got.ok && got.error instanceof StateFormatError && p.message.test(got.error.message), `${p.name}: ${got.ok ? 'accepted' : got.error.message}`);
    }
  });

  it('seeded fuzzed contents behind valid hashes (fuzz-archives.ts)', async () => {
    const n = fuzzCases(40);
    const seed = fuzzSeed(9100);
    for (let i = 0; i < n; i++) {
      const rng = new SeededRng(seed + i);
      const base = await baseArchive(rng);
      const f = await fuzzArchive(rng, base);
      await same(dir, `seed ${seed + i}: ${f.what.join('; ')}`, f.archive);
    }
  });

  it('damaged bytes of a multi-member archive (flips, cuts, junk): refused by both, or accepted by both alike', async () => {
    const bytes = await bigArchive(dir, 3000, 300);
    const rng = new SeededRng(fuzzSeed(7700));
    for (let i = 0; i < fuzzCases(30); i++) {
      const d = Buffer.from(bytes);
      const kind = rng.nextInt(3);
      let what: string;
      let out: Buffer;
      if (kind === 0) {
        const at = rng.nextInt(d.length);
        d[at]! ^= 1 + rng.nextInt(255);
        out = d;
        what = `flip at ${at}`;
      } else if (kind === 1) {
        const at = rng.nextInt(d.length);
        out = d.subarray(0, at);
        what = `cut at ${at}`;
      } else {
        out = Buffer.concat([d, Buffer.alloc(1 + rng.nextInt(600), rng.nextInt(256))]);
        what = 'junk after';
      }
      // A damaged member: its CRC-32 or the garbage it decodes to may speak first (both refusals of its contents).
      await same(dir, what, out, false);
    }
  });
});

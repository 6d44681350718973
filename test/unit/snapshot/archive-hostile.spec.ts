/**
 * Hostile archives: each is built with tar-stream + zlib (not with our own
 * writer) and must be refused with a clear ArchiveError, and nothing it names
 * may be trusted (DESIGN.md "Things that bit the anchors": tar entries with
 * '../', absolute paths, links; gunzip without an output cap).
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { readArchive, type ArchiveMeta } from '../../../src/snapshot/archive.js';
import type { ArchiveErrorCode } from '../../../src/snapshot/errors.js';
import { collect, goodEntries, metaJson, rejectsWith, sha256, tarGz, type TarEntry } from './helpers.js';

const STATE = Buffer.concat([Buffer.from([0, 0, 0, 1]), Buffer.from('k'), Buffer.from([0, 0, 0, 2]), Buffer.from('v1')]);

function read(gz: Buffer, consume?: (meta: ArchiveMeta, state: Readable) => Promise<unknown>): Promise<unknown> {
  return readArchive(Readable.from([gz]), consume ?? (async (_m, s) => collect(s)));
}

async function refused(entries: TarEntry[], code: ArchiveErrorCode, pattern?: RegExp, options: Parameters<typeof tarGz>[1] = {}): Promise<void> {
  await rejectsWith(read(await tarGz(entries, options)), code, pattern);
}

describe('snapshot archive: hostile input', () => {
  const good = goodEntries(STATE, 1);
  const [META_E, STATE_E, SUMS_E] = good.entries as [TarEntry, TarEntry, TarEntry];

  it('accepts the baseline archive these tests start from', async () => {
    const got = (await readArchive(Readable.from([await tarGz(good.entries)]), async (_m, s) => collect(s))) as { result: Buffer };
    assert.deepEqual(got.result, STATE);
  });

  it('refuses path traversal (../x)', async () => {
    await refused([{ header: { name: '../x' }, body: Buffer.from('x') }, ...good.entries], 'unsafe-path', /"\.\.\/x" climbs out/);
    await refused([META_E, STATE_E, SUMS_E, { header: { name: '../../etc/cron.d/x' }, body: Buffer.from('x') }], 'unsafe-path');
  });

  it('refuses absolute paths (/etc/x)', async () => {
    await refused([{ header: { name: '/etc/x' }, body: Buffer.from('x') }], 'unsafe-path', /absolute/);
  });

  it('refuses names with a directory part or a NUL byte', async () => {
    await refused([{ header: { name: 'sub/meta.json' }, body: good.meta }, STATE_E, SUMS_E], 'unsafe-path', /path separator/);
    await refused([{ header: { name: 'meta.json\u0000.evil' }, body: good.meta }, STATE_E, SUMS_E], 'unsafe-path', /NUL/);
  });

  it('refuses symlinks', async () => {
    await refused([{ header: { name: 'meta.json', type: 'symlink', linkname: '/etc/passwd' } }, STATE_E, SUMS_E], 'link-entry', /symbolic link.*\/etc\/passwd/);
  });

  it('refuses hardlinks', async () => {
    await refused([META_E, { header: { name: 'state.bin', type: 'link', linkname: '/etc/shadow' } }, SUMS_E], 'link-entry', /hard link/);
  });

  it('refuses devices and FIFOs', async () => {
    await refused([{ header: { name: 'meta.json', type: 'character-device', devmajor: 1, devminor: 3 } }], 'device-entry', /character device/);
    await refused([{ header: { name: 'meta.json', type: 'block-device' } }], 'device-entry', /block device/);
    await refused([{ header: { name: 'meta.json', type: 'fifo' } }], 'fifo-entry');
  });

  it('refuses directory entries', async () => {
    await refused([{ header: { name: 'meta.json', type: 'directory' } }, STATE_E, SUMS_E], 'directory-entry');
  });

  it('refuses pax / long-name headers', async () => {
    await refused([{ header: { name: `${'a'.repeat(150)}` }, body: Buffer.from('x') }], 'long-name');
    await refused([{ header: { name: 'meta.json', pax: { comment: 'hi' } } as TarEntry['header'], body: good.meta }], 'long-name');
  });

  it('refuses an extra entry, anywhere', async () => {
    await refused([...good.entries, { header: { name: 'extra.txt' }, body: Buffer.from('surprise') }], 'unexpected-entry', /"extra\.txt" after SHA256SUMS/);
    await refused([META_E, { header: { name: 'extra.txt' }, body: Buffer.from('x') }, STATE_E, SUMS_E], 'unexpected-entry', /where state\.bin belongs/);
  });

  it('refuses duplicate and out-of-order entries', async () => {
    await refused([META_E, META_E, STATE_E, SUMS_E], 'duplicate-entry', /"meta\.json" appears twice/);
    await refused([...good.entries, STATE_E], 'duplicate-entry', /"state\.bin" appears twice/);
    await refused([STATE_E, META_E, SUMS_E], 'unexpected-entry', /"state\.bin" where meta\.json belongs/);
  });

  it('refuses a missing SHA256SUMS, and a SHA256SUMS missing a line', async () => {
    await refused([META_E, STATE_E], 'missing-entry', /before SHA256SUMS/);
    const oneLine = Buffer.from(`${sha256(good.meta)}  meta.json\n`);
    await refused([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: oneLine }], 'missing-hash', /no line for state\.bin/);
    await refused([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: Buffer.from('not a sums file\n') }], 'bad-sums');
  });

  it('refuses a wrong hash, after the consumer has seen the (tentative) state', async () => {
    const wrongState = Buffer.from(`${sha256(good.meta)}  meta.json\n${'0'.repeat(64)}  state.bin\n`);
    let consumed: Buffer | null = null;
    await rejectsWith(
      read(await tarGz([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: wrongState }]), async (_m, s) => {
        consumed = await collect(s);
      }),
      'hash-mismatch',
      /state\.bin SHA-256 is [0-9a-f]{64} but SHA256SUMS says 0{64}/,
    );
    assert.deepEqual(consumed, STATE);
    const wrongMeta = Buffer.from(`${'1'.repeat(64)}  meta.json\n${sha256(STATE)}  state.bin\n`);
    await refused([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: wrongMeta }], 'hash-mismatch', /meta\.json SHA-256/);
  });

  it('skipStateDigest (a reader that checks the bytes otherwise): state.bin is not hashed and its SHA256SUMS line not compared, meta.json still is', async () => {
    const wrongState = Buffer.from(`${sha256(good.meta)}  meta.json\n${'0'.repeat(64)}  state.bin\n`);
    const archive = await tarGz([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: wrongState }]);
    let consumed: Buffer | null = null;
    const r = await readArchive(
      Readable.from([archive]),
      async (_m, s, verified) => {
        consumed = await collect(s);
        await verified;
      },
      { skipStateDigest: true },
    );
    assert.deepEqual(consumed, STATE);
    assert.equal(r.stateSha256, '', 'no digest of state.bin was computed');
    // Without the option the same archive is refused: the line is wrong.
    await rejectsWith(read(archive), 'hash-mismatch', /state\.bin SHA-256/);
    // meta.json's line is still checked.
    const wrongMeta = Buffer.from(`${'1'.repeat(64)}  meta.json\n${sha256(STATE)}  state.bin\n`);
    const badMeta = await tarGz([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: wrongMeta }]);
    await rejectsWith(readArchive(Readable.from([badMeta]), async (_m, s) => collect(s), { skipStateDigest: true }), 'hash-mismatch', /meta\.json SHA-256/);
  });

  it('refuses oversize members', async () => {
    const bigMeta = Buffer.from(JSON.stringify(metaJson(STATE.length, 1, { snapcoordVersion: 'x' })).padEnd(70 * 1024, ' '));
    await refused([{ header: { name: 'meta.json' }, body: bigMeta }, STATE_E, SUMS_E], 'member-too-large', /meta\.json is 71680 bytes, more than 65536/);
    await refused([META_E, STATE_E, { header: { name: 'SHA256SUMS' }, body: Buffer.alloc(5000, 0x61) }], 'member-too-large', /SHA256SUMS/);
  });

  it('refuses state.bin whose size differs from meta.stateBytes', async () => {
    await refused([META_E, { header: { name: 'state.bin' }, body: Buffer.concat([STATE, Buffer.from('x')]) }, SUMS_E], 'size-mismatch', new RegExp(`state\\.bin is ${STATE.length + 1} bytes but meta\\.json says stateBytes ${STATE.length}`));
  });

  it('refuses a state beyond stateBytesMax', async () => {
    const { entries } = goodEntries(STATE, 1);
    await rejectsWith(readArchive(Readable.from([await tarGz(entries)]), async () => undefined, { stateBytesMax: 10 }), 'too-large', new RegExp(`stateBytes ${STATE.length}, more than the limit 10`));
  });

  it('refuses malformed meta.json: schema checked field by field', async () => {
    const cases: [Record<string, unknown> | string, RegExp][] = [
      ['{not json', /not valid UTF-8 JSON/],
      [{ ...metaJson(STATE.length, 1), formatVersion: 2 }, /formatVersion 2 is not supported/],
      [{ ...metaJson(STATE.length, 1), index: -1 }, /index/],
      [{ ...metaJson(STATE.length, 1), term: 1.5 }, /term/],
      [{ ...metaJson(STATE.length, 1), id: '../../x' }, /id/],
      [{ ...metaJson(STATE.length, 1), createdAt: '2024-13-01T00:00:00.000Z' }, /createdAt/],
      [{ ...metaJson(STATE.length, 1), membership: { voters: 'n1', learners: [], addresses: {} } }, /membership\.voters/],
      [{ ...metaJson(STATE.length, 1), stateKeys: 100 }, /stateKeys 100 cannot fit/],
      [{ ...metaJson(STATE.length, 1), extra: true }, /unknown field\(s\) extra/],
      // Control characters in strings an operator is shown (inspect, ls, logs): C0, DEL and C1 alike. C1's U+009B
      // is a one-character CSI to terminals that take 8-bit controls; U+0085 (NEL) breaks the line.
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u001b[31m' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u009b31m' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u0085forged line' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u0080' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u009f' }, /snapcoordVersion contains control characters/],
      // Line and paragraph separators, bidirectional overrides and isolates: what an operator reads, reordered or split.
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u2028forged line' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u2029' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), id: 'snap\u202etxt.exe' }, /id/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u202a' }, /snapcoordVersion contains control characters/],
      [{ ...metaJson(STATE.length, 1), snapcoordVersion: '1.0\u2066x\u2069' }, /snapcoordVersion contains control characters/],
      [Object.fromEntries(Object.entries(metaJson(STATE.length, 1)).filter(([k]) => k !== 'snapcoordVersion')), /missing field\(s\) snapcoordVersion/],
    ];
    for (const [meta, pattern] of cases) {
      const body = Buffer.from(typeof meta === 'string' ? meta : JSON.stringify(meta));
      const sums = Buffer.from(`${sha256(body)}  meta.json\n${sha256(STATE)}  state.bin\n`);
      await refused([{ header: { name: 'meta.json' }, body }, STATE_E, { header: { name: 'SHA256SUMS' }, body: sums }], 'bad-meta', pattern);
    }
  });

  it('refuses a gzip bomb quickly, without inflating it (100 MB of zeros, stateBytes 10)', async function () {
    this.timeout(30_000);
    const state10 = Buffer.alloc(10);
    const meta = Buffer.from(JSON.stringify(metaJson(10, 0)));
    const sums = Buffer.from(`${sha256(meta)}  meta.json\n${sha256(state10)}  state.bin\n`);
    const metaE = { header: { name: 'meta.json' }, body: meta };
    const sumsE = { header: { name: 'SHA256SUMS' }, body: sums };
    const bombs = [
      // state.bin claims 100 MB
      await tarGz([metaE, { header: { name: 'state.bin' }, zeroBytes: 100 * 1024 * 1024 }, sumsE], { level: 9 }),
      // state.bin is 10 bytes, then 100 MB of zeros after the tar's end
      await tarGz([metaE, { header: { name: 'state.bin' }, body: state10 }, sumsE], { level: 9, tail: Buffer.alloc(100 * 1024 * 1024) }),
    ];
    const codes: ArchiveErrorCode[] = ['size-mismatch', 'too-large'];
    for (const [i, bomb] of bombs.entries()) {
      assert.ok(bomb.length < 1024 * 1024, `bomb ${i} is ${bomb.length} bytes compressed`);
      let fed = 0;
      const chunks = Array.from({ length: Math.ceil(bomb.length / 4096) }, (_, j) => bomb.subarray(j * 4096, (j + 1) * 4096));
      const input = Readable.from((function* () {
        for (const c of chunks) {
          fed += c.length;
          yield c;
        }
      })());
      const started = process.hrtime.bigint();
      await rejectsWith(readArchive(input, async (_m, s) => collect(s)), codes[i]!);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      assert.ok(ms < 2000, `took ${ms} ms`);
      assert.ok(fed < bomb.length / 2, `read ${fed} of ${bomb.length} compressed bytes before refusing`);
    }
  });

  it('refuses a truncated gzip stream', async () => {
    const gz = await tarGz(good.entries);
    for (const cut of [gz.length - 1, gz.length - 8, Math.floor(gz.length / 2), 12]) {
      await rejectsWith(read(gz.subarray(0, cut)), 'truncated');
    }
  });

  it('refuses a tar without its end-of-archive blocks, and data after the tar', async () => {
    const gz = await tarGz(good.entries);
    const { gunzipSync } = await import('node:zlib');
    const tarBytes = gunzipSync(gz);
    await rejectsWith(read(gzipSync(tarBytes.subarray(0, tarBytes.length - 1024))), 'truncated', /end-of-archive/);
    await refused(good.entries, 'trailing-garbage', /after the end of the tar/, { tail: Buffer.from('hello, I am hidden data') });
    await refused(good.entries, 'trailing-garbage', /after the end of the gzip stream/, { gzipTail: Buffer.alloc(100) });
    await refused(good.entries, 'trailing-garbage', /after the end of the gzip stream/, { gzipTail: Buffer.from('junk junk junk') });
  });

  it('refuses what is not gzip at all', async () => {
    await rejectsWith(read(Buffer.from('PK\u0003\u0004 this is a zip')), 'not-gzip', /not a gzip stream/);
    await rejectsWith(read(Buffer.alloc(0)), 'not-gzip', /empty input/);
    const { gunzipSync } = await import('node:zlib');
    await rejectsWith(read(gunzipSync(await tarGz(good.entries))), 'not-gzip');
  });

  it('refuses garbage inside a valid gzip stream (not a tar)', async () => {
    await rejectsWith(read(gzipSync(Buffer.alloc(2048, 0x41))), 'bad-header');
    await rejectsWith(read(gzipSync(Buffer.alloc(0))), 'missing-entry');
  });
});

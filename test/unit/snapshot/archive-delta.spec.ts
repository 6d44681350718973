/**
 * writeArchiveDelta: an archive built from an older one plus the changed
 * keys holds exactly the state.bin a full build of the new state gives
 * (SHA-256, records, meta counts), for random puts, deletes, inserts before
 * the first and after the last key, a member emptied, large records and a
 * base with no state; unchanged members are copied compressed as they are;
 * the result's member table serves a further delta; a base byte changed, a
 * table that disagrees with the bytes or changes out of order are refused.
 * Every test runs with the base's state read in this thread and on a worker
 * thread (state-digest.ts); a worker gunzips nothing on the caller's thread.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { DELTA_MERGE_RECORDS_PER_TURN, DELTA_WORKER_STATE_BYTES_MIN, deltaDigestHome, writeArchiveDelta, type StateChange } from '../../../src/snapshot/archive-delta.js';
import { readArchive, writeArchiveFromRecords, type ArchiveMemberTable, type RecordsArchiveResult } from '../../../src/snapshot/archive.js';
import { ArchiveError, StateFormatError } from '../../../src/snapshot/errors.js';
import { checkedStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';
import { SeededRng } from '../../harness/rng.js';
import { MEMBERSHIP, writeCounting, inBatches, records, sink, tempDir } from './helpers.js';

const META = { id: 'snap-9', index: 9, term: 2, membership: MEMBERSHIP, createdAt: '2024-05-01T12:00:00.000Z', snapcoordVersion: '0.1.0' };
const BLOCK = 64 * 1024;

interface Built {
  readonly result: RecordsArchiveResult;
  readonly bytes: Buffer;
}

async function full(all: readonly StateRecord[], dir: string, name: string): Promise<Built> {
  const chunks: Buffer[] = [];
  const result = await writeArchiveFromRecords(META, { records: inBatches(all, 41), spoolPath: join(dir, `${name}.spool`) }, sink((c) => chunks.push(c)), { gzipBlockBytes: BLOCK });
  return { result, bytes: Buffer.concat(chunks) };
}

/** digestOn: where the deltas of the describe block being run read the base's state (both homes run every test). */
let digestOn: 'here' | 'worker' = 'here';
/** premerged: the base can be read at any offset (DeltaBase.readRange): its changed members are merged before the head is written (both ways run every test). */
let premerged = false;

async function delta(base: Built, changes: readonly StateChange[], dir: string, name: string, bytes: Buffer = base.bytes): Promise<Built> {
  const chunks: Buffer[] = [];
  // The base arrives in odd-sized pieces: members straddle them.
  const pieces: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += 10_007) pieces.push(bytes.subarray(at, at + 10_007));
  const result = await writeArchiveDelta(
    META,
    {
      bytes: Readable.from(pieces),
      archiveBytes: bytes.length,
      members: base.result.members,
      ...(premerged ? { readRange: (offset: number, length: number) => Promise.resolve(Buffer.from(bytes.subarray(offset, offset + length))) } : {}),
    },
    changes,
    join(dir, `${name}.spool`),
    sink((c) => chunks.push(c)),
    { gzipBlockBytes: BLOCK, digestOn },
  );
  return { result, bytes: Buffer.concat(chunks) };
}

async function stateOf(bytes: Buffer): Promise<[string, string][]> {
  const read = await readArchive(Readable.from([bytes]), async (m, state) => {
    const got: [string, string][] = [];
    for await (const batch of checkedStateRecords(state, m)) for (const r of batch) got.push([Buffer.from(r.key).toString('hex'), Buffer.from(r.value).toString('hex')]);
    return got;
  });
  return read.result;
}

/** apply returns the state `all` with `changes` made, in key order. */
function apply(all: readonly StateRecord[], changes: readonly StateChange[]): StateRecord[] {
  const m = new Map(all.map((r) => [Buffer.from(r.key).toString('latin1'), r.value]));
  for (const c of changes) {
    const k = Buffer.from(c.key).toString('latin1');
    if (c.value === null) m.delete(k);
    else m.set(k, c.value);
  }
  return [...m.keys()].sort().map((k) => ({ key: Buffer.from(k, 'latin1'), value: m.get(k) as Uint8Array }));
}

function sorted(changes: StateChange[]): StateChange[] {
  return changes.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
}

for (const home of ['here', 'worker'] as const) for (const pre of [false, true]) describe(`writeArchiveDelta (base state read ${home === 'here' ? 'in this thread' : 'on a worker thread'}${pre ? ', changed members merged first' : ''})`, function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    digestOn = home;
    premerged = pre;
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(() => cleanup());

  it('gives the state.bin of a full build, for random puts and deletes, inserts at both ends, and chains', async () => {
    const rng = new SeededRng(15);
    let state = records(900, 3);
    let base = await full(state, dir, 'base');
    assert.ok(base.result.members.state.length > 10, `members ${base.result.members.state.length}`);
    for (let round = 0; round < 4; round++) {
      const keys = new Map<string, StateChange>();
      const n = 1 + rng.nextInt(round === 3 ? 300 : 25);
      for (let i = 0; i < n; i++) {
        const pick = rng.nextInt(4);
        const existing = state[rng.nextInt(state.length)] as StateRecord;
        const key =
          pick === 0 ? Buffer.from(`a-before-${rng.nextInt(1000)}`) : pick === 1 ? Buffer.from(`z-after-${rng.nextInt(1000)}`) : pick === 2 ? Buffer.from(`${Buffer.from(existing.key).toString()}-new`) : Buffer.from(existing.key);
        const value = rng.chance(0.3) ? null : Buffer.alloc(rng.nextInt(rng.chance(0.1) ? 200_000 : 2_000), rng.nextInt(256));
        keys.set(key.toString('latin1'), { key, value });
      }
      const changes = sorted([...keys.values()]);
      const next = apply(state, changes);
      const made = await delta(base, changes, dir, `d${round}`);
      const want = await full(next, dir, `f${round}`);
      assert.equal(made.result.stateSha256, want.result.stateSha256, `round ${round}`);
      assert.equal(made.result.meta.stateKeys, next.length);
      assert.equal(made.result.meta.stateBytes, want.result.meta.stateBytes);
      assert.deepEqual(await stateOf(made.bytes), await stateOf(want.bytes));
      state = next;
      base = made; // the delta's own member table serves the next one
    }
  });

  it(`lets the event loop turn every ${DELTA_MERGE_RECORDS_PER_TURN} records it merges`, async () => {
    // Small records: a 64 KiB member holds ~2,800, and a change falls between every two.
    const state = Array.from({ length: 12_000 }, (_, i) => ({ key: Buffer.from(`k${String(i).padStart(9, '0')}`), value: Buffer.alloc(0) }));
    const base = await full(state, dir, 'base');
    assert.ok(base.result.members.state.length >= 3, `members ${base.result.members.state.length}`);
    // A ticker counts the event loop's turns; each change notes the turn its value was read in (by the merge).
    let turn = 0;
    let ticking = true;
    const tick = (): void => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const readIn = new Map<number, number>();
    const value = Buffer.from('v');
    const changes: StateChange[] = state.map((r) => ({
      key: Buffer.concat([r.key, Buffer.from('+')]),
      get value() {
        readIn.set(turn, (readIn.get(turn) ?? 0) + 1);
        return value;
      },
    }));
    changes.push({ key: Buffer.from('z-past-every-member'), value });
    try {
      const made = await delta(base, changes, dir, 'd');
      assert.equal(made.result.meta.stateKeys, state.length * 2 + 1);
    } finally {
      ticking = false;
    }
    const most = Math.max(...readIn.values());
    assert.ok(most <= DELTA_MERGE_RECORDS_PER_TURN, `${most} changes merged in one turn`);
    assert.equal([...readIn.values()].reduce((a, b) => a + b, 0), state.length, "each change read once");
  });

  it('copies the members with no change compressed, as they are', async () => {
    const state = records(900, 4);
    const base = await full(state, dir, 'base');
    const last = state[state.length - 1] as StateRecord;
    const made = await delta(base, [{ key: last.key, value: Buffer.from('changed') }], dir, 'd');
    const headBytes = base.result.members.headBytes;
    const kept = base.result.members.state.slice(0, -1).reduce((n, m) => n + m.compressedBytes, 0);
    assert.deepEqual(made.bytes.subarray(made.result.members.headBytes, made.result.members.headBytes + kept), base.bytes.subarray(headBytes, headBytes + kept));
    assert.deepEqual(made.result.members.state.slice(0, -1), base.result.members.state.slice(0, -1));
  });

  it('deletes every key of a member, and everything, and builds on an empty base', async () => {
    const state = records(400, 5);
    const base = await full(state, dir, 'base');
    const first = base.result.members.state[1];
    assert.ok(first !== undefined);
    const inSecond = state.filter((r) => Buffer.compare(Buffer.from(r.key), first.firstKey) >= 0).slice(0, first.keys);
    const gone = await delta(base, inSecond.map((r) => ({ key: r.key, value: null })), dir, 'd1');
    assert.equal(gone.result.stateSha256, (await full(apply(state, inSecond.map((r) => ({ key: r.key, value: null }))), dir, 'f1')).result.stateSha256);
    const none = await delta(base, state.map((r) => ({ key: r.key, value: null })), dir, 'd2');
    assert.equal(none.result.meta.stateKeys, 0);
    assert.equal(none.result.members.state.length, 0);
    const fresh = await delta(none, [{ key: Buffer.from('k'), value: Buffer.from('v') }], dir, 'd3');
    assert.deepEqual(await stateOf(fresh.bytes), [[Buffer.from('k').toString('hex'), Buffer.from('v').toString('hex')]]);
  });

  it('given up part way (its signal aborted), stops reading its base: the source is closed, not left to the garbage collector', async () => {
    const state = records(900, 3);
    const base = await full(state, dir, 'base');
    let pulled = 0;
    let closed = false;
    async function* source(): AsyncGenerator<Buffer> {
      try {
        for (let at = 0; at < base.bytes.length; at += 10_007) {
          pulled++;
          yield base.bytes.subarray(at, at + 10_007);
        }
      } finally {
        closed = true;
      }
    }
    const abort = new AbortController();
    abort.abort(new Error('superseded'));
    await assert.rejects(
      writeArchiveDelta(META, { bytes: source(), archiveBytes: base.bytes.length, members: base.result.members }, [], join(dir, 'given-up.spool'), sink(() => undefined), {
        gzipBlockBytes: BLOCK,
        digestOn,
        signal: abort.signal,
      }),
      /superseded/,
    );
    assert.ok(pulled > 0 && pulled < Math.ceil(base.bytes.length / 10_007), `read part of the base (${pulled} pieces)`);
    assert.ok(closed, "the base's source was closed");
  });

  it('refuses a changed base byte, a table that disagrees, and changes out of order', async () => {
    const state = records(600, 6);
    const base = await full(state, dir, 'base');
    const m = base.result.members.state[2];
    assert.ok(m !== undefined);
    const at = base.result.members.headBytes + base.result.members.state.slice(0, 2).reduce((n, x) => n + x.compressedBytes, 0) + 40;
    const flipped = Buffer.from(base.bytes);
    flipped[at] = (flipped[at] as number) ^ 0x10;
    const change = [{ key: (state[0] as StateRecord).key, value: Buffer.from('x') }];
    await assert.rejects(delta(base, change, dir, 'a', flipped), ArchiveError);
    const lying = { result: { ...base.result, members: { ...base.result.members, state: base.result.members.state.map((x, i) => (i === 3 ? { ...x, keys: x.keys + 1 } : x)) } }, bytes: base.bytes };
    await assert.rejects(delta(lying, change, dir, 'b'), ArchiveError);
    const swapped = { result: { ...base.result, members: { ...base.result.members, state: base.result.members.state.map((x, i) => (i === 3 ? { ...x, firstKey: Buffer.from('zzz') } : x)) } }, bytes: base.bytes };
    await assert.rejects(delta(swapped, change, dir, 'c'), ArchiveError);
    const disorder = [{ key: Buffer.from('b'), value: null }, { key: Buffer.from('a'), value: null }];
    await assert.rejects(delta(base, disorder, dir, 'e'), StateFormatError);
  });
});

describe('writeArchiveDelta: where the base state is read', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(() => cleanup());

  it('on a worker thread, gunzips nothing here; in this thread, every base member', async () => {
    const state = records(900, 7);
    const base = await full(state, dir, 'base');
    const last = state[state.length - 1] as StateRecord;
    const change = [{ key: last.key, value: Buffer.from('changed') }];
    const counted = (): { io: SnapshotIo; gunzips: () => number } => {
      let n = 0;
      const io: SnapshotIo = {
        ...nodeSnapshotIo,
        gunzip: (bytes, options) => {
          n++;
          return nodeSnapshotIo.gunzip(bytes, options);
        },
        createGunzip: (options) => {
          n++;
          return nodeSnapshotIo.createGunzip(options);
        },
        createInflateRaw: (options) => {
          n++;
          return nodeSnapshotIo.createInflateRaw(options);
        },
      };
      return { io, gunzips: () => n };
    };
    const results: string[] = [];
    for (const on of ['worker', 'here'] as const) {
      const { io, gunzips } = counted();
      const chunks: Buffer[] = [];
      const r = await writeArchiveDelta(META, { bytes: Readable.from([base.bytes]), archiveBytes: base.bytes.length, members: base.result.members }, change, join(dir, `${on}.spool`), sink((c) => chunks.push(c)), { gzipBlockBytes: BLOCK, digestOn: on, io });
      assert.equal(gunzips(), on === 'worker' ? 0 : base.result.members.state.length, on);
      results.push(r.archiveSha256);
    }
    assert.equal(results[0], results[1], 'the same archive either way');
  });

  it('defaults to a worker for a large base on the real file system with changes in at most a quarter of its members', () => {
    const table = (members: number, bytesEach: number): ArchiveMemberTable => ({
      headBytes: 0,
      tailBytes: 0,
      state: Array.from({ length: members }, (_, i) => ({ compressedBytes: 1, stateBytes: bytesEach, keys: 1, firstKey: Buffer.from(`k${String(i).padStart(4, '0')}`) })),
    });
    const put = (...keys: string[]): StateChange[] => keys.map((k) => ({ key: Buffer.from(k), value: Buffer.from('v') }));
    const big = table(8, DELTA_WORKER_STATE_BYTES_MIN / 8);
    assert.equal(deltaDigestHome(nodeSnapshotIo, big, put('k0003x')), 'worker');
    assert.equal(deltaDigestHome(nodeSnapshotIo, big, put('a', 'k0000', 'k0000x')), 'worker', 'changes before the first key fall in the first member');
    assert.equal(deltaDigestHome(nodeSnapshotIo, big, put('k0001x', 'k0005x')), 'worker', '2 of 8 members');
    assert.equal(deltaDigestHome(nodeSnapshotIo, big, put('k0001x', 'k0005x', 'k0007x')), 'here', '3 of 8 members');
    assert.equal(deltaDigestHome(nodeSnapshotIo, table(8, DELTA_WORKER_STATE_BYTES_MIN / 8 - 1), put('k0003x')), 'here', 'a smaller base');
    assert.equal(deltaDigestHome({ ...nodeSnapshotIo }, big, put('k0003x')), 'here', 'another IO');
  });
});

describe('writeArchiveDelta with its base readable at any offset (issue 15: each archive byte written once)', function () {
  this.timeout(120_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(() => cleanup());

  it('merges the changed members first, then writes the same archive head first: nothing goes through the spool', async () => {
    const rng = new SeededRng(151);
    const state = records(900, 3);
    const base = await full(state, dir, 'base');
    const n = base.result.members.state.length;
    assert.ok(n > 10, `members ${n}`);
    // Changes in a few members (the first, one in the middle, the last) and past both ends.
    const keys = new Map<string, StateChange>();
    for (const at of [0, 1, Math.floor(state.length / 2), state.length - 1]) {
      const r = state[at] as StateRecord;
      keys.set(Buffer.from(r.key).toString('latin1'), { key: r.key, value: rng.chance(0.5) ? null : Buffer.alloc(3_000, 7) });
    }
    for (const key of [Buffer.from('a-before'), Buffer.from('z-after')]) keys.set(key.toString('latin1'), { key, value: Buffer.from('new') });
    const changes = sorted([...keys.values()]);
    const made: { bytes: Buffer; result: RecordsArchiveResult; spooled: number }[] = [];
    for (const pre of [false, true]) {
      const { io, written } = writeCounting();
      const chunks: Buffer[] = [];
      const result = await writeArchiveDelta(
        META,
        {
          bytes: Readable.from([base.bytes]),
          archiveBytes: base.bytes.length,
          members: base.result.members,
          ...(pre ? { readRange: (offset: number, length: number) => Promise.resolve(base.bytes.subarray(offset, offset + length)) } : {}),
        },
        changes,
        join(dir, `pre-${pre}.spool`),
        sink((c) => chunks.push(c)),
        { gzipBlockBytes: BLOCK, digestOn: 'here', io },
      );
      made.push({ bytes: Buffer.concat(chunks), result, spooled: written.spool });
    }
    const [onePass, premerged] = made as [(typeof made)[0], (typeof made)[0]];
    assert.ok(onePass.spooled > onePass.bytes.length / 2, `one pass: ${onePass.spooled} bytes spooled of ${onePass.bytes.length}`);
    assert.equal(premerged.spooled, 0, `${premerged.spooled} bytes of a ${premerged.bytes.length}-byte archive written to the spool first`);
    assert.ok(premerged.bytes.equals(onePass.bytes), 'the same archive, byte for byte');
    assert.equal(premerged.result.archiveSha256, onePass.result.archiveSha256);
    assert.deepEqual(premerged.result.members, onePass.result.members);
    assert.equal(premerged.result.stateSha256, (await full(apply(state, changes), dir, 'want')).result.stateSha256);
  });

  it('refuses a base whose bytes read by range disagree with its stream (the changed member does not gunzip)', async () => {
    const state = records(600, 6);
    const base = await full(state, dir, 'base');
    const change = [{ key: (state[0] as StateRecord).key, value: Buffer.from('x') }];
    // readRange gives other bytes for the changed member than the checked stream holds: its gzip CRC fails.
    const flipped = Buffer.from(base.bytes);
    flipped[base.result.members.headBytes + 40] = (flipped[base.result.members.headBytes + 40] as number) ^ 0x10;
    await assert.rejects(
      writeArchiveDelta(
        META,
        { bytes: Readable.from([base.bytes]), archiveBytes: base.bytes.length, members: base.result.members, readRange: (o, l) => Promise.resolve(flipped.subarray(o, o + l)) },
        change,
        join(dir, 'flipped.spool'),
        sink(() => undefined),
        { gzipBlockBytes: BLOCK, digestOn: 'here' },
      ),
      ArchiveError,
    );
  });
});

/** slowGunzipIo: gunzips that read their input a few ms late, as on a busy threadpool (bytes given back too early are overwritten first). */
const slowGunzipIo: SnapshotIo = {
  ...nodeSnapshotIo,
  gunzip: async (bytes, options) => {
    await new Promise((resolve) => setTimeout(resolve, 2));
    return nodeSnapshotIo.gunzip(bytes, options);
  },
  createGunzip: (options) => {
    const g = nodeSnapshotIo.createGunzip(options);
    const end = g.end.bind(g) as (chunk: Buffer) => void;
    return Object.assign(g, {
      end: (chunk: Buffer) => {
        setTimeout(() => end(chunk), 2);
        return g;
      },
    });
  },
};

describe('writeArchiveDelta with its base read in frames that are reused (issue 15: no fresh buffer per base chunk)', function () {
  this.timeout(30_000);
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(() => cleanup());

  for (const on of ['here', 'worker'] as const) {
    for (const [pre, pieceBytes] of [[false, 10_007], [false, 1_009], [true, 10_007], [true, 1_009]] as const) {
      it(`(${on}${pre ? ', premerged' : ''}, frames of ${pieceBytes} bytes) gives a frame back only once nothing holds its bytes: the archive is the one from plain bytes, byte for byte`, async () => {
        const state = records(3000, 3);
        const base = await full(state, dir, 'base');
        // Changes in the first few members and a few more (merged); the others are copied compressed through the frames.
        const changes = sorted(state.filter((_, i) => (i % 40 === 7 && i < 200) || i % 400 === 7).map((r) => ({ key: r.key, value: Buffer.alloc(200, 5) })));
        const pieces: Buffer[] = [];
        // Frames of several members each, some across two (joined); or frames smaller than a member (each joined, and
        // the joined buffers reused).
        for (let at = 0; at < base.bytes.length; at += pieceBytes) pieces.push(base.bytes.subarray(at, at + pieceBytes));
        const made: Buffer[] = [];
        let given = 0;
        for (const frames of [false, true]) {
          // Each frame is its own copy, overwritten the moment it is given back (as a reused frame is read into).
          async function* source(): AsyncGenerator<Buffer | { data: Buffer; release: () => void }> {
            for (const p of pieces) {
              if (!frames) {
                yield p;
                continue;
              }
              const data = Buffer.from(p);
              yield {
                data,
                release: () => {
                  given++;
                  data.fill(0xee);
                },
              };
            }
          }
          const chunks: Buffer[] = [];
          await writeArchiveDelta(
            META,
            {
              bytes: source(),
              archiveBytes: base.bytes.length,
              members: base.result.members,
              ...(pre ? { readRange: (offset: number, length: number) => Promise.resolve(Buffer.from(base.bytes.subarray(offset, offset + length))) } : {}),
            },
            changes,
            join(dir, `frames-${frames}.spool`),
            sink((c) => chunks.push(c)),
            { gzipBlockBytes: BLOCK, digestOn: on, io: slowGunzipIo },
          );
          made.push(Buffer.concat(chunks));
        }
        const [plain, reused] = made as [Buffer, Buffer];
        assert.ok(reused.equals(plain), 'the same archive bytes');
        assert.deepEqual(await stateOf(reused), await stateOf((await full(apply(state, changes), dir, 'want')).bytes));
        // One pass: every frame's members are spooled, then given back (all but the last frames, read to the end);
        // premerged: only frames of changed or joined members, the head and the tail (a copied member goes on to out).
        if (!pre) assert.ok(given >= pieces.length - 2, `${given} of ${pieces.length} frames given back`);
        else if (pieceBytes === 10_007) assert.ok(given < pieces.length / 2, `${given} of ${pieces.length} frames given back`);
      });
    }
  }
});

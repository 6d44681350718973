/**
 * A restore entry's records digest (src/fsm/restore-digest.ts): its
 * definition (RecordsDigest, the carried records), the leader's computation
 * in the upload scan (scanStateRecords), the entry's field, and the check of
 * an install from the archive (StateMachine.installState).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { RecordsDigest } from '../../../src/hash/records-digest.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { revisionKey } from '../../../src/fsm/key-revision.js';
import { opsRecordKey } from '../../../src/fsm/ops-record.js';
import { decodeRestoreCommand, encodeRestoreCommand, type RestoreCommand } from '../../../src/fsm/restore-command.js';
import { CarriedRecordsDigest, isCarriedKeyAt, RestoreDigestError } from '../../../src/fsm/restore-digest.js';
import { sessionKey } from '../../../src/fsm/sessions.js';
import { StateMachine, type RestoreDriver } from '../../../src/fsm/state-machine.js';
import type { ApplyItem } from '../../../src/fsm/types.js';
import type { Membership } from '../../../src/raft/types.js';
import { encodeStateRecords, scanStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { framedRecordsDigest } from '../node/state-records.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'a:1' } };

/** framed: the definition written out (framedRecordsDigest). */
const framed = framedRecordsDigest;

/** stateWith: a state in key order holding data records of many sizes and the reserved records an archive carries. */
function stateWith(count = 600): { all: StateRecord[]; carried: StateRecord[] } {
  const data: StateRecord[] = [];
  const sizes = [0, 1, 15, 16, 17, 100, 4095, 8192, 8193, 70_000, 200_000];
  for (let i = 0; i < count; i++) {
    const size = sizes[i % sizes.length] as number;
    data.push({ key: bytes(`k/${String(i).padStart(4, '0')}`), value: Buffer.alloc(size, i % 251) });
  }
  const reserved: StateRecord[] = [
    { key: sessionKey('client-a'), value: bytes('a session of the archive\'s cluster') },
    { key: opsRecordKey('schedule/last'), value: bytes('an ops record') },
    { key: revisionKey(bytes('k/0001')), value: Buffer.alloc(25, 1) },
    { key: revisionKey(bytes('k/0002')), value: Buffer.alloc(25, 2) },
  ];
  const all = [...data, ...reserved].sort((a, b) => Buffer.compare(a.key, b.key));
  const carried = all.filter((r) => !(Buffer.from(r.key).toString('latin1').startsWith('\x00snapcoord/') && !Buffer.from(r.key).toString('latin1').startsWith('\x00snapcoord/rev/')));
  return { all, carried };
}

/** stateBin: the records as state.bin holds them (state-format.ts). */
async function stateBin(records: readonly StateRecord[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of encodeStateRecords((async function* () {
    yield records;
  })())) parts.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(parts);
}

/** chunked: `bin` cut into pieces of the sizes `cut` gives in turn (each a copy: the scan may keep views). */
async function* chunked(bin: Buffer, cut: (i: number) => number): AsyncGenerator<Uint8Array> {
  let i = 0;
  for (let at = 0; at < bin.length; i++) {
    const n = Math.max(1, cut(i));
    yield Buffer.from(bin.subarray(at, at + n));
    at += n;
  }
}

describe('restore records digest (restore-digest.ts)', function () {
  this.timeout(30_000);

  it('RecordsDigest is SHA-256 over the records framed as in state.bin, whole or in pieces, across its block', () => {
    const { all } = stateWith();
    const whole = new RecordsDigest();
    for (const r of all) whole.add(r.key, r.value);
    assert.equal(whole.hex(), framed(all));
    assert.equal(whole.records, all.length);
    const pieces = new RecordsDigest();
    for (const r of all) {
      pieces.length(r.key.length);
      pieces.range(Buffer.from(r.key), 0, r.key.length);
      pieces.length(r.value.length);
      const v = Buffer.from(r.value);
      for (let at = 0; at < v.length; at += 3000) pieces.range(v, at, Math.min(v.length, at + 3000));
    }
    assert.equal(pieces.hex(), framed(all));
    assert.equal(new RecordsDigest().hex(), createHash('sha256').digest('hex'), 'no records: the digest of nothing');
  });

  it('the leader\'s upload scan hashes the carried records (data and key revisions, not the archive\'s sessions or ops records) in the same walk, whatever the chunking', async () => {
    let seed = 7;
    const cuts: [number, (i: number) => number][] = [
      [30, () => 1],
      [30, () => 7],
      [600, () => 64 * 1024],
      [600, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), 1 + (seed % 20_000))],
    ];
    for (const [count, cut] of cuts) {
      const { all, carried } = stateWith(count);
      const bin = await stateBin(all);
      const declared = { stateKeys: all.length, stateBytes: bin.length };
      const expected = framed(carried);
      const whole = new CarriedRecordsDigest();
      for (const r of all) whole.add(r);
      assert.equal(whole.hex(), expected);
      assert.equal(whole.records, carried.length);
      assert.equal(all.length - carried.length, 2, 'the archive\'s session and ops records are left out');
      const into = new RecordsDigest();
      const scan = await scanStateRecords(chunked(bin, cut), declared, { valueBytesMax: 1024 * 1024, digest: { into, keep: isCarriedKeyAt } });
      assert.equal(scan.keys, all.length);
      assert.equal(into.hex(), expected);
    }
  });

  it('the entry carries it; entries without it decode as before (the same bytes); a malformed one makes the entry malformed', () => {
    const base: RestoreCommand = { digest: 'ab'.repeat(32), sizeBytes: 10, index: 7, term: 2 };
    const old = encodeRestoreCommand(base);
    assert.equal(Buffer.from(old.subarray(1)).toString(), JSON.stringify(base), 'an entry without it is encoded as before');
    assert.deepEqual(decodeRestoreCommand(old), base);
    const withIt = { ...base, session: { clientId: 'c', seq: 3 }, recordsDigest: 'cd'.repeat(32) };
    assert.deepEqual(decodeRestoreCommand(encodeRestoreCommand(withIt)), withIt);
    const raw = (fields: object): Uint8Array => Uint8Array.from([0x52, ...Buffer.from(JSON.stringify(fields))]);
    for (const bad of ['CD'.repeat(32), 'cd'.repeat(31), 7, null, '']) {
      assert.equal(decodeRestoreCommand(raw({ ...base, recordsDigest: bad })), null, `recordsDigest ${JSON.stringify(bad)}`);
    }
  });

  describe('StateMachine: an install for a restore entry', () => {
    let root: string;
    let store: RocksStorage;
    beforeEach(async () => {
      root = await mkdtemp(join(tmpdir(), 'snapcoord-records-digest-'));
      store = await RocksStorage.open(join(root, 'data'));
    });
    afterEach(async () => {
      await store.close();
      await rm(root, { recursive: true, force: true });
    });

    it('checks the records it installs from the archive against the entry: refused (RestoreDigestError, the state unchanged) when they differ, installed when they match', async () => {
      const fsm = await StateMachine.open(store);
      await fsm.apply([{ entry: { index: 1, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: bytes('old'), value: bytes('1') }) } }]);
      const { all, carried } = stateWith();
      const restore = (index: number, recordsDigest: string): ApplyItem => ({
        entry: { index, term: 1, type: 'normal', data: encodeRestoreCommand({ digest: 'ab'.repeat(32), sizeBytes: 10, index: 7, term: 2, recordsDigest }) },
      });
      const driver: RestoreDriver = {
        installArchive: async (_cmd, _index, install) => {
          try {
            await install([all.slice(0, 100), all.slice(100)], membership);
          } catch (err) {
            if (!(err instanceof RestoreDigestError)) throw err;
            return { ok: false, error: err.message };
          }
          return { ok: true };
        },
      };
      const generation = store.stateEpoch();
      const other = framed(carried.map((r, i) => (i === 5 ? { key: r.key, value: bytes('another value') } : r)));
      const [refused] = await fsm.apply([restore(2, other)], driver);
      assert.ok(refused !== undefined && !refused.ok && refused.code === 'badRestore', JSON.stringify(refused));
      assert.match(refused.error, new RegExp(`records digest ${framed(carried)}, but the restore entry names ${other}: the entry does not describe its own archive`));
      assert.equal(fsm.appliedIndex(), 2, 'skipped as a no-op');
      assert.equal(store.stateEpoch(), generation, 'no new generation committed');
      assert.deepEqual((await fsm.range({ limit: 10 })).kvs.map((kv) => Buffer.from(kv.key).toString()), ['old'], 'nothing of the archive installed');
      const [installed] = await fsm.apply([restore(3, framed(carried))], driver);
      assert.deepEqual(installed, { index: 3, ok: true });
      // Every record installed, counted page by page (an answer holds at most RANGE_BYTES_MAX of keys and values).
      let count = 0;
      let start: Uint8Array | undefined;
      for (let page = 0; page < 100; page++) {
        const r = await fsm.range({ limit: 10_000, ...(start !== undefined ? { start } : {}) });
        count += r.kvs.length;
        const last = r.kvs.at(-1)?.key;
        if (!r.more || last === undefined) break;
        start = Buffer.concat([last, Buffer.from([0])]);
      }
      assert.equal(count, 600);
    });
  });
});

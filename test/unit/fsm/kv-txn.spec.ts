/**
 * Transactions, revisions and apply results on both storages (the same
 * expectations for MemoryStorage and RocksStorage): compares on value,
 * version, create and mod revision with each relation, the branch taken,
 * ops seeing the writes before them, prev pairs and delete counts from the
 * apply itself, revision records surviving reopen and travelling through
 * snapshotState -> installState, a retried transaction applied once, and the
 * codec's limits.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { Membership } from '../../../src/raft/types.js';
import { compareHolds } from '../../../src/fsm/apply-plan.js';
import {
  decodeCommand,
  encodeCommand,
  KvCommandError,
  TXN_COMPARES_MAX,
  TXN_OPS_MAX,
  type KvCommand,
  type KvCompare,
  type KvTxn,
} from '../../../src/fsm/kv-command.js';
import { encodeKeyRevision, isRevisionKey, revisionKey } from '../../../src/fsm/key-revision.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RevisionCache } from '../../../src/fsm/revision-cache.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { ApplyItem, ApplyResult, StoredKeyValue } from '../../../src/fsm/types.js';
import type { KeyValue } from '../../../src/storage/types.js';
import { withFsm, type FsmStore } from './fsm-store.js';
import { heapRetained } from '../../harness/heap-retained.js';

interface Fixture {
  open(): Promise<FsmStore>;
  dispose(): Promise<void>;
}

const implementations: { name: string; create(tag: string): Promise<Fixture> }[] = [
  {
    name: 'MemoryStorage',
    create: async (tag) => {
      const dir = new MemoryDataDir(`mem-txn-${tag}`);
      return { open: async () => withFsm(await MemoryStorage.open(dir)), dispose: async () => undefined };
    },
  },
  {
    name: 'RocksStorage',
    create: async (tag) => {
      const root = await mkdtemp(join(tmpdir(), `snapcoord-txn-${tag}-`));
      return { open: async () => withFsm(await RocksStorage.open(join(root, 'data'))), dispose: () => rm(root, { recursive: true, force: true }) };
    },
  },
];

const enc = new TextEncoder();
const bytes = (s: string): Uint8Array => enc.encode(s);
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
const MEMBERSHIP: Membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };

function item(index: number, command: KvCommand): ApplyItem {
  return { entry: { index, term: 1, type: 'normal', data: encodeCommand(command) } };
}

/** plain: a result with its bytes as strings, for deepEqual. */
function plain(r: ApplyResult | undefined): unknown {
  const kv = (x: StoredKeyValue | null | undefined): unknown =>
    x === undefined ? undefined : x === null ? null : { key: text(x.key), value: text(x.value), create: x.createRevision, mod: x.modRevision, version: x.version };
  if (r === undefined || !r.ok) return r;
  const out: Record<string, unknown> = { index: r.index };
  if (r.firstIndex !== undefined) out['firstIndex'] = r.firstIndex;
  if (r.deleted !== undefined) out['deleted'] = r.deleted;
  if (r.prev !== undefined) out['prev'] = kv(r.prev);
  if (r.succeeded !== undefined) out['succeeded'] = r.succeeded;
  if (r.responses !== undefined) {
    out['responses'] = r.responses.map((x) =>
      x.op === 'get' ? { get: kv(x.kv) } : x.op === 'put' ? { put: kv(x.prev) } : { delete: x.deleted, prev: kv(x.prev) },
    );
  }
  return out;
}

const cas = (key: string, expected: string, next: string): KvTxn => ({
  op: 'txn',
  compares: [{ key: bytes(key), target: 'value', result: 'equal', value: bytes(expected) }],
  success: [{ op: 'put', key: bytes(key), value: bytes(next) }],
  failure: [{ op: 'get', key: bytes(key) }],
});

const num = (key: string, target: 'version' | 'create' | 'mod', result: KvCompare['result'], operand: number): KvCompare => ({
  key: bytes(key),
  target,
  result,
  operand,
});

describe('kv-command: transactions', () => {
  it('a txn round-trips through the codec (with a session), every op kind and compare kind', () => {
    const txn: KvCommand = {
      op: 'txn',
      compares: [
        { key: bytes('a'), target: 'value', result: 'notEqual', value: bytes('') },
        num('b', 'version', 'greater', 3),
        num('c', 'create', 'less', 2 ** 53 - 1),
        num('d', 'mod', 'equal', 0),
      ],
      success: [
        { op: 'put', key: bytes('a'), value: bytes('1'), prevKv: true },
        { op: 'delete', key: bytes('b'), prevKv: true },
        { op: 'get', key: bytes('c') },
        { op: 'delete', key: bytes('d') },
      ],
      failure: [{ op: 'put', key: bytes('e'), value: bytes('2') }],
      session: { clientId: 'c1', seq: 7 },
    };
    const back = decodeCommand(encodeCommand(txn));
    assert.deepEqual(JSON.parse(JSON.stringify(back, (_k, v: unknown) => (v instanceof Uint8Array ? text(v) : v))), JSON.parse(JSON.stringify(txn, (_k, v: unknown) => (v instanceof Uint8Array ? text(v) : v))));
    // single put / delete keep their prev_kv flag; a batch has none
    assert.deepEqual(decodeCommand(encodeCommand({ op: 'put', key: bytes('k'), value: bytes('v'), prevKv: true })), { op: 'put', key: bytes('k'), value: bytes('v'), prevKv: true });
    assert.deepEqual(decodeCommand(encodeCommand({ op: 'delete', key: bytes('k'), prevKv: true })), { op: 'delete', key: bytes('k'), prevKv: true });
  });

  it('limits: compares, ops per branch, operands, a get outside a txn', () => {
    const code = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        assert.ok(err instanceof KvCommandError);
        return err.code;
      }
      return 'none';
    };
    const compares = Array.from({ length: TXN_COMPARES_MAX + 1 }, () => num('k', 'version', 'equal', 0));
    const ops = Array.from({ length: TXN_OPS_MAX + 1 }, () => ({ op: 'get' as const, key: bytes('k') }));
    assert.equal(code(() => encodeCommand({ op: 'txn', compares, success: [], failure: [] })), 'tooManyOps');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: compares.slice(1), success: ops.slice(1), failure: ops.slice(1) })), 'none');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [], success: ops, failure: [] })), 'tooManyOps');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [], success: [], failure: ops })), 'tooManyOps');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [num('k', 'mod', 'equal', -1)], success: [], failure: [] })), 'badCompare');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [num('k', 'mod', 'equal', 2 ** 53)], success: [], failure: [] })), 'badCompare');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [{ ...num('k', 'mod', 'equal', 1), result: 'around' as 'equal' }], success: [], failure: [] })), 'badCompare');
    assert.equal(code(() => encodeCommand({ op: 'get', key: bytes('k') } as unknown as KvCommand)), 'unknownOp');
    assert.equal(code(() => encodeCommand({ op: 'txn', compares: [], success: [{ op: 'put', key: bytes('\u0000snapcoord/rev/kx'), value: bytes('') }], failure: [] })), 'reservedKey');
    // decoding refuses a count beyond the limits too (bytes crafted by hand: txn, compares = 129)
    assert.equal(code(() => decodeCommand(Uint8Array.from([0x08, 0x00, TXN_COMPARES_MAX + 1]))), 'tooManyOps');
  });

  it('compareHolds: every target and relation; a value compare on an absent key never holds', () => {
    const kv: StoredKeyValue = { key: bytes('k'), value: bytes('m'), createRevision: 5, modRevision: 9, version: 3 };
    const value = (result: KvCompare['result'], v: string): KvCompare => ({ key: bytes('k'), target: 'value', result, value: bytes(v) });
    assert.deepEqual(
      [value('equal', 'm'), value('notEqual', 'm'), value('greater', 'a'), value('less', 'z'), value('less', 'a')].map((c) => compareHolds(c, kv)),
      [true, false, true, true, false],
    );
    assert.deepEqual(
      [value('equal', ''), value('notEqual', 'm'), value('less', 'z')].map((c) => compareHolds(c, null)),
      [false, false, false],
    );
    assert.deepEqual(
      [num('k', 'version', 'equal', 3), num('k', 'create', 'greater', 4), num('k', 'mod', 'less', 10), num('k', 'mod', 'notEqual', 9)].map((c) => compareHolds(c, kv)),
      [true, true, true, false],
    );
    // an absent key has version, create and mod revision 0
    assert.deepEqual(
      [num('k', 'version', 'equal', 0), num('k', 'create', 'equal', 0), num('k', 'mod', 'greater', 0)].map((c) => compareHolds(c, null)),
      [true, true, false],
    );
  });
});

describe('RevisionCache', () => {
  it('holds what it was told per generation, drops the least recently used beyond its byte cap, empties on a new generation', () => {
    const cache = new RevisionCache(3 * (1 + 25 + 64)); // three one-character keys with 25-byte records
    const rec = new Uint8Array(25);
    cache.forGeneration(1);
    cache.set('a', rec);
    cache.set('b', null);
    cache.set('c', rec);
    assert.deepEqual(cache.get('a'), rec); // a is now the most recently used
    cache.set('d', rec); // over the cap: b (least recently used) goes
    assert.deepEqual(['a', 'b', 'c', 'd'].map((k) => cache.get(k) === undefined), [false, true, false, false]);
    cache.forGeneration(1);
    assert.equal(cache.size, 3, 'the same generation keeps its records');
    cache.forGeneration(2);
    assert.equal(cache.size, 0);
    assert.equal(cache.get('a'), undefined);
  });
  it('answers the bytes it was given (a copy: later changes to them do not show)', () => {
    const cache = new RevisionCache();
    cache.forGeneration(1);
    const rec = Uint8Array.from({ length: 25 }, (_, i) => (i * 37 + 200) % 256);
    cache.set('k', rec);
    const copy = Uint8Array.from(rec);
    rec.fill(0);
    assert.deepEqual(cache.get('k'), copy);
    cache.set('e', new Uint8Array(0));
    assert.deepEqual(cache.get('e'), new Uint8Array(0));
  });
  it('holds a 25-byte record in at most 160 bytes of heap besides its key string (50k records)', () => {
    // As the Uint8Arrays it was given: ~130 bytes of heap a record more (in the old generation of a busy leader).
    const n = 50_000;
    const keys = Array.from({ length: n }, (_, i) => `\x00snapcoord/rev/kbench/${String(i).padStart(8, '0')}`);
    const { held, bytesPerItem } = heapRetained(n, () => {
      const cache = new RevisionCache();
      cache.forGeneration(1);
      cache.markComplete();
      for (let i = 0; i < n; i++) cache.set(keys[i] as string, encodeKeyRevision({ createRevision: i + 1, modRevision: i + 1, version: 1 }));
      return cache;
    });
    assert.equal(held.size, n);
    assert.ok(bytesPerItem <= 160, `${bytesPerItem.toFixed(0)} bytes of heap per record`);
  });
  it('complete: a key it does not hold has no record (null, no read), until the first record dropped for room; a new generation starts partial', () => {
    const cache = new RevisionCache(3 * (1 + 25 + 64));
    const rec = new Uint8Array(25);
    assert.equal(cache.forGeneration(1), true);
    assert.equal(cache.forGeneration(1), false, 'the same generation: nothing to load');
    cache.set('a', rec);
    assert.equal(cache.get('z'), undefined, 'partial: not known');
    cache.markComplete();
    assert.equal(cache.complete, true);
    assert.equal(cache.get('z'), null, 'complete: no record');
    cache.set('b', rec);
    cache.set('b', null); // deleted: nothing held for it, and still known absent
    assert.deepEqual([cache.get('b'), cache.size], [null, 1]);
    cache.set('c', rec);
    cache.set('d', rec);
    cache.set('e', rec); // over the cap: one is dropped, what is not held is unknown again
    assert.equal(cache.complete, false);
    assert.equal(cache.get('z'), undefined);
    cache.markComplete();
    assert.equal(cache.complete, false, 'a generation that dropped a record is never complete');
    assert.equal(cache.forGeneration(2), true);
    assert.deepEqual([cache.complete, cache.size, cache.get('a')], [false, 0, undefined]);
  });
});

for (const impl of implementations) {
  describe(`transactions and apply results on ${impl.name}`, function () {
    this.timeout(30_000);
    let fixture: Fixture;
    let store: FsmStore;

    beforeEach(async () => {
      fixture = await impl.create('a');
      store = await fixture.open();
    });
    afterEach(async () => {
      await store.close();
      await fixture.dispose();
    });

    it('put and delete answer the pair they replaced (with its revisions) and the delete count from the apply itself', async () => {
      const r = await store.apply([
        item(1, { op: 'put', key: bytes('k'), value: bytes('v1'), prevKv: true }),
        item(2, { op: 'put', key: bytes('k'), value: bytes('v2'), prevKv: true }),
        item(3, { op: 'put', key: bytes('k'), value: bytes('v3') }),
        item(4, { op: 'delete', key: bytes('k'), prevKv: true }),
        item(5, { op: 'delete', key: bytes('k'), prevKv: true }),
        item(6, { op: 'put', key: bytes('k'), value: bytes('again'), prevKv: true }),
      ]);
      assert.deepEqual(r.map(plain), [
        { index: 1, prev: null },
        { index: 2, prev: { key: 'k', value: 'v1', create: 1, mod: 1, version: 1 } },
        { index: 3 },
        { index: 4, deleted: 1, prev: { key: 'k', value: 'v3', create: 1, mod: 3, version: 3 } },
        { index: 5, deleted: 0, prev: null },
        { index: 6, prev: null },
      ]);
      // across apply calls (read from the state, not the call's own writes) and after a reopen
      const [d] = await store.apply([item(7, { op: 'delete', key: bytes('k'), prevKv: true })]);
      assert.deepEqual(plain(d), { index: 7, deleted: 1, prev: { key: 'k', value: 'again', create: 6, mod: 6, version: 1 } });
      await store.apply([item(8, { op: 'put', key: bytes('k'), value: bytes('x') }), item(9, { op: 'put', key: bytes('k'), value: bytes('y') })]);
      await store.close();
      store = await fixture.open();
      const [p] = await store.apply([item(10, { op: 'put', key: bytes('k'), value: bytes('z'), prevKv: true })]);
      assert.deepEqual(plain(p), { index: 10, prev: { key: 'k', value: 'y', create: 8, mod: 9, version: 2 } });
      // revision records are no data: get and range never show them
      assert.deepEqual((await store.range({ limit: 100 })).kvs.map((kv) => text(kv.key)), ['k']);
      assert.equal(await store.get(revisionKey(bytes('k'))), undefined);
    });

    it('compare-and-swap: the success branch when the compares hold, the failure branch otherwise, at one revision', async () => {
      const r = await store.apply([
        item(1, { op: 'txn', compares: [num('c', 'version', 'equal', 0)], success: [{ op: 'put', key: bytes('c'), value: bytes('0') }], failure: [] }),
        item(2, cas('c', '0', '1')),
        item(3, cas('c', '0', '2')), // stale expectation: fails, reads the current pair
        item(4, cas('c', '1', '2')),
        item(5, { op: 'txn', compares: [num('c', 'version', 'equal', 0)], success: [{ op: 'put', key: bytes('c'), value: bytes('reset') }], failure: [{ op: 'get', key: bytes('c') }] }),
      ]);
      assert.deepEqual(r.map(plain), [
        { index: 1, succeeded: true, responses: [{ put: undefined }] },
        { index: 2, succeeded: true, responses: [{ put: undefined }] },
        { index: 3, succeeded: false, responses: [{ get: { key: 'c', value: '1', create: 1, mod: 2, version: 2 } }] },
        { index: 4, succeeded: true, responses: [{ put: undefined }] },
        { index: 5, succeeded: false, responses: [{ get: { key: 'c', value: '2', create: 1, mod: 4, version: 3 } }] },
      ]);
      assert.equal(text(await store.get(bytes('c'))), '2');
    });

    it('all compares must hold; ops see the ops before them; mod/create compares; a failed txn writes nothing', async () => {
      await store.apply([
        item(1, { op: 'put', key: bytes('a'), value: bytes('1') }),
        item(2, { op: 'put', key: bytes('b'), value: bytes('1') }),
        item(3, { op: 'put', key: bytes('b'), value: bytes('2') }),
      ]);
      const before = await store.stateDigest();
      const [failed] = await store.apply([
        item(4, {
          op: 'txn',
          compares: [num('a', 'mod', 'equal', 1), num('b', 'mod', 'equal', 2)], // b was modified at 3
          success: [{ op: 'delete', key: bytes('a') }],
          failure: [],
        }),
      ]);
      assert.deepEqual(plain(failed), { index: 4, succeeded: false, responses: [] });
      assert.equal(text(await store.get(bytes('a'))), '1');
      assert.notEqual(await store.stateDigest(), before, 'the applied index moved on');
      const [ok] = await store.apply([
        item(5, {
          op: 'txn',
          compares: [num('a', 'create', 'equal', 1), num('b', 'create', 'less', 3), num('b', 'version', 'greater', 1), { key: bytes('missing'), target: 'value', result: 'notEqual', value: bytes('x') }],
          success: [],
          failure: [
            { op: 'put', key: bytes('n'), value: bytes('first'), prevKv: true },
            { op: 'get', key: bytes('n') },
            { op: 'put', key: bytes('n'), value: bytes('second'), prevKv: true },
            { op: 'delete', key: bytes('a'), prevKv: true },
            { op: 'get', key: bytes('a') },
            { op: 'delete', key: bytes('a') },
          ],
        }),
      ]);
      assert.deepEqual(plain(ok), {
        index: 5,
        succeeded: false, // the value compare on a missing key fails, whatever its relation
        responses: [
          { put: null },
          { get: { key: 'n', value: 'first', create: 5, mod: 5, version: 1 } },
          { put: { key: 'n', value: 'first', create: 5, mod: 5, version: 1 } },
          { delete: 1, prev: { key: 'a', value: '1', create: 1, mod: 1, version: 1 } },
          { get: null },
          { delete: 0, prev: undefined },
        ],
      });
      const [n] = await store.apply([item(6, { op: 'delete', key: bytes('n'), prevKv: true })]);
      assert.deepEqual(plain(n), { index: 6, deleted: 1, prev: { key: 'n', value: 'second', create: 5, mod: 5, version: 2 } });
    });

    it('a retried transaction (same client id and request id) is applied once and answers its first outcome', async () => {
      const session = { clientId: 'txn-client', seq: 1 };
      await store.apply([item(1, { op: 'put', key: bytes('c'), value: bytes('0') })]);
      const [first] = await store.apply([item(2, { ...cas('c', '0', '1'), session })]);
      assert.deepEqual(plain(first), { index: 2, succeeded: true, responses: [{ put: undefined }] });
      await store.apply([item(3, { op: 'put', key: bytes('c'), value: bytes('0') })]);
      // the retry would succeed again if applied: it is answered, not applied
      const [retry] = await store.apply([item(4, { ...cas('c', '0', '1'), session })]);
      assert.deepEqual(plain(retry), { index: 4, firstIndex: 2, succeeded: true });
      assert.equal(text(await store.get(bytes('c'))), '0');
      // a failed first outcome is remembered as failed, also across a reopen
      const failedSession = { clientId: 'txn-client', seq: 2 };
      const [f] = await store.apply([item(5, { ...cas('c', 'nope', '1'), session: failedSession })]);
      assert.equal(f?.ok && f.succeeded, false);
      await store.close();
      store = await fixture.open();
      const [again] = await store.apply([item(6, { ...cas('c', '0', '1'), session: failedSession })]);
      assert.deepEqual(plain(again), { index: 6, firstIndex: 5, succeeded: false });
      assert.equal(text(await store.get(bytes('c'))), '0');
    });

    it('revision records travel with the data: snapshotState -> installState on another store gives the same state and the same answers', async () => {
      await store.apply([
        item(1, { op: 'put', key: bytes('k'), value: bytes('1') }),
        item(2, { op: 'put', key: bytes('k'), value: bytes('2') }),
        item(3, { op: 'put', key: bytes('long/' + 'x'.repeat(4090)), value: bytes('L') }),
      ]);
      const reader = await store.snapshotState();
      const records: KeyValue[] = [];
      for await (const batch of reader.batches()) records.push(...batch);
      assert.equal(records.filter((r) => isRevisionKey(r.key)).length, 2, 'one revision record per key');
      assert.ok(records.every((r) => r.key.length <= 4096), 'record keys stay within the snapshot key cap');
      const otherFixture = await impl.create('b');
      const other = await otherFixture.open();
      try {
        await other.installState([records], { appliedIndex: 3, membership: MEMBERSHIP });
        assert.equal(await other.stateDigest(), await store.stateDigest());
        const next = [item(4, { op: 'txn', compares: [num('k', 'version', 'equal', 2), num('k', 'create', 'equal', 1)], success: [{ op: 'put', key: bytes('k'), value: bytes('3'), prevKv: true }], failure: [] })];
        const [a, b] = [await store.apply(next), await other.apply(next)];
        assert.deepEqual(a.map(plain), [{ index: 4, succeeded: true, responses: [{ put: { key: 'k', value: '2', create: 1, mod: 2, version: 2 } }] }]);
        assert.deepEqual(b.map(plain), a.map(plain));
        assert.equal(await other.stateDigest(), await store.stateDigest());
        // a restore of user data (keepSessions) keeps the archive's revision records too
        await other.installState([records], { appliedIndex: 10, membership: MEMBERSHIP, keepSessions: true });
        const [c] = await other.apply([item(11, { op: 'delete', key: bytes('k'), prevKv: true })]);
        assert.deepEqual(plain(c), { index: 11, deleted: 1, prev: { key: 'k', value: '2', create: 1, mod: 2, version: 2 } });
      } finally {
        await other.close();
        await otherFixture.dispose();
      }
    });

    it('a key installed without a revision record (written before revisions) reads as version 1, revisions 0 until its next put', async () => {
      await store.installState([[{ key: bytes('old'), value: bytes('v') }]], { appliedIndex: 5, membership: MEMBERSHIP });
      const [r] = await store.apply([
        item(6, { op: 'txn', compares: [num('old', 'version', 'equal', 1), num('old', 'create', 'equal', 0)], success: [{ op: 'put', key: bytes('old'), value: bytes('w'), prevKv: true }], failure: [] }),
      ]);
      assert.deepEqual(plain(r), { index: 6, succeeded: true, responses: [{ put: { key: 'old', value: 'v', create: 0, mod: 0, version: 1 } }] });
      const [g] = await store.apply([item(7, { op: 'txn', compares: [], success: [{ op: 'get', key: bytes('old') }], failure: [] })]);
      // its first put under revisions counts it as created there
      assert.deepEqual(plain(g), { index: 7, succeeded: true, responses: [{ get: { key: 'old', value: 'w', create: 6, mod: 6, version: 1 } }] });
    });
  });
}

/**
 * StateMachine (src/fsm/state-machine.ts) over a real RocksStorage: how an
 * apply call reads and writes the store (batched probes, one write, the
 * revision cache), and how it notices a state installed behind its back.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { encodeCommand, type KvCommand } from '../../../src/fsm/kv-command.js';
import { encodeOpsRecord, opsRecordKey, OpsRecordError, OPS_RECORD_VALUE_BYTES_MAX } from '../../../src/fsm/ops-record.js';
import { encodeRestoreCommand, type RestoreCommand } from '../../../src/fsm/restore-command.js';
import { RESTORE_FLOOR_KEY, restoreFloorRecord } from '../../../src/fsm/restore-floor.js';
import { StateMachine, type RestoreDriver } from '../../../src/fsm/state-machine.js';
import type { ApplyItem } from '../../../src/fsm/types.js';
import type { Membership } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { keyStringCalls } from '../../../src/storage/key-string.js';
import { readStateImageChunks } from '../../../src/storage/state-image.js';
import { StorageError } from '../../../src/storage/storage-error.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'a:1' } };
const item = (index: number, cmd: KvCommand): ApplyItem => ({ entry: { index, term: 1, type: 'normal', data: encodeCommand(cmd) } });

describe('StateMachine over RocksStorage', () => {
  let root: string;
  let store: RocksStorage;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'snapcoord-fsm-'));
    store = await RocksStorage.open(join(root, 'data'));
  });

  afterEach(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  it('an applied put builds 3 key strings (its key, its record key, the record held in the cache), not one per place that names it', async () => {
    // Before KeyNames: 10 a put (the probes, the plan's reads and overlay, the revision cache, the store's changed keys).
    const fsm = await StateMachine.open(store);
    let index = 0;
    const batch = (n: number, cmd: (i: number) => KvCommand): ApplyItem[] => Array.from({ length: n }, () => ((index += 1), item(index, cmd(index))));
    await fsm.apply(batch(16, (i) => ({ op: 'put', key: bytes(`warm/${i}`), value: bytes('v') })));
    const before = keyStringCalls.count;
    const puts = 20 * 16;
    for (let b = 0; b < 20; b++) await fsm.apply(batch(16, (i) => ({ op: 'put', key: bytes(`bench/${i % 64}/${i}`), value: bytes(`value ${i}`) })));
    const perPut = (keyStringCalls.count - before) / puts;
    assert.ok(perPut <= 3, `${perPut} key strings built per applied put`);
    // The same keys named in one call (a put, then a put with prevKv and a delete of it) still apply as before.
    const again = await fsm.apply([
      item(index + 1, { op: 'put', key: bytes('k'), value: bytes('1') }),
      item(index + 2, { op: 'put', key: bytes('k'), value: bytes('2'), prevKv: true }),
      item(index + 3, { op: 'delete', key: bytes('k'), prevKv: true }),
    ]);
    assert.equal(text(again[1]?.ok === true ? again[1].prev?.value : undefined), '1');
    assert.equal(again[2]?.ok === true ? again[2].deleted : undefined, 1);
    assert.equal(await fsm.get(bytes('k')), undefined);
    assert.equal(text(await fsm.get(bytes(`bench/${index % 64}/${index}`))), `value ${index}`);
  });

  it('puts to new keys read nothing while every revision record is in memory; past the cap, a batch reads its keys in one native call and writes in one batch', async () => {
    const put = (index: number, key: string): ApplyItem => item(index, { op: 'put', key: bytes(key), value: bytes(`v${index}`) });
    const calls = (): { get: number; getMany: number; write: number } => ({ ...store.stateCalls() });
    const delta = (a: { get: number; getMany: number; write: number }, b: typeof a): typeof a => ({ get: b.get - a.get, getMany: b.getMany - a.getMany, write: b.write - a.write });
    // Every record fits: 32 puts to keys never written, then to the same keys again: no read at all, one write each.
    const fsm = await StateMachine.open(store);
    const c0 = calls();
    assert.equal((await fsm.apply(Array.from({ length: 32 }, (_, i) => put(i + 1, `fresh/${i}`)))).length, 32);
    const c1 = calls();
    assert.deepEqual(delta(c0, c1), { get: 0, getMany: 0, write: 1 });
    await fsm.apply(Array.from({ length: 32 }, (_, i) => put(i + 33, `fresh/${i}`)));
    assert.deepEqual(delta(c1, calls()), { get: 0, getMany: 0, write: 1 });
    assert.equal(text(await fsm.get(bytes('fresh/0'))), 'v33');
    // A cap of ~4 records: the load stops, the cache is partial, a batch of 32 new keys probes them in one getMany.
    const small = await StateMachine.open(store, { revisionCacheBytesMax: 4 * (16 + 8 + 25 + 64) });
    const c2 = calls();
    await small.apply(Array.from({ length: 32 }, (_, i) => put(i + 65, `other/${i}`)));
    const c3 = calls();
    assert.deepEqual(delta(c2, c3), { get: 0, getMany: 1, write: 1 });
    // Their versions went on from the stored records (read, not assumed absent).
    const [txn] = await small.apply([
      item(97, { op: 'txn', compares: [{ key: bytes('fresh/5'), target: 'version', result: 'equal', operand: 2 }, { key: bytes('other/5'), target: 'version', result: 'equal', operand: 1 }], success: [], failure: [] }),
    ]);
    assert.ok(txn?.ok && txn.succeeded === true, 'fresh/5 at version 2, other/5 at version 1');
  });

  it('the in-memory revision records start from the stored ones: after a reopen and past a cap, versions and revisions go on exactly', async () => {
    const fsm = await StateMachine.open(store);
    await fsm.apply([item(1, { op: 'put', key: bytes('k'), value: bytes('a') }), item(2, { op: 'put', key: bytes('k'), value: bytes('b') }), item(3, { op: 'put', key: bytes('gone'), value: bytes('x') })]);
    await fsm.apply([item(4, { op: 'delete', key: bytes('gone') })]);
    const versionIs = async (sm: StateMachine, index: number, key: string, version: number, create: number): Promise<boolean> => {
      const [r] = await sm.apply([
        item(index, {
          op: 'txn',
          compares: [{ key: bytes(key), target: 'version', result: 'equal', operand: version }, { key: bytes(key), target: 'create', result: 'equal', operand: create }],
          success: [],
          failure: [],
        }),
      ]);
      return r?.ok === true && r.succeeded === true;
    };
    // A state machine opened on the same store (a restart) loads the records: plain puts go on from them without reading.
    let goneCreated = 0;
    for (const cap of [undefined, 1]) {
      const reopened = await StateMachine.open(store, cap === undefined ? {} : { revisionCacheBytesMax: cap });
      const at = reopened.appliedIndex();
      const before = store.stateCalls().getMany;
      await reopened.apply([item(at + 1, { op: 'put', key: bytes('k'), value: bytes(`c${at}`) }), item(at + 2, { op: 'put', key: bytes('gone'), value: bytes('y') })]);
      assert.equal(store.stateCalls().getMany - before, cap === undefined ? 0 : 1, cap === undefined ? 'all records in memory: no read' : 'a cap of 1 byte: read');
      // k: created at 1, one more put per round; gone: deleted at 4, so created afresh by the first round's put
      goneCreated ||= at + 2;
      assert.ok(await versionIs(reopened, at + 3, 'k', cap === undefined ? 3 : 4, 1), `k's version goes on (cap ${String(cap)})`);
      assert.ok(await versionIs(reopened, at + 4, 'gone', cap === undefined ? 1 : 2, goneCreated), `gone created afresh at ${goneCreated} (cap ${String(cap)})`);
    }
  });

  it('changedIndex: the applied index of the last apply that changed the state (a put, a membership), not moved by empty entries', async () => {
    const fsm = await StateMachine.open(store);
    assert.equal(fsm.changedIndex(), 0);
    const noop = (index: number): ApplyItem => ({ entry: { index, term: 1, type: 'normal', data: new Uint8Array() } });
    await fsm.apply([item(1, { op: 'put', key: bytes('k'), value: bytes('a') }), noop(2)]);
    assert.equal(fsm.changedIndex(), 2, 'a run that changed something counts at its last index');
    await fsm.apply([noop(3), noop(4)]);
    assert.equal(fsm.changedIndex(), 2);
    assert.equal(fsm.appliedIndex(), 4);
    await fsm.apply([{ entry: { index: 5, term: 2, type: 'conf', data: new Uint8Array() }, membership }]);
    assert.equal(fsm.changedIndex(), 5, 'a membership is part of a snapshot');
    await fsm.apply([noop(6)]);
    assert.equal(fsm.changedIndex(), 5);
    const reopened = await StateMachine.open(store);
    assert.equal(reopened.changedIndex(), 6, 'after an open, what came before is not known: the applied index');
  });

  it('changedIndex never lags the applied index while a changing write is still returning', async () => {
    // A store whose applied index moves before its write resolves: in between, a caller reading both (a download
    // choosing whether the newest snapshot is current) must see the change.
    let gate: (() => void) | null = null;
    const late = new Proxy(store, {
      get(target, prop) {
        if (prop === 'write') {
          return async (batch: Parameters<RocksStorage['write']>[0]): Promise<void> => {
            await target.write(batch);
            await new Promise<void>((resolve) => (gate = resolve));
          };
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const fsm = await StateMachine.open(late);
    const noop = (index: number): ApplyItem => ({ entry: { index, term: 1, type: 'normal', data: new Uint8Array() } });
    const first = fsm.apply([noop(1)]);
    while (gate === null) await new Promise((r) => setImmediate(r));
    (gate as () => void)();
    gate = null;
    await first;
    assert.equal(fsm.changedIndex(), 0);
    const put = fsm.apply([item(2, { op: 'put', key: bytes('k'), value: bytes('v') })]);
    while (gate === null) await new Promise((r) => setImmediate(r));
    assert.equal(store.appliedIndex(), 2, 'the store has applied the put');
    assert.equal(fsm.changedIndex(), 2, 'and the state machine says the state changed there');
    (gate as () => void)();
    await put;
  });

  it('ops records: applied under the reserved prefix (never in get or range), in the snapshot; a malformed one is a failed no-op', async () => {
    const fsm = await StateMachine.open(store);
    const raw = (index: number, data: Uint8Array): ApplyItem => ({ entry: { index, term: 1, type: 'normal', data } });
    const good = encodeOpsRecord('schedule/db', bytes('{"lastRunAtMs":1}'));
    const truncated = good.subarray(0, good.length - 1);
    const badName = Buffer.from(good);
    badName[2] = 0x2f; // '/' first
    const results = await fsm.apply([item(1, { op: 'put', key: bytes('a'), value: bytes('1') }), raw(2, good), raw(3, truncated), raw(4, badName)]);
    assert.deepEqual(results.map((r) => [r.index, r.ok, r.ok ? '' : r.code]), [[1, true, ''], [2, true, ''], [3, false, 'malformedOpsRecord'], [4, false, 'malformedOpsRecord']]);
    assert.equal(fsm.appliedIndex(), 4);
    assert.equal(text(await fsm.opsRecord('schedule/db')), '{"lastRunAtMs":1}');
    assert.deepEqual((await fsm.range({ limit: 100 })).kvs.map((kv) => text(kv.key)), ['a']);
    assert.equal(await fsm.get(opsRecordKey('schedule/db')), undefined);
    const reader = await fsm.snapshotState();
    const keys: Uint8Array[] = [];
    for await (const batch of reader.batches()) for (const r of batch) keys.push(r.key);
    await reader.close();
    assert.ok(keys.some((k) => Buffer.from(k).equals(opsRecordKey('schedule/db'))), 'the record travels in snapshots');
    assert.throws(() => encodeOpsRecord('../x', bytes('')), OpsRecordError);
    assert.throws(() => encodeOpsRecord('x', new Uint8Array(OPS_RECORD_VALUE_BYTES_MAX + 1)), OpsRecordError);
  });

  it('a state installed into the store behind its back (a follower snapshot) is noticed: sessions and revisions are read again', async () => {
    const fsm = await StateMachine.open(store);
    const session = { clientId: 'c', seq: 1 };
    await fsm.apply([item(1, { op: 'put', key: bytes('k'), value: bytes('v'), session })]);
    assert.equal(fsm.lookupSession(session).kind, 'seen');
    // Another node's state: one key, no sessions, installed on the raw store (as SnapshotManager.install does).
    const other = await RocksStorage.open(join(root, 'other'));
    try {
      const otherFsm = await StateMachine.open(other);
      for (let i = 1; i <= 3; i++) await otherFsm.apply([item(i, { op: 'put', key: bytes('k'), value: bytes(`o${i}`) })]);
      const reader = await otherFsm.snapshotState();
      await store.installState(reader.batches(), { appliedIndex: 3, membership });
    } finally {
      await other.close();
    }
    // The retry is applied (the installed state does not remember the id) and the key's version goes on from the installed one.
    const [retry] = await fsm.apply([item(4, { op: 'put', key: bytes('k'), value: bytes('again'), session })]);
    assert.deepEqual(retry, { index: 4, ok: true });
    const [txn] = await fsm.apply([
      item(5, { op: 'txn', compares: [{ key: bytes('k'), target: 'version', result: 'equal', operand: 4 }], success: [{ op: 'get', key: bytes('k') }], failure: [] }),
    ]);
    assert.ok(txn?.ok && txn.succeeded === true, 'version 4: three puts on the other node and the one after the install');
  });

  it('restore entries: decoded and checked here, the archive installed through the driver, a refused or malformed one skipped as a failed no-op', async () => {
    const fsm = await StateMachine.open(store);
    const writer = { clientId: 'writer', seq: 1 };
    await fsm.apply([item(1, { op: 'put', key: bytes('old'), value: bytes('1'), session: writer })]);
    const digest = 'ab'.repeat(32);
    const restore = (index: number, cmd: Partial<RestoreCommand> = {}): ApplyItem => ({
      entry: { index, term: 1, type: 'normal', data: encodeRestoreCommand({ digest, sizeBytes: 10, index: 7, term: 2, ...cmd }) },
    });
    const calls: number[] = [];
    let refuse = false;
    const driver: RestoreDriver = {
      installArchive: async (cmd, index, install) => {
        calls.push(index);
        assert.equal(cmd.digest, digest);
        if (refuse) return { ok: false, error: 'the archive is refused' };
        await install([[{ key: bytes('restored'), value: bytes('r') }]], membership);
        return { ok: true };
      },
    };
    // malformed: every node skips it the same way, the index moves on, the driver is not asked
    const malformed: ApplyItem = { entry: { index: 2, term: 1, type: 'normal', data: Uint8Array.from([0x52, 0x7b, 0x7d]) } };
    const [bad] = await fsm.apply([malformed], driver);
    assert.ok(bad !== undefined && !bad.ok && bad.code === 'badRestore' && /malformed restore entry/.test(bad.error));
    assert.equal(fsm.appliedIndex(), 2);
    assert.deepEqual(calls, []);
    // refused by the driver (content): skipped, state unchanged
    refuse = true;
    const [refused] = await fsm.apply([restore(3)], driver);
    assert.ok(refused !== undefined && !refused.ok && refused.code === 'badRestore' && /the archive is refused/.test(refused.error));
    assert.equal(text(await fsm.get(bytes('old'))), '1');
    assert.equal(fsm.appliedIndex(), 3);
    // installed: KV entries around it in the same call apply in order; the session table is kept and the restorer recorded
    refuse = false;
    const restorer = { clientId: 'restorer', seq: 1 };
    const results = await fsm.apply([item(4, { op: 'put', key: bytes('before'), value: bytes('b') }), restore(5, { session: restorer }), item(6, { op: 'put', key: bytes('after'), value: bytes('a') })], driver);
    assert.deepEqual(results.map((r) => [r.index, r.ok]), [[4, true], [5, true], [6, true]]);
    assert.deepEqual(calls, [3, 5]);
    assert.deepEqual((await fsm.range({ limit: 10 })).kvs.map((kv) => text(kv.key)), ['after', 'restored']);
    assert.equal(fsm.lookupSession(writer).kind, 'seen', 'a restore replaces the data, not the record of request ids');
    assert.deepEqual(fsm.lookupSession(restorer), { kind: 'seen', result: { seq: 1, index: 5 } });
    // the same request id again: not restored twice, answered with the first index, the driver not asked
    const [again] = await fsm.apply([restore(7, { session: restorer })], driver);
    assert.deepEqual(again, { index: 7, ok: true, firstIndex: 5 });
    assert.deepEqual(calls, [3, 5]);
    assert.equal(text(await fsm.get(bytes('after'))), 'a');
    // a restore with no driver is an error, not a silent skip
    await assert.rejects(fsm.apply([restore(8)]), /no restore driver/);
    assert.equal(fsm.appliedIndex(), 7);
  });

  it('the last restore applied (installed, or refused for its content) is recorded in the state: kept across a reopen, in a snapshot installed elsewhere and in a state image; never taken from an archive', async () => {
    let fsm = await StateMachine.open(store);
    assert.equal(await fsm.lastRestoreIndex(), 0, 'none yet');
    const digest = 'cd'.repeat(32);
    const restore = (index: number, cmd: Partial<RestoreCommand> = {}): ApplyItem => ({
      entry: { index, term: 1, type: 'normal', data: encodeRestoreCommand({ digest, sizeBytes: 10, index: 3, term: 1, ...cmd }) },
    });
    let refuse = false;
    const driver: RestoreDriver = {
      installArchive: async (_cmd, _index, install) => {
        if (refuse) return { ok: false, error: 'the archive is refused' };
        // The archive's own cluster had restored at 99: its record is not this cluster's.
        await install([[restoreFloorRecord(99), { key: bytes('restored'), value: bytes('r') }]], membership, undefined, { exportImage: true });
        return { ok: true };
      },
    };
    const restorer = { clientId: 'restorer', seq: 1 };
    refuse = true;
    await fsm.apply([item(1, { op: 'put', key: bytes('a'), value: bytes('1') }), restore(2)], driver);
    assert.equal(await fsm.lastRestoreIndex(), 2, 'refused for its content: a member behind still needs the archive to refuse it');
    assert.equal(fsm.changedIndex(), 2, 'the record changed the state');
    refuse = false;
    const malformed: ApplyItem = { entry: { index: 3, term: 1, type: 'normal', data: Uint8Array.from([0x52, 0x7b, 0x7d]) } };
    await fsm.apply([malformed, restore(4, { session: restorer })], driver);
    assert.equal(await fsm.lastRestoreIndex(), 4, 'installed (a malformed entry needs no archive: not recorded)');
    assert.deepEqual((await fsm.range({ limit: 10 })).kvs.map((kv) => text(kv.key)), ['restored'], 'the record is not served');
    assert.equal(await fsm.get(RESTORE_FLOOR_KEY), undefined);
    const [again] = await fsm.apply([restore(5, { session: restorer }), item(6, { op: 'put', key: bytes('b'), value: bytes('2') })], driver);
    assert.deepEqual(again, { index: 5, ok: true, firstIndex: 4 });
    assert.equal(await fsm.lastRestoreIndex(), 4, 'a retried restore installs nothing: not recorded');

    // A state image of the install (what a follower applying entry 4 takes from this leader).
    const held = store.stateImage?.(4) ?? null;
    assert.ok(held !== null, 'the install exported an image');
    const imported = await RocksStorage.open(join(root, 'imported'));
    try {
      const importedFsm = await StateMachine.open(imported);
      await importedFsm.importImage({ files: held.image.files, chunks: readStateImageChunks(held.image, 64 * 1024) }, { appliedIndex: 4, membership });
      assert.equal(await importedFsm.lastRestoreIndex(), 4);
    } finally {
      held.release();
      await imported.close();
    }
    // A snapshot of the state installed into another store behind its state machine's back (as a follower's
    // SnapshotManager does), and through StateMachine.installState.
    for (const through of ['store', 'state machine'] as const) {
      const other = await RocksStorage.open(join(root, `other-${through}`));
      try {
        const otherFsm = await StateMachine.open(other);
        const reader = await fsm.snapshotState();
        if (through === 'store') await other.installState(reader.batches(), { appliedIndex: reader.appliedIndex, membership });
        else await otherFsm.installState(reader.batches(), { appliedIndex: reader.appliedIndex, membership });
        assert.equal(await otherFsm.lastRestoreIndex(), 4, through);
        assert.equal(await other.stateDigest(), await store.stateDigest(), through);
      } finally {
        await other.close();
      }
    }
    // Kept across a reopen.
    await store.close();
    store = await RocksStorage.open(join(root, 'data'));
    fsm = await StateMachine.open(store);
    assert.equal(await fsm.lastRestoreIndex(), 4);
    // A record this build cannot read is an error, never taken for 0.
    await store.write({ writes: [{ key: RESTORE_FLOOR_KEY, value: Uint8Array.from([2, 0, 0, 0, 0, 0, 0, 0, 4, 0]) }], appliedIndex: 7 });
    await assert.rejects(fsm.lastRestoreIndex(), (e: unknown) => e instanceof StorageError && e.code === 'unknownFormat' && /10 bytes of format 2; this build reads 9 bytes of format 1/.test(e.message));
  });
});

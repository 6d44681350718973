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
import { StateMachine } from '../../../src/fsm/state-machine.js';
import type { ApplyItem } from '../../../src/fsm/types.js';
import type { Membership } from '../../../src/raft/types.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';

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

  it('an apply batch reads its keys in one native call and writes in one batch, whatever its entry count; cached records are not read again', async () => {
    const fsm = await StateMachine.open(store);
    const put = (index: number, key: string): ApplyItem => item(index, { op: 'put', key: bytes(key), value: bytes(`v${index}`) });
    const before = store.stateCalls();
    // 32 entries, one put each to a key never written: each needs its revision record probed.
    const results = await fsm.apply(Array.from({ length: 32 }, (_, i) => put(i + 1, `fresh/${i}`)));
    assert.equal(results.length, 32);
    const after = store.stateCalls();
    assert.deepEqual({ get: after.get - before.get, getMany: after.getMany - before.getMany, write: after.write - before.write }, { get: 0, getMany: 1, write: 1 });
    assert.equal(text(await fsm.get(bytes('fresh/31'))), 'v32');
    // The same keys again: their records are in the revision cache, nothing is read.
    await fsm.apply(Array.from({ length: 32 }, (_, i) => put(i + 33, `fresh/${i}`)));
    const again = store.stateCalls();
    assert.deepEqual({ getMany: again.getMany - after.getMany, write: again.write - after.write }, { getMany: 0, write: 1 });
    assert.equal(text(await fsm.get(bytes('fresh/0'))), 'v33');
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
});

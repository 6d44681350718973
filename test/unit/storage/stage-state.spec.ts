/**
 * RocksStorage.stageState: a state built beside the current one (a follower's
 * install overlapping its fetch, src/node/overlapped-install.ts), invisible
 * and leaving the state untouched until commit(); discarded by discard() or
 * close() (after a crash, open() deletes every generation STATE does not
 * name, rocks-data-dir.spec); writes go on while it builds.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { KeyValue } from '../../../src/storage/types.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };

function kv(key: string, value: string): KeyValue {
  return { key: Buffer.from(key), value: Buffer.from(value) };
}

async function text(s: RocksStorage, key: string): Promise<string | undefined> {
  const v = await s.get(Buffer.from(key));
  return v === undefined ? undefined : Buffer.from(v).toString();
}

async function generations(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => /^state-\d+$/.test(n)).sort();
}

/** gated: yields `batches`, waiting for `gate` before the last one. */
async function* gated(batches: KeyValue[][], gate: Promise<void>): AsyncGenerator<KeyValue[]> {
  for (let i = 0; i < batches.length; i++) {
    if (i === batches.length - 1) await gate;
    yield batches[i] as KeyValue[];
  }
}

describe('RocksStorage.stageState', function () {
  this.timeout(60_000);
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'snapcoord-stage-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('writes go on while it builds; the state is untouched until commit(), then wholly the staged one', async () => {
    const s = await RocksStorage.open(dir);
    try {
      await s.write({ writes: [{ key: Buffer.from('old'), value: Buffer.from('1') }], appliedIndex: 1 });
      let open!: () => void;
      const gate = new Promise<void>((resolve) => (open = resolve));
      const staging = s.stageState(gated([[kv('a', 'x')], [kv('b', 'y')]], gate), { appliedIndex: 50, membership });
      // The source waits: a write is not held behind the build (installState would hold it).
      await s.write({ writes: [{ key: Buffer.from('during'), value: Buffer.from('2') }], appliedIndex: 2 });
      assert.equal(await text(s, 'during'), '2');
      open();
      const staged = await staging;
      assert.equal(s.appliedIndex(), 2);
      assert.equal(await text(s, 'a'), undefined, 'nothing staged is visible');
      const epoch = s.stateEpoch();
      await staged.commit();
      assert.notEqual(s.stateEpoch(), epoch);
      assert.equal(s.appliedIndex(), 50);
      assert.deepEqual([await text(s, 'a'), await text(s, 'b'), await text(s, 'old'), await text(s, 'during')], ['x', 'y', undefined, undefined]);
      await assert.rejects(staged.commit(), /committed twice/);
    } finally {
      await s.close();
    }
    const again = await RocksStorage.open(dir);
    try {
      assert.equal(again.appliedIndex(), 50);
      assert.equal(await text(again, 'b'), 'y');
      assert.equal((await generations(dir)).length, 1);
    } finally {
      await again.close();
    }
  });

  it('a source that throws, discard() and close() (its source still waiting) each leave the state and no staged generation', async () => {
    const s = await RocksStorage.open(dir);
    try {
      await s.installState([[kv('keep', 'k')]], { appliedIndex: 3, membership });
      const installed = await generations(dir);
      async function* failing(): AsyncGenerator<KeyValue[]> {
        yield [kv('a', 'x')];
        throw new Error('the archive was refused');
      }
      await assert.rejects(s.stageState(failing(), { appliedIndex: 9, membership }), /refused/);
      const staged = await s.stageState([[kv('a', 'x')]], { appliedIndex: 9, membership });
      assert.equal((await generations(dir)).length, installed.length + 1);
      await staged.discard();
      await assert.rejects(staged.commit(), /after its discard/);
      assert.deepEqual(await generations(dir), installed);
      assert.equal(await text(s, 'keep'), 'k');
      // A build whose source never ends is ended by close().
      const waiting = s.stageState(gated([[kv('a', 'x')], [kv('b', 'y')]], new Promise<void>(() => undefined)), { appliedIndex: 9, membership });
      waiting.catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 50));
      await s.close();
      await assert.rejects(waiting, /closed|after close/);
    } finally {
      await s.close();
    }
    const again = await RocksStorage.open(dir);
    try {
      assert.equal(again.appliedIndex(), 3);
      assert.equal(await text(again, 'keep'), 'k');
      assert.equal((await generations(dir)).length, 1);
    } finally {
      await again.close();
    }
  });

  it('an install while a state is staged takes another generation; close() deletes the staged one', async () => {
    const s = await RocksStorage.open(dir);
    const staged = await s.stageState([[kv('a', 'x')]], { appliedIndex: 9, membership });
    // An install while a state is staged builds its own generation (not the staged one's directory).
    await s.installState([[kv('i', 'z')]], { appliedIndex: 4, membership });
    assert.equal((await generations(dir)).length, 2, 'the installed generation and the staged one');
    assert.equal(s.appliedIndex(), 4);
    await s.close();
    await assert.rejects(staged.commit(), /after its discard/);
    const again = await RocksStorage.open(dir);
    try {
      assert.equal(again.appliedIndex(), 4);
      assert.equal(await text(again, 'i'), 'z');
      assert.equal(await text(again, 'a'), undefined);
      assert.equal((await generations(dir)).length, 1);
    } finally {
      await again.close();
    }
  });
});

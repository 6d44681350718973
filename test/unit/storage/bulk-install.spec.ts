/**
 * RocksStorage.installState as a bulk load: records land in large unsynced
 * batches written one after another (one in flight while the next is
 * gathered), then one synced write; these check what that must keep.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { INSTALL_TURN_BYTES, RocksStorage } from '../../../src/storage/rocks-storage.js';
import type { KeyValue } from '../../../src/storage/types.js';

const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7001' } };

function kv(key: string, value: string): KeyValue {
  return { key: Buffer.from(key), value: Buffer.from(value) };
}

describe('RocksStorage.installState bulk load', function () {
  this.timeout(120_000);
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'snapcoord-bulk-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('loads a state spanning many write batches, all of it readable and durable across a reopen', async () => {
    const count = 40_000; // several 16,384-op batches
    async function* source(): AsyncGenerator<KeyValue[]> {
      for (let i = 0; i < count; i += 999) {
        const batch: KeyValue[] = [];
        for (let j = i; j < Math.min(count, i + 999); j++) batch.push(kv(`k/${String(j).padStart(6, '0')}`, `v${j}`.repeat(20)));
        yield batch;
      }
    }
    let s = await RocksStorage.open(dir);
    await s.installState(source(), { appliedIndex: 9, membership });
    const digest = await s.stateDigest();
    await s.close();
    s = await RocksStorage.open(dir);
    try {
      assert.equal(s.appliedIndex(), 9);
      assert.equal(await s.stateDigest(), digest);
      for (const j of [0, 16_383, 16_384, 32_768, count - 1]) {
        assert.deepEqual(Buffer.from((await s.get(Buffer.from(`k/${String(j).padStart(6, '0')}`)))!), Buffer.from(`v${j}`.repeat(20)));
      }
      const reader = await s.snapshotState();
      let seen = 0;
      for await (const batch of reader.batches()) seen += batch.length;
      assert.equal(seen, count);
    } finally {
      await s.close();
    }
  });

  it('writes batches in order: a key a source repeats in a later batch keeps its last value', async () => {
    async function* source(): AsyncGenerator<KeyValue[]> {
      yield [kv('dup', 'first')];
      for (let b = 0; b < 3; b++) {
        const batch: KeyValue[] = [];
        for (let j = 0; j < 10_000; j++) batch.push(kv(`f/${b}/${j}`, 'x'));
        yield batch;
      }
      yield [kv('dup', 'last')];
    }
    const s = await RocksStorage.open(dir);
    try {
      await s.installState(source(), { appliedIndex: 3, membership });
      assert.equal(Buffer.from((await s.get(Buffer.from('dup')))!).toString(), 'last');
    } finally {
      await s.close();
    }
  });

  it('keeps every key as given when consecutive keys share a length and some are longer than the reused key buffers', async () => {
    // The install writes prefixed keys into a buffer reused per key length (up to 256 bytes); a longer key gets its own.
    const keys: string[] = [];
    for (let j = 0; j < 3_000; j++) keys.push(`s/${String(j).padStart(5, '0')}`); // one length, back to back
    for (let n = 1; n <= 300; n += 7) keys.push(`m/${'x'.repeat(n)}`); // many lengths, across the 256-byte bound
    keys.push(`z/${'q'.repeat(255)}`, `z/${'r'.repeat(256)}`, `z/${'s'.repeat(400)}`);
    const s = await RocksStorage.open(dir);
    try {
      await s.installState(
        (async function* () {
          for (let i = 0; i < keys.length; i += 500) yield keys.slice(i, i + 500).map((k) => kv(k, `value of ${k}`));
        })(),
        { appliedIndex: 4, membership },
      );
      const read: string[] = [];
      const reader = await s.snapshotState();
      for await (const batch of reader.batches()) {
        for (const r of batch) {
          const key = Buffer.from(r.key).toString();
          read.push(key);
          assert.equal(Buffer.from(r.value).toString(), `value of ${key}`);
        }
      }
      assert.deepEqual(read, [...keys].sort());
    } finally {
      await s.close();
    }
  });

  it('a source failing after several batches leaves the old state whole and no new generation behind', async () => {
    const s = await RocksStorage.open(dir);
    try {
      await s.installState([[kv('old', '1')]], { appliedIndex: 1, membership });
      const before = await s.stateDigest();
      async function* failing(): AsyncGenerator<KeyValue[]> {
        for (let b = 0; b < 4; b++) {
          const batch: KeyValue[] = [];
          for (let j = 0; j < 10_000; j++) batch.push(kv(`n/${b}/${String(j).padStart(5, '0')}`, 'y'.repeat(100)));
          yield batch;
        }
        throw new Error('the archive broke');
      }
      await assert.rejects(s.installState(failing(), { appliedIndex: 2, membership }), /the archive broke/);
      assert.equal(s.appliedIndex(), 1);
      assert.equal(await s.stateDigest(), before);
      assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('state-')), ['state-2']);
    } finally {
      await s.close();
    }
  });

  it('gives the event loop a turn at least every INSTALL_TURN_BYTES of records, however fast its source yields them', async () => {
    // A source with every batch at hand (as a restore's gunzip often has) is pulled in one chain of promises: without the
    // install's own turns, 2 MiB and more went into the write batches before any timer (the node's ticks) could run.
    // Counted by turns of the loop (a setImmediate chain beside the install), not by time.
    const valueBytes = 1000;
    const count = 8_000; // ~8 MB: four 2 MiB write batches
    let turns = 0;
    let bytesSinceTurn = 0;
    let mostBytesInATurn = 0;
    let turnSeen = 0;
    let done = false;
    const turn = (): void => {
      turns++;
      if (!done) setImmediate(turn);
    };
    setImmediate(turn);
    async function* source(): AsyncGenerator<KeyValue[]> {
      for (let i = 0; i < count; i += 100) {
        const batch: KeyValue[] = [];
        for (let j = i; j < i + 100; j++) batch.push({ key: Buffer.from(`t/${String(j).padStart(6, '0')}`), value: Buffer.alloc(valueBytes, j % 251) });
        yield batch;
      }
    }
    async function* watched(): AsyncGenerator<KeyValue[]> {
      for await (const batch of source()) {
        // What the install took of the last batch since the loop last turned (it asks for this one once it put them all).
        if (turns !== turnSeen) {
          turnSeen = turns;
          bytesSinceTurn = 0;
        }
        for (const r of batch) bytesSinceTurn += r.key.length + r.value.length;
        yield batch;
        mostBytesInATurn = Math.max(mostBytesInATurn, bytesSinceTurn);
      }
    }
    const s = await RocksStorage.open(dir);
    try {
      await s.installState(watched(), { appliedIndex: 4, membership });
      done = true;
      assert.equal(s.appliedIndex(), 4);
      const batchBytes = 100 * (valueBytes + 8);
      // A batch handed over whole counts in the turn it was handed over in: the bound is the turn's bytes plus one batch.
      assert.ok(mostBytesInATurn <= INSTALL_TURN_BYTES + batchBytes, `${mostBytesInATurn} bytes of records taken in one turn of the event loop`);
      assert.ok(turns >= Math.floor((count * (valueBytes + 8)) / (INSTALL_TURN_BYTES + batchBytes)), `only ${turns} turns`);
    } finally {
      done = true;
      await s.close();
    }
  });
});

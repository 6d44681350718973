import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { StateFormatError } from '../../../src/snapshot/errors.js';
import { decodeStateRecords, encodeStateRecords, type StateRecord } from '../../../src/snapshot/state-format.js';
import { collect, inBatches, records } from './helpers.js';

async function decodeAll(input: Readable, options = {}): Promise<StateRecord[]> {
  const out: StateRecord[] = [];
  for await (const batch of decodeStateRecords(input, options)) out.push(...batch);
  return out;
}

function rec(key: string, value: Uint8Array | string): StateRecord {
  return { key: Buffer.from(key), value: typeof value === 'string' ? Buffer.from(value) : value };
}

function frame(key: Uint8Array, value: Uint8Array): Buffer {
  const b = Buffer.alloc(8 + key.length + value.length);
  b.writeUInt32BE(key.length, 0);
  b.set(key, 4);
  b.writeUInt32BE(value.length, 4 + key.length);
  b.set(value, 8 + key.length);
  return b;
}

async function decodeError(bytes: Buffer, options = {}): Promise<StateFormatError> {
  try {
    await decodeAll(Readable.from([bytes]), options);
  } catch (err) {
    assert.ok(err instanceof StateFormatError, String(err));
    return err;
  }
  assert.fail('expected a StateFormatError');
}

describe('snapshot state format (state.bin)', () => {
  it('encodes exactly u32be keyLen, key, u32be valueLen, value per record', async () => {
    const enc = encodeStateRecords(inBatches([rec('a', 'xyz'), rec('bc', '')]));
    const bytes = await collect(enc);
    assert.deepEqual(bytes, Buffer.concat([frame(Buffer.from('a'), Buffer.from('xyz')), frame(Buffer.from('bc'), Buffer.alloc(0))]));
    assert.equal(enc.keys, 2);
    assert.equal(enc.bytes, bytes.length);
  });

  it('round-trips records of every size, including 1 MiB values and empty values', async () => {
    const all = [...records(500), rec('big', Buffer.alloc(1024 * 1024, 7)), rec('empty', ''), rec('k'.repeat(4096), 'v')];
    const enc = encodeStateRecords(inBatches(all, 33));
    const decoded = await decodeAll(Readable.from([await collect(enc)]));
    assert.equal(enc.keys, all.length);
    assert.deepEqual(decoded.map((r) => Buffer.from(r.key)), all.map((r) => Buffer.from(r.key)));
    assert.deepEqual(decoded.map((r) => Buffer.from(r.value)), all.map((r) => Buffer.from(r.value)));
  });

  it('reassembles records split across chunks at every byte boundary', async () => {
    const all = [rec('alpha', 'one'), rec('b', ''), rec('gamma', Buffer.alloc(40, 9))];
    const bytes = await collect(encodeStateRecords(inBatches(all)));
    const oneByteChunks = Readable.from([...bytes].map((b) => Buffer.from([b])));
    const decoded = await decodeAll(oneByteChunks);
    assert.deepEqual(decoded.map((r) => Buffer.from(r.value)), all.map((r) => Buffer.from(r.value)));
    for (let cut = 1; cut < bytes.length; cut++) {
      const got = await decodeAll(Readable.from([bytes.subarray(0, cut), bytes.subarray(cut)]));
      assert.equal(got.length, 3, `cut at ${cut}`);
    }
  });

  it('yields bounded batches and copies keys and values (no pinning of input chunks)', async () => {
    const all = records(10_000);
    const bytes = await collect(encodeStateRecords(inBatches(all, 5000)));
    const input = Buffer.from(bytes);
    let batches = 0;
    let first: StateRecord | undefined;
    for await (const batch of decodeStateRecords(Readable.from([input]), { batchKeysMax: 1000 })) {
      assert.ok(batch.length <= 1000);
      first ??= batch[0];
      batches += 1;
    }
    assert.ok(batches >= 10);
    input.fill(0);
    assert.equal(Buffer.from(first!.key).toString(), 'key-1-000000');
  });

  it('with views, yields the same records as views of the input where a field lies in one chunk, copies where it is split', async () => {
    const all = [...records(300), rec('big', Buffer.alloc(100_000, 5)), rec('empty', '')];
    const bytes = await collect(encodeStateRecords(inBatches(all, 50)));
    const cut = Math.floor(bytes.length / 3);
    const chunks = [Buffer.from(bytes.subarray(0, cut)), Buffer.from(bytes.subarray(cut, 2 * cut)), Buffer.from(bytes.subarray(2 * cut))];
    const decoded = await decodeAll(Readable.from(chunks), { views: true });
    assert.deepEqual(decoded.map((r) => Buffer.from(r.key)), all.map((r) => Buffer.from(r.key)));
    assert.deepEqual(decoded.map((r) => Buffer.from(r.value)), all.map((r) => Buffer.from(r.value)));
    const inChunk = (u: Uint8Array): boolean => chunks.some((c) => c.buffer === u.buffer && u.byteOffset >= c.byteOffset && u.byteOffset + u.length <= c.byteOffset + c.length);
    const first = decoded[0]!;
    assert.ok(inChunk(first.key) && inChunk(first.value), 'a record inside one chunk is a view of it');
    const viewed = decoded.filter((r) => inChunk(r.value)).length;
    assert.ok(viewed >= decoded.length - 3, `all but the records split by the 2 cuts are views (${viewed} of ${decoded.length})`);
    // without views nothing points into the input
    const copied = await decodeAll(Readable.from(chunks));
    assert.equal(copied.filter((r) => inChunk(r.key) || inChunk(r.value)).length, 0);
  });

  it('refuses a truncated stream, naming the record offset', async () => {
    const bytes = await collect(encodeStateRecords(inBatches([rec('a', 'xyz'), rec('b', 'hello')])));
    for (const cut of [bytes.length - 1, 12 + 2, 12 + 4 + 1]) {
      const err = await decodeError(bytes.subarray(0, cut));
      assert.equal(err.code, 'truncated');
      assert.equal(err.offset, 12);
      assert.match(err.message, /ends inside a record/);
    }
  });

  it('refuses oversize lengths before buffering them, and empty keys', async () => {
    const hugeKey = Buffer.alloc(4);
    hugeKey.writeUInt32BE(0xffffffff);
    assert.equal((await decodeError(hugeKey)).code, 'key-too-large');
    const bigValue = Buffer.concat([frame(Buffer.from('k'), Buffer.alloc(0)).subarray(0, 5), Buffer.from([0x00, 0x10, 0x00, 0x01])]);
    assert.equal((await decodeError(bigValue)).code, 'value-too-large');
    assert.equal((await decodeError(frame(Buffer.from('k'), Buffer.alloc(11)), { valueBytesMax: 10 })).code, 'value-too-large');
    assert.equal((await decodeError(frame(Buffer.alloc(0), Buffer.from('v')))).code, 'empty-key');
  });

  it('refuses to encode what the decoder would refuse', async () => {
    for (const [r, code] of [
      [rec('', 'v'), 'empty-key'],
      [rec('k'.repeat(4097), 'v'), 'key-too-large'],
      [rec('k', Buffer.alloc(1024 * 1024 + 1)), 'value-too-large'],
    ] as const) {
      await assert.rejects(collect(encodeStateRecords(inBatches([r]))), (err: unknown) => err instanceof StateFormatError && err.code === code);
    }
  });

  it('pulls the source only as fast as the reader reads (backpressure)', async () => {
    let pulled = 0;
    async function* source(): AsyncGenerator<StateRecord[]> {
      for (let i = 0; i < 10_000; i++) {
        pulled += 1;
        yield [rec(`k${i}`, Buffer.alloc(1024))];
      }
    }
    const enc = encodeStateRecords(source());
    enc.read(0);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(pulled < 600, `pulled ${pulled} batches with nobody reading`);
    const bytes = await collect(enc);
    assert.equal(pulled, 10_000);
    assert.equal(enc.keys, 10_000);
    assert.equal(bytes.length, enc.bytes);
  });

  it('closes the source when the stream is destroyed', async () => {
    let closed = false;
    async function* source(): AsyncGenerator<StateRecord[]> {
      try {
        for (;;) yield [rec('k', Buffer.alloc(1024))];
      } finally {
        closed = true;
      }
    }
    const enc = encodeStateRecords(source());
    for await (const _chunk of enc) break;
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(closed);
  });
});

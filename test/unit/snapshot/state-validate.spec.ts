/**
 * checkedStateRecords and the archives it refuses: every record of state.bin
 * decoded and checked (issue 14, item 2) while it streams.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { inspectArchive, readArchive } from '../../../src/snapshot/archive.js';
import { StateFormatError } from '../../../src/snapshot/errors.js';
import { checkedStateRecords, encodeStateRecords, scanStateRecords, validateStateRecords, type StateDeclared } from '../../../src/snapshot/state-format.js';
import { SnapshotStore } from '../../../src/snapshot/store.js';
import { collect, inBatches, poisonedArchives, records, tempDir } from './helpers.js';

describe('state validation (checkedStateRecords)', function () {
  this.timeout(30_000);

  it('passes a real state, yielding every record, and counts and sizes it as declared', async () => {
    const all = records(500);
    const bytes = await collect(encodeStateRecords(inBatches(all)));
    let n = 0;
    for await (const batch of checkedStateRecords(Readable.from([bytes]), { stateKeys: 500, stateBytes: bytes.length })) n += batch.length;
    assert.equal(n, 500);
    await assert.rejects(validateStateRecords(Readable.from([bytes]), { stateKeys: 500, stateBytes: bytes.length + 1 }), (e: unknown) => e instanceof StateFormatError && e.code === 'count-mismatch');
  });

  it('checks while it streams: a bad record fails before the rest of the input is read', async () => {
    const v = Buffer.from('v');
    const rec = (k: string): Buffer => Buffer.concat([Buffer.from([0, 0, 0, k.length]), Buffer.from(k), Buffer.from([0, 0, 0, 1]), v]);
    let pulled = 0;
    async function* input(): AsyncGenerator<Buffer> {
      yield Buffer.concat([rec('b'), rec('a')]);
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield rec(`z${i}`);
      }
    }
    await assert.rejects(validateStateRecords(input(), { stateKeys: 1002, stateBytes: 1_000_000 }), (e: unknown) => e instanceof StateFormatError && e.code === 'key-order');
    assert.ok(pulled <= 1, `pulled ${pulled} more chunks after the bad record`);
  });

  it('validates in place: no key or value is copied, the last key compared is a view of the input (issue 15: the leader\'s upload check)', async () => {
    // The contract of views (DecodeStateOptions.views): the input never reuses a chunk's memory. A chunk
    // changed after it was handed over therefore shows in the key kept for the order check, which a copy would hide.
    const rec = (k: string): Buffer => Buffer.concat([Buffer.from([0, 0, 0, k.length]), Buffer.from(k), Buffer.from([0, 0, 0, 2]), Buffer.from('vv')]);
    const first = Buffer.concat([rec('k1'), rec('k5')]);
    const second = rec('k7');
    const declared = { stateKeys: 3, stateBytes: first.length + second.length };
    // Unchanged, the state is valid.
    assert.equal(await validateStateRecords(Readable.from([Buffer.from(first), Buffer.from(second)]), declared), 3);
    async function* changedAfterUse(): AsyncGenerator<Buffer> {
      const chunk = Buffer.from(first);
      yield chunk;
      chunk.write('k9', chunk.length - 2 - 4 - 2); // the last key, k5 -> k9, once its chunk was checked
      yield Buffer.from(second);
    }
    await assert.rejects(
      validateStateRecords(changedAfterUse(), declared),
      (e: unknown) => e instanceof StateFormatError && e.code === 'key-order' && /"k7" comes after "k9"/.test(e.message),
    );
  });

  it('refuses every poisoned archive (valid hashes) with a clear message: inspectArchive, and an import that validates', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const store = await SnapshotStore.open(join(dir, 'store'), { retain: 2 });
      for (const p of await poisonedArchives()) {
        // Every hash is right: readArchive alone (no state check) accepts it.
        await readArchive(Readable.from([p.archive]), async () => undefined);
        const file = join(dir, 'a.tar.gz');
        await writeFile(file, p.archive);
        const report = await inspectArchive(file);
        assert.equal(report.ok, false, p.name);
        assert.match(report.problems.join('\n'), p.message, p.name);
        await assert.rejects(
          store.importArchive(Readable.from([p.archive]), {
            maxBytes: 1e9,
            consumeState: async (meta, state) => {
              await validateStateRecords(state, meta);
            },
          }),
          (e: unknown) => e instanceof StateFormatError && p.message.test(e.message),
          p.name,
        );
        assert.deepEqual(await store.list(), [], `${p.name}: nothing kept`);
      }
    } finally {
      await cleanup();
    }
  });

  it('scanStateRecords (no records decoded) decides every state as checkedStateRecords does: the same count, or the same error, however the bytes are cut', async () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const u32 = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    };
    const limits = { keyBytesMax: 24, valueBytesMax: 40 };
    /** outcome: `ok <keys>` or `<code> <message>`. */
    const viaChecked = async (chunks: Buffer[], declared: StateDeclared): Promise<string> => {
      try {
        let n = 0;
        for await (const batch of checkedStateRecords(Readable.from(chunks), declared, { ...limits, views: true, batchKeysMax: 1_000, batchBytesMax: 1 << 20 })) n += batch.length;
        return `ok ${n}`;
      } catch (e) {
        assert.ok(e instanceof StateFormatError, String(e));
        return `${e.code} ${e.message}`;
      }
    };
    const viaScan = async (chunks: Buffer[], declared: StateDeclared): Promise<string> => {
      try {
        return `ok ${(await scanStateRecords(Readable.from(chunks), declared, limits)).keys}`;
      } catch (e) {
        assert.ok(e instanceof StateFormatError, String(e));
        return `${e.code} ${e.message}`;
      }
    };
    const faults = ['none', 'swap', 'duplicate', 'truncate', 'empty-key', 'long-key', 'long-value', 'keys+1', 'keys-1', 'bytes+1'] as const;
    const seen = new Set<string>();
    for (let round = 0; round < 200; round++) {
      const count = 2 + rand(30);
      const keys = new Set<string>();
      for (let i = 0; keys.size < count && i < 10 * count; i++) keys.add(Array.from({ length: 1 + rand(12) }, () => String.fromCharCode(97 + rand(4))).join(''));
      assert.equal(keys.size, count);
      const recs = [...keys].sort().map((k) => ({ key: Buffer.from(k), value: Buffer.alloc(rand(3) === 0 ? 0 : rand(30), 'v') }));
      const fault = faults[round % faults.length] as (typeof faults)[number];
      const at = rand(count - 1);
      let parts = recs.map((r) => [u32(r.key.length), r.key, u32(r.value.length), r.value]);
      if (fault === 'swap') parts = [...parts.slice(0, at), parts[at + 1]!, parts[at]!, ...parts.slice(at + 2)];
      if (fault === 'duplicate') parts = [...parts.slice(0, at + 1), parts[at]!, ...parts.slice(at + 1)];
      if (fault === 'empty-key') parts[at] = [u32(0), u32(3), Buffer.from('abc')];
      if (fault === 'long-key') parts[at]![0] = u32(25);
      if (fault === 'long-value') parts[at]![2] = u32(41);
      let bytes = Buffer.concat(parts.flat());
      const declared = { stateKeys: recs.length, stateBytes: bytes.length };
      if (fault === 'truncate') bytes = bytes.subarray(0, 1 + rand(bytes.length - 1));
      if (fault === 'keys+1') declared.stateKeys++;
      if (fault === 'keys-1') declared.stateKeys--;
      if (fault === 'bytes+1') declared.stateBytes++;
      // The same bytes cut at random places, sometimes a byte at a time.
      const chunks: Buffer[] = [];
      for (let pos = 0; pos < bytes.length; ) {
        const n = rand(4) === 0 ? 1 : 1 + rand(60);
        chunks.push(Buffer.from(bytes.subarray(pos, pos + n)));
        pos += n;
      }
      const want = await viaChecked(chunks, declared);
      assert.equal(await viaScan(chunks, declared), want, `round ${round}, ${fault}`);
      seen.add(`${fault}: ${want.split(' ')[0]}`);
    }
    // Every fault was met, and each refused with its own code.
    for (const [fault, code] of [
      ['none', 'ok'],
      ['swap', 'key-order'],
      ['duplicate', 'key-order'],
      ['truncate', 'truncated'],
      ['empty-key', 'empty-key'],
      ['long-key', 'key-too-large'],
      ['long-value', 'value-too-large'],
      ['keys+1', 'count-mismatch'],
      ['keys-1', 'count-mismatch'],
      ['bytes+1', 'count-mismatch'],
    ]) {
      assert.ok(seen.has(`${fault}: ${code}`), `${fault} never refused with ${code}: ${[...seen].join(', ')}`);
    }
  });
});

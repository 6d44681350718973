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
import { checkedStateRecords, encodeStateRecords, validateStateRecords } from '../../../src/snapshot/state-format.js';
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
});

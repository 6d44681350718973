/**
 * writeFillArchive: a node's snapshot archive of `keys` keys `fill/%08d`,
 * key j holding valueOf(j), written to <dir>/state.tar.gz (0600) through the
 * real archive writer (its spool at <dir>/state.spool), for benches that
 * restore a state of a known size (bench/hash-state.ts, bench/second-save.ts).
 * Records are made 1,000 at a time, so the state is never whole in memory.
 * Resolves with the archive's path.
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';

import { writeArchiveFromRecords } from '../../src/snapshot/archive.js';
import type { StateRecord } from '../../src/snapshot/state-format.js';

/** FILL_BATCH_RECORDS: the records handed to the archive writer at once. */
const FILL_BATCH_RECORDS = 1_000;

export async function writeFillArchive(dir: string, keys: number, valueOf: (j: number) => Buffer): Promise<string> {
  if (!Number.isSafeInteger(keys) || keys < 0) throw new Error(`keys: ${keys} is not a whole number >= 0`);
  async function* batches(): AsyncGenerator<StateRecord[]> {
    for (let i = 0; i < keys; i += FILL_BATCH_RECORDS) {
      const batch: StateRecord[] = [];
      for (let j = i; j < Math.min(keys, i + FILL_BATCH_RECORDS); j++) batch.push({ key: Buffer.from(`fill/${String(j).padStart(8, '0')}`), value: valueOf(j) });
      yield batch;
    }
  }
  const path = join(dir, 'state.tar.gz');
  const out = createWriteStream(path, { mode: 0o600 });
  const meta = { id: 'bench', index: 1, term: 1, membership: { voters: ['b1'], learners: [], addresses: { b1: '127.0.0.1:1' } }, createdAt: new Date().toISOString(), snapcoordVersion: 'bench' };
  const done = once(out, 'close');
  await writeArchiveFromRecords(meta, { records: batches(), spoolPath: join(dir, 'state.spool') }, out);
  await done;
  return path;
}

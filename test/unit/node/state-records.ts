import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

import { decodeStateRecords, readArchive, type StateRecord } from '../../../src/snapshot/index.js';
import type { RocksStorage } from '../../../src/storage/rocks-storage.js';

/** hexRecords: records as comparable strings (key=value in hex). */
export function hexRecords(records: readonly StateRecord[]): string[] {
  return records.map((r) => `${Buffer.from(r.key).toString('hex')}=${Buffer.from(r.value).toString('hex')}`);
}

/** archiveRecords: the records of an archive read whole (readArchive: every rule and hash), as hexRecords. */
export async function archiveRecords(source: Readable): Promise<string[]> {
  const records: StateRecord[] = [];
  await readArchive(source, async (_meta, state) => {
    for await (const batch of decodeStateRecords(state)) records.push(...batch);
  });
  return hexRecords(records);
}

/** stateRecords: the whole state of a storage, reserved records included (what a full snapshot build reads), as hexRecords. */
export async function stateRecords(storage: RocksStorage): Promise<string[]> {
  const reader = await storage.snapshotState();
  const records: StateRecord[] = [];
  for await (const batch of reader.batches()) records.push(...batch);
  return hexRecords(records);
}

/**
 * framedRecordsDigest: a restore entry's records digest written out on its own (restore-digest.ts defines it):
 * SHA-256 of u32be key length, key, u32be value length, value, for each of `records` in the order given.
 */
export function framedRecordsDigest(records: readonly StateRecord[]): string {
  const h = createHash('sha256');
  const len = Buffer.alloc(4);
  for (const { key, value } of records) {
    len.writeUInt32BE(key.length);
    h.update(len).update(key);
    len.writeUInt32BE(value.length);
    h.update(len).update(value);
  }
  return h.digest('hex');
}

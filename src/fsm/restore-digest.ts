/**
 * A restore entry's records digest (issue 15, the trust boundary): what lets
 * a node check that the state it installs for a restore entry is the state
 * of the archive the entry names, whoever built it.
 *
 * Definition (RestoreCommand.recordsDigest): the lowercase hex SHA-256 of the
 * archive's carried records (sessions.ts isCarriedKey: every key outside the
 * reserved prefix, and the key revisions; not the archive's client sessions
 * or ops records, which a restore drops for this cluster's own) in bytewise
 * key order (state.bin's order, which the upload check enforces: strictly
 * increasing keys), each framed as in state.bin (RecordsDigest,
 * src/hash/records-digest.ts):
 *
 *   u32be key length, key bytes, u32be value length, value bytes
 *
 * and nothing else: no count, no applied index, no membership (checked apart).
 * A state installed for the entry holds exactly these records among its own
 * (its session records are reserved and not carried), so the digest of the
 * carried records of that state, in key order, is the same.
 *
 * Who computes it:
 * - the leader, as it checks an upload (SnapshotManager.importUpload: the
 *   same scan of state.bin that checks every record), into the entry;
 * - every node installing the entry from the archive (StateMachine.installState
 *   with StateInstallMeta.recordsDigest, over the records it installs, before
 *   anything becomes live): a mismatch is RestoreDigestError, a content error
 *   (the entry contradicts its own archive: skipped the same way on every node);
 * - a follower importing the leader's state image (StateMachine.importImage:
 *   the store scans the imported generation before its commit,
 *   verifyImageRecords): a mismatch refuses the image (StorageError `corrupt`),
 *   and the follower installs from the archive instead.
 * An entry without the field (written before it existed) is applied unchecked.
 */
import { RecordsDigest } from '../hash/records-digest.js';
import { StorageError } from '../storage/storage-error.js';
import type { KeyValue } from '../storage/types.js';
import { isCarriedKey } from './sessions.js';

/** RestoreDigestError: the records installed for a restore entry are not the ones its records digest names. */
export class RestoreDigestError extends Error {
  override readonly name = 'RestoreDigestError';
}

/** isCarriedKeyAt: isCarriedKey for the key at buf[start, end) (a scanner's: no view made unless it is reserved). */
export function isCarriedKeyAt(buf: Buffer, start: number, end: number): boolean {
  return buf[start] !== 0 || isCarriedKey(buf.subarray(start, end));
}

/**
 * CarriedRecordsDigest: a RecordsDigest of the carried records among those
 * given (`add`, in key order); `records` counts them.
 */
export class CarriedRecordsDigest {
  readonly #digest = new RecordsDigest();

  get records(): number {
    return this.#digest.records;
  }

  add(kv: KeyValue): void {
    if (kv.key[0] !== 0 || isCarriedKey(kv.key)) this.#digest.add(kv.key, kv.value);
  }

  addAll(batch: readonly KeyValue[]): void {
    for (const kv of batch) this.add(kv);
  }

  hex(): string {
    return this.#digest.hex();
  }
}

/**
 * checkInstalledRecords (an install for a restore entry, once the whole source
 * is read): RestoreDigestError unless `digest` is `expected`.
 */
export function checkInstalledRecords(digest: CarriedRecordsDigest, expected: string): void {
  const got = digest.hex();
  if (got === expected) return;
  throw new RestoreDigestError(
    `the archive's ${digest.records} records (the carried ones: data and key revisions) have records digest ${got}, but the restore entry names ${expected}: ` +
      'the entry does not describe its own archive',
  );
}

/**
 * verifyImageRecords returns the check an image import runs on the imported
 * state's records (StateStore.importStateImage's verifyRecords: every record
 * of the new generation, in key order, before its commit): StorageError
 * `corrupt` naming `path` and both digests unless the carried records digest
 * to `expected`.
 */
export function verifyImageRecords(expected: string): (records: AsyncIterable<readonly KeyValue[]>, path: string) => Promise<void> {
  return async (records, path) => {
    const digest = new CarriedRecordsDigest();
    for await (const batch of records) digest.addAll(batch);
    const got = digest.hex();
    if (got !== expected) {
      throw new StorageError(
        'corrupt',
        `state image for ${path}: its ${digest.records} carried records have records digest ${got}, but the restore entry names ${expected} (the image is not the state of the entry's archive)`,
        { path },
      );
    }
  };
}

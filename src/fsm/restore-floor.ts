/**
 * The restore floor record: the index of the last restore entry the state
 * machine applied (its archive installed, or its content refused: either way
 * a member that has not applied it yet needs that archive). It is replicated
 * state like the session and key revision records: written by the apply of
 * the restore entry itself (in the install's atomic commit, or in the no-op
 * write of a refused one), so every replica at applied index X holds the same
 * value, and it travels in snapshots, state images and installs as an
 * ordinary record under the reserved prefix (never returned by get or range):
 *
 *   key   = "\x00snapcoord/restore/last"
 *   value = format:u8 (1) index:u64be
 *
 * The leader's membership changes wait until a quorum of the voters after a
 * change applied it (Node.changeMembership, RaftNode.proposeConfChange's
 * appliedFloor); unlike the restore entries in the log (RestoreRefs), it
 * survives a restart and a compaction past the entry. A state written by a
 * build before the record has none: 0 (nothing known). A restore of an
 * archive does not take the archive's record (its cluster's, not this one's):
 * the install drops it with the archive's other non-carried reserved records
 * and records its own entry's index.
 */
import { StorageError } from '../storage/storage-error.js';
import type { KeyValue } from '../storage/types.js';
import { readU64At, writeU64At } from './u64.js';

/** RESTORE_FLOOR_KEY: the reserved key of the record ("\x00snapcoord/restore/last"). */
export const RESTORE_FLOOR_KEY: Uint8Array = Uint8Array.from(Buffer.from('\x00snapcoord/restore/last', 'latin1'));
const FORMAT = 1;
const VALUE_BYTES = 9;

/** isRestoreFloorKey is true for the record's key. */
export function isRestoreFloorKey(key: Uint8Array): boolean {
  return Buffer.compare(key, RESTORE_FLOOR_KEY) === 0;
}

/** restoreFloorRecord: the record saying the last restore entry applied is at `index`. */
export function restoreFloorRecord(index: number): KeyValue {
  const value = new Uint8Array(VALUE_BYTES);
  value[0] = FORMAT;
  writeU64At(value, 1, index);
  return { key: RESTORE_FLOOR_KEY, value };
}

/**
 * decodeRestoreFloor: the index a record's value names; 0 for none
 * (undefined). Errors: StorageError `unknownFormat` for a value of another
 * format or length (a later build's, or damage past its checksum), naming
 * `path`: never taken for 0 (Node.changeMembership takes an index at or above it,
 * the state's applied index, and logs a warning).
 */
export function decodeRestoreFloor(value: Uint8Array | undefined, path: string): number {
  if (value === undefined) return 0;
  if (value.length !== VALUE_BYTES || value[0] !== FORMAT) {
    throw new StorageError('unknownFormat', `restore floor record of ${path}: ${value.length} bytes of format ${value[0] ?? 'none'}; this build reads ${VALUE_BYTES} bytes of format ${FORMAT}`, { path });
  }
  const index = readU64At(value, 1);
  if (!Number.isSafeInteger(index)) throw new StorageError('unknownFormat', `restore floor record of ${path}: index past 2^53`, { path });
  return index;
}

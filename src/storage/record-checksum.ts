import { crc32 } from 'node:zlib';

import { StorageError } from './storage-error.js';

/*
 * Every record RocksStorage keeps (a state record, a log entry) ends with a
 * CRC-32 of its stored key and value, checked whenever it is read back.
 *
 * Why: the `rocksdb` 5.2.1 binding opens every iterator with
 * `verify_checksums = false` (binding.cc) and the database with
 * `paranoid_checks = false`, and has no option to change either. Only
 * get/getMany verify RocksDB's block checksums. A range read, a full
 * snapshot and the log's load at boot all iterate, and a flipped byte in an
 * SST's data block was returned as data in 3 of 5 single-byte flips tried (the
 * others failed Snappy). A full snapshot would then carry the damaged record,
 * hashed as good, to every member; a damaged log entry would be applied and
 * replicated. With the trailer a damaged record is refused (StorageError
 * `corrupt`) wherever it is read, key bytes included.
 */

/** RECORD_TRAILER_BYTES: the CRC-32 (big-endian) after every stored value. */
export const RECORD_TRAILER_BYTES = 4;

/** recordCrc: the CRC-32 of the stored key, then the value's first `valueBytes` bytes. */
function recordCrc(storedKey: Uint8Array, value: Uint8Array, valueBytes: number): number {
  const head = crc32(storedKey);
  // Node 20's zlib.crc32 returns 0, not the running value, for an empty view of an empty ArrayBuffer (what
  // TextEncoder gives for ''): an empty value adds nothing.
  if (valueBytes === 0) return head;
  return crc32(valueBytes === value.length ? value : value.subarray(0, valueBytes), head);
}

/** RECORD_SCRATCH_BYTES_MAX: the largest sealed record RecordSealer builds in its reused buffer (larger ones get their own). */
const RECORD_SCRATCH_BYTES_MAX = 1024 * 1024;

/**
 * RecordSealer gives a value with its trailer, in a buffer it reuses: the
 * result is valid until the next seal(), so only for a callee that copies it
 * at once (the native write batches do).
 */
export class RecordSealer {
  #buf = Buffer.alloc(1024);

  /** seal: `value` then the CRC-32 of `storedKey` and `value`. */
  seal(storedKey: Uint8Array, value: Uint8Array): Buffer {
    const n = value.length + RECORD_TRAILER_BYTES;
    let out = this.#buf;
    if (n > out.length) {
      if (n > RECORD_SCRATCH_BYTES_MAX) out = Buffer.allocUnsafe(n);
      else this.#buf = out = Buffer.alloc(Math.max(n, out.length * 2));
    }
    out.set(value, 0);
    out.writeUInt32BE(recordCrc(storedKey, value, value.length), value.length);
    return out.subarray(0, n);
  }
}

/** sealRecord: `value` then its trailer, in a new Buffer. */
export function sealRecord(storedKey: Uint8Array, value: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(value.length + RECORD_TRAILER_BYTES);
  out.set(value, 0);
  out.writeUInt32BE(recordCrc(storedKey, value, value.length), value.length);
  return out;
}

/**
 * openRecord checks a stored record's trailer and returns its value (a view
 * of `stored`, no copy). Throws StorageError `corrupt` naming `path` and
 * `what` (e.g. "log entry 12") when the record is too short for a trailer or
 * its CRC-32 does not match its key and value.
 */
export function openRecord(storedKey: Uint8Array, stored: Buffer, path: string, what: () => string): Buffer {
  const n = stored.length - RECORD_TRAILER_BYTES;
  if (n < 0 || stored.readUInt32BE(n) !== recordCrc(storedKey, stored, n)) {
    throw new StorageError(
      'corrupt',
      `${path}: ${what()} fails its checksum (the stored bytes were damaged on disk): this data dir cannot be trusted; ` +
        'replace it (remove it and let the node rejoin: its data is on the other members)',
      { path },
    );
  }
  return stored.subarray(0, n);
}

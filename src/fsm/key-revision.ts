/**
 * Key revisions (etcd's create_revision, mod_revision and version): what the
 * state machine records beside each key so a transaction can compare on them.
 * They are replicated state, written in the same atomic batch as the key by
 * the apply path (apply-plan.ts), and travel in snapshots as ordinary records
 * under a reserved key (never returned by get or range):
 *
 *   key   = "\x00snapcoord/rev/k" + key                 when the key has at most REVISION_INLINE_KEY_BYTES_MAX bytes
 *         = "\x00snapcoord/rev/h" + SHA-256(key)        otherwise (the record key stays within the 4 KiB key cap)
 *   value = format:u8 (1) createRevision:u64be modRevision:u64be version:u64be
 *
 * A revision is the log index of the entry that wrote the key. A key that has
 * a value but no (or a malformed) revision record was written before
 * revisions were recorded: it reads as LEGACY_REVISION, and its next put
 * starts it afresh (version 1, created at that put), as a put goes on from
 * the revision record alone (the apply path reads no value for a plain put).
 */
import { createHash } from 'node:crypto';
import { readU64At, writeU64At } from './u64.js';

/** REVISION_KEY_PREFIX: the reserved prefix of every key revision record ("\x00snapcoord/rev/"). */
export const REVISION_KEY_PREFIX: Uint8Array = Uint8Array.from(Buffer.from('\x00snapcoord/rev/', 'latin1'));
const INLINE_PREFIX = Uint8Array.from(Buffer.from('\x00snapcoord/rev/k', 'latin1'));
const HASHED_PREFIX = Uint8Array.from(Buffer.from('\x00snapcoord/rev/h', 'latin1'));
/** REVISION_INLINE_KEY_BYTES_MAX: the longest key whose record key holds it verbatim. */
export const REVISION_INLINE_KEY_BYTES_MAX = 4096 - INLINE_PREFIX.length;
const FORMAT = 1;
const VALUE_BYTES = 25;

/** KeyRevision: the log index that created the key (after its last delete), the one that last wrote it, and its puts since creation. */
export interface KeyRevision {
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
}

/** LEGACY_REVISION: what a key written before revisions were recorded reads as. */
export const LEGACY_REVISION: KeyRevision = { createRevision: 0, modRevision: 0, version: 1 };

/** isRevisionKey is true for a key under REVISION_KEY_PREFIX. */
export function isRevisionKey(key: Uint8Array): boolean {
  if (key.length < REVISION_KEY_PREFIX.length) return false;
  for (let i = 0; i < REVISION_KEY_PREFIX.length; i++) if (key[i] !== REVISION_KEY_PREFIX[i]) return false;
  return true;
}

/** revisionKey: the reserved record key holding `key`'s revision. */
export function revisionKey(key: Uint8Array): Uint8Array {
  if (key.length <= REVISION_INLINE_KEY_BYTES_MAX) {
    const out = new Uint8Array(INLINE_PREFIX.length + key.length);
    out.set(INLINE_PREFIX, 0);
    out.set(key, INLINE_PREFIX.length);
    return out;
  }
  const digest = createHash('sha256').update(key).digest();
  const out = new Uint8Array(HASHED_PREFIX.length + digest.length);
  out.set(HASHED_PREFIX, 0);
  out.set(digest, HASHED_PREFIX.length);
  return out;
}

/** encodeKeyRevision: the value of a revision record. */
export function encodeKeyRevision(rev: KeyRevision): Uint8Array {
  const out = new Uint8Array(VALUE_BYTES);
  out[0] = FORMAT;
  writeU64At(out, 1, rev.createRevision);
  writeU64At(out, 9, rev.modRevision);
  writeU64At(out, 17, rev.version);
  return out;
}

/** decodeKeyRevision parses a revision record's value; undefined when it is absent or malformed (read as LEGACY_REVISION by the caller). */
export function decodeKeyRevision(value: Uint8Array | undefined): KeyRevision | undefined {
  if (value === undefined || value.length !== VALUE_BYTES || value[0] !== FORMAT) return undefined;
  const rev = { createRevision: readU64At(value, 1), modRevision: readU64At(value, 9), version: readU64At(value, 17) };
  if (!Number.isSafeInteger(rev.createRevision) || !Number.isSafeInteger(rev.modRevision) || !Number.isSafeInteger(rev.version)) {
    return undefined;
  }
  return rev;
}

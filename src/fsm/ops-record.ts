/**
 * An ops record is a small piece of the cluster's own operating state (today:
 * when the snapshot schedule last ran, so a new leader knows) replicated
 * through the log like any entry, but kept under the reserved key prefix
 * ("\x00snapcoord/ops/<name>"): get and range never return it, clients can
 * neither write nor read it, and it travels in snapshots with the data.
 *
 * Wire format (integers big-endian): 0x4F nameLen:u8 name valueLen:u32 value.
 * The first byte ('O') is one no KV command (0x01..0x08) or restore entry
 * ('R') starts with. Only the server encodes it; the client APIs have no
 * way to.
 */
import { RESERVED_KEY_PREFIX } from './sessions.js';

export const OPS_RECORD_MAGIC = 0x4f;
/** OPS_RECORD_VALUE_BYTES_MAX: the largest ops record value (64 KiB): bookkeeping, not data. */
export const OPS_RECORD_VALUE_BYTES_MAX = 64 * 1024;
/** OPS_RECORD_NAME: what a record's name may be: ASCII letters, digits and `._/-`, 1..128 characters, a letter or digit first. */
export const OPS_RECORD_NAME = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$/;

const OPS_PREFIX = Buffer.concat([RESERVED_KEY_PREFIX, Buffer.from('ops/', 'latin1')]);

/** OpsRecordError: a name or value outside the limits above (a caller's bug: the server encodes every record). */
export class OpsRecordError extends Error {
  override readonly name = 'OpsRecordError';
}

/** opsRecordKey: the reserved state key that holds the record `name`. OpsRecordError for a bad name. */
export function opsRecordKey(name: string): Uint8Array {
  checkName(name);
  return Buffer.concat([OPS_PREFIX, Buffer.from(name, 'latin1')]);
}

/** encodeOpsRecord: the entry data that sets record `name` to `value`. OpsRecordError for a bad name or a too large value. */
export function encodeOpsRecord(name: string, value: Uint8Array): Uint8Array {
  checkName(name);
  if (value.length > OPS_RECORD_VALUE_BYTES_MAX) {
    throw new OpsRecordError(`ops record ${name}: value of ${value.length} bytes, more than ${OPS_RECORD_VALUE_BYTES_MAX}`);
  }
  const out = Buffer.alloc(2 + name.length + 4 + value.length);
  out[0] = OPS_RECORD_MAGIC;
  out[1] = name.length;
  out.write(name, 2, 'latin1');
  out.writeUInt32BE(value.length, 2 + name.length);
  out.set(value, 6 + name.length);
  return out;
}

/** isOpsRecord: whether entry data is an ops record (well-formed or not: decodeOpsRecord tells). */
export function isOpsRecord(data: Uint8Array): boolean {
  return data.length > 0 && data[0] === OPS_RECORD_MAGIC;
}

/** decodeOpsRecord parses an ops record; null when malformed (then applied as a failed no-op, alike on every node). */
export function decodeOpsRecord(data: Uint8Array): { readonly name: string; readonly key: Uint8Array; readonly value: Uint8Array } | null {
  if (!isOpsRecord(data) || data.length < 2) return null;
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const nameLen = b[1] as number;
  if (b.length < 6 + nameLen) return null;
  const name = b.toString('latin1', 2, 2 + nameLen);
  if (!OPS_RECORD_NAME.test(name)) return null;
  const valueLen = b.readUInt32BE(2 + nameLen);
  if (valueLen > OPS_RECORD_VALUE_BYTES_MAX || b.length !== 6 + nameLen + valueLen) return null;
  return { name, key: opsRecordKey(name), value: b.subarray(6 + nameLen) };
}

function checkName(name: string): void {
  if (!OPS_RECORD_NAME.test(name)) {
    throw new OpsRecordError(`ops record name ${JSON.stringify(name)}: expected ${OPS_RECORD_NAME.source}`);
  }
}

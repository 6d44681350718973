import { StorageError } from './storage-error.js';
import { RANGE_BYTES_MAX, RANGE_LIMIT_MAX, type RangeQuery } from './types.js';

/** KeyRange is a RangeQuery resolved to bytewise bounds: keys >= gte and < lt (each absent = unbounded). */
export interface KeyRange {
  readonly gte: Uint8Array | undefined;
  readonly lt: Uint8Array | undefined;
  /** the limit, capped at RANGE_LIMIT_MAX. */
  readonly limit: number;
  /** the bytes of keys and values past the first pair, capped at RANGE_BYTES_MAX (see RangeQuery). */
  readonly bytesMax: number;
  /** true when no key can match (e.g. start >= end). */
  readonly empty: boolean;
}

/**
 * rangeIsFull tells whether a range page holding `count` pairs of `bytes`
 * bytes has no room for a next pair of `nextBytes` (see RangeQuery: the
 * first pair always fits).
 */
export function rangeIsFull(range: Pick<KeyRange, 'limit' | 'bytesMax'>, count: number, bytes: number, nextBytes: number): boolean {
  return count >= range.limit || (count > 0 && bytes + nextBytes > range.bytesMax);
}

/** compareBytes orders byte strings bytewise (a shorter prefix first), like RocksDB's default comparator. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** prefixEnd returns the smallest key greater than every key with `prefix`, undefined when there is none (all 0xff). */
export function prefixEnd(prefix: Uint8Array): Uint8Array | undefined {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return undefined;
  // A copy, never a view: Buffer.prototype.slice shares memory, and callers pass Buffers.
  const out = Uint8Array.from(prefix.subarray(0, end));
  out[end - 1] = (out[end - 1] ?? 0) + 1;
  return out;
}

/**
 * resolveRange turns `query` into bounds: the larger of start and prefix
 * below, the smaller of end and prefixEnd(prefix) above.
 * Errors: StorageError `invalidArgument` if limit, or bytesMax when given,
 * is not a positive integer.
 */
export function resolveRange(query: RangeQuery, path: string): KeyRange {
  if (!Number.isSafeInteger(query.limit) || query.limit < 1) {
    throw new StorageError('invalidArgument', `range on ${path}: limit must be a positive integer, got ${query.limit}`, {
      path,
    });
  }
  if (query.bytesMax !== undefined && (!Number.isSafeInteger(query.bytesMax) || query.bytesMax < 1)) {
    throw new StorageError('invalidArgument', `range on ${path}: bytesMax must be a positive integer, got ${query.bytesMax}`, { path });
  }
  const limit = Math.min(query.limit, RANGE_LIMIT_MAX);
  const bytesMax = Math.min(query.bytesMax ?? RANGE_BYTES_MAX, RANGE_BYTES_MAX);
  let gte = query.start !== undefined && query.start.length > 0 ? query.start : undefined;
  let lt = query.end;
  if (query.prefix !== undefined && query.prefix.length > 0) {
    if (gte === undefined || compareBytes(query.prefix, gte) > 0) gte = query.prefix;
    const end = prefixEnd(query.prefix);
    if (end !== undefined && (lt === undefined || compareBytes(end, lt) < 0)) lt = end;
  }
  const empty = lt !== undefined && (lt.length === 0 || (gte !== undefined && compareBytes(gte, lt) >= 0));
  return { gte, lt, limit, bytesMax, empty };
}

/**
 * RevisionCache: the key revision records (key-revision.ts) of one state
 * generation held in memory, so an apply of a plain put reads nothing from
 * RocksDB — as etcd's in-memory key index answers a put without a read.
 *
 * It holds what the state holds: the apply path fills it from its reads and
 * from the records it wrote (null: no record), and a new generation (an
 * install) empties it. Two modes:
 * - complete: the state machine loaded every revision record of the
 *   generation (they fit in the cap) and the cache has dropped none since,
 *   so a key it does not hold has no record: get answers null without a read
 *   (a put to a new key reads nothing);
 * - partial (the records do not fit, or one was dropped): a cache of the most
 *   recently used records, never a source of truth; a miss reads the store.
 * Bounded by REVISION_CACHE_BYTES_MAX of record keys and values (least
 * recently used out first; the first drop ends the complete mode).
 *
 * A record's value is held as a latin1 string (keyString), not as the
 * Uint8Array it came in: a 25-byte typed array costs ~130 bytes of heap, its
 * string ~48, and a busy leader holds one per key it wrote (in the old
 * generation). get makes a Uint8Array of it (young garbage, gone at the next
 * scavenge).
 */
import { keyString } from '../storage/key-string.js';


/** REVISION_CACHE_BYTES_MAX: the record key and value bytes the cache holds at most (8 MiB). */
export const REVISION_CACHE_BYTES_MAX = 8 * 1024 * 1024;
/** ENTRY_OVERHEAD_BYTES: what one entry is counted as beyond its key and value bytes. */
const ENTRY_OVERHEAD_BYTES = 64;

export class RevisionCache {
  readonly #entries = new Map<string, string | null>();
  readonly #bytesMax: number;
  #bytes = 0;
  #generation = -1;
  #complete = false;
  /** dropped: a record was dropped for room since the generation began (it cannot be complete). */
  #dropped = false;

  constructor(bytesMax = REVISION_CACHE_BYTES_MAX) {
    this.#bytesMax = bytesMax;
  }

  /**
   * forGeneration empties the cache (partial) when `generation` is not the
   * one it holds records of; true when it did (the caller may then load the
   * generation's records and call markComplete).
   */
  forGeneration(generation: number): boolean {
    if (generation === this.#generation) return false;
    this.#entries.clear();
    this.#bytes = 0;
    this.#generation = generation;
    this.#complete = false;
    this.#dropped = false;
    return true;
  }

  /**
   * markComplete declares that the cache holds every record of its
   * generation (the caller loaded them all since forGeneration answered
   * true). Ignored when it dropped any meanwhile.
   */
  markComplete(): void {
    this.#complete = this.#bytes <= this.#bytesMax && !this.#dropped;
  }

  /** complete: every record of the generation is held (see the modes above). */
  get complete(): boolean {
    return this.#complete;
  }

  /**
   * fits: whether `bytes` more of record keys and values (over `records`
   * records) would still fit within the cap: a loader stops once they would not.
   */
  fits(records: number, bytes: number): boolean {
    return this.#bytes + bytes + records * ENTRY_OVERHEAD_BYTES <= this.#bytesMax;
  }

  /** get: the record under `recordKey` (latin1), null when the store has none, undefined when not known (read the store). */
  get(recordKey: string): Uint8Array | null | undefined {
    const v = this.#entries.get(recordKey);
    if (v === undefined) return this.#complete ? null : undefined;
    if (!this.#complete) {
      this.#entries.delete(recordKey); // most recently used last
      this.#entries.set(recordKey, v);
    }
    if (v === null) return null;
    const bytes = new Uint8Array(v.length);
    for (let i = 0; i < v.length; i++) bytes[i] = v.charCodeAt(i);
    return bytes;
  }

  /** set records what the store holds under `recordKey` (null: nothing). */
  set(recordKey: string, value: Uint8Array | null): void {
    const old = this.#entries.get(recordKey);
    if (old !== undefined) {
      this.#bytes -= this.#cost(recordKey, old);
      this.#entries.delete(recordKey);
    }
    // Complete: a key not held has no record, so no entry is needed for one.
    if (value === null && this.#complete) return;
    const held = value === null ? null : keyString(value);
    this.#entries.set(recordKey, held);
    this.#bytes += this.#cost(recordKey, held);
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.#bytesMax) break;
      this.#entries.delete(k);
      this.#bytes -= this.#cost(k, v);
      this.#complete = false;
      this.#dropped = true;
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  #cost(recordKey: string, value: string | null): number {
    return recordKey.length + (value?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
  }
}

/**
 * RevisionCache: the most recently used key revision records (key-revision.ts)
 * of one state generation, so an apply of a plain put to a hot key reads
 * nothing from RocksDB. It holds what the state holds: the apply path fills it
 * from its reads and from the records it wrote (null: no record), and a new
 * generation (an install) empties it. A cache, never a source of truth: a miss
 * reads the store. Bounded by REVISION_CACHE_BYTES_MAX of record keys and
 * values (least recently used out first).
 */

/** REVISION_CACHE_BYTES_MAX: the record key and value bytes the cache holds at most (8 MiB). */
export const REVISION_CACHE_BYTES_MAX = 8 * 1024 * 1024;
/** ENTRY_OVERHEAD_BYTES: what one entry is counted as beyond its key and value bytes. */
const ENTRY_OVERHEAD_BYTES = 64;

export class RevisionCache {
  readonly #entries = new Map<string, Uint8Array | null>();
  readonly #bytesMax: number;
  #bytes = 0;
  #generation = -1;

  constructor(bytesMax = REVISION_CACHE_BYTES_MAX) {
    this.#bytesMax = bytesMax;
  }

  /** forGeneration empties the cache when `generation` is not the one it holds records of. */
  forGeneration(generation: number): void {
    if (generation === this.#generation) return;
    this.#entries.clear();
    this.#bytes = 0;
    this.#generation = generation;
  }

  /** get: the record under `recordKey` (latin1), null when the store has none, undefined when not cached. */
  get(recordKey: string): Uint8Array | null | undefined {
    const v = this.#entries.get(recordKey);
    if (v === undefined) return undefined;
    this.#entries.delete(recordKey); // most recently used last
    this.#entries.set(recordKey, v);
    return v;
  }

  /** set records what the store holds under `recordKey` (null: nothing). */
  set(recordKey: string, value: Uint8Array | null): void {
    const old = this.#entries.get(recordKey);
    if (old !== undefined) {
      this.#bytes -= this.#cost(recordKey, old);
      this.#entries.delete(recordKey);
    }
    this.#entries.set(recordKey, value);
    this.#bytes += this.#cost(recordKey, value);
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.#bytesMax) break;
      this.#entries.delete(k);
      this.#bytes -= this.#cost(k, v);
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  #cost(recordKey: string, value: Uint8Array | null): number {
    return recordKey.length + (value?.length ?? 0) + ENTRY_OVERHEAD_BYTES;
  }
}

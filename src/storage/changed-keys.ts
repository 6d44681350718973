import type { StateChanges } from './types.js';

/**
 * CHANGES_LISTED_PER_TURN: changed keys a view's listing handles (merged,
 * sorted or turned into Buffers) between two turns of the event loop. Listing
 * 20k changed keys in one go (inside the apply queue, before ChangedKeys) held
 * a busy leader's main thread, and every apply, for 140-380 ms under
 * bench:write (cpu profile: the Map walk, a comparator sort, Buffer.from).
 */
export const CHANGES_LISTED_PER_TURN = 2048;

/**
 * KEPT_CHUNK_BYTES: the value copies of a segment are packed into chunks of
 * up to this size (1 KiB first, doubling; a longer value gets a chunk of its
 * own), so a copy costs no object of its own on the heap: a Buffer per value
 * and an object per key cost ~180 bytes of heap per changed key, the writes
 * of a busy leader piling up in the old generation until its next snapshot.
 */
export const KEPT_CHUNK_BYTES = 64 * 1024;
const KEPT_FIRST_CHUNK_BYTES = 1024;
/** A slot's value length when the write was a delete / when its value was not kept (read at the view). */
const DELETED = -1;
const NOT_KEPT = -2;

/**
 * CHANGES_TRACKED_MAX: keys whose last write the store remembers (for the
 * changes of a later snapshot view); past it the memory is dropped and
 * changes are known only from that write on (about 100 bytes a key).
 */
export const CHANGES_TRACKED_MAX = 131_072;
/**
 * CHANGES_VALUES_KEPT_BYTES: the bytes of changed values the store keeps (a
 * copy of each, made as it is applied) for the changes of the next snapshot
 * view; a value past them is read at the view instead (RocksDb.getMany; MemoryStorage: its map). Reading
 * 20k changed values at a view cost ~57 ms of CPU, and turning them into
 * Buffers held a busy leader's main thread for up to 176 ms (bench:write).
 */
export const CHANGES_VALUES_KEPT_BYTES = 16 * 1024 * 1024;
/** CHANGES_LISTED_MAX / CHANGES_VALUE_BYTES_MAX: a view lists at most this many changed keys / value bytes, else changes is null. */
export const CHANGES_LISTED_MAX = 32_768;
export const CHANGES_VALUE_BYTES_MAX = 64 * 1024 * 1024;

/** changesLimits: the limits both state stores give their ChangedKeys (keptBytesMax: CHANGES_VALUES_KEPT_BYTES unless a test sets it). */
export function changesLimits(keptBytesMax = CHANGES_VALUES_KEPT_BYTES): ChangedKeysLimits {
  return { trackedMax: CHANGES_TRACKED_MAX, keptBytesMax, listedMax: CHANGES_LISTED_MAX, valueBytesMax: CHANGES_VALUE_BYTES_MAX };
}

/** Segment: the writes between two views; sealed (never written again) by the later view. */
class Segment {
  /**
   * keys: each key's slot, the index of its three numbers in `slots`: the applied index of its last write, where
   * its value copy starts (chunk * KEPT_CHUNK_BYTES + offset) and its length (or DELETED, NOT_KEPT).
   */
  readonly keys = new Map<string, number>();
  readonly slots: number[] = [];
  /** chunks: the value copies (see KEPT_CHUNK_BYTES); `used` bytes of the last are taken. */
  readonly chunks: Buffer[] = [];
  used = 0;
  /** unknown: keys written in it whose value was not kept (some may have been written again since). */
  readonly unknown: string[] = [];
  /** lastAt: the applied index it was sealed at (no write in it is later). */
  lastAt = 0;
  /** keptBytes: the bytes of its value copies, the ones replaced by a later write of another length too (they stay until it goes). */
  keptBytes = 0;

  /** at: the applied index of the last write of the key in `slot`. */
  at(slot: number): number {
    return this.slots[slot] as number;
  }

  /** value: the value of the last write of the key in `slot` (null: deleted; undefined: not kept), a view into a chunk. */
  value(slot: number): Buffer | null | undefined {
    const length = this.slots[slot + 2] as number;
    if (length === DELETED) return null;
    if (length === NOT_KEPT) return undefined;
    const place = this.slots[slot + 1] as number;
    const chunk = Math.floor(place / KEPT_CHUNK_BYTES);
    const offset = place - chunk * KEPT_CHUNK_BYTES;
    return (this.chunks[chunk] as Buffer).subarray(offset, offset + length);
  }

  /**
   * copy copies `value` into the chunks (over the previous value of `slot` when it has the same length: sealed
   * segments are never written, so no view of a listing sees it) and answers its place; `fits` says whether
   * `value.length` more bytes may be kept (else undefined: not kept).
   */
  copy(slot: number | undefined, value: Uint8Array, fits: (bytes: number) => boolean): number | undefined {
    if (slot !== undefined && this.slots[slot + 2] === value.length) {
      const place = this.slots[slot + 1] as number;
      const chunk = Math.floor(place / KEPT_CHUNK_BYTES);
      (this.chunks[chunk] as Buffer).set(value, place - chunk * KEPT_CHUNK_BYTES);
      return place;
    }
    if (!fits(value.length)) return undefined;
    this.keptBytes += value.length;
    let last = this.chunks.length - 1;
    let chunk = this.chunks[last];
    if (chunk === undefined || this.used + value.length > chunk.length) {
      // The first chunks are small (a segment may hold a few writes only), doubling up to KEPT_CHUNK_BYTES.
      const size = Math.min(KEPT_CHUNK_BYTES, chunk === undefined ? KEPT_FIRST_CHUNK_BYTES : 2 * chunk.length);
      chunk = Buffer.allocUnsafeSlow(Math.max(size, value.length));
      this.chunks.push(chunk);
      this.used = 0;
      last++;
    }
    chunk.set(value, this.used);
    const place = last * KEPT_CHUNK_BYTES + this.used;
    this.used += value.length;
    return place;
  }
}

/**
 * ChangesView: what a view took of the changes, inside the store's apply
 * queue: the sealed segments that may hold writes after `since` (oldest
 * first) and the keys among them whose value must be read as of the view.
 */
export interface ChangesView {
  readonly since: number;
  readonly segments: readonly Segment[];
  readonly unknown: readonly string[];
}

/** ChangedKeysLimits: see RocksStorage (CHANGES_*). */
export interface ChangedKeysLimits {
  /** trackedMax: keys held (counted once per segment) past which bound() forgets them all. */
  readonly trackedMax: number;
  /** keptBytesMax: bytes of value copies kept (a value past them is read at the view). */
  readonly keptBytesMax: number;
  /** listedMax / valueBytesMax: a view lists at most this many keys / value bytes, else its changes are null. */
  readonly listedMax: number;
  readonly valueBytesMax: number;
}

/**
 * ChangedKeys: the keys a state store wrote after `knownSince` (latin1 key
 * strings, see keyString), each with the applied index of its last write and,
 * up to keptBytesMax, a copy of its value then: what a snapshot view lists as
 * its changes (StateSnapshotReader.changes).
 *
 * Writes go into an open segment. A view (view(), called where no write runs:
 * inside the store's apply queue) only seals it and drops the segments wholly
 * at or before what it is asked about: O(segments), plus the keys whose value
 * was not kept. Sealed segments are never written again, so the listing
 * (list(), the merge of the segments, the sort and the key Buffers) runs after
 * the queue is let go, CHANGES_LISTED_PER_TURN keys per event-loop turn,
 * while applies go on.
 */
export class ChangedKeys {
  #open: Segment = newSegment();
  /** #sealed: sealed segments, oldest first. */
  #sealed: Segment[] = [];
  /** #sealedKeys: the keys (with repeats across segments) the sealed segments hold. */
  #sealedKeys = 0;
  #keptBytes = 0;
  #knownSince: number;
  readonly #limits: ChangedKeysLimits;

  constructor(knownSince: number, limits: ChangedKeysLimits) {
    this.#knownSince = knownSince;
    this.#limits = limits;
  }

  /** knownSince: changes are known after this applied index (a view asking about an earlier one gets null). */
  get knownSince(): number {
    return this.#knownSince;
  }

  /** size: the keys held, counting a key once per segment that holds it. */
  get size(): number {
    return this.#sealedKeys + this.#open.keys.size;
  }

  /** keptBytes: the bytes of value copies held. */
  get keptBytes(): number {
    return this.#keptBytes;
  }

  /**
   * note records a write of `key` (a keyString) at applied index `at`; a value is copied while keptBytesMax allows
   * (a copy: the written value may be a view into a larger buffer, an append message, it would keep alive).
   */
  note(key: string, at: number, value: Uint8Array | null): void {
    const seg = this.#open;
    const known = seg.keys.get(key);
    let place = 0;
    let length = DELETED;
    if (value !== null) {
      const before = seg.keptBytes;
      const copied = seg.copy(known, value, (bytes) => this.#keptBytes + bytes <= this.#limits.keptBytesMax);
      this.#keptBytes += seg.keptBytes - before;
      if (copied === undefined) {
        length = NOT_KEPT;
        seg.unknown.push(key);
      } else {
        place = copied;
        length = value.length;
      }
    }
    const slot = known ?? seg.slots.length;
    if (known === undefined) seg.keys.set(key, slot);
    seg.slots[slot] = at;
    seg.slots[slot + 1] = place;
    seg.slots[slot + 2] = length;
  }

  /** bound: after the writes of applied index `at` were noted, forgets every change held past trackedMax (known from `at` on). */
  bound(at: number): void {
    if (this.size > this.#limits.trackedMax) this.forget(at);
  }

  /** forget drops every change held: changes are known after `knownSince` from now on. */
  forget(knownSince: number): void {
    this.#open = newSegment();
    this.#sealed = [];
    this.#sealedKeys = 0;
    this.#keptBytes = 0;
    this.#knownSince = knownSince;
  }

  /**
   * view takes the changes after `since` of a view at applied index
   * `applied` (no write may run meanwhile): null when not known that far
   * back, `since` is past `applied`, or too many values are not kept. The
   * changes at or before `since` are forgotten (later views are asked about
   * later snapshots). The caller reads ChangesView.unknown as of now and
   * hands the values to list().
   */
  view(since: number, applied: number): ChangesView | null {
    if (!Number.isSafeInteger(since) || since < this.#knownSince || since > applied) return null;
    if (this.#open.keys.size > 0) {
      this.#open.lastAt = applied;
      this.#sealed.push(this.#open);
      this.#open = newSegment();
    }
    const kept: Segment[] = [];
    for (const seg of this.#sealed) {
      if (seg.lastAt > since) kept.push(seg);
      else this.#keptBytes -= seg.keptBytes;
    }
    this.#sealed = kept;
    this.#sealedKeys = kept.reduce((n, seg) => n + seg.keys.size, 0);
    this.#knownSince = since;
    const unknown = new Set<string>();
    for (const seg of kept) {
      for (const k of seg.unknown) {
        const slot = seg.keys.get(k);
        if (slot !== undefined && seg.value(slot) === undefined && seg.at(slot) > since) unknown.add(k);
      }
    }
    if (unknown.size > this.#limits.listedMax) return null;
    return { since, segments: kept, unknown: [...unknown] };
  }

  /**
   * list makes a view's changes: every key written after ChangesView.since
   * up to the view, in bytewise order, with its value in the view (`read`:
   * the values of ChangesView.unknown, in that order, as of the view); null
   * when past listedMax or valueBytesMax. It gives the event loop a turn
   * (`yieldTurn`) every CHANGES_LISTED_PER_TURN keys; the segments it reads
   * are sealed, so writes meanwhile do not change what it lists.
   */
  async list(view: ChangesView, read: readonly (Uint8Array | undefined)[], yieldTurn: () => Promise<void>): Promise<StateChanges | null> {
    const { listedMax, valueBytesMax } = this.#limits;
    const readValues = new Map<string, Uint8Array | undefined>();
    view.unknown.forEach((k, i) => readValues.set(k, read[i]));
    // Newest first: a key's last write up to the view is the first one met (its segment and slot).
    const last = new Map<string, { readonly seg: Segment; readonly slot: number }>();
    let turn = 0;
    for (let s = view.segments.length - 1; s >= 0; s--) {
      const seg = view.segments[s] as Segment;
      for (const [key, slot] of seg.keys) {
        if (++turn >= CHANGES_LISTED_PER_TURN) {
          turn = 0;
          await yieldTurn();
        }
        if (seg.at(slot) > view.since && !last.has(key)) {
          last.set(key, { seg, slot });
          if (last.size > listedMax) return null;
        }
      }
    }
    // latin1 maps each byte to one UTF-16 unit of the same value: string order is bytewise order.
    const keys = await sortInTurns([...last.keys()], yieldTurn);
    let valueBytes = 0;
    const entries: { key: Buffer; value: Uint8Array | null }[] = [];
    for (const k of keys) {
      if (++turn >= CHANGES_LISTED_PER_TURN) {
        turn = 0;
        await yieldTurn();
      }
      const { seg, slot } = last.get(k) as { readonly seg: Segment; readonly slot: number };
      const kept = seg.value(slot);
      const value = kept === undefined ? (readValues.get(k) ?? null) : kept;
      valueBytes += value?.length ?? 0;
      if (valueBytes > valueBytesMax) return null;
      entries.push({ key: Buffer.from(k, 'latin1'), value });
    }
    return { sinceIndex: view.since, entries };
  }
}

function newSegment(): Segment {
  return new Segment();
}

/**
 * sortInTurns sorts strings by UTF-16 code units (the default order), in runs
 * of CHANGES_LISTED_PER_TURN, then merges the runs pairwise, giving the event
 * loop a turn (`yieldTurn`) after each run and every CHANGES_LISTED_PER_TURN
 * merged strings.
 */
export async function sortInTurns(items: string[], yieldTurn: () => Promise<void>): Promise<string[]> {
  const step = CHANGES_LISTED_PER_TURN;
  if (items.length <= step) return items.sort();
  let runs: string[][] = [];
  for (let i = 0; i < items.length; i += step) {
    runs.push(items.slice(i, i + step).sort());
    await yieldTurn();
  }
  let moved = 0;
  while (runs.length > 1) {
    const next: string[][] = [];
    for (let r = 0; r < runs.length; r += 2) {
      const a = runs[r] as string[];
      const b = runs[r + 1];
      if (b === undefined) {
        next.push(a);
        continue;
      }
      const out = new Array<string>(a.length + b.length);
      let i = 0;
      let j = 0;
      let o = 0;
      while (i < a.length || j < b.length) {
        if (++moved >= step) {
          moved = 0;
          await yieldTurn();
        }
        out[o++] = j >= b.length || (i < a.length && (a[i] as string) <= (b[j] as string)) ? (a[i++] as string) : (b[j++] as string);
      }
      next.push(out);
    }
    runs = next;
  }
  return runs[0] as string[];
}

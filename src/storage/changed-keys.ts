import type { StateChanges } from './types.js';

/**
 * CHANGES_LISTED_PER_TURN: changed keys a view's listing handles (merged,
 * sorted or turned into Buffers) between two turns of the event loop. Listing
 * 20k changed keys in one go (inside the apply queue, before ChangedKeys) held
 * a busy leader's main thread, and every apply, for 140-380 ms under
 * bench:write (cpu profile: the Map walk, a comparator sort, Buffer.from).
 */
export const CHANGES_LISTED_PER_TURN = 2048;

/** ChangedKey: a key's last write: its applied index and its value then (null: deleted; undefined: not kept, read at the view). */
export interface ChangedKey {
  readonly at: number;
  readonly value: Buffer | null | undefined;
}

/** Segment: the writes between two views; sealed (never written again) by the later view. */
interface Segment {
  readonly keys: Map<string, ChangedKey>;
  /** unknown: keys written in it whose value was not kept (some may have been written again since). */
  readonly unknown: string[];
  /** lastAt: the applied index it was sealed at (no write in it is later). */
  lastAt: number;
  keptBytes: number;
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

  /** note records a write of `key` (a keyString) at applied index `at`; a value is copied while keptBytesMax allows. */
  note(key: string, at: number, value: Uint8Array | null): void {
    const seg = this.#open;
    const before = seg.keys.get(key);
    if (before?.value != null) {
      seg.keptBytes -= before.value.length;
      this.#keptBytes -= before.value.length;
    }
    let kept: Buffer | null | undefined;
    if (value === null) kept = null;
    else if (this.#keptBytes + value.length <= this.#limits.keptBytesMax) {
      // A copy: the written value may be a view into a larger buffer (an append message) it would keep alive.
      kept = Buffer.from(value);
      seg.keptBytes += kept.length;
      this.#keptBytes += kept.length;
    } else {
      seg.unknown.push(key);
    }
    seg.keys.set(key, { at, value: kept });
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
        const c = seg.keys.get(k);
        if (c !== undefined && c.value === undefined && c.at > since) unknown.add(k);
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
    // Newest first: a key's last write up to the view is the first one met.
    const last = new Map<string, ChangedKey>();
    let turn = 0;
    for (let s = view.segments.length - 1; s >= 0; s--) {
      for (const [key, c] of (view.segments[s] as Segment).keys) {
        if (++turn >= CHANGES_LISTED_PER_TURN) {
          turn = 0;
          await yieldTurn();
        }
        if (c.at > view.since && !last.has(key)) {
          last.set(key, c);
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
      const c = last.get(k) as ChangedKey;
      const value = c.value === undefined ? (readValues.get(k) ?? null) : c.value;
      valueBytes += value?.length ?? 0;
      if (valueBytes > valueBytesMax) return null;
      entries.push({ key: Buffer.from(k, 'latin1'), value });
    }
    return { sinceIndex: view.since, entries };
  }
}

function newSegment(): Segment {
  return { keys: new Map(), unknown: [], lastAt: 0, keptBytes: 0 };
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

/**
 * Handing batches on without holding them (issue 15, a full snapshot's
 * memory). V8 keeps every local variable of a suspended generator or async
 * function alive until it is resumed, whether or not it is read again: a
 * `for await (const batch of source) { ...; await x; }` holds `batch` across
 * the await, and `const out = ...; yield out;` holds `out` until the consumer
 * asks for the next item. A full snapshot's batches (RocksDB's iterator: a
 * Buffer of its own per key and value) passed through a chain of such
 * generators (reader, garbage note, abort check, small-state replay,
 * archive writer) while gzip ran, so each lived across turns: scavenged while
 * alive, twice, it was promoted, and only a full collection freed it. Here
 * an item waits in a Slot and is taken out of it by the call that hands it
 * on (a temporary, not a local), so nothing of it stays behind.
 */

/** Slot: where an item waits between its arrival and handOver (see the file comment). */
export interface Slot<T> {
  item: T | undefined;
}

/** handOver empties `slot` and returns what it held. */
export function handOver<T>(slot: Slot<T>): T {
  const item = slot.item as T;
  slot.item = undefined;
  return item;
}

/** fill puts an iterator result's value into `slot`; false at the end (the slot is left empty). */
export function fill<T>(slot: Slot<T>, result: IteratorResult<T, unknown>): boolean {
  if (result.done === true) return false;
  slot.item = result.value;
  return true;
}

/**
 * relay yields `source`'s items in order, holding none of them while it is
 * suspended (see the file comment). `arrived(item)` runs as each item
 * arrives, before it is yielded (it may throw: the source is closed and the
 * error passed on); `consumed()` runs when the consumer asks for the next
 * item, done with the last. As `for await` does, it closes the source when
 * its own consumer stops early or `arrived`/`consumed` throws, not when the
 * source itself fails or ends.
 */
export async function* relay<T>(source: AsyncIterable<T>, arrived?: (item: T) => void, consumed?: () => void): AsyncGenerator<T, void, undefined> {
  const it = source[Symbol.asyncIterator]();
  const slot: Slot<T> = { item: undefined };
  let closed = false;
  try {
    for (;;) {
      let more: boolean;
      try {
        more = fill(slot, await it.next());
      } catch (err) {
        closed = true; // the source failed: it is not asked to return
        throw err;
      }
      if (!more) {
        closed = true;
        return;
      }
      arrived?.(slot.item as T);
      yield handOver(slot);
      consumed?.();
    }
  } finally {
    slot.item = undefined;
    if (!closed) await it.return?.();
  }
}

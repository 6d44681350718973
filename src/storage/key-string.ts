/**
 * keyString: a key's bytes as a latin1 string (one char per byte, so the
 * strings compare with < and > in the order of the bytes), the key the
 * in-memory maps of the state machine and the storage use. A short key's
 * chars go through String.fromCharCode.apply (a Buffer view and its toString
 * cost a FastBuffer and a native call); a long key through Buffer.toString.
 * Both make a flat string. Not a loop of `s += char`: that makes a chain of
 * ConsStrings (32 bytes per char past the 13th), ~600 bytes of heap for a
 * 30-byte key held in a map (the changed keys of the next snapshot, the
 * revision cache: 1.2 KB retained per applied put, halved by this), and a
 * Map lookup walks the chain; with a Map.get, 1.6 µs a call against 0.6.
 */
const SHORT_KEY_BYTES_MAX = 32;

export function keyString(key: Uint8Array): string {
  keyStringCalls.count++;
  const n = key.length;
  if (n > SHORT_KEY_BYTES_MAX) return Buffer.from(key.buffer, key.byteOffset, n).toString('latin1');
  return String.fromCharCode.apply(null, key as unknown as number[]);
}

/**
 * keyStringCalls: how many strings keyString has built in this process (a
 * count, for the tests that bound the strings one applied write builds).
 */
export const keyStringCalls = { count: 0 };

/**
 * KeyNames: the keyString of each key object met during one apply call, built
 * once. A write's key is named where its probe is read, where the plan reads
 * and overlays it, where the revision cache records it and where the store
 * notes it changed (StateBatch.names): each named the same key object, and
 * each built it again before (~10 strings and ~2 KB of young garbage an
 * applied put on the leader and on every follower). Keys are held by identity:
 * a copy of a key's bytes is named again (the same string).
 */
export class KeyNames {
  readonly #names = new Map<Uint8Array, string>();

  /** of: keyString(key), built on the first call for this key object. */
  of(key: Uint8Array): string {
    let name = this.#names.get(key);
    if (name === undefined) {
      name = keyString(key);
      this.#names.set(key, name);
    }
    return name;
  }
}

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
  const n = key.length;
  if (n > SHORT_KEY_BYTES_MAX) return Buffer.from(key.buffer, key.byteOffset, n).toString('latin1');
  return String.fromCharCode.apply(null, key as unknown as number[]);
}

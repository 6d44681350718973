/**
 * keyString: a key's bytes as a latin1 string (one char per byte, so the
 * strings compare with < and > in the order of the bytes), the key the
 * in-memory maps of the state machine and the storage use. A short key's
 * chars are gathered one by one: a Buffer view and its toString cost ~0.7 µs
 * a call (a FastBuffer made, a native call), the loop ~0.2 µs for keys as
 * short as most are; a long key goes through Buffer.toString.
 */
const LOOP_BYTES_MAX = 32;

export function keyString(key: Uint8Array): string {
  const n = key.length;
  if (n > LOOP_BYTES_MAX) return Buffer.from(key.buffer, key.byteOffset, n).toString('latin1');
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(key[i] as number);
  return s;
}

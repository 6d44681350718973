const TWO_32 = 2 ** 32;

/**
 * writeU32At / writeU64At / readU32At / readU64At: big-endian fields of the
 * fsm's reserved records (sessions, key revisions, commands): a u64 holds an
 * index or revision (a safe integer, < 2^53). Read and written in the bytes
 * themselves, with no DataView (one per record encoded or decoded was ~1% of
 * a simulator seed's CPU). Each writes the bytes setUint32 writes: the value
 * taken modulo 2^32 (ToUint32).
 */
export function writeU32At(out: Uint8Array, at: number, value: number): void {
  const v = value >>> 0;
  out[at] = v >>> 24;
  out[at + 1] = v >>> 16;
  out[at + 2] = v >>> 8;
  out[at + 3] = v;
}

export function writeU64At(out: Uint8Array, at: number, value: number): void {
  writeU32At(out, at, Math.floor(value / TWO_32));
  writeU32At(out, at + 4, value % TWO_32);
}

export function readU32At(bytes: Uint8Array, at: number): number {
  return (bytes[at] as number) * 0x1000000 + (((bytes[at + 1] as number) << 16) | ((bytes[at + 2] as number) << 8) | (bytes[at + 3] as number));
}

export function readU64At(bytes: Uint8Array, at: number): number {
  return readU32At(bytes, at) * TWO_32 + readU32At(bytes, at + 4);
}

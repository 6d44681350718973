/**
 * writeU64 / readU64: an index or revision (a safe integer, < 2^53) as 8
 * big-endian bytes at `at` of `view`, the fixed-width field of the fsm's
 * reserved records (sessions, key revisions).
 */
const TWO_32 = 2 ** 32;

export function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / TWO_32));
  view.setUint32(at + 4, value % TWO_32);
}

export function readU64(view: DataView, at: number): number {
  return view.getUint32(at) * TWO_32 + view.getUint32(at + 4);
}

/**
 * The value mixes of the snapshot benches (bench:snapshot-cluster, bench/delta-snapshot.ts, bench/rocks-binding.ts); the text-like one is about 1.8:1
 * under gzip -1, seeded, so every run and every bench fills the same bytes.
 */

/** textPool: words of 3 to 9 lowercase letters from a seeded 16,384-word vocabulary, separated by spaces. */
export function textPool(bytes: number): Buffer {
  let seed = 0x9e3779b9;
  const next = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const vocab: string[] = [];
  for (let w = 0; w < 16_384; w++) {
    const len = 3 + (next() % 7);
    let s = '';
    for (let c = 0; c < len; c++) s += String.fromCharCode(97 + (next() % 26));
    vocab.push(s);
  }
  const out = Buffer.allocUnsafe(bytes);
  let at = 0;
  while (at < bytes) at += out.write(`${vocab[next() % vocab.length] ?? 'x'} `, at);
  return out;
}

/** POOL_BYTES: the text-like values are slices of one pool this large (values differ by offset). */
const POOL_BYTES = 64 << 20;

/** Values gives the value of key i for a mix (`etcd`: `f` bytes; `text`: slices of textPool): every value is `valueBytes` long. */
export class Values {
  private readonly pool: Buffer;
  constructor(
    readonly mix: 'etcd' | 'text',
    readonly valueBytes: number,
  ) {
    this.pool = mix === 'etcd' ? Buffer.alloc(valueBytes, 'f') : textPool(POOL_BYTES + valueBytes);
  }
  of(i: number): Buffer {
    if (this.mix === 'etcd') return this.pool;
    // A fixed stride that is prime to the pool size: neighbouring keys get unrelated slices.
    const at = (i * 7_919_993) % POOL_BYTES;
    return this.pool.subarray(at, at + this.valueBytes);
  }
}

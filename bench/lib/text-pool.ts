/**
 * The text-like value mix of the snapshot benches (bench:snapshot-cluster, bench/rocks-binding.ts): about 1.8:1
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

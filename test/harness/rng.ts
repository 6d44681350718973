/**
 * SeededRng: the one seeded random generator of the tests, the simulator,
 * the chaos and hosts runs and the benches: xoshiro128** seeded through
 * splitmix32 from one root seed, so a run replays from its seed.
 * `fork(label)` derives an independent generator from the ROOT seed and the
 * label (not from this generator's position), so adding a draw in one place never perturbs another stream:
 * every node, the network, the faults and the clients each get their own.
 *
 * It implements the core's `Rng` interface (`nextInt(n)`), so a fork can be
 * handed to a RaftNode as its election-timeout randomness.
 */
import type { Rng } from '../../src/raft/types.js';

/** splitmix32 step: a good 32-bit mixer used for seeding and hashing labels. */
function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** hashLabel: FNV-1a of a string, then mixed. */
function hashLabel(label: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return splitmix32(h >>> 0);
}

export class SeededRng implements Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  /** the seed material this generator was built from (root seed mixed with fork labels). */
  private readonly material: number;

  /** seed: any non-negative integer (up to 2^53); both halves are mixed in. */
  constructor(seed: number, material?: number) {
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 0x100000000) >>> 0;
    this.material = material ?? splitmix32(lo ^ splitmix32(hi ^ 0x5bd1e995));
    let x = this.material;
    x = splitmix32(x);
    this.s0 = x;
    x = splitmix32(x);
    this.s1 = x;
    x = splitmix32(x);
    this.s2 = x;
    x = splitmix32(x);
    this.s3 = x;
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** fork derives an independent generator for `label`, from the seed material only. */
  fork(label: string): SeededRng {
    return new SeededRng(0, splitmix32(this.material ^ hashLabel(label)));
  }

  /** nextU32: the next raw 32-bit output (xoshiro128**). */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** nextInt returns an integer in [0, n); n must be a positive integer (n <= 2^32). */
  nextInt(n: number): number {
    if (!(n >= 1)) throw new RangeError(`SeededRng.nextInt: bad bound ${n}`);
    if (n === 1) return 0;
    // Multiply-shift with a 53-bit float: bias is below 2^-20 for our bounds, and it is deterministic.
    return Math.floor(this.nextFloat() * n);
  }

  /** nextFloat returns a float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** range returns an integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return hi <= lo ? lo : lo + this.nextInt(hi - lo + 1);
  }

  /** chance returns true with probability p. */
  chance(p: number): boolean {
    return p > 0 && this.nextFloat() < p;
  }

  /** pick returns a uniformly chosen element; the array must not be empty. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('SeededRng.pick: empty array');
    return items[this.nextInt(items.length)] as T;
  }

  /** exp returns an exponentially distributed integer delay with the given mean (>= 1). */
  exp(meanMs: number): number {
    const u = this.nextFloat();
    return Math.max(1, Math.round(-Math.log(1 - u) * meanMs));
  }

  /** shuffle returns a shuffled copy (Fisher–Yates). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = out[i] as T;
      out[i] = out[j] as T;
      out[j] = tmp;
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** hashMix folds a 32-bit value into a running 32-bit hash (used for trace hashes and chain hashes). */
export function hashMix(h: number, v: number): number {
  let x = (h ^ v) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * RecordsDigest: the SHA-256 of key-value records in state.bin's framing
 * (src/snapshot/state-format.ts), in the order they are added:
 *
 *   for each record: u32be key length, key bytes, u32be value length, value bytes
 *
 * and nothing else (no count, no header). Callers add records in bytewise key
 * order (a state's order), so equal record sets in key order give equal
 * digests wherever they are read from: an archive's state.bin, a state being
 * installed, a RocksDB generation scanned. Streamed: it holds one block.
 *
 * Records whole (`add`) or in pieces, for a scanner that meets a record's
 * bytes chunk by chunk (`length` then `bytes`/`range`, in framing order).
 * Pieces up to COPY_BYTES_MAX are gathered into a block and hashed a block at
 * a time; larger ones are hashed where they lie. Measured (1M records from
 * memory, SHA-NI, load ~6 on 2 cores): 0.10-0.12 s of CPU at 64 B values
 * against 0.16 s for four Hash.update calls per record; at 1 KiB values
 * 0.70-0.80 s either way (the SHA-256 itself, ~0.65 s per GB).
 */
import { createHash, type Hash } from 'node:crypto';

/** BLOCK_BYTES: the gathering block (below glibc's mmap threshold, reused). */
const BLOCK_BYTES = 64 * 1024;
/** COPY_BYTES_MAX: pieces larger than this are hashed in place rather than copied into the block. */
const COPY_BYTES_MAX = 256;

export class RecordsDigest {
  readonly #hash: Hash = createHash('sha256');
  readonly #block: Buffer = Buffer.allocUnsafeSlow(BLOCK_BYTES);
  #at = 0;
  #hex: string | null = null;
  /** records: how many records were added whole (`add`); a scanner counts its own. */
  records = 0;

  /** add appends one record (key, value) in the framing above. */
  add(key: Uint8Array, value: Uint8Array): void {
    this.length(key.length);
    this.bytes(key);
    this.length(value.length);
    this.bytes(value);
    this.records++;
  }

  /** length appends a u32be length (a key's or a value's). */
  length(n: number): void {
    this.#room(4);
    this.#block.writeUInt32BE(n, this.#at);
    this.#at += 4;
  }

  /** bytes appends `data` whole. */
  bytes(data: Uint8Array): void {
    this.#piece(data, 0, data.length);
  }

  /** range appends buf[start, end). */
  range(buf: Buffer, start: number, end: number): void {
    this.#piece(buf, start, end);
  }

  /** hex: the digest (lowercase hex) of everything added; nothing may be added after. */
  hex(): string {
    if (this.#hex === null) {
      this.#flush();
      this.#hex = this.#hash.digest('hex');
    }
    return this.#hex;
  }

  #piece(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (n > COPY_BYTES_MAX) {
      this.#flush();
      this.#hash.update(start === 0 && end === src.length ? src : src.subarray(start, end));
      return;
    }
    this.#room(n);
    if (n <= 16) {
      const block = this.#block;
      let at = this.#at;
      for (let i = start; i < end; i++) block[at++] = src[i] as number;
    } else {
      this.#block.set(start === 0 && end === src.length ? src : src.subarray(start, end), this.#at);
    }
    this.#at += n;
  }

  #room(n: number): void {
    if (this.#hex !== null) throw new Error('RecordsDigest: added to after hex()');
    if (this.#at + n > BLOCK_BYTES) this.#flush();
  }

  #flush(): void {
    if (this.#at === 0) return;
    this.#hash.update(this.#block.subarray(0, this.#at));
    this.#at = 0;
  }
}

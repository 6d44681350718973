/**
 * BlockPool keeps up to `maxBlocks` spare fixed-size blocks for reuse, so a
 * stream of blocks (record encoding, gzip input) does not allocate a fresh
 * `blockBytes` Buffer per block. Dead 1 MiB blocks are what held a node's
 * Buffer memory up between V8's collections during restores and snapshots.
 *
 * Contract: take() gives a spare block or a new one (its contents are
 * arbitrary); give(block) returns a block — or a view starting at its first
 * byte — once nothing reads or writes it any more (e.g. zlib finished with
 * it). A block of another size, a view not at offset 0, a block already
 * spare, or one beyond `maxBlocks` spares is dropped (left to the GC), so the
 * pool never holds more than `maxBlocks` blocks and never hands out one block
 * twice without a give() between.
 */
export class BlockPool {
  readonly blockBytes: number;
  readonly maxBlocks: number;
  readonly #spare: Buffer[] = [];
  /** allocated: blocks this pool allocated (take() found no spare). */
  allocated = 0;

  constructor(blockBytes: number, maxBlocks: number) {
    if (!Number.isInteger(blockBytes) || blockBytes < 1) throw new RangeError(`blockBytes must be a positive whole number, got ${blockBytes}`);
    if (!Number.isInteger(maxBlocks) || maxBlocks < 0) throw new RangeError(`maxBlocks must be a whole number >= 0, got ${maxBlocks}`);
    this.blockBytes = blockBytes;
    this.maxBlocks = maxBlocks;
  }

  /** spare: blocks held for reuse now (at most maxBlocks). */
  get spare(): number {
    return this.#spare.length;
  }

  /** take gives a block of blockBytes: a spare one if any, else a new one. */
  take(): Buffer {
    const block = this.#spare.pop();
    if (block !== undefined) return block;
    this.allocated += 1;
    return Buffer.allocUnsafeSlow(this.blockBytes); // its own ArrayBuffer, never a slice of Node's shared pool
  }

  /** give returns `block` (or a view of it from its first byte) for reuse; see the class contract for what is dropped. */
  give(block: Uint8Array): void {
    if (this.#spare.length >= this.maxBlocks) return;
    if (block.byteOffset !== 0 || block.buffer.byteLength !== this.blockBytes) return;
    const whole = Buffer.from(block.buffer, 0, this.blockBytes);
    if (this.#spare.some((b) => b.buffer === whole.buffer)) return;
    this.#spare.push(whole);
  }
}

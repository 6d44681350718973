/**
 * PiecePool: the reused output buffers of an install's gunzip (issue 15).
 *
 * An install read gunzips a whole state (~1 GB at 1M x 1 KiB) into pieces of
 * at most GUNZIP_CHUNK_BYTES that its records are views of. Each piece was a
 * fresh Buffer (zlib's output), held across event-loop turns (queued in the
 * state stream, in a decoder's batch, in the restore copy's member) and so
 * promoted: only a full collection freed them, and the glibc heap they came
 * from (112 KiB, under a node's 128 KiB mmap threshold) stayed as large as
 * the garbage had grown (the restore's leader: [heap] up to 78 MiB, external
 * memory up to 64 MiB). With a pool the gunzip copies each output piece into
 * one of a few buffers that every holder gives back, and the same buffers
 * carry the whole state.
 *
 * Counting: take() hands out a buffer with one reference (its taker's);
 * every further holder retain()s the piece it keeps and release()s it once it
 * reads it no more (a view of a buffer stands for the buffer: its ArrayBuffer
 * is looked up). A buffer whose count falls to 0 becomes spare again. A
 * buffer some holder never gives back (a consumer that does not know of the
 * pool, a read that failed) is left to the GC: never reused, so a holder that
 * does not take part is safe and costs what it cost before. Counts are kept
 * in a WeakMap: the pool pins no buffer but its spares (at most `spareMax`).
 * retain() and release() of a buffer the pool did not hand out, or handed out
 * and took back already, do nothing.
 */
export class PiecePool {
  readonly pieceBytes: number;
  readonly spareMax: number;
  readonly #spare: Buffer[] = [];
  readonly #refs = new WeakMap<ArrayBufferLike, number>();
  /** allocated / reused: take()s that allocated a buffer / found a spare one. */
  allocated = 0;
  reused = 0;
  /** outstanding: pieces taken and not yet given back by every holder (those never given back stay counted); outstandingMax its highest. */
  outstanding = 0;
  outstandingMax = 0;

  constructor(pieceBytes: number, spareMax: number) {
    if (!Number.isInteger(pieceBytes) || pieceBytes < 1) throw new RangeError(`pieceBytes must be a positive whole number, got ${pieceBytes}`);
    if (!Number.isInteger(spareMax) || spareMax < 0) throw new RangeError(`spareMax must be a whole number >= 0, got ${spareMax}`);
    this.pieceBytes = pieceBytes;
    this.spareMax = spareMax;
  }

  /** spare: buffers held for reuse now (at most spareMax). */
  get spare(): number {
    return this.#spare.length;
  }

  /** take: a piece of `bytes` (at most pieceBytes) at the start of a spare or new buffer, counted once (the caller's). */
  take(bytes: number): Buffer {
    if (!Number.isInteger(bytes) || bytes < 0 || bytes > this.pieceBytes) throw new RangeError(`PiecePool.take: ${bytes} bytes, not within [0, ${this.pieceBytes}]`);
    let buf = this.#spare.pop();
    if (buf !== undefined) this.reused++;
    else {
      this.allocated++;
      buf = Buffer.allocUnsafeSlow(this.pieceBytes); // its own ArrayBuffer, never a slice of Node's shared pool
    }
    this.#refs.set(buf.buffer, 1);
    this.outstanding++;
    this.outstandingMax = Math.max(this.outstandingMax, this.outstanding);
    return buf.subarray(0, bytes);
  }

  /** retain: one more holder of `piece`'s buffer (nothing for a buffer the pool does not count). */
  retain(piece: Uint8Array): void {
    const n = this.#refs.get(piece.buffer);
    if (n !== undefined) this.#refs.set(piece.buffer, n + 1);
  }

  /** release: a holder of `piece`'s buffer is done with it; the last one makes it spare (or drops it past spareMax). */
  release(piece: Uint8Array): void {
    const n = this.#refs.get(piece.buffer);
    if (n === undefined) return;
    if (n > 1) {
      this.#refs.set(piece.buffer, n - 1);
      return;
    }
    this.#refs.delete(piece.buffer);
    this.outstanding--;
    if (this.#spare.length < this.spareMax) this.#spare.push(Buffer.from(piece.buffer, 0, this.pieceBytes));
  }
}

/** INSTALL_PIECES_SPARE_MAX: spare gunzip output buffers an install's pool keeps (64 x 112 KiB: 7 MiB at most). */
export const INSTALL_PIECES_SPARE_MAX = 64;

import { createHash } from 'node:crypto';
import { sha256 } from '../hash/sha256.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';

/** FileChunk is one piece of a file with its SHA-256. */
export interface FileChunk {
  readonly offset: number;
  readonly data: Uint8Array;
  readonly sha256: Uint8Array;
  readonly totalSizeBytes: number;
  readonly last: boolean;
  /**
   * release, when present, says the consumer is done with `data` (its bytes
   * copied or sent, no view of them kept): readChunks may read a later chunk
   * into the same memory. Calling it while anything still reads `data`
   * corrupts what that reads; not calling it only costs a fresh buffer.
   */
  readonly release?: () => void;
}

/** CHUNK_BYTES_MAX caps what a peer may ask for in one chunk. */
export const CHUNK_BYTES_MAX = 4 << 20;

/**
 * FRAME_ROOM marks a chunk's `data` that sits inside a larger buffer owned by
 * nobody else, with `before` free bytes just before it and `after` just after
 * it (its value: `{ before, after }`). A serializer may write a message's
 * header and trailer there and send the enclosing bytes without copying the
 * chunk (transport/bytes-message.ts does; it names the same Symbol.for key).
 * The data bytes themselves are never changed.
 */
export const FRAME_ROOM: unique symbol = Symbol.for('snapcoord.chunk.frameRoom') as never;
/** FRAME_ROOM_BEFORE / FRAME_ROOM_AFTER: the room readFrames leaves (a FetchSnapshotResponse's or GetSnapshotResponse's fields around `data`). */
const FRAME_ROOM_BEFORE = 32;
const FRAME_ROOM_AFTER = 64;
/**
 * SPARE_FRAMES_MAX: released buffers readFrames keeps for the next pieces.
 * A server stream holds a few chunks at once (one read ahead, one being
 * encoded, STREAM_UNSENT_MAX unsent); reusing theirs spares a fresh 1 MiB
 * buffer per chunk, which a node's malloc (a 128 KiB mmap threshold,
 * cli/node-runtime.ts) maps, faults in page by page and unmaps again.
 */
const SPARE_FRAMES_MAX = 4;

/** FileFrame is one piece of a file read into a reused buffer, without a hash (readFrames). */
export interface FileFrame {
  readonly offset: number;
  readonly data: Buffer;
  readonly totalSizeBytes: number;
  /** last: the piece ends at the end of what was asked for. */
  readonly last: boolean;
  /** release: as FileChunk's (the buffer may take a later piece once called). */
  readonly release: () => void;
}

/**
 * readFrames reads path from offset up to `end` (default: the file's end) in
 * pieces of chunkBytes (capped at CHUNK_BYTES_MAX; whole ones but the last:
 * a short read is read on), each read straight into
 * the middle of a buffer with FRAME_ROOM around it (no copy), one piece read
 * ahead while the consumer holds the last. A full-size piece's buffer comes
 * back for later pieces once the consumer calls its `release` (up to
 * SPARE_FRAMES_MAX kept). Yields nothing when offset === end; rejects when
 * offset is outside the file or end is before offset. The file is closed when
 * the generator ends, is returned (a consumer's break) or throws.
 */
export async function* readFrames(path: string, offset: number, chunkBytes: number, io: SnapshotIo = nodeSnapshotIo, end?: number): AsyncGenerator<FileFrame> {
  const size = Math.max(1, Math.min(CHUNK_BYTES_MAX, Math.floor(chunkBytes)));
  const fh = await io.open(path, 'r');
  try {
    const total = (await fh.stat()).size;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > total) {
      throw new RangeError(`offset ${offset} is outside the file (${total} bytes)`);
    }
    const stop = end ?? total;
    if (!Number.isSafeInteger(stop) || stop < offset || stop > total) throw new RangeError(`end ${stop} is outside ${offset}..${total}`);
    // Each piece is read into the middle of its own buffer, with room for a message's fields around it:
    // a released one of full size (spare), else a fresh one.
    const frameBytes = FRAME_ROOM_BEFORE + size + FRAME_ROOM_AFTER;
    const spare: Buffer[] = [];
    const readAt = async (at: number): Promise<{ data: Buffer; frame: Buffer }> => {
      const want = Math.min(size, stop - at);
      const frame = (want === size ? spare.pop() : undefined) ?? Buffer.allocUnsafe(FRAME_ROOM_BEFORE + want + FRAME_ROOM_AFTER);
      // read(2) may return less than asked before the end (a signal, a network or FUSE file system): read again until
      // the piece is whole, since a reader that hashes pieces as chunks (SnapshotHandle.readFrames) relies on it.
      let bytesRead = 0;
      while (bytesRead < want) {
        const r = await fh.read(frame, FRAME_ROOM_BEFORE + bytesRead, want - bytesRead, at + bytesRead);
        if (r.bytesRead === 0) break;
        bytesRead += r.bytesRead;
      }
      if (bytesRead === 0) throw new Error(`file ${path} shrank while being read`);
      const data = frame.subarray(FRAME_ROOM_BEFORE, FRAME_ROOM_BEFORE + bytesRead);
      Object.defineProperty(data, FRAME_ROOM, { value: { before: FRAME_ROOM_BEFORE, after: frame.length - FRAME_ROOM_BEFORE - bytesRead } });
      return { data, frame };
    };
    let pos = offset;
    // One read ahead: the next piece comes off the disk while this one is hashed and sent.
    let next: Promise<{ data: Buffer; frame: Buffer }> | null = pos < stop ? readAt(pos) : null;
    try {
      while (next !== null) {
        const { data, frame } = await next;
        const after: number = pos + data.length;
        next = after < stop ? readAt(after) : null;
        next?.catch(() => undefined); // a failed read-ahead surfaces when awaited
        let released = false;
        const piece: FileFrame = {
          offset: pos,
          data,
          totalSizeBytes: total,
          last: after >= stop,
          release: () => {
            if (released) return;
            released = true;
            if (frame.length === frameBytes && spare.length < SPARE_FRAMES_MAX) spare.push(frame);
          },
        };
        pos = after;
        yield piece;
      }
    } finally {
      // A read still in flight (the consumer stopped early) settles before the file closes under it.
      await next?.catch(() => undefined);
    }
  } finally {
    await fh.close();
  }
}

/**
 * readChunks reads path from offset in chunks of chunkBytes (capped at
 * CHUNK_BYTES_MAX), each with its SHA-256 (taken from `known` when it holds
 * the hashes of that chunk size, recorded when the file was verified; else
 * hashed once, here). The consumer pulls one chunk at a time, so memory stays
 * at a few chunks whatever the file size. Rejects when offset is beyond the
 * end. The buffers are readFrames': a full-size chunk's comes back for later
 * chunks once the consumer calls its `release`.
 */
export async function* readChunks(
  path: string,
  offset: number,
  chunkBytes: number,
  known?: { readonly chunkBytes: number; readonly sha256s: readonly Uint8Array[] },
  io: SnapshotIo = nodeSnapshotIo,
): AsyncGenerator<FileChunk> {
  const size = Math.max(1, Math.min(CHUNK_BYTES_MAX, Math.floor(chunkBytes)));
  // Hashes recorded when the file was verified serve aligned chunks of that size without hashing again.
  const knownSha = (at: number, length: number, total: number): Uint8Array | undefined => {
    if (known === undefined || known.chunkBytes !== size || at % size !== 0) return undefined;
    if (length !== size && at + length !== total) return undefined;
    return known.sha256s[at / size];
  };
  let any = false;
  for await (const f of readFrames(path, offset, size, io)) {
    any = true;
    yield { ...f, sha256: knownSha(f.offset, f.data.length, f.totalSizeBytes) ?? sha256(f.data) };
  }
  // At the end: one empty last chunk (readFrames opened the file and checked the offset).
  if (!any) yield { offset, data: new Uint8Array(0), sha256: createHash('sha256').digest(), totalSizeBytes: offset, last: true };
}

/**
 * encodeBytesMessage: a protobuf message made of one large `bytes` field and a
 * few small fields around it, encoded into one buffer with at most one copy
 * of the large field. The generated (ts-proto) encoders copy such a field
 * three times (their growing writer, zero-filled as it doubles; finish();
 * Buffer.from), which is most of the CPU of serving a snapshot. A field
 * read by readChunks (snapshot/chunk-reader.ts: marked with free room around
 * it) is not copied at all: the fields before and after it are written into
 * that room and the enclosing bytes returned. The caller lists the fields in
 * field-number order, as the generated encoders write them, so the bytes are
 * theirs and any decoder reads them.
 *
 * The message is marked for grpc-frame-room.ts when the bytes just before it
 * are free for gRPC's 5-byte frame header (a new buffer leaves them; in place,
 * when the chunk's room holds them too): grpc-js then frames it where it is
 * instead of copying it once more, so a chunk read from a file goes to the
 * HTTP/2 stream with no copy of its bytes at all.
 */
import { GRPC_FRAME_HEADER_BYTES, markGrpcFrameRoom } from './grpc-frame-room.js';

/** BytesMessageField: a small field: its tag byte (field number << 3 | wire type) and a varint or a length-delimited value. */
export type BytesMessageField = { readonly tag: number; readonly varint: bigint } | { readonly tag: number; readonly bytes: Uint8Array };

function varintBytes(v: bigint): number {
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, at: number, v: bigint): number {
  while (v >= 0x80n) {
    buf[at++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  buf[at++] = Number(v);
  return at;
}

function fieldBytes(f: BytesMessageField): number {
  return 'varint' in f ? 1 + varintBytes(f.varint) : 1 + varintBytes(BigInt(f.bytes.length)) + f.bytes.length;
}

function writeField(buf: Buffer, at: number, f: BytesMessageField): number {
  buf[at++] = f.tag;
  if ('varint' in f) return writeVarint(buf, at, f.varint);
  at = writeVarint(buf, at, BigInt(f.bytes.length));
  buf.set(f.bytes, at);
  return at + f.bytes.length;
}

/** FRAME_ROOM: the key under which snapshot/chunk-reader.ts marks a chunk with free room around it (its FRAME_ROOM). */
const FRAME_ROOM = Symbol.for('snapcoord.chunk.frameRoom');

/** frameRoomOf: the free bytes around `data` (chunk-reader's mark), or null. */
function frameRoomOf(data: Uint8Array): { before: number; after: number } | null {
  const room = (data as Uint8Array & { [FRAME_ROOM]?: { before: number; after: number } })[FRAME_ROOM];
  if (room === undefined || data.byteOffset < room.before || data.byteOffset + data.length + room.after > data.buffer.byteLength) return null;
  return room;
}

/**
 * encodeBytesMessage encodes `before`, then `large` (tag byte and bytes; null:
 * absent), then `after`, each field as it comes (see the file comment).
 */
export function encodeBytesMessage(before: readonly BytesMessageField[], large: { readonly tag: number; readonly data: Uint8Array } | null, after: readonly BytesMessageField[]): Buffer {
  const data = large?.data ?? new Uint8Array(0);
  let head = 0;
  for (const f of before) head += fieldBytes(f);
  if (large !== null) head += 1 + varintBytes(BigInt(data.length));
  let tail = 0;
  for (const f of after) tail += fieldBytes(f);
  const room = data.length > 0 ? frameRoomOf(data) : null;
  // In place: the header goes into the room before the data, the trailer into the room after it.
  const inPlace = room !== null && room.before >= head && room.after >= tail;
  // Else a new buffer, with gRPC's frame header's room before the message (nobody else has it).
  const buf = inPlace
    ? Buffer.from(data.buffer, data.byteOffset - head, head + data.length + tail)
    : Buffer.allocUnsafe(GRPC_FRAME_HEADER_BYTES + head + data.length + tail).subarray(GRPC_FRAME_HEADER_BYTES);
  let at = 0;
  for (const f of before) at = writeField(buf, at, f);
  if (large !== null) {
    buf[at++] = large.tag;
    at = writeVarint(buf, at, BigInt(data.length));
    if (!inPlace) buf.set(data, at);
    at += data.length;
  }
  for (const f of after) at = writeField(buf, at, f);
  // In place, the room left before the header is the chunk reader's too: grpc-js may write its frame header there.
  if (!inPlace || room.before >= head + GRPC_FRAME_HEADER_BYTES) markGrpcFrameRoom(buf);
  return buf;
}

/**
 * gRPC framing without a copy for messages that leave room for it.
 *
 * grpc-js frames every message a server sends (a compressed-flag byte and a
 * u32be length, then the serialized bytes) into a fresh buffer:
 * `BaseServerInterceptingCall.serializeMessage` allocates length + 5 bytes
 * and copies the whole message into it. For a snapshot chunk that is a
 * second 1 MiB buffer and copy per chunk; under a node's malloc settings
 * (a 128 KiB mmap threshold, cli/node-runtime.ts) the buffer is a fresh
 * mmap, faulted in page by page and unmapped again, each chunk.
 *
 * A serializer that wrote its message inside a buffer of its own with at
 * least GRPC_FRAME_HEADER_BYTES free bytes just before it, bytes nobody else
 * reads or writes until grpc-js has sent the message (a FetchSnapshot or
 * GetSnapshot piece encoded in place in its readFrames frame:
 * bytes-message.ts), marks the Buffer it returns with GRPC_FRAME_ROOM.
 * installGrpcFrameRoom makes grpc-js write the 5-byte header into that room
 * and send the enclosing bytes as they are. Every other message is framed
 * exactly as grpc-js frames it. The write callback grpc-js gives a server
 * stream's `write` runs once the HTTP/2 stream has written the bytes to the
 * connection (node's Http2Stream completes a write only then), so a producer
 * that reuses its buffer after that callback (readFrames' release, through
 * StreamWriteWindow) reuses it no sooner than it did when grpc-js held a copy.
 *
 * grpc-js's method is private, so @grpc/grpc-js stays pinned to its minor
 * (package.json) and grpc-frame-room.spec fails when the method it replaces
 * is no longer the one this file was written against.
 */
import * as serverInterceptors from '@grpc/grpc-js/build/src/server-interceptors.js';

/** GRPC_FRAME_HEADER_BYTES: the length-prefixed message header of gRPC over HTTP/2 (compressed flag, u32be length). */
export const GRPC_FRAME_HEADER_BYTES = 5;

/**
 * GRPC_FRAME_ROOM marks a serialized message Buffer with at least
 * GRPC_FRAME_HEADER_BYTES free bytes before it in its ArrayBuffer, owned by
 * nobody else until the message is sent (value: true).
 */
export const GRPC_FRAME_ROOM: unique symbol = Symbol.for('snapcoord.grpc.frameRoom') as never;

/** markGrpcFrameRoom marks `message` (see GRPC_FRAME_ROOM); returns it. */
export function markGrpcFrameRoom(message: Buffer): Buffer {
  if (message.byteOffset < GRPC_FRAME_HEADER_BYTES) throw new RangeError(`a message at byte ${message.byteOffset} of its buffer has no room for a gRPC frame header`);
  Object.defineProperty(message, GRPC_FRAME_ROOM, { value: true });
  return message;
}

/** hasGrpcFrameRoom: whether `message` was marked by markGrpcFrameRoom (and still has the room). */
export function hasGrpcFrameRoom(message: Uint8Array): boolean {
  return (message as Uint8Array & { [GRPC_FRAME_ROOM]?: boolean })[GRPC_FRAME_ROOM] === true && message.byteOffset >= GRPC_FRAME_HEADER_BYTES;
}

/**
 * frameMessage frames a serialized message as gRPC does (flag 0: grpc-js
 * sends no compressed responses; then the u32be length): in place in its
 * room when it has one (no copy: the result shares the message's memory),
 * else into a new buffer (grpc-js's own way, one copy).
 */
export function frameMessage(message: Buffer): Buffer {
  const byteLength = message.byteLength;
  if (hasGrpcFrameRoom(message)) {
    const framed = Buffer.from(message.buffer, message.byteOffset - GRPC_FRAME_HEADER_BYTES, byteLength + GRPC_FRAME_HEADER_BYTES);
    framed.writeUInt8(0, 0);
    framed.writeUInt32BE(byteLength, 1);
    return framed;
  }
  const output = Buffer.allocUnsafe(byteLength + GRPC_FRAME_HEADER_BYTES);
  output.writeUInt8(0, 0);
  output.writeUInt32BE(byteLength, 1);
  message.copy(output, GRPC_FRAME_HEADER_BYTES);
  return output;
}

/**
 * GRPC_JS_SERIALIZE_MESSAGE: the source of the grpc-js method replaced (1.14.7), whitespace
 * collapsed; installGrpcFrameRoom refuses to replace anything else.
 */
export const GRPC_JS_SERIALIZE_MESSAGE =
  'serializeMessage(value) { const messageBuffer = this.handler.serialize(value); const byteLength = messageBuffer.byteLength; const output = Buffer.allocUnsafe(byteLength + 5); ' +
  '/* Note: response compression is currently not supported, so this * compressed bit is always 0. */ output.writeUInt8(0, 0); output.writeUInt32BE(byteLength, 1); messageBuffer.copy(output, 5); return output; }';

/** collapse: source text with every run of whitespace made one space. */
export function collapse(source: string): string {
  return source.replace(/\s+/g, ' ').trim();
}

type SerializeMessage = ((this: { handler: { serialize(value: unknown): Buffer } }, value: unknown) => Buffer) & { [FRAMES_IN_ROOM]?: true };

/** FRAMES_IN_ROOM marks the replacement (a process-wide key: a second copy of this module finds it installed). */
const FRAMES_IN_ROOM = Symbol.for('snapcoord.grpc.framesInRoom');

/**
 * installGrpcFrameRoom replaces grpc-js's server-side message framing with
 * frameMessage (idempotent). Throws Error, replacing nothing, when the
 * installed grpc-js's method is not GRPC_JS_SERIALIZE_MESSAGE.
 */
export function installGrpcFrameRoom(): void {
  const proto = (serverInterceptors as unknown as { BaseServerInterceptingCall?: { prototype: { serializeMessage?: SerializeMessage } } }).BaseServerInterceptingCall?.prototype;
  const original = proto?.serializeMessage;
  if (original?.[FRAMES_IN_ROOM] === true) return;
  if (proto === undefined || typeof original !== 'function' || collapse(original.toString()) !== GRPC_JS_SERIALIZE_MESSAGE) {
    throw new Error('@grpc/grpc-js BaseServerInterceptingCall.serializeMessage is not the one grpc-frame-room.ts replaces (a grpc-js upgrade): look at it again');
  }
  const replacement: SerializeMessage = function serializeMessage(value: unknown): Buffer {
    return frameMessage(this.handler.serialize(value));
  };
  replacement[FRAMES_IN_ROOM] = true;
  proto.serializeMessage = replacement;
}

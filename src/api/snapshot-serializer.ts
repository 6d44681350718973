import { GetSnapshotResponse, SnapshotServiceService } from '../gen/snapcoord/v1/snapshot.js';
import { encodeBytesMessage, type BytesMessageField } from '../transport/bytes-message.js';
import { installGrpcFrameRoom } from '../transport/grpc-frame-room.js';

// Servers of these messages frame them for gRPC where they lie (grpc-frame-room.ts), not in a copy.
installGrpcFrameRoom();

const U64_MAX = (1n << 64n) - 1n;

/**
 * serializeGetSnapshotResponse encodes a GetSnapshot answer as the generated
 * encoder does, byte for byte, with one copy of a data piece instead of three
 * (encodeBytesMessage): the generated encoder's copies were most of a node's
 * CPU when it serves an unchanged snapshot (about 50 ms of 70 per 8 MiB, with
 * the garbage of its zero-filled growing buffers). A piece read into a frame
 * (SnapshotHandle.readFrames, as GetSnapshot serves) is not copied at all:
 * its fields are written into the frame's room around it. The info message,
 * which comes once per download, goes through the generated encoder.
 */
export function serializeGetSnapshotResponse(m: GetSnapshotResponse): Buffer {
  if (m.info !== undefined || m.data === undefined) return Buffer.from(GetSnapshotResponse.encode(m).finish());
  const after: BytesMessageField[] = [];
  if (m.knownLeader) after.push({ tag: 0x18, varint: 1n });
  if (m.lastContactMs !== 0n) {
    if (m.lastContactMs < 0n || m.lastContactMs > U64_MAX) throw new Error('value provided for field message.lastContactMs of type uint64 too large');
    after.push({ tag: 0x20, varint: m.lastContactMs });
  }
  return encodeBytesMessage([], { tag: 0x12, data: m.data }, after);
}

/** SNAPSHOT_SERVICE_DEFINITION: the generated SnapshotService definition with the one-copy GetSnapshot encoder. */
export const SNAPSHOT_SERVICE_DEFINITION = {
  ...SnapshotServiceService,
  getSnapshot: { ...SnapshotServiceService.getSnapshot, responseSerialize: serializeGetSnapshotResponse },
} as const;

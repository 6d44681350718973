import { RaftServiceService, type FetchSnapshotResponse } from '../gen/snapcoord/v1/raft.js';

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

/**
 * serializeFetchSnapshotResponse encodes a FetchSnapshotResponse into one
 * buffer with a single copy of the chunk's bytes. The generated encoder
 * copies each chunk three times (its growing writer, finish(), Buffer.from),
 * which measured at 1.2 ms of CPU per MiB served: more than its SHA-256.
 * Field order and wire types are protobuf's, so any decoder reads it.
 */
export function serializeFetchSnapshotResponse(m: FetchSnapshotResponse): Buffer {
  const data = m.data;
  const sha = m.sha256;
  let size = 0;
  if (m.offset !== 0n) size += 1 + varintBytes(m.offset);
  if (data.length > 0) size += 1 + varintBytes(BigInt(data.length)) + data.length;
  if (sha.length > 0) size += 1 + varintBytes(BigInt(sha.length)) + sha.length;
  if (m.totalSizeBytes !== 0n) size += 1 + varintBytes(m.totalSizeBytes);
  if (m.last) size += 2;
  const buf = Buffer.allocUnsafe(size);
  let at = 0;
  if (m.offset !== 0n) {
    buf[at++] = 0x08;
    at = writeVarint(buf, at, m.offset);
  }
  if (data.length > 0) {
    buf[at++] = 0x12;
    at = writeVarint(buf, at, BigInt(data.length));
    buf.set(data, at);
    at += data.length;
  }
  if (sha.length > 0) {
    buf[at++] = 0x1a;
    at = writeVarint(buf, at, BigInt(sha.length));
    buf.set(sha, at);
    at += sha.length;
  }
  if (m.totalSizeBytes !== 0n) {
    buf[at++] = 0x20;
    at = writeVarint(buf, at, m.totalSizeBytes);
  }
  if (m.last) {
    buf[at] = 0x28;
    buf[at + 1] = 1;
  }
  return buf;
}

/** RAFT_SERVICE_DEFINITION: the generated RaftService definition with the one-copy FetchSnapshot encoder. */
export const RAFT_SERVICE_DEFINITION = {
  ...RaftServiceService,
  fetchSnapshot: { ...RaftServiceService.fetchSnapshot, responseSerialize: serializeFetchSnapshotResponse },
} as const;

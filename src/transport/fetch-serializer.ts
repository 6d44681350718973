import * as pb from '../gen/snapcoord/v1/raft.js';
import { boundedRequestDecoder, decodeAppendRequest, decodeInstallSnapshotRequest, decodeProposeRequest } from './codec.js';
import { encodeBytesMessage, type BytesMessageField } from './bytes-message.js';
import { installGrpcFrameRoom } from './grpc-frame-room.js';

// Servers of these messages frame them for gRPC where they lie (grpc-frame-room.ts), not in a copy.
installGrpcFrameRoom();

/**
 * serializeFetchSnapshotResponse encodes a FetchSnapshotResponse into one
 * buffer with at most one copy of the chunk's bytes (encodeBytesMessage). The
 * generated encoder copies each chunk three times, which measured at 1.2 ms
 * of CPU per MiB served: more than its SHA-256. A chunk read by readChunks
 * (marked with free room around it) is not copied at all.
 */
export function serializeFetchSnapshotResponse(m: pb.FetchSnapshotResponse): Buffer {
  const before: BytesMessageField[] = m.offset !== 0n ? [{ tag: 0x08, varint: m.offset }] : [];
  const after: BytesMessageField[] = [];
  if (m.sha256.length > 0) after.push({ tag: 0x1a, bytes: m.sha256 });
  if (m.totalSizeBytes !== 0n) after.push({ tag: 0x20, varint: m.totalSizeBytes });
  if (m.last) after.push({ tag: 0x28, varint: 1n });
  return encodeBytesMessage(before, m.data.length > 0 ? { tag: 0x12, data: m.data } : null, after);
}

/**
 * serializeFetchStateImageResponse encodes a FetchStateImageResponse: a chunk
 * of a file (no manifest, no snapshot) as serializeFetchSnapshotResponse
 * encodes its chunks (encodeBytesMessage: in place in the room a
 * readStateImageChunks buffer leaves before it, framed for gRPC there too,
 * no copy of the data), the same bytes the generated encoder writes (its
 * fields in order, zero values left out); the manifest and the snapshot
 * message by the generated encoder.
 */
export function serializeFetchStateImageResponse(m: pb.FetchStateImageResponse): Buffer {
  if (m.files.length > 0 || m.snapshot !== undefined) return Buffer.from(pb.FetchStateImageResponse.encode(m).finish());
  const before: BytesMessageField[] = [];
  if (m.file !== 0) before.push({ tag: 0x10, varint: BigInt(m.file) });
  if (m.offset !== 0n) before.push({ tag: 0x18, varint: m.offset });
  return encodeBytesMessage(before, m.data.length > 0 ? { tag: 0x22, data: m.data } : null, []);
}

/**
 * RAFT_SERVICE_DEFINITION: the generated RaftService definition with the one-copy FetchSnapshot and FetchStateImage encoders,
 * an AppendEntries decoder that counts the entries and the base's ids before it decodes them
 * (decodeAppendRequest), an InstallSnapshot decoder that counts the membership's ids first
 * (decodeInstallSnapshotRequest), a Propose decoder that counts the proposals first (decodeProposeRequest), and every
 * other request's fields bounded by OTHER_FIELDS_MAX before it is decoded (boundedRequestDecoder).
 */
export const RAFT_SERVICE_DEFINITION = {
  ...pb.RaftServiceService,
  appendEntries: { ...pb.RaftServiceService.appendEntries, requestDeserialize: (b: Buffer): pb.AppendEntriesRequest => decodeAppendRequest(b) },
  installSnapshot: { ...pb.RaftServiceService.installSnapshot, requestDeserialize: (b: Buffer): pb.InstallSnapshotRequest => decodeInstallSnapshotRequest(b) },
  propose: { ...pb.RaftServiceService.propose, requestDeserialize: (b: Buffer): pb.ProposeRequest => decodeProposeRequest(b) },
  fetchSnapshot: { ...pb.RaftServiceService.fetchSnapshot, requestDeserialize: boundedRequestDecoder(pb.FetchSnapshotRequest, 'FetchSnapshot'), responseSerialize: serializeFetchSnapshotResponse },
  requestVote: { ...pb.RaftServiceService.requestVote, requestDeserialize: boundedRequestDecoder(pb.RequestVoteRequest, 'RequestVote') },
  timeoutNow: { ...pb.RaftServiceService.timeoutNow, requestDeserialize: boundedRequestDecoder(pb.TimeoutNowRequest, 'TimeoutNow') },
  readIndex: { ...pb.RaftServiceService.readIndex, requestDeserialize: boundedRequestDecoder(pb.ReadIndexRequest, 'ReadIndex') },
  reportSnapshot: { ...pb.RaftServiceService.reportSnapshot, requestDeserialize: boundedRequestDecoder(pb.ReportSnapshotRequest, 'ReportSnapshot') },
  stageArchive: { ...pb.RaftServiceService.stageArchive, requestDeserialize: boundedRequestDecoder(pb.StageArchiveRequest, 'StageArchive') },
  getMembership: { ...pb.RaftServiceService.getMembership, requestDeserialize: boundedRequestDecoder(pb.GetMembershipRequest, 'GetMembership') },
  fetchStateImage: {
    ...pb.RaftServiceService.fetchStateImage,
    requestDeserialize: boundedRequestDecoder(pb.FetchStateImageRequest, 'FetchStateImage'),
    responseSerialize: serializeFetchStateImageResponse,
  },
} as const;

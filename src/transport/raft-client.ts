/**
 * RaftPeerClient: the RaftService client of this node's peer channels (GrpcTransport's, its one-off GetMembership
 * channels, and state image fetches): the generated client, with answer deserializers that count what a peer's answer
 * holds before decoding it (RAFT_CLIENT_DEFINITION), as the peer server counts requests (fetch-serializer.ts
 * RAFT_SERVICE_DEFINITION). A peer's answer is input too: a member's (64 MiB messages), or a stranger's,
 * asked at the peer address its calls advertise (src/node/vouches.ts).
 */
import * as grpc from '@grpc/grpc-js';
import * as pb from '../gen/snapcoord/v1/raft.js';
import { boundedAnswerDecoder, decodeFetchStateImageResponse, decodeGetMembershipResponse, decodeProposeResponse } from './codec.js';

/** RAFT_CLIENT_DEFINITION: the generated RaftService definition with the counting GetMembership, Propose and FetchStateImage answer decoders, every other answer's fields bounded (boundedAnswerDecoder). */
export const RAFT_CLIENT_DEFINITION = {
  ...pb.RaftServiceService,
  getMembership: { ...pb.RaftServiceService.getMembership, responseDeserialize: (b: Buffer): pb.GetMembershipResponse => decodeGetMembershipResponse(b) },
  propose: { ...pb.RaftServiceService.propose, responseDeserialize: (b: Buffer): pb.ProposeResponse => decodeProposeResponse(b) },
  fetchStateImage: { ...pb.RaftServiceService.fetchStateImage, responseDeserialize: (b: Buffer): pb.FetchStateImageResponse => decodeFetchStateImageResponse(b) },
  requestVote: { ...pb.RaftServiceService.requestVote, responseDeserialize: boundedAnswerDecoder(pb.RequestVoteResponse, 'RequestVote answer') },
  appendEntries: { ...pb.RaftServiceService.appendEntries, responseDeserialize: boundedAnswerDecoder(pb.AppendEntriesResponse, 'AppendEntries answer') },
  installSnapshot: { ...pb.RaftServiceService.installSnapshot, responseDeserialize: boundedAnswerDecoder(pb.InstallSnapshotResponse, 'InstallSnapshot answer') },
  reportSnapshot: { ...pb.RaftServiceService.reportSnapshot, responseDeserialize: boundedAnswerDecoder(pb.ReportSnapshotResponse, 'ReportSnapshot answer') },
  timeoutNow: { ...pb.RaftServiceService.timeoutNow, responseDeserialize: boundedAnswerDecoder(pb.TimeoutNowResponse, 'TimeoutNow answer') },
  readIndex: { ...pb.RaftServiceService.readIndex, responseDeserialize: boundedAnswerDecoder(pb.ReadIndexResponse, 'ReadIndex answer') },
  stageArchive: { ...pb.RaftServiceService.stageArchive, responseDeserialize: boundedAnswerDecoder(pb.StageArchiveResponse, 'StageArchive answer') },
  fetchSnapshot: { ...pb.RaftServiceService.fetchSnapshot, responseDeserialize: boundedAnswerDecoder(pb.FetchSnapshotResponse, 'FetchSnapshot answer') },
} as const;

/** RaftPeerClient: a RaftService client whose answers are decoded with RAFT_CLIENT_DEFINITION's deserializers. */
export const RaftPeerClient = grpc.makeGenericClientConstructor(RAFT_CLIENT_DEFINITION, 'snapcoord.v1.RaftService') as unknown as {
  new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ClientOptions>): pb.RaftServiceClient;
};

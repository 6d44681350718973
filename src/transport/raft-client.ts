/**
 * RaftPeerClient: the RaftService client of this node's peer channels (GrpcTransport's, its one-off GetMembership
 * channels, and state image fetches): the generated client, with answer deserializers that count what a peer's answer
 * holds before decoding it (RAFT_CLIENT_DEFINITION), as the peer server counts requests (fetch-serializer.ts
 * RAFT_SERVICE_DEFINITION). A peer's answer is input too: a member's (64 MiB messages), or a stranger's,
 * asked at the peer address its calls advertise (src/node/vouches.ts).
 */
import * as grpc from '@grpc/grpc-js';
import { RaftServiceService, type FetchStateImageResponse, type GetMembershipResponse, type ProposeResponse, type RaftServiceClient } from '../gen/snapcoord/v1/raft.js';
import { decodeFetchStateImageResponse, decodeGetMembershipResponse, decodeProposeResponse } from './codec.js';

/** RAFT_CLIENT_DEFINITION: the generated RaftService definition with the counting GetMembership, Propose and FetchStateImage answer decoders. */
export const RAFT_CLIENT_DEFINITION = {
  ...RaftServiceService,
  getMembership: { ...RaftServiceService.getMembership, responseDeserialize: (b: Buffer): GetMembershipResponse => decodeGetMembershipResponse(b) },
  propose: { ...RaftServiceService.propose, responseDeserialize: (b: Buffer): ProposeResponse => decodeProposeResponse(b) },
  fetchStateImage: { ...RaftServiceService.fetchStateImage, responseDeserialize: (b: Buffer): FetchStateImageResponse => decodeFetchStateImageResponse(b) },
} as const;

/** RaftPeerClient: a RaftService client whose answers are decoded with RAFT_CLIENT_DEFINITION's deserializers. */
export const RaftPeerClient = grpc.makeGenericClientConstructor(RAFT_CLIENT_DEFINITION, 'snapcoord.v1.RaftService') as unknown as {
  new (address: string, credentials: grpc.ChannelCredentials, options?: Partial<grpc.ClientOptions>): RaftServiceClient;
};

/**
 * ClusterClient: ClusterService as promises. Every call has a deadline
 * (`deadlineMs`, default DEFAULT_DEADLINE_MS) and rejects with the call's
 * grpc-js ServiceError.
 */
import type * as grpc from '@grpc/grpc-js';
import {
  ClusterServiceClient,
  type AddMemberResponse,
  type CheckConsistencyRequest,
  type CheckConsistencyResponse,
  type HashStateResponse,
  type RemoveMemberResponse,
  type StatusResponse,
  type TransferLeadershipResponse,
  type VoteResponse,
} from '../gen/snapcoord/v1/cluster.js';
import { dialChannel, type ClientDial } from './dial.js';
import { callUnary, type CallOptions } from './unary-call.js';

/** ClusterClient: ClusterService as promises. */
export class ClusterClient {
  readonly raw: ClusterServiceClient;

  /**
   * A client of the node at `address`; with `channel` (another client's,
   * say a SnapshotClient's getChannel()) its calls share that connection —
   * then close() is that client's to call, not this one's.
   */
  constructor(address: string, dial: ClientDial = {}, channel?: ReturnType<grpc.Client['getChannel']>) {
    const { credentials, options } = dialChannel(dial);
    this.raw = new ClusterServiceClient(address, credentials, channel === undefined ? options : { ...options, channelOverride: channel });
  }

  status(opts?: CallOptions): Promise<StatusResponse> {
    return callUnary(this.raw.status.bind(this.raw), {}, opts);
  }

  addMember(id: string, address: string, learner: boolean, opts?: CallOptions): Promise<AddMemberResponse> {
    return callUnary(this.raw.addMember.bind(this.raw), { id, address, learner }, opts);
  }

  removeMember(id: string, opts?: CallOptions): Promise<RemoveMemberResponse> {
    return callUnary(this.raw.removeMember.bind(this.raw), { id }, opts);
  }

  transferLeadership(targetId: string, opts?: CallOptions): Promise<TransferLeadershipResponse> {
    return callUnary(this.raw.transferLeadership.bind(this.raw), { targetId }, opts);
  }

  vote(opts?: CallOptions): Promise<VoteResponse> {
    return callUnary(this.raw.vote.bind(this.raw), {}, opts);
  }

  hashState(opts?: CallOptions): Promise<HashStateResponse> {
    return callUnary(this.raw.hashState.bind(this.raw), {}, opts);
  }

  /** checkConsistency: CheckConsistency (the leader compares every member's state hash; `req` bounds the wait and attempts). */
  checkConsistency(req: CheckConsistencyRequest, opts?: CallOptions): Promise<CheckConsistencyResponse> {
    return callUnary(this.raw.checkConsistency.bind(this.raw), req, opts);
  }

  close(): void {
    this.raw.close();
  }
}

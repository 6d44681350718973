import { StacklessError } from '../raft/stackless-error.js';
import type { NodeId } from '../raft/types.js';

/**
 * NodeErrorCode names why a node operation failed; the API layer maps each to
 * a gRPC status (see src/api).
 */
export type NodeErrorCode =
  | 'notLeader' // FAILED_PRECONDITION: ask the leader (leaderId/leaderAddress say who, when known)
  | 'failedPrecondition' // FAILED_PRECONDITION: the cluster is not in a state that allows it (a membership change whose new voters would have no reachable quorum); retrying as is fails the same way until that changes
  | 'timeout' // DEADLINE_EXCEEDED: not applied in time; the outcome is unknown
  | 'lost' // ABORTED: the entry was replaced by another leader's; it was not applied
  | 'shuttingDown' // UNAVAILABLE
  | 'busy' // RESOURCE_EXHAUSTED: too many operations waiting
  | 'diskFull' // RESOURCE_EXHAUSTED: the data dir's file system is below its free-space reserve (or full); reads still work
  | 'invalid' // INVALID_ARGUMENT
  | 'unavailable'; // UNAVAILABLE: no quorum, no leader

/**
 * NodeError is every error a node operation rejects with: an answer to its
 * caller (the code says what to do, the message says why), so it captures
 * no stack (StacklessError: clients at a follower are answered notLeader at
 * every write). A fault behind it travels as its message, or its cause.
 */
export class NodeError extends StacklessError {
  override readonly name = 'NodeError';
  constructor(
    readonly code: NodeErrorCode,
    message: string,
    readonly leaderId: NodeId = '',
    readonly leaderAddress: string = '',
  ) {
    super(message);
  }
}

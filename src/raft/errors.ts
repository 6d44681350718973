import { StacklessError } from './stackless-error.js';
import type { NodeId } from './types.js';

/** notLeaderMessage: NotLeaderError's message for a node that knows `leader` as the leader ('' when none). */
export function notLeaderMessage(leader: NodeId): string {
  return leader === '' ? 'not the leader, and no leader is known' : `not the leader; the leader is ${leader}`;
}

/** NotLeaderError: the operation needs the leader; `leader` is the one this node knows of ('' when none). An answer: no stack (StacklessError). */
export class NotLeaderError extends StacklessError {
  override readonly name = 'NotLeaderError';
  constructor(readonly leader: NodeId) {
    super(notLeaderMessage(leader));
  }
}

/**
 * ConfChangeUnsafeError: the membership change would leave the voters that
 * applied an entry (proposeConfChange's appliedFloor) short of a quorum of
 * the new configuration; retry once more members have applied it. An
 * answer: no stack.
 */
export class ConfChangeUnsafeError extends StacklessError {
  override readonly name = 'ConfChangeUnsafeError';
}

/** ProposalDroppedError: the leader cannot take the proposal now (a transfer is under way, or too much is uncommitted). An answer: no stack. */
export class ProposalDroppedError extends StacklessError {
  override readonly name = 'ProposalDroppedError';
}

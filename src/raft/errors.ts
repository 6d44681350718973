import { StacklessError } from './stackless-error.js';
import type { NodeId } from './types.js';

/** NotLeaderError: the operation needs the leader; `leader` is the one this node knows of ('' when none). An answer: no stack (StacklessError). */
export class NotLeaderError extends StacklessError {
  override readonly name = 'NotLeaderError';
  constructor(readonly leader: NodeId) {
    super(leader === '' ? 'not the leader, and no leader is known' : `not the leader; the leader is ${leader}`);
  }
}

/** ProposalDroppedError: the leader cannot take the proposal now (a transfer is under way, or too much is uncommitted). An answer: no stack. */
export class ProposalDroppedError extends StacklessError {
  override readonly name = 'ProposalDroppedError';
}

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

/**
 * ConfChangeUnreachableError: strict reconfiguration (etcd's
 * --strict-reconfig-check, on by default there; always on here). The change
 * would leave fewer voters this leader heard from recently (within
 * CONF_CHANGE_HEARD_ELECTION_TIMEOUTS election timeouts) than a quorum of the
 * voters after it: with the new configuration in force from its append, the
 * change could not commit, and the cluster would have no leader until the
 * `unreachable` voters (of the new configuration) answer again, and the
 * change would likely be lost. Nothing was proposed. `undecided`: with the
 * voters among them that this leader has not had that long to hear from yet
 * (it took office, or added them, less than that ago, and they have not
 * answered since), a quorum could still be reachable: the same change
 * proposed again soon may be taken (Node.changeMembership asks again until
 * it is decided). An answer: no stack.
 */
export class ConfChangeUnreachableError extends StacklessError {
  override readonly name = 'ConfChangeUnreachableError';
  constructor(
    message: string,
    readonly unreachable: readonly NodeId[],
    readonly undecided: boolean,
  ) {
    super(message);
  }
}

/** ProposalDroppedError: the leader cannot take the proposal now (a transfer is under way, or too much is uncommitted). An answer: no stack. */
export class ProposalDroppedError extends StacklessError {
  override readonly name = 'ProposalDroppedError';
}

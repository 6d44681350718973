import type { RaftBrief, RaftStatus } from '../raft/index.js';

/** NodeStatus is the Raft status plus the node's own addresses view and disk state. */
export interface NodeStatus extends RaftStatus {
  readonly leaderAddress: string;
  /** diskFull: new writes are refused because the data dir is below its free-space reserve. */
  readonly diskFull: boolean;
  /**
   * restoreFailure: the last restore entry applied as a no-op here because its
   * archive could not be applied (the same on every node), with why; null if none.
   */
  readonly restoreFailure: { readonly index: number; readonly error: string } | null;
  /** refusedBy: members whose peer guard refuses this node's messages, with the reason each gave (Transport.refusals). */
  readonly refusedBy: Readonly<Record<string, string>>;
}

/** NodeBrief: Node.brief(), the RaftBrief with the leader's address and the state machine's applied index (as in NodeStatus). */
export interface NodeBrief extends RaftBrief {
  readonly leaderAddress: string;
}

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
  /** snapshotScrub: the node's snapshot scrub (SnapshotManager.scrubStatus); absent without a snapshot store. */
  readonly snapshotScrub?: SnapshotScrubStatus;
}

/** SnapshotScrubStatus: a node's re-hashing of its stored archives since it started (boot, periodic and asked runs). */
export interface SnapshotScrubStatus {
  /** intervalMs: the periodic scrub's interval (0: off). */
  readonly intervalMs: number;
  readonly runs: number;
  /** bytes: archive bytes re-hashed. */
  readonly bytes: number;
  /** damaged: archives found not matching their recorded hashes (moved to quarantine). */
  readonly damaged: number;
  /** lastAgoMs: since the last run ended, on the node's clock; null when none has. */
  readonly lastAgoMs: number | null;
}

/** NodeBrief: Node.brief(), the RaftBrief with the leader's address and the state machine's applied index (as in NodeStatus). */
export interface NodeBrief extends RaftBrief {
  readonly leaderAddress: string;
}

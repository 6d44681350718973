/**
 * ProgressState: how the leader replicates to one follower (etcd-io/raft's
 * design): `probe` sends one append per heartbeat round until the match point
 * is found, `replicate` pipelines up to a cap of appends in flight, `snapshot`
 * waits while the follower fetches and installs a snapshot.
 */
export type ProgressState = 'probe' | 'replicate' | 'snapshot';

/** Progress is the leader's view of one member's log. */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** probeSent: in probe state, an append is in flight; wait for its answer or a heartbeat answer. */
  probeSent = false;
  /** pendingSnapshot: index of the snapshot the follower is installing (snapshot state). */
  pendingSnapshot = 0;
  /** snapshotTicksIdle: ticks since the follower last confirmed it is still installing. */
  snapshotTicksIdle = 0;
  /**
   * installGuard: the snapshot index this follower is known (it said so) or
   * believed (we offered it) to be fetching or installing, 0 when none. The
   * leader compacts nothing after it (the follower needs the next entry once
   * its install is done), in any progress state, until the follower reports
   * the install done or failed, says it installs nothing, matches past it, or
   * stays silent for snapshotGuardTicksMax ticks.
   */
  installGuard = 0;
  /**
   * reportedInstall: this follower answered an append or a heartbeat of this
   * leader's term, saying whether it installs a snapshot (installGuard took
   * that over from any install floor the previous leader announced).
   */
  reportedInstall = false;
  /** needsBase: the index a snapshot must reach for this follower's state machine (its last heartbeat answer's needsSnapshot; 0: none; -1: no answer yet). */
  needsBase = -1;
  /** ticksSinceHeard: ticks since this follower last answered anything (or since this Progress was made: see heard). */
  ticksSinceHeard = 0;
  /** heard: this follower answered something since this leader made its Progress (took office, or the member was added). */
  heard = false;
  /** recentActive: heard from within the current election timeout (CheckQuorum). */
  recentActive = false;
  /** applied: the highest state-machine applied index this member reported (heartbeat answers); 0 until one does. */
  applied = 0;
  /** snapshotIndex: the snapshot this member said in its last heartbeat answer it holds and could offer as leader (0: none, lost, or no answer yet). */
  snapshotIndex = 0;
  /** readSeqAcked: highest ReadIndex round this member acknowledged. */
  readSeqAcked = 0;
  private readonly inflight: number[] = [];
  /** forgotAt: the match at which the follower rejected the append after it once (forgot), -1 when none since its last acknowledgement. */
  private forgotAt = -1;

  constructor(
    next: number,
    private readonly maxInflight: number,
  ) {
    this.next = next;
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      this.next = Math.max(this.match + 1, this.pendingSnapshot + 1);
    } else {
      this.next = this.match + 1;
    }
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflight.length = 0;
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.next = this.match + 1;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflight.length = 0;
  }

  becomeSnapshot(index: number): void {
    this.state = 'snapshot';
    this.pendingSnapshot = index;
    // An install the follower already reported keeps its (lower) guard: a new offer does not restart it.
    this.installGuard = this.installGuard > 0 ? Math.min(this.installGuard, index) : index;
    this.snapshotTicksIdle = 0;
    this.probeSent = false;
    this.inflight.length = 0;
  }

  /** maybeUpdate records a successful append up to index; false when it tells nothing new. */
  maybeUpdate(index: number): boolean {
    this.forgotAt = -1;
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    if (this.next < index + 1) this.next = index + 1;
    if (this.installGuard > 0 && this.match >= this.installGuard) this.installGuard = 0; // it holds what follows the snapshot
    return updated;
  }

  /**
   * forgot handles a rejected append of prevLogIndex `rejected` whose `hint`
   * is 0 (the follower's log is empty) from a follower that acknowledged
   * entries: a voter whose data dir was lost, started again under its id.
   * maybeDecrTo takes any rejection at or below match for a stale one, so
   * the leader sent such a follower the append after its old match for ever
   * (it never caught up) and went on counting that match toward commits. A
   * rejection of the append that follows match may still be stale (sent
   * before the follower had the entries, delivered late), so one is only
   * noted; a second in a row, with no acknowledgement between (maybeUpdate
   * forgets the note), says the follower lost them: match falls back to 0
   * and the follower is probed from there. Returns true when it did.
   */
  forgot(rejected: number, hint: number): boolean {
    if (hint !== 0 || rejected !== this.match || this.next !== this.match + 1 || this.match === 0) return false;
    if (this.forgotAt !== this.match) {
      this.forgotAt = this.match;
      return false;
    }
    this.forgotAt = -1;
    this.match = hint;
    if (this.state === 'snapshot') this.state = 'probe';
    this.becomeProbe();
    return true;
  }

  /**
   * maybeDecrTo handles a rejected append of prevLogIndex `rejected`; `hint` is
   * where the leader should retry. Returns false for a stale rejection.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = Math.max(this.match + 1, Math.min(rejected, hint + 1));
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(1, this.match + 1, Math.min(rejected, hint + 1));
    this.probeSent = false;
    return true;
  }

  /** sentAppend records an append ending at lastIndex that was just sent. */
  sentAppend(lastIndex: number, entryCount: number): void {
    if (this.state === 'replicate') {
      if (entryCount > 0) {
        this.next = lastIndex + 1;
        this.inflight.push(lastIndex);
      }
    } else if (this.state === 'probe') {
      this.probeSent = true;
    }
  }

  /** freeTo releases the inflight appends acknowledged up to index. */
  freeTo(index: number): void {
    let n = 0;
    while (n < this.inflight.length && (this.inflight[n] ?? 0) <= index) n++;
    if (n > 0) this.inflight.splice(0, n);
  }

  /** freeFirst releases one inflight slot (a heartbeat answer while the pipeline is full). */
  freeFirst(): void {
    if (this.inflight.length >= this.maxInflight) this.inflight.shift();
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflight.length >= this.maxInflight;
      case 'snapshot':
        return true;
    }
  }

  inflightCount(): number {
    return this.inflight.length;
  }
}

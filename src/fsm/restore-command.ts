/**
 * A restore entry replaces the whole key-value state through the Raft log:
 * its data names an uploaded archive (held by the leader that proposed it);
 * every node applies it by installing that archive's state at the entry's
 * index. Its first byte (0x52, 'R') is one no KV command starts with.
 */
export const RESTORE_MAGIC = 0x52;

import { sessionStampProblem, type SessionStamp } from './sessions.js';

export interface RestoreCommand {
  /** hex SHA-256 of the archive. */
  readonly digest: string;
  readonly sizeBytes: number;
  /** index and term recorded in the archive (of the cluster it came from). */
  readonly index: number;
  readonly term: number;
  /** the client request id that makes the restore idempotent (applied at most once), when the caller gave one. */
  readonly session?: SessionStamp;
  /**
   * recordsDigest: hex SHA-256 of the archive's carried records in key order
   * (restore-digest.ts defines it), computed by the leader as it checked the
   * upload. A node installing the entry (from the archive or from the
   * leader's state image) checks what it installs against it. Absent in
   * entries written before it existed: those are applied unchecked.
   */
  readonly recordsDigest?: string;
}

const encoder = new TextEncoder();
/** SHA256_HEX: a lowercase hex SHA-256 (the archive's digest, the records digest). */
const SHA256_HEX = /^[0-9a-f]{64}$/;
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeRestoreCommand(c: RestoreCommand): Uint8Array {
  const fields = {
    digest: c.digest,
    sizeBytes: c.sizeBytes,
    index: c.index,
    term: c.term,
    ...(c.session !== undefined ? { session: { clientId: c.session.clientId, seq: c.session.seq } } : {}),
    ...(c.recordsDigest !== undefined ? { recordsDigest: c.recordsDigest } : {}),
  };
  const body = encoder.encode(JSON.stringify(fields));
  const out = new Uint8Array(body.length + 1);
  out[0] = RESTORE_MAGIC;
  out.set(body, 1);
  return out;
}

export function isRestoreCommand(data: Uint8Array): boolean {
  return data.length > 1 && data[0] === RESTORE_MAGIC;
}

/** decodeRestoreCommand parses a restore entry; null when malformed (applied as a failed no-op). */
export function decodeRestoreCommand(data: Uint8Array): RestoreCommand | null {
  try {
    const v = JSON.parse(decoder.decode(data.subarray(1))) as Record<string, unknown>;
    const { digest, sizeBytes, index, term, recordsDigest } = v;
    if (typeof digest !== 'string' || !SHA256_HEX.test(digest)) return null;
    for (const n of [sizeBytes, index, term]) if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) return null;
    if (recordsDigest !== undefined && (typeof recordsDigest !== 'string' || !SHA256_HEX.test(recordsDigest))) return null;
    const cmd = { digest, sizeBytes: sizeBytes as number, index: index as number, term: term as number, ...(recordsDigest !== undefined ? { recordsDigest } : {}) };
    if (v.session === undefined) return cmd;
    const s = v.session as { clientId?: unknown; seq?: unknown } | null;
    if (typeof s !== 'object' || s === null || typeof s.clientId !== 'string' || typeof s.seq !== 'number') return null;
    const session = { clientId: s.clientId, seq: s.seq };
    return sessionStampProblem(session) === null ? { ...cmd, session } : null;
  } catch {
    return null;
  }
}

/**
 * RestoreRefs tracks the restore entries in a node's log (index -> archive
 * digest), so that retention never deletes an archive a restore entry still
 * in the log names: a node that has not applied it yet (a lagging follower,
 * one that restarts) fetches it from any holder. Fed with what the node
 * persists: entries (a write at index i replaces every entry from i on), log
 * resets and compactions (entries up to an index are gone).
 */
export class RestoreRefs {
  private readonly byIndex = new Map<number, string>();
  /** newest: the highest index of a restore entry noted, compacted or not (newestIndex). */
  private newest = 0;
  /** newestGone: the highest index of a restore entry noted that left the log by a compaction, or by a log reset whose snapshot covers it (not by a replacement). */
  private newestGone = 0;
  /**
   * discarded: restore entries a log reset discarded past its snapshot's index. Not counted: one that was committed
   * comes again from the leader, as an entry (noted again) or inside a later snapshot (counted by that reset or
   * compaction); one that does not was never committed. Emptied by the next entries written (they start right after
   * the reset's index, so they replace all of them).
   */
  private discarded: number[] = [];

  /** noteEntries records the restore entries among `entries`, just persisted (they replace any entry at or after the first one's index). */
  noteEntries(entries: readonly { readonly index: number; readonly type: string; readonly data: Uint8Array }[]): void {
    const first = entries[0];
    if (first === undefined) return;
    for (const i of [...this.byIndex.keys()]) if (i >= first.index) this.byIndex.delete(i);
    this.discarded = this.discarded.filter((i) => i < first.index);
    // A replaced entry was never committed (Raft replaces only entries past the commit index), so no member applies
    // it: the newest is the newest of what is left. Else a restore appended at index i and replaced by a shorter log
    // held every change of the voters until the log grew back to i and a quorum applied whatever entry got there.
    if (first.index <= this.newest) {
      this.newest = this.newestGone;
      for (const i of this.byIndex.keys()) if (i > this.newest) this.newest = i;
    }
    for (const e of entries) {
      if (e.type !== 'normal' || !isRestoreCommand(e.data)) continue;
      const cmd = decodeRestoreCommand(e.data);
      if (cmd !== null) {
        this.byIndex.set(e.index, cmd.digest);
        if (e.index > this.newest) this.newest = e.index;
      }
    }
  }

  /**
   * newestIndex: the highest index of a restore entry this node has noted
   * since it started, compacted or discarded since or not (0: none). The
   * leader's membership changes wait until a quorum of the new voters applied
   * it (Node.changeMembership). One later replaced by another entry (never
   * committed) no longer counts; one compacted, or covered by the snapshot of
   * a log reset, does; one a log reset discarded past its snapshot counts
   * again only if the leader sends it again (as an entry, or inside a later
   * snapshot). So it is never above what this node's log holds or held:
   * as leader, a quorum can always apply up to it. Not kept across a restart:
   * there it is the newest still in the log (the state machine keeps the last
   * one it applied: restore-floor.ts).
   */
  newestIndex(): number {
    return this.newest;
  }

  /** dropThrough forgets the entries up to `index` (compacted away, or replaced by a snapshot's log reset). */
  dropThrough(index: number): void {
    for (const i of [...this.byIndex.keys()]) {
      if (i > index) continue;
      this.byIndex.delete(i);
      if (i > this.newestGone) this.newestGone = i;
    }
    this.countDiscardedThrough(index);
  }

  /**
   * clear forgets every entry: a log reset to a snapshot at `snapshotIndex`
   * discards the whole log. The restore entries at or below it count as
   * compacted (the snapshot holds what they did); those past it are
   * discarded: a committed one comes again from the leader, one that does not
   * was never committed (see newestIndex).
   */
  clear(snapshotIndex: number): void {
    this.countDiscardedThrough(snapshotIndex);
    for (const i of this.byIndex.keys()) {
      if (i <= snapshotIndex) {
        if (i > this.newestGone) this.newestGone = i;
      } else {
        this.discarded.push(i);
      }
    }
    this.byIndex.clear();
    // Before: the newest noted was kept, so a restore an old leader appended past the reset's snapshot and no
    // member committed held every change of the voters while this node led, until its log grew back to that index
    // and a quorum applied whatever entry got there (in a quiet cluster, never), as a replaced one did before 4cba045.
    this.newest = this.newestGone;
  }

  /** countDiscardedThrough: discarded entries at or below `index` are inside a snapshot now (compacted or reset to). */
  private countDiscardedThrough(index: number): void {
    for (const i of this.discarded) if (i <= index && i > this.newestGone) this.newestGone = i;
    this.discarded = this.discarded.filter((i) => i > index);
    if (this.newestGone > this.newest) this.newest = this.newestGone;
  }

  /** digests: the archives named by restore entries still in the log. */
  digests(): Set<string> {
    return new Set(this.byIndex.values());
  }
}

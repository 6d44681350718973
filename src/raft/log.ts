import type { Entry } from './types.js';

/** LogPosition names one entry by index and term. */
export interface LogPosition {
  readonly index: number;
  readonly term: number;
}

/**
 * RaftLog is the in-memory view of one node's log: every entry after the last
 * compacted one (the base), which entries the driver has persisted (stable),
 * and the commit and apply cursors. Memory is bounded by compaction: the driver
 * calls compact() after each snapshot.
 *
 * Invariants: base.index <= applied <= committed <= lastIndex();
 * stableIndex <= lastIndex(); entries[i].index === base.index + 1 + i.
 */
export class RaftLog {
  private entries: Entry[];
  private base: LogPosition;
  /** stableIndex: the last index known to be persisted by the driver. */
  stableIndex: number;
  committed: number;
  applied: number;

  constructor(base: LogPosition, entries: readonly Entry[], committed: number, applied: number) {
    this.base = base;
    this.entries = [];
    for (const e of entries) {
      if (e.index !== base.index + 1 + this.entries.length) {
        throw new Error(`RaftLog: entry ${e.index} is not contiguous with base ${base.index}`);
      }
      this.entries.push(e);
    }
    this.stableIndex = this.lastIndex();
    this.applied = Math.max(applied, base.index);
    this.committed = Math.min(Math.max(committed, this.applied), this.lastIndex());
  }

  baseIndex(): number {
    return this.base.index;
  }

  firstIndex(): number {
    return this.base.index + 1;
  }

  lastIndex(): number {
    return this.base.index + this.entries.length;
  }

  lastTerm(): number {
    const last = this.entries[this.entries.length - 1];
    return last === undefined ? this.base.term : last.term;
  }

  /** term returns the term of the entry at index, or undefined when it is compacted away or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.base.index) return this.base.term;
    if (index < this.base.index || index > this.lastIndex()) return undefined;
    return this.entry(index).term;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** entry returns the entry at index; the caller guarantees firstIndex() <= index <= lastIndex(). */
  entry(index: number): Entry {
    const e = this.entries[index - this.base.index - 1];
    if (e === undefined) throw new Error(`RaftLog: no entry at ${index} (first ${this.firstIndex()}, last ${this.lastIndex()})`);
    return e;
  }

  /**
   * slice returns entries [lo, hi) but stops once maxBytes of data are reached
   * (always at least one entry when lo < hi). lo must be >= firstIndex().
   */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entry(i);
      bytes += e.data.length;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** isUpToDate: Raft §5.4.1 — a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * append appends entries, first removing every entry at or after entries[0].index.
   * Returns the index of the first entry removed (truncation point) or 0 when none were.
   * Committed entries are never removed: that would be a safety bug, so it throws.
   */
  append(ents: readonly Entry[]): number {
    const first = ents[0];
    if (first === undefined) return 0;
    if (first.index <= this.committed) {
      throw new Error(`RaftLog: refusing to overwrite committed entry ${first.index} (committed ${this.committed})`);
    }
    if (first.index > this.lastIndex() + 1) {
      throw new Error(`RaftLog: gap before entry ${first.index} (last ${this.lastIndex()})`);
    }
    let truncatedAt = 0;
    if (first.index <= this.lastIndex()) {
      truncatedAt = first.index;
      this.entries.length = first.index - this.base.index - 1;
      this.stableIndex = Math.min(this.stableIndex, first.index - 1);
    }
    for (const e of ents) this.entries.push(e);
    return truncatedAt;
  }

  /**
   * findConflict returns the index of the first entry of ents whose term differs
   * from ours or that we do not have, or 0 when we hold all of them already.
   */
  findConflict(ents: readonly Entry[]): number {
    for (const e of ents) {
      if (e.index < this.firstIndex()) continue; // compacted, hence committed and matching
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * findConflictByTerm returns the largest index <= index whose term is <= term
   * (or the base index). Used for fast backtracking: a whole term of
   * mismatching entries is skipped in one round trip.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.base.index) {
      const t = this.term(i);
      if (t !== undefined && t <= term) break;
      i--;
    }
    return i;
  }

  /** unstable returns the entries the driver has not persisted yet. */
  unstable(): Entry[] {
    if (this.stableIndex >= this.lastIndex()) return [];
    return this.entries.slice(Math.max(this.stableIndex, this.base.index) - this.base.index);
  }

  /** stableTo records that entries up to pos were persisted, if pos is still in the log. */
  stableTo(pos: LogPosition): void {
    if (this.matchTerm(pos.index, pos.term) && pos.index > this.stableIndex) this.stableIndex = pos.index;
  }

  commitTo(index: number): boolean {
    if (index <= this.committed) return false;
    if (index > this.lastIndex()) throw new Error(`RaftLog: commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
    return true;
  }

  appliedTo(index: number): void {
    if (index > this.applied) this.applied = index;
  }

  /** nextToApply returns committed entries not yet applied, up to maxBytes (at least one). */
  nextToApply(maxBytes: number): Entry[] {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, maxBytes);
  }

  /** compact drops entries up to index (<= applied); returns the new base. */
  compact(index: number): LogPosition {
    if (index <= this.base.index) return this.base;
    if (index > this.applied) throw new Error(`RaftLog: cannot compact ${index} beyond applied ${this.applied}`);
    const term = this.term(index);
    if (term === undefined) throw new Error(`RaftLog: no entry at ${index} to compact to`);
    this.entries = this.entries.slice(index - this.base.index);
    this.base = { index, term };
    return this.base;
  }

  /** reset discards the whole log and makes pos the base (snapshot restore). */
  reset(pos: LogPosition): void {
    this.entries = [];
    this.base = pos;
    this.stableIndex = pos.index;
    this.committed = pos.index;
    this.applied = pos.index;
  }

  /** entriesAfter returns every entry with index > index (for membership scans). */
  entriesAfter(index: number): readonly Entry[] {
    return this.entries.slice(Math.max(0, index - this.base.index));
  }
}

import { sameMembership } from '../raft/membership.js';
import type { Entry, HardState, Membership } from '../raft/types.js';
import { copyMembership, isMembership } from './state-transfer.js';
import { StorageError } from './storage-error.js';
import type { CompactionBase, LogBase } from './types.js';

/** LogBounds is what a LogStore knows of its log: the base and the last index (== base.index when empty). */
export interface LogBounds {
  readonly base: LogBase;
  readonly lastIndex: number;
}

function isIndex(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/**
 * checkHardState throws StorageError `invalidArgument` unless term and
 * commit are non-negative safe integers and vote is a string.
 */
export function checkHardState(hardState: HardState, path: string): void {
  if (!isIndex(hardState.term) || !isIndex(hardState.commit) || typeof hardState.vote !== 'string') {
    throw new StorageError('invalidArgument', `log ${path}: invalid hard state ${JSON.stringify(hardState)}`, {
      path,
    });
  }
}

/**
 * checkAppend validates entries to save on a log with `bounds` and returns
 * the new last index. The entries must be contiguous, have safe-integer
 * terms, start after the base and at most one past the last index.
 * Errors: StorageError `invalidArgument` naming the offending index.
 */
export function checkAppend(entries: readonly Entry[], bounds: LogBounds, path: string): number {
  const first = entries[0];
  if (first === undefined) return bounds.lastIndex;
  const bad = (why: string): StorageError =>
    new StorageError('invalidArgument', `log ${path}: cannot append: ${why}`, { path });
  if (!isIndex(first.index) || first.index <= bounds.base.index) {
    throw bad(`entry ${first.index} is at or below the compacted base ${bounds.base.index}`);
  }
  if (first.index > bounds.lastIndex + 1) {
    throw bad(`entry ${first.index} leaves a gap after the last index ${bounds.lastIndex}`);
  }
  let expected = first.index;
  for (const entry of entries) {
    if (entry.index !== expected) throw bad(`entry ${entry.index} where ${expected} was expected (not contiguous)`);
    if (!isIndex(entry.term)) throw bad(`entry ${entry.index} has invalid term ${entry.term}`);
    if (entry.type !== 'normal' && entry.type !== 'conf') {
      throw bad(`entry ${entry.index} has unknown type ${String(entry.type)}`);
    }
    expected++;
  }
  return expected - 1;
}

/**
 * CompactionPlan: delete entries with index in [deleteFrom, deleteTo]
 * (none when deleteFrom > deleteTo), then record `base`; `lastIndex` is the
 * log's last index afterwards.
 */
export interface CompactionPlan {
  /** base: the validated base to record (a private copy of the caller's). */
  readonly base: LogBase & CompactionBase;
  readonly deleteFrom: number;
  readonly deleteTo: number;
  readonly lastIndex: number;
}

/**
 * planCompaction decides what compact(base) does on a log with `bounds`,
 * given the term of the persisted entry at base.index (undefined when the
 * log holds none): null for a no-op (base not above the current one; at
 * index 0 on an empty log, one with the same membership: a different one
 * replaces the base's membership, nothing deleted); otherwise keep the
 * suffix after base.index only when that entry's term matches base.term
 * (Raft §7). Errors: StorageError `invalidArgument` for a
 * base whose index or term is not a non-negative safe integer, or whose
 * membership is malformed.
 */
export function planCompaction(
  given: CompactionBase,
  bounds: LogBounds,
  termAtBase: number | undefined,
  path: string,
): CompactionPlan | null {
  if (!isIndex(given.index) || !isIndex(given.term)) {
    throw new StorageError('invalidArgument', `log ${path}: invalid compaction base ${JSON.stringify(given)}`, {
      path,
    });
  }
  if (!isMembership(given.membership)) {
    throw new StorageError('invalidArgument', `log ${path}: compaction base ${given.index} has a malformed membership`, { path });
  }
  const base = { index: given.index, term: given.term, membership: copyMembership(given.membership) };
  if (base.index === 0 && bounds.base.index === 0 && bounds.lastIndex === 0) {
    // A log still empty takes the base membership its leader's first append brought (RaftNode.adoptBase).
    const same = bounds.base.membership !== null && sameMembership(base.membership, bounds.base.membership);
    return same ? null : { base, deleteFrom: 1, deleteTo: 0, lastIndex: 0 };
  }
  if (base.index <= bounds.base.index) return null;
  const deleteFrom = bounds.base.index + 1;
  const keepSuffix = base.index < bounds.lastIndex && termAtBase === base.term;
  if (keepSuffix) return { base, deleteFrom, deleteTo: base.index, lastIndex: bounds.lastIndex };
  return { base, deleteFrom, deleteTo: bounds.lastIndex, lastIndex: base.index };
}

/**
 * checkBootstrapMembership validates the membership given to LogStore.bootstrap
 * and returns a private copy. Errors: StorageError `invalidArgument`.
 */
export function checkBootstrapMembership(membership: unknown, path: string): Membership {
  if (!isMembership(membership)) {
    throw new StorageError('invalidArgument', `log ${path}: bootstrap membership is malformed`, { path });
  }
  return copyMembership(membership);
}

/** EMPTY_HARD_STATE is the hard state of a node that never persisted one. */
export const EMPTY_HARD_STATE: HardState = { term: 0, vote: '', commit: 0 };

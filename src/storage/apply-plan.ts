import type { Membership } from '../raft/types.js';
import { decodeCommand, KvCommandError } from './kv-command.js';
import { StorageError } from './storage-error.js';
import type { ApplyItem, ApplyResult } from './types.js';

/** KvWrite is one change to the key-value data: a put, or a delete when value is null. */
export interface KvWrite {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/**
 * ApplyPlan is what one StateMachine.apply call must write atomically:
 * `writes` in order (a later write to a key wins), the new applied index and,
 * when a conf entry set one, the new membership.
 */
export interface ApplyPlan {
  readonly writes: KvWrite[];
  readonly results: ApplyResult[];
  readonly appliedIndex: number;
  /** the membership to record; undefined when no applied conf entry carried one. */
  readonly membership: Membership | undefined;
}

/**
 * planApply turns `items` into the writes of one apply call on a state
 * machine at `appliedIndex`: items at or below it are skipped, the rest must
 * follow on one by one. Pure and deterministic: the same items give the same
 * plan on every node. Malformed commands become `ok: false` results.
 * Errors: StorageError `invalidArgument` on a gap or a membership carried by
 * a `normal` entry.
 */
export function planApply(items: readonly ApplyItem[], appliedIndex: number, path: string): ApplyPlan {
  const writes: KvWrite[] = [];
  const results: ApplyResult[] = [];
  let applied = appliedIndex;
  let membership: Membership | undefined;
  for (const { entry, membership: itemMembership } of items) {
    if (entry.index <= applied) continue;
    if (entry.index !== applied + 1) {
      throw new StorageError(
        'invalidArgument',
        `apply on ${path}: entry ${entry.index} does not follow the applied index ${applied}`,
        { path },
      );
    }
    applied = entry.index;
    if (entry.type === 'conf') {
      if (itemMembership !== undefined) membership = itemMembership;
      results.push({ index: entry.index, ok: true });
      continue;
    }
    if (itemMembership !== undefined) {
      throw new StorageError('invalidArgument', `apply on ${path}: normal entry ${entry.index} carries a membership`, {
        path,
      });
    }
    if (entry.data.length === 0) {
      results.push({ index: entry.index, ok: true });
      continue;
    }
    try {
      const command = decodeCommand(entry.data);
      const ops = command.op === 'batch' ? command.ops : [command];
      for (const op of ops) writes.push({ key: op.key, value: op.op === 'put' ? op.value : null });
      results.push({ index: entry.index, ok: true });
    } catch (err) {
      if (!(err instanceof KvCommandError)) throw err;
      results.push({ index: entry.index, ok: false, code: err.code, error: err.message });
    }
  }
  return { writes, results, appliedIndex: applied, membership };
}

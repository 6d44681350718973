import type { Membership } from '../raft/types.js';
import { decodeCommand, KvCommandError, type KvCommand } from './kv-command.js';
import { SessionPlanner, SessionTable, type SessionChanges } from './sessions.js';
import { StorageError } from './storage-error.js';
import type { ApplyItem, ApplyResult } from './types.js';

/** KvWrite is one change to the key-value data: a put, or a delete when value is null. */
export interface KvWrite {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/**
 * ApplyPlan is what one StateMachine.apply call must write atomically:
 * `writes` in order (a later write to a key wins; the client session records
 * that changed come last, under their reserved keys), the new applied index
 * and, when a conf entry set one, the new membership. `sessionChanges` is to
 * be committed to the state machine's SessionTable once the batch is written.
 */
export interface ApplyPlan {
  readonly writes: KvWrite[];
  readonly results: ApplyResult[];
  readonly appliedIndex: number;
  /** the membership to record; undefined when no applied conf entry carried one. */
  readonly membership: Membership | undefined;
  readonly sessionChanges: SessionChanges;
}

/**
 * ApplyContext is the state planApply reads: the session table (an empty one
 * when absent) and, for the single deletes that carry a request id, whether
 * their key exists before this apply call (`existed`; keys listed by
 * sessionProbeKeys; absent: treated as missing).
 */
export interface ApplyContext {
  readonly sessions?: SessionTable;
  readonly existed?: (key: Uint8Array) => boolean;
}

function decodeOrNull(data: Uint8Array): KvCommand | null {
  try {
    return decodeCommand(data);
  } catch (err) {
    if (err instanceof KvCommandError) return null;
    throw err;
  }
}

/**
 * sessionProbeKeys lists the keys whose prior existence planApply needs
 * (ApplyContext.existed): those of the single deletes carrying a request id,
 * among the items above `appliedIndex`.
 */
export function sessionProbeKeys(items: readonly ApplyItem[], appliedIndex: number): Uint8Array[] {
  const keys: Uint8Array[] = [];
  for (const { entry } of items) {
    if (entry.index <= appliedIndex || entry.type !== 'normal' || entry.data.length === 0) continue;
    const command = decodeOrNull(entry.data);
    if (command !== null && command.session !== undefined && command.op === 'delete') keys.push(command.key);
  }
  return keys;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/**
 * planApply turns `items` into the writes of one apply call on a state
 * machine at `appliedIndex`: items at or below it are skipped, the rest must
 * follow on one by one. Pure and deterministic: the same items and context
 * give the same plan on every node. Malformed commands become `ok: false`
 * results. A command carrying a request id (sessions.ts) that the table
 * remembers writes nothing and gets its first result (`firstIndex`); one
 * older than those remembered writes nothing and fails `requestIdExpired`;
 * a new one is applied and its result recorded.
 * Errors: StorageError `invalidArgument` on a gap or a membership carried by
 * a `normal` entry.
 */
export function planApply(items: readonly ApplyItem[], appliedIndex: number, path: string, context: ApplyContext = {}): ApplyPlan {
  const writes: KvWrite[] = [];
  const results: ApplyResult[] = [];
  const sessions = new SessionPlanner(context.sessions ?? new SessionTable());
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
    let command: KvCommand;
    try {
      command = decodeCommand(entry.data);
    } catch (err) {
      if (!(err instanceof KvCommandError)) throw err;
      results.push({ index: entry.index, ok: false, code: err.code, error: err.message });
      continue;
    }
    const stamp = command.session;
    if (stamp !== undefined) {
      const seen = sessions.lookup(stamp);
      if (seen.kind === 'seen') {
        const { index: firstIndex, deleted } = seen.result;
        results.push({ index: entry.index, ok: true, firstIndex, ...(deleted !== undefined ? { deleted } : {}) });
        continue;
      }
      if (seen.kind === 'expired') {
        results.push({
          index: entry.index,
          ok: false,
          code: 'requestIdExpired',
          error: `request id ${stamp.seq} of client ${JSON.stringify(stamp.clientId)} is older than the ones remembered (up to ${seen.floorSeq} forgotten); it was not applied again, its first outcome is unknown`,
        });
        continue;
      }
    }
    let deleted: number | undefined;
    if (stamp !== undefined && command.op === 'delete') {
      // Did the key exist just before this entry? The last earlier write in this call decides, else the state.
      let existed: boolean | undefined;
      for (let i = writes.length - 1; i >= 0 && existed === undefined; i--) {
        const w = writes[i] as KvWrite;
        if (sameBytes(w.key, command.key)) existed = w.value !== null;
      }
      deleted = (existed ?? context.existed?.(command.key) ?? false) ? 1 : 0;
    }
    const ops = command.op === 'batch' ? command.ops : [command];
    for (const op of ops) writes.push({ key: op.key, value: op.op === 'put' ? op.value : null });
    if (stamp !== undefined) sessions.record(stamp, entry.index, deleted === undefined ? { index: entry.index } : { index: entry.index, deleted });
    results.push({ index: entry.index, ok: true, ...(deleted !== undefined ? { deleted } : {}) });
  }
  writes.push(...sessions.writes());
  return { writes, results, appliedIndex: applied, membership, sessionChanges: sessions.changes };
}

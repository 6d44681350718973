import type { Membership } from '../raft/types.js';
import { decodeKeyRevision, encodeKeyRevision, LEGACY_REVISION, revisionKey, type KeyRevision } from './key-revision.js';
import { decodeOpsRecord, isOpsRecord } from './ops-record.js';
import { decodeCommand, KvCommandError, type KvCommand, type KvCompare, type KvTxnOp } from './kv-command.js';
import { SessionPlanner, SessionTable, type SessionChanges } from './sessions.js';
import { StorageError } from '../storage/storage-error.js';
import { KeyNames } from '../storage/key-string.js';
import type { ApplyItem, ApplyResult, StoredKeyValue, TxnOpResult } from './types.js';

/** KvWrite is one change to the key-value data: a put, or a delete when value is null. */
export interface KvWrite {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/**
 * ApplyPlan is what one StateMachine.apply call must write atomically:
 * `writes` in order (a later write to a key wins; each data write is followed
 * by the write of its key revision record, key-revision.ts; the client
 * session records that changed come last, under their reserved keys), the
 * new applied index and, when a conf entry set one, the new membership.
 * `sessionChanges` is to be committed to the state machine's SessionTable
 * once the batch is written.
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
 * KeyProbe is what the state holds, before the apply call, for one key the
 * plan reads: the raw value of its revision record (revisionKey(key);
 * undefined: none) and, when its ProbeKey asks for it, its value (undefined:
 * absent; for other keys it is ignored and need not be read).
 */
export interface KeyProbe {
  readonly value: Uint8Array | undefined;
  readonly revision: Uint8Array | undefined;
}

/** ProbeKey is a key planApply reads: always its revision record, its value only when `value` is set. */
export interface ProbeKey {
  readonly key: Uint8Array;
  readonly value: boolean;
}

/**
 * ApplyContext is the state planApply reads: the session table (an empty one
 * when absent) and `read`, the KeyProbe of each key listed by
 * applyProbeKeys (absent, or a key it answers undefined for: the key is
 * treated as missing). Both must describe the state before the apply call.
 */
export interface ApplyContext {
  readonly sessions?: SessionTable;
  readonly read?: (key: Uint8Array) => KeyProbe | undefined;
  /**
   * testOnlyReappliesRetries: TEST-ONLY (a negative control of the simulator,
   * StateMachineOptions.testOnlyReappliesRetries): a command whose request id
   * the table remembers is applied again instead of answered from the table.
   */
  readonly testOnlyReappliesRetries?: boolean;
  /**
   * decoded: the commands applyProbeKeys decoded for these items, by their
   * entry's data (planApply decodes the others, and reports those that fail).
   */
  readonly decoded?: ReadonlyMap<Uint8Array, KvCommand>;
  /**
   * keys: the apply call's ApplyKeys (the same given to applyProbeKeys): the
   * plan names its keys and makes their record keys through it. Absent: a
   * fresh one.
   */
  readonly keys?: ApplyKeys;
}

/**
 * ApplyKeys: what one apply call derives from each key object once: its
 * name (KeyNames, whose strings the store's StateBatch.names reuses) and its
 * revision record key (one Uint8Array per key object, named once too). The
 * probes, the plan, the revision cache and the store's changed keys all meet
 * the same key objects (the decoded commands' keys, ApplyContext.decoded).
 */
export class ApplyKeys {
  readonly names = new KeyNames();
  readonly #records = new Map<Uint8Array, Uint8Array>();

  /** name: keyString(key), built once per key object. */
  name(key: Uint8Array): string {
    return this.names.of(key);
  }

  /** record: revisionKey(key), made once per key object (the same object each call). */
  record(key: Uint8Array): Uint8Array {
    return this.#records.get(key) ?? this.#newRecord(key);
  }

  #newRecord(key: Uint8Array): Uint8Array {
    const r = revisionKey(key);
    this.#records.set(key, r);
    return r;
  }
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
 * applyProbeKeys lists, once each, the keys whose state planApply reads
 * (ApplyContext.read): every key a command among the items above
 * `appliedIndex` writes, reads or compares (each write needs the key's
 * revision: its version goes on). The value is needed (`value` set) for the
 * keys of a transaction, of a single delete (its count) and of a put with
 * prevKv; a plain put or a batch needs the revision record only. The
 * commands it decodes go into `decoded` when given (for ApplyContext.decoded).
 */
export function applyProbeKeys(items: readonly ApplyItem[], appliedIndex: number, decoded?: Map<Uint8Array, KvCommand>, names: ApplyKeys = new ApplyKeys()): ProbeKey[] {
  const keys = new Map<string, { key: Uint8Array; value: boolean }>();
  const add = (key: Uint8Array, value = true): void => {
    const k = names.name(key);
    const known = keys.get(k);
    if (known === undefined) keys.set(k, { key, value });
    else if (value) known.value = true;
  };
  for (const { entry } of items) {
    if (entry.index <= appliedIndex || entry.type !== 'normal' || entry.data.length === 0) continue;
    const command = decodeOrNull(entry.data);
    if (command === null) continue;
    decoded?.set(entry.data, command);
    if (command.op === 'txn') {
      for (const c of command.compares) add(c.key);
      for (const op of command.success) add(op.key);
      for (const op of command.failure) add(op.key);
    } else if (command.op === 'batch') {
      for (const op of command.ops) add(op.key, false);
    } else {
      add(command.key, command.op === 'delete' || command.prevKv === true);
    }
  }
  return [...keys.values()];
}

/**
 * KeyStates is the state of the keys of one apply call as its entries leave
 * them: what the probes read, overlaid with the call's own writes so far.
 */
class KeyStates {
  readonly #overlay = new Map<string, StoredKeyValue | null>();
  readonly #read: ((key: Uint8Array) => KeyProbe | undefined) | undefined;
  readonly #keys: ApplyKeys;
  readonly writes: KvWrite[] = [];

  constructor(read: ((key: Uint8Array) => KeyProbe | undefined) | undefined, keys: ApplyKeys) {
    this.#read = read;
    this.#keys = keys;
  }

  /** get: the pair under `key` now (null: absent). */
  get(key: Uint8Array): StoredKeyValue | null {
    const k = this.#keys.name(key);
    const over = this.#overlay.get(k);
    if (over !== undefined) return over;
    const probe = this.#read?.(key);
    if (probe?.value === undefined) return null;
    const rev = decodeKeyRevision(probe.revision) ?? LEGACY_REVISION;
    return { key, value: probe.value, ...rev };
  }

  /**
   * revision: `key`'s revision as a put goes on from it; null when it has
   * none (absent, or written before revisions were recorded: its next put
   * starts it at version 1). Reads the revision record only, never the value.
   */
  revision(key: Uint8Array): KeyRevision | null {
    const over = this.#overlay.get(this.#keys.name(key));
    if (over !== undefined) return over;
    return decodeKeyRevision(this.#read?.(key)?.revision) ?? null;
  }

  /** put writes `value` under `key` at log index `index`; with `wantPrev`, returns the pair it replaced (else undefined). */
  put(key: Uint8Array, value: Uint8Array, index: number, wantPrev: boolean): StoredKeyValue | null | undefined {
    const prev = wantPrev ? this.get(key) : undefined;
    const before = this.revision(key);
    const rev =
      before === null
        ? { createRevision: index, modRevision: index, version: 1 }
        : { createRevision: before.createRevision, modRevision: index, version: before.version + 1 };
    this.writes.push({ key, value }, { key: this.#keys.record(key), value: encodeKeyRevision(rev) });
    this.#overlay.set(this.#keys.name(key), { key, value, ...rev });
    return prev;
  }

  /** delete removes `key`; with `wantPrev`, returns the pair it removed (else undefined). */
  delete(key: Uint8Array, wantPrev: boolean): StoredKeyValue | null | undefined {
    const prev = wantPrev ? this.get(key) : undefined;
    this.writes.push({ key, value: null }, { key: this.#keys.record(key), value: null });
    this.#overlay.set(this.#keys.name(key), null);
    return prev;
  }
}

/** compareHolds: whether compare `c` holds for the pair `kv` (null: absent; a value compare on an absent key never holds, as in etcd). */
export function compareHolds(c: KvCompare, kv: StoredKeyValue | null): boolean {
  let order: number;
  if (c.target === 'value') {
    if (kv === null) return false;
    order = Buffer.compare(kv.value, c.value);
  } else {
    const n = kv === null ? 0 : c.target === 'version' ? kv.version : c.target === 'create' ? kv.createRevision : kv.modRevision;
    order = Math.sign(n - c.operand);
  }
  switch (c.result) {
    case 'equal':
      return order === 0;
    case 'notEqual':
      return order !== 0;
    case 'greater':
      return order > 0;
    case 'less':
      return order < 0;
  }
}

function runTxnOp(state: KeyStates, op: KvTxnOp, index: number): TxnOpResult {
  if (op.op === 'get') return { op: 'get', kv: state.get(op.key) };
  if (op.op === 'put') {
    const prev = state.put(op.key, op.value, index, op.prevKv === true);
    return prev !== undefined ? { op: 'put', prev } : { op: 'put' };
  }
  const prev = state.delete(op.key, true) ?? null;
  return { op: 'delete', deleted: prev === null ? 0 : 1, ...(op.prevKv === true ? { prev } : {}) };
}

/**
 * planApply turns `items` into the writes of one apply call on a state
 * machine at `appliedIndex`: items at or below it are skipped, the rest must
 * follow on one by one. Pure and deterministic: the same items and context
 * give the same plan on every node. Malformed commands become `ok: false`
 * results. Every data write also writes the key's revision record
 * (key-revision.ts); reads and compares see the writes of the entries before
 * them in the call (and a transaction's ops those of the ops before them). A
 * command carrying a request id (sessions.ts) that the table
 * remembers writes nothing and gets its first result (`firstIndex`); one
 * older than those remembered writes nothing and fails `requestIdExpired`;
 * a new one is applied and its result recorded. An ops record
 * (ops-record.ts) writes its reserved key, no revision record.
 * Errors: StorageError `invalidArgument` on a gap or a membership carried by
 * a `normal` entry.
 */
export function planApply(items: readonly ApplyItem[], appliedIndex: number, path: string, context: ApplyContext = {}): ApplyPlan {
  const state = new KeyStates(context.read, context.keys ?? new ApplyKeys());
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
    if (isOpsRecord(entry.data)) {
      const record = decodeOpsRecord(entry.data);
      if (record === null) {
        results.push({ index: entry.index, ok: false, code: 'malformedOpsRecord', error: `entry ${entry.index}: a malformed ops record` });
      } else {
        state.writes.push({ key: record.key, value: record.value });
        results.push({ index: entry.index, ok: true });
      }
      continue;
    }
    let command: KvCommand;
    try {
      command = context.decoded?.get(entry.data) ?? decodeCommand(entry.data);
    } catch (err) {
      if (!(err instanceof KvCommandError)) throw err;
      results.push({ index: entry.index, ok: false, code: err.code, error: err.message });
      continue;
    }
    let stamp = command.session;
    if (stamp !== undefined) {
      const seen = sessions.lookup(stamp);
      if (seen.kind === 'seen' && context.testOnlyReappliesRetries === true) {
        stamp = undefined; // the bug: applied again (and not recorded twice)
      } else if (seen.kind === 'seen') {
        const { index: firstIndex, deleted, succeeded } = seen.result;
        results.push({
          index: entry.index,
          ok: true,
          firstIndex,
          ...(deleted !== undefined ? { deleted } : {}),
          ...(succeeded !== undefined ? { succeeded } : {}),
        });
        continue;
      }
      if (seen.kind === 'expired' && stamp !== undefined) {
        results.push({
          index: entry.index,
          ok: false,
          code: 'requestIdExpired',
          error: `request id ${stamp.seq} of client ${JSON.stringify(stamp.clientId)} is older than the ones remembered (up to ${seen.floorSeq} forgotten); it was not applied again, its first outcome is unknown`,
        });
        continue;
      }
    }
    let result: ApplyResult;
    if (command.op === 'txn') {
      const succeeded = command.compares.every((c) => compareHolds(c, state.get(c.key)));
      const responses = (succeeded ? command.success : command.failure).map((op) => runTxnOp(state, op, entry.index));
      result = { index: entry.index, ok: true, succeeded, responses };
      if (stamp !== undefined) sessions.record(stamp, entry.index, { index: entry.index, succeeded });
    } else if (command.op === 'batch') {
      for (const op of command.ops) {
        if (op.op === 'put') state.put(op.key, op.value, entry.index, false);
        else state.delete(op.key, false);
      }
      result = { index: entry.index, ok: true };
      if (stamp !== undefined) sessions.record(stamp, entry.index, { index: entry.index });
    } else if (command.op === 'put') {
      const prev = state.put(command.key, command.value, entry.index, command.prevKv === true);
      result = { index: entry.index, ok: true, ...(prev !== undefined ? { prev } : {}) };
      if (stamp !== undefined) sessions.record(stamp, entry.index, { index: entry.index });
    } else {
      const prev = state.delete(command.key, true) ?? null;
      const deleted = prev === null ? 0 : 1;
      result = { index: entry.index, ok: true, deleted, ...(command.prevKv === true ? { prev } : {}) };
      if (stamp !== undefined) sessions.record(stamp, entry.index, { index: entry.index, deleted });
    }
    results.push(result);
  }
  const writes = state.writes;
  writes.push(...sessions.writes());
  return { writes, results, appliedIndex: applied, membership, sessionChanges: sessions.changes };
}

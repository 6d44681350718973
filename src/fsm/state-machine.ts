/**
 * The replicated state machine: what a committed entry means. Every entry
 * type is decoded, validated and applied here, and nowhere else:
 *
 * - KV commands (kv-command.ts): put, delete, batch, compare-and-swap
 *   transactions; each write also records the key's revision (key-revision.ts);
 * - client sessions (sessions.ts): a command or restore carrying a request id
 *   is applied at most once, a retry answered with its first result;
 * - restore entries (restore-command.ts): the state is replaced by an
 *   archive's, which the driver (the node) finds or fetches; the entry's
 *   index is recorded with it (restore-floor.ts);
 * - `conf` entries: the membership they establish is recorded with the state;
 * - empty `normal` entries: no-ops (a new leader's first entry).
 *
 * It sits on a StateStore, which knows bytes, not commands: one atomic
 * write per apply call (data, revision and session records, applied index,
 * membership), reads, ranges, snapshots and installs. The store's reserved
 * keys ("\x00snapcoord/...": sessions and revisions) are the state machine's
 * own records: never served by get or range, refused in commands.
 */
import type { Membership } from '../raft/types.js';
import { StorageError } from '../storage/storage-error.js';
import { keyString } from '../storage/key-string.js';
import type { StateImageSource } from '../storage/state-image.js';
import { RANGE_BYTES_MAX, RANGE_LIMIT_MAX, type KeyValue, type StateSnapshotReader, type StateStore } from '../storage/types.js';
import { ApplyKeys, applyProbeKeys, planApply, type KeyProbe } from './apply-plan.js';
import { isRevisionKey, REVISION_KEY_PREFIX } from './key-revision.js';
import type { KvCommand } from './kv-command.js';
import { opsRecordKey } from './ops-record.js';
import { decodeRestoreCommand, isRestoreCommand, type RestoreCommand } from './restore-command.js';
import { decodeRestoreFloor, RESTORE_FLOOR_KEY, restoreFloorRecord } from './restore-floor.js';
import { CarriedRecordsDigest, checkInstalledRecords, verifyImageRecords } from './restore-digest.js';
import { RevisionCache } from './revision-cache.js';
import {
  isReservedKey,
  RESERVED_KEY_END,
  RESERVED_KEY_PREFIX,
  SESSION_KEY_PREFIX,
  SessionInstall,
  sessionTableOfRecords,
  type SessionLookup,
  type SessionStamp,
  type SessionTable,
} from './sessions.js';
import type { ApplyItem, ApplyResult, InstalledRecordsCopy, KvRangeQuery, KvRangeResult, StateInstallMeta } from './types.js';

/** RecordSource: the records of a state to install, in batches. */
export type RecordSource = AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>;

/** RestoreOutcome: the archive's state was installed, or its content was refused (`error`; the state is unchanged). */
export type RestoreOutcome = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * ArchiveInstall installs `records` (an archive's verified key-value state) as
 * the state as of the restore entry's index, with `membership` (the
 * cluster's, in force at that index), keeping the client session table;
 * `copy`, when given, receives the installed records (StateInstallMeta.copy);
 * `options.exportImage`: the store exports the state it builds
 * as an image for the other members (StateStore.stateImage).
 */
export type ArchiveInstall = (records: RecordSource, membership: Membership, copy?: InstalledRecordsCopy, options?: { readonly exportImage?: boolean }) => Promise<void>;
/**
 * RestoreDriver is what the state machine needs from its driver to apply a
 * restore entry: the archive's bytes, which live outside the log.
 * `installArchive(cmd, index, install)` finds or fetches the archive `cmd`
 * names (as long as that takes), reads and verifies it, and calls `install`
 * once with its records; it resolves `{ok: true}` once install resolved,
 * `{ok: false, error}` when the archive's content is refused (every node
 * refuses the same bytes the same way: the entry is then skipped, the state
 * unchanged), and rejects for anything else (a disk error, shutdown), which
 * fails the apply. When no member holds the archive any more it may install
 * a snapshot at or after the entry in its place and resolve `{ok: true}`:
 * the applied index is then past the entry, and the entries up to it are
 * skipped like any entry at or below appliedIndex().
 */
export interface RestoreDriver {
  installArchive(cmd: RestoreCommand, index: number, install: ArchiveInstall): Promise<RestoreOutcome>;
}

/** StateMachineOptions: `name` names the state in error messages (a data dir path, say). */
export interface StateMachineOptions {
  readonly name?: string;
  /**
   * testOnlyReappliesRetries: TEST-ONLY, off by default. A retried command
   * whose request id the session table remembers is applied again (the
   * dedup of retried writes is off), so the simulator's negative control
   * (NodeOptions.testOnlyBugs.reappliesRetries) can show it is caught.
   */
  readonly testOnlyReappliesRetries?: boolean;
  /** revisionCacheBytesMax: the cap of the in-memory revision records (RevisionCache; default REVISION_CACHE_BYTES_MAX). */
  readonly revisionCacheBytesMax?: number;
}

function before(end: Uint8Array | undefined, limit: Uint8Array): Uint8Array {
  return end !== undefined && Buffer.compare(end, limit) < 0 ? end : limit;
}

function after(start: Uint8Array | undefined, limit: Uint8Array): Uint8Array {
  return start !== undefined && Buffer.compare(start, limit) > 0 ? start : limit;
}

/**
 * StateMachine applies committed entries to a StateStore and answers reads
 * of the key-value data. Applies, installs and the taking of snapshots run
 * one at a time in call order (a restore entry's archive install too: the
 * apply that meets it waits for it). It keeps two caches of the store, the
 * decoded session table and the revision records (all of them while they
 * fit in its cap: a put to a new key then reads nothing; else the recently
 * used ones, see RevisionCache); both are
 * dropped when the store's state is replaced behind its back (an install
 * not made through it: StateStore.stateEpoch moves).
 */
export class StateMachine {
  readonly #store: StateStore;
  readonly #name: string;
  readonly #revisions: RevisionCache;
  #sessions: SessionTable;
  #epoch: number;
  /**
   * #changed: the applied index as of the last apply or install that changed
   * the state (keys, session records, membership); entries after it were
   * no-ops (a new leader's empty entry, a restore that changed nothing). At
   * open, the applied index (what came before is not known).
   */
  #changed: number;
  #reappliesRetries = false;
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(store: StateStore, name: string, sessions: SessionTable, revisions: RevisionCache) {
    this.#store = store;
    this.#revisions = revisions;
    this.#name = name;
    this.#sessions = sessions;
    this.#epoch = store.stateEpoch();
    this.#changed = store.appliedIndex();
  }

  /**
   * StateMachine.open reads the session records of `store`'s state.
   * Errors: StorageError `corrupt` (a session record does not decode), or the store's.
   */
  static async open(store: StateStore, options: StateMachineOptions = {}): Promise<StateMachine> {
    const name = options.name ?? 'state machine';
    const epoch = store.stateEpoch();
    const sessions = await loadSessions(store, name);
    const sm = new StateMachine(store, name, sessions, new RevisionCache(options.revisionCacheBytesMax));
    sm.#epoch = epoch;
    sm.#reappliesRetries = options.testOnlyReappliesRetries === true;
    return sm;
  }

  /** appliedIndex: the index of the last applied entry (0 when new). */
  appliedIndex(): number {
    return this.#store.appliedIndex();
  }

  /**
   * changedIndex: the applied index as of the last apply or install that
   * changed the state; every entry applied after it changed nothing, so a
   * snapshot taken at or after it holds the state as it is now. At most
   * appliedIndex(); equal to it after an open or a state replaced under this
   * state machine (a store whose generation moved).
   */
  changedIndex(): number {
    const applied = this.#store.appliedIndex();
    return this.#store.stateEpoch() !== this.#epoch ? applied : Math.min(this.#changed, applied);
  }

  /** membership: the membership recorded by the last applied `conf` entry (or install), null if none. */
  membership(): Membership | null {
    return this.#store.membership();
  }

  /**
   * apply applies committed entries in order and resolves with one result
   * per entry applied (see ApplyResult). Entries with index <= appliedIndex()
   * are skipped (idempotent replay after a restart) and get no result; the
   * others must follow on without a gap. A `normal` entry with empty data is
   * a no-op; a restore entry (restore-command.ts) is applied through
   * `driver`; any other data is a KV command. A malformed command does not
   * throw: its result is `ok: false` and the applied index still advances
   * (every node fails it the same way). A `conf` entry records `membership`
   * when given. The writes of a run of non-restore entries are ONE atomic
   * store write: such a run applies whole or not at all.
   * Errors: StorageError `invalidArgument` on a gap or a membership on a
   * `normal` entry (nothing of that run is written); Error when a restore
   * entry meets no `driver`; the driver's and the store's errors.
   */
  apply(items: readonly ApplyItem[], driver?: RestoreDriver): Promise<ApplyResult[]> {
    // The common case, no restore entry: one run of commands, queued as it is (no wrapping async calls: each
    // was a promise and a turn more per batch applied).
    let restores = false;
    for (const item of items) if (item.entry.type === 'normal' && isRestoreCommand(item.entry.data)) restores = true;
    if (!restores) return items.length === 0 ? Promise.resolve([]) : this.#serial(() => this.#applyCommands(items));
    return this.#applyRuns(items, driver);
  }

  /** #applyRuns: apply() of items among which are restore entries: each run of commands between them, in order. */
  async #applyRuns(items: readonly ApplyItem[], driver?: RestoreDriver): Promise<ApplyResult[]> {
    const results: ApplyResult[] = [];
    let run: ApplyItem[] = [];
    const flush = async (): Promise<void> => {
      if (run.length === 0) return;
      const batch = run;
      run = [];
      results.push(...(await this.#serial(() => this.#applyCommands(batch))));
    };
    for (const item of items) {
      if (item.entry.type === 'normal' && isRestoreCommand(item.entry.data)) {
        await flush();
        const r = await this.#applyRestore(item, driver);
        if (r !== null) results.push(r);
      } else {
        run.push(item);
      }
    }
    await flush();
    return results;
  }

  /** get: the value under `key`, or undefined (always for the state machine's own reserved keys). */
  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    if (isReservedKey(key)) return undefined;
    return this.#store.get(key);
  }

  /** opsRecord: the value of the ops record `name` (ops-record.ts), or undefined. OpsRecordError for a bad name. */
  async opsRecord(name: string): Promise<Uint8Array | undefined> {
    return this.#store.get(opsRecordKey(name));
  }

  /**
   * lastRestoreIndex: the index of the last restore entry applied to the
   * state (restore-floor.ts; installed, or refused for its archive's
   * content), 0 when none is recorded. Read from the store as it is now, not
   * in line with applies (a membership change does not wait behind a
   * restore's install): a state installed behind this state machine's back
   * (a snapshot, an image) answers its own. Errors: StorageError
   * `unknownFormat` (a record this build does not read), the store's.
   */
  async lastRestoreIndex(): Promise<number> {
    return decodeRestoreFloor(await this.#store.get(RESTORE_FLOOR_KEY), this.#name);
  }

  /**
   * range: see KvRangeQuery; the reserved keys are skipped over (never read).
   * Errors: StorageError `invalidArgument` if limit is not a positive integer.
   */
  async range(query: KvRangeQuery): Promise<KvRangeResult> {
    const below = await this.#store.range({ ...query, end: before(query.end, RESERVED_KEY_PREFIX) });
    if (below.more) return below;
    const start = after(query.start, RESERVED_KEY_END);
    // What the part above the reserved keys may add: the pairs and bytes the part below left (one byte cap in all).
    const left = Math.min(query.limit, RANGE_LIMIT_MAX) - below.kvs.length;
    let belowBytes = 0;
    for (const kv of below.kvs) belowBytes += kv.key.length + kv.value.length;
    const bytesLeft = Math.min(query.bytesMax ?? RANGE_BYTES_MAX, RANGE_BYTES_MAX) - belowBytes;
    if (below.kvs.length === 0) return this.#store.range({ ...query, start });
    if (left <= 0 || bytesLeft <= 0) {
      const probe = await this.#store.range({ ...query, start, limit: 1 });
      return { kvs: below.kvs, more: probe.kvs.length > 0 };
    }
    const above = await this.#store.range({ ...query, start, limit: left, bytesMax: bytesLeft });
    // The part above always returns its first pair: past the bytes left, it goes to the next page.
    const first = above.kvs[0];
    if (first !== undefined && first.key.length + first.value.length > bytesLeft) return { kvs: below.kvs, more: true };
    return { kvs: [...below.kvs, ...above.kvs], more: above.more };
  }

  /**
   * snapshotState: a point-in-time view of the whole state (the reserved
   * records included: they travel with the data), in line with applies and
   * installs. See StateStore.snapshotState.
   */
  snapshotState(): Promise<StateSnapshotReader> {
    return this.#serial(() => this.#store.snapshotState());
  }

  /** stateDigest: see StateStore.stateDigest, in line with applies and installs. */
  stateDigest(): Promise<string> {
    return this.#serial(() => this.#store.stateDigest());
  }

  /**
   * installState replaces the whole state with `source`'s records as of
   * `meta` (see StateStore.installState and StateInstallMeta): the session
   * records come from the source (each checked), or with `keepSessions` the
   * current table is kept and the source's reserved records other than key
   * revisions are dropped; `meta.session` is then recorded as applied.
   * Errors: StorageError `invalidArgument` (a malformed session stamp or
   * session record, more than SESSION_CLIENTS_MAX of them), the store's.
   */
  installState(source: RecordSource, meta: StateInstallMeta): Promise<void> {
    return this.#serial(async () => {
      await this.#fresh();
      const sessionInstall = new SessionInstall(this.#sessions, meta, this.#name);
      const done: { table: SessionTable | null } = { table: null };
      // keepSessions: the new table does not depend on the source, so its records (and the restore floor, this
      // install's index) are merged into the source in key order (a source in key order stays so, and its copy is a
      // valid archive state); else they follow it.
      const kept = meta.keepSessions === true ? sessionInstall.finish() : null;
      const copy = meta.copy;
      const expected = meta.recordsDigest;
      // The carried records (those not taken as reserved) are hashed as they go in (restore-digest.ts).
      const digest = expected !== undefined ? new CarriedRecordsDigest() : null;
      async function* records(): AsyncGenerator<readonly KeyValue[], void, undefined> {
        const sessions = kept !== null ? byKey([...kept.records(), restoreFloorRecord(meta.appliedIndex)]) : [];
        let next = 0;
        for await (const batch of source) {
          if (!Array.isArray(batch)) {
            yield batch; // the store refuses it
            continue;
          }
          const data = batch.filter((r) => !(isRecord(r as Partial<KeyValue> | null) && sessionInstall.take(r)));
          if (digest !== null) for (const r of data) if (isRecord(r as Partial<KeyValue> | null)) digest.add(r);
          let out: readonly KeyValue[] = data.length === batch.length ? batch : data;
          const last = out[out.length - 1];
          if (last !== undefined && next < sessions.length && Buffer.compare((sessions[next] as KeyValue).key, last.key) < 0) {
            const merged = mergeByKey(sessions, next, out);
            next = merged.next;
            out = merged.records;
          }
          if (copy !== undefined) await copy.write(out);
          yield out;
        }
        // Before the store commits (it does once the source ends): a mismatch keeps the old state.
        if (digest !== null) checkInstalledRecords(digest, expected as string);
        const table = kept ?? sessionInstall.finish();
        done.table = table;
        const rest = kept !== null ? sessions.slice(next) : table.records();
        if (rest.length > 0) {
          if (copy !== undefined) await copy.write(rest);
          yield rest;
        }
      }
      this.#changed = Math.max(this.#changed, meta.appliedIndex); // before, as in #applyCommands
      await this.#store.installState(records(), { appliedIndex: meta.appliedIndex, membership: meta.membership }, meta.exportImage === true ? { exportImage: true } : undefined);
      if (done.table === null) throw new Error(`installState on ${this.#name}: the store did not read the whole source`);
      this.#sessions = done.table;
      this.#epoch = this.#store.stateEpoch();
    });
  }

  /**
   * importImage (issue 15) replaces the whole state with another
   * member's image of the same state as of `meta.appliedIndex` (the leader's
   * install of the same restore entry: StateStore.importStateImage checks
   * every file's SHA-256, the applied index and the membership; the image's
   * bytes and `options.reserveBytes` against the free disk before anything is
   * written; with `meta.recordsDigest`, the restore entry's, the imported
   * records against it before the commit: verifyImageRecords), then reloads
   * the session table from it. Errors: StorageError `invalidArgument` when
   * the store has no images, the store's (the state then unchanged; a
   * records digest that differs: `corrupt`, naming both digests).
   */
  importImage(
    source: StateImageSource,
    meta: { readonly appliedIndex: number; readonly membership: Membership; readonly recordsDigest?: string },
    options: { readonly reserveBytes?: number } = {},
  ): Promise<void> {
    return this.#serial(async () => {
      const store = this.#store;
      if (store.importStateImage === undefined) throw new StorageError('invalidArgument', `importImage on ${this.#name}: the store has no state images`, { path: this.#name });
      await this.#fresh();
      this.#changed = Math.max(this.#changed, meta.appliedIndex); // before, as in #applyCommands
      const { recordsDigest, ...installMeta } = meta;
      await store.importStateImage(source, installMeta, { ...options, ...(recordsDigest !== undefined ? { verifyRecords: verifyImageRecords(recordsDigest) } : {}) });
      this.#sessions = await loadSessions(store, this.#name);
      this.#epoch = store.stateEpoch();
    });
  }

  /** lookupSession: what the applied state remembers of `stamp` (sessions.ts), as of the last apply or install; `new` when nothing. */
  lookupSession(stamp: SessionStamp): SessionLookup {
    return this.#sessions.lookup(stamp);
  }

  /** #serial runs `fn` after every apply, install and snapshot called before it. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn, fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** #fresh reloads the session table when the store's state was replaced by an install not made here. */
  async #fresh(): Promise<void> {
    const epoch = this.#store.stateEpoch();
    if (epoch === this.#epoch) return;
    this.#sessions = await loadSessions(this.#store, this.#name);
    this.#epoch = epoch;
    this.#changed = this.#store.appliedIndex();
  }

  /** #applyCommands applies a run of non-restore items in one store write (inside the queue). */
  async #applyCommands(items: readonly ApplyItem[]): Promise<ApplyResult[]> {
    if (this.#store.stateEpoch() !== this.#epoch) await this.#fresh(); // (checked here too: no call, no turn, when fresh)
    const store = this.#store;
    const applied = store.appliedIndex();
    // The plan reads the keys it writes, reads or compares (revision record, and the value where it needs it): read them
    // first. Revision records of this state come from the cache when they are in it.
    const cache = this.#revisions;
    if (cache.forGeneration(store.stateEpoch())) await loadRevisions(store, cache);
    const probes = new Map<string, KeyProbe>();
    const reads: { key: Uint8Array; needValue: boolean; recordKey: Uint8Array; cached: Uint8Array | null | undefined }[] = [];
    const decoded = new Map<Uint8Array, KvCommand>(); // decoded once for the probes and the plan
    const keys = new ApplyKeys(); // each key's name and record key made once for the probes, the plan, the cache and the store
    for (const { key, value: needValue } of applyProbeKeys(items, applied, decoded, keys)) {
      const recordKey = keys.record(key);
      const cached = cache.get(keys.name(recordKey));
      if (cached !== undefined && !needValue) probes.set(keys.name(key), { value: undefined, revision: cached ?? undefined });
      else reads.push({ key, needValue, recordKey, cached });
    }
    // Every probe of the batch in one store read (one point in time): a value where the plan needs it, the revision
    // record where the cache does not hold it.
    const wanted: Uint8Array[] = [];
    for (const r of reads) {
      if (r.needValue) wanted.push(r.key);
      if (r.cached === undefined) wanted.push(r.recordKey);
    }
    const found = await store.getMany(wanted);
    let at = 0;
    for (const { key, needValue, recordKey, cached } of reads) {
      const value = needValue ? found[at++] : undefined;
      let revision: Uint8Array | undefined;
      if (cached === undefined) {
        revision = found[at++];
        cache.set(keys.name(recordKey), revision ?? null);
      } else {
        revision = cached ?? undefined;
      }
      probes.set(keys.name(key), { value, revision });
    }
    const plan = planApply(items, applied, this.#name, {
      sessions: this.#sessions,
      read: (key) => probes.get(keys.name(key)),
      decoded,
      keys,
      ...(this.#reappliesRetries ? { testOnlyReappliesRetries: true } : {}),
    });
    if (plan.appliedIndex === applied) return plan.results;
    // Before the write: the store's applied index may move before this resumes, and changedIndex must never
    // lag it (a snapshot older than the change would pass for the state as it is).
    if (plan.writes.length > 0 || plan.membership !== undefined) this.#changed = plan.appliedIndex;
    try {
      await store.write({
        writes: plan.writes,
        appliedIndex: plan.appliedIndex,
        names: keys.names,
        ...(plan.membership !== undefined ? { membership: plan.membership } : {}),
      });
    } catch (err) {
      cache.forGeneration(-1); // what was written is unknown: read the records again
      throw err;
    }
    for (const w of plan.writes) if (isRevisionKey(w.key)) cache.set(keys.name(w.key), w.value);
    this.#sessions.commit(plan.sessionChanges);
    return plan.results;
  }

  /**
   * #skip applies entry `index` as a no-op (a restore that changes nothing), inside the queue; with `floor`
   * (a restore refused for its archive's content: a member behind still needs that archive to refuse it), the
   * entry is recorded as the last restore applied (restore-floor.ts).
   */
  #skip(index: number, floor = false): Promise<void> {
    return this.#serial(async () => {
      if (!floor) return this.#store.write({ writes: [], appliedIndex: index });
      this.#changed = index; // before the write, as in #applyCommands
      await this.#store.write({ writes: [restoreFloorRecord(index)], appliedIndex: index });
    });
  }

  /**
   * #applyRestore applies one restore entry: a malformed one, or one whose
   * request id was seen before (or forgotten), is a no-op; otherwise the
   * driver installs the archive as the state at the entry's index, keeping
   * the session table (and recording the request id). Null when the entry
   * was applied already.
   */
  async #applyRestore(item: ApplyItem, driver: RestoreDriver | undefined): Promise<ApplyResult | null> {
    const e = item.entry;
    const applied = await this.#serial(async () => {
      await this.#fresh();
      return this.#store.appliedIndex();
    });
    if (e.index <= applied) return null;
    if (e.index !== applied + 1) {
      throw new StorageError('invalidArgument', `apply on ${this.#name}: entry ${e.index} does not follow the applied index ${applied}`, { path: this.#name });
    }
    if (item.membership !== undefined) {
      throw new StorageError('invalidArgument', `apply on ${this.#name}: normal entry ${e.index} carries a membership`, { path: this.#name });
    }
    const skipped = (why: string): ApplyResult => ({
      index: e.index,
      ok: false,
      code: 'badRestore',
      error: `restore at index ${e.index} skipped, the state is unchanged: ${why}`,
    });
    const cmd = decodeRestoreCommand(e.data);
    if (cmd === null) {
      // Malformed: every node skips it the same way.
      await this.#skip(e.index);
      return skipped('malformed restore entry');
    }
    const session = cmd.session;
    if (session !== undefined) {
      // A request id seen before (or forgotten) is not restored again: the writes made since are kept.
      const seen = this.#sessions.lookup(session);
      if (seen.kind !== 'new') {
        await this.#skip(e.index);
        return seen.kind === 'seen'
          ? { index: e.index, ok: true, firstIndex: seen.result.index }
          : {
              index: e.index,
              ok: false,
              code: 'requestIdExpired',
              error: `request id ${session.seq} of client ${JSON.stringify(session.clientId)} is older than the ones remembered; the restore was not applied again`,
            };
      }
    }
    if (driver === undefined) throw new Error(`entry ${e.index} is a restore, and no restore driver was given to apply it`);
    const outcome = await driver.installArchive(cmd, e.index, (records, membership, copy, options) =>
      this.installState(records, {
        appliedIndex: e.index,
        membership,
        keepSessions: true,
        ...(session !== undefined ? { session } : {}),
        ...(copy !== undefined ? { copy } : {}),
        ...(options?.exportImage === true ? { exportImage: true } : {}),
        ...(cmd.recordsDigest !== undefined ? { recordsDigest: cmd.recordsDigest } : {}),
      }),
    );
    if (!outcome.ok) {
      await this.#skip(e.index, true);
      return skipped(outcome.error);
    }
    if (this.#store.appliedIndex() < e.index) {
      throw new Error(`the restore driver reported entry ${e.index} installed, but the state is at ${this.#store.appliedIndex()}`);
    }
    return { index: e.index, ok: true };
  }
}

/**
 * mergeByKey merges `sorted[from..]`'s records whose keys sort before the last
 * of `batch` into `batch` (both in key order); returns the merged batch and
 * the index of the first record of `sorted` not taken.
 */
function mergeByKey(sorted: readonly KeyValue[], from: number, batch: readonly KeyValue[]): { records: KeyValue[]; next: number } {
  const records: KeyValue[] = [];
  let next = from;
  for (const r of batch) {
    while (next < sorted.length && Buffer.compare((sorted[next] as KeyValue).key, r.key) < 0) records.push(sorted[next++] as KeyValue);
    records.push(r);
  }
  return { records, next };
}

/** byKey: `records` sorted in bytewise key order. */
function byKey(records: KeyValue[]): KeyValue[] {
  return records.sort((a, b) => Buffer.compare(a.key, b.key));
}

function isRecord(r: Partial<KeyValue> | null): r is KeyValue {
  return r !== null && typeof r === 'object' && r.key instanceof Uint8Array && r.value instanceof Uint8Array;
}

/**
 * loadRevisions fills `cache` (just emptied for `store`'s generation) with
 * the store's revision records while they fit, and marks it complete when
 * all of them did: then a put to a new key reads nothing. Past the cap, the
 * cache stays partial (misses read the store). Errors: the store's.
 */
async function loadRevisions(store: StateStore, cache: RevisionCache): Promise<void> {
  let start: Uint8Array | undefined;
  for (;;) {
    const page = await store.range({ prefix: REVISION_KEY_PREFIX, ...(start !== undefined ? { start } : {}), limit: REVISION_LOAD_PAGE });
    for (const r of page.kvs) {
      if (!cache.fits(1, r.key.length + r.value.length)) return;
      cache.set(keyString(r.key), r.value);
    }
    const last = page.kvs[page.kvs.length - 1];
    if (!page.more || last === undefined) break;
    start = Uint8Array.from([...last.key, 0]);
  }
  cache.markComplete();
}

/** REVISION_LOAD_PAGE: the revision records loadRevisions reads per range call. */
const REVISION_LOAD_PAGE = 1_000;

/** loadSessions reads the session records of `store`. Errors: StorageError `corrupt`, the store's. */
async function loadSessions(store: StateStore, name: string): Promise<SessionTable> {
  const records: KeyValue[] = [];
  let start: Uint8Array | undefined;
  for (;;) {
    const page = await store.range({ prefix: SESSION_KEY_PREFIX, ...(start !== undefined ? { start } : {}), limit: RANGE_LIMIT_MAX });
    records.push(...page.kvs);
    const last = page.kvs[page.kvs.length - 1];
    if (!page.more || last === undefined) break;
    start = Uint8Array.from([...last.key, 0]);
  }
  return sessionTableOfRecords(records, name);
}

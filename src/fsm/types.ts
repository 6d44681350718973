/**
 * The state machine's contracts with its callers: the committed entries it
 * applies (ApplyItem) and what each one answers (ApplyResult), handed back to
 * the caller that proposed the entry.
 */
import type { Entry, Membership } from '../raft/types.js';
import { RANGE_BYTES_MAX, RANGE_LIMIT_MAX, type KeyValue } from '../storage/types.js';
import type { SessionStamp } from './sessions.js';

/** KV_RANGE_LIMIT_MAX: the most pairs one KV range answers (the store's own cap). */
export const KV_RANGE_LIMIT_MAX: number = RANGE_LIMIT_MAX;

/**
 * TXN_ANSWER_BYTES_MAX: the most key and value bytes a transaction's answer
 * carries (its gets' pairs and prev_kv pairs). Up to 128 ops may each read a
 * 1 MiB value: without a cap a 1 KiB request could make a 128 MiB answer.
 */
export const TXN_ANSWER_BYTES_MAX = 16 * 1024 * 1024;

/** KV_RANGE_BYTES_MAX: the most key and value bytes one KV range answers besides its first pair (the store's own cap). */
export const KV_RANGE_BYTES_MAX: number = RANGE_BYTES_MAX;

/**
 * KvRangeQuery selects the clients' keys in bytewise order: those with
 * `prefix` (when given), >= `start` (when given) and < `end` (when given),
 * all combined; at most `limit` of them (capped at KV_RANGE_LIMIT_MAX), and
 * no more than fit in `bytesMax` bytes of keys and values (capped at
 * KV_RANGE_BYTES_MAX, the default) besides the first pair, always returned.
 */
export interface KvRangeQuery {
  readonly prefix?: Uint8Array;
  readonly start?: Uint8Array;
  readonly end?: Uint8Array;
  readonly limit: number;
  readonly bytesMax?: number;
}

/** KvRangeResult: `more` is true when keys beyond the last returned one match too (page on with start = last key + 0x00). */
export interface KvRangeResult {
  readonly kvs: readonly KeyValue[];
  readonly more: boolean;
}

/** ApplyItem is one committed entry to apply; `membership` is the configuration a `conf` entry establishes. */
export interface ApplyItem {
  readonly entry: Entry;
  /** for a `conf` entry: the membership in force from this index on (absent: unchanged). Never set for `normal`. */
  readonly membership?: Membership;
}

/**
 * StoredKeyValue is a pair with its revisions (key-revision.ts): the log
 * index that created it, the one that last wrote it, its puts since creation.
 */
export interface StoredKeyValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
}

/**
 * TxnOpResult answers one op of the branch a transaction took: a get's pair
 * (null: absent), a delete's count, and for a put or delete that asked for
 * it (`prevKv`) the pair it replaced or removed (null: there was none).
 */
export type TxnOpResult =
  | { readonly op: 'get'; readonly kv: StoredKeyValue | null }
  | { readonly op: 'put'; readonly prev?: StoredKeyValue | null }
  | { readonly op: 'delete'; readonly deleted: number; readonly prev?: StoredKeyValue | null };

/**
 * ApplyResult is the outcome of one applied entry, a pure function of the
 * entry and the state before it (deterministic on every node):
 * - a single delete: `deleted` (0 or 1 keys removed);
 * - a single put or delete with `prevKv`: `prev`, the pair it replaced or
 *   removed (null when there was none);
 * - a transaction: `succeeded` (every compare held) and `responses`, one per
 *   op of the branch taken.
 * For a command carrying a client request id (sessions.ts): `firstIndex` is
 * set when that request id was applied before (at firstIndex; this entry
 * changed nothing; `deleted` and `succeeded` are the first apply's, `prev`
 * and `responses` are absent). A request id older than those remembered
 * fails with code `requestIdExpired`. A restore entry (restore-command.ts)
 * that is malformed or whose archive is refused fails with `badRestore`.
 */
export type ApplyResult =
  | {
      readonly index: number;
      readonly ok: true;
      readonly firstIndex?: number;
      readonly deleted?: number;
      readonly prev?: StoredKeyValue | null;
      readonly succeeded?: boolean;
      readonly responses?: readonly TxnOpResult[];
      /**
       * answerBytes: set by encodeApplyResult in place of `responses` when
       * their pairs hold more than TXN_ANSWER_BYTES_MAX bytes of keys and
       * values (an answer no client is sent: not carried to the follower either).
       */
      readonly answerBytes?: number;
    }
  | { readonly index: number; readonly ok: false; readonly code: string; readonly error: string };

/**
 * InstalledRecordsCopy receives every batch of records the store installs,
 * in the order installed, while the install runs (see StateInstallMeta.copy);
 * write() may wait (backpressure) and must not throw.
 */
export interface InstalledRecordsCopy {
  write(batch: readonly KeyValue[]): Promise<void>;
}

/**
 * StateInstallMeta is what StateMachine.installState records: the index and
 * membership the state is as of. The client session records (sessions.ts)
 * come from the source, unless `keepSessions` is set (a restore of user
 * data): then the source's reserved records are ignored, the current table
 * is kept, `session`, when given, is recorded as applied at appliedIndex,
 * and so is appliedIndex as the last restore applied (restore-floor.ts).
 */
export interface StateInstallMeta {
  readonly appliedIndex: number;
  readonly membership: Membership;
  readonly keepSessions?: boolean;
  readonly session?: SessionStamp;
  /**
   * copy, when given, is handed every batch the store installs, in order,
   * session records included (with keepSessions merged in key order, so a
   * source in key order gives a copy in key order): the installed state,
   * for a snapshot written beside the install rather than read back after.
   */
  readonly copy?: InstalledRecordsCopy;
  /** exportImage: the store exports the state it builds as an image for the other members (StateStore.stateImage). */
  readonly exportImage?: boolean;
  /**
   * recordsDigest: the records digest the source's carried records must have
   * (a restore entry's, restore-digest.ts), checked once the whole source is
   * read and before the install commits: a mismatch is RestoreDigestError
   * and the state stays unchanged. Unchecked when absent.
   */
  readonly recordsDigest?: string;
}

/**
 * Client sessions (Raft dissertation §6.3, "Implementing linearizable
 * semantics"): the state machine remembers, per client id, the results of
 * that client's most recent request ids, so a retried write is answered with
 * its first result instead of being applied twice.
 *
 * The table is part of the replicated state: every node changes it the same
 * way from the same entries (no clock, no randomness: recency is the log
 * index), it is written in the same atomic batch as the data it guards, and it
 * travels in snapshots as ordinary records under a reserved key prefix
 * (RESERVED_KEY_PREFIX, which clients may neither write nor read):
 *
 *   key   = "\x00snapcoord/session/" + clientId
 *   value = version:u8 (1) lastIndex:u64be floorSeq:u64be count:u16be
 *           (seq:u64be index:u64be flags:u8 [deleted:u32be if flags & 1]){count}
 *           flags: 1 deleted follows, 2 a transaction, 4 its compares held
 *
 * Bounds, both deterministic: a client keeps its SESSION_RESULTS_PER_CLIENT_MAX
 * highest request ids (dropping a lower one raises its `floorSeq`: a request
 * id at or below it that is not remembered is refused, never applied again);
 * the table keeps SESSION_CLIENTS_MAX clients, forgetting the least recently
 * active one (its last recorded write has the lowest log index), with a
 * per-principal share so that one API key cannot push the others out:
 *
 * - a client's principal is the key tag its id is bound to (the API records
 *   `<tag>:<client_id>` or `<tag>#<hash>`, src/api/bound-client-id.ts), read
 *   from the id itself (sessionPrincipal), so it is in the log and the state
 *   and the same on every node; an id not in that form (recorded before ids
 *   were bound, or by a caller inside the node) has the principal '' (one
 *   principal for all of them). A caller presenting no key binds its ids to
 *   the tag of ''. A node without auth checks no key, so its callers choose
 *   their principals by the bearer token they send (one that sends none:
 *   one principal, which evicts exactly as a plain LRU table would); such a
 *   node lets anyone do anything anyway.
 * - a principal may hold more than SESSION_CLIENTS_PER_PRINCIPAL (its share,
 *   SESSION_CLIENTS_MAX / 8) while the table has room; when a new client
 *   would overflow the table, the one forgotten is: the principal's own least
 *   recent client when it holds more than its share with the new one; else
 *   the least recent client of the principals over their share; else the
 *   least recent client of all (only when at least 8 principals share the
 *   table). So a key's holder, however many ids it writes, never forgets a
 *   client of a principal within its share, only its own.
 *
 * The share needs no record of its own: it follows from the session keys,
 * so snapshots and stored tables are read as before (format version 1).
 */
import { isRevisionKey } from './key-revision.js';
import { isRestoreFloorKey } from './restore-floor.js';
import { StorageError } from '../storage/storage-error.js';
import type { KeyValue } from '../storage/types.js';
import { readU32At, readU64At, writeU32At, writeU64At } from './u64.js';

/** RESERVED_KEY_PREFIX: keys starting with these bytes ("\x00snapcoord/") belong to the store itself. */
export const RESERVED_KEY_PREFIX: Uint8Array = Uint8Array.from(Buffer.from('\x00snapcoord/', 'latin1'));
/** RESERVED_KEY_END: the first key after every reserved one ("\x00snapcoord0"). */
export const RESERVED_KEY_END: Uint8Array = Uint8Array.from(Buffer.from('\x00snapcoord0', 'latin1'));
/** SESSION_KEY_PREFIX: the reserved prefix of the session records. */
export const SESSION_KEY_PREFIX: Uint8Array = Uint8Array.from(Buffer.from('\x00snapcoord/session/', 'latin1'));

/** CLIENT_ID_CHARS_MAX: the longest client id (printable ASCII, 0x21..0x7e). */
export const CLIENT_ID_CHARS_MAX = 64;
/** SESSION_RESULTS_PER_CLIENT_MAX: the request ids remembered per client (its highest ones). */
export const SESSION_RESULTS_PER_CLIENT_MAX = 32;
/** SESSION_CLIENTS_MAX: the clients remembered; beyond it the least recently active one is forgotten. */
export const SESSION_CLIENTS_MAX = 8192;
/**
 * SESSION_CLIENTS_PER_PRINCIPAL: a principal's share of the table (see the top of
 * this file): a principal over it forgets its own clients first once the table is full.
 * Part of the replicated state's rules: the same on every node, never configured.
 */
export const SESSION_CLIENTS_PER_PRINCIPAL = SESSION_CLIENTS_MAX / 8;
/** CLIENT_ID_TAG_CHARS: the characters of the key tag a bound client id starts with (src/api/bound-client-id.ts). */
export const CLIENT_ID_TAG_CHARS = 8;
/** UNBOUND_PRINCIPAL: the principal of every client id that is not bound to a key tag. */
export const UNBOUND_PRINCIPAL = '';

const SESSION_FORMAT_VERSION = 1;
const FLAG_DELETED = 0x01;
const FLAG_TXN = 0x02;
const FLAG_SUCCEEDED = 0x04;
const FLAGS_KNOWN = FLAG_DELETED | FLAG_TXN | FLAG_SUCCEEDED;

/** SessionStamp identifies one client request: the client's id and its serial number for the request. */
export interface SessionStamp {
  readonly clientId: string;
  /** the request id: 1..2^53-1, increasing per client. */
  readonly seq: number;
}

/** SessionResult is what the table remembers of one applied request. */
export interface SessionResult {
  readonly seq: number;
  /** the log index at which the request was applied. */
  readonly index: number;
  /** for a single delete: how many keys it removed (0 or 1). */
  readonly deleted?: number;
  /** for a transaction: whether its compares held (the success branch ran). */
  readonly succeeded?: boolean;
}

/** ClientSession is one client's record. `results` are in increasing seq order. */
export interface ClientSession {
  readonly clientId: string;
  /** the index of the last entry that recorded a result for this client (its recency). */
  readonly lastIndex: number;
  /** every request id <= floorSeq not in `results` was forgotten (0: none). */
  readonly floorSeq: number;
  readonly results: readonly SessionResult[];
}

/** SessionLookup: a request id is `new` (apply it), `seen` (answer with `result`) or `expired` (forgotten: refuse it). */
export type SessionLookup =
  | { readonly kind: 'new' }
  | { readonly kind: 'seen'; readonly result: SessionResult }
  | { readonly kind: 'expired'; readonly floorSeq: number };

/** SessionFormatError: a session record or stamp that does not follow the rules above. */
export class SessionFormatError extends Error {
  override readonly name = 'SessionFormatError';
}

/** sessionStampProblem returns why `stamp` is invalid, or null when it is valid. */
export function sessionStampProblem(stamp: SessionStamp): string | null {
  const id = stamp.clientId;
  if (typeof id !== 'string' || id.length === 0 || id.length > CLIENT_ID_CHARS_MAX) {
    return `client id must be 1..${CLIENT_ID_CHARS_MAX} characters`;
  }
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return `client id must be printable ASCII without spaces (character ${i} is not)`;
  }
  if (!Number.isSafeInteger(stamp.seq) || stamp.seq < 1) return `request id must be 1..2^53-1, got ${String(stamp.seq)}`;
  return null;
}

/** checkSessionStamp throws SessionFormatError for an invalid stamp. */
export function checkSessionStamp(stamp: SessionStamp): void {
  const problem = sessionStampProblem(stamp);
  if (problem !== null) throw new SessionFormatError(problem);
}

function isBase64urlChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
}

/**
 * sessionPrincipal: the principal a client id's session counts against: its
 * key tag when the id is bound (8 base64url characters, then ':' or '#'),
 * else UNBOUND_PRINCIPAL. Depends on the id only (the same on every node).
 */
export function sessionPrincipal(clientId: string): string {
  if (clientId.length <= CLIENT_ID_TAG_CHARS) return UNBOUND_PRINCIPAL;
  const sep = clientId.charCodeAt(CLIENT_ID_TAG_CHARS);
  if (sep !== 0x3a && sep !== 0x23) return UNBOUND_PRINCIPAL;
  for (let i = 0; i < CLIENT_ID_TAG_CHARS; i++) if (!isBase64urlChar(clientId.charCodeAt(i))) return UNBOUND_PRINCIPAL;
  return clientId.slice(0, CLIENT_ID_TAG_CHARS);
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** isReservedKey is true for a key under RESERVED_KEY_PREFIX (the store's own records). */
export function isReservedKey(key: Uint8Array): boolean {
  return startsWith(key, RESERVED_KEY_PREFIX);
}

/**
 * isCarriedKey is true for a key that a restore installs from its archive as
 * it is: every key outside the reserved prefix (the user's records) and the
 * key revisions (key-revision.ts), which belong with the data. The archive's
 * other reserved records (its cluster's client sessions, ops records) are
 * dropped by the install, which keeps this cluster's sessions instead
 * (SessionInstall.take). A restore entry's records digest covers exactly the
 * carried records (restore-digest.ts).
 */
export function isCarriedKey(key: Uint8Array): boolean {
  return !isReservedKey(key) || isRevisionKey(key);
}

/** isSessionKey is true for a key under SESSION_KEY_PREFIX. */
export function isSessionKey(key: Uint8Array): boolean {
  return startsWith(key, SESSION_KEY_PREFIX);
}

/** sessionKey: the reserved key of `clientId`'s record. */
export function sessionKey(clientId: string): Uint8Array {
  const id = Buffer.from(clientId, 'latin1');
  const out = new Uint8Array(SESSION_KEY_PREFIX.length + id.length);
  out.set(SESSION_KEY_PREFIX, 0);
  out.set(id, SESSION_KEY_PREFIX.length);
  return out;
}

/** encodeClientSession: the value of a session record. */
export function encodeClientSession(s: ClientSession): Uint8Array {
  let size = 1 + 8 + 8 + 2;
  for (const r of s.results) size += 8 + 8 + 1 + (r.deleted === undefined ? 0 : 4);
  const out = new Uint8Array(size);
  out[0] = SESSION_FORMAT_VERSION;
  writeU64At(out, 1, s.lastIndex);
  writeU64At(out, 9, s.floorSeq);
  out[17] = s.results.length >>> 8; // the bytes setUint16 writes
  out[18] = s.results.length;
  let at = 19;
  for (const r of s.results) {
    writeU64At(out, at, r.seq);
    writeU64At(out, at + 8, r.index);
    out[at + 16] =
      (r.deleted === undefined ? 0 : FLAG_DELETED) | (r.succeeded === undefined ? 0 : FLAG_TXN | (r.succeeded ? FLAG_SUCCEEDED : 0));
    at += 17;
    if (r.deleted !== undefined) {
      writeU32At(out, at, r.deleted);
      at += 4;
    }
  }
  return out;
}

/**
 * decodeSessionRecord parses one session record (key and value).
 * Errors: SessionFormatError when the key is not a session key with a valid
 * client id, or the value is malformed (wrong version, truncated, trailing
 * bytes, request ids not increasing, more than SESSION_RESULTS_PER_CLIENT_MAX).
 */
export function decodeSessionRecord(key: Uint8Array, value: Uint8Array): ClientSession {
  if (!isSessionKey(key)) throw new SessionFormatError('not a session key');
  const clientId = Buffer.from(key.subarray(SESSION_KEY_PREFIX.length)).toString('latin1');
  const fail = (what: string): never => {
    throw new SessionFormatError(`session record of client ${JSON.stringify(clientId)}: ${what}`);
  };
  const problem = sessionStampProblem({ clientId, seq: 1 });
  if (problem !== null) fail(problem);
  if (value.length < 19) fail('truncated');
  if (value[0] !== SESSION_FORMAT_VERSION) fail(`unknown version ${String(value[0])}`);
  const lastIndex = readU64At(value, 1);
  const floorSeq = readU64At(value, 9);
  const count = ((value[17] as number) << 8) | (value[18] as number);
  if (!Number.isSafeInteger(lastIndex) || !Number.isSafeInteger(floorSeq)) fail('a number exceeds 2^53');
  if (count > SESSION_RESULTS_PER_CLIENT_MAX) fail(`${count} results, more than ${SESSION_RESULTS_PER_CLIENT_MAX}`);
  const results: SessionResult[] = [];
  let at = 19;
  let prevSeq = floorSeq;
  for (let i = 0; i < count; i++) {
    if (value.length < at + 17) fail('truncated');
    const seq = readU64At(value, at);
    const index = readU64At(value, at + 8);
    const flags = value[at + 16] ?? 0;
    at += 17;
    if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(index) || index > lastIndex) fail(`result ${i} is out of range`);
    if (seq <= prevSeq) fail('request ids are not increasing (or not above the floor)');
    prevSeq = seq;
    if ((flags & ~FLAGS_KNOWN) !== 0) fail(`result ${i} has unknown flags`);
    if ((flags & FLAG_SUCCEEDED) !== 0 && (flags & FLAG_TXN) === 0) fail(`result ${i} has unknown flags`);
    const txn = (flags & FLAG_TXN) !== 0 ? { succeeded: (flags & FLAG_SUCCEEDED) !== 0 } : {};
    if ((flags & FLAG_DELETED) !== 0) {
      if (value.length < at + 4) fail('truncated');
      results.push({ seq, index, deleted: readU32At(value, at), ...txn });
      at += 4;
    } else {
      results.push({ seq, index, ...txn });
    }
  }
  if (at !== value.length) fail(`${value.length - at} trailing bytes`);
  return { clientId, lastIndex, floorSeq, results };
}

/** lookupClientSession: what `seq` is for a client whose record is `s` (undefined: unknown client). */
export function lookupClientSession(s: ClientSession | undefined, seq: number): SessionLookup {
  if (s === undefined) return { kind: 'new' };
  for (const r of s.results) if (r.seq === seq) return { kind: 'seen', result: r };
  if (seq <= s.floorSeq) return { kind: 'expired', floorSeq: s.floorSeq };
  return { kind: 'new' };
}

/**
 * withResult: `s` (or a new record) with `result` added at log index `index`:
 * results stay in seq order, the lowest are dropped beyond
 * SESSION_RESULTS_PER_CLIENT_MAX (raising floorSeq to the highest dropped).
 */
export function withResult(s: ClientSession | undefined, clientId: string, index: number, result: SessionResult): ClientSession {
  // One array built in order (a record's results are in seq order): not a copy, a sort and shifts, a write's
  // largest allocation on the apply path (~1.1 KB a put with 32 results held).
  const old = s?.results ?? [];
  let at = old.length; // after every result with a lower or equal seq
  while (at > 0 && (old[at - 1] as SessionResult).seq > result.seq) at--;
  const total = old.length + 1;
  const dropped = Math.max(0, total - SESSION_RESULTS_PER_CLIENT_MAX);
  let floorSeq = s?.floorSeq ?? 0;
  const results = new Array<SessionResult>(total - dropped);
  for (let i = 0; i < total; i++) {
    const r = (i < at ? old[i] : i === at ? result : old[i - 1]) as SessionResult;
    if (i < dropped) floorSeq = Math.max(floorSeq, r.seq);
    else results[i - dropped] = r;
  }
  return { clientId, lastIndex: index, floorSeq, results };
}

/** SessionChanges: client id -> its new record, or null when it is forgotten; in the order they were made. */
export type SessionChanges = Map<string, ClientSession | null>;

/**
 * SessionTable is the in-memory copy of the session records a state machine
 * holds (its storage keeps them under SESSION_KEY_PREFIX), ordered by
 * recency (lastIndex ascending) so the least recently active client is first;
 * per principal (sessionPrincipal) the same order, its count, and the set of
 * principals over their share (SESSION_CLIENTS_PER_PRINCIPAL).
 */
export class SessionTable {
  readonly #clients = new Map<string, ClientSession>();
  readonly #byPrincipal = new Map<string, Map<string, ClientSession>>();
  readonly #overShare = new Set<string>();

  /** SessionTable.of builds a table from records in any order. */
  static of(sessions: Iterable<ClientSession>): SessionTable {
    const t = new SessionTable();
    for (const s of [...sessions].sort((a, b) => a.lastIndex - b.lastIndex || (a.clientId < b.clientId ? -1 : 1))) t.#add(s);
    return t;
  }

  #add(s: ClientSession, principal = sessionPrincipal(s.clientId)): void {
    this.#clients.set(s.clientId, s); // (re-)inserted: the most recent go last
    let mine = this.#byPrincipal.get(principal);
    if (mine === undefined) {
      mine = new Map();
      this.#byPrincipal.set(principal, mine);
    }
    mine.set(s.clientId, s);
    if (mine.size > SESSION_CLIENTS_PER_PRINCIPAL) this.#overShare.add(principal);
  }

  #remove(clientId: string, principal: string): void {
    if (!this.#clients.delete(clientId)) return;
    const mine = this.#byPrincipal.get(principal);
    if (mine === undefined) return;
    mine.delete(clientId);
    if (mine.size <= SESSION_CLIENTS_PER_PRINCIPAL) this.#overShare.delete(principal);
    if (mine.size === 0) this.#byPrincipal.delete(principal);
  }

  get size(): number {
    return this.#clients.size;
  }

  get(clientId: string): ClientSession | undefined {
    return this.#clients.get(clientId);
  }

  lookup(stamp: SessionStamp): SessionLookup {
    return lookupClientSession(this.#clients.get(stamp.clientId), stamp.seq);
  }

  /** sessions: the records, least recently active first. */
  sessions(): IterableIterator<ClientSession> {
    return this.#clients.values();
  }

  /** countOf: the clients `principal` (sessionPrincipal) holds. */
  countOf(principal: string): number {
    return this.#byPrincipal.get(principal)?.size ?? 0;
  }

  /** sessionsOf: `principal`'s records, least recently active first. */
  sessionsOf(principal: string): IterableIterator<ClientSession> {
    return (this.#byPrincipal.get(principal) ?? new Map<string, ClientSession>()).values();
  }

  /** overShare: the principals holding more than SESSION_CLIENTS_PER_PRINCIPAL (at most 7 in a full table). */
  overShare(): ReadonlySet<string> {
    return this.#overShare;
  }

  /** records: every session record as a key-value pair, in key order (for an install that keeps the table). */
  records(): KeyValue[] {
    return [...this.#clients.values()]
      .map((s) => ({ key: sessionKey(s.clientId), value: encodeClientSession(s) }))
      .sort((a, b) => Buffer.compare(a.key, b.key));
  }

  /** commit applies `changes` (made by a SessionPlanner on this table) once they are written. */
  commit(changes: SessionChanges): void {
    for (const [id, s] of changes) {
      const principal = sessionPrincipal(id);
      this.#remove(id, principal);
      if (s !== null) this.#add(s, principal);
    }
  }
}

/**
 * OldestCursor walks a base table's records (least recent first), past the
 * ones a planner changed, then the planner's changes in their order (a live
 * Map iterator: a client recorded again moves to the end and is met again).
 */
interface OldestCursor {
  readonly rest: IterableIterator<ClientSession>;
  head: ClientSession | undefined;
  changed: IterableIterator<[string, ClientSession | null]> | undefined;
  changedHead: ClientSession | null | undefined;
}

/**
 * SessionPlanner records results on top of a SessionTable without changing
 * it, for one apply call: `changes` are committed to the table once the batch
 * that writes them succeeded. Deterministic: it depends only on the table and
 * the calls made. Finding whom to forget costs O(1) amortized: cursors over
 * the base table's recency order only move forward (a client once changed
 * stays in `changes`), and at most 8 principals are over their share.
 */
export class SessionPlanner {
  readonly #base: SessionTable;
  readonly changes: SessionChanges = new Map();
  #count: number;
  /** the clients of the principals this planner changed (others: the base's count). */
  readonly #counts = new Map<string, number>();
  readonly #overShare: Set<string>;
  readonly #cursors = new Map<string, OldestCursor>();
  #allCursor: OldestCursor | undefined;

  constructor(base: SessionTable) {
    this.#base = base;
    this.#count = base.size;
    this.#overShare = new Set(base.overShare());
  }

  #current(clientId: string): ClientSession | undefined {
    const changed = this.changes.get(clientId);
    if (changed !== undefined) return changed ?? undefined;
    return this.#base.get(clientId);
  }

  #countOf(principal: string): number {
    return this.#counts.get(principal) ?? this.#base.countOf(principal);
  }

  #adjust(principal: string, by: number): void {
    const n = this.#countOf(principal) + by;
    this.#counts.set(principal, n);
    if (n > SESSION_CLIENTS_PER_PRINCIPAL) this.#overShare.add(principal);
    else this.#overShare.delete(principal);
  }

  lookup(stamp: SessionStamp): SessionLookup {
    return lookupClientSession(this.#current(stamp.clientId), stamp.seq);
  }

  /** record remembers `result` for `stamp`, applied at log index `index`, forgetting a client beyond the cap (see the top of this file). */
  record(stamp: SessionStamp, index: number, result: Omit<SessionResult, 'seq'>): void {
    const prev = this.#current(stamp.clientId);
    // A plain write's result ({index}) is built as a literal, not spread (the keys, and their order, are the same).
    const full: SessionResult = result.deleted === undefined && result.succeeded === undefined ? { index: result.index, seq: stamp.seq } : { ...result, seq: stamp.seq };
    const next = withResult(prev, stamp.clientId, index, full);
    this.changes.delete(stamp.clientId);
    this.changes.set(stamp.clientId, next);
    if (prev !== undefined) return;
    const principal = sessionPrincipal(stamp.clientId);
    this.#count++;
    this.#adjust(principal, 1);
    while (this.#count > SESSION_CLIENTS_MAX && this.#evictFor(principal));
  }

  /** #oldest: the least recent remembered client of `principal` (undefined: of all), or undefined when there is none. */
  #oldest(principal: string | undefined): ClientSession | undefined {
    let cursor = principal === undefined ? this.#allCursor : this.#cursors.get(principal);
    if (cursor === undefined) {
      const rest = principal === undefined ? this.#base.sessions() : this.#base.sessionsOf(principal);
      cursor = { rest, head: rest.next().value, changed: undefined, changedHead: undefined };
      if (principal === undefined) this.#allCursor = cursor;
      else this.#cursors.set(principal, cursor);
    }
    // Untouched base clients are older than every one changed here (their lastIndex is below this batch's).
    while (cursor.head !== undefined && this.changes.has(cursor.head.clientId)) cursor.head = cursor.rest.next().value;
    if (cursor.head !== undefined) return cursor.head;
    // Then the clients changed here, in order: one skipped (forgotten, another principal's, or recorded again
    // later, so met again at the end) never becomes the first, so the cursor only moves forward.
    cursor.changed ??= this.changes.entries();
    for (;;) {
      const h = cursor.changedHead;
      if (h !== undefined && h !== null && this.changes.get(h.clientId) === h) return h;
      const next = cursor.changed.next();
      if (next.done === true) {
        cursor.changed = undefined; // a finished iterator stays finished: start again next time
        cursor.changedHead = undefined;
        return undefined;
      }
      const [id, s] = next.value;
      cursor.changedHead = principal === undefined || sessionPrincipal(id) === principal ? s : undefined;
    }
  }

  /** #evictFor forgets one client to make room for a new one of `principal`; false when there is none to forget. */
  #evictFor(principal: string): boolean {
    let victim: ClientSession | undefined;
    if (this.#countOf(principal) > SESSION_CLIENTS_PER_PRINCIPAL) {
      victim = this.#oldest(principal);
    } else {
      for (const over of this.#overShare) {
        const s = this.#oldest(over);
        if (s !== undefined && (victim === undefined || s.lastIndex < victim.lastIndex || (s.lastIndex === victim.lastIndex && s.clientId < victim.clientId))) victim = s;
      }
      victim ??= this.#oldest(undefined);
    }
    if (victim === undefined) return false;
    this.changes.set(victim.clientId, null);
    this.#count--;
    this.#adjust(sessionPrincipal(victim.clientId), -1);
    return true;
  }

  /** writes: the record writes of `changes` (a null value deletes), in the order made. */
  writes(): { key: Uint8Array; value: Uint8Array | null }[] {
    return [...this.changes].map(([id, s]) => ({ key: sessionKey(id), value: s === null ? null : encodeClientSession(s) }));
  }
}

/**
 * sessionTableOfRecords builds the table of a state machine from its stored
 * session records (any order). Errors: StorageError `corrupt` naming `path`
 * when a record does not decode.
 */
export function sessionTableOfRecords(records: Iterable<KeyValue>, path: string): SessionTable {
  const sessions: ClientSession[] = [];
  for (const { key, value } of records) {
    try {
      sessions.push(decodeSessionRecord(key, value));
    } catch (err) {
      if (!(err instanceof SessionFormatError)) throw err;
      throw new StorageError('corrupt', `${path}: ${err.message}`, { path, cause: err });
    }
  }
  return SessionTable.of(sessions);
}

/**
 * sessionRecordsChecked yields `source`'s batches as they are, having checked
 * the session records in each as StateMachine.open will read them (every one
 * decodes, at most SESSION_CLIENTS_MAX of them): for an install that writes a
 * state straight into the store (a follower's install of a fetched snapshot),
 * so that a state no state machine can open on (a node that then fails at
 * every restart) is refused before it is made live. Errors: StorageError
 * `invalidArgument` naming `path` and the record (the install then keeps the
 * old state).
 */
export async function* sessionRecordsChecked<T extends KeyValue>(source: AsyncIterable<readonly T[]>, path: string): AsyncGenerator<readonly T[]> {
  let sessions = 0;
  for await (const batch of source) {
    for (const r of batch) {
      if (r.key[0] !== 0 || !isSessionKey(r.key)) continue;
      try {
        decodeSessionRecord(r.key, r.value);
      } catch (err) {
        if (!(err instanceof SessionFormatError)) throw err;
        throw new StorageError('invalidArgument', `installState on ${path}: ${err.message}`, { path, cause: err });
      }
      if (++sessions > SESSION_CLIENTS_MAX) {
        throw new StorageError('invalidArgument', `installState on ${path}: more than ${SESSION_CLIENTS_MAX} session records`, { path });
      }
    }
    yield batch;
  }
}

/**
 * SessionInstall sorts the session records out of a state being installed
 * (StateMachine.installState) and computes the table the new state has:
 * with `keepSessions` the current one (the source's reserved records are
 * ignored), else the source's own session records; then `session`, when given
 * and new, recorded as applied at `appliedIndex`. Reserved records that are
 * not session records are dropped either way, but for the restore floor of
 * a source installed without `keepSessions` (restore-floor.ts).
 */
export class SessionInstall {
  readonly #current: SessionTable;
  readonly #keep: boolean;
  readonly #session: SessionStamp | undefined;
  readonly #appliedIndex: number;
  readonly #path: string;
  readonly #fromSource = new Map<string, ClientSession>();

  /** Errors: StorageError `invalidArgument` for a malformed `session`. */
  constructor(
    current: SessionTable,
    meta: { readonly appliedIndex: number; readonly keepSessions?: boolean; readonly session?: SessionStamp },
    path: string,
  ) {
    this.#current = current;
    this.#keep = meta.keepSessions === true;
    this.#session = meta.session;
    this.#appliedIndex = meta.appliedIndex;
    this.#path = path;
    if (meta.session !== undefined) {
      const problem = sessionStampProblem(meta.session);
      if (problem !== null) throw new StorageError('invalidArgument', `installState on ${path}: session: ${problem}`, { path });
    }
  }

  /**
   * take returns true when `kv` is a reserved record (not to be stored as
   * data), keeping it when it is a session record the new state takes. Key
   * revision records (key-revision.ts) belong with the data: false; so does
   * the source's restore floor (restore-floor.ts) unless the install keeps
   * the current sessions (a restore, which records its own).
   * Errors: StorageError `invalidArgument` for a session record that does not
   * decode, or more than SESSION_CLIENTS_MAX of them.
   */
  take(kv: KeyValue): boolean {
    if (isCarriedKey(kv.key) || (!this.#keep && isRestoreFloorKey(kv.key))) return false;
    if (this.#keep || !isSessionKey(kv.key)) return true;
    let s: ClientSession;
    try {
      s = decodeSessionRecord(kv.key, kv.value);
    } catch (err) {
      if (!(err instanceof SessionFormatError)) throw err;
      throw new StorageError('invalidArgument', `installState on ${this.#path}: ${err.message}`, { path: this.#path, cause: err });
    }
    this.#fromSource.set(s.clientId, s);
    if (this.#fromSource.size > SESSION_CLIENTS_MAX) {
      throw new StorageError('invalidArgument', `installState on ${this.#path}: more than ${SESSION_CLIENTS_MAX} session records`, { path: this.#path });
    }
    return true;
  }

  /** finish: the session table of the installed state (write its records() with the data). */
  finish(): SessionTable {
    const table = SessionTable.of(this.#keep ? this.#current.sessions() : this.#fromSource.values());
    const stamp = this.#session;
    if (stamp !== undefined && table.lookup(stamp).kind === 'new') {
      const planner = new SessionPlanner(table);
      planner.record(stamp, this.#appliedIndex, { index: this.#appliedIndex });
      table.commit(planner.changes);
    }
    return table;
  }
}

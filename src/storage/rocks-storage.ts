import { mkdir, open as openFile, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { sameMembership } from '../raft/membership.js';
import type { Entry, EntryType, HardState, Membership } from '../raft/types.js';
import { checkIdentityMatch, missingIdentity, parseIdentity } from './identity-check.js';
import { rangeIsFull, resolveRange } from './key-range.js';
import { ChangedKeys, changesLimits } from './changed-keys.js';
import { keyString } from './key-string.js';
import { checkAppend, checkBootstrapMembership, checkHardState, EMPTY_HARD_STATE, planCompaction } from './log-rules.js';
import { lockedInodes } from './proc-locks.js';
import { openRecord, RecordSealer, sealRecord } from './record-checksum.js';
import { RocksDb, type RocksCalls, type RocksIterator, type RocksMemory, type RocksOp, type RocksOpSink } from './rocks.js';
import { SerialQueue } from './serial-queue.js';
import { findWalDamage } from './wal-check.js';
import { checkInstallBatch, checkInstallMeta, checkStateBatch, copyMembership, digestSnapshot, isMembership } from './state-transfer.js';
import { StorageError } from './storage-error.js';
import { checkImageManifest, checkImageSpace, exportStateImage, readStateImageChunks, removeImageDir, writeStateImage, type StateImage, type StateImageSource } from './state-image.js';
import {
  FORMAT_VERSION,
  SNAPSHOT_BATCH_BYTES_DEFAULT,
  SNAPSHOT_BATCH_ENTRIES_DEFAULT,
  STATE_RECORD_FORMAT,
  type CompactionBase,
  type HeldStateImage,
  type Identity,
  type ImportImageOptions,
  type InstallMeta,
  type KeyValue,
  type LogBase,
  type LogBatch,
  type LogState,
  type NodeStorage,
  type RangeQuery,
  type RangeResult,
  type StateBatch,
  type SnapshotStateOptions,
  type StateChanges,
  type StateSnapshotReader,
} from './types.js';

/*
 * Data dir layout (format 2 of the directory, which no release changed the identity's FORMAT_VERSION
 * for: no release wrote the old one; FORMAT_VERSION 2 since the record checksums, see types.ts):
 *
 *   <dataDir>/log/          RocksDB: the Raft log, hard state, log base, identity
 *   <dataDir>/state-<gen>/  RocksDB: the state machine of generation <gen> (decimal, from 1)
 *   <dataDir>/STATE         pointer: JSON {"generation": <gen>} naming the current state-<gen>
 *   <dataDir>/STATE.tmp     a pointer being written (garbage unless renamed)
 *
 * Key layout of log/ (bytewise order):
 *
 *   'l' + index:u64be         -> term:u64be type:u8 data crc  (log entry; type 0 normal, 1 conf)
 *   'm' + 'hardState'         -> JSON {term, vote, commit}
 *   'm' + 'identity'          -> JSON {nodeId, clusterId, formatVersion}
 *   'm' + 'logBase'           -> index:u64be term:u64be [membership JSON]
 *                                (last compacted entry and the membership as of it;
 *                                 a value of 16 bytes was written by a build that did
 *                                 not record the membership: read as null)
 *   'm' + 'recordFormat'      -> format:u64be                 (2: every 'l' value ends with its crc)
 *
 * Key layout of state-<gen>/:
 *
 *   'k' + key                 -> value bytes crc              (the state's records, whatever
 *                                they mean: src/fsm keeps its own records, client sessions
 *                                and key revisions, under keys of its own)
 *   'm' + 'applied'           -> index:u64be                  (state machine applied index)
 *   'm' + 'membership'        -> JSON Membership              (as of the applied index)
 *   'm' + 'recordFormat'      -> format:u64be                 (2: every 'k' value ends with its crc)
 *
 * crc: the CRC-32 (u32be) of the stored key and the value before it
 * (record-checksum.ts), checked wherever the record is read, because the
 * binding's iterators do not verify RocksDB's own block checksums. A
 * database without 'recordFormat' was written by a build before the
 * checksums (format 1: bare values): open() migrates it once (the log in one
 * synced batch; the state by building the next generation, committed as an
 * install is), and refuses any other format with `unknownFormat`.
 *
 * State generations: installState builds state-<gen+1> next to the current
 * one (unsynced batches, then one synced write of the applied index and
 * membership, then fsync of the new dir and the data dir), then writes
 * STATE.tmp (fsync), renames it over STATE and fsyncs the data dir: that
 * rename is the commit point. Only then is the old generation closed and
 * deleted (once no snapshot reader or read uses it any more). open() reads
 * STATE, deletes every state-* dir it does not name and STATE.tmp, so a
 * crash at any point leaves either the old or the new state, whole. The
 * data dir lock is RocksDB's lock on log/, taken before any of that.
 *
 * A data dir with the old single-database layout (<dataDir>/db) is refused
 * with StorageError `unknownFormat`; there is no migration (no release used it).
 *
 * Durability: log writes (save, compact) and the identity are synced, except
 * a save that only moves the commit index (no entries, the term and vote
 * already durable): that one is written unsynced, as etcd's raft.MustSync
 * (the commit index is not needed for safety; a power loss may take it back
 * to an earlier value, and the next synced write makes it durable). State
 * machine batches (data + applied index + membership, one atomic batch) are
 * NOT synced: the log is the source of truth and apply is idempotent by
 * index, so after a power loss the state machine resumes from whatever
 * applied index survived and the driver re-applies the committed entries.
 * The log and the state machine no longer share a write-ahead log, so
 * compact() first syncs the state machine (one synced write of its applied
 * index, when anything was applied unsynced since the last sync): a
 * compaction never drops entries a power loss could make the state machine
 * need again.
 */

const PREFIX_KV = 0x6b; // 'k'
const PREFIX_LOG = 0x6c; // 'l'
const PREFIX_META = 0x6d; // 'm'
const KEY_APPLIED = Buffer.from('mapplied');
const KEY_HARD_STATE = Buffer.from('mhardState');
const KEY_IDENTITY = Buffer.from('midentity');
const KEY_LOG_BASE = Buffer.from('mlogBase');
const KEY_MEMBERSHIP = Buffer.from('mmembership');
/** KEY_RECORD_FORMAT: in the log and in each state generation, the stored form of its records (see the layout above). */
const KEY_RECORD_FORMAT = Buffer.from('mrecordFormat');
/** LEGACY_RECORD_FORMAT: the stored form of a database without KEY_RECORD_FORMAT (bare values: builds before the checksums). */
const LEGACY_RECORD_FORMAT = 1;
/** RECORD_FORMAT: the stored form of the records this build writes, in the log as in the state (STATE_RECORD_FORMAT). */
const RECORD_FORMAT = STATE_RECORD_FORMAT;

/**
 * INSTALL_WRITE_BYTES / INSTALL_WRITE_OPS: an install writes its records in unsynced batches of about
 * this size. Two native batches alternate (one written while the other fills) and each keeps its
 * capacity, which grows by doubling past the size asked: the install holds up to about 4x this in
 * native memory that glibc does not give back. Measured (200k keys of 1 KiB, two installs in one
 * process, RssAnon after): 8 MiB batches 180-201 MiB, peak 245-260; 2 MiB 128-140, peak 210-219;
 * 1 MiB no lower, the install's wall time the same within noise.
 */
export const INSTALL_WRITE_BYTES = 2 * 1024 * 1024;
const INSTALL_WRITE_OPS = 16_384;
/**
 * INSTALL_TURN_BYTES: the most key and value bytes an install puts into its write batches in one turn of the
 * event loop; past it, it gives the loop a turn (RocksStorageOptions.yieldTurn: setImmediate) before the next
 * record. The install's source (a restore's gunzip, record checks, records digest and snapshot copy, all on the
 * main thread) is pulled in the same chain of promises, so without it one turn ran on for as long as the source
 * had bytes at hand: 30-70 ms of CPU at a time (a 300k-key restore's leader, cpuprofile), stretched to 150-800 ms
 * on a loaded machine (2 cores, load 12-25), long enough for both followers to miss the leader's heartbeats,
 * elect another leader and give up its state image (issue 15: each then installs its own archive copy, ~10 s of
 * CPU at 1M keys). At 256 KiB a turn holds ~1-2 ms of the install's CPU.
 */
export const INSTALL_TURN_BYTES = 256 * 1024;
/**
 * STATE_WRITE_BUFFER_BYTES: the memtable size of a state generation (the binding's default is 4 MiB).
 * RocksDB keeps up to two (one filling, one being flushed) in native memory. Measured (600k keys of
 * 1 KiB, two bulk installs in one process, peak RssAnon): 16 MiB 160-162 MiB, 8 MiB 121, 4 MiB
 * 128-133; install times the same within the noise of a loaded machine (8 MiB flushes half as many
 * L0 files as 4 MiB for compaction to merge).
 */
export const STATE_WRITE_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * STATE_BLOCK_BYTES: the SST data block size of a state generation (the binding's default is 4 KiB).
 * RocksDB holds every open SST's index in native memory, outside the block cache (the binding does
 * not cache index and filter blocks): an entry per data block, so it grows with the state. Measured
 * (issue 15, rocksdb.estimate-table-readers-mem with the bloom filters, 1M keys x 1 KiB): 7.2 MiB
 * per node with 4 KiB blocks, ~58 MiB at 8M keys; 16 KiB blocks hold a quarter of the index entries.
 * A point read then reads and checks a 16 KiB block instead of 4 KiB.
 */
export const STATE_BLOCK_BYTES = 16 * 1024;
/** STATE_OPEN_OPTIONS: how every state generation is opened (created or reopened). */
const STATE_OPEN_OPTIONS = { writeBufferBytes: STATE_WRITE_BUFFER_BYTES, blockBytes: STATE_BLOCK_BYTES } as const;

const LOG_DIR = 'log';
const OLD_LAYOUT_DIR = 'db';
const STATE_POINTER = 'STATE';
const STATE_POINTER_TMP = 'STATE.tmp';
/** IMAGES_DIR: the state images this node exported (state-image.ts); removed at open. */
const IMAGES_DIR = 'images';
const GENERATION_DIR = /^state-([1-9][0-9]{0,14})$/;

function generationDir(gen: number): string {
  return `state-${gen}`;
}

const TWO_32 = 2 ** 32;
const ENTRY_HEADER_BYTES = 9;

function writeU64(buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), offset);
  buf.writeUInt32BE(value % TWO_32, offset + 4);
}

function readU64(buf: Buffer, offset: number, what: string, path: string): number {
  if (buf.length < offset + 8) throw new StorageError('corrupt', `${path}: ${what} is truncated`, { path });
  const value = buf.readUInt32BE(offset) * TWO_32 + buf.readUInt32BE(offset + 4);
  if (!Number.isSafeInteger(value)) throw new StorageError('corrupt', `${path}: ${what} exceeds 2^53`, { path });
  return value;
}

function u64(value: number): Buffer {
  const buf = Buffer.allocUnsafe(8);
  writeU64(buf, value, 0);
  return buf;
}

function logKey(index: number): Buffer {
  const key = Buffer.allocUnsafe(9);
  key[0] = PREFIX_LOG;
  writeU64(key, index, 1);
  return key;
}

function kvKey(key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + key.length);
  out[0] = PREFIX_KV;
  out.set(key, 1);
  return out;
}

/**
 * KV_KEY_SCRATCH_BYTES_MAX: an install writes the prefixed keys up to this long into a scratch buffer kept
 * per length (KvKeyScratch) instead of a new Buffer per record (a million per GB of 1 KiB values).
 */
const KV_KEY_SCRATCH_BYTES_MAX = 256;

/**
 * KvKeyScratch gives kvKey(key) in a buffer it reuses, one per key length (up to KV_KEY_SCRATCH_BYTES_MAX;
 * longer keys get a new Buffer): the result is valid until the next call with a key of that length, so
 * only for a callee that copies it at once (RocksBulkBatch.put does).
 */
class KvKeyScratch {
  readonly #byLength: (Buffer | undefined)[] = [];

  of(key: Uint8Array): Buffer {
    const n = key.length + 1;
    if (n > KV_KEY_SCRATCH_BYTES_MAX) return kvKey(key);
    let out = this.#byLength[n];
    if (out === undefined) {
      out = Buffer.alloc(n);
      out[0] = PREFIX_KV;
      this.#byLength[n] = out;
    }
    out.set(key, 1);
    return out;
  }
}

/**
 * LogScratch writes log entries into a native batch (RocksOpSink.put copies at once): each entry's key and
 * stored form (its sealed encoding) in buffers it reuses, no Buffer per entry.
 */
class LogScratch {
  readonly #key = Buffer.alloc(9);
  #entry = Buffer.alloc(256);
  readonly #sealer = new RecordSealer();

  key(index: number): Buffer {
    const key = this.#key;
    key[0] = PREFIX_LOG;
    writeU64(key, index, 1);
    return key;
  }

  /** put: `entry` under its key into `sink`. */
  put(sink: RocksOpSink, entry: Entry): void {
    const key = this.key(entry.index);
    const n = ENTRY_HEADER_BYTES + entry.data.length;
    if (n > LOG_SCRATCH_BYTES_MAX) {
      // Big values: a buffer of their own, as before the scratch.
      sink.put(key, sealRecord(key, encodeEntry(entry)));
      return;
    }
    if (n > this.#entry.length) this.#entry = Buffer.alloc(Math.max(n, this.#entry.length * 2));
    const out = this.#entry;
    writeU64(out, entry.term, 0);
    out[8] = entry.type === 'conf' ? 1 : 0;
    out.set(entry.data, ENTRY_HEADER_BYTES);
    sink.put(key, this.#sealer.seal(key, out.subarray(0, n)));
  }
}

/** LOG_SCRATCH_BYTES_MAX: the largest stored entry LogScratch writes in its own buffer (larger ones get one of their own). */
const LOG_SCRATCH_BYTES_MAX = 1024 * 1024;

function encodeEntry(entry: Entry): Buffer {
  const out = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + entry.data.length);
  writeU64(out, entry.term, 0);
  out[8] = entry.type === 'conf' ? 1 : 0;
  out.set(entry.data, ENTRY_HEADER_BYTES);
  return out;
}

/** decodeEntry: the entry stored under `key` (index `index`) as `stored`; `format` is the log's record format (1: no trailer). */
function decodeEntry(key: Buffer, index: number, stored: Buffer, path: string, format: number = RECORD_FORMAT): Entry {
  const value = format === LEGACY_RECORD_FORMAT ? stored : openRecord(key, stored, path, () => `log entry ${index}`);
  const term = readU64(value, 0, `log entry ${index}`, path);
  const typeByte = value[8];
  let type: EntryType;
  if (typeByte === 0) type = 'normal';
  else if (typeByte === 1) type = 'conf';
  else throw new StorageError('corrupt', `${path}: log entry ${index} has unknown type ${String(typeByte)}`, { path });
  return { index, term, type, data: value.subarray(ENTRY_HEADER_BYTES) };
}

function parseJson<T>(value: Buffer, what: string, path: string, valid: (v: unknown) => v is T): T {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch (err) {
    throw new StorageError('corrupt', `${path}: ${what} is not JSON`, { path, cause: err });
  }
  if (!valid(parsed)) throw new StorageError('corrupt', `${path}: ${what} is malformed`, { path });
  return parsed;
}

function isHardState(v: unknown): v is HardState {
  const h = v as Partial<Record<keyof HardState, unknown>> | null;
  return (
    typeof h === 'object' &&
    h !== null &&
    typeof h.term === 'number' &&
    typeof h.commit === 'number' &&
    typeof h.vote === 'string'
  );
}


function encodeLogBase(base: LogBase): Buffer {
  const head = Buffer.allocUnsafe(16);
  writeU64(head, base.index, 0);
  writeU64(head, base.term, 8);
  return base.membership === null ? head : Buffer.concat([head, Buffer.from(JSON.stringify(base.membership))]);
}

/** openStateRecord: the value of the state record stored as `stored` under `key` (prefixed), checked (openRecord). */
function openStateRecord(key: Buffer, stored: Buffer, path: string): Buffer {
  return openRecord(key, stored, path, () => `the record of key ${JSON.stringify(key.toString('latin1', 1, Math.min(key.length, 201)))}`);
}

function decodeLogBase(value: Buffer, path: string): LogBase {
  const index = readU64(value, 0, 'log base', path);
  const term = readU64(value, 8, 'log base', path);
  const membership = value.length > 16 ? parseJson(value.subarray(16), 'log base membership', path, isMembership) : null;
  return { index, term, membership };
}

/** fsOp runs a file system call, turning its failure into StorageError `io` naming `path`. */
async function fsOp<T>(what: string, path: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new StorageError('io', `${path}: cannot ${what}: ${(err as Error).message}`, { path, cause: err });
  }
}

/** fsyncDir makes the entries of directory `path` (files created, renamed, removed in it) durable. */
async function fsyncDir(path: string): Promise<void> {
  await fsOp('fsync directory', path, async () => {
    const handle = await openFile(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new StorageError('io', `${path}: cannot stat: ${(err as Error).message}`, { path, cause: err });
  }
}

/** readStatePointer returns the generation STATE names, null when there is no STATE. Errors: `corrupt`, `io`. */
async function readStatePointer(dataDir: string): Promise<number | null> {
  const path = join(dataDir, STATE_POINTER);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StorageError('io', `${path}: cannot read: ${(err as Error).message}`, { path, cause: err });
  }
  const pointer = parseJson(Buffer.from(text), 'state pointer', path, (v): v is { generation: number } => {
    const g = (v as { generation?: unknown } | null)?.generation;
    return typeof g === 'number' && Number.isSafeInteger(g) && g >= 1;
  });
  return pointer.generation;
}

/**
 * writeStatePointerTmp writes STATE.tmp naming `gen` and syncs it; renaming
 * it over STATE (then syncing the data dir) is the caller's commit.
 */
async function writeStatePointerTmp(dataDir: string, gen: number): Promise<void> {
  const path = join(dataDir, STATE_POINTER_TMP);
  await fsOp('write', path, async () => {
    const handle = await openFile(path, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify({ generation: gen })}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  });
}

async function commitStatePointer(dataDir: string): Promise<void> {
  const tmp = join(dataDir, STATE_POINTER_TMP);
  await fsOp('rename', tmp, () => rename(tmp, join(dataDir, STATE_POINTER)));
}

/** readStateMeta reads a state generation's applied index (0 when none) and membership (null when none). Errors: `corrupt`, `io`. */
async function readStateMeta(db: RocksDb): Promise<{ applied: number; membership: Membership | null }> {
  const appliedBytes = await db.get(KEY_APPLIED);
  const applied = appliedBytes === undefined ? 0 : readU64(appliedBytes, 0, 'applied index', db.path);
  const membershipBytes = await db.get(KEY_MEMBERSHIP);
  const membership = membershipBytes === undefined ? null : parseJson(membershipBytes, 'membership', db.path, isMembership);
  return { applied, membership };
}

/**
 * checkLogWal refuses (StorageError `corrupt`) a log whose write-ahead log holds a record that does not verify
 * followed by records that do (findWalDamage): RocksDB would open it without an error and drop those records, synced
 * entries and votes among them. A torn tail passes. When the log is open in another process (its LOCK in
 * /proc/locks: a WAL being appended to can read as broken), the check stands aside and RocksDB's open refuses the
 * lock before it replays anything.
 */
async function checkLogWal(logPath: string): Promise<void> {
  const damage = await findWalDamage(logPath);
  if (damage === null) return;
  const locked = await lockedInodes();
  const lock = await stat(join(logPath, 'LOCK'), { bigint: true }).catch(() => null);
  if (locked !== null && lock !== null && locked.has(lock.ino)) return;
  throw new StorageError(
    'corrupt',
    `${damage.file}: the Raft log's write-ahead log does not verify at byte ${damage.offset} and holds records after it, ` +
      'which RocksDB would drop without an error (entries and votes this node synced): this data dir cannot be trusted; ' +
      'replace it (remove it and let the node rejoin: its data is on the other members)',
    { path: damage.file },
  );
}

/** LOG_DATA_FILE: a file of a RocksDB database that holds its records (an SST or a write-ahead log). */
const LOG_DATA_FILE = /^[0-9]+\.(sst|log)$/;

/**
 * logMayBeCreated: whether open() may create the Raft log database at `logPath`: only in a data dir never
 * initialised (no STATE, which the first open writes after the log exists) whose log/ holds no record file (SST
 * or write-ahead log). Otherwise the log must be there whole, and one that is missing or has lost its CURRENT is
 * refused (StorageError `corrupt`) before RocksDB is called: told to create it, RocksDB made a new, empty database
 * over the old files (deleting the SSTs that held the hard state, the entries and the identity) and, at the next
 * open, the node started with no vote in its term and none of the entries it had acknowledged. Errors: `corrupt`,
 * `io` (a directory that cannot be read).
 */
async function logMayBeCreated(dataDir: string, logPath: string): Promise<boolean> {
  const current = join(logPath, 'CURRENT');
  if (await exists(current)) return false; // an existing database: RocksDB opens it, nothing to create
  const initialised = await exists(join(dataDir, STATE_POINTER));
  let names: string[] = [];
  try {
    names = await readdir(logPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new StorageError('io', `${logPath}: cannot list its files: ${(err as Error).message}`, { path: logPath, cause: err });
    }
  }
  const records = names.filter((n) => LOG_DATA_FILE.test(n));
  if (!initialised && records.length === 0) return true;
  throw new StorageError(
    'corrupt',
    names.length === 0 && !(await exists(logPath))
      ? `data dir ${dataDir}: its Raft log ${logPath} is missing (the data dir holds ${STATE_POINTER}: it was initialised): ` +
          'refusing to start with no log (the term, the vote and every entry this node acknowledged would be forgotten); ' +
          'put it back, or replace the data dir (remove it and let the node rejoin: its data is on the other members)'
      : `data dir ${dataDir}: its Raft log has no ${current} (${records.length > 0 ? `it holds ${records.join(', ')}` : `the data dir holds ${STATE_POINTER}: it was initialised`}): ` +
          'refusing to open it (RocksDB would start a new, empty log over its files, forgetting the term, the vote and every entry this node acknowledged); ' +
          'put the file back, or replace the data dir (remove it and let the node rejoin: its data is on the other members)',
    { path: logPath },
  );
}

/**
 * readRecordFormat: the record format `db` declares (KEY_RECORD_FORMAT; LEGACY_RECORD_FORMAT when it declares none).
 * Errors: `unknownFormat` (a format this build does not read), `corrupt`, `io`.
 */
async function readRecordFormat(db: RocksDb): Promise<number> {
  const bytes = await db.get(KEY_RECORD_FORMAT);
  if (bytes === undefined) return LEGACY_RECORD_FORMAT;
  const format = readU64(bytes, 0, 'record format', db.path);
  if (format !== RECORD_FORMAT) {
    throw new StorageError('unknownFormat', `${db.path}: its records are of format ${format}; this build reads ${LEGACY_RECORD_FORMAT} (migrated when opened) and ${RECORD_FORMAT}`, { path: db.path });
  }
  return format;
}

/**
 * migrateLog rewrites every entry of a log of bare entries (LEGACY_RECORD_FORMAT) sealed, with KEY_RECORD_FORMAT, in
 * one synced batch (atomic: a crash leaves the log as it was, migrated at the next open); the number of entries.
 * Errors: `corrupt` (an entry too short to be one), `io`.
 */
async function migrateLog(log: RocksDb, identity: RocksOp | null): Promise<number> {
  const ops: RocksOp[] = identity === null ? [] : [identity];
  for await (const batch of log.iterate({ gte: Buffer.of(PREFIX_LOG), lt: Buffer.of(PREFIX_LOG + 1) })) {
    for (const { key, value } of batch) {
      decodeEntry(key, readU64(key, 1, 'log key', log.path), value, log.path, LEGACY_RECORD_FORMAT);
      ops.push({ type: 'put', key, value: sealRecord(key, value) });
    }
  }
  ops.push({ type: 'put', key: KEY_RECORD_FORMAT, value: u64(RECORD_FORMAT) });
  await log.write(ops, { sync: true });
  return ops.length - (identity === null ? 1 : 2);
}

/** LEGACY_FORMAT_VERSION: the identity's formatVersion of a data dir of a build before the record checksums. */
const LEGACY_FORMAT_VERSION = 1;

/**
 * raisedIdentity: the put that records the identity of `log` at FORMAT_VERSION when it names LEGACY_FORMAT_VERSION
 * (null when there is none, or it names another), so that a build before the checksums refuses the data dir.
 * Errors: `corrupt` (an identity that is not one), `io`.
 */
async function raisedIdentity(log: RocksDb, dataDir: string): Promise<RocksOp | null> {
  const bytes = await log.get(KEY_IDENTITY);
  if (bytes === undefined) return null;
  const { nodeId, clusterId, formatVersion } = parseIdentity(bytes.toString('utf8'), dataDir);
  if (formatVersion !== LEGACY_FORMAT_VERSION) return null;
  return { type: 'put', key: KEY_IDENTITY, value: Buffer.from(JSON.stringify({ nodeId, clusterId, formatVersion: FORMAT_VERSION })) };
}

/** GenerationMeta: the applied index and membership a built state generation is committed with (null: none recorded yet). */
interface GenerationMeta {
  readonly appliedIndex: number;
  readonly membership: Membership | null;
}

/** collectGarbage deletes every state-<gen> dir but state-<keep> (all of them when keep is null) and STATE.tmp. */
async function collectGarbage(dataDir: string, keep: number | null): Promise<void> {
  const names = await fsOp('list', dataDir, () => readdir(dataDir));
  let removed = false;
  for (const name of names) {
    const match = GENERATION_DIR.exec(name);
    if ((match !== null && Number(match[1]) !== keep) || name === STATE_POINTER_TMP) {
      const path = join(dataDir, name);
      await fsOp('remove', path, () => rm(path, { recursive: true, force: true }));
      removed = true;
    }
  }
  if (removed) await fsyncDir(dataDir);
}

/**
 * InstallPhase names the points of RocksStorage.installState at which an
 * `installHook` is called (crash tests kill the process there):
 * - `generationCreated`: state-<gen> exists, empty; STATE untouched;
 * - `generationBuilt`: every record and the meta are written and synced; STATE untouched;
 * - `pointerWritten`: STATE.tmp is written and synced, not yet renamed over STATE;
 * - `pointerSwapped`: STATE names the new generation (the commit point is
 *   passed, the data dir synced); the old generation is still on disk;
 * - `oldGenerationDeleted`: the old generation is closed and deleted (unless
 *   a snapshot reader still holds it); installState is about to resolve.
 * An install with exportImage passes three more between `generationCreated` and `generationBuilt` (STATE untouched):
 * - `imageClosed`: the built generation is synced and closed, images/image-<gen> not yet made;
 * - `imageFileExported`: after each file is hard-linked (SSTs) or copied, and hashed;
 * - `imageExported`: every file exported, the generation not yet reopened.
 */
export type InstallPhase =
  | 'generationCreated'
  | 'imageClosed'
  | 'imageFileExported'
  | 'imageExported'
  | 'generationBuilt'
  | 'pointerWritten'
  | 'pointerSwapped'
  | 'oldGenerationDeleted';

/** InstallOptions: exportImage: export the built generation as a state image (state-image.ts) before its commit. */
export interface InstallOptions {
  readonly exportImage?: boolean;
}

/** RocksStorageOptions tunes RocksStorage.open. */
export interface RocksStorageOptions {
  /** called synchronously at each InstallPhase of every installState, with the new generation; for crash tests. */
  readonly installHook?: (phase: InstallPhase, generation: number) => void;
  /** changesValuesKeptBytes: see CHANGES_VALUES_KEPT_BYTES (changed-keys.ts; its default); for tests. */
  readonly changesValuesKeptBytes?: number;
  /**
   * yieldTurn: how a view's listing of its changes (ChangedKeys.list) and an install (INSTALL_TURN_BYTES) give the
   * event loop a turn (default: setImmediate); for tests.
   */
  readonly yieldTurn?: () => Promise<void>;
  /**
   * onMigration: called when open() starts migrating a database of a build before the record checksums (see the
   * layout notes): `log` with its entries to rewrite, `state` with the generation's applied index (the whole state is
   * rewritten: minutes for gigabytes), so that a caller can say why its start takes long.
   */
  readonly onMigration?: (what: { readonly database: 'log' | 'state'; readonly path: string }) => void;
}

/** Generation is one open state-<gen> database with the reads and readers using it. */
interface Generation {
  readonly gen: number;
  readonly db: RocksDb;
  /** reads, ranges and snapshot readers in progress on it. */
  refs: number;
  /** replaced by an install: to be closed (and deleted) once refs is 0. */
  retired: boolean;
  deleteWhenRetired: boolean;
  disposing: Promise<void> | null;
}

/**
 * RocksStorage is a node's NodeStorage (LogStore, StateMachine,
 * IdentityStore) in two RocksDB databases under the data dir, the log and the
 * current state generation; see the layout and durability notes above. Log
 * operations run one at a time, as do applies, installs and the taking of
 * snapshots (one queue); reads see the last completed apply or install.
 * Errors are StorageError (see types.ts), engine failures `io` with the
 * database path in the message.
 */

/** nextTurn resolves on a later turn of the event loop, after the IO already due (setImmediate). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class RocksStorage implements NodeStorage {
  #stateViews = 0;
  /** the node's data dir. */
  readonly dataDir: string;
  readonly #log: RocksDb;
  readonly #options: RocksStorageOptions;
  readonly #logQueue = new SerialQueue();
  readonly #applyQueue = new SerialQueue();
  /** the current state generation, and every retired one still in use. */
  #state: Generation;
  readonly #generations = new Set<Generation>();
  /** true when an apply was written unsynced since the state machine was last synced. */
  #stateDirty = false;
  /** #logScratch: the keys and stored entries of save() (inside the log queue, one save at a time). */
  readonly #logScratch = new LogScratch();
  /** #writeKeys: the prefixed keys of write() (inside the apply queue, one write at a time; RocksDb.writeFilled copies each at once). */
  readonly #writeKeys = new KvKeyScratch();
  /** #writeValues: the sealed values of write() (as #writeKeys). */
  readonly #writeValues = new RecordSealer();
  /** true while installState holds the apply queue (no apply runs meanwhile). */
  #installing = false;
  #base: LogBase;
  #lastIndex: number;
  /**
   * #compacting: the write of the compaction under way outside the log queue (see compact), settled once it
   * landed and #base is its; the next compaction and close() wait for it. Never rejects.
   */
  #compacting: Promise<void> = Promise.resolve();
  /** #durableVote: the term and vote of the hard state last read or written synced (null: unknown, the next hard state is synced). */
  #durableVote: { readonly term: number; readonly vote: string } | null = null;
  /**
   * #logFailure: the first write to the log database that failed (null while none has); every log write after it is
   * refused (#checkLogWritable). RocksDB (the binding opens it with paranoid_checks off) takes writes after a failed
   * one and appends them after what the failure left in the write-ahead log: a save that failed with ENOSPC, the disk
   * freed, then ten synced saves that succeeded: at the next open the WAL had a record that does not verify before
   * theirs, and the data dir was refused (RocksDB alone would have dropped those entries, acknowledged ones, silently).
   * Nothing after the failure: the failed write reads as a torn tail, the log opens with every write that succeeded.
   */
  #logFailure: Error | null = null;
  #applied: number;
  /** #changes: every key written after its knownSince, for snapshotState changes (see ChangedKeys). */
  readonly #changes: ChangedKeys;
  #membership: Membership | null;
  #closing: Promise<void> | null = null;
  /** #image: the state image the last exporting install made, with the reads of it in progress. */
  #image: { readonly image: StateImage; refs: number; dropped: boolean } | null = null;
  #migrated: { readonly logEntries: number; readonly stateRecords: number } | null = null;

  private constructor(
    dataDir: string,
    log: RocksDb,
    state: Generation,
    options: RocksStorageOptions,
    meta: { base: LogBase; lastIndex: number; applied: number; membership: Membership | null },
  ) {
    this.dataDir = dataDir;
    this.#log = log;
    this.#state = state;
    this.#generations.add(state);
    this.#options = options;
    this.#base = meta.base;
    this.#lastIndex = meta.lastIndex;
    this.#applied = meta.applied;
    this.#membership = meta.membership;
    this.#changes = new ChangedKeys(meta.applied, changesLimits(options.changesValuesKeptBytes));
  }

  /**
   * RocksStorage.open opens (creating when missing, mode 0700) the data dir:
   * the log database, then the state generation STATE names, deleting any
   * other (left by a crash during an install). Errors: StorageError
   * `unknownFormat` (the old single-database layout), `io` (e.g. the data
   * dir is locked by another process), `corrupt` (unreadable metadata, a
   * missing STATE beside a log that holds data, STATE naming a missing
   * generation, a log missing or without its CURRENT in a data dir that was
   * initialised: refused before RocksDB touches it, see logMayBeCreated).
   */
  static async open(dataDir: string, options: RocksStorageOptions = {}): Promise<RocksStorage> {
    await fsOp('create', dataDir, () => mkdir(dataDir, { recursive: true, mode: 0o700 }));
    const oldLayout = join(dataDir, OLD_LAYOUT_DIR);
    if (await exists(oldLayout)) {
      throw new StorageError(
        'unknownFormat',
        `data dir ${dataDir} has the old single-database layout (${oldLayout}); this build keeps the log in ` +
          `${LOG_DIR}/ and the state machine in state-<gen>/ named by ${STATE_POINTER}, and cannot read it. ` +
          'No release wrote that layout, so there is no migration: move the data dir away (or delete it) and rejoin the cluster.',
        { path: dataDir },
      );
    }
    // The lock on log/ is the data dir lock: taken before anything else is touched (but for the read-only check of
    // its write-ahead log, which must come before RocksDB replays it: see checkLogWal).
    const logPath = join(dataDir, LOG_DIR);
    const createLog = await logMayBeCreated(dataDir, logPath);
    await checkLogWal(logPath);
    const log = await RocksDb.open(logPath, { createIfMissing: createLog });
    // A state image is kept only for a bounded time after the install that exported it: never across a restart.
    await removeImageDir(join(dataDir, IMAGES_DIR));
    let stateDb: RocksDb | null = null;
    try {
      const baseBytes = await log.get(KEY_LOG_BASE);
      const base: LogBase = baseBytes === undefined ? { index: 0, term: 0, membership: null } : decodeLogBase(baseBytes, logPath);
      let lastIndex = base.index;
      for await (const batch of log.iterate({ gt: logKey(base.index), lt: Buffer.of(PREFIX_LOG + 1), reverse: true, limit: 1, values: false })) {
        for (const { key } of batch) lastIndex = readU64(key, 1, 'log key', logPath);
      }
      // The identity raised with the records (in the same batch for a log of bare entries; alone for one this build
      // family sealed before it raised identities): a build before the checksums then refuses the data dir.
      const identity = await raisedIdentity(log, dataDir);
      const logFormat = await readRecordFormat(log);
      const logHoldsData =
        baseBytes !== undefined || lastIndex > 0 || (await log.get(KEY_HARD_STATE)) !== undefined || (await log.get(KEY_IDENTITY)) !== undefined;
      // A log without a declared format is of a build before the checksums, or new (empty: sealed, nothing to tell).
      if (logFormat === LEGACY_RECORD_FORMAT && logHoldsData) options.onMigration?.({ database: 'log', path: logPath });
      const logEntriesMigrated = logFormat === LEGACY_RECORD_FORMAT ? await migrateLog(log, identity) : 0;
      if (logFormat !== LEGACY_RECORD_FORMAT && identity !== null) await log.write([identity], { sync: true });

      let gen = await readStatePointer(dataDir);
      if (gen === null) {
        if (logHoldsData) {
          throw new StorageError(
            'corrupt',
            `data dir ${dataDir}: ${logPath} holds data but ${join(dataDir, STATE_POINTER)} (the state machine pointer) is missing`,
            { path: dataDir },
          );
        }
        // A new data dir (or a first open that crashed before writing STATE).
        await collectGarbage(dataDir, null);
        gen = 1;
        stateDb = await RocksDb.open(join(dataDir, generationDir(gen)), { ...STATE_OPEN_OPTIONS, errorIfExists: true });
        await stateDb.write([{ type: 'put', key: KEY_RECORD_FORMAT, value: u64(RECORD_FORMAT) }], { sync: true });
        await writeStatePointerTmp(dataDir, gen);
        await commitStatePointer(dataDir);
        await fsyncDir(dataDir);
      } else {
        // The generation STATE names is opened before any other is deleted: a STATE that names a generation that is
        // missing or does not open (a damaged pointer, a damaged generation) is refused with the others still there
        // (before, they were deleted first: the state the operator could have pointed STATE back to was gone).
        const statePath = join(dataDir, generationDir(gen));
        if (!(await exists(statePath))) {
          const others = (await fsOp('list', dataDir, () => readdir(dataDir))).filter((n) => GENERATION_DIR.test(n)).sort();
          throw new StorageError(
            'corrupt',
            `data dir ${dataDir}: ${STATE_POINTER} names ${statePath}, which is missing` +
              (others.length > 0 ? ` (it holds ${others.join(', ')}, left as they are)` : ''),
            { path: dataDir },
          );
        }
        stateDb = await RocksDb.open(statePath, { ...STATE_OPEN_OPTIONS, createIfMissing: false });
        await collectGarbage(dataDir, gen);
      }

      const { applied, membership } = await readStateMeta(stateDb);
      const legacyState = (await readRecordFormat(stateDb)) === LEGACY_RECORD_FORMAT;
      const state: Generation = { gen, db: stateDb, refs: 0, retired: false, deleteWhenRetired: true, disposing: null };
      stateDb = null; // the storage's from here: closed by it
      const storage = new RocksStorage(dataDir, log, state, options, { base, lastIndex, applied, membership });
      try {
        if (legacyState) options.onMigration?.({ database: 'state', path: state.db.path });
        const stateRecordsMigrated = legacyState ? await storage.#migrateState() : 0;
        if (logEntriesMigrated > 0 || stateRecordsMigrated > 0) storage.#migrated = { logEntries: logEntriesMigrated, stateRecords: stateRecordsMigrated };
      } catch (err) {
        await storage.close().catch(() => undefined);
        throw err;
      }
      return storage;
    } catch (err) {
      await stateDb?.close().catch(() => undefined);
      await log.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * RocksStorage.migrated: what open() rewrote from a data dir of a build before the record checksums (log entries,
   * state records; see the layout notes), null when nothing was.
   */
  get migrated(): { readonly logEntries: number; readonly stateRecords: number } | null {
    return this.#migrated;
  }

  /**
   * #migrateState rewrites a generation of bare records (LEGACY_RECORD_FORMAT) as the next generation, each record
   * sealed, committed as an install is (a crash before the commit leaves the old generation, migrated again at the
   * next open); the number of records rewritten.
   */
  async #migrateState(): Promise<number> {
    let records = 0;
    await this.#installExclusive('open', async () => {
      const g = this.#acquire();
      const reader = new RocksSnapshotReader(stateIterator(g.db), g.db.path, this.#applied, this.#membership, () => this.#release(g), undefined, true);
      async function* counted(): AsyncGenerator<KeyValue[]> {
        for await (const batch of reader.batches()) {
          records += batch.length;
          yield batch;
        }
      }
      try {
        await this.#install(counted(), { appliedIndex: this.#applied, membership: this.#membership }, false);
      } finally {
        await reader.close();
      }
    });
    return records;
  }

  /** RocksStorage.path is the log database directory (`<dataDir>/log`). */
  get path(): string {
    return this.#log.path;
  }

  /** RocksStorage.statePath is the current state machine database directory (`<dataDir>/state-<gen>`). */
  /** stateViews: the point-in-time views of the whole state opened so far (snapshotState calls: each a full read when iterated). */
  get stateViews(): number {
    return this.#stateViews;
  }

  /**
   * memory: RocksDB's own native memory (RocksDb.memory) of the log database and of the state generations
   * open now (the current one and retired ones still read), summed; a closed storage holds none.
   */
  memory(): { readonly log: RocksMemory; readonly state: RocksMemory } {
    const sum = (dbs: readonly RocksDb[]): RocksMemory => {
      let memtablesBytes = 0;
      let tableReadersBytes = 0;
      let blockCacheBytes = 0;
      for (const db of dbs) {
        const m = db.memory();
        memtablesBytes += m.memtablesBytes;
        tableReadersBytes += m.tableReadersBytes;
        blockCacheBytes += m.blockCacheBytes;
      }
      return { memtablesBytes, tableReadersBytes, blockCacheBytes };
    };
    return { log: sum([this.#log]), state: sum([...this.#generations].map((g) => g.db)) };
  }

  /** logCalls: the native calls made on the log's database (see RocksCalls: syncedWrite counts its fsyncs). */
  logCalls(): Readonly<RocksCalls> {
    return { ...this.#log.calls };
  }

  /** stateCalls: the native calls made on the current state generation's database (see RocksCalls). */
  stateCalls(): Readonly<RocksCalls> {
    return { ...this.#state.db.calls };
  }

  get statePath(): string {
    return this.#state.db.path;
  }

  // ---- LogStore ----

  /**
   * readHardState: the hard state last saved (term, vote, commit), read alone, not the log (load reads both);
   * EMPTY_HARD_STATE when none was saved. Used before the node starts (serve's check of a data dir older than
   * what this member acknowledged).
   */
  async readHardState(): Promise<HardState> {
    this.#checkOpen('readHardState');
    return this.#logQueue.run(async () => {
      const bytes = await this.#log.get(KEY_HARD_STATE);
      return bytes === undefined ? EMPTY_HARD_STATE : parseJson(bytes, 'hard state', this.path, isHardState);
    });
  }

  async load(): Promise<LogState> {
    this.#checkOpen('load');
    return this.#logQueue.run(async () => {
      const path = this.path;
      const hardStateBytes = await this.#log.get(KEY_HARD_STATE);
      const hardState =
        hardStateBytes === undefined ? EMPTY_HARD_STATE : parseJson(hardStateBytes, 'hard state', path, isHardState);
      this.#durableVote = { term: hardState.term, vote: hardState.vote };
      const base = this.#base;
      const entries: Entry[] = [];
      let expected = base.index + 1;
      for await (const batch of this.#log.iterate({ gt: logKey(base.index), lt: Buffer.of(PREFIX_LOG + 1) })) {
        for (const { key, value } of batch) {
          const index = readU64(key, 1, 'log key', path);
          if (index !== expected) {
            throw new StorageError('corrupt', `${path}: log has a gap: entry ${index} where ${expected} was expected`, {
              path,
            });
          }
          entries.push(decodeEntry(key, index, value, path));
          expected++;
        }
      }
      const logBase = { index: base.index, term: base.term, membership: base.membership === null ? null : copyMembership(base.membership) };
      return { hardState, logBase, entries };
    });
  }

  async save(batch: LogBatch): Promise<void> {
    this.#checkOpen('save');
    const entries = batch.entries ?? [];
    if (batch.hardState === undefined && entries.length === 0) return;
    /** earlier: the write of a compaction issued before this save's and maybe still under way (see compact). */
    let earlier: Promise<void> = Promise.resolve();
    await this.#logQueue.run(async () => {
      this.#checkLogWritable('save');
      const hardState = batch.hardState;
      if (hardState !== undefined) checkHardState(hardState, this.path);
      const newLast = checkAppend(entries, { base: this.#base, lastIndex: this.#lastIndex }, this.path);
      const oldLast = this.#lastIndex;
      // Only a new commit index (no entries, the durable term and vote): unsynced, as etcd's raft.MustSync.
      const sync =
        entries.length > 0 || hardState === undefined || this.#durableVote === null || hardState.term !== this.#durableVote.term || hardState.vote !== this.#durableVote.vote;
      // Straight into the native batch: each entry's key and sealed form in the reused LogScratch (copied as given),
      // no Buffer and no op object per entry, on the leader and on every follower.
      const scratch = this.#logScratch;
      earlier = this.#compacting;
      await this.#writeLog(this.#log.writeFilled((sink) => {
        if (hardState !== undefined) {
          const { term, vote, commit } = hardState;
          sink.put(KEY_HARD_STATE, Buffer.from(JSON.stringify({ term, vote, commit })));
        }
        // Entries in [first, newLast] are overwritten by the puts; delete the stale tail beyond them.
        for (let index = newLast + 1; index <= oldLast && entries.length > 0; index++) sink.del(scratch.key(index));
        for (const entry of entries) scratch.put(sink, entry);
      }, { sync }));
      if (sync && hardState !== undefined) this.#durableVote = { term: hardState.term, vote: hardState.vote };
      this.#lastIndex = newLast;
    });
    // This write may lie after the partial record an earlier write still under way leaves if it fails: then it is
    // not taken either (the earlier write lands first in the common case: one write-ahead log, written in order).
    await earlier;
    this.#checkLogWritable('save');
  }

  /**
   * RocksStorage.compact: see LogStore. The state machine has its own
   * write-ahead log: it is made durable first, before any entry it could need
   * is dropped (outside the log queue: appends do not wait for that sync).
   * A compaction that keeps the log's suffix deletes only entries at or below
   * the base, which the core has committed and applied, and no append writes
   * again: its write (synced, as the contract says) is issued inside the log
   * queue and waited for outside it, so the appends queued behind it are
   * written meanwhile (under bench:write a compaction of 9,000 entries held
   * the queue, and with it every append, for 45-90 ms). The next compaction
   * waits for it. One that discards the log (a new base past its end, or a
   * conflicting term at the base) moves the log's end: it is written inside
   * the queue as before.
   */
  async compact(base: CompactionBase): Promise<void> {
    this.#checkOpen('compact');
    // The applies so far made durable: those up to `synced`.
    const synced = this.#applied;
    if (base.index > this.#base.index) await this.#syncState();
    let landed: Promise<void> | null = null;
    await this.#logQueue.run(async () => {
      await this.#compacting;
      this.#checkOpen('compact');
      this.#checkLogWritable('compact');
      let termAtBase: number | undefined;
      if (base.index > this.#base.index && base.index <= this.#lastIndex) {
        const key = logKey(base.index);
        const value = await this.#log.get(key);
        if (value !== undefined) termAtBase = decodeEntry(key, base.index, value, this.path).term;
      }
      const plan = planCompaction(base, { base: this.#base, lastIndex: this.#lastIndex }, termAtBase, this.path);
      if (plan === null) return;
      // A base past the applies synced above (an apply or install since): synced here, in the queue, as before.
      if (synced < plan.base.index) await this.#syncState();
      const ops: RocksOp[] = [];
      for (let index = plan.deleteFrom; index <= plan.deleteTo; index++) ops.push({ type: 'del', key: logKey(index) });
      ops.push({ type: 'put', key: KEY_LOG_BASE, value: encodeLogBase(plan.base) });
      if (plan.lastIndex !== this.#lastIndex || plan.deleteTo > plan.base.index || termAtBase !== plan.base.term) {
        await this.#writeLog(this.#log.write(ops, { sync: true }));
        this.#base = plan.base;
        this.#lastIndex = plan.lastIndex;
        return;
      }
      const written = this.#writeLog(this.#log.write(ops, { sync: true })).then(() => {
        this.#base = plan.base;
      });
      this.#compacting = written.catch(() => undefined);
      landed = written;
    });
    await landed;
  }

  async bootstrap(membership: Membership): Promise<Membership | null> {
    this.#checkOpen('bootstrap');
    const checked = checkBootstrapMembership(membership, this.path);
    return this.#logQueue.run(async () => {
      const base = this.#base;
      if (base.membership !== null) return copyMembership(base.membership);
      if (base.index !== 0) return null;
      this.#checkLogWritable('bootstrap');
      const next: LogBase = { index: 0, term: 0, membership: checked };
      await this.#writeLog(this.#log.write([{ type: 'put', key: KEY_LOG_BASE, value: encodeLogBase(next) }], { sync: true }));
      this.#base = next;
      return copyMembership(checked);
    });
  }

  lastIndex(): number {
    return this.#lastIndex;
  }

  // ---- StateMachine ----

  appliedIndex(): number {
    return this.#applied;
  }

  membership(): Membership | null {
    return this.#membership;
  }

  /** RocksStorage.stateEpoch is the number of the current state generation (an install makes the next one). */
  stateEpoch(): number {
    return this.#state.gen;
  }

  /** RocksStorage.write: see StateStore. One unsynced RocksDB batch (see the durability notes above). */
  async write(batch: StateBatch): Promise<void> {
    this.#checkOpen('write');
    return this.#applyQueue.run(async () => {
      this.#checkOpen('write');
      const db = this.#state.db;
      checkStateBatch(batch, this.#applied, db.path);
      const membership = batch.membership === undefined ? undefined : copyMembership(batch.membership);
      const keys = this.#writeKeys;
      const values = this.#writeValues;
      this.#stateDirty = true;
      // Straight into the native batch, each prefixed key in a scratch buffer it copies at once: no Buffer or op
      // object per write (two a put: the key and its revision record).
      await db.writeFilled((sink) => {
        for (const w of batch.writes) {
          const key = keys.of(w.key);
          if (w.value === null) sink.del(key);
          else sink.put(key, values.seal(key, w.value));
        }
        sink.put(KEY_APPLIED, u64(batch.appliedIndex));
        if (membership !== undefined) sink.put(KEY_MEMBERSHIP, Buffer.from(JSON.stringify(membership)));
      }, { sync: false });
      this.#applied = batch.appliedIndex;
      this.#noteChanges(batch);
      if (membership !== undefined) this.#membership = membership;
    });
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    this.#checkOpen('get');
    const g = this.#acquire();
    try {
      const stored = kvKey(key);
      const value = await g.db.get(stored);
      return value === undefined ? undefined : openStateRecord(stored, value, g.db.path);
    } finally {
      this.#release(g);
    }
  }

  /** RocksStorage.getMany: see StateStore; one native getMany on the current generation. */
  async getMany(keys: readonly Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    this.#checkOpen('getMany');
    if (keys.length === 0) return [];
    const g = this.#acquire();
    try {
      const stored = keys.map(kvKey);
      const values = await g.db.getMany(stored);
      return values.map((v, i) => (v === undefined ? undefined : openStateRecord(stored[i] as Buffer, v, g.db.path)));
    } finally {
      this.#release(g);
    }
  }

  async range(query: RangeQuery): Promise<RangeResult> {
    this.#checkOpen('range');
    const g = this.#acquire();
    try {
      const range = resolveRange(query, g.db.path);
      if (range.empty) return { kvs: [], more: false };
      const kvs: KeyValue[] = [];
      let bytes = 0;
      const iteration = g.db.iterate({
        gte: range.gte === undefined ? Buffer.of(PREFIX_KV) : kvKey(range.gte),
        lt: range.lt === undefined ? Buffer.of(PREFIX_KV + 1) : kvKey(range.lt),
        limit: range.limit + 1,
        // Read ahead no further than the cap needs (a batch is cut once it passes this many bytes).
        batchBytesMax: range.bytesMax,
      });
      for await (const batch of iteration) {
        for (const { key, value } of batch) {
          const pair = { key: key.subarray(1), value: openStateRecord(key, value, g.db.path) };
          const size = pair.key.length + pair.value.length;
          // Leaving the loop ends the iterator.
          if (rangeIsFull(range, kvs.length, bytes, size)) return { kvs, more: true };
          kvs.push(pair);
          bytes += size;
        }
      }
      return { kvs, more: false };
    } finally {
      this.#release(g);
    }
  }

  /**
   * RocksStorage.snapshotState: see StateMachine. The view is one RocksDB
   * iterator over the 'k' and 'm' keys of the current generation, opened
   * inside the apply queue: no apply or install is writing then, so the
   * iterator's implicit snapshot holds exactly the data of the applied index
   * and membership read beside it (the reader checks the applied index it
   * meets at the end of the iteration against them). The reader pins the
   * generation (an install does not delete it until the reader is closed)
   * and RocksDB keeps the files of the view alive: close it promptly.
   */
  async snapshotState(options: SnapshotStateOptions = {}): Promise<StateSnapshotReader> {
    this.#checkOpen('snapshotState');
    this.#stateViews++;
    const opened = await this.#applyQueue.run(async () => {
      this.#checkOpen('snapshotState');
      const g = this.#acquire();
      let changes: Promise<StateChanges | null> | undefined;
      try {
        // Inside the apply queue no write runs: the view seals the changes (ChangedKeys.view) and the values not
        // kept are asked for here, as of the view (getMany reads as of its call). The read and the listing are
        // waited for after the queue is let go: applies go on meanwhile (20k changed keys took 250-280 ms to read
        // and 140-380 ms to list under bench:write, every apply held behind them).
        changes = options.changesSince === undefined ? undefined : this.#changesSince(g.db, options.changesSince);
        const iterator = stateIterator(g.db);
        // The applied index and membership of the view: read now, inside the queue.
        const applied = this.#applied;
        const membership = this.#membership;
        return { reader: (read: StateChanges | null | undefined) => new RocksSnapshotReader(iterator, g.db.path, applied, membership, () => this.#release(g), read), iterator, g, changes };
      } catch (err) {
        changes?.catch(() => undefined);
        this.#release(g);
        throw err;
      }
    });
    let read: StateChanges | null | undefined;
    try {
      read = await opened.changes;
    } catch (err) {
      await opened.iterator.end();
      this.#release(opened.g);
      throw err;
    }
    return opened.reader(read);
  }

  /**
   * RocksStorage.installState: see StateMachine and the layout notes above.
   * Builds state-<gen+1> (removing a leftover of that name first), commits by
   * renaming the STATE pointer, then swaps it in and retires the old
   * generation. Before the rename any failure (the source's, `invalidArgument`,
   * `closed`, `io`) deletes the new generation and leaves the old state. If
   * syncing the data dir fails after the rename, the new state is in place
   * (and reported by reads) but the old generation is kept on disk, and the
   * call rejects with `io`: a power loss may still bring back the old state.
   */
  async installState(
    source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>,
    meta: InstallMeta,
    options: InstallOptions = {},
  ): Promise<void> {
    this.#checkOpen('installState');
    const checked = checkInstallMeta(meta, this.dataDir);
    return this.#installExclusive('installState', () => this.#install(source, checked, options.exportImage === true));
  }

  /** #installExclusive runs `fn` in the apply queue as an install (#installing set meanwhile), once the store is found open there. */
  #installExclusive(operation: string, fn: () => Promise<void>): Promise<void> {
    return this.#applyQueue.run(async () => {
      this.#checkOpen(operation);
      this.#installing = true;
      try {
        await fn();
      } finally {
        this.#installing = false;
      }
    });
  }

  /**
   * RocksStorage.importStateImage: installs another member's
   * exported generation (state-image.ts) as state-<gen+1>: its files written
   * and each checked against its SHA-256 (writeStateImage), the database
   * opened and its applied index and membership checked against `meta`, then
   * committed by the same pointer swap as installState. Before the commit any
   * failure (`invalidArgument`, `corrupt`: a name, a size, a hash, the meta;
   * `io`, `closed`) deletes the new generation and leaves the old state.
   * Before anything is written the manifest is checked (checkImageManifest)
   * and its bytes against the data dir's free space less
   * `options.reserveBytes` (checkImageSpace: `io`). With
   * `options.verifyRecords`, the opened generation's records are read whole
   * (one iterator, as snapshotState's) and handed to it before the commit.
   */
  async importStateImage(source: StateImageSource, meta: InstallMeta, options: ImportImageOptions = {}): Promise<void> {
    this.#checkOpen('importStateImage');
    const checked = checkInstallMeta(meta, this.dataDir);
    return this.#installExclusive('importStateImage', async () => {
      const gen = this.#state.gen + 1;
      const path = join(this.dataDir, generationDir(gen));
      checkImageManifest(source.files, path);
      await checkImageSpace(source.files, this.dataDir, options.reserveBytes ?? 0);
      await fsOp('remove', path, () => rm(path, { recursive: true, force: true }));
      await fsOp('create', path, () => mkdir(path, { mode: 0o700 }));
      let db: RocksDb | null = null;
      try {
        this.#hook('generationCreated', gen);
        await writeStateImage(source, path);
        this.#checkOpen('importStateImage');
        db = await RocksDb.open(path, { ...STATE_OPEN_OPTIONS, createIfMissing: false });
        if ((await readRecordFormat(db)) !== RECORD_FORMAT) {
          throw new StorageError('unknownFormat', `state image for ${path}: its records have no checksums (format ${LEGACY_RECORD_FORMAT}: a member of an older build made it)`, { path });
        }
        const { applied, membership } = await readStateMeta(db);
        if (applied !== checked.appliedIndex) {
          throw new StorageError('corrupt', `state image for ${path}: applied index ${applied}, not ${checked.appliedIndex}`, { path });
        }
        if (membership === null || !sameMembership(membership, checked.membership)) {
          throw new StorageError('corrupt', `state image for ${path}: its membership is not the one as of ${checked.appliedIndex}`, { path });
        }
        if (options.verifyRecords !== undefined) {
          // Every record of the new generation, read as a snapshot of it is (one iterator, large native batches), before its commit.
          const reader = new RocksSnapshotReader(stateIterator(db), path, applied, membership, () => undefined);
          try {
            await options.verifyRecords(reader.batches(), path);
          } finally {
            await reader.close();
          }
          this.#checkOpen('importStateImage');
        }
        await fsyncDir(this.dataDir);
      } catch (err) {
        await db?.close().catch(() => undefined);
        await rm(path, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
      await this.#commitGeneration(db, gen, checked);
    });
  }

  /** RocksStorage.stateImage: the image of the generation at `appliedIndex` the last exporting install made, pinned until release(); null when none. */
  stateImage(appliedIndex: number): HeldStateImage | null {
    const held = this.#image;
    if (held === null || held.dropped || held.image.appliedIndex !== appliedIndex) return null;
    held.refs++;
    let released = false;
    return {
      image: held.image,
      chunks: () => readStateImageChunks(held.image),
      release: () => {
        if (released) return;
        released = true;
        held.refs--;
        if (held.dropped && held.refs === 0) void removeImageDir(held.image.dir);
      },
    };
  }

  /** RocksStorage.dropStateImage: deletes the kept image (once no read of it is in progress). */
  dropStateImage(): void {
    const held = this.#image;
    if (held === null) return;
    this.#image = null;
    held.dropped = true;
    if (held.refs === 0) void removeImageDir(held.image.dir);
  }

  /** #install is the body of installState, run inside the apply queue. */
  async #install(source: AsyncIterable<readonly KeyValue[]> | Iterable<readonly KeyValue[]>, checked: GenerationMeta, exportImage: boolean): Promise<void> {
    const gen = this.#state.gen + 1;
    const path = join(this.dataDir, generationDir(gen));
    await fsOp('remove', path, () => rm(path, { recursive: true, force: true }));
    let db = await RocksDb.open(path, { ...STATE_OPEN_OPTIONS, errorIfExists: true });
    /** the bulk write in flight, if any (awaited before the next, and before closing on failure). */
    let inFlight: Promise<void> | null = null;
    let image: StateImage | null = null;
    try {
      this.#hook('generationCreated', gen);
      let seen = 0;
      // Bulk load: records are copied straight into a native write batch (RocksBulkBatch: no op objects),
      // and one batch is written (on the threadpool) while the next is filled (decoded, checked) on the
      // main thread; the two batches alternate and keep their memory. Batches are written in order: the
      // previous one has landed before the next is issued, so a key repeated by a source ends with its
      // last value. The binding has no WAL switch; the one synced write below makes all of it durable.
      // Where a follower's install of 256 MiB of random 4 KiB values spends its ~1.4 s of CPU (perf, Dec 6,
      // the node's V8 flags and malloc environment): RocksDB ~0.6 s (the WAL ~0.23, memtable inserts ~0.08,
      // flushes ~0.3), of which ~0.33 s is CRC32C, which the `rocksdb` 5.2.1 prebuilt computes in software
      // (no SSE4.2 build: no crc32 instruction in the binary); the archive's whole SHA-256 ~0.13 s (main
      // thread); gunzip ~0.05; the kernel's copies, page faults and wakeups ~0.45; Snappy ~0.005 s (it gives
      // up on incompressible blocks at once: turning compression off for such an install saves nothing
      // measurable). Only a binding with a WAL switch and a hardware CRC would cut the native half.
      const batches = [db.bulkBatch(), db.bulkBatch()] as const;
      const keys = new KvKeyScratch(); // put() copies the key and value at once
      const values = new RecordSealer();
      let filling: 0 | 1 = 0;
      const issue = async (): Promise<void> => {
        const batch = batches[filling];
        if (batch.count === 0) return;
        if (inFlight !== null) await inFlight;
        inFlight = null;
        this.#checkOpen('installState'); // close() aborts an install
        const write = batch.write({ sync: false });
        write.catch(() => undefined); // met when awaited
        inFlight = write;
        filling = filling === 0 ? 1 : 0;
      };
      const yieldTurn = this.#options.yieldTurn ?? nextTurn;
      let turnBytes = 0;
      for await (const records of source) {
        this.#checkOpen('installState'); // close() aborts an install
        checkInstallBatch(records, seen, path);
        for (const r of records) {
          if (turnBytes >= INSTALL_TURN_BYTES) {
            // A turn for the timers and IO waiting (the node's ticks, heartbeats and their answers): see INSTALL_TURN_BYTES.
            // The source's records stay valid meanwhile (views of its batch, read until the next one is asked for).
            turnBytes = 0;
            await yieldTurn();
            this.#checkOpen('installState');
          }
          const batch = batches[filling];
          const key = keys.of(r.key);
          batch.put(key, values.seal(key, r.value));
          turnBytes += r.key.length + r.value.length;
          if (batch.bytes >= INSTALL_WRITE_BYTES || batch.count >= INSTALL_WRITE_OPS) await issue();
        }
        seen += records.length;
      }
      await issue();
      if (inFlight !== null) await inFlight;
      inFlight = null;
      this.#checkOpen('installState');
      // One synced write makes every earlier unsynced one durable too.
      const metaOps: RocksOp[] = [
        { type: 'put', key: KEY_APPLIED, value: u64(checked.appliedIndex) },
        { type: 'put', key: KEY_RECORD_FORMAT, value: u64(RECORD_FORMAT) },
      ];
      if (checked.membership !== null) metaOps.push({ type: 'put', key: KEY_MEMBERSHIP, value: Buffer.from(JSON.stringify(checked.membership)) });
      await db.write(metaOps, { sync: true });
      await fsyncDir(path);
      await fsyncDir(this.dataDir);
      if (exportImage) {
        // The built generation, closed a moment (~0.1 s at 1M keys) and its files exported for the other members
        // (state-image.ts); an export that fails leaves no image, never a failed install.
        await db.close();
        this.#hook('imageClosed', gen);
        const dir = join(this.dataDir, IMAGES_DIR, `image-${gen}`);
        try {
          image = await exportStateImage(path, dir, checked.appliedIndex, () => this.#hook('imageFileExported', gen));
        } catch {
          await removeImageDir(dir);
        }
        this.#hook('imageExported', gen);
        db = await RocksDb.open(path, { ...STATE_OPEN_OPTIONS, createIfMissing: false });
      }
    } catch (err) {
      const pendingWrite = inFlight as Promise<void> | null;
      if (pendingWrite !== null) await pendingWrite.catch(() => undefined);
      await db.close().catch(() => undefined);
      await rm(path, { recursive: true, force: true }).catch(() => undefined);
      if (image !== null) await removeImageDir(image.dir);
      throw err;
    }
    try {
      await this.#commitGeneration(db, gen, checked);
    } catch (err) {
      if (image !== null) await removeImageDir(image.dir);
      throw err;
    }
    if (image !== null) {
      this.dropStateImage();
      this.#image = { image, refs: 0, dropped: false };
    }
  }

  /**
   * #commitGeneration commits the built and synced generation `gen` (its open `db`): writes STATE.tmp, renames it
   * over STATE (the commit point), syncs the data dir, swaps the generation in and retires the old one. A failure
   * before the rename closes and deletes the new generation; a failed sync after it keeps the old generation on
   * disk and rejects (see installState).
   */
  async #commitGeneration(db: RocksDb, gen: number, checked: GenerationMeta): Promise<void> {
    const old = this.#state;
    const path = db.path;
    let dirSyncError: unknown = null;
    try {
      this.#hook('generationBuilt', gen);
      await writeStatePointerTmp(this.dataDir, gen);
      this.#hook('pointerWritten', gen);
      this.#checkOpen('installState');
      await commitStatePointer(this.dataDir);
    } catch (err) {
      await db.close().catch(() => undefined);
      await rm(path, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    try {
      await fsyncDir(this.dataDir);
    } catch (err) {
      dirSyncError = err;
    }
    const next: Generation = { gen, db, refs: 0, retired: false, deleteWhenRetired: true, disposing: null };
    this.#generations.add(next);
    this.#state = next;
    this.#applied = checked.appliedIndex;
    this.#membership = checked.membership;
    this.#stateDirty = false;
    this.#changes.forget(checked.appliedIndex);
    if (dirSyncError !== null) {
      await this.#retire(old, false);
      throw dirSyncError;
    }
    this.#hook('pointerSwapped', gen);
    await this.#retire(old, true);
    this.#hook('oldGenerationDeleted', gen);
  }

  async stateDigest(): Promise<string> {
    return digestSnapshot(await this.snapshotState());
  }

  /** #noteChanges remembers the keys of a written batch (see #changes), dropping the memory past CHANGES_TRACKED_MAX (changed-keys.ts). */
  #noteChanges(batch: StateBatch): void {
    const names = batch.names;
    for (const w of batch.writes) this.#changes.note(names === undefined ? keyString(w.key) : names.of(w.key), batch.appliedIndex, w.value);
    this.#changes.bound(batch.appliedIndex);
  }

  /**
   * #changesSince takes the changes after `since` of a view (run inside the apply queue: ChangedKeys.view, and the
   * values not kept read as of this call, see RocksDb.getMany); the promise lists them (ChangedKeys.list, in
   * turns, outside the queue) and is null when not known that far back or too many.
   */
  #changesSince(db: RocksDb, since: number): Promise<StateChanges | null> {
    const view = this.#changes.view(since, this.#applied);
    if (view === null) return Promise.resolve(null);
    const stored = view.unknown.map((k) => kvKey(Buffer.from(k, 'latin1')));
    const read = stored.length === 0 ? Promise.resolve([]) : db.getMany(stored).then((values) => values.map((v, i) => (v === undefined ? undefined : openStateRecord(stored[i] as Buffer, v, db.path))));
    const changes = this.#changes;
    return read.then((values) => changes.list(view, values, this.#options.yieldTurn ?? nextTurn));
  }

  // ---- IdentityStore ----

  async readIdentity(): Promise<Identity | null> {
    this.#checkOpen('readIdentity');
    const bytes = await this.#log.get(KEY_IDENTITY);
    return bytes === undefined ? null : parseIdentity(bytes.toString('utf8'), this.dataDir);
  }

  async checkIdentity(expected: Identity, options: { readonly createIfNew?: boolean } = {}): Promise<Identity> {
    this.#checkOpen('checkIdentity');
    return this.#logQueue.run(async () => {
      const stored = await this.readIdentity();
      if (stored !== null) {
        checkIdentityMatch(stored, expected, this.dataDir);
        return stored;
      }
      const isNew =
        this.#lastIndex === 0 &&
        this.#base.index === 0 &&
        this.#applied === 0 &&
        (await this.#log.get(KEY_HARD_STATE)) === undefined;
      if (!isNew || options.createIfNew !== true) throw missingIdentity(this.dataDir, isNew);
      checkIdentityMatch(expected, expected, this.dataDir);
      const { nodeId, clusterId, formatVersion } = expected;
      this.#checkLogWritable('checkIdentity');
      await this.#writeLog(
        this.#log.write([{ type: 'put', key: KEY_IDENTITY, value: Buffer.from(JSON.stringify({ nodeId, clusterId, formatVersion })) }], { sync: true }),
      );
      return { nodeId, clusterId, formatVersion };
    });
  }

  /**
   * RocksStorage.close waits for queued log writes and applies (an install
   * in progress aborts at its next batch), then closes every database; open
   * snapshot readers fail with `closed` from then on. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#logQueue.idle();
      await this.#compacting;
      await this.#applyQueue.idle();
      await Promise.all(
        [...this.#generations].map(async (g) => {
          if (g.retired) await this.#dispose(g);
          else await g.db.close();
        }),
      );
      await this.#log.close();
    })();
    return this.#closing;
  }

  /**
   * #syncState makes every apply so far durable (one synced write on the
   * state generation) when any was unsynced. While an install holds the
   * apply queue it writes to the current generation at once rather than
   * wait for the install (which can take minutes; a compaction must not):
   * no apply runs meanwhile, and the generation is pinned for the write.
   */
  async #syncState(): Promise<void> {
    if (!this.#stateDirty) return;
    if (this.#installing) {
      const g = this.#acquire();
      try {
        await g.db.write([{ type: 'put', key: KEY_APPLIED, value: u64(this.#applied) }], { sync: true });
      } finally {
        this.#release(g);
      }
      return;
    }
    await this.#applyQueue.run(async () => {
      if (!this.#stateDirty) return;
      this.#stateDirty = false;
      try {
        await this.#state.db.write([{ type: 'put', key: KEY_APPLIED, value: u64(this.#applied) }], { sync: true });
      } catch (err) {
        this.#stateDirty = true;
        throw err;
      }
    });
  }

  /**
   * #writeLog waits for `write`, a write to the log database, and records its failure (#logFailure) before
   * rethrowing it.
   */
  async #writeLog(write: Promise<void>): Promise<void> {
    try {
      await write;
    } catch (err) {
      this.#logFailure ??= err as Error;
      throw err;
    }
  }

  /** #checkLogWritable throws StorageError `io` once a write to the log database has failed (see #logFailure). */
  #checkLogWritable(operation: string): void {
    const failure = this.#logFailure;
    if (failure === null) return;
    throw new StorageError(
      'io',
      `${this.path}: ${operation} refused: an earlier write to the Raft log failed (${failure.message}); no write is taken after ` +
        'one that failed (it may have left a partial record in the write-ahead log, which would hide every later one at the next start): restart the node',
      { path: this.path, cause: failure },
    );
  }

  #acquire(): Generation {
    const g = this.#state;
    g.refs++;
    return g;
  }

  #release(g: Generation): void {
    g.refs--;
    if (g.retired && g.refs === 0) void this.#dispose(g);
  }

  /** #retire marks `g` replaced; it is closed (and with `deleteDir` deleted) now if unused, else when its last user releases it. */
  async #retire(g: Generation, deleteDir: boolean): Promise<void> {
    g.retired = true;
    g.deleteWhenRetired = deleteDir;
    if (g.refs === 0) await this.#dispose(g);
  }

  /** #dispose closes a retired generation and deletes its dir (garbage: open() would delete it too). Never rejects. */
  #dispose(g: Generation): Promise<void> {
    g.disposing ??= (async () => {
      await g.db.close().catch(() => undefined);
      if (g.deleteWhenRetired) {
        await rm(g.db.path, { recursive: true, force: true }).catch(() => undefined);
        await fsyncDir(this.dataDir).catch(() => undefined);
      }
      this.#generations.delete(g);
    })();
    return g.disposing;
  }

  #hook(phase: InstallPhase, gen: number): void {
    this.#options.installHook?.(phase, gen);
  }

  #checkOpen(operation: string): void {
    if (this.#closing !== null) {
      throw new StorageError('closed', `storage ${this.dataDir}: ${operation} after close`, { path: this.dataDir });
    }
  }
}

/**
 * RocksSnapshotReader streams one iterator of a state generation: the 'k'
 * records, then checks the 'm' applied index met at the end against the
 * applied index the snapshot reported (a consistency self-check).
 */
/** stateIterator: an iterator over a state generation's 'k' and 'm' keys, as a RocksSnapshotReader reads them. */
function stateIterator(db: RocksDb): RocksIterator {
  return db.iterator({
    gte: Buffer.of(PREFIX_KV),
    lt: Buffer.of(PREFIX_META + 1),
    fillCache: false,
    // large native batches: up to 1,000 entries or 1 MiB per round trip (rocks.ts takes them whole).
    highWaterMarkBytes: 1024 * 1024,
  });
}

class RocksSnapshotReader implements StateSnapshotReader {
  readonly appliedIndex: number;
  readonly membership: Membership | null;
  readonly #iterator: RocksIterator;
  readonly #path: string;
  readonly #release: () => void;
  /** #legacy: the generation's records are bare values (LEGACY_RECORD_FORMAT: read only by open()'s migration). */
  readonly #legacy: boolean;
  #started = false;
  #closing: Promise<void> | null = null;

  readonly changes: StateChanges | null | undefined;

  constructor(
    iterator: RocksIterator,
    path: string,
    appliedIndex: number,
    membership: Membership | null,
    release: () => void,
    changes?: StateChanges | null,
    legacy = false,
  ) {
    this.changes = changes;
    this.#legacy = legacy;
    this.#iterator = iterator;
    this.#path = path;
    this.appliedIndex = appliedIndex;
    this.membership = membership;
    this.#release = release;
  }

  async *batches(
    batchEntriesMax = SNAPSHOT_BATCH_ENTRIES_DEFAULT,
    batchBytesMax = SNAPSHOT_BATCH_BYTES_DEFAULT,
  ): AsyncGenerator<KeyValue[], void, undefined> {
    const path = this.#path;
    try {
      if (this.#started) {
        throw new StorageError('invalidArgument', `snapshot of ${path}: batches() may be called only once`, { path });
      }
      this.#started = true;
      // Each batch waits in `read` and is taken out of it as it is yielded: a local would hold it (and its Buffer
      // per key and value) until the consumer asks for the next, across its gzip and this iterator's next read
      // (V8 keeps a suspended generator's locals; snapshot/relay.ts).
      const read: { batch: KeyValue[] | null; metaApplied: number } = { batch: null, metaApplied: 0 };
      for (;;) {
        if (this.#closing !== null) throw new StorageError('closed', `snapshot of ${path}: read after close`, { path });
        if (!(await this.#read(read, batchEntriesMax, batchBytesMax))) break;
        if (read.batch !== null) yield takeBatch(read);
      }
      const metaApplied = read.metaApplied;
      if (this.#closing !== null) throw new StorageError('closed', `snapshot of ${path}: read after close`, { path });
      if (metaApplied !== this.appliedIndex) {
        throw new StorageError(
          'corrupt',
          `snapshot of ${path}: the view holds applied index ${metaApplied}, not ${this.appliedIndex} as reported`,
          { path },
        );
      }
    } finally {
      await this.close();
    }
  }

  /** #read reads the iterator's next batch into `read` (its 'k' records, null if none; the applied index met); false at the end. */
  async #read(read: { batch: KeyValue[] | null; metaApplied: number }, batchEntriesMax: number, batchBytesMax: number): Promise<boolean> {
    const raw = await this.#iterator.nextBatch(batchEntriesMax, batchBytesMax, true);
    if (raw.length === 0) return false;
    const out: KeyValue[] = [];
    for (const { key, value } of raw) {
      if (key[0] === PREFIX_KV) out.push({ key: key.subarray(1), value: this.#legacy ? value : openStateRecord(key, value, this.#path) });
      else if (key.equals(KEY_APPLIED)) read.metaApplied = readU64(value, 0, 'applied index', this.#path);
      else if (!key.equals(KEY_MEMBERSHIP) && !key.equals(KEY_RECORD_FORMAT)) {
        // A key no generation holds: a state record whose first byte was damaged (the iterator does not verify
        // RocksDB's block checksums, and a record is checked only under its prefix) would be left out unnoticed.
        const shown = JSON.stringify(key.toString('latin1', 0, Math.min(key.length, 200)));
        throw new StorageError('corrupt', `${this.#path}: key ${shown} that no state record or metadata has (a key damaged on disk): this data dir cannot be trusted; replace it`, { path: this.#path });
      }
    }
    read.batch = out.length > 0 ? out : null;
    return true;
  }

  close(): Promise<void> {
    this.#closing ??= this.#iterator.end().finally(() => this.#release());
    return this.#closing;
  }
}

/** takeBatch empties `read.batch` and returns it (RocksSnapshotReader.batches: no local holds a yielded batch). */
function takeBatch(read: { batch: KeyValue[] | null }): KeyValue[] {
  const batch = read.batch as KeyValue[];
  read.batch = null;
  return batch;
}

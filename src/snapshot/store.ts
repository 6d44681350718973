/**
 * SnapshotStore keeps snapshot archives in a directory, with the habits of
 * hashicorp/raft's FileSnapshotStore:
 *
 *   <dir>/<id>/archive.tar.gz   the archive (archive.ts), mode 0600
 *   <dir>/<id>/meta.json        the archive's meta + archiveSha256 + archiveBytes, mode 0600
 *   <dir>/<id>/chunks.sha256    the SHA-256 of each CHUNK_HASH_BYTES chunk, with its own checksum
 *
 * Directories are 0700. The store owns an archive's bytes end to end: create,
 * importArchive (uploads) and receiveArchive (follower fetches) write them
 * once through an ArchiveSink in `<dir>/<name>.tmp/`, hashed once while
 * written (the whole SHA-256 and the chunk hashes recorded beside it),
 * fsynced once, renamed into place and the parent fsynced, so a crash at any
 * point leaves either the complete snapshot or a `*.tmp` leftover that
 * list() cleans. open() trusts the recorded hashes after a cheap check (the
 * archive's size, chunks.sha256 parses and matches its own checksum and
 * meta.json); verify() and scrub() re-hash the bytes on demand, and scrub()
 * moves a snapshot whose bytes disagree to `<dir>/quarantine/`. After each
 * create or import only the newest `retain` snapshots are kept (Typesense
 * #1891: snapshots never cleaned up).
 *
 * One process owns a store directory. Mutations (the final rename of create,
 * import and receive, remove, retention, quarantine) run one at a time;
 * open() pins a snapshot so that retention does not delete it while it is
 * being read (a follower still fetching it: Typesense #2859, etcd #5317)
 * until the handle is released.
 */
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { once } from 'node:events';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Membership } from '../raft/types.js';
import { sameMembership } from '../raft/membership.js';
import { FRAME_ROOM, readChunks, readFrames, type FileFrame } from './chunk-reader.js';
import { sha256 } from '../hash/sha256.js';
import { GUNZIP_CHUNK_BYTES, GZIP_BLOCK_BYTES_DEFAULT, readArchive, readArchiveHead, writeArchive, writeArchiveFromRecords, type ArchiveMeta, type ArchiveWriteMeta, type StateWhere } from './archive.js';
import { writeArchiveDelta, type StateChange } from './archive-delta.js';
import { writeArchiveFromMembers, type ArchiveMemberTable, type StateMembersProducer } from './archive-writer.js';
import { MEMBERS_FILE, decodeMemberTable, encodeMemberTable } from './member-table.js';
import { MemberGunzip, type GzipMemberRead } from './member-gunzip.js';
import type { PiecePool } from './piece-pool.js';
import { SMALL_STATE_BYTES_MAX, buildSmallArchive, takeSmallState, type SmallStateTake } from './small-archive.js';
import type { StateRecord } from './state-format.js';
import { ArchiveSink, CHUNK_HASH_BYTES, decodeChunkHashes, encodeChunkHashes, type SinkDigest, type SinkStats } from './archive-sink.js';
import { checkMembership, isIsoTimestamp, setOwn, validateArchiveMeta, META_BYTES_MAX } from './archive-meta.js';
import { ArchiveError, SnapshotStoreError } from './errors.js';
import { failpoint } from './failpoint.js';
import { DIR_MODE, fsyncDir, openFileSink, writeFileDurable } from './file-sink.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';

export { CHUNK_HASH_BYTES } from './archive-sink.js';

/** ARCHIVE_FILE / STORED_META_FILE / STATE_FILE: the names inside a snapshot directory. */
export const ARCHIVE_FILE = 'archive.tar.gz';
export const STORED_META_FILE = 'meta.json';
/** CHUNKS_FILE: the chunk hashes recorded while the archive was written (encodeChunkHashes). */
export const CHUNKS_FILE = 'chunks.sha256';
/** QUARANTINE_DIR: where scrub() moves snapshots whose bytes disagree with their recorded hashes. */
export const QUARANTINE_DIR = 'quarantine';
/**
 * QUARANTINE_KEEP: the snapshots the quarantine keeps, the last moved there; an older one is removed when another
 * comes in. Unbounded, a disk or memory that damages every archive made one archive-sized copy per snapshot
 * (every few minutes) until the disk was full (Typesense #1891, for the quarantine).
 */
export const QUARANTINE_KEEP = 3;
const STATE_FILE = 'state.bin';
/** SPOOL_FILE: createFromRecords' compressed state, waiting for the archive's head (inside the temporary directory). */
const SPOOL_FILE = 'state.spool';
const TMP_SUFFIX = '.tmp';
const READ_CHUNK_BYTES = 1024 * 1024;
/**
 * SERVED_FRAME_BYTES: the pieces SnapshotHandle.readFrames reads a trusted archive in (a GetSnapshot download's
 * data messages; the exports' served stream). A download holds the piece in hand, one read ahead and up to
 * STREAM_UNSENT_MAX sent but not yet written to the connection: with 1 MiB pieces ~4 MiB per download (~6
 * before grpc-js's framed copy went, 7001a65), ~16 MiB on a leader serving 4 and ~32 at DOWNLOADS_MAX_DEFAULT
 * (issue 15: the leader's peak RSS is in the write phase with 4 downloads). 256 KiB pieces hold a quarter of
 * that; still over glibc's mmap threshold (cli/node-runtime.ts), so each is mapped apart and given back when
 * freed, never left in the heap. An archive read on its chunk hashes (not trusted) is read in whole
 * CHUNK_HASH_BYTES chunks, as it must be.
 */
export const SERVED_FRAME_BYTES = 256 * 1024;
const STORED_META_BYTES_MAX = META_BYTES_MAX + 1024;
/**
 * STORED_META_FIRST_READ_BYTES: loadMeta's first read of a meta.json (under Buffer.poolSize / 2, so taken
 * from Node's pool): list() reads every stored snapshot's meta.json, and a buffer of STORED_META_BYTES_MAX
 * per read was a 65 KiB allocation outside the pool each time (0.5% of a simulator seed's CPU, and its GC).
 */
const STORED_META_FIRST_READ_BYTES = 2048;
/** SAME_ID_ARCHIVES_MAX: the most different archives received that all name the same term, index and creation time. */
const SAME_ID_ARCHIVES_MAX = 64;
/** RETAIN_MAX: the most snapshots a store may be told to keep. */
export const RETAIN_MAX = 1000;
/** PARSED_META_MAX: meta.json parses a store remembers (all are dropped past it; a store holds few snapshots). */
const PARSED_META_MAX = 256;

/** STORE_ID_PATTERN: `<term>-<index>-<createdAt ms>`, zero-padded to 20, 20 and 13 digits. */
export const STORE_ID_PATTERN = /^\d{20}-\d{20}-\d{13,15}$/;
/** QUARANTINED_NAME: a snapshot moved to the quarantine, `<id>-<ms moved>` (the time captured). */
const QUARANTINED_NAME = /^\d{20}-\d{20}-\d{13,15}-(\d{1,16})$/;

/** snapshotId names a snapshot so that ids sort by (term, index, creation time). */
export function snapshotId(term: number, index: number, createdAtMs: number): string {
  return `${String(term).padStart(20, '0')}-${String(index).padStart(20, '0')}-${String(createdAtMs).padStart(13, '0')}`;
}

export interface SnapshotStoreOptions {
  /** how many snapshots to keep (>= 1): the newest `retain`, plus any that are open (pinned). */
  readonly retain: number;
  /** written into meta.snapcoordVersion (default '0.0.0'). */
  readonly snapcoordVersion?: string;
  /** the largest state an imported archive may hold (default 64 GiB). */
  readonly stateBytesMax?: number;
  /** gzip level for new archives (default 6). */
  readonly gzipLevel?: number;
  /** gzipBlockBytes: state bytes per gzip member of new archives (default GZIP_BLOCK_BYTES_DEFAULT, 1 MiB; small states waste less with less). */
  readonly gzipBlockBytes?: number;
  /** io: the file system, compression and wall clock the store uses (default nodeSnapshotIo; a simulator passes its own). */
  readonly io?: SnapshotIo;
  /** smallStateBytesMax: createFromRecords builds the archive of a state.bin up to this many bytes in memory (default SMALL_STATE_BYTES_MAX; -1: never). */
  readonly smallStateBytesMax?: number;
}

/** SnapshotCreateMeta: what create() needs; createdAt defaults to now, the id is derived. */
export interface SnapshotCreateMeta {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
  readonly createdAt?: string;
}

/**
 * StoredMeta is a snapshot directory's meta.json. `archiveVerified: false`
 * (written only then) marks an archive whose whole SHA-256 is the one its
 * sender claimed, each chunk checked but the whole not yet hashed (a fetch,
 * see ReceiveOptions.deferWholeDigest); open() verifies such an archive
 * before anyone may read it, but for a reader that verifies it as it reads
 * (createCheckedReadStream: the install).
 */
export interface StoredMeta extends ArchiveMeta {
  readonly archiveSha256: string;
  readonly archiveBytes: number;
  readonly archiveVerified?: false;
}

/** StoredSnapshot describes one complete snapshot of the store. `path` is its archive file. */
export interface StoredSnapshot {
  /** the directory name (snapshotId of term, index, createdAt). */
  readonly id: string;
  readonly meta: ArchiveMeta;
  readonly path: string;
  readonly archiveSha256: string;
  readonly archiveBytes: number;
}

/**
 * SnapshotHandle is an opened snapshot (checked as open() says). It pins the
 * snapshot against retention until release() (idempotent); read it with
 * createReadStream.
 */
export interface SnapshotHandle extends StoredSnapshot {
  /** createReadStream reads the archive from `offset` (0..archiveBytes) to its end. */
  createReadStream(offset?: number): Readable;
  /**
   * readFrames reads the archive from `offset` to `end` (offset <= end <=
   * archiveBytes) in pieces of at most CHUNK_HASH_BYTES (SERVED_FRAME_BYTES
   * for one read on its recorded hashes), each read into a
   * buffer that comes back for a later piece once its `release` is called
   * (chunk-reader.ts readFrames; FRAME_ROOM around each piece, so a one-copy
   * serializer writes a message's fields there). An archive whose bytes
   * this store hashed itself since it was opened (written through its sink,
   * or verified whole: SnapshotStore.hashedHere) is read on its recorded
   * hashes, hashing nothing. Any other: each CHUNK_HASH_BYTES chunk
   * that holds bytes of the range is hashed once as read and compared with
   * its recorded hash (chunkSha256s) before any of it is handed over: the
   * generator throws SnapshotStoreError `corrupt` at the first that differs
   * (what was handed over before it checked). A range that begins or ends
   * inside a chunk reads (and hashes) that whole chunk, handing over only
   * the range's part. SnapshotStoreError `invalid-argument` for a range
   * outside the archive.
   */
  readFrames(offset: number, end: number): AsyncGenerator<FileFrame>;
  /**
   * verified: the archive's bytes are known to hash to archiveSha256 (false
   * only for a handle opened with allowUnverified on an archive stored with
   * a claimed digest, as it was when opened).
   */
  readonly verified: boolean;
  /**
   * createCheckedReadStream reads the whole archive; for an unverified one
   * it hashes the bytes as they are read. confirm(), called once the stream
   * has been read to its end, resolves when they were exactly archiveBytes
   * long and hash to archiveSha256, recording the archive as verified
   * (durably) for every later open(); else it rejects with
   * SnapshotStoreError `corrupt` (`digest-mismatch` naming both digests). For
   * a verified archive it reads plainly and confirm() resolves at once.
   */
  createCheckedReadStream(): { readonly stream: Readable; confirm(): Promise<void> };
  /**
   * createChunkCheckedReadStream reads the whole archive, each
   * CHUNK_HASH_BYTES chunk compared with the hash recorded when it was
   * written: the stream fails with SnapshotStoreError `corrupt` at the first
   * chunk that differs, or when the file has more or fewer chunks than
   * recorded. Hashes the archive's (compressed) bytes once, as read, whoever
   * hashed them before (an install, which trusts nothing else).
   */
  createChunkCheckedReadStream(): Readable;
  /**
   * createServedReadStream reads the whole archive as readFrames serves it
   * (GetSnapshot), on the same trust rule, for the exports (a task's file, a
   * scheduled copy and its S3 upload, a directory export): an archive this
   * store hashed itself since it was opened (trusted()) is read once and
   * hashed zero times; any other is checked chunk by chunk as read
   * (SnapshotStoreError `corrupt` at the first chunk that differs), and is
   * trusted once such a read has checked every chunk. A byte
   * of a trusted archive damaged on the disk since its hashing is copied as
   * it is: the copy still carries the archive's SHA-256 (`snapshot inspect`,
   * an S3 download and a restore check it), and the scrub finds and
   * quarantines the stored one. Backpressure: one piece is read ahead of
   * what the consumer took (a fresh buffer per piece: a stream's consumer
   * may hold it).
   */
  createServedReadStream(): Readable;
  /**
   * trusted: whether the store hashed this archive's bytes itself since it
   * was opened (SnapshotStore.hashedHere: written through its sink, or read
   * back whole and found to agree with every recorded hash), so that
   * readFrames and createServedReadStream read it on its recorded hashes.
   * Read at each call: a check that fails ends the trust.
   */
  trusted(): boolean;
  /** chunkSha256s: the SHA-256 of each CHUNK_HASH_BYTES chunk, recorded when the archive was written. */
  readonly chunkSha256s: readonly Uint8Array[];
  release(): void;
}

/**
 * OpenOptions: `verify` re-hashes the whole archive against its recorded
 * hashes (SnapshotStoreError `corrupt` if they differ). `allowUnverified`
 * returns a handle on an archive whose whole digest is only claimed without
 * hashing it first (handle.verified false): only for a reader that reads it
 * through createCheckedReadStream and makes nothing of it live before
 * confirm() resolved. Without it such an archive is verified on open (and
 * recorded as verified), so every other reader (serving peers, downloads,
 * exports, boot) only ever sees verified bytes.
 */
export interface OpenOptions {
  readonly verify?: boolean;
  readonly allowUnverified?: boolean;
  /** pace: a verify's read waits for it after each piece (ReadPace). */
  readonly pace?: ReadPace;
}

/**
 * ReadPace: called with the bytes of each piece a verify (or a scrub) has just read and hashed; the read goes on
 * once it resolves (a rate limit, a pause). A rejection stops the read: verify, open and scrub then reject with
 * ReadStopped (its cause the rejection), a verdict on nothing: the snapshot stays as it was, trusted or not.
 */
export type ReadPace = (bytes: number) => Promise<void>;

/** ReadStopped: a paced read whose pace rejected (ReadPace); `cause` is the rejection. */
export class ReadStopped extends Error {
  override readonly name = 'ReadStopped';
}

/** ScrubOptions: how scrub() goes (see there). */
export interface ScrubOptions {
  /** pace: each archive's read waits for it after each piece (ReadPace; its rejection ends the scrub). */
  readonly pace?: ReadPace;
  /** beforeEach: awaited before each archive is read (its rejection ends the scrub: ReadStopped). */
  readonly beforeEach?: (id: string) => Promise<void>;
}

/** ReceiveTarget: the archive a follower fetches, as its leader named it. */
export interface ReceiveTarget {
  /** digest: the archive's hex SHA-256. */
  readonly digest: string;
  readonly sizeBytes: number;
  /** index / term, when given, must equal those of the archive's meta.json. */
  readonly index?: number;
  readonly term?: number;
  /**
   * membership, when given, must be the archive's meta.json's (sameMembership): a follower's core takes the
   * configuration of the leader's InstallSnapshot, its store the archive's, which a restart then reads.
   */
  readonly membership?: Membership;
}

export interface ReceiveOptions {
  /** refuse archives longer than this many bytes. */
  readonly maxBytes: number;
  /**
   * check, if given, runs on the complete, fsynced archive file before it is
   * renamed into place (e.g. a full readArchive validation); its rejection
   * refuses the archive with that error.
   */
  readonly check?: (path: string, meta: ArchiveMeta) => Promise<void>;
  /**
   * deferWholeDigest: do not hash the whole archive while it is written;
   * record target.digest as its SHA-256, claimed and unverified
   * (StoredMeta.archiveVerified false), until a reader confirms it
   * (createCheckedReadStream, or open() which verifies it first). Only for
   * writers whose every chunk was checked against the sender's chunk hash (a
   * fetch): each byte is then hashed once on arrival instead of twice, and
   * the whole digest once, by the install that reads the archive anyway.
   */
  readonly deferWholeDigest?: boolean;
}

/** ScrubResult: what scrub() checked and what it moved to quarantine, with why. */
export interface ScrubResult {
  readonly checked: string[];
  /** bytesRead: the archive bytes read and hashed (checked ones and damaged ones alike). */
  bytesRead: number;
  /** stopped: the scrub ended early (its signal, a pace or beforeEach that rejected): `checked` is what it reached. */
  stopped: boolean;
  readonly quarantined: { readonly id: string; readonly reason: string }[];
  /** unreadable: snapshots that could not be read (left in place), with why. */
  readonly unreadable: { readonly id: string; readonly reason: string }[];
}

export interface ImportOptions {
  /** if given, the archive's SHA-256 must equal it (hex). */
  readonly expectedSha256?: string;
  /** refuse archives longer than this many bytes. */
  readonly maxBytes: number;
  /**
   * consumeState, if given, reads state.bin as it arrives (readArchive's
   * consumer: meta.json is known, the hashes are not checked yet); its
   * rejection refuses the import with that error. Without it the state is
   * hashed and discarded.
   */
  readonly consumeState?: (meta: ArchiveMeta, state: Readable) => Promise<void>;
  /**
   * pool: the archive is gunzipped into this PiecePool's buffers (a MemberGunzip, every gzip CRC checked), and
   * state.bin handed to consumeState piece by piece, each to be released (readArchive's `pool`).
   */
  readonly pool?: PiecePool;
}

function serializeStoredMeta(meta: StoredMeta): Buffer {
  const { formatVersion, id, index, term, membership, stateBytes, stateKeys, createdAt, snapcoordVersion } = meta;
  const ordered = {
    formatVersion,
    id,
    index,
    term,
    membership,
    stateBytes,
    stateKeys,
    createdAt,
    snapcoordVersion,
    archiveSha256: meta.archiveSha256,
    archiveBytes: meta.archiveBytes,
    ...(meta.archiveVerified === false ? { archiveVerified: false } : {}),
  };
  return Buffer.from(`${JSON.stringify(ordered, null, 2)}\n`, 'utf8');
}

function parseStoredMeta(bytes: Buffer): StoredMeta {
  const parsed: unknown = JSON.parse(bytes.toString('utf8'));
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
  const { archiveSha256, archiveBytes, archiveVerified, ...rest } = parsed as Record<string, unknown>;
  if (typeof archiveSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(archiveSha256)) throw new Error('bad archiveSha256');
  if (typeof archiveBytes !== 'number' || !Number.isSafeInteger(archiveBytes) || archiveBytes <= 0) {
    throw new Error('bad archiveBytes');
  }
  if (archiveVerified !== undefined && archiveVerified !== false) throw new Error('bad archiveVerified (only false may be written)');
  return { ...validateArchiveMeta(rest), archiveSha256, archiveBytes, ...(archiveVerified === false ? { archiveVerified } : {}) };
}

/** copyStoredMeta: a copy of a parsed meta.json (own arrays and addresses: callers may keep or change theirs), fields in parse order. */
function copyStoredMeta(m: StoredMeta): StoredMeta {
  const base: Membership = { voters: [...m.membership.voters], learners: [...m.membership.learners], addresses: copyAddresses(m.membership.addresses) };
  const membership: Membership = m.membership.proofs === undefined ? base : { ...base, proofs: [...m.membership.proofs] };
  const meta: StoredMeta = {
    formatVersion: m.formatVersion,
    id: m.id,
    index: m.index,
    term: m.term,
    membership,
    stateBytes: m.stateBytes,
    stateKeys: m.stateKeys,
    createdAt: m.createdAt,
    snapcoordVersion: m.snapcoordVersion,
    archiveSha256: m.archiveSha256,
    archiveBytes: m.archiveBytes,
  };
  return m.archiveVerified === false ? { ...meta, archiveVerified: false } : meta;
}

/** copyAddresses copies a membership's addresses as checkMembership builds them (own data properties, any key). */
function copyAddresses(addresses: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [node, addr] of Object.entries(addresses)) setOwn(out, node, addr);
  return out;
}

function newestFirst(a: StoredSnapshot, b: StoredSnapshot): number {
  return (
    b.meta.term - a.meta.term ||
    b.meta.index - a.meta.index ||
    Date.parse(b.meta.createdAt) - Date.parse(a.meta.createdAt) ||
    (b.id < a.id ? -1 : b.id > a.id ? 1 : 0)
  );
}

function isNotFound(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ENOENT';
}

/**
 * teeToSink yields the bytes of `source` unchanged while it writes them to
 * `sink` (which hashes and counts them, SnapshotStoreError `too-large` past
 * its maxBytes; waiting for 'drain': the reader of the yielded bytes sets
 * the pace, the disk holds it back). It does not end the sink.
 */
async function* teeToSink(source: Readable, sink: ArchiveSink, maxBytes: number): AsyncGenerator<Buffer> {
  let sinkError: Error | null = null;
  let bytes = 0;
  const onError = (err: Error): void => {
    sinkError ??= err;
  };
  sink.on('error', onError);
  try {
    for await (const raw of source as AsyncIterable<Buffer | string>) {
      const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw;
      if (sinkError !== null) throw sinkError;
      bytes += chunk.length;
      if (bytes > maxBytes) throw new SnapshotStoreError('too-large', `the archive is larger than the limit of ${maxBytes} bytes`);
      if (!sink.write(chunk)) await Promise.race([once(sink, 'drain'), once(sink, 'close')]);
      if (sinkError !== null) throw sinkError;
      yield chunk;
    }
    if (sinkError !== null) throw sinkError;
  } finally {
    sink.off('error', onError);
  }
}

/**
 * hashFile hashes a whole file and, in the same read, each CHUNK_HASH_BYTES
 * chunk of it (what verify() and scrub() compare with the recorded hashes).
 */
async function hashFile(io: SnapshotIo, path: string, pace?: ReadPace): Promise<SinkDigest> {
  const hash = createHash('sha256');
  const chunkSha256s: Uint8Array[] = [];
  let chunk = createHash('sha256');
  let inChunk = 0;
  let bytes = 0;
  for await (const piece of io.createReadStream(path, { highWaterMark: READ_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    hash.update(piece);
    bytes += piece.length;
    let at = 0;
    while (at < piece.length) {
      const take = Math.min(CHUNK_HASH_BYTES - inChunk, piece.length - at);
      chunk.update(piece.subarray(at, at + take));
      inChunk += take;
      at += take;
      if (inChunk === CHUNK_HASH_BYTES) {
        chunkSha256s.push(chunk.digest());
        chunk = createHash('sha256');
        inChunk = 0;
      }
    }
    if (pace !== undefined) {
      try {
        await pace(piece.length);
      } catch (err) {
        throw new ReadStopped(`the read of ${path} was stopped after ${bytes} bytes: ${(err as Error).message}`, { cause: err });
      }
    }
  }
  if (inChunk > 0) chunkSha256s.push(chunk.digest());
  return { archiveSha256: hash.digest('hex'), wholeVerified: true, archiveBytes: bytes, chunkSha256s };
}

/**
 * checkedChunks reads an opened archive in CHUNK_HASH_BYTES chunks, each
 * hashed and compared with the hash recorded when it was written
 * (SnapshotStoreError `corrupt` at the first that differs, or when the file
 * has more or fewer chunks than recorded).
 */
async function* checkedChunks(handle: SnapshotHandle, io: SnapshotIo): AsyncGenerator<Buffer> {
  for await (const frame of checkedFrames(handle, io)) yield frame.data;
}

/**
 * checkedFrames is checkedChunks with each chunk's `release` (readChunks):
 * a consumer that calls it once done with the chunk's bytes has a later
 * chunk read into the same memory (a delta's base read, archive-delta.ts:
 * no fresh 1 MiB buffer per chunk).
 */
async function* checkedFrames(handle: SnapshotHandle, io: SnapshotIo): AsyncGenerator<{ readonly data: Buffer; readonly release: () => void }> {
  let i = 0;
  for await (const chunk of readChunks(handle.path, 0, CHUNK_HASH_BYTES, undefined, io)) {
    if (chunk.data.byteLength === 0) break;
    checkChunk(handle, i, chunk.sha256);
    i++;
    yield { data: Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength), release: chunk.release ?? (() => undefined) };
  }
  if (i !== handle.chunkSha256s.length) {
    throw new SnapshotStoreError('corrupt', `snapshot ${handle.id}: ${ARCHIVE_FILE} has ${i} chunks, ${CHUNKS_FILE} records ${handle.chunkSha256s.length}`, { path: handle.path });
  }
}

/** wholeOnce: the bytes `read` gives, as a source of one piece (a small delta base read whole). */
async function* wholeOnce(read: () => Promise<Buffer>): AsyncGenerator<Buffer> {
  yield await read();
}

/**
 * framesData: the bytes of each frame, left unreleased (a fresh buffer per piece: the stream they go into, an
 * export's, may hold them after they were handed over); `done` is called once the last was handed over.
 */
async function* framesData(frames: AsyncGenerator<FileFrame>, done?: () => void): AsyncGenerator<Buffer> {
  for await (const f of frames) yield f.data;
  done?.();
}

/**
 * checkedFramesOf: SnapshotHandle.readFrames (see there): the archive's CHUNK_HASH_BYTES chunks that hold
 * [offset, end), each read into a frame, hashed and checked (checkChunk) before its part of the range is yielded.
 */
async function* checkedFramesOf(handle: SnapshotHandle, io: SnapshotIo, offset: number, end: number): AsyncGenerator<FileFrame> {
  if (offset === end) return;
  const first = Math.floor(offset / CHUNK_HASH_BYTES) * CHUNK_HASH_BYTES;
  const stop = Math.min(handle.archiveBytes, Math.ceil(end / CHUNK_HASH_BYTES) * CHUNK_HASH_BYTES);
  for await (const f of readFrames(handle.path, first, CHUNK_HASH_BYTES, io, stop)) {
    // Each frame is one whole chunk (aligned, CHUNK_HASH_BYTES long but the archive's last).
    checkChunk(handle, f.offset / CHUNK_HASH_BYTES, sha256(f.data));
    const lo = Math.max(offset, f.offset);
    const hi = Math.min(end, f.offset + f.data.length);
    if (lo === f.offset && hi === f.offset + f.data.length) {
      yield { ...f, last: hi >= end };
      continue;
    }
    // Part of the chunk: the bytes cut off around it become room (FRAME_ROOM) for the message's fields.
    const data = f.data.subarray(lo - f.offset, hi - f.offset);
    const room = (f.data as Buffer & { [FRAME_ROOM]?: { before: number; after: number } })[FRAME_ROOM];
    if (room !== undefined) Object.defineProperty(data, FRAME_ROOM, { value: { before: room.before + (lo - f.offset), after: room.after + (f.offset + f.data.length - hi) } });
    yield { offset: lo, data, totalSizeBytes: f.totalSizeBytes, last: hi >= end, release: f.release };
  }
}

/** checkChunk: SnapshotStoreError `corrupt` unless `sha256` is the hash recorded for chunk i of the archive. */
function checkChunk(handle: SnapshotHandle, i: number, sha256: Uint8Array): void {
  const recorded = handle.chunkSha256s[i];
  if (recorded === undefined || !Buffer.from(sha256).equals(recorded)) {
    throw new SnapshotStoreError('corrupt', `snapshot ${handle.id}: chunk ${i} of ${ARCHIVE_FILE} does not match its hash in ${CHUNKS_FILE}`, { path: handle.path });
  }
}

/**
 * checkedRange reads `length` bytes of an opened archive from `offset`: the
 * CHUNK_HASH_BYTES chunks that hold them, each checked as checkedChunks
 * does (SnapshotStoreError `corrupt`; also when the file ends before them).
 */
async function checkedRange(handle: SnapshotHandle, io: SnapshotIo, offset: number, length: number): Promise<Buffer> {
  const first = Math.floor(offset / CHUNK_HASH_BYTES);
  const skip = offset - first * CHUNK_HASH_BYTES;
  const parts: Buffer[] = [];
  let have = 0;
  let i = first;
  for await (const chunk of readChunks(handle.path, first * CHUNK_HASH_BYTES, CHUNK_HASH_BYTES, undefined, io)) {
    if (chunk.data.byteLength === 0) break;
    checkChunk(handle, i, chunk.sha256);
    i++;
    parts.push(Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength));
    have += chunk.data.byteLength;
    if (have >= skip + length) break;
  }
  if (have < skip + length) {
    throw new SnapshotStoreError('corrupt', `snapshot ${handle.id}: ${ARCHIVE_FILE} ends before byte ${offset + length}`, { path: handle.path });
  }
  const all = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, have);
  return all.subarray(skip, skip + length);
}

/** DigestTap passes bytes through unchanged, counting and hashing them (createCheckedReadStream). */
class DigestTap extends Transform {
  private readonly hash = createHash('sha256');
  private bytes = 0;
  private sha256: string | null = null;

  constructor() {
    super({ highWaterMark: READ_CHUNK_BYTES });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  /** result: the bytes passed through and their SHA-256 (the hash is finished on the first call). */
  result(): { bytes: number; sha256: string } {
    this.sha256 ??= this.hash.digest('hex');
    return { bytes: this.bytes, sha256: this.sha256 };
  }
}

/** sameChunks: whether two lists of chunk hashes are equal; else the index of the first that differs. */
function firstChunkMismatch(a: readonly Uint8Array[], b: readonly Uint8Array[]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined || y === undefined || !Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(y)) return i;
  }
  return -1;
}

/**
 * MemberTableRecorder finds an archive's member table in a read of it that
 * happens anyway (an install, SnapshotStore.recordMembers): pass `gunzip` to
 * readArchive (its MemberGunzip keeps only each member's sizes, record count
 * and first key, none of its bytes) and call stateBegins from the consumer;
 * after the whole read, table() says where each member lies. Nothing here
 * checks the bytes: the read does (its hashes), and a delta checks the table
 * again against the bytes it reads.
 */
export class MemberTableRecorder {
  readonly gunzip: MemberGunzip;
  readonly #seen: { readonly compressedBytes: number; readonly outStart: number; readonly outBytes: number; readonly records: { readonly keys: number; readonly firstKey: Buffer } | null }[] = [];
  #where: { readonly stateTarOffset: number; readonly stateBytes: number; readonly stateKeys: number } | null = null;

  /** checkCrc: as MemberGunzip's (false where another check covers every byte). */
  /** pool: the gunzip's output goes into its buffers (MemberGunzipOptions.pool; the reader releases them). */
  constructor(options: { readonly checkCrc: boolean; readonly io: SnapshotIo; readonly pool?: PiecePool }) {
    this.gunzip = new MemberGunzip({
      chunkSize: GUNZIP_CHUNK_BYTES,
      checkCrc: options.checkCrc,
      io: options.io,
      ...(options.pool !== undefined ? { pool: options.pool } : {}),
      sizesOnly: true,
      onMember: (m) => this.noteMember(m),
    });
  }

  /** noteMember: a whole member as a gunzip reported it (the MemberGunzip's own, or a SyncMemberGunzip's reading the same archive). */
  noteMember(m: GzipMemberRead): void {
    this.#seen.push({ compressedBytes: m.compressedBytes, outStart: m.outStart, outBytes: m.outBytes, records: m.records === null ? null : { keys: m.records.keys, firstKey: Buffer.from(m.records.firstKey) } });
  }

  /** stateBegins: readArchive's consumer was handed state.bin (its meta and where it lies). */
  stateBegins(meta: ArchiveMeta, where: StateWhere): void {
    this.#where = { stateTarOffset: where.stateTarOffset, stateBytes: meta.stateBytes, stateKeys: meta.stateKeys };
  }

  /**
   * table: the member table of the archive read whole (`archiveBytes` long), with state.bin's size and record
   * count; null when its layout is not one a delta can start from (the head member does not end where state.bin
   * begins, a member is not whole records or crosses state.bin's end) or state.bin was never reached.
   */
  table(archiveBytes: number): { readonly table: ArchiveMemberTable; readonly stateBytes: number; readonly stateKeys: number } | null {
    const w = this.#where;
    const seen = this.#seen;
    const head = seen[0];
    if (w === null || head === undefined || head.outStart !== 0 || head.outBytes !== w.stateTarOffset) return null;
    const state: { compressedBytes: number; stateBytes: number; keys: number; firstKey: Buffer }[] = [];
    let at = w.stateTarOffset;
    for (let i = 1; i < seen.length && at < w.stateTarOffset + w.stateBytes; i++) {
      const m = seen[i] as (typeof seen)[number];
      if (m.outStart !== at || m.records === null || m.outStart + m.outBytes > w.stateTarOffset + w.stateBytes) return null;
      state.push({ compressedBytes: m.compressedBytes, stateBytes: m.outBytes, keys: m.records.keys, firstKey: m.records.firstKey });
      at += m.outBytes;
    }
    if (at !== w.stateTarOffset + w.stateBytes) return null;
    const tailBytes = archiveBytes - head.compressedBytes - state.reduce((n, m) => n + m.compressedBytes, 0);
    return { table: { headBytes: head.compressedBytes, state, tailBytes }, stateBytes: w.stateBytes, stateKeys: w.stateKeys };
  }
}

export class SnapshotStore {
  private mutex: Promise<void> = Promise.resolve();
  /** names of `*.tmp` directories this process is writing or deleting (list() leaves them alone). */
  private readonly busyTmp = new Set<string>();
  private readonly pins = new Map<string, number>();
  /**
   * parsedMeta: per snapshot id, the last meta.json bytes read and what they
   * parsed to (a pure function of the bytes): list() reads every meta.json
   * each time, and bytes equal to the last ones read skip the parse and the
   * schema check. Each caller still gets its own copy.
   */
  private readonly parsedMeta = new Map<string, { readonly bytes: Buffer; readonly meta: StoredMeta }>();
  /**
   * written: the chunk hashes build() recorded for each snapshot it returned, by that returned object, until
   * openWritten takes them (once): what it wrote, held in memory, need not be read back from the disk.
   */
  private readonly written = new WeakMap<StoredSnapshot, readonly Uint8Array[]>();
  /**
   * hashedHere: the snapshots (id -> archive SHA-256) whose archive bytes this store hashed itself since it was
   * opened (this process): written through its sink (build; staged, once the whole digest is proven), or read
   * back whole and found to agree with every recorded hash (open with verify or of a claimed digest, verify,
   * the scrub, a checked read's confirm, a whole export read that checked every chunk). Their recorded chunk
   * hashes are trusted by SnapshotHandle.readFrames and createServedReadStream (a download, an export: no hash
   * per byte served, issue 15's "opening a stored archive trusts the recorded hashes after
   * a cheap check"); any other archive (found on the disk at start, not yet scrubbed) is checked chunk by chunk
   * as it is read. Damage after the hashing is caught by the reader's digest check (every download carries the
   * archive's SHA-256) and by the scrub (at boot in the background, and on demand), which quarantines it. An id
   * leaves it when its directory is quarantined or removed. At most the store's snapshots (one entry each).
   */
  private readonly hashedHere = new Map<string, string>();
  /**
   * tables: the member tables this store wrote beside its archives since it was opened (build, keepMemberTable),
   * by snapshot id, with the archive's SHA-256 they were checked against: members() answers from here for that
   * archive rather than read and check its MEMBERS_FILE again (it was encoded from this very table and checked
   * when written; a delta checks the table against the bytes it reads anyway). An id leaves it when its
   * directory is quarantined or removed. At most PARSED_META_MAX entries (cleared past it).
   */
  private readonly tables = new Map<string, { readonly archiveSha256: string; readonly table: ArchiveMemberTable }>();
  /**
   * keepAlso: retention never removes a snapshot for which this says true,
   * beside the newest `retain` and the open ones (the node keeps what its
   * followers were offered and are pulling: between two fetch streams, or
   * before the first, nothing holds it open). null: nothing more is kept.
   */
  keepAlso: ((s: StoredSnapshot) => boolean) | null = null;
  /**
   * writeStats: what every ArchiveSink of this store handed to the file
   * system so far (archives only; meta.json and chunks.sha256 are not
   * counted): with each byte written once, bytesWritten grows by exactly an
   * archive's size per archive stored.
   */
  readonly writeStats: SinkStats = { bytesWritten: 0, writeCalls: 0, chunkHashesReused: 0, wholeHashedBytes: 0, writebackSyncs: 0 };
  /** blockGzip: the gzip level and block size this store's archives are built with (a caller compressing blocks for createFromMembers). */
  get blockGzip(): { readonly level: number; readonly blockBytes: number } {
    return { level: this.gzipLevel, blockBytes: this.gzipBlockBytes ?? GZIP_BLOCK_BYTES_DEFAULT };
  }

  /** createStats: snapshots createFromRecords stored, by the way their archive was built (in memory, or streamed); createFromMembers' (copied). */
  readonly createStats = { inMemory: 0, streamed: 0, copied: 0 };

  private constructor(
    readonly dir: string,
    private readonly retain: number,
    private readonly snapcoordVersion: string,
    private readonly stateBytesMax: number | undefined,
    private readonly gzipLevel: number,
    private readonly io: SnapshotIo,
    private readonly gzipBlockBytes: number | undefined,
    private readonly smallStateBytesMax: number,
  ) {
    this.prefix = join(dir, '_').slice(0, -1);
  }

  /** prefix: join(dir, x) without its last segment x (under's). */
  private readonly prefix: string;

  /**
   * under: join(this.dir, ...names) for names that are each one plain path segment (not empty, no '/', neither
   * '.' nor '..': snapshot ids, temporary names, the store's file names), by concatenation: such a segment
   * changes nothing before it in the normalization join does (list() joins a few paths per snapshot each call).
   */
  private under(...names: string[]): string {
    return this.prefix + names.join('/');
  }

  /**
   * open prepares the store in `dir` (created with mode 0700 if missing) and
   * cleans `*.tmp` leftovers of a crashed write. Throws SnapshotStoreError
   * `invalid-argument` for retain outside 1..1000, `io` if `dir` is unusable.
   */
  static async open(dir: string, options: SnapshotStoreOptions): Promise<SnapshotStore> {
    const { retain } = options;
    if (!Number.isSafeInteger(retain) || retain < 1 || retain > RETAIN_MAX) {
      throw new SnapshotStoreError('invalid-argument', `retain must be a whole number in 1..${RETAIN_MAX}, got ${retain}`);
    }
    const gzipLevel = options.gzipLevel ?? 6;
    if (!Number.isInteger(gzipLevel) || gzipLevel < 0 || gzipLevel > 9) {
      throw new SnapshotStoreError('invalid-argument', `gzipLevel must be 0..9, got ${gzipLevel}`);
    }
    const smallStateBytesMax = options.smallStateBytesMax ?? SMALL_STATE_BYTES_MAX;
    if (!Number.isSafeInteger(smallStateBytesMax) || smallStateBytesMax < -1) {
      throw new SnapshotStoreError('invalid-argument', `smallStateBytesMax must be a whole number >= -1, got ${smallStateBytesMax}`);
    }
    const io = options.io ?? nodeSnapshotIo;
    try {
      await io.mkdir(dir, { recursive: true, mode: DIR_MODE });
      const st = await io.stat(dir);
      if (!st.isDirectory()) throw new Error('not a directory');
      // The directories made here (now or by an earlier open that failed before they were synced) are durable only
      // once their parents' entries are, else a power loss may take the whole store, snapshots the log was
      // compacted against included: fsync the parent of each directory on the path.
      // And its own entries: a snapshot renamed in by a create whose fsync of this directory failed is listed
      // (the page cache holds it) but not durable, and the log may be compacted against it once it is the newest.
      await fsyncDir(dir, io);
      for (let d = resolve(dir); dirname(d) !== d; d = dirname(d)) await fsyncParent(d, io);
    } catch (err) {
      throw new SnapshotStoreError('io', `cannot use ${dir} as a snapshot directory: ${(err as Error).message}`, { path: dir, cause: err });
    }
    const store = new SnapshotStore(dir, retain, options.snapcoordVersion ?? '0.0.0', options.stateBytesMax, gzipLevel, io, options.gzipBlockBytes, smallStateBytesMax);
    await store.list();
    return store;
  }

  /**
   * create writes a new snapshot. `writeState` writes state.bin into `file`
   * (ending it, e.g. with pipeline(encodeStateRecords(...), file)) and returns
   * the number of records. Then the archive is built from that file, hashed as
   * it is written and fsynced; meta.json is written and fsynced; state.bin is
   * removed; the directory is fsynced, renamed into place and the parent
   * fsynced; finally retention runs. On any failure the temporary directory is
   * removed and the error (writeState's own, ArchiveError, SnapshotStoreError)
   * is passed on. `already-exists` if a snapshot with the same id exists.
   * createFromRecords is the faster path (no state.bin file).
   */
  async create(
    meta: SnapshotCreateMeta,
    writeState: (file: Writable) => Promise<{ stateKeys: number }>,
  ): Promise<StoredSnapshot> {
    return this.build(meta, async (tmpDir, base, archiveSink, onStateProgress) => {
      const statePath = join(tmpDir, STATE_FILE);
      const stateSink = await openFileSink(statePath, {}, this.io);
      let stateKeys: number;
      try {
        ({ stateKeys } = await writeState(stateSink));
        if (!stateSink.writableEnded) stateSink.end();
        await finished(stateSink);
      } catch (err) {
        stateSink.destroy();
        throw err;
      }
      if (!Number.isSafeInteger(stateKeys) || stateKeys < 0) {
        throw new SnapshotStoreError('invalid-argument', `writeState returned stateKeys ${stateKeys}`);
      }
      const written = await writeArchive({ ...base, stateKeys }, statePath, archiveSink, {
        gzipLevel: this.gzipLevel,
        onStateProgress,
        io: this.io,
        ...(this.gzipBlockBytes !== undefined ? { gzipBlockBytes: this.gzipBlockBytes } : {}),
      });
      await this.io.unlink(statePath);
      return { meta: written.meta, members: null };
    });
  }

  /**
   * createFromRecords writes a new snapshot of the state given as batches of
   * records (strictly increasing keys). A state.bin of at most the store's
   * smallStateBytesMax (SMALL_STATE_BYTES_MAX by default) is built in memory
   * (buildSmallArchive) and written through the sink in one write; a larger
   * one streams (writeArchiveFromRecords): iteration, encoding and
   * compression overlap (gzip members on the threadpool), and no uncompressed
   * state.bin is written; the compressed state waits in a spool file inside
   * the snapshot's temporary directory. Both give the same bytes for the same
   * records. Otherwise as create: hashed once as written, fsynced once,
   * renamed into place; StateFormatError for a record that breaks the limits
   * or the order.
   */
  async createFromRecords(meta: SnapshotCreateMeta, records: AsyncIterable<readonly StateRecord[]>): Promise<StoredSnapshot> {
    return this.build(meta, async (tmpDir, base, archiveSink, onStateProgress) => {
      let taken: SmallStateTake;
      try {
        taken = await takeSmallState(records, { maxStateBytes: this.smallStateBytesMax, ...(this.gzipBlockBytes !== undefined ? { gzipBlockBytes: this.gzipBlockBytes } : {}) });
        if (taken.kind === 'small') {
          const small = await buildSmallArchive(base, taken.encoder, { gzipLevel: this.gzipLevel, io: this.io });
          await archiveSink.writeChunk(small.bytes);
          onStateProgress(small.meta.stateBytes, small.meta.stateBytes);
          await archiveSink.finishChunks();
          this.createStats.inMemory++;
          return { meta: small.meta, members: small.members };
        }
      } catch (err) {
        archiveSink.destroy();
        throw err;
      }
      const written = await writeArchiveFromRecords(base, { records: taken.records, spoolPath: join(tmpDir, SPOOL_FILE) }, archiveSink, {
        gzipLevel: this.gzipLevel,
        onStateProgress,
        io: this.io,
        ...(this.gzipBlockBytes !== undefined ? { gzipBlockBytes: this.gzipBlockBytes } : {}),
      });
      this.createStats.streamed++;
      return { meta: written.meta, members: written.members };
    });
  }

  /**
   * createFromMembers writes a new snapshot whose state the producer gives
   * as gzip members of whole records, already compressed
   * (writeArchiveFromMembers: meta.json's head member, the members as they
   * are and the tail member; the members delivered before the producer
   * knows the state's totals, StateMembersProducer's begin, wait in a spool
   * file; a restore's copy begins once past the reserved keys, so nothing):
   * a restore keeps its upload's state members this way (UploadMemberCopy).
   * The member table is recorded (a later delta can start from it).
   * Otherwise as createFromRecords; the producer's error rejects it, nothing stored.
   */
  async createFromMembers(meta: SnapshotCreateMeta, produce: StateMembersProducer): Promise<StoredSnapshot> {
    return this.build(meta, async (tmpDir, base, archiveSink, onStateProgress) => {
      const written = await writeArchiveFromMembers(base, produce, join(tmpDir, SPOOL_FILE), archiveSink, { gzipLevel: this.gzipLevel, onStateProgress, io: this.io });
      this.createStats.copied++;
      return { meta: written.meta, members: written.members };
    });
  }

  /**
   * createDelta writes a new snapshot of the state "`base` + `changes`"
   * (writeArchiveDelta): the members of base's archive none of whose keys
   * changed are copied compressed, the others merged and compressed again;
   * state.bin is still hashed whole. The changed members are read first
   * (checked against the chunk hashes, checkedRange) and merged, so the
   * archive is written head first in one pass, each byte once (up to
   * DELTA_PREMERGE_STATE_BYTES_MAX of changed base state; beyond, the
   * compressed state waits in a spool file). `base` must be open and have a member
   * table (members()), and `changes` be every key written or deleted since
   * base's state, with its value now (null: deleted), in strictly increasing
   * key order. base's bytes are checked against its recorded chunk hashes as
   * they are read (SnapshotStoreError `corrupt` otherwise). With
   * options.signal aborted it stops before its next member and rejects with
   * the signal's reason (nothing stored). Otherwise as createFromRecords.
   */
  async createDelta(
    meta: SnapshotCreateMeta,
    base: SnapshotHandle,
    table: ArchiveMemberTable,
    changes: readonly StateChange[],
    options: { readonly signal?: AbortSignal } = {},
  ): Promise<StoredSnapshot> {
    return this.build(meta, async (tmpDir, baseMeta, archiveSink, onStateProgress) => {
      // A base of less than one chunk is read once (checked against its chunk hash: a file longer or shorter than
      // recorded fails it too), and both the changed members' reads and the pass in order take it from memory: one
      // open and read of the file, not one per pass.
      let whole: Promise<Buffer> | null = null;
      const readWhole = (): Promise<Buffer> => (whole ??= checkedRange(base, this.io, 0, base.archiveBytes));
      const small = base.archiveBytes < CHUNK_HASH_BYTES;
      const written = await writeArchiveDelta(
        baseMeta,
        {
          bytes: small ? wholeOnce(readWhole) : checkedFrames(base, this.io),
          archiveBytes: base.archiveBytes,
          members: table,
          readRange: small ? async (offset, length) => (await readWhole()).subarray(offset, offset + length) : (offset, length) => checkedRange(base, this.io, offset, length),
        },
        changes,
        join(tmpDir, SPOOL_FILE),
        archiveSink,
        { gzipLevel: this.gzipLevel, onStateProgress, io: this.io, ...(options.signal !== undefined ? { signal: options.signal } : {}) },
      );
      return { meta: written.meta, members: written.members };
    });
  }

  /**
   * members returns the member table recorded beside a stored archive built
   * here (MEMBERS_FILE), checked against that archive; null when there is
   * none (fetched, uploaded, older) or it does not check.
   */
  async members(stored: StoredSnapshot): Promise<ArchiveMemberTable | null> {
    const kept = this.tables.get(stored.id);
    if (kept !== undefined && kept.archiveSha256 === stored.archiveSha256) return kept.table;
    try {
      const bytes = await this.io.readFile(join(this.dir, stored.id, MEMBERS_FILE));
      return decodeMemberTable(bytes, { archiveSha256: stored.archiveSha256, archiveBytes: stored.archiveBytes, stateBytes: stored.meta.stateBytes, stateKeys: stored.meta.stateKeys });
    } catch {
      return null;
    }
  }

  /**
   * recordMembers finds the member table of a stored archive that was not
   * built here (a fetched one: the leader's snapshot a follower keeps after
   * a restore) and records it beside it (MEMBERS_FILE), so this node's next
   * snapshot can be a delta from it instead of a read of the whole state
   * (at 8M keys x 1 KiB a follower's full snapshot took minutes of CPU on
   * the leader's cores; the read here is one inflate of the state on the
   * threadpool). The archive is read once through a MemberGunzip (each gzip
   * member's end and record count found as it inflates), its whole SHA-256
   * hashed on the way and checked against the recorded (claimed) one, and
   * every archive rule checked but state.bin's hash (the whole digest covers
   * it). Returns the table, or null when the archive's layout is not one a
   * delta can start from (the head member does not end where state.bin
   * begins, a member is not whole records); the table is then not recorded.
   * Whatever it records, a delta checks again against the bytes (sizes,
   * counts, first keys, key order, every gzip CRC). `options.consumeState`,
   * if given, reads state.bin as it is inflated in that same read (a check of
   * its records); its rejection fails the call before anything is recorded.
   * Errors: the read's (SnapshotStoreError `corrupt`, ArchiveError),
   * consumeState's, the write's.
   */
  async recordMembers(stored: StoredSnapshot, options: { readonly consumeState?: (meta: ArchiveMeta, state: Readable) => Promise<void> } = {}): Promise<ArchiveMemberTable | null> {
    const handle = await this.open(stored.id, { allowUnverified: true });
    try {
      const recorder = new MemberTableRecorder({ checkCrc: false, io: this.io }); // the whole SHA-256 below covers every byte
      const { stream, confirm } = handle.createCheckedReadStream();
      await readArchive(
        stream,
        (meta, state, _verified, w) => {
          recorder.stateBegins(meta, w);
          // Without consumeState the rest of state.bin is read and dropped by readArchive.
          return options.consumeState?.(meta, state) ?? Promise.resolve();
        },
        { io: this.io, skipStateDigest: true, gunzip: recorder.gunzip },
      );
      await confirm();
      return await this.keepMemberTable(handle, recorder);
    } finally {
      handle.release();
    }
  }

  /**
   * keepMemberTable records beside an opened archive the member table `recorder` found in a whole read of it
   * (MEMBERS_FILE, written durably), after the same checks as every later read of it (it covers the archive, its
   * members add up to the state). The caller has checked the bytes read (the archive's digest). Returns the
   * table, or null (nothing recorded) when the archive's layout is not one a delta can start from
   * (MemberTableRecorder.table). Errors: the write's; SnapshotStoreError `corrupt` (decodeMemberTable) when the
   * table does not cover the archive.
   */
  async keepMemberTable(handle: SnapshotHandle, recorder: Pick<MemberTableRecorder, 'table'>): Promise<ArchiveMemberTable | null> {
    const found = recorder.table(handle.archiveBytes);
    if (found === null) return null;
    const { table, stateBytes, stateKeys } = found;
    const bytes = encodeMemberTable(table, handle.archiveSha256);
    const checked = decodeMemberTable(bytes, { archiveSha256: handle.archiveSha256, archiveBytes: handle.archiveBytes, stateBytes, stateKeys });
    const dir = join(this.dir, handle.id);
    const tmp = join(dir, `${MEMBERS_FILE}.${this.io.uniqueName()}.new`);
    await this.exclusive(async () => {
      try {
        await writeFileDurable(tmp, bytes, this.io);
        await this.io.rename(tmp, join(dir, MEMBERS_FILE));
        await fsyncDir(dir, this.io);
      } finally {
        await this.io.rm(tmp, { force: true });
      }
      this.rememberTable(handle.id, handle.archiveSha256, checked); // as members() reads it back
    });
    return table;
  }

  /**
   * build checks meta, then (one mutation at a time) makes the temporary
   * directory, lets `writeArchiveInto` write the archive into the sink, and
   * commits it: chunk hashes and meta.json written durably, the directory
   * fsynced, renamed into place, the parent fsynced, retention applied.
   */
  private async build(
    meta: SnapshotCreateMeta,
    writeArchiveInto: (
      tmpDir: string,
      base: ArchiveWriteMeta,
      sink: ArchiveSink,
      onStateProgress: (done: number, total: number) => void,
    ) => Promise<{ readonly meta: ArchiveMeta; readonly members: ArchiveMemberTable | null }>,
  ): Promise<StoredSnapshot> {
    const createdAt = meta.createdAt ?? new Date(this.io.wallNowMs()).toISOString();
    if (!isIsoTimestamp(createdAt)) {
      throw new SnapshotStoreError('invalid-argument', `createdAt ${JSON.stringify(createdAt)} is not an ISO-8601 UTC timestamp`);
    }
    for (const [name, v] of [['index', meta.index], ['term', meta.term]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new SnapshotStoreError('invalid-argument', `${name} must be a whole number >= 0, got ${v}`);
    }
    let membership: Membership;
    try {
      membership = checkMembership(meta.membership);
    } catch (err) {
      throw new SnapshotStoreError('invalid-argument', (err as Error).message, { cause: err });
    }
    return this.exclusive(async () => {
      const id = snapshotId(meta.term, meta.index, Date.parse(createdAt));
      const finalDir = this.under(id);
      if (await this.exists(finalDir)) throw new SnapshotStoreError('already-exists', `snapshot ${id} already exists`, { path: finalDir });
      const tmpName = `${id}${TMP_SUFFIX}`;
      const tmpDir = this.under(tmpName);
      this.busyTmp.add(tmpName);
      let stored: StoredSnapshot;
      try {
        await this.makeTmpDir(tmpDir);
        const archivePath = this.under(tmpName, ARCHIVE_FILE);
        const archiveSink = await ArchiveSink.create(archivePath, { beforeSync: () => failpoint('snapshot-before-fsync'), io: this.io });
        let midWriteDone = false;
        let archiveMeta: ArchiveMeta;
        let members: ArchiveMemberTable | null;
        try {
          ({ meta: archiveMeta, members } = await writeArchiveInto(
            tmpDir,
            { id, index: meta.index, term: meta.term, membership, createdAt, snapcoordVersion: this.snapcoordVersion },
            archiveSink,
            (done, total) => {
              if (!midWriteDone && done * 2 >= total) {
                midWriteDone = true;
                failpoint('snapshot-mid-write');
              }
            },
          ));
        } catch (err) {
          // A state that failed before (or while) it reached the sink: its file is closed now, not by the garbage collector.
          archiveSink.destroy();
          throw err;
        } finally {
          this.noteSink(archiveSink);
        }
        // The sink hashed the bytes as it wrote them: its digest is the one recorded.
        const digest = archiveSink.digest();
        const storedMeta: StoredMeta = { ...archiveMeta, archiveSha256: digest.archiveSha256, archiveBytes: digest.archiveBytes };
        await writeFileDurable(this.under(tmpName, CHUNKS_FILE), encodeChunkHashes(digest), this.io);
        const tableBytes = members !== null ? encodeMemberTable(members, digest.archiveSha256) : null;
        if (tableBytes !== null) await writeFileDurable(this.under(tmpName, MEMBERS_FILE), tableBytes, this.io);
        const storedMetaBytes = serializeStoredMeta(storedMeta);
        await writeFileDurable(this.under(tmpName, STORED_META_FILE), storedMetaBytes, this.io);
        await fsyncDir(tmpDir, this.io);
        failpoint('snapshot-before-rename');
        await this.placeDurably(tmpDir, id);
        failpoint('snapshot-after-rename');
        stored = this.describe(id, storedMeta);
        this.rememberMeta(id, storedMetaBytes, storedMeta); // its next read parses nothing (loadMeta compares the bytes)
        this.written.set(stored, digest.chunkSha256s);
        this.hashedHere.set(id, digest.archiveSha256); // hashed by the sink as it wrote the bytes
        if (tableBytes !== null) this.rememberWrittenTable(id, tableBytes, storedMeta);
      } catch (err) {
        await this.io.rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      } finally {
        this.busyTmp.delete(tmpName);
      }
      await this.applyRetention(stored);
      return stored;
    });
  }

  /**
   * list returns the complete snapshots, newest first (by term, index,
   * createdAt), and removes `*.tmp` leftovers of crashed writes. Directories
   * whose meta.json is unreadable are skipped (and left for an operator).
   */
  async list(): Promise<StoredSnapshot[]> {
    return this.listing(null);
  }

  /** listing: list(), with `known` (a snapshot this store has just written, under its lock) taken as it is, not read back. */
  private async listing(known: StoredSnapshot | null): Promise<StoredSnapshot[]> {
    let entries;
    try {
      entries = await this.io.readdir(this.dir);
    } catch (err) {
      throw new SnapshotStoreError('io', `cannot read ${this.dir}: ${(err as Error).message}`, { path: this.dir, cause: err });
    }
    const found: StoredSnapshot[] = [];
    for (const entry of entries) {
      if (entry.name.endsWith(TMP_SUFFIX)) {
        if (!this.busyTmp.has(entry.name)) await this.io.rm(join(this.dir, entry.name), { recursive: true, force: true }).catch(() => undefined);
        continue;
      }
      if (!entry.isDirectory() || !STORE_ID_PATTERN.test(entry.name)) continue;
      if (known !== null && entry.name === known.id) {
        found.push(known);
        continue;
      }
      try {
        found.push(await this.load(entry.name));
      } catch (err) {
        // A read that failed (EIO) is not a bad snapshot: listing it as absent would let boot fall back past it.
        if (isReadFailure(err)) throw new SnapshotStoreError('io', `cannot read ${this.dir}: ${(err as Error).message}`, { path: this.dir, cause: err });
        // unreadable: not listed; open() reports why.
      }
    }
    return found.sort(newestFirst);
  }

  /**
   * open returns a handle on the snapshot that pins it until release(),
   * after a cheap check: meta.json parses, the archive file is as long as it
   * records, and chunks.sha256 parses, matches its own checksum and
   * describes that archive. The bytes themselves are trusted (they were
   * hashed as they were written); with `verify` they are re-hashed and
   * compared as well. A snapshot stored before chunk hashes were recorded is
   * hashed once and its chunks.sha256 written. Throws SnapshotStoreError
   * `invalid-argument` (malformed id), `not-found`, `corrupt` (unreadable
   * meta.json or chunks.sha256, wrong size, and with verify wrong hashes).
   */
  async open(id: string, options: OpenOptions = {}): Promise<SnapshotHandle> {
    if (typeof id !== 'string' || !STORE_ID_PATTERN.test(id)) {
      throw new SnapshotStoreError('invalid-argument', `${JSON.stringify(id)} is not a snapshot id`);
    }
    const release = this.pin(id);
    try {
      const storedMeta = await this.loadMeta(id);
      const stored = this.describe(id, storedMeta);
      let verified = storedMeta.archiveVerified !== false;
      const size = await this.io.stat(stored.path).then(
        (st) => st.size,
        (err: unknown) => {
          throw new SnapshotStoreError('corrupt', `snapshot ${id}: cannot read ${ARCHIVE_FILE}: ${(err as Error).message}`, { path: stored.path, cause: err });
        },
      );
      if (size !== stored.archiveBytes) {
        throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} is ${size} bytes but meta.json says ${stored.archiveBytes}`, { path: stored.path });
      }
      const recorded = await this.loadChunkHashes(stored);
      let chunkSha256s: readonly Uint8Array[];
      if (recorded === null) {
        // Stored by an older version: hash it once and record what it held.
        const actual = await this.checkBytes(stored, null, options.pace);
        await this.recordChunkHashes(stored, actual).catch(() => undefined);
        chunkSha256s = actual.chunkSha256s;
      } else {
        // A claimed digest is verified before anyone but a checked reader may read the bytes.
        if (options.verify === true || (!verified && options.allowUnverified !== true)) {
          await this.checkBytes(stored, recorded, options.pace);
          if (!verified) await this.confirmDigest(id, stored.archiveSha256);
          verified = true;
        }
        chunkSha256s = recorded;
      }
      return this.handleOf(stored, chunkSha256s, verified, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * handleOf: the handle open() (or openWritten) returns on a checked snapshot, pinned by the caller
   * (`release` unpins it): its recorded chunk hashes, and whether its bytes are known to hash to its digest.
   */
  private handleOf(stored: StoredSnapshot, chunkSha256s: readonly Uint8Array[], verified: boolean, release: () => void): SnapshotHandle {
    const id = stored.id;
    const readFrom = (offset = 0): Readable => {
      if (!Number.isSafeInteger(offset) || offset < 0 || offset > stored.archiveBytes) {
        throw new SnapshotStoreError('invalid-argument', `offset ${offset} is outside 0..${stored.archiveBytes}`);
      }
      return this.io.createReadStream(stored.path, { start: offset, highWaterMark: READ_CHUNK_BYTES });
    };
    const wasVerified = verified;
    const trusted = (): boolean => this.hashedHere.get(id) === stored.archiveSha256;
    const handle: SnapshotHandle = {
      ...stored,
      chunkSha256s,
      verified,
      createReadStream: readFrom,
      readFrames: (offset, end) => {
        if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(end) || offset < 0 || offset > end || end > stored.archiveBytes) {
          throw new SnapshotStoreError('invalid-argument', `range ${offset}..${end} is outside 0..${stored.archiveBytes}`);
        }
        // Bytes this store hashed itself since it opened: their recorded hashes are trusted (hashedHere).
        if (trusted()) return readFrames(stored.path, offset, SERVED_FRAME_BYTES, this.io, end);
        return checkedFramesOf(handle, this.io, offset, end);
      },
      createServedReadStream: () => {
        const checked = !trusted();
        const frames = handle.readFrames(0, stored.archiveBytes);
        // A whole read that checked every chunk against its recorded hash has hashed the archive: trusted from then on.
        const confirmed = checked ? () => this.hashedHere.set(id, stored.archiveSha256) : undefined;
        return Readable.from(framesData(frames, confirmed), { objectMode: false, highWaterMark: READ_CHUNK_BYTES });
      },
      trusted,
      createCheckedReadStream: () => {
        if (wasVerified) return { stream: readFrom(0), confirm: () => Promise.resolve() };
        const tap = new DigestTap();
        const source = readFrom(0);
        source.on('error', (err) => tap.destroy(err));
        tap.on('close', () => source.destroy());
        source.pipe(tap);
        return {
          stream: tap,
          confirm: () => {
            const { bytes, sha256 } = tap.result();
            return this.confirmRead(handle, bytes, sha256);
          },
        };
      },
      createChunkCheckedReadStream: () => Readable.from(checkedChunks(handle, this.io), { objectMode: false, highWaterMark: READ_CHUNK_BYTES }),
      release,
    };
    return handle;
  }

  /**
   * confirmRead is createCheckedReadStream's confirm() for a whole read of
   * `handle`'s archive made elsewhere (a worker's: install-read.ts), which
   * counted `bytes` and hashed them to `sha256`: it resolves when they are
   * exactly archiveBytes long and hash to archiveSha256, recording the archive
   * as verified (durably) for every later open(); else it rejects with
   * SnapshotStoreError `corrupt`. For a handle opened verified it resolves at
   * once.
   */
  async confirmRead(handle: SnapshotHandle, bytes: number, sha256: string): Promise<void> {
    if (handle.verified) return;
    if (bytes !== handle.archiveBytes) {
      throw new SnapshotStoreError('corrupt', `snapshot ${handle.id}: ${ARCHIVE_FILE} read ${bytes} bytes but meta.json says ${handle.archiveBytes}`, { path: handle.path });
    }
    if (sha256 !== handle.archiveSha256) {
      throw new SnapshotStoreError('corrupt', `snapshot ${handle.id}: ${ARCHIVE_FILE} SHA-256 is ${sha256}, not the ${handle.archiveSha256} its sender claimed`, { path: handle.path });
    }
    await this.confirmDigest(handle.id, sha256);
    this.hashedHere.set(handle.id, sha256);
  }

  /**
   * openWritten opens a snapshot that create, createFromRecords, createFromMembers or createDelta has just
   * returned (that very object) with what they wrote, held in memory since: its meta.json and chunk hashes are
   * not read back and parsed again, only the archive's size is checked on the disk (a stat, as open() does).
   * Once per returned snapshot; any other one (or a second call) is opened as open(stored.id) opens it, and so
   * is one whose archive is gone or not its recorded size (open's error). The node keeps each snapshot it
   * creates open as its newest: open() read back the meta.json and chunks.sha256 it had just written.
   */
  async openWritten(stored: StoredSnapshot): Promise<SnapshotHandle> {
    const chunkSha256s = this.written.get(stored);
    if (chunkSha256s === undefined) return this.open(stored.id);
    this.written.delete(stored);
    const id = stored.id;
    const release = this.pin(id);
    const size = await this.io.stat(stored.path).then(
      (st) => st.size,
      () => -1,
    );
    if (size !== stored.archiveBytes) {
      release();
      return this.open(id);
    }
    // Its own copy of the meta (as open's, parsed from the file): the caller keeps `stored`.
    const own = this.describe(id, copyStoredMeta({ ...stored.meta, archiveSha256: stored.archiveSha256, archiveBytes: stored.archiveBytes }));
    return this.handleOf(own, chunkSha256s, true, release);
  }

  /**
   * hold pins the snapshot of `handle`, an open handle of this store, once more and returns a handle of its own
   * on it (released on its own), without opening it again: what open() checks (meta.json, the archive's size, the
   * chunk hashes) was checked when `handle` was opened, and its bytes are checked against those chunk hashes as
   * they are read, as before. A handle of another store, or of a snapshot nothing pins any more (it may be gone),
   * is opened anew (open(handle.id), its errors).
   */
  async hold(handle: SnapshotHandle): Promise<SnapshotHandle> {
    if (handle.path !== this.under(handle.id, ARCHIVE_FILE) || !this.pins.has(handle.id)) return this.open(handle.id);
    return { ...handle, release: this.pin(handle.id) };
  }

  /**
   * makeDurable fsyncs a stored snapshot's directory and the store's, so its
   * files and its entry survive a power loss: for a snapshot found stored
   * after a write reported failure (a rename that returned EIO may have
   * landed without the fsync that follows it). SnapshotStoreError
   * `invalid-argument` for a malformed id; the file system's error otherwise.
   */
  async makeDurable(id: string): Promise<void> {
    if (typeof id !== 'string' || !STORE_ID_PATTERN.test(id)) {
      throw new SnapshotStoreError('invalid-argument', `${JSON.stringify(id)} is not a snapshot id`);
    }
    await fsyncDir(join(this.dir, id), this.io);
    await fsyncDir(this.dir, this.io);
  }

  /**
   * verify re-hashes a stored snapshot's archive and compares its size, its
   * SHA-256 and each chunk's with those recorded when it was written.
   * Resolves when they agree; SnapshotStoreError `corrupt` saying what
   * differs (or what cannot be read), `not-found`, `invalid-argument`;
   * ReadStopped when `pace` rejected (ReadPace).
   */
  async verify(id: string, pace?: ReadPace): Promise<void> {
    const h = await this.open(id, { verify: true, ...(pace !== undefined ? { pace } : {}) });
    h.release();
  }

  /**
   * scrub verifies every stored snapshot (verify) one at a time, outside the
   * store's lock, and moves each whose bytes or recorded hashes disagree to
   * `<dir>/quarantine/<id>` (out of list(), kept for an operator), even if it
   * is open, once it still disagrees when verified again under the lock (a
   * copy received again may have replaced its bytes meanwhile: it stays,
   * neither quarantined nor reported so). A snapshot that cannot be read for another reason (a missing
   * file system, a permission) is left where it is and reported in
   * `unreadable`. `signal` stops it between snapshots; ids in `skip` (just
   * verified) are not read again. options.beforeEach is awaited before each
   * snapshot is read, options.pace after each piece read (ReadPace: a rate
   * limit); either rejecting stops the scrub there (`stopped`, the snapshot
   * being read left as it was, trusted or not). Never rejects for a
   * bad snapshot; rejects only if the store directory cannot be listed.
   */
  async scrub(signal?: AbortSignal, skip: readonly string[] = [], options: ScrubOptions = {}): Promise<ScrubResult> {
    const result: ScrubResult = { checked: [], bytesRead: 0, stopped: false, quarantined: [], unreadable: [] };
    const pace: ReadPace = async (bytes) => {
      result.bytesRead += bytes;
      if (options.pace !== undefined) await options.pace(bytes);
    };
    for (const s of await this.list()) {
      if (signal?.aborted === true) {
        result.stopped = true;
        break;
      }
      if (skip.includes(s.id)) continue;
      let reason: string | null = null;
      try {
        if (options.beforeEach !== undefined) {
          await options.beforeEach(s.id).catch((err: unknown) => {
            throw new ReadStopped(`the scrub was stopped before snapshot ${s.id}: ${(err as Error).message}`, { cause: err });
          });
        }
        await this.verify(s.id, pace);
      } catch (err) {
        if (err instanceof ReadStopped) {
          result.stopped = true;
          break;
        }
        if (err instanceof SnapshotStoreError && err.code === 'not-found') continue;
        if (!(err instanceof SnapshotStoreError) || err.code !== 'corrupt' || isUnreadable(err)) {
          result.unreadable.push({ id: s.id, reason: (err as Error).message });
          continue;
        }
        reason = err.message;
      }
      result.checked.push(s.id);
      if (reason === null) continue;
      if (await this.quarantineUnlessRepaired(s.id)) result.quarantined.push({ id: s.id, reason });
    }
    return result;
  }

  /**
   * quarantineUnlessRepaired (scrub, a snapshot its verify found damaged,
   * read outside the lock): under the lock, the snapshot is verified again
   * and moved to quarantine only if it still does not verify. Between the
   * two, a copy received again may have replaced its files with bytes that
   * do (staged(): the same bytes as recorded); quarantining it then would
   * take a good snapshot out of the store. False when it was not moved
   * (repaired meanwhile, or gone). Hashes under the lock: only on this rare
   * path.
   */
  private async quarantineUnlessRepaired(id: string): Promise<boolean> {
    return this.exclusive(async () => {
      try {
        const stored = this.describe(id, await this.loadMeta(id));
        await this.checkBytes(stored, await this.loadChunkHashes(stored));
        return false;
      } catch (err) {
        if (err instanceof SnapshotStoreError && err.code === 'not-found') return false;
      }
      await this.moveToQuarantine(id);
      return true;
    });
  }

  /**
   * quarantineIfDamaged (a reader found the archive of snapshot `id` differ
   * from its recorded hashes: a download's or an export's chunk check)
   * re-hashes it once, under the store's lock (no copy received again may
   * replace its files meanwhile, see quarantineUnlessRepaired), and moves it
   * to quarantine if it still disagrees (or its meta.json or chunks.sha256
   * no longer parse), as the scrub does. Resolves with why it was moved, or
   * null: it agrees, is gone, or cannot be read (an EIO says nothing of its
   * bytes). SnapshotStoreError `invalid-argument` for a malformed id.
   */
  async quarantineIfDamaged(id: string): Promise<string | null> {
    if (typeof id !== 'string' || !STORE_ID_PATTERN.test(id)) {
      throw new SnapshotStoreError('invalid-argument', `${JSON.stringify(id)} is not a snapshot id`);
    }
    return this.exclusive(async () => {
      try {
        const stored = this.describe(id, await this.loadMeta(id));
        await this.checkBytes(stored, await this.loadChunkHashes(stored));
        return null;
      } catch (err) {
        if (!(err instanceof SnapshotStoreError) || err.code !== 'corrupt' || isUnreadable(err)) return null;
        await this.moveToQuarantine(id);
        return err.message;
      }
    });
  }

  /**
   * quarantine moves a snapshot whose bytes disagree with its recorded hashes
   * to `<dir>/quarantine/<id>-<ms>` (out of list(), kept for an operator),
   * even if it is open; durable once it resolves. The quarantine keeps the
   * last QUARANTINE_KEEP moved there: older ones are removed.
   */
  async quarantine(id: string): Promise<void> {
    await this.exclusive(() => this.moveToQuarantine(id));
  }

  /** moveToQuarantine: quarantine's move, under the store's lock. */
  private async moveToQuarantine(id: string): Promise<void> {
    this.hashedHere.delete(id);
    this.tables.delete(id);
    const qdir = join(this.dir, QUARANTINE_DIR);
    await this.io.mkdir(qdir, { recursive: true, mode: DIR_MODE });
    await this.io.rename(join(this.dir, id), join(qdir, `${id}-${this.io.wallNowMs()}`));
    await fsyncDir(this.dir, this.io);
    // The last QUARANTINE_KEEP moved in (by the time in their names, then the name) stay; what is not one of ours
    // (another name) is left alone. Best effort: the move is done and durable; what a failure here leaves is
    // removed at the next one.
    try {
      const moved = (await this.io.readdir(qdir))
        .map((e) => ({ name: e.name, m: QUARANTINED_NAME.exec(e.name) }))
        .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
        .sort((a, b) => Number(a.m[1]) - Number(b.m[1]) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of moved.slice(0, Math.max(0, moved.length - QUARANTINE_KEEP))) await this.io.rm(join(qdir, e.name), { recursive: true, force: true });
    } catch {
      // left for the next quarantine
    }
  }

  /** quarantined lists the quarantine directory (`dir`) and its entries (`<id>-<ms>`, sorted); none when it does not exist. */
  async quarantined(): Promise<{ readonly dir: string; readonly names: string[] }> {
    const dir = join(this.dir, QUARANTINE_DIR);
    try {
      return { dir, names: (await this.io.readdir(dir)).map((e) => e.name).sort() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { dir, names: [] };
      throw err;
    }
  }

  /** latest opens the newest snapshot that passes open()'s check (skipping corrupt ones), or returns null. */
  async latest(): Promise<SnapshotHandle | null> {
    for (const s of await this.list()) {
      try {
        return await this.open(s.id);
      } catch (err) {
        // a read that failed (EIO) is not a bad snapshot: skipping it would make an older one the newest
        if (err instanceof SnapshotStoreError && ((err.code === 'corrupt' && !isReadFailure(err)) || err.code === 'not-found')) continue;
        throw err;
      }
    }
    return null;
  }

  /**
   * importArchive streams an archive from outside (a restore upload) into
   * the store in one pass: its bytes are written once to a temporary file
   * through an ArchiveSink (hashed and counted there, SnapshotStoreError
   * `too-large` past maxBytes) while readArchive reads them (every rule,
   * every hash; any ArchiveError is passed on; the state goes to
   * consumeState, or is hashed and discarded); then the SHA-256 is compared
   * with expectedSha256 (`digest-mismatch`), the hashes are recorded and the
   * directory is renamed into place. Importing an archive already stored
   * (same id, same SHA-256) puts the bytes just written in the stored copy's
   * place, file by file (its recorded hashes are no proof of its bytes now),
   * and returns it; a different archive that
   * names the same term, index and creation time is stored under the next
   * free millisecond (`already-exists` past 64 such). Retention runs afterwards but never
   * removes the snapshot just imported.
   */
  async importArchive(source: Readable, options: ImportOptions): Promise<StoredSnapshot> {
    const { expectedSha256, maxBytes } = options;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      source.destroy();
      throw new SnapshotStoreError('invalid-argument', `maxBytes must be a whole number > 0, got ${maxBytes}`);
    }
    if (expectedSha256 !== undefined && !/^[0-9a-f]{64}$/i.test(expectedSha256)) {
      source.destroy();
      throw new SnapshotStoreError('invalid-argument', `expectedSha256 ${JSON.stringify(expectedSha256)} is not a hex SHA-256`);
    }
    return this.staged('import', async (tmpDir) => {
      const sink = await ArchiveSink.create(join(tmpDir, ARCHIVE_FILE), { maxBytes, io: this.io });
      const pooled = options.pool !== undefined ? { pool: options.pool, gunzip: new MemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: true, io: this.io, pool: options.pool }) } : {};
      const limits = this.stateBytesMax === undefined ? { io: this.io, ...pooled } : { stateBytesMax: this.stateBytesMax, io: this.io, ...pooled };
      let meta: ArchiveMeta;
      try {
        ({ meta } = await readArchive(
          Readable.from(teeToSink(source, sink, maxBytes), { objectMode: false, highWaterMark: READ_CHUNK_BYTES }),
          options.consumeState ?? (async () => undefined),
          limits,
        ));
        sink.end();
        await finished(sink);
      } catch (err) {
        sink.destroy();
        source.destroy();
        throw err;
      } finally {
        this.noteSink(sink);
      }
      const digest = sink.digest();
      if (expectedSha256 !== undefined && digest.archiveSha256 !== expectedSha256.toLowerCase()) {
        throw new SnapshotStoreError('digest-mismatch', `the archive's SHA-256 is ${digest.archiveSha256}, expected ${expectedSha256.toLowerCase()}`);
      }
      return { meta, digest };
    });
  }

  /**
   * receiveArchive takes an archive a peer sends (a follower's fetch): `write`
   * writes its bytes, each once, into the ArchiveSink it is given (straight
   * into the store's temporary directory; writeChunk with each chunk's
   * verified SHA-256, which is then recorded rather than computed again),
   * and resolves when they are all written. The sink hashes the whole
   * archive as it writes (unless options.deferWholeDigest: then the target's
   * digest is recorded as claimed, unverified until a reader confirms it);
   * after its single fsync the size and SHA-256 must
   * equal the target's (`digest-mismatch`), meta.json is read from the
   * archive's head (readArchiveHead; index and term must equal the target's
   * when given, else `digest-mismatch`), options.check runs if given, and
   * the snapshot is renamed into place with its hashes recorded. The
   * archive's contents are not validated here beyond its head: readArchive
   * validates them wherever they are read (an install makes nothing live
   * before that). Same-id rules and retention as importArchive; a copy
   * stored already is replaced only by bytes known to be its own: with
   * deferWholeDigest they are hashed first (`digest-mismatch` when they are
   * not the claimed digest, the stored copy kept). Errors: write's own,
   * SnapshotStoreError, ArchiveError, check's.
   */
  async receiveArchive(target: ReceiveTarget, write: (sink: ArchiveSink) => Promise<void>, options: ReceiveOptions): Promise<StoredSnapshot> {
    const { maxBytes } = options;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw new SnapshotStoreError('invalid-argument', `maxBytes must be a whole number > 0, got ${maxBytes}`);
    }
    if (!/^[0-9a-f]{64}$/.test(target.digest)) {
      throw new SnapshotStoreError('invalid-argument', `digest ${JSON.stringify(target.digest)} is not a lowercase hex SHA-256`);
    }
    if (target.sizeBytes > maxBytes) {
      throw new SnapshotStoreError('too-large', `the archive of ${target.sizeBytes} bytes is larger than the limit of ${maxBytes} bytes`);
    }
    return this.staged('receive', async (tmpDir) => {
      const path = join(tmpDir, ARCHIVE_FILE);
      const sink = await ArchiveSink.create(path, { maxBytes: target.sizeBytes, ...(options.deferWholeDigest === true ? { claimedSha256: target.digest } : {}), io: this.io });
      let digest: SinkDigest;
      try {
        await write(sink);
        digest = await sink.finishChunks();
      } catch (err) {
        sink.destroy();
        throw err;
      } finally {
        this.noteSink(sink);
      }
      if (digest.archiveBytes !== target.sizeBytes || digest.archiveSha256 !== target.digest) {
        throw new SnapshotStoreError(
          'digest-mismatch',
          `the archive received is ${digest.archiveBytes} bytes with SHA-256 ${digest.archiveSha256}, expected ${target.sizeBytes} bytes with ${target.digest}`,
        );
      }
      const meta = await readArchiveHead(path, this.stateBytesMax === undefined ? { io: this.io } : { stateBytesMax: this.stateBytesMax, io: this.io });
      if ((target.index !== undefined && meta.index !== target.index) || (target.term !== undefined && meta.term !== target.term)) {
        throw new SnapshotStoreError('digest-mismatch', `the archive received holds snapshot ${meta.index} of term ${meta.term}, expected ${target.index} of term ${target.term}`);
      }
      if (target.membership !== undefined && !sameMembership(meta.membership, target.membership)) {
        throw new SnapshotStoreError(
          'digest-mismatch',
          `the archive received names voters [${meta.membership.voters.join(', ')}] and learners [${meta.membership.learners.join(', ')}] (with their addresses), not the configuration its snapshot was offered with: voters [${target.membership.voters.join(', ')}], learners [${target.membership.learners.join(', ')}]`,
        );
      }
      await options.check?.(path, meta);
      // The archive's own meta.json carries no membership proofs (serializeArchiveMeta); the configuration it was
      // offered with does (the same voters, learners and addresses: checked above): kept, so this copy, served on
      // later (toRaftMeta), hands them on as the leader's own does.
      const proofs = target.membership?.proofs;
      return { meta: proofs !== undefined && proofs.length > 0 ? { ...meta, membership: { ...meta.membership, proofs: [...proofs] } } : meta, digest };
    });
  }

  /**
   * staged runs `fill` on a fresh temporary directory (writing the archive
   * there, outside the store's lock), then records the hashes and meta.json,
   * fsyncs, and under the lock renames the directory into place (same-id
   * rules of importArchive) and applies retention. The directory is removed
   * on any failure.
   */
  private async staged(kind: string, fill: (tmpDir: string) => Promise<{ meta: ArchiveMeta; digest: SinkDigest }>): Promise<StoredSnapshot> {
    const tmpName = `${kind}-${this.io.uniqueName()}${TMP_SUFFIX}`;
    const tmpDir = join(this.dir, tmpName);
    this.busyTmp.add(tmpName);
    try {
      await this.makeTmpDir(tmpDir);
      const { meta, digest } = await fill(tmpDir);
      let storedMeta: StoredMeta = {
        ...meta,
        archiveSha256: digest.archiveSha256,
        archiveBytes: digest.archiveBytes,
        ...(digest.wholeVerified ? {} : { archiveVerified: false as const }),
      };
      await writeFileDurable(join(tmpDir, CHUNKS_FILE), encodeChunkHashes(digest), this.io);
      await writeFileDurable(join(tmpDir, STORED_META_FILE), serializeStoredMeta(storedMeta), this.io);
      await fsyncDir(tmpDir, this.io);
      const createdAtMs = Date.parse(meta.createdAt);
      // proveStaged hashes the staged archive whose whole digest its sender only claimed, before it may take a stored
      // copy's place (below): SnapshotStoreError `digest-mismatch` when it is not the bytes claimed (the stored copy
      // is kept); else its meta.json is rewritten as verified.
      let proven = digest.wholeVerified;
      const proveStaged = async (storedId: string): Promise<void> => {
        if (proven) return;
        const path = join(tmpDir, ARCHIVE_FILE);
        const actual = await hashFile(this.io, path);
        if (actual.archiveBytes !== digest.archiveBytes || actual.archiveSha256 !== digest.archiveSha256 || firstChunkMismatch(actual.chunkSha256s, digest.chunkSha256s) >= 0) {
          throw new SnapshotStoreError(
            'digest-mismatch',
            `the archive received is ${actual.archiveBytes} bytes with SHA-256 ${actual.archiveSha256}, not the ${digest.archiveBytes} bytes with ${digest.archiveSha256} its sender claimed; the stored copy ${storedId} is kept`,
            { path },
          );
        }
        // eslint-disable-next-line @typescript-eslint/no-unused-vars
        const { archiveVerified, ...verified } = storedMeta;
        storedMeta = verified;
        const tmp = join(tmpDir, `${STORED_META_FILE}.verified`);
        await writeFileDurable(tmp, serializeStoredMeta(storedMeta), this.io);
        await this.io.rename(tmp, join(tmpDir, STORED_META_FILE));
        await fsyncDir(tmpDir, this.io);
        proven = true;
      };
      if (!proven) {
        // Hashed outside the store's lock when a copy is stored already (an install's confirm waits for that lock).
        const twin = await this.sameDigestStored(meta, createdAtMs, digest.archiveSha256);
        if (twin !== null) await proveStaged(twin);
      }
      return await this.exclusive(async () => {
        // The id comes from what the archive says (term, index, creation time): two different archives may say
        // the same (two uploads built alike, from different states). The same bytes are the stored one; different
        // bytes take the next free millisecond, so neither refuses the other (bounded).
        let id = snapshotId(meta.term, meta.index, createdAtMs);
        for (let bump = 1; await this.exists(join(this.dir, id)); bump++) {
          const existing = await this.load(id).catch(() => null);
          if (existing !== null && existing.archiveSha256 === digest.archiveSha256) {
            // An earlier attempt may have renamed it into place and failed before the fsync of the store directory
            // (simulator seed 730483: then a log reset to it was persisted, and a power loss took its entry back).
            await fsyncDir(this.dir, this.io);
            // The stored copy's recorded SHA-256 is no proof of its bytes now: a disk may have damaged them since
            // (a node fetches a snapshot it holds when its own copy no longer verifies; simulator seed 1173062: a
            // refetch returned the damaged stored copy, dropped the bytes just received, and the install failed on
            // the gzip check). The bytes just written take its place, file by file, but only once they are known to
            // be the bytes its meta.json names: a whole digest only claimed by the sender is hashed first (this
            // rare path reads them once more). Bytes that are not (a sender that lied, every chunk hash its own) are
            // refused and the stored copy kept: replaced, they would be read unhashed by every handle opened on the
            // stored copy as verified (they read by path: an install, a FetchSnapshot serving it), and by open()
            // itself after a crash between the renames (old meta.json, new archive), and an install refusing them
            // would then remove the snapshot: a good copy lost to a lying member. So every file renamed here is the
            // stored copy's own, as it was written (the same archive bytes, chunks.sha256 of the same
            // CHUNK_HASH_BYTES chunks, meta.json verified): any mix of old and new files left by a crash opens, and
            // a reader at any offset reads the same bytes.
            await proveStaged(id);
            const existingDir = join(this.dir, id);
            for (const f of [ARCHIVE_FILE, CHUNKS_FILE, STORED_META_FILE]) await this.io.rename(join(tmpDir, f), join(existingDir, f));
            await fsyncDir(existingDir, this.io);
            this.hashedHere.set(id, digest.archiveSha256); // proven just above
            return this.describe(id, storedMeta);
          }
          if (bump > SAME_ID_ARCHIVES_MAX) {
            throw new SnapshotStoreError('already-exists', `${SAME_ID_ARCHIVES_MAX} different snapshots like ${id} are already stored`, { path: join(this.dir, id) });
          }
          id = snapshotId(meta.term, meta.index, createdAtMs + bump);
        }
        await this.placeDurably(tmpDir, id);
        // Hashed whole by the sink as written (or proven); a claimed digest is trusted once a reader confirms it.
        if (proven) this.hashedHere.set(id, digest.archiveSha256);
        else this.hashedHere.delete(id);
        const stored = this.describe(id, storedMeta);
        await this.applyRetention(stored);
        return stored;
      });
    } finally {
      await this.io.rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
      this.busyTmp.delete(tmpName);
    }
  }

  /**
   * sameDigestStored: the id of a stored snapshot staged() would take for an
   * archive of `meta` with SHA-256 `archiveSha256` (the same id rules), or
   * null. Read without the store's lock: staged() checks again under it.
   */
  private async sameDigestStored(meta: ArchiveMeta, createdAtMs: number, archiveSha256: string): Promise<string | null> {
    for (let bump = 0; bump <= SAME_ID_ARCHIVES_MAX; bump++) {
      const id = snapshotId(meta.term, meta.index, createdAtMs + bump);
      if (!(await this.exists(join(this.dir, id)))) return null;
      const existing = await this.load(id).catch(() => null);
      if (existing !== null && existing.archiveSha256 === archiveSha256) return id;
    }
    return null;
  }

  /** remove deletes a snapshot. SnapshotStoreError `not-found`, `busy` (open handles), `invalid-argument`. */
  async remove(id: string): Promise<void> {
    if (typeof id !== 'string' || !STORE_ID_PATTERN.test(id)) {
      throw new SnapshotStoreError('invalid-argument', `${JSON.stringify(id)} is not a snapshot id`);
    }
    await this.exclusive(async () => {
      if (!(await this.exists(join(this.dir, id)))) throw new SnapshotStoreError('not-found', `no snapshot ${id}`, { path: join(this.dir, id) });
      if (this.pins.has(id)) throw new SnapshotStoreError('busy', `snapshot ${id} is open; release its handles first`);
      await this.removeDir(id);
    });
  }

  private noteSink(sink: ArchiveSink): void {
    this.writeStats.bytesWritten += sink.stats.bytesWritten;
    this.writeStats.writeCalls += sink.stats.writeCalls;
    this.writeStats.chunkHashesReused += sink.stats.chunkHashesReused;
    this.writeStats.wholeHashedBytes += sink.stats.wholeHashedBytes;
    this.writeStats.writebackSyncs += sink.stats.writebackSyncs;
  }

  /** loadChunkHashes reads chunks.sha256 of a snapshot: null when absent (stored by an older version), `corrupt` when it does not check. */
  private async loadChunkHashes(stored: StoredSnapshot): Promise<Uint8Array[] | null> {
    const path = join(this.dir, stored.id, CHUNKS_FILE);
    let bytes: Buffer;
    try {
      bytes = await this.io.readFile(path);
    } catch (err) {
      if (isNotFound(err)) return null;
      throw new SnapshotStoreError('corrupt', `snapshot ${stored.id}: cannot read ${CHUNKS_FILE}: ${(err as Error).message}`, { path, cause: err });
    }
    try {
      return decodeChunkHashes(bytes, stored).chunkSha256s;
    } catch (err) {
      throw new SnapshotStoreError('corrupt', `snapshot ${stored.id}: ${CHUNKS_FILE} is invalid: ${(err as Error).message}`, { path });
    }
  }

  /** recordChunkHashes writes chunks.sha256 into a stored snapshot's directory (a temp file renamed over it). */
  private async recordChunkHashes(stored: StoredSnapshot, digest: SinkDigest): Promise<void> {
    const tmp = join(this.dir, stored.id, `${CHUNKS_FILE}.${this.io.uniqueName()}.new`);
    try {
      await writeFileDurable(tmp, encodeChunkHashes(digest), this.io);
      await this.io.rename(tmp, join(this.dir, stored.id, CHUNKS_FILE));
      await fsyncDir(join(this.dir, stored.id), this.io);
    } finally {
      await this.io.rm(tmp, { force: true });
    }
  }

  /**
   * checkBytes hashes a stored archive and compares it with what meta.json
   * (and, given, the chunk hashes) record; SnapshotStoreError `corrupt`
   * (with the read error as its cause when it cannot be read); ReadStopped
   * when `pace` rejected.
   */
  private async checkBytes(stored: StoredSnapshot, chunkSha256s: readonly Uint8Array[] | null, pace?: ReadPace): Promise<SinkDigest> {
    // Whatever was trusted of it, a read that does not agree (or fails) ends the trust; one that agrees is trust.
    // A read stopped by its pace says nothing: what was trusted stays so (a paced scrub of a large archive takes a
    // while, and the downloads meanwhile keep reading it on its recorded hashes).
    let actual: SinkDigest;
    try {
      actual = await this.hashBytes(stored, chunkSha256s, pace);
    } catch (err) {
      if (!(err instanceof ReadStopped)) this.hashedHere.delete(stored.id);
      throw err;
    }
    this.hashedHere.set(stored.id, stored.archiveSha256);
    return actual;
  }

  /** hashBytes: checkBytes' hashing and comparing. */
  private async hashBytes(stored: StoredSnapshot, chunkSha256s: readonly Uint8Array[] | null, pace?: ReadPace): Promise<SinkDigest> {
    const { id } = stored;
    const actual = await hashFile(this.io, stored.path, pace).catch((err: unknown) => {
      if (err instanceof ReadStopped) throw err;
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: cannot read ${ARCHIVE_FILE}: ${(err as Error).message}`, { path: stored.path, cause: err });
    });
    if (actual.archiveBytes !== stored.archiveBytes) {
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} is ${actual.archiveBytes} bytes but meta.json says ${stored.archiveBytes}`, { path: stored.path });
    }
    if (actual.archiveSha256 !== stored.archiveSha256) {
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} SHA-256 is ${actual.archiveSha256} but meta.json says ${stored.archiveSha256}`, { path: stored.path });
    }
    const bad = chunkSha256s === null ? -1 : firstChunkMismatch(actual.chunkSha256s, chunkSha256s);
    if (bad >= 0) {
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: chunk ${bad} of ${ARCHIVE_FILE} does not match its hash in ${CHUNKS_FILE}`, { path: stored.path });
    }
    return actual;
  }

  private describe(id: string, meta: StoredMeta): StoredSnapshot {
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    const { archiveSha256, archiveBytes, archiveVerified, ...archiveMeta } = meta;
    return { id, meta: archiveMeta, path: this.under(id, ARCHIVE_FILE), archiveSha256, archiveBytes };
  }

  private async load(id: string): Promise<StoredSnapshot> {
    return this.describe(id, await this.loadMeta(id));
  }

  /** rememberWrittenTable keeps the member table just written beside snapshot `id` (`bytes`) as members() would read it back: decoded and checked against the archive; not kept when it does not check (members() says null then, as before). */
  private rememberWrittenTable(id: string, bytes: Buffer, meta: StoredMeta): void {
    let table: ArchiveMemberTable;
    try {
      table = decodeMemberTable(bytes, { archiveSha256: meta.archiveSha256, archiveBytes: meta.archiveBytes, stateBytes: meta.stateBytes, stateKeys: meta.stateKeys });
    } catch {
      return;
    }
    this.rememberTable(id, meta.archiveSha256, table);
  }

  /** rememberTable keeps `table`, just written beside snapshot `id`'s archive (`archiveSha256`), for members(). */
  private rememberTable(id: string, archiveSha256: string, table: ArchiveMemberTable): void {
    if (this.tables.size >= PARSED_META_MAX) this.tables.clear();
    this.tables.set(id, { archiveSha256, table });
  }

  /** rememberMeta keeps `meta` as the parse of meta.json `bytes` of snapshot `id` (copies both). */
  private rememberMeta(id: string, bytes: Buffer, meta: StoredMeta): void {
    if (this.parsedMeta.size >= PARSED_META_MAX) this.parsedMeta.clear();
    this.parsedMeta.set(id, { bytes: Buffer.from(bytes), meta: copyStoredMeta(meta) });
  }

  /** loadMeta reads and parses a snapshot's meta.json; SnapshotStoreError `not-found` or `corrupt`. */
  private async loadMeta(id: string): Promise<StoredMeta> {
    const metaPath = this.under(id, STORED_META_FILE);
    let bytes: Buffer;
    try {
      const handle = await this.io.open(metaPath, 'r');
      try {
        // A meta.json is rarely past a KiB: read into a small buffer (from Node's pool) first, and only a
        // file that fills it into one of the largest size (never zero-filled: only the bytes read are kept).
        let buf = Buffer.allocUnsafe(STORED_META_FIRST_READ_BYTES);
        let { bytesRead } = await handle.read(buf, 0, buf.length, 0);
        if (bytesRead === buf.length) {
          const whole = Buffer.allocUnsafe(STORED_META_BYTES_MAX + 1);
          buf.copy(whole);
          buf = whole;
          bytesRead += (await handle.read(buf, bytesRead, buf.length - bytesRead, bytesRead)).bytesRead;
        }
        if (bytesRead > STORED_META_BYTES_MAX) throw new Error(`more than ${STORED_META_BYTES_MAX} bytes`);
        bytes = buf.subarray(0, bytesRead);
      } finally {
        await handle.close();
      }
    } catch (err) {
      if (isNotFound(err) && !(await this.exists(join(this.dir, id)))) {
        throw new SnapshotStoreError('not-found', `no snapshot ${id}`, { path: join(this.dir, id) });
      }
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: cannot read meta.json: ${(err as Error).message}`, { path: metaPath, cause: err });
    }
    const seen = this.parsedMeta.get(id);
    if (seen !== undefined && seen.bytes.equals(bytes)) return copyStoredMeta(seen.meta);
    let meta: StoredMeta;
    try {
      meta = parseStoredMeta(bytes);
    } catch (err) {
      const why = err instanceof ArchiveError ? err.message : (err as Error).message;
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: meta.json is invalid: ${why}`, { path: metaPath, cause: err });
    }
    this.rememberMeta(id, bytes, meta);
    return meta;
  }

  /**
   * confirmDigest records that a stored archive's bytes were hashed whole
   * and found to be `archiveSha256` (its meta.json loses archiveVerified:
   * written to a temporary file, fsynced, renamed over it, the directory
   * fsynced). A no-op when it is recorded as verified already or is gone;
   * SnapshotStoreError `corrupt` when `archiveSha256` is not the recorded digest.
   */
  private async confirmDigest(id: string, archiveSha256: string): Promise<void> {
    await this.exclusive(async () => {
      let meta: StoredMeta;
      try {
        meta = await this.loadMeta(id);
      } catch (err) {
        if (err instanceof SnapshotStoreError && err.code === 'not-found') return;
        throw err;
      }
      if (meta.archiveSha256 !== archiveSha256) {
        throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} SHA-256 is ${archiveSha256} but meta.json says ${meta.archiveSha256}`);
      }
      if (meta.archiveVerified !== false) return;
      // eslint-disable-next-line @typescript-eslint/no-unused-vars
      const { archiveVerified, ...verified } = meta;
      const tmp = join(this.dir, id, `${STORED_META_FILE}.${this.io.uniqueName()}.new`);
      try {
        await writeFileDurable(tmp, serializeStoredMeta(verified), this.io);
        await this.io.rename(tmp, join(this.dir, id, STORED_META_FILE));
        await fsyncDir(join(this.dir, id), this.io);
      } finally {
        await this.io.rm(tmp, { force: true });
      }
    });
  }

  private async exists(path: string): Promise<boolean> {
    try {
      await this.io.stat(path);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  private async makeTmpDir(tmpDir: string): Promise<void> {
    await this.io.rm(tmpDir, { recursive: true, force: true });
    await this.io.mkdir(tmpDir, { mode: DIR_MODE });
    await this.io.chmod(tmpDir, DIR_MODE);
  }

  /**
   * applyRetention keeps the newest `retain` snapshots, `kept` (just written, its meta.json not read back), any
   * pinned one and any keepAlso wants.
   */
  private async applyRetention(kept: StoredSnapshot): Promise<void> {
    const all = await this.listing(kept);
    for (const s of all.slice(this.retain)) {
      if (s.id === kept.id || this.pins.has(s.id) || this.keepAlso?.(s) === true) continue;
      await this.removeDir(s.id);
    }
  }

  /**
   * placeDurably renames the complete temporary directory `tmpDir` into place
   * as snapshot `id` and fsyncs the store directory. When that fsync fails,
   * the rename is undone (renamed back to `tmpDir`, which the caller removes,
   * and the directory fsynced again, best effort) before the error is passed
   * on: the caller reports the snapshot not stored, so this store must not
   * list it (served to a follower, taken as the newest, kept by retention in
   * place of an older one that is durable). Why undo rather than stop the
   * store until a restart (as RocksStorage does after a failed write): a
   * crash right after the failed fsync may take the rename back, or keep it;
   * the undo gives the running process the state the crash may leave and the
   * failure reported says (no snapshot), while the other outcome, the entry
   * surviving after all, is harmless: a complete snapshot, hashed at the next
   * boot before use, that nothing (no compaction, no offer) relied on. Each
   * snapshot is a directory of its own, so one that failed to land leaves
   * nothing another depends on, unlike a log whose later writes build on the
   * failed one. If the undo fails too, the snapshot is left as it is (listed)
   * and the first error is passed on.
   */
  private async placeDurably(tmpDir: string, id: string): Promise<void> {
    const finalDir = join(this.dir, id);
    await this.io.rename(tmpDir, finalDir);
    try {
      await fsyncDir(this.dir, this.io);
    } catch (err) {
      try {
        await this.io.rename(finalDir, tmpDir);
        await fsyncDir(this.dir, this.io).catch(() => undefined);
      } catch {
        // left in place: listed, as before
      }
      throw err;
    }
  }

  /** removeDir renames the snapshot away first (atomic), so a crash mid-delete leaves only a *.tmp leftover. */
  private async removeDir(id: string): Promise<void> {
    this.hashedHere.delete(id);
    this.tables.delete(id);
    const doomed = `${id}.deleting-${this.io.uniqueName()}${TMP_SUFFIX}`;
    this.busyTmp.add(doomed);
    try {
      await this.io.rename(join(this.dir, id), join(this.dir, doomed));
      await fsyncDir(this.dir, this.io);
      await this.io.rm(join(this.dir, doomed), { recursive: true, force: true });
    } finally {
      this.busyTmp.delete(doomed);
    }
  }

  /** pin keeps snapshot `id` from retention until the release it returns is called (once; later calls do nothing). */
  private pin(id: string): () => void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.unpin(id);
    };
  }

  private unpin(id: string): void {
    const n = (this.pins.get(id) ?? 0) - 1;
    if (n <= 0) this.pins.delete(id);
    else this.pins.set(id, n);
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.mutex.then(work);
    this.mutex = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}

/**
 * fsyncParent makes the entry of the directory `dir` durable in its parent.
 * A parent this process may search but not read (an operator's directory,
 * mode 0711, say) cannot be opened to fsync; a parent on a file system that
 * cannot sync (EINVAL: /proc/self/fd, where the directory exporter opens its
 * stores; EROFS: a read-only root above the data volume) has nothing to make
 * durable. Those are left to the file system.
 */
async function fsyncParent(dir: string, io: SnapshotIo): Promise<void> {
  try {
    await fsyncDir(dirname(dir), io);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EROFS') throw err;
  }
}

/**
 * isUnreadable: a verify or open that failed `corrupt` because a read failed
 * (its cause carries an errno code: EIO, ENOENT, EACCES, ...), not because
 * the bytes disagree with their recorded hashes: the snapshot may be good.
 */
export function isUnreadable(err: unknown): boolean {
  const code = (err as { cause?: { code?: unknown } }).cause?.code;
  // An errno (EIO, ENOENT, ...), not the code of our own parse errors (an ArchiveError's `invalid-meta`, say).
  return err instanceof SnapshotStoreError && err.code === 'corrupt' && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

/** isReadFailure: isUnreadable, but for a file that is missing (ENOENT: the snapshot is damaged or being removed). */
export function isReadFailure(err: unknown): boolean {
  return isUnreadable(err) && ((err as { cause?: { code?: unknown } }).cause?.code ?? 'ENOENT') !== 'ENOENT';
}

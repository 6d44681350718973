/**
 * SnapshotStore keeps snapshot archives in a directory, with the habits of
 * hashicorp/raft's FileSnapshotStore:
 *
 *   <dir>/<id>/archive.tar.gz   the archive (archive.ts), mode 0600
 *   <dir>/<id>/meta.json        the archive's meta + archiveSha256 + archiveBytes, mode 0600
 *
 * Directories are 0700. A snapshot is written in `<dir>/<id>.tmp/`, fsynced,
 * renamed into place and the parent fsynced, so a crash at any point leaves
 * either the complete snapshot or a `*.tmp` leftover that list() cleans. Every
 * archive is re-hashed on open(). After each create or import only the newest
 * `retain` snapshots are kept (Typesense #1891: snapshots never cleaned up).
 *
 * One process owns a store directory. Mutations (create, importArchive,
 * remove, retention) run one at a time; open() pins a snapshot so that
 * retention does not delete it while it is being read (a follower still
 * fetching it: Typesense #2859, etcd #5317) until the handle is released.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, open as openFile, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Membership } from '../raft/types.js';
import { readArchive, writeArchive, type ArchiveMeta } from './archive.js';
import { checkMembership, isIsoTimestamp, validateArchiveMeta, META_BYTES_MAX } from './archive-meta.js';
import { ArchiveError, SnapshotStoreError } from './errors.js';
import { failpoint } from './failpoint.js';
import { DIR_MODE, fsyncDir, openFileSink, writeFileDurable } from './file-sink.js';

/** ARCHIVE_FILE / STORED_META_FILE / STATE_FILE: the names inside a snapshot directory. */
export const ARCHIVE_FILE = 'archive.tar.gz';
export const STORED_META_FILE = 'meta.json';
const STATE_FILE = 'state.bin';
const TMP_SUFFIX = '.tmp';
const READ_CHUNK_BYTES = 1024 * 1024;
const STORED_META_BYTES_MAX = META_BYTES_MAX + 1024;
/** RETAIN_MAX: the most snapshots a store may be told to keep. */
export const RETAIN_MAX = 1000;

/** STORE_ID_PATTERN: `<term>-<index>-<createdAt ms>`, zero-padded to 20, 20 and 13 digits. */
export const STORE_ID_PATTERN = /^\d{20}-\d{20}-\d{13,15}$/;

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
}

/** SnapshotCreateMeta: what create() needs; createdAt defaults to now, the id is derived. */
export interface SnapshotCreateMeta {
  readonly index: number;
  readonly term: number;
  readonly membership: Membership;
  readonly createdAt?: string;
}

/** StoredMeta is a snapshot directory's meta.json. */
export interface StoredMeta extends ArchiveMeta {
  readonly archiveSha256: string;
  readonly archiveBytes: number;
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
 * SnapshotHandle is an opened, verified snapshot. It pins the snapshot against
 * retention until release() (idempotent); read it with createReadStream.
 */
export interface SnapshotHandle extends StoredSnapshot {
  /** createReadStream reads the archive from `offset` (0..archiveBytes) to its end. */
  createReadStream(offset?: number): Readable;
  /** chunkSha256s: the SHA-256 of each CHUNK_HASH_BYTES chunk, recorded while open() verified the archive. */
  readonly chunkSha256s: readonly Uint8Array[];
  release(): void;
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
  };
  return Buffer.from(`${JSON.stringify(ordered, null, 2)}\n`, 'utf8');
}

function parseStoredMeta(bytes: Buffer): StoredMeta {
  const parsed: unknown = JSON.parse(bytes.toString('utf8'));
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
  const { archiveSha256, archiveBytes, ...rest } = parsed as Record<string, unknown>;
  if (typeof archiveSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(archiveSha256)) throw new Error('bad archiveSha256');
  if (typeof archiveBytes !== 'number' || !Number.isSafeInteger(archiveBytes) || archiveBytes <= 0) {
    throw new Error('bad archiveBytes');
  }
  return { ...validateArchiveMeta(rest), archiveSha256, archiveBytes };
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
 * teeToFile yields the bytes of `source` unchanged while it hashes and counts
 * them (SnapshotStoreError `too-large` past maxBytes) and writes them to
 * `file` (waiting for 'drain': the reader of the yielded bytes sets the pace,
 * the file holds it back). It does not end the file.
 */
async function* teeToFile(
  source: Readable,
  file: Writable,
  maxBytes: number,
  counted: { bytes: number; hash: ReturnType<typeof createHash> },
): AsyncGenerator<Buffer> {
  let fileError: Error | null = null;
  const onError = (err: Error): void => {
    fileError ??= err;
  };
  file.on('error', onError);
  try {
    for await (const raw of source as AsyncIterable<Buffer | string>) {
      const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw;
      if (fileError !== null) throw fileError;
      counted.bytes += chunk.length;
      if (counted.bytes > maxBytes) throw new SnapshotStoreError('too-large', `the archive is larger than the limit of ${maxBytes} bytes`);
      counted.hash.update(chunk);
      if (!file.write(chunk)) await once(file, 'drain');
      yield chunk;
    }
    if (fileError !== null) throw fileError;
  } finally {
    file.off('error', onError);
  }
}

/** CHUNK_HASH_BYTES: the chunk size whose SHA-256s open() records while it verifies (the transfer default). */
export const CHUNK_HASH_BYTES = 1024 * 1024;

/**
 * hashFile hashes a whole file and, in the same read, each CHUNK_HASH_BYTES
 * chunk of it: a server can then send verified chunks without hashing them again.
 */
async function hashFile(path: string): Promise<{ sha256: string; bytes: number; chunkSha256s: Uint8Array[] }> {
  const hash = createHash('sha256');
  const chunkSha256s: Uint8Array[] = [];
  let chunk = createHash('sha256');
  let inChunk = 0;
  let bytes = 0;
  for await (const piece of createReadStream(path, { highWaterMark: READ_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
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
  }
  if (inChunk > 0) chunkSha256s.push(chunk.digest());
  return { sha256: hash.digest('hex'), bytes, chunkSha256s };
}

export class SnapshotStore {
  private mutex: Promise<void> = Promise.resolve();
  /** names of `*.tmp` directories this process is writing or deleting (list() leaves them alone). */
  private readonly busyTmp = new Set<string>();
  private readonly pins = new Map<string, number>();

  private constructor(
    readonly dir: string,
    private readonly retain: number,
    private readonly snapcoordVersion: string,
    private readonly stateBytesMax: number | undefined,
    private readonly gzipLevel: number,
  ) {}

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
    try {
      await mkdir(dir, { recursive: true, mode: DIR_MODE });
      const st = await stat(dir);
      if (!st.isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new SnapshotStoreError('io', `cannot use ${dir} as a snapshot directory: ${(err as Error).message}`, { path: dir, cause: err });
    }
    const store = new SnapshotStore(dir, retain, options.snapcoordVersion ?? '0.0.0', options.stateBytesMax, gzipLevel);
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
   */
  async create(
    meta: SnapshotCreateMeta,
    writeState: (file: Writable) => Promise<{ stateKeys: number }>,
  ): Promise<StoredSnapshot> {
    const createdAt = meta.createdAt ?? new Date().toISOString();
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
      const finalDir = join(this.dir, id);
      if (await this.exists(finalDir)) throw new SnapshotStoreError('already-exists', `snapshot ${id} already exists`, { path: finalDir });
      const tmpName = `${id}${TMP_SUFFIX}`;
      const tmpDir = join(this.dir, tmpName);
      this.busyTmp.add(tmpName);
      let stored: StoredSnapshot;
      try {
        await this.makeTmpDir(tmpDir);
        const statePath = join(tmpDir, STATE_FILE);
        const stateSink = await openFileSink(statePath);
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
        const archivePath = join(tmpDir, ARCHIVE_FILE);
        const archiveSink = await openFileSink(archivePath, { beforeSync: () => failpoint('snapshot-before-fsync') });
        let midWriteDone = false;
        const written = await writeArchive(
          { id, index: meta.index, term: meta.term, membership, createdAt, snapcoordVersion: this.snapcoordVersion, stateKeys },
          statePath,
          archiveSink,
          {
            gzipLevel: this.gzipLevel,
            onStateProgress: (done, total) => {
              if (!midWriteDone && done * 2 >= total) {
                midWriteDone = true;
                failpoint('snapshot-mid-write');
              }
            },
          },
        );
        const storedMeta: StoredMeta = { ...written.meta, archiveSha256: written.archiveSha256, archiveBytes: written.archiveBytes };
        await writeFileDurable(join(tmpDir, STORED_META_FILE), serializeStoredMeta(storedMeta));
        await unlink(statePath);
        await fsyncDir(tmpDir);
        failpoint('snapshot-before-rename');
        await rename(tmpDir, finalDir);
        await fsyncDir(this.dir);
        failpoint('snapshot-after-rename');
        stored = this.describe(id, storedMeta);
      } catch (err) {
        await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      } finally {
        this.busyTmp.delete(tmpName);
      }
      await this.applyRetention(id);
      return stored;
    });
  }

  /**
   * list returns the complete snapshots, newest first (by term, index,
   * createdAt), and removes `*.tmp` leftovers of crashed writes. Directories
   * whose meta.json is unreadable are skipped (and left for an operator).
   */
  async list(): Promise<StoredSnapshot[]> {
    let entries;
    try {
      entries = await readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      throw new SnapshotStoreError('io', `cannot read ${this.dir}: ${(err as Error).message}`, { path: this.dir, cause: err });
    }
    const found: StoredSnapshot[] = [];
    for (const entry of entries) {
      if (entry.name.endsWith(TMP_SUFFIX)) {
        if (!this.busyTmp.has(entry.name)) await rm(join(this.dir, entry.name), { recursive: true, force: true }).catch(() => undefined);
        continue;
      }
      if (!entry.isDirectory() || !STORE_ID_PATTERN.test(entry.name)) continue;
      try {
        found.push(await this.load(entry.name));
      } catch {
        // unreadable: not listed; open() reports why.
      }
    }
    return found.sort(newestFirst);
  }

  /**
   * open verifies the snapshot's archive (size and SHA-256 against its
   * meta.json) and returns a handle that pins it until release(). Throws
   * SnapshotStoreError `invalid-argument` (malformed id), `not-found`,
   * `corrupt` (unreadable meta.json, wrong size or hash).
   */
  async open(id: string): Promise<SnapshotHandle> {
    if (typeof id !== 'string' || !STORE_ID_PATTERN.test(id)) {
      throw new SnapshotStoreError('invalid-argument', `${JSON.stringify(id)} is not a snapshot id`);
    }
    this.pin(id);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.unpin(id);
    };
    try {
      const stored = await this.load(id);
      const actual = await hashFile(stored.path).catch((err: unknown) => {
        throw new SnapshotStoreError('corrupt', `snapshot ${id}: cannot read ${ARCHIVE_FILE}: ${(err as Error).message}`, { path: stored.path, cause: err });
      });
      if (actual.bytes !== stored.archiveBytes) {
        throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} is ${actual.bytes} bytes but meta.json says ${stored.archiveBytes}`, { path: stored.path });
      }
      if (actual.sha256 !== stored.archiveSha256) {
        throw new SnapshotStoreError('corrupt', `snapshot ${id}: ${ARCHIVE_FILE} SHA-256 is ${actual.sha256} but meta.json says ${stored.archiveSha256}`, { path: stored.path });
      }
      return {
        ...stored,
        chunkSha256s: actual.chunkSha256s,
        createReadStream: (offset = 0): Readable => {
          if (!Number.isSafeInteger(offset) || offset < 0 || offset > stored.archiveBytes) {
            throw new SnapshotStoreError('invalid-argument', `offset ${offset} is outside 0..${stored.archiveBytes}`);
          }
          return createReadStream(stored.path, { start: offset, highWaterMark: READ_CHUNK_BYTES });
        },
        release,
      };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** latest opens the newest snapshot that verifies (skipping corrupt ones), or returns null. */
  async latest(): Promise<SnapshotHandle | null> {
    for (const s of await this.list()) {
      try {
        return await this.open(s.id);
      } catch (err) {
        if (err instanceof SnapshotStoreError && (err.code === 'corrupt' || err.code === 'not-found')) continue;
        throw err;
      }
    }
    return null;
  }

  /**
   * importArchive streams an archive from outside (a restore upload, a
   * follower's fetch from its leader) into the store: into a temporary file,
   * hashed and counted as it is written (SnapshotStoreError `too-large` past
   * maxBytes), fsynced, compared with expectedSha256 (`digest-mismatch`), then
   * fully validated with readArchive (any ArchiveError is passed on; the state
   * is read and discarded) and only then renamed into place. Importing an
   * archive already stored (same id, same SHA-256) returns the stored one; a
   * different archive with the same id is `already-exists`. Retention runs
   * afterwards but never removes the snapshot just imported.
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
    return this.exclusive(async () => {
      const tmpName = `import-${randomUUID()}${TMP_SUFFIX}`;
      const tmpDir = join(this.dir, tmpName);
      this.busyTmp.add(tmpName);
      let id: string;
      let stored: StoredSnapshot;
      try {
        await this.makeTmpDir(tmpDir);
        const archivePath = join(tmpDir, ARCHIVE_FILE);
        // One pass: the bytes are hashed, written to the temporary file and read as an
        // archive (every rule, every hash, and consumeState) as they arrive.
        const file = await openFileSink(archivePath);
        const counted = { bytes: 0, hash: createHash('sha256') };
        const limits = this.stateBytesMax === undefined ? {} : { stateBytesMax: this.stateBytesMax };
        let meta: ArchiveMeta;
        try {
          ({ meta } = await readArchive(
            Readable.from(teeToFile(source, file, maxBytes, counted), { objectMode: false, highWaterMark: READ_CHUNK_BYTES }),
            options.consumeState ?? (async () => undefined),
            limits,
          ));
          file.end();
          await finished(file);
        } catch (err) {
          file.destroy();
          throw err;
        }
        const archiveSha256 = counted.hash.digest('hex');
        if (expectedSha256 !== undefined && archiveSha256 !== expectedSha256.toLowerCase()) {
          throw new SnapshotStoreError('digest-mismatch', `the archive's SHA-256 is ${archiveSha256}, expected ${expectedSha256.toLowerCase()}`);
        }
        id = snapshotId(meta.term, meta.index, Date.parse(meta.createdAt));
        const finalDir = join(this.dir, id);
        if (await this.exists(finalDir)) {
          const existing = await this.load(id).catch(() => null);
          if (existing !== null && existing.archiveSha256 === archiveSha256) return existing;
          throw new SnapshotStoreError('already-exists', `a different snapshot ${id} is already stored`, { path: finalDir });
        }
        const storedMeta: StoredMeta = { ...meta, archiveSha256, archiveBytes: counted.bytes };
        await writeFileDurable(join(tmpDir, STORED_META_FILE), serializeStoredMeta(storedMeta));
        await fsyncDir(tmpDir);
        await rename(tmpDir, finalDir);
        await fsyncDir(this.dir);
        stored = this.describe(id, storedMeta);
      } catch (err) {
        source.destroy();
        throw err;
      } finally {
        await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
        this.busyTmp.delete(tmpName);
      }
      await this.applyRetention(id);
      return stored;
    });
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

  private describe(id: string, meta: StoredMeta): StoredSnapshot {
    const { archiveSha256, archiveBytes, ...archiveMeta } = meta;
    return { id, meta: archiveMeta, path: join(this.dir, id, ARCHIVE_FILE), archiveSha256, archiveBytes };
  }

  private async load(id: string): Promise<StoredSnapshot> {
    const metaPath = join(this.dir, id, STORED_META_FILE);
    let bytes: Buffer;
    try {
      const handle = await openFile(metaPath, 'r');
      try {
        const buf = Buffer.alloc(STORED_META_BYTES_MAX + 1);
        const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
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
    let meta: StoredMeta;
    try {
      meta = parseStoredMeta(bytes);
    } catch (err) {
      const why = err instanceof ArchiveError ? err.message : (err as Error).message;
      throw new SnapshotStoreError('corrupt', `snapshot ${id}: meta.json is invalid: ${why}`, { path: metaPath, cause: err });
    }
    return this.describe(id, meta);
  }

  private async exists(path: string): Promise<boolean> {
    try {
      await stat(path);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  private async makeTmpDir(tmpDir: string): Promise<void> {
    await rm(tmpDir, { recursive: true, force: true });
    await mkdir(tmpDir, { mode: DIR_MODE });
    await chmod(tmpDir, DIR_MODE);
  }

  /** applyRetention keeps the newest `retain` snapshots, `keep` (just written) and any pinned one. */
  private async applyRetention(keep: string): Promise<void> {
    const all = await this.list();
    for (const s of all.slice(this.retain)) {
      if (s.id === keep || this.pins.has(s.id)) continue;
      await this.removeDir(s.id);
    }
  }

  /** removeDir renames the snapshot away first (atomic), so a crash mid-delete leaves only a *.tmp leftover. */
  private async removeDir(id: string): Promise<void> {
    const doomed = `${id}.deleting-${randomUUID()}${TMP_SUFFIX}`;
    this.busyTmp.add(doomed);
    try {
      await rename(join(this.dir, id), join(this.dir, doomed));
      await fsyncDir(this.dir);
      await rm(join(this.dir, doomed), { recursive: true, force: true });
    } finally {
      this.busyTmp.delete(doomed);
    }
  }

  private pin(id: string): void {
    this.pins.set(id, (this.pins.get(id) ?? 0) + 1);
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

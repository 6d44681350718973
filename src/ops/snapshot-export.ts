import { randomUUID } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, rename, rm, statfs, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import type { Membership } from '../raft/types.js';
import { decodeStateRecords, encodeStateRecords, GUNZIP_CHUNK_BYTES, readArchive, SnapshotStore, SnapshotStoreError, type StateRecord } from '../snapshot/index.js';
import { fsyncDir, openFileSink, writeFileDurable } from '../snapshot/file-sink.js';
import { MemberGunzip } from '../snapshot/member-gunzip.js';
import { nodeSnapshotIo } from '../snapshot/snapshot-io.js';
import type { SnapshotHandle, StoredSnapshot } from '../snapshot/store.js';
import { UploadMemberCopy } from '../snapshot/upload-member-copy.js';
import { FORMAT_VERSION, type NodeStorage } from '../storage/types.js';
import { lockedInodes } from '../storage/proc-locks.js';
import { DirHandle, DirHandleError, FD_PATHS, readSmallFile, sameFile, type FileId } from './dir-handle.js';
import { NodeError } from '../node/errors.js';
import type { Logger } from '../node/logger.js';

/** MARKER_FILE marks a directory written by exportDirectory (so a later snapshot may replace it). */
export const MARKER_FILE = 'SNAPCOORD_SNAPSHOT';

/**
 * checkArchiveTarget refuses (NodeError `invalid`) a snapshot task's file
 * path where something other than a file (or a link, which the rename
 * replaces) sits, e.g. a directory: the task's file cannot be put there, so
 * the message says what to move.
 */
export async function checkArchiveTarget(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (st === null || st.isFile() || st.isSymbolicLink()) return;
  const what = st.isDirectory() ? 'a directory' : 'not a regular file';
  throw new NodeError('invalid', `${path} is ${what}; snapshot tasks write their file there (<snapshot-dir>/<db-name>.snapshot): move it away`);
}

/**
 * checkExportSpace refuses (NodeError `diskFull`, before anything is written)
 * an export of `neededBytes` into the directory `dir` (a path, or a handle's
 * /proc/self/fd path) that would leave less than `reserveBytes` free on its
 * file system (statfs: bavail * bsize): serve passes its --min-free-bytes, the
 * reserve the node keeps on its data dir's disk for what it must still
 * persist. A caller holding snapshots.write names a new target each time, so
 * without this exports went on until the file system was full (ENOSPC),
 * taking that reserve when a root shares the data dir's disk. A file system
 * that cannot be measured is not refused (the writes themselves will say).
 */
export async function checkExportSpace(dir: string, shown: string, neededBytes: number, reserveBytes: number, what: string): Promise<void> {
  const st = await statfs(dir).catch(() => null);
  if (st === null) return;
  const free = st.bavail * st.bsize;
  if (free < neededBytes + reserveBytes) {
    throw new NodeError(
      'diskFull',
      `${what} needs about ${neededBytes} bytes and must leave ${reserveBytes} free (--min-free-bytes), but ${free} bytes are free on ${shown}; nothing was written`,
    );
  }
}

/** STALE_COPY_MS: a temp copy untouched this long is the leftover of a copy the process died in (a copy under way writes it all the time). */
export const STALE_COPY_MS = 15 * 60_000;
/** COPY_TMP_NAME: exportArchiveFile's temp files, `.<archive name>.<uuid>.tmp`. */
const COPY_TMP_NAME = /^\.(.+)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tmp$/;

/**
 * removeStaleCopies removes from `dir` the temp files of exportArchiveFile
 * (`.<name>.<uuid>.tmp`) whose archive name `ours` accepts and that nothing
 * has written for `maxAgeMs` (by mtime): what a copy left when the process
 * died mid-way (killed, out of memory, power), which nothing else ever
 * removes and each restarted task adds to. A copy under way (another node
 * sharing the directory) writes its file all the time and is left alone.
 * Only regular files are removed; errors on one file are skipped. Returns
 * the names removed.
 */
export async function removeStaleCopies(dir: string, ours: (archiveName: string) => boolean, maxAgeMs = STALE_COPY_MS): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed; // no directory yet: nothing left over
  }
  const before = Date.now() - maxAgeMs;
  for (const name of names) {
    const archive = COPY_TMP_NAME.exec(name)?.[1];
    if (archive === undefined || !ours(archive)) continue;
    try {
      const st = await lstat(join(dir, name));
      if (!st.isFile() || st.mtimeMs > before) continue;
      await unlink(join(dir, name));
      removed.push(name);
    } catch {
      // gone meanwhile, or not ours to remove: left alone
    }
  }
  return removed;
}

/**
 * ExportCheck: how an export reads the stored archive. 'served': as
 * GetSnapshot serves it (an archive this process hashed itself on its
 * recorded hashes, hashing nothing; damage since is the periodic scrub's to
 * find). 'checked': every chunk hashed as copied and compared with the hash
 * recorded beside it, whoever hashed it before. A scheduled run's copy is
 * checked: retention then removes the older copies it replaces, so a byte
 * that rotted on the disk since its hashing (up to a scrub interval ago) would
 * otherwise be kept as the only copy, reported done with the recorded digest.
 */
export type ExportCheck = 'served' | 'checked';

/**
 * exportArchiveFile copies an opened snapshot archive to `path` atomically
 * (a temp file beside it, fsync, rename, fsync of the directory), read-only
 * (mode 0400). `progress` is called with the bytes copied so far. Refuses a
 * path where a directory sits (checkArchiveTarget). The bytes are read once,
 * as GetSnapshot serves them (SnapshotHandle.createServedReadStream): an
 * archive this process hashed itself is copied on its recorded hashes,
 * hashing nothing (the file's digest, in the task's details, is what
 * `snapshot inspect` and a restore check); any other is checked against the
 * chunk hashes recorded with it as it is copied: damage fails with
 * SnapshotStoreError `corrupt`, nothing left at `path`. With `check` every
 * archive is checked so (createChunkCheckedReadStream: each byte hashed once
 * as copied), trusted or not: for a copy that takes the place of others
 * (ExportCheck). A copy that would leave less than `reserveBytes` free on
 * its file system is refused before it starts (checkExportSpace).
 */
export async function exportArchiveFile(handle: SnapshotHandle, path: string, progress: (done: number) => void, check: ExportCheck = 'served', reserveBytes = 0): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await checkArchiveTarget(path);
  await checkExportSpace(dirname(path), dirname(path), handle.archiveBytes, reserveBytes, `the snapshot file ${path}`);
  const tmp = join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      progress(done);
      cb(null, chunk);
    },
  });
  try {
    // An archive this process has not hashed itself (found on the disk at start, not yet scrubbed) is checked chunk
    // by chunk as copied: a stored snapshot is served as it is when no write came since, so bytes damaged on disk
    // were copied as the run's archive, reported done with the recorded digest, and retention removed the good
    // copies. One it wrote or verified is copied on its recorded hashes (issue 15: each byte read once, hashed zero
    // times here); damage since is what the periodic scrub is for, except in a copy checked whatever its trust
    // (`check`: a scheduled run's, which retention keeps in place of the older ones).
    await pipeline(check === 'checked' ? handle.createChunkCheckedReadStream() : handle.createServedReadStream(), counter, await openFileSink(tmp));
    await chmod(tmp, 0o400);
    await rename(tmp, path);
    await fsyncDir(dirname(path));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * openAndExport opens a snapshot of the state now (`open`), tells `started`
 * (before any byte is copied) and copies it to `path` (exportArchiveFile);
 * returns the handle copied, which the caller releases. When the copy finds
 * the stored archive damaged (SnapshotStoreError `corrupt`: with no write
 * since, the stored snapshot is served as it is) and `damaged` quarantines
 * it (Node.quarantineDamagedSnapshot), a snapshot is opened again (built
 * now) and copied once more; a second failure is the caller's. Without
 * this, every run failed the same way until a write or a restart. `check`:
 * how the copy reads the archive (ExportCheck); `reserveBytes`: the free
 * space it leaves (checkExportSpace).
 */
export async function openAndExport(
  open: () => Promise<SnapshotHandle>,
  damaged: ((id: string) => Promise<boolean>) | undefined,
  path: string,
  started: (handle: SnapshotHandle) => void,
  progress: (done: number) => void,
  check: ExportCheck = 'served',
  reserveBytes = 0,
): Promise<SnapshotHandle> {
  for (let attempt = 1; ; attempt++) {
    const handle = await open();
    try {
      started(handle);
      await exportArchiveFile(handle, path, progress, check, reserveBytes);
      return handle;
    } catch (err) {
      handle.release();
      if (attempt === 1 && damaged !== undefined && err instanceof SnapshotStoreError && err.code === 'corrupt' && (await damaged(handle.id))) continue;
      throw err;
    }
  }
}

/** ExportStorage: what a directory export does with the new data dir's storage. */
export type ExportStorage = Pick<NodeStorage, 'checkIdentity' | 'installState' | 'compact' | 'save' | 'snapshotState' | 'close'>;

/**
 * DataDirStorage is the storage engine's side of a data directory, passed by
 * the process wiring (serve passes src/storage's rocksDataDir): the export
 * opens no concrete engine itself.
 */
export interface DataDirStorage {
  /** open opens (creating when new) the node storage of the data dir `dir`. Errors: the engine's. */
  open(dir: string): Promise<ExportStorage>;
  /**
   * lockHeld tells whether a process holds the engine's lock on the database
   * at `dir`: the probe used where /proc/locks cannot be read. It must not
   * throw for a directory that holds no database (false).
   */
  lockHeld(dir: string): Promise<boolean>;
}

/**
 * STALE_EXPORT_NAME: what exportDirectory leaves beside a target when the
 * process dies mid-way that may be removed: its build dir (mkdtemp of
 * EXPORT_TMP_PREFIX). The earlier export it moved aside
 * (EXPORT_OLD_PREFIX<uuid>) is never removed but by the export that moved it:
 * a crash between that move and the rename of the new build into place leaves
 * it the only copy (the target missing), and nothing tells which target it
 * was (review20: removed, then a failed build of the next export there, no
 * export was left at all). The operator puts it back or removes it.
 */
const STALE_EXPORT_NAME = /^\.snapcoord-export-[A-Za-z0-9]{6}$/;

/**
 * removeStaleExports removes from `parent` what directory exports cut short
 * by a crash left (STALE_EXPORT_NAME: a whole data dir each, never removed
 * otherwise, one more per crashed export): directories of this user whose
 * mtime and ctime (a rename sets it) are both older than `maxAgeMs` and
 * where no process holds a RocksDB lock (an export under way in another
 * process holds its copy's lock while it builds it). Links, other users'
 * entries and other names are left alone; an entry that cannot be checked
 * or removed is skipped. Returns the names removed.
 */
export async function removeStaleExports(parent: DirHandle, lockHeld: DataDirStorage['lockHeld'], maxAgeMs = STALE_COPY_MS): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(parent.path());
  } catch {
    return removed;
  }
  const before = Date.now() - maxAgeMs;
  const uid = process.getuid?.();
  for (const name of names) {
    if (!STALE_EXPORT_NAME.test(name)) continue;
    try {
      const path = parent.path(name);
      const st = await lstat(path);
      if (!st.isDirectory() || Math.max(st.mtimeMs, st.ctimeMs) > before || (uid !== undefined && st.uid !== uid)) continue;
      if (await dataDirInUse(path, lockHeld)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // gone meanwhile, or not ours to remove: left alone
    }
  }
  return removed;
}

export interface DirectoryExport {
  /** storage: opens the copy's storage and probes engine locks (see DataDirStorage). */
  readonly storage: DataDirStorage;
  readonly nodeId: string;
  readonly clusterId: string;
  /** selfAddress: this node's gRPC address, the one member of the copy's membership. */
  readonly selfAddress: string;
  readonly version: string;
  /** staleExportMs: leftovers of crashed exports beside the target older than this are removed (removeStaleExports; default STALE_COPY_MS). */
  readonly staleExportMs?: number;
  /** log: where an export that succeeded with a warning (exportDirectory's answer) is also logged. */
  readonly log?: Logger;
  /**
   * reserveBytes: the free space an export must leave on the target's file system (serve: --min-free-bytes;
   * default 0): one that would not is refused before it is built (checkExportSpace, NodeError `diskFull`).
   */
  readonly reserveBytes?: number;
}

/**
 * SnapshotTarget names a directory snapshot's target as the API checked it:
 * a trusted root (a real path) and the plain names below it, the last being
 * the target's own name. `path` is the two joined, for messages and answers.
 */
export interface SnapshotTarget {
  readonly root: string;
  readonly names: readonly string[];
  readonly path: string;
}

/** MARKER_BYTES_MAX: the largest marker file read. */
const MARKER_BYTES_MAX = 1 << 20;
/** TREE_ENTRIES_MAX / TREE_DEPTH_MAX: bounds of the walk over an existing target (an export holds a few dozen files). */
const TREE_ENTRIES_MAX = 10_000;
const TREE_DEPTH_MAX = 8;
const EXPORT_TMP_PREFIX = '.snapcoord-export-';
const EXPORT_OLD_PREFIX = '.snapcoord-old-';

/** TreeEntry: one entry of a directory tree: relative path, kind (d directory, f file, l link, o other) and size in bytes. */
type TreeEntry = readonly [string, 'd' | 'f' | 'l' | 'o', number];

interface Tree {
  readonly entries: TreeEntry[];
  /** locks: the inodes of RocksDB LOCK files in it, and the directories that hold them. */
  readonly lockInodes: bigint[];
  readonly lockDirs: string[];
}

/**
 * treeOf walks `dir` (a path through a DirHandle) without following links:
 * every entry but the top-level marker, sorted; null when it holds more than
 * TREE_ENTRIES_MAX entries or is deeper than TREE_DEPTH_MAX (not an export).
 */
async function treeOf(dir: string): Promise<Tree | null> {
  const entries: TreeEntry[] = [];
  const lockInodes: bigint[] = [];
  const lockDirs: string[] = [];
  const walk = async (rel: string, depth: number): Promise<boolean> => {
    if (depth > TREE_DEPTH_MAX) return false;
    const here = rel === '' ? dir : `${dir}/${rel}`;
    for (const e of await readdir(here, { withFileTypes: true })) {
      const relPath = rel === '' ? e.name : `${rel}/${e.name}`;
      if (rel === '' && e.name === MARKER_FILE) continue;
      if (entries.length >= TREE_ENTRIES_MAX) return false;
      const st = await lstat(`${dir}/${relPath}`, { bigint: true });
      const kind = st.isSymbolicLink() ? 'l' : st.isDirectory() ? 'd' : st.isFile() ? 'f' : 'o';
      entries.push([relPath, kind, kind === 'f' ? Number(st.size) : 0]);
      if (kind === 'f' && e.name === 'LOCK') {
        lockInodes.push(st.ino);
        lockDirs.push(rel);
      }
      if (kind === 'd' && !(await walk(relPath, depth + 1))) return false;
    }
    return true;
  };
  if (!(await walk('', 0))) return null;
  entries.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  return { entries, lockInodes, lockDirs };
}

function sameTree(a: readonly TreeEntry[], b: readonly TreeEntry[]): boolean {
  return a.length === b.length && a.every((e, i) => e[0] === b[i]?.[0] && e[1] === b[i]?.[1] && e[2] === b[i]?.[2]);
}

/**
 * dataDirLockHeld tells whether any database of `tree` (under `dir`) is
 * open: by its LOCK file's inode in /proc/locks (Linux; this process's own
 * locks included; an inode of another file system with the same number
 * counts too, which only ever refuses), else by `lockHeld` of each database
 * directory (DataDirStorage.lockHeld: a probe that cannot see a database
 * this process holds under another name). Linux is the platform this
 * guarantee is made for.
 */
export async function dataDirLockHeld(dir: string, tree: Pick<Tree, 'lockInodes' | 'lockDirs'>, lockHeld: DataDirStorage['lockHeld']): Promise<boolean> {
  const locked = await lockedInodes();
  if (locked !== null) return tree.lockInodes.some((ino) => locked.has(ino));
  for (const rel of tree.lockDirs) {
    if (await lockHeld(rel === '' ? dir : `${dir}/${rel}`)) return true;
  }
  return false;
}

/**
 * dataDirInUse tells whether a process holds the lock of any database in
 * the directory `dir` (see dataDirLockHeld); a tree too large to walk counts
 * as in use.
 */
export async function dataDirInUse(dir: string, lockHeld: DataDirStorage['lockHeld']): Promise<boolean> {
  const tree = await treeOf(dir);
  return tree === null || (await dataDirLockHeld(dir, tree, lockHeld));
}

/** ExistingTarget: what was found at the target's name before the export: that directory's identity and tree. */
interface ExistingTarget {
  readonly id: FileId;
  readonly tree: Tree;
}

function refuse(message: string): NodeError {
  return new NodeError('invalid', message);
}

/**
 * inspectTarget decides whether the entry `name` of `parent` may be
 * replaced: absent (null), or a directory of this user that is empty, or
 * that holds a snapcoord export (its marker) whose files are exactly those
 * the export wrote (no node has opened it since) and whose RocksDB locks no
 * process holds. Anything else is refused (NodeError `invalid`, saying why).
 */
async function inspectTarget(parent: DirHandle, name: string, shown: string, lockHeld: DataDirStorage['lockHeld']): Promise<ExistingTarget | null> {
  const st = await lstat(parent.path(name), { bigint: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (st === null) return null;
  if (st.isSymbolicLink()) throw refuse(`snapshot_path ${shown} is a symbolic link`);
  if (!st.isDirectory()) throw refuse(`snapshot_path ${shown} exists and is not a directory`);
  const uid = process.getuid?.();
  if (uid !== undefined && Number(st.uid) !== uid) throw refuse(`snapshot_path ${shown} belongs to another user (uid ${st.uid}); refusing to replace it`);
  let dir: DirHandle;
  try {
    dir = await parent.openChild(name);
  } catch (err) {
    if (err instanceof DirHandleError) throw refuse(`snapshot_path ${shown}: ${err.message}`);
    throw err;
  }
  try {
    if (!sameFile(dir.id, { dev: st.dev, ino: st.ino })) throw refuse(`snapshot_path ${shown} changed while it was being checked`);
    const tree = await treeOf(dir.path());
    if (tree === null) throw refuse(`snapshot_path ${shown} holds too many files to be a snapcoord snapshot; refusing to overwrite it`);
    const marker = await readSmallFile(dir.path(MARKER_FILE), MARKER_BYTES_MAX);
    if (tree.entries.length === 0 && marker === null) return { id: dir.id, tree };
    if (marker === null) throw refuse(`snapshot_path ${shown} is not empty and holds no earlier snapcoord snapshot; refusing to overwrite it`);
    if (await dataDirLockHeld(dir.path(), tree, lockHeld)) {
      throw refuse(`snapshot_path ${shown} is in use as a data dir (a process holds its RocksDB lock); refusing to replace it`);
    }
    let files: unknown;
    try {
      files = (JSON.parse(marker.toString('utf8')) as { files?: unknown }).files;
    } catch {
      files = undefined;
    }
    if (!Array.isArray(files) || !sameTree(files as TreeEntry[], tree.entries)) {
      throw refuse(
        `snapshot_path ${shown} has been used as a data dir since snapcoord exported it (its files are not the ones the export wrote); ` +
          'refusing to replace it: choose another path, or remove it if nothing there is needed',
      );
    }
    return { id: dir.id, tree };
  } finally {
    await dir.close();
  }
}

/**
 * exportDirectory writes, at `target`, a data directory that `snapcoord
 * serve --data-dir <target>` starts from: the snapshot's state installed, the
 * log based at the snapshot, the snapshot itself, and a marker listing the
 * files written. The copy is a one-node cluster (this node, at its address):
 * start it alone, then add members.
 *
 * Safety (the target comes from outside): the target's parent is opened
 * from the root one name at a time, never through a symlink (DirHandle), and
 * every later step goes through that handle: the copy is built in a fresh
 * temp directory inside it, then swapped in by rename. What sits at the
 * target already is replaced only if it is an empty directory or an earlier
 * export that no node has used since (its files are still exactly the listed
 * ones, no process holds its RocksDB lock), checked before the build and
 * again right before and after it is moved aside (same inode, same files,
 * no lock; else it is put back). Errors: NodeError `invalid` for every
 * refusal, saying why; I/O errors pass through. Nothing is left behind on
 * failure but the target as it was; what a crash mid-way left beside the
 * target is removed by a later export there (removeStaleExports).
 * Resolves with the warnings of an export that is in place (also logged to
 * opts.log): the earlier export moved aside that could not be removed after
 * the swap (named; it waits for an operator, as after a crash in that window).
 */
export async function exportDirectory(handle: SnapshotHandle, target: SnapshotTarget, opts: DirectoryExport): Promise<string[]> {
  const name = target.names.at(-1);
  const lockHeld = (dir: string): Promise<boolean> => opts.storage.lockHeld(dir);
  if (name === undefined) throw refuse('snapshot_path names no directory');
  let parent: DirHandle;
  try {
    parent = await DirHandle.openBeneath(target.root, target.names.slice(0, -1));
  } catch (err) {
    if (err instanceof DirHandleError) throw refuse(`snapshot_path ${target.path}: ${err.message}`);
    throw err;
  }
  try {
    const existing = await inspectTarget(parent, name, target.path, lockHeld);
    // What exports a crash cut short left here: each a whole data dir, never removed otherwise.
    await removeStaleExports(parent, lockHeld, opts.staleExportMs);
    // The copy holds the archive and the state installed from it (up to twice over while RocksDB's WAL holds it).
    await checkExportSpace(parent.path(), dirname(target.path), handle.archiveBytes + 2 * handle.meta.stateBytes, opts.reserveBytes ?? 0, `a directory snapshot at ${target.path}`);
    const tmp = await mkdtemp(parent.path(EXPORT_TMP_PREFIX));
    try {
      if (!FD_PATHS) await parent.verify();
      await buildDataDir(handle, tmp, opts);
      const tree = await treeOf(tmp);
      if (tree === null) throw new Error(`the export in ${tmp} holds more than ${TREE_ENTRIES_MAX} files`);
      const { index, term } = handle.meta;
      const marker = { index, term, digest: handle.archiveSha256, nodeId: opts.nodeId, clusterId: opts.clusterId, createdAt: new Date().toISOString(), files: tree.entries };
      await writeFileDurable(`${tmp}/${MARKER_FILE}`, Buffer.from(`${JSON.stringify(marker)}\n`));
      await fsyncDir(tmp);
      if (!FD_PATHS) await parent.verify();
      const left = await swapIn(parent, name, tmp, existing, target.path, lockHeld);
      const warnings: string[] = [];
      if (left !== null) {
        // Named as the operator sees them: the handle's own path (/proc/self/fd/N) replaced by the target's parent.
        const shownParent = dirname(target.path);
        const aside = join(shownParent, basename(left.path));
        const why = left.err.message.split(`${parent.path()}/`).join(`${shownParent}/`);
        warnings.push(`snapshot_path ${target.path} holds the new snapshot, but the earlier one moved aside to ${aside} could not be removed (${why}); remove it by hand`);
        opts.log?.warn({ path: target.path, movedAside: aside, err: why }, 'directory export in place; the earlier export moved aside could not be removed');
      }
      return warnings;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  } finally {
    await parent.close();
  }
}

/**
 * swapIn renames `tmp` to `name` in `parent`, first moving aside (and at the end removing) what `existing` checked,
 * re-checked around the move. Resolves null, or with the moved-aside copy and why its removal failed: the swap is
 * done by then (the new export in place, durable), so that is no failure of the export.
 */
async function swapIn(parent: DirHandle, name: string, tmp: string, existing: ExistingTarget | null, shown: string, lockHeld: DataDirStorage['lockHeld']): Promise<{ readonly path: string; readonly err: Error } | null> {
  const at = parent.path(name);
  if (existing === null) {
    // rename(2) may replace only an empty directory: anything that appeared meanwhile makes it fail.
    await rename(tmp, at);
    await fsyncDir(parent.path());
    return null;
  }
  const now = await inspectTarget(parent, name, shown, lockHeld);
  if (now === null || !sameFile(now.id, existing.id) || !sameTree(now.tree.entries, existing.tree.entries)) {
    throw refuse(`snapshot_path ${shown} changed while the snapshot was being written; refusing to replace it`);
  }
  const old = parent.path(`${EXPORT_OLD_PREFIX}${randomUUID()}`);
  await rename(at, old);
  const putBack = async (why: string): Promise<never> => {
    await rename(old, at).catch(() => undefined);
    throw refuse(`snapshot_path ${shown} ${why}; refusing to replace it`);
  };
  const moved = await lstat(old, { bigint: true });
  if (moved.isSymbolicLink() || !sameFile({ dev: moved.dev, ino: moved.ino }, existing.id)) await putBack('changed while it was being replaced');
  if (await dataDirLockHeld(old, existing.tree, lockHeld)) await putBack('was opened as a data dir while it was being replaced');
  try {
    await rename(tmp, at);
  } catch (err) {
    await rename(old, at).catch(() => undefined);
    throw err;
  }
  await fsyncDir(parent.path());
  try {
    await rm(old, { recursive: true, force: true });
    return null;
  } catch (err) {
    return { path: old, err: err instanceof Error ? err : new Error(String(err)) };
  }
}

/** EXPORT_COPY_MEMBERS_MAX: the stored archive's state members queued for the export's copy of it before the read waits (UploadMemberCopy). */
const EXPORT_COPY_MEMBERS_MAX = 4;

/**
 * buildDataDir fills the empty directory `dir` with a data dir holding the snapshot's state (see exportDirectory).
 *
 * The stored archive is read once, as GetSnapshot serves it (createServedReadStream: an archive this process hashed
 * itself on its recorded hashes, any other checked chunk by chunk), through a MemberGunzip that checks every gzip
 * member's CRC-32 (so state.bin is not hashed again: skipStateDigest). Its records are installed, and its snapshot in
 * the copy is that same archive's state members, copied compressed as they are (UploadMemberCopy with no changed
 * range, createFromMembers): only meta.json (the copy's one-node membership) and SHA256SUMS are written anew, and
 * state.bin's digest is the one the stored SHA256SUMS declares (the same bytes). Before (issue 15), the copy's snapshot
 * was built again from the installed state: every record read back, encoded, hashed and gzipped (level 6) on the
 * main thread and the threadpool. An archive whose members do not lie that way (another writer's layout: the first
 * member does not end where state.bin begins, a member is not whole records) is still built from the installed state.
 */
async function buildDataDir(handle: SnapshotHandle, dir: string, opts: DirectoryExport): Promise<void> {
  const membership: Membership = { voters: [opts.nodeId], learners: [], addresses: { [opts.nodeId]: opts.selfAddress } };
  const { index, term } = handle.meta;
  const storage = await opts.storage.open(dir);
  try {
    await storage.checkIdentity({ nodeId: opts.nodeId, clusterId: opts.clusterId, formatVersion: FORMAT_VERSION }, { createIfNew: true });
    const store = await SnapshotStore.open(`${dir}/snapshots/store`, { retain: 2, snapcoordVersion: opts.version });
    const c: { members: UploadMemberCopy | null; copying: Promise<StoredSnapshot> | null } = { members: null, copying: null };
    const gunzip = new MemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: true, onMember: (m) => c.members?.take(m) });
    let read: { readonly declaredStateSha256: string };
    try {
      read = await readArchive(
        handle.createServedReadStream(),
        async (meta, state, _verified, where) => {
          let counted: (batch: readonly StateRecord[]) => void = () => undefined;
          if (gunzip.headBytes === where.stateTarOffset) {
            const { level, blockBytes } = store.blockGzip;
            const members = new UploadMemberCopy({
              stateTarOffset: where.stateTarOffset,
              stateBytes: meta.stateBytes,
              stateKeys: meta.stateKeys,
              changed: null,
              declaredStateSha256: true,
              membersMax: EXPORT_COPY_MEMBERS_MAX,
              gzipLevel: level,
              gzipBlockBytes: blockBytes,
              gzipAdaptive: true,
              io: nodeSnapshotIo,
            });
            c.members = members;
            c.copying = store.createFromMembers({ index, term, membership }, members.produce);
            // A copy that fails (or ends) before reading everything never holds the install up.
            const abandon = (): void => members.abandon();
            c.copying.then(abandon, abandon);
            counted = (batch) => void members.write(batch);
          } else {
            gunzip.stopReporting();
          }
          await storage.installState(countedBatches(decodeStateRecords(state), counted), { appliedIndex: index, membership });
        },
        { skipStateDigest: true, gunzip },
      );
    } catch (err) {
      c.members?.fail(err as Error);
      await c.copying?.catch(() => undefined);
      throw err;
    }
    let copied = false;
    if (c.members !== null && c.copying !== null) {
      c.members.finish(read.declaredStateSha256);
      // A copy that failed (a member not of whole records): the snapshot is built from the installed state below.
      copied = await c.copying.then(
        () => true,
        (err: unknown) => {
          opts.log?.warn({ err: (err as Error).message }, 'directory export: the stored archive could not be copied; its snapshot is built from the installed state');
          return false;
        },
      );
    }
    await storage.compact({ index, term, membership });
    await storage.save({ hardState: { term, vote: '', commit: index } });
    if (copied) return;
    const reader = await storage.snapshotState();
    try {
      await store.create({ index, term, membership }, async (file) => {
        const records = encodeStateRecords(reader.batches());
        await pipeline(records, file);
        return { stateKeys: records.keys };
      });
    } finally {
      await reader.close();
    }
  } finally {
    await storage.close();
  }
}

/** countedBatches passes `batches` on, each also shown to `seen` first. */
async function* countedBatches(batches: AsyncIterable<StateRecord[]>, seen: (batch: readonly StateRecord[]) => void): AsyncGenerator<StateRecord[]> {
  for await (const batch of batches) {
    seen(batch);
    yield batch;
  }
}

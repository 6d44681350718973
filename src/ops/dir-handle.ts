/**
 * Directory handles for paths that came from outside (snapshot_path): a
 * directory is reached from a trusted root one component at a time, each
 * opened with O_DIRECTORY | O_NOFOLLOW through its parent's handle, so no
 * symlink is ever followed, and later work inside it goes through the open
 * handle, so swapping a component for a symlink afterwards cannot redirect it.
 *
 * Node has no openat(2). On Linux `/proc/self/fd/<fd>/<name>` is resolved by
 * the kernel through the open directory itself (the magic link is the
 * directory, not its name), which gives openat's semantics to every path
 * based call, RocksDB's included. Where /proc/self/fd is missing the handle
 * falls back to names, re-checked: each component is lstat'ed, opened with
 * O_NOFOLLOW and compared (device, inode) with what lstat saw, and
 * `verify()` re-walks the chain; that narrows the race but cannot close it.
 */
import { constants, existsSync } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** FD_PATHS: whether /proc/self/fd/<fd>/<name> resolves through an open directory here (Linux). */
export const FD_PATHS = process.platform === 'linux' && existsSync('/proc/self/fd');

/** DirHandleErrorCode: why a directory could not be opened safely. */
export type DirHandleErrorCode = 'missing' | 'symlink' | 'notDirectory' | 'moved' | 'invalidName';

/** DirHandleError: a refusal of DirHandle, with a message naming the path. */
export class DirHandleError extends Error {
  override readonly name = 'DirHandleError';
  constructor(
    readonly code: DirHandleErrorCode,
    message: string,
    readonly path: string,
  ) {
    super(message);
  }
}

/** FileId: a file's identity on this machine. */
export interface FileId {
  readonly dev: bigint;
  readonly ino: bigint;
}

/** sameFile: whether two identities name the same file. */
export function sameFile(a: FileId, b: FileId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

const OPEN_DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** checkName refuses a path component that is empty, '.', '..' or holds a '/' or NUL. */
export function checkName(name: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new DirHandleError('invalidName', `${JSON.stringify(name)} is not a plain file name`, name);
  }
}

/**
 * DirHandle is one open directory reached without following a symlink.
 * `path(name)` names an entry of it in a way that resolves through the
 * handle (Linux) or by name (elsewhere). Close it when done.
 */
export class DirHandle {
  private constructor(
    private readonly fh: FileHandle,
    /** shownPath: the path it was reached by, for messages. */
    readonly shownPath: string,
    readonly id: FileId,
    private readonly chain: readonly { readonly path: string; readonly id: FileId }[],
  ) {}

  /**
   * DirHandle.openBeneath opens `root` (a trusted directory: its own path
   * may hold symlinks, its last component may not), then each of `names`
   * inside the previous one, refusing a symlink (`symlink`), a
   * non-directory (`notDirectory`), a missing one (`missing`), or one that
   * changed between lstat and open (`moved`, fallback only).
   */
  static async openBeneath(root: string, names: readonly string[]): Promise<DirHandle> {
    for (const n of names) checkName(n);
    let dir = await DirHandle.openAt(null, root, root);
    try {
      for (const name of names) {
        const next = await dir.openChild(name);
        await dir.close();
        dir = next;
      }
      return dir;
    } catch (err) {
      await dir.close();
      throw err;
    }
  }

  /** openChild opens the directory `name` inside this one, refusing a symlink or a non-directory. */
  async openChild(name: string): Promise<DirHandle> {
    checkName(name);
    return DirHandle.openAt(this, name, join(this.shownPath, name));
  }

  private static async openAt(parent: DirHandle | null, name: string, shown: string): Promise<DirHandle> {
    const path = parent === null ? name : parent.path(name);
    let before: FileId | null = null;
    if (!FD_PATHS || parent === null) {
      const st = await lstat(path, { bigint: true }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') throw new DirHandleError('missing', `${shown} does not exist`, shown);
        throw err;
      });
      if (st.isSymbolicLink()) throw new DirHandleError('symlink', `${shown} is a symbolic link`, shown);
      if (!st.isDirectory()) throw new DirHandleError('notDirectory', `${shown} is not a directory`, shown);
      before = { dev: st.dev, ino: st.ino };
    }
    let fh: FileHandle;
    try {
      fh = await open(path, OPEN_DIR_FLAGS);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new DirHandleError('missing', `${shown} does not exist`, shown);
      if (code === 'ELOOP') throw new DirHandleError('symlink', `${shown} is a symbolic link`, shown);
      if (code === 'ENOTDIR') throw new DirHandleError('notDirectory', `${shown} is not a directory`, shown);
      throw err;
    }
    try {
      const st = await fh.stat({ bigint: true });
      const id = { dev: st.dev, ino: st.ino };
      if (before !== null && !sameFile(before, id)) throw new DirHandleError('moved', `${shown} changed while it was being opened`, shown);
      const chain = [...(parent?.chain ?? []), { path: parent === null ? name : join(parent.shownPath, name), id }];
      return new DirHandle(fh, shown, id, chain);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** path names `name` inside this directory (the directory itself without a name), through the handle where the platform allows. */
  path(name?: string): string {
    if (name !== undefined) checkName(name);
    const base = FD_PATHS ? `/proc/self/fd/${this.fh.fd}` : this.shownPath;
    return name === undefined ? base : `${base}/${name}`;
  }

  /**
   * verify re-walks the names this directory was reached by and refuses
   * (`moved`) when any of them is no longer the directory opened. Through
   * /proc/self/fd nothing depends on the names, so this only reports.
   */
  async verify(): Promise<void> {
    for (const c of this.chain) {
      const st = await lstat(c.path, { bigint: true }).catch(() => null);
      if (st === null || st.isSymbolicLink() || !sameFile(c.id, { dev: st.dev, ino: st.ino })) {
        throw new DirHandleError('moved', `${c.path} was replaced while a snapshot was being written`, c.path);
      }
    }
  }

  /** stat of the open directory. */
  async stat(): Promise<FileId & { uid: number; mode: number }> {
    const st = await this.fh.stat({ bigint: true });
    return { dev: st.dev, ino: st.ino, uid: Number(st.uid), mode: Number(st.mode) };
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

/**
 * readSmallFile reads the regular file `path` without following a final
 * symlink, refusing (null) anything that is not a regular file or is larger
 * than `bytesMax`.
 */
export async function readSmallFile(path: string, bytesMax: number): Promise<Buffer | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > bytesMax) return null;
    const buf = await fh.readFile();
    return buf.length > bytesMax ? null : buf;
  } finally {
    await fh.close();
  }
}


/**
 * tightenDataDir: a node's data directory is private to its owner, as etcd
 * keeps its own (0700 directories, 0600 files), also when the directory
 * already existed with a wider mode (an older version, a restored backup, a
 * `cp -r`, a volume created by someone's default umask).
 *
 * The caller (serve) calls it at start and warns with what changed; new
 * files stay private through `process.umask(0o077)` and the explicit modes
 * of the snapshot sink.
 */
import { chmod, lstat, mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** DATA_DIR_MODE: the mode of the data directory and of every directory in it. */
export const DATA_DIR_MODE = 0o700;
/** DATA_FILE_MODE: the mode of every file in the data directory. */
export const DATA_FILE_MODE = 0o600;
/** DEFAULT_DEPTH_MAX: how deep below the data directory tightenDataDir goes. */
export const DEFAULT_DEPTH_MAX = 16;
/** DEFAULT_ENTRIES_MAX: how many entries tightenDataDir looks at before it stops. */
export const DEFAULT_ENTRIES_MAX = 200_000;

export interface TightenOptions {
  /** depthMax: directories deeper than this below `dir` are tightened but not entered (default DEFAULT_DEPTH_MAX). */
  readonly depthMax?: number;
  /** entriesMax: stop after looking at this many entries (default DEFAULT_ENTRIES_MAX). */
  readonly entriesMax?: number;
}

export interface TightenResult {
  /** changed: the paths whose mode was narrowed (`dir` itself first when it was), in the order they were changed. */
  readonly changed: string[];
  /** failed: paths whose mode could not be read or changed (e.g. EPERM on a file owned by someone else), with the error. */
  readonly failed: Array<{ readonly path: string; readonly error: string }>;
  /** truncated: depthMax or entriesMax stopped the walk before it saw everything. */
  readonly truncated: boolean;
}

/**
 * privateMode: the mode `mode` narrows to. Group and other bits, set-id and
 * sticky bits are dropped; directories keep only the owner's bits
 * (0755 -> 0700), files keep only the owner's read and write (0644 and
 * 0755 -> 0600). Nothing is ever widened: a 0400 file stays 0400, a 0500
 * directory stays 0500.
 */
export function privateMode(mode: number, isDirectory: boolean): number {
  return mode & (isDirectory ? DATA_DIR_MODE : DATA_FILE_MODE);
}

/**
 * tightenDataDir narrows `dir` and everything in it to owner-only modes (see
 * privateMode): the directory 0700, every subdirectory 0700, every regular
 * file 0600. Symbolic links are never followed nor changed (a link pointing
 * out of the data directory leaves its target alone); sockets, FIFOs and
 * devices are left as they are. `dir` itself may be a symbolic link to the
 * real directory (the operator named it). Directories are tightened before
 * they are read, so once a directory is 0700 no other user can swap its
 * entries for links while the walk goes on. A missing `dir` is created 0700
 * (its missing parents too).
 *
 * Errors: rejects when `dir` exists and is not a directory, or cannot be
 * created or read. Problems below it (an entry that vanished, EPERM) are
 * collected in `failed`, not thrown.
 */
export async function tightenDataDir(dir: string, opts: TightenOptions = {}): Promise<TightenResult> {
  const depthMax = opts.depthMax ?? DEFAULT_DEPTH_MAX;
  const entriesMax = opts.entriesMax ?? DEFAULT_ENTRIES_MAX;
  const result: { -readonly [K in keyof TightenResult]: TightenResult[K] } = { changed: [], failed: [], truncated: false };

  let rootStat;
  try {
    rootStat = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dir, { recursive: true, mode: DATA_DIR_MODE });
    rootStat = await stat(dir);
  }
  if (!rootStat.isDirectory()) throw new Error(`data directory ${dir} is not a directory`);
  const rootMode = rootStat.mode & 0o7777;
  if (privateMode(rootMode, true) !== rootMode) {
    await chmod(dir, privateMode(rootMode, true));
    result.changed.push(dir);
  }

  // Depth-first, iteratively: (directory, its depth below `dir`).
  const stack: Array<readonly [string, number]> = [[dir, 0]];
  let seen = 0;
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as readonly [string, number];
    let names: string[];
    try {
      names = await readdir(current);
    } catch (err) {
      if (current === dir) throw err;
      result.failed.push({ path: current, error: (err as Error).message });
      continue;
    }
    names.sort();
    for (const name of names) {
      if (seen >= entriesMax) {
        result.truncated = true;
        return result;
      }
      seen++;
      const path = join(current, name);
      try {
        const st = await lstat(path);
        if (st.isSymbolicLink() || !(st.isDirectory() || st.isFile())) continue;
        const mode = st.mode & 0o7777;
        const want = privateMode(mode, st.isDirectory());
        // lstat then chmod: `current` is already owner-only, so only its owner could swap `name` for a link in between.
        if (want !== mode) {
          await chmod(path, want);
          result.changed.push(path);
        }
        if (st.isDirectory()) {
          if (depth + 1 < depthMax) stack.push([path, depth + 1]);
          else result.truncated = true;
        }
      } catch (err) {
        result.failed.push({ path, error: (err as Error).message });
      }
    }
  }
  return result;
}

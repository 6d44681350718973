import { lstat, mkdir, realpath, chmod, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';

import type { SnapshotTarget } from '../ops/snapshot-export.js';
import { invalidArgument } from './api-error.js';

/** SNAPSHOT_PATH_BYTES_MAX caps a snapshot_path. */
export const SNAPSHOT_PATH_BYTES_MAX = 4096;
/** SNAPSHOT_PATH_NAMES_MAX caps the number of components of a snapshot_path. */
export const SNAPSHOT_PATH_NAMES_MAX = 256;
/** TMP_ROOT_NAME: the one directory of the OS temp dir that is a default snapshot root. */
export const TMP_ROOT_NAME = 'snapcoord-snapshots';

/**
 * defaultSnapshotRoots: the allowed snapshot roots when none are given:
 * `./data/snapshots` (resolved against `cwd`) and `snapcoord-snapshots`
 * inside the OS temp dir (created 0700 by prepareRoots, refused if someone
 * else made it). Never the temp dir itself: it is shared by every local user
 * and holds other processes' data dirs.
 */
export function defaultSnapshotRoots(cwd: string = process.cwd()): string[] {
  return [resolve(cwd, 'data', 'snapshots'), join(tmpdir(), TMP_ROOT_NAME)];
}

export interface PrepareRootsOptions {
  /** warn receives a line for a root that is writable by every user (allowed, but see the README). */
  readonly warn?: (message: string) => void;
}

/**
 * prepareRoots creates the allowed snapshot roots if missing (mode 0700) and
 * returns their real paths. A root inside a directory every user may write
 * (the OS temp dir) must be a real directory (not a symlink) of this user,
 * writable by nobody else: one of ours that is wider is narrowed to 0700;
 * anything else throws (someone else may have made it). A root writable by
 * every user itself is allowed with a warning.
 */
export async function prepareRoots(roots: readonly string[], opts: PrepareRootsOptions = {}): Promise<string[]> {
  const out: string[] = [];
  const uid = process.getuid?.();
  for (const r of roots) {
    const root = resolve(r);
    await mkdir(root, { recursive: true, mode: 0o700 });
    const parentMode = (await stat(dirname(root))).mode;
    const st = await lstat(root);
    if ((parentMode & 0o002) !== 0) {
      if (st.isSymbolicLink() || !st.isDirectory()) {
        throw new Error(`snapshot root ${root} is not a directory of its own (a symlink?) inside the world-writable ${dirname(root)}; remove it or choose another --snapshot-root`);
      }
      if (uid !== undefined && st.uid !== uid) {
        throw new Error(`snapshot root ${root} inside the world-writable ${dirname(root)} belongs to uid ${st.uid}, not this user (${uid}); remove it or choose another --snapshot-root`);
      }
      if ((st.mode & 0o077) !== 0) await chmod(root, 0o700);
    }
    const real = await realpath(root);
    const realMode = (await stat(real)).mode;
    if ((realMode & 0o002) !== 0) {
      opts.warn?.(`snapshot root ${real} is writable by every user: snapshot_path targets there are safe from symlink tricks, but other users can take names first`);
    }
    out.push(real);
  }
  return out;
}

/** SnapshotPathOptions: what else a snapshot_path may not take. */
export interface SnapshotPathOptions {
  /** reserved: paths no directory snapshot may take or contain (the snapshot task's file, <snapshot-dir>/<db-name>.snapshot). */
  readonly reserved?: readonly string[];
}

function inside(path: string, root: string): string | null {
  const rel = relative(root, path);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return null;
  return rel;
}

/**
 * locateSnapshotPath checks a snapshot_path that came from outside and
 * returns where to write as a root and the plain names below it: an
 * absolute path without NUL bytes or '..', at most SNAPSHOT_PATH_BYTES_MAX
 * bytes, strictly inside one of the real snapshot roots (the part above the
 * root may go through symlinks, like /tmp on macOS; no component below it
 * may be a symlink, every one but the last must be an existing directory,
 * the last may be absent), and neither a reserved path nor holding one.
 * Every refusal is INVALID_ARGUMENT with a message saying why. This is the
 * early, friendly check: exportDirectory opens the same names again without
 * following links, so a swap after this check changes nothing.
 */
export async function locateSnapshotPath(raw: string, realRoots: readonly string[], opts: SnapshotPathOptions = {}): Promise<SnapshotTarget> {
  if (raw === '') throw invalidArgument('snapshot_path is empty');
  if (Buffer.byteLength(raw) > SNAPSHOT_PATH_BYTES_MAX) throw invalidArgument(`snapshot_path is longer than ${SNAPSHOT_PATH_BYTES_MAX} bytes`);
  if (raw.includes('\0')) throw invalidArgument('snapshot_path contains a NUL byte');
  const shown = JSON.stringify(raw);
  if (!isAbsolute(raw)) throw invalidArgument(`snapshot_path ${shown} is not an absolute path`);
  if (raw.split(/[\\/]+/).includes('..')) throw invalidArgument(`snapshot_path ${shown} contains '..'`);
  const wanted = resolve(raw);
  const parts = wanted.split(sep).filter((p) => p !== '');
  if (parts.length === 0 || parts.length > SNAPSHOT_PATH_NAMES_MAX) throw invalidArgument(`snapshot_path ${shown} names no directory`);
  // The root: a real root the path lies in by name, else the deepest ancestor whose real path is a root.
  let root: string | null = null;
  let names: string[] = [];
  for (const r of realRoots) {
    const rel = inside(wanted, r);
    if (rel !== null && (root === null || r.length > root.length)) {
      root = r;
      names = rel.split(sep);
    }
  }
  if (root === null) {
    for (let i = parts.length - 1; i >= 1 && root === null; i--) {
      const prefix = sep + parts.slice(0, i).join(sep);
      const real = await realpath(prefix).catch(() => null);
      if (real !== null && realRoots.includes(real)) {
        root = real;
        names = parts.slice(i);
      }
    }
  }
  if (root === null) throw invalidArgument(`snapshot_path ${shown} is outside the allowed snapshot roots (${realRoots.join(', ')})`);
  const path = join(root, ...names);
  for (const res of opts.reserved ?? []) {
    const r = resolve(res);
    const realR = join(await realpath(dirname(r)).catch(() => dirname(r)), r.slice(dirname(r).length + 1));
    for (const x of new Set([r, realR])) {
      if (x === path || inside(x, path) !== null) {
        throw invalidArgument(`snapshot_path ${shown} is where snapshot tasks write their file (${x}), or holds it; choose another path`);
      }
    }
  }
  // Walk below the root without following anything.
  let at = root;
  for (let i = 0; i < names.length; i++) {
    at = join(at, names[i] as string);
    const last = i === names.length - 1;
    const st = await lstat(at).catch(() => null);
    if (st === null) {
      if (last) break;
      throw invalidArgument(`the parent directory of snapshot_path ${shown} does not exist`);
    }
    if (st.isSymbolicLink()) throw invalidArgument(`snapshot_path ${shown}: ${at} is a symbolic link`);
    if (!last && !st.isDirectory()) throw invalidArgument(`snapshot_path ${shown}: ${at} is not a directory`);
  }
  return { root, names, path };
}

/** resolveSnapshotPath is locateSnapshotPath's path (the checked target as one string). */
export async function resolveSnapshotPath(raw: string, realRoots: readonly string[], opts: SnapshotPathOptions = {}): Promise<string> {
  return (await locateSnapshotPath(raw, realRoots, opts)).path;
}

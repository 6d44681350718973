import { lstat, mkdir, realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';

import { invalidArgument } from './api-error.js';

/** SNAPSHOT_PATH_BYTES_MAX caps a snapshot_path. */
export const SNAPSHOT_PATH_BYTES_MAX = 4096;

/** prepareRoots creates the allowed snapshot roots if missing and returns their real paths. */
export async function prepareRoots(roots: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const r of roots) {
    await mkdir(r, { recursive: true, mode: 0o700 });
    out.push(await realpath(r));
  }
  return out;
}

/**
 * resolveSnapshotPath checks a snapshot_path that came from outside and
 * returns where to write: an absolute path without NUL bytes, whose parent
 * directory exists, that (after resolving every symlink of its parent) lies
 * strictly inside one of the real snapshot roots, and that is not itself a
 * symlink. Every refusal is INVALID_ARGUMENT with a message saying why.
 */
export async function resolveSnapshotPath(raw: string, realRoots: readonly string[]): Promise<string> {
  if (raw === '') throw invalidArgument('snapshot_path is empty');
  if (Buffer.byteLength(raw) > SNAPSHOT_PATH_BYTES_MAX) throw invalidArgument(`snapshot_path is longer than ${SNAPSHOT_PATH_BYTES_MAX} bytes`);
  if (raw.includes('\0')) throw invalidArgument('snapshot_path contains a NUL byte');
  if (!isAbsolute(raw)) throw invalidArgument(`snapshot_path ${JSON.stringify(raw)} is not an absolute path`);
  if (raw.split(/[\\/]+/).includes('..')) throw invalidArgument(`snapshot_path ${JSON.stringify(raw)} contains '..'`);
  const wanted = resolve(raw);
  const name = basename(wanted);
  if (name === '' || name === '.' || name === '..') throw invalidArgument(`snapshot_path ${JSON.stringify(raw)} names no directory`);
  let parent: string;
  try {
    parent = await realpath(dirname(wanted));
  } catch {
    throw invalidArgument(`the parent directory of snapshot_path ${JSON.stringify(raw)} does not exist`);
  }
  const target = join(parent, name);
  const inside = realRoots.some((root) => target.startsWith(root.endsWith(sep) ? root : root + sep));
  if (!inside) {
    throw invalidArgument(`snapshot_path ${JSON.stringify(raw)} is outside the allowed snapshot roots (${realRoots.join(', ')})`);
  }
  const st = await lstat(target).catch(() => null);
  if (st?.isSymbolicLink() === true) throw invalidArgument(`snapshot_path ${JSON.stringify(raw)} is a symbolic link`);
  return target;
}

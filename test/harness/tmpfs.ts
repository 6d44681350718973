/**
 * A tmpfs a test mounts to fill a disk for real (ENOSPC from the kernel): it
 * needs root and a kernel that lets it mount; elsewhere the test is skipped
 * with one line on stderr saying why.
 */
import { execFile } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { sleep } from './until.js';

/** run: a command's promise (rejects with its stderr on a non-zero exit). */
export const run = promisify(execFile);

/**
 * mountTmpfs mounts a tmpfs with `options` (e.g. `size=48m,mode=0700`) on the
 * existing directory `mnt`; true once mounted. When it cannot (not Linux, not
 * root, no permission) it writes `<what> skipped: cannot mount a tmpfs here (why)`
 * to stderr and resolves false: the caller skips.
 */
export async function mountTmpfs(mnt: string, options: string, what: string): Promise<boolean> {
  try {
    if (process.platform !== 'linux') throw new Error(`not Linux (${process.platform})`);
    await run('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', mnt]);
    return true;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const why = (e.stderr?.trim() || e.message).split('\n')[0];
    process.stderr.write(`${what} skipped: cannot mount a tmpfs here (${why})\n`);
    return false;
  }
}

/** tmpfsUnderTemp makes a temporary dir (`prefix`) with `fs/` in it and mounts a tmpfs there (mountTmpfs); `mounted` false: skip. */
export async function tmpfsUnderTemp(prefix: string, options: string, what: string): Promise<{ readonly dir: string; readonly mnt: string; readonly mounted: boolean }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const mnt = join(dir, 'fs');
  await mkdir(mnt);
  return { dir, mnt, mounted: await mountTmpfs(mnt, options, what) };
}

/** unmountTmpfs unmounts `mnt`, retrying a busy one for ~2 s, then detaching it lazily. */
export async function unmountTmpfs(mnt: string): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const unmounted = await run('umount', [mnt]).then(
      () => true,
      () => false,
    );
    if (unmounted) return;
    await sleep(200);
  }
  await run('umount', ['-l', mnt]);
}

/** fillFs takes every free byte of the file system at `mnt` (a filler file, then small appends until ENOSPC); returns the filler. */
export async function fillFs(mnt: string): Promise<string> {
  const filler = join(mnt, 'filler');
  const st = await statfs(mnt);
  await writeFile(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 64 * 1024))).catch(() => undefined);
  for (;;) {
    try {
      await appendFile(filler, Buffer.alloc(4096));
    } catch {
      return filler;
    }
  }
}

/**
 * files: atomic, mode-exact writes of certificate and key files.
 */
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** KEY_FILE_MODE: private keys are readable by their owner only. */
export const KEY_FILE_MODE = 0o600;
/** CERT_FILE_MODE: certificates are public. */
export const CERT_FILE_MODE = 0o644;
/** TLS_DIR_MODE: the mode of a certificate directory this package creates. */
export const TLS_DIR_MODE = 0o700;

/**
 * ensureTlsDir creates `dir` (and its parents) when missing, the directory
 * itself with mode 0700 whatever the umask. An existing directory keeps its
 * mode. Throws the fs error (with its path) when it cannot be created.
 */
export async function ensureTlsDir(dir: string): Promise<void> {
  const first = await mkdir(dir, { recursive: true, mode: TLS_DIR_MODE });
  if (first !== undefined) await chmod(dir, TLS_DIR_MODE);
}

/**
 * writeFileAtomic writes `data` to `path` through a temp file in the same
 * directory (created with `mode`, chmod'ed to exactly `mode`, fsynced), then
 * renames it into place and fsyncs the directory, so a reader sees the old
 * file or the new one, never a part. With `exclusive` an existing `path` is
 * never replaced: the temp file is hard-linked to `path`, which fails with an
 * EEXIST error if it exists. The temp file is removed on every failure.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number, exclusive = false): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  let tmpExists = false;
  try {
    const fh = await open(tmp, 'wx', mode);
    tmpExists = true;
    try {
      await fh.chmod(mode);
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (exclusive) {
      await link(tmp, path);
      await unlink(tmp);
    } else {
      await rename(tmp, path);
    }
    tmpExists = false;
    await syncDir(dirname(path));
  } finally {
    if (tmpExists) await unlink(tmp).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename is done either way.
  } finally {
    await fh.close();
  }
}

/**
 * Key files (serve --api-key-file, `local`'s data/api-key, the client
 * commands' --api-key-file; the TLS private keys of serve and gateway): who
 * else may read them, and reading an API key file with a bound. A key file
 * readable by others is a loud warning, not a refusal (for API keys and TLS
 * keys alike: a container's mounted secret is often 0644).
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** KEY_FILE_EMPTY: readKeyFileLine's message for a file whose first line is blank. */
export const KEY_FILE_EMPTY = 'the first line is empty';

/** KEY_FILE_READ_MAX: how many bytes of a key file are read (its first line is the key). */
export const KEY_FILE_READ_MAX = 4096;

/**
 * keyFileExposure: a one-line warning when `path` (a file holding an API key,
 * links followed) may be read by its group or by others (any of 0o044, as
 * ssh refuses such private keys), naming the file, its mode and the fix;
 * null when only its owner may read it, or when it cannot be stat'ed (the
 * read reports that). The warning never holds the key.
 */
export function keyFileExposure(path: string, what = 'API key file'): string | null {
  return exposure(path, `${what} ${path}`, what === 'API key file' ? 'anyone who reads it holds the key' : 'anyone who reads it holds the keys');
}

/**
 * tlsKeyFileExposure: keyFileExposure for a TLS private key given as
 * `option` (`--peer-key`, `--key`, `--http-key`): whoever reads it can pose
 * as this node (a member on the peer plane, the server on the client plane
 * or the gateway). null when only its owner may read it or it cannot be stat'ed.
 */
export function tlsKeyFileExposure(path: string, option: string): string | null {
  return exposure(path, `TLS private key ${path} (${option})`, 'anyone who reads it can pose as this node');
}

/**
 * s3CredentialsFileExposure: keyFileExposure for an --s3-credentials-file
 * (its secret access key: whoever reads it can read, overwrite and delete
 * every archive the node uploads). null when only its owner may read it or
 * it cannot be stat'ed.
 */
export function s3CredentialsFileExposure(path: string): string | null {
  return exposure(path, `S3 credentials file ${path}`, "anyone who reads it holds the object store's access key");
}

/**
 * tlsKeyFileWarnings: tlsKeyFileExposure of each [option, path] whose path
 * is not '' (a path given by two options, as `local` gives one key for the
 * peer and the client plane, warned once, naming both).
 */
export function tlsKeyFileWarnings(keys: readonly (readonly [option: string, path: string])[]): string[] {
  const options = new Map<string, string[]>();
  for (const [option, path] of keys) if (path !== '') options.set(path, [...(options.get(path) ?? []), option]);
  const out: string[] = [];
  for (const [path, opts] of options) {
    const w = tlsKeyFileExposure(path, opts.join(', '));
    if (w !== null) out.push(w);
  }
  return out;
}

function exposure(path: string, what: string, consequence: string): string | null {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return null;
  }
  if ((mode & 0o044) === 0) return null;
  const who = (mode & 0o004) !== 0 ? 'every user of this machine' : "the file's group";
  return `${what} is readable by ${who} (mode ${mode.toString(8).padStart(4, '0')}): ${consequence}; chmod 600 ${path}`;
}

/** cannotRead: the Error of a key file that could not be opened or read ("cannot read: ENOENT"), naming no path. */
function cannotRead(err: unknown): Error {
  return new Error(`cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
}

/** openKeyFile: a read-only descriptor of `path`; errors as cannotRead. */
function openKeyFile(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (err) {
    throw cannotRead(err);
  }
}

/**
 * readKeyFileLine: the first line of `path`, trimmed, reading at most
 * KEY_FILE_READ_MAX bytes (a device or a huge file is not read whole).
 * Errors: an Error whose message names the problem (not the path, not the
 * key): "cannot read: ENOENT", "the first line is empty", "the first line is
 * longer than 4096 bytes".
 */
export function readKeyFileLine(path: string): string {
  const fd = openKeyFile(path);
  const buf = Buffer.alloc(KEY_FILE_READ_MAX);
  let n = 0;
  try {
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0 || n + got === buf.length) {
        n += got;
        break;
      }
      n += got;
      if (buf.subarray(0, n).includes(0x0a)) break;
    }
  } catch (err) {
    throw cannotRead(err);
  } finally {
    closeSync(fd);
  }
  const text = buf.subarray(0, n).toString('utf8');
  const nl = text.indexOf('\n');
  if (nl < 0 && n === buf.length) throw new Error(`the first line is longer than ${KEY_FILE_READ_MAX} bytes`);
  const key = (nl < 0 ? text : text.slice(0, nl)).trim();
  if (key === '') throw new Error(KEY_FILE_EMPTY);
  return key;
}

/** API_KEYS_FILE_BYTES_MAX: the largest --api-keys-file read (1 MiB: thousands of keys). */
export const API_KEYS_FILE_BYTES_MAX = 1024 * 1024;

/**
 * readApiKeysFile: the text of an --api-keys-file (a JSON array, as
 * --api-keys takes), at most API_KEYS_FILE_BYTES_MAX bytes (a device or a
 * huge file is refused, not read whole). Errors: an Error naming the problem
 * (not the path, never the keys): "cannot read: ENOENT", "larger than 1048576 bytes".
 */
export function readApiKeysFile(path: string): string {
  const fd = openKeyFile(path);
  const buf = Buffer.alloc(API_KEYS_FILE_BYTES_MAX + 1);
  let n = 0;
  try {
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n === buf.length) throw new Error(`larger than ${API_KEYS_FILE_BYTES_MAX} bytes`);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === undefined) throw err;
    throw cannotRead(err);
  } finally {
    closeSync(fd);
  }
  return buf.subarray(0, n).toString('utf8');
}

/**
 * adminKeyOf: the admin key of a process that takes one (the gateway):
 * `flag` (--api-key), else the first line of `file` (--api-key-file), else
 * `envKey`, else the first line of `envFile`, else ''. A key file others may
 * read is passed to `warn`. Errors: an Error naming the option and the file
 * (never the key) for both flags, an unreadable or empty file.
 */
export function adminKeyOf(
  src: { readonly flag?: string | undefined; readonly file?: string | undefined; readonly envKey?: string | undefined; readonly envFile?: string | undefined; readonly envFileName: string },
  warn: (message: string) => void,
): string {
  if (src.flag !== undefined && src.file !== undefined) throw new Error('api-key and api-key-file: give one of them');
  const fromFile = (what: string, path: string): string => {
    let key: string;
    try {
      key = readKeyFileLine(path);
    } catch (err) {
      throw new Error(`${what} ${path}: ${(err as Error).message}`, { cause: err });
    }
    const exposed = keyFileExposure(path);
    if (exposed !== null) warn(exposed);
    return key;
  };
  if (src.flag !== undefined) return src.flag;
  if (src.file !== undefined) return fromFile('api-key-file', src.file);
  if (src.envKey !== undefined) return src.envKey;
  if (src.envFile !== undefined && src.envFile !== '') return fromFile(src.envFileName, src.envFile);
  return '';
}

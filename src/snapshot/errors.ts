/**
 * Errors of src/snapshot. Each class carries a stable `code` for programs and a
 * `message` for people that names the problem (the entry, the field, the
 * limit, the path) and, where there is one, the underlying `cause`.
 */

/**
 * ArchiveErrorCode says why an archive was refused:
 * - `not-gzip`: the bytes do not start with a gzip header (or there are none);
 * - `corrupt-gzip`: the deflate stream or its CRC is damaged;
 * - `truncated`: the gzip stream or the tar inside it ends early;
 * - `trailing-garbage`: bytes after the end of the tar or of the gzip stream;
 * - `too-large`: gunzip output beyond its cap (decompression bomb), or
 *   meta.stateBytes beyond the caller's limit;
 * - `bad-header`: a tar header that is not a valid ustar header;
 * - `unsafe-path`: an entry name with '/', '\\', '..', a leading '/', or NUL;
 * - `link-entry`, `device-entry`, `directory-entry`, `fifo-entry`: an entry
 *   that is not a regular file;
 * - `long-name`: a pax or GNU long-name header, or a ustar name prefix;
 * - `unsupported-entry`: any other non-regular tar entry type;
 * - `unexpected-entry`: an entry other than meta.json, state.bin, SHA256SUMS
 *   in that order; `duplicate-entry`: one of them a second time;
 *   `missing-entry`: the tar ends before all three were seen;
 * - `member-too-large`: meta.json over 64 KiB or SHA256SUMS over 4 KiB;
 * - `size-mismatch`: state.bin's size differs from meta.stateBytes;
 * - `bad-meta`: meta.json is not valid JSON or breaks the schema;
 * - `bad-sums`: SHA256SUMS is malformed; `missing-hash`: it lacks a line;
 * - `hash-mismatch`: a member's SHA-256 differs from SHA256SUMS;
 * - `io`: the state file given to writeArchive changed or could not be read.
 */
export type ArchiveErrorCode =
  | 'not-gzip'
  | 'corrupt-gzip'
  | 'truncated'
  | 'trailing-garbage'
  | 'too-large'
  | 'bad-header'
  | 'unsafe-path'
  | 'link-entry'
  | 'device-entry'
  | 'directory-entry'
  | 'fifo-entry'
  | 'long-name'
  | 'unsupported-entry'
  | 'unexpected-entry'
  | 'duplicate-entry'
  | 'missing-entry'
  | 'member-too-large'
  | 'size-mismatch'
  | 'bad-meta'
  | 'bad-sums'
  | 'missing-hash'
  | 'hash-mismatch'
  | 'io';

/** ArchiveError: a snapshot archive was refused (reading) or could not be built (writing). */
export class ArchiveError extends Error {
  override readonly name = 'ArchiveError';
  readonly code: ArchiveErrorCode;

  constructor(code: ArchiveErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(`snapshot archive: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/**
 * StateFormatErrorCode: `truncated` (the stream ends inside a record),
 * `key-too-large` / `value-too-large` (a length beyond the limit),
 * `empty-key` (a record with a zero-length key); and, from
 * checkedStateRecords, `key-order` (a key not greater than the one before:
 * out of order or a duplicate), `count-mismatch` (more or fewer records, or
 * bytes, than meta.json declares).
 */
export type StateFormatErrorCode = 'truncated' | 'key-too-large' | 'value-too-large' | 'empty-key' | 'key-order' | 'count-mismatch';

/** StateFormatError: state.bin records that cannot be encoded or decoded. `offset` is the byte offset of the record. */
export class StateFormatError extends Error {
  override readonly name = 'StateFormatError';
  readonly code: StateFormatErrorCode;
  readonly offset: number;

  constructor(code: StateFormatErrorCode, message: string, offset: number) {
    super(`snapshot state: ${message} (record at byte ${offset})`);
    this.code = code;
    this.offset = offset;
  }
}

/**
 * SnapshotStoreErrorCode:
 * - `not-found`: no snapshot with that id;
 * - `invalid-argument`: a malformed id, offset, option or meta;
 * - `corrupt`: a stored snapshot fails its SHA-256 or size check, or its
 *   meta.json is unreadable;
 * - `digest-mismatch`: an imported archive differs from the expected SHA-256;
 * - `too-large`: an imported archive exceeds maxBytes;
 * - `already-exists`: a different snapshot with the same id is stored;
 * - `busy`: the snapshot is open (pinned) and cannot be removed now;
 * - `io`: the file system failed.
 */
export type SnapshotStoreErrorCode =
  | 'not-found'
  | 'invalid-argument'
  | 'corrupt'
  | 'digest-mismatch'
  | 'too-large'
  | 'already-exists'
  | 'busy'
  | 'io';

/** SnapshotStoreError: a SnapshotStore operation failed; `path` names the file or directory concerned. */
export class SnapshotStoreError extends Error {
  override readonly name = 'SnapshotStoreError';
  readonly code: SnapshotStoreErrorCode;
  readonly path: string;

  constructor(code: SnapshotStoreErrorCode, message: string, options: { path?: string; cause?: unknown } = {}) {
    super(`snapshot store: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path ?? '';
  }
}

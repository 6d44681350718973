/**
 * StorageErrorCode says what kind of failure a StorageError reports:
 * - `closed`: the store was used after close() (or while closing);
 * - `io`: the underlying engine (RocksDB, the file system) failed;
 * - `corrupt`: persisted bytes do not decode, or the log has a gap;
 * - `invalidArgument`: the caller broke the contract (non-contiguous entries,
 *   overwriting a compacted entry, applying with a gap, a bad range);
 * - `identityMismatch`: the data dir belongs to another node or cluster, or
 *   has no identity where one was required;
 * - `unknownFormat`: the data dir was written by a format this code does not know.
 */
export type StorageErrorCode =
  | 'closed'
  | 'io'
  | 'corrupt'
  | 'invalidArgument'
  | 'identityMismatch'
  | 'unknownFormat';

/**
 * StorageError is the one error class thrown by src/storage. `code` is
 * stable and meant for programs; `message` is meant for people and names the
 * path (data dir or database) involved whenever there is one; `cause` holds the
 * engine's own error when there is one.
 */
export class StorageError extends Error {
  override readonly name = 'StorageError';
  readonly code: StorageErrorCode;
  /** the data dir or database path concerned, '' for in-memory stores. */
  readonly path: string;

  constructor(code: StorageErrorCode, message: string, options: { path?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.path = options.path ?? '';
  }
}

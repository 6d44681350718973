/**
 * Durable file writing for the snapshot store: a Writable that writes to a new
 * file (mode 0600, refusing to overwrite) and fsyncs it before it finishes,
 * plus fsync of directories and small durable files.
 */
import { Writable } from 'node:stream';
import { nodeSnapshotIo, type SnapshotFile, type SnapshotIo } from './snapshot-io.js';

/** FILE_MODE: snapshot files are readable by their owner only (etcd #9976). */
export const FILE_MODE = 0o600;
/** DIR_MODE: snapshot directories are private to their owner. */
export const DIR_MODE = 0o700;

export interface FileSinkOptions {
  /** called just before the fsync at the end (a failpoint hook). */
  readonly beforeSync?: () => void;
}

/**
 * withPath names `path` in a system call error of a SnapshotFile (write, sync:
 * Node names no file in those, e.g. "ENOSPC: no space left on device,
 * write"), keeping its errno code. Other errors pass unchanged.
 */
export function withPath(err: unknown, path: string): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const e: NodeJS.ErrnoException = err;
  if (e.syscall === undefined || e.path !== undefined) return err;
  return Object.assign(new Error(`${e.message} '${path}'`, { cause: err }), { code: e.code, errno: e.errno, syscall: e.syscall, path });
}

async function writeAll(handle: SnapshotFile, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, null);
    offset += bytesWritten;
  }
}

/**
 * FileSink is a Writable over a freshly created file. It finishes only after
 * the data has been fsynced and the file closed; destroying it closes the file
 * (the caller removes the partial file). `bytes` counts what was written.
 */
export class FileSink extends Writable {
  bytes = 0;
  private handleClosed = false;

  constructor(
    private readonly handle: SnapshotFile,
    readonly path: string,
    private readonly options: FileSinkOptions,
  ) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.settle(
      writeAll(this.handle, chunk).then(() => {
        this.bytes += chunk.length;
      }),
      callback,
    );
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    const buffers = chunks.map((c) => c.chunk);
    const total = buffers.reduce((n, b) => n + b.length, 0);
    const work = (async () => {
      let { bytesWritten } = await this.handle.writev(buffers);
      // rare partial writev: write whatever is left plainly.
      if (bytesWritten < total) {
        const rest = Buffer.concat(buffers).subarray(bytesWritten);
        await writeAll(this.handle, rest);
        bytesWritten = total;
      }
      this.bytes += bytesWritten;
    })();
    this.settle(work, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const work = (async () => {
      this.options.beforeSync?.();
      await this.handle.sync();
      this.handleClosed = true;
      await this.handle.close();
    })();
    this.settle(work, callback);
  }

  /** settle calls back once `work` is done, with its error naming this sink's file. */
  private settle(work: Promise<void>, callback: (error?: Error | null) => void): void {
    work.then(
      () => callback(),
      (err: unknown) => callback(withPath(err, this.path)),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.handleClosed) {
      callback(error);
      return;
    }
    this.handleClosed = true;
    this.handle.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}

/** openFileSink creates `path` (which must not exist) with mode 0600 and returns a FileSink over it. */
export async function openFileSink(path: string, options: FileSinkOptions = {}, io: SnapshotIo = nodeSnapshotIo): Promise<FileSink> {
  const handle = await io.open(path, 'wx', FILE_MODE);
  try {
    await handle.chmod(FILE_MODE); // whatever the umask
  } catch (err) {
    await handle.close();
    throw err;
  }
  return new FileSink(handle, path, options);
}

/** writeFileDurable creates `path` (which must not exist) with mode 0600, writes `data` and fsyncs it. */
export async function writeFileDurable(path: string, data: Uint8Array, io: SnapshotIo = nodeSnapshotIo): Promise<void> {
  const handle = await io.open(path, 'wx', FILE_MODE);
  try {
    await handle.chmod(FILE_MODE);
    await writeAll(handle, data);
    await handle.sync();
  } catch (err) {
    throw withPath(err, path);
  } finally {
    await handle.close();
  }
}

/** fsyncDir makes a directory's entries (creations, renames, removals) durable. */
export async function fsyncDir(path: string, io: SnapshotIo = nodeSnapshotIo): Promise<void> {
  const handle = await io.open(path, 'r');
  try {
    await handle.sync();
  } catch (err) {
    throw withPath(err, path);
  } finally {
    await handle.close();
  }
}

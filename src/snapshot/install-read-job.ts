/**
 * The worker's side of an install read (install-read.ts): loaded by the
 * snapshot worker (state-digest-worker.ts) at its first install read only,
 * so a delta's digest worker does not load the store's modules.
 */
import { createHash } from 'node:crypto';
import { close, open, read } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';

import { readArchive } from './archive.js';
import { INSTALL_DECODE_OPTIONS, checkedStateRecords } from './state-format.js';
import { MemberTableRecorder } from './store.js';
import { nodeSnapshotIo } from './snapshot-io.js';
import { pack, postError, type InstallReadReply, type InstallReadRequest, type MemberTableFound } from './install-read.js';

/** READ_PIECE_BYTES: the file is read in pieces of this size (as SnapshotStore reads an archive). */
const READ_PIECE_BYTES = 1024 * 1024;

/** HashTap passes bytes through unchanged, counting them and (when asked) hashing them. */
class HashTap extends Transform {
  readonly #hash: ReturnType<typeof createHash> | null;
  bytes = 0;

  constructor(hash: boolean) {
    super({ highWaterMark: READ_PIECE_BYTES });
    this.#hash = hash ? createHash('sha256') : null;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash?.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  digest(): string | null {
    return this.#hash?.digest('hex') ?? null;
  }
}

/**
 * TailSource reads a file that is still being written, `totalBytes` long once
 * whole, in pieces of at most READ_PIECE_BYTES: only its first `avail` bytes
 * (raised by avail(), as the writer says they are written), waiting for more
 * when it has read them all, and ends after totalBytes. The file is opened
 * once, at the start (a rename of it meanwhile changes nothing).
 */
export class TailSource extends Readable {
  readonly #path: string;
  readonly #totalBytes: number;
  #fd: number | null = null;
  #pos = 0;
  #avail = 0;
  /** #waiting: a read asked for while everything written was read. */
  #waiting = false;

  constructor(path: string, totalBytes: number) {
    super({ highWaterMark: READ_PIECE_BYTES });
    this.#path = path;
    this.#totalBytes = totalBytes;
  }

  /** avail: the first `bytes` of the file are written (at most totalBytes; never lowered). */
  avail(bytes: number): void {
    this.#avail = Math.min(this.#totalBytes, Math.max(this.#avail, bytes));
    if (this.#waiting) {
      this.#waiting = false;
      this._read();
    }
  }

  override _construct(callback: (error?: Error | null) => void): void {
    open(this.#path, 'r', (err, fd) => {
      if (err === null) this.#fd = fd;
      callback(err);
    });
  }

  override _read(): void {
    if (this.#pos >= this.#totalBytes) {
      this.push(null);
      return;
    }
    if (this.#pos >= this.#avail) {
      this.#waiting = true;
      return;
    }
    const want = Math.min(READ_PIECE_BYTES, this.#avail - this.#pos);
    const piece = Buffer.allocUnsafe(want);
    read(this.#fd as number, piece, 0, want, this.#pos, (err, n) => {
      if (err !== null) {
        this.destroy(err);
        return;
      }
      if (n === 0) {
        this.destroy(new Error(`${this.#path}: ended at ${this.#pos} bytes, but ${this.#avail} were said to be written`));
        return;
      }
      this.#pos += n;
      this.push(n === want ? piece : piece.subarray(0, n));
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const fd = this.#fd;
    this.#fd = null;
    if (fd === null) callback(error);
    else close(fd, () => callback(error));
  }
}

/** InstallReadJob: one install read on this thread; credit() is called for each batch the main thread consumed. */
export interface InstallReadJob {
  /** credit: the main thread consumed a batch and gave its memory back (packed again for a later batch). */
  credit(buffer: ArrayBuffer | null): void;
  /** avail: a read of a file being written (tailBytes) may read its first `bytes`. */
  avail(bytes: number): void;
}

/**
 * runInstallRead reads `req.path` as install-read.ts says and posts what it
 * finds with `post` (a batch's bytes transferred); `noteGarbage` is told of
 * the bytes of each batch's pieces once packed. Never rejects: a failure is
 * posted (installError).
 */
export function runInstallRead(req: InstallReadRequest, post: (m: InstallReadReply, transfer?: ArrayBuffer[]) => void, noteGarbage: (bytes: number) => void): InstallReadJob {
  let credits = req.batchesAhead;
  let waiting: (() => void) | null = null;
  /** spare: batch memory given back, to pack the next batches into (at most batchesAhead of them). */
  const spare: ArrayBuffer[] = [];
  const job: InstallReadJob = {
    credit(buffer) {
      credits++;
      if (buffer !== null && spare.length < req.batchesAhead) spare.push(buffer);
      const w = waiting;
      waiting = null;
      w?.();
    },
    avail(bytes) {
      tail?.avail(bytes);
    },
  };
  const tail = req.tailBytes !== undefined ? new TailSource(req.path, req.tailBytes) : null;
  const run = async (): Promise<void> => {
    const recorder = req.recordMembers ? new MemberTableRecorder({ checkCrc: true, io: nodeSnapshotIo }) : null;
    const tap = new HashTap(req.hashWhole);
    const source = tail ?? nodeSnapshotIo.createReadStream(req.path, { start: 0, highWaterMark: READ_PIECE_BYTES });
    source.on('error', (err) => tap.destroy(err));
    tap.on('close', () => source.destroy());
    source.pipe(tap);
    let stateBytes = 0;
    let stateKeys = 0;
    const read = await readArchive(
      tap,
      async (meta, state, _verified, where) => {
        recorder?.stateBegins(meta, where);
        post({ t: 'installMeta', meta });
        for await (const batch of checkedStateRecords(state, meta, INSTALL_DECODE_OPTIONS)) {
          while (credits === 0) await new Promise<void>((resolve) => (waiting = resolve));
          credits--;
          const packed = pack(batch, spare.pop() ?? null);
          // state.bin's layout: as many bytes as the records take there.
          stateBytes += packed.length;
          stateKeys += batch.length;
          post({ t: 'installBatch', packed, records: batch.length }, [packed.buffer as ArrayBuffer]);
          // The gunzipped pieces these records were views of are dead now (about as many bytes as were packed).
          noteGarbage(packed.length);
        }
      },
      { io: nodeSnapshotIo, skipStateDigest: req.skipStateDigest, ...(recorder !== null ? { gunzip: recorder.gunzip } : {}) },
    );
    const members: MemberTableFound | null = recorder?.table(tap.bytes) ?? null;
    post({ t: 'installEnd', archiveBytes: tap.bytes, sha256: tap.digest(), stateSha256: read.stateSha256, members, stateBytes, stateKeys });
  };
  run().catch((err: unknown) => post({ t: 'installError', error: postError(err) }));
  return job;
}

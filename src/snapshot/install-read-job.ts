/**
 * The worker's side of an install read (install-read.ts): loaded by the
 * snapshot worker (state-digest-worker.ts) at its first install read only,
 * so a delta's digest worker does not load the store's modules.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

import { ArchiveScan, GUNZIP_CHUNK_BYTES, GzipHeadCheck, STATE_BYTES_MAX_DEFAULT, type ArchiveMeta } from './archive.js';
import { ArchiveError } from './errors.js';
import type { GzipMemberRead } from './member-gunzip.js';
import { SyncMemberGunzip } from './sync-member-gunzip.js';
import { INSTALL_DECODE_OPTIONS, checkedStateRecords } from './state-format.js';
import { MemberTableRecorder } from './store.js';
import { nodeSnapshotIo } from './snapshot-io.js';
import { pack, postError, type InstallReadReply, type InstallReadRequest, type MemberTableFound } from './install-read.js';

/** READ_PIECE_BYTES: the file is read in pieces of this size (as SnapshotStore reads an archive). */
const READ_PIECE_BYTES = 1024 * 1024;

/**
 * StreamFreeRead reads an archive as readArchive does (the same ArchiveScan
 * rules and refusals, MemberGunzip's gunzip run synchronously, GzipHeadCheck,
 * the bytes after the gzip stream, a missing state.bin), with no stream: the
 * file is read with blocking reads of READ_PIECE_BYTES into one buffer
 * (this is a worker thread), hashed there (when asked), gunzipped one piece
 * (GUNZIP_CHUNK_BYTES at most) at a time and each piece parsed at once;
 * state.bin's bytes go to statePieces(), which steps the read only when its
 * consumer asks for more (one gunzipped piece held at a time: the bound).
 * Why (issue 15, a follower's install of 256 MiB of random 4 KiB values,
 * perf by thread): the stream stack it replaces (a ReadStream, a hashing
 * Transform, MemberGunzip's inflaters on the threadpool, readArchive's
 * pipeline and state Readable) cost the worker ~0.5 s of stream callbacks,
 * promises and their garbage beside ~0.3 s of real work (SHA-256, inflate,
 * CRC-32, decoding), the threadpool's reads and inflates their wakeups, and
 * V8 ~0.3 s compiling that much code afresh in each worker. The install's
 * CPU went from 2.77-3.36 s to 2.27-2.52 s (docs/benchmarks.md, install31).
 * The records are then decoded and checked by checkedStateRecords, the
 * function the read on the main thread uses.
 */
export class StreamFreeRead {
  readonly scan: ArchiveScan;
  archiveBytes = 0;
  readonly #fd: number;
  readonly #hash: ReturnType<typeof createHash> | null;
  readonly #head = new GzipHeadCheck();
  readonly #gunzip: SyncMemberGunzip;
  readonly #buf: Buffer;
  #eof = false;
  #done = false;
  #closed = false;
  #meta: ArchiveMeta | null = null;
  #stateEnded = false;
  #pieces: Buffer[] = [];

  /** readBytes: the size of each read (default READ_PIECE_BYTES; a test's small reads split headers and trailers). */
  constructor(path: string, hashWhole: boolean, hashState: boolean, recorder: MemberTableRecorder | null, readBytes = READ_PIECE_BYTES) {
    this.#buf = Buffer.allocUnsafe(readBytes);
    this.#hash = hashWhole ? createHash('sha256') : null;
    this.#gunzip = new SyncMemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: true, ...(recorder !== null ? { onMember: (m: GzipMemberRead) => recorder.noteMember(m) } : {}) });
    this.scan = new ArchiveScan(STATE_BYTES_MAX_DEFAULT, hashState, {
      stateBegins: (meta) => {
        this.#meta = meta;
      },
      statePiece: (piece) => {
        this.#pieces.push(piece);
        return true;
      },
      stateEnds: () => {
        this.#stateEnded = true;
      },
    });
    this.#fd = openSync(path, 'r');
  }

  /** untilState: reads until state.bin begins; its meta (read and checked). Throws what readArchive would. */
  async untilState(): Promise<ArchiveMeta> {
    while (this.#meta === null) {
      if (!this.#step()) {
        this.#finish();
        throw new ArchiveError('missing-entry', 'the archive has no state.bin');
      }
    }
    return this.#meta;
  }

  /** statePieces: state.bin's bytes, read as they are asked for; ends with state.bin (throws what readArchive would meanwhile). */
  async *statePieces(): AsyncGenerator<Buffer> {
    for (;;) {
      const piece = this.#pieces.shift();
      if (piece !== undefined) {
        yield piece;
        continue;
      }
      if (this.#stateEnded) return;
      if (!this.#step()) this.#finish(); // throws: the input ended inside state.bin
    }
  }

  /** toEnd: reads the rest of the archive and checks it whole (the tar's end, both hashes, nothing after the gzip stream). */
  toEnd(): void {
    this.#pieces = [];
    while (this.#step()) this.#pieces = [];
    this.#finish();
  }

  /** digest: the whole archive's SHA-256 (hex) when asked for, once read whole; else null. */
  digest(): string | null {
    return this.#hash?.digest('hex') ?? null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#gunzip.close();
    closeSync(this.#fd);
  }

  /** #step: one gunzipped piece parsed, or the next read; false at the input's end. */
  #step(): boolean {
    const piece = this.#gunzip.next();
    if (piece !== null) {
      this.scan.count(piece.length);
      this.scan.write(piece, 0);
      return true;
    }
    if (this.#eof) return false;
    const n = readSync(this.#fd, this.#buf, 0, this.#buf.length, null);
    if (n === 0) {
      this.#eof = true;
      return false;
    }
    const chunk = this.#buf.subarray(0, n);
    this.archiveBytes += n;
    this.#hash?.update(chunk);
    this.#head.feed(chunk);
    this.#gunzip.push(chunk);
    return true;
  }

  /** #finish: the input ended: the checks of readArchive's end, in its order (the gzip stream's start and end, the tar's, the bytes after). */
  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#head.end();
    this.#gunzip.end();
    this.scan.finish();
    if (this.#gunzip.bytesWritten !== this.#head.bytes) {
      throw new ArchiveError('trailing-garbage', `${this.#head.bytes - this.#gunzip.bytesWritten} bytes after the end of the gzip stream`);
    }
  }
}

/** InstallReadJob: one install read on this thread; credit() is called for each batch the main thread consumed. */
export interface InstallReadJob {
  /** credit: the main thread consumed a batch and gave its memory back (packed again for a later batch). */
  credit(buffer: ArrayBuffer | null): void;
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
  };
  const run = async (): Promise<void> => {
    const recorder = req.recordMembers ? new MemberTableRecorder({ checkCrc: true, io: nodeSnapshotIo }) : null;
    const read = new StreamFreeRead(req.path, req.hashWhole, !req.skipStateDigest, recorder);
    try {
      const meta = await read.untilState();
      recorder?.stateBegins(meta, { stateTarOffset: read.scan.stateTarOffset });
      post({ t: 'installMeta', meta });
      let stateBytes = 0;
      let stateKeys = 0;
      for await (const batch of checkedStateRecords(read.statePieces(), meta, INSTALL_DECODE_OPTIONS)) {
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
      read.toEnd();
      const members: MemberTableFound | null = recorder?.table(read.archiveBytes) ?? null;
      post({ t: 'installEnd', archiveBytes: read.archiveBytes, sha256: read.digest(), stateSha256: read.scan.stateSha256, members, stateBytes, stateKeys });
    } finally {
      read.close();
    }
  };
  run().catch((err: unknown) => post({ t: 'installError', error: postError(err) }));
  return job;
}

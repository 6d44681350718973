/**
 * The worker's side of an install read (install-read.ts): loaded by the
 * snapshot worker (state-digest-worker.ts) at its first install read only,
 * so a delta's digest worker does not load the store's modules.
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

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
    const tap = new HashTap(req.hashWhole);
    const source = nodeSnapshotIo.createReadStream(req.path, { start: 0, highWaterMark: READ_PIECE_BYTES });
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

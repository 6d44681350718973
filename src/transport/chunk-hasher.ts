/**
 * ChunkHasher: the SHA-256 of a fetched snapshot chunk, computed on a worker
 * thread so that a fetch's one hashing pass runs beside the receiving
 * (TLS, HTTP/2, decoding) on the main thread instead of after it.
 *
 * The chunk's bytes are not copied: their ArrayBuffer is transferred to the
 * worker and back (postMessage's transfer list), so the caller's view is
 * detached until the promise resolves with a view of the same bytes. That
 * is only done when the chunk is the one user of its ArrayBuffer (a gRPC
 * message decoded for this fetch: the buffer holds the chunk and at most
 * TRANSFER_SLACK_BYTES of the message's other fields); any other chunk (a
 * view into a pool, a file held in memory) is hashed on the main thread, as
 * is every chunk once the worker has failed. Measured (512 chunks of 1 MiB,
 * one hashed while the next is made, machine at load ~20): main-thread CPU
 * 0.50-0.54 s hashing inline against 0.10-0.16 s through the worker.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** TRANSFER_SLACK_BYTES: bytes of its ArrayBuffer a chunk may leave to other fields and still be transferred. */
export const TRANSFER_SLACK_BYTES = 4096;

/** Hashed: the chunk's bytes (the same bytes, possibly a new view of them) and their SHA-256. */
export interface Hashed {
  readonly data: Uint8Array;
  readonly sha256: Buffer;
}

export interface ChunkHasher {
  /**
   * sha256 hashes `data`. If it resolves with a new view, `data` itself may
   * have been detached (length 0) meanwhile: use the view it gives. Never
   * rejects because of the worker: a worker that failed makes this chunk's
   * promise reject (its bytes went with it) and every later chunk is hashed
   * inline.
   */
  sha256(data: Uint8Array): Promise<Hashed>;
  /** transferred: chunks hashed on the worker (the others were hashed inline). */
  readonly transferred: number;
  /** close stops the worker (idempotent); chunks still out are rejected. */
  close(): void;
}

function inline(data: Uint8Array): Hashed {
  return { data, sha256: createHash('sha256').update(data).digest() };
}

/** inlineChunkHasher hashes every chunk on the calling thread (no worker). */
export function inlineChunkHasher(): ChunkHasher {
  return {
    sha256: (data) => Promise.resolve(inline(data)),
    transferred: 0,
    close: () => undefined,
  };
}

/** The worker's code: plain JavaScript (no TypeScript, no imports of this package), so it runs wherever this module does. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  const sum = createHash('sha256').update(new Uint8Array(m.buffer, m.offset, m.length)).digest();
  parentPort.postMessage({ id: m.id, buffer: m.buffer, sum: sum.buffer.slice(sum.byteOffset, sum.byteOffset + 32) }, [m.buffer]);
});
`;

interface Waiting {
  readonly offset: number;
  readonly length: number;
  readonly resolve: (h: Hashed) => void;
  readonly reject: (err: Error) => void;
}

/**
 * workerChunkHasher starts a worker thread that hashes chunks transferred to
 * it; see the file comment. The worker keeps the process alive (a chunk out
 * on it is work pending) until close(), which its owner must call.
 */
export function workerChunkHasher(): ChunkHasher {
  let worker: Worker | null = new Worker(WORKER_SOURCE, { eval: true });
  const waiting = new Map<number, Waiting>();
  let nextId = 0;
  let transferred = 0;
  const fail = (err: Error): void => {
    const w = worker;
    worker = null;
    for (const x of waiting.values()) x.reject(err);
    waiting.clear();
    void w?.terminate();
  };
  worker.on('message', (m: { id: number; buffer: ArrayBuffer; sum: ArrayBuffer }) => {
    const x = waiting.get(m.id);
    if (x === undefined) return;
    waiting.delete(m.id);
    x.resolve({ data: new Uint8Array(m.buffer, x.offset, x.length), sha256: Buffer.from(m.sum) });
  });
  worker.on('error', (err) => fail(err));
  worker.on('exit', (code) => fail(new Error(`the chunk hashing worker exited (code ${code})`)));
  return {
    sha256(data: Uint8Array): Promise<Hashed> {
      const buffer = data.buffer;
      if (worker === null || !(buffer instanceof ArrayBuffer) || buffer.byteLength - data.length > TRANSFER_SLACK_BYTES || data.length === 0) {
        return Promise.resolve(inline(data));
      }
      const w = worker;
      return new Promise<Hashed>((resolve, reject) => {
        const id = nextId++;
        waiting.set(id, { offset: data.byteOffset, length: data.length, resolve, reject });
        try {
          w.postMessage({ id, buffer, offset: data.byteOffset, length: data.length }, [buffer]);
        } catch {
          // not transferable after all (marked so by its allocator): hashed here, untouched.
          waiting.delete(id);
          resolve(inline(data));
          return;
        }
        transferred++;
      });
    },
    get transferred() {
      return transferred;
    },
    close() {
      if (worker !== null) fail(new Error('the chunk hasher was closed'));
    },
  };
}

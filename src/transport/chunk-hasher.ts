/**
 * ChunkHasher hashes snapshot chunks (SHA-256) on a worker thread, so that a
 * fetch's receiving thread only decodes, copies and writes while another core
 * hashes. Each chunk is copied once into a slot of a SharedArrayBuffer ring
 * (a memcpy, a twentieth of the cost of hashing it here) and its slot number
 * posted; the worker hashes the slot and answers with the 32-byte digest.
 * Structured clone never copies chunk bytes. Results come back in order of
 * the requests (one worker, one queue).
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

/** WORKER_SOURCE: the worker's whole program (CommonJS, evaluated; no loader, no TypeScript). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = new Uint8Array(workerData.ring);
parentPort.on('message', (m) => {
  const digest = createHash('sha256').update(ring.subarray(m.at, m.at + m.length)).digest();
  parentPort.postMessage({ id: m.id, digest });
});
`;

interface Waiter {
  readonly resolve: (digest: Buffer) => void;
  readonly reject: (err: Error) => void;
  readonly slot: number;
}

/**
 * ChunkHasher: `slots` slots of `slotBytes` each; hash() waits for a free
 * slot when all are busy (so memory stays at slots x slotBytes). A chunk
 * longer than a slot is hashed on the calling thread. close() stops the
 * worker; pending hashes then reject.
 */
export class ChunkHasher {
  private readonly worker: Worker;
  private readonly ring: Uint8Array;
  private readonly free: number[];
  private readonly slotWaiters: (() => void)[] = [];
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 1;
  private failed: Error | null = null;
  /** hashedOnWorker / hashedHere: chunks hashed by the worker, and on the calling thread (too large for a slot). */
  hashedOnWorker = 0;
  hashedHere = 0;

  constructor(
    private readonly slotBytes: number,
    slots: number,
  ) {
    if (!Number.isSafeInteger(slotBytes) || slotBytes <= 0 || !Number.isSafeInteger(slots) || slots <= 0) {
      throw new RangeError(`ChunkHasher: slotBytes and slots must be whole numbers > 0, got ${slotBytes} and ${slots}`);
    }
    const shared = new SharedArrayBuffer(slotBytes * slots);
    this.ring = new Uint8Array(shared);
    this.free = Array.from({ length: slots }, (_, i) => i);
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ring: shared } });
    this.worker.unref();
    this.worker.on('message', (m: { id: number; digest: Uint8Array }) => {
      const w = this.waiting.get(m.id);
      if (w === undefined) return;
      this.waiting.delete(m.id);
      this.release(w.slot);
      w.resolve(Buffer.from(m.digest.buffer, m.digest.byteOffset, m.digest.byteLength));
    });
    const fail = (err: Error): void => {
      this.failed ??= err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
      for (const wake of this.slotWaiters.splice(0)) wake();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the chunk hashing worker exited (code ${code})`)));
  }

  /**
   * hash resolves with the SHA-256 of `data`, which must not change until
   * the promise settles (it is copied into a slot once one is free; it is
   * never written). Rejects if the worker failed or was closed.
   */
  async hash(data: Uint8Array): Promise<Buffer> {
    if (data.length > this.slotBytes) {
      this.hashedHere++;
      return createHash('sha256').update(data).digest();
    }
    while (this.free.length === 0 && this.failed === null) await new Promise<void>((r) => this.slotWaiters.push(r));
    if (this.failed !== null) throw this.failed;
    const slot = this.free.pop() as number;
    const at = slot * this.slotBytes;
    this.ring.set(data, at);
    const id = this.nextId++;
    this.hashedOnWorker++;
    return new Promise<Buffer>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, slot });
      this.worker.postMessage({ id, at, length: data.length });
    });
  }

  /** close stops the worker; hashes still pending reject. Idempotent. */
  async close(): Promise<void> {
    this.failed ??= new Error('the chunk hasher was closed');
    await this.worker.terminate();
  }

  private release(slot: number): void {
    this.free.push(slot);
    this.slotWaiters.shift()?.();
  }
}

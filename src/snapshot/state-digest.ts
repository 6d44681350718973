/**
 * StateDigest: the part of a delta snapshot (archive-delta.ts) that reads the
 * base archive's state whole — every base member gunzipped, checked against
 * its member table entry, and state.bin's SHA-256 computed over the new
 * state in order — behind one interface with two homes:
 *
 *   - `localStateDigest(io)`: in this thread (small states, the simulator's
 *     in-memory IO);
 *   - `startWorkerStateDigest()`: on a worker thread of its own
 *     (state-digest-worker.ts), gunzipping on libuv's threadpool as here.
 *
 * Why a worker: a delta of a 1 GB state gunzips 1 GB into short-lived
 * Buffers. In a node's isolate (a heap of tens of MB, ~1M live revision
 * records) that churn of external memory set off 35–46 full mark-compact
 * collections per delta (`--trace-gc`: "external memory pressure"), each
 * 14–167 ms, and doubled the delta's CPU; the same code in a bare process
 * ran a handful. A worker's isolate holds almost nothing, so its collections
 * are cheap, and the node's main thread (Raft, clients) stays free while
 * state.bin is hashed beside it.
 *
 * Protocol (the same for both homes; the caller keeps the order):
 *   - `inflate(compressed, entry, want)` gunzips a member (several may be
 *     in flight) and checks it against its entry (walkRecords); it resolves
 *     with the member's last key and, when `want`, its bytes (a changed
 *     member the caller merges, then hands back with `release`). A member
 *     not wanted is kept until hashed.
 *   - `hashMember()` appends the oldest kept member's bytes to the hash;
 *     `hashBlock(block)` appends new bytes (a copy is taken: the block may be
 *     reused as soon as it returns). Hash calls go in state.bin order.
 *   - `digest()` resolves the hex SHA-256 once every hash call is done;
 *     `close()` ends it (also after a failure).
 * Errors: ArchiveError `corrupt-gzip` (a member does not gunzip) and
 * `size-mismatch` (a member disagrees with its entry), from the call whose
 * member failed, and from every later call.
 */
import { createHash, type Hash } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import type { StateMemberEntry } from './archive-writer.js';
import { ArchiveError, type ArchiveErrorCode } from './errors.js';
import { gzipHeaderBytes } from './member-gunzip.js';
import type { SnapshotIo } from './snapshot-io.js';

/** MemberInflated: what inflate resolves with. */
export interface MemberInflated {
  /** lastKey: the member's last record's key (a copy). */
  readonly lastKey: Buffer;
  /** state: the member's bytes, when asked for (`want`); null otherwise. */
  readonly state: Buffer | null;
}

/** StateDigest: see the file comment. */
export interface StateDigest {
  inflate(compressed: Buffer, entry: StateMemberEntry, want: boolean): Promise<MemberInflated>;
  /** release: the caller is done with a wanted member's bytes (inflate's `state`): their buffer may be reused. */
  release(state: Buffer): void;
  /** hashMember / hashBlock resolve once their bytes are in the hash (a caller bounds how many it leaves waiting). */
  hashMember(): Promise<void>;
  /**
   * hashBlock: `block`'s bytes next in state.bin. The caller leaves them unchanged until the promise settles (the
   * local digest hashes them where they lie, no copy: a delta's merged blocks were copied whole, 1 MiB each, as many
   * as the state it merges).
   */
  hashBlock(block: Buffer): Promise<void>;
  digest(): Promise<string>;
  close(): Promise<void>;
}

/** INFLATE_PIECE_BYTES: zlib's output pieces when a member is gunzipped into a reused buffer (below glibc's 128 KiB mmap threshold). */
const INFLATE_PIECE_BYTES = 112 * 1024;

/** GZIP_TRAILER_BYTES: a gzip member's CRC-32 and ISIZE, after its deflate data. */
const GZIP_TRAILER_BYTES = 8;

/**
 * INFLATE_WHOLE_BYTES_MAX: a member of at most this many state bytes is gunzipped whole (SnapshotIo.gunzip: one
 * call, its CRC-32 checked too) into memory of its own, not streamed into a reused buffer: for a small state
 * (the simulator's, a config store's) an inflate stream per member cost more than the bytes.
 */
export const INFLATE_WHOLE_BYTES_MAX = 64 * 1024;

/**
 * inflateMember gunzips one member into `into` (reused across members: no
 * fresh 1 MiB allocation, mapped and faulted in, per member) when it is
 * large enough, else into a new buffer; its output size is known and more
 * output than that is refused. Returns the member's bytes (a view of `into`).
 * Each of zlib's pieces is dead once copied into `into`: `noteGarbage` is told
 * its size then (the thread's ExternalMemoryGc scavenges every few MiB of
 * them, so they are freed and their glibc memory reused by the next ones).
 *
 * Into `into`, the member's deflate data is inflated raw (its header parsed
 * here): its deflate data must fill the member up to the 8-byte trailer and
 * give ISIZE bytes, but the trailer's CRC-32 is not computed. A delta's base
 * bytes come checked against the archive's recorded chunk hashes (SHA-256),
 * which were recorded from bytes whose every CRC was checked (written by this
 * store, or an upload checked whole at import), and state.bin's SHA-256 is
 * computed over the output: zlib's CRC-32 was a third check of the same bytes,
 * ~45% of the gunzip's CPU on the etcd mix (0.9 against 1.7 GB/s of output on
 * one core, 1 MiB members of 1 KiB `f` values; 165 against 197 MB/s on text).
 * Errors: ArchiveError `corrupt-gzip`.
 */
async function inflateMember(io: SnapshotIo, member: Buffer, stateBytes: number, into: Buffer | null, noteGarbage: (bytes: number) => void): Promise<Buffer> {
  const corrupt = (why: string, cause?: unknown): ArchiveError =>
    new ArchiveError('corrupt-gzip', `a state member of the base archive does not gunzip: ${why}`, cause === undefined ? undefined : { cause });
  if (into === null || into.length < stateBytes) {
    try {
      return await io.gunzip(member, { chunkSize: Math.max(64 * 1024, stateBytes + 1024), maxOutputLength: Math.max(1, stateBytes) });
    } catch (err) {
      throw corrupt((err as Error).message, err);
    }
  }
  const headerBytes = gzipHeaderBytes(member, 0, (why) => corrupt(why));
  if (headerBytes === 0 || member.length < headerBytes + GZIP_TRAILER_BYTES) throw corrupt('the member ends inside its header or trailer');
  const data = member.subarray(headerBytes, member.length - GZIP_TRAILER_BYTES);
  const isize = member.readUInt32LE(member.length - 4);
  const at = await new Promise<number>((resolve, reject) => {
    const g = io.createInflateRaw({ chunkSize: INFLATE_PIECE_BYTES });
    let out = 0;
    g.on('data', (piece: Buffer) => {
      if (out + piece.length > stateBytes) {
        g.destroy(new Error(`more than the ${stateBytes} bytes the member table says`));
        return;
      }
      piece.copy(into, out);
      out += piece.length;
      noteGarbage(piece.length);
    });
    g.once('end', () => {
      if (g.bytesWritten !== data.length) reject(new Error(`its deflate data ends ${data.length - g.bytesWritten} bytes before its trailer`));
      else resolve(out);
    });
    g.once('error', reject);
    g.end(data);
  }).catch((err: unknown) => {
    throw corrupt((err as Error).message, err);
  });
  if (isize !== at % 2 ** 32) throw corrupt(`ISIZE ${isize}, ${at} bytes out`);
  return into.subarray(0, at);
}

/**
 * walkRecords checks that `state` is whole records matching `entry` (size,
 * count, first key) and returns its last record's key (a view). `at` is the
 * member's offset in state.bin (for the message). Errors: ArchiveError
 * `size-mismatch`.
 */
function walkRecords(state: Buffer, entry: StateMemberEntry, at: number): Buffer {
  const bad = (why: string): ArchiveError => new ArchiveError('size-mismatch', `state member at state.bin offset ${at}: ${why}`);
  if (state.length !== entry.stateBytes) throw bad(`${state.length} bytes, the member table says ${entry.stateBytes}`);
  let pos = 0;
  let keys = 0;
  // Positions only: no Buffer view per record (a member holds ~1,000 of them, a GB a million).
  let lastKeyAt = 0;
  let lastKeyEnd = 0;
  while (pos < state.length) {
    if (pos + 4 > state.length) throw bad('a record is cut off');
    const kLen = state.readUInt32BE(pos);
    const kEnd = pos + 4 + kLen;
    if (kLen === 0 || kEnd + 4 > state.length) throw bad('a record is cut off or has an empty key');
    lastKeyAt = pos + 4;
    lastKeyEnd = kEnd;
    if (keys === 0 && (kLen !== entry.firstKey.length || state.compare(entry.firstKey, 0, kLen, lastKeyAt, kEnd) !== 0)) throw bad('its first key is not the member table\'s');
    const vLen = state.readUInt32BE(kEnd);
    pos = kEnd + 4 + vLen;
    if (pos > state.length) throw bad('a record is cut off');
    keys += 1;
  }
  if (keys !== entry.keys) throw bad(`${keys} records, the member table says ${entry.keys}`);
  return state.subarray(lastKeyAt, lastKeyEnd);
}

/**
 * localStateDigest: a StateDigest in this thread (gunzip through `io`).
 * Members gunzip into buffers of `blockBytes` reused once hashed or handed
 * over; at most as many as are in flight at once are made. `noteGarbage`
 * is told of every gunzip piece once it is copied out and dead (the worker
 * passes its ExternalMemoryGc's garbageMade; by default nothing is told).
 */
export function localStateDigest(
  io: SnapshotIo,
  blockBytes: number,
  noteGarbage: (bytes: number) => void = () => undefined,
): StateDigest {
  const hash: Hash = createHash('sha256');
  /** kept: inflated members not wanted, in order, until hashed (each with the buffer it lies in). */
  const kept: Promise<{ readonly state: Buffer; readonly into: Buffer | null }>[] = [];
  const spare: Buffer[] = [];
  /** lent: the buffers of wanted members, by their memory, until released. */
  const lent = new Map<ArrayBufferLike, Buffer>();
  /** chain: hash calls, in order (a member's hash waits for its gunzip). */
  let chain: Promise<void> = Promise.resolve();
  let stateOffset = 0;
  let failed: Error | null = null;
  const fail = (err: unknown): never => {
    failed ??= err as Error;
    throw failed;
  };
  return {
    inflate(compressed, entry, want) {
      if (failed !== null) return Promise.reject(failed);
      const at = stateOffset;
      stateOffset += entry.stateBytes;
      // A small member is gunzipped whole, into memory of its own (inflateMember), not into a reused buffer.
      const into = entry.stateBytes <= INFLATE_WHOLE_BYTES_MAX ? null : (spare.pop() ?? Buffer.allocUnsafeSlow(blockBytes));
      const done = inflateMember(io, compressed, entry.stateBytes, into, noteGarbage)
        .then((state) => ({ state, lastKey: Buffer.from(walkRecords(state, entry, at)) }))
        .catch(fail);
      if (want) {
        return done.then((r) => {
          if (into !== null) lent.set(r.state.buffer, into);
          return r;
        });
      }
      const k = done.then(({ state }) => ({ state, into }));
      k.catch(() => undefined); // met by hashMember's chain
      kept.push(k);
      return done.then(({ lastKey }) => ({ lastKey, state: null }));
    },
    release(state) {
      const into = lent.get(state.buffer);
      if (into === undefined) return;
      lent.delete(state.buffer);
      spare.push(into);
    },
    hashMember() {
      const k = kept.shift();
      if (k === undefined) return Promise.reject(new Error('StateDigest.hashMember: no member kept'));
      chain = chain.then(async () => {
        const { state, into } = await k;
        hash.update(state);
        if (into !== null) spare.push(into);
      });
      return chain;
    },
    hashBlock(block) {
      chain = chain.then(() => {
        hash.update(block);
      });
      return chain;
    },
    async digest() {
      await chain;
      if (failed !== null) throw failed;
      return hash.digest('hex');
    },
    close() {
      return Promise.resolve();
    },
  };
}

/** Worker messages (state-digest-worker.ts). */
export type DigestRequest =
  | { readonly t: 'inflate'; readonly id: number; readonly compressed: Uint8Array; readonly stateBytes: number; readonly keys: number; readonly firstKey: Uint8Array; readonly want: boolean }
  | { readonly t: 'hashMember' }
  | { readonly t: 'hashBlock'; readonly block: Uint8Array }
  | { readonly t: 'digest' };
export type DigestReply =
  | { readonly t: 'inflated'; readonly id: number; readonly lastKey: Uint8Array; readonly state: Uint8Array | null }
  | { readonly t: 'hashed' }
  | { readonly t: 'digest'; readonly hex: string; readonly gc: DigestWorkerGc }
  | { readonly t: 'error'; readonly id: number | null; readonly code: ArchiveErrorCode | null; readonly message: string };

/** DigestWorkerGc: the collections the worker's bound on its dead Buffers started (state-digest-worker.ts). */
export interface DigestWorkerGc {
  readonly scavenges: number;
  /** garbageScavenges: those of `scavenges` started by pieces noted dead (ExternalMemoryGc.garbageMade). */
  readonly garbageScavenges: number;
  readonly collections: number;
}

/** errorReply: an error as the worker sends it (an ArchiveError keeps its code and its message without the prefix). */
export function errorReply(id: number | null, err: unknown): DigestReply {
  const e = err as Error;
  const code = err instanceof ArchiveError ? err.code : null;
  return { t: 'error', id, code, message: code !== null ? e.message.replace(/^snapshot archive: /, '') : e.message };
}

/** DIGEST_WORKER_BLOCK_BYTES: the size of the worker's reused member buffers (the writer's default block, 1 MiB). */
export const DIGEST_WORKER_BLOCK_BYTES = 1024 * 1024;

/**
 * spawnSnapshotWorker starts the snapshot worker's module, state-digest-worker (from dist/ a .js beside this one;
 * from the sources under tsx, a boot that registers tsx first): a thread for one job, a delta's state digest or a
 * follower's install read (install-read.ts).
 */
export function spawnSnapshotWorker(): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // Only from the sources (tests, `npm start`): tsx's loader is not inherited by a worker, so a boot
    // registers it first (tsx's ESM entry, as its package exports name it for `import`).
    const tsxDir = dirname(createRequire(here).resolve('tsx/package.json'));
    const tsx = pathToFileURL(join(tsxDir, 'dist', 'esm', 'api', 'index.mjs')).href;
    const target = new URL('./state-digest-worker.ts', here).href;
    return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(target)}); })`, { eval: true });
  }
  return new Worker(new URL('./state-digest-worker.js', here));
}

/**
 * startWorkerStateDigest: a StateDigest on a worker thread of its own (see
 * the file comment); close() ends the thread. A worker that dies fails every
 * waiting and later call with its error.
 */
export function startWorkerStateDigest(): StateDigest & { readonly gc: DigestWorkerGc } {
  const worker = spawnSnapshotWorker();
  const waiting = new Map<number, { resolve: (r: MemberInflated) => void; reject: (e: Error) => void }>();
  let digestWaiter: { resolve: (hex: string) => void; reject: (e: Error) => void } | null = null;
  /** hashing: the hash calls posted and not yet done, in order. */
  const hashing: { resolve: () => void; reject: (e: Error) => void }[] = [];
  let nextId = 0;
  let failed: Error | null = null;
  let closed = false;
  /** gc: what the worker's bound on its dead Buffers had started at its last digest. */
  let gc: DigestWorkerGc = { scavenges: 0, garbageScavenges: 0, collections: 0 };
  const failAll = (err: Error): void => {
    failed ??= err;
    for (const w of waiting.values()) w.reject(failed);
    waiting.clear();
    for (const h of hashing.splice(0)) h.reject(failed);
    digestWaiter?.reject(failed);
    digestWaiter = null;
  };
  worker.on('message', (m: DigestReply) => {
    if (m.t === 'inflated') {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      w?.resolve({ lastKey: Buffer.from(m.lastKey.buffer, m.lastKey.byteOffset, m.lastKey.length), state: m.state === null ? null : Buffer.from(m.state.buffer, m.state.byteOffset, m.state.length) });
    } else if (m.t === 'hashed') {
      hashing.shift()?.resolve();
    } else if (m.t === 'digest') {
      gc = m.gc;
      digestWaiter?.resolve(m.hex);
      digestWaiter = null;
    } else {
      failAll(m.code !== null ? new ArchiveError(m.code, m.message) : new Error(m.message));
    }
  });
  worker.on('error', (err) => failAll(err));
  worker.on('exit', (code) => {
    if (!closed) failAll(new Error(`the state digest worker exited (code ${code})`));
  });
  const post = (m: DigestRequest, transfer: ArrayBuffer[] = []): void => {
    if (failed !== null) throw failed;
    worker.postMessage(m, transfer);
  };
  const hashed = (send: () => void): Promise<void> => {
    if (failed !== null) return Promise.reject(failed);
    const done = new Promise<void>((resolve, reject) => hashing.push({ resolve, reject }));
    send();
    return done;
  };
  return {
    get gc() {
      return gc;
    },
    inflate(compressed, entry, want) {
      if (failed !== null) return Promise.reject(failed);
      const id = nextId++;
      const result = new Promise<MemberInflated>((resolve, reject) => waiting.set(id, { resolve, reject }));
      // Copies of exactly these bytes, moved: a view posted as it is clones all the memory it lies in.
      const bytes = new Uint8Array(compressed);
      post({ t: 'inflate', id, compressed: bytes, stateBytes: entry.stateBytes, keys: entry.keys, firstKey: new Uint8Array(entry.firstKey), want }, [bytes.buffer]);
      return result;
    },
    release() {
      // The bytes were moved to this thread: nothing to give back.
    },
    hashMember() {
      return hashed(() => post({ t: 'hashMember' }));
    },
    hashBlock(block) {
      const bytes = new Uint8Array(block);
      return hashed(() => post({ t: 'hashBlock', block: bytes }, [bytes.buffer]));
    },
    digest() {
      if (failed !== null) return Promise.reject(failed);
      const result = new Promise<string>((resolve, reject) => {
        digestWaiter = { resolve, reject };
      });
      post({ t: 'digest' });
      return result;
    },
    async close() {
      closed = true;
      await worker.terminate();
    },
  };
}

/**
 * InstallRead: a follower's install reads its stored archive on a worker
 * thread (the snapshot worker of state-digest.ts, the delta's: one worker
 * module, one thread per job, no pool). On the worker: the file read, the
 * archive's whole SHA-256 (when it is only claimed: a fetched archive),
 * gunzip, the tar and meta.json rules (readArchive's own, with no stream:
 * install-read-job.ts StreamFreeRead), every state.bin record
 * checked (checkedStateRecords: keys strictly increasing, counts and sizes
 * as meta.json declares) and, when asked, the member table recorded with
 * every gzip CRC checked (MemberTableRecorder). The main thread gets the
 * checked records packed in state.bin's own layout (u32 key length, key,
 * u32 value length, value), one transferred buffer per install batch
 * (INSTALL_DECODE_OPTIONS: at most 16,384 records, 2 MiB of keys and values),
 * and only cuts them into views and puts them into RocksDB's write batches.
 *
 * Why: the install's main thread read, hashed, gunzipped and decoded every
 * byte itself, between the puts (bench:snapshot --state-bytes 256MiB, the
 * receiver's --cpu-prof: SHA-256, zlib's callbacks and CRC-32, decoding and
 * their garbage ~0.65 s of the main thread's ~1.2 s of installState); on the
 * worker that runs beside the puts and RocksDB's writes.
 *
 * Bounds: at most INSTALL_READ_BATCHES_AHEAD batches posted and not yet
 * consumed (each at most 2 MiB of keys and values plus 8 bytes a record, in
 * a buffer of PACK_BUFFER_BYTES: ~8.5 MiB between the threads). Each
 * batch's memory goes back to the worker with its credit and is packed
 * again (no allocation, page faults or free per batch: four buffers cycle
 * between the threads). Behind that the worker holds one 1 MiB read buffer
 * and one gunzipped piece (112 KiB) at a time. The worker stops
 * reading while the main thread holds that many (backpressure end to end:
 * RocksDB's writes -> the puts -> credits -> the worker's decode -> gunzip
 * -> the file read).
 *
 * Trust: the records source the install gets ends only after the worker has
 * read the whole archive and the main thread has checked the digest the
 * worker computed against the stored one (SnapshotStore.confirmRead), so a
 * refused archive never becomes live, exactly as in the read on this
 * thread. The worker's errors come back as the same classes and codes
 * (ArchiveError, StateFormatError; an I/O error with its errno code).
 */
import type { ArchiveMeta } from './archive-meta.js';
import { ArchiveError, StateFormatError, type ArchiveErrorCode, type StateFormatErrorCode } from './errors.js';
import type { ArchiveMemberTable } from './archive-writer.js';
import { spawnSnapshotWorker } from './state-digest.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';

/** INSTALL_READ_BATCHES_AHEAD: record batches the worker may post that the main thread has not consumed yet. */
export const INSTALL_READ_BATCHES_AHEAD = 4;

/**
 * INSTALL_WORKER_STATE_BYTES_MIN: the state from which a follower's install
 * may read its archive on a worker by default; below it the worker's start-up
 * (~0.1 s of CPU from dist/, far more from the sources under tsx) costs more
 * than the main thread's read of it.
 */
export const INSTALL_WORKER_STATE_BYTES_MIN = 32 * 1024 * 1024;

/**
 * INSTALL_WORKER_RECORD_BYTES_MIN: the average record (state.bin bytes per
 * record) from which the worker is used by default. The worker decodes each
 * record, packs it and the main thread cuts it out again: per record it adds
 * work, per byte it takes work off the main thread. Measured
 * (bench/follower-install.ts, 256 MiB, the two homes alternating in one
 * process, 3 rounds, load ~25 on 2 cores): 4 KiB random values, worker/here
 * wall 0.88x, main thread 0.72 -> 0.33 s, process CPU 1.92 -> 2.45 s;
 * 1 KiB `f` values (etcd's fill), 1.48x, main 0.63 -> 0.48 s, CPU 1.57 ->
 * 2.38 s. The bound sits between the two.
 */
export const INSTALL_WORKER_RECORD_BYTES_MIN = 2048;

/**
 * installReadHome: where an install reads its archive by default: on a worker
 * with the real file system's IO, a state of INSTALL_WORKER_STATE_BYTES_MIN or
 * more and records of INSTALL_WORKER_RECORD_BYTES_MIN or more on average;
 * else here.
 */
export function installReadHome(io: SnapshotIo, stateBytes: number, stateKeys: number): 'worker' | 'here' {
  if (io !== nodeSnapshotIo || stateBytes < INSTALL_WORKER_STATE_BYTES_MIN) return 'here';
  return stateBytes >= INSTALL_WORKER_RECORD_BYTES_MIN * Math.max(1, stateKeys) ? 'worker' : 'here';
}

/** InstallReadRequest: what the worker is asked to read. */
export interface InstallReadRequest {
  readonly t: 'installRead';
  readonly path: string;
  /** hashWhole: compute the archive's whole SHA-256 while reading (an archive whose digest is only claimed). */
  readonly hashWhole: boolean;
  /** skipStateDigest: readArchive's (state.bin's own SHA-256 not computed: the whole digest covers it). */
  readonly skipStateDigest: boolean;
  /** recordMembers: find the archive's member table (MemberTableRecorder, every gzip CRC checked). */
  readonly recordMembers: boolean;
  readonly batchesAhead: number;
}

/** MemberTableFound: MemberTableRecorder.table's result, as posted. */
export interface MemberTableFound {
  readonly table: ArchiveMemberTable;
  readonly stateBytes: number;
  readonly stateKeys: number;
}

/** InstallReadEnd: what the worker says once it has read the whole archive and checked everything in it. */
export interface InstallReadEnd {
  /** archiveBytes: the bytes read from the file. */
  readonly archiveBytes: number;
  /** sha256: their SHA-256 (hex), when asked (hashWhole); else null. */
  readonly sha256: string | null;
  /** stateSha256: readArchive's (empty when skipped). */
  readonly stateSha256: string;
  /** members: the member table found (recordMembers), or null (not asked, or a layout a delta cannot start from). */
  readonly members: MemberTableFound | null;
  /** stateBytes / stateKeys: the records' bytes (as state.bin counts them) and count handed over. */
  readonly stateBytes: number;
  readonly stateKeys: number;
}

/** Worker -> main messages of an install read. */
export type InstallReadReply =
  | { readonly t: 'installMeta'; readonly meta: ArchiveMeta }
  | { readonly t: 'installBatch'; readonly packed: Uint8Array; readonly records: number }
  | ({ readonly t: 'installEnd' } & InstallReadEnd)
  | { readonly t: 'installError'; readonly error: PostedError };

/** PostedError: an error as it crosses the threads. */
export interface PostedError {
  readonly kind: 'archive' | 'state' | 'other';
  readonly code: string | null;
  readonly message: string;
  readonly offset: number;
  /** errno: the code of a system error (EIO, ENOENT, ...), of the error or its cause. */
  readonly errno: string | null;
}

/** postError: `err` as it crosses the threads (its class, code and message kept). */
export function postError(err: unknown): PostedError {
  const e = err instanceof Error ? err : new Error(String(err));
  const errnoOf = (x: unknown): string | null => {
    const c = (x as { code?: unknown } | null)?.code;
    return typeof c === 'string' && /^E[A-Z0-9]+$/.test(c) ? c : null;
  };
  const errno = errnoOf(e) ?? errnoOf((e as { cause?: unknown }).cause);
  if (e instanceof ArchiveError) return { kind: 'archive', code: e.code, message: e.message.replace(/^snapshot archive: /, ''), offset: 0, errno };
  if (e instanceof StateFormatError) {
    return { kind: 'state', code: e.code, message: e.message.replace(/^snapshot state: /, '').replace(/ \(record at byte \d+\)$/, ''), offset: e.offset, errno };
  }
  return { kind: 'other', code: errno, message: e.message, offset: 0, errno };
}

/** revive: a posted error as this thread's error of the same class and code (an errno kept as `code`, and as its cause's). */
export function revive(p: PostedError): Error {
  const cause = p.errno !== null ? Object.assign(new Error(p.message), { code: p.errno }) : undefined;
  if (p.kind === 'archive') return new ArchiveError(p.code as ArchiveErrorCode, p.message, cause !== undefined ? { cause } : {});
  if (p.kind === 'state') return new StateFormatError(p.code as StateFormatErrorCode, p.message, p.offset);
  const e = new Error(p.message, cause !== undefined ? { cause } : undefined);
  if (p.errno !== null) Object.assign(e, { code: p.errno });
  return e;
}

/** InstallRecord: one record handed to the install (views of a batch's packed bytes). */
export interface InstallRecord {
  readonly key: Buffer;
  readonly value: Buffer;
}

/** unpack cuts a packed batch (state.bin's layout, checked on the worker) into views. */
export function unpack(packed: Buffer, records: number): InstallRecord[] {
  const out: InstallRecord[] = new Array<InstallRecord>(records);
  let pos = 0;
  for (let i = 0; i < records; i++) {
    const k = packed.readUInt32BE(pos);
    const key = packed.subarray(pos + 4, pos + 4 + k);
    pos += 4 + k;
    const v = packed.readUInt32BE(pos);
    const value = packed.subarray(pos + 4, pos + 4 + v);
    pos += 4 + v;
    out[i] = { key, value };
  }
  if (pos !== packed.length) throw new Error(`install read: a packed batch of ${packed.length} bytes holds ${pos} bytes of its ${records} records`);
  return out;
}

/** PACK_BUFFER_BYTES: the least size of a batch buffer (one install batch of INSTALL_DECODE_OPTIONS: 2 MiB of keys and values, 8 bytes a record). */
export const PACK_BUFFER_BYTES = 2 * 1024 * 1024 + 16_384 * 8;

/**
 * pack lays `batch`'s records out as state.bin does at the start of `into`
 * when it is large enough, else of a new buffer (at least PACK_BUFFER_BYTES);
 * returns a view of exactly those bytes (its buffer the whole memory, to be
 * transferred).
 */
export function pack(batch: readonly { readonly key: Uint8Array; readonly value: Uint8Array }[], into: ArrayBuffer | null): Uint8Array {
  let n = 0;
  for (const r of batch) n += 8 + r.key.length + r.value.length;
  const memory = into !== null && into.byteLength >= n ? into : new ArrayBuffer(Math.max(n, PACK_BUFFER_BYTES));
  const out = Buffer.from(memory, 0, n);
  let pos = 0;
  for (const r of batch) {
    out.writeUInt32BE(r.key.length, pos);
    out.set(r.key, pos + 4);
    pos += 4 + r.key.length;
    out.writeUInt32BE(r.value.length, pos);
    out.set(r.value, pos + 4);
    pos += 4 + r.value.length;
  }
  return new Uint8Array(memory, 0, n);
}

/** InstallRead: the main thread's side of one install read (startInstallRead). */
export interface InstallRead {
  /** meta: meta.json as the worker read and checked it (rejects if the archive fails before state.bin). */
  readonly meta: Promise<ArchiveMeta>;
  /**
   * records yields the checked records, batch by batch, and returns once the
   * worker has read the whole archive (end() is then settled). Call it once.
   * Leaving it early, or any failure, stops the worker.
   */
  records(): AsyncGenerator<InstallRecord[]>;
  /** end: the worker's last word (InstallReadEnd), or its error. */
  readonly end: Promise<InstallReadEnd>;
  /** batchesAheadMax: the most batches that were posted and not yet consumed at once (a test's view of the bound). */
  readonly batchesAheadMax: number;
  /** close stops the worker (idempotent). */
  close(): Promise<void>;
}

/** Main-thread messages of an install read: the request, then a credit per batch consumed, with that batch's memory back. */
export type InstallReadControl = InstallReadRequest | { readonly t: 'installCredit'; readonly buffer: ArrayBuffer };

/**
 * startInstallRead reads the archive at `path` on a worker thread of its own
 * (see the file comment). A batch's memory goes back to the worker, for a
 * later batch, once the install asks for the next one: its records are views
 * of it, read only until then (StateStore.installState copies each at once).
 */
export function startInstallRead(options: { readonly path: string; readonly hashWhole: boolean; readonly skipStateDigest: boolean; readonly recordMembers: boolean }): InstallRead {
  const worker = spawnSnapshotWorker();
  let closed = false;
  let failed: Error | null = null;
  const queue: ({ readonly packed: Buffer; readonly records: number } | InstallReadEnd)[] = [];
  let wake: (() => void) | null = null;
  let ahead = 0;
  let aheadMax = 0;
  let settleMeta!: { resolve: (m: ArchiveMeta) => void; reject: (e: Error) => void };
  const meta = new Promise<ArchiveMeta>((resolve, reject) => {
    settleMeta = { resolve, reject };
  });
  meta.catch(() => undefined);
  let settleEnd!: { resolve: (m: InstallReadEnd) => void; reject: (e: Error) => void };
  const end = new Promise<InstallReadEnd>((resolve, reject) => {
    settleEnd = { resolve, reject };
  });
  end.catch(() => undefined);
  const fail = (err: Error): void => {
    if (failed !== null) return;
    failed = err;
    settleMeta.reject(err);
    settleEnd.reject(err);
    wake?.();
    void worker.terminate();
  };
  worker.on('message', (m: InstallReadReply | { readonly t: string }) => {
    const r = m as InstallReadReply;
    switch (r.t) {
      case 'installMeta':
        settleMeta.resolve(r.meta);
        break;
      case 'installBatch':
        ahead++;
        aheadMax = Math.max(aheadMax, ahead);
        queue.push({ packed: Buffer.from(r.packed.buffer, r.packed.byteOffset, r.packed.length), records: r.records });
        wake?.();
        break;
      case 'installEnd': {
        const { t: _t, ...posted } = r;
        // A Buffer arrives as a plain Uint8Array: the member table's first keys are made Buffers again.
        const members = posted.members === null ? null : { ...posted.members, table: { ...posted.members.table, state: posted.members.table.state.map((s) => ({ ...s, firstKey: Buffer.from(s.firstKey.buffer, s.firstKey.byteOffset, s.firstKey.length) })) } };
        const e: InstallReadEnd = { ...posted, members };
        queue.push(e);
        settleEnd.resolve(e);
        wake?.();
        break;
      }
      case 'installError':
        fail(revive(r.error));
        break;
      default:
        fail(new Error(`install read: the worker said ${JSON.stringify((m as { t: unknown }).t)}`));
    }
  });
  worker.on('error', (err) => fail(err));
  worker.on('exit', (code) => {
    if (!closed) fail(new Error(`the install read worker exited (code ${code})`));
  });
  const request: InstallReadRequest = { t: 'installRead', ...options, batchesAhead: INSTALL_READ_BATCHES_AHEAD };
  worker.postMessage(request);
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    if (failed === null) {
      failed = new Error('the install read was closed');
      settleMeta.reject(failed);
      settleEnd.reject(failed);
    }
    await worker.terminate();
  };
  return {
    meta,
    end,
    get batchesAheadMax() {
      return aheadMax;
    },
    async *records() {
      try {
        for (;;) {
          while (queue.length === 0 && failed === null) await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
          if (failed !== null) throw failed;
          const item = queue.shift() as (typeof queue)[number];
          if (!('packed' in item)) return;
          yield unpack(item.packed, item.records);
          // The install asks for the next batch: it has put every record of this one into a write batch (copied). Its
          // memory goes back to the worker for a later batch, and the worker may read on.
          ahead--;
          const memory = item.packed.buffer as ArrayBuffer;
          worker.postMessage({ t: 'installCredit', buffer: memory } satisfies InstallReadControl, [memory]);
        }
      } finally {
        await close();
      }
    },
    close,
  };
}

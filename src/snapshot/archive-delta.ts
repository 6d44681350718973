/**
 * writeArchiveDelta: a new snapshot archive from an older one of the same
 * state lineage and the keys that changed since, without reading the whole
 * state from the storage engine.
 *
 * An archive built by writeArchiveFromRecords holds state.bin as gzip
 * members of whole records, and its member table (ArchiveMemberTable) says
 * where each member lies and which key it starts with. For the new archive,
 * a member none of whose keys changed is copied compressed, as it is; a
 * member with changes is gunzipped, merged with them and compressed again.
 * state.bin's SHA-256 still covers every byte: each copied member is
 * gunzipped (on the threadpool, several ahead) and hashed in order, on a
 * worker thread for a large base (state-digest.ts: why). The
 * result is an archive of the documented format, the same state.bin a full
 * creation of that state gives (only the gzip member boundaries may differ).
 *
 * Checks kept: the caller hands the base archive's bytes checked against its
 * recorded chunk hashes; every member's gzip CRC is checked by gunzip; each
 * member's size, record count and first key must be the table's, records
 * must lie whole in it, and keys strictly increase across the whole output
 * (StateFormatError `key-order` otherwise). Any failure rejects, and the
 * caller falls back to a full creation (but for an abort: options.signal's
 * reason, checked before each member).
 *
 * The archive's head holds state.bin's size and record count. With a base
 * readable at any offset (DeltaBase.readRange) and changes touching at most
 * DELTA_PREMERGE_STATE_BYTES_MAX of its state, the changed members are
 * merged first and the archive is written head first, each byte once
 * (premergedDelta); else in one pass, the compressed state waiting in a
 * spool file until its totals are known (written twice). Both give the
 * same bytes.
 */
import type { Writable } from 'node:stream';

import {
  StateBlockEncoder,
  writeArchiveFromMembers,
  type ArchiveMemberTable,
  type RecordsArchiveMeta,
  type RecordsArchiveOptions,
  type RecordsArchiveResult,
  type StateMemberEntry,
  type StateMemberInfo,
  type StateMembersProducer,
} from './archive-writer.js';
import { ArchiveError, StateFormatError } from './errors.js';
import { BlockPool } from './block-pool.js';
import { gzipBlock, resolveParallelGzipOptions } from './parallel-gzip.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';
import { localStateDigest, startWorkerStateDigest, type MemberInflated } from './state-digest.js';

/** StateChange: a key's value now (null: deleted) — one entry of the changes since the base archive. */
export interface StateChange {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/**
 * BaseFrame: a piece of the base's bytes whose memory its source reuses for a
 * later piece once `release` is called (readChunks' frames): the delta calls
 * it when nothing of it is read or held any more, and never otherwise.
 */
export interface BaseFrame {
  readonly data: Uint8Array;
  readonly release: () => void;
}

/** DeltaBase: the older archive: its bytes in order (already checked against its recorded chunk hashes) and its member table. */
export interface DeltaBase {
  /** bytes: the base in order, as plain bytes (held as long as the delta likes) or BaseFrames (released once done with). */
  readonly bytes: AsyncIterable<Uint8Array | BaseFrame>;
  readonly archiveBytes: number;
  readonly members: ArchiveMemberTable;
  /**
   * readRange, when given: `length` bytes of the base from `offset`, checked
   * as `bytes` are. With it, a delta merges its changed members first (at
   * most DELTA_PREMERGE_STATE_BYTES_MAX of base state) and then writes the
   * archive in one pass, head first: no spool.
   */
  readonly readRange?: (offset: number, length: number) => Promise<Uint8Array>;
}

/** DELTA_HASH_AHEAD: hash calls left waiting at most (members kept gunzipped until hashed, blocks copied). */
const DELTA_HASH_AHEAD = 8;

/** DELTA_INFLATE_AHEAD: base members gunzipped ahead of the one being written (threadpool work in flight). */
const DELTA_INFLATE_AHEAD = 4;

/**
 * DELTA_MERGE_RECORDS_PER_TURN: records merged (base records and changes)
 * between two turns of the event loop (SnapshotIo.yieldTurn). A changed
 * member of 1 MiB merged with its changes in one go held a busy leader's main
 * thread for 110-160 ms under bench:write (10k puts of 100 bytes between
 * snapshots, every member changed), every client request waiting behind it.
 */
export const DELTA_MERGE_RECORDS_PER_TURN = 1024;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** Lent: bytes an ExactReader handed out, and `done`, to call (once) when nothing reads or holds them any more. */
interface Lent {
  readonly bytes: Buffer;
  readonly done: () => void;
}

/** ReaderFrame: a piece of the source as the ExactReader holds it: `refs` views of it are lent out. */
interface ReaderFrame {
  readonly buf: Buffer;
  readonly release: (() => void) | null;
  refs: number;
  /** current: the reader still takes bytes from it. */
  current: boolean;
}

/** JOIN_SPARES_MAX: buffers of joined pieces (a member across two frames) an ExactReader keeps for reuse. */
const JOIN_SPARES_MAX = 8;

/** JOIN_BYTES_MIN: the least size of a buffer for joined pieces (a member of a 1 MiB block, compressed, fits). */
const JOIN_BYTES_MIN = 1024 * 1024 + 64 * 1024;

/**
 * ExactReader cuts a byte stream into pieces of exactly the lengths asked.
 * A piece that lies in one of the source's pieces is a view of it (no copy);
 * one across several is joined into a buffer of the reader's own. Each piece
 * is lent: its `done` says the caller no longer reads or holds it. A source
 * piece that is a BaseFrame is released once the reader has moved past it
 * and every piece lent from it is done; a joined buffer is reused for a
 * later join once done. A piece whose `done` is never called (a member that
 * went on to `out`, a failure) is left to the garbage collector, as is its
 * frame: nothing is reused while anything may still hold it.
 */
class ExactReader {
  readonly #it: AsyncIterator<Uint8Array | BaseFrame>;
  #frame: ReaderFrame = { buf: Buffer.alloc(0), release: null, refs: 0, current: true };
  #pos = 0;
  readonly #joinSpares: Buffer[] = [];
  consumed = 0;
  /** joined / joinsReused: pieces joined across source pieces, and those of them that reused a buffer. */
  joined = 0;
  joinsReused = 0;

  constructor(source: AsyncIterable<Uint8Array | BaseFrame>) {
    this.#it = source[Symbol.asyncIterator]();
  }

  /** take lends the next `n` bytes (see the class comment). */
  async take(n: number): Promise<Lent> {
    if (this.#frame.buf.length - this.#pos >= n) {
      const frame = this.#frame;
      const bytes = frame.buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.consumed += n;
      frame.refs++;
      return { bytes, done: once(() => this.#unref(frame)) };
    }
    // Across source pieces: each piece's frame is held until its bytes are copied into the joined buffer.
    const parts: { readonly frame: ReaderFrame; readonly bytes: Buffer }[] = [];
    let need = n;
    try {
      while (need > 0) {
        if (this.#pos >= this.#frame.buf.length) {
          const r = await this.#it.next();
          if (r.done === true) throw new ArchiveError('truncated', `the base archive ends after ${this.consumed + n - need} bytes`);
          this.#next(r.value);
          continue;
        }
        const k = Math.min(need, this.#frame.buf.length - this.#pos);
        this.#frame.refs++;
        parts.push({ frame: this.#frame, bytes: this.#frame.buf.subarray(this.#pos, this.#pos + k) });
        this.#pos += k;
        need -= k;
      }
      this.consumed += n;
      if (parts.length === 1) {
        const { frame, bytes } = parts.pop() as { readonly frame: ReaderFrame; readonly bytes: Buffer };
        return { bytes, done: once(() => this.#unref(frame)) };
      }
      const at = this.#joinSpares.findIndex((b) => b.length >= n);
      const into = at >= 0 ? (this.#joinSpares.splice(at, 1)[0] as Buffer) : Buffer.allocUnsafeSlow(Math.max(n, JOIN_BYTES_MIN));
      this.joined++;
      if (at >= 0) this.joinsReused++;
      let off = 0;
      for (const p of parts) off += p.bytes.copy(into, off);
      return {
        bytes: into.subarray(0, n),
        done: once(() => {
          if (this.#joinSpares.length < JOIN_SPARES_MAX) this.#joinSpares.push(into);
        }),
      };
    } finally {
      for (const p of parts) this.#unref(p.frame);
    }
  }

  /** skip reads past `n` bytes (nothing of them is kept). */
  async skip(n: number): Promise<void> {
    (await this.take(n)).done();
  }

  /** #next makes `piece` the current frame; the one before is released now if nothing lent from it is held. */
  #next(piece: Uint8Array | BaseFrame): void {
    const old = this.#frame;
    old.current = false;
    this.#settle(old);
    this.#frame = piece instanceof Uint8Array ? { buf: asBuffer(piece), release: null, refs: 0, current: true } : { buf: asBuffer(piece.data), release: piece.release, refs: 0, current: true };
    this.#pos = 0;
  }

  #unref(frame: ReaderFrame): void {
    frame.refs--;
    this.#settle(frame);
  }

  #settle(frame: ReaderFrame): void {
    if (frame.current || frame.refs > 0 || frame.release === null) return;
    const release = frame.release;
    (frame as { release: (() => void) | null }).release = null;
    release();
  }

  /**
   * close ends the source's iteration early (its `return`): a reader of a
   * stored archive (readChunks) closes its file then, not when the garbage
   * collector finds it. Idempotent; never rejects.
   */
  async close(): Promise<void> {
    try {
      await this.#it.return?.();
    } catch {
      // the source failed on its way out: nothing more to release here
    }
  }

  /** end reads whatever is left and checks that nothing is. */
  async end(): Promise<void> {
    if (this.#pos < this.#frame.buf.length) throw new ArchiveError('trailing-garbage', 'the base archive is longer than its member table says');
    for (;;) {
      const r = await this.#it.next();
      if (r.done === true) return;
      const data = r.value instanceof Uint8Array ? r.value : r.value.data;
      if (data.byteLength > 0) throw new ArchiveError('trailing-garbage', 'the base archive is longer than its member table says');
    }
  }
}

/** once: `f`, callable many times, run the first time only. */
function once(f: () => void): () => void {
  let called = false;
  return () => {
    if (called) return;
    called = true;
    f();
  };
}

/**
 * DELTA_WORKER_STATE_BYTES_MIN: the base state from which a delta reads it on
 * a worker thread by default (state-digest.ts: why); below it a worker's
 * start-up (~30–50 ms) costs more than the collections it saves.
 */
export const DELTA_WORKER_STATE_BYTES_MIN = 64 * 1024 * 1024;

/**
 * deltaDigestHome: where a delta reads its base by default: on a worker with
 * the real file system's IO, a base of DELTA_WORKER_STATE_BYTES_MIN or more,
 * and changes in at most a quarter of its members; else here. When most
 * members change, their bytes are merged here anyway, and moving them to and
 * from a worker cost more than it saved (1,800 changes over 1,000 members:
 * 3.7–4.5 s of CPU here, 5.1–5.4 s with the worker, load 10).
 */
export function deltaDigestHome(io: SnapshotIo, table: ArchiveMemberTable, changes: readonly StateChange[]): 'worker' | 'here' {
  if (io !== nodeSnapshotIo || table.state.reduce((n, m) => n + m.stateBytes, 0) < DELTA_WORKER_STATE_BYTES_MIN) return 'here';
  let changed = 0;
  let c = 0;
  for (let i = 0; i < table.state.length && c < changes.length; i++) {
    const upper = (table.state[i + 1] as StateMemberEntry | undefined)?.firstKey;
    let hit = false;
    while (c < changes.length && (upper === undefined || Buffer.compare(asBuffer((changes[c] as StateChange).key), upper) < 0)) {
      hit = true;
      c++;
    }
    if (hit) changed++;
  }
  return changed * 4 <= table.state.length ? 'worker' : 'here';
}

/**
 * boundedHashes: the digest's hash calls not yet done (`hashes`); `bounded`
 * adds one and awaits the oldest past DELTA_HASH_AHEAD (the digest's memory
 * stays bounded).
 */
function boundedHashes(): { readonly hashes: Promise<void>[]; readonly bounded: (done: Promise<void>) => Promise<void> } {
  const hashes: Promise<void>[] = [];
  const bounded = async (done: Promise<void>): Promise<void> => {
    done.catch(() => undefined); // met when awaited
    hashes.push(done);
    while (hashes.length > DELTA_HASH_AHEAD) await hashes.shift();
  };
  return { hashes, bounded };
}

/**
 * mergeMember merges a changed member's records (`state`, whole records) with
 * the changes in its key range (sorted), in key order, into `encode`: a
 * change replaces the record of its key (a null value deletes it). It lets
 * the event loop turn every DELTA_MERGE_RECORDS_PER_TURN records
 * (`turns.merged` counts them across members). The keys and values handed
 * to `encode` point into `state` and the changes.
 */
async function mergeMember(state: Buffer, ch: readonly StateChange[], encode: (key: Buffer, value: Buffer) => void, turns: { merged: number }, io: SnapshotIo): Promise<void> {
  let pos = 0;
  let c = 0;
  while (pos < state.length || c < ch.length) {
    if (++turns.merged >= DELTA_MERGE_RECORDS_PER_TURN) {
      turns.merged = 0;
      await io.yieldTurn(); // keys and values below point into `state`, held until the member is done
    }
    let key: Buffer | null = null;
    let value: Buffer | null = null;
    if (pos < state.length) {
      const kLen = state.readUInt32BE(pos);
      key = state.subarray(pos + 4, pos + 4 + kLen);
      const vLen = state.readUInt32BE(pos + 4 + kLen);
      value = state.subarray(pos + 8 + kLen, pos + 8 + kLen + vLen);
    }
    const change = ch[c];
    const order = change === undefined ? -1 : key === null ? 1 : Buffer.compare(key, asBuffer(change.key));
    if (order < 0) {
      encode(key as Buffer, value as Buffer);
      pos += 8 + (key as Buffer).length + (value as Buffer).length;
    } else {
      const cv = (change as StateChange).value;
      if (cv !== null) encode(asBuffer((change as StateChange).key), asBuffer(cv));
      c++;
      if (order === 0) pos += 8 + (key as Buffer).length + (value as Buffer).length;
    }
  }
}

/**
 * DELTA_PREMERGE_STATE_BYTES_MAX: the base state of the members a delta's
 * changes touch that it merges (and holds, uncompressed and compressed again)
 * before it writes the archive's head; a delta touching more is built in one
 * pass with the compressed state in a spool (written twice).
 */
export const DELTA_PREMERGE_STATE_BYTES_MAX = 32 * 1024 * 1024;

/** DeltaPlan: per base member, the changes in its key range [from, to) of `changes`; the base state of the changed ones. */
interface DeltaPlan {
  readonly from: readonly number[];
  readonly to: readonly number[];
  readonly changedStateBytes: number;
}

/** planDelta: which changes fall in each base member's key range (from its first key to the next member's; the last takes the rest). */
function planDelta(table: ArchiveMemberTable, changes: readonly StateChange[]): DeltaPlan {
  const from: number[] = [];
  const to: number[] = [];
  let next = 0;
  let changedStateBytes = 0;
  for (let i = 0; i < table.state.length; i++) {
    const upper = i + 1 < table.state.length ? (table.state[i + 1] as StateMemberEntry).firstKey : null;
    from.push(next);
    while (next < changes.length && (upper === null || Buffer.compare(asBuffer((changes[next] as StateChange).key), upper) < 0)) next++;
    to.push(next);
    if (next > (from[i] as number)) changedStateBytes += (table.state[i] as StateMemberEntry).stateBytes;
  }
  return { from, to, changedStateBytes };
}

/** MergedMember: a gzip member made by a delta's merge, with the block it compresses (hashed into state.bin's digest in order). */
interface MergedMember {
  readonly member: Buffer;
  readonly info: StateMemberInfo;
  readonly block: Buffer;
}

/** MergedRun: the new members replacing a run of consecutive changed base members [start, end), with what they hold. */
interface MergedRun {
  readonly out: readonly MergedMember[];
  readonly lastKey: Buffer | null;
  readonly bytes: number;
  readonly keys: number;
}

/**
 * premergedDelta: writeArchiveDelta's producer when the base can be read at
 * any offset (DeltaBase.readRange) and its changes touch little of it. Phase
 * 1: each run of consecutive changed members is read (checked), gunzipped,
 * checked against its entries, merged with its changes and compressed again,
 * as the one-pass producer does (the same blocks: one encoder per run, cut
 * at the run's end), held here. Then the new state's size and record count
 * are the base's, less the changed members', plus the runs': the archive is
 * begun, and phase 2 reads the base in order, copying each unchanged member
 * compressed (gunzipped and hashed into state.bin's digest, checked) and
 * putting each run's members in its place. Keys must strictly increase
 * across the whole state (StateFormatError `key-order`).
 */
function premergedDelta(
  base: DeltaBase & { readonly readRange: (offset: number, length: number) => Promise<Uint8Array> },
  changes: readonly StateChange[],
  plan: DeltaPlan,
  digestOn: 'worker' | 'here',
  o: DeltaOptions & { readonly level: number; readonly blockBytes: number; readonly adaptive: boolean; readonly io: SnapshotIo },
): StateMembersProducer {
  const table = base.members;
  const n = table.state.length;
  const changed = (i: number): boolean => (plan.to[i] as number) > (plan.from[i] as number);
  return async (deliver, begin) => {
    // Phase 1: each run of changed members, merged into new members held here.
    const runs = new Map<number, MergedRun>();
    const pre = localStateDigest(o.io, o.blockBytes);
    const turns = { merged: 0 };
    const offsets: number[] = [];
    for (let i = 0, at = table.headBytes; i < n; i++) {
      offsets.push(at);
      at += (table.state[i] as StateMemberEntry).compressedBytes;
    }
    /** mergeRun: the new members of the run [start, end) (start = end = n: a base with no state members, all changes). */
    const mergeRun = async (start: number, end: number): Promise<MergedRun> => {
      const encoder = new StateBlockEncoder(o.blockBytes, o, true);
      const out: MergedMember[] = [];
      const take = async (final: boolean): Promise<void> => {
        for (const { block, info } of encoder.take(final)) out.push({ member: await gzipBlock(block, o.level, o.adaptive, o.io), info: info as StateMemberInfo, block });
      };
      let last: Buffer | null = null;
      const encode = (key: Buffer, value: Buffer): void => {
        encoder.encode({ key, value });
        last = key;
      };
      if (start === n) {
        for (const change of changes) {
          if (++turns.merged >= DELTA_MERGE_RECORDS_PER_TURN) {
            turns.merged = 0;
            await o.io.yieldTurn();
          }
          if (change.value !== null) encode(asBuffer(change.key), asBuffer(change.value));
        }
      }
      for (let j = start; j < end; j++) {
        o.signal?.throwIfAborted();
        const entry = table.state[j] as StateMemberEntry;
        const compressed = asBuffer(await base.readRange(offsets[j] as number, entry.compressedBytes));
        if (compressed.length !== entry.compressedBytes) throw new ArchiveError('truncated', `the base archive ends inside state member ${j}`);
        const state = (await pre.inflate(compressed, entry, true)).state as Buffer;
        await mergeMember(state, changes.slice(plan.from[j], plan.to[j]), encode, turns, o.io);
        await take(false);
        // The member's buffer is reused: the last key, if it lies there, is copied first.
        if (last !== null && (last as Buffer).buffer === state.buffer) last = Buffer.from(last as Buffer);
        pre.release(state);
      }
      await take(true);
      const lastKey = last as Buffer | null;
      return { out, lastKey: lastKey === null ? null : Buffer.from(lastKey), bytes: encoder.bytes, keys: encoder.keys };
    };
    let stateBytes = 0;
    let stateKeys = 0;
    try {
      for (let i = 0; i < n; ) {
        const entry = table.state[i] as StateMemberEntry;
        if (!changed(i)) {
          stateBytes += entry.stateBytes;
          stateKeys += entry.keys;
          i++;
          continue;
        }
        let end = i;
        while (end < n && changed(end)) end++;
        const run = await mergeRun(i, end);
        runs.set(i, run);
        stateBytes += run.bytes;
        stateKeys += run.keys;
        i = end;
      }
      if (n === 0 && changes.length > 0) {
        const run = await mergeRun(n, n);
        runs.set(n, run);
        stateBytes += run.bytes;
        stateKeys += run.keys;
      }
    } finally {
      await pre.close();
    }

    // Phase 2: the head, then the base's members in order with the runs in their places, then the tail.
    await begin({ stateBytes, stateKeys });
    const reader = new ExactReader(base.bytes);
    const digest = digestOn === 'worker' ? startWorkerStateDigest() : localStateDigest(o.io, o.blockBytes);
    const { hashes, bounded } = boundedHashes();
    try {
      /** lastKey: the last key written so far (keys must strictly increase across the whole state). */
      let lastKey: Buffer | null = null;
      let written = 0;
      const after = (key: Buffer, what: string): void => {
        if (lastKey !== null && Buffer.compare(lastKey, key) >= 0) {
          throw new StateFormatError('key-order', `${what}: key 0x${key.subarray(0, 48).toString('hex')} does not come after the one before it`, written);
        }
      };
      const putRun = async (run: MergedRun | undefined): Promise<void> => {
        if (run === undefined) return;
        const first = run.out[0];
        if (first !== undefined) after(first.info.firstKey, 'merged record');
        for (const m of run.out) {
          await bounded(digest.hashBlock(m.block));
          await deliver(m.member, m.info);
        }
        if (run.lastKey !== null) lastKey = run.lastKey;
        written += run.bytes;
      };
      await reader.skip(table.headBytes);
      // Unchanged members are read and gunzipped ahead (by the digest: here or on its worker); a changed member's
      // base bytes are passed over (phase 1 read them), and its run's members put in its place.
      type Pending = { readonly i: number; readonly compressed: Lent | null; readonly inflated: Promise<MemberInflated> | null };
      const pending: Pending[] = [];
      let read = 0;
      const readAhead = async (): Promise<void> => {
        while (pending.length < DELTA_INFLATE_AHEAD && read < n) {
          const entry = table.state[read] as StateMemberEntry;
          const lent = await reader.take(entry.compressedBytes);
          let inflated: Promise<MemberInflated> | null = null;
          if (!changed(read)) {
            inflated = digest.inflate(lent.bytes, entry, false);
            inflated.catch(() => undefined); // met when awaited
          } else {
            lent.done(); // read in phase 1: passed over
          }
          pending.push({ i: read, compressed: changed(read) ? null : lent, inflated });
          read++;
        }
      };
      await readAhead();
      while (pending.length > 0) {
        o.signal?.throwIfAborted();
        const p = pending.shift() as Pending;
        const entry = table.state[p.i] as StateMemberEntry;
        if (p.inflated !== null) {
          const { lastKey: memberLast } = await p.inflated;
          after(entry.firstKey, 'copied member');
          await bounded(digest.hashMember());
          // Delivered after the head: it goes on to `out`, which may hold it (never given back).
          await deliver((p.compressed as Lent).bytes, entry);
          lastKey = memberLast;
          written += entry.stateBytes;
        } else {
          const run = runs.get(p.i);
          runs.delete(p.i);
          await putRun(run);
        }
        await readAhead();
      }
      await putRun(runs.get(n));
      await reader.skip(table.tailBytes);
      await reader.end();
      await Promise.all(hashes);
      return { stateSha256: await digest.digest(), stateBytes, stateKeys };
    } finally {
      // A delta given up part way (superseded, aborted, failed) stops reading its base here.
      await reader.close();
      await digest.close();
    }
  };
}

/** DeltaOptions: writeArchiveFromRecords' options, and where the base's state is gunzipped and hashed. */
export interface DeltaOptions extends RecordsArchiveOptions {
  /** digestOn: `worker` (a thread of its own) or `here`; default: `worker` for a base of DELTA_WORKER_STATE_BYTES_MIN or more on the real file system. */
  readonly digestOn?: 'worker' | 'here';
}

/**
 * writeArchiveDelta writes the archive of the state "base + changes" into
 * `out` (see the file comment). `changes` must be in strictly increasing
 * bytewise key order. Otherwise as writeArchiveFromRecords (gzip options,
 * spool file, result with its member table). Errors: ArchiveError for a base
 * that disagrees with its table, StateFormatError for a record breaking the
 * limits or the order, the errors of `out`.
 */
export async function writeArchiveDelta(
  meta: RecordsArchiveMeta,
  base: DeltaBase,
  changes: readonly StateChange[],
  spoolPath: string,
  out: Writable,
  options: DeltaOptions = {},
): Promise<RecordsArchiveResult> {
  const { level, blockBytes, adaptive } = resolveParallelGzipOptions({
    ...(options.gzipLevel !== undefined ? { level: options.gzipLevel } : {}),
    ...(options.gzipBlockBytes !== undefined ? { blockBytes: options.gzipBlockBytes } : {}),
  });
  const io = options.io ?? nodeSnapshotIo;
  const table = base.members;
  const digestOn = options.digestOn ?? deltaDigestHome(io, table, changes);
  const tableBytes = table.headBytes + table.state.reduce((n, m) => n + m.compressedBytes, 0) + table.tailBytes;
  if (tableBytes !== base.archiveBytes) {
    throw new ArchiveError('size-mismatch', `the member table covers ${tableBytes} bytes, the base archive has ${base.archiveBytes}`);
  }
  for (let i = 1; i < changes.length; i++) {
    if (Buffer.compare(asBuffer((changes[i - 1] as StateChange).key), asBuffer((changes[i] as StateChange).key)) >= 0) {
      throw new StateFormatError('key-order', `changes are not in strictly increasing key order at ${i}`, 0);
    }
  }

  const plan = planDelta(table, changes);
  if (base.readRange !== undefined && plan.changedStateBytes <= DELTA_PREMERGE_STATE_BYTES_MAX) {
    const produce = premergedDelta(base as DeltaBase & { readonly readRange: (offset: number, length: number) => Promise<Uint8Array> }, changes, plan, digestOn, {
      ...options,
      level,
      blockBytes,
      adaptive,
      io,
    });
    return writeArchiveFromMembers(meta, produce, spoolPath, out, {
      gzipLevel: level,
      io,
      ...(options.onStateProgress !== undefined ? { onStateProgress: options.onStateProgress } : {}),
    });
  }

  return writeArchiveFromMembers(
    meta,
    async (deliver) => {
      const reader = new ExactReader(base.bytes);
      const digest = digestOn === 'worker' ? startWorkerStateDigest() : localStateDigest(io, blockBytes);
      const { hashes, bounded } = boundedHashes();
      try {
        // Blocks are compressed one at a time: each goes back to the pool once its member is made.
        const pool = new BlockPool(blockBytes, 2);
        const encoder = new StateBlockEncoder(blockBytes, options, true, pool);
        let stateBytes = 0;
        let stateKeys = 0;
        /** lastKey: the last key written so far (keys must strictly increase across the whole state). */
        let lastKey: Buffer | null = null;
        const after = (key: Buffer, what: string): void => {
          if (lastKey !== null && Buffer.compare(lastKey, key) >= 0) {
            throw new StateFormatError('key-order', `${what}: key 0x${key.subarray(0, 48).toString('hex')} does not come after the one before it`, stateBytes);
          }
        };
        /** flushEncoded compresses and delivers the encoder's full blocks (all of them with `final`). */
        const flushEncoded = async (final: boolean): Promise<void> => {
          for (const { block, info } of encoder.take(final)) {
            // The block goes back to the pool once its compression and its hash are done with it (hashed here
            // where it lies; the worker's digest copies it at once).
            const hashed = digest.hashBlock(block);
            const read = digestOn === 'worker' ? Promise.resolve() : hashed.catch(() => undefined);
            await bounded(hashed);
            const member = await gzipBlock(block, level, adaptive, io).finally(() => void read.then(() => pool.give(block)));
            await deliver(member, info as StateMemberInfo);
          }
        };
        let next = 0;
        const turns = { merged: 0 };
        const encode = (key: Buffer, value: Buffer): void => {
          after(key, 'merged record');
          encoder.encode({ key, value });
          lastKey = key;
        };

        await reader.skip(table.headBytes);
        // Members read and gunzipped ahead (by the digest: here or on its worker), each with the changes that fall
        // in its key range; the digest hashes state.bin in order: copied members' bytes and the merged blocks.
        type Pending = { readonly entry: StateMemberEntry; readonly compressed: Lent; readonly inflated: Promise<MemberInflated>; readonly changes: readonly StateChange[] };
        const pending: Pending[] = [];
        let read = 0;
        const readAhead = async (): Promise<void> => {
          while (pending.length < DELTA_INFLATE_AHEAD && read < table.state.length) {
            const entry = table.state[read] as StateMemberEntry;
            const upper = read + 1 < table.state.length ? (table.state[read + 1] as StateMemberEntry).firstKey : null;
            const from = next;
            while (next < changes.length && (upper === null || Buffer.compare(asBuffer((changes[next] as StateChange).key), upper) < 0)) next++;
            const compressed = await reader.take(entry.compressedBytes);
            const inflated = digest.inflate(compressed.bytes, entry, next > from);
            inflated.catch(() => undefined); // met when awaited
            pending.push({ entry, compressed, inflated, changes: changes.slice(from, next) });
            read++;
          }
        };
        await readAhead();
        while (pending.length > 0) {
          options.signal?.throwIfAborted();
          const p = pending.shift() as Pending;
          const { lastKey: memberLast, state } = await p.inflated;
          if (state === null) {
            // Unchanged: copied compressed, as it is (after the blocks merged before it).
            await flushEncoded(true);
            after(p.entry.firstKey, 'copied member');
            await bounded(digest.hashMember());
            // The writer gives the bytes back once they are in the spool (the gunzip is done with them: awaited above).
            await deliver(p.compressed.bytes, p.entry, p.compressed.done);
            stateBytes += p.entry.stateBytes;
            stateKeys += p.entry.keys;
            lastKey = memberLast;
          } else {
            // Changed: its records merged with the changes, encoded into fresh blocks; its compressed bytes were
            // read by the gunzip (done: awaited above) and are not kept.
            p.compressed.done();
            await mergeMember(state, p.changes, encode, turns, io);
            await flushEncoded(false);
            // The member's buffer is reused: nothing may still point into it (encode copies; the last key is copied here).
            if (lastKey !== null && (lastKey as Buffer).buffer === state.buffer) lastKey = Buffer.from(lastKey as Buffer);
            digest.release(state);
          }
          await readAhead();
        }
        // Changes past every member (or into a base with no state at all).
        for (; next < changes.length; next++) {
          if (++turns.merged >= DELTA_MERGE_RECORDS_PER_TURN) {
            turns.merged = 0;
            await io.yieldTurn();
          }
          const change = changes[next] as StateChange;
          if (change.value !== null) encode(asBuffer(change.key), asBuffer(change.value));
        }
        await flushEncoded(true);
        await reader.skip(table.tailBytes);
        await reader.end();
        await Promise.all(hashes);
        return { stateSha256: await digest.digest(), stateBytes: stateBytes + encoder.bytes, stateKeys: stateKeys + encoder.keys };
      } finally {
        // A delta given up part way (superseded, aborted, failed) stops reading its base here.
        await reader.close();
        await digest.close();
      }
    },
    spoolPath,
    out,
    { gzipLevel: level, io, ...(options.onStateProgress !== undefined ? { onStateProgress: options.onStateProgress } : {}) },
  );
}

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
 * gunzipped (on the threadpool, several ahead) and hashed in order. The
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
 */
import { createHash } from 'node:crypto';
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
} from './archive-writer.js';
import { ArchiveError, StateFormatError } from './errors.js';
import { BlockPool } from './block-pool.js';
import { gzipBlock, resolveParallelGzipOptions } from './parallel-gzip.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';

/** StateChange: a key's value now (null: deleted) — one entry of the changes since the base archive. */
export interface StateChange {
  readonly key: Uint8Array;
  readonly value: Uint8Array | null;
}

/** DeltaBase: the older archive: its bytes in order (already checked against its recorded chunk hashes) and its member table. */
export interface DeltaBase {
  readonly bytes: AsyncIterable<Uint8Array>;
  readonly archiveBytes: number;
  readonly members: ArchiveMemberTable;
}

/** DELTA_INFLATE_AHEAD: base members gunzipped ahead of the one being written (threadpool work in flight). */
const DELTA_INFLATE_AHEAD = 4;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** ExactReader cuts a byte stream into pieces of exactly the lengths asked (no copy when a piece lies in one chunk). */
class ExactReader {
  readonly #it: AsyncIterator<Uint8Array>;
  #buf: Buffer = Buffer.alloc(0);
  #pos = 0;
  consumed = 0;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#it = source[Symbol.asyncIterator]();
  }

  async take(n: number): Promise<Buffer> {
    if (this.#buf.length - this.#pos >= n) {
      const out = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.consumed += n;
      return out;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (this.#pos >= this.#buf.length) {
        const r = await this.#it.next();
        if (r.done === true) throw new ArchiveError('truncated', `the base archive ends after ${this.consumed + n - need} bytes`);
        this.#buf = asBuffer(r.value);
        this.#pos = 0;
        continue;
      }
      const k = Math.min(need, this.#buf.length - this.#pos);
      parts.push(this.#buf.subarray(this.#pos, this.#pos + k));
      this.#pos += k;
      need -= k;
    }
    this.consumed += n;
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, n);
  }

  /** end reads whatever is left and checks that nothing is. */
  async end(): Promise<void> {
    if (this.#pos < this.#buf.length) throw new ArchiveError('trailing-garbage', 'the base archive is longer than its member table says');
    for (;;) {
      const r = await this.#it.next();
      if (r.done === true) return;
      if (r.value.byteLength > 0) throw new ArchiveError('trailing-garbage', 'the base archive is longer than its member table says');
    }
  }
}

/** INFLATE_PIECE_BYTES: zlib's output pieces when a member is gunzipped into a reused buffer (below glibc's 128 KiB mmap threshold). */
const INFLATE_PIECE_BYTES = 112 * 1024;

/**
 * inflate gunzips one member into `into` (reused across members: no fresh
 * 1 MiB allocation, mapped and faulted in, per member) when it is large
 * enough, else into a new buffer; its output size is known and more output
 * than that is refused. Returns the member's bytes (a view of `into`).
 */
async function inflate(io: SnapshotIo, member: Buffer, stateBytes: number, into: Buffer | null): Promise<Buffer> {
  try {
    if (into === null || into.length < stateBytes) {
      return await io.gunzip(member, { chunkSize: Math.max(64 * 1024, stateBytes + 1024), maxOutputLength: Math.max(1, stateBytes) });
    }
    return await new Promise<Buffer>((resolve, reject) => {
      const g = io.createGunzip({ chunkSize: INFLATE_PIECE_BYTES });
      let at = 0;
      g.on('data', (piece: Buffer) => {
        if (at + piece.length > stateBytes) {
          g.destroy(new Error(`more than the ${stateBytes} bytes the member table says`));
          return;
        }
        piece.copy(into, at);
        at += piece.length;
      });
      g.once('end', () => resolve(into.subarray(0, at)));
      g.once('error', reject);
      g.end(member);
    });
  } catch (err) {
    throw new ArchiveError('corrupt-gzip', `a state member of the base archive does not gunzip: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * walkRecords checks that `state` is whole records matching `entry` (size,
 * count, first key) and returns the offset of its last record's key, for
 * the ordering check across members. Errors: ArchiveError `size-mismatch`.
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
  options: RecordsArchiveOptions = {},
): Promise<RecordsArchiveResult> {
  const { level, blockBytes, adaptive } = resolveParallelGzipOptions({
    ...(options.gzipLevel !== undefined ? { level: options.gzipLevel } : {}),
    ...(options.gzipBlockBytes !== undefined ? { blockBytes: options.gzipBlockBytes } : {}),
  });
  const io = options.io ?? nodeSnapshotIo;
  const table = base.members;
  const tableBytes = table.headBytes + table.state.reduce((n, m) => n + m.compressedBytes, 0) + table.tailBytes;
  if (tableBytes !== base.archiveBytes) {
    throw new ArchiveError('size-mismatch', `the member table covers ${tableBytes} bytes, the base archive has ${base.archiveBytes}`);
  }
  for (let i = 1; i < changes.length; i++) {
    if (Buffer.compare(asBuffer((changes[i - 1] as StateChange).key), asBuffer((changes[i] as StateChange).key)) >= 0) {
      throw new StateFormatError('key-order', `changes are not in strictly increasing key order at ${i}`, 0);
    }
  }

  return writeArchiveFromMembers(
    meta,
    async (deliver) => {
      const reader = new ExactReader(base.bytes);
      const stateHash = createHash('sha256');
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
        if (final) encoder.finish();
        const ready = encoder.ready.splice(0);
        const info = encoder.readyInfo.splice(0);
        for (let i = 0; i < ready.length; i++) {
          const block = ready[i] as Buffer;
          stateHash.update(block);
          const member = await gzipBlock(block, level, adaptive, io).finally(() => pool.give(block));
          await deliver(member, info[i] as StateMemberInfo);
        }
      };
      let next = 0;
      const encode = (key: Buffer, value: Buffer): void => {
        after(key, 'merged record');
        encoder.encode({ key, value });
        lastKey = key;
      };

      await reader.take(table.headBytes);
      // Members read and gunzipped ahead, each with the changes that fall in its key range.
      type Pending = { readonly entry: StateMemberEntry; readonly compressed: Buffer; readonly state: Promise<Buffer>; readonly into: Buffer; readonly changes: readonly StateChange[] };
      const pending: Pending[] = [];
      /** spare: member buffers free for the next inflate (each goes back once its member is written). */
      const spare: Buffer[] = [];
      let read = 0;
      const readAhead = async (): Promise<void> => {
        while (pending.length < DELTA_INFLATE_AHEAD && read < table.state.length) {
          const entry = table.state[read] as StateMemberEntry;
          const upper = read + 1 < table.state.length ? (table.state[read + 1] as StateMemberEntry).firstKey : null;
          const from = next;
          while (next < changes.length && (upper === null || Buffer.compare(asBuffer((changes[next] as StateChange).key), upper) < 0)) next++;
          const compressed = await reader.take(entry.compressedBytes);
          const into = spare.pop() ?? Buffer.allocUnsafeSlow(blockBytes);
          const state = inflate(io, compressed, entry.stateBytes, into);
          state.catch(() => undefined); // met when awaited
          pending.push({ entry, compressed, state, into, changes: changes.slice(from, next) });
          read++;
        }
      };
      await readAhead();
      while (pending.length > 0) {
        options.signal?.throwIfAborted();
        const p = pending.shift() as Pending;
        const state = await p.state;
        const memberLast = walkRecords(state, p.entry, stateBytes + encoder.bytes);
        if (p.changes.length === 0) {
          // Unchanged: copied compressed, as it is (after the blocks merged before it).
          await flushEncoded(true);
          after(p.entry.firstKey, 'copied member');
          stateHash.update(state);
          await deliver(p.compressed, p.entry);
          stateBytes += p.entry.stateBytes;
          stateKeys += p.entry.keys;
          lastKey = Buffer.from(memberLast);
        } else {
          // Changed: its records merged with the changes, encoded into fresh blocks.
          let pos = 0;
          let c = 0;
          const ch = p.changes;
          while (pos < state.length || c < ch.length) {
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
          await flushEncoded(false);
        }
        // The member's buffer is reused: nothing may still point into it (encode copies; the last key is copied here).
        if (lastKey !== null && (lastKey as Buffer).buffer === p.into.buffer) lastKey = Buffer.from(lastKey as Buffer);
        spare.push(p.into);
        await readAhead();
      }
      // Changes past every member (or into a base with no state at all).
      for (; next < changes.length; next++) {
        const change = changes[next] as StateChange;
        if (change.value !== null) encode(asBuffer(change.key), asBuffer(change.value));
      }
      await flushEncoded(true);
      await reader.take(table.tailBytes);
      await reader.end();
      return { stateSha256: stateHash.digest('hex'), stateBytes: stateBytes + encoder.bytes, stateKeys: stateKeys + encoder.keys };
    },
    spoolPath,
    out,
    { gzipLevel: level, io, ...(options.onStateProgress !== undefined ? { onStateProgress: options.onStateProgress } : {}) },
  );
}

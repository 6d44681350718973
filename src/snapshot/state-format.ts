/**
 * The state stream (state.bin): a key-value state serialised as records
 *
 *   u32be keyLen, key bytes, u32be valueLen, value bytes
 *
 * repeated, and nothing else (no header, no trailer, no count: the archive's
 * meta.json carries stateBytes and stateKeys, SHA256SUMS its digest).
 *
 * Both directions stream: the encoder pulls one batch from its source only when
 * its reader wants bytes (backpressure), the decoder yields batches as bytes
 * arrive. Neither ever holds more than one batch and one record.
 */
import { Readable } from 'node:stream';

import type { RecordsDigest } from '../hash/records-digest.js';
import { StateFormatError } from './errors.js';

/** StateRecord is one key and its value. */
export interface StateRecord {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
}

/** STATE_KEY_BYTES_MAX: the default longest key (4 KiB, the KV store's own limit). */
export const STATE_KEY_BYTES_MAX = 4 * 1024;
/** STATE_VALUE_BYTES_MAX: the default longest value (1 MiB, the KV store's own limit). */
export const STATE_VALUE_BYTES_MAX = 1024 * 1024;
/** STATE_RECORD_OVERHEAD_BYTES: the two u32 lengths around each record. */
export const STATE_RECORD_OVERHEAD_BYTES = 8;

/** StateLimits bound each record; both default to the KV store's limits. */
export interface StateLimits {
  readonly keyBytesMax?: number;
  readonly valueBytesMax?: number;
}

/** DecodeStateOptions: record limits plus the largest batch yielded (records and bytes). */
export interface DecodeStateOptions extends StateLimits {
  /** at most this many records per yielded batch (default 4096). */
  readonly batchKeysMax?: number;
  /** a batch is yielded once it holds this many key+value bytes (default 1 MiB). */
  readonly batchBytesMax?: number;
  /**
   * views: true to yield keys and values that lie whole in one input chunk as
   * views of that chunk instead of copies (a field split across chunks is
   * still reassembled into a fresh buffer). No copy and no garbage per record,
   * but a record kept pins its chunk, and the input must not reuse a chunk's
   * memory once it has handed it over (Node's streams, zlib and file reads do
   * not). For a consumer that copies each record at once (an install into
   * RocksDB). Default false.
   */
  readonly views?: boolean;
  /**
   * release: with views, the input's chunks may be reused once released: each chunk is handed to `release` once no
   * record yielded or still to be yielded is a view of it (after the consumer asked for the batch after the last
   * one that viewed it; a field split across chunks is copied first). A batch then no longer ends with its input
   * chunk: it may view several (at most batchBytesMax of records, plus the chunks' parts around them). For a
   * consumer done with each batch when it asks for the next (an install: StateStore.installState copies each
   * record at once); checkedStateRecords copies the one key it keeps. A chunk is not released when the read fails
   * or is left early (left to the GC).
   */
  readonly release?: (chunk: Uint8Array) => void;
}

/**
 * INSTALL_DECODE_OPTIONS: how an install decodes state.bin (with its own
 * limits added): records as views of the gunzipped chunks, not copies (the
 * install copies each record into its write batch at once), in batches of at
 * most one install write (2 MiB, storage's INSTALL_WRITE_BYTES): the install
 * writes each batch whole, and a batch's views keep its chunks alive (a batch
 * also ends with its input chunk: from readArchive, 256 KiB at most; with a
 * `release` it may view several chunks of a PiecePool, given back once the
 * next batch is asked for).
 */
export const INSTALL_DECODE_OPTIONS: DecodeStateOptions = { views: true, batchKeysMax: 16_384, batchBytesMax: 2 * 1024 * 1024 };

const OUTPUT_CHUNK_BYTES = 64 * 1024;
/** values at least this long are pushed as they are instead of being copied into the output chunk. */
const ZERO_COPY_VALUE_BYTES = 16 * 1024;

function checkLimit(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > 0xffff_ffff) {
    throw new RangeError(`${name} must be a whole number in [${min}, 2^32-1], got ${value}`);
  }
  return value;
}

/**
 * StateRecordStream is the Readable returned by encodeStateRecords. `keys` and
 * `bytes` count the records and bytes produced so far (final once it has ended).
 */
export class StateRecordStream extends Readable {
  private readonly sourceIterator: AsyncIterator<readonly StateRecord[]>;
  private readonly keyBytesMax: number;
  private readonly valueBytesMax: number;
  private pulling = false;
  private out: Buffer = Buffer.allocUnsafe(OUTPUT_CHUNK_BYTES);
  private outBytes = 0;
  private keysCount = 0;
  private bytesCount = 0;

  constructor(source: AsyncIterable<readonly StateRecord[]>, limits: StateLimits = {}) {
    super({ highWaterMark: OUTPUT_CHUNK_BYTES * 4 });
    this.sourceIterator = source[Symbol.asyncIterator]();
    this.keyBytesMax = checkLimit('keyBytesMax', limits.keyBytesMax ?? STATE_KEY_BYTES_MAX, 1);
    this.valueBytesMax = checkLimit('valueBytesMax', limits.valueBytesMax ?? STATE_VALUE_BYTES_MAX, 0);
  }

  /** keys: records encoded so far. */
  get keys(): number {
    return this.keysCount;
  }

  /** bytes: bytes produced so far. */
  get bytes(): number {
    return this.bytesCount;
  }

  override _read(): void {
    if (this.pulling) return;
    this.pulling = true;
    void this.pump();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const ret = this.sourceIterator.return?.();
    if (ret === undefined) {
      callback(err);
      return;
    }
    ret.then(
      () => callback(err),
      (e: unknown) => callback(err ?? (e instanceof Error ? e : new Error(String(e)))),
    );
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const next = await this.sourceIterator.next();
        if (this.destroyed) return;
        if (next.done === true) {
          this.flush();
          this.push(null);
          return;
        }
        let wantMore = true;
        for (const record of next.value) {
          wantMore = this.encode(record) && wantMore;
        }
        if (!wantMore) {
          this.pulling = false;
          return;
        }
      }
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** encode appends one record; returns false when the reader wants no more for now. */
  private encode(record: StateRecord): boolean {
    const { key, value } = record;
    const at = this.bytesCount + this.outBytes;
    if (key.length === 0) throw new StateFormatError('empty-key', 'a record has an empty key', at);
    if (key.length > this.keyBytesMax) {
      throw new StateFormatError('key-too-large', `key of ${key.length} bytes, more than ${this.keyBytesMax}`, at);
    }
    if (value.length > this.valueBytesMax) {
      throw new StateFormatError(
        'value-too-large',
        `value of ${value.length} bytes, more than ${this.valueBytesMax}`,
        at,
      );
    }
    this.keysCount += 1;
    let wantMore = true;
    const recordBytes = STATE_RECORD_OVERHEAD_BYTES + key.length + value.length;
    if (value.length >= ZERO_COPY_VALUE_BYTES) {
      // header, key and value length go through the output chunk; the value is pushed as it is.
      if (this.outBytes + 8 + key.length > this.out.length) wantMore = this.flush() && wantMore;
      this.writeU32(key.length);
      this.writeBytes(key);
      this.writeU32(value.length);
      wantMore = this.flush() && wantMore;
      this.bytesCount += value.length;
      return this.push(Buffer.from(value.buffer, value.byteOffset, value.length)) && wantMore;
    }
    if (this.outBytes + recordBytes > this.out.length) wantMore = this.flush() && wantMore;
    this.writeU32(key.length);
    this.writeBytes(key);
    this.writeU32(value.length);
    this.writeBytes(value);
    if (this.outBytes >= this.out.length) wantMore = this.flush() && wantMore;
    return wantMore;
  }

  private writeU32(n: number): void {
    this.out.writeUInt32BE(n, this.outBytes);
    this.outBytes += 4;
  }

  private writeBytes(bytes: Uint8Array): void {
    this.out.set(bytes, this.outBytes);
    this.outBytes += bytes.length;
  }

  /** flush pushes the pending output chunk (if any); returns push's answer. */
  private flush(): boolean {
    if (this.outBytes === 0) return true;
    const chunk = this.out.subarray(0, this.outBytes);
    this.bytesCount += this.outBytes;
    this.out = Buffer.allocUnsafe(OUTPUT_CHUNK_BYTES);
    this.outBytes = 0;
    return this.push(chunk);
  }
}

/**
 * encodeStateRecords turns batches of records into state.bin bytes. The source
 * is pulled one batch at a time, only while the reader wants bytes. The stream
 * fails with StateFormatError for an empty key or a key/value beyond the
 * limits (so nothing is written that decodeStateRecords would refuse), and with
 * the source's own error if it throws. Destroying the stream closes the source.
 */
export function encodeStateRecords(
  source: AsyncIterable<readonly StateRecord[]>,
  limits: StateLimits = {},
): StateRecordStream {
  return new StateRecordStream(source, limits);
}

type Phase = 'keyLen' | 'key' | 'valueLen' | 'value';

/**
 * decodeStateRecords reads state.bin bytes and yields batches of records (each
 * key and value is a fresh copy, so a batch does not pin the input's chunks;
 * with options.views, views of the input where they lie in one chunk).
 * A record split across chunks is reassembled. Fails with StateFormatError:
 * `truncated` when the input ends inside a record, `key-too-large` /
 * `value-too-large` as soon as a length beyond the limits is read (before its
 * bytes are buffered), `empty-key` for a zero-length key; and with the input's
 * own error if it fails. Leaving the loop early destroys the input.
 */
export async function* decodeStateRecords(
  input: AsyncIterable<Uint8Array | string>,
  options: DecodeStateOptions = {},
): AsyncGenerator<StateRecord[], void, undefined> {
  const keyBytesMax = checkLimit('keyBytesMax', options.keyBytesMax ?? STATE_KEY_BYTES_MAX, 1);
  const valueBytesMax = checkLimit('valueBytesMax', options.valueBytesMax ?? STATE_VALUE_BYTES_MAX, 0);
  const batchKeysMax = checkLimit('batchKeysMax', options.batchKeysMax ?? 4096, 1);
  const batchBytesMax = checkLimit('batchBytesMax', options.batchBytesMax ?? 1024 * 1024, 1);
  const views = options.views === true;
  const release = views ? (options.release ?? null) : null;
  /** held (with release): the chunks the current batch, or the record being read, may view (the current one last). */
  let held: Buffer[] = [];

  let phase: Phase = 'keyLen';
  let need = 4;
  let parts: Buffer[] = [];
  let partBytes = 0;
  let key: Uint8Array = new Uint8Array(0);
  let recordStart = 0;
  let consumed = 0;
  let batch: StateRecord[] = [];
  let batchBytes = 0;

  for await (const raw of input) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw) : Buffer.from(raw.buffer, raw.byteOffset, raw.length);
    if (release !== null) held.push(chunk);
    let pos = 0;
    while (pos < chunk.length || (phase === 'value' && need === 0)) {
      let field: Buffer;
      if (need === 0) {
        field = Buffer.alloc(0);
      } else if (partBytes === 0 && need === 4 && (phase === 'keyLen' || phase === 'valueLen') && chunk.length - pos >= 4) {
        // A length whole in this chunk is read where it lies: no view made for it (two per record, a million per GB).
        field = chunk;
        pos += 4;
        consumed += 4;
      } else {
        const n = Math.min(need - partBytes, chunk.length - pos);
        const piece = chunk.subarray(pos, pos + n);
        pos += n;
        consumed += n;
        if (partBytes === 0 && n === need) {
          field = piece;
        } else {
          parts.push(piece);
          partBytes += n;
          if (partBytes < need) continue;
          field = Buffer.concat(parts, need);
          parts = [];
          partBytes = 0;
        }
      }
      // A length read where it lies: its 4 bytes end at pos.
      const lenAt = field === chunk ? pos - 4 : 0;
      switch (phase) {
        case 'keyLen': {
          const len = field.readUInt32BE(lenAt);
          if (len === 0) throw new StateFormatError('empty-key', 'a record has an empty key', recordStart);
          if (len > keyBytesMax) {
            throw new StateFormatError('key-too-large', `key length ${len}, more than ${keyBytesMax}`, recordStart);
          }
          phase = 'key';
          need = len;
          break;
        }
        case 'key':
          key = views ? field : new Uint8Array(field);
          phase = 'valueLen';
          need = 4;
          break;
        case 'valueLen': {
          const len = field.readUInt32BE(lenAt);
          if (len > valueBytesMax) {
            throw new StateFormatError(
              'value-too-large',
              `value length ${len}, more than ${valueBytesMax}`,
              recordStart,
            );
          }
          phase = 'value';
          need = len;
          break;
        }
        case 'value': {
          batch.push({ key, value: views ? field : new Uint8Array(field) });
          batchBytes += key.length + field.length;
          phase = 'keyLen';
          need = 4;
          recordStart = consumed;
          if (batch.length >= batchKeysMax || batchBytes >= batchBytesMax) {
            const full = batch;
            batch = [];
            batchBytes = 0;
            yield full;
            if (release !== null) {
              // Yielded at a record's end (nothing of the next is read yet): only the rest of this chunk is viewed now.
              for (const c of held) if (c !== chunk) release(c);
              held = [chunk];
            }
          }
          break;
        }
      }
    }
    if (batch.length > 0 && release === null) {
      const full = batch;
      batch = [];
      batchBytes = 0;
      yield full;
    }
  }
  if (release !== null) {
    if (batch.length > 0) yield batch;
    if (phase === 'keyLen' && partBytes === 0) for (const c of held) release(c);
  }
  if (phase !== 'keyLen' || partBytes > 0) {
    throw new StateFormatError(
      'truncated',
      `the stream ends inside a record (reading its ${phase === 'keyLen' ? 'key length' : phase === 'valueLen' ? 'value length' : phase}, ${consumed - recordStart} of its bytes seen)`,
      recordStart,
    );
  }
}

/**
 * countStateKeys reads a whole state stream and returns the number of records
 * (validating every record against the limits on the way).
 */
export async function countStateKeys(input: AsyncIterable<Uint8Array | string>, limits: StateLimits = {}): Promise<number> {
  let keys = 0;
  for await (const batch of decodeStateRecords(input, limits)) keys += batch.length;
  return keys;
}

/** StateDeclared: what meta.json says of state.bin (ArchiveMeta's stateKeys and stateBytes). */
export interface StateDeclared {
  readonly stateKeys: number;
  readonly stateBytes: number;
}

/** showKey: a key for an error message (printable ASCII as is, else hex; long keys cut). */
function showKey(key: Uint8Array): string {
  const head = key.subarray(0, 48);
  const printable = head.every((b) => b >= 0x20 && b < 0x7f);
  const shown = printable ? JSON.stringify(Buffer.from(head).toString('latin1')) : `0x${Buffer.from(head).toString('hex')}`;
  return key.length > head.length ? `${shown}… (${key.length} bytes)` : shown;
}

/**
 * checkedStateRecords decodes state.bin like decodeStateRecords (same
 * options, same errors: empty key, key or value beyond the limits, a record
 * running past the end) and checks what a state must be to be installed:
 * keys strictly increasing in bytewise order (so no key twice), and exactly
 * `declared.stateKeys` records in exactly `declared.stateBytes` bytes. It
 * yields the batches as they are checked (one pass; it keeps only the last
 * key), so it can feed an install or just validate. Fails with
 * StateFormatError `key-order` or `count-mismatch` (besides the decoder's
 * codes), naming the record and its byte offset.
 */
export async function* checkedStateRecords(
  input: AsyncIterable<Uint8Array | string>,
  declared: StateDeclared,
  options: DecodeStateOptions = {},
): AsyncGenerator<StateRecord[], void, undefined> {
  let prev: Uint8Array | null = null;
  let keys = 0;
  let bytes = 0;
  const release = options.views === true && options.release !== undefined;
  for await (const batch of decodeStateRecords(input, options)) {
    for (const r of batch) {
      if (prev !== null) {
        const order = Buffer.compare(prev, r.key);
        if (order === 0) throw new StateFormatError('key-order', `record ${keys + 1}: key ${showKey(r.key)} appears twice`, bytes);
        if (order > 0) {
          throw new StateFormatError(
            'key-order',
            `record ${keys + 1}: key ${showKey(r.key)} comes after ${showKey(prev)}; keys must be strictly increasing`,
            bytes,
          );
        }
      }
      prev = r.key;
      keys += 1;
      if (keys > declared.stateKeys) {
        throw new StateFormatError('count-mismatch', `state.bin holds more than the ${declared.stateKeys} records meta.json declares (stateKeys)`, bytes);
      }
      bytes += STATE_RECORD_OVERHEAD_BYTES + r.key.length + r.value.length;
    }
    yield batch;
    // The decoder may release the chunks this batch viewed once asked for the next one: the key kept is copied.
    if (release && prev !== null) prev = Buffer.from(prev);
  }
  if (keys !== declared.stateKeys) {
    throw new StateFormatError('count-mismatch', `state.bin holds ${keys} records but meta.json declares stateKeys ${declared.stateKeys}`, bytes);
  }
  if (bytes !== declared.stateBytes) {
    throw new StateFormatError('count-mismatch', `state.bin holds ${bytes} bytes of records but meta.json declares stateBytes ${declared.stateBytes}`, bytes);
  }
}

/**
 * StateScan: what scanStateRecords found in a valid state.bin: its records,
 * and for each prefix it was asked to count (countPrefixes, in that order)
 * the records whose key starts with it.
 */
export interface StateScan {
  readonly keys: number;
  readonly prefixed: readonly number[];
}

/**
 * ScanDigest: scanStateRecords also hashes the records `keep` accepts (given
 * each key where it lies: buf[start, end)) into `into`, in state.bin's order
 * and framing (RecordsDigest), in the same walk.
 */
export interface ScanDigest {
  readonly into: RecordsDigest;
  readonly keep?: (buf: Buffer, start: number, end: number) => boolean;
}

/** COMPARE_IN_JS_BYTES: keys up to this long are compared byte by byte here; a call into Buffer.compare costs more. */
const COMPARE_IN_JS_BYTES = 64;

/** compareKeys compares a[aStart, aEnd) with b[bStart, bEnd) bytewise (as Buffer.compare): negative, 0 or positive. */
function compareKeys(a: Buffer, aStart: number, aEnd: number, b: Buffer, bStart: number, bEnd: number): number {
  const aLen = aEnd - aStart;
  const bLen = bEnd - bStart;
  if (aLen > COMPARE_IN_JS_BYTES || bLen > COMPARE_IN_JS_BYTES) return a.compare(b, bStart, bEnd, aStart, aEnd);
  const n = aLen < bLen ? aLen : bLen;
  for (let i = 0; i < n; i++) {
    const d = (a[aStart + i] as number) - (b[bStart + i] as number);
    if (d !== 0) return d;
  }
  return aLen - bLen;
}

/**
 * scanStateRecords checks a whole state.bin as checkedStateRecords does (the
 * same limits, StateFormatError codes and messages: empty key, key or value
 * beyond the limits as soon as its length is read, a record running past the
 * end, keys strictly increasing, exactly `declared.stateKeys` records in
 * exactly `declared.stateBytes` bytes) without decoding it into records: it
 * walks the lengths in each chunk and compares each key where it lies with
 * the last one (kept as where it lies in its chunk, not copied; a key split
 * across chunks is put together, as the decoder does). No object per record:
 * a decode of 1M records made 3M objects (a record and two views) for the
 * garbage collector, for a check that keeps none of them (issue 15: the
 * leader's upload check and the CLI's, before a restore). Keys starting with
 * each of `countPrefixes` are counted apart (`prefixed`, one count per prefix; the prefixes may nest). One difference from
 * checkedStateRecords on an input with several faults: it reports the first
 * one in the bytes, where the decoder may report a later length or truncation
 * within the same batch before an earlier key-order fault. The input must not
 * reuse a chunk's memory once handed over (see DecodeStateOptions.views).
 * With `digest` (ScanDigest) the records it keeps are hashed on the way.
 */
export async function scanStateRecords(
  input: AsyncIterable<Uint8Array | string>,
  declared: StateDeclared,
  limits: StateLimits & {
    readonly countPrefixes?: readonly Uint8Array[];
    readonly digest?: ScanDigest;
    /** release: each input chunk, once read (the last key and a key split across chunks, which the scan keeps, copied first): it may be reused then (PiecePool). */
    readonly release?: (chunk: Uint8Array) => void;
  } = {},
): Promise<StateScan> {
  const keyBytesMax = checkLimit('keyBytesMax', limits.keyBytesMax ?? STATE_KEY_BYTES_MAX, 1);
  const valueBytesMax = checkLimit('valueBytesMax', limits.valueBytesMax ?? STATE_VALUE_BYTES_MAX, 0);
  const prefixes = (limits.countPrefixes ?? []).map((p) => Buffer.from(p));
  const into = limits.digest?.into ?? null;
  const keep = limits.digest?.keep ?? null;
  const release = limits.release ?? null;
  /** hashing: the current record goes into the digest (decided once its key is whole). */
  let hashing = false;
  /** 0 key length, 1 key, 2 value length, 3 value. */
  let phase = 0;
  let len = 0;
  let lenGot = 0;
  let need = 0;
  /** the key being read across chunks (its pieces), and the last whole key: a buffer and where in it. */
  let parts: Buffer[] = [];
  let partBytes = 0;
  let prevBuf: Buffer | null = null;
  let prevStart = 0;
  let prevEnd = 0;
  let keyLen = 0;
  let valueLen = 0;
  let keys = 0;
  const prefixed = prefixes.map(() => 0);
  /** bytes of the records before the current one (its offset), and every byte read. */
  let bytes = 0;
  let consumed = 0;

  const keyDone = (buf: Buffer, start: number, end: number): void => {
    if (prevBuf !== null) {
      const order = compareKeys(prevBuf, prevStart, prevEnd, buf, start, end);
      if (order >= 0) {
        const key = buf.subarray(start, end);
        if (order === 0) throw new StateFormatError('key-order', `record ${keys + 1}: key ${showKey(key)} appears twice`, bytes);
        throw new StateFormatError(
          'key-order',
          `record ${keys + 1}: key ${showKey(key)} comes after ${showKey(prevBuf.subarray(prevStart, prevEnd))}; keys must be strictly increasing`,
          bytes,
        );
      }
    }
    if (keys + 1 > declared.stateKeys) {
      throw new StateFormatError('count-mismatch', `state.bin holds more than the ${declared.stateKeys} records meta.json declares (stateKeys)`, bytes);
    }
    for (let i = 0; i < prefixes.length; i++) {
      const prefix = prefixes[i] as Buffer;
      if (end - start >= prefix.length && buf.compare(prefix, 0, prefix.length, start, start + prefix.length) === 0) prefixed[i] = (prefixed[i] as number) + 1;
    }
    if (into !== null) {
      hashing = keep === null || keep(buf, start, end);
      if (hashing) {
        into.length(end - start);
        into.range(buf, start, end);
      }
    }
    prevBuf = buf;
    prevStart = start;
    prevEnd = end;
  };
  const recordDone = (): void => {
    keys++;
    bytes += STATE_RECORD_OVERHEAD_BYTES + keyLen + valueLen;
    phase = 0;
  };

  for await (const raw of input) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw) : Buffer.from(raw.buffer, raw.byteOffset, raw.length);
    const end = chunk.length;
    let pos = 0;
    while (pos < end) {
      if (phase === 0 || phase === 2) {
        if (lenGot === 0 && end - pos >= 4) {
          len = chunk.readUInt32BE(pos);
          pos += 4;
          consumed += 4;
        } else {
          while (lenGot < 4 && pos < end) {
            len = len * 256 + (chunk[pos] as number);
            lenGot++;
            pos++;
            consumed++;
          }
          if (lenGot < 4) break;
          lenGot = 0;
        }
        if (phase === 0) {
          if (len === 0) throw new StateFormatError('empty-key', 'a record has an empty key', bytes);
          if (len > keyBytesMax) throw new StateFormatError('key-too-large', `key length ${len}, more than ${keyBytesMax}`, bytes);
          keyLen = len;
          need = len;
          phase = 1;
        } else {
          if (len > valueBytesMax) throw new StateFormatError('value-too-large', `value length ${len}, more than ${valueBytesMax}`, bytes);
          if (hashing) (into as RecordsDigest).length(len);
          valueLen = len;
          need = len;
          phase = 3;
          if (need === 0) recordDone();
        }
        len = 0;
      } else if (phase === 1) {
        const n = Math.min(need - partBytes, end - pos);
        if (partBytes === 0 && n === need) {
          keyDone(chunk, pos, pos + n);
        } else {
          parts.push(chunk.subarray(pos, pos + n));
          partBytes += n;
          if (partBytes === need) {
            const whole = Buffer.concat(parts, need);
            parts = [];
            partBytes = 0;
            keyDone(whole, 0, need);
          }
        }
        pos += n;
        consumed += n;
        if (partBytes === 0) phase = 2;
      } else {
        const n = Math.min(need, end - pos);
        if (hashing) (into as RecordsDigest).range(chunk, pos, pos + n);
        pos += n;
        consumed += n;
        need -= n;
        if (need === 0) recordDone();
      }
    }
    if (release !== null) {
      // What the scan keeps of this chunk is copied before it is let go: the last whole key, a key's first part.
      // (prevBuf is set by keyDone, a closure: read through a cast.)
      if ((prevBuf as Buffer | null) === chunk) {
        const kept = Buffer.from(chunk.subarray(prevStart, prevEnd));
        prevBuf = kept;
        prevStart = 0;
        prevEnd = kept.length;
      }
      if (partBytes > 0) parts = [Buffer.concat(parts, partBytes)];
      release(chunk);
    }
  }
  if (phase !== 0 || lenGot > 0) {
    const reading = phase === 0 ? 'key length' : phase === 1 ? 'key' : phase === 2 ? 'value length' : 'value';
    throw new StateFormatError('truncated', `the stream ends inside a record (reading its ${reading}, ${consumed - bytes} of its bytes seen)`, bytes);
  }
  if (keys !== declared.stateKeys) {
    throw new StateFormatError('count-mismatch', `state.bin holds ${keys} records but meta.json declares stateKeys ${declared.stateKeys}`, bytes);
  }
  if (bytes !== declared.stateBytes) {
    throw new StateFormatError('count-mismatch', `state.bin holds ${bytes} bytes of records but meta.json declares stateBytes ${declared.stateBytes}`, bytes);
  }
  return { keys, prefixed };
}

/**
 * validateStateRecords checks the whole input as checkedStateRecords does
 * (scanStateRecords: no record decoded, no copy of any key or value, so the
 * input must not reuse a chunk's memory once handed over, see
 * DecodeStateOptions.views); resolves with the record count.
 */
export async function validateStateRecords(
  input: AsyncIterable<Uint8Array | string>,
  declared: StateDeclared,
  limits: StateLimits = {},
): Promise<number> {
  return (await scanStateRecords(input, declared, limits)).keys;
}

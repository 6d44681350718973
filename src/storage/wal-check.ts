import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageError } from './storage-error.js';

/*
 * findWalDamage reads a RocksDB database's write-ahead log files before the
 * database is opened, to catch what the `rocksdb` 5.2.1 binding lets through
 * silently: it opens with `paranoid_checks = false` and RocksDB's default
 * point-in-time recovery, so a record of the WAL that fails its CRC ends the
 * replay there, without an error, and every later record is dropped with it
 * (a byte flipped in the second of five synced writes: the database opened
 * with the first one only). In the Raft log that is synced entries and votes
 * forgotten (a node could vote twice in a term, or lose entries it
 * acknowledged).
 *
 * A torn tail (the last record cut short by a crash, then zeros or nothing)
 * is what the replay is for, and is not damage: only a record that does not
 * verify *followed by one that does* (in the same file or a later one) is.
 *
 * The format (RocksDB db/log_format.h): 32 KiB blocks; each physical record
 * is a masked CRC-32C (fixed32, little-endian) of the type byte, the log
 * number (recyclable types 5-8 only) and the payload; its payload length
 * (fixed16); its type (1 full, 2 first, 3 middle, 4 last; 5-8 the same for
 * recycled files); the log number (u32, recyclable types only); the payload.
 * A record never crosses a block: a block's last 0-6 bytes are padding, so
 * every block starts with a record header.
 */

const BLOCK_BYTES = 32 * 1024;
const HEADER_BYTES = 7;
const RECYCLABLE_HEADER_BYTES = 11;
const MASK_DELTA = 0xa282ead8;

/** WAL_FILE: a RocksDB write-ahead log file name (the log number, decimal). */
const WAL_FILE = /^([0-9]{6,20})\.log$/;

/** WAL_CHECK_BYTES_MAX: the most WAL bytes findWalDamage reads (more: refused, `io`). */
const WAL_CHECK_BYTES_MAX = 1024 * 1024 * 1024;

/** CRC32C_TABLES: slicing-by-8 tables of CRC-32C (reflected polynomial 0x82f63b78): table k at [k * 256, k * 256 + 256). */
const CRC32C_TABLES = (() => {
  const t = new Int32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      const prev = t[(k - 1) * 256 + n] as number;
      t[k * 256 + n] = (prev >>> 8) ^ (t[prev & 0xff] as number);
    }
  }
  return t;
})();

/** crc32c: the CRC-32C (Castagnoli) of `buf[from, to)`, as RocksDB's crc32c::Value (slicing by 8: ~8 bytes a step). */
export function crc32c(buf: Uint8Array, from = 0, to = buf.length): number {
  const t = CRC32C_TABLES;
  let c = -1;
  let i = from;
  for (; i + 8 <= to; i += 8) {
    const lo = c ^ ((buf[i] as number) | ((buf[i + 1] as number) << 8) | ((buf[i + 2] as number) << 16) | ((buf[i + 3] as number) << 24));
    const hi = (buf[i + 4] as number) | ((buf[i + 5] as number) << 8) | ((buf[i + 6] as number) << 16) | ((buf[i + 7] as number) << 24);
    c =
      (t[1792 + (lo & 0xff)] as number) ^
      (t[1536 + ((lo >>> 8) & 0xff)] as number) ^
      (t[1280 + ((lo >>> 16) & 0xff)] as number) ^
      (t[1024 + (lo >>> 24)] as number) ^
      (t[768 + (hi & 0xff)] as number) ^
      (t[512 + ((hi >>> 8) & 0xff)] as number) ^
      (t[256 + ((hi >>> 16) & 0xff)] as number) ^
      (t[hi >>> 24] as number);
  }
  for (; i < to; i++) c = (t[(c ^ (buf[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

function unmask(masked: number): number {
  const rot = (masked - MASK_DELTA) >>> 0;
  return ((rot >>> 17) | (rot << 15)) >>> 0;
}

/** recordAt: the length of the whole valid physical record at `at` (header and payload), 0 when none is there. */
function recordAt(buf: Buffer, at: number): number {
  const blockLeft = BLOCK_BYTES - (at % BLOCK_BYTES);
  if (blockLeft < HEADER_BYTES || buf.length - at < HEADER_BYTES) return 0;
  const type = buf[at + 6] as number;
  if (type < 1 || type > 8) return 0;
  const header = type >= 5 ? RECYCLABLE_HEADER_BYTES : HEADER_BYTES;
  const n = header + buf.readUInt16LE(at + 4);
  if (n > blockLeft || at + n > buf.length) return 0;
  return crc32c(buf, at + 6, at + n) === unmask(buf.readUInt32LE(at)) ? n : 0;
}

/** firstBad: the offset of the first position of `buf` where the record chain breaks (buf.length if it never does). */
function firstBad(buf: Buffer): number {
  let at = 0;
  while (at < buf.length) {
    const blockLeft = BLOCK_BYTES - (at % BLOCK_BYTES);
    if (blockLeft < HEADER_BYTES) {
      at += blockLeft; // padding
      continue;
    }
    const n = recordAt(buf, at);
    if (n === 0) return at;
    at += n;
  }
  return buf.length;
}

/**
 * validAfter: whether a valid record starts anywhere after `bad` in `buf`: where the bad record's own header says
 * its successor is (a damaged payload), at every later byte of its block with a plausible header, and at every
 * later block start (each begins with a header).
 */
function validAfter(buf: Buffer, bad: number): boolean {
  const blockEnd = Math.min(buf.length, bad - (bad % BLOCK_BYTES) + BLOCK_BYTES);
  for (let at = bad + 1; at < blockEnd; at++) if (recordAt(buf, at) > 0) return true;
  for (let at = blockEnd; at < buf.length; at += BLOCK_BYTES) if (recordAt(buf, at) > 0) return true;
  return false;
}

/** WalDamage: where a WAL's record chain breaks with valid records after it. */
export interface WalDamage {
  readonly file: string;
  readonly offset: number;
}

/**
 * findWalDamage: the first place where the WAL files of the database at `dir` (in log number order) hold a record
 * that does not verify followed by one that does, null when there is none (a torn tail is not damage). Errors:
 * StorageError `io` (a file cannot be listed or read, or the WAL files exceed WAL_CHECK_BYTES_MAX).
 */
export async function findWalDamage(dir: string): Promise<WalDamage | null> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new StorageError('io', `${dir}: cannot list its files: ${(err as Error).message}`, { path: dir, cause: err });
  }
  const wals = names
    .map((name) => ({ name, match: WAL_FILE.exec(name) }))
    .filter((w): w is { name: string; match: RegExpExecArray } => w.match !== null)
    .sort((a, b) => (BigInt(a.match[1] as string) < BigInt(b.match[1] as string) ? -1 : 1))
    .map((w) => join(dir, w.name));
  let total = 0;
  let broken: WalDamage | null = null;
  for (const file of wals) {
    let buf: Buffer;
    try {
      total += (await stat(file)).size;
      if (total > WAL_CHECK_BYTES_MAX) throw new Error(`the write-ahead log files exceed ${WAL_CHECK_BYTES_MAX} bytes`);
      buf = await readFile(file);
    } catch (err) {
      throw new StorageError('io', `${file}: cannot read it to check it: ${(err as Error).message}`, { path: file, cause: err });
    }
    if (broken !== null) {
      // A chain broken in an earlier file: any valid record here is one the replay would drop.
      if (buf.length > 0 && (recordAt(buf, 0) > 0 || validAfter(buf, 0))) return broken;
      continue;
    }
    const bad = firstBad(buf);
    if (bad === buf.length) continue;
    if (validAfter(buf, bad)) return { file, offset: bad };
    broken = { file, offset: bad };
  }
  return null;
}

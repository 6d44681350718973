/**
 * A strict ustar header codec for the snapshot archive. Written by hand rather
 * than taken from tar-stream's extractor because the archive reader must see
 * (and refuse) what a general-purpose extractor quietly accepts: pax and GNU
 * long-name headers that rename the next entry, name prefixes, links, devices,
 * data after the end-of-archive blocks.
 *
 * Sizes up to 8 GiB - 1 use the 11 octal digits of ustar; larger ones use the
 * GNU base-256 form (understood by GNU tar, bsdtar and tar-stream).
 */
import { ArchiveError } from './errors.js';

export const TAR_BLOCK_BYTES = 512;

/** tarPadding: the zero bytes that fill an entry of `size` bytes up to a whole tar block. */
export function tarPadding(size: number): Buffer {
  const rem = size % TAR_BLOCK_BYTES;
  return Buffer.alloc(rem === 0 ? 0 : TAR_BLOCK_BYTES - rem);
}
/** TAR_NAME_BYTES_MAX: the longest name a plain ustar header holds (no prefix, no long-name extension). */
export const TAR_NAME_BYTES_MAX = 100;
const OCTAL_SIZE_MAX = 8 ** 11 - 1;
/** UTF8_STRICT decodes entry names (fatal: invalid UTF-8 throws); one instance (it keeps no state between whole decodes). */
const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });

export interface TarFileHeader {
  readonly name: string;
  readonly size: number;
  readonly mode: number;
  readonly mtimeSec: number;
}

function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  // width - 1 digits then NUL.
  const n = width - 1;
  if (Number.isSafeInteger(value) && value >= 0 && value < 8 ** n) {
    // The digits written one by one (the same bytes as the string below, without making it: three headers per
    // archive, a few fields each, were most of the fixed cost of a small state's tar frame).
    let v = value;
    for (let i = offset + n - 1; i >= offset; i--) {
      block[i] = 0x30 + (v % 8);
      v = Math.floor(v / 8);
    }
    block[offset + n] = 0;
    return;
  }
  const digits = value.toString(8).padStart(n, '0');
  if (digits.length > width - 1) throw new RangeError(`tar header: ${value} does not fit ${width - 1} octal digits`);
  block.write(digits, offset, 'ascii');
  block[offset + width - 1] = 0;
}

function writeBase256(block: Buffer, offset: number, width: number, value: number): void {
  let v = BigInt(value);
  for (let i = offset + width - 1; i > offset; i--) {
    block[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  block[offset] = 0x80;
}

/**
 * encodeTarHeader builds the 512-byte ustar header of a regular file: uid and
 * gid 0, empty user and group names, the given mode and mtime, typeflag '0'.
 * Throws RangeError for a name longer than 100 bytes or containing '/' or NUL.
 */
export function encodeTarHeader(header: TarFileHeader): Buffer {
  // The name's UTF-8 bytes hold a NUL or a '/' exactly where the string holds one (UTF-8 encodes every other
  // character with bytes >= 0x80): checked on the string, written straight into the block.
  const nameBytes = Buffer.byteLength(header.name, 'utf8');
  if (nameBytes === 0 || nameBytes > TAR_NAME_BYTES_MAX || header.name.includes('\u0000') || header.name.includes('/')) {
    throw new RangeError(`tar header: unusable entry name ${JSON.stringify(header.name)}`);
  }
  if (!Number.isSafeInteger(header.size) || header.size < 0) throw new RangeError(`tar header: bad size ${header.size}`);
  const block = Buffer.alloc(TAR_BLOCK_BYTES);
  block.write(header.name, 0, nameBytes, 'utf8');
  writeOctal(block, 100, 8, header.mode);
  writeOctal(block, 108, 8, 0); // uid
  writeOctal(block, 116, 8, 0); // gid
  if (header.size <= OCTAL_SIZE_MAX) writeOctal(block, 124, 12, header.size);
  else writeBase256(block, 124, 12, header.size);
  writeOctal(block, 136, 12, Math.max(0, Math.floor(header.mtimeSec)));
  block.fill(0x20, 148, 156); // checksum placeholder: spaces
  block[156] = 0x30; // '0': regular file
  block.write('ustar\u000000', 257, 'ascii'); // magic "ustar\0", version "00"
  writeOctal(block, 329, 8, 0); // devmajor
  writeOctal(block, 337, 8, 0); // devminor
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK_BYTES; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0'), 148, 'ascii');
  block[154] = 0;
  block[155] = 0x20;
  return block;
}

/** isZeroBlock: whether the block is all zero bytes (an end-of-archive block). */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

function field(block: Buffer, offset: number, width: number): Buffer {
  return block.subarray(offset, offset + width);
}

function parseNumber(block: Buffer, offset: number, width: number, what: string): number {
  const f = field(block, offset, width);
  if ((f[0]! & 0x80) !== 0) {
    if (f[0] !== 0x80) throw new ArchiveError('bad-header', `${what} is a negative or oversized base-256 number`);
    let v = 0n;
    for (let i = 1; i < width; i++) v = (v << 8n) | BigInt(f[i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ArchiveError('bad-header', `${what} is too large`);
    return Number(v);
  }
  const text = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]{1,12}$/.test(text)) {
    throw new ArchiveError('bad-header', `${what} is not an octal number (${JSON.stringify(f.toString('latin1'))})`);
  }
  return parseInt(text, 8);
}

/**
 * decodeTarHeader parses one header block of the snapshot archive and accepts
 * only a plain regular file. Throws ArchiveError: `bad-header` (checksum, magic,
 * numbers, name encoding), `link-entry`, `device-entry`, `directory-entry`,
 * `fifo-entry`, `long-name` (pax/GNU extensions, name prefix),
 * `unsupported-entry`, `unsafe-path` (NUL inside the name field). The caller
 * checks end-of-archive (isZeroBlock) first.
 */
export function decodeTarHeader(block: Buffer): TarFileHeader {
  if (block.length !== TAR_BLOCK_BYTES) throw new ArchiveError('bad-header', 'a tar header must be 512 bytes');
  const stored = parseNumber(block, 148, 8, 'header checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK_BYTES; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b >= 0x80 ? b - 0x100 : b;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new ArchiveError('bad-header', `tar header checksum mismatch (stored ${stored}, computed ${unsigned})`);
  }
  const magic = field(block, 257, 8).toString('latin1');
  if (magic !== 'ustar\u000000' && magic !== 'ustar  \u0000') {
    throw new ArchiveError('bad-header', 'not a ustar header (old-style or unknown tar format)');
  }
  const rawName = field(block, 0, TAR_NAME_BYTES_MAX);
  const nul = rawName.indexOf(0);
  const nameBytes = nul === -1 ? rawName : rawName.subarray(0, nul);
  let name: string;
  try {
    name = UTF8_STRICT.decode(nameBytes);
  } catch {
    throw new ArchiveError('bad-header', 'an entry name is not valid UTF-8');
  }
  const shown = JSON.stringify(name);
  const type = String.fromCharCode(block[156]!);
  switch (type) {
    case '0':
    case '\u0000':
      break;
    case '1':
      throw new ArchiveError('link-entry', `entry ${shown} is a hard link (to ${JSON.stringify(cString(field(block, 157, 100)))}); only regular files are allowed`);
    case '2':
      throw new ArchiveError('link-entry', `entry ${shown} is a symbolic link (to ${JSON.stringify(cString(field(block, 157, 100)))}); only regular files are allowed`);
    case '3':
    case '4':
      throw new ArchiveError('device-entry', `entry ${shown} is a ${type === '3' ? 'character' : 'block'} device; only regular files are allowed`);
    case '5':
      throw new ArchiveError('directory-entry', `entry ${shown} is a directory; only regular files are allowed`);
    case '6':
      throw new ArchiveError('fifo-entry', `entry ${shown} is a FIFO; only regular files are allowed`);
    case 'x':
    case 'g':
      throw new ArchiveError('long-name', `a pax extended header (${shown}) precedes an entry; extended headers are not allowed`);
    case 'L':
    case 'K':
      throw new ArchiveError('long-name', 'a GNU long-name header precedes an entry; long names are not allowed');
    default:
      throw new ArchiveError('unsupported-entry', `entry ${shown} has unsupported tar type ${JSON.stringify(type)}`);
  }
  if (nul !== -1 && !isZeroBlock(rawName.subarray(nul))) {
    throw new ArchiveError('unsafe-path', `entry name ${shown}... contains a NUL byte`);
  }
  if (!isZeroBlock(field(block, 345, 155))) {
    throw new ArchiveError('long-name', `entry ${shown} has a ustar name prefix; long names are not allowed`);
  }
  return {
    name,
    size: parseNumber(block, 124, 12, `size of ${shown}`),
    mode: parseNumber(block, 100, 8, `mode of ${shown}`),
    mtimeSec: parseNumber(block, 136, 12, `mtime of ${shown}`),
  };
}

function cString(f: Buffer): string {
  const nul = f.indexOf(0);
  return (nul === -1 ? f : f.subarray(0, nul)).toString('utf8');
}

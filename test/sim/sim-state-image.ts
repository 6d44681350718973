/**
 * State images on the simulator's disk: the twin of state-image.ts for
 * SimStorage. An export is the installed state serialized as a small set of
 * files named as RocksDB names its own (no real fs): CURRENT naming the
 * MANIFEST, the MANIFEST holding the applied index and the membership, the
 * records in SSTs of SIM_SST_RECORDS each (key order), an empty WAL; each
 * file hashed (SHA-256) in the manifest. An import takes a source through
 * the same checks as RocksStorage's (verifyImageChunks: names, counts,
 * sizes, order, every SHA-256), then decodes the files as a database open
 * would (a file that does not decode: `corrupt`).
 */
import { createHash } from 'node:crypto';

import type { Membership } from '../../src/raft/types.js';
import { IMAGE_FILE_NAME, verifyImageChunks, type StateImage, type StateImageChunk, type StateImageFile, type StateImageSource } from '../../src/storage/state-image.js';
import { isMembership } from '../../src/storage/state-transfer.js';
import { StorageError } from '../../src/storage/storage-error.js';
import type { KeyValue } from '../../src/storage/types.js';

/** SIM_SST_RECORDS: records per SST of a simulated image (small: an image has a few files). */
const SIM_SST_RECORDS = 8;
/** SIM_IMAGE_CHUNK_BYTES: bytes per chunk read from a simulated image (small: a transfer takes several hops). */
export const SIM_IMAGE_CHUNK_BYTES = 256;
const MANIFEST = 'MANIFEST-000001';

/** SimImage: an exported image and its files' bytes, in manifest order. */
export interface SimImage {
  readonly image: StateImage;
  readonly bytes: readonly Uint8Array[];
}

/** ImportedState: what a verified image holds. */
export interface ImportedState {
  readonly records: KeyValue[];
  readonly appliedIndex: number;
  readonly membership: Membership;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function fileOf(name: string, bytes: Uint8Array): StateImageFile {
  return { name, sizeBytes: bytes.length, sha256: createHash('sha256').update(bytes).digest() };
}

/** encodeRecords: each record as u32be key length, key, u32be value length, value. */
function encodeRecords(records: readonly KeyValue[]): Uint8Array {
  let n = 0;
  for (const r of records) n += 8 + r.key.length + r.value.length;
  const out = new Uint8Array(n);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const r of records) {
    view.setUint32(at, r.key.length);
    out.set(r.key, at + 4);
    at += 4 + r.key.length;
    view.setUint32(at, r.value.length);
    out.set(r.value, at + 4);
    at += 4 + r.value.length;
  }
  return out;
}

/**
 * exportSimImage: the image of a state (`kv`: its records by key string,
 * at `appliedIndex` with `membership`), named `dir`.
 */
export function exportSimImage(kv: ReadonlyMap<string, KeyValue>, appliedIndex: number, membership: Membership, dir: string): SimImage {
  const records = [...kv.values()].sort((a, b) => Buffer.compare(a.key, b.key));
  const named: [string, Uint8Array][] = [
    ['CURRENT', enc.encode(`${MANIFEST}\n`)],
    [MANIFEST, encodeManifest(appliedIndex, membership)],
  ];
  for (let i = 0; i * SIM_SST_RECORDS < records.length; i++) {
    named.push([`${String(10 + i).padStart(6, '0')}.sst`, encodeRecords(records.slice(i * SIM_SST_RECORDS, (i + 1) * SIM_SST_RECORDS))]);
  }
  named.push(['000009.log', new Uint8Array(0)]);
  named.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return { image: { dir, appliedIndex, files: named.map(([name, bytes]) => fileOf(name, bytes)) }, bytes: named.map(([, bytes]) => bytes) };
}

function encodeManifest(appliedIndex: number, membership: Membership): Uint8Array {
  const m = enc.encode(JSON.stringify(membership));
  const out = new Uint8Array(8 + m.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(appliedIndex));
  out.set(m, 8);
  return out;
}

/** simImageChunks: an image's files' bytes in manifest order, in chunks of up to `chunkBytes` (empty files have none). */
export async function* simImageChunks(img: SimImage, chunkBytes = SIM_IMAGE_CHUNK_BYTES): AsyncGenerator<StateImageChunk, void, undefined> {
  for (let i = 0; i < img.bytes.length; i++) {
    const b = img.bytes[i] as Uint8Array;
    for (let at = 0; at < b.length; at += chunkBytes) {
      await Promise.resolve(); // a read
      yield { file: i, offset: at, data: b.subarray(at, Math.min(b.length, at + chunkBytes)) };
    }
  }
}

/**
 * receiveSimImage takes `source` through verifyImageChunks (as
 * RocksStorage's import does) and decodes the files: CURRENT names the
 * MANIFEST, which holds the applied index and membership; the SSTs hold the
 * records. Errors: StorageError `invalidArgument` (the manifest), `corrupt`
 * (a chunk, a size, a SHA-256, a file that does not decode).
 */
export async function receiveSimImage(source: StateImageSource, path: string): Promise<ImportedState> {
  const bytes: Uint8Array[][] = source.files.map(() => []);
  for await (const p of verifyImageChunks(source, path)) if (p.kind === 'data') (bytes[p.file] as Uint8Array[]).push(Uint8Array.from(p.data));
  return decodeSimImage(source.files, bytes.map((parts) => Buffer.concat(parts)), path);
}

/** importedState: an image's decoded records as the state they make (a key twice keeps its last value), in bytewise key order. */
export function importedState(records: readonly KeyValue[]): KeyValue[] {
  const byKey = new Map<string, KeyValue>();
  for (const r of records) byKey.set(Buffer.from(r.key).toString('latin1'), r);
  return [...byKey.values()].sort((a, b) => Buffer.compare(a.key, b.key));
}

/** decodeSimImage reads the files of an image as a database open would. Errors: StorageError `corrupt`. */
export function decodeSimImage(files: readonly StateImageFile[], bytes: readonly Uint8Array[], path: string): ImportedState {
  const corrupt = (why: string): never => {
    throw new StorageError('corrupt', `state image for ${path}: ${why}`, { path });
  };
  const byName = new Map(files.map((f, i) => [f.name, bytes[i] as Uint8Array]));
  const current = dec.decode(byName.get('CURRENT') ?? new Uint8Array(0));
  const manifest = byName.get(current.replace(/\n$/, ''));
  if (!current.endsWith('\n') || manifest === undefined || !IMAGE_FILE_NAME.test(current.slice(0, -1))) return corrupt('CURRENT names no MANIFEST of the image');
  if (manifest.length < 8) return corrupt('the MANIFEST is short');
  const appliedIndex = Number(new DataView(manifest.buffer, manifest.byteOffset, manifest.byteLength).getBigUint64(0));
  let membership: unknown;
  try {
    membership = JSON.parse(dec.decode(manifest.subarray(8)));
  } catch {
    return corrupt('the MANIFEST does not decode');
  }
  if (!isMembership(membership) || !Number.isSafeInteger(appliedIndex)) return corrupt('the MANIFEST does not decode');
  const records: KeyValue[] = [];
  files.forEach((f, i) => {
    if (!f.name.endsWith('.sst')) return;
    const b = bytes[i] as Uint8Array;
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let at = 0;
    const take = (): Uint8Array => {
      if (at + 4 > b.length) return corrupt(`${f.name} is torn`);
      const n = view.getUint32(at);
      if (at + 4 + n > b.length) return corrupt(`${f.name} is torn`);
      const out = b.slice(at + 4, at + 4 + n);
      at += 4 + n;
      return out;
    };
    while (at < b.length) {
      const key = take();
      const value = take();
      if (key.length === 0) corrupt(`${f.name} holds an empty key`);
      records.push({ key, value });
    }
  });
  return { records, appliedIndex, membership };
}

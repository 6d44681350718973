/** Shared helpers of the snapshot tests: temp dirs, state generation, tar-stream built archives. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';

/** TarHeader: what tar-stream's pack.entry takes. */
export type TarHeader = Partial<Header> & { name: string };
import { ArchiveError, type ArchiveErrorCode } from '../../../src/snapshot/errors.js';
import type { StateRecord } from '../../../src/snapshot/state-format.js';
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';

export const MEMBERSHIP = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' } };

export async function tempDir(prefix = 'snapcoord-snapshot-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** records: a small deterministic state with varied key and value sizes (empty values included). */
export function records(count: number, seed = 1): StateRecord[] {
  const out: StateRecord[] = [];
  for (let i = 0; i < count; i++) {
    const value = Buffer.alloc((i * 37 + seed) % 3000);
    for (let j = 0; j < value.length; j++) value[j] = (i * 31 + j * 7 + seed) & 0xff;
    out.push({ key: Buffer.from(`key-${seed}-${String(i).padStart(6, '0')}`), value });
  }
  return out;
}

export async function* inBatches(all: readonly StateRecord[], size = 100): AsyncGenerator<StateRecord[]> {
  for (let i = 0; i < all.length; i += size) yield all.slice(i, i + size);
}

export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

export function sink(onChunk: (c: Buffer) => void = () => undefined): Writable {
  return new Writable({
    write(chunk: Buffer, _e, cb) {
      onChunk(chunk);
      cb();
    },
  });
}

/** TarEntry: a header and either a body buffer or a lazily streamed body of `size` zero bytes. */
export interface TarEntry {
  readonly header: TarHeader;
  readonly body?: Buffer;
  readonly zeroBytes?: number;
}

/**
 * tarGz builds a gzipped tar with tar-stream + zlib, streaming (so a 100 MB
 * zero-filled entry costs only its compressed size). `tail` is appended to the
 * tar before gzip; `gzipTail` after the gzip stream.
 */
export async function tarGz(entries: readonly TarEntry[], options: { tail?: Buffer; gzipTail?: Buffer; level?: number } = {}): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  async function* tarBytes(): AsyncGenerator<Buffer> {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) yield Buffer.from(c);
    if (options.tail !== undefined) yield options.tail;
  }
  const done = pipeline(Readable.from(tarBytes()), createGzip({ level: options.level ?? 6 }), sink((c) => chunks.push(c)));
  for (const e of entries) {
    if (e.zeroBytes !== undefined) {
      const entry = pack.entry({ ...e.header, size: e.zeroBytes });
      const zero = Buffer.alloc(1024 * 1024);
      let left = e.zeroBytes;
      while (left > 0) {
        const n = Math.min(left, zero.length);
        left -= n;
        if (!entry.write(zero.subarray(0, n))) await new Promise<void>((r) => entry.once('drain', () => r()));
      }
      await new Promise<void>((resolve, reject) => entry.end((err?: Error | null) => (err ? reject(err) : resolve())));
    } else {
      await new Promise<void>((resolve, reject) =>
        pack.entry(e.header, e.body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve())),
      );
    }
  }
  pack.finalize();
  await done;
  const gz = Buffer.concat(chunks);
  return options.gzipTail === undefined ? gz : Buffer.concat([gz, options.gzipTail]);
}

/** metaJson: a valid meta.json object for a state of `stateBytes` / `stateKeys`. */
export function metaJson(stateBytes: number, stateKeys: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    formatVersion: 1,
    id: 'snap-1',
    index: 42,
    term: 3,
    membership: MEMBERSHIP,
    stateBytes,
    stateKeys,
    createdAt: '2024-05-01T12:00:00.000Z',
    snapcoordVersion: '0.1.0',
    ...over,
  };
}

/** goodEntries: the three members of a valid archive over `state`, built by hand for tar-stream. */
export function goodEntries(state: Buffer, stateKeys: number, metaOver: Record<string, unknown> = {}): { meta: Buffer; sums: Buffer; entries: TarEntry[] } {
  const meta = Buffer.from(JSON.stringify(metaJson(state.length, stateKeys, metaOver)));
  const sums = Buffer.from(`${sha256(meta)}  meta.json\n${sha256(state)}  state.bin\n`);
  return {
    meta,
    sums,
    entries: [
      { header: { name: 'meta.json' }, body: meta },
      { header: { name: 'state.bin' }, body: state },
      { header: { name: 'SHA256SUMS' }, body: sums },
    ],
  };
}

/** rejectsWith asserts that `promise` rejects with an ArchiveError of `code`, whose message matches `pattern`. */
export async function rejectsWith(promise: Promise<unknown>, code: ArchiveErrorCode, pattern?: RegExp): Promise<ArchiveError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ArchiveError, `expected ArchiveError ${code}, got ${caught === undefined ? 'success' : String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (pattern !== undefined) assert.match(caught.message, pattern);
  return caught;
}

/** rawState encodes records as state.bin bytes exactly as given: no check at all (for poisoned archives). */
export function rawState(recs: readonly { key: string | Buffer; value: string | Buffer }[], tail: Buffer = Buffer.alloc(0)): Buffer {
  const parts: Buffer[] = [];
  for (const r of recs) {
    const key = typeof r.key === 'string' ? Buffer.from(r.key) : r.key;
    const value = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    const kl = Buffer.alloc(4);
    kl.writeUInt32BE(key.length);
    const vl = Buffer.alloc(4);
    vl.writeUInt32BE(value.length);
    parts.push(kl, key, vl, value);
  }
  parts.push(tail);
  return Buffer.concat(parts);
}

/** PoisonedArchive: an archive whose every hash is right but whose state.bin is not a state (issue 14). */
export interface PoisonedArchive {
  readonly name: string;
  readonly archive: Buffer;
  /** what the refusal must say. */
  readonly message: RegExp;
}

/**
 * poisonedArchives: one archive per way a state.bin can be wrong while
 * meta.json, SHA256SUMS and the tar are all valid: an empty key, keys out of
 * order, a duplicate key, a record running past the end, a key count that
 * lies (both ways), an oversize key, an oversize value (the KV limits: 4 KiB
 * keys, 1 MiB values). Keys are under `k/`.
 */
export async function poisonedArchives(): Promise<PoisonedArchive[]> {
  const v = 'value-0123456789';
  const cases: { name: string; state: Buffer; keys: number; message: RegExp }[] = [
    { name: 'an empty key', state: rawState([{ key: 'k/a', value: v }, { key: '', value: v }]), keys: 2, message: /empty key/ },
    { name: 'keys out of order', state: rawState([{ key: 'k/b', value: v }, { key: 'k/a', value: v }]), keys: 2, message: /"k\/a" comes after "k\/b"; keys must be strictly increasing/ },
    { name: 'a duplicate key', state: rawState([{ key: 'k/a', value: v }, { key: 'k/a', value: 'other' }]), keys: 2, message: /"k\/a" appears twice/ },
    {
      name: 'a record that runs past the end',
      // the second record says its key is 64 bytes; 6 follow.
      state: rawState([{ key: 'k/a', value: v }], Buffer.from([0, 0, 0, 64, 0x6b, 0x2f, 0x62, 0x62, 0x62, 0x62])),
      keys: 2,
      message: /ends inside a record/,
    },
    { name: 'a key count that lies (more declared)', state: rawState([{ key: 'k/a', value: v }, { key: 'k/b', value: v }]), keys: 3, message: /holds 2 records but meta.json declares stateKeys 3/ },
    { name: 'a key count that lies (fewer declared)', state: rawState([{ key: 'k/a', value: v }, { key: 'k/b', value: v }, { key: 'k/c', value: v }]), keys: 2, message: /more than the 2 records meta.json declares/ },
    { name: 'an oversize key', state: rawState([{ key: `k/${'x'.repeat(4 * 1024 - 1)}`, value: v }]), keys: 1, message: /key length 4097, more than 4096/ },
    { name: 'an oversize value', state: rawState([{ key: 'k/a', value: Buffer.alloc(1024 * 1024 + 1, 0x61) }]), keys: 1, message: /value length 1048577, more than 1048576/ },
  ];
  const out: PoisonedArchive[] = [];
  for (const c of cases) out.push({ name: c.name, archive: await tarGz(goodEntries(c.state, c.keys).entries), message: c.message });
  return out;
}

/**
 * writeCounting: `base` (default nodeSnapshotIo) counting the bytes written into files through it: `all` of them,
 * and `spool` those into spool files (*.spool: a compressed state waiting for its archive's head, written twice).
 */
export function writeCounting(base: SnapshotIo = nodeSnapshotIo): { io: SnapshotIo; written: { all: number; spool: number } } {
  const written = { all: 0, spool: 0 };
  const io: SnapshotIo = {
    ...base,
    open: async (path, flags, mode) => {
      const h = await base.open(path, flags, mode);
      if (flags === 'r') return h;
      const count = (n: number): void => {
        written.all += n;
        if (path.endsWith('.spool')) written.spool += n;
      };
      const write = h.write.bind(h);
      const writev = h.writev.bind(h);
      return Object.assign(h, {
        write: async (...args: Parameters<typeof h.write>) => {
          const r = await write(...args);
          count(r.bytesWritten);
          return r;
        },
        writev: async (...args: Parameters<typeof h.writev>) => {
          const r = await writev(...args);
          count(r.bytesWritten);
          return r;
        },
      });
    },
  };
  return { io, written };
}

/** encodeStateBin: `records` in state.bin's framing (4-byte big-endian key length, key, value length, value), at once. */
export function encodeStateBin(records: readonly StateRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) {
    const k = Buffer.alloc(4);
    k.writeUInt32BE(r.key.length);
    const v = Buffer.alloc(4);
    v.writeUInt32BE(r.value.length);
    parts.push(k, Buffer.from(r.key), v, Buffer.from(r.value));
  }
  return Buffer.concat(parts);
}

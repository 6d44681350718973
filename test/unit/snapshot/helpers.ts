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

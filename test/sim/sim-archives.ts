/**
 * The archives the simulator's clients upload for a restore, built in memory:
 * the bytes the real archive writer gives (src/snapshot/archive.ts
 * writeArchive on a MemorySnapshotIo scratch disk; archiveInMemory builds
 * the same in one step): a valid one holding a given KV state, and a
 * poisoned one whose every hash is right (gzip, SHA256SUMS, meta.json) but
 * whose state.bin is not a state a restore may install (issue 14's kinds).
 * Same inputs, same bytes.
 */
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { Membership } from '../../src/raft/types.js';
import { writeArchive } from '../../src/snapshot/archive.js';
import { archiveFrame } from '../../src/snapshot/archive-writer.js';
import { MemorySnapshotIo } from '../../src/snapshot/memory-snapshot-io.js';
import { GZIP_BLOCK_BYTES_DEFAULT, GZIP_LEVEL_DEFAULT } from '../../src/snapshot/parallel-gzip.js';
import type { SeededRng } from '../harness/rng.js';

/** POISONS: the ways state.bin is wrong in a poisoned archive. */
export const POISONS = ['empty key', 'keys out of order', 'duplicate key', 'key count lies'] as const;
export type Poison = (typeof POISONS)[number];

const ARCHIVE_CREATED_MS = Date.UTC(2026, 0, 1);

/** rawState: records as state.bin encodes them (u32 BE key length, key, u32 BE value length, value), in the order given. */
export function rawState(records: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of records) {
    const key = Buffer.from(k);
    const value = Buffer.from(v);
    const kl = Buffer.alloc(4);
    kl.writeUInt32BE(key.length);
    const vl = Buffer.alloc(4);
    vl.writeUInt32BE(value.length);
    parts.push(kl, key, vl, value);
  }
  return Buffer.concat(parts);
}

/**
 * archiveInMemory: the archive writeArchive writes (below) for state.bin `state`, built in one synchronous
 * step: the tar frame (archiveFrame, the writers' own: meta.json, the tar headers, SHA256SUMS, the end blocks)
 * around the state, compressed as writeArchive's ParallelGzip compresses a tar of at most one block
 * (GZIP_BLOCK_BYTES_DEFAULT, not adaptive): one gzip member at GZIP_LEVEL_DEFAULT. The same bytes
 * (sim-archives.spec compares them), without a scratch disk, a stream pipeline and a gzip stream for each
 * client's restore. Null for a tar of more than one block (writeArchive then).
 */
export function archiveInMemory(state: Buffer, stateKeys: number, membership: Membership, id: string): Buffer | null {
  const meta = { id, index: 1, term: 1, membership, createdAt: new Date(ARCHIVE_CREATED_MS).toISOString(), snapcoordVersion: 'sim' };
  const stateSha256 = createHash('sha256').update(state).digest('hex');
  const { head, tail } = archiveFrame(meta, { stateSha256, stateBytes: state.length, stateKeys });
  if (head.length + state.length + tail.length > GZIP_BLOCK_BYTES_DEFAULT) return null;
  return gzipSync(Buffer.concat([head, state, tail]), { level: GZIP_LEVEL_DEFAULT });
}

/** writeRaw archives `state` (state.bin's bytes, taken as they are) declaring `stateKeys` records. */
async function writeRaw(state: Buffer, stateKeys: number, membership: Membership, id: string): Promise<Buffer> {
  const built = archiveInMemory(state, stateKeys, membership, id);
  if (built !== null) return built;
  return writeStreamed(state, stateKeys, membership, id);
}

/** writeStreamed: writeRaw with the real archive writer (writeArchive on a scratch disk in memory). */
export async function writeStreamed(state: Buffer, stateKeys: number, membership: Membership, id: string): Promise<Buffer> {
  const io = new MemorySnapshotIo(() => ARCHIVE_CREATED_MS);
  await io.mkdir('/scratch', {});
  const f = await io.open('/scratch/state.bin', 'wx');
  await f.write(state, 0, state.length, 0);
  await f.close();
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb): void {
      out.push(chunk);
      cb();
    },
  });
  await writeArchive(
    { id, index: 1, term: 1, membership, createdAt: new Date(ARCHIVE_CREATED_MS).toISOString(), snapcoordVersion: 'sim', stateKeys },
    '/scratch/state.bin',
    sink,
    { io, gzipAdaptive: false },
  );
  return Buffer.concat(out);
}

/** validArchive: an archive whose state is exactly `state` (keys sorted bytewise). */
export function validArchive(state: ReadonlyMap<string, string>, membership: Membership, id: string): Promise<Buffer> {
  const records = [...state].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return writeRaw(rawState(records), records.length, membership, id);
}

/** poisonedArchive: an archive with valid hashes whose state.bin is wrong as `poison` says (built from `state`, at least one record). */
export function poisonedArchive(state: ReadonlyMap<string, string>, poison: Poison, membership: Membership, id: string): Promise<Buffer> {
  const records = [...state].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const first = records[0] ?? ['k0', 'v'];
  switch (poison) {
    case 'empty key':
      return writeRaw(rawState([...records, ['', first[1]]]), records.length + 1, membership, id);
    case 'keys out of order': {
      const two: (readonly [string, string])[] = records.length >= 2 ? records : [...records, ['~last', 'x']];
      return writeRaw(rawState([...two].reverse()), two.length, membership, id);
    }
    case 'duplicate key':
      return writeRaw(rawState([first, ...records]), records.length + 1, membership, id);
    case 'key count lies':
      return writeRaw(rawState(records), records.length + 1, membership, id);
  }
}

/** drawState: a KV state of 1..keys+2 records over the workload's keys (and a few of its own), values unique per restore `n`. */
export function drawState(rng: SeededRng, keys: number, n: number): Map<string, string> {
  const state = new Map<string, string>();
  const count = rng.range(1, keys + 2);
  for (let i = 0; i < count; i++) {
    const key = rng.chance(0.8) ? `k${rng.nextInt(keys)}` : `r${rng.nextInt(4)}`;
    state.set(key, `restore${n}-${i}`);
  }
  return state;
}

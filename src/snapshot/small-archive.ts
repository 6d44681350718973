/**
 * The in-memory way to build the archive of a small state: the records are
 * encoded into state.bin blocks in memory, every gzip member (head, each
 * state block, tail) is compressed at once, and the archive is one Buffer
 * the store writes through its ArchiveSink in a single write (hashed there
 * as written: the whole SHA-256 and the chunk hashes), then fsyncs. No spool
 * file, no stream pipeline, no per-chunk hash taps: for the states of a few
 * thousand keys (config stores, the simulator's) those fixed costs were most
 * of a snapshot's.
 *
 * The bytes are exactly writeArchiveFromRecords' for the same records, meta,
 * level and block size (same blocks: StateBlockEncoder with alignRecords;
 * same member choice: gzipBlock; same tar frame: archiveFrame), so the
 * member table is the same and either way of building reads back the same.
 */
import { createHash } from 'node:crypto';

import type { ArchiveMeta } from './archive-meta.js';
import { fill, handOver, type Slot } from './relay.js';
import { StateBlockEncoder, archiveFrame, type ArchiveMemberTable, type RecordsArchiveMeta, type StateMemberEntry } from './archive-writer.js';
import { gzipBlock, gzipMember, resolveParallelGzipOptions } from './parallel-gzip.js';
import { nodeSnapshotIo, type SnapshotIo } from './snapshot-io.js';
import type { StateLimits, StateRecord } from './state-format.js';

/**
 * SMALL_STATE_BYTES_MAX: the largest state.bin (bytes) whose archive a store
 * builds in memory (buildSmallArchive) rather than streams
 * (writeArchiveFromRecords). 1 MiB: at most one default gzip block, so the
 * memory held (the state, its compressed copy and the archive) stays a few
 * MiB, and compressing it whole is a few ms of the threadpool; larger states
 * stream with flat memory and overlapped compression.
 */
export const SMALL_STATE_BYTES_MAX = 1024 * 1024;

/**
 * SmallStateTake: what takeSmallState read. `small`: every record, encoded
 * and finished in `encoder`. `large`: the state went past the limit; `records`
 * yields every batch again from the first (those already read, then the rest
 * of the source), for the streaming way.
 */
export type SmallStateTake =
  | { readonly kind: 'small'; readonly encoder: StateBlockEncoder }
  | { readonly kind: 'large'; readonly records: AsyncIterable<readonly StateRecord[]> };

/** SmallStateOptions: the limit, the state block size (the store's gzip block size) and the record limits. */
export interface SmallStateOptions extends StateLimits {
  /** the largest state.bin, in bytes, taken as small (SMALL_STATE_BYTES_MAX by default; -1: none is). */
  readonly maxStateBytes?: number;
  /** state.bin bytes per gzip member (default GZIP_BLOCK_BYTES_DEFAULT); must be the streaming way's for the same bytes. */
  readonly gzipBlockBytes?: number;
}

/**
 * takeSmallState reads `records` until they end or their state.bin passes
 * `maxStateBytes`, encoding them as writeArchiveFromRecords would (whole
 * records per block). Errors: StateFormatError for a record that breaks the
 * limits or the key order (the source is closed), the source's own,
 * RangeError for a bad block size. Memory: the state up to the limit plus
 * the batch that passes it.
 */
export async function takeSmallState(records: AsyncIterable<readonly StateRecord[]>, options: SmallStateOptions = {}): Promise<SmallStateTake> {
  const maxStateBytes = options.maxStateBytes ?? SMALL_STATE_BYTES_MAX;
  const { blockBytes } = resolveParallelGzipOptions(options.gzipBlockBytes !== undefined ? { blockBytes: options.gzipBlockBytes } : {});
  const encoder = new StateBlockEncoder(blockBytes, options, true);
  const source = records[Symbol.asyncIterator]();
  const taken: (readonly StateRecord[])[] = [];
  try {
    for (;;) {
      const next = await source.next();
      if (next.done === true) break;
      taken.push(next.value);
      for (const record of next.value) {
        encoder.encode(record);
        if (encoder.bytes > maxStateBytes) break;
      }
      if (encoder.bytes > maxStateBytes) return { kind: 'large', records: replay(taken, source) };
    }
  } catch (err) {
    await source.return?.().catch(() => undefined);
    throw err;
  }
  if (encoder.bytes > maxStateBytes) return { kind: 'large', records: replay(taken, source) }; // an empty state, maxStateBytes -1
  encoder.finish();
  return { kind: 'small', encoder };
}

/**
 * replay yields `taken`, then the rest of `source`; it closes `source` when its consumer stops early. It holds
 * no batch while suspended (relay.ts): each is let go as it is handed on.
 */
async function* replay(taken: (readonly StateRecord[])[], source: AsyncIterator<readonly StateRecord[]>): AsyncGenerator<readonly StateRecord[]> {
  let ended = false;
  const slot: Slot<readonly StateRecord[]> = { item: undefined };
  try {
    while (taken.length > 0) yield taken.shift() as readonly StateRecord[];
    while (fill(slot, await source.next())) yield handOver(slot);
    ended = true;
  } finally {
    slot.item = undefined;
    if (!ended) await source.return?.();
  }
}

/** SmallArchive: a whole archive in memory, and what writeArchiveFromRecords would report of it. */
export interface SmallArchive {
  /** bytes: the archive (gzipped tar of meta.json, state.bin, SHA256SUMS), as writeArchiveFromRecords writes it. */
  readonly bytes: Buffer;
  readonly meta: ArchiveMeta;
  /** hex SHA-256 of state.bin. */
  readonly stateSha256: string;
  /** members: where each gzip member lies. */
  readonly members: ArchiveMemberTable;
}

/**
 * buildSmallArchive builds the archive of the state `encoder` holds (from
 * takeSmallState: finished, its blocks not taken) in memory: state.bin
 * hashed, meta.json and the tar frame made (archiveFrame), every member
 * compressed at once through `io` (the streaming way's choice per block).
 * Errors: ArchiveError `bad-meta` / `member-too-large`, the compression's,
 * RangeError for a bad level.
 */
export async function buildSmallArchive(
  meta: RecordsArchiveMeta,
  encoder: StateBlockEncoder,
  options: { readonly gzipLevel?: number; readonly gzipAdaptive?: boolean; readonly io?: SnapshotIo } = {},
): Promise<SmallArchive> {
  const { level, adaptive } = resolveParallelGzipOptions({
    ...(options.gzipLevel !== undefined ? { level: options.gzipLevel } : {}),
    ...(options.gzipAdaptive !== undefined ? { adaptive: options.gzipAdaptive } : {}),
  });
  const io = options.io ?? nodeSnapshotIo;
  const blocks = encoder.ready.splice(0);
  const infos = encoder.readyInfo.splice(0);
  const stateHash = createHash('sha256');
  for (const block of blocks) stateHash.update(block);
  const stateSha256 = stateHash.digest('hex');
  const { full, head, tail } = archiveFrame(meta, { stateSha256, stateBytes: encoder.bytes, stateKeys: encoder.keys });
  const compressed = await Promise.all([
    gzipMember(head, level, false, io),
    ...blocks.map((block) => gzipBlock(block, level, adaptive, io)),
    gzipMember(tail, level, false, io),
  ]);
  const state: StateMemberEntry[] = infos.map((info, i) => ({ ...info, compressedBytes: (compressed[i + 1] as Buffer).length }));
  return {
    bytes: Buffer.concat(compressed),
    meta: full,
    stateSha256,
    members: { headBytes: (compressed[0] as Buffer).length, state, tailBytes: (compressed[compressed.length - 1] as Buffer).length },
  };
}

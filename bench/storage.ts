/**
 * bench/storage.ts: micro benchmark of RocksStorage. Prints synced log
 * appends per second for Ready batches of 1, 64 and 1000 entries of 100 B
 * (one synced write per batch, with a hard state, as the driver does), and
 * state machine apply throughput (one 100 B put per entry). It prints
 * figures; it does not pass or fail.
 *
 *   npx tsx bench/storage.ts [--dir /some/disk]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import type { Entry } from '../src/raft/types.js';
import { encodeCommand } from '../src/storage/kv-command.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import type { ApplyItem } from '../src/storage/types.js';

const entryBytes = 100;
const dirFlag = process.argv.indexOf('--dir');
const parent = dirFlag >= 0 ? (process.argv[dirFlag + 1] ?? tmpdir()) : tmpdir();

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

async function benchAppends(storage: RocksStorage, batchEntries: number, durationMs: number): Promise<void> {
  const data = new Uint8Array(entryBytes).fill(0x61);
  let index = storage.lastIndex();
  let writes = 0;
  const start = performance.now();
  let elapsedMs = 0;
  while (elapsedMs < durationMs) {
    const entries: Entry[] = [];
    for (let i = 0; i < batchEntries; i++) entries.push({ index: ++index, term: 1, type: 'normal', data });
    await storage.save({ hardState: { term: 1, vote: 'n1', commit: index - 1 }, entries });
    writes++;
    elapsedMs = performance.now() - start;
  }
  const entriesPerS = (writes * batchEntries * 1000) / elapsedMs;
  console.log(
    `synced append, batch ${String(batchEntries).padStart(4)}: ${fmt(entriesPerS).padStart(9)} entries/s  ` +
      `${fmt((writes * 1000) / elapsedMs).padStart(6)} writes/s  ${((elapsedMs * 1000) / writes).toFixed(0).padStart(6)} µs/write` +
      `  ${((entriesPerS * entryBytes) / 1e6).toFixed(1)} MB/s`,
  );
}

async function benchApply(storage: RocksStorage, totalEntries: number, callEntries: number): Promise<void> {
  const value = new Uint8Array(entryBytes).fill(0x62);
  let index = storage.appliedIndex();
  const start = performance.now();
  for (let done = 0; done < totalEntries; done += callEntries) {
    const items: ApplyItem[] = [];
    for (let i = 0; i < callEntries; i++) {
      index++;
      const key = new TextEncoder().encode(`key/${String(index).padStart(10, '0')}`);
      items.push({ entry: { index, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key, value }) } });
    }
    await storage.apply(items);
  }
  const elapsedMs = performance.now() - start;
  console.log(
    `apply (unsynced), ${String(callEntries).padStart(4)} entries/call: ${fmt((totalEntries * 1000) / elapsedMs).padStart(9)} entries/s` +
      `  (${fmt(totalEntries)} puts of ${entryBytes} B)`,
  );
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(parent, 'snapcoord-bench-'));
  try {
    const storage = await RocksStorage.open(join(root, 'data'));
    console.log(`RocksStorage in ${root}, entries of ${entryBytes} B`);
    await benchAppends(storage, 1, 300); // warm-up
    for (const batch of [1, 64, 1000]) await benchAppends(storage, batch, 3000);
    await benchApply(storage, 5_000, 1);
    await benchApply(storage, 100_000, 1000);
    const start = performance.now();
    await storage.compact({ index: storage.lastIndex(), term: 1 });
    console.log(`compact of the whole log: ${(performance.now() - start).toFixed(0)} ms`);
    await storage.close();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();

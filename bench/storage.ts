/**
 * bench/storage.ts: micro benchmark of RocksStorage. Prints synced log
 * appends per second for Ready batches of 1, 64 and 1000 entries of 100 B
 * (one synced write per batch, with a hard state, as the driver does), and
 * state machine apply throughput (one 100 B put per entry), and for a
 * state of --state-mb MB (default 100; 1 KiB values) the installState and
 * snapshotState stream rates in MB/s (keys + values). It prints figures; it
 * does not pass or fail.
 *
 *   npx tsx bench/storage.ts [--dir /some/disk] [--state-mb 100]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import type { Entry } from '../src/raft/types.js';
import { encodeCommand } from '../src/fsm/kv-command.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import { StateMachine } from '../src/fsm/state-machine.js';
import type { ApplyItem } from '../src/fsm/types.js';
import type { KeyValue } from '../src/storage/types.js';

const entryBytes = 100;
const dirFlag = process.argv.indexOf('--dir');
const parent = dirFlag >= 0 ? (process.argv[dirFlag + 1] ?? tmpdir()) : tmpdir();
const stateMbFlag = process.argv.indexOf('--state-mb');
const stateMb = stateMbFlag >= 0 ? Number(process.argv[stateMbFlag + 1] ?? 100) : 100;

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
  const fsm = await StateMachine.open(storage);
  let index = fsm.appliedIndex();
  const start = performance.now();
  for (let done = 0; done < totalEntries; done += callEntries) {
    const items: ApplyItem[] = [];
    for (let i = 0; i < callEntries; i++) {
      index++;
      const key = new TextEncoder().encode(`key/${String(index).padStart(10, '0')}`);
      items.push({ entry: { index, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key, value }) } });
    }
    await fsm.apply(items);
  }
  const elapsedMs = performance.now() - start;
  console.log(
    `apply (unsynced), ${String(callEntries).padStart(4)} entries/call: ${fmt((totalEntries * 1000) / elapsedMs).padStart(9)} entries/s` +
      `  (${fmt(totalEntries)} puts of ${entryBytes} B)`,
  );
}

/** benchState installs a generated state of `megabytes` MB (1 KiB values), then streams a snapshot of it. */
async function benchState(storage: RocksStorage, megabytes: number): Promise<void> {
  const valueBytes = 1024;
  const count = Math.ceil((megabytes * 1e6) / (valueBytes + 16));
  let totalBytes = 0;
  async function* source(): AsyncGenerator<KeyValue[]> {
    const value = new Uint8Array(valueBytes).fill(0x63);
    for (let i = 0; i < count; ) {
      const batch: KeyValue[] = [];
      for (const end = Math.min(count, i + 1000); i < end; i++) {
        const key = new TextEncoder().encode(`state/${String(i).padStart(10, '0')}`);
        batch.push({ key, value });
        totalBytes += key.length + value.length;
      }
      yield batch;
    }
  }
  let start = performance.now();
  await storage.installState(source(), { appliedIndex: storage.appliedIndex() + 1, membership: { voters: ['n1'], learners: [], addresses: { n1: 'x' } } });
  let elapsedMs = performance.now() - start;
  const mb = totalBytes / 1e6;
  console.log(
    `installState: ${(mb / (elapsedMs / 1000)).toFixed(0).padStart(5)} MB/s  (${mb.toFixed(0)} MB, ${fmt(count)} keys, ${fmt(elapsedMs)} ms, incl. synced commit)`,
  );
  start = performance.now();
  const reader = await storage.snapshotState();
  let streamed = 0;
  let records = 0;
  for await (const batch of reader.batches()) {
    for (const { key, value } of batch) streamed += key.length + value.length;
    records += batch.length;
  }
  elapsedMs = performance.now() - start;
  if (records !== count) throw new Error(`snapshot streamed ${records} records, expected ${count}`);
  console.log(
    `snapshotState stream: ${(streamed / 1e6 / (elapsedMs / 1000)).toFixed(0).padStart(5)} MB/s  (${(streamed / 1e6).toFixed(0)} MB, ${fmt(elapsedMs)} ms)`,
  );
  start = performance.now();
  await storage.stateDigest();
  elapsedMs = performance.now() - start;
  console.log(`stateDigest: ${(streamed / 1e6 / (elapsedMs / 1000)).toFixed(0).padStart(5)} MB/s  (${fmt(elapsedMs)} ms)`);
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
    await storage.compact({ index: storage.lastIndex(), term: 1, membership: { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7101' } } });
    console.log(`compact of the whole log: ${(performance.now() - start).toFixed(0)} ms`);
    if (stateMb > 0) await benchState(storage, stateMb);
    await storage.close();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();

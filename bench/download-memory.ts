/**
 * bench/download-memory.ts: what serving concurrent GetSnapshot downloads costs a node's memory (issue 15), in
 * one process without a cluster: an in-process node (the unit tests' SnapshotNode: RocksDB, the real client API
 * on 127.0.0.1:0, ExternalMemoryGc running as in `serve`) holds a snapshot of --mib MiB of random values, and a
 * client child process (bench/lib/download-client.ts) downloads it --parallel times at once, --rounds times.
 * Per round: the wall time, and this (server) process's RSS and ArrayBuffers before and at their peak (sampled
 * every 5 ms), after a full collection. Start it as a node is started (src/cli/node-runtime.ts):
 *
 *   MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 MALLOC_ARENA_MAX=1 \
 *     node --expose-gc --max-semi-space-size=4 --initial-old-space-size=64 --import tsx bench/download-memory.ts [--mib 40] [--parallel 4] [--rounds 3]
 *
 * A/B: run it from each tree, alternating. Figures only.
 */
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { PutRequest } from '../src/gen/snapcoord/v1/kv.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { SnapshotNode, unaryCall } from '../test/unit/api/snapshot-node.js';
import { arg } from './lib/arg.js';
import { childRound } from './lib/memory-peaks.js';

const VALUE_BYTES = 256 * 1024;
const SAMPLE_MS = 5;

const mib = (b: number): string => (b / 2 ** 20).toFixed(1);

async function main(): Promise<void> {
  const values = Math.ceil((Number(arg('mib', '40')) * 2 ** 20) / VALUE_BYTES);
  const parallel = Number(arg('parallel', '4'));
  const rounds = Number(arg('rounds', '3'));
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc (each round starts from a full collection)');
  const memoryGc = startExternalMemoryGc();
  const n = await SnapshotNode.start();
  try {
    const kv = n.kvClient();
    for (let i = 0; i < values; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(VALUE_BYTES) }));
    await n.node.snapshotNow();
    const s = (await n.snapshots.store.list())[0];
    if (s === undefined) throw new Error('no snapshot was made');
    const client = fileURLToPath(new URL('./lib/download-client.ts', import.meta.url));
    for (let r = 0; r < rounds; r++) {
      const m = await childRound(gc, [client, n.api.address, s.id, String(parallel)], SAMPLE_MS);
      console.log(
        `round ${r}: ${parallel} downloads of ${mib(s.archiveBytes)} MiB in ${m.seconds.toFixed(2)} s; ` +
          `server RSS ${mib(m.rss0)} MiB, peak +${mib(m.rssMax - m.rss0)}; ArrayBuffers ${mib(m.ab0)} MiB, peak +${mib(m.abMax - m.ab0)}`,
      );
    }
  } finally {
    memoryGc.stop();
    await n.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

/**
 * bench/image-serving-memory.ts: what sending a state image costs the sender's memory and CPU (issue 15: the
 * restore's leader sends the generation it built to each follower, FetchStateImage), in one process without a
 * cluster: this process serves an image of --mib MiB of random bytes in --files files (the node's RaftService
 * definition and handler path: readStateImageChunks, the FetchStateImage encoder, StreamWriteWindow; plaintext
 * gRPC on 127.0.0.1:0; ExternalMemoryGc running as in `serve`), and a client child process fetches it --parallel
 * times at once (openStateImage, as a follower does, the bytes dropped), --rounds times. Per round: the wall
 * time, this (server) process's CPU, and its RSS and ArrayBuffers before and at their peak (sampled every 5 ms),
 * after a full collection. Start it as a node is started (src/cli/node-runtime.ts):
 *
 *   MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 MALLOC_ARENA_MAX=1 \
 *     node --expose-gc --max-semi-space-size=4 --initial-old-space-size=64 --import tsx bench/image-serving-memory.ts \
 *     [--mib 256] [--files 16] [--parallel 2] [--rounds 3]
 *
 * A/B: run it from each tree, alternating. Figures only.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';

import type { Message } from '../src/raft/types.js';
import { startExternalMemoryGc } from '../src/snapshot/external-memory-gc.js';
import { readStateImageChunks, type StateImage } from '../src/storage/state-image.js';
import { RAFT_SERVICE_DEFINITION } from '../src/transport/fetch-serializer.js';
import { createRaftService } from '../src/transport/raft-service.js';
import { openStateImage } from '../src/transport/state-image-fetcher.js';
import type { RaftRequestHandler, StateImageStream } from '../src/transport/transport.js';
import { arg } from './lib/arg.js';
import { childRound } from './lib/memory-peaks.js';

const SAMPLE_MS = 5;
const mib = (b: number): string => (b / 2 ** 20).toFixed(1);

/** client (the child): fetches the image at `address` `parallel` times at once, each byte counted and dropped. */
async function client(address: string, parallel: number): Promise<void> {
  await Promise.all(
    Array.from({ length: parallel }, async (_, i) => {
      const opened = await openStateImage({ selfId: `c${i}`, to: 'n1', address, index: 7, recordFormat: 2, manifestTimeoutMs: 30_000, idleTimeoutMs: 30_000, bytesPerSecondMin: 1 << 20 });
      let bytes = 0;
      for await (const c of opened.chunks) bytes += c.data.length;
      const want = opened.files.reduce((n, f) => n + f.sizeBytes, 0);
      if (bytes !== want) throw new Error(`fetched ${bytes} of ${want} bytes`);
    }),
  );
}

async function main(): Promise<void> {
  if (process.argv.includes('--client')) {
    await client(arg('client', ''), Number(arg('parallel', '2')));
    return;
  }
  const totalMiB = Number(arg('mib', '256'));
  const fileCount = Number(arg('files', '16'));
  const parallel = Number(arg('parallel', '2'));
  const rounds = Number(arg('rounds', '3'));
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc (each round starts from a full collection)');
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-bench-image-'));
  const files = [];
  for (let i = 0; i < fileCount; i++) {
    const bytes = randomBytes(Math.floor((totalMiB * 2 ** 20) / fileCount));
    const name = `${String(i + 1).padStart(6, '0')}.sst`;
    await writeFile(join(dir, name), bytes);
    files.push({ name, sizeBytes: bytes.length, sha256: createHash('sha256').update(bytes).digest() });
  }
  const image: StateImage = { dir, appliedIndex: 7, files };
  const handler: RaftRequestHandler = {
    handleRequest: (_m: Message) => Promise.resolve([]),
    handleReport: () => undefined,
    openStateImage: (): Promise<StateImageStream> => Promise.resolve({ files: image.files, chunks: readStateImageChunks(image) }),
  };
  const memoryGc = startExternalMemoryGc();
  const server = new grpc.Server();
  server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler, { selfId: 'n1' }));
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const self = fileURLToPath(import.meta.url);
  try {
    for (let r = 0; r < rounds; r++) {
      const m = await childRound(gc, [self, '--client', `127.0.0.1:${port}`, '--parallel', String(parallel)], SAMPLE_MS);
      console.log(
        `round ${r}: ${parallel} fetches of a ${mib(totalMiB * 2 ** 20)} MiB image in ${m.seconds.toFixed(2)} s; server CPU ${m.cpuSeconds.toFixed(2)} s; ` +
          `server RSS ${mib(m.rss0)} MiB, peak +${mib(m.rssMax - m.rss0)}; ArrayBuffers ${mib(m.ab0)} MiB, peak +${mib(m.abMax - m.ab0)}`,
      );
    }
  } finally {
    memoryGc.stop();
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

/**
 * How a node process (`snapcoord serve`) is started: the environment and V8
 * flags its launchers give it — `snapcoord local`, the Dockerfile (and with
 * it docker-compose.yml and deploy/kubernetes), the benches. Both are read by
 * glibc and V8 when the process starts, so a process cannot set them for
 * itself; README "Memory" says what they do for an operator's own launcher.
 */

/**
 * NODE_MALLOC_ENV: glibc malloc settings of a node process. By default glibc
 * raises its mmap threshold to the largest block freed so far (up to 32 MiB)
 * and keeps freed memory in its heaps: after an install a node kept 100-120
 * MiB of native memory (RocksDB memtable blocks, write batches, 1 MiB
 * Buffers, zlib state). With a fixed 128 KiB threshold those blocks are
 * mapped and unmapped on their own, and a heap's free top over 128 KiB is
 * given back. Measured (bench:snapshot-cluster, 200k keys of 1 KiB, text
 * mix, load 14-16): every node's peak 278-297 -> 251-255 MiB during the
 * restore, and its RSS between phases 245-280 -> 120-195 MiB.
 *
 * One arena (MALLOC_ARENA_MAX=1): every thread (libuv's threadpool running
 * RocksDB writes and zlib, RocksDB's own, workers) allocates from the main
 * heap instead of an arena of its own, so memory one freed is reused by the
 * next rather than kept in that thread's arena: after a write phase with
 * downloads, 30-37 MiB of one thread arena were free and resident
 * (malloc_info), its 64 MiB heap never trimmed. Measured (issue 15,
 * `bench:snapshot-cluster --keys 1000000 --mix etcd --no-etcd`, two pairs):
 * the nodes' peak 253-261 -> 231-243 MiB, in the write phase with 4
 * downloads 249-261 -> 231-243. The cost, one lock for all threads' mallocs
 * on 2 cores, was not seen beyond the noise: `bench:write --no-etcd
 * --no-failover`, 4 alternating pairs at load 8-10, default against one
 * arena: 1440/1897, 1285/784, 984/1129, 1141/1453 writes/s; server CPU
 * 0.59/0.59, 0.62/0.81, 0.78/0.69, 0.63/0.65 ms per write.
 */
export const NODE_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: '131072',
  MALLOC_TRIM_THRESHOLD_: '131072',
  MALLOC_ARENA_MAX: '1',
};

/**
 * NODE_V8_FLAGS: V8 flags of a node process. The young generation's
 * semi-spaces grow to 4 MiB at most (Node's default on 64-bit is 16). Both
 * semi-spaces are resident once grown: 32 MiB of a node's ~200 at 16, 16 at
 * 8, 8 at 4. Measured 4 against 8 (issue 15, Dec 6, helper rss6):
 * `bench:snapshot-cluster --keys 1000000 --value-bytes 1024 --mix text
 * --no-etcd --memory-detail`, runs in the order 8, 8, 4, 8, 4 (load 8-12): the
 * highest node (the leader each time) 220, 234, 237 MiB with 8 against 201,
 * 211 with 4; the V8 heap committed at each node's top 47-58 against 39-51
 * MiB; restore until all applied 42.8 / 67.9 / 45.4 against
 * 52.4 / 35.7 s, save 11.8 / 9.5 / 6.8 against 10.3 / 8.3 s, 4 downloads
 * 335 / 301 / 545 against 319 / 480 MB/s, writes alone 289 / 255 / 341
 * against 246 / 336 per second (all within the spread of the runs).
 * `npm run bench:write -- --seconds 15 --no-etcd --no-failover
 * --no-planned-restart`, 8 / 4 / 8 / 4 (load 7.5-8): 3151 / 2923 writes/s
 * with 8 against 2968 / 3999 with 4, the servers' CPU 0.25 / 0.27 against
 * 0.25 / 0.26 ms per write (the leader's 0.14-0.15 either way), p99 85 / 67
 * against 91 / 56 ms. (2 MiB, below, did cost CPU under writes.)
 * 8 against 16 (Dec 5): `bench:snapshot-cluster --keys 1000000
 * --value-bytes 1024 --no-etcd --mix etcd`, 8 against 16, 2 pairs: the nodes'
 * peak RSS over the phases 184-193 / 180-189 MiB against 202-208 / 195-205,
 * writes alone 211 / 222 against 225 / 226 per second; `npm run bench:write
 * -- --seconds 15 --no-etcd --no-failover --no-planned-restart`, alternating,
 * 2 pairs: 1705 / 1680 against 1090 / 1722 writes/s, the leader's CPU per
 * write 0.28 / 0.40 against 0.39 / 0.39 ms. At 8M keys (one machine shared
 * with other tests, 2 runs with 8, 2 with 16) the nodes were 10-20 MiB lower
 * too, but downloads ran at 94-131 against 175-183 MB/s and writes alone at
 * 253-330 against 348-465/s: not yet settled by alternating pairs (README,
 * Benchmarks). A 2 MiB cap held the V8 heap at 35-38 MiB
 * instead of 56-68 during restores and installs, at the same install CPU,
 * but under writes it scavenged ten times as often: `npm run bench:write
 * -- --no-etcd`, 2 and 16 alternating, 5 pairs at load 8-13: the leader's
 * CPU per write 0.30-0.45 ms (mean 0.35) with 2 against 0.28-0.33 (0.30)
 * with 16, its GC time per write 0.12-0.30 against 0.04-0.09 ms, client p99
 * 184-416 against 167-287 ms in every pair.
 *
 * The old generation's allocation limit never drops below 64 MiB
 * (--initial-old-space-size=64). With the live heap at ~11 MiB the computed
 * limit was ~27 MiB, and a restore's install of 1M x 1 KiB (one process, the
 * nodes' settings, --trace-gc) ran 56-62 full mark-compacts, each started at
 * "allocation limit" with 11 MiB of the heap used, almost nothing promoted by
 * the scavenges, 7-17 MiB of ArrayBuffers not yet collected (the gunzip's 112
 * KiB output chunks: a GB of them, each dead within milliseconds, freed only
 * by the next scavenge), and each freeing almost nothing (11.3 -> 11.0 MiB);
 * their concurrent marking cost about a second of CPU per node. With the
 * floor at 64 MiB: 0-4 (48 MiB: 11; 32 MiB: 56). Measured (issue 15, `bench:snapshot-cluster --restore-only
 * --mix etcd`, 1M x 1 KiB): the nodes' CPU from the upload to the last
 * snapshot 11.5 / 10.1 / 13.2 s against 14.9 / 17.0 / 15.0 s without it, the
 * nodes' worker threads (GC, threadpool) 4.3-5.2 s against 7.6-8.0 s; the
 * cost is a V8 heap that may hold more garbage before it is collected (peak
 * RSS 209-229 against 193-206 MiB in that pair).
 */
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--initial-old-space-size=64'];

/** nodeProcessEnv: `base` with NODE_MALLOC_ENV added where `base` does not set those variables itself. */
export function nodeProcessEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...NODE_MALLOC_ENV, ...base };
}

/**
 * missingNodeSettings: the V8 flags (NODE_V8_FLAGS, by name: an operator's
 * own value counts) and malloc variables (NODE_MALLOC_ENV, by name) a node
 * process was started without, given its `execArgv` and environment (V8
 * flags in NODE_OPTIONS count too). Empty when started as its launchers
 * start it; `serve` warns otherwise (its peak RSS is tens of MiB higher).
 */
export function missingNodeSettings(execArgv: readonly string[], env: NodeJS.ProcessEnv): string[] {
  const given = [...execArgv, ...(env['NODE_OPTIONS'] ?? '').split(/\s+/)];
  const flags = NODE_V8_FLAGS.map((f) => f.split('=')[0] as string).filter((name) => !given.some((a) => a === name || a.startsWith(`${name}=`)));
  const vars = Object.keys(NODE_MALLOC_ENV).filter((k) => env[k] === undefined);
  return [...flags, ...vars];
}

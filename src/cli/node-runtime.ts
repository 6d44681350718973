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
 */
export const NODE_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: '131072',
  MALLOC_TRIM_THRESHOLD_: '131072',
};

/**
 * NODE_V8_FLAGS: V8 flags of a node process. The young generation's
 * semi-spaces may grow to 16 MiB (Node's default on 64-bit, stated here so
 * every launcher states it). A 2 MiB cap held the V8 heap at 35-38 MiB
 * instead of 56-68 during restores and installs, at the same install CPU,
 * but under writes it scavenged ten times as often: `npm run bench:write
 * -- --no-etcd`, 2 and 16 alternating, 5 pairs at load 8-13: the leader's
 * CPU per write 0.30-0.45 ms (mean 0.35) with 2 against 0.28-0.33 (0.30)
 * with 16, its GC time per write 0.12-0.30 against 0.04-0.09 ms, client p99
 * 184-416 against 167-287 ms in every pair.
 */
export const NODE_V8_FLAGS: readonly string[] = ['--max-semi-space-size=16'];

/** nodeProcessEnv: `base` with NODE_MALLOC_ENV added where `base` does not set those variables itself. */
export function nodeProcessEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...NODE_MALLOC_ENV, ...base };
}

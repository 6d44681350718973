/**
 * ExternalMemoryGc: a node process's bound on dead ArrayBuffers (issue 15:
 * "≤ 200 MB RSS per node"). A snapshot's bytes go through a node as short-lived
 * Buffers outside the V8 heap (gunzip output pieces, 1 MiB chunks, gRPC
 * messages): a GB of them in a restore's install or a delta snapshot's
 * base read. Those that live across a few event-loop turns (queued stream
 * chunks) are promoted to the old generation, and only a full collection
 * frees their memory; V8 starts one when the old generation reaches its limit
 * (64 MiB at least, NODE_V8_FLAGS) or external memory grew by ~64 MiB. Until
 * then the dead Buffers stay resident: 40-75 MiB of ArrayBuffers at a time
 * in `bench:snapshot-cluster` (1M x 1 KiB), and the glibc heaps that held the
 * smaller ones stayed that large after they were freed.
 *
 * The bound: every EXTERNAL_MEMORY_CHECK_MS the process's external memory
 * (v8 heap statistics: ArrayBuffers and other external allocations) is
 * compared with its floor (its lowest value since the last collection). Once
 * it is EXTERNAL_GARBAGE_BYTES_MAX above it, the young generation is
 * scavenged (`gc({ type: 'minor' })`, synchronous, its dead ArrayBuffers
 * freed within it: v8Probe turns V8's concurrent ArrayBuffer sweeping off)
 * and looked at again at once; only if it is still that far over (the
 * garbage was promoted) is a full collection started (`gc({ type: 'major',
 * execution: 'async' })`: incremental marking, no long pause), one at a
 * time; its end sets the floor again. Memory that is really in use makes at
 * most one collection per EXTERNAL_GARBAGE_BYTES_MAX of growth. The gc
 * extension is enabled at run time (v8Probe), so a launcher needs no flag
 * for it.
 *
 * A node's main thread runs it on a timer (startExternalMemoryGc, cli/serve.ts);
 * the state digest worker of a delta snapshot checks it as each member is done
 * (state-digest-worker.ts).
 *
 * A producer that knows when its Buffers die tells the bound
 * (noteExternalGarbage): a full snapshot reads the whole state through
 * RocksDB's iterator, which hands over every key and value as a Buffer of its
 * own (~2 M of them per GB at 1 KiB values); each batch is dead once the
 * archive writer has copied it into its blocks. Every
 * GARBAGE_SCAVENGE_BYTES_DEFAULT of them noted, the young generation is
 * scavenged at once, between two batches (no batch in hand: nothing of them
 * survives it, so nothing is promoted), instead of when the timer next looks
 * (100 ms: 10-15 MB of them at a build's speed) or the semi-space fills.
 * Measured (bench/full-snapshot.ts, 1M x 1 KiB, a fresh process): the
 * build's ArrayBuffers peaked at 27-32 MiB with the timer alone, ~16 MiB with
 * a scavenge every 4 MiB.
 *
 * A stream's Buffers (an install's gunzip output, a download's chunks) die
 * young while it runs: the scavenge frees them. Until Dec 5 the bound looked
 * again only at the next check, 100 ms later, when V8's background sweeper
 * had freed them but as many new ones were alive; it read that as promoted
 * garbage and started a full collection as often as allowed, which freed
 * nothing (bench/install.ts, 500k keys of 1 KiB: every full collection of a
 * restore left external memory where it was, 31 -> 31, 51 -> 52, 38 -> 38
 * MiB; each scavenge 41 -> 15 MiB).
 *
 * Its cost, measured (bench:snapshot-cluster --mix text, 2 alternating pairs
 * at load 8-10): 4 concurrent downloads of a 592 MiB archive at 147 / 196
 * MB/s against 266 / 269 without it; restores and writes within the noise.
 * Fast downloads churn ~1 MiB Buffers at hundreds of MB/s and so started a
 * collection every few turns: full collections are now spaced
 * (COLLECTION_INTERVAL_MS_MIN), not re-measured at that size.
 */
import { setFlagsFromString, getHeapStatistics } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** EXTERNAL_GARBAGE_BYTES_MAX: external memory growth over its floor that starts a scavenge (then, if it stays, a full collection). */
export const EXTERNAL_GARBAGE_BYTES_MAX = 16 * 1024 * 1024;

/** EXTERNAL_MEMORY_CHECK_MS: how often a node looks at its external memory. */
export const EXTERNAL_MEMORY_CHECK_MS = 100;

/**
 * COLLECTION_INTERVAL_MS_MIN: the least time from the end of one full
 * collection to the start of the next. A fast download churns through 1 MiB
 * Buffers: with a collection on every other check, 4 concurrent downloads of a
 * 592 MiB archive ran at 147-196 MB/s against 266-269 without the bound (the
 * helper's bench:snapshot-cluster --mix text pairs); spaced, the collections
 * cost a bounded share of the process, and V8's own triggers still cap the
 * garbage in between. Scavenges (cheap, young generation) are not spaced.
 */
export const COLLECTION_INTERVAL_MS_MIN = 1_000;

/**
 * PROMOTED_GARBAGE_BYTES_HARD: promoted garbage (external memory still over
 * its floor after a scavenge) that starts a full collection without waiting
 * for COLLECTION_INTERVAL_MS_MIN. An install's gunzip pieces and a full
 * snapshot's RocksDB Buffers, held across turns while queued, are promoted at
 * 30-60 MB/s: with the spacing alone a node's ArrayBuffers went 6 -> 65-75
 * MiB between two collections (bench:snapshot-cluster, 1M x 1 KiB: the
 * leader's install of a restore, a restarted follower's full snapshot; issue
 * 15), and the glibc heap the smaller ones (112 KiB pieces, 1 KiB values)
 * came from kept those 60 MiB resident after they were freed. Past this bound
 * a collection starts at the next check (still one at a time).
 */
export const PROMOTED_GARBAGE_BYTES_HARD = 3 * EXTERNAL_GARBAGE_BYTES_MAX;

/**
 * GARBAGE_SCAVENGE_BYTES_DEFAULT: external memory noted dead (noteExternalGarbage) between two scavenges it
 * starts. At a full snapshot's ~100 MB/s of state that is a scavenge every ~40 ms.
 */
export const GARBAGE_SCAVENGE_BYTES_DEFAULT = 4 * 1024 * 1024;

/** ExternalMemoryProbe: what the bound reads and does (v8 in a node process; a stand-in in tests). */
export interface ExternalMemoryProbe {
  /** externalBytes: the process's external memory now (bytes). */
  externalBytes(): number;
  /** scavenge: a young-generation collection, now; the Buffers that died young are freed when it returns. */
  scavenge(): void;
  /** collect: a full collection, started now; resolves when it has ended. */
  collect(): Promise<void>;
}

/** ExternalMemoryGc: see the file comment. `check` is called by a timer (startExternalMemoryGc) or a test. */
export class ExternalMemoryGc {
  /** scavenges / collections: the young-generation and the full collections started so far. */
  scavenges = 0;
  collections = 0;
  /** garbageScavenges: those of `scavenges` started by garbageMade. */
  garbageScavenges = 0;
  readonly #garbageScavengeBytes: number;
  /** #garbageNoted: bytes noted dead by garbageMade since its last scavenge. */
  #garbageNoted = 0;
  readonly #probe: ExternalMemoryProbe;
  readonly #garbageBytesMax: number;
  readonly #nowMs: () => number;
  readonly #intervalMs: number;
  /** #promotedBytesHard: external memory over the floor past which the interval between full collections is waived. */
  readonly #promotedBytesHard: number;
  #floor: number;
  #collecting = false;
  /** #collectedAtMs: when the last full collection ended (-Infinity: none yet). */
  #collectedAtMs = -Infinity;
  /** #scavenged: the last scavenge left external memory over the bound (what it found dead was freed within it). */
  #scavenged = false;

  constructor(
    probe: ExternalMemoryProbe,
    garbageBytesMax = EXTERNAL_GARBAGE_BYTES_MAX,
    options: { readonly nowMs?: () => number; readonly collectionIntervalMs?: number; readonly garbageScavengeBytes?: number; readonly promotedBytesHard?: number } = {},
  ) {
    this.#garbageScavengeBytes = options.garbageScavengeBytes ?? GARBAGE_SCAVENGE_BYTES_DEFAULT;
    this.#probe = probe;
    this.#garbageBytesMax = garbageBytesMax;
    this.#nowMs = options.nowMs ?? (() => performance.now());
    this.#intervalMs = options.collectionIntervalMs ?? COLLECTION_INTERVAL_MS_MIN;
    this.#promotedBytesHard = Math.max(garbageBytesMax, options.promotedBytesHard ?? garbageBytesMax * (PROMOTED_GARBAGE_BYTES_HARD / EXTERNAL_GARBAGE_BYTES_MAX));
    this.#floor = probe.externalBytes();
  }

  /**
   * check looks once. External memory garbageBytesMax or more over its floor
   * is scavenged first, and looked at again right after (the probe frees a
   * scavenge's dead Buffers within it): if the scavenge brought it back
   * under the bound, that was all (the Buffers died young, as a stream's do
   * while it runs); if not, the garbage outlived it (promoted Buffers) and
   * a full collection starts (one at a time, at least
   * COLLECTION_INTERVAL_MS_MIN after the last one ended unless the garbage is
   * PROMOTED_GARBAGE_BYTES_HARD over the floor), at this check or a later
   * one. Returns what it started.
   */
  check(): 'scavenge' | 'collect' | null {
    if (this.#collecting) return null;
    const now = this.#probe.externalBytes();
    if (now < this.#floor) this.#floor = now;
    if (now - this.#floor < this.#garbageBytesMax) {
      this.#scavenged = false;
      return null;
    }
    if (!this.#scavenged) {
      this.#scavenge();
      return 'scavenge';
    }
    // The scavenge stays noted: collect when due, or at once past the hard bound.
    if (this.#nowMs() - this.#collectedAtMs < this.#intervalMs && now - this.#floor < this.#promotedBytesHard) return null;
    this.#scavenged = false;
    this.#collecting = true;
    this.collections++;
    const ended = (): void => {
      this.#collecting = false;
      this.#collectedAtMs = this.#nowMs();
      this.#floor = this.#probe.externalBytes();
    };
    this.#probe.collect().then(ended, ended);
    return 'collect';
  }

  /**
   * garbageMade: the caller has just let go of `bytes` of short-lived external
   * memory (Buffers it read and copied out). Once garbageScavengeBytes of it
   * were noted since garbageMade's last scavenge, the young generation is
   * scavenged now (synchronously: the caller should hold none of those
   * Buffers), and the floor and the promoted-garbage note are updated as
   * check's scavenge does (a full collection, if one is due, is still only
   * started by check). Returns whether it scavenged.
   */
  garbageMade(bytes: number): boolean {
    this.#garbageNoted += bytes;
    if (this.#garbageNoted < this.#garbageScavengeBytes) return false;
    this.#garbageNoted = 0;
    this.garbageScavenges++;
    this.#scavenge();
    return true;
  }

  #scavenge(): void {
    this.scavenges++;
    this.#probe.scavenge();
    const after = this.#probe.externalBytes();
    if (after < this.#floor) this.#floor = after;
    // Still over the bound after it: the garbage was promoted (a full collection when due).
    this.#scavenged = after - this.#floor >= this.#garbageBytesMax;
  }
}

/** processBound: the bound startExternalMemoryGc runs in this thread (null: none, as in tests and the simulator). */
let processBound: ExternalMemoryGc | null = null;

/**
 * noteExternalGarbage tells this thread's running bound (startExternalMemoryGc) that `bytes` of short-lived
 * external memory just died (ExternalMemoryGc.garbageMade); without one it does nothing.
 */
export function noteExternalGarbage(bytes: number): void {
  processBound?.garbageMade(bytes);
}

/**
 * v8Probe: the process's own external memory and V8's gc extension, enabled
 * here (`--expose-gc` set at run time: only a new context gets `gc`, this
 * one's global stays as it was). ArrayBuffer sweeping is made synchronous
 * (`--no-concurrent-array-buffer-sweeping`): a collection frees the dead
 * ArrayBuffers' memory before it returns, so what a scavenge freed can be
 * read right after it (with V8's default, a background task frees it later).
 */
export function v8Probe(): ExternalMemoryProbe {
  setFlagsFromString('--expose-gc');
  setFlagsFromString('--no-concurrent-array-buffer-sweeping');
  const gc = runInNewContext('gc') as ((options: { type: 'minor' }) => void) & ((options: { type: 'major'; execution: 'async' }) => Promise<void>);
  return {
    externalBytes: () => getHeapStatistics().external_memory,
    scavenge: () => gc({ type: 'minor' }),
    collect: () => gc({ type: 'major', execution: 'async' }),
  };
}

/** startExternalMemoryGc runs the bound in this thread until stop() (its timer does not keep the process alive); noteExternalGarbage reaches it. */
export function startExternalMemoryGc(probe: ExternalMemoryProbe = v8Probe()): { readonly gc: ExternalMemoryGc; stop(): void } {
  const gc = new ExternalMemoryGc(probe);
  const timer = setInterval(() => gc.check(), EXTERNAL_MEMORY_CHECK_MS);
  timer.unref();
  processBound = gc;
  return {
    gc,
    stop: () => {
      clearInterval(timer);
      if (processBound === gc) processBound = null;
    },
  };
}

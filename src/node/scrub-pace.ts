/**
 * The periodic scrub's schedule and pace (SnapshotManager.startPeriodicScrub):
 * when the next run starts (scrubDelayMs: jittered, so the members of a
 * cluster started together do not all read their disks at once) and how fast
 * a run reads (ScrubPacer: a byte-rate limit, paused while the node writes or
 * installs an archive). Time comes only from the node's Clock (timers and
 * sleeps), so the simulator's virtual clock runs it as it runs the node.
 */
import type { Rng } from '../raft/types.js';
import type { Clock } from './clock.js';

/** SCRUB_INTERVAL_MS_DEFAULT: how often `serve` re-hashes every stored archive unless told (24 h; 0 turns it off). */
export const SCRUB_INTERVAL_MS_DEFAULT = 24 * 3_600_000;
/** SCRUB_INTERVAL_MS_MIN / SCRUB_INTERVAL_MS_MAX: the intervals a node accepts (1 s .. 365 days), 0 aside. */
export const SCRUB_INTERVAL_MS_MIN = 1_000;
export const SCRUB_INTERVAL_MS_MAX = 365 * 24 * 3_600_000;
/**
 * SCRUB_BYTES_PER_SEC_DEFAULT: the scrub's read rate unless told (64 MiB/s: a 257 MiB archive re-hashed in 4.0 s for
 * 0.51 s of CPU, ~13% of one core, against 0.38-0.41 s unpaced at 625-710 MB/s; measured here at load ~13, 2 runs
 * each; a 1 GiB archive takes 16 s, an 8 GiB one a little over 2 min).
 */
export const SCRUB_BYTES_PER_SEC_DEFAULT = 64 * 1024 * 1024;
/** SCRUB_BYTES_PER_SEC_MIN: the slowest rate accepted (1 MiB/s: a 64 GiB archive in ~18 h, within the default interval). */
export const SCRUB_BYTES_PER_SEC_MIN = 1024 * 1024;
/** SCRUB_BURST_BYTES: what a run may read ahead of its rate (one read piece of the verify). */
export const SCRUB_BURST_BYTES = 1024 * 1024;
/** SCRUB_BUSY_POLL_MS: how often a run paused for the node's archive work looks again. */
export const SCRUB_BUSY_POLL_MS = 1_000;
/** JITTER_STEPS: the resolution of scrubDelayMs' random draw. */
const JITTER_STEPS = 1_000_000;

/**
 * scrubDelayMs: the wait before a scrub run, `intervalMs` jittered by ±25% (a uniform draw of `rng`): members
 * booted together drift apart by up to half an interval on their first run, and independently on every later one.
 */
export function scrubDelayMs(intervalMs: number, rng: Rng): number {
  return Math.floor(intervalMs * (0.75 + (0.5 * rng.nextInt(JITTER_STEPS)) / JITTER_STEPS));
}

/** ScrubStoppedError: the node is stopping (the scrub's signal): what a wait of the pacer rejects with. */
export class ScrubStoppedError extends Error {
  override readonly name = 'ScrubStoppedError';
  constructor() {
    super('the node is stopping');
  }
}

/** sleepUnlessStopped resolves after `delayMs` on `clock`, or rejects with ScrubStoppedError once `signal` aborts (the timer cleared). */
export function sleepUnlessStopped(clock: Clock, delayMs: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(new ScrubStoppedError());
      return;
    }
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      reject(new ScrubStoppedError());
    };
    const timer = clock.setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    timer.unref();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * ScrubPacer paces one scrub run (SnapshotStore.scrub's ReadPace and beforeEach): past its first
 * SCRUB_BURST_BYTES, the bytes read never run ahead of `bytesPerSec` times the run's time not spent paused
 * (bytesPerSec 0: no limit); while `busy()` says the node is writing or installing an archive, it waits, and that
 * time earns no bytes. Every wait is a sleep on the node's clock and rejects with ScrubStoppedError once `signal`
 * aborts (the run stops where it is).
 */
export class ScrubPacer {
  private readonly startMs: number;
  private pausedMs = 0;
  private bytes = 0;

  constructor(
    private readonly clock: Clock,
    private readonly bytesPerSec: number,
    private readonly signal: AbortSignal,
    private readonly busy: () => boolean,
  ) {
    if (!Number.isFinite(bytesPerSec) || bytesPerSec < 0) throw new RangeError(`scrub rate must be 0 (no limit) or a number of bytes/s, got ${bytesPerSec}`);
    this.startMs = clock.nowMs();
  }

  /** bytesPaced: the bytes this run reported read so far. */
  get bytesPaced(): number {
    return this.bytes;
  }

  /** pace: `bytes` more were read; resolves once the rate allows the next read (and the node is not busy). */
  readonly pace = async (bytes: number): Promise<void> => {
    this.bytes += bytes;
    await this.whileBusy();
    if (this.bytesPerSec === 0) return;
    for (;;) {
      const dueMs = this.startMs + this.pausedMs + ((this.bytes - SCRUB_BURST_BYTES) / this.bytesPerSec) * 1000;
      const waitMs = dueMs - this.clock.nowMs();
      if (waitMs <= 0) return;
      await sleepUnlessStopped(this.clock, Math.ceil(waitMs), this.signal);
      await this.whileBusy();
    }
  };

  /** beforeEach: waits until the node is not busy before the next archive is read. */
  readonly beforeEach = async (): Promise<void> => {
    await this.whileBusy();
  };

  /** whileBusy: sleeps SCRUB_BUSY_POLL_MS at a time while busy(); the time is not counted as the run's. */
  private async whileBusy(): Promise<void> {
    if (this.signal.aborted) throw new ScrubStoppedError();
    while (this.busy()) {
      const from = this.clock.nowMs();
      await sleepUnlessStopped(this.clock, SCRUB_BUSY_POLL_MS, this.signal);
      this.pausedMs += this.clock.nowMs() - from;
    }
  }
}

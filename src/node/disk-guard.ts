import { statfs } from 'node:fs/promises';

import type { Clock, TimerHandle } from './clock.js';
import { NodeError } from './errors.js';
import type { Logger } from './logger.js';

const MIB = 1024 * 1024;

/** DEFAULT_MIN_FREE_BYTES: the free space a node keeps in reserve on its data dir's file system (64 MiB). */
export const DEFAULT_MIN_FREE_BYTES = 64 * MIB;
/** DISK_CHECK_INTERVAL_MS: how often the guard measures free space. */
export const DISK_CHECK_INTERVAL_MS = 500;

/**
 * isNoSpace: `err` (or an error in its `cause` chain) says the file system is
 * full: an ENOSPC from node:fs, RocksDB's "No space left on device" IO error,
 * or a NodeError `diskFull`.
 */
export function isNoSpace(err: unknown): boolean {
  let e = err;
  for (let depth = 0; e instanceof Error && depth < 8; depth++) {
    if (e instanceof NodeError) return e.code === 'diskFull';
    if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || /no space left on device/i.test(e.message)) return true;
    e = e.cause;
  }
  return false;
}

/**
 * DiskGuard keeps a reserve of free space on the data dir's file system, in
 * the manner of etcd's NOSPACE alarm and CockroachDB's ballast: it measures
 * the space available (statfs: bavail * bsize) every DISK_CHECK_INTERVAL_MS
 * on an unref'd timer of its clock, so the write path never waits on the file system, and
 * again right after an ENOSPC (noteError). While less than minFreeBytes is
 * free, check() refuses new writes with NodeError `diskFull`; the reserve
 * leaves room for what the node must still persist (entries already
 * accepted, votes, terms). Writes are accepted again once space comes back.
 */
export class DiskGuard {
  private freeBytes = Number.POSITIVE_INFINITY;
  private full = false;
  private timer: TimerHandle | undefined;
  private measuring: Promise<void> | null = null;

  constructor(
    readonly dir: string,
    readonly minFreeBytes: number,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly intervalMs = DISK_CHECK_INTERVAL_MS,
  ) {}

  /** start measures once, then every intervalMs until stop(). */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = this.clock.setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** isFull: less than minFreeBytes was free at the last measurement. */
  get isFull(): boolean {
    return this.full;
  }

  /** check throws NodeError `diskFull` while the reserve is not free (a write must not start). */
  check(): void {
    if (this.full) {
      throw new NodeError(
        'diskFull',
        `disk full: ${(this.freeBytes / MIB).toFixed(1)} MiB free on ${this.dir}, below the reserve of ${formatMiB(this.minFreeBytes)} (--min-free-bytes); writes are refused, reads still served`,
      );
    }
  }

  /** noteError measures again now when `err` is an ENOSPC, rather than at the next tick. */
  noteError(err: unknown): void {
    if (isNoSpace(err)) void this.refresh();
  }

  /** refresh measures free space (one statfs at a time; callers during one share it). */
  refresh(): Promise<void> {
    this.measuring ??= this.measure().finally(() => {
      this.measuring = null;
    });
    return this.measuring;
  }

  private async measure(): Promise<void> {
    let free: number;
    try {
      const st = await statfs(this.dir);
      free = st.bavail * st.bsize;
    } catch (err) {
      this.log.warn({ dir: this.dir, err: (err as Error).message }, 'cannot measure free disk space');
      return;
    }
    this.freeBytes = free;
    const full = free < this.minFreeBytes;
    if (full === this.full) return;
    this.full = full;
    if (full) {
      this.log.error({ dir: this.dir, freeBytes: free, minFreeBytes: this.minFreeBytes }, 'disk full: writes are refused until space is freed; reads are still served');
    } else {
      this.log.info({ dir: this.dir, freeBytes: free, minFreeBytes: this.minFreeBytes }, 'disk space is back above the reserve: writes are accepted again');
    }
  }
}

function formatMiB(bytes: number): string {
  const mib = bytes / MIB;
  return Number.isInteger(mib) ? `${mib} MiB` : `${mib.toFixed(1)} MiB`;
}

/**
 * ManualClock: a virtual Clock (src/node/clock.ts) for tests and the
 * simulator. Time moves only when advance() is called; the timers that come
 * due are then run in order of due time, ties in the order they were set,
 * each with nowMs() reading its due time. Real time never moves it.
 */
import type { Clock, TimerHandle } from '../../../src/node/clock.js';

/** ADVANCE_FIRES_MAX: timers one advance() runs at most by default (a timer that keeps re-arming at 0 ms would never end). */
const ADVANCE_FIRES_MAX = 1_000_000;

interface ManualTimer extends TimerHandle {
  dueMs: number;
  readonly seq: number;
  readonly fn: () => void;
  /** intervalMs: re-armed this far after each run; null for a one-shot timer. */
  readonly intervalMs: number | null;
}

export class ManualClock implements Clock {
  private now: number;
  private seq = 0;
  private readonly timers = new Set<ManualTimer>();
  private readonly firesMax: number;

  /** startMs: what nowMs() reads before the first advance; firesMax: timers one advance() may run. */
  constructor(startMs = 0, opts: { readonly firesMax?: number } = {}) {
    this.now = startMs;
    this.firesMax = opts.firesMax ?? ADVANCE_FIRES_MAX;
  }

  nowMs(): number {
    return this.now;
  }

  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    return this.arm(fn, Math.max(0, delayMs), null);
  }

  /** defer: a microtask (time does not move). */
  defer(fn: () => void): void {
    queueMicrotask(fn);
  }

  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    if (!(intervalMs > 0)) throw new RangeError(`ManualClock: interval of ${intervalMs} ms`);
    return this.arm(fn, intervalMs, intervalMs);
  }

  clearTimeout(timer: TimerHandle | undefined): void {
    const t = timer as ManualTimer | undefined;
    if (t === undefined || !this.timers.has(t)) return;
    this.timers.delete(t);
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => this.setTimeout(resolve, delayMs));
  }

  /** pendingTimers: timers set and not yet run (one-shot) or cleared. */
  pendingTimers(): number {
    return this.timers.size;
  }

  /**
   * advance moves time forward by ms (≥ 0), running every timer that comes
   * due on the way, those set meanwhile included, in order; returns how many
   * ran. A timer that throws stops the advance at its due time, and the error
   * propagates. Throws RangeError past firesMax runs.
   */
  advance(ms: number): number {
    if (!(ms >= 0)) throw new RangeError(`ManualClock: cannot advance by ${ms} ms`);
    const targetMs = this.now + ms;
    let fired = 0;
    for (;;) {
      const next = this.nextDue();
      if (next === null || next.dueMs > targetMs) break;
      if (++fired > this.firesMax) throw new RangeError(`ManualClock: more than ${this.firesMax} timers came due in one advance`);
      this.now = next.dueMs;
      if (next.intervalMs === null) this.timers.delete(next);
      else next.dueMs += next.intervalMs;
      next.fn();
    }
    this.now = targetMs;
    return fired;
  }

  /**
   * advanceSettled advances by ms in steps of stepMs, and after each step
   * lets the real event loop run `turns` turns (setImmediate), so the async
   * work the timers started (persisting, messages of an in-memory transport,
   * applying) happens at that virtual time. Bounded by ms / stepMs steps.
   */
  async advanceSettled(ms: number, stepMs: number, turns = 20): Promise<void> {
    if (!(stepMs > 0)) throw new RangeError(`ManualClock: step of ${stepMs} ms`);
    for (let doneMs = 0; doneMs < ms; doneMs += stepMs) {
      this.advance(Math.min(stepMs, ms - doneMs));
      await settle(turns);
    }
  }

  private arm(fn: () => void, delayMs: number, intervalMs: number | null): ManualTimer {
    const t: ManualTimer = { dueMs: this.now + delayMs, seq: this.seq++, fn, intervalMs, unref: () => undefined };
    this.timers.add(t);
    return t;
  }

  private nextDue(): ManualTimer | null {
    let best: ManualTimer | null = null;
    for (const t of this.timers) {
      if (best === null || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.seq < best.seq)) best = t;
    }
    return best;
  }
}

/** settle lets the real event loop run `turns` turns (bounded): in-memory IO and message hops complete. */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * SimClock: the simulator's one virtual clock (a binary heap of timers
 * ordered by due time, ties by the order they were set). Nothing moves it
 * but fireNext(); real time never does. NodeClock is one node incarnation's
 * view of it (the Clock a Node is given, src/node/clock.ts): a crash kills
 * the incarnation, and every timer it set never runs.
 */
import type { Clock, TimerHandle } from '../../src/node/clock.js';

interface SimTimer extends TimerHandle {
  dueMs: number;
  seq: number;
  readonly fn: () => void;
  /** intervalMs: re-armed this far after each run; 0 for a one-shot timer. */
  readonly intervalMs: number;
  cancelled: boolean;
}

export class SimClock {
  private now = 0;
  private seq = 0;
  private heap: SimTimer[] = [];
  /** fired: timers run so far. */
  fired = 0;

  nowMs(): number {
    return this.now;
  }

  /** at runs fn once, delayMs (≥ 0) from now; the handle cancels it. */
  at(fn: () => void, delayMs: number, intervalMs = 0): SimTimer {
    const t: SimTimer = { dueMs: this.now + Math.max(0, delayMs), seq: this.seq++, fn, intervalMs, cancelled: false, unref: noop };
    this.push(t);
    return t;
  }

  cancel(t: TimerHandle | undefined): void {
    if (t !== undefined) (t as SimTimer).cancelled = true;
  }

  /** pending: timers in the heap (cancelled ones included until they surface). */
  pending(): number {
    return this.heap.length;
  }

  /**
   * fireNext runs the earliest live timer if it is due at or before untilMs,
   * moving time to its due time, and returns true; otherwise moves time to
   * untilMs and returns false. A timer that throws propagates its error.
   */
  fireNext(untilMs: number): boolean {
    for (;;) {
      const t = this.heap[0];
      if (t === undefined || t.dueMs > untilMs) {
        if (untilMs > this.now) this.now = untilMs;
        return false;
      }
      this.pop();
      if (t.cancelled) continue;
      this.now = t.dueMs;
      if (t.intervalMs > 0) {
        t.dueMs += t.intervalMs;
        t.seq = this.seq++;
        this.push(t);
      }
      this.fired++;
      t.fn();
      return true;
    }
  }

  private less(a: SimTimer, b: SimTimer): boolean {
    return a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.seq < b.seq);
  }

  private push(t: SimTimer): void {
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as SimTimer;
      if (!this.less(t, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = t;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.less(h[r] as SimTimer, h[l] as SimTimer) ? r : l;
      if (!this.less(h[c] as SimTimer, last)) break;
      h[i] = h[c] as SimTimer;
      i = c;
    }
    h[i] = last;
  }
}

function noop(): void {}

/**
 * NodeClock is the Clock of one node incarnation: every timer it sets runs
 * on the SimClock unless the incarnation was killed (a crash) meanwhile;
 * sleep() of a killed incarnation never resolves (its process is gone).
 */
export class NodeClock implements Clock {
  private alive = true;
  private readonly timers = new Set<TimerHandle>();

  constructor(private readonly sim: SimClock) {}

  nowMs(): number {
    return this.sim.nowMs();
  }

  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    const t = this.sim.at(
      () => {
        this.timers.delete(t);
        if (this.alive) fn();
      },
      delayMs,
    );
    if (this.alive) this.timers.add(t);
    else this.sim.cancel(t);
    return t;
  }

  /** defer: a microtask (virtual time does not move), never run once the incarnation is killed. */
  defer(fn: () => void): void {
    queueMicrotask(() => {
      if (this.alive) fn();
    });
  }

  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    if (!(intervalMs > 0)) throw new RangeError(`NodeClock: interval of ${intervalMs} ms`);
    const t = this.sim.at(() => (this.alive ? fn() : undefined), intervalMs, intervalMs);
    if (this.alive) this.timers.add(t);
    else this.sim.cancel(t);
    return t;
  }

  clearTimeout(timer: TimerHandle | undefined): void {
    if (timer === undefined) return;
    this.timers.delete(timer);
    this.sim.cancel(timer);
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => this.setTimeout(resolve, delayMs));
  }

  /** kill: the incarnation crashed; none of its timers runs again. */
  kill(): void {
    this.alive = false;
    for (const t of this.timers) this.sim.cancel(t);
    this.timers.clear();
  }
}

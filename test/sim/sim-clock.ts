/**
 * SimClock: the simulator's one virtual clock (a binary heap of timers
 * ordered by due time, ties by the order they were set). Nothing moves it
 * but fireNext(); real time never does. NodeClock is one node incarnation's
 * view of it (the Clock a Node is given, src/node/clock.ts): a crash kills
 * the incarnation, and every timer it set never runs (each timer names its
 * owner; one whose owner is dead is dropped as it surfaces, as a cancelled one).
 */
import type { Clock, TimerHandle } from '../../src/node/clock.js';

interface SimTimer extends TimerHandle {
  dueMs: number;
  seq: number;
  readonly fn: () => void;
  /** intervalMs: re-armed this far after each run; 0 for a one-shot timer. */
  readonly intervalMs: number;
  cancelled: boolean;
  /** owner: the incarnation that set it (never run once it is dead); null for the simulator's own timers. */
  readonly owner: TimerOwner | null;
}

/** TimerOwner: what a timer's owner tells the clock (NodeClock). */
interface TimerOwner {
  readonly alive: boolean;
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
  at(fn: () => void, delayMs: number, intervalMs = 0, owner: TimerOwner | null = null): SimTimer {
    const t: SimTimer = { dueMs: this.now + Math.max(0, delayMs), seq: this.seq++, fn, intervalMs, cancelled: false, unref: noop, owner };
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
      if (t.cancelled || (t.owner !== null && !t.owner.alive)) continue;
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

/** RESOLVED: the settled promise defer() chains on (a reaction queued at once, as on a new Promise.resolve(), one promise fewer a call). */
const RESOLVED: Promise<void> = Promise.resolve();

/**
 * NodeClock is the Clock of one node incarnation: every timer it sets runs
 * on the SimClock unless the incarnation was killed (a crash) meanwhile;
 * sleep() of a killed incarnation never resolves (its process is gone).
 */
export class NodeClock implements Clock {
  /** alive: false once the incarnation is killed (its timers are then dropped by the SimClock, see TimerOwner). */
  alive = true;

  constructor(private readonly sim: SimClock) {}

  nowMs(): number {
    return this.sim.nowMs();
  }

  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    return this.sim.at(fn, delayMs, 0, this);
  }

  /**
   * defer: a microtask (virtual time does not move), never run once the incarnation is killed. A promise
   * reaction, not queueMicrotask (the same place in the one microtask queue; queueMicrotask makes an
   * AsyncResource per call).
   */
  defer(fn: () => void): void {
    void RESOLVED.then(() => {
      if (this.alive) fn();
    });
  }

  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    if (!(intervalMs > 0)) throw new RangeError(`NodeClock: interval of ${intervalMs} ms`);
    return this.sim.at(fn, intervalMs, intervalMs, this);
  }

  clearTimeout(timer: TimerHandle | undefined): void {
    this.sim.cancel(timer);
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise<void>((resolve) => this.setTimeout(resolve, delayMs));
  }

  /** kill: the incarnation crashed; none of its timers runs again. */
  kill(): void {
    this.alive = false;
  }
}

/**
 * The node's time, passed in (NodeOptions.clock) so that a simulator can run
 * the real driver on virtual time: src/node reads the time and sets timers
 * only through a Clock, never through Date, performance or the timer globals.
 * This file holds the one real implementation, systemClock; the process
 * wiring (cli serve, the test harnesses) chooses it.
 */

/**
 * TimerHandle names a timer a Clock set, for clearTimeout. unref(): the timer
 * does not keep the process alive on its own (a no-op on a virtual clock).
 */
export interface TimerHandle {
  unref(): void;
}

/**
 * Clock is the driver's source of time.
 * - nowMs: milliseconds on a monotonic clock with an unspecified origin (it
 *   may be 0 at start); only differences are meaningful, never a date.
 * - setTimeout runs fn once, at least delayMs (≥ 0) from now; setInterval
 *   runs fn every intervalMs (> 0) until cleared. Timers come due in the
 *   order of their due time, ties in the order they were set. fn runs on its
 *   own turn, never inside the call that set it.
 * - clearTimeout cancels a timer of either kind; undefined, or a timer
 *   already run or cleared, is ignored.
 * - sleep resolves once delayMs have passed.
 * - defer runs fn once, soon, on its own turn, after the work already due
 *   in this turn (systemClock: setImmediate, after the I/O callbacks of the
 *   current event-loop turn, so the requests that arrived together are all
 *   stepped before fn runs; a virtual clock: a microtask, time unchanged).
 *   It cannot be cancelled.
 */
export interface Clock {
  nowMs(): number;
  setTimeout(fn: () => void, delayMs: number): TimerHandle;
  defer(fn: () => void): void;
  setInterval(fn: () => void, intervalMs: number): TimerHandle;
  clearTimeout(timer: TimerHandle | undefined): void;
  sleep(delayMs: number): Promise<void>;
}

/** systemClock: the real Clock: performance.now() and the Node.js timers. */
export const systemClock: Clock = {
  nowMs: () => performance.now(),
  setTimeout: (fn, delayMs) => setTimeout(fn, delayMs),
  defer: (fn) => {
    setImmediate(fn);
  },
  setInterval: (fn, intervalMs) => setInterval(fn, intervalMs),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
  sleep: (delayMs) => new Promise<void>((resolve) => setTimeout(resolve, delayMs)),
};

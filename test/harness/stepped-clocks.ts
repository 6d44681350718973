/**
 * SteppedClocks: this process's wall clock (Date.now) and monotonic clock
 * (performance.now) under a test's hand, as a host sees them when NTP steps
 * its clock or a VM resumes: stepWall(ms) moves Date.now only, pass(ms) moves
 * both (time passing faster than real). Both keep running with real time in
 * between, so grpc-js, fastify and timers go on as usual. `new Date()` and
 * the timers (setTimeout) are not moved. install() replaces both functions,
 * restore() puts the real ones back (call it in a finally or afterEach).
 *
 * A rate limit or interval that reads Date.now goes wrong after stepWall
 * (a step back silences it for the step's length, a step forward ends it at
 * once); one that reads the monotonic clock does not.
 */
import { performance } from 'node:perf_hooks';

export class SteppedClocks {
  private readonly realDateNow = Date.now;
  private readonly realPerfNow = performance.now.bind(performance);
  private wallOffsetMs = 0;
  private monoOffsetMs = 0;
  private installed = false;

  /** install: from now on Date.now and performance.now read through this (offsets 0 until moved). */
  install(): this {
    if (this.installed) return this;
    this.installed = true;
    Date.now = () => this.realDateNow() + this.wallOffsetMs;
    performance.now = () => this.realPerfNow() + this.monoOffsetMs;
    return this;
  }

  /** stepWall: the wall clock jumps by `ms` (negative: back); the monotonic clock does not. */
  stepWall(ms: number): void {
    this.wallOffsetMs += ms;
  }

  /** pass: `ms` more pass on both clocks at once. */
  pass(ms: number): void {
    this.wallOffsetMs += ms;
    this.monoOffsetMs += ms;
  }

  /** restore puts the real Date.now and performance.now back (idempotent). */
  restore(): void {
    if (!this.installed) return;
    this.installed = false;
    Date.now = this.realDateNow;
    // The real now is performance's prototype method: drop the own property install() set.
    delete (performance as { now?: unknown }).now;
  }
}

/** HOUR_MS: the size of the steps the tests make (test:hosts' clock scenario steps a host by +-1 h). */
export const HOUR_MS = 3_600_000;

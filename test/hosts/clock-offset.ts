/**
 * clock-offset: a preload for serve processes of the host tests
 * (`node --import tsx --import test/hosts/clock-offset.ts ...`) that steps this
 * process's wall clock: Date.now() and `new Date()` run `offset` ms ahead,
 * where `offset` is the number in the file named by HOSTS_TEST_CLOCK_FILE,
 * re-read every 100 ms (a missing or unreadable file is 0). A network
 * namespace cannot have its own clock, so this emulates a host whose clock
 * jumps (NTP stepping it, a VM resumed): the wall clock moves, the monotonic
 * clocks (performance.now(), timers) do not, as on a real host. OpenSSL's
 * certificate checks read the real system clock and are not shifted.
 * Without HOSTS_TEST_CLOCK_FILE it does nothing.
 */
import { readFileSync } from 'node:fs';

const file = process.env['HOSTS_TEST_CLOCK_FILE'];
if (file !== undefined && file !== '') {
  const RealDate = Date;
  let offsetMs = 0;
  const read = (): void => {
    let next: number;
    try {
      const v = Number(readFileSync(file, 'utf8').trim());
      next = Number.isFinite(v) ? v : 0;
    } catch {
      next = 0;
    }
    // Said on stderr, so the test sees that the step reached this process.
    if (next !== offsetMs) process.stderr.write(`clock-offset: wall clock stepped to real ${next >= 0 ? '+' : ''}${next} ms\n`);
    offsetMs = next;
  };
  read();
  setInterval(read, 100).unref();
  class ShiftedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + offsetMs);
      else super(...(args as [string | number | Date]));
    }

    static override now(): number {
      return RealDate.now() + offsetMs;
    }
  }
  globalThis.Date = ShiftedDate as DateConstructor;
}

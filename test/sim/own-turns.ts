/**
 * eachOnItsOwnTurn: the simulator's step loop on the real event loop
 * (node-cluster.ts fires its virtual timers through it, one per step).
 *
 * eachOnItsOwnTurn calls step(first) on a macrotask of its own, again and
 * again until step returns false, then resolves (it rejects with what step
 * threw, and calls it no more). Before each call, every microtask and
 * process.nextTick callback the previous call started has run (Node drains
 * both queues after each immediate), so a timer's consequences all settle
 * before the next timer fires, as they would with one event-loop turn per
 * step, without that turn's cost (a poll of the real event loop: ~8 µs of
 * wall time on a loaded machine, ~2,500 a seed). The immediates are queued
 * TURNS_BATCH at a time and run in one loop iteration; those left when the
 * steps end are cleared. The order is that of one turn per step as long as
 * the code under simulation queues no immediates or real timers of its own
 * (the node's Clock is virtual).
 */

/** TURNS_BATCH: immediates queued at once (one event-loop iteration runs them all). */
export const TURNS_BATCH = 256;

export function eachOnItsOwnTurn(step: (first: boolean) => boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const queued: NodeJS.Immediate[] = [];
    let at = 0;
    let first = true;
    let done = false;
    const end = (): void => {
      done = true;
      for (let i = at; i < queued.length; i++) clearImmediate(queued[i]);
    };
    const run = (): void => {
      if (done) return;
      at++;
      let more: boolean;
      try {
        more = step(first);
      } catch (e) {
        end();
        reject(e);
        return;
      }
      first = false;
      if (!more) {
        end();
        resolve();
      } else if (at === queued.length) queue();
    };
    const queue = (): void => {
      queued.length = 0;
      at = 0;
      for (let i = 0; i < TURNS_BATCH; i++) queued.push(setImmediate(run));
    };
    queue();
  });
}

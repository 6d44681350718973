/**
 * until and sleep: the one bounded wait of the tests, benches and tools.
 */

/** sleep resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** UntilOptions: how often `until` asks (default every 50 ms). */
export interface UntilOptions {
  readonly everyMs?: number;
}

/**
 * until calls `f` every `everyMs` until it returns a value other than
 * undefined and resolves with it. A throw from `f` counts as "not yet" (the
 * last one is kept). After timeoutMs it rejects with an Error naming `what`,
 * the timeout and the last error (also its `cause`). Never waits unbounded.
 */
export async function until<T>(what: string, timeoutMs: number, f: () => T | undefined | Promise<T | undefined>, opts: UntilOptions = {}): Promise<T> {
  const everyMs = opts.everyMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last: unknown = undefined;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(everyMs, Math.max(1, deadline - Date.now())));
  }
  const why = last === undefined ? '' : ` (last error: ${last instanceof Error ? last.message : String(last)})`;
  throw new Error(`${what}: not within ${timeoutMs} ms${why}`, last === undefined ? undefined : { cause: last });
}

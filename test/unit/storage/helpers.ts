import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageError } from '../../../src/storage/storage-error.js';

/** rejectsWith asserts that `promise` rejects with a StorageError of `code` (and a message matching `pattern`). */
export async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StorageError, `expected StorageError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

/**
 * ThreadpoolHold keeps libuv threadpool threads busy, each in open() of a FIFO
 * nobody writes yet, until released. libuv's work queue is first in, first
 * out: a job queued after a hold that found no free thread runs only once an
 * earlier job is done. Release everything (releaseAll) before a test ends.
 */
export class ThreadpoolHold {
  /** size: the threads of the pool (UV_THREADPOOL_SIZE, default 4). */
  static readonly size = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  #made = 0;
  readonly #held: { readonly path: string; readonly done: Promise<void> }[] = [];

  constructor(private readonly dir: string) {}

  /** hold queues one more open() of a new FIFO (it holds a thread once it runs). */
  hold(): void {
    const path = join(this.dir, `threadpool-hold-${this.#made++}`);
    execFileSync('mkfifo', [path]);
    this.#held.push({ path, done: open(path, 'r').then((h) => h.close()) });
  }

  /** holdAll holds every thread of the pool. */
  holdAll(): void {
    for (let i = 0; i < ThreadpoolHold.size; i++) this.hold();
  }

  /** releaseOldest lets the oldest hold's open() return (it must be running: a hold that found a thread). */
  releaseOldest(): void {
    const h = this.#held.shift();
    if (h !== undefined) closeSync(openSync(h.path, constants.O_WRONLY | constants.O_NONBLOCK));
  }

  /** releaseAll lets every hold return, in order, waiting (a bounded number of turns) for a queued one to start. */
  async releaseAll(): Promise<void> {
    const held = this.#held.splice(0);
    for (const h of held) {
      for (let turn = 0; ; turn++) {
        try {
          closeSync(openSync(h.path, constants.O_WRONLY | constants.O_NONBLOCK));
          break;
        } catch (err) {
          // ENXIO: its open() has not started yet (no thread free): wait for one (up to ~10,000 ms steps).
          if ((err as NodeJS.ErrnoException).code !== 'ENXIO' || turn >= 10_000) throw err;
          await new Promise((r) => setTimeout(r, 1));
        }
      }
      await h.done;
    }
  }
}

/**
 * turnsUntil waits up to `turns` event-loop turns for `cond` (what this
 * thread alone brings about: promises, immediates); answers whether it held.
 */
export async function turnsUntil(cond: () => boolean, turns = 1000): Promise<boolean> {
  for (let turn = 0; turn < turns && !cond(); turn++) await new Promise((r) => setImmediate(r));
  return cond();
}

/**
 * stepsUntil waits for `cond` that a threadpool job brings about (its
 * completion), in up to `steps` steps of a 1 ms timer (a bound on the loop, not
 * a time the test expects); answers whether it held.
 */
export async function stepsUntil(cond: () => boolean, steps = 10_000): Promise<boolean> {
  for (let step = 0; step < steps && !cond(); step++) await new Promise((r) => setTimeout(r, 1));
  return cond();
}

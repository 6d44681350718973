/**
 * ClosedLoop: the load driver of `snapcoord bench write` and of the
 * repository's bench:write (for snapcoord and etcd alike): `workers`
 * concurrent loops, each calling `op` and waiting for it before the next
 * (a closed loop, as etcd's benchmark tool runs), recording every latency and
 * failure in one Recorder, until `count` operations have been handed out or
 * stop() is called. A worker pauses `failurePauseMs` after a failure.
 */
import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { LatencyHistogram } from './histogram.js';
import { Recorder } from './recorder.js';
import { pause } from './snapshot-load.js';

/** Op runs one operation for worker `worker` (its `seq`th overall); it may return a label ("put", "get") for per-label latencies. */
export type Op = (worker: number, seq: number, signal: AbortSignal) => Promise<string | void>;

export interface ClosedLoopOptions {
  readonly workers: number;
  /** count: operations handed out in all (undefined: until stopped). */
  readonly count?: number;
  /** failurePauseMs: a worker's pause after a failed operation (default 10). */
  readonly failurePauseMs?: number;
}

export class ClosedLoop {
  readonly recorder: Recorder;
  /** byLabel: latencies per label the op returned. */
  readonly byLabel = new Map<string, LatencyHistogram>();
  readonly done: Promise<void>;
  readonly #abort = new AbortController();
  #handedOut = 0;

  constructor(opts: ClosedLoopOptions, op: Op, recorder = new Recorder()) {
    // Every call in flight listens for the stop: as many listeners as workers, by design.
    setMaxListeners(0, this.#abort.signal);
    this.recorder = recorder;
    const pauseMs = opts.failurePauseMs ?? 10;
    const worker = async (w: number): Promise<void> => {
      const signal = this.#abort.signal;
      while (!signal.aborted && (opts.count === undefined || this.#handedOut < opts.count)) {
        const seq = this.#handedOut++;
        const t0 = performance.now();
        try {
          const label = await op(w, seq, signal);
          const ms = performance.now() - t0;
          this.recorder.ok(ms);
          if (typeof label === 'string') {
            let h = this.byLabel.get(label);
            if (h === undefined) this.byLabel.set(label, (h = new LatencyHistogram()));
            h.record(ms);
          }
        } catch (err) {
          if (signal.aborted) break; // stopped mid-call: not a failure of the target
          this.recorder.fail(err);
          await pause(pauseMs, signal);
        }
      }
    };
    this.done = Promise.all(Array.from({ length: opts.workers }, (_, w) => worker(w))).then(() => undefined);
  }

  /** handedOut: operations started so far. */
  get handedOut(): number {
    return this.#handedOut;
  }

  /** signal: aborted once stop() is called (ops may cancel their call on it). */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** stop hands out no more operations and waits for the ones in flight (an op may end early on `signal`). */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.done;
  }
}

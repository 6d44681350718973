import type { EventEmitter } from 'node:events';

/**
 * STREAM_UNSENT_MAX: the messages a bulk server stream (snapshot chunks, downloads) may hold
 * written but unsent. grpc-js's own Writable queues 16 messages before write() returns false: 16
 * MiB per stream of 1 MiB chunks, 64 MiB on a leader serving 4 downloads (issue 15: peak RSS).
 */
export const STREAM_UNSENT_MAX = 2;

/** WindowedCall: the part of a grpc-js server stream a StreamWriteWindow uses. */
export interface WindowedCall<T> extends EventEmitter {
  write(message: T, callback: (err?: Error | null) => void): boolean;
}

/**
 * StreamWriteWindow bounds the messages a server stream holds written but not
 * yet sent. write() hands a message to the call and resolves once at most
 * `unsentMax` of the messages written so far are unsent (grpc-js calls a
 * write's callback once its frame went to the HTTP/2 stream), so the producer
 * holds at most `unsentMax` messages, plus the one it is making, whatever the
 * peer's pace. It resolves at once when the call was cancelled, closed or
 * finished (grpc-js then never calls the callbacks; the caller checks the
 * call). `unsent` is the current count.
 */
export class StreamWriteWindow<T> {
  #unsent = 0;
  #gone = false;
  #wake: (() => void) | null = null;

  constructor(
    private readonly call: WindowedCall<T>,
    readonly unsentMax: number = STREAM_UNSENT_MAX,
  ) {
    if (!Number.isInteger(unsentMax) || unsentMax < 1) throw new RangeError(`unsentMax must be a whole number >= 1, got ${unsentMax}`);
    const gone = (): void => {
      this.#gone = true;
      this.#wakeUp();
    };
    call.once('cancelled', gone);
    call.once('close', gone);
    call.once('finish', gone);
  }

  /** unsent: messages written whose callback has not run yet. */
  get unsent(): number {
    return this.#unsent;
  }

  /** write sends `message` and resolves once at most unsentMax messages are unsent (or the call is gone). */
  async write(message: T): Promise<void> {
    this.#unsent++;
    this.call.write(message, () => {
      this.#unsent--;
      this.#wakeUp();
    });
    while (this.#unsent > this.unsentMax && !this.#gone) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

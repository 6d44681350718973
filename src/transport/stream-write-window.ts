import type { EventEmitter } from 'node:events';

/**
 * STREAM_UNSENT_MAX: the messages a bulk server stream (snapshot chunks, downloads) may hold
 * written but unsent. grpc-js's own Writable queues 16 messages before write() returns false: 16
 * MiB per stream of 1 MiB chunks, 64 MiB on a leader serving 4 downloads (issue 15: peak RSS).
 */
export const STREAM_UNSENT_MAX = 2;

/** StreamStalledError: nothing written could be sent for stallMs (the peer reads nothing); a DEADLINE_EXCEEDED. */
export class StreamStalledError extends Error {
  override readonly name = 'StreamStalledError';
  readonly code = 4; // grpc.status.DEADLINE_EXCEEDED
  readonly details: string;
  constructor(stallMs: number) {
    super(`the stream was given up: the client read nothing for ${stallMs} ms`);
    this.details = this.message;
  }
}

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
 * call). With `stallMs`, a write that waits that long with no message sent
 * meanwhile rejects with StreamStalledError: the producer stops and releases
 * what it holds (the caller ends the call). `unsent` is the current count.
 */
export class StreamWriteWindow<T> {
  #unsent = 0;
  #gone = false;
  #wake: (() => void) | null = null;

  constructor(
    private readonly call: WindowedCall<T>,
    readonly unsentMax: number = STREAM_UNSENT_MAX,
    readonly stallMs: number = Infinity,
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

  /**
   * write sends `message` and resolves once at most unsentMax messages are
   * unsent (or the call is gone). `onSent`, if given, runs once the message
   * was sent (its write callback; never if the call went first): by then
   * the HTTP/2 stream has written its bytes to the connection, whether
   * grpc-js copied them into a frame of its own or framed them where they
   * lie (grpc-frame-room.ts), so the caller may reuse what the message
   * pointed to.
   */
  async write(message: T, onSent?: () => void): Promise<void> {
    this.#unsent++;
    this.call.write(message, () => {
      this.#unsent--;
      onSent?.();
      this.#wakeUp();
    });
    while (this.#unsent > this.unsentMax && !this.#gone) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          this.#wake = resolve;
          if (Number.isFinite(this.stallMs)) {
            timer = setTimeout(() => {
              this.#wake = null;
              reject(new StreamStalledError(this.stallMs));
            }, this.stallMs);
          }
        });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

/**
 * RecordTee hands the batches one producer writes (an install, as its records
 * go into the state store) to one consumer (an archive writer reading
 * records()), with bounded memory: write() waits while `batchesMax` batches
 * are queued and not yet taken. end() ends the consumer's source after the
 * last batch; fail(err) makes it throw err instead (a copy of an install that
 * failed must never be kept). The producer is never held up by a broken copy:
 * once the consumer stops reading (it returned early or threw), write() drops
 * its batch and resolves at once (`dropped` is then true).
 */
export class RecordTee<T> {
  readonly #batchesMax: number;
  readonly #queue: T[] = [];
  #ended = false;
  #error: Error | null = null;
  #consumerGone = false;
  #wakeConsumer: (() => void) | null = null;
  #wakeProducer: (() => void) | null = null;

  /** Errors: RangeError for a batchesMax that is not a positive integer. */
  constructor(batchesMax: number) {
    if (!Number.isSafeInteger(batchesMax) || batchesMax < 1) throw new RangeError(`RecordTee: batchesMax ${batchesMax} is not a positive integer`);
    this.#batchesMax = batchesMax;
  }

  /** dropped: the consumer stopped reading, so later batches were (or will be) dropped. */
  get dropped(): boolean {
    return this.#consumerGone;
  }

  /** write queues `batch` for the consumer; resolves once there is room (at once when the consumer is gone). Errors: Error after end() or fail(). */
  async write(batch: T): Promise<void> {
    if (this.#ended || this.#error !== null) throw new Error('RecordTee: write after end or fail');
    if (this.#consumerGone) return;
    this.#queue.push(batch);
    this.#wake('consumer');
    while (this.#queue.length > this.#batchesMax && !this.#consumerGone) {
      await new Promise<void>((resolve) => {
        this.#wakeProducer = resolve;
      });
    }
  }

  /** end: no batch follows; the consumer's source ends after the queued ones. */
  end(): void {
    this.#ended = true;
    this.#wake('consumer');
  }

  /** fail: the consumer's source throws `err` (at its next read), whatever is still queued. */
  fail(err: Error): void {
    this.#error ??= err;
    this.#queue.length = 0;
    this.#wake('consumer');
  }

  /** abandon: the consumer will read no more (say, it failed before reading): queued and later batches are dropped. */
  abandon(): void {
    this.#consumerGone = true;
    this.#queue.length = 0;
    this.#wake('producer');
  }

  /** records is the consumer's source (read it once). */
  async *records(): AsyncGenerator<T, void, undefined> {
    try {
      for (;;) {
        if (this.#error !== null) throw this.#error;
        const next = this.#queue.shift();
        if (next !== undefined) {
          this.#wake('producer');
          yield next;
          continue;
        }
        if (this.#ended) return;
        await new Promise<void>((resolve) => {
          this.#wakeConsumer = resolve;
        });
      }
    } finally {
      // Returned early, threw, or ended: nothing more is read.
      this.abandon();
    }
  }

  #wake(who: 'consumer' | 'producer'): void {
    const wake = who === 'consumer' ? this.#wakeConsumer : this.#wakeProducer;
    if (who === 'consumer') this.#wakeConsumer = null;
    else this.#wakeProducer = null;
    wake?.();
  }
}

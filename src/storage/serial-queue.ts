/**
 * SerialQueue runs async tasks one at a time, in the order they were
 * queued, whether earlier ones resolved or rejected. `idle()` resolves once
 * every task queued so far has settled (it never rejects).
 */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  /** SerialQueue.run queues `task` and settles as it does. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }

  /** SerialQueue.idle resolves when every task queued so far has settled. */
  async idle(): Promise<void> {
    await this.#tail;
  }
}

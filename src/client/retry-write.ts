/**
 * Retries of idempotent writes: which failures may be retried and how (with
 * the same request id every time; see request-ids.ts).
 */
import * as grpc from '@grpc/grpc-js';

/** RetryOptions: how an idempotent write is retried (attempts and the pause between them). */
export interface RetryOptions {
  /** attempts: the most calls made, the first included (default 4). */
  readonly attempts?: number;
  /** backoffMs: the pause after the first failure, doubled after each (default 100, at most 2,000). */
  readonly backoffMs?: number;
  /** onRetry: told of each failure that is retried. */
  readonly onRetry?: (err: grpc.ServiceError, attempt: number) => void;
}

const RETRYABLE_CODES: ReadonlySet<number> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.ABORTED,
  grpc.status.RESOURCE_EXHAUSTED,
]);

/**
 * isRetryableWriteError: true for the failures after which a write may or
 * may not have been applied, or was refused for now (UNAVAILABLE,
 * DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED): safe to retry only with
 * the same request id.
 */
export function isRetryableWriteError(err: unknown): err is grpc.ServiceError {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' && RETRYABLE_CODES.has(code);
}

/**
 * retryWrite runs `attempt` until it succeeds, fails with an error that is
 * not retryable, or `attempts` calls were made (then the last error is
 * thrown). The caller makes every attempt carry the same request id.
 */
export async function retryWrite<T>(attempt: (n: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = Math.max(1, opts.attempts ?? 4);
  let pauseMs = opts.backoffMs ?? 100;
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (n >= attempts || !isRetryableWriteError(err)) throw err;
      opts.onRetry?.(err, n);
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(2_000, pauseMs * 2);
    }
  }
}

/**
 * One unary call as a promise, with a deadline: every client's unary methods
 * go through callUnary.
 */
import * as grpc from '@grpc/grpc-js';

/** DEFAULT_DEADLINE_MS: the deadline of a call that names none. */
export const DEFAULT_DEADLINE_MS = 10_000;

/** CallOptions: per-call deadline, extra request metadata, per-call client interceptors and a cancelling signal. */
export interface CallOptions {
  readonly deadlineMs?: number;
  readonly metadata?: grpc.Metadata;
  readonly interceptors?: grpc.Interceptor[];
  /** signal: aborting it cancels the call (it then rejects with CANCELLED). */
  readonly signal?: AbortSignal | undefined;
}

/** UnaryMethod: a generated client's unary method (bound to its client). */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/**
 * callUnary runs one unary call with a deadline (`deadlineMs`, default
 * DEFAULT_DEADLINE_MS) and resolves with its response; it rejects with the
 * call's grpc-js ServiceError (CANCELLED when `signal` aborted it).
 */
export function callUnary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, opts: CallOptions = {}): Promise<Res> {
  const deadline = Date.now() + (opts.deadlineMs ?? DEFAULT_DEADLINE_MS);
  const signal = opts.signal;
  return new Promise<Res>((resolve, reject) => {
    const callOptions: Partial<grpc.CallOptions> = opts.interceptors === undefined ? { deadline } : { deadline, interceptors: opts.interceptors };
    const onAbort = (): void => call.cancel();
    const call = method(request, opts.metadata ?? new grpc.Metadata(), callOptions, (err, res) => {
      signal?.removeEventListener('abort', onAbort);
      if (err !== null) reject(err);
      else resolve(res);
    });
    if (signal !== undefined) {
      if (signal.aborted) call.cancel();
      else signal.addEventListener('abort', onAbort, { once: true });
    }
  });
}

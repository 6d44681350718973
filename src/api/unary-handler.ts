import type * as grpc from '@grpc/grpc-js';
import { toApiError } from './api-error.js';

/**
 * unary adapts an async handler to a grpc-js unary handler: its result is the
 * response; any failure is answered with its gRPC status (toApiError).
 */
export function unary<Req, Res>(
  f: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let p: Promise<Res>;
    try {
      p = f(call);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (res) => callback(null, res),
      (err: unknown) => callback(toApiError(err)),
    );
  };
}

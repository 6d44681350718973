/**
 * The API key on the wire: every client-plane call carries
 * `authorization: Bearer <key>` (checked by the server's auth interceptor).
 */
import * as grpc from '@grpc/grpc-js';

/** AUTHORIZATION_METADATA_KEY: where a client-plane call carries its API key (`Bearer <key>`). */
export const AUTHORIZATION_METADATA_KEY = 'authorization';

/** bearerInterceptor adds `authorization: Bearer <apiKey>` to every call that carries none. */
export function bearerInterceptor(apiKey: string): grpc.Interceptor {
  const value = `Bearer ${apiKey}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        if (metadata.get(AUTHORIZATION_METADATA_KEY).length === 0) metadata.set(AUTHORIZATION_METADATA_KEY, value);
        next(metadata, listener);
      },
    });
}

/** copyAuthorization copies the caller's authorization metadata onto a call made on its behalf (forwarding); returns `to`. */
export function copyAuthorization(from: grpc.Metadata, to: grpc.Metadata): grpc.Metadata {
  const v = from.get(AUTHORIZATION_METADATA_KEY)[0];
  if (typeof v === 'string') to.set(AUTHORIZATION_METADATA_KEY, v);
  return to;
}

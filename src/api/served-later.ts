/**
 * ServedLater: a gRPC service registered on a server when it binds, whose
 * implementation comes later (ApiServer.serve, once the node has booted).
 * Until then every call of it answers UNAVAILABLE "<what> is starting": a
 * transient refusal that clients (src/client's retryWrite, gRPC retry
 * policies) retry, where grpc-js would answer a method not yet added
 * UNIMPLEMENTED, which no client retries and the gateway maps to 501. After
 * `serve(impl)` calls go to impl; with `serve(null)` (a service this server
 * does not serve) or a method impl lacks they answer UNIMPLEMENTED, as
 * grpc-js does for a method never added. Every such refusal carries the
 * trailer UNSERVED_METADATA_KEY (`starting` or `unimplemented`): no handler
 * ran, so a caller may send the same request again without risk (a
 * forwarded write: nothing was appended).
 */
import * as grpc from '@grpc/grpc-js';
import { UNSERVED_METADATA_KEY } from '../transport/transport.js';

type Handler = (...args: unknown[]) => void;
type AnyCall = { emit(event: 'error', err: Partial<grpc.StatusObject>): boolean };
type Callback = (err: Partial<grpc.StatusObject> | null, value?: unknown) => void;

export class ServedLater {
  private impl: Readonly<Record<string, unknown>> | null = null;
  private served = false;

  /** constructor: `what` names the server in the refusal (e.g. "node n1"). */
  constructor(
    private readonly definition: grpc.ServiceDefinition,
    private readonly what: string,
  ) {}

  /** addTo registers the service on `server` (before or after it binds; once). */
  addTo(server: grpc.Server): void {
    const dispatch: Record<string, Handler> = {};
    for (const [name, attrs] of Object.entries(this.definition)) {
      const streamsAnswers = attrs.responseStream;
      dispatch[name] = (...args: unknown[]): void => {
        const fn = this.handlerOf(name, attrs.originalName);
        if (fn !== null) {
          fn(...args);
          return;
        }
        const metadata = new grpc.Metadata();
        metadata.set(UNSERVED_METADATA_KEY, this.served ? 'unimplemented' : 'starting');
        const status: Partial<grpc.StatusObject> = this.served
          ? { code: grpc.status.UNIMPLEMENTED, details: `The server does not implement the method ${attrs.path}`, metadata }
          : { code: grpc.status.UNAVAILABLE, details: `${this.what} is starting: ${attrs.path} is served once it has booted; retry`, metadata };
        // Unary and client-streaming calls answer through their callback; the streaming answers end on 'error'.
        if (streamsAnswers) (args[0] as AnyCall).emit('error', status);
        else (args[1] as Callback)(status, null);
      };
    }
    server.addService(this.definition, dispatch);
  }

  /** serve: from now on calls go to `impl` (null: this service is not served: UNIMPLEMENTED). Once. */
  serve(impl: object | null): void {
    if (this.served) throw new Error('ServedLater.serve: already serving');
    this.impl = impl as Readonly<Record<string, unknown>> | null;
    this.served = true;
  }

  private handlerOf(name: string, originalName: string | undefined): Handler | null {
    const impl = this.impl;
    if (impl === null) return null;
    const fn = impl[name] ?? (originalName !== undefined ? impl[originalName] : undefined);
    return typeof fn === 'function' ? (fn as Handler).bind(impl) : null;
  }
}

/**
 * CallGate: how many client-plane calls one caller has open at once.
 *
 * Some calls never end on their own (Health/Watch, reflection streams: any
 * valid key may open them) and others wait as long as their caller lets
 * them. Without a bound, the holder of any key, kv.read alone, could open
 * as many as its connections carry (256 a connection): 16,384 Health/Watch
 * streams on 64 connections took a node from 178 to 277 MiB, and the 1,024
 * connections of the plane would carry 262,144 (some 1.5 GiB).
 *
 * So a call counts against its caller (the API key it carries, apiKeyOwner;
 * its remote host for a call without one) from its metadata until it ends
 * (its status sent, or cancelled); a caller with `callsPerCallerMax` open has
 * its next call refused RESOURCE_EXHAUSTED at once, before its handler runs
 * or any of its messages is read.
 */
import * as grpc from '@grpc/grpc-js';
import { ForwardingServerCall } from '../transport/forwarding-call.js';
import { apiKeyOwner } from './auth-interceptor.js';
import { hostOf } from './read-gate.js';

/** CLIENT_CALLS_PER_CALLER_MAX: calls one API key has open on a node at once (4096: 16 of its connections full). */
export const CLIENT_CALLS_PER_CALLER_MAX = 4096;

/** CallGate: the open calls of each caller. */
export class CallGate {
  private readonly open = new Map<string, number>();
  /** refused: calls refused since start. */
  refused = 0;

  constructor(readonly callsPerCallerMax: number = CLIENT_CALLS_PER_CALLER_MAX) {
    if (!Number.isSafeInteger(callsPerCallerMax) || callsPerCallerMax < 1) throw new Error(`callsPerCallerMax must be a whole number >= 1, got ${String(callsPerCallerMax)}`);
  }

  /** openOf: the calls `caller` has open now. */
  openOf(caller: string): number {
    return this.open.get(caller) ?? 0;
  }

  /** enter: false when `caller` has callsPerCallerMax calls open already (the call is refused), else counted. */
  enter(caller: string): boolean {
    const n = this.open.get(caller) ?? 0;
    if (n >= this.callsPerCallerMax) {
      this.refused++;
      return false;
    }
    this.open.set(caller, n + 1);
    return true;
  }

  /** leave: one call of `caller` ended. */
  leave(caller: string): void {
    const n = (this.open.get(caller) ?? 1) - 1;
    if (n > 0) this.open.set(caller, n);
    else this.open.delete(caller);
  }
}

/** CallGateCall: one call counted against its caller from its metadata until it ends. */
class CallGateCall extends ForwardingServerCall {
  private caller: string | null = null;
  private refused = false;

  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly gate: CallGate,
  ) {
    super(inner);
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    const caller = apiKeyOwner(metadata) ?? hostOf(this.inner.getPeer());
    if (this.gate.enter(caller)) {
      this.caller = caller;
      super.onReceiveMetadata(metadata);
      return;
    }
    this.refused = true;
    this.inner.sendStatus({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `${this.gate.callsPerCallerMax} calls with this API key are open on this node already: end some, or retry later`,
      metadata: new grpc.Metadata(),
    });
  }

  override onReceiveMessage(message: unknown): void {
    if (!this.refused) super.onReceiveMessage(message);
  }

  override onReceiveHalfClose(): void {
    if (!this.refused) super.onReceiveHalfClose();
  }

  override onCancel(): void {
    this.end();
    super.onCancel();
  }

  override sendStatus(status: Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.end();
    super.sendStatus(status);
  }

  private end(): void {
    if (this.caller === null) return;
    this.gate.leave(this.caller);
    this.caller = null;
  }
}

/** callGateInterceptor: the client plane's CallGate as a server interceptor (after the auth gate: a refused call is never counted). */
export function callGateInterceptor(gate: CallGate): grpc.ServerInterceptor {
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (_method, inner) => new CallGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall;
}

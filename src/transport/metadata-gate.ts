/**
 * metadata-gate: a grpc-js server call decided on its request metadata,
 * before its handler runs and before any of its request messages is read.
 * The client plane's auth interceptor (src/api/auth-interceptor.ts) and the
 * peer plane's admission (peerAdmissionInterceptor) are both one.
 */
import * as grpc from '@grpc/grpc-js';
import { ForwardingServerCall } from './forwarding-call.js';

/** GateRefusal: a refused call's gRPC status. */
export interface GateRefusal {
  readonly code: grpc.status;
  readonly details: string;
}

/** GatedCall: what a gate's decision may read of the call besides its metadata. */
export type GatedCall = Pick<grpc.ServerInterceptingCallInterface, 'getPeer' | 'getAuthContext'>;

/** MetadataGate: the decision (null: the call goes on) and what to do with a refusal (count it, log it). */
export interface MetadataGate {
  decide(metadata: grpc.Metadata, call: GatedCall): GateRefusal | null;
  refused(refusal: GateRefusal, call: GatedCall): void;
}

/**
 * MetadataGateCall is one call behind a gate: it passes everything through
 * to the call below, except that the metadata is decided by `decide` before
 * the handler sees it (`gate.decide`), and nothing of a refused call (metadata, messages,
 * half-close) travels further: not passing the metadata on keeps the handler
 * from starting, and grpc-js reads request messages only when the handler
 * asks, so the body of a refused stream stays unread. A refused call is
 * answered with its status at once (trailers only) and `gate.refused` is
 * told. It is also the listener it gives the call below, and the gate is
 * shared by many calls, so a call costs one object and no closures.
 */
export class MetadataGateCall extends ForwardingServerCall {
  private refused = false;

  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly gate: MetadataGate,
  ) {
    super(inner);
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    const refusal = this.gate.decide(metadata, this.inner);
    if (refusal === null) {
      this.listener?.onReceiveMetadata(metadata);
      return;
    }
    this.refused = true;
    this.gate.refused(refusal, this.inner);
    this.inner.sendStatus({ code: refusal.code, details: refusal.details, metadata: new grpc.Metadata() });
  }

  // Belt and braces: nothing of a refused call travels further.
  override onReceiveMessage(message: unknown): void {
    if (!this.refused) this.listener?.onReceiveMessage(message);
  }

  override onReceiveHalfClose(): void {
    if (!this.refused) this.listener?.onReceiveHalfClose();
  }
}

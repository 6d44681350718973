/**
 * ForwardingServerCall: a grpc-js server call (an interceptor's) that passes
 * everything to the call below, and is also the listener it gives that call,
 * passing what comes up to the listener above: one object per call and no
 * closures. An interceptor extends it and overrides what it decides (the
 * metadata gate, metadata-gate.ts; the client plane's read gate,
 * src/api/read-gate.ts).
 */
import type * as grpc from '@grpc/grpc-js';

/** ServerListenerBelow: the listener the call above gives (grpc-js's InterceptingServerListener). */
export type ServerListenerBelow = Parameters<grpc.ServerInterceptingCallInterface['start']>[0];

export abstract class ForwardingServerCall implements grpc.ServerInterceptingCallInterface {
  protected listener: ServerListenerBelow | null = null;

  constructor(protected readonly inner: grpc.ServerInterceptingCallInterface) {}

  start(listener: ServerListenerBelow): void {
    this.listener = listener;
    this.inner.start(this);
  }

  onReceiveMetadata(metadata: grpc.Metadata): void {
    this.listener?.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    this.listener?.onReceiveMessage(message);
  }

  onReceiveHalfClose(): void {
    this.listener?.onReceiveHalfClose();
  }

  onCancel(): void {
    this.listener?.onCancel();
  }

  sendMetadata(metadata: grpc.Metadata): void {
    this.inner.sendMetadata(metadata);
  }

  sendMessage(message: unknown, callback: () => void): void {
    this.inner.sendMessage(message, callback);
  }

  sendStatus(status: Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.inner.sendStatus(status);
  }

  startRead(): void {
    this.inner.startRead();
  }

  getPeer(): string {
    return this.inner.getPeer();
  }

  getDeadline(): grpc.Deadline {
    return this.inner.getDeadline();
  }

  getHost(): string {
    return this.inner.getHost();
  }

  getAuthContext(): ReturnType<grpc.ServerInterceptingCallInterface['getAuthContext']> {
    return this.inner.getAuthContext();
  }

  getConnectionInfo(): ReturnType<grpc.ServerInterceptingCallInterface['getConnectionInfo']> {
    return this.inner.getConnectionInfo();
  }

  getMetricsRecorder(): ReturnType<grpc.ServerInterceptingCallInterface['getMetricsRecorder']> {
    return this.inner.getMetricsRecorder();
  }
}

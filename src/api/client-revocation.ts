/**
 * client-revocation: the client plane refuses a call whose client certificate
 * the client CRL (serve --client-crl) revokes, when its metadata arrives,
 * before the API key is looked at: UNAUTHENTICATED "certificate revoked",
 * nothing of it read, and its connection proves nothing (ConnectionLimiter).
 *
 * grpc-js checks a client certificate against --client-ca at the handshake
 * only, and nothing there asks a CRL: before, a client whose certificate was
 * revoked went on being served for as long as its certificate was valid.
 * The refusal is at the call rather than at the handshake so that the
 * client is told why (a handshake alert reaches a gRPC client as UNAVAILABLE,
 * which it retries for ever). The connections already open when a reload
 * revokes a certificate are closed by serve (ApiServer.closeClientConnections).
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
import type { Logger } from '../node/logger.js';
import { normalizeSerial } from '../tls/crl.js';
import { MetadataGateCall, type GateRefusal, type GatedCall, type MetadataGate } from '../transport/metadata-gate.js';

/** CLIENT_REVOKED_LOG_INTERVAL_MS: one log line per revoked serial per minute. */
export const CLIENT_REVOKED_LOG_INTERVAL_MS = 60_000;
/** CLIENT_REVOKED_LOG_KEYS_MAX: serials remembered for the log's rate limit; past it the oldest is forgotten. */
const CLIENT_REVOKED_LOG_KEYS_MAX = 1024;

/** ClientRevocation: the CRL in use (tls PeerCrl): whether it revokes serial `hex`. */
export interface ClientRevocation {
  isRevoked(hex: string): boolean;
}

/** ClientRevocationOptions: the CRL, where refusals are logged (rate-limited) and counted. */
export interface ClientRevocationOptions {
  readonly revocation: ClientRevocation;
  readonly logger?: Logger;
  /** onRefused: a call was refused (a counter). */
  readonly onRefused?: () => void;
  /** nowMs: the clock of the log's rate limit (default performance.now: monotonic, a wall clock stepped back does not silence it). */
  readonly nowMs?: () => number;
  /**
   * serialOf: the client certificate serial (normalizeSerial'd; null: none) of the connection a call came on, by the
   * call's getPeer(), read once at its handshake (bindApiServer's listener); undefined for a connection it does not
   * know, whose certificate is then read from the call (getAuthContext: Node builds the whole certificate, three
   * fingerprints included, at each call: ~50 us of CPU a call, scripts/bench-client-crl-gate.ts).
   */
  readonly serialOf?: (peer: string) => string | null | undefined;
}

/** clientCertificateOf: the verified client certificate of a call (grpc-js sets it only for a verified one), or null. */
export function clientCertificateOf(call: GatedCall): PeerCertificate | null {
  const cert = call.getAuthContext().sslPeerCertificate;
  return cert !== undefined && cert !== null && typeof cert.serialNumber === 'string' && cert.serialNumber !== '' ? cert : null;
}

/** serialOf: a certificate's serial as the CRL names it (normalizeSerial's form). */
export function serialOf(cert: PeerCertificate): string {
  return normalizeSerial(cert.serialNumber);
}

/**
 * clientRevocationInterceptor: put it among the client plane's interceptors
 * before the auth interceptor. A call over a certificate `revocation`
 * revokes is answered UNAUTHENTICATED "certificate revoked: ..." (trailers
 * only), its handler never runs; logged once per serial per
 * CLIENT_REVOKED_LOG_INTERVAL_MS. A call without a client certificate passes
 * (the handshake decided whether one is needed).
 */
export function clientRevocationInterceptor(opts: ClientRevocationOptions): grpc.ServerInterceptor {
  const nowMs = opts.nowMs ?? (() => performance.now());
  const lastLogMs = new Map<string, number>();
  const serialOfCall = (call: GatedCall): string | null => {
    const known = opts.serialOf?.(call.getPeer());
    if (known !== undefined) return known;
    const cert = clientCertificateOf(call);
    return cert === null ? null : serialOf(cert);
  };
  const gate: MetadataGate = {
    decide(_metadata, call): GateRefusal | null {
      const serial = serialOfCall(call);
      if (serial === null || !opts.revocation.isRevoked(serial)) return null;
      return { code: grpc.status.UNAUTHENTICATED, details: `certificate revoked: the client certificate (serial ${serial.slice(0, 40)}) is revoked by this node's --client-crl` };
    },
    refused(refusal, call): void {
      opts.onRefused?.();
      const serial = (serialOfCall(call) ?? '').slice(0, 40);
      const now = nowMs();
      const last = lastLogMs.get(serial);
      if (last !== undefined && now - last < CLIENT_REVOKED_LOG_INTERVAL_MS) return;
      lastLogMs.delete(serial);
      if (lastLogMs.size >= CLIENT_REVOKED_LOG_KEYS_MAX) {
        const oldest = lastLogMs.keys().next();
        if (oldest.done !== true) lastLogMs.delete(oldest.value);
      }
      lastLogMs.set(serial, now);
      opts.logger?.warn({ what: 'client CRL', peer: call.getPeer(), serial, err: refusal.details }, 'client call refused: its certificate is revoked (logged once a minute per certificate)');
    },
  };
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (_method, inner) => new MetadataGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall;
}

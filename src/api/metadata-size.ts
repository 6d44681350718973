/**
 * metadata-size: the client plane refuses a call whose request metadata is
 * larger than METADATA_BYTES_MAX, at once, before any other gate reads it.
 *
 * Node's HTTP/2 server takes header blocks up to 64 KiB a request, and a call
 * keeps its metadata for as long as it is open (Node's headers and grpc-js's
 * Metadata copy of them): a `kv.read` key's Health/Watch streams, which never
 * end, each carrying ~60 KB of made-up headers, took a live node from 144 to
 * 472 MiB with 2,165 of them open (16 connections; its 4,096 open calls would
 * hold ~600 MiB), against 146 -> 190 MiB for 4,096 with none. An honest
 * client sends a few hundred bytes (authorization, user-agent, grpc-timeout,
 * request ids); gRPC's C core refuses more than 16 KiB by default too.
 */
import * as grpc from '@grpc/grpc-js';
import { MetadataGateCall, type GateRefusal, type MetadataGate } from '../transport/metadata-gate.js';

/** METADATA_BYTES_MAX: the most bytes of a call's request metadata (names and values, each value counted) on the client plane. */
export const METADATA_BYTES_MAX = 16 * 1024;
/**
 * PEER_METADATA_BYTES_MAX: the same cap on the peer plane (4 KiB). A member's calls carry its cluster id (64
 * characters at most), its client address and grpc-js's user-agent: 400 bytes measured with the longest of each
 * (a 64-character id, a 253-character host name); Node's HTTP/2 server alone would take 64 KiB a call.
 */
export const PEER_METADATA_BYTES_MAX = 4 * 1024;

/** metadataBytes: the bytes of `metadata`'s names and values (every value of a repeated name counted). */
export function metadataBytes(metadata: grpc.Metadata): number {
  let n = 0;
  for (const key of Object.keys(metadata.getMap())) {
    for (const v of metadata.get(key)) n += key.length + (typeof v === 'string' ? v.length : v.byteLength);
  }
  return n;
}

/**
 * metadataSizeInterceptor: put it first among a plane's gates: a call whose
 * metadata holds more than `maxBytes` is answered RESOURCE_EXHAUSTED at once
 * (trailers only) and goes no further; it proves nothing about its connection.
 */
export function metadataSizeInterceptor(maxBytes: number = METADATA_BYTES_MAX): grpc.ServerInterceptor {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) throw new Error(`maxBytes must be a whole number >= 1, got ${String(maxBytes)}`);
  const gate: MetadataGate = {
    decide(metadata): GateRefusal | null {
      const n = metadataBytes(metadata);
      return n <= maxBytes ? null : { code: grpc.status.RESOURCE_EXHAUSTED, details: `request metadata of ${n} bytes is over this server's cap of ${maxBytes}` };
    },
    refused: () => undefined,
  };
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (_method, inner) => new MetadataGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall;
}

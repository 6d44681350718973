/**
 * How a client reaches a node's client plane: the channel credentials (TLS
 * against the cluster CA, or plaintext for loopback), the API key sent on
 * every call, and the channel options every client channel shares.
 */
import * as grpc from '@grpc/grpc-js';
import { checkMemberId, checkTlsFiles, memberChannelCredentialsFromFiles } from '../tls/index.js';
import { bearerInterceptor } from './authorization.js';

/** MESSAGE_BYTES_MAX: the largest gRPC message the API sends or receives (64 MiB). */
export const MESSAGE_BYTES_MAX = 64 * 1024 * 1024;

/**
 * clientChannelOptions: what every API client channel uses. Reconnects
 * start after 100 ms and back off to at most 1 s (grpc-js: 1 s doubling
 * by 1.6 up to 120 s), so a client, or a member forwarding to the leader,
 * reaches a node back from a restart within a second of its listening.
 */
export const clientChannelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MESSAGE_BYTES_MAX,
  'grpc.max_send_message_length': MESSAGE_BYTES_MAX,
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
};

/**
 * ClientDial: how a client reaches a node's client plane: channel credentials
 * (TLS verified against the cluster CA; default insecure, for loopback) and
 * the API key sent as `authorization: Bearer <key>` on every call ('' or
 * absent: none; a call whose metadata already holds an authorization, such
 * as a forwarded one, keeps it). `channelOptions` tune the channel on top of
 * each client's defaults (e.g. a larger HTTP/2 window, or a distinct key to
 * get a connection of its own).
 */
export interface ClientDial {
  readonly credentials?: grpc.ChannelCredentials;
  /**
   * credentialsFor: the credentials to dial member `id` at an address a node
   * reported (its certificate must name that member, or none); absent: use
   * `credentials` for every address.
   */
  readonly credentialsFor?: (id: string) => grpc.ChannelCredentials;
  readonly apiKey?: string;
  readonly channelOptions?: grpc.ChannelOptions;
}

/**
 * dialChannel: the credentials and channel options (`base`, then
 * `dial.channelOptions`, plus the key's interceptor) of a client channel to
 * open with `dial`.
 */
export function dialChannel(dial: ClientDial, base: grpc.ChannelOptions = clientChannelOptions): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (dial.channelOptions !== undefined) base = { ...base, ...dial.channelOptions };
  const interceptors = dial.apiKey !== undefined && dial.apiKey !== '' ? [bearerInterceptor(dial.apiKey)] : [];
  return {
    credentials: dial.credentials ?? grpc.credentials.createInsecure(),
    options: interceptors.length === 0 ? base : { ...base, interceptors: [...((base['interceptors'] as grpc.Interceptor[] | undefined) ?? []), ...interceptors] },
  };
}

/**
 * dialWithCa: a ClientDial over TLS whose server certificate must be signed
 * by the CA in `caFile` (reloaded when the file changes), name the host
 * dialled and be a server certificate (extended key usage serverAuth: a
 * client certificate of the same CA is refused, with the reason), sending
 * `apiKey` ('' for none). With `expectMember` it must also name that member
 * (`urn:snapcoord:node:<id>`): what tells one member's certificate from
 * another's where the address cannot (every certificate `snapcoord local`
 * makes names 127.0.0.1). `credentialsFor(id)` dials the other members a node
 * reports expecting each one's own certificate (or one naming no member).
 * With `client` it presents that certificate and key (mutual TLS: a node
 * started with --client-ca), reloaded when they change.
 * Errors: one Error naming the file when `caFile` or the client's files are
 * unreadable, not PEM, mismatched or expired (checkTlsFiles); an Error for an
 * invalid member id.
 */
export function dialWithCa(caFile: string, apiKey = '', expectMember?: string, client?: { readonly certFile: string; readonly keyFile: string }): ClientDial {
  checkTlsFiles({ caFile });
  if (expectMember !== undefined) checkMemberId(expectMember);
  // A client certificate (mutual TLS with a node's --client-ca) may come from another CA than the servers'.
  if (client !== undefined) checkTlsFiles({ ...client, caFile, checkChain: false });
  const members = memberChannelCredentialsFromFiles({ caFile, ...(client !== undefined ? { ...client, checkChain: false } : {}) });
  return {
    apiKey,
    credentials: expectMember !== undefined ? members.forMember(expectMember) : members.any,
    credentialsFor: (id) => members.forMember(id, true),
  };
}

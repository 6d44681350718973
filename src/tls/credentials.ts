/**
 * credentials: gRPC server and channel credentials from certificate files,
 * reloaded when the files change (rotation without a restart).
 *
 * Built on grpc-js 1.14's experimental certificate-provider credentials
 * (`createCertificateProviderServerCredentials` /
 * `createCertificateProviderChannelCredentials`, which call
 * `http2Server.setSecureContext` on the server and make a fresh secure
 * context per new connection on the client) fed by FileCertificateProvider,
 * which checks each new set of files before handing it over.
 */
import * as grpc from '@grpc/grpc-js';
import { checkServerIdentity, TLSSocket, type PeerCertificate } from 'node:tls';
import { FileCertificateProvider, type FileCertificateProviderOptions } from './file-certificate-provider.js';
import { SERVER_AUTH_OID } from './check-tls-files.js';
import { memberIdOf } from './member-id.js';

export { SERVER_AUTH_OID, checkTlsFiles, type CheckTlsOptions, type TlsFiles, type TlsFilesInfo } from './check-tls-files.js';
export { FileCertificateProvider, REFRESH_MS_DEFAULT, type FileCertificateProviderOptions } from './file-certificate-provider.js';
export { memberIdOf } from './member-id.js';

type Callbacks = Pick<FileCertificateProviderOptions, 'refreshMs' | 'checkChain' | 'memberId' | 'servesClients' | 'onReload' | 'onError' | 'onExpired'>;

/** ServerTlsFiles: the server's certificate and key, the CA that signs client certificates, and whether clients must present one. */
export interface ServerTlsFiles extends Callbacks {
  readonly certFile: string;
  readonly keyFile: string;
  /** the CA bundle client certificates must chain to; required when requireClientCert. */
  readonly caFile?: string;
  /** true: a client without a certificate signed by caFile is refused at the TLS handshake (mutual TLS). */
  readonly requireClientCert: boolean;
}

/**
 * serverCredentialsFromFiles: grpc.ServerCredentials serving `certFile` /
 * `keyFile`, reloaded from disk every `refreshMs` (default 5000) when they
 * change (see FileCertificateProvider: a bad or half-written set is not
 * used, the last good one stays).
 *
 * With `caFile`, clients are asked for a certificate and it is verified
 * against caFile. With `requireClientCert` a client that sends none, or one
 * that does not verify (another CA, expired, not yet valid), is refused at
 * the handshake and no handler runs; without it such a client is served but
 * carries no identity. A handler reads the verified client certificate with
 * `call.getAuthContext().sslPeerCertificate` and its member id with
 * memberIdOf(); grpc-js sets sslPeerCertificate only for a verified
 * certificate, and for a client without one answers getAuthContext() with
 * `{}` (no transportSecurityType either, though the connection is TLS).
 *
 * By default the server's own certificate must be signed by caFile (one
 * cluster CA, as `snapcoord certs` makes); pass `checkChain: false` when
 * caFile is a separate CA for clients. Throws one Error naming the bad file
 * (checkTlsFiles), or when requireClientCert is set without caFile.
 */
export function serverCredentialsFromFiles(opts: ServerTlsFiles): grpc.ServerCredentials {
  if (opts.requireClientCert && opts.caFile === undefined) throw new Error('requireClientCert needs caFile: the CA that signs client certificates');
  const provider = new FileCertificateProvider(opts);
  return serverCredentialsFromProvider(provider, opts.caFile !== undefined, opts.requireClientCert);
}

/**
 * serverCredentialsFromProvider: serverCredentialsFromFiles over a provider
 * the caller keeps (to read `provider.latest` or call `refresh()`).
 * `verifyClients` asks clients for a certificate checked against the
 * provider's CA; `requireClientCert` refuses those without a good one.
 * Throws when the provider has no certificate, or no CA but verifyClients.
 */
export function serverCredentialsFromProvider(provider: FileCertificateProvider, verifyClients: boolean, requireClientCert: boolean): grpc.ServerCredentials {
  if (!provider.hasIdentity) throw new Error('a server needs a certificate and key');
  if (verifyClients && !provider.hasCa) throw new Error('verifying clients needs a CA file');
  // grpc-js names these parameters (caCertificateProvider, identityCertificateProvider) but passes them on
  // to a constructor taking (identity, ca): the first is the identity provider. One provider serves both.
  return grpc.experimental.createCertificateProviderServerCredentials(provider, verifyClients ? provider : null, requireClientCert && verifyClients);
}

/** ChannelTlsFiles: the CA that signs the server's certificate, and the client's own certificate and key (for mutual TLS). */
export interface ChannelTlsFiles extends Callbacks {
  readonly caFile: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** when set, the server's certificate must also name this member id (memberIdOf), e.g. the peer a Raft message is for. */
  readonly serverMemberId?: string;
}

/**
 * channelCredentialsFromFiles: grpc.ChannelCredentials that verify the
 * server's certificate against `caFile` with Node's usual host name / IP
 * address check against the channel target (a target of `127.0.0.1:7001`
 * needs an IP SAN 127.0.0.1, `localhost:7001` a DNS SAN localhost), and
 * that it names member `serverMemberId`, or without one that it may serve
 * (serverPurposeError: it names a member or is a server certificate). With
 * `certFile`/`keyFile` the client presents its certificate (mutual TLS).
 * The files are reloaded when they change, as for serverCredentialsFromFiles;
 * each new connection uses the latest good set. Throws one Error naming the
 * bad file (checkTlsFiles; the client's certificate must chain to caFile
 * unless `checkChain: false`).
 */
export function channelCredentialsFromFiles(opts: ChannelTlsFiles): grpc.ChannelCredentials {
  const provider = new FileCertificateProvider(opts);
  const expected = opts.serverMemberId;
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, opts.certFile !== undefined ? provider : null, serverCheck(expected));
}


/**
 * serverPurposeError: why `cert` may not serve TLS to a snapcoord client
 * that expects no particular member, or undefined when it may: it names a
 * member (`urn:snapcoord:node:<id>`, as every certificate `snapcoord certs
 * issue` makes) or its extended key usage names serverAuth (a client plane's
 * own certificate). A client certificate of the cluster CA is neither: made
 * with no extended key usage (as `openssl req` does by default, and which
 * OpenSSL takes for any purpose), it was taken as the server's, and its
 * holder, listening where a client was pointed, was sent the client's API
 * key. (OpenSSL itself refuses one whose extended key usage lacks serverAuth.)
 */
export function serverPurposeError(cert: PeerCertificate): Error | undefined {
  if (memberIdOf(cert) !== null || (cert.ext_key_usage ?? []).includes(SERVER_AUTH_OID)) return undefined;
  const subject = typeof cert.subject === 'object' && cert.subject !== null && typeof cert.subject.CN === 'string' ? `CN=${cert.subject.CN}` : 'the certificate';
  return new Error(
    `the server's certificate (${subject}) is not a server certificate: it names no member and its extended key usage does not name serverAuth ` +
      '(a client certificate cannot serve; give the node a certificate from `snapcoord certs issue`)',
  );
}

/**
 * serverCheck: verify options that add to Node's host name / IP check that
 * the server's certificate names member `expected` (with `orNone`, or names
 * no member and is a server certificate: a certificate made for a client
 * plane only), or, with no `expected`, that it may serve (serverPurposeError).
 */
function serverCheck(expected?: string, orNone = false, revocation?: ServerRevocation): grpc.VerifyOptions {
  return {
    checkServerIdentity: (host: string, cert: PeerCertificate): Error | undefined => {
      const hostError = checkServerIdentity(host, cert);
      if (hostError !== undefined) return hostError;
      const revoked = revocation?.revocationError(cert, `the server's (${memberIdOf(cert) ?? host})`);
      if (revoked !== undefined) return revoked;
      if (expected === undefined) return serverPurposeError(cert);
      const got = memberIdOf(cert);
      if (got === expected) return undefined;
      if (orNone && got === null) return serverPurposeError(cert);
      return new Error(`the server's certificate names member ${got ?? '(none)'}, not ${expected}`);
    },
  };
}

/** ServerRevocation: a CRL (PeerCrl) asked about each server certificate a member channel meets: an Error naming its revocation, or undefined. */
export interface ServerRevocation {
  revocationError(cert: PeerCertificate, whose: string): Error | undefined;
}

/** MEMBER_CREDENTIALS_MAX: the members MemberChannelCredentials keeps credentials for (more: the oldest are made again when next asked). */
export const MEMBER_CREDENTIALS_MAX = 4096;

/**
 * MemberChannelCredentials: channel credentials over one set of reloading
 * files: `any` checks the server's certificate against the CA, the target
 * host and its purpose (serverPurposeError) only; `forMember(id)` also requires it to name member `id` (memberIdOf),
 * the same object for the same id (so grpc-js may share its connections);
 * `forMember(id, true)` also takes a certificate that names no member (a
 * client plane may serve one of its own) but never one naming another member.
 */
export interface MemberChannelCredentials {
  readonly any: grpc.ChannelCredentials;
  forMember(id: string, orNone?: boolean): grpc.ChannelCredentials;
  /**
   * closeRevoked closes every open connection made with these credentials whose server certificate `revocation` (the
   * CRL) revokes now, and answers how many: grpc-js checks a server's certificate at the TLS handshake only, so a
   * connection made before a revocation carried calls (Raft answers, forwarded writes and their callers' keys,
   * consistency checks and the admin key) to the revoked member for as long as it lasted. Calls in flight on it fail
   * UNAVAILABLE; the channel's next connection is a new handshake, which the CRL refuses. serve calls it when its
   * --peer-crl changes. Without `revocation`: 0.
   */
  closeRevoked(): number;
  /** openConnections: the connections made with these credentials and open now. */
  readonly openConnections: number;
}

type SecureConnector = ReturnType<grpc.ChannelCredentials['_createSecureConnector']>;

/**
 * TrackedChannelCredentials: `inner` (the same connections, the same checks), each TLS connection it makes kept in
 * `sockets` while open, so that MemberChannelCredentials.closeRevoked can close the ones a CRL revokes. Two are equal
 * (grpc-js shares connections between channels of equal credentials) when their inner credentials are.
 */
class TrackedChannelCredentials extends grpc.ChannelCredentials {
  constructor(
    private readonly inner: grpc.ChannelCredentials,
    private readonly sockets: Set<TLSSocket>,
  ) {
    super();
  }

  _isSecure(): boolean {
    return this.inner._isSecure();
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return this === other || (other instanceof TrackedChannelCredentials && other.sockets === this.sockets && this.inner._equals(other.inner));
  }

  _createSecureConnector(...args: Parameters<grpc.ChannelCredentials['_createSecureConnector']>): SecureConnector {
    const connector = this.inner._createSecureConnector(...args);
    const sockets = this.sockets;
    return {
      async connect(socket) {
        const made = await connector.connect(socket);
        const tls = made.socket;
        if (tls instanceof TLSSocket && !tls.destroyed) {
          sockets.add(tls);
          tls.once('close', () => sockets.delete(tls));
        }
        return made;
      },
      waitForReady: () => connector.waitForReady(),
      getCallCredentials: () => connector.getCallCredentials(),
      destroy: () => connector.destroy(),
    };
  }
}

/**
 * memberChannelCredentialsFromFiles: channelCredentialsFromFiles for a node
 * that dials several members (the peer plane): one FileCertificateProvider
 * (one reload timer) shared by `any` and every `forMember(id)`. A member's
 * certificate is made for the CA, so without `forMember` any member's
 * certificate passes for any other at an address they share (a local
 * cluster's 127.0.0.1, a host one took over, a DNS name pointed elsewhere),
 * and its answers are taken for the member asked. With `revocation` (the
 * peer plane's CRL, PeerCrl) a server whose certificate it revokes fails the
 * handshake with an error naming the revocation: a removed member cannot
 * answer (grant votes) as a member, and closeRevoked closes the connections made before the CRL revoked
 * it. Throws as channelCredentialsFromFiles.
 */
export function memberChannelCredentialsFromFiles(opts: Omit<ChannelTlsFiles, 'serverMemberId'> & { readonly revocation?: ServerRevocation }): MemberChannelCredentials {
  const provider = new FileCertificateProvider(opts);
  const identity = opts.certFile !== undefined ? provider : null;
  const byId = new Map<string, grpc.ChannelCredentials>();
  const sockets = new Set<TLSSocket>();
  const revocation = opts.revocation;
  const tracked = (c: grpc.ChannelCredentials): grpc.ChannelCredentials => (revocation === undefined ? c : new TrackedChannelCredentials(c, sockets));
  return {
    any: tracked(grpc.experimental.createCertificateProviderChannelCredentials(provider, identity, serverCheck(undefined, false, revocation))),
    closeRevoked(): number {
      if (revocation === undefined) return 0;
      let closed = 0;
      for (const socket of [...sockets]) {
        const cert = socket.getPeerCertificate();
        if (cert === null || typeof cert !== 'object' || revocation.revocationError(cert, 'the server\'s') === undefined) continue;
        sockets.delete(socket);
        socket.destroy();
        closed++;
      }
      return closed;
    },
    get openConnections(): number {
      return sockets.size;
    },
    forMember(id: string, orNone = false): grpc.ChannelCredentials {
      const key = orNone ? `${id}|none` : id;
      let creds = byId.get(key);
      if (creds === undefined) {
        creds = tracked(grpc.experimental.createCertificateProviderChannelCredentials(provider, identity, serverCheck(id, orNone, revocation)));
        if (byId.size >= MEMBER_CREDENTIALS_MAX) {
          const oldest = byId.keys().next();
          if (oldest.done !== true) byId.delete(oldest.value);
        }
        byId.set(key, creds);
      }
      return creds;
    },
  };
}

/**
 * member-id: which cluster member a certificate speaks for.
 */
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import { MEMBER_ID_PATTERN, MEMBER_URI_PREFIX, subjectAltNames } from './names.js';

const CACHE_ENTRIES_MAX = 256;
const cache = new Map<string, string | null>();

/**
 * memberIdOf: the member id a certificate names in its one URI SAN
 * `urn:snapcoord:node:<id>` (issueNodeCert puts it there), or null when the
 * certificate is absent, carries no such URI, carries more than one, or names
 * an id that is not a valid member id.
 *
 * The SANs are read from the certificate's DER bytes (`raw`) with
 * @peculiar/x509, not from Node's printed `subjectaltname` string
 * (`DNS:localhost, IP Address:127.0.0.1, URI:urn:snapcoord:node:n1`), whose
 * quoting of values with special characters (`URI:"a,b"`) has changed
 * across Node releases and which a crafted value could otherwise split.
 * Results are cached by the certificate's SHA-256 fingerprint (256 entries),
 * so calling it on every RPC is cheap.
 *
 * On a grpc-js 1.14 server a handler (or interceptor) gets the client's
 * certificate from `call.getAuthContext().sslPeerCertificate`: a
 * tls.PeerCertificate, present only when the connection is TLS, the client
 * sent a certificate and it verified against the server's CA
 * (`socket.authorized`); otherwise getAuthContext() answers `{}` and this
 * function null. So memberIdOf(call.getAuthContext().sslPeerCertificate)
 * is the authenticated member id of the caller, or null.
 */
export function memberIdOf(cert: PeerCertificate | X509Certificate | undefined | null): string | null {
  if (cert === undefined || cert === null) return null;
  const raw = cert.raw as Buffer | undefined;
  if (!Buffer.isBuffer(raw) || raw.length === 0) return null;
  const key = typeof cert.fingerprint256 === 'string' && cert.fingerprint256 !== '' ? cert.fingerprint256 : new X509Certificate(raw).fingerprint256;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const id = memberIdFromDer(raw);
  if (cache.size >= CACHE_ENTRIES_MAX) {
    const oldest = cache.keys().next();
    if (oldest.done !== true) cache.delete(oldest.value);
  }
  cache.set(key, id);
  return id;
}

function memberIdFromDer(raw: Buffer): string | null {
  let uris: readonly string[];
  try {
    uris = subjectAltNames(raw).uris;
  } catch {
    return null;
  }
  const ids = uris.filter((u) => u.startsWith(MEMBER_URI_PREFIX)).map((u) => u.slice(MEMBER_URI_PREFIX.length));
  if (ids.length !== 1) return null;
  const id = ids[0] ?? '';
  return MEMBER_ID_PATTERN.test(id) ? id : null;
}

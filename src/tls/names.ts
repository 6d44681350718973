/**
 * names: the identity snapcoord puts in a certificate and the checks on what
 * goes into one (member ids, DNS names, IP addresses), and the reader of a
 * certificate's subject alternative names.
 */
import { isIP } from 'node:net';
import { x509 } from './x509.js';

/** MEMBER_URI_PREFIX: a node certificate names its member id as the URI SAN `urn:snapcoord:node:<id>`. */
export const MEMBER_URI_PREFIX = 'urn:snapcoord:node:';

/** CLIENT_URI_PREFIX: a client certificate (`snapcoord certs client NAME`) names its holder as the URI SAN `urn:snapcoord:client:<name>`. */
export const CLIENT_URI_PREFIX = 'urn:snapcoord:client:';

/**
 * MEMBER_ID_PATTERN: 1..64 characters, letters, digits, '_', '-', '.', starting
 * with a letter or digit. The twin of NODE_ID_PATTERN in src/client/address.ts
 * (src/tls may not import src/api); it also makes `<id>.pem` a safe file name.
 */
export const MEMBER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** memberUri: the URI SAN naming member `id` (`urn:snapcoord:node:<id>`). Throws on an invalid id. */
export function memberUri(id: string): string {
  checkMemberId(id);
  return `${MEMBER_URI_PREFIX}${id}`;
}

/** checkMemberId throws an Error unless `id` matches MEMBER_ID_PATTERN. */
export function checkMemberId(id: string): void {
  if (!MEMBER_ID_PATTERN.test(id)) {
    throw new Error(`member id "${id}" is not valid: 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit`);
  }
}

const DNS_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

/** checkDnsName throws an Error unless `name` is a host name (labels of letters, digits and '-'; an optional leading '*.'), at most 253 characters. */
export function checkDnsName(name: string): void {
  if (name.length > 253 || !DNS_NAME.test(name)) throw new Error(`DNS name "${name}" is not a valid host name`);
}

/** canonicalIp: `ip` in one spelling (IPv6 compressed and lower case, as WHATWG URLs print it); throws unless `ip` is an IPv4 or IPv6 address. */
export function canonicalIp(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family === 6) return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  throw new Error(`IP address "${ip}" is not an IPv4 or IPv6 address`);
}

/** SubjectAltNames: the DNS names, IP addresses (canonical spelling) and URIs of a certificate's subjectAltName extension. */
export interface SubjectAltNames {
  readonly dns: readonly string[];
  readonly ips: readonly string[];
  readonly uris: readonly string[];
}

const SUBJECT_ALT_NAME_OID = '2.5.29.17';

/**
 * subjectAltNames reads the subjectAltName extension of the DER certificate
 * `der` with @peculiar/x509 (no parsing of Node's printed
 * `subjectaltname` string, whose quoting rules changed across Node
 * versions). A certificate without the extension has none; throws when `der`
 * is not a certificate.
 */
export function subjectAltNames(der: Uint8Array): SubjectAltNames {
  const lib = x509();
  const cert = new lib.X509Certificate(der);
  const ext = cert.getExtension(SUBJECT_ALT_NAME_OID);
  const out = { dns: [] as string[], ips: [] as string[], uris: [] as string[] };
  if (ext === null) return out;
  const san = ext instanceof lib.SubjectAlternativeNameExtension ? ext : new lib.SubjectAlternativeNameExtension(ext.rawData);
  for (const name of san.names.items) {
    if (name.type === 'dns') out.dns.push(name.value);
    else if (name.type === 'url') out.uris.push(name.value);
    else if (name.type === 'ip') {
      try {
        out.ips.push(canonicalIp(name.value));
      } catch {
        out.ips.push(name.value);
      }
    }
  }
  return out;
}

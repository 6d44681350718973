/**
 * check-tls-files: is a set of certificate, key and CA files usable, and if
 * not, which file is wrong and why.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { memberIdOf } from './member-id.js';
import { subjectAltNames } from './names.js';

/** TlsFiles: paths of a certificate and its key (both or neither) and of a CA bundle (PEM, one or more certificates). */
export interface TlsFiles {
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly caFile?: string;
}

/** CheckTlsOptions: `checkChain` (default true): the certificate must be signed by a certificate of the CA file, when both are given. */
export interface CheckTlsOptions {
  readonly checkChain?: boolean;
  /** the time to check validity at (default now). */
  readonly now?: Date;
}

/** SERVER_AUTH_OID: the extended key usage id-kp-serverAuth (RFC 5280 §4.2.1.12). */
export const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';

/** TlsFilesInfo: what checkTlsFiles found. */
export interface TlsFilesInfo {
  /** when the certificate expires (the CA's earliest expiry when there is no certificate). */
  readonly notAfter: Date;
  /** the certificate's subject alternative names as `DNS:<name>`, `IP:<addr>`, `URI:<uri>` (empty without a certificate). */
  readonly identities: readonly string[];
  /** the member id the certificate names (memberIdOf), or null. */
  readonly memberId: string | null;
  /**
   * servesClients: a client that dials with the CA takes the certificate as a
   * server's (credentials.ts serverPurposeError): it names a member or its
   * extended key usage names serverAuth, and no extended key usage refuses
   * serverAuth (true without a certificate).
   */
  readonly servesClients: boolean;
}

/** TlsBytes: the contents of the files of TlsFiles. */
export interface TlsBytes {
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly ca?: Buffer;
}

const PEM_CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * checkTlsFiles reads and checks the files at start: each exists and can be
 * read; the certificate and every CA certificate are PEM certificates; the
 * key is a PEM private key that belongs to the certificate; the certificate
 * and the CA certificates are valid now (not expired, not before their start);
 * the certificate is signed by one of the CA file's certificates (unless
 * `checkChain` is false). Throws ONE Error whose message starts with the path
 * of the file at fault and says what is wrong with it, e.g.
 * `data/tls/n1.pem: expired on 2026-01-02T03:04:05.000Z`. Also throws when
 * `certFile` and `keyFile` are not given together, or no file is given.
 */
export function checkTlsFiles(files: TlsFiles & CheckTlsOptions): TlsFilesInfo {
  checkShape(files);
  return checkTlsBytes(
    {
      ...(files.certFile !== undefined ? { cert: readTlsFile(files.certFile) } : {}),
      ...(files.keyFile !== undefined ? { key: readTlsFile(files.keyFile) } : {}),
      ...(files.caFile !== undefined ? { ca: readTlsFile(files.caFile) } : {}),
    },
    files,
    files,
  );
}

/** checkShape throws unless certFile and keyFile come together and at least one file is named. */
export function checkShape(files: TlsFiles): void {
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    throw new Error(`a certificate needs its key and a key its certificate (given ${files.certFile !== undefined ? `only the certificate ${files.certFile}` : `only the key ${files.keyFile ?? ''}`})`);
  }
  if (files.certFile === undefined && files.caFile === undefined) throw new Error('no TLS file given: name a certificate and key, or a CA file');
}

/** readTlsFile reads `path`, throwing `<path>: missing` or `<path>: cannot be read (<code>)`. */
export function readTlsFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new Error(`${path}: missing`, { cause: err });
    throw new Error(`${path}: cannot be read (${e.code ?? e.message})`, { cause: err });
  }
}

/** checkTlsBytes: checkTlsFiles on contents already read; `files` names them in errors. */
export function checkTlsBytes(bytes: TlsBytes, files: TlsFiles, opts: CheckTlsOptions = {}): TlsFilesInfo {
  const nowMs = (opts.now ?? new Date()).getTime();
  const caCerts = bytes.ca !== undefined ? parseCaBundle(bytes.ca, files.caFile ?? 'the CA file', nowMs) : [];
  if (bytes.cert === undefined) {
    const notAfterMs = Math.min(...caCerts.map((c) => Date.parse(c.validTo)));
    return { notAfter: new Date(notAfterMs), identities: [], memberId: null, servesClients: true };
  }
  const certFile = files.certFile ?? 'the certificate';
  const keyFile = files.keyFile ?? 'the key';
  const cert = parseCert(bytes.cert, certFile);
  let key: KeyObject;
  try {
    key = createPrivateKey(bytes.key ?? Buffer.alloc(0));
  } catch (err) {
    throw new Error(`${keyFile}: not a PEM private key`, { cause: err });
  }
  if (!cert.checkPrivateKey(key)) throw new Error(`${keyFile}: the key does not belong to the certificate ${certFile}`);
  checkValidNow(cert, certFile, nowMs);
  if (caCerts.length > 0 && opts.checkChain !== false && !caCerts.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey))) {
    throw new Error(`${certFile}: not signed by the CA in ${files.caFile ?? 'the CA file'} (issuer ${oneLine(cert.issuer)})`);
  }
  const san = subjectAltNames(cert.raw);
  const identities = [...san.dns.map((d) => `DNS:${d}`), ...san.ips.map((ip) => `IP:${ip}`), ...san.uris.map((u) => `URI:${u}`)];
  const memberId = memberIdOf(cert);
  // X509Certificate.keyUsage is the extended key usage's OIDs (undefined without the extension).
  const eku = cert.keyUsage as string[] | undefined;
  const servesClients = eku === undefined ? memberId !== null : eku.includes(SERVER_AUTH_OID);
  return { notAfter: new Date(Date.parse(cert.validTo)), identities, memberId, servesClients };
}

function parseCert(pem: Buffer, file: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new Error(`${file}: not a PEM certificate`, { cause: err });
  }
}

export function parseCaBundle(pem: Buffer, file: string, nowMs: number): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new Error(`${file}: not a PEM certificate`);
  return blocks.map((block, i) => {
    const where = blocks.length > 1 ? `${file} (certificate ${i + 1} of ${blocks.length})` : file;
    const ca = parseCert(Buffer.from(block, 'latin1'), where);
    checkValidNow(ca, where, nowMs);
    return ca;
  });
}

function checkValidNow(cert: X509Certificate, file: string, nowMs: number): void {
  const fromMs = Date.parse(cert.validFrom);
  const toMs = Date.parse(cert.validTo);
  if (nowMs > toMs) throw new Error(`${file}: expired on ${new Date(toMs).toISOString()}`);
  if (nowMs < fromMs) throw new Error(`${file}: not valid before ${new Date(fromMs).toISOString()}`);
}

function oneLine(dn: string): string {
  return dn.split('\n').join(', ');
}

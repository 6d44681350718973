/**
 * certs: a small certificate authority for a snapcoord cluster. createCa
 * makes a CA, issueNodeCert a node certificate (for both the peer and the
 * client plane), writeCa / writeNodeCert put them on disk, ensureLocalTls
 * keeps a local cluster's set up to date (what `npm start` calls).
 *
 * Keys are ECDSA P-256, signatures ECDSA with SHA-256, made with
 * @peculiar/x509 on Node's WebCrypto; keys are PKCS#8 PEM, certificates PEM.
 *
 * On disk (dir, default data/tls): `ca.pem`, `ca-key.pem`, `<id>.pem`,
 * `<id>-key.pem` (ensureLocalTls keeps the CA key apart, in
 * `<base>/ca/ca-key.pem`: see localCaKeyFile). Keys are 0600, certificates
 * 0644, a directory created here 0700; every file is written atomically
 * (temp file, fsync, rename).
 */
import { X509Certificate, createPrivateKey, randomBytes, type KeyObject, type webcrypto } from 'node:crypto';
import { lstat, readFile, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CRL_ENTRIES_MAX, crlSignAllowed, loadCrl, normalizeSerial } from './crl.js';
import { CERT_FILE_MODE, KEY_FILE_MODE, ensureTlsDir, writeFileAtomic } from './files.js';
import { CLIENT_URI_PREFIX, MEMBER_URI_PREFIX, canonicalIp, checkDnsName, checkMemberId, memberUri, subjectAltNames } from './names.js';
import { subtle, x509, type X509 } from './x509.js';

/** CertKeyPem: a certificate and its private key, both PEM. */
export interface CertKeyPem {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Validity: how long a certificate is valid. `notBefore`/`notAfter` win over `days` (they let tests make an expired certificate). */
export interface Validity {
  /** days after now the certificate expires (a whole number, 1..36500). */
  readonly days?: number;
  /** the start of validity; default 5 minutes ago (a little slack for clocks). */
  readonly notBefore?: Date;
  /** the end of validity; default notBefore... now + days. */
  readonly notAfter?: Date;
}

/** CreateCaOptions: the CA's common name (default "snapcoord CA") and its validity (default 10 years). */
export interface CreateCaOptions extends Validity {
  readonly commonName?: string;
}

/** IssueNodeCertOptions: the member id, the host names and addresses the node answers on, and the validity (default 825 days). */
export interface IssueNodeCertOptions extends Validity {
  readonly id: string;
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
}

/** CA_DAYS_DEFAULT: a CA is valid for 10 years by default. */
export const CA_DAYS_DEFAULT = 3650;
/** NODE_CERT_DAYS_DEFAULT: a node certificate is valid for 825 days by default (the CA/Browser Forum's old maximum). */
export const NODE_CERT_DAYS_DEFAULT = 825;
/** DAYS_MAX: the longest validity accepted. */
export const DAYS_MAX = 36_500;
/** RENEW_BEFORE_DAYS: ensureLocalTls replaces a certificate that expires within this many days. */
export const RENEW_BEFORE_DAYS = 30;

const DAY_MS = 86_400_000;
const CLOCK_SLACK_MS = 5 * 60_000;
const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const NODE_CURVE_TO_WEBCRYPTO: Readonly<Record<string, string>> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function validity(v: Validity, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const days = v.days ?? defaultDays;
  if (!Number.isInteger(days) || days < 1 || days > DAYS_MAX) throw new Error(`days: ${days} is not a whole number from 1 to ${DAYS_MAX}`);
  const now = Date.now();
  const notBefore = v.notBefore ?? new Date(now - CLOCK_SLACK_MS);
  const notAfter = v.notAfter ?? new Date((v.notBefore?.getTime() ?? now) + days * DAY_MS);
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw new Error('notBefore/notAfter: not a valid date');
  if (notAfter.getTime() <= notBefore.getTime()) throw new Error(`notAfter (${notAfter.toISOString()}) is not after notBefore (${notBefore.toISOString()})`);
  return { notBefore, notAfter };
}

/** A positive 127-bit serial number in hex (RFC 5280 §4.1.2.2: positive, at most 20 octets). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

/** A DN attribute value: printable, no characters that need escaping in a DN string. */
function checkCommonName(cn: string): void {
  if (!/^[A-Za-z0-9 _.:@()'-]{1,64}$/.test(cn)) throw new Error(`commonName "${cn}" must be 1 to 64 letters, digits, spaces or _ . : @ ( ) ' -`);
}

async function keyPairPem(): Promise<{ keys: webcrypto.CryptoKeyPair; keyPem: string }> {
  const keys = (await subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const pkcs8 = await subtle.exportKey('pkcs8', keys.privateKey);
  return { keys, keyPem: x509().PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

/**
 * createCa makes a self-signed CA certificate and its key: basicConstraints
 * cA (critical, path length 0), keyUsage keyCertSign and cRLSign (critical),
 * subject key identifier; valid 10 years unless told otherwise. Throws on a
 * bad common name or validity.
 */
export async function createCa(opts: CreateCaOptions = {}): Promise<CertKeyPem> {
  const commonName = opts.commonName ?? 'snapcoord CA';
  checkCommonName(commonName);
  const { notBefore, notAfter } = validity(opts, CA_DAYS_DEFAULT);
  const { keys, keyPem } = await keyPairPem();
  const lib = x509();
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${commonName}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new lib.BasicConstraintsExtension(true, 0, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem };
}

/**
 * importSigningKey turns a PEM private key (an EC key on P-256, P-384 or
 * P-521, as `certs init` makes or an operator's own CA may have) into a
 * WebCrypto signing key. Throws when the key is not such a key.
 */
async function importSigningKey(keyPem: string): Promise<webcrypto.CryptoKey> {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new Error(`the CA key is not a PEM private key (${(err as Error).message})`, { cause: err });
  }
  const curve = key.asymmetricKeyType === 'ec' ? NODE_CURVE_TO_WEBCRYPTO[key.asymmetricKeyDetails?.namedCurve ?? ''] : undefined;
  if (curve === undefined) throw new Error(`the CA key is a ${key.asymmetricKeyType ?? 'unknown'} key; certs needs an EC key on P-256, P-384 or P-521`);
  const der = key.export({ type: 'pkcs8', format: 'der' });
  return subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: curve }, false, ['sign']);
}

/**
 * issueNodeCert issues a certificate for member `id`, signed by `ca`: subject
 * CN=<id>; subjectAltName = the DNS names, the IP addresses and the URI
 * `urn:snapcoord:node:<id>` (the member identity, see memberIdOf); extended
 * key usage serverAuth and clientAuth (one certificate serves the peer and the
 * client plane); keyUsage digitalSignature; basicConstraints cA false;
 * subject and authority key identifiers. Valid 825 days unless told otherwise
 * (notBefore/notAfter may lie in the past). Throws on an invalid id, DNS name,
 * IP or validity, or when `ca` is not a CA certificate with its key.
 */
export async function issueNodeCert(ca: CertKeyPem, opts: IssueNodeCertOptions): Promise<CertKeyPem> {
  checkMemberId(opts.id);
  const dns = [...new Set(opts.dns ?? [])];
  const ips = [...new Set((opts.ips ?? []).map(canonicalIp))];
  dns.forEach(checkDnsName);
  const { notBefore, notAfter } = validity(opts, NODE_CERT_DAYS_DEFAULT);

  const names: X509.JsonGeneralName[] = [
    ...dns.map((value) => ({ type: 'dns' as const, value })),
    ...ips.map((value) => ({ type: 'ip' as const, value })),
    { type: 'url', value: memberUri(opts.id) },
  ];
  return issueLeafCert(ca, { subject: `CN=${opts.id}`, notBefore, notAfter, usages: ['serverAuth', 'clientAuth'], names });
}

/**
 * issueLeafCert: a key pair and a certificate for it signed by `ca` (checked:
 * a CA certificate with its key): `subject`, the validity, keyUsage
 * digitalSignature, basicConstraints cA false, the extended key usages and
 * subjectAltName `names` given, subject and authority key identifiers.
 */
async function issueLeafCert(
  ca: CertKeyPem,
  o: { subject: string; notBefore: Date; notAfter: Date; usages: readonly ('serverAuth' | 'clientAuth')[]; names: X509.JsonGeneralName[] },
): Promise<CertKeyPem> {
  const caCert = parseCaCert(ca.certPem);
  const signingKey = await importSigningKey(ca.keyPem);
  if (!caCert.node.checkPrivateKey(createPrivateKey(ca.keyPem))) throw new Error('the CA key does not belong to the CA certificate');
  const { keys, keyPem } = await keyPairPem();
  const lib = x509();
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: o.subject,
    issuer: caCert.lib.subjectName,
    notBefore: o.notBefore,
    notAfter: o.notAfter,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new lib.BasicConstraintsExtension(false, undefined, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
      new lib.ExtendedKeyUsageExtension(o.usages.map((u) => lib.ExtendedKeyUsage[u])),
      new lib.SubjectAlternativeNameExtension(o.names),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await lib.AuthorityKeyIdentifierExtension.create(caCert.lib.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem };
}

/** IssueClientCertOptions: the client's name (a member id's characters) and the validity (default 825 days). */
export interface IssueClientCertOptions extends Validity {
  readonly name: string;
}

/**
 * issueClientCert issues a client certificate for `name`, signed by `ca`:
 * subject CN=<name>; subjectAltName the URI `urn:snapcoord:client:<name>`
 * only (no member URI, no host name or address); extended key usage
 * clientAuth only, so no TLS client takes it for a server's (OpenSSL refuses
 * it: 'unsuitable certificate purpose') and no node takes it for a member's
 * (it names none); keyUsage digitalSignature; basicConstraints cA false. For
 * nodes started with --client-ca and the client commands' --client-cert.
 * Throws on an invalid name or validity, or when `ca` is not a CA with its key.
 */
export async function issueClientCert(ca: CertKeyPem, opts: IssueClientCertOptions): Promise<CertKeyPem> {
  checkMemberId(opts.name);
  const { notBefore, notAfter } = validity(opts, NODE_CERT_DAYS_DEFAULT);
  return issueLeafCert(ca, { subject: `CN=${opts.name}`, notBefore, notAfter, usages: ['clientAuth'], names: [{ type: 'url', value: `${CLIENT_URI_PREFIX}${opts.name}` }] });
}

/**
 * writeClientCert issues a client certificate for `name` with the CA in `dir`
 * (readCa; its key at `opts.caKeyFile`, default `<dir>/ca-key.pem`) and
 * writes `client-<name>-key.pem` (0600) then `client-<name>.pem` (0644)
 * there, each atomically. Returns the paths. Throws as readCa and
 * issueClientCert.
 */
export async function writeClientCert(dir: string, name: string, opts: Omit<IssueClientCertOptions, 'name'> & { readonly caKeyFile?: string } = {}): Promise<NodeCertFiles> {
  checkMemberId(name);
  const files = { certFile: join(dir, `client-${name}.pem`), keyFile: join(dir, `client-${name}-key.pem`) };
  await refuseOtherKind(files.certFile, 'client');
  const { caKeyFile, ...issue } = opts;
  const ca = await readCa(dir, caKeyFile);
  const issued = await issueClientCert(ca, { ...issue, name });
  await ensureTlsDir(dir);
  await writeFileAtomic(files.keyFile, issued.keyPem, KEY_FILE_MODE);
  await writeFileAtomic(files.certFile, issued.certPem, CERT_FILE_MODE);
  return files;
}

/**
 * refuseOtherKind throws when `certFile` holds a certificate of the other
 * kind than the one about to be written there: member `client-<x>`'s files
 * and client `<x>`'s have the same names, and replacing one with the other
 * left a member serving a certificate naming no member (or a client holding
 * a member's). A missing or unreadable file, or one of the same kind (a
 * rotation), is left to the write.
 */
async function refuseOtherKind(certFile: string, writing: 'member' | 'client'): Promise<void> {
  let uris: readonly string[];
  try {
    uris = subjectAltNames(new X509Certificate(await readFile(certFile)).raw).uris;
  } catch {
    return;
  }
  const member = uris.find((u) => u.startsWith(MEMBER_URI_PREFIX));
  const client = uris.find((u) => u.startsWith(CLIENT_URI_PREFIX));
  if (writing === 'client' && member !== undefined) {
    throw new Error(`${certFile} holds the certificate of member ${member.slice(MEMBER_URI_PREFIX.length)}; refusing to replace it with a client certificate (choose another client name)`);
  }
  if (writing === 'member' && member === undefined && client !== undefined) {
    throw new Error(`${certFile} holds client ${client.slice(CLIENT_URI_PREFIX.length)}'s certificate; refusing to replace it with a member certificate (remove it first if it is no longer used)`);
  }
}

function parseCaCert(certPem: string): { node: X509Certificate; lib: X509.X509Certificate } {
  let node: X509Certificate;
  try {
    node = new X509Certificate(certPem);
  } catch (err) {
    throw new Error(`the CA certificate is not a PEM certificate (${(err as Error).message})`, { cause: err });
  }
  if (!node.ca) throw new Error(`the CA certificate (${node.subject.replace(/\n/g, ', ')}) is not a CA (basicConstraints cA is not set)`);
  return { node, lib: new (x509().X509Certificate)(node.raw) };
}

/** CrlEntryInput: one revoked certificate: its serial (hex) and when it was revoked (default now). */
export interface CrlEntryInput {
  readonly serialNumber: string;
  readonly revocationDate?: Date;
}

/** CRL_DAYS_DEFAULT: how long a CRL made by createCrl is current (its nextUpdate) unless told otherwise. */
export const CRL_DAYS_DEFAULT = 30;

/**
 * createCrl: a PEM X.509 CRL (v2) signed by `ca` (checked: a CA certificate
 * with its key) listing `entries` (hex serials, duplicates dropped);
 * thisUpdate now (or `thisUpdate`), nextUpdate `days` (default 30) later
 * (or `nextUpdate`). Throws on a bad serial, validity or CA (one whose
 * keyUsage lacks cRLSign: loadCrl refuses what it signs).
 */
export async function createCrl(ca: CertKeyPem, entries: readonly CrlEntryInput[], opts: { readonly days?: number; readonly thisUpdate?: Date; readonly nextUpdate?: Date } = {}): Promise<string> {
  const caCert = parseCaCert(ca.certPem);
  if (!crlSignAllowed(caCert.lib)) {
    throw new Error(`the CA certificate (${caCert.lib.subject}) may not sign CRLs (its keyUsage lacks cRLSign): no member would take the CRL`);
  }
  const signingKey = await importSigningKey(ca.keyPem);
  if (!caCert.node.checkPrivateKey(createPrivateKey(ca.keyPem))) throw new Error('the CA key does not belong to the CA certificate');
  const days = opts.days ?? CRL_DAYS_DEFAULT;
  if (!Number.isInteger(days) || days < 1 || days > DAYS_MAX) throw new Error(`days: ${days} is not a whole number from 1 to ${DAYS_MAX}`);
  const thisUpdate = opts.thisUpdate ?? new Date();
  const nextUpdate = opts.nextUpdate ?? new Date(thisUpdate.getTime() + days * DAY_MS);
  const seen = new Set<string>();
  const list: X509.X509CrlEntryParams[] = [];
  for (const e of entries) {
    const hex = e.serialNumber.replace(/:/g, '').toLowerCase();
    if (!/^[0-9a-f]{1,40}$/.test(hex)) throw new Error(`serial "${e.serialNumber.slice(0, 64)}" is not a hex serial number of at most 20 octets`);
    const bare = hex.replace(/^0+/, '') || '0';
    if (seen.has(bare)) continue;
    seen.add(bare);
    // DER INTEGER octets, positive: a leading 00 when the first octet's high bit is set.
    const even = bare.length % 2 === 1 ? `0${bare}` : bare;
    list.push({ serialNumber: Number.parseInt(even.slice(0, 2), 16) >= 0x80 ? `00${even}` : even, revocationDate: e.revocationDate ?? thisUpdate });
  }
  const crl = await x509().X509CrlGenerator.create({
    issuer: caCert.lib.subjectName,
    thisUpdate,
    nextUpdate,
    entries: list,
    signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
  });
  // OpenSSL's label (what `openssl crl` and `openssl ca -gencrl` read and write); the library writes "CRL".
  return x509().PemConverter.encode(crl.rawData, 'X509 CRL');
}

/** crlFileOf: where `snapcoord certs revoke` keeps the CRL of certificate directory `dir` (`<dir>/crl.pem`, give it to every member with --peer-crl). */
export function crlFileOf(dir: string): string {
  return join(dir, 'crl.pem');
}

/** RevokeResult: the CRL written, how many serials were new to it, and how many it lists. */
export interface RevokeResult {
  readonly crlFile: string;
  readonly added: number;
  readonly revoked: number;
  readonly nextUpdate: Date;
}

/**
 * revokeCerts adds `serials` (hex) to the CRL at `opts.crlFile` (default
 * crlFileOf(dir)), made when missing, and signs it again with the CA in
 * `dir` (readCa; its key at `opts.caKeyFile`): thisUpdate now, nextUpdate
 * `opts.days` (default 30) later; serials already listed keep their
 * revocation dates. Written atomically (0644). An existing file that is not
 * a CRL this CA signed is refused, never overwritten. Throws on readCa's
 * errors, a bad serial, or more than CRL_ENTRIES_MAX serials in all.
 */
export async function revokeCerts(dir: string, serials: readonly string[], opts: { readonly caKeyFile?: string; readonly crlFile?: string; readonly days?: number } = {}): Promise<RevokeResult> {
  const crlFile = opts.crlFile ?? crlFileOf(dir);
  const ca = await readCa(dir, opts.caKeyFile);
  const entries: CrlEntryInput[] = [];
  if (await exists(crlFile)) {
    const old = await loadCrl(await readFile(crlFile), Buffer.from(ca.certPem), crlFile, caFiles(dir).caFile);
    for (const [serialNumber, revocationDate] of old.serials) entries.push({ serialNumber, revocationDate });
  }
  const before = new Set(entries.map((e) => e.serialNumber));
  let added = 0;
  for (const s of serials) {
    const n = normalizeSerial(s);
    if (!/^[0-9a-f]{1,40}$/.test(n)) throw new Error(`serial "${s.slice(0, 64)}" is not a hex serial number of at most 20 octets`);
    if (before.has(n)) continue;
    before.add(n);
    entries.push({ serialNumber: n });
    added += 1;
  }
  if (entries.length > CRL_ENTRIES_MAX) throw new Error(`the CRL would list ${entries.length} certificates, more than ${CRL_ENTRIES_MAX}`);
  const thisUpdate = new Date();
  const days = opts.days ?? CRL_DAYS_DEFAULT;
  const pem = await createCrl(ca, entries, { days, thisUpdate });
  await ensureTlsDir(dirname(crlFile));
  await writeFileAtomic(crlFile, pem, CERT_FILE_MODE);
  return { crlFile, added, revoked: entries.length, nextUpdate: new Date(thisUpdate.getTime() + days * DAY_MS) };
}

/** CaFiles: where a CA lives in a certificate directory. */
export interface CaFiles {
  readonly caFile: string;
  readonly caKeyFile: string;
}

/** NodeCertFiles: where a node's certificate and key live in a certificate directory. */
export interface NodeCertFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** caFiles: `<dir>/ca.pem` and the CA key, `caKeyFile` (default `<dir>/ca-key.pem`). */
export function caFiles(dir: string, caKeyFile = join(dir, 'ca-key.pem')): CaFiles {
  return { caFile: join(dir, 'ca.pem'), caKeyFile };
}

/**
 * localCaKeyFile: where `snapcoord local` keeps the CA key of the
 * certificate directory `tlsDir` (`<base>/tls`): `<base>/ca/ca-key.pem`,
 * outside the directory whose files the nodes are handed (their keys and
 * certificates, ca.pem), in a directory of its own (0700).
 */
export function localCaKeyFile(tlsDir: string): string {
  return join(dirname(tlsDir), 'ca', 'ca-key.pem');
}

/** nodeCertFiles: `<dir>/<id>.pem` and `<dir>/<id>-key.pem`; throws on an invalid member id. */
export function nodeCertFiles(dir: string, id: string): NodeCertFiles {
  checkMemberId(id);
  return { certFile: join(dir, `${id}.pem`), keyFile: join(dir, `${id}-key.pem`) };
}

/** WriteCaOptions: createCa's options, `force` to replace an existing CA, and where the key goes (default `<dir>/ca-key.pem`). */
export interface WriteCaOptions extends CreateCaOptions {
  readonly force?: boolean;
  readonly caKeyFile?: string;
}

/**
 * writeCa creates a CA (createCa) and writes `ca-key.pem` (0600) and `ca.pem`
 * (0644) into `dir`, creating `dir` (0700) when missing. It never replaces an
 * existing `ca.pem` or `ca-key.pem` unless `force`: then it throws an Error
 * saying so (and leaves both files as they were). Returns the paths.
 */
export async function writeCa(dir: string, opts: WriteCaOptions = {}): Promise<CaFiles> {
  const files = caFiles(dir, opts.caKeyFile);
  const force = opts.force === true;
  if (!force) {
    for (const f of [files.caFile, files.caKeyFile]) {
      if (await exists(f)) throw new Error(`${f} already exists; a new CA would orphan every certificate it signed (use --force to replace it)`);
    }
  }
  const ca = await createCa(opts);
  await ensureTlsDir(dir);
  await ensureTlsDir(dirname(files.caKeyFile));
  try {
    await writeFileAtomic(files.caKeyFile, ca.keyPem, KEY_FILE_MODE, !force);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${files.caKeyFile} already exists (use --force to replace it)`, { cause: err });
    throw err;
  }
  try {
    await writeFileAtomic(files.caFile, ca.certPem, CERT_FILE_MODE, !force);
  } catch (err) {
    // Without force the key was new: take it back rather than leave a key without its certificate.
    if (!force) await unlink(files.caKeyFile).catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${files.caFile} already exists (use --force to replace it)`, { cause: err });
    throw err;
  }
  return files;
}

/**
 * readCa reads `ca.pem` from `dir` and the CA key from `caKeyFile` (default
 * `<dir>/ca-key.pem`). Throws an Error naming the file when one is missing or
 * unreadable, or when the key does not belong to the certificate or the
 * certificate is not a CA.
 */
export async function readCa(dir: string, caKeyFile?: string): Promise<CertKeyPem> {
  const files = caFiles(dir, caKeyFile);
  const certPem = await readText(files.caFile, 'no CA here: run `snapcoord certs init` first');
  const keyPem = await readText(files.caKeyFile, 'the CA key is needed to issue certificates');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    throw new Error(`${files.caFile}: not a PEM certificate`);
  }
  if (!cert.ca) throw new Error(`${files.caFile}: not a CA certificate (basicConstraints cA is not set)`);
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    throw new Error(`${files.caKeyFile}: not a PEM private key`);
  }
  if (!matches) throw new Error(`${files.caKeyFile}: the key does not belong to ${files.caFile}`);
  return { certPem, keyPem };
}

/**
 * writeNodeCert issues a certificate for member `id` with the CA in `dir`
 * (readCa; its key at `opts.caKeyFile`, default `<dir>/ca-key.pem`) and
 * writes `<id>-key.pem` (0600) then `<id>.pem` (0644) there,
 * each atomically, replacing earlier ones (that is how a certificate is
 * rotated; a reader that meets the new key beside the old certificate sees a
 * mismatch, which the credentials in credentials.ts wait out). Returns the
 * paths. Throws on readCa's errors and issueNodeCert's.
 */
export async function writeNodeCert(dir: string, id: string, opts: Omit<IssueNodeCertOptions, 'id'> & { readonly caKeyFile?: string } = {}): Promise<NodeCertFiles> {
  const files = nodeCertFiles(dir, id);
  await refuseOtherKind(files.certFile, 'member');
  const { caKeyFile, ...issue } = opts;
  const ca = await readCa(dir, caKeyFile);
  const issued = await issueNodeCert(ca, { ...issue, id });
  await ensureTlsDir(dir);
  await writeFileAtomic(files.keyFile, issued.keyPem, KEY_FILE_MODE);
  await writeFileAtomic(files.certFile, issued.certPem, CERT_FILE_MODE);
  return files;
}

/**
 * LocalTlsOptions: the names every local node certificate carries (default
 * `localhost`, `127.0.0.1` and `::1`), and where the CA key is kept (default
 * localCaKeyFile(dir): outside `dir`).
 */
export interface LocalTlsOptions {
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
  readonly caKeyFile?: string;
}

/** LocalTls: the files ensureLocalTls made or kept, and which it (re)wrote this time. */
export interface LocalTls extends CaFiles {
  readonly dir: string;
  readonly nodes: Readonly<Record<string, NodeCertFiles>>;
  /** the paths of the certificates written by this call (empty when everything was reused). */
  readonly written: readonly string[];
}

/**
 * ensureLocalTls makes sure `dir` holds a CA and a certificate for each of
 * `ids` (for a local cluster: `npm start` / `snapcoord local`), the CA key
 * kept at `opts.caKeyFile` (default localCaKeyFile(dir): outside `dir`, whose
 * files the nodes are handed; a node that could read the CA key could mint a
 * certificate for any member). A `<dir>/ca-key.pem` an older version left
 * there is moved to that place (or removed when the same key is already
 * there; a different one there is refused). What exists
 * is reused when it is still valid for more than RENEW_BEFORE_DAYS days (and
 * a node certificate also chains to the CA, matches its key and names its id
 * and every requested DNS name and IP); anything else is issued anew. A CA
 * that expires within RENEW_BEFORE_DAYS days is replaced, and with it every
 * node certificate. Throws when an existing CA cannot be read or its key does
 * not match (it is not this function's to overwrite), or on an invalid id,
 * DNS name or IP.
 */
export async function ensureLocalTls(dir: string, ids: readonly string[], opts: LocalTlsOptions = {}): Promise<LocalTls> {
  const dns = opts.dns ?? ['localhost'];
  const ips = (opts.ips ?? ['127.0.0.1', '::1']).map(canonicalIp);
  dns.forEach(checkDnsName);
  ids.forEach(checkMemberId);
  const files = caFiles(dir, opts.caKeyFile ?? localCaKeyFile(dir));
  await moveOldCaKey(join(dir, 'ca-key.pem'), files.caKeyFile);
  const renewBefore = Date.now() + RENEW_BEFORE_DAYS * DAY_MS;
  const written: string[] = [];

  let ca: CertKeyPem | null = null;
  const caPresent = (await exists(files.caFile)) || (await exists(files.caKeyFile));
  if (caPresent) {
    ca = await readCa(dir, files.caKeyFile);
    if (Date.parse(new X509Certificate(ca.certPem).validTo) <= renewBefore) ca = null;
  }
  if (ca === null) {
    await writeCa(dir, { force: caPresent, caKeyFile: files.caKeyFile });
    ca = await readCa(dir, files.caKeyFile);
    written.push(files.caFile);
  }
  const caCert = new X509Certificate(ca.certPem);

  const nodes: Record<string, NodeCertFiles> = {};
  for (const id of ids) {
    const f = nodeCertFiles(dir, id);
    nodes[id] = f;
    if (await nodeCertUsable(f, caCert, id, dns, ips, renewBefore)) continue;
    const issued = await issueNodeCert(ca, { id, dns, ips });
    await writeFileAtomic(f.keyFile, issued.keyPem, KEY_FILE_MODE);
    await writeFileAtomic(f.certFile, issued.certPem, CERT_FILE_MODE);
    written.push(f.certFile);
  }
  return { dir, ...files, nodes, written };
}

/** LOCAL_CRL_RENEW_BEFORE_DAYS: ensureLocalCrl signs the local CRL again when its nextUpdate is this close (half of CRL_DAYS_DEFAULT). */
export const LOCAL_CRL_RENEW_BEFORE_DAYS = 15;

/**
 * ensureLocalCrl makes sure the local cluster's certificate directory
 * `tls.dir` (ensureLocalTls's) holds a CRL its CA signed (crlFileOf(dir)),
 * so that `snapcoord local` can hand every node --peer-crl from its first
 * start and a certificate `snapcoord certs revoke` revokes later is refused
 * within seconds, without a restart. Missing: an empty one is written. Its
 * nextUpdate within LOCAL_CRL_RENEW_BEFORE_DAYS days (or past): signed again
 * with the same entries (revokeCerts with none new). Not signed by the CA
 * ensureLocalTls has just replaced (written anew): an empty one replaces it
 * (every certificate it listed was of the old CA, which no node trusts now).
 * Any other file that is not a CRL of this CA is refused (an Error naming
 * it), never overwritten. Resolves with the CRL's path.
 */
export async function ensureLocalCrl(tls: LocalTls): Promise<string> {
  const crlFile = crlFileOf(tls.dir);
  const renewBefore = Date.now() + LOCAL_CRL_RENEW_BEFORE_DAYS * DAY_MS;
  if (await exists(crlFile)) {
    const ca = await readFile(tls.caFile);
    let next: Date | null;
    try {
      next = (await loadCrl(await readFile(crlFile), ca, crlFile, tls.caFile)).info.nextUpdate;
    } catch (err) {
      if (!tls.written.includes(tls.caFile)) throw err;
      await writeFileAtomic(crlFile, await createCrl(await readCa(tls.dir, tls.caKeyFile), []), CERT_FILE_MODE);
      return crlFile;
    }
    if (next === null || next.getTime() > renewBefore) return crlFile;
    await revokeCerts(tls.dir, [], { caKeyFile: tls.caKeyFile, crlFile });
    return crlFile;
  }
  await writeFileAtomic(crlFile, await createCrl(await readCa(tls.dir, tls.caKeyFile), []), CERT_FILE_MODE);
  return crlFile;
}

/**
 * moveOldCaKey: a CA key at `old` (where an older `snapcoord local` kept it,
 * beside the node keys) goes to `target` (its directory made 0700): renamed
 * when `target` is missing, removed when `target` holds the same key; a
 * different key at `target` is refused (an Error naming both: the operator
 * decides which CA is theirs).
 */
async function moveOldCaKey(old: string, target: string): Promise<void> {
  if (old === target || !(await exists(old))) return;
  if (await exists(target)) {
    const [a, b] = await Promise.all([readFile(old, 'utf8'), readFile(target, 'utf8')]);
    if (a !== b) throw new Error(`${old} and ${target} hold different CA keys: keep the one that signed ${join(dirname(old), 'ca.pem')} at ${target} and remove the other`);
    await unlink(old);
    return;
  }
  await ensureTlsDir(dirname(target));
  await rename(old, target);
}

async function nodeCertUsable(
  f: NodeCertFiles,
  ca: X509Certificate,
  id: string,
  dns: readonly string[],
  ips: readonly string[],
  renewBefore: number,
): Promise<boolean> {
  try {
    const cert = new X509Certificate(await readFile(f.certFile));
    const key = createPrivateKey(await readFile(f.keyFile));
    if (!cert.checkPrivateKey(key) || !cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
    if (Date.parse(cert.validFrom) > Date.now() || Date.parse(cert.validTo) <= renewBefore) return false;
    const san = subjectAltNames(cert.raw);
    return san.uris.includes(memberUri(id)) && dns.every((d) => san.dns.includes(d)) && ips.every((ip) => san.ips.includes(ip));
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    return true;
  }
}

async function readText(path: string, hintWhenMissing: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new Error(`${path}: missing (${hintWhenMissing})`, { cause: err });
    throw new Error(`${path}: cannot be read (${e.code ?? e.message})`, { cause: err });
  }
}

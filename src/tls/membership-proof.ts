/**
 * membership-proof: the peer certificate's key signs the configuration
 * entries a leader appends, and the cluster CA checks such signatures
 * (what src/node/membership-proofs.ts calls MembershipProofs).
 *
 * A proof is `x509.` + base64url of the JSON object
 *   { "s": [clusterId, index, term, voters, learners, signer], "sig": base64url, "cert": base64url DER }
 * where sig signs statementBytes(s) (a fixed prefix, then the JSON of `s`)
 * with the key of `cert`, the signer's peer certificate (carried along: the
 * signer may be gone when the proof is checked). A proof verifies when its
 * certificate was issued by a CA of the bundle (--peer-ca), is valid now,
 * names the signer (its urn:snapcoord:node URI), is not revoked (--peer-crl),
 * its cluster is this one, and the signature holds. A proof of a certificate
 * since expired no longer verifies: rotating certificates ends the proofs
 * they signed (vouching then rests on voters' answers only).
 *
 * Two kinds of statement, each signed over bytes of its own prefix (a
 * signature of one is never taken for the other): an "appended" statement
 * (s has 6 elements), signed by the leader as it appends the entry, and a
 * "committed" statement (s has a 7th element, the string "committed"),
 * signed by a leader that holds the entry committed (a later `attest` entry
 * carries it; src/node/membership-proofs.ts). Builds before commit
 * statements read a 7-element statement as malformed and skip it.
 */
import { readFileSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { X509Certificate, createPrivateKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { parseCaBundle } from './check-tls-files.js';
import { memberIdOf } from './member-id.js';

/** PROOF_CHARS_MAX: the longest proof read (the core's MEMBERSHIP_PROOF_CHARS_MAX). */
export const PROOF_CHARS_MAX = 8192;
/** PROOF_IDS_MAX: the most voters plus learners a proof may name (bounded well below the proof's size anyway). */
const PROOF_IDS_MAX = 1000;
const PREFIX = 'snapcoord membership proof v1\n';
const PREFIX_COMMITTED = 'snapcoord membership commit v1\n';
const COMMITTED = 'committed';
const SCHEME = 'x509.';

/** SignedStatement: what a proof states (src/node/membership-proofs.ts MembershipStatement). */
export interface SignedStatement {
  readonly clusterId: string;
  readonly index: number;
  readonly term: number;
  readonly voters: readonly string[];
  readonly learners: readonly string[];
  readonly signer: string;
  /** committed: a commit statement (the signer held entry `index` of term `term` committed); absent: appended only. */
  readonly committed?: true;
}

/** statementArray: the statement as a proof's "s" holds it (a commit statement with its 7th element). */
export function statementArray(s: SignedStatement): unknown[] {
  const a: unknown[] = [s.clusterId, s.index, s.term, s.voters, s.learners, s.signer];
  if (s.committed === true) a.push(COMMITTED);
  return a;
}

/** statementBytes: the bytes a proof's signature covers (a prefix of its own per kind: no other signature of the key reads the same). */
export function statementBytes(s: SignedStatement): Buffer {
  return Buffer.from((s.committed === true ? PREFIX_COMMITTED : PREFIX) + JSON.stringify(statementArray(s)), 'utf8');
}

function idList(v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > PROOF_IDS_MAX || !v.every((x) => typeof x === 'string' && x !== '' && x.length <= 256)) throw new Error(`${what}: not a list of member ids`);
  return v as string[];
}

/** parseStatement: the statement `v` (the proof's "s") holds, or an Error naming what is wrong. */
export function parseStatement(v: unknown): SignedStatement {
  if (!Array.isArray(v) || (v.length !== 6 && !(v.length === 7 && v[6] === COMMITTED))) throw new Error('the statement is not [cluster, index, term, voters, learners, signer] (then "committed" for a commit statement)');
  const [clusterId, index, term, voters, learners, signer] = v as unknown[];
  if (typeof clusterId !== 'string' || clusterId.length > 256) throw new Error('the statement\'s cluster id is not a string');
  if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 1) throw new Error('the statement\'s index is not a whole number >= 1');
  if (typeof term !== 'number' || !Number.isSafeInteger(term) || term < 0) throw new Error('the statement\'s term is not a whole number');
  if (typeof signer !== 'string' || signer === '' || signer.length > 256) throw new Error('the statement\'s signer is not a member id');
  const s = { clusterId, index, term, voters: idList(voters, 'the statement\'s voters'), learners: idList(learners, 'the statement\'s learners'), signer };
  return v.length === 7 ? { ...s, committed: true } : s;
}

/** ProofToSign: what a member signs: the configuration {voters, learners} entry `index` (term `term`) makes; committed: a commit statement of it. */
export interface ProofToSign {
  readonly index: number;
  readonly term: number;
  readonly voters: readonly string[];
  readonly learners: readonly string[];
  readonly committed?: boolean;
}

/**
 * readStatement: the statement a proof (x509. or another scheme of the same body: scheme, then base64url JSON with
 * "s") claims, its signature NOT checked: for a node reading the proofs of its own log (which leader's
 * configuration entry to attest). Null when it is none. Never for another member's proofs: verify those.
 */
export function readStatement(proof: string): SignedStatement | null {
  if (proof.length > PROOF_CHARS_MAX) return null;
  const dot = proof.indexOf('.');
  if (dot < 1 || dot > 16) return null;
  try {
    const body = JSON.parse(Buffer.from(proof.slice(dot + 1), 'base64url').toString('utf8')) as unknown;
    if (typeof body !== 'object' || body === null) return null;
    return parseStatement((body as Record<string, unknown>)['s']);
  } catch {
    return null;
  }
}

/** X509MembershipProofsOptions: this node, its peer certificate and key files, the CA bundle, and the CRL's verdict. */
export interface X509MembershipProofsOptions {
  readonly clusterId: string;
  readonly selfId: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  /** isRevoked: whether the CRL in use revokes a serial (hex); absent: no CRL. */
  readonly isRevoked?: (serialHex: string) => boolean;
  /** nowMs: the wall clock certificates are checked against (default Date.now); the files are looked at again on the monotonic clock. */
  readonly nowMs?: () => number;
}

/** FILE_RECHECK_MS: the files are read again when their modification time changed, looked at no more often than this. */
const FILE_RECHECK_MS = 1_000;

interface Cached<T> {
  readonly value: T;
  readonly mtimeMs: number;
  readonly checkedMs: number;
}

/**
 * X509MembershipProofs signs with this node's peer key and verifies against
 * the cluster CA. The files are those the peer plane serves (reloaded when
 * they change, as the plane's own credentials are).
 */
export class X509MembershipProofs {
  private readonly opts: X509MembershipProofsOptions;
  private readonly nowMs: () => number;
  private own: Cached<{ key: KeyObject; certDer: Buffer }> | null = null;
  private cas: Cached<X509Certificate[]> | null = null;

  constructor(opts: X509MembershipProofsOptions) {
    this.opts = opts;
    this.nowMs = opts.nowMs ?? Date.now;
  }

  /** sign: this node's proof of the configuration {voters, learners} its entry at `index` (term `term`) makes (committed: its commit statement). Throws when the files cannot be read. */
  sign(s: ProofToSign): string {
    const own = this.ownFiles();
    const base: SignedStatement = { clusterId: this.opts.clusterId, index: s.index, term: s.term, voters: [...s.voters], learners: [...s.learners], signer: this.opts.selfId };
    const statement: SignedStatement = s.committed === true ? { ...base, committed: true } : base;
    const sig = cryptoSign(digestOf(own.key), statementBytes(statement), own.key);
    const body = { s: statementArray(statement), sig: sig.toString('base64url'), cert: own.certDer.toString('base64url') };
    const proof = SCHEME + Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
    if (proof.length > PROOF_CHARS_MAX) throw new Error(`the proof would be ${proof.length} characters, more than ${PROOF_CHARS_MAX} (a configuration this large is not proved)`);
    return proof;
  }

  /** verify: the statement `proof` makes when it verifies (see the module doc); an Error saying why not. */
  verify(proof: string): SignedStatement | Error {
    try {
      return this.check(proof);
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  }

  private check(proof: string): SignedStatement {
    if (proof.length > PROOF_CHARS_MAX) throw new Error(`a proof of ${proof.length} characters, more than ${PROOF_CHARS_MAX}`);
    if (!proof.startsWith(SCHEME)) throw new Error('not an x509 proof (unsigned: a member without a peer certificate appended it)');
    let body: unknown;
    try {
      body = JSON.parse(Buffer.from(proof.slice(SCHEME.length), 'base64url').toString('utf8'));
    } catch {
      throw new Error('the proof is not base64url JSON');
    }
    if (typeof body !== 'object' || body === null) throw new Error('the proof is not an object');
    const b = body as Record<string, unknown>;
    if (typeof b['sig'] !== 'string' || typeof b['cert'] !== 'string') throw new Error('the proof has no signature or certificate');
    const s = parseStatement(b['s']);
    if (s.clusterId !== this.opts.clusterId) throw new Error(`the proof is of cluster ${JSON.stringify(s.clusterId.slice(0, 64))}, not this one`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(b['cert'], 'base64url'));
    } catch {
      throw new Error('the proof\'s certificate is not DER');
    }
    const now = this.nowMs();
    if (now > Date.parse(cert.validTo) || now < Date.parse(cert.validFrom)) throw new Error(`the certificate of ${s.signer}'s proof is not valid now (${cert.validFrom} to ${cert.validTo})`);
    if (!this.caCerts().some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey))) throw new Error(`the certificate of ${s.signer}'s proof was not issued by this cluster's CA`);
    const named = memberIdOf(cert);
    if (named !== s.signer) throw new Error(`the proof is signed with the certificate of ${named ?? '(no member)'}, not of its signer ${s.signer}`);
    if (this.opts.isRevoked?.(cert.serialNumber) === true) throw new Error(`the certificate of ${s.signer}'s proof (serial ${cert.serialNumber.toLowerCase()}) is revoked`);
    if (!cryptoVerify(digestOf(cert.publicKey), statementBytes(s), cert.publicKey, Buffer.from(b['sig'], 'base64url'))) throw new Error(`the signature of ${s.signer}'s proof does not hold`);
    return s;
  }

  private ownFiles(): { key: KeyObject; certDer: Buffer } {
    this.own = reread(this.own, this.opts.keyFile, () => {
      const key = createPrivateKey(readFileSync(this.opts.keyFile));
      const cert = new X509Certificate(readFileSync(this.opts.certFile));
      if (!cert.checkPrivateKey(key)) throw new Error(`${this.opts.keyFile}: the key does not belong to ${this.opts.certFile} (mid-rotation?)`);
      return { key, certDer: cert.raw };
    }, this.opts.certFile);
    return this.own.value;
  }

  private caCerts(): X509Certificate[] {
    this.cas = reread(this.cas, this.opts.caFile, () => parseCaBundle(readFileSync(this.opts.caFile), this.opts.caFile, this.nowMs()));
    return this.cas.value;
  }
}

/** digestOf: the hash the key's signature scheme takes (none for EdDSA, SHA-256 otherwise). */
function digestOf(key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' || key.asymmetricKeyType === 'ed448' ? null : 'sha256';
}

/**
 * reread: `cached` while the files' modification times are unchanged (looked at once per FILE_RECHECK_MS, on the
 * monotonic clock: on the wall clock a step back, NTP or a resumed VM, kept a rotated key or CA unread for the
 * step's length), else load() again.
 */
function reread<T>(cached: Cached<T> | null, file: string, load: () => T, other?: string): Cached<T> {
  const now = performance.now();
  if (cached !== null && now - cached.checkedMs < FILE_RECHECK_MS) return cached;
  const mtimeMs = statSync(file).mtimeMs + (other !== undefined ? statSync(other).mtimeMs : 0);
  if (cached !== null && cached.mtimeMs === mtimeMs) return { ...cached, checkedMs: now };
  return { value: load(), mtimeMs, checkedMs: now };
}

/**
 * crl: the peer plane's certificate revocation list (`serve --peer-crl`),
 * checked against the cluster CA and read again when it changes on disk, so
 * an operator revokes a removed member's certificate without a restart.
 *
 * Why: a member that missed member R's removal (offline across it, restored
 * from an old data dir) still has R in its configuration, so R's still-valid
 * certificate is admitted by the peer guard and R may lead it. A CRL naming
 * R's certificate makes every member refuse it (incoming calls, and channels
 * to it), as etcd's --peer-crl-file does.
 *
 * An expired CRL (past its nextUpdate) is still used, with a loud error
 * logged once per CRL: revocation is permanent, so every serial it lists is
 * still revoked; it may only miss newer revocations. OpenSSL instead fails
 * every verification ("CRL has expired"), which here would cut every member
 * off from every other the day an operator forgets to re-sign the CRL (a
 * whole-cluster outage). (etcd does not look at nextUpdate at all.)
 *
 * No rollback (crlRollbackError): a CRL never replaces the one in use when it
 * is older (an earlier thisUpdate) or un-revokes a serial it lists, nor, while
 * the CA bundle still trusts the CA of the one in use, when it comes from
 * another CA (one CRL is used at a time). Else a stale copy pushed by config
 * management or restored from a backup, or a CA rotation, would let a
 * revoked member back in without a word. The CRL in use is kept in the data
 * dir (PeerCrlOptions.keptFile), so a restart does not forget it either; an
 * operator who means to take a revocation back deletes that file.
 *
 * The client plane's CRL (`serve --client-crl`, checked against --client-ca)
 * is a PeerCrl too, with the same rules (kept as CLIENT_CRL_KEPT_FILE): a
 * client whose certificate it revokes is refused at each call
 * (src/api/client-revocation.ts), and a reload closes its open connections.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import type { PeerCertificate } from 'node:tls';
import { writeFileAtomic } from './files.js';
import { x509, type X509 } from './x509.js';

/** CRL_BYTES_MAX: the largest CRL file read (PEM or DER): about 100,000 entries. */
export const CRL_BYTES_MAX = 8 * 1024 * 1024;
/** CRL_ENTRIES_MAX: the most revoked certificates one CRL may list. */
export const CRL_ENTRIES_MAX = 200_000;
/** CA_BYTES_MAX: the largest CA bundle read to check the CRL's signature. */
const CA_BYTES_MAX = 1024 * 1024;
/** CRL_CLOCK_SKEW_MS: how far ahead of this node's clock a CRL's thisUpdate may be (5 min, as Kerberos allows); further is refused. */
export const CRL_CLOCK_SKEW_MS = 5 * 60_000;
/** PEER_CRL_KEPT_FILE: the name of the kept copy of the CRL in use in a node's data dir (PeerCrlOptions.keptFile). */
export const PEER_CRL_KEPT_FILE = 'peer-crl-kept.der';
/** CLIENT_CRL_KEPT_FILE: the same for the client plane's CRL (serve --client-crl), checked against --client-ca. */
export const CLIENT_CRL_KEPT_FILE = 'client-crl-kept.der';
/** CRL_REFRESH_MS_DEFAULT: how often the CRL (and CA) files are looked at again (stat; read when changed). */
export const CRL_REFRESH_MS_DEFAULT = 5_000;

/** CrlInfo: what the CRL in use says. */
export interface CrlInfo {
  readonly issuer: string;
  readonly thisUpdate: Date;
  /** nextUpdate: null when the CRL names none. */
  readonly nextUpdate: Date | null;
  /** revoked: how many serials it lists. */
  readonly revoked: number;
}

/** LoadedCrl: a CRL checked against its CA: what it says and the serials it revokes (normalizeSerial'd). */
export interface LoadedCrl {
  readonly info: CrlInfo;
  /** serials: each revoked serial (normalizeSerial'd) and its revocation date. */
  readonly serials: ReadonlyMap<string, Date>;
  /** der: the CRL's bytes (DER), as kept in PeerCrlOptions.keptFile. */
  readonly der: Buffer;
}

/** CRL_ROLLBACK_SERIALS_NAMED: serials a rollback error names at most. */
const CRL_ROLLBACK_SERIALS_NAMED = 3;

/**
 * crlRollbackError: why CRL `next` (from `nextFile`) may not replace `current` (from `currentFile`), or undefined
 * when it may. Nothing is compared once the CA bundle no longer verifies `current` (`currentTrusted` false: its CA
 * left the bundle, so no certificate it revoked is taken anyway). Else: of the same issuer, `next` may not be older
 * (an earlier thisUpdate) nor leave out a serial `current` revokes; of another issuer (a CA rotation), `current` may
 * revoke nothing: one CRL is used at a time, so its revocations would be dropped while that CA's certificates are
 * still taken (review30). A new CA's CRL is taken once the old CA has left the bundle.
 */
export function crlRollbackError(current: LoadedCrl, next: LoadedCrl, currentFile: string, nextFile: string, currentTrusted: boolean): Error | undefined {
  if (!currentTrusted) return undefined;
  const take = `if that is meant (a revocation taken back), stop the node, delete ${currentFile} and start it again`;
  if (next.info.issuer !== current.info.issuer) {
    if (current.serials.size === 0) return undefined;
    return new Error(
      `${nextFile}: a CRL of another CA (${next.info.issuer}) while the CA bundle still trusts ${current.info.issuer}, whose CRL in use (${currentFile}) revokes ${current.serials.size} certificate(s): ` +
        `taking it would take those revocations back; it is taken once ${current.info.issuer} has left the CA bundle, or after the node is stopped and ${currentFile} deleted`,
    );
  }
  if (next.info.thisUpdate.getTime() < current.info.thisUpdate.getTime()) {
    return new Error(
      `${nextFile}: an older CRL (thisUpdate ${next.info.thisUpdate.toISOString()}) than the one in use (${current.info.thisUpdate.toISOString()}, ${currentFile}): a rollback is refused; ${take}`,
    );
  }
  const dropped: string[] = [];
  for (const serial of current.serials.keys()) {
    if (next.serials.has(serial)) continue;
    dropped.push(serial);
    if (dropped.length > CRL_ROLLBACK_SERIALS_NAMED) break;
  }
  if (dropped.length === 0) return undefined;
  const named = dropped.slice(0, CRL_ROLLBACK_SERIALS_NAMED).join(', ') + (dropped.length > CRL_ROLLBACK_SERIALS_NAMED ? ', ...' : '');
  return new Error(`${nextFile}: no longer revokes serial(s) ${named} that the CRL in use (${currentFile}) revokes: revocation is permanent here; ${take}`);
}

/** normalizeSerial: a certificate serial number in hex, lower case, without leading zeros (Node prints "0A1B", @peculiar/x509 "0a1b"). */
export function normalizeSerial(hex: string): string {
  const s = hex.replace(/:/g, '').toLowerCase().replace(/^0+/, '');
  return s === '' ? '0' : s;
}

const PEM_CRL = /-----BEGIN (X509 )?CRL-----([A-Za-z0-9+/=\s]+)-----END \1CRL-----/;
const PEM_CERT = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g;

/** KEY_USAGE_OID: the X.509 keyUsage extension (RFC 5280 §4.2.1.3). */
const KEY_USAGE_OID = '2.5.29.15';

/** crlSignAllowed: whether CA certificate `cert` may sign CRLs: it has no keyUsage extension, or one with cRLSign (RFC 5280 §4.2.1.3). */
export function crlSignAllowed(cert: X509.X509Certificate): boolean {
  const lib = x509();
  const usage = cert.getExtension<X509.Extension>(KEY_USAGE_OID);
  return usage === null || (new lib.KeyUsagesExtension(usage.rawData).usages & lib.KeyUsageFlags.cRLSign) !== 0;
}

/**
 * loadCrl parses `crl` (PEM "X509 CRL" or DER) and checks that one
 * certificate of the CA bundle `ca` (PEM) signed it and may sign CRLs (no
 * keyUsage extension, or one with cRLSign). Throws one Error naming
 * `crlFile` when it is too large, not a CRL, lists more than CRL_ENTRIES_MAX
 * serials, no CA certificate verifies its signature, the one that does lacks
 * cRLSign, its thisUpdate is more than CRL_CLOCK_SKEW_MS after `nowMs`, or
 * its nextUpdate is before its thisUpdate. An expired CRL is returned (see
 * crlStaleError).
 */
export async function loadCrl(crl: Buffer, ca: Buffer, crlFile: string, caFile: string, nowMs: number = Date.now()): Promise<LoadedCrl> {
  const lib = x509();
  if (crl.length > CRL_BYTES_MAX) throw new Error(`${crlFile}: ${crl.length} bytes is larger than a CRL may be here (${CRL_BYTES_MAX})`);
  if (ca.length > CA_BYTES_MAX) throw new Error(`${caFile}: ${ca.length} bytes is larger than a CA bundle may be here (${CA_BYTES_MAX})`);
  const text = crl.toString('latin1');
  let der: Buffer;
  if (text.includes('-----BEGIN')) {
    const m = PEM_CRL.exec(text);
    if (m === null) throw new Error(`${crlFile}: not a CRL (no "-----BEGIN X509 CRL-----" block; a certificate or key file given by mistake?)`);
    der = Buffer.from((m[2] ?? '').replace(/\s+/g, ''), 'base64');
  } else {
    der = crl;
  }
  let parsed: InstanceType<typeof lib.X509Crl>;
  try {
    parsed = new lib.X509Crl(der);
    // Touch the fields: parsing is partly lazy.
    void parsed.thisUpdate;
  } catch (err) {
    throw new Error(`${crlFile}: not a CRL (PEM "X509 CRL" or DER): ${(err as Error).message}`, { cause: err });
  }
  const entries = parsed.entries;
  if (entries.length > CRL_ENTRIES_MAX) throw new Error(`${crlFile}: lists ${entries.length} certificates, more than ${CRL_ENTRIES_MAX}`);
  const cas = ca.toString('latin1').match(PEM_CERT) ?? [];
  if (cas.length === 0) throw new Error(`${caFile}: no PEM certificate to check the CRL ${crlFile} against`);
  let signed = false;
  let mayNotSign = '';
  for (const pem of cas) {
    let cert: InstanceType<typeof lib.X509Certificate>;
    try {
      cert = new lib.X509Certificate(pem);
    } catch {
      continue;
    }
    if (cert.subject !== parsed.issuer) continue;
    let verified = false;
    try {
      verified = await parsed.verify({ publicKey: cert });
    } catch {
      // an algorithm the key does not do: not this CA
    }
    if (!verified) continue;
    if (!crlSignAllowed(cert)) {
      mayNotSign = cert.serialNumber;
      continue;
    }
    signed = true;
    break;
  }
  if (!signed && mayNotSign !== '') {
    throw new Error(`${crlFile}: signed by the CA certificate of ${caFile} (${parsed.issuer}, serial ${normalizeSerial(mayNotSign)}), whose keyUsage does not allow signing CRLs (no cRLSign): sign the CRL with a CA that may`);
  }
  if (!signed) throw new Error(`${crlFile}: its signature does not verify against the CA ${caFile} (issuer ${parsed.issuer}): give a CRL the cluster CA signed`);
  const thisUpdateMs = parsed.thisUpdate.getTime();
  if (thisUpdateMs > nowMs + CRL_CLOCK_SKEW_MS) {
    throw new Error(
      `${crlFile}: its thisUpdate (${parsed.thisUpdate.toISOString()}) is in the future (this node's clock: ${new Date(nowMs).toISOString()}; ${CRL_CLOCK_SKEW_MS / 60_000} min of skew allowed): check the clocks of this node and of the machine that signed it`,
    );
  }
  if (parsed.nextUpdate !== undefined && parsed.nextUpdate.getTime() < thisUpdateMs) {
    throw new Error(`${crlFile}: its nextUpdate (${parsed.nextUpdate.toISOString()}) is before its thisUpdate (${parsed.thisUpdate.toISOString()}): not a CRL to use`);
  }
  const serials = new Map<string, Date>();
  for (const e of entries) serials.set(normalizeSerial(e.serialNumber), e.revocationDate);
  return { info: { issuer: parsed.issuer, thisUpdate: parsed.thisUpdate, nextUpdate: parsed.nextUpdate ?? null, revoked: serials.size }, serials, der };
}

/** crlStaleError: an Error saying the CRL is past its nextUpdate at `nowMs`, undefined when it is not. */
export function crlStaleError(info: CrlInfo, crlFile: string, nowMs: number): Error | undefined {
  if (info.nextUpdate === null || nowMs <= info.nextUpdate.getTime()) return undefined;
  return new Error(
    `${crlFile}: the CRL is past its nextUpdate (${info.nextUpdate.toISOString()}); it is still used (every serial it lists stays revoked), but issue a fresh one (snapcoord certs revoke, or openssl ca -gencrl)`,
  );
}

/** PeerCrlOptions: the CRL and CA files, how often to read them, and what to tell the caller. */
export interface PeerCrlOptions {
  readonly crlFile: string;
  /** caFile: the cluster CA bundle (PEM) the CRL must be signed by (--peer-ca). */
  readonly caFile: string;
  /** refreshMs: how often to read the files again (default 5000, at least 10). */
  readonly refreshMs?: number;
  /**
   * keptFile: where the CRL in use is kept (serve: peer-crl-kept.der in the data dir), written (atomically) each time
   * one is taken; at open, a CRL file older than it, or un-revoking one of its serials, is not taken (see the file
   * comment). A kept CRL that no longer verifies against the CA (a new CA) is passed over.
   */
  readonly keptFile?: string;
  readonly nowMs?: () => number;
  /** onReload: a changed CRL was checked and is now in use. */
  readonly onReload?: (info: CrlInfo) => void;
  /** onError: called once per distinct bad content; the last good CRL stays in use. */
  readonly onError?: (err: Error) => void;
  /** onStale: called once per CRL in use that is past its nextUpdate (at open too). */
  readonly onStale?: (err: Error) => void;
}

/**
 * PeerCrl: the revoked serials of the CRL in `crlFile`, signed by the CA in
 * `caFile`, read again every refreshMs (an unref'd timer; close() stops it).
 * A changed file that does not load (see loadCrl) is not used: the last good
 * CRL stays, and onError is called once for that content. Open with
 * PeerCrl.open, which throws loadCrl's errors (or a missing file's).
 */
export class PeerCrl {
  private loaded: LoadedCrl;
  private crlBytes: Buffer;
  private caBytes: Buffer;
  private lastBad = '';
  /** stamp: the files' fileStamp when last read ('' : read them at the next refresh). */
  private stamp = '';
  private readCount = 0;
  private staleReported = -1;
  private running: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly nowMs: () => number;

  private constructor(
    private readonly opts: PeerCrlOptions,
    loaded: LoadedCrl,
    crl: Buffer,
    ca: Buffer,
  ) {
    this.loaded = loaded;
    this.crlBytes = crl;
    this.caBytes = ca;
    this.nowMs = opts.nowMs ?? Date.now;
  }

  /** open reads and checks the files now and starts the refresh timer. Throws one Error naming the bad file. */
  static async open(opts: PeerCrlOptions): Promise<PeerCrl> {
    const refreshMs = opts.refreshMs ?? CRL_REFRESH_MS_DEFAULT;
    if (!Number.isInteger(refreshMs) || refreshMs < 10) throw new Error(`refreshMs: ${refreshMs} is not a whole number of milliseconds >= 10`);
    const stamp = (await Promise.all([fileStamp(opts.crlFile), fileStamp(opts.caFile)])).join('|');
    const [crl, ca] = await Promise.all([readAsync(opts.crlFile, CRL_BYTES_MAX), readAsync(opts.caFile, CA_BYTES_MAX)]);
    const fromFile = await loadCrl(crl, ca, opts.crlFile, opts.caFile, (opts.nowMs ?? Date.now)());
    const kept = opts.keptFile === undefined ? null : await loadKept(opts.keptFile, ca, opts.caFile);
    // (a kept CRL that still loads is one of a CA the bundle still trusts)
    const rollback = kept === null ? undefined : crlRollbackError(kept, fromFile, opts.keptFile as string, opts.crlFile, true);
    const p = new PeerCrl(opts, rollback === undefined ? fromFile : (kept as LoadedCrl), crl, ca);
    p.stamp = stamp;
    p.readCount = 1;
    if (rollback !== undefined) p.reportBad(`rollback|${crl.length}|${ca.length}`, rollback);
    else if (kept === null || !kept.der.equals(fromFile.der)) await p.keep(fromFile);
    p.checkStale();
    p.timer = setInterval(() => void p.refresh(), refreshMs);
    p.timer.unref();
    return p;
  }

  /** reads: how many times both files were read (at open, then at each refresh that found them changed, or was forced). */
  get reads(): number {
    return this.readCount;
  }

  /** fileRefused: whether the files on disk could not be used at the last look (the last good CRL stays in use). */
  get fileRefused(): boolean {
    return this.lastBad !== '';
  }

  /** latest: what the CRL in use says. */
  get latest(): CrlInfo {
    return this.loaded.info;
  }

  /** isRevoked: whether the CRL in use lists serial `hex` (any case, leading zeros or not). */
  isRevoked(hex: string): boolean {
    return this.loaded.serials.has(normalizeSerial(hex));
  }

  /** revocationError: an Error naming the revocation when `cert`'s serial is revoked, else undefined. */
  revocationError(cert: PeerCertificate, whose: string): Error | undefined {
    const serial = typeof cert.serialNumber === 'string' ? cert.serialNumber : '';
    if (serial === '' || !this.isRevoked(serial)) return undefined;
    return new Error(`${whose} certificate (serial ${normalizeSerial(serial)}) is revoked by the CRL ${this.opts.crlFile}`);
  }

  /**
   * refresh looks at both files now (what the timer does): when neither's
   * stat (device, inode, size, mtime, ctime) changed since the last read
   * nothing is read, unless `force` (serve's SIGHUP); else both are read (each
   * at most its cap) and a changed content is checked and put in use, or
   * refused. Resolves once that is done; while one runs already, at once
   * (forced: after it, then forced itself). Never rejects.
   */
  async refresh(opts: { readonly force?: boolean } = {}): Promise<void> {
    if (this.running !== null) {
      if (opts.force !== true) return;
      await this.running;
      return this.refresh(opts);
    }
    const run = this.refreshNow(opts.force === true).finally(() => {
      this.running = null;
    });
    this.running = run;
    return run;
  }

  private async refreshNow(force: boolean): Promise<void> {
    let stamp: string;
    try {
      stamp = (await Promise.all([fileStamp(this.opts.crlFile), fileStamp(this.opts.caFile)])).join('|');
    } catch (err) {
      this.stamp = '';
      this.reportBad((err as Error).message, err as Error);
      return;
    }
    if (!force && stamp === this.stamp) {
      this.checkStale();
      return;
    }
    this.stamp = stamp;
    this.readCount++;
    let crl: Buffer;
    let ca: Buffer;
    try {
      [crl, ca] = await Promise.all([readAsync(this.opts.crlFile, CRL_BYTES_MAX), readAsync(this.opts.caFile, CA_BYTES_MAX)]);
    } catch (err) {
      this.stamp = '';
      this.reportBad((err as Error).message, err as Error);
      return;
    }
    if (crl.equals(this.crlBytes) && ca.equals(this.caBytes)) {
      this.lastBad = '';
      this.checkStale();
      return;
    }
    let loaded: LoadedCrl;
    try {
      loaded = await loadCrl(crl, ca, this.opts.crlFile, this.opts.caFile, this.nowMs());
    } catch (err) {
      this.reportBad(`${(err as Error).message}|${crl.length}|${ca.length}`, err as Error);
      return;
    }
    const trusted = await stillVerifies(this.loaded, ca, this.opts.caFile);
    const rollback = crlRollbackError(this.loaded, loaded, this.opts.keptFile ?? 'the CRL read before', this.opts.crlFile, trusted);
    if (rollback !== undefined) {
      this.reportBad(`rollback|${crl.length}|${ca.length}`, rollback);
      return;
    }
    this.loaded = loaded;
    this.crlBytes = crl;
    this.caBytes = ca;
    this.lastBad = '';
    await this.keep(loaded);
    this.opts.onReload?.(loaded.info);
    this.checkStale();
  }

  /** keep writes the CRL now in use to keptFile (if any); a failed write is reported (onError) and the CRL stays in use. */
  private async keep(crl: LoadedCrl): Promise<void> {
    const file = this.opts.keptFile;
    if (file === undefined) return;
    try {
      await writeFileAtomic(file, crl.der, 0o600);
    } catch (err) {
      this.opts.onError?.(new Error(`${file}: the CRL in use could not be kept (${(err as Error).message}): it is used, but a restart may take an older one`, { cause: err }));
    }
  }

  /** close stops the refresh timer. */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private checkStale(): void {
    const err = crlStaleError(this.loaded.info, this.opts.crlFile, this.nowMs());
    const next = this.loaded.info.nextUpdate?.getTime() ?? -1;
    if (err === undefined || this.staleReported === next) return;
    this.staleReported = next;
    this.opts.onStale?.(err);
  }

  /** reportBad: onError once per distinct bad content (`key`); fileRefused until a good one is read. */
  private reportBad(key: string, err: Error): void {
    if (key === this.lastBad) return;
    this.lastBad = key;
    this.opts.onError?.(new Error(`CRL not reloaded, the previous one stays in use: ${err.message}`, { cause: err }));
  }
}

/** stillVerifies: whether CRL `crl` still verifies against the CA bundle `ca` (its CA is still trusted). */
async function stillVerifies(crl: LoadedCrl, ca: Buffer, caFile: string): Promise<boolean> {
  try {
    await loadCrl(crl.der, ca, 'the CRL in use', caFile, Infinity);
    return true;
  } catch {
    return false;
  }
}

/**
 * loadKept: the CRL kept at `file` (PeerCrlOptions.keptFile), checked as any; null when there is none, or it no
 * longer verifies (the CA changed): then the CRL file alone counts. Throws when it cannot be read.
 */
async function loadKept(file: string, ca: Buffer, caFile: string): Promise<LoadedCrl | null> {
  let bytes: Buffer;
  try {
    bytes = await readAsync(file, CRL_BYTES_MAX);
  } catch (err) {
    if (((err as Error).cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return null;
    throw err;
  }
  try {
    // its thisUpdate was checked against the clock when it was taken: a clock set back since must not pass it over
    return await loadCrl(bytes, ca, file, caFile, Infinity);
  } catch {
    return null;
  }
}

function fsError(path: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  return new Error(e.code === 'ENOENT' ? `${path}: missing` : `${path}: cannot be read (${e.code ?? e.message})`, { cause: err });
}

/** READ_PART_BYTES: the least readAsync reads at once past what the file's stat said it held. */
const READ_PART_BYTES = 64 * 1024;

/** fileStamp: what tells a changed file at `path` (device, inode, size, mtime and ctime in ns). Throws an Error naming it. */
async function fileStamp(path: string): Promise<string> {
  try {
    const st = await stat(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  } catch (err) {
    throw fsError(path, err);
  }
}

/** readAsync: the file at `path`, refused (an Error naming it) when it holds more than `max` bytes: never more than max + 1 of them read. */
async function readAsync(path: string, max: number): Promise<Buffer> {
  let h: FileHandle;
  try {
    h = await open(path, 'r');
  } catch (err) {
    throw fsError(path, err);
  }
  try {
    const size = Number((await h.stat()).size);
    if (size > max) throw new Error(`${path}: ${size} bytes is more than ${max}`);
    // To its end, in case it grew since: at most max + 1 bytes.
    const parts: Buffer[] = [];
    let n = 0;
    for (;;) {
      const part = Buffer.alloc(Math.min(Math.max(size - n, READ_PART_BYTES), max + 1 - n));
      if (part.length === 0) break;
      const { bytesRead } = await h.read(part, 0, part.length, null);
      if (bytesRead === 0) break;
      parts.push(part.subarray(0, bytesRead));
      n += bytesRead;
    }
    if (n > max) throw new Error(`${path}: more than ${max} bytes`);
    return Buffer.concat(parts, n);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === undefined) throw err;
    throw fsError(path, err);
  } finally {
    await h.close().catch(() => undefined);
  }
}

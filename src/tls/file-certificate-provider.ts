/**
 * file-certificate-provider: certificate, key and CA files fed to grpc-js,
 * and fed again when they change on disk.
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { experimental } from '@grpc/grpc-js';
import { checkShape, checkTlsBytes, readTlsFile, type TlsBytes, type TlsFiles, type TlsFilesInfo } from './check-tls-files.js';

/** REFRESH_MS_DEFAULT: how often the files are read again by default. */
export const REFRESH_MS_DEFAULT = 5_000;

/** FileCertificateProviderOptions: the files, how often to look at them, and what to tell the caller. */
export interface FileCertificateProviderOptions extends TlsFiles {
  /** how often to read the files again (ms, default 5000, at least 10). */
  readonly refreshMs?: number;
  /** the identity certificate must be signed by the CA file (default true when both are given). */
  readonly checkChain?: boolean;
  /**
   * memberId: the identity certificate must name this member (memberIdOf), at
   * start and on every reload: a node's peer certificate replaced by another
   * member's (or one naming none) is not taken, as `serve` refuses it at start.
   */
  readonly memberId?: string;
  /**
   * servesClients: the identity certificate must be one clients take as a
   * server's (it names a member or its extended key usage names serverAuth:
   * TlsFilesInfo.servesClients), at start and on every reload: a client plane's
   * certificate replaced by a client certificate is not taken, as `serve`
   * refuses one at start (taken, every client call failed from then on).
   */
  readonly servesClients?: boolean;
  /** called after a changed set of files was checked and handed to grpc-js (not at start). */
  readonly onReload?: (info: TlsFilesInfo) => void;
  /** called once per distinct bad set of files; the last good set stays in use. */
  readonly onError?: (err: Error) => void;
  /**
   * onExpired: called once when the certificate in use expires while no
   * replacement has been taken (peers and clients refuse it from then on;
   * the files are still read every refreshMs, so writing a new pair heals it).
   */
  readonly onExpired?: (err: Error) => void;
}

/**
 * FileCertificateProvider implements grpc-js's experimental
 * CertificateProvider (identity and CA) over files, in place of grpc-js's
 * own FileWatcherCertificateProvider, which
 * - first reads the files asynchronously once the server is bound, dropping
 *   the connections that arrive before the read lands, and reports nothing
 *   when the files are bad;
 * - hands over whatever bytes it read: a half-rotated pair (new key, old
 *   certificate) or a bad file makes the server drop EVERY new connection
 *   until the next good read (server.js: "Failed to set secure context"), and
 *   a missing file does the same;
 * - keeps the process alive with an un-unref'd interval while in use.
 *
 * This one reads and checks the files synchronously when constructed
 * (checkTlsFiles: it throws one clear Error naming the bad file), so
 * credentials are ready before the server binds. While it has listeners it
 * reads them again every `refreshMs` (an unref'd timer; and, synchronously,
 * when a first listener attaches and the last read is older than that); when
 * the bytes changed it checks them the same way (parse, key matches certificate,
 * validity, chain) and hands over the new set only if it passes; otherwise it
 * keeps the last good set and calls `onError` once for that bad content. So
 * rotation is: write the new key and certificate (in any order, each
 * atomically); within `refreshMs` of the second write new connections use
 * them, open connections keep theirs.
 */
export class FileCertificateProvider implements experimental.CertificateProvider {
  private readonly files: TlsFiles;
  private readonly refreshMs: number;
  private readonly checkChain: boolean;
  private readonly memberId: string | undefined;
  private readonly servesClients: boolean;
  private readonly onReload: ((info: TlsFilesInfo) => void) | undefined;
  private readonly onError: ((err: Error) => void) | undefined;
  private readonly onExpired: ((err: Error) => void) | undefined;
  /** expiredReported: the notAfter (ms) of the certificate whose expiry was reported. */
  private expiredReported = 0;
  private current: TlsBytes;
  private lastBad: { bytes: TlsBytes; message: string } | null = null;
  private info: TlsFilesInfo;
  private timer: NodeJS.Timeout | null = null;
  private reading = false;
  /** checkedAtMs: when the files were last read, on the monotonic clock (on the wall clock a step back, NTP or a resumed VM, kept refreshIfStale from reading them for the step's length). */
  private checkedAtMs: number;
  private readonly caListeners = new Set<experimental.CaCertificateUpdateListener>();
  private readonly identityListeners = new Set<experimental.IdentityCertificateUpdateListener>();

  /** Throws checkTlsFiles' errors, or when refreshMs is not a whole number >= 10. */
  constructor(opts: FileCertificateProviderOptions) {
    checkShape(opts);
    const refreshMs = opts.refreshMs ?? REFRESH_MS_DEFAULT;
    if (!Number.isInteger(refreshMs) || refreshMs < 10) throw new Error(`refreshMs: ${refreshMs} is not a whole number of milliseconds >= 10`);
    this.files = {
      ...(opts.certFile !== undefined ? { certFile: opts.certFile } : {}),
      ...(opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}),
      ...(opts.caFile !== undefined ? { caFile: opts.caFile } : {}),
    };
    this.refreshMs = refreshMs;
    this.checkChain = opts.checkChain !== false;
    this.memberId = opts.memberId;
    this.servesClients = opts.servesClients === true;
    this.onReload = opts.onReload;
    this.onError = opts.onError;
    this.onExpired = opts.onExpired;
    const bytes: TlsBytes = {
      ...(this.files.certFile !== undefined ? { cert: readTlsFile(this.files.certFile) } : {}),
      ...(this.files.keyFile !== undefined ? { key: readTlsFile(this.files.keyFile) } : {}),
      ...(this.files.caFile !== undefined ? { ca: readTlsFile(this.files.caFile) } : {}),
    };
    this.info = this.check(bytes);
    this.current = bytes;
    this.checkedAtMs = performance.now();
  }

  /** hasCa: whether this provider watches a CA file; hasIdentity: a certificate and key. */
  get hasCa(): boolean {
    return this.files.caFile !== undefined;
  }

  get hasIdentity(): boolean {
    return this.files.certFile !== undefined;
  }

  /** latest: what the files in use say (expiry, identities, member id). */
  get latest(): TlsFilesInfo {
    return this.info;
  }

  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.refreshIfStale();
    this.caListeners.add(listener);
    const ca = this.current.ca;
    process.nextTick(listener, ca !== undefined ? { caCertificate: ca } : null);
    this.startOrStop();
  }

  removeCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
    this.startOrStop();
  }

  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.refreshIfStale();
    this.identityListeners.add(listener);
    process.nextTick(listener, this.identityUpdate());
    this.startOrStop();
  }

  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
    this.startOrStop();
  }

  /** refresh reads the files now (what the timer does); resolves once any change has been handed over. Never rejects. */
  async refresh(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      let bytes: TlsBytes;
      try {
        bytes = await this.readAll();
      } catch (err) {
        // A file missing or unreadable for a moment (say, mid-rotation by a tool that deletes first): keep the last good set.
        this.reportBad({}, err as Error);
        return;
      }
      this.apply(bytes);
    } finally {
      this.reading = false;
    }
  }

  /**
   * refreshIfStale re-reads the files synchronously when they were last read
   * more than refreshMs ago and no timer is running: a provider whose
   * listeners come and go (a short-lived channel attaches only while it
   * connects) would otherwise never see a change, its timer never firing.
   */
  private refreshIfStale(): void {
    if (this.timer !== null || performance.now() - this.checkedAtMs < this.refreshMs) return;
    let bytes: TlsBytes;
    try {
      bytes = {
        ...(this.files.certFile !== undefined ? { cert: readTlsFile(this.files.certFile) } : {}),
        ...(this.files.keyFile !== undefined ? { key: readTlsFile(this.files.keyFile) } : {}),
        ...(this.files.caFile !== undefined ? { ca: readTlsFile(this.files.caFile) } : {}),
      };
    } catch (err) {
      this.checkedAtMs = performance.now();
      this.reportBad({}, err as Error);
      return;
    }
    this.apply(bytes);
  }

  /** apply checks `bytes` if they differ from the set in use and, when they pass, hands them to the listeners. */
  private apply(bytes: TlsBytes): void {
    this.checkedAtMs = performance.now();
    const identityChanged = !same(bytes.cert, this.current.cert) || !same(bytes.key, this.current.key);
    const caChanged = !same(bytes.ca, this.current.ca);
    if (!identityChanged && !caChanged) {
      this.lastBad = null;
      this.checkExpiry();
      return;
    }
    let info: TlsFilesInfo;
    try {
      info = this.check(bytes);
    } catch (err) {
      this.reportBad(bytes, err as Error);
      return;
    }
    this.current = bytes;
    this.info = info;
    this.lastBad = null;
    if (identityChanged) for (const l of this.identityListeners) l(this.identityUpdate());
    if (caChanged && bytes.ca !== undefined) for (const l of this.caListeners) l({ caCertificate: bytes.ca });
    this.onReload?.(info);
  }

  /** checkExpiry calls onExpired once for a certificate in use that has expired (the set unchanged since). */
  private checkExpiry(): void {
    if (this.current.cert === undefined) return;
    const notAfterMs = this.info.notAfter.getTime();
    if (Date.now() <= notAfterMs || this.expiredReported === notAfterMs) return;
    this.expiredReported = notAfterMs;
    this.onExpired?.(
      new Error(`${this.files.certFile ?? 'the certificate'}: the certificate in use expired on ${this.info.notAfter.toISOString()}; connections with it fail until a new certificate and key are written`),
    );
  }

  /** check: checkTlsBytes, and the certificate names memberId when one is expected, and serves clients when asked to. */
  private check(bytes: TlsBytes): TlsFilesInfo {
    const info = checkTlsBytes(bytes, this.files, { checkChain: this.checkChain });
    const want = this.memberId;
    if (want !== undefined && bytes.cert !== undefined && info.memberId !== want) {
      throw new Error(`${this.files.certFile ?? 'the certificate'}: names member ${info.memberId ?? '(none)'}, not ${want}`);
    }
    if (this.servesClients && bytes.cert !== undefined && !info.servesClients) {
      throw new Error(`${this.files.certFile ?? 'the certificate'}: names no member and its extended key usage does not name serverAuth: clients would refuse it as a client certificate`);
    }
    return info;
  }

  private identityUpdate(): experimental.IdentityCertificateUpdate | null {
    const { cert, key } = this.current;
    return cert !== undefined && key !== undefined ? { certificate: cert, privateKey: key } : null;
  }

  private async readAll(): Promise<TlsBytes> {
    const read = async (path: string | undefined): Promise<Buffer | undefined> => {
      if (path === undefined) return undefined;
      try {
        return await readFile(path);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new Error(e.code === 'ENOENT' ? `${path}: missing` : `${path}: cannot be read (${e.code ?? e.message})`, { cause: err });
      }
    };
    const [cert, key, ca] = await Promise.all([read(this.files.certFile), read(this.files.keyFile), read(this.files.caFile)]);
    return { ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}), ...(ca !== undefined ? { ca } : {}) };
  }

  private reportBad(bytes: TlsBytes, err: Error): void {
    const seen = this.lastBad;
    if (seen !== null && seen.message === err.message && same(seen.bytes.cert, bytes.cert) && same(seen.bytes.key, bytes.key) && same(seen.bytes.ca, bytes.ca)) return;
    this.lastBad = { bytes, message: err.message };
    this.onError?.(new Error(`TLS files not reloaded, the previous ones stay in use: ${err.message}`, { cause: err }));
  }

  private startOrStop(): void {
    const wanted = this.caListeners.size + this.identityListeners.size > 0;
    if (wanted && this.timer === null) {
      this.timer = setInterval(() => void this.refresh(), this.refreshMs);
      this.timer.unref();
    } else if (!wanted && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}

function same(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.equals(b);
}

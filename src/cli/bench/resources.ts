/**
 * Resource sampling during a load run: a process's resident memory (RSS) and
 * CPU time, read every second from one of three kinds of source:
 * - metricsSource: a node's Prometheus /metrics (process_resident_memory_bytes
 *   and process_cpu_seconds_total, as prom-client serves them on the gateway's
 *   HTTP port; sent the API key as `Authorization: Bearer` unless the node
 *   runs --metrics-open);
 * - procSource: local processes by pid, from /proc (bench:write's nodes);
 * - selfSource: this process (bench:snapshot's sender and receiver children).
 * ResourceSampler turns the readings into a series and a summary: RSS at the
 * start, peak and end, and CPU seconds used over the run and as cores
 * (CPU seconds / wall seconds; 1.00 = one core busy throughout).
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { performance } from 'node:perf_hooks';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { serverPurposeError } from '../../tls/credentials.js';

/** ResourceReading: one reading of a source. */
export interface ResourceReading {
  readonly rssBytes: number;
  /** cpuSeconds: user + system CPU seconds used since the process started. */
  readonly cpuSeconds: number;
}

/** ResourceSource: something to read (throws when it cannot; the sampler counts that as a failed sample). */
export interface ResourceSource {
  readonly name: string;
  read(): Promise<ResourceReading>;
}

/** ResourcePoint: one sample, with the CPU used since the previous one as cores. */
export interface ResourcePoint {
  readonly tSec: number;
  readonly rssBytes: number;
  readonly cpuCores: number | null;
}

/** ResourceSummary: what one source showed over the run (null figures when no sample succeeded). */
export interface ResourceSummary {
  readonly source: string;
  readonly samples: number;
  readonly failedSamples: number;
  /** lastError: why the last failed sample failed ('' when none failed). */
  readonly lastError: string;
  readonly rssStartBytes: number | null;
  readonly rssPeakBytes: number | null;
  readonly rssEndBytes: number | null;
  readonly cpuSeconds: number | null;
  readonly cpuCores: number | null;
  readonly series: ResourcePoint[];
}

/** METRICS_TIMEOUT_MS: how long one /metrics read may take. */
export const METRICS_TIMEOUT_MS = 2_000;
/** METRICS_BYTES_MAX: the most of a /metrics answer read. */
export const METRICS_BYTES_MAX = 4 << 20;

/** parseProcessMetrics reads RSS and CPU seconds from Prometheus text; throws when either is missing. */
export function parseProcessMetrics(text: string): ResourceReading {
  const value = (name: string): number | undefined => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+([0-9.eE+-]+)`, 'm').exec(text);
    return m === null ? undefined : Number(m[1]);
  };
  const rssBytes = value('process_resident_memory_bytes');
  let cpuSeconds = value('process_cpu_seconds_total');
  if (cpuSeconds === undefined) {
    const u = value('process_cpu_user_seconds_total');
    const s = value('process_cpu_system_seconds_total');
    if (u !== undefined && s !== undefined) cpuSeconds = u + s;
  }
  if (rssBytes === undefined || cpuSeconds === undefined || !Number.isFinite(rssBytes) || !Number.isFinite(cpuSeconds)) {
    throw new Error('no process_resident_memory_bytes / process_cpu_seconds_total in the answer');
  }
  return { rssBytes, cpuSeconds };
}

/** MetricsSourceOptions: the key sent as a Bearer token ('' none) and, for https URLs, the CA to trust (PEM). */
export interface MetricsSourceOptions {
  readonly apiKey?: string;
  readonly ca?: string | Buffer;
}

/**
 * metricsSource reads a node's /metrics at `url` (http or https). Errors:
 * an answer other than 200 (401: give the API key, or run the node with
 * --metrics-open), a timeout, or text without the process metrics.
 */
export function metricsSource(url: string, opts: MetricsSourceOptions = {}): ResourceSource {
  const u = new URL(url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`metrics: "${url}" is not an http(s) URL`);
  const headers: Record<string, string> = opts.apiKey !== undefined && opts.apiKey !== '' ? { authorization: `Bearer ${opts.apiKey}` } : {};
  const get = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(
        u,
        {
          method: 'GET',
          headers,
          timeout: METRICS_TIMEOUT_MS,
          // The key goes with the request: over TLS the server must be a node (a member's or a server certificate),
          // not a client certificate of the same CA (as the gRPC dials ask: serverPurposeError).
          ...(u.protocol === 'https:' ? { checkServerIdentity: (host: string, cert: PeerCertificate) => checkServerIdentity(host, cert) ?? serverPurposeError(cert) } : {}),
          ...(u.protocol === 'https:' && opts.ca !== undefined ? { ca: opts.ca } : {}),
        },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            const hint = res.statusCode === 401 || res.statusCode === 403 ? ' (give the API key, or run the node with --metrics-open)' : '';
            reject(new Error(`GET ${url}: HTTP ${res.statusCode ?? '?'}${hint}`));
            return;
          }
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            text += d;
            if (text.length > METRICS_BYTES_MAX) req.destroy(new Error(`GET ${url}: answer over ${METRICS_BYTES_MAX} bytes`));
          });
          res.on('end', () => resolve(text));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${METRICS_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end();
    });
  return { name: url, read: async () => parseProcessMetrics(await get()) };
}

/** CLK_TCK: the unit of utime/stime in /proc/<pid>/stat (100 on Linux). */
const CLK_TCK = 100;

/** readProc: RSS (VmRSS of /proc/<pid>/status) and utime + stime (all threads) of a live process. Throws once it is gone. */
export function readProc(pid: number): ResourceReading {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command (which may hold spaces) start past the last ')': state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  const rssKb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { rssBytes: Number(rssKb ?? 0) * 1024, cpuSeconds };
}

/**
 * procSource reads the processes `pids()` names, summed (a 3-node cluster as
 * one source); a process that is gone counts as 0 and does not fail the sample.
 */
export function procSource(name: string, pids: () => readonly number[]): ResourceSource {
  return {
    name,
    read: () => {
      let rssBytes = 0;
      let cpuSeconds = 0;
      for (const pid of pids()) {
        try {
          const r = readProc(pid);
          rssBytes += r.rssBytes;
          cpuSeconds += r.cpuSeconds;
        } catch {
          // gone
        }
      }
      return Promise.resolve({ rssBytes, cpuSeconds });
    },
  };
}

/** readSelf: this process's RSS (process.memoryUsage().rss) and user + system CPU seconds (process.cpuUsage()). */
export function readSelf(): ResourceReading {
  const cpu = process.cpuUsage();
  return { rssBytes: process.memoryUsage().rss, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
}

/** selfSource reads this process (readSelf). */
export function selfSource(name = 'self'): ResourceSource {
  return { name, read: () => Promise.resolve(readSelf()) };
}

interface Track {
  readonly source: ResourceSource;
  readonly series: ResourcePoint[];
  first?: ResourceReading & { tSec: number };
  last?: ResourceReading & { tSec: number };
  peakRss: number;
  failed: number;
  lastError: string;
  busy: boolean;
}

/**
 * ResourceSampler samples every source at start(), every `everyMs` (default
 * 1 s; a source still answering the previous sample is skipped), and at
 * stop(). Its timer does not keep the process alive.
 */
export class ResourceSampler {
  readonly #tracks: Track[];
  readonly #everyMs: number;
  readonly #now: () => number;
  #startMs = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(sources: readonly ResourceSource[], everyMs = 1_000, now: () => number = () => performance.now()) {
    this.#tracks = sources.map((source) => ({ source, series: [], peakRss: 0, failed: 0, lastError: '', busy: false }));
    this.#everyMs = everyMs;
    this.#now = now;
  }

  /** start takes the first sample of every source (awaited) and starts the timer. */
  async start(): Promise<void> {
    this.#startMs = this.#now();
    await this.sample();
    this.#timer = setInterval(() => void this.sample(), this.#everyMs);
    this.#timer.unref();
  }

  /** sample reads every source not busy with an earlier read. */
  async sample(): Promise<void> {
    await Promise.all(
      this.#tracks.map(async (t) => {
        if (t.busy) return;
        t.busy = true;
        try {
          const r = await t.source.read();
          const tSec = (this.#now() - this.#startMs) / 1000;
          const prev = t.last;
          const cpuCores = prev !== undefined && tSec > prev.tSec ? Math.max(0, r.cpuSeconds - prev.cpuSeconds) / (tSec - prev.tSec) : null;
          t.series.push({ tSec, rssBytes: r.rssBytes, cpuCores });
          t.first ??= { ...r, tSec };
          t.last = { ...r, tSec };
          t.peakRss = Math.max(t.peakRss, r.rssBytes);
        } catch (err) {
          t.failed++;
          t.lastError = (err as Error).message;
        } finally {
          t.busy = false;
        }
      }),
    );
  }

  /** stop ends the timer and takes a last sample. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.sample();
  }

  /** peakRssBytes: the highest RSS any sample of source `i` showed (0 before one succeeded). */
  peakRssBytes(i = 0): number {
    return this.#tracks[i]?.peakRss ?? 0;
  }

  summaries(): ResourceSummary[] {
    return this.#tracks.map((t) => {
      const cpuSeconds = t.first !== undefined && t.last !== undefined ? Math.max(0, t.last.cpuSeconds - t.first.cpuSeconds) : null;
      const span = t.first !== undefined && t.last !== undefined ? t.last.tSec - t.first.tSec : 0;
      return {
        source: t.source.name,
        samples: t.series.length,
        failedSamples: t.failed,
        lastError: t.lastError,
        rssStartBytes: t.first?.rssBytes ?? null,
        rssPeakBytes: t.first !== undefined ? t.peakRss : null,
        rssEndBytes: t.last?.rssBytes ?? null,
        cpuSeconds,
        cpuCores: cpuSeconds !== null && span > 0 ? cpuSeconds / span : null,
        series: [...t.series],
      };
    });
  }
}

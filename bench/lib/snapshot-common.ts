/**
 * Shared by bench/snapshot.ts and its children (snapshot-sender.ts,
 * snapshot-receiver.ts): the child protocol (one JSON line per report on
 * stdout, prefixed REPORT_PREFIX), the RSS sampler, the raw byte-stream gRPC
 * service used as the ceiling, sizes and formatting.
 */
import type * as grpc from '@grpc/grpc-js';
import { readSelf } from '../../src/cli/bench/resources.js';

/** REPORT_PREFIX starts every machine-readable line a child prints. */
export const REPORT_PREFIX = '@@bench ';

export function report(obj: Record<string, unknown>): void {
  process.stdout.write(`${REPORT_PREFIX}${JSON.stringify(obj)}\n`);
}

/** parseReports returns the JSON objects of the report lines in `text`. */
export function parseReports(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith(REPORT_PREFIX)) out.push(JSON.parse(line.slice(REPORT_PREFIX.length)) as Record<string, unknown>);
  }
  return out;
}

/** RssSampler samples this process's RSS (readSelf, as `snapcoord bench` reads it) every `everyMs` and keeps the max. */
export class RssSampler {
  peak = readSelf().rssBytes;
  readonly baseline = this.peak;
  private readonly timer: NodeJS.Timeout;
  constructor(everyMs = 100) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }
  sample(): number {
    const rss = readSelf().rssBytes;
    if (rss > this.peak) this.peak = rss;
    return rss;
  }
  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

/**
 * exitWithParent ends a child whose parent is gone (the parent was SIGKILLed
 * and could not clean up): checked every second, unref'd.
 */
export function exitWithParent(): void {
  const parent = process.ppid;
  const t = setInterval(() => {
    if (process.ppid !== parent) process.exit(3);
  }, 1_000);
  t.unref();
}

/** args parses `--name value` pairs (and bare `--flag`) of process.argv. */
export function args(): Map<string, string> {
  const m = new Map<string, string>();
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const k = a[i] ?? '';
    if (!k.startsWith('--')) continue;
    const v = a[i + 1];
    if (v === undefined || v.startsWith('--')) m.set(k.slice(2), 'true');
    else {
      m.set(k.slice(2), v);
      i++;
    }
  }
  return m;
}

export function need(m: Map<string, string>, name: string): string {
  const v = m.get(name);
  if (v === undefined) throw new Error(`missing --${name}`);
  return v;
}

/** parseBytes reads "1GiB", "256MiB", "4 KiB", "1.5GB", "1048576". */
export function parseBytes(s: string): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)?\s*$/i.exec(s);
  if (m === null) throw new Error(`cannot read ${JSON.stringify(s)} as a size (e.g. 256MiB, 1GiB)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase().replace(/b$/, '');
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4 }[unit.replace('i', '')];
  if (pow === undefined) throw new Error(`unknown unit in ${JSON.stringify(s)}`);
  const base = unit.endsWith('i') || unit === '' ? 1024 : 1000;
  const v = Math.round(n * base ** pow);
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`size ${JSON.stringify(s)} is out of range`);
  return v;
}

/** mbps: decimal MB/s (as TOOLCHAIN.md reports them). */
export function mbps(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

export function fmtMiB(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
}

export function fmtSize(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/**
 * RAW_STREAM: a server-streaming method whose messages are raw bytes, no
 * protobuf. The request is JSON {chunkBytes}; the responses are the archive's
 * bytes, one message per chunk. The receiver discards them.
 */
const identity = (b: Buffer): Buffer => b;
export const RAW_STREAM_PATH = '/bench.RawStream/Pull';
export const RAW_STREAM_SERVICE: grpc.ServiceDefinition = {
  pull: {
    path: RAW_STREAM_PATH,
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
export const rawIdentity = identity;

/** writable resolves once `stream` drains or ends (as raft-service.ts waits). */
export function writable(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      for (const e of ['drain', 'close', 'finish', 'cancelled']) stream.off(e, done);
      resolve();
    };
    for (const e of ['drain', 'close', 'finish', 'cancelled']) stream.on(e, done);
  });
}

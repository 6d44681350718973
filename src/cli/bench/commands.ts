/**
 * `snapcoord bench snapshot|write`: load tests against any running cluster,
 * through the client API with the CLI's TLS and key (client-options.ts).
 *
 * Both print a live progress line on a TTY (stderr), then a table (stdout),
 * or with --json one JSON document; --report FILE.html writes a
 * self-contained HTML page with charts. Ctrl-C stops the run cleanly and
 * still prints what was measured (exit code 130). Exit code 1 when nothing
 * succeeded and something failed (a broken setup, not a slow cluster); 2 for
 * a bad option. Every count has a cap (run.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CliError, EXIT_CONFIG } from '../cli-error.js';
import { writeFileAtomic } from '../../tls/files.js';
import { CACERT_ENV, LOCAL_CA_FILE, cliDial, clientOptions, deadlineOf, endpointOf, jsonOut, plaintextKeyRefusal, positiveInt, type ClientOpts } from '../client-options.js';
import { EXIT_INTERRUPTED } from '../snapshot-commands.js';
import { htmlReport } from './html-report.js';
import { WRITE_OPS, type WriteOp } from './kv-op.js';
import { LiveLine } from './live.js';
import { metricsSource, type ResourceSource } from './resources.js';
import {
  CLIENTS_MAX,
  CONNS_MAX,
  COUNT_MAX,
  DEFAULT_IDLE_TIMEOUT_MS,
  KEYS_MAX,
  SECONDS_MAX,
  VALUE_BYTES_MAX,
  runSnapshotBench,
  runWriteBench,
  type BenchDocument,
} from './run.js';
import { RESUME_CUTS_MAX, STREAMS_MAX } from './snapshot-load.js';
import { textReport } from './text-report.js';

export interface CommonOpts extends ClientOpts {
  seconds?: string;
  count?: string;
  metrics?: string[];
  json?: boolean;
  report?: string;
  progress?: boolean;
  stale?: boolean;
  idleTimeoutMs?: string;
}

/** secondsOf: --seconds as a number in (0, SECONDS_MAX] (decimals allowed); exit 2 otherwise. */
export function secondsOf(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const v = /^\d{1,6}(\.\d{1,3})?$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(v > 0) || v > SECONDS_MAX) throw new CliError(`seconds: "${text}" is not a number of seconds (0..${SECONDS_MAX})`, EXIT_CONFIG);
  return v;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/**
 * metricsSources: one source per --metrics URL, with the CLI's key (`apiKey`) and (https) CA.
 * Errors: CliError exit 2 for a bad URL, or an http:// URL on another machine when a key would
 * go with it (unless --plaintext), as for the gRPC endpoint (dialOf).
 */
export function metricsSources(opts: CommonOpts, apiKey = cliDial().apiKey ?? ''): ResourceSource[] {
  const caPath = opts.cacert ?? process.env[CACERT_ENV] ?? (existsSync(resolve(LOCAL_CA_FILE)) ? resolve(LOCAL_CA_FILE) : '');
  return (opts.metrics ?? []).map((url) => {
    let source: ResourceSource;
    try {
      source = metricsSource(url, { apiKey, ...(url.startsWith('https:') && caPath !== '' ? { ca: readFileSync(caPath) } : {}) });
    } catch (err) {
      throw new CliError(`metrics: ${(err as Error).message}`, EXIT_CONFIG);
    }
    const u = new URL(url);
    if (u.protocol === 'http:') {
      const refusal = plaintextKeyRefusal(`${u.origin}${u.pathname}`, u.hostname, apiKey, opts.plaintext === true, "use the gateway's https:// URL");
      if (refusal !== null) throw new CliError(`metrics: ${refusal.message}`, EXIT_CONFIG);
    }
    return source;
  });
}

/** interruptible: an AbortSignal that the first Ctrl-C aborts (a second one ends the process as usual). */
function interruptible(what: string, live: LiveLine, quiet: boolean): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  process.once('SIGINT', onSigint);
  // Without a TTY there is no live line: say once that the run started and how to stop it.
  if (!live.enabled && !quiet) process.stderr.write(`snapcoord bench ${what}: running (Ctrl-C stops it and prints what was measured)\n`);
  return { signal: ac.signal, dispose: () => process.off('SIGINT', onSigint) };
}

/**
 * writeReport writes `html` to `file` (0644) whole or not at all: through a
 * temp file of its own beside it (a random name, created exclusively: a link
 * planted in a shared directory is never followed), renamed into place.
 * Errors: CliError naming the file.
 */
export async function writeReport(file: string, html: string): Promise<void> {
  try {
    await writeFileAtomic(resolve(file), html, 0o644);
  } catch (err) {
    throw new CliError(`cannot write the report ${file}: ${(err as Error).message}`);
  }
}

/** finish prints the document (table or JSON), writes the report, and sets the exit code. */
async function finish(d: BenchDocument, opts: CommonOpts): Promise<void> {
  if (opts.report !== undefined) await writeReport(opts.report, htmlReport(d));
  if (opts.json === true) jsonOut(d);
  else process.stdout.write(textReport(d));
  if (opts.report !== undefined && opts.json !== true) process.stdout.write(`report: ${resolve(opts.report)}\n`);
  const [ok, failed] =
    d.kind === 'snapshot'
      ? [d.snapshots.downloads.completed, d.snapshots.downloads.failed]
      : [d.phases.reduce((s, p) => s + p.writes.ops, 0), d.phases.reduce((s, p) => s + p.writes.errors, 0)];
  if (d.interrupted) process.exitCode = EXIT_INTERRUPTED;
  else if (ok === 0 && failed > 0) {
    const codes = d.kind === 'snapshot' ? d.snapshots.failures.join('; ') : JSON.stringify(d.phases.map((p) => p.writes.errorsByCode));
    throw new CliError(`every operation failed: ${codes}`);
  }
}

function common(cmd: Command): Command {
  return clientOptions(cmd, 'deadline of each KV call of bench write (default 10000); downloads use --idle-timeout-ms')
    .option('--seconds <s>', `run this long (at most ${SECONDS_MAX})`)
    .option('--count <n>', `stop after this many operations (at most ${COUNT_MAX})`)
    .option('--metrics <url>', "sample the serving node's RSS and CPU from its /metrics (the gateway's HTTP port; repeatable)", collect)
    .option('--stale', 'let the endpoint node answer downloads from its own state, without the leader')
    .option('--idle-timeout-ms <ms>', `a download with no message for this long fails (default ${DEFAULT_IDLE_TIMEOUT_MS})`)
    .option('--json', 'print one JSON document (figures, histogram buckets, per-second series)')
    .option('--report <file.html>', 'write a self-contained HTML page with charts')
    .option('--no-progress', 'no live progress line');
}

function limitsOf(opts: CommonOpts): { seconds?: number; count?: number } {
  const seconds = secondsOf(opts.seconds);
  const count = opts.count === undefined ? undefined : positiveInt('count', opts.count, 1, COUNT_MAX);
  return { ...(seconds !== undefined ? { seconds } : {}), ...(count !== undefined ? { count } : {}) };
}

/** addBenchCommands adds `bench snapshot` and `bench write` to `program`. */
export function addBenchCommands(program: Command): void {
  const bench = program.command('bench').description('load-test a running cluster: snapshot downloads, writes (and writes during downloads)');

  common(
    bench
      .command('snapshot')
      .description('C concurrent snapshot downloads (GetSnapshot, as `snapshot save`), each verified against its digest; MB/s, time to first byte, download-time percentiles, errors by code')
      .option('--streams <c>', `concurrent downloads (1..${STREAMS_MAX})`, '1')
      .option('--resume-cuts <k>', `cut each download K times at random points and resume it (0..${RESUME_CUTS_MAX})`, '0'),
  ).action(async (opts: CommonOpts & { streams: string; resumeCuts: string }) => {
    const endpoint = endpointOf(opts);
    const streams = positiveInt('streams', opts.streams, 1, STREAMS_MAX);
    const resumeCuts = positiveInt('resume-cuts', opts.resumeCuts, 0, RESUME_CUTS_MAX);
    const idleTimeoutMs = opts.idleTimeoutMs === undefined ? DEFAULT_IDLE_TIMEOUT_MS : positiveInt('idle-timeout-ms', opts.idleTimeoutMs, 0);
    const metrics = metricsSources(opts);
    const live = new LiveLine(opts.progress !== false);
    const stop = interruptible('snapshot', live, opts.progress === false);
    try {
      const d = await runSnapshotBench({ endpoint, dial: cliDial(), streams, resumeCuts, idleTimeoutMs, stale: opts.stale === true, metrics, live, signal: stop.signal, ...limitsOf(opts) });
      await finish(d, opts);
    } finally {
      stop.dispose();
    }
  });

  common(
    bench
      .command('write')
      .description('KV load like etcd\'s benchmark tool: throughput, HDR latency percentiles, errors by code; --during-snapshots C measures the writes alone, then while C snapshot downloads run')
      .option('--clients <n>', `concurrent clients, each one call at a time (1..${CLIENTS_MAX})`, '16')
      .option('--conns <n>', `gRPC connections the clients share (1..${CONNS_MAX})`, '4')
      .option('--value-bytes <n>', `value size of each put (1..${VALUE_BYTES_MAX})`, '256')
      .option('--op <op>', `${WRITE_OPS.join(' | ')} (mixed: half puts, half gets; cas: compare-and-swap Txns on contended keys, counted as cas-swapped / cas-failed)`, 'put')
      .option('--keys <k>', `key space: keys bench/0 .. bench/K-1 (1..${KEYS_MAX}); get and mixed write them first (at most 100,000)`, '1000')
      .option('--serializable', 'gets answered by the endpoint node from its own state (no leader round trip)')
      .option('--during-snapshots <c>', `two phases: writes alone, then writes while C snapshot downloads run (0..${STREAMS_MAX})`, '0'),
  ).action(
    async (
      opts: CommonOpts & { clients: string; conns: string; valueBytes: string; op: string; keys: string; serializable?: boolean; duringSnapshots: string },
    ) => {
      const endpoint = endpointOf(opts);
      if (!(WRITE_OPS as readonly string[]).includes(opts.op)) throw new CliError(`op: "${opts.op}" is not one of ${WRITE_OPS.join(', ')}`, EXIT_CONFIG);
      const clients = positiveInt('clients', opts.clients, 1, CLIENTS_MAX);
      const conns = positiveInt('conns', opts.conns, 1, CONNS_MAX);
      const valueBytes = positiveInt('value-bytes', opts.valueBytes, 1, VALUE_BYTES_MAX);
      const keys = positiveInt('keys', opts.keys, 1, KEYS_MAX);
      const duringSnapshots = positiveInt('during-snapshots', opts.duringSnapshots, 0, STREAMS_MAX);
      const idleTimeoutMs = opts.idleTimeoutMs === undefined ? DEFAULT_IDLE_TIMEOUT_MS : positiveInt('idle-timeout-ms', opts.idleTimeoutMs, 0);
      const metrics = metricsSources(opts);
      const live = new LiveLine(opts.progress !== false);
      const stop = interruptible('write', live, opts.progress === false);
      try {
        const d = await runWriteBench({
          endpoint,
          dial: cliDial(),
          clients,
          conns,
          op: opts.op as WriteOp,
          valueBytes,
          keys,
          serializable: opts.serializable === true,
          deadlineMs: deadlineOf(opts),
          duringSnapshots,
          idleTimeoutMs,
          stale: opts.stale === true,
          metrics,
          live,
          signal: stop.signal,
          ...limitsOf(opts),
        });
        await finish(d, opts);
      } finally {
        stop.dispose();
      }
    },
  );
}

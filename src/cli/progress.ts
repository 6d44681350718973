/**
 * Progress: transfer progress on stderr. On a TTY it is ONE line redrawn in
 * place (at most every 100 ms): bytes so far, of the total when known,
 * MB/s and the ETA. Elsewhere (a pipe, a log file) it prints a plain line
 * every 5 s, so a quick transfer prints none. Never writes to stdout, which
 * stays for the result (and --json).
 */
import { formatBytes } from './client-options.js';

/** ProgressSink: where progress goes (process.stderr in the CLI). */
export interface ProgressSink {
  readonly isTTY?: boolean;
  write(text: string): unknown;
}

export interface ProgressOptions {
  /** label: what is moving, e.g. "downloading". */
  readonly label: string;
  /** totalBytes: the expected total, for the percentage and ETA (undefined or 0 when unknown). */
  readonly totalBytes?: number;
  readonly sink?: ProgressSink;
  /** enabled: false prints nothing at all. */
  readonly enabled?: boolean;
  /** ttyIntervalMs / plainIntervalMs: redraw and line intervals (default 100 ms and 5 s). */
  readonly ttyIntervalMs?: number;
  readonly plainIntervalMs?: number;
  readonly now?: () => number;
}

/** formatDuration: 75 -> "1m15s". */
export function formatDuration(secs: number): string {
  if (!Number.isFinite(secs) || secs < 0) return '?';
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export class Progress {
  private readonly label: string;
  private readonly total: number;
  private readonly sink: ProgressSink;
  private readonly enabled: boolean;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly startedMs: number;
  private lastDrawMs: number;
  private bytes = 0;
  private drawn = false;

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.total = opts.totalBytes ?? 0;
    this.sink = opts.sink ?? process.stderr;
    this.enabled = opts.enabled ?? true;
    this.tty = this.sink.isTTY === true;
    this.intervalMs = this.tty ? (opts.ttyIntervalMs ?? 100) : (opts.plainIntervalMs ?? 5_000);
    this.now = opts.now ?? Date.now;
    this.startedMs = this.now();
    this.lastDrawMs = this.startedMs;
  }

  /** line: the current progress as text, e.g. "downloading 12.0 MiB of 48.0 MiB (25%), 6.0 MB/s, ETA 6s". */
  line(): string {
    const elapsedSec = Math.max((this.now() - this.startedMs) / 1000, 1e-3);
    const rate = this.bytes / elapsedSec;
    const parts = [`${this.label} ${formatBytes(this.bytes)}`];
    if (this.total > 0) parts[0] += ` of ${formatBytes(this.total)} (${Math.min(100, Math.floor((this.bytes / this.total) * 100))}%)`;
    parts.push(`${(rate / 1e6).toFixed(1)} MB/s`);
    if (this.total > 0 && rate > 0) parts.push(`ETA ${formatDuration(Math.max(0, this.total - this.bytes) / rate)}`);
    return parts.join(', ');
  }

  /** update records the bytes moved so far and redraws when it is time. */
  update(bytes: number): void {
    this.bytes = bytes;
    if (!this.enabled) return;
    const t = this.now();
    if (t - this.lastDrawMs < this.intervalMs) return;
    this.lastDrawMs = t;
    this.draw();
  }

  private draw(): void {
    if (this.tty) this.sink.write(`\r\x1b[K${this.line()}`);
    else this.sink.write(`${this.line()}\n`);
    this.drawn = true;
  }

  /** finish shows the final figures on a TTY (ending the line) and stops. */
  finish(): void {
    if (!this.enabled) return;
    if (this.tty) {
      this.draw();
      this.sink.write('\n');
    } else if (this.drawn) {
      this.draw();
    }
  }

  /** clear wipes the TTY line (before an error message). */
  clear(): void {
    if (this.enabled && this.tty && this.drawn) this.sink.write('\r\x1b[K');
  }
}

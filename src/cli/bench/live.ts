/**
 * LiveLine: one progress line on stderr, redrawn in place (at most every
 * `everyMs`, default 250 ms) when stderr is a TTY; prints nothing elsewhere
 * (a pipe or log keeps only the final table). stdout stays for the result.
 */
import type { ProgressSink } from '../progress.js';

export class LiveLine {
  readonly #sink: ProgressSink;
  readonly #enabled: boolean;
  #drawn = false;

  constructor(enabled: boolean, sink: ProgressSink = process.stderr) {
    this.#sink = sink;
    this.#enabled = enabled && sink.isTTY === true;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  draw(text: string): void {
    if (!this.#enabled) return;
    this.#sink.write(`\r\x1b[K${text}`);
    this.#drawn = true;
  }

  /** clear wipes the line (before the final table or an error). */
  clear(): void {
    if (this.#enabled && this.#drawn) this.#sink.write('\r\x1b[K');
    this.#drawn = false;
  }
}

/** fmtMs: 0.4213 -> "0.421 ms", 12.34 -> "12.3 ms", 1234 -> "1.23 s"; "-" when not a number. */
export function fmtMs(ms: number | null): string {
  if (ms === null || !Number.isFinite(ms)) return '-';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(ms >= 1 ? 2 : 3)} ms`;
}

/** fmtElapsed: "12.0s / 30s" (or "12.0s, 40/100" with a count). */
export function fmtElapsed(elapsedSec: number, totalSec: number | undefined, done?: number, count?: number): string {
  const parts = [`${elapsedSec.toFixed(1)}s${totalSec !== undefined ? ` / ${totalSec}s` : ''}`];
  if (count !== undefined) parts.push(`${done ?? 0}/${count}`);
  return parts.join(', ');
}

/** logLines: a pino logger whose every line (its JSON text) lands in `lines`, for tests that read what was logged. */
import { Writable } from 'node:stream';
import { pino, type Level, type Logger } from 'pino';

export function logLines(level: Level): { readonly lines: string[]; readonly logger: Logger } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { lines, logger: pino({ level }, sink) };
}

/** Logger is the part of pino the node and the jobs beside it use (debug, info, warn, error with an object first). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** silentLogger drops everything (the default when no logger is given; tests and benches). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

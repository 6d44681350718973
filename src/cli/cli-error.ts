/**
 * CliError: a failure the CLI reports as ONE line on stderr
 * ("snapcoord: <message>") before exiting with `exitCode`:
 * 1 for a failed operation, 2 for bad configuration or a data dir that
 * refuses to start.
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly exitCode: number;

  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** EXIT_CONFIG: the exit code of a configuration or data dir error. */
export const EXIT_CONFIG = 2;

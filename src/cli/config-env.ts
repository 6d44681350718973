/**
 * The names shared by every way a setting reaches the CLI without loading the
 * node: the log levels and the environment twin of a flag. Kept apart from
 * config.ts (serve's option table, which loads the node's defaults) so a
 * client command such as `snapshot save` starts without the node's modules.
 */

/** LOG_LEVELS: the levels --log-level accepts. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** envName: the environment twin of a flag ("data-dir" -> "SNAPCOORD_DATA_DIR"). */
export function envName(flag: string): string {
  return `SNAPCOORD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

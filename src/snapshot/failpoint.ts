/**
 * Failpoints for crash tests: when the environment variable
 * SNAPCOORD_FAILPOINT names a failpoint, reaching it kills the process with
 * SIGKILL (no cleanup, no flush: what a power cut or an OOM kill leaves).
 */

export const FAILPOINT_ENV = 'SNAPCOORD_FAILPOINT';

/** FailpointName: the steps of SnapshotStore.create at which a crash can be injected. */
export type FailpointName =
  | 'snapshot-mid-write'
  | 'snapshot-before-fsync'
  | 'snapshot-before-rename'
  | 'snapshot-after-rename';

export const FAILPOINT_NAMES: readonly FailpointName[] = [
  'snapshot-mid-write',
  'snapshot-before-fsync',
  'snapshot-before-rename',
  'snapshot-after-rename',
];

/** failpointArmed: whether SNAPCOORD_FAILPOINT names `name`. */
export function failpointArmed(name: FailpointName): boolean {
  return process.env[FAILPOINT_ENV] === name;
}

/** failpoint: SIGKILLs this process if SNAPCOORD_FAILPOINT names `name`; otherwise does nothing. */
export function failpoint(name: FailpointName): void {
  if (failpointArmed(name)) {
    process.kill(process.pid, 'SIGKILL');
  }
}

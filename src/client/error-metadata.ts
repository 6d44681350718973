/**
 * What a failed call's trailing metadata may carry beside its gRPC status
 * (the server's api-error.ts sets them; clients such as the gateway and the
 * leader forwarder read them).
 */

/** LEADER_METADATA_KEY: trailing metadata `id@addr` naming the leader, on a FAILED_PRECONDITION "not the leader". */
export const LEADER_METADATA_KEY = 'x-snapcoord-leader';
/**
 * ERROR_CODE_METADATA_KEY: trailing metadata in which the node names its own
 * error condition beside the gRPC status (DISK_FULL_ERROR_CODE, or a task
 * queue code such as `task_not_found`); each gateway style maps it to its
 * product's vocabulary.
 */
export const ERROR_CODE_METADATA_KEY = 'x-snapcoord-error-code';
/**
 * DISK_FULL_ERROR_CODE: the node refused a write, or a task failed, because
 * its data dir's file system is below its free-space reserve or full
 * (RESOURCE_EXHAUSTED on a call; a failed task's error code).
 */
export const DISK_FULL_ERROR_CODE = 'disk_full';

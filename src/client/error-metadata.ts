/**
 * What a failed call's trailing metadata may carry beside its gRPC status
 * (the server's api-error.ts sets them; clients such as the gateway and the
 * leader forwarder read them).
 */

/** LEADER_METADATA_KEY: trailing metadata `id@addr` naming the leader, on a FAILED_PRECONDITION "not the leader". */
export const LEADER_METADATA_KEY = 'x-snapcoord-leader';
/** ERROR_CODE_METADATA_KEY: trailing metadata in which the node names a Meilisearch error code. */
export const ERROR_CODE_METADATA_KEY = 'x-snapcoord-error-code';
/** NO_SPACE_ERROR_CODE: the error code (Meilisearch's) of a call or task that failed because a disk is full. */
export const NO_SPACE_ERROR_CODE = 'no_space_left_on_device';

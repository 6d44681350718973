/**
 * The bounds of a CheckConsistency request (cluster.proto), shared by the
 * client that asks (`snapcoord cluster check`) and the node that runs the
 * check (src/ops/consistency.ts clamps to them).
 */

/** CHECK_WAIT_MS_DEFAULT / CHECK_WAIT_MS_MAX: how long each member may take to reach the compared index. */
export const CHECK_WAIT_MS_DEFAULT = 5_000;
export const CHECK_WAIT_MS_MAX = 60_000;
/** CHECK_ATTEMPTS_DEFAULT / CHECK_ATTEMPTS_MAX: tries at a common applied index while writes keep coming. */
export const CHECK_ATTEMPTS_DEFAULT = 5;
export const CHECK_ATTEMPTS_MAX = 50;

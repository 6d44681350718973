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
/**
 * CHECK_HASH_ALLOWANCE_MS: how long a member's HashState may take once it
 * reached the compared index, on top of the wait (a hung member holds a check
 * this long at most). A node hashes its state paced (src/ops/consistency.ts
 * STATE_HASH_BYTES_PER_SEC_DEFAULT, so a hash loop does not starve the writers):
 * 15 min covers ~12 GiB of 1 KiB values, ~6 GiB of 100-byte ones at that pace.
 * It was 30 s: once the hash was paced, a check of any state over ~0.5 GB came
 * back inconclusive.
 */
export const CHECK_HASH_ALLOWANCE_MS = 900_000;

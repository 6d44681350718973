/**
 * Retention of scheduled snapshots: which archives to keep, applied after
 * each successful scheduled snapshot to the local snapshot directory and to
 * an S3 destination alike.
 *
 * A policy has three rules; an archive is kept when any rule keeps it:
 * - keepLast N: the N newest;
 * - keepDays D: every archive of the last D days (created after now - D days);
 * - keepWeeks W: one a day (the newest of each UTC day) for the last W weeks.
 * The newest archive is always kept, and so is the one a run just wrote
 * (`protect`): names are times, and an archive named later than it (a
 * file dropped in the directory, one written by a node whose clock ran
 * ahead) must not make the run delete its own archive. A policy with every
 * rule 0 keeps everything (no retention).
 */

/** RetentionPolicy: 0 turns a rule off. */
export interface RetentionPolicy {
  readonly keepLast: number;
  readonly keepDays: number;
  readonly keepWeeks: number;
}

/** NO_RETENTION keeps everything. */
export const NO_RETENTION: RetentionPolicy = { keepLast: 0, keepDays: 0, keepWeeks: 0 };

/** RetentionItem: one archive, named by `name`, made at createdAtMs. */
export interface RetentionItem {
  readonly name: string;
  readonly createdAtMs: number;
}

/** RetentionPlan: what to keep and what to delete (each newest first). */
export interface RetentionPlan<T extends RetentionItem> {
  readonly keep: T[];
  readonly remove: T[];
}

const DAY_MS = 86_400_000;

/** hasRetention: the policy removes anything at all. */
export function hasRetention(p: RetentionPolicy): boolean {
  return p.keepLast > 0 || p.keepDays > 0 || p.keepWeeks > 0;
}

/** checkPolicy: RangeError when a rule is not a whole number in 0..10000. */
export function checkPolicy(p: RetentionPolicy): RetentionPolicy {
  for (const [k, v] of Object.entries(p)) {
    if (!Number.isSafeInteger(v) || v < 0 || v > 10_000) throw new RangeError(`retention: ${k} must be a whole number in 0..10000, got ${String(v)}`);
  }
  return p;
}

/**
 * planRetention splits `items` into kept and removed under `policy` at
 * `nowMs` (see the file comment). Ties in time are broken by name (higher
 * name is newer). The item named `protect` (if any) is always kept. Pure:
 * it deletes nothing.
 */
export function planRetention<T extends RetentionItem>(items: readonly T[], policy: RetentionPolicy, nowMs: number, protect?: string): RetentionPlan<T> {
  const sorted = [...items].sort((a, b) => b.createdAtMs - a.createdAtMs || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0));
  if (!hasRetention(policy)) return { keep: sorted, remove: [] };
  const keep = new Set<T>();
  if (sorted[0] !== undefined) keep.add(sorted[0]);
  for (const i of sorted) if (protect !== undefined && i.name === protect) keep.add(i);
  sorted.slice(0, policy.keepLast).forEach((i) => keep.add(i));
  if (policy.keepDays > 0) {
    const since = nowMs - policy.keepDays * DAY_MS;
    for (const i of sorted) if (i.createdAtMs > since) keep.add(i);
  }
  if (policy.keepWeeks > 0) {
    const since = nowMs - policy.keepWeeks * 7 * DAY_MS;
    const days = new Set<number>();
    for (const i of sorted) {
      if (i.createdAtMs <= since) continue;
      const day = Math.floor(i.createdAtMs / DAY_MS);
      if (days.has(day)) continue;
      days.add(day); // sorted newest first: the first one seen is the day's newest
      keep.add(i);
    }
  }
  return { keep: sorted.filter((i) => keep.has(i)), remove: sorted.filter((i) => !keep.has(i)) };
}

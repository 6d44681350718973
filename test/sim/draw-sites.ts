/**
 * Fault draws per site: every fake of the simulator (sim-storage.ts,
 * sim-snapshot-io.ts, sim-network.ts, node-cluster.ts's schedules) draws each
 * kind of fault from a stream of its own, forked once from the seed (per
 * node incarnation, per link) with SeededRng.fork's fixed mixing of the
 * label. So a change to the real node that adds or removes one call of one
 * kind (a disk call, a message of one type on one link) moves only the later
 * draws of that kind there; every other site draws what it drew before.
 * The streams are made once (a label hashed at the fork, never per draw).
 */
import type { SeededRng } from '../harness/rng.js';

/** siteStreams: one stream per site name, each `base.fork(name)` (base: this incarnation's or link's own fork). */
export function siteStreams<K extends string>(base: SeededRng, sites: readonly K[]): Record<K, SeededRng> {
  const out = {} as Record<K, SeededRng>;
  for (const site of sites) out[site] = base.fork(site);
  return out;
}

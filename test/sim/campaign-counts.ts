/**
 * CampaignCounts: what a campaign's seeds exercised, summed over seeds by
 * runNodeCampaign and the worker pool: the snapshots made (and how many from
 * the previous one) and how restore entries were applied (from the leader's
 * state image, or an archive copy). Its own file: the pool's main thread
 * must not load the simulator.
 */
/** CampaignCounts: NodeSimStats' counts of these, summed. */
export interface CampaignCounts {
  snapshots: number;
  deltas: number;
  imageRestores: number;
  imageFallbacks: number;
  archiveRestores: number;
  imageFlips: number;
  imageCrashes: number;
}

/** noCounts: a CampaignCounts of zeros. */
export function noCounts(): CampaignCounts {
  return { snapshots: 0, deltas: 0, imageRestores: 0, imageFallbacks: 0, archiveRestores: 0, imageFlips: 0, imageCrashes: 0 };
}

/** addCounts adds `b`'s counts to `a`. */
export function addCounts(a: CampaignCounts, b: Readonly<CampaignCounts>): void {
  for (const k of Object.keys(a) as (keyof CampaignCounts)[]) a[k] += b[k];
}

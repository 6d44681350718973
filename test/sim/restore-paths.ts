/**
 * RestorePaths: the campaign's count of how restore entries were applied
 * (from the leader's state image, or an archive copy), summed over seeds by
 * runNodeCampaign and the worker pool. Its own file: the pool's main thread
 * must not load the simulator.
 */
/** RestorePaths: how the restore entries of a campaign were applied (NodeSimStats' counts, summed). */
export interface RestorePaths {
  imageRestores: number;
  imageFallbacks: number;
  archiveRestores: number;
  imageFlips: number;
  imageCrashes: number;
}

/** noRestores: a RestorePaths of zeros. */
export function noRestores(): RestorePaths {
  return { imageRestores: 0, imageFallbacks: 0, archiveRestores: 0, imageFlips: 0, imageCrashes: 0 };
}

/** addRestores adds `b`'s counts to `a`. */
export function addRestores(a: RestorePaths, b: Readonly<RestorePaths>): void {
  for (const k of Object.keys(a) as (keyof RestorePaths)[]) a[k] += b[k];
}

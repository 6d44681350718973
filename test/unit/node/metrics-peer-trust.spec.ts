/**
 * /metrics shows what the voters told a node (NodeMetrics.peerTrust, fed by serve from Node.removalNewsStats):
 * members reported removed and refused, and a leadership held back because its log is not the cluster's.
 */
import assert from 'node:assert/strict';
import { NodeMetrics } from '../../../src/node/metrics.js';

describe('NodeMetrics: peer trust gauges', () => {
  it('show the members reported removed and a leadership held; nothing without removal news', async () => {
    const m = new NodeMetrics(() => {
      throw new Error('the status is not read for these gauges');
    }, false);
    assert.doesNotMatch(await m.registry.getSingleMetricAsString('snapcoord_leadership_held'), /^snapcoord_leadership_held 1$/m);
    m.peerTrust = () => ({ reportedRemoved: 2, leadershipHeld: true });
    assert.match(await m.registry.getSingleMetricAsString('snapcoord_peer_reported_removed_members'), /^snapcoord_peer_reported_removed_members 2$/m);
    assert.match(await m.registry.getSingleMetricAsString('snapcoord_leadership_held'), /^snapcoord_leadership_held 1$/m);
    m.peerTrust = () => ({ reportedRemoved: 0, leadershipHeld: false });
    assert.match(await m.registry.getSingleMetricAsString('snapcoord_leadership_held'), /^snapcoord_leadership_held 0$/m);
  });
});

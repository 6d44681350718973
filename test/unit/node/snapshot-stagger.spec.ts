/**
 * Automatic snapshots are staggered by voter (snapshotStaggerEntries,
 * snapshotDue): the members of a cluster do not all build their first
 * snapshot at the same index, and each later one follows its own last.
 */
import assert from 'node:assert/strict';

import { snapshotDue, snapshotStaggerEntries } from '../../../src/node/snapshots.js';
import { until } from '../../harness/until.js';
import { RocksCluster } from './rocks-cluster.js';

const enc = new TextEncoder();
const three = { voters: ['n3', 'n1', 'n2'], learners: ['n4'], addresses: {} };

describe('staggered automatic snapshots', function () {
  this.timeout(60_000);

  it('offsets voters by rank, a half period spread over them; none for the first, a learner or a stranger', () => {
    assert.deepEqual(['n1', 'n2', 'n3', 'n4', 'x'].map((id) => snapshotStaggerEntries(10_000, id, three)), [0, 1_666, 3_333, 0, 0]);
    assert.equal(snapshotStaggerEntries(10_000, 'n1', { voters: ['n1'], learners: [], addresses: {} }), 0);
  });

  it('is due a period after the last snapshot, the first one an offset later', () => {
    assert.equal(snapshotDue(11_665, 0, 10_000, 1_666), false);
    assert.equal(snapshotDue(11_666, 0, 10_000, 1_666), true);
    // Later ones a period after the member's own last: the offset is kept.
    assert.equal(snapshotDue(21_665, 11_666, 10_000, 1_666), false);
    assert.equal(snapshotDue(21_666, 11_666, 10_000, 1_666), true);
    // No offset: every 10,000 from 0, as before.
    assert.equal(snapshotDue(9_999, 0, 10_000, 0), false);
    assert.equal(snapshotDue(10_000, 0, 10_000, 0), true);
  });

  it('a 3-node cluster\'s members take their first snapshots at their own points, in rank order', async () => {
    const c = await RocksCluster.start(3, { snapshotEntries: 60, trailingEntries: 5 });
    try {
      const leader = await c.waitForLeader();
      for (let i = 0; i < 110; i++) await leader.propose({ op: 'put', key: enc.encode(`s/${i}`), value: enc.encode(`${i}`) });
      const ids = ['n1', 'n2', 'n3'];
      const first = await until('every member to snapshot', 20_000, () => {
        const at = ids.map((id) => c.node(id).status().snapshotIndex);
        return at.every((i) => i > 0) ? at : undefined;
      });
      // Offsets 0, 10, 20: each at or past its point, and before the next member's point.
      const [n1, n2, n3] = first as [number, number, number];
      assert.ok(n1 >= 60 && n1 < 70, `n1 at ${n1}`);
      assert.ok(n2 >= 70 && n2 < 80, `n2 at ${n2}`);
      assert.ok(n3 >= 80, `n3 at ${n3}`);
    } finally {
      await c.close();
    }
  });
});

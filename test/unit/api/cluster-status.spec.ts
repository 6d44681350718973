/**
 * The Cluster Status RPC's mapping from a node's status (statusOf): a leader
 * whose snapshot is lost (RaftStatus.snapshotStranded, snapshotRebuildFailed,
 * leadTransferee) says so in StatusResponse.snapshot_loss, and it survives the
 * wire; a follower, or a leader with nothing lost, sends none.
 */
import assert from 'node:assert/strict';
import { statusOf } from '../../../src/api/cluster-service.js';
import type { NodeView } from '../../../src/api/leader-forwarder.js';
import type { NodeStatus } from '../../../src/node/node-status.js';
import { StatusResponse } from '../../../src/gen/snapcoord/v1/cluster.js';

function nodeStatus(extra: Partial<NodeStatus> = {}): NodeStatus {
  const membership = { voters: ['n1', 'n2', 'n3'], learners: ['n4'], addresses: { n1: '127.0.0.1:7101', n2: '127.0.0.1:7102', n3: '127.0.0.1:7103', n4: '127.0.0.1:7104' } };
  const progress = (match: number) => ({ match, next: match + 1, state: 'replicate' as const, inflight: 0, pendingSnapshot: 0, installGuard: 0, applied: match });
  return {
    id: 'n1',
    term: 3,
    vote: 'n1',
    role: 'leader',
    leader: 'n1',
    commit: 40,
    applied: 40,
    firstIndex: 31,
    lastIndex: 40,
    snapshotIndex: 0,
    membership,
    progress: { n1: progress(40), n2: progress(40), n3: progress(12), n4: progress(0) },
    leadTransferee: '',
    snapshotStranded: [],
    snapshotLost: false,
    snapshotRebuildFailed: false,
    snapshotHandOff: { count: 0, to: '', stranded: [] },
    installingSnapshot: 0,
    compactionFloor: 30,
    leaderAddress: '127.0.0.1:7101',
    diskFull: false,
    restoreFailure: null,
    refusedBy: {},
    ...extra,
  };
}

/** viewOf: the part of Node statusOf reads, answering `st` (its other methods are not called by statusOf). */
function viewOf(st: NodeStatus): NodeView {
  return { id: st.id, status: () => st, addressOf: (id: string) => st.membership.addresses[id] ?? '' } as unknown as NodeView;
}

/** overTheWire: the response as a client decodes it. */
function overTheWire(st: NodeStatus): StatusResponse {
  return StatusResponse.decode(StatusResponse.encode(statusOf(viewOf(st))).finish());
}

describe('api: Cluster Status maps a lost snapshot', () => {
  it('a healthy leader, and a follower, send no snapshot_loss', () => {
    assert.equal(overTheWire(nodeStatus()).snapshotLoss, undefined);
    // A follower's status never names stranded followers (the core's are the leader's), whatever it carries.
    assert.equal(overTheWire(nodeStatus({ role: 'follower', leader: 'n2', snapshotRebuildFailed: true })).snapshotLoss, undefined);
  });

  it('followers waiting while the snapshot is rebuilt: named, no failure, no hand-over', () => {
    const res = overTheWire(nodeStatus({ snapshotStranded: ['n3', 'n4'] }));
    assert.deepEqual(res.snapshotLoss, { stranded: ['n3', 'n4'], rebuildFailed: false, handOffTo: '' });
  });

  it('the rebuild failed and a voter holds one: the hand-over target is named', () => {
    const res = overTheWire(nodeStatus({ snapshotStranded: ['n3'], snapshotRebuildFailed: true, leadTransferee: 'n2' }));
    assert.deepEqual(res.snapshotLoss, { stranded: ['n3'], rebuildFailed: true, handOffTo: 'n2' });
  });

  it('the rebuild failed and no voter holds one: the leader stays (no target)', () => {
    const res = overTheWire(nodeStatus({ snapshotStranded: ['n3'], snapshotRebuildFailed: true }));
    assert.deepEqual(res.snapshotLoss, { stranded: ['n3'], rebuildFailed: true, handOffTo: '' });
  });

  it('the rebuild failed with nobody waiting: said, and an operator\'s transfer is not taken for a hand-over', () => {
    const res = overTheWire(nodeStatus({ snapshotRebuildFailed: true, leadTransferee: 'n2' }));
    assert.deepEqual(res.snapshotLoss, { stranded: [], rebuildFailed: true, handOffTo: '' });
  });

  it("a node's snapshot scrub (StatusResponse.snapshot_scrub): its interval, runs, bytes, damaged archives and the last run's age; none without a snapshot store", () => {
    assert.equal(overTheWire(nodeStatus()).snapshotScrub, undefined);
    const res = overTheWire(nodeStatus({ role: 'follower', leader: 'n2', snapshotScrub: { intervalMs: 86_400_000, runs: 3, bytes: 6_000_000_000, damaged: 1, lastAgoMs: 1_234.5 } }));
    assert.deepEqual(res.snapshotScrub, { intervalSecs: 86_400n, runs: 3n, bytes: 6_000_000_000n, damaged: 1n, lastRunAgoMs: 1_234n });
    assert.equal(overTheWire(nodeStatus({ snapshotScrub: { intervalMs: 0, runs: 0, bytes: 0, damaged: 0, lastAgoMs: null } })).snapshotScrub?.lastRunAgoMs, -1n, 'no run yet');
  });

  it('a lost snapshot nobody waits for yet is said too (RaftStatus.snapshotLost): on the leader, and on a follower (no stranded, no hand-over)', () => {
    // Before, a leader's snapshot lost and being rebuilt showed nowhere until a follower needed one.
    assert.deepEqual(overTheWire(nodeStatus({ snapshotLost: true })).snapshotLoss, { stranded: [], rebuildFailed: false, handOffTo: '' });
    const follower = { role: 'follower' as const, leader: 'n2' };
    assert.deepEqual(overTheWire(nodeStatus({ ...follower, snapshotLost: true })).snapshotLoss, { stranded: [], rebuildFailed: false, handOffTo: '' });
    assert.deepEqual(overTheWire(nodeStatus({ ...follower, snapshotLost: true, snapshotRebuildFailed: true, leadTransferee: 'n3' })).snapshotLoss, { stranded: [], rebuildFailed: true, handOffTo: '' });
    assert.equal(overTheWire(nodeStatus({ ...follower, snapshotLost: false })).snapshotLoss, undefined);
  });

  it('the rest of the response is unchanged by it', () => {
    const res = overTheWire(nodeStatus({ snapshotStranded: ['n3'] }));
    assert.equal(res.id, 'n1');
    assert.equal(res.commitIndex, 40n);
    assert.deepEqual(res.members.map((m) => [m.id, m.matchIndex]), [['n1', 40n], ['n2', 40n], ['n3', 12n], ['n4', 0n]]);
  });
});

/**
 * Commit statements in the node (Node.maybeAttest, RaftNode.proposeAttestation):
 * three real Nodes on the in-memory transport, each signing with the
 * simulator's proof model (test/sim/sim-proofs.ts, production's statements).
 * After each membership change commits, the leader appends its signed commit
 * statement (an attest entry) and every member's configuration carries it;
 * a change proposed right after the previous one was applied waits for that
 * entry instead of being refused; and a member that missed the changes
 * reaches the newest configuration on those commit statements (verifyChain).
 */
import assert from 'node:assert/strict';
import type { Node, NodeTimings } from '../../../src/node/node.js';
import { verifyChain } from '../../../src/node/membership-proofs.js';
import { readStatement } from '../../../src/tls/membership-proof.js';
import { SimMembershipProofs } from '../../sim/sim-proofs.js';
import { MEMORY_MEMBERSHIP as MEMBERSHIP, memoryNodes } from './memory-nodes.js';
import { until } from '../../harness/until.js';

const TIMINGS: Partial<NodeTimings> = { tickMs: 10, electionTimeoutTicks: 50, heartbeatIntervalTicks: 3 };

describe('commit statements: a leader attests each committed membership change (in-memory transport)', function () {
  this.timeout(30_000);
  const { nodes, start } = memoryNodes();
  beforeEach(() => start(['n1', 'n2', 'n3'], TIMINGS, { proofs: (id) => new SimMembershipProofs(id) }));

  const leader = (): Promise<Node> => until('a leader', 10_000, () => [...nodes.values()].find((n) => n.status().role === 'leader'));
  const kinds = (proofs: readonly string[] | undefined): string[] => (proofs ?? []).map((p) => {
    const s = readStatement(p);
    return s === null ? '?' : `${s.committed === true ? 'committed' : 'appended'} ${s.index}`;
  });

  it('each change is followed by its commit statement on every member; back-to-back changes wait for it; a member that missed them walks the commit statements', async () => {
    const l = await leader();
    await l.propose({ op: 'put', key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') }); // this term's first entry committed
    // Back to back: the second is proposed as soon as the first is applied, while the leader's attest entry is in flight.
    await l.changeMembership({ op: 'addLearner', nodeId: 'n4', address: 'mem:n4' });
    await l.changeMembership({ op: 'addLearner', nodeId: 'n5', address: 'mem:n5' });
    await l.changeMembership({ op: 'removeNode', nodeId: 'n4' });
    const answerOf = (n: Node): ReturnType<Node['membershipFor']> => n.membershipFor({ from: 'n1', to: n.status().id });
    await until('every member carries three commit statements', 10_000, () =>
      [...nodes.values()].every((n) => kinds(answerOf(n).membership.proofs).filter((k) => k.startsWith('committed')).length === 3) ? true : undefined,
    );
    for (const n of nodes.values()) {
      const a = answerOf(n);
      const k = kinds(a.membership.proofs);
      assert.equal(k.length, 6, `${n.status().id}: ${k.join(', ')}`);
      for (let i = 0; i < 6; i += 2) {
        const [appended, committed] = [k[i] as string, k[i + 1] as string];
        assert.match(appended, /^appended \d+$/);
        assert.equal(committed, appended.replace('appended', 'committed'), 'each appended statement followed by the commit statement of the same entry');
      }
      assert.deepEqual(a.membership.learners, ['n5']);
      // the configuration's index is the last change's, not the attest entry after it
      assert.equal(a.membershipIndex, Number((k[4] as string).split(' ')[1]));
    }
    // n5 asked by a member still at the bootstrap configuration (index 0): its proofs chain to the newest, naming it.
    const verifier = new SimMembershipProofs('n3');
    const proofs = answerOf(l).membership.proofs ?? [];
    assert.deepEqual(verifyChain(MEMBERSHIP, 0, proofs, 'n5', (p) => verifier.verify(p)), { index: answerOf(l).membershipIndex, names: true });
    assert.deepEqual(verifyChain(MEMBERSHIP, 0, proofs, 'n4', (p) => verifier.verify(p)), { index: answerOf(l).membershipIndex, names: false });
  });
});

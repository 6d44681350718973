/**
 * Membership proofs against real nodes over mutual TLS (src/node/membership-proofs.ts, src/tls/membership-proof.ts):
 * a member that was down while a member was added and the other voters it knows were removed and lost is vouched for
 * the new member by its signed configuration chain, and the two make the quorum they are: a write commits. Without
 * proofs no voter of its configuration can answer and no leader is ever elected (the campaign's seeds 2442, 3134).
 */
import { strict as assert } from 'node:assert';
import type { ApiServer } from '../../../src/api/server.js';
import { until } from '../../harness/until.js';
import { TlsMembers, type TlsMember } from './tls-members.js';

const VOTERS = ['n1', 'n2', 'n3'];
const text = new TextEncoder();

describe('membership proofs: a member whose known voters are all gone follows the newest configuration (real nodes, mutual TLS)', function () {
  this.timeout(120_000);
  const c = new TlsMembers('proof-test', { proofs: true });
  const members = c.members;
  const start = c.start.bind(c);
  const bind = c.bind.bind(c);
  const stop = c.stop.bind(c);
  type Member = TlsMember;

  before(() => c.open([...VOTERS, 'n4']));
  after(() => c.close());

  it('B, down while n4 was added and A removed, restarts after the leader is lost: B and n4 elect a leader and commit', async () => {
    const apis = new Map<string, ApiServer>();
    for (const id of VOTERS) apis.set(id, await bind(id));
    const addresses = Object.fromEntries(VOTERS.map((id) => [id, (apis.get(id) as ApiServer).peerAddress]));
    for (const id of VOTERS) await start(id, apis.get(id) as ApiServer, { voters: VOTERS, learners: [], addresses });
    const leader = await until('a leader', 15_000, () => [...members.values()].find((m) => m.node.status().role === 'leader'));
    await leader.node.propose({ op: 'put', key: text.encode('k/before'), value: text.encode('v') });
    const [a, b] = VOTERS.filter((id) => id !== leader.id).map((id) => members.get(id) as Member) as [Member, Member];
    const bPeerPort = Number(b.api.peerAddress.split(':').pop());
    await stop(b); // B misses everything below
    const n4api = await bind('n4');
    const n4 = await start('n4', n4api, { voters: VOTERS, learners: ['n4'], addresses: { ...addresses, n4: n4api.peerAddress } });
    await leader.node.changeMembership({ op: 'addLearner', nodeId: 'n4', address: n4api.peerAddress });
    await until('n4 to catch up', 20_000, () => (n4.node.status().applied >= leader.node.status().commit ? true : undefined));
    await leader.node.changeMembership({ op: 'addVoter', nodeId: 'n4', address: n4api.peerAddress });
    await leader.node.changeMembership({ op: 'removeNode', nodeId: a.id });
    await until('n4 to apply A\'s removal', 20_000, () => (n4.node.status().membership.voters.includes(a.id) ? undefined : true));
    assert.deepEqual([...n4.node.status().membership.voters].sort(), [leader.id, b.id, 'n4'].sort());
    await stop(a); // removed
    await stop(leader); // lost for good
    // B comes back where the others know it, knowing only {n1, n2, n3}: its other voters are gone.
    const b2 = await start(b.id, await bind(b.id, bPeerPort), { voters: VOTERS, learners: [], addresses });
    assert.ok(b2.node.status().membership.voters.includes(a.id), 'B restarted on its old configuration');
    const next = await until('a leader of {B, n4}', 40_000, () => [b2, n4].find((m) => m.node.status().role === 'leader'));
    await next.node.propose({ op: 'put', key: text.encode('k/after'), value: text.encode('w') });
    await until('B to apply the write', 20_000, () => (b2.node.status().applied >= next.node.status().commit ? true : undefined));
    assert.equal(new TextDecoder().decode(await b2.node.get(text.encode('k/after'), true)), 'w');
    assert.ok(b2.refusals.includes('unvouched'), 'B refused n4 until its proofs vouched for it');
  });
});

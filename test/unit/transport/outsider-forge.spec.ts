/**
 * A certificate of an id no member knows (n9: never added; a removed member's once the receiver restarted) against
 * real nodes over mutual TLS: a learner and a voter left in a minority (its own campaigns fail) must never take it as
 * leader, however long they go without one. Before vouching (src/node/vouches.ts) both did once an election timeout
 * (and, the voter, two failed campaigns) passed, and applied its forged entry: replicas split for good (joinlive23's
 * reproduction, raft-level, on branch outsider-forge-repro). The liveness side: a member whose configuration lacks its
 * leader is vouched for by a voter of its configuration over the same mutual TLS and catches up.
 */
import { strict as assert } from 'node:assert';
import type { ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { caFiles, channelCredentialsFromFiles, nodeCertFiles } from '../../../src/tls/index.js';
import { until } from '../../harness/until.js';
import { sendAppend, TlsMembers, type TlsMember } from './tls-members.js';

const CLUSTER = 'forge-test';
const VOTERS = ['n1', 'n2', 'n3'];
const text = new TextEncoder();

describe('a certificate of an id no member knows, against a learner and a voter in a minority (real nodes, mutual TLS)', function () {
  this.timeout(90_000);
  const c = new TlsMembers(CLUSTER);
  const members = c.members;
  const stopped = c.stopped;
  const start = c.start.bind(c);
  const bind = c.bind.bind(c);
  const stop = c.stop.bind(c);
  type Member = TlsMember;

  before(async () => {
    await c.open([...VOTERS, 'n4', 'n9']);
    const apis = new Map<string, ApiServer>();
    for (const id of VOTERS) apis.set(id, await bind(id));
    const membership: Membership = { voters: VOTERS, learners: [], addresses: Object.fromEntries(VOTERS.map((id) => [id, (apis.get(id) as ApiServer).peerAddress])) };
    for (const id of VOTERS) await start(id, apis.get(id) as ApiServer, membership);
  });

  after(() => c.close());

  async function stableLeader(): Promise<Member> {
    const all = [...members.values()].filter((m) => !stopped.has(m.id));
    return until('a stable leader', 15_000, () => {
      const leader = all.find((m) => m.node.status().role === 'leader');
      return leader !== undefined && all.every((m) => m.node.status().leader === leader.id && m.node.status().applied >= leader.node.status().commit) ? leader : undefined;
    });
  }

  it('a new learner whose --peers leave its leader out is vouched for by a voter they name, over mutual TLS, and catches up', async () => {
    const leader = await stableLeader();
    await leader.node.propose({ op: 'put', key: text.encode('k/before'), value: text.encode('v') });
    const others = VOTERS.filter((id) => id !== leader.id);
    const api = await bind('n4');
    const n4 = await start('n4', api, { voters: others, learners: ['n4'], addresses: { ...Object.fromEntries(others.map((id) => [id, (members.get(id) as Member).api.peerAddress])), n4: api.peerAddress } });
    await leader.node.changeMembership({ op: 'addLearner', nodeId: 'n4', address: api.peerAddress });
    await until('n4 to follow the leader and catch up', 20_000, () => (n4.node.status().leader === leader.id && n4.node.status().applied >= leader.node.status().commit ? true : undefined));
    assert.ok(n4.refusals.includes('unvouched'), 'the leader was refused until vouched for');
    assert.equal(await n4.node.get(text.encode('k/before'), true).then((v) => new TextDecoder().decode(v)), 'v');
  });

  it('its appends of a later term, sent to a learner and to a voter whose own campaigns fail, are taken by neither: no forged write applied (before, both applied it)', async () => {
    const leader = await stableLeader();
    const voter = members.get(VOTERS.find((id) => id !== leader.id) as string) as Member;
    const learner = members.get('n4') as Member;
    // Every log ends at the same entry, of the leader's term, once it is stopped (stableLeader: all applied its commit).
    const { term: lastTerm, lastIndex } = voter.node.status();
    for (const id of VOTERS) if (id !== voter.id) await stop(members.get(id) as Member);
    const targets = [voter, learner];
    const ca = caFiles(c.dir).caFile;
    const cert = nodeCertFiles(c.dir, 'n9');
    const clients = targets.map((m) => ({ m, c: new RaftServiceClient(m.api.peerAddress, channelCredentialsFromFiles({ caFile: ca, certFile: cert.certFile, keyFile: cert.keyFile }), { 'grpc.use_local_subchannel_pool': 1 }) }));
    const forged = (m: Member): Promise<string> => m.node.get(text.encode('k/forged'), true).then((v) => (v === undefined ? '' : new TextDecoder().decode(v)));
    let sent = 0;
    try {
      // Long enough for the voter's two failed campaigns (election timeouts of 0.5-1 s) and the learner's timeout.
      const deadline = Date.now() + 8_000;
      while (Date.now() < deadline) {
        for (const { m, c } of clients) {
          const st = m.node.status();
          const term = st.term + 1;
          const data = encodeCommand({ op: 'put', key: text.encode('k/forged'), value: text.encode(`forged for ${m.id}`) });
          for (const type of ['heartbeat', 'append'] as const) {
            const msg: Message =
              type === 'heartbeat'
                ? { type, from: 'n9', to: m.id, term, commit: st.commit, readSeq: 0 }
                : { type, from: 'n9', to: m.id, term, prevLogIndex: lastIndex, prevLogTerm: lastTerm, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term, type: 'normal', data }] };
            await sendAppend(c, CLUSTER, msg as Message & { type: 'append' });
            sent++;
          }
        }
        if ((await Promise.all(targets.map(forged))).some((v) => v !== '')) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      for (const { c } of clients) c.close();
    }
    assert.ok(sent > 0);
    assert.deepEqual(await Promise.all(targets.map(async (m) => `${m.id}: ${await forged(m)}`)), targets.map((m) => `${m.id}: `), 'no forged write applied');
    for (const m of targets) {
      assert.notEqual(m.node.status().leader, 'n9', `${m.id} never follows n9`);
      assert.ok(m.refusals.includes('unvouched'), `${m.id} refused n9 as unvouched`);
    }
    assert.equal(voter.node.status().role !== 'leader', true, 'the voter alone leads nothing');
  });

});

/**
 * Strict reconfiguration on real `serve` processes, through the CLI
 * (joinlive23's finding; etcd's --strict-reconfig-check): with one of three
 * members stopped, `cluster remove` of another would leave the stopped one
 * and the leader, a quorum of 2 with one reachable: no leader until the
 * stopped member came back, and the removal then likely lost. It is refused
 * FAILED_PRECONDITION naming the unreachable member, and nothing changes
 * (three members, the same leader, writes still commit). Started again, the
 * same removal is taken. Removing the stopped member itself is taken at once
 * (the two alive make a quorum of the two left).
 */
import assert from 'node:assert/strict';
import { describeRun, runCli, type CliResult } from '../harness/child.js';
import { ServeCluster, type ServeNode } from '../harness/serve-cluster.js';
import { sleep, until } from '../harness/until.js';

/** UNHEARD_MS: well past two of serve's default election timeouts (15 ticks of 10 ms), also on a loaded machine. */
const UNHEARD_MS = 1_500;

interface RawStatus {
  readonly id: string;
  readonly role: string;
  readonly leaderId: string;
  readonly members: readonly { readonly id: string; readonly suffrage: string }[];
}

describe('strict reconfiguration (real processes, CLI)', function () {
  this.timeout(180_000);
  let cluster: ServeCluster;

  before(async () => {
    cluster = await ServeCluster.start({ ids: ['s1', 's2', 's3'] });
  });

  after(async () => {
    await cluster?.stop();
  });

  const cli = (args: readonly string[], endpoint: ServeNode): Promise<CliResult> => runCli(args, { env: { SNAPCOORD_ENDPOINT: endpoint.grpc } });
  const rawStatus = async (n: ServeNode): Promise<RawStatus> => {
    const r = await cli(['cluster', 'status', '--raw', '--json'], n);
    assert.equal(r.code, 0, describeRun(['cluster', 'status', '--raw', '--json'], r));
    return JSON.parse(r.stdout) as RawStatus;
  };

  it('with one of 3 stopped, removing another is refused (nothing changes); started again, the removal is taken', async () => {
    const leader = await cluster.leader();
    const [victim, stopped] = cluster.nodes.filter((n) => n.id !== leader.id) as [ServeNode, ServeNode];
    await cluster.kill(stopped.id);
    await sleep(UNHEARD_MS);

    // Asked at the member to remove (a follower): it forwards to the leader, whose refusal comes back as it is.
    const args = ['cluster', 'remove', victim.id];
    const refused = await cli(args, victim);
    assert.equal(refused.code, 1, describeRun(args, refused));
    const line = refused.stderr.trimEnd();
    assert.equal(line.split('\n').length, 1, describeRun(args, refused));
    assert.match(line, new RegExp(`^snapcoord: FAILED_PRECONDITION: remove ${victim.id} refused: the leader ${leader.id} has not heard from ${stopped.id} within the last 2 election timeouts`), describeRun(args, refused));
    assert.match(line, new RegExp(`Nothing changed: start ${stopped.id} again`), describeRun(args, refused));

    // Nothing changed: three members, the same leader, and a write still commits.
    const st = await rawStatus(leader);
    assert.equal(st.role, 'ROLE_LEADER');
    assert.deepEqual(st.members.map((m) => m.id).sort(), [leader.id, stopped.id, victim.id].sort());
    const put = await cli(['kv', 'put', 'after-refusal', '1'], leader);
    assert.equal(put.code, 0, describeRun(['kv', 'put'], put));
    assert.equal((await cluster.leader(10_000, [leader, victim])).id, leader.id, 'the refusal cost no election');

    // Started again: once the leader hears from it, the same removal is taken.
    await cluster.restart(stopped.id);
    const taken = await until(`remove ${victim.id} taken once ${stopped.id} is back`, 60_000, async () => {
      const r = await cli(args, leader);
      if (r.code === 0) return r;
      assert.match(r.stderr, /FAILED_PRECONDITION: remove .* refused/, describeRun(args, r));
      return undefined;
    });
    assert.doesNotMatch(taken.stdout, new RegExp(`^${victim.id}\\s`, 'm'), taken.stdout);
    const after = await rawStatus(leader);
    assert.deepEqual(after.members.map((m) => m.id).sort(), [leader.id, stopped.id].sort());
    await cluster.kill(victim.id);
  });

  it('of three with one stopped, removing the stopped one is taken at once: the two alive make a quorum of the two left', async () => {
    const c = await ServeCluster.start({ ids: ['t1', 't2', 't3'] });
    try {
      const leader = await c.leader();
      const dead = c.nodes.find((n) => n.id !== leader.id)!;
      await c.kill(dead.id);
      await sleep(UNHEARD_MS);
      const args = ['cluster', 'remove', dead.id];
      const r = await cli(args, leader);
      assert.equal(r.code, 0, describeRun(args, r));
      const st = await rawStatus(leader);
      assert.equal(st.members.length, 2, JSON.stringify(st));
      assert.ok(!st.members.some((m) => m.id === dead.id), JSON.stringify(st));
    } finally {
      await c.stop();
    }
  });
});

/**
 * serve's SIGTERM handoff with real processes on loopback (runs everywhere,
 * without namespaces): a leader that gets SIGTERM hands leadership to another
 * voter before it exits 0, the survivors agree on that voter as leader in the
 * next term (one term: a transfer, not a timeout after which several
 * candidates may have campaigned), and writes go on; a follower that gets
 * SIGTERM hands nothing over.
 */
import assert from 'node:assert/strict';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import type { ServeProcess } from '../harness/serve-process.js';
import { ServeCluster } from '../harness/serve-cluster.js';
import { until } from '../harness/until.js';

const IDS = ['a1', 'a2', 'a3'] as const;
const enc = new TextEncoder();

describe('serve: SIGTERM on the leader hands leadership over', function () {
  this.timeout(120_000);
  let c: ServeCluster | undefined;
  const cluster = (): ServeCluster => c as ServeCluster;

  before(async () => {
    // Long election timeouts (1 s): a successor within one term comes from the transfer, not from a timeout.
    c = await ServeCluster.create({ ids: IDS, extra: ['--election-timeout-ticks', '100'] });
    await c.startAll();
  });

  after(async () => {
    await c?.stop();
  });

  const leaderOf = (among: readonly string[]): Promise<{ id: string; term: bigint }> =>
    until('one leader all agree on', 30_000, async () => {
      const sts = await Promise.all(among.map((id) => cluster().node(id).cluster.status({ deadlineMs: 1_000 }).catch(() => undefined)));
      const leader = sts.find((s) => s?.role === Role.ROLE_LEADER);
      if (leader === undefined || !sts.every((s) => s?.leaderId === leader.id)) return undefined;
      return { id: leader.id, term: leader.term };
    });

  it('a follower stops without handing anything over', async () => {
    const { id: leader } = await leaderOf(IDS);
    const follower = IDS.find((id) => id !== leader) as string;
    const p = cluster().node(follower).proc as ServeProcess;
    await cluster().kill(follower, 'SIGTERM');
    assert.equal(p.exitCode, 0);
    assert.doesNotMatch(p.output, /leadership handed over/);
    assert.doesNotMatch(p.output, /handoff before stopping failed/);
    // Back for the next test.
    await cluster().restart(follower);
  });

  it('the leader hands over to a caught-up voter, exits 0, and the survivors lead on in the next term', async () => {
    const before = await leaderOf(IDS);
    const p = cluster().node(before.id).proc as ServeProcess;
    const others = IDS.filter((id) => id !== before.id);
    await cluster().node(others[0] ?? '').kv.put({ key: enc.encode('before'), value: enc.encode('1') }, { deadlineMs: 5_000 });
    await cluster().kill(before.id, 'SIGTERM');
    assert.equal(p.exitCode, 0, p.lastLines());
    const m = /"to":"([^"]+)"[^\n]*leadership handed over before stopping/.exec(p.output);
    assert.ok(m !== null, `no handoff logged:\n${p.lastLines()}`);
    assert.ok((others as readonly string[]).includes(m[1] ?? ''), `handed to ${m[1]}, a survivor`);
    const after = await leaderOf(others);
    assert.equal(after.id, m[1]);
    assert.equal(after.term, before.term + 1n, 'one term later: the transfer, no election timeout with competing candidates');
    await cluster().node(others[1] ?? '').kv.put({ key: enc.encode('after'), value: enc.encode('2') }, { deadlineMs: 5_000 });
  });
});

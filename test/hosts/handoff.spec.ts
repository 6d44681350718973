/**
 * serve's SIGTERM handoff with real processes on loopback (runs everywhere,
 * without namespaces): a leader that gets SIGTERM hands leadership to another
 * voter before it exits 0, the survivors agree on that voter as leader in the
 * next term (one term: a transfer, not a timeout after which several
 * candidates may have campaigned), and writes go on; a follower that gets
 * SIGTERM hands nothing over.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { Role } from '../../src/gen/snapcoord/v1/cluster.js';
import { freeNodeAddresses, peersFlag } from '../harness/ports.js';
import { ServeProcess } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const IDS = ['a1', 'a2', 'a3'] as const;
const enc = new TextEncoder();

describe('serve: SIGTERM on the leader hands leadership over', function () {
  this.timeout(120_000);
  let dir = '';
  const procs = new Map<string, ServeProcess>();
  const clients = new Map<string, ClusterClient>();
  const kvs = new Map<string, KvClient>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-handoff-'));
    const addrs = await freeNodeAddresses(IDS);
    const peers = peersFlag(addrs);
    for (const id of IDS) {
      // Long election timeouts (1 s): a successor within one term comes from the transfer, not from a timeout.
      const p = new ServeProcess({ id, grpc: addrs[id].grpc, peer: addrs[id].peer, peers, dataDir: join(dir, id), extra: ['--election-timeout-ticks', '100'] });
      procs.set(id, p);
      clients.set(id, new ClusterClient(addrs[id].grpc));
      kvs.set(id, new KvClient(addrs[id].grpc));
    }
    await Promise.all([...procs.values()].map((p) => p.ready()));
  });

  after(async () => {
    await Promise.all([...procs.values()].map((p) => p.kill('SIGKILL')));
    for (const c of [...clients.values(), ...kvs.values()]) c.close();
    await rm(dir, { recursive: true, force: true });
  });

  const leaderOf = (among: readonly string[]): Promise<{ id: string; term: bigint }> =>
    until('one leader all agree on', 30_000, async () => {
      const sts = await Promise.all(among.map((id) => clients.get(id)?.status({ deadlineMs: 1_000 }).catch(() => undefined)));
      const leader = sts.find((s) => s?.role === Role.ROLE_LEADER);
      if (leader === undefined || !sts.every((s) => s?.leaderId === leader.id)) return undefined;
      return { id: leader.id, term: leader.term };
    });

  it('a follower stops without handing anything over', async () => {
    const { id: leader } = await leaderOf(IDS);
    const follower = IDS.find((id) => id !== leader) as string;
    const p = procs.get(follower) as ServeProcess;
    await p.kill('SIGTERM');
    assert.equal(p.exitCode, 0);
    assert.doesNotMatch(p.output, /leadership handed over/);
    assert.doesNotMatch(p.output, /handoff before stopping failed/);
    // Back for the next test.
    const again = new ServeProcess(p.args);
    procs.set(follower, again);
    await again.ready();
  });

  it('the leader hands over to a caught-up voter, exits 0, and the survivors lead on in the next term', async () => {
    const before = await leaderOf(IDS);
    const p = procs.get(before.id) as ServeProcess;
    const others = IDS.filter((id) => id !== before.id);
    await (kvs.get(others[0] ?? '') as KvClient).put({ key: enc.encode('before'), value: enc.encode('1') }, { deadlineMs: 5_000 });
    await p.kill('SIGTERM');
    assert.equal(p.exitCode, 0, p.lastLines());
    const m = /"to":"([^"]+)"[^\n]*leadership handed over before stopping/.exec(p.output);
    assert.ok(m !== null, `no handoff logged:\n${p.lastLines()}`);
    assert.ok((others as readonly string[]).includes(m[1] ?? ''), `handed to ${m[1]}, a survivor`);
    const after = await leaderOf(others);
    assert.equal(after.id, m[1]);
    assert.equal(after.term, before.term + 1n, 'one term later: the transfer, no election timeout with competing candidates');
    await (kvs.get(others[1] ?? '') as KvClient).put({ key: enc.encode('after'), value: enc.encode('2') }, { deadlineMs: 5_000 });
  });
});

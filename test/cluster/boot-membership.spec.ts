/**
 * Boot never falls back to a state older than the log, and --peers only
 * bootstraps an empty data dir (issue 14 item 4). Real `serve` processes,
 * ports from the OS.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import { freeNodeAddresses, type NodeAddresses, peersFlag, startOnFreshPorts } from '../harness/ports.js';
import { ServeProcess, startServes, type ServeArgs } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function putKeys(kv: KvClient, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    await until('a write', 20_000, async () => {
      await kv.put({ key: enc.encode(`k/${i}`), value: enc.encode(`v${i}`) }, { deadlineMs: 3_000 });
      return true;
    });
  }
}

/** corruptArchives flips a byte in the middle of every stored snapshot's archive; returns how many. */
async function corruptArchives(dataDir: string): Promise<number> {
  const store = join(dataDir, 'snapshots', 'store');
  let n = 0;
  for (const name of await readdir(store)) {
    const file = join(store, name, 'archive.tar.gz');
    const size = await stat(file).then((s) => s.size, () => -1);
    if (size <= 0) continue;
    const h = await open(file, 'r+');
    try {
      const at = Math.floor(size / 2);
      const b = Buffer.alloc(1);
      await h.read(b, 0, 1, at);
      b[0] = (b[0] ?? 0) ^ 0xff;
      await h.write(b, 0, 1, at);
    } finally {
      await h.close();
    }
    n++;
  }
  return n;
}

describe('cluster: boot and the persisted membership (issue 14 item 4)', function () {
  this.timeout(180_000);
  let dir = '';
  const procs: ServeProcess[] = [];
  const clients: { close(): void }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-boot-'));
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  });

  function serveArgs(id: string, grpc: string, peer: string, peers: string, dataDir: string): ServeArgs {
    return { id, grpc, peer, peers, dataDir, extra: ['--snapshot-entries', '20', '--snapshot-trailing-entries', '2', '--snapshot-retain', '2'] };
  }

  /** serve: a restart (same addresses and data dir). */
  function serve(id: string, grpc: string, peer: string, peers: string, dataDir: string): ServeProcess {
    const p = new ServeProcess(serveArgs(id, grpc, peer, peers, dataDir));
    procs.push(p);
    return p;
  }

  /** firstStart: a node's first start, on new ports (startServes). */
  async function firstStart(dataDir: string): Promise<{ a: NodeAddresses; first: ServeProcess }> {
    const s = await startServes(['n1'], (id, { n1 }) => serveArgs(id, n1.grpc, n1.peer, `n1=${n1.peer}`, dataDir));
    procs.push(s.procs.n1);
    return { a: s.addrs.n1, first: s.procs.n1 };
  }

  it('A data dir whose snapshots are all corrupt and whose log was compacted: boot refuses with exit 2', async () => {
    const dataDir = join(dir, 'corrupt', 'n1');
    const { a, first } = await firstStart(dataDir);
    const kv = new KvClient(a.grpc);
    clients.push(kv);
    await putKeys(kv, 0, 80);
    // Snapshots were taken and the log compacted past index 0.
    await first.waitFor(/"compactedTo":([1-9]\d*)/, 20_000);
    await first.kill('SIGTERM');
    assert.equal(first.exitCode, 0, first.lastLines());

    // Control: with its snapshots intact the data dir starts and serves every write.
    const again = serve('n1', a.grpc, a.peer, `n1=${a.peer}`, dataDir);
    await again.ready();
    await until('the restarted node to serve', 20_000, async () => {
      const r = await kv.range({ prefix: enc.encode('k/'), limit: 1000 }, { deadlineMs: 3_000 });
      return r.kvs.length === 80 ? true : undefined;
    });
    await again.kill('SIGTERM');

    assert.ok((await corruptArchives(dataDir)) >= 1);
    const refused = serve('n1', a.grpc, a.peer, `n1=${a.peer}`, dataDir);
    await Promise.race([refused.exited, new Promise((r) => setTimeout(r, 30_000))]);
    assert.equal(refused.exitCode, 2, `expected exit 2:\n${refused.lastLines()}`);
    const lines = refused.output.split('\n').filter((l) => l.startsWith('snapcoord:'));
    assert.equal(lines.length, 1, refused.output);
    const line = lines[0] ?? '';
    assert.match(line, /refusing to start: data dir .*n1: the log was compacted up to index \d+/);
    assert.match(line, /no stored snapshot verifies \(\d+ failed verification, \d+ of them kept in .*quarantine\)/);
    assert.match(line, /Repair: .*new, empty one.*restore from an archive into a new data dir/);
    assert.doesNotMatch(refused.output, /listening on grpc/);
  });

  it('restarting with an edited --peers keeps the persisted membership and warns, naming both', async () => {
    const dataDir = join(dir, 'edited', 'n1');
    const { a, first } = await firstStart(dataDir);
    // n2 never runs: only its address is named.
    const n2 = (await freeNodeAddresses(['n2'])).n2;
    const kv = new KvClient(a.grpc);
    clients.push(kv);
    await putKeys(kv, 0, 5);
    assert.doesNotMatch(first.output, /differs from the membership persisted/);
    await first.kill('SIGTERM');

    // n2 was never added through the log: --peers naming it must not make it a voter (which would
    // leave n1 without a quorum, since n2 does not exist).
    const edited = `n1=${a.peer},n2=${n2.peer}`;
    const second = serve('n1', a.grpc, a.peer, edited, dataDir);
    await second.ready();
    const warning = await second.waitFor(/--peers \(([^)]*)\) differs from the membership persisted in the data dir \(([^)]*)\)/, 10_000);
    assert.match(warning[1] ?? '', /n2=/);
    assert.doesNotMatch(warning[2] ?? '', /n2=/);
    assert.match(warning[2] ?? '', new RegExp(`n1=${a.peer.replace(/\./g, '\\.')}`));
    // The single persisted voter leads and takes writes.
    await putKeys(kv, 5, 10);
    const r = await kv.range({ prefix: enc.encode('k/'), limit: 100 }, { deadlineMs: 3_000 });
    assert.deepEqual(r.kvs.map((x) => dec.decode(x.key)).sort(), Array.from({ length: 10 }, (_, i) => `k/${i}`).sort());
    await second.kill('SIGTERM');
  });

  /**
   * ledCluster: n1-n3 on data dirs under `name`, the leader n1 names (and a client of it), `keys` keys written through
   * it, a follower, and the leader's match index of that follower.
   */
  async function ledCluster(name: string, keys: number) {
    const s = await startServes(['n1', 'n2', 'n3'], (id, a) => serveArgs(id, a[id].grpc, a[id].peer, peersFlag(a), join(dir, name, id)));
    procs.push(...Object.values<ServeProcess>(s.procs));
    const addrs: Record<string, { grpc: string; peer: string }> = s.addrs;
    const cluster = new ClusterClient(addrs.n1?.grpc ?? '');
    clients.push(cluster);
    const leaderId = await until('a leader', 20_000, async () => (await cluster.status({ deadlineMs: 2_000 }).catch(() => null))?.leaderId || undefined);
    const leader = addrs[leaderId] as { grpc: string; peer: string };
    const kv = new KvClient(leader.grpc);
    clients.push(kv);
    await putKeys(kv, 0, keys);
    const follower = (['n1', 'n2', 'n3'] as const).find((id) => id !== leaderId) as 'n1' | 'n2' | 'n3';
    const leaderClient = new ClusterClient(leader.grpc);
    clients.push(leaderClient);
    const matchOf = async (): Promise<bigint> => (await leaderClient.status({ deadlineMs: 2_000 })).members.find((m) => m.id === follower)?.matchIndex ?? 0n;
    return { s, addrs, leaderId, leader, leaderClient, kv, follower, matchOf };
  }

  it('a voter started again with a new, empty data dir while its leader holds its acknowledgement: refused with exit 2, naming the leader and what to do (before, it voted with an empty log: a committed write could be lost)', async () => {
    const { s, addrs, leaderId, follower: wiped, matchOf } = await ledCluster('wiped', 5);
    await until(`${leaderId} to hold ${wiped}'s acknowledgement`, 10_000, async () => ((await matchOf()) > 0n ? true : undefined));
    const proc = s.procs[wiped];
    await proc.kill('SIGKILL');
    await rm(proc.args.dataDir, { recursive: true, force: true });
    const again = serve(wiped, addrs[wiped]?.grpc ?? '', addrs[wiped]?.peer ?? '', peersFlag(s.addrs), proc.args.dataDir);
    await Promise.race([again.exited, new Promise((r) => setTimeout(r, 30_000))]);
    assert.equal(again.exitCode, 2, `expected exit 2:\n${again.lastLines()}`);
    const lines = again.output.split('\n').filter((l) => l.startsWith('snapcoord:'));
    assert.equal(lines.length, 1, again.output);
    assert.match(lines[0] ?? '', new RegExp(`refusing to start: the data dir is new, but ${leaderId} \\(leader of term \\d+\\) holds ${wiped}'s acknowledgement of the log up to entry [1-9]`));
    assert.match(lines[0] ?? '', new RegExp(`snapcoord cluster remove ${wiped}`));
    assert.doesNotMatch(again.output, /listening on grpc/);
  });

  it('a voter started again on an older copy of its data dir (a backup put back) while its leader holds a later acknowledgement: refused with exit 2; a plain restart is not', async () => {
    // checkLogNotLost ran for a new data dir only: a copy taken earlier and put back lacks entries this member
    // acknowledged just as an empty one does, and it voted without them (a committed write could be lost).
    const { s, addrs, leaderId, kv, follower: f, matchOf } = await ledCluster('older', 5);
    const before = await until(`${leaderId} to hold ${f}'s acknowledgement`, 10_000, async () => ((await matchOf()) > 0n ? matchOf() : undefined));
    const first = s.procs[f];
    await first.kill('SIGKILL');
    const dataDir = first.args.dataDir;
    await cp(dataDir, `${dataDir}.copy`, { recursive: true });
    // A plain restart on its own data dir is not refused, and acknowledges what follows.
    const second = serve(f, addrs[f]?.grpc ?? '', addrs[f]?.peer ?? '', peersFlag(s.addrs), dataDir);
    await putKeys(kv, 5, 40);
    await until(`${f} to acknowledge the later writes`, 30_000, async () => ((await matchOf()) > before + 20n ? true : undefined));
    assert.equal(second.exitCode, null, second.lastLines());
    await second.kill('SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
    await rename(`${dataDir}.copy`, dataDir);
    const third = serve(f, addrs[f]?.grpc ?? '', addrs[f]?.peer ?? '', peersFlag(s.addrs), dataDir);
    await Promise.race([third.exited, new Promise((r) => setTimeout(r, 30_000))]);
    assert.equal(third.exitCode, 2, `expected exit 2:\n${third.lastLines()}`);
    const lines = third.output.split('\n').filter((l) => l.startsWith('snapcoord:'));
    assert.equal(lines.length, 1, third.output);
    assert.match(lines[0] ?? '', new RegExp(`refusing to start: the data dir's log ends at entry \\d+, but ${leaderId} \\(leader of term \\d+\\) holds ${f}'s acknowledgement of the log up to entry \\d+: this data dir is older`));
    assert.match(lines[0] ?? '', new RegExp(`snapcoord cluster remove ${f}`));
    assert.doesNotMatch(third.output, /listening on grpc/);
  });

  it('serve --join: a new node whose --peers name one member waits until it is added, starts from the cluster\'s configuration and catches up', async () => {
    const { addrs, leaderId, leaderClient, follower } = await ledCluster('join', 10);
    // Its --peers name a follower and itself only: without --join it would refuse the leader's messages.
    // Its first start (it listens, then waits to be added), on new ports: again on others if one is taken.
    const { n4, joiner } = await startOnFreshPorts('starting n4', async () => {
      const n4 = (await freeNodeAddresses(['n4'])).n4;
      const joiner = new ServeProcess({ id: 'n4', grpc: n4.grpc, peer: n4.peer, peers: `${follower}=${addrs[follower]?.peer ?? ''},n4=${n4.peer}`, dataDir: join(dir, 'join', 'n4'), extra: ['--join'] });
      procs.push(joiner);
      try {
        await joiner.waitFor(/joining: waiting for a member that knows this node/, 20_000);
      } catch (err) {
        await joiner.kill('SIGKILL');
        await rm(joiner.args.dataDir, { recursive: true, force: true });
        throw err;
      }
      return { n4, joiner };
    });
    await leaderClient.addMember('n4', n4.peer, true, { deadlineMs: 10_000 });
    await joiner.ready();
    await joiner.waitFor(/joining: starting from the configuration of a member/, 1_000);
    const n4Status = new ClusterClient(n4.grpc);
    clients.push(n4Status);
    await until('n4 to catch up', 30_000, async () => {
      const [l, j] = await Promise.all([leaderClient.status({ deadlineMs: 2_000 }), n4Status.status({ deadlineMs: 2_000 })]).catch(() => [null, null]);
      return l !== null && j !== null && j.appliedIndex >= l.commitIndex && j.leaderId === leaderId ? true : undefined;
    });
    const st = await n4Status.status({ deadlineMs: 2_000 });
    assert.deepEqual(st.members.map((m) => m.id).sort(), ['n1', 'n2', 'n3', 'n4'], 'n4 knows every member, not only its --peers');
    const local = new KvClient(n4.grpc);
    clients.push(local);
    const r = await local.range({ prefix: enc.encode('k/'), limit: 100, serializable: true }, { deadlineMs: 3_000 });
    assert.equal(r.kvs.length, 10, 'its own state holds every write');
  });

  it('a voter removed, wiped and added back directly as a voter under its id starts with --join and catches up: a new member, as etcd re-adds one (review18; before: refused as a lost log, because the members kept their record of it running until a GetMembership happened to be answered between the removal and the re-add)', async () => {
    const { s, addrs, leaderId, leaderClient, follower: f, matchOf } = await ledCluster('readd', 5);
    await until(`${leaderId} to hold ${f}'s acknowledgement`, 10_000, async () => ((await matchOf()) > 0n ? true : undefined));
    // The leader's record says f ran with a log of its own (what refused it before).
    const record = join(dir, 'readd', leaderId, 'started-members.json');
    await until(`${leaderId}'s record of ${f}`, 10_000, async () => ((await readFile(record, 'utf8').catch(() => '')).includes(`"${f}"`) ? true : undefined));
    const proc = s.procs[f];
    await leaderClient.removeMember(f, { deadlineMs: 10_000 });
    await proc.kill('SIGKILL');
    await rm(proc.args.dataDir, { recursive: true, force: true });
    await leaderClient.addMember(f, addrs[f]?.peer ?? '', false, { deadlineMs: 10_000 });
    const again = new ServeProcess({ ...serveArgs(f, addrs[f]?.grpc ?? '', addrs[f]?.peer ?? '', peersFlag(s.addrs), proc.args.dataDir), extra: [...(serveArgs('', '', '', '', '').extra ?? []), '--join'] });
    procs.push(again);
    await Promise.race([again.ready(), again.exited]);
    assert.equal(again.exitCode, null, `refused:\n${again.lastLines()}`);
    const own = new ClusterClient(addrs[f]?.grpc ?? '');
    clients.push(own);
    await until(`${f} to catch up as a voter`, 30_000, async () => {
      const [l, j] = await Promise.all([leaderClient.status({ deadlineMs: 2_000 }), own.status({ deadlineMs: 2_000 })]).catch(() => [null, null]);
      return l !== null && j !== null && j.appliedIndex >= l.commitIndex && l.members.some((m) => m.id === f && m.matchIndex > 0n) ? true : undefined;
    });
  });
});

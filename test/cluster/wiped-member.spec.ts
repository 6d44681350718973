/**
 * A voter whose data dir is lost and that comes back under its id, not
 * removed first, is refused at start (src/node/started-members.ts): its peers
 * saw it run with a log of its own, and remember it on disk. Real `serve`
 * processes: a member that starts late in a new cluster (its peers have
 * elected and committed without it) starts and catches up; once it has run,
 * and after its peers restarted (the leader that held its acknowledgement in
 * memory is gone: a new leader knows nothing of it), the same member on a new
 * empty data dir exits 2 with one line naming the peers that saw it and what
 * to do, and the cluster keeps its writes; on its own data dir it starts again.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvClient } from '../../src/client/kv-client.js';
import { freeNodeAddresses, peersFlag, type NodeAddresses } from '../harness/ports.js';
import { ServeProcess, startServes } from '../harness/serve-process.js';
import { until } from '../harness/until.js';

const IDS = ['w1', 'w2', 'w3'] as const;
type Id = (typeof IDS)[number];
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('a member back on a new data dir after it ran (real processes)', function () {
  this.timeout(180_000);
  let dir: string;
  const procs: ServeProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-wiped-'));
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a late first start, then refuses the same member on a new data dir, and takes it back on its own', async () => {
    const argsOf = (id: Id, a: Readonly<Record<Id, NodeAddresses>>, dataDir = join(dir, id)): ConstructorParameters<typeof ServeProcess>[0] => ({
      id,
      grpc: a[id].grpc,
      peer: a[id].peer,
      peers: peersFlag(a),
      dataDir,
    });
    // w1 and w3 first: they elect and commit without w2.
    const started = await startServes(['w1', 'w3'] as Id[], (id, a) => argsOf(id, a), { addresses: () => freeNodeAddresses(IDS) });
    const addrs = started.addrs as Record<Id, NodeAddresses>;
    procs.push(...Object.values<ServeProcess>(started.procs));
    let kv = new KvClient(addrs.w1.grpc);
    await until('a write committed by w1 and w3', 60_000, async () => ((await kv.put({ key: enc('before'), value: enc('1') }, { deadlineMs: 3_000 }).catch(() => null)) !== null ? true : undefined));

    // A late first start on a new data dir: not refused; it catches up.
    let w2 = new ServeProcess(argsOf('w2', addrs));
    procs.push(w2);
    await w2.ready();
    const kv2 = new KvClient(addrs.w2.grpc);
    await until('w2 caught up', 60_000, async () => ((await kv2.get({ key: enc('before'), serializable: true }, { deadlineMs: 3_000 }).catch(() => null))?.kv !== undefined ? true : undefined));
    await until('a write w2 acknowledged', 60_000, async () => ((await kv.put({ key: enc('with-w2'), value: enc('2') }, { deadlineMs: 3_000 }).catch(() => null)) !== null ? true : undefined));
    kv2.close();
    await w2.kill('SIGTERM');
    // Its peers restart: the leader's memory of w2's acknowledgements (askerMatchIndex) is gone with it.
    for (const id of ['w1', 'w3'] as Id[]) {
      const old = procs.find((p) => p.args.id === id && p.running);
      await old?.kill('SIGTERM');
      const p = new ServeProcess(argsOf(id, addrs));
      procs.push(p);
      await p.ready();
    }
    kv.close();
    kv = new KvClient(addrs.w1.grpc);
    await until('a write after the restart, without w2', 60_000, async () => ((await kv.put({ key: enc('after'), value: enc('3') }, { deadlineMs: 3_000 }).catch(() => null)) !== null ? true : undefined));

    // The same member on a new, empty data dir: refused, exit 2, one line; nothing else changes.
    const wiped = new ServeProcess(argsOf('w2', addrs, join(dir, 'w2-new')));
    procs.push(wiped);
    const startedAnyway = wiped.ready().then(
      () => assert.fail(`w2 started on a new data dir:\n${wiped.lastLines()}`),
      () => undefined,
    );
    await Promise.race([wiped.exited, startedAnyway]);
    await wiped.exited;
    assert.equal(wiped.exitCode, 2, wiped.output);
    const refusal = wiped.stderr.trim().split('\n').filter((l) => l.startsWith('snapcoord:'));
    assert.equal(refusal.length, 1, wiped.output);
    assert.match(refusal[0] ?? '', /refusing to start: the data dir is new, but (w1, w3|w1|w3) saw w2 run before with a log of its own/, wiped.output);
    assert.match(refusal[0] ?? '', /cluster remove w2/, wiped.output);
    assert.equal(Buffer.from((await kv.get({ key: enc('with-w2') }, { deadlineMs: 5_000 })).kv?.value ?? []).toString(), '2');

    // Back on its own data dir: it starts and serves.
    w2 = new ServeProcess(argsOf('w2', addrs));
    procs.push(w2);
    await w2.ready();
    const again = new KvClient(addrs.w2.grpc);
    await until('w2 serves again', 60_000, async () => ((await again.get({ key: enc('with-w2'), serializable: true }, { deadlineMs: 3_000 }).catch(() => null))?.kv !== undefined ? true : undefined));
    again.close();
    kv.close();
  });
});

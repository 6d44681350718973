/**
 * A leader whose ticks come late keeps its leadership (issue 15, restoreload33): its heartbeats go out by its
 * clock's interval, not only every heartbeatIntervalTicks ticks run (RaftNode.missedTicks, etcd-io/raft's MsgBeat).
 *
 * Under load (2 cores, load 12-25) the leader of a restore, busy installing the archive on its main thread, ran its
 * 10 ms tick timer at a fraction of its rate; counted in ticks, its heartbeats (every 3 ticks) went out every
 * 100-300 ms of the clock, while its idle followers, ticking on time, timed out after 150-300 ms: both campaigned
 * together, leadership moved and each follower gave the leader's state image up for its own install.
 *
 * Deterministic: three Nodes on one ManualClock (time moves only when the test advances it); the leader's timers
 * run only every LATE_FACTOR-th period (SlowTicks), so its ticks come LATE_FACTOR x 10 ms apart, longer than the
 * followers' longest election timeout (2 x 15 ticks); the followers' timers run on time. Counted: terms and
 * leaders, no wall clock.
 */
import assert from 'node:assert/strict';

import type { Clock, TimerHandle } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import { ManualClock } from './manual-clock.js';

const IDS = ['n1', 'n2', 'n3'] as const;
const TICK_MS = 10;
const ELECTION_TICKS = 15;
const HEARTBEAT_TICKS = 3;
/** LATE_FACTOR: the slowed node runs one interval timer in this many periods: ticks 120 ms apart (> 2 x 15 x 10 ms). */
const LATE_FACTOR = 12;

/** SlowTicks: the shared ManualClock, but while `slow` each interval timer runs only every LATE_FACTOR-th period (a busy process's late ticks). */
class SlowTicks implements Clock {
  slow = false;
  constructor(private readonly inner: ManualClock) {}
  nowMs(): number {
    return this.inner.nowMs();
  }
  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    return this.inner.setTimeout(fn, delayMs);
  }
  defer(fn: () => void): void {
    this.inner.defer(fn);
  }
  setInterval(fn: () => void, intervalMs: number): TimerHandle {
    let periods = 0;
    return this.inner.setInterval(() => {
      if (this.slow && ++periods % LATE_FACTOR !== 0) return;
      fn();
    }, intervalMs);
  }
  clearTimeout(timer: TimerHandle | undefined): void {
    this.inner.clearTimeout(timer);
  }
  sleep(delayMs: number): Promise<void> {
    return this.inner.sleep(delayMs);
  }
}

describe('node: a leader whose ticks come late', function () {
  this.timeout(60_000);
  const nodes = new Map<NodeId, Node>();
  const closers: { close(): void }[] = [];

  afterEach(async () => {
    for (const c of closers.splice(0)) c.close();
    for (const n of nodes.values()) await n.stop().catch(() => undefined);
    nodes.clear();
  });

  /** electOne: advances `clock` a tick at a time (at most 200 ticks) until every node names the same leader; it and its term. */
  async function electOne(clock: ManualClock): Promise<{ leader: NodeId; term: number }> {
    const oneLeader = (): NodeId | undefined => {
      const ls = new Set([...nodes.values()].map((n) => n.brief().leader));
      const [l] = [...ls];
      return ls.size === 1 && l !== undefined && l !== '' && nodes.get(l)?.brief().role === 'leader' ? l : undefined;
    };
    for (let i = 0; i < 200 && oneLeader() === undefined; i++) await clock.advanceSettled(TICK_MS, TICK_MS, 30);
    const leader = oneLeader();
    assert.ok(leader !== undefined, 'no leader within 200 ticks');
    return { leader, term: (nodes.get(leader) as Node).brief().term };
  }

  it('keeps its leadership: its heartbeats go out by the clock, and no follower campaigns in 3 s of it', async () => {
    const clock = new ManualClock(1_000_000);
    const clocks = new Map<NodeId, SlowTicks>();
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const own = new SlowTicks(clock);
      clocks.set(id, own);
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        transport: net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }),
        initialMembership: membership,
        timings: { tickMs: TICK_MS, electionTimeoutTicks: ELECTION_TICKS, heartbeatIntervalTicks: HEARTBEAT_TICKS },
        clock: own,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
    const { leader, term } = await electOne(clock);

    (clocks.get(leader) as SlowTicks).slow = true;
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) {
      await clock.advanceSettled(TICK_MS, TICK_MS, 30);
      for (const n of nodes.values()) {
        const b = n.brief();
        seen.add(`${b.leader} in term ${b.term}`);
      }
    }
    assert.deepEqual([...seen], [`${leader} in term ${term}`], `leaders and terms seen in 3 s with ${leader}'s ticks ${LATE_FACTOR * TICK_MS} ms apart: ${[...seen].join(', ')}`);
  });

  it('still loses it when it stops ticking: a follower elected within 2 election timeouts of its clock (failover unchanged)', async () => {
    const clock = new ManualClock(1_000_000);
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    const muted = new Set<NodeId>();
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const inner = net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) });
      const node = await Node.start({
        id,
        storage: await MemoryStorage.open(new MemoryDataDir(id)),
        // A muted node sends nothing: a dead leader, as its followers see it.
        transport: { send: (m) => void (muted.has(id) ? undefined : inner.send(m)), setPeers: (a) => inner.setPeers(a), close: () => inner.close() },
        initialMembership: membership,
        timings: { tickMs: TICK_MS, electionTimeoutTicks: ELECTION_TICKS, heartbeatIntervalTicks: HEARTBEAT_TICKS },
        clock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
    const leaderOf = (ids: readonly NodeId[]): NodeId | undefined => ids.find((id) => nodes.get(id)?.brief().role === 'leader');
    for (let i = 0; i < 200 && leaderOf(IDS) === undefined; i++) await clock.advanceSettled(TICK_MS, TICK_MS, 30);
    const old = leaderOf(IDS);
    assert.ok(old !== undefined, 'no leader within 200 ticks');
    muted.add(old);
    const rest = IDS.filter((id) => id !== old);
    let ticks = 0;
    for (; ticks < 100 && leaderOf(rest) === undefined; ticks++) await clock.advanceSettled(TICK_MS, TICK_MS, 30);
    assert.ok(leaderOf(rest) !== undefined, 'no new leader within 100 ticks of the old one going silent');
    assert.ok(ticks <= 2 * ELECTION_TICKS + 5, `a new leader after ${ticks} ticks`);
  });

  it('keeps its leadership while a save of its log waits on the disk: its heartbeats do not wait for the save', async () => {
    // B2 of docs/benchmarks.md (restoreload33): both followers timed out with every event loop responsive; the leader's
    // heartbeats waited for a Ready's save on a disk saturated by the restore. Here the leader's saves are held.
    const clock = new ManualClock(1_000_000);
    const net = new MemoryNetwork();
    const membership: Membership = { voters: [...IDS], learners: [], addresses: Object.fromEntries(IDS.map((id) => [id, `mem:${id}`])) };
    const holds = new Map<NodeId, { on: boolean; gate: Promise<void>; release: () => void }>();
    for (const id of IDS) {
      const ref: { node: Node | null } = { node: null };
      const inner = await MemoryStorage.open(new MemoryDataDir(id));
      let release = (): void => undefined;
      const hold = { on: false, gate: new Promise<void>((resolve) => (release = resolve)), release: () => release() };
      holds.set(id, hold);
      const storage = new Proxy(inner, {
        get(target, key) {
          if (key === 'save') return (b: Parameters<MemoryStorage['save']>[0]) => (hold.on ? hold.gate.then(() => target.save(b)) : target.save(b));
          const v: unknown = Reflect.get(target, key, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      const node = await Node.start({
        id,
        storage,
        transport: net.transport({ selfId: id, onMessage: (m) => ref.node?.receive(m) }),
        initialMembership: membership,
        timings: { tickMs: TICK_MS, electionTimeoutTicks: ELECTION_TICKS, heartbeatIntervalTicks: HEARTBEAT_TICKS, proposalTimeoutMs: 60_000 },
        clock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      closers.push(net.listen(`mem:${id}`, node));
    }
    const { leader, term } = await electOne(clock);
    const hold = holds.get(leader) as { on: boolean; release: () => void };
    hold.on = true;
    const write = (nodes.get(leader) as Node).propose({ op: 'put', key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') }).then(
      (r) => (r.ok ? 'applied' : `failed: ${r.error}`),
      (e: Error) => `rejected: ${e.message}`,
    );
    const seen = new Set<string>();
    try {
      for (let i = 0; i < 300; i++) {
        await clock.advanceSettled(TICK_MS, TICK_MS, 30);
        for (const n of nodes.values()) {
          const b = n.brief();
          seen.add(`${b.leader} in term ${b.term}`);
        }
      }
    } finally {
      hold.on = false;
      hold.release();
    }
    assert.deepEqual([...seen], [`${leader} in term ${term}`], `leaders and terms seen in 3 s with ${leader}'s save held: ${[...seen].join(', ')}`);
    for (let i = 0; i < 100 && (await Promise.race([write, Promise.resolve('pending')])) === 'pending'; i++) await clock.advanceSettled(TICK_MS, TICK_MS, 30);
    assert.equal(await Promise.race([write, Promise.resolve('pending')]), 'applied', 'the write held by the save is applied once it completes');
  });
});

/**
 * The five-host scenarios, each under continuous load (the chaos workload:
 * puts, linearizable gets and deletes from clients spread over every host,
 * compare-and-swap (Txn) clients,
 * plus a write-once writer), and the checks they share: the history
 * linearizable (test/chaos/linearizability.ts), every acknowledged write-once
 * key on every member, every member's state hash equal.
 *
 * Beside it, compare-and-swap clients (Txn; cas.ts) whose swap chains are
 * checked by checkCas.
 *
 * Figures (gaps, latencies, times to promotion) are returned to be printed;
 * the caller asserts only on correctness.
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { status as grpcStatus } from '@grpc/grpc-js';
import { checkHistory, type Op } from '../chaos/linearizability.js';
import { Workload, type WorkloadTarget } from '../chaos/workload.js';
import { sleep } from '../harness/until.js';
import { CasWorkload, checkCas, type CasVerdict } from './cas.js';
import { PEER_PORT, type HostCluster, type HostNode } from './cluster.js';

const enc = new TextEncoder();

/** Load: the workload over the cluster's members (a live view: a replaced member's slot follows the cluster's nodes). */
export class Load {
  readonly workload: Workload;
  readonly startedMs = performance.now();

  constructor(readonly cluster: HostCluster, seed: number, clients = 6) {
    const targets: WorkloadTarget[] = Array.from({ length: 5 }, (_, i) => ({
      get id() {
        return live(cluster)[i % Math.max(1, live(cluster).length)]?.id ?? 'none';
      },
      get kv() {
        const ns = live(cluster);
        const n = ns[i % Math.max(1, ns.length)] ?? cluster.nodes[0];
        if (n === undefined) throw new Error('no node');
        return n.kv;
      },
    }));
    this.workload = new Workload({ targets, clients, keys: 8, seed, deadlineMs: 3_000, thinkMs: 10 });
    this.workload.start();
    this.cas = new CasWorkload(() => live(cluster).map((n) => n.kv), seed);
    this.cas.start();
  }

  readonly cas: CasWorkload;

  async stop(): Promise<void> {
    await Promise.all([this.workload.stop(), this.cas.stop()]);
  }
}

/** live: the nodes the workload spreads over: those not yet removed from the membership. */
function live(c: HostCluster): HostNode[] {
  return c.nodes.filter((n) => !removed.has(n));
}
const removed = new WeakSet<HostNode>();

/** WriteStats: acknowledged writes in a window. */
export interface WriteStats {
  readonly writes: number;
  /** maxGapMs: the longest time between two consecutive acknowledged writes (and from the window's start to the first). */
  readonly maxGapMs: number;
  /** maxGapFromMs: when the longest gap began (performance.now() ms). */
  readonly maxGapFromMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** writeStats over the ops of `history` that returned within [fromMs, toMs]. */
export function writeStats(history: readonly Op[], fromMs: number, toMs: number): WriteStats {
  const ok = history.filter((o) => o.kind !== 'get' && o.outcome === 'ok' && o.returnMs >= fromMs && o.returnMs <= toMs);
  const ends = ok.map((o) => o.returnMs).sort((a, b) => a - b);
  let gap = 0;
  let gapFrom = fromMs;
  let prev = fromMs;
  for (const e of [...ends, toMs]) {
    if (e - prev > gap) {
      gap = e - prev;
      gapFrom = prev;
    }
    prev = e;
  }
  const lat = ok.map((o) => o.returnMs - o.callMs).sort((a, b) => a - b);
  const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { writes: ok.length, maxGapMs: gap, maxGapFromMs: gapFrom, p50Ms: q(0.5), p99Ms: q(0.99) };
}

/** Verdict of one scenario's closing checks. */
export interface Checks {
  readonly linearizable: string;
  readonly ops: number;
  readonly counts: Record<string, number>;
  readonly onceAcked: number;
  /** lost: acknowledged write-once keys missing on some member ("id:key"). */
  readonly lost: string[];
  /** hashes: member id -> state hash (all equal when converged). */
  readonly hashes: Record<string, string>;
  /** cas: the compare-and-swap chains' check. */
  readonly cas: CasVerdict;
}

/**
 * finish stops the load, heals the network, waits until every member caught
 * up and checks: linearizability, no lost acknowledged write, equal state hashes.
 */
export async function finish(c: HostCluster, load: Load): Promise<Checks> {
  await load.stop();
  await c.net.heal();
  const members = (await c.members()).map((m) => c.node(m.id));
  await c.waitCaughtUp(60_000);
  const verdict = checkHistory(load.workload.history);
  const lost: string[] = [];
  const hashes: Record<string, string> = {};
  for (const n of members) {
    // Serializable reads of each member's own state, after it caught up: an acked key missing there was lost.
    const found = new Set<string>();
    let start = enc.encode('once/');
    for (let page = 0; page < 100; page++) {
      const r = await whileUnavailable(() => n.kv.range({ start, end: enc.encode('once0'), limit: 10_000, serializable: true }, { deadlineMs: 60_000 })).catch((err: Error) => {
        throw new Error(`${n.id}: reading its write-once keys failed: ${err.message}`, { cause: err });
      });
      for (const kv of r.kvs) found.add(Buffer.from(kv.key).toString());
      const last = r.kvs[r.kvs.length - 1];
      if (!r.more || last === undefined) break;
      start = new Uint8Array([...last.key, 0]);
    }
    for (const k of load.workload.onceAcked) if (!found.has(k)) lost.push(`${n.id}:${k}`);
  }
  // State hashes at one moment: retry until equal (a member may still apply the last entries).
  for (let tries = 0; tries < 50; tries++) {
    for (const n of members) {
      const h = await whileUnavailable(() => n.cluster.hashState({ deadlineMs: 60_000 }));
      hashes[n.id] = `${h.hashedIndex}:${h.sha256}`;
    }
    if (new Set(Object.values(hashes)).size === 1) break;
    await sleep(200);
  }
  const bad = verdict.keys.find((k) => k.verdict !== 'ok');
  return {
    linearizable: verdict.verdict + (bad?.explanation !== undefined ? `: ${bad.key}: ${bad.explanation}` : ''),
    ops: verdict.ops,
    counts: load.workload.counts(),
    onceAcked: load.workload.onceAcked.length,
    lost,
    hashes,
    cas: checkCas(load.cas.ops),
  };
}

/**
 * whileUnavailable retries `call` while it fails UNAVAILABLE, for at most 60 s:
 * a client channel to a member that was down (restarted, moved) can still be
 * in its reconnect backoff, failing calls at once with the last connect error
 * although the member listens again (seen in CI after the move scenario).
 */
async function whileUnavailable<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if ((err as { code?: number }).code !== grpcStatus.UNAVAILABLE || Date.now() > deadline) throw err;
      await sleep(250);
    }
  }
}

/** waitMemberCaughtUp: the leader reports `id`'s match index >= its commit index when this was called. */
async function waitMemberCaughtUp(c: HostCluster, id: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  const deadline = Date.now() + timeoutMs;
  let target = 0;
  while (Date.now() < deadline) {
    const leader = await c.waitLeader(Math.max(1, deadline - Date.now())).catch(() => undefined);
    const st = leader !== undefined ? await c.status(leader) : undefined;
    if (st !== undefined) {
      if (target === 0) target = Number(st.commitIndex);
      if ((st.members.find((m) => m.id === id)?.matchIndex ?? 0) >= target) return performance.now() - t0;
    }
    await sleep(50);
  }
  throw new Error(`${id} did not catch up within ${timeoutMs} ms`);
}

/** RollingStep: one member's restart; times are performance.now() ms. */
export interface RollingStep {
  readonly id: string;
  readonly wasLeader: boolean;
  readonly stopMs: number;
  readonly exitMs: number;
  readonly listeningMs: number;
  readonly caughtUpMs: number;
  /** handedOver: the process logged that it handed leadership over before stopping. */
  readonly handedOver: boolean;
  /** stopSteps: where the stop spent its time, as the process logged it ('stopped' stepsMs: handoff, api, node), '' when not logged. */
  readonly stopSteps: string;
  /** firstWriteAfterExitMs: from its exit to the first write acknowledged after it (NaN when none). */
  readonly firstWriteAfterExitMs: number;
  /** leader and term once it caught up (a term that moved on a follower's restart means that restart disrupted the leader). */
  readonly leaderAfter: string;
  readonly termAfter: number;
}

/** RollingRestartReport: per node, how it went, and the writes over the whole restart. */
export interface RollingRestartReport {
  readonly steps: RollingStep[];
  readonly writes: WriteStats;
}

/** stopStepsOf: the stepsMs of the last 'stopped' line in a serve process's output ('' when none). */
export function stopStepsOf(output: string): string {
  const all = [...output.matchAll(/"stepsMs":(\{[^}]*\})[^\n]*"stopped"/g)];
  return all[all.length - 1]?.[1] ?? '';
}

/** firstAckAfter: ms from `t` to the first acknowledged write that returned at or after it (NaN if none). */
export function firstAckAfter(history: readonly Op[], t: number): number {
  let best = Infinity;
  for (const o of history) if (o.kind !== 'get' && o.outcome === 'ok' && o.returnMs >= t && o.returnMs < best) best = o.returnMs;
  return Number.isFinite(best) ? best - t : NaN;
}

/** describeGap: where a moment falls in the steps (which member was stopping, starting or catching up). */
export function describeAt(steps: readonly RollingStep[], t: number): string {
  for (const s of steps) {
    if (t >= s.stopMs && t < s.exitMs) return `while ${s.id}${s.wasLeader ? ' (leader)' : ''} was stopping`;
    if (t >= s.exitMs && t < s.listeningMs) return `while ${s.id}${s.wasLeader ? ' (old leader)' : ''} was down (${Math.round(t - s.exitMs)} ms after its exit)`;
    if (t >= s.listeningMs && t <= s.caughtUpMs + 1_000) return `while ${s.id} was starting and catching up`;
  }
  return 'between steps';
}

/**
 * rollingRestart: every member in turn (followers first, the leader last, as
 * an operator upgrades) gets SIGTERM (a leader hands over first), is started
 * again on the same data dir and caught up before the next one goes.
 */
export async function rollingRestart(c: HostCluster, load: Load): Promise<RollingRestartReport> {
  const fromMs = performance.now();
  const leader = await c.waitLeader();
  const order = [...c.running().filter((n) => n !== leader && !removed.has(n)), leader];
  const steps: RollingStep[] = [];
  for (const n of order) {
    const wasLeader = (await c.waitLeader()) === n;
    const stopMs = performance.now();
    const proc = n.proc;
    await c.stopNode(n, 'SIGTERM');
    const exitMs = proc?.exitedAtMs ?? performance.now();
    const handedOver = proc !== null && /leadership handed over before stopping/.test(proc.output);
    const stopSteps = stopStepsOf(proc?.output ?? '');
    await c.startNode(n);
    const listeningMs = performance.now();
    await waitMemberCaughtUp(c, n.id, 60_000);
    const caughtUpMs = performance.now();
    const after = await c.waitLeader();
    const termAfter = Number((await c.status(after))?.term ?? 0);
    steps.push({ id: n.id, wasLeader, stopMs, exitMs, listeningMs, caughtUpMs, handedOver, stopSteps, firstWriteAfterExitMs: firstAckAfter(load.workload.history, exitMs), leaderAfter: after.id, termAfter });
  }
  await sleep(500);
  return { steps, writes: writeStats(load.workload.history, fromMs, performance.now()) };
}

/** HandoffReport: per SIGTERM of a leader, the first write acknowledged after the old one exited. */
export interface HandoffReport {
  /** afterExitMs: from the old leader's exit to the first write acknowledged after it, per round. */
  readonly afterExitMs: number[];
  readonly p50Ms: number;
  /** handedOver: rounds whose old leader logged that it handed leadership over before stopping. */
  readonly handedOver: number;
  /** gapMs: per round, the longest time without an acknowledged write from the SIGTERM to 1 s after the old leader's exit. */
  readonly gapMs: number[];
  /** rounds: per round, where that gap began and where the old leader exited, in ms after the SIGTERM, and its stop steps as it logged them. */
  readonly rounds: { gapFromMs: number; exitMs: number; stopSteps: string }[];
}

/** median of finite values (NaN when none). */
export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? NaN;
}

/**
 * leaderHandoff: `rounds` times, SIGTERM the leader under the load (clients on
 * every host); the figure is the time from the old process's exit to the
 * first write acknowledged after it. The old leader is restarted and caught
 * up between rounds.
 */
export async function leaderHandoff(c: HostCluster, load: Load, rounds: number): Promise<HandoffReport> {
  const afterExitMs: number[] = [];
  const gapMs: number[] = [];
  const perRound: HandoffReport['rounds'] = [];
  let handedOver = 0;
  for (let r = 0; r < rounds; r++) {
    const leader = await c.waitLeader();
    await sleep(500);
    const proc = leader.proc;
    const termMs = performance.now();
    await c.stopNode(leader, 'SIGTERM');
    const exitMs = proc?.exitedAtMs ?? performance.now();
    if (proc !== null && /leadership handed over before stopping/.test(proc.output)) handedOver++;
    const deadline = Date.now() + 20_000;
    while (!Number.isFinite(firstAckAfter(load.workload.history, exitMs)) && Date.now() < deadline) await sleep(20);
    afterExitMs.push(firstAckAfter(load.workload.history, exitMs));
    await sleep(Math.max(0, exitMs + 1_000 - performance.now()));
    const ws = writeStats(load.workload.history, termMs, exitMs + 1_000);
    gapMs.push(ws.maxGapMs);
    perRound.push({ gapFromMs: ws.maxGapFromMs - termMs, exitMs: exitMs - termMs, stopSteps: stopStepsOf(proc?.output ?? '') });
    await c.startNode(leader);
    await waitMemberCaughtUp(c, leader.id, 60_000);
  }
  return { afterExitMs, p50Ms: median(afterExitMs), handedOver, gapMs, rounds: perRound };
}

/** ReplacementReport: a new host replacing an old one. */
export interface ReplacementReport {
  readonly oldId: string;
  readonly newId: string;
  readonly oldWas: 'leader' | 'follower' | 'dead';
  readonly stateBytes: number;
  readonly fillMs: number;
  /** toPromotionMs: from `cluster add --learner` to the promotion committed. */
  readonly toPromotionMs: number;
  /**
   * learnerSnapshotIndex: the index of the first snapshot the new node logged
   * as installed ('snapshot installed'), 0 when it installed none (it caught
   * up from a log: the check that the replacement went by snapshot fails).
   */
  readonly learnerSnapshotIndex: number;
  /** logStartBeforeJoin: per running member, the first index still in its log just before the learner joined (its latest 'snapshot taken' compactedTo + 1). */
  readonly logStartBeforeJoin: Record<string, number>;
  readonly idle: WriteStats;
  readonly during: WriteStats;
  /** rssMiB: resident memory (MiB) of the leader and the learner, sampled every 250 ms from the learner's joining to its promotion (peak), and the leader's before it joined. */
  readonly rssMiB: { leaderBefore: number; leaderPeak: number; learnerPeak: number };
}

/** rssMiBOf: a process's resident set (VmRSS) in MiB, NaN when it cannot be read (gone, no /proc). */
export async function rssMiBOf(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m === null ? NaN : Number(m[1]) / 1024;
  } catch {
    return NaN;
  }
}

/** RssSampler: the peak VmRSS of some processes, sampled every everyMs until stop(). */
class RssSampler {
  readonly peakMiB = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  constructor(pids: readonly (number | undefined)[], everyMs = 250) {
    const sample = (): void => {
      for (const pid of pids) {
        if (pid === undefined) continue;
        void rssMiBOf(pid).then((mib) => {
          if (Number.isFinite(mib)) this.peakMiB.set(pid, Math.max(this.peakMiB.get(pid) ?? 0, mib));
        });
      }
    };
    sample();
    this.timer = setInterval(sample, everyMs);
  }
  peak(pid: number | undefined): number {
    return pid === undefined ? NaN : (this.peakMiB.get(pid) ?? NaN);
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** fill writes `bytes` of incompressible values (256 KiB each) under fill/, 4 at a time, through the leader. */
export async function fill(c: HostCluster, bytes: number): Promise<number> {
  const t0 = performance.now();
  const valueBytes = 256 * 1024;
  const count = Math.ceil(bytes / valueBytes);
  let fillRetries = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < count) {
        const i = next++;
        // Patient: while a large state is snapshotted a write may miss the node's 5 s proposal timeout (the
        // key is simply written again; the fill is not part of the checked history).
        const deadline = Date.now() + 10 * 60_000;
        for (;;) {
          const leader = await c.waitLeader();
          try {
            await leader.kv.put({ key: enc.encode(`fill/${String(i).padStart(6, '0')}`), value: randomBytes(valueBytes) }, { deadlineMs: 30_000 });
            break;
          } catch (err) {
            fillRetries++;
            if (Date.now() > deadline) throw err;
            await sleep(500);
          }
        }
      }
    }),
  );
  if (fillRetries > 0) process.stdout.write(`   (fill: ${fillRetries} puts timed out and were written again)\n`);
  return performance.now() - t0;
}

/**
 * replaceNode: a new host joins as a learner (`cluster add --learner` through
 * a member), catches up (by snapshot: the state was compacted), is promoted
 * (`cluster add` again) and `old` is removed (`cluster remove`) and stopped.
 * `oldWas: 'dead'` kills old first; 'leader' picks the leader as old.
 */
export async function replaceNode(c: HostCluster, load: Load, oldWas: 'leader' | 'follower' | 'dead', stateBytes: number): Promise<ReplacementReport> {
  const leader = await c.waitLeader();
  const old = oldWas === 'leader' ? leader : (c.running().find((n) => n !== leader && !removed.has(n)) as HostNode);
  const fillMs = stateBytes > 0 ? await fill(c, stateBytes) : 0;
  // Every member's log compacted past the fill (and past index 1, where the empty learner starts): whoever leads
  // when it joins can only catch it up by snapshot.
  const logStartBeforeJoin = await waitCompacted(c, 120_000 + (stateBytes / (1024 * 1024)) * 500);
  const idleFrom = performance.now();
  await sleep(3_000);
  const idle = writeStats(load.workload.history, idleFrom, performance.now());
  if (oldWas === 'dead') await c.stopNode(old, 'SIGKILL');
  const host = await c.net.addHost();
  const members = await c.members();
  const peers = [...members.map((m) => `${m.id}=${c.node(m.id).host.name}:${PEER_PORT}`), `n${host.index}=${host.name}:${PEER_PORT}`].join(',');
  // The leader that will catch the learner up (asked before the learner runs: it knows no leader yet).
  const leaderPid = (await c.waitLeader()).proc?.proc.pid;
  const fresh = await c.prepare(host, peers);
  await c.startNode(fresh);
  const via = c.running().find((n) => n !== old && n !== fresh) as HostNode;
  const learnerPid = fresh.proc?.proc.pid;
  const leaderBefore = await rssMiBOf(leaderPid);
  const rss = new RssSampler([leaderPid, learnerPid]);
  const t0 = performance.now();
  let toPromotionMs: number;
  try {
    await via.cluster.addMember(fresh.id, `${host.name}:${PEER_PORT}`, true, { deadlineMs: 30_000 });
    await waitMemberCaughtUp(c, fresh.id, 30 * 60_000);
    await retry(() => via.cluster.addMember(fresh.id, `${host.name}:${PEER_PORT}`, false, { deadlineMs: 30_000 }));
    toPromotionMs = performance.now() - t0;
  } finally {
    rss.stop();
  }
  const rssMiB = { leaderBefore, leaderPeak: rss.peak(leaderPid), learnerPeak: rss.peak(learnerPid) };
  const during = writeStats(load.workload.history, t0, performance.now());
  // From its own log, not a status call (one that timed out on a loaded machine read as 0 before).
  const learnerSnapshotIndex = snapshotsInstalled(fresh.proc?.output ?? '')[0] ?? 0;
  // A leader removing itself may answer with an error once the change committed: a retry then finds it gone.
  await retry(() => via.cluster.removeMember(old.id, { deadlineMs: 30_000 }).catch((err: Error) => {
    if (/is not a member/.test(err.message)) return undefined;
    throw err;
  }));
  removed.add(old);
  await c.stopNode(old, 'SIGTERM');
  return { oldId: old.id, newId: fresh.id, oldWas, stateBytes, fillMs, toPromotionMs, learnerSnapshotIndex, logStartBeforeJoin, idle, during, rssMiB };
}

/** snapshotsInstalled: the indexes of the snapshots a serve process logged as installed, in order. */
export function snapshotsInstalled(output: string): number[] {
  return [...output.matchAll(/"index":(\d+)[^\n]*"msg":"snapshot installed"/g)].map((m) => Number(m[1]));
}

/** logStartOf: the first index left in a serve process's log after its latest snapshot ('snapshot taken' compactedTo + 1; 1 when none logged). */
export function logStartOf(output: string): number {
  const all = [...output.matchAll(/"compactedTo":(-?\d+)[^\n]*"msg":"snapshot taken"/g)];
  const last = all[all.length - 1];
  return last === undefined ? 1 : Math.max(1, Number(last[1]) + 1);
}

/**
 * waitCompacted: until every running member has taken a snapshot past the
 * fill and compacted its log past the fill's first entry (its latest
 * 'snapshot taken' line: compactedTo >= the commit index before the fill's
 * end, so its log no longer holds index 1, where an empty learner starts).
 * Small writes move the log on meanwhile (a snapshot every
 * --snapshot-entries). Resolves with each member's first log index; throws
 * after timeoutMs.
 */
async function waitCompacted(c: HostCluster, timeoutMs: number): Promise<Record<string, number>> {
  const leader = await c.waitLeader();
  const target = Number((await c.status(leader))?.commitIndex ?? 0);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const members = c.running().filter((n) => !removed.has(n));
    const starts = Object.fromEntries(members.map((n) => [n.id, logStartOf(n.proc?.output ?? '')]));
    if (members.every((n) => (starts[n.id] ?? 1) > target)) return starts;
    const now = await c.waitLeader();
    await Promise.all(Array.from({ length: 50 }, (_, i) => now.kv.put({ key: enc.encode(`pad/${i}`), value: enc.encode('x') }, { deadlineMs: 5_000 }).catch(() => undefined)));
  }
  throw new Error(`the logs were not compacted past index ${target} within ${Math.round(timeoutMs / 1000)} s`);
}

async function retry<T>(f: () => Promise<T>, tries = 10): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await f();
    } catch (err) {
      if (i >= tries) throw err;
      await sleep(500);
    }
  }
}

/** PartitionReport: how long the majority side took to have a leader again, per cut. */
export interface PartitionReport {
  readonly cuts: { what: string; newLeaderMs: number; oldLeader: string; newLeader: string }[];
  readonly writes: WriteStats;
}

/**
 * partitions: (1) the leader and one follower cut off from the other three,
 * (2) after healing, the new leader alone; each held `holdMs`, then healed and
 * caught up. Clients on every host keep going (the minority's fail or time out).
 */
export async function partitions(c: HostCluster, load: Load, holdMs: number): Promise<PartitionReport> {
  const fromMs = performance.now();
  const cuts: PartitionReport['cuts'] = [];
  for (const what of ['leader+1 | 3', 'leader | 4'] as const) {
    const leader = await c.waitLeader();
    const rest = c.running().filter((n) => n !== leader && !removed.has(n));
    const minority = what === 'leader | 4' ? [leader] : [leader, rest[0] as HostNode];
    const majority = c.running().filter((n) => !minority.includes(n) && !removed.has(n));
    const t0 = performance.now();
    await c.net.partition(
      minority.map((n) => n.host),
      majority.map((n) => n.host),
    );
    const next = await c.waitLeader(30_000, majority);
    const newLeaderMs = performance.now() - t0;
    await sleep(Math.max(0, holdMs - newLeaderMs));
    await c.net.heal();
    await c.waitCaughtUp(60_000);
    cuts.push({ what, newLeaderMs, oldLeader: leader.id, newLeader: next.id });
  }
  void load;
  return { cuts, writes: writeStats(load.workload.history, fromMs, performance.now()) };
}

/** MoveReport: a member back on a new address under the same DNS name. */
export interface MoveReport {
  readonly id: string;
  readonly oldIp: string;
  readonly newIp: string;
  /** reachedMs: from its listening on the new address to the leader seeing it caught up (the leader re-resolved its name). */
  readonly reachedMs: number;
}

/**
 * moveHost: a follower stops, its host gets a new address (every /etc/hosts
 * updated, the name kept, as a pod rescheduled with a new IP), it starts
 * again listening there; the others must find it by re-resolving its name.
 */
export async function moveHost(c: HostCluster): Promise<MoveReport> {
  const leader = await c.waitLeader();
  const n = c.running().find((x) => x !== leader && !removed.has(x)) as HostNode;
  const oldIp = n.host.ip;
  await c.stopNode(n, 'SIGTERM');
  // Writes while it is away, so it has something to catch up.
  for (let i = 0; i < 20; i++) await leader.kv.put({ key: enc.encode(`move/${i}`), value: enc.encode('x') }, { deadlineMs: 5_000 }).catch(() => undefined);
  // The clients move to the new address before the old one goes: closed, a client connecting to the old address
  // then kept `npm run test:hosts` alive ~1.5-2 min after its last check (the kernel's SYN retries to an address gone).
  const newIp = await c.net.moveAddress(n.host, (ip) => c.readdress(n, ip));
  await c.issue(n.id, n.host);
  await c.startNode(n);
  const t0 = performance.now();
  await waitMemberCaughtUp(c, n.id, 120_000);
  return { id: n.id, oldIp, newIp, reachedMs: performance.now() - t0 };
}

/** ClockReport: wall-clock steps on two hosts under load. */
export interface ClockReport {
  /** steps: what was done, and whether the process said it saw the step (clock-offset.ts on stderr). */
  readonly steps: { what: string; id: string; seen: boolean }[];
  readonly writes: WriteStats;
}

/**
 * clockJumps: the leader's wall clock jumps an hour ahead, then a follower's an
 * hour back, then both step back to the real time, each held `holdMs`, under
 * the load. A namespace has no clock of its own: the step is a process-level
 * offset of Date (clock-offset.ts); monotonic time is untouched, as on a real host.
 */
export async function clockJumps(c: HostCluster, load: Load, holdMs: number): Promise<ClockReport> {
  const fromMs = performance.now();
  const leader = await c.waitLeader();
  const follower = c.running().find((n) => n !== leader && !removed.has(n)) as HostNode;
  const steps: ClockReport['steps'] = [];
  const HOUR_MS = 3_600_000;
  for (const [what, n, offsetMs] of [
    ['leader +1 h', leader, HOUR_MS],
    ['follower -1 h', follower, -HOUR_MS],
    ['leader back (-1 h step)', leader, 0],
    ['follower back (+1 h step)', follower, 0],
  ] as const) {
    const proc = n.proc;
    await c.setClockOffset(n, offsetMs);
    await sleep(holdMs);
    const seen = proc !== null && proc.output.includes(`clock-offset: wall clock stepped to real ${offsetMs >= 0 ? '+' : ''}${offsetMs} ms`);
    steps.push({ what, id: n.id, seen });
  }
  return { steps, writes: writeStats(load.workload.history, fromMs, performance.now()) };
}

/** LinkFaultsReport: what each kernel fault did to the leadership, and the writes over all of them. */
export interface LinkFaultsReport {
  readonly faults: { what: string; leaderBefore: string; leaderAfter: string }[];
  readonly writes: WriteStats;
}

/**
 * linkFaults: kernel faults one after another, each held `holdMs`, then
 * healed and caught up: a one-way drop (the leader's packets to one follower
 * are dropped, the follower's still arrive), 20 % packet loss into the
 * leader's host, and a follower's link taken down (its cable pulled: clients
 * lose it too).
 */
export async function linkFaults(c: HostCluster, load: Load, holdMs: number): Promise<LinkFaultsReport> {
  const fromMs = performance.now();
  const faults: LinkFaultsReport['faults'] = [];
  const kinds = ['one-way leader -> follower', '20 % loss into the leader', 'a follower link down'] as const;
  for (const what of kinds) {
    const leader = await c.waitLeader();
    const follower = c.running().find((n) => n !== leader && !removed.has(n)) as HostNode;
    if (what === 'one-way leader -> follower') await c.net.oneWay(leader.host, follower.host);
    else if (what === '20 % loss into the leader') await c.net.loss(leader.host, 20);
    else await c.net.linkDown(follower.host);
    await sleep(holdMs);
    await c.net.heal();
    await c.waitCaughtUp(60_000);
    faults.push({ what, leaderBefore: leader.id, leaderAfter: (await c.waitLeader()).id });
  }
  return { faults, writes: writeStats(load.workload.history, fromMs, performance.now()) };
}

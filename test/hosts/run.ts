/**
 * `npm run test:hosts [-- --full] [-- --keep]`: the five-host scenarios end to
 * end, figures printed (never asserted on time), exit 1 when a correctness
 * check fails (history not linearizable, an acknowledged write lost, state
 * hashes differing, a handoff that did not happen, a learner that did not
 * catch up by snapshot). Exit 0 with a "skipped" line where network
 * namespaces are unavailable (not root, no iproute2).
 *
 * Bounded (default, what CI runs through test/hosts/hosts.spec.ts): five
 * hosts, one rolling restart (its last step SIGTERMs the leader), a 2|3 and a 1|4 partition,
 * a one-way drop, 20 % loss and a link down (nftables, ip link), one
 * replacement of the leader with an 8 MiB state, wall-clock jumps of
 * +-1 h on two hosts, one host back on a new address. --full: 10 leader SIGTERMs, replacements of the leader with 1 GiB,
 * then of a dead node and of a follower with 64 MiB. --only=rolling,handoff,
 * partition,links,replace,clock,move runs just those (handoff: 3 rounds, 10 with --full);
 * --replace-mib=N replaces only the leader, with N MiB of state (the figures: fill, time from
 * the learner's joining to its promotion, write latency idle and during, RSS of
 * leader and learner); --snapshot-entries=N sets every node's
 * --snapshot-entries (each snapshot writes the whole state: 4000 for 1 GiB),
 * with no --snapshot-log-bytes bound;
 * --seed=N replays a workload. Measured 1 GiB replacement:
 * `npm run test:hosts -- --only=replace --replace-mib=1024 --snapshot-entries=4000`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { HostCluster } from './cluster.js';
import { HostNetwork, closeAllSync, netnsUnavailable } from './netns.js';
import { Load, clockJumps, describeAt, finish, leaderHandoff, linkFaults, median, moveHost, partitions, replaceNode, rollingRestart, type Checks, type ClockReport, type HandoffReport, type LinkFaultsReport, type MoveReport, type PartitionReport, type ReplacementReport, type RollingRestartReport } from './scenarios.js';

export interface HostRunOptions {
  readonly full: boolean;
  readonly seed: number;
  /** log: progress and figures (default: stdout). */
  readonly log?: (line: string) => void;
  /** keep: leave the data directory (its path is printed). */
  readonly keep?: boolean;
  /** replaceBytes: replace only the leader, with this much state (overrides the plan of --full and of the bounded run). */
  readonly replaceBytes?: number;
  /** snapshotEntries: every node's --snapshot-entries (default HOST_SERVE_FLAGS' 500; larger for a GiB state, which each snapshot writes whole). */
  readonly snapshotEntries?: number;
  /** only: run just these scenarios (default all): rolling, handoff, partition, replace, clock, move. */
  readonly only?: readonly string[];
}

export interface HostRunReport {
  readonly faults: { nft: string; delay: string };
  readonly rolling: RollingRestartReport;
  /** handoff: the extra leader SIGTERM rounds (--full; none in the bounded run, whose rolling restart stops the leader once). */
  readonly handoff: HandoffReport;
  readonly partition: PartitionReport | null;
  readonly replacements: ReplacementReport[];
  readonly links: LinkFaultsReport | null;
  readonly clock: ClockReport | null;
  readonly move: MoveReport | null;
  readonly checks: Checks;
  /** problems: failed correctness checks, empty when all passed. */
  readonly problems: string[];
}

function problemsOf(c: Checks): string[] {
  const p: string[] = [];
  if (c.linearizable !== 'ok') p.push(`history not linearizable: ${c.linearizable}`);
  if (c.lost.length > 0) p.push(`${c.lost.length} acknowledged writes lost (first: ${c.lost.slice(0, 5).join(', ')})`);
  if (new Set(Object.values(c.hashes)).size !== 1) p.push(`state hashes differ: ${JSON.stringify(c.hashes)}`);
  if (c.ops === 0) p.push('no operation was checked');
  for (const v of c.cas.violations.slice(0, 5)) p.push(`compare-and-swap: ${v}`);
  if (c.cas.swapped === 0) p.push('no compare-and-swap succeeded');
  return p;
}

const mib = (v: number): string => (Number.isFinite(v) ? `${Math.round(v)} MiB` : 'n/a');
const ms = (v: number): string => (Number.isFinite(v) ? `${Math.round(v)} ms` : 'n/a');

/** runHostScenarios makes the network and the cluster, runs every scenario in turn, cleans everything up. */
export async function runHostScenarios(opts: HostRunOptions): Promise<HostRunReport> {
  const log = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-hosts-'));
  const net = await HostNetwork.create(5);
  let cluster: HostCluster | null = null;
  let load: Load | null = null;
  try {
    log(`hosts: ${net.hosts.map((h) => `${h.name}=${h.ip}`).join(' ')} (bridge ${net.bridge} ${net.bridgeIp}), data ${dir}`);
    log(`faults: nftables ${net.faults.nft === '' ? 'yes' : `NO (${net.faults.nft})`}; netem delay ${net.faults.delay === '' ? 'yes' : `NO (${net.faults.delay})`}`);
    const t0 = Date.now();
    // --snapshot-entries=N alone decides (no --snapshot-log-bytes bound): a GiB state of 256 KiB values would otherwise be
    // snapshotted whole every 64 of them.
    const snapshotFlags = opts.snapshotEntries !== undefined ? ['--snapshot-entries', String(opts.snapshotEntries), '--snapshot-log-bytes', '0'] : [];
    cluster = await HostCluster.start({ net, dir, members: 5, ...(snapshotFlags.length > 0 ? { extra: snapshotFlags } : {}) });
    const c = cluster;
    const leader0 = await c.waitLeader(60_000);
    log(`cluster up in ${Date.now() - t0} ms, leader ${leader0.id}`);

    // One load for the whole run (one history: the workload's keys and values are unique only within it).
    load = new Load(c, opts.seed);
    const l = load;
    const problems: string[] = [];

    const want = (name: string): boolean => opts.only === undefined || opts.only.includes(name);
    log('-- rolling restart of five nodes (SIGTERM, followers first, leader last)');
    const rolling: RollingRestartReport = want('rolling') ? await rollingRestart(c, l) : { steps: [], writes: { writes: 0, maxGapMs: NaN, maxGapFromMs: 0, p50Ms: NaN, p99Ms: NaN } };
    for (const s of rolling.steps) {
      log(
        `   ${s.id}${s.wasLeader ? ' (leader)' : ''}: stop took ${ms(s.exitMs - s.stopMs)} (${s.stopSteps === '' ? 'steps not logged' : `steps ${s.stopSteps}`}), down ${ms(s.listeningMs - s.exitMs)}, caught up ${ms(s.caughtUpMs - s.listeningMs)} after start; then leader ${s.leaderAfter} term ${s.termAfter}` +
          (s.wasLeader ? `; handed over: ${s.handedOver ? 'yes' : 'NO'}; first write acked ${ms(s.firstWriteAfterExitMs)} after its exit` : ''),
      );
      if (s.wasLeader && !s.handedOver) problems.push(`the leader ${s.id} did not hand leadership over on SIGTERM`);
    }
    const w = rolling.writes;
    log(`   writes: ${w.writes} acked; longest gap between two acked writes ${ms(w.maxGapMs)} (target <= 1000 ms) ${describeAt(rolling.steps, w.maxGapFromMs)}; p50 ${ms(w.p50Ms)} p99 ${ms(w.p99Ms)}`);

    const rounds = !want('handoff') ? 0 : opts.full ? 10 : opts.only !== undefined ? 3 : 0;
    let handoff: HandoffReport = { afterExitMs: [], p50Ms: NaN, handedOver: 0, gapMs: [], rounds: [] };
    if (rounds > 0) {
      log(`-- leader SIGTERM handoff x${rounds} under load`);
      handoff = await leaderHandoff(c, l, rounds);
      log(`   first write acked after the old leader's exit: ${handoff.afterExitMs.map(ms).join(', ')}; p50 ${ms(handoff.p50Ms)} (target <= 100 ms); handed over ${handoff.handedOver}/${rounds}`);
      log(`   longest time without an acked write from the SIGTERM to 1 s after the exit: ${handoff.gapMs.map(ms).join(', ')}; p50 ${ms(median(handoff.gapMs))}`);
      for (const r of handoff.rounds) log(`     gap from +${ms(r.gapFromMs)}, exit at +${ms(r.exitMs)} after the SIGTERM; stop steps ${r.stopSteps === '' ? 'not logged' : r.stopSteps}`);
      if (handoff.handedOver !== rounds) problems.push(`leadership handed over in ${handoff.handedOver} of ${rounds} SIGTERMs`);
    }

    let partition: PartitionReport | null = null;
    if (!want('partition')) log('-- partitions not asked for');
    else if (net.faults.nft !== '') log(`-- partitions SKIPPED: nftables unavailable: ${net.faults.nft}`);
    else {
      log('-- partitions: leader+1 from 3, then the leader alone (nftables), healed');
      partition = await partitions(c, l, 3_000);
      for (const cut of partition.cuts) log(`   ${cut.what}: ${cut.oldLeader} -> ${cut.newLeader}, majority leader after ${ms(cut.newLeaderMs)}`);
      log(`   writes: longest gap ${ms(partition.writes.maxGapMs)}, p99 ${ms(partition.writes.p99Ms)}`);
    }
    let links: LinkFaultsReport | null = null;
    if (!want('links')) log('-- link faults not asked for');
    else if (net.faults.nft !== '') log(`-- one-way drops and loss SKIPPED: nftables unavailable: ${net.faults.nft}`);
    else {
      log('-- kernel link faults: one-way drop leader -> follower, 20 % loss into the leader, a follower link down');
      links = await linkFaults(c, l, 3_000);
      for (const f of links.faults) log(`   ${f.what}: leader ${f.leaderBefore} -> ${f.leaderAfter}`);
      log(`   writes: longest gap ${ms(links.writes.maxGapMs)}, p99 ${ms(links.writes.p99Ms)}`);
    }
    if (net.faults.delay !== '') log(`-- delay SKIPPED: ${net.faults.delay}`);

    const replacements: ReplacementReport[] = [];
    const plan: ['leader' | 'follower' | 'dead', number][] = opts.replaceBytes !== undefined
      ? [['leader', opts.replaceBytes]]
      : opts.full
      ? [
          ['leader', 1024 * 1024 * 1024],
          ['dead', 64 * 1024 * 1024],
          ['follower', 64 * 1024 * 1024],
        ]
      : [['leader', 8 * 1024 * 1024]];
    for (const [oldWas, bytes] of want('replace') ? plan : []) {
      log(`-- replace the ${oldWas} with a new host (${bytes / 1024 / 1024} MiB state)`);
      const rr = await replaceNode(c, l, oldWas, bytes);
      log(`   logs compacted before the learner joined (first index per member): ${Object.entries(rr.logStartBeforeJoin).map(([id, i]) => `${id} ${i}`).join(', ')}`);
      log(`   ${rr.oldId} -> ${rr.newId}: fill ${ms(rr.fillMs)}; learner added -> promoted ${ms(rr.toPromotionMs)}; learner installed a snapshot at index ${rr.learnerSnapshotIndex}`);
      log(`   RSS: leader ${mib(rr.rssMiB.leaderBefore)} before the learner joined, peak ${mib(rr.rssMiB.leaderPeak)} until its promotion; learner peak ${mib(rr.rssMiB.learnerPeak)}`);
      log(`   write latency idle p50 ${ms(rr.idle.p50Ms)} p99 ${ms(rr.idle.p99Ms)}; during p50 ${ms(rr.during.p50Ms)} p99 ${ms(rr.during.p99Ms)}, longest gap ${ms(rr.during.maxGapMs)}`);
      if (rr.learnerSnapshotIndex === 0) problems.push(`${rr.newId} did not catch up by snapshot (it logged no 'snapshot installed')`);
      const members = await c.members();
      if (members.some((m) => m.id === rr.oldId)) problems.push(`${rr.oldId} is still a member`);
      if (!members.some((m) => m.id === rr.newId && !m.learner)) problems.push(`${rr.newId} is not a voter`);
      replacements.push(rr);
    }

    let clock: ClockReport | null = null;
    if (want('clock')) {
      log('-- wall-clock jumps (process-level Date offset: a namespace has no clock of its own): leader +1 h, a follower -1 h, both back');
      clock = await clockJumps(c, l, 3_000);
      for (const s of clock.steps) {
        log(`   ${s.what} on ${s.id}: ${s.seen ? 'seen by the process' : 'NOT seen by the process'}`);
        if (!s.seen) problems.push(`clock step "${s.what}" did not reach ${s.id}`);
      }
      log(`   writes: ${clock.writes.writes} acked, longest gap ${ms(clock.writes.maxGapMs)}, p99 ${ms(clock.writes.p99Ms)}`);
    }

    let move: MoveReport | null = null;
    if (want('move')) {
      log('-- a host back on a new address under the same name (peers re-resolve --peers DNS names)');
      move = await moveHost(c);
      log(`   ${move.id}: ${move.oldIp} -> ${move.newIp}; the leader saw it caught up ${ms(move.reachedMs)} after it listened again`);
    }

    log('-- closing checks (load stopped, network healed, members caught up)');
    load = null;
    const checks = await finish(c, l);
    log(`   linearizable ${checks.linearizable} (${checks.ops} ops ${JSON.stringify(checks.counts)}), write-once acked ${checks.onceAcked}, lost ${checks.lost.length}, hashes ${new Set(Object.values(checks.hashes)).size === 1 ? 'equal' : 'DIFFER'}`);
    log(`   compare-and-swap: ${checks.cas.swapped} swapped, ${checks.cas.refused} refused (compare false), ${checks.cas.unknown} unknown; chains ${checks.cas.ok ? 'ok' : `VIOLATED (${checks.cas.violations.length})`}`);
    problems.push(...problemsOf(checks));
    for (const p of problems) log(`PROBLEM: ${p}`);
    log(problems.length === 0 ? 'all checks passed' : `${problems.length} PROBLEM(S)`);
    return { faults: net.faults, rolling, handoff, partition, links, replacements, clock, move, checks, problems };
  } finally {
    const l = load as Load | null;
    if (l !== null) await l.stop().catch(() => undefined);
    if (cluster !== null) await cluster.stop();
    await net.close();
    if (opts.keep === true) log(`data kept in ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const why = netnsUnavailable();
  if (why !== '') {
    process.stdout.write(`test:hosts skipped: ${why}\n`);
    return;
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      closeAllSync();
      process.exit(130);
    });
  }
  const seedArg = args.find((a) => a.startsWith('--seed='));
  const seed = seedArg !== undefined ? Number(seedArg.slice('--seed='.length)) : Date.now() % 1_000_000;
  process.stdout.write(`seed ${seed}${args.includes('--full') ? ' (full)' : ''}\n`);
  const onlyArg = args.find((a) => a.startsWith('--only='));
  const only = onlyArg?.slice('--only='.length).split(',');
  const mibArg = args.find((a) => a.startsWith('--replace-mib='));
  const replaceBytes = mibArg !== undefined ? Number(mibArg.slice('--replace-mib='.length)) * 1024 * 1024 : undefined;
  if (replaceBytes !== undefined && !(replaceBytes >= 0)) throw new Error(`--replace-mib: not a number: ${mibArg}`);
  const entriesArg = args.find((a) => a.startsWith('--snapshot-entries='));
  const snapshotEntries = entriesArg !== undefined ? Number(entriesArg.slice('--snapshot-entries='.length)) : undefined;
  if (snapshotEntries !== undefined && !(Number.isInteger(snapshotEntries) && snapshotEntries > 0)) throw new Error(`--snapshot-entries: not a positive integer: ${entriesArg}`);
  const report = await runHostScenarios({
    full: args.includes('--full'),
    seed,
    keep: args.includes('--keep'),
    ...(only !== undefined ? { only } : {}),
    ...(replaceBytes !== undefined ? { replaceBytes } : {}),
    ...(snapshotEntries !== undefined ? { snapshotEntries } : {}),
  });
  process.exitCode = report.problems.length === 0 ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}

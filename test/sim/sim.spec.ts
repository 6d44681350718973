/**
 * The simulator on the real node as CI runs it: a bounded campaign (SIM_SEEDS,
 * default 300: half of 3 nodes, half of 5, on worker threads) with every fault
 * kind — network, crashes, a faulty disk, membership changes, retries — must
 * show no violation of Raft's safety properties (Raft §5.2–§5.4, Figure 3),
 * the client histories, the state hashes and liveness after the heal; and the
 * broken Raft cores (broken.ts, run inside the real node) must each be caught
 * within a bounded number of seeds. A failure names the property and prints
 * the command that replays the seed.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';

import type { NodeControls, NodeScenario, NodeSimStats } from './node-cluster.js';
import { runNodeCampaign, runNodeSeed } from './node-run.js';
import { RESTORE_CHURN } from './node-cluster.js';
import { runOnWorkers } from './node-pool.js';
import { SeededRng } from '../harness/rng.js';

const SEEDS = Number(process.env.SIM_SEEDS ?? 300);
const FROM = Number(process.env.SIM_FROM ?? 1);

describe('sim: a bounded campaign on the real node', function () {
  this.timeout(300_000);

  for (const nodes of [3, 5]) {
    const count = Math.ceil(SEEDS / 2);
    it(`keeps every safety property and recovers liveness over ${count} faulty seeds of ${nodes} nodes`, async () => {
      const totals = await runOnWorkers({ from: FROM, count, nodes, controls: {}, workers: Math.min(2, availableParallelism()) });
      assert.equal(totals.seeds, count);
      assert.deepEqual(totals.failures.map((f) => f.message), []);
    });
  }
});

describe('sim: a faulty snapshot disk (sim-snapshot-io.ts) on the real node', function () {
  this.timeout(300_000);

  it('EIO and ENOSPC on its calls, lost unsynced bytes and directory entries at a power loss, and corrupt archives happen, and every seed keeps every property', async () => {
    const scenario = { snapErrorChance: 0.01, snapEnospcChance: 0.002, snapPowerLossChance: 1, snapCorruptChance: 0.2, snapshotEntries: 10, crashMeanMs: 300 };
    const totals = { errors: 0, losses: 0, corruptions: 0, snapshots: 0 };
    const summary = await runNodeCampaign({
      from: 1,
      count: 16,
      nodes: 3,
      scenario,
      onResult: (r) => {
        totals.errors += r.stats.snapshotDiskErrors;
        totals.losses += r.stats.snapshotDiskLosses;
        totals.corruptions += r.stats.snapshotCorruptions;
        totals.snapshots += r.stats.snapshots;
      },
    });
    assert.deepEqual(summary.failures.map((f) => f.message), []);
    assert.ok(totals.errors > 0 && totals.losses > 0 && totals.corruptions > 0 && totals.snapshots > 0, JSON.stringify(totals));
  });

  // Regression seeds the campaigns found, each fixed in src (999059 in the simulator: it drew a loss no deployment survives;
  // the default scenario draws these faults; `draws` names the count in the seed's stats that shows it still exercises its
  // case: snapshot disk errors unless said; `shows`, a line of the seed's trace that shows the event it is pinned for).
  // Re-pinned when the faults came to be drawn per site (draw-sites.ts: every seed's trace changed once): each seed
  // below is a new one that draws the event its first seed (in parentheses) was found with. `shows` makes a seed that
  // no longer draws its event fail here, to be re-pinned, instead of passing without testing anything (5 of the 18
  // old seeds no longer showed theirs before the change: 30441, 30385, 41406, 81992, 210903). With a commit learned
  // from a heartbeat applied at once (node.ts, not at the next tick) 2 of the 18 moved and were re-pinned (48 -> 56,
  // 203 -> 290): followers apply, snapshot and report their applied index a tick earlier, so a leader's membership
  // changes and the snapshot disks' calls fall elsewhere in time and take other draws of their sites.
  // Keeping a snapshot just created open with what was written (SnapshotStore.openWritten) moved 1 (1679 -> 1389):
  // it takes away two reads per snapshot created, one of them a meta.json opened for reading, the very site whose
  // EIO failed 1679's install ("cannot read meta.json"), so that site's later draws fell on other calls.
  // Commit statements (an attest entry after each membership change, src/node/membership-proofs.ts) moved every trace
  // with membership changes: 8 pins no longer drew their event and were re-pinned by the same search (the first seed
  // from 1 that draws it and shows its line): 194 -> 95, 16186 -> 1286, 123004 -> 6, 358 -> 6 (its line with any ids:
  // n1 vouched for n6 by n2), 1406 -> 9, 290 -> 101, and the negative controls 511, 560 below.
  // `scenarioOf`: the pin runs in the scenario that seed draws (717880's: restores, membership changes, lost restorers),
  // `scenario`'s overrides on top; its replay command says so (--scenario-of, --scenario KEY=VALUE).
  const lists: { seed: number; nodes: number; what: string; draws?: keyof NodeSimStats; shows?: RegExp; scenarioOf?: number; scenario?: Partial<NodeScenario>; controls?: NodeControls }[] = [
    { seed: 1669, nodes: 3, what: '(20895) an EIO while installing a fetched snapshot no longer removes it (the log was reset to it: the node could not start)', shows: /a fetched snapshot failed to install \(state unchanged\).*sim disk/ },
    { seed: 8, nodes: 3, what: '(20631) the same on a restart: the log compacted to 81 and the snapshot at 81 removed for an EIO, the node could not start', shows: /did not start: snapshot store.*sim disk/ },
    { seed: 24, nodes: 3, what: '(30441) a snapshot found stored after its rename reported EIO is made durable before the log is compacted against it', shows: /EIO: i\/o error, rename '[^']*\/snapshots\/store\// },
    { seed: 56, nodes: 3, what: '(30385) an EIO reading back the snapshot a restore wrote beside its install is logged (it rejected unhandled: the process crashed)', shows: /the copy of a restore as a snapshot failed.*cannot read.*sim disk/ },
    { seed: 32, nodes: 3, what: '(41406) a restore archive its own disk damaged after staging is fetched again, not taken for refused content (the node skipped a restore the others applied)', draws: 'snapshotCorruptions' as const, shows: /snapshot disk corrupted \/sim\/n\d+\/snapshots\/uploads\// },
    { seed: 4, nodes: 5, what: '(92505) a follower installing a snapshot whose last entry its log holds compacts nothing it has not applied (entries 9 and 10 were applied after the log was compacted to 19)', shows: /snapshot installed/ },
    { seed: 511, nodes: 3, what: '(81992) a follower holding a restore entry whose archive every member that applied it dropped installs a snapshot in its place (it waited for the archive for ever)', draws: 'restoresApplied' as const, shows: /restore: no member gave the archive/ },
    { seed: 1389, nodes: 3, what: '(20880) a follower whose install failed asks its leader for a snapshot again (the member that offered it was lost: the cluster stalled)', shows: /a fetched snapshot failed to install \(state unchanged\); asking the leader for a snapshot again/ },
    { seed: 295, nodes: 3, what: '(1173062) a snapshot fetched again while its stored copy was damaged (its scrub could not quarantine it: EIO) replaces that copy (the damaged one was kept, the bytes received dropped, and the install failed)', draws: 'snapshotCorruptions' as const, shows: /scrub could not read a stored snapshot.*sim disk/ },
    // Seeds 28291 and 28325 found the given-up adoption's bug; since membership changes wait for a quorum to apply a
    // restore (717880 below) the removal that led them there is held. 28369 and 1000578 (5 nodes) drew it until the
    // faults were drawn per site; none of 2,000 seeds of 5 nodes (nor of 3) does in the default scenario, so these two
    // run seed 717880's scenario, where it is common.
    { seed: 14, nodes: 3, scenarioOf: 717880, what: '(28369) a follower whose fetch of the leader\'s snapshot of a restore stalls (its source gone) gives it up (before the fix of 28291 and 28325 its automatic snapshots were then held for ever: a learner joining later never got a snapshot)', draws: 'adoptionsGivenUp' as const },
    { seed: 210, nodes: 3, scenarioOf: 717880, what: '(1000578) the same', draws: 'adoptionsGivenUp' as const },
    { seed: 163, nodes: 3, what: '(1651364) a lone follower catching up one entry per append (maxAppendBytes 1) is sent a full pipeline after each ack that commits, not one append (230 entries took 4 s: no write committed after healing)', draws: 'deadDisks' as const },
    { seed: 10, nodes: 5, what: '(210903) a leader whose state holds a record that does not verify stops at its first snapshot (every snapshot failed on it and was retried: a learner that joined later was never sent one and stayed at applied 0)', draws: 'deadDisks' as const, shows: /snapshot read: block checksum mismatch/ },
    { seed: 7, nodes: 5, what: '(1171393) a follower waiting for the state image of a restore from a leader that lost leadership gives up and loads its archive (its applies waited up to 130 s, as leader of the next term too: no write committed after healing)', draws: 'imageFallbacks' as const, shows: /state image was not taken.*"err":"[^"]*(leader|died with)/ },
    // Since membership changes wait for a restore's quorum (717880 below) this seed no longer adds the voter it counted
    // on; without that wait (a test-only bug) it replays the run that found the simulator's mistake.
    // 999059 drew it until the faults were drawn per site; then 203, since heartbeat-kick 290 draws it in 999059's
    // scenario (none of 2,000 seeds of the default one did); 101 since commit statements, 31 since a leader's heartbeats
    // leave before its save as its appends do (the message timing moved 101's trajectory: the first seed from 1 that draws it).
    { seed: 31, nodes: 5, scenarioOf: 999059, what: '(999059) the simulator loses a voter for good only if every configuration the leader\'s log may yet fall back to can spare it (it counted on an uncommitted one naming a 5th voter: 2 of the 4 voters that stayed were lost and no election could be won)', draws: 'lossesHeldBack' as const, controls: { nodeBugs: { changesIgnoreRestores: true } } },
    // 717880's scenario with a membership change every ~150 ms and every restorer lost (helper simdraw's search).
    { seed: 1125, nodes: 3, scenarioOf: 717880, scenario: { memberChangeMeanMs: 150, loseRestorerChance: 1 }, what: '(1125) a restore\'s archive is staged again when the voters change while it is staged (staged on n1 and n3 of {n1, n2, n3}; by the proposal n4 was a voter and n3 removed; n1 lost, no member of {n2, n4} held the archive: the restore entry was never applied, no write committed after healing)', draws: 'restoresApplied' as const, shows: /voters changed while its archive was staged/ },
    // 17 moved (194) when the scenarios came to draw restores while members are replaced (RESTORE_CHURN): 17 draws it.
    // 194 moved (95) with commit statements.
    { seed: 95, nodes: 3, what: '(717880) a learner is promoted only once a quorum of the voters after it applied the newest restore (promoted before, then the holders lost: no member could apply the restore entry)', draws: 'changesHeld' as const, shows: /membership: addVoter n\d+ via n\d+ failed: addVoter n\d+: of the voters after it/ },
    { seed: 73, nodes: 3, what: '(843202) the same: a restore holder removed while too few of the others had applied it', draws: 'changesHeld' as const },
    // 384 draws RESTORE_CHURN since it came (restores while members are replaced) and still draws changesHeld.
    { seed: 384, nodes: 3, what: '(844972) the same, with disk faults and power losses', draws: 'changesHeld' as const },
    // The campaign on 5eba70c (seeds 1-30,000): 2 violations, both scenarios without pre-vote, which production never
    // runs (NodeCluster.failLiveness): liveness is waived there, every safety checker kept; with pre-vote both pass.
    { seed: 25786, nodes: 3, what: '(25786) without pre-vote a learner started with --peers naming itself campaigned to a term its leader never takes (applied 0 after healing): liveness waived, not passed off as checked', draws: 'livenessWaived' as const, shows: /liveness not checked without pre-vote.*never reached/ },
    { seed: 1286, nodes: 3, what: '(16186) the same', draws: 'livenessWaived' as const, shows: /liveness not checked without pre-vote/ },
    // Found by helper simcontrol's search (default scenarios drawing RESTORE_CHURN, ~1 in 25,000 seeds); fixed in the
    // simulator: its network delivered every message where the real peer plane's PeerGuard admits them, and the core
    // took a claim of a sender outside its configuration where production takes it only after an election timeout
    // without a leader (nonVoterClaimTooSoon).
    { seed: 6747, nodes: 3, what: '(6747) a node outside the membership (started for an addLearner that failed): the members take none of its claims while they hear their leader (its vote requests, delivered and taken, moved their terms past the real candidates\' for ever: no leader for 4 s after healing)', draws: 'joined' as const, shows: /peer plane: message refused.*"from":"n4","reason":"unvouched"/ },
    { seed: 6, nodes: 3, what: '(123004) the same', draws: 'joined' as const, shows: /peer plane: message refused.*"reason":"unvouched"/ },
    // Found once the simulated network admitted messages through the real PeerGuard, which then refused every message
    // of a sender outside the receiver's configuration (13 of seeds 1-2,000 lost liveness, production's bug too).
    // Since vouching (src/node/vouches.ts) such a sender's messages are refused 'unvouched' until a voter of the
    // receiver's configuration names it at a later index (6747 and 123004: the outsider never is; 358: n6 is vouched
    // for n5 by n1 and follows it).
    { seed: 6, nodes: 3, what: '(358) a member whose configuration lacks its leader follows it (n6 installed a snapshot naming {n1, n2, n3} and refused leader n5 for ever: applied 1 of 83)', draws: 'joined' as const, shows: /n\d+ info peer plane: a sender this node's configuration does not name is vouched for by a voter of it/ },
    // Found by the campaign on 5d73733 (11 of seeds 1-10,000 lost liveness): a deposed leader whose log ends in its
    // own uncommitted removal of n2 refused n2, the next leader whose appends alone roll that entry back ('unvouched':
    // no voter's configuration was newer than the uncommitted one), for good. Node.isMember also takes the members of
    // the last committed configuration.
    { seed: 9, nodes: 3, what: '(1406) a deposed leader whose uncommitted removal of n2 ends its log follows n2, the next leader (applied 20 of 25 for good)', draws: 'joined' as const, shows: /role changed.*"id":"n1","role":"follower","leader":"n2"/ },
    { seed: 473, nodes: 5, what: '(473) the same on 5 nodes (applied 41 of 61 on two members)', draws: 'joined' as const },
    // Found by the campaign on 34df1e7 (13 of seeds 1-19,500 lost liveness, all this shape): a member restarting with a
    // configuration whose other voters are all gone (removed and stopped, or lost for good) could be vouched for by
    // nobody, and the newest configuration's quorum needed it. Since membership proofs the sender's configuration
    // carries the leaders' signed statements of each change, chained from the member's own configuration.
    // (2442 itself no longer reaches that state: configuration entries carrying proofs moved its trace.)
    { seed: 7686, nodes: 3, what: '(7686) n3 restarts knowing {n1, n2, n3} of index 10; n2 was removed and n1 lost for good while n4 was added: n3 follows n4 on its proofs (no leader after healing before)', draws: 'joined' as const, shows: /n3 info peer plane: a sender this node's configuration does not name is vouched for by its configuration's proofs.*"sender":"n4"/ },
    { seed: 3134, nodes: 3, what: '(3134) n3, down from the start, restarts on an empty log knowing {n1, n2, n3}: n2 removed, n1 lost, n4 added; n3 follows n4 on its proofs', draws: 'joined' as const, shows: /n3 info peer plane: a sender this node's configuration does not name is vouched for by its configuration's proofs.*"sender":"n4"/ },
    // Found by the campaign on e6b419d (1 of seeds 1-110,000; the checker's own race, also on 34df1e7): leader n2
    // acknowledged the final write, then applied its own removal proposed just before it and was stopped as removed;
    // the liveness check still waited for n2, read from the configuration the write committed in.
    { seed: 89269, nodes: 5, what: '(89269) the leader removes itself right after the final write and is stopped: liveness waits for the members that stay', draws: 'leaderRemovals' as const, shows: /membership: removeNode n2 applied on n2/ },
    // Found by the campaign on 283bcaa (1 of seeds 1-130,000): n1, back on a log of term 1 naming {n1, n2, n3}, was
    // needed by the quorum of {n1, n5, n6} once n5 was lost; it campaigned in vain every 15-29 ticks, each campaign
    // restarting the election timeout within which it drops a claim of a sender it does not name, and each of n6's
    // pre-votes came within it (no leader for 4 s after healing). A node whose own campaigns failed now takes them.
    { seed: 116434, nodes: 3, what: '(116434) a stale voter campaigning in vain takes the pre-vote of a candidate added in entries it lacks, whose quorum needs it', draws: 'joined' as const, shows: /n1 info peer plane: a sender this node's configuration does not name is vouched for by its configuration's proofs.*"sender":"n6"/ },
  ];
  for (const { seed, nodes, what, draws = 'snapshotDiskErrors', shows, scenarioOf, scenario, controls } of lists) {
    it(`seed ${seed} of ${nodes} nodes: ${what}`, async () => {
      // A rejection nobody handles would crash a real node's process: none may happen.
      const unhandled: string[] = [];
      const onUnhandled = (err: unknown): void => void unhandled.push(String(err));
      process.on('unhandledRejection', onUnhandled);
      const trace: string[] = [];
      let r: Awaited<ReturnType<typeof runNodeSeed>>;
      try {
        r = await runNodeSeed(seed, { nodes, ...(scenarioOf !== undefined ? { scenarioOf } : {}), ...(scenario !== undefined ? { scenario } : {}), ...(controls !== undefined ? { controls } : {}), ...(shows !== undefined ? { trace: (line: string) => void trace.push(line) } : {}) });
        await new Promise((resolve) => setTimeout(resolve, 50));
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
      assert.deepEqual(unhandled, [], 'no unhandled rejection');
      assert.ok(r.ok, r.message);
      assert.ok(r.stats[draws] > 0, `the seed still draws ${draws}`);
      if (shows !== undefined) assert.ok(trace.some((line) => shows.test(line)), `the seed still shows its event (${String(shows)}): re-pin it`);
    });
  }

  it('without membership proofs seeds 3134 and 7686 lose liveness again (negative control)', async () => {
    for (const seed of [3134, 7686]) {
      const r = await runNodeSeed(seed, { nodes: 3, controls: { noMembershipProofs: true } });
      assert.equal(r.ok, false, `seed ${seed} without proofs`);
      assert.match(r.message ?? '', /Liveness violated/);
    }
  });

  it('the two seeds whose liveness is waived recover with pre-vote on (production\'s only mode), liveness checked', async () => {
    for (const seed of [25786, 1286]) {
      const r = await runNodeSeed(seed, { nodes: 3, scenario: { preVote: true } });
      assert.ok(r.ok, r.message);
      assert.equal(r.stats.livenessWaived, 0, `seed ${seed}: liveness checked`);
    }
  });

  // Seeds that catch it. 717880, 843202 and 844972 lost liveness with this bug until the faults were drawn per site
  // (draw-sites.ts); since, none of ~10,000 seeds searched did (the default scenarios and 717880's, 843202's and
  // 844972's with more changes, every restorer lost at once, 5 nodes): a restorer lost at once leaves the other members
  // that staged its archive, and a 3-node run may lose one member for good. A restorer lost a while later (RESTORE_CHURN,
  // which scenarios draw 1 in RESTORE_CHURN_ONE_IN) gives voter changes the time to leave it the archive's last holder:
  // seed 40 of 717880's scenario with RESTORE_CHURN: restore #4 staged on n5 and n1 of {n1, n4, n5} (n4 cut off);
  // with the bug n6 is promoted (it had applied nothing) and n1 removed, so of {n4, n5, n6} only n5 holds the archive;
  // n5 lost 82 ms after the acknowledgement: no member gives n4 and n6 the archive and none has a snapshot past it,
  // the restore entry is never applied and no write commits after healing. Without the bug both changes wait
  // (changesHeld) and the seed passes. 511 and 560 the same way. Found in a search of seeds 1..1,200 of that scenario
  // with the bug (these 3 caught), where of 1,000 default scenarios that draw RESTORE_CHURN none was caught this way (2
  // lost liveness with the bug through a voter whose log lacks a promotion ignoring the promoted member, seed 2292's
  // kind, not this control's; 1 of them, 6747, without the bug too, until the simulated peer plane admitted messages as
  // the real one does: pinned above). Each must show the path: a member finds no holder
  // of a restore's archive. Seed 40 no longer does since the simulated peer plane admits messages as the real one does
  // (PeerGuard in node-cluster.ts, and the core's rules for a sender outside the receiver's configuration): 511 and 560
  // still do.
  const catching: readonly { readonly seed: number; readonly nodes: number; readonly scenarioOf?: number; readonly scenario?: Partial<NodeScenario> }[] = [
    // 511 and 560 moved with commit statements (an attest entry after each change): 216 and 601 of the same scenario
    // catch it now (a search of seeds 1-700 for the first two that lose liveness with the bug, show the path line and
    // pass with the wait holding a change).
    { seed: 216, nodes: 3, scenarioOf: 717880, scenario: RESTORE_CHURN },
    { seed: 601, nodes: 3, scenarioOf: 717880, scenario: RESTORE_CHURN },
  ];
  for (const { seed, nodes, scenarioOf, scenario } of catching) {
    it(`negative control: without the wait for a restore's quorum (changesIgnoreRestores), seed ${seed} of ${nodes} nodes${scenarioOf !== undefined ? ` in ${scenarioOf}'s scenario` : ''} strands a restore entry (no member holds its archive) and loses liveness; the seed passes with the wait`, async () => {
      const chosen = { nodes, ...(scenarioOf !== undefined ? { scenarioOf } : {}), ...(scenario !== undefined ? { scenario } : {}) };
      const trace: string[] = [];
      const r = await runNodeSeed(seed, { ...chosen, controls: { nodeBugs: { changesIgnoreRestores: true } }, trace: (line) => void trace.push(line) });
      assert.equal(r.violation?.property, 'Liveness', `seed ${seed}: ${r.message ?? 'no violation'}`);
      assert.ok(trace.some((line) => /restore: no member gave the archive/.test(line)), 'a member found no holder of a restore\'s archive: re-pin it');
      assert.match(r.message ?? '', new RegExp(`replay: npm run sim -- --seed ${seed} --nodes ${nodes}${scenarioOf !== undefined ? ` --scenario-of ${scenarioOf}` : ''}( --scenario \\w+=[\\w.]+)* --bug-changes-ignore-restores --verbose$`));
      const fixed = await runNodeSeed(seed, chosen);
      assert.ok(fixed.ok, fixed.message);
      assert.ok(fixed.stats.changesHeld > 0, 'the wait held a change');
    });
  }
});

describe('sim negative controls: broken Raft cores inside the real node are caught', function () {
  this.timeout(120_000);

  const cores = [
    { core: 'commitsEarlierTerms', property: 'Leader Commit Rule', what: 'committing an entry of an earlier term by counting replicas breaks the commit rule (Raft §5.4.2, Figure 8)' },
    { core: 'votesTwice', property: 'Election Safety', what: 'voting twice in a term breaks Election Safety (Raft §5.2)' },
    { core: 'forgetsVote', property: 'HardState Durability', what: 'never persisting the vote is caught before it is granted (Raft §5.2, Figure 2)' },
    { core: 'ignoresLogCheck', property: 'Leader Completeness', what: 'granting votes without the up-to-date check breaks Leader Completeness (Raft §5.4.1)' },
  ] as const;
  for (const { core, property, what } of cores) {
    it(`core: ${what}, within 20 seeds`, async () => {
      const summary = await runNodeCampaign({ from: 1, count: 20, nodes: 3, controls: { brokenCore: core }, stopOnFirst: true });
      const first = summary.failures[0];
      assert.equal(first?.violation?.property, property, first?.message ?? `no violation in ${summary.seeds} seeds`);
      assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed \\d+ --nodes 3 --broken-core ${core} --verbose`));
    });
  }
});

describe('sim negative controls: a broken state image import (broken.ts) is caught', function () {
  this.timeout(120_000);

  it('an import that checks each file against the hash of the bytes it received, not the manifest\'s, takes a chunk flipped on the way: caught as a State Digest violation within 30 seeds; the seed replays it and passes without the bug', async () => {
    const controls = { brokenImageImport: 'trustsReceivedBytes' };
    // About 1 seed in 50 flips a chunk the broken import takes: seeds 81..110 hold one (89) since heartbeat-kick moved
    // the traces (seeds 1..30 did before).
    const summary = await runNodeCampaign({ from: 81, count: 30, controls, stopOnFirst: true });
    const first = summary.failures[0];
    assert.equal(first?.violation?.property, 'State Digest', first?.message ?? `no violation in ${summary.seeds} seeds`);
    assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed ${first.seed} --nodes ${first.nodes} --broken-image-import trustsReceivedBytes --verbose`));
    const again = await runNodeSeed(first.seed, { nodes: first.nodes, controls });
    assert.equal(again.violation?.message, first.violation?.message, 'the seed does not replay its violation');
    const fixed = await runNodeSeed(first.seed, { nodes: first.nodes });
    assert.ok(fixed.ok, fixed.message);
    assert.ok(fixed.stats.imageFlips > 0 && fixed.stats.imageFallbacks > 0, `a flipped chunk was refused and the follower fell back: ${JSON.stringify(fixed.stats)}`);
  });

  it('exporters that lie (one value changed, files and manifest consistent): an import that leaves out the records digest check is caught as a State Digest violation within 20 seeds; the seed replays it, and with the check the lying images are refused and the seed passes', async () => {
    const controls = { brokenImageImport: 'ignoresRecordsDigest', lyingImageExport: true };
    const summary = await runNodeCampaign({ from: 1, count: 20, controls, stopOnFirst: true });
    const first = summary.failures[0];
    assert.equal(first?.violation?.property, 'State Digest', first?.message ?? `no violation in ${summary.seeds} seeds`);
    assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed ${first.seed} --nodes ${first.nodes} --broken-image-import ignoresRecordsDigest --lying-image-export --verbose`));
    const again = await runNodeSeed(first.seed, { nodes: first.nodes, controls });
    assert.equal(again.violation?.message, first.violation?.message, 'the seed does not replay its violation');
    const checked = await runNodeSeed(first.seed, { nodes: first.nodes, controls: { lyingImageExport: true } });
    assert.ok(checked.ok, checked.message);
    assert.ok(checked.stats.imageFallbacks > 0 && checked.stats.imageRestores === 0, `every lying image was refused and the followers fell back: ${JSON.stringify(checked.stats)}`);
  });
});

describe('sim negative controls: a snapshot made from the previous one with a broken change list is caught', function () {
  this.timeout(120_000);

  it('storage whose snapshot changes leave out the deleted keys (the delta keeps them) is caught as a State Digest violation within 10 seeds; the seed replays it and passes with the changes listed whole', async () => {
    const controls = { changesMissDeletes: true };
    const summary = await runNodeCampaign({ from: 1, count: 10, controls, stopOnFirst: true });
    const first = summary.failures[0];
    assert.equal(first?.violation?.property, 'State Digest', first?.message ?? `no violation in ${summary.seeds} seeds`);
    assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed ${first.seed} --nodes ${first.nodes} --bug-changes-miss-deletes --verbose`));
    const again = await runNodeSeed(first.seed, { nodes: first.nodes, controls });
    assert.equal(again.violation?.message, first.violation?.message, 'the seed does not replay its violation');
    const fixed = await runNodeSeed(first.seed, { nodes: first.nodes });
    assert.ok(fixed.ok, fixed.message);
    assert.ok(fixed.stats.deltas > 0, `the seed makes snapshots from the previous one: ${JSON.stringify(fixed.stats)}`);
  });
});

describe('sim negative controls: a log disk that takes writes after a failed one is caught', function () {
  this.timeout(120_000);

  it('with half of the compactions failing (EIO) and disks that, as RocksStorage before 42c3b59, take the writes after a failed one and lose them at the next open, a violation is found within 20 seeds; the seed replays it, and with disks that refuse those writes (types.ts LogStore) it passes', async () => {
    // The node goes on after a failed compaction (logged, retried): with such a disk it acknowledges appends and
    // votes that the next open no longer has. Failed compactions are rare in the default scenario, hence the rate.
    const controls = { takesWritesAfterFailure: true, compactFailChance: 0.5 };
    // About 1 seed in 100 catches it: seeds 101..120 hold one (111) since heartbeat-kick moved the traces (1..20 did before).
    const summary = await runNodeCampaign({ from: 101, count: 20, nodes: 3, controls, stopOnFirst: true });
    const first = summary.failures[0];
    assert.ok(first?.violation !== undefined, `no violation in ${summary.seeds} seeds`);
    assert.match(first.message ?? '', /(Node Failure violated .*state machine applied \d+ is beyond the last log entry)|Log Matching|State Machine Safety|Durability/);
    assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed ${first.seed} --nodes 3 --bug-disk-takes-writes-after-failure --compact-fail-percent 50 --verbose`));
    const again = await runNodeSeed(first.seed, { nodes: 3, controls });
    assert.equal(again.violation?.message, first.violation?.message, 'the seed does not replay its violation');
    const refusing = await runNodeSeed(first.seed, { nodes: 3, controls: { compactFailChance: 0.5 } });
    assert.ok(refusing.ok, refusing.message);
  });
});

describe('sim negative controls: driver and state machine bugs inside the real node are caught', function () {
  this.timeout(120_000);

  it('a retried write applied again (the request-id dedup of the session table off) is caught within 10 seeds of 3 nodes; the seed replays it and passes without the bug', async () => {
    const controls = { nodeBugs: { reappliesRetries: true } };
    const summary = await runNodeCampaign({ from: 1, count: 10, nodes: 3, controls, stopOnFirst: true });
    const first = summary.failures[0];
    assert.equal(first?.violation?.property, 'Acknowledged Write Lost', first?.message ?? `no violation in ${summary.seeds} seeds`);
    assert.match(first.message ?? '', new RegExp(`replay: npm run sim -- --seed ${first.seed} --nodes 3 --bug-reapplies-retries --verbose`));
    const again = await runNodeSeed(first.seed, { nodes: 3, controls });
    assert.equal(again.violation?.message, first.violation?.message, 'the seed does not replay its violation');
    const fixed = await runNodeSeed(first.seed, { nodes: 3 });
    assert.ok(fixed.ok, fixed.message);
    assert.ok(fixed.stats.deduped > 0, `the retries were answered from the session table: ${JSON.stringify(fixed.stats)}`);
  });
});

describe('sim: SeededRng', () => {
  it('is a pure function of the seed, and forks are independent of draw order', () => {
    const a = new SeededRng(42);
    const b = new SeededRng(42);
    const xs = Array.from({ length: 50 }, () => a.nextInt(1000));
    const ys = Array.from({ length: 50 }, () => b.nextInt(1000));
    assert.deepEqual(xs, ys);
    const f1 = new SeededRng(42).fork('n1').nextU32();
    const r = new SeededRng(42);
    r.nextU32();
    assert.equal(r.fork('n1').nextU32(), f1);
    assert.notEqual(new SeededRng(42).fork('n2').nextU32(), f1);
  });

  it('stays in range', () => {
    const r = new SeededRng(7);
    for (let i = 0; i < 10_000; i++) {
      const v = r.nextInt(7);
      assert.ok(Number.isInteger(v) && v >= 0 && v < 7);
      const f = r.nextFloat();
      assert.ok(f >= 0 && f < 1);
    }
  });
});

/**
 * SimCluster: 3 or 5 real RaftNodes against simulated edges (TigerBeetle's
 * habit: the protocol code is the production code, only clock, network, disk
 * and randomness are fakes). One seed decides everything: a discrete event
 * queue ordered by (virtual time in ms, sequence number); no Date, no
 * Math.random, no real timers.
 *
 * The fakes:
 * - clock: each node ticks every tickMs (+ a fixed per-node skew, + jitter),
 *   and may be paused (a GC stall) for a while;
 * - network: random latency, drops, duplicates, reordering (long delays),
 *   partitions and one-way links, healed later;
 * - disk: hard state, log (base + entries), snapshots and, when the scenario
 *   says the state machine is durable, the state machine itself. A crash loses
 *   everything else; a restart rebuilds a RaftNode from the disk;
 * - state machine: the sequence of applied proposal ids (a count, since the
 *   checkers verify it is a prefix of the one global sequence) and its
 *   membership; snapshots of it are taken periodically and the log compacted;
 *   lagging followers fetch a snapshot from the leader that named it, which
 *   takes virtual time and may fail;
 * - clients: proposals to the node they believe leads (retrying NotLeader),
 *   ReadIndex reads (linearizability checked), leadership transfers, forced
 *   campaigns and a remove / re-add-as-learner / promote membership cycle.
 *
 * The checkers (checkers.ts) are told of every write, apply, role change and
 * read, and throw SafetyViolation at once. After the fault period everything
 * heals and the cluster must elect a leader and apply every acknowledged
 * proposal on every voter within the quiet period (liveness).
 */
import {
  MembershipChangeError,
  NotLeaderError,
  ProposalDroppedError,
  RaftNode,
  applyConfChange,
  defaultRaftConfig,
  isMember,
  type ConfChange,
  type Entry,
  type HardState,
  type Membership,
  type Message,
  type NodeId,
  type RaftBootState,
  type RaftConfig,
  type Ready,
  type ReadState,
  type Role,
  type SnapshotMeta,
} from '../../src/raft/index.js';
import { decodeConfChangeOrNull } from '../../src/raft/membership.js';
import { Checkers, PROPERTY, SafetyViolation } from './checkers.js';
import { SeededRng, hashMix } from '../harness/rng.js';

/** NodeFactory builds a node; negative controls pass one that returns a deliberately broken subclass. */
export type NodeFactory = (config: RaftConfig, boot: RaftBootState) => RaftNode;

export const defaultNodeFactory: NodeFactory = (config, boot) => new RaftNode(config, boot);

/** DriverFaults: deliberate driver (not core) bugs, for negative controls of the simulator itself. */
export interface DriverFaults {
  /** forgetVoteOnCrash: the disk loses hardState.vote on every crash (a missing fsync of the vote). */
  readonly forgetVoteOnCrash?: boolean;
}

/** RaftKnobs: the core's settings a scenario draws. */
type RaftKnobs = Pick<
  RaftConfig,
  | 'electionTimeoutTicks'
  | 'heartbeatIntervalTicks'
  | 'preVote'
  | 'checkQuorum'
  | 'maxInflightAppends'
  | 'maxAppendBytes'
  | 'maxUncommittedBytes'
  | 'maxApplyBytes'
>;

/** Scenario: every knob of one run; drawn from the seed, each overridable. */
export interface Scenario extends RaftKnobs {
  readonly nodes: number;
  readonly tickMs: number;
  readonly latencyMinMs: number;
  readonly latencyMaxMs: number;
  /** reorderChance: a message is held back an extra [0, reorderMaxMs). */
  readonly reorderChance: number;
  readonly reorderMaxMs: number;
  readonly dropChance: number;
  readonly dupChance: number;
  /** partitionMeanMs: mean time between partition faults (0: none). */
  readonly partitionMeanMs: number;
  readonly partitionMinMs: number;
  readonly partitionMaxMs: number;
  /** crashMeanMs: mean time between crashes (0: none). */
  readonly crashMeanMs: number;
  readonly downMaxMs: number;
  /** crashAfterVoteChance: a node that just granted its vote to another crashes a moment later (and bounces back quickly). */
  readonly crashAfterVoteChance: number;
  /** crashAfterCommitChance: a leader that just advanced its commit index crashes a moment later (and bounces back). */
  readonly crashAfterCommitChance: number;
  /** crashAfterLeadChance: a node that just became leader crashes a moment later (its no-op unreplicated). */
  readonly crashAfterLeadChance: number;
  /** pauseMeanMs: mean time between node stalls (0: none). */
  readonly pauseMeanMs: number;
  readonly pauseMaxMs: number;
  readonly durableStateMachine: boolean;
  readonly snapshotCheckMs: number;
  readonly snapshotMinEntries: number;
  readonly snapshotKeepEntries: number;
  readonly snapshotRetain: number;
  readonly fetchFailChance: number;
  readonly fetchBytesPerMs: number;
  readonly proposeMeanMs: number;
  readonly readMeanMs: number;
  /** transferMeanMs, campaignMeanMs: 0 disables them. */
  readonly transferMeanMs: number;
  readonly campaignMeanMs: number;
  readonly membershipChange: boolean;
  readonly membershipStartMs: number;
  /** faultTimeMs: virtual time with faults; then everything heals. */
  readonly faultTimeMs: number;
  /** quietTimeMs: the liveness bound after healing. */
  readonly quietTimeMs: number;
}

/** makeScenario draws a scenario from the seed (its own fork of the root rng), then applies overrides. */
export function makeScenario(seed: number, nodes: number, overrides: Partial<Scenario> = {}): Scenario {
  const r = new SeededRng(seed).fork('scenario');
  const latencyMinMs = r.range(1, 4);
  const calm = r.chance(0.1); // a few seeds run without faults, as a baseline
  const s: Scenario = {
    nodes,
    tickMs: 10,
    electionTimeoutTicks: r.pick([6, 8, 10, 10, 10, 15]),
    heartbeatIntervalTicks: r.pick([1, 1, 2, 3]),
    preVote: r.chance(0.75),
    checkQuorum: r.chance(0.6),
    maxInflightAppends: r.pick([1, 2, 4, 8, 256]),
    maxAppendBytes: r.pick([16, 256, 4096, 1 << 20]),
    maxUncommittedBytes: r.pick([64, 512, 64 << 20]),
    maxApplyBytes: r.pick([16, 128, 16 << 20]),
    latencyMinMs,
    latencyMaxMs: latencyMinMs + r.pick([2, 5, 10, 20, 40]),
    reorderChance: calm ? 0 : r.pick([0, 0.01, 0.05]),
    reorderMaxMs: r.range(20, 200),
    dropChance: calm ? 0 : r.pick([0, 0.01, 0.03, 0.1]),
    dupChance: calm ? 0 : r.pick([0, 0.01, 0.05]),
    partitionMeanMs: calm ? 0 : r.pick([0, 300, 600, 1200]),
    partitionMinMs: 50,
    partitionMaxMs: r.pick([200, 600, 1200]),
    crashMeanMs: calm ? 0 : r.pick([0, 150, 300, 600, 1200]),
    downMaxMs: r.pick([100, 400, 1000]),
    crashAfterVoteChance: calm ? 0 : r.pick([0, 0.05, 0.2, 0.5]),
    crashAfterCommitChance: calm ? 0 : r.pick([0, 0, 0.02, 0.1]),
    crashAfterLeadChance: calm ? 0 : r.pick([0, 0, 0.05, 0.2]),
    pauseMeanMs: calm ? 0 : r.pick([0, 0, 500, 1500]),
    pauseMaxMs: r.pick([50, 150, 400]),
    durableStateMachine: r.chance(0.5),
    snapshotCheckMs: r.pick([50, 100, 250]),
    snapshotMinEntries: r.pick([3, 10, 30]),
    snapshotKeepEntries: r.pick([0, 0, 2, 5]),
    snapshotRetain: r.pick([1, 2, 3]),
    fetchFailChance: r.pick([0, 0.05, 0.2]),
    fetchBytesPerMs: r.pick([10, 100, 1000]),
    proposeMeanMs: r.pick([5, 10, 20, 40]),
    readMeanMs: r.pick([20, 50, 100]),
    transferMeanMs: r.pick([0, 500, 1500]),
    campaignMeanMs: r.pick([0, 0, 700, 2000]),
    membershipChange: r.chance(nodes >= 5 ? 0.6 : 0.3),
    membershipStartMs: r.range(100, 1500),
    faultTimeMs: 2000,
    quietTimeMs: 3000,
  };
  return { ...s, ...overrides };
}

/** SimStats: what happened in one run. */
export interface SimStats {
  events: number;
  virtualMs: number;
  messagesSent: number;
  messagesDelivered: number;
  messagesDropped: number;
  crashes: number;
  partitions: number;
  pauses: number;
  leadersElected: number;
  maxTerm: number;
  proposals: number;
  proposalsRejected: number;
  acked: number;
  applied: number;
  readsIssued: number;
  readsServed: number;
  readsFailed: number;
  snapshotsTaken: number;
  snapshotFetches: number;
  snapshotFetchesFailed: number;
  snapshotsInstalled: number;
  transfers: number;
  campaigns: number;
  confChanges: number;
  membershipPhase: string;
  livenessMs: number;
  traceHash: number;
}

interface StoredSnapshot {
  readonly meta: SnapshotMeta;
  /** count: proposal ids the state machine had applied (the snapshot's content). */
  readonly count: number;
}

interface StateMachine {
  applied: number;
  appliedTerm: number;
  count: number;
  membership: Membership;
}

interface WaitingRead {
  readonly rs: ReadState;
}

class SimNode {
  readonly id: NodeId;
  readonly idx: number;
  raft: RaftNode | null = null;
  up = false;
  incarnation = 0;
  pausedUntil = 0;
  /** driftChance: a clock drifts by skipping or adding 1ms on this fraction of its ticks (the sign is driftSign). */
  driftChance: number;
  driftSign: number;
  // ---- disk
  hard: HardState = { term: 0, vote: '', commit: 0 };
  logBase = { index: 0, term: 0 };
  entries: Entry[] = [];
  snapshots: StoredSnapshot[] = [];
  /** pins: snapshot index -> fetches under way from this node (a snapshot being streamed is not deleted). */
  readonly pins = new Map<number, number>();
  sm: StateMachine;
  // ---- volatile
  role: Role = 'follower';
  leaderHint: NodeId = '';
  fetching = new Set<number>();
  snapshotSenders = new Map<number, NodeId>();
  waitingReads: WaitingRead[] = [];

  constructor(id: NodeId, idx: number, initial: StoredSnapshot, driftChance: number, driftSign: number) {
    this.id = id;
    this.idx = idx;
    this.snapshots = [initial];
    this.sm = { applied: 0, appliedTerm: 0, count: 0, membership: initial.meta.membership };
    this.driftChance = driftChance;
    this.driftSign = driftSign;
  }

  newestSnapshot(): StoredSnapshot {
    return this.snapshots[this.snapshots.length - 1] as StoredSnapshot;
  }

  lastIndex(): number {
    return this.logBase.index + this.entries.length;
  }
}

interface PendingProposal {
  readonly startMs: number;
  readonly node: SimNode;
  readonly incarnation: number;
  readonly index: number;
  readonly term: number;
}

interface PendingRead {
  readonly startMs: number;
  readonly node: SimNode;
  readonly incarnation: number;
  readonly ackedIndexAtStart: number;
}

type SimEvent =
  | { t: number; seq: number; k: 'tick'; n: SimNode; inc: number }
  | { t: number; seq: number; k: 'deliver'; m: Message }
  | { t: number; seq: number; k: 'fetchDone'; n: SimNode; inc: number; meta: SnapshotMeta; source: NodeId; srcInc: number }
  | { t: number; seq: number; k: 'crash' }
  | { t: number; seq: number; k: 'restart'; n: SimNode; inc: number }
  | { t: number; seq: number; k: 'bounce'; n: SimNode; inc: number }
  | { t: number; seq: number; k: 'partition' }
  | { t: number; seq: number; k: 'heal'; fault: number }
  | { t: number; seq: number; k: 'pause' }
  | { t: number; seq: number; k: 'propose' }
  | { t: number; seq: number; k: 'proposeRetry'; id: number; attempt: number }
  | { t: number; seq: number; k: 'read' }
  | { t: number; seq: number; k: 'transfer' }
  | { t: number; seq: number; k: 'campaign' }
  | { t: number; seq: number; k: 'snapTick'; n: SimNode }
  | { t: number; seq: number; k: 'membership' }
  | { t: number; seq: number; k: 'faultsEnd' }
  | { t: number; seq: number; k: 'liveness' };

type EventBody = SimEvent extends infer E ? (E extends SimEvent ? Omit<E, 't' | 'seq'> : never) : never;

const KIND_CODE: Record<SimEvent['k'], number> = {
  tick: 1,
  deliver: 2,
  fetchDone: 3,
  crash: 4,
  restart: 5,
  bounce: 18,
  partition: 6,
  heal: 7,
  pause: 8,
  propose: 9,
  proposeRetry: 10,
  read: 11,
  transfer: 12,
  campaign: 13,
  snapTick: 14,
  membership: 15,
  faultsEnd: 16,
  liveness: 17,
};

/** EventQueue: a binary min-heap ordered by (t, seq). */
class EventQueue {
  private readonly heap: SimEvent[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(t: number, body: EventBody): void {
    const ev = { ...body, t, seq: this.seq++ } as SimEvent;
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as SimEvent;
      if (parent.t < ev.t || (parent.t === ev.t && parent.seq < ev.seq)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = ev;
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    if (top === undefined) return undefined;
    const last = h.pop() as SimEvent;
    if (h.length > 0) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        let c = l;
        const lc = h[l] as SimEvent;
        if (r < n) {
          const rc = h[r] as SimEvent;
          if (rc.t < lc.t || (rc.t === lc.t && rc.seq < lc.seq)) c = r;
        }
        const ch = h[c] as SimEvent;
        if (last.t < ch.t || (last.t === ch.t && last.seq < ch.seq)) break;
        h[i] = ch;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

export interface ClusterOptions {
  readonly seed: number;
  readonly scenario: Scenario;
  readonly nodeFactory?: NodeFactory;
  readonly driverFaults?: DriverFaults;
  /** maxEvents bounds the run; exceeding it is a violation (a message storm, a livelock). */
  readonly maxEvents: number;
  /** trace receives one line per notable event (--verbose). */
  readonly trace?: (line: string) => void;
}

const MAX_PROPOSE_ATTEMPTS = 5;
const MAX_PENDING_PROPOSALS = 64;
const MAX_PENDING_READS = 64;
const MAX_READY_ROUNDS = 100_000;
const MAX_EMPTY_READIES = 3;
const MAX_MEMBERSHIP_ATTEMPTS = 200;
const LIVENESS_POLL_MS = 20;
/** CLIENT_TIMEOUT_MS: a client gives up on a proposal or read it heard nothing about (its outcome stays unknown). */
const CLIENT_TIMEOUT_MS = 1000;

export class SimCluster {
  readonly sc: Scenario;
  readonly checkers: Checkers;
  readonly stats: SimStats;
  private readonly nodes: SimNode[];
  private readonly byId = new Map<NodeId, SimNode>();
  private readonly q = new EventQueue();
  private readonly factory: NodeFactory;
  private readonly faults: DriverFaults;
  private readonly maxEvents: number;
  private readonly trace: ((line: string) => void) | undefined;
  private readonly rngRoot: SeededRng;
  private readonly rNet: SeededRng;
  private readonly rFault: SeededRng;
  private readonly rClient: SeededRng;
  private readonly rNode: SeededRng;
  private now = 0;
  private quiet = false;
  private done = false;
  /** blocked[a * N + b] > 0: messages from a to b are lost. */
  private readonly blocked: Int32Array;
  private readonly activeFaults = new Map<number, number[]>();
  /** linkClearMs[a * N + b]: links are FIFO (a gRPC stream) unless a message is deliberately reordered. */
  private readonly linkClearMs: Float64Array;
  private nextFaultId = 1;
  private current: NodeId = '';
  /** quietLatencyMaxMs: after the faults, links are fast again (Raft needs broadcast time << election timeout, §5.6). */
  private readonly quietLatencyMaxMs: number;
  // ---- clients
  private leaderGuess: NodeId = '';
  private nextProposalId = 1;
  private readonly pendingProposals = new Map<number, PendingProposal>();
  private readonly pendingReads = new Map<string, PendingRead>();
  private nextReadId = 1;
  private ackedMaxIndex = 0;
  /** ackedCount: the state machine length that holds every acknowledged proposal. */
  private ackedCount = 0;
  private memPhase: 'idle' | 'remove' | 'learner' | 'voter' | 'done' | 'gaveUp' = 'idle';
  private memTarget: NodeId = '';
  private memAttempts = 0;
  private memLearnerSince = 0;

  constructor(opts: ClusterOptions) {
    this.sc = opts.scenario;
    this.factory = opts.nodeFactory ?? defaultNodeFactory;
    this.faults = opts.driverFaults ?? {};
    this.maxEvents = opts.maxEvents;
    this.trace = opts.trace;
    this.rngRoot = new SeededRng(opts.seed);
    this.rNet = this.rngRoot.fork('network');
    this.rFault = this.rngRoot.fork('faults');
    this.rClient = this.rngRoot.fork('clients');
    this.rNode = this.rngRoot.fork('nodes');
    const n = this.sc.nodes;
    const ids: NodeId[] = [];
    for (let i = 0; i < n; i++) ids.push(`n${i + 1}`);
    const addresses: Record<NodeId, string> = {};
    for (const id of ids) addresses[id] = `sim://${id}`;
    const initial: StoredSnapshot = {
      meta: { index: 0, term: 0, membership: { voters: ids, learners: [], addresses }, sizeBytes: 0, digest: '' },
      count: 0,
    };
    this.nodes = ids.map((id, i) => new SimNode(id, i, initial, this.rNode.nextFloat() * 0.2, this.rNode.chance(0.5) ? 1 : -1));
    for (const nd of this.nodes) this.byId.set(nd.id, nd);
    this.blocked = new Int32Array(n * n);
    this.linkClearMs = new Float64Array(n * n);
    this.quietLatencyMaxMs = Math.max(this.sc.latencyMinMs, Math.min(this.sc.latencyMaxMs, Math.floor((this.sc.electionTimeoutTicks * this.sc.tickMs) / 5)));
    this.checkers = new Checkers(ids);
    this.stats = {
      events: 0,
      virtualMs: 0,
      messagesSent: 0,
      messagesDelivered: 0,
      messagesDropped: 0,
      crashes: 0,
      partitions: 0,
      pauses: 0,
      leadersElected: 0,
      maxTerm: 0,
      proposals: 0,
      proposalsRejected: 0,
      acked: 0,
      applied: 0,
      readsIssued: 0,
      readsServed: 0,
      readsFailed: 0,
      snapshotsTaken: 0,
      snapshotFetches: 0,
      snapshotFetchesFailed: 0,
      snapshotsInstalled: 0,
      transfers: 0,
      campaigns: 0,
      confChanges: 0,
      membershipPhase: 'idle',
      livenessMs: -1,
      traceHash: 0x811c9dc5,
    };
  }

  // ------------------------------------------------------------------ run

  /** run drives the event queue until liveness is shown, a violation is thrown, or a bound is hit. */
  run(): SimStats {
    const sc = this.sc;
    for (const nd of this.nodes) {
      this.start(nd);
      this.q.push(this.rNode.range(0, sc.snapshotCheckMs), { k: 'snapTick', n: nd });
    }
    this.q.push(this.rClient.exp(sc.proposeMeanMs), { k: 'propose' });
    this.q.push(this.rClient.exp(sc.readMeanMs), { k: 'read' });
    if (sc.transferMeanMs > 0) this.q.push(this.rClient.exp(sc.transferMeanMs), { k: 'transfer' });
    if (sc.campaignMeanMs > 0) this.q.push(this.rClient.exp(sc.campaignMeanMs), { k: 'campaign' });
    if (sc.membershipChange) this.q.push(sc.membershipStartMs, { k: 'membership' });
    if (sc.partitionMeanMs > 0) this.q.push(this.rFault.exp(sc.partitionMeanMs), { k: 'partition' });
    if (sc.crashMeanMs > 0) this.q.push(this.rFault.exp(sc.crashMeanMs), { k: 'crash' });
    if (sc.pauseMeanMs > 0) this.q.push(this.rFault.exp(sc.pauseMeanMs), { k: 'pause' });
    this.q.push(sc.faultTimeMs, { k: 'faultsEnd' });
    const end = sc.faultTimeMs + sc.quietTimeMs;

    while (!this.done) {
      const ev = this.q.pop();
      if (ev === undefined) break;
      if (ev.t > end) break;
      this.now = ev.t;
      this.checkers.now = ev.t;
      this.stats.events++;
      if (this.stats.events > this.maxEvents) {
        throw new SafetyViolation(PROPERTY.eventBudget, [], this.now, `more than ${this.maxEvents} events before the run ended (a message storm or livelock?)`);
      }
      this.dispatch(ev);
    }
    if (!this.done) {
      // The queue ran dry or passed the end without a liveness verdict: a final check.
      this.now = Math.max(this.now, end);
      this.checkers.now = this.now;
      this.checkLiveness(true);
    }
    this.stats.virtualMs = this.now;
    this.stats.membershipPhase = this.memPhase;
    let h = this.stats.traceHash;
    h = hashMix(h, this.stats.events);
    h = hashMix(h, this.stats.acked);
    h = hashMix(h, this.checkers.globalIds.length);
    this.stats.traceHash = h;
    return this.stats;
  }

  private dispatch(ev: SimEvent): void {
    let h = hashMix(this.stats.traceHash, ev.t);
    h = hashMix(h, KIND_CODE[ev.k]);
    this.current = '';
    try {
      switch (ev.k) {
        case 'tick':
          h = hashMix(h, ev.n.idx);
          this.onTick(ev.n, ev.inc);
          break;
        case 'deliver':
          h = hashMix(hashMix(h, this.msgCode(ev.m)), ev.m.term);
          this.onDeliver(ev.m);
          break;
        case 'fetchDone':
          h = hashMix(h, ev.n.idx);
          this.onFetchDone(ev.n, ev.inc, ev.meta, ev.source, ev.srcInc);
          break;
        case 'crash':
          this.onCrashEvent();
          break;
        case 'restart':
          h = hashMix(h, ev.n.idx);
          if (ev.n.incarnation === ev.inc && !ev.n.up) this.start(ev.n);
          break;
        case 'bounce':
          h = hashMix(h, ev.n.idx);
          this.onBounce(ev.n, ev.inc);
          break;
        case 'partition':
          this.onPartition();
          break;
        case 'heal':
          this.heal(ev.fault);
          break;
        case 'pause':
          this.onPause();
          break;
        case 'propose':
          if (!this.quiet) {
            this.q.push(this.now + this.rClient.exp(this.sc.proposeMeanMs), { k: 'propose' });
            if (this.pendingProposals.size >= MAX_PENDING_PROPOSALS) this.expireClients();
            if (this.pendingProposals.size < MAX_PENDING_PROPOSALS) this.propose(this.nextProposalId++, 0);
          }
          break;
        case 'proposeRetry':
          if (!this.quiet) this.propose(ev.id, ev.attempt);
          break;
        case 'read':
          if (!this.quiet) {
            this.q.push(this.now + this.rClient.exp(this.sc.readMeanMs), { k: 'read' });
            this.onRead();
          }
          break;
        case 'transfer':
          if (!this.quiet) {
            this.q.push(this.now + this.rClient.exp(this.sc.transferMeanMs), { k: 'transfer' });
            this.onTransfer();
          }
          break;
        case 'campaign':
          if (!this.quiet) {
            this.q.push(this.now + this.rClient.exp(this.sc.campaignMeanMs), { k: 'campaign' });
            this.onCampaign();
          }
          break;
        case 'snapTick':
          this.q.push(this.now + this.sc.snapshotCheckMs + this.rNode.range(0, 9), { k: 'snapTick', n: ev.n });
          this.maybeTakeSnapshot(ev.n);
          break;
        case 'membership':
          this.onMembership();
          break;
        case 'faultsEnd':
          this.onFaultsEnd();
          break;
        case 'liveness':
          this.checkLiveness(false);
          break;
      }
    } catch (err) {
      if (err instanceof SafetyViolation) throw err;
      const e = err as Error;
      const stack = (e.stack ?? String(e)).split('\n').slice(0, 6).join('\n');
      throw new SafetyViolation(PROPERTY.coreException, this.current === '' ? [] : [this.current], this.now, `uncaught ${e.name}: ${e.message}\n${stack}`);
    }
    this.stats.traceHash = h;
  }

  private log(f: () => string): void {
    if (this.trace !== undefined) this.trace(`${String(this.now).padStart(6)}ms ${f()}`);
  }

  // ------------------------------------------------------------------ nodes

  private config(nd: SimNode): RaftConfig {
    const sc = this.sc;
    return defaultRaftConfig(nd.id, this.rngRoot.fork(`raft/${nd.id}/${nd.incarnation}`), {
      electionTimeoutTicks: sc.electionTimeoutTicks,
      heartbeatIntervalTicks: sc.heartbeatIntervalTicks,
      preVote: sc.preVote,
      checkQuorum: sc.checkQuorum,
      maxInflightAppends: sc.maxInflightAppends,
      maxAppendBytes: sc.maxAppendBytes,
      maxUncommittedBytes: sc.maxUncommittedBytes,
      maxApplyBytes: sc.maxApplyBytes,
    });
  }

  /** start boots (or restarts) a node from its disk. */
  private start(nd: SimNode): void {
    const snap = nd.newestSnapshot();
    const boot: RaftBootState = {
      hardState: nd.hard,
      snapshot: snap.meta,
      logBase: { ...nd.logBase },
      entries: nd.entries.slice(),
      applied: nd.sm.applied,
    };
    this.current = nd.id;
    nd.raft = this.factory(this.config(nd), boot);
    nd.up = true;
    nd.role = 'follower';
    nd.leaderHint = '';
    nd.pausedUntil = 0;
    this.log(() => `${nd.id} start #${nd.incarnation} term=${nd.hard.term} vote=${nd.hard.vote || '-'} commit=${nd.hard.commit} base=${nd.logBase.index}/${nd.logBase.term} last=${nd.lastIndex()} snap=${snap.meta.index} applied=${nd.sm.applied}`);
    this.q.push(this.now + this.rNode.range(1, this.sc.tickMs), { k: 'tick', n: nd, inc: nd.incarnation });
    this.processReady(nd);
  }

  private crash(nd: SimNode): void {
    if (!nd.up) return;
    this.stats.crashes++;
    nd.up = false;
    nd.raft = null;
    nd.incarnation++;
    nd.role = 'follower';
    nd.leaderHint = '';
    nd.fetching.clear();
    nd.snapshotSenders.clear();
    nd.waitingReads = [];
    nd.pins.clear();
    if (this.faults.forgetVoteOnCrash === true) nd.hard = { ...nd.hard, vote: '' };
    if (!this.sc.durableStateMachine) {
      const s = nd.newestSnapshot();
      nd.sm = { applied: s.meta.index, appliedTerm: s.meta.term, count: s.count, membership: s.meta.membership };
    }
    for (const [id, p] of this.pendingProposals) if (p.node === nd) this.pendingProposals.delete(id);
    for (const [ctx, p] of this.pendingReads) if (p.node === nd) this.pendingReads.delete(ctx);
    this.log(() => `${nd.id} CRASH (disk: term=${nd.hard.term} vote=${nd.hard.vote || '-'} last=${nd.lastIndex()} applied=${nd.sm.applied})`);
  }

  private onTick(nd: SimNode, inc: number): void {
    if (!nd.up || nd.incarnation !== inc) return;
    if (nd.pausedUntil > this.now) {
      this.q.push(nd.pausedUntil, { k: 'tick', n: nd, inc });
      return;
    }
    // Clocks drift by up to 2% (10ms ticks: +-1ms on up to a fifth of them), plus rare scheduling jitter.
    let next = this.sc.tickMs;
    if (this.rNode.chance(nd.driftChance)) next += nd.driftSign;
    if (this.rNode.chance(0.02)) next += this.rNode.range(1, 3);
    this.q.push(this.now + Math.max(1, next), { k: 'tick', n: nd, inc });
    this.current = nd.id;
    (nd.raft as RaftNode).tick();
    this.processReady(nd);
  }

  // ------------------------------------------------------------------ Ready

  private processReady(nd: SimNode): void {
    const raft = nd.raft;
    if (raft === null) return;
    this.current = nd.id;
    let empty = 0;
    for (let round = 0; raft.hasReady(); round++) {
      if (round >= MAX_READY_ROUNDS) {
        this.checkers.failContract(PROPERTY.driverContract, [nd.id], `hasReady() still true after ${MAX_READY_ROUNDS} ready/advance rounds`);
      }
      const rd = raft.ready();
      if (isEmptyReady(rd)) {
        if (++empty >= MAX_EMPTY_READIES) {
          this.checkers.failContract(PROPERTY.driverContract, [nd.id], `hasReady() true but ready() returned ${empty} empty Readies in a row (a spin)`);
        }
      } else {
        empty = 0;
      }
      this.handleReady(nd, raft, rd);
      raft.advance(rd);
    }
  }

  private handleReady(nd: SimNode, raft: RaftNode, rd: Ready): void {
    const wasLeader = nd.role === 'leader';
    if (rd.softState !== null) {
      nd.role = rd.softState.role;
      nd.leaderHint = rd.softState.leader;
      if (rd.softState.leader !== '') this.leaderGuess = rd.softState.leader;
    }
    const isLeader = nd.role === 'leader';
    // 1. persist: log reset, entries, hard state (one sync).
    if (rd.logReset !== null) {
      this.checkers.onLogReset(nd.id, rd.logReset, isLeader);
      nd.logBase = { index: rd.logReset.index, term: rd.logReset.term };
      nd.entries = [];
      this.log(() => `${nd.id} logReset -> ${rd.logReset?.index}/${rd.logReset?.term}`);
    }
    if (rd.entries.length > 0) {
      this.checkers.onPersistEntries(nd.id, rd.entries, isLeader);
      const first = (rd.entries[0] as Entry).index;
      nd.entries.length = first - nd.logBase.index - 1;
      for (const e of rd.entries) nd.entries.push(e);
    }
    if (rd.hardState !== null) {
      this.checkers.onHardState(nd.id, nd.hard, rd.hardState);
      const committedMore = rd.hardState.commit > nd.hard.commit;
      nd.hard = rd.hardState;
      if (committedMore && isLeader && rd.softState === null) this.checkers.onLeaderCommit(nd.id, rd.hardState.commit, rd.hardState.term);
      if (committedMore && isLeader && !this.quiet && this.rFault.chance(this.sc.crashAfterCommitChance)) {
        // A leader that just advanced its commit index dies before telling anyone (Figure 8's crash points).
        this.q.push(this.now + this.rFault.range(0, this.sc.latencyMinMs), { k: 'bounce', n: nd, inc: nd.incarnation });
      }
      if (rd.hardState.term > this.stats.maxTerm) this.stats.maxTerm = rd.hardState.term;
    }
    if (rd.softState !== null) {
      this.log(() => `${nd.id} role=${rd.softState?.role} leader=${rd.softState?.leader || '-'} term=${nd.hard.term}`);
      if (isLeader && !wasLeader) {
        const st = raft.status();
        if (st.term !== nd.hard.term) {
          this.checkers.failContract(PROPERTY.hardState, [nd.id], `leads term ${st.term} but its persisted term is ${nd.hard.term}`);
        }
        this.stats.leadersElected++;
        this.checkers.onLeader(nd.id, st.term);
        if (!this.quiet && this.rFault.chance(this.sc.crashAfterLeadChance)) {
          this.q.push(this.now + this.rFault.range(0, this.sc.latencyMinMs), { k: 'bounce', n: nd, inc: nd.incarnation });
        }
      }
    }
    // 2. send
    for (const m of rd.messages) this.send(m);
    // 3. snapshot to fetch
    if (rd.snapshot !== null) this.startFetch(nd, rd.snapshot);
    // 4. apply
    for (const e of rd.committedEntries) this.apply(nd, e);
    // 5. reads
    for (const rs of rd.readStates) this.onReadState(nd, rs);
    for (const rf of rd.readFailures) {
      const p = this.pendingReads.get(rf.context);
      if (p !== undefined && p.node === nd) {
        this.pendingReads.delete(rf.context);
        this.stats.readsFailed++;
      }
    }
    if (nd.waitingReads.length > 0) this.flushReads(nd);
  }

  private apply(nd: SimNode, e: Entry): void {
    const sm = nd.sm;
    if (e.index <= sm.applied) return; // idempotent: already in the state machine
    const pid = e.type === 'normal' && e.data.length >= 4 ? readU32(e.data) : -1;
    this.checkers.onApply(nd.id, e, sm.applied, sm.count, pid);
    const countBefore = sm.count;
    if (e.type === 'conf') {
      const cc = decodeConfChangeOrNull(e.data);
      if (cc !== null) sm.membership = applyConfChange(sm.membership, cc);
    }
    sm.applied = e.index;
    sm.appliedTerm = e.term;
    if (pid >= 0) sm.count++;
    this.stats.applied++;
    if (pid >= 0) {
      const p = this.pendingProposals.get(pid);
      if (p !== undefined && p.node === nd && p.incarnation === nd.incarnation) {
        this.pendingProposals.delete(pid);
        if (p.index === e.index && p.term === e.term) {
          this.stats.acked++;
          if (e.index > this.ackedMaxIndex) this.ackedMaxIndex = e.index;
          if (countBefore + 1 > this.ackedCount) this.ackedCount = countBefore + 1;
          this.log(() => `${nd.id} ack #${pid} at ${e.index}/${e.term}`);
        }
      }
    }
  }

  // ------------------------------------------------------------------ network

  private msgCode(m: Message): number {
    const from = this.byId.get(m.from)?.idx ?? 7;
    const to = this.byId.get(m.to)?.idx ?? 7;
    return (m.type.length * 31 + m.type.charCodeAt(0) + m.type.charCodeAt(m.type.length - 1)) * 64 + from * 8 + to;
  }

  private isBlocked(a: SimNode, b: SimNode): boolean {
    return (this.blocked[a.idx * this.sc.nodes + b.idx] as number) > 0;
  }

  private send(m: Message): void {
    this.stats.messagesSent++;
    if (m.type === 'voteResp' && m.granted && !m.preVote && !this.quiet && this.sc.crashAfterVoteChance > 0) {
      // A node that just granted its vote to another crashes a moment later: the vote must have been durable.
      const voter = this.byId.get(m.from);
      if (voter !== undefined && this.rFault.chance(this.sc.crashAfterVoteChance)) {
        this.q.push(this.now + this.rFault.range(0, this.sc.latencyMaxMs), { k: 'bounce', n: voter, inc: voter.incarnation });
      }
    }
    if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot' || m.type === 'timeoutNow') {
      // An independent Election Safety sensor: only a leader sends these, in its term.
      this.checkers.onLeaderMessage(m.from, m.term);
    }
    const from = this.byId.get(m.from);
    const to = this.byId.get(m.to);
    if (from === undefined || to === undefined || this.isBlocked(from, to)) {
      this.stats.messagesDropped++;
      return;
    }
    const sc = this.sc;
    const r = this.rNet;
    if (!this.quiet && r.chance(sc.dropChance)) {
      this.stats.messagesDropped++;
      return;
    }
    const copies = !this.quiet && r.chance(sc.dupChance) ? 2 : 1;
    const link = from.idx * sc.nodes + to.idx;
    for (let c = 0; c < copies; c++) {
      let at = this.now + r.range(sc.latencyMinMs, this.quiet ? this.quietLatencyMaxMs : sc.latencyMaxMs);
      if (!this.quiet && (c > 0 || r.chance(sc.reorderChance))) {
        at += r.nextInt(sc.reorderMaxMs); // overtaken by later messages
      } else {
        at = Math.max(at, this.linkClearMs[link] as number);
        this.linkClearMs[link] = at;
      }
      this.q.push(at, { k: 'deliver', m });
    }
  }

  private onDeliver(m: Message): void {
    const to = this.byId.get(m.to);
    const from = this.byId.get(m.from);
    if (to === undefined || from === undefined || !to.up || this.isBlocked(from, to)) {
      this.stats.messagesDropped++;
      return;
    }
    if (to.pausedUntil > this.now) {
      this.q.push(to.pausedUntil + this.rNet.range(0, 3), { k: 'deliver', m });
      return;
    }
    this.stats.messagesDelivered++;
    if (m.type === 'snapshot') to.snapshotSenders.set(m.snapshot.index, m.from);
    if (this.trace !== undefined && m.type !== 'heartbeat' && m.type !== 'heartbeatResp') this.log(() => `deliver ${describe(m)}`);
    this.current = to.id;
    (to.raft as RaftNode).step(m);
    this.processReady(to);
  }

  // ------------------------------------------------------------------ snapshots

  private maybeTakeSnapshot(nd: SimNode): void {
    if (!nd.up || nd.raft === null || nd.pausedUntil > this.now) return;
    const raft = nd.raft;
    const sm = nd.sm;
    const newest = nd.newestSnapshot();
    if (sm.applied - newest.meta.index < this.sc.snapshotMinEntries) return;
    this.current = nd.id;
    const coreMembership = raft.membershipAt(sm.applied);
    if (!sameMembership(coreMembership, sm.membership)) {
      this.checkers.failContract(PROPERTY.driverContract, [nd.id], `state machine membership at ${sm.applied} (${fmtMembership(sm.membership)}) differs from the core's (${fmtMembership(coreMembership)})`);
    }
    const meta: SnapshotMeta = {
      index: sm.applied,
      term: sm.appliedTerm,
      membership: sm.membership,
      sizeBytes: 64 + sm.count * 8,
      digest: `sim-${sm.applied}-${sm.appliedTerm}-${sm.count}`,
    };
    nd.snapshots.push({ meta, count: sm.count });
    this.retain(nd);
    raft.setSnapshot(meta);
    this.stats.snapshotsTaken++;
    const want = Math.min(meta.index - this.sc.snapshotKeepEntries, raft.compactionFloor());
    let baseMsg = '';
    if (want > nd.logBase.index) {
      const base = raft.compact(want);
      if (base.index > want) this.checkers.failContract(PROPERTY.driverContract, [nd.id], `compact(${want}) returned base ${base.index}`);
      this.checkers.onCompact(nd.id, base);
      nd.entries.splice(0, base.index - nd.logBase.index);
      nd.logBase = { index: base.index, term: base.term };
      baseMsg = ` compact->${base.index}`;
    }
    this.log(() => `${nd.id} snapshot at ${meta.index}/${meta.term} (${sm.count} commands)${baseMsg}`);
    this.processReady(nd);
  }

  /** retain keeps the newest snapshotRetain snapshots, and any older one a peer is fetching (Typesense #1891 vs #2859). */
  private retain(nd: SimNode): void {
    let excess = nd.snapshots.length - this.sc.snapshotRetain;
    nd.snapshots = nd.snapshots.filter((s, i) => {
      if (excess <= 0 || i === nd.snapshots.length - 1) return true;
      if ((nd.pins.get(s.meta.index) ?? 0) > 0) return true;
      excess--;
      return false;
    });
  }

  private pin(src: SimNode, index: number, delta: number): void {
    const v = (src.pins.get(index) ?? 0) + delta;
    if (v <= 0) src.pins.delete(index);
    else src.pins.set(index, v);
  }

  private startFetch(nd: SimNode, meta: SnapshotMeta): void {
    if (nd.fetching.has(meta.index)) return;
    nd.fetching.add(meta.index);
    this.stats.snapshotFetches++;
    const source = nd.snapshotSenders.get(meta.index) ?? nd.leaderHint;
    const src = this.byId.get(source);
    // The fetch opens a stream at once: the source keeps the snapshot while it streams (if it still has it).
    let srcInc = -1;
    if (src !== undefined && src.up && src.snapshots.some((s) => s.meta.index === meta.index)) {
      this.pin(src, meta.index, 1);
      srcInc = src.incarnation;
    }
    const sc = this.sc;
    const dur = 2 * this.rNet.range(sc.latencyMinMs, sc.latencyMaxMs) + Math.ceil(meta.sizeBytes / sc.fetchBytesPerMs);
    this.log(() => `${nd.id} fetch snapshot ${meta.index}/${meta.term} from ${source || '?'} (${dur}ms)`);
    this.q.push(this.now + dur, { k: 'fetchDone', n: nd, inc: nd.incarnation, meta, source, srcInc });
  }

  private onFetchDone(nd: SimNode, inc: number, meta: SnapshotMeta, source: NodeId, srcInc: number): void {
    const src = this.byId.get(source);
    if (nd.up && nd.incarnation === inc && nd.pausedUntil > this.now) {
      this.q.push(nd.pausedUntil, { k: 'fetchDone', n: nd, inc, meta, source, srcInc });
      return;
    }
    if (src !== undefined && srcInc >= 0 && src.incarnation === srcInc) {
      this.pin(src, meta.index, -1);
      this.retain(src);
    }
    if (!nd.up || nd.incarnation !== inc || nd.raft === null) return;
    nd.fetching.delete(meta.index);
    const raft = nd.raft;
    this.current = nd.id;
    const stored = src?.snapshots.find((s) => s.meta.index === meta.index && s.meta.term === meta.term && s.meta.digest === meta.digest);
    let why = '';
    if (src === undefined) why = 'no source';
    else if (!src.up || (srcInc >= 0 && src.incarnation !== srcInc)) why = 'source crashed';
    else if (this.isBlocked(src, nd) || this.isBlocked(nd, src)) why = 'partitioned';
    else if (stored === undefined) why = 'source no longer holds it';
    else if (this.rNet.chance(this.sc.fetchFailChance)) why = 'transfer failed';
    if (why !== '' || stored === undefined) {
      this.stats.snapshotFetchesFailed++;
      this.log(() => `${nd.id} fetch of snapshot ${meta.index} FAILED: ${why}`);
      raft.snapshotFailed(meta);
      this.processReady(nd);
      return;
    }
    const install = raft.restoreSnapshot(meta);
    this.log(() => `${nd.id} fetched snapshot ${meta.index}/${meta.term}: restore -> ${install}`);
    if (install) {
      this.stats.snapshotsInstalled++;
      this.checkers.onInstall(nd.id, nd.sm.applied, meta.index, stored.count);
      nd.sm = { applied: meta.index, appliedTerm: meta.term, count: stored.count, membership: meta.membership };
      if (meta.index > nd.newestSnapshot().meta.index) {
        nd.snapshots.push(stored);
        this.retain(nd);
      }
    }
    this.processReady(nd);
    if (install) {
      // The install and the log reset are one atomic step for the disk: the log must now hold the snapshot's point.
      const t = meta.index === nd.logBase.index ? nd.logBase.term : nd.entries[meta.index - nd.logBase.index - 1]?.term;
      if (t !== meta.term) {
        this.checkers.failContract(PROPERTY.driverContract, [nd.id], `after installing snapshot ${meta.index}/${meta.term} the persisted log (base ${nd.logBase.index}, last ${nd.lastIndex()}) does not hold that point`);
      }
    }
  }

  // ------------------------------------------------------------------ faults

  private upNodes(): SimNode[] {
    return this.nodes.filter((n) => n.up);
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes) {
      if (n.up && n.role === 'leader' && (best === undefined || n.hard.term > best.hard.term)) best = n;
    }
    return best;
  }

  private onCrashEvent(): void {
    if (this.quiet) return;
    const sc = this.sc;
    this.q.push(this.now + this.rFault.exp(sc.crashMeanMs), { k: 'crash' });
    const up = this.upNodes();
    const down = this.nodes.length - up.length;
    if (down >= Math.ceil(this.nodes.length / 2) || up.length === 0) return;
    const leader = this.currentLeader();
    const victim = leader !== undefined && this.rFault.chance(0.4) ? leader : this.rFault.pick(up);
    this.crash(victim);
    // Short outages (within an election) catch unsynced votes; long ones force snapshot catch-up.
    const electionMs = sc.electionTimeoutTicks * sc.tickMs;
    const downMs = this.rFault.chance(0.5) ? this.rFault.range(1, 2 * electionMs) : this.rFault.range(electionMs, sc.downMaxMs);
    this.q.push(this.now + downMs, { k: 'restart', n: victim, inc: victim.incarnation });
  }

  /** onBounce: crash a node that just voted, and restart it soon (the vote must have been durable). */
  private onBounce(nd: SimNode, inc: number): void {
    if (this.quiet || !nd.up || nd.incarnation !== inc) return;
    const down = this.nodes.length - this.upNodes().length;
    if (down >= Math.ceil(this.nodes.length / 2)) return;
    this.crash(nd);
    this.q.push(this.now + this.rFault.range(1, this.sc.latencyMaxMs), { k: 'restart', n: nd, inc: nd.incarnation });
  }

  private onPartition(): void {
    if (this.quiet) return;
    const sc = this.sc;
    const r = this.rFault;
    this.q.push(this.now + r.exp(sc.partitionMeanMs), { k: 'partition' });
    const n = this.nodes.length;
    const links: number[] = [];
    const kind = r.nextInt(3);
    let desc = '';
    if (kind === 0) {
      const order = r.shuffle(this.nodes.map((x) => x.idx));
      const size = r.range(1, Math.floor(n / 2));
      const group = new Set(order.slice(0, size));
      for (let a = 0; a < n; a++) {
        for (let b = 0; b < n; b++) if (group.has(a) !== group.has(b)) links.push(a * n + b);
      }
      desc = `split {${[...group].map((i) => `n${i + 1}`).join(',')}} from the rest`;
    } else if (kind === 1) {
      const count = r.range(1, 2);
      for (let i = 0; i < count; i++) {
        const a = r.nextInt(n);
        const b = (a + 1 + r.nextInt(n - 1)) % n;
        links.push(a * n + b);
        desc += `n${a + 1}-/->n${b + 1} `;
      }
    } else {
      const leader = this.currentLeader() ?? r.pick(this.nodes);
      const inbound = r.chance(0.5);
      for (let b = 0; b < n; b++) {
        if (b === leader.idx) continue;
        links.push(b * n + leader.idx); // nobody reaches the leader
        if (!inbound) links.push(leader.idx * n + b); // ... and (unless inbound only) it reaches nobody
      }
      desc = `isolate ${leader.id}${inbound ? ' (inbound only)' : ''}`;
    }
    const id = this.nextFaultId++;
    for (const l of links) this.blocked[l] = (this.blocked[l] as number) + 1;
    this.activeFaults.set(id, links);
    this.stats.partitions++;
    const dur = r.range(sc.partitionMinMs, sc.partitionMaxMs);
    this.log(() => `PARTITION #${id} ${desc} for ${dur}ms`);
    this.q.push(this.now + dur, { k: 'heal', fault: id });
  }

  private heal(id: number): void {
    const links = this.activeFaults.get(id);
    if (links === undefined) return;
    for (const l of links) this.blocked[l] = (this.blocked[l] as number) - 1;
    this.activeFaults.delete(id);
    this.log(() => `HEAL #${id}`);
  }

  private onPause(): void {
    if (this.quiet) return;
    this.q.push(this.now + this.rFault.exp(this.sc.pauseMeanMs), { k: 'pause' });
    const up = this.upNodes();
    if (up.length === 0) return;
    const nd = this.rFault.pick(up);
    const d = this.rFault.range(10, this.sc.pauseMaxMs);
    nd.pausedUntil = Math.max(nd.pausedUntil, this.now + d);
    this.stats.pauses++;
    this.log(() => `${nd.id} PAUSE ${d}ms`);
  }

  private onFaultsEnd(): void {
    this.quiet = true;
    for (const id of [...this.activeFaults.keys()]) this.heal(id);
    for (const nd of this.nodes) {
      nd.pausedUntil = 0;
      if (!nd.up) this.start(nd);
    }
    this.log(() => 'FAULTS END: healed, all nodes up; waiting for liveness');
    this.q.push(this.now + LIVENESS_POLL_MS, { k: 'liveness' });
  }

  // ------------------------------------------------------------------ liveness

  private checkLiveness(final: boolean): void {
    const leader = this.currentLeader();
    let problem = '';
    let who: NodeId[] = [];
    if (leader === undefined || leader.raft === null) {
      problem = 'no leader';
    } else {
      const m = leader.raft.status().membership;
      for (const v of m.voters) {
        const nd = this.byId.get(v);
        if (nd === undefined || !nd.up) {
          problem = `voter ${v} is not up`;
          who = [v];
          break;
        }
        if (nd.sm.count < this.ackedCount) {
          problem = `voter ${v} applied ${nd.sm.count} commands (index ${nd.sm.applied}) but ${this.ackedCount} were acknowledged`;
          who = [v];
          break;
        }
      }
    }
    if (problem === '') {
      this.done = true;
      this.stats.livenessMs = this.now - this.sc.faultTimeMs;
      this.log(() => `LIVE: leader ${leader?.id}, every voter applied all ${this.ackedCount} acknowledged commands`);
      return;
    }
    if (final || this.now + LIVENESS_POLL_MS > this.sc.faultTimeMs + this.sc.quietTimeMs) {
      const roles = this.nodes.map((n) => `${n.id}:${n.up ? n.role : 'down'}/t${n.hard.term}/a${n.sm.applied}`).join(' ');
      this.checkers.failLiveness(who, `${this.sc.quietTimeMs}ms after the faults healed: ${problem} [${roles}; membership phase ${this.memPhase}]`);
    }
    this.q.push(this.now + LIVENESS_POLL_MS, { k: 'liveness' });
  }

  // ------------------------------------------------------------------ clients

  private target(): SimNode | undefined {
    const g = this.byId.get(this.leaderGuess);
    if (g !== undefined && g.up) return g;
    const up = this.upNodes();
    if (up.length === 0) return undefined;
    const t = this.rClient.pick(up);
    this.leaderGuess = t.id;
    return t;
  }

  private propose(id: number, attempt: number): void {
    const nd = this.target();
    if (nd === undefined || nd.raft === null) return;
    if (attempt === 0) this.stats.proposals++;
    const data = new Uint8Array(4 + this.rClient.nextInt(24));
    data[0] = id & 0xff;
    data[1] = (id >>> 8) & 0xff;
    data[2] = (id >>> 16) & 0xff;
    data[3] = (id >>> 24) & 0xff;
    this.current = nd.id;
    try {
      const pos = nd.raft.propose(data);
      this.pendingProposals.set(id, { startMs: this.now, node: nd, incarnation: nd.incarnation, index: pos.index, term: pos.term });
      this.log(() => `${nd.id} propose #${id} -> ${pos.index}/${pos.term}`);
    } catch (err) {
      if (err instanceof NotLeaderError) {
        this.leaderGuess = err.leader !== '' ? err.leader : this.rClient.pick(this.nodes).id;
      } else if (!(err instanceof ProposalDroppedError)) {
        throw err;
      }
      this.stats.proposalsRejected++;
      if (attempt + 1 < MAX_PROPOSE_ATTEMPTS) {
        this.q.push(this.now + this.rClient.range(1, 20), { k: 'proposeRetry', id, attempt: attempt + 1 });
      }
    }
    this.processReady(nd);
  }

  /** expireClients: forget proposals and reads that timed out (bounded client state). */
  private expireClients(): void {
    const cutoff = this.now - CLIENT_TIMEOUT_MS;
    for (const [id, p] of this.pendingProposals) if (p.startMs < cutoff) this.pendingProposals.delete(id);
    for (const [ctx, p] of this.pendingReads) if (p.startMs < cutoff) this.pendingReads.delete(ctx);
  }

  private onRead(): void {
    if (this.pendingReads.size >= MAX_PENDING_READS) this.expireClients();
    if (this.pendingReads.size >= MAX_PENDING_READS) return;
    const nd = this.rClient.chance(0.5) ? this.target() : this.rClient.pick(this.nodes);
    if (nd === undefined || !nd.up || nd.raft === null) return;
    const ctx = `r${this.nextReadId++}`;
    this.pendingReads.set(ctx, { startMs: this.now, node: nd, incarnation: nd.incarnation, ackedIndexAtStart: this.ackedMaxIndex });
    this.stats.readsIssued++;
    this.current = nd.id;
    nd.raft.readIndex(ctx);
    this.processReady(nd);
  }

  private onReadState(nd: SimNode, rs: ReadState): void {
    const p = this.pendingReads.get(rs.context);
    if (p === undefined || p.node !== nd || p.incarnation !== nd.incarnation) return;
    this.checkers.onReadState(nd.id, rs.context, rs.index, p.ackedIndexAtStart);
    nd.waitingReads.push({ rs });
  }

  private flushReads(nd: SimNode): void {
    const keep: WaitingRead[] = [];
    for (const w of nd.waitingReads) {
      if (nd.sm.applied >= w.rs.index) {
        this.pendingReads.delete(w.rs.context);
        this.stats.readsServed++;
      } else {
        keep.push(w);
      }
    }
    nd.waitingReads = keep;
  }

  private onTransfer(): void {
    const leader = this.currentLeader();
    if (leader === undefined || leader.raft === null) return;
    const voters = leader.raft.status().membership.voters.filter((v) => v !== leader.id);
    if (voters.length === 0) return;
    const to = this.rClient.pick(voters);
    this.stats.transfers++;
    this.log(() => `${leader.id} transferLeadership -> ${to}`);
    this.current = leader.id;
    try {
      leader.raft.transferLeadership(to);
    } catch (err) {
      if (!(err instanceof NotLeaderError) && !(err instanceof MembershipChangeError)) throw err;
    }
    this.processReady(leader);
  }

  private onCampaign(): void {
    const up = this.upNodes().filter((n) => n.role !== 'leader');
    if (up.length === 0) return;
    const nd = this.rClient.pick(up);
    this.stats.campaigns++;
    this.log(() => `${nd.id} campaign() (forced election)`);
    this.current = nd.id;
    (nd.raft as RaftNode).campaign();
    this.processReady(nd);
  }

  /** onMembership drives remove -> addLearner -> addVoter of one node, goal-based and bounded. */
  private onMembership(): void {
    if (this.memPhase === 'done' || this.memPhase === 'gaveUp') return;
    if (++this.memAttempts > MAX_MEMBERSHIP_ATTEMPTS) {
      this.memPhase = 'gaveUp';
      return;
    }
    this.q.push(this.now + this.rClient.range(20, 120), { k: 'membership' });
    const leader = this.currentLeader();
    if (leader === undefined || leader.raft === null) return;
    const m = leader.raft.status().membership;
    if (this.memPhase === 'idle') {
      const others = m.voters.filter((v) => v !== leader.id);
      if (others.length === 0 || m.voters.length < 2) return;
      this.memTarget = this.rClient.chance(0.2) ? leader.id : this.rClient.pick(others);
      this.memPhase = 'remove';
    }
    const x = this.memTarget;
    let cc: ConfChange | null = null;
    switch (this.memPhase) {
      case 'remove':
        if (!isMember(m, x)) this.memPhase = 'learner';
        else cc = { op: 'removeNode', nodeId: x };
        break;
      case 'learner':
        if (isMember(m, x)) {
          this.memPhase = 'voter';
          this.memLearnerSince = this.now;
        } else {
          cc = { op: 'addLearner', nodeId: x, address: `sim://${x}` };
        }
        break;
      case 'voter':
        if (m.voters.includes(x)) this.memPhase = 'done';
        else if (this.now - this.memLearnerSince >= 100) cc = { op: 'addVoter', nodeId: x, address: `sim://${x}` };
        break;
      default:
        break;
    }
    if (cc === null) return;
    this.current = leader.id;
    try {
      const pos = leader.raft.proposeConfChange(cc);
      this.stats.confChanges++;
      this.log(() => `${leader.id} proposeConfChange ${cc.op} ${cc.nodeId} -> ${pos.index}/${pos.term}`);
    } catch (err) {
      if (!(err instanceof NotLeaderError) && !(err instanceof MembershipChangeError) && !(err instanceof ProposalDroppedError)) throw err;
    }
    this.processReady(leader);
  }
}

function isEmptyReady(rd: Ready): boolean {
  return (
    rd.logReset === null &&
    rd.softState === null &&
    rd.hardState === null &&
    rd.snapshot === null &&
    rd.entries.length === 0 &&
    rd.committedEntries.length === 0 &&
    rd.messages.length === 0 &&
    rd.readStates.length === 0 &&
    rd.readFailures.length === 0
  );
}

function readU32(d: Uint8Array): number {
  return ((d[0] as number) | ((d[1] as number) << 8) | ((d[2] as number) << 16) | ((d[3] as number) << 24)) >>> 0;
}

function sameMembership(a: Membership, b: Membership): boolean {
  if (a.voters.length !== b.voters.length || a.learners.length !== b.learners.length) return false;
  const av = [...a.voters].sort();
  const bv = [...b.voters].sort();
  const al = [...a.learners].sort();
  const bl = [...b.learners].sort();
  return av.every((v, i) => v === bv[i]) && al.every((v, i) => v === bl[i]);
}

function fmtMembership(m: Membership): string {
  return `voters ${m.voters.join(',')} learners ${m.learners.join(',') || '-'}`;
}

/** describe renders a message for the --verbose trace. */
export function describe(m: Message): string {
  const head = `${m.from}->${m.to} ${m.type} t${m.term}`;
  switch (m.type) {
    case 'vote':
      return `${head}${m.preVote ? ' pre' : ''}${m.transfer ? ' transfer' : ''} last=${m.lastLogIndex}/${m.lastLogTerm}`;
    case 'voteResp':
      return `${head}${m.preVote ? ' pre' : ''} ${m.granted ? 'GRANTED' : 'rejected'}`;
    case 'append': {
      const f = m.entries[0];
      const l = m.entries[m.entries.length - 1];
      return `${head} prev=${m.prevLogIndex}/${m.prevLogTerm} ents=${f === undefined || l === undefined ? '-' : `${f.index}..${l.index}`} commit=${m.commit}`;
    }
    case 'appendResp':
      return `${head} ${m.reject ? `REJECT ${m.index} hint=${m.hintIndex}/${m.hintTerm}` : `ok ${m.index}`}`;
    case 'heartbeat':
      return `${head} commit=${m.commit} seq=${m.readSeq}`;
    case 'heartbeatResp':
      return `${head} seq=${m.readSeq} installing=${m.installingIndex}`;
    case 'snapshot':
      return `${head} snap=${m.snapshot.index}/${m.snapshot.term}`;
    case 'snapshotResp':
      return `${head} ${m.reject ? 'REJECT' : 'ok'} ${m.index}`;
    case 'timeoutNow':
      return head;
    case 'readIndex':
      return `${head} ${m.context}`;
    case 'readIndexResp':
      return `${head} ${m.context} ${m.reject ? 'REJECT' : `index=${m.index}`}`;
  }
}

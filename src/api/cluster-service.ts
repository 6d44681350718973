/**
 * ClusterService over a Node: status, membership changes and leadership.
 * Membership changes and TransferLeadership are leader work: a follower
 * forwards them to the leader (one hop, see LeaderForwarder).
 *
 * Vote has Typesense's semantics: on a follower it makes THIS node the
 * leader (it asks the leader to transfer leadership here, or campaigns when
 * no leader is known) and answers success=true once this node leads; on the
 * leader it answers success=false. A learner cannot lead: FAILED_PRECONDITION.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import {
  ClusterServiceClient,
  Role,
  Suffrage,
  type AddMemberRequest,
  type AddMemberResponse,
  type CheckConsistencyRequest,
  type CheckConsistencyResponse,
  type ClusterServiceServer,
  type HashStateRequest,
  type HashStateResponse,
  type Member,
  type RemoveMemberRequest,
  type RemoveMemberResponse,
  type SnapshotLoss,
  type SnapshotScrub,
  type StatusRequest,
  type StatusResponse,
  type TransferLeadershipRequest,
  type TransferLeadershipResponse,
  type VoteRequest,
  type VoteResponse,
} from '../gen/snapcoord/v1/cluster.js';
import type { Node } from '../node/node.js';
import type { NodeStatus } from '../node/node-status.js';
import type { Role as RaftRole } from '../raft/types.js';
import { isNodeId, parseHostPort } from '../client/address.js';
import { ApiError, invalidArgument, toApiError } from './api-error.js';
import { deadlineOf, requireLeader, type LeaderForwarder, type NodeView } from './leader-forwarder.js';
import { unary } from './unary-handler.js';
import { CHECK_ATTEMPTS_DEFAULT, CHECK_WAIT_MS_DEFAULT, CHECK_WAIT_MS_MAX } from '../client/consistency-check-bounds.js';
import { MemberClients, checkConsistency, type StateHash } from '../ops/consistency.js';
import { callUnary } from '../client/unary-call.js';
import { copyAuthorization } from '../client/authorization.js';
import { dialChannel } from '../client/dial.js';

/** ClusterNode is the part of Node the cluster service uses. */
export type ClusterNode = NodeView & Pick<Node, 'changeMembership' | 'transferLeadership' | 'campaign' | 'stateDigest'>;

/** TRANSFER_TIMEOUT_MS_MAX: the longest a leadership transfer may take before DEADLINE_EXCEEDED. */
export const TRANSFER_TIMEOUT_MS_MAX = 5_000;

const ROLES: Readonly<Record<RaftRole, Role>> = {
  follower: Role.ROLE_FOLLOWER,
  preCandidate: Role.ROLE_PRE_CANDIDATE,
  candidate: Role.ROLE_CANDIDATE,
  leader: Role.ROLE_LEADER,
};

/**
 * membersOf lists the configuration of `st`: voters then learners, match
 * indexes when `st` is the leader's; `address` is each member's peer address,
 * `clientAddress` where its client API is ('' when not learned yet).
 */
export function membersOf(st: NodeStatus, addressOf: (id: string) => string, clientAddressOf: (id: string) => string = () => ''): Member[] {
  const member = (id: string, suffrage: Suffrage): Member => {
    const match = st.role === 'leader' ? (st.progress[id]?.match ?? (id === st.id ? st.lastIndex : 0)) : 0;
    return { id, address: st.membership.addresses[id] ?? addressOf(id), suffrage, matchIndex: BigInt(match), clientAddress: clientAddressOf(id), refused: st.refusedBy[id] ?? '' };
  };
  return [
    ...st.membership.voters.map((id) => member(id, Suffrage.SUFFRAGE_VOTER)),
    ...st.membership.learners.map((id) => member(id, Suffrage.SUFFRAGE_LEARNER)),
  ];
}

/**
 * snapshotLossOf: a node's lost snapshot as StatusResponse.snapshot_loss
 * (RaftStatus.snapshotLost: found damaged or lost at boot, none taken or
 * installed since), also while nobody needs one yet: whether rebuilding it
 * failed, and on a leader the followers waiting for a snapshot it cannot
 * offer and the voter leadership is being handed to (the core's transfer,
 * which only a failed rebuild with followers waiting starts here; a
 * follower's are empty); undefined when its snapshot is not lost.
 */
export function snapshotLossOf(st: NodeStatus): SnapshotLoss | undefined {
  const leader = st.role === 'leader';
  if (!st.snapshotLost && !(leader && (st.snapshotStranded.length > 0 || st.snapshotRebuildFailed))) return undefined;
  if (!leader) return { stranded: [], rebuildFailed: st.snapshotRebuildFailed, handOffTo: '' };
  const handing = st.snapshotRebuildFailed && st.snapshotStranded.length > 0;
  return { stranded: [...st.snapshotStranded], rebuildFailed: st.snapshotRebuildFailed, handOffTo: handing ? st.leadTransferee : '' };
}

/** snapshotScrubOf: a node's snapshot scrub as StatusResponse.snapshot_scrub (undefined without a snapshot store). */
export function snapshotScrubOf(st: NodeStatus): SnapshotScrub | undefined {
  const s = st.snapshotScrub;
  if (s === undefined) return undefined;
  return {
    intervalSecs: BigInt(Math.floor(s.intervalMs / 1000)),
    runs: BigInt(s.runs),
    bytes: BigInt(s.bytes),
    damaged: BigInt(s.damaged),
    lastRunAgoMs: BigInt(s.lastAgoMs === null ? -1 : Math.floor(s.lastAgoMs)),
  };
}

/** statusOf is the StatusResponse of a node; clientAddressOf names the members' client addresses. */
export function statusOf(node: NodeView, clientAddressOf: (id: string) => string = () => ''): StatusResponse {
  const st = node.status();
  return {
    id: node.id,
    role: ROLES[st.role],
    term: BigInt(st.term),
    leaderId: st.leader,
    leaderAddress: st.leaderAddress,
    commitIndex: BigInt(st.commit),
    appliedIndex: BigInt(st.applied),
    members: membersOf(st, (id) => node.addressOf(id), clientAddressOf),
    leaderClientAddress: st.leader === '' ? '' : clientAddressOf(st.leader),
    snapshotIndex: BigInt(st.snapshotIndex),
    snapshotLoss: snapshotLossOf(st),
    snapshotScrub: snapshotScrubOf(st),
  };
}

function checkId(id: string): void {
  if (id === '') throw invalidArgument('id is empty');
  if (!isNodeId(id)) throw invalidArgument(`id ${JSON.stringify(id)} is not a valid node id (letters, digits, '_', '-', '.'; at most 64)`);
}

/** pickTransferTarget: the most caught-up voter other than the leader ('' when none). */
function pickTransferTarget(st: NodeStatus): string {
  let best = '';
  let bestMatch = -1;
  for (const id of st.membership.voters) {
    if (id === st.id) continue;
    const match = st.progress[id]?.match ?? 0;
    if (match > bestMatch) {
      best = id;
      bestMatch = match;
    }
  }
  return best;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** ClusterServiceOptions: optional parts of the cluster service. */
export interface ClusterServiceOptions {
  /** stateHash: this node's state hash with the exact index it covers (hashStateAt over the storage); without it HashState answers hashed_index 0. */
  readonly stateHash?: () => Promise<StateHash>;
}

/**
 * APPLIED_WAITERS_MAX: HashState calls (this node's part of CheckConsistency
 * included) waiting at once for an index to be applied; more are refused
 * RESOURCE_EXHAUSTED. Each waits up to CHECK_WAIT_MS_MAX.
 */
export const APPLIED_WAITERS_MAX = 64;

/** APPLIED_POLL_MS: how often the one timer of the waiting calls reads the applied index. */
const APPLIED_POLL_MS = 5;

interface AppliedWaiter {
  readonly index: number;
  /** deadlineMs: when the wait ends, on performance.now() (a wall-clock step does not move it). */
  readonly deadlineMs: number;
  readonly resolve: () => void;
}

/**
 * AppliedWaiters: calls waiting until `node` has applied an index, at most
 * APPLIED_WAITERS_MAX at once, all served by one timer that reads the
 * applied index every APPLIED_POLL_MS while any waits. Before, each call ran
 * a loop of its own reading node.status() every 5 ms for up to a minute: two
 * thousand such calls (a snapshots.read key, atIndex far ahead) took half a
 * core and 350 ms of event-loop delay, every write with it.
 */
export class AppliedWaiters {
  private readonly waiting = new Set<AppliedWaiter>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly node: NodeView) {}

  /**
   * wait resolves once the node has applied `index`, or after waitMs (capped
   * at CHECK_WAIT_MS_MAX), or once `signal` aborts (the call was cancelled or
   * its deadline passed: its place is freed then, not when waitMs ends); it
   * does not reject. Errors (thrown at once): RESOURCE_EXHAUSTED when
   * APPLIED_WAITERS_MAX calls wait already.
   */
  wait(index: number, waitMs: number, signal?: AbortSignal): Promise<void> {
    const ms = Math.min(Math.max(0, waitMs), CHECK_WAIT_MS_MAX);
    if (ms === 0 || signal?.aborted === true || this.node.brief().applied >= index) return Promise.resolve();
    if (this.waiting.size >= APPLIED_WAITERS_MAX) {
      throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${this.waiting.size} calls wait for an index to be applied on ${this.node.id} already (at most ${APPLIED_WAITERS_MAX} at once); retry when one is done`);
    }
    return new Promise<void>((resolve) => {
      const w: AppliedWaiter = {
        index,
        deadlineMs: performance.now() + ms,
        resolve: () => {
          signal?.removeEventListener('abort', gone);
          resolve();
        },
      };
      // A caller gone (cancelled, or its deadline shorter than waitMs) held its place for the whole waitMs before: 64
      // calls cancelled at once by one key's holder kept every other HashState and CheckConsistency refused a minute.
      const gone = (): void => {
        if (this.waiting.delete(w)) w.resolve();
      };
      signal?.addEventListener('abort', gone, { once: true });
      this.waiting.add(w);
      if (this.timer === null) {
        this.timer = setInterval(() => this.sweep(), APPLIED_POLL_MS);
        this.timer.unref();
      }
    });
  }

  private sweep(): void {
    const applied = this.node.brief().applied;
    const now = performance.now();
    for (const w of this.waiting) {
      if (applied < w.index && now < w.deadlineMs) continue;
      this.waiting.delete(w);
      w.resolve();
    }
    if (this.waiting.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}

/**
 * STATE_HASHES_AT_ONCE_MAX: state hashes (HashState, this node's part of
 * CheckConsistency) computed at once. Each reads the whole state and holds a
 * storage snapshot while it does. Calls share them (StateHashes): one is
 * computed at a time unless a call needs a newer index than the running one
 * covers; more than this many are refused RESOURCE_EXHAUSTED.
 */
export const STATE_HASHES_AT_ONCE_MAX = 2;

/** STATE_HASH_REUSE_MS: how long a state hash is answered again while nothing is applied (StateHashes). */
export const STATE_HASH_REUSE_MS = 10_000;

/**
 * StateHashes: this node's state hashes, shared by the calls that ask for one
 * (HashState, this node's part of CheckConsistency). A call answers
 * - the newest hash again, with no read, while it covers the index the node
 *   has applied (nothing was applied since: a fresh read would give the same)
 *   and its read began less than STATE_HASH_REUSE_MS ago (a state altered
 *   behind the node's back, on a disk that rots, shows in a read after that);
 * - else the running hash's, once it ends, when that covers the index the
 *   call asked for (a hash of the state at or after that index);
 * - else a hash of its own, at most STATE_HASHES_AT_ONCE_MAX at once.
 * Before, each call read the whole state itself (at most 2 at once, more
 * refused): a `snapshots.read` key asking in a loop kept two reads of the
 * whole state running at all times, and every other caller's HashState and
 * `cluster check` was refused RESOURCE_EXHAUSTED meanwhile. Now such a loop
 * costs nothing while the state does not change, one read at a time while it
 * does, and others share that read.
 */
export class StateHashes {
  private newest: StateHash | null = null;
  /** newestAtMs: when the newest hash's read began. */
  private newestAtMs = 0;
  private running: Promise<StateHash> | null = null;
  private computing = 0;
  /** computed: hashes read since start (each a read of the whole state). */
  computed = 0;

  constructor(
    private readonly node: Pick<ClusterNode, 'id' | 'brief' | 'stateDigest'>,
    private readonly stateHash: (() => Promise<StateHash>) | undefined,
    // Monotonic: on the wall clock a step back (NTP, a resumed VM) reused a hash for the step's length, not STATE_HASH_REUSE_MS.
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** hash: a state hash of this node covering at least `atIndex` (see the class). Errors: RESOURCE_EXHAUSTED; the read's own. */
  async hash(atIndex: number): Promise<StateHash> {
    for (let shared = 0; ; shared++) {
      const newest = this.newest;
      if (newest !== null && newest.index > 0 && newest.index >= atIndex && newest.index === this.node.brief().applied && this.nowMs() - this.newestAtMs < STATE_HASH_REUSE_MS) {
        return newest;
      }
      const running = this.running;
      if (running === null || shared > 0) return this.compute();
      const r = await running.catch(() => null);
      if (r !== null && r.index >= atIndex && (atIndex === 0 || r.index > 0)) return r;
    }
  }

  private compute(): Promise<StateHash> {
    if (this.computing >= STATE_HASHES_AT_ONCE_MAX) {
      throw new ApiError(grpc.status.RESOURCE_EXHAUSTED, `${this.computing} state hashes are being computed on ${this.node.id} already (at most ${STATE_HASHES_AT_ONCE_MAX} at once); retry when one is done`);
    }
    this.computing++;
    this.computed++;
    const p = this.read().finally(() => {
      this.computing--;
      if (this.running === p) this.running = null;
    });
    this.running = p;
    return p;
  }

  private async read(): Promise<StateHash> {
    const atMs = this.nowMs();
    const h = this.stateHash !== undefined ? await this.stateHash() : { sha256: await this.node.stateDigest(), index: 0 };
    if (this.newest === null || h.index >= this.newest.index) {
      this.newest = h;
      this.newestAtMs = atMs;
    }
    return h;
  }
}

/** createClusterService implements ClusterService over `node`. */
export function createClusterService(node: ClusterNode, forwarder: LeaderForwarder, opts: ClusterServiceOptions = {}): ClusterServiceServer {
  const applied = new AppliedWaiters(node);
  const hashes = new StateHashes(node, opts.stateHash);
  /** localHash: this node's state hash covering atIndex (once applied, waiting at most waitMs), shared (StateHashes). */
  const localHash = async (atIndex: number, waitMs: number): Promise<StateHash> => {
    if (atIndex > 0) await applied.wait(atIndex, waitMs);
    return hashes.hash(atIndex);
  };
  const members = new MemberClients(
    {
      selfId: node.id,
      members: () => {
        const m = node.status().membership;
        return [...m.voters, ...m.learners];
      },
      clientAddressOf: (id) => forwarder.clientAddressOf(id),
      startIndex: () => node.status().commit,
    },
    (address, id) => {
      // The caller's key goes to each member: to that member's certificate only (dialFor).
      const { credentials, options } = dialChannel(forwarder.dialFor(id));
      return new ClusterServiceClient(address, credentials, options);
    },
    localHash,
  );
  return {
    status: unary(async (_call: grpc.ServerUnaryCall<StatusRequest, StatusResponse>) => statusOf(node, forwarder.clientAddressOf)),

    addMember: unary(async (call: grpc.ServerUnaryCall<AddMemberRequest, AddMemberResponse>) => {
      const req = call.request;
      checkId(req.id);
      if (parseHostPort(req.address) === null) throw invalidArgument(`address ${JSON.stringify(req.address)} is not host:port`);
      return forwarder.run(
        call,
        async () => {
          requireLeader(node);
          await node.changeMembership({ op: req.learner ? 'addLearner' : 'addVoter', nodeId: req.id, address: req.address });
          return { members: statusOf(node, forwarder.clientAddressOf).members };
        },
        (leader, opts) => forwarder.cluster(leader).addMember(req.id, req.address, req.learner, opts),
      );
    }),

    removeMember: unary(async (call: grpc.ServerUnaryCall<RemoveMemberRequest, RemoveMemberResponse>) => {
      const req = call.request;
      checkId(req.id);
      return forwarder.run(
        call,
        async () => {
          requireLeader(node);
          await node.changeMembership({ op: 'removeNode', nodeId: req.id });
          return { members: statusOf(node, forwarder.clientAddressOf).members };
        },
        (leader, opts) => forwarder.cluster(leader).removeMember(req.id, opts),
      );
    }),

    transferLeadership: unary(async (call: grpc.ServerUnaryCall<TransferLeadershipRequest, TransferLeadershipResponse>) => {
      const target = call.request.targetId;
      if (target !== '') checkId(target);
      // On the monotonic clock: a wall-clock step during the call does not move it.
      const deadlineMono = performance.now() + (deadlineOf(call) - Date.now());
      return forwarder.run(
        call,
        async () => {
          requireLeader(node);
          const st = node.status();
          const to = target !== '' ? target : pickTransferTarget(st);
          if (to === '') throw new ApiError(grpc.status.FAILED_PRECONDITION, 'there is no other voter to hand leadership to');
          if (to === node.id) return { leaderId: to };
          if (!st.membership.voters.includes(to)) throw invalidArgument(`${to} is not a voter`);
          const timeoutMs = Math.max(1, Math.min(TRANSFER_TIMEOUT_MS_MAX, deadlineMono - performance.now()));
          await node.transferLeadership(to, timeoutMs);
          return { leaderId: to };
        },
        (leader, opts) => forwarder.cluster(leader).transferLeadership(target, opts),
      );
    }),

    vote: unary(async (call: grpc.ServerUnaryCall<VoteRequest, VoteResponse>) => {
      const st = node.status();
      if (st.role === 'leader') return { success: false };
      if (!st.membership.voters.includes(node.id)) {
        throw new ApiError(grpc.status.FAILED_PRECONDITION, `${node.id} is not a voter; a learner cannot lead`);
      }
      // The deadline read once, then timed on the monotonic clock: a wall clock stepped back during the loop kept it
      // polling every 2 ms for the whole step (an hour), campaigning each time no leader was known.
      const deadlineMono = performance.now() + Math.min(deadlineOf(call) - Date.now(), TRANSFER_TIMEOUT_MS_MAX * 2);
      const leftMs = (): number => deadlineMono - performance.now();
      let asked = '';
      while (leftMs() > 0) {
        const now = node.status();
        if (now.role === 'leader') return { success: true };
        const leader = now.leader;
        if (leader === '' && now.role === 'follower') {
          // No leader known: stand for election at once.
          node.campaign();
        } else if (leader !== '' && leader !== node.id && leader !== asked) {
          asked = leader;
          const md = forwarder.forwardMetadata(call);
          const address = forwarder.clientAddressOf(leader);
          if (address === '') {
            await sleep(2);
            asked = '';
            continue;
          }
          try {
            await forwarder
              .cluster({ id: leader, address })
              .transferLeadership(node.id, { deadlineMs: Math.max(1, leftMs()), metadata: md });
          } catch (err) {
            const e = toApiError(err);
            // The leader moved meanwhile: ask the new one; anything else is the answer.
            if (e.code !== grpc.status.FAILED_PRECONDITION && e.code !== grpc.status.UNAVAILABLE) throw e;
          }
          continue;
        }
        await sleep(2);
      }
      if (node.status().role === 'leader') return { success: true };
      throw new ApiError(grpc.status.DEADLINE_EXCEEDED, `${node.id} did not become the leader in time`);
    }),

    hashState: unary(async (call: grpc.ServerUnaryCall<HashStateRequest, HashStateResponse>) => {
      const atIndex = Number(call.request.atIndex ?? 0n);
      if (atIndex > 0) {
        const gone = new AbortController();
        call.once('cancelled', () => gone.abort());
        await applied.wait(atIndex, call.request.waitMs ?? 0, gone.signal);
        // Nobody waits for the answer: no read of the whole state for it.
        if (gone.signal.aborted) throw new ApiError(grpc.status.CANCELLED, 'the call was cancelled while it waited for its index');
      }
      const appliedIndex = BigInt(node.status().applied);
      // A read the call shares covers the index it asked for (StateHashes).
      const h = await hashes.hash(atIndex);
      return { sha256: h.sha256, appliedIndex, hashedIndex: BigInt(h.index) };
    }),

    // Run by the leader (a follower forwards it): the leader knows every member's client address and the commit index.
    checkConsistency: unary(async (call: grpc.ServerUnaryCall<CheckConsistencyRequest, CheckConsistencyResponse>) => {
      const req = call.request;
      return forwarder.run(
        call,
        async (): Promise<CheckConsistencyResponse> => {
          requireLeader(node);
          const r = await checkConsistency(
            members.hashers(() => copyAuthorization(call.metadata, new grpc.Metadata())),
            node.status().commit,
            { waitMs: req.waitMs === 0 ? CHECK_WAIT_MS_DEFAULT : req.waitMs, attempts: req.attempts === 0 ? CHECK_ATTEMPTS_DEFAULT : req.attempts },
          );
          return {
            consistent: r.consistent,
            divergent: r.divergent,
            index: BigInt(r.index),
            members: r.members.map((m) => ({ id: m.id, sha256: m.sha256, hashedIndex: BigInt(m.index), error: m.error })),
            differing: [...r.differing],
            attempts: r.attempts,
          };
        },
        (leader, opts) => {
          const c = forwarder.cluster(leader).raw;
          return callUnary<CheckConsistencyRequest, CheckConsistencyResponse>(c.checkConsistency.bind(c), req, opts);
        },
      );
    }),
  };
}

/**
 * LeaderForwarder: runs an operation on this node when it can, and otherwise
 * forwards the call to the leader over the public API, one hop at most.
 *
 * A forwarded call carries the metadata `x-snapcoord-forwarded: 1`; a node
 * that receives one and is not the leader does not forward again: it answers
 * FAILED_PRECONDITION "not the leader; the leader is <id> at <addr>" with
 * trailing metadata `x-snapcoord-leader: id@addr` (see notLeaderError).
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { NodeError } from '../node/errors.js';
import type { Node } from '../node/node.js';
import { ApiError, notLeaderError, toApiError } from './api-error.js';
import { ClusterClient } from '../client/cluster-client.js';
import { DEFAULT_DEADLINE_MS, type CallOptions } from '../client/unary-call.js';
import { KvClient } from '../client/kv-client.js';
import { copyAuthorization } from '../client/authorization.js';
import type { ClientDial } from '../client/dial.js';
import { MemberClients } from './member-clients.js';

/** FORWARDED_METADATA_KEY marks a call a follower forwarded to the leader. */
export const FORWARDED_METADATA_KEY = 'x-snapcoord-forwarded';

/** LEADER_WAIT_MS_MAX: how long a call waits for an election to name a leader before answering UNAVAILABLE. */
export const LEADER_WAIT_MS_MAX = 3_000;

/** NodeView is the part of Node the API services use. */
export type NodeView = Pick<Node, 'id' | 'status' | 'brief' | 'addressOf' | 'dialAddressOf'>;

/**
 * ForwarderOptions: where the other members' client planes are and how to
 * reach them. A forwarded call carries the caller's own authorization, so the
 * leader checks the caller's key, not ours.
 */
export interface ForwarderOptions {
  /** clientAddressOf: the client-plane address of member `id` ('' when not known yet); default the node's dial address (one plane). */
  readonly clientAddressOf?: (id: string) => string;
  /** dial: TLS credentials for the other members' client planes (default insecure). */
  readonly dial?: ClientDial;
  /**
   * credentialsFor: the credentials of a channel to member `id`'s client plane
   * that refuse a certificate naming another member (memberChannelCredentialsFromFiles'
   * forMember with orNone); absent: dial.credentials for every member. A
   * forwarded call carries the caller's API key: without it a member's
   * certificate passed for the leader's at an address they share, and that
   * member was handed the keys.
   */
  readonly credentialsFor?: (id: string) => grpc.ChannelCredentials;
}

/** Leader names the leader and where this node reaches its client API. */
export interface Leader {
  readonly id: string;
  readonly address: string;
}

/** ServerCall is the part of a grpc-js server call the forwarder reads. */
export interface ServerCall {
  readonly metadata: grpc.Metadata;
  getDeadline(): grpc.Deadline;
}

/** isForwarded: the call was forwarded by a follower (one hop only). */
export function isForwarded(call: ServerCall): boolean {
  return call.metadata.get(FORWARDED_METADATA_KEY).some((v) => String(v) === '1');
}

/** deadlineOf: the call's absolute deadline in ms since the epoch (now + DEFAULT_DEADLINE_MS when it has none). */
export function deadlineOf(call: ServerCall): number {
  const d = call.getDeadline();
  const ms = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(ms) ? ms : Date.now() + DEFAULT_DEADLINE_MS;
}

/** notLeaderHere: the NodeError a non-leader raises before doing leader-only work. */
export function requireLeader(node: NodeView): void {
  const st = node.brief();
  if (st.role !== 'leader') throw new NodeError('notLeader', `${node.id} is not the leader`, st.leader, st.leaderAddress);
}

export class LeaderForwarder {
  private readonly node: NodeView;
  private readonly kvClients = new MemberClients((id, address) => new KvClient(address, this.dialFor(id)));
  private readonly clusterClients = new MemberClients((id, address) => new ClusterClient(address, this.dialFor(id)));
  private closed = false;
  /** clientAddressOf: where member `id`'s client plane is ('' when unknown). */
  readonly clientAddressOf: (id: string) => string;
  /** dial: credentials of the channels to other members' client planes (no key of our own: calls carry the caller's). */
  readonly dial: ClientDial;
  private readonly credentialsFor: ((id: string) => grpc.ChannelCredentials) | undefined;

  constructor(node: NodeView, opts: ForwarderOptions = {}) {
    this.node = node;
    this.clientAddressOf = opts.clientAddressOf ?? ((id) => node.dialAddressOf(id));
    this.dial = opts.dial?.credentials !== undefined ? { credentials: opts.dial.credentials } : {};
    this.credentialsFor = opts.credentialsFor;
  }

  /** dialFor: how to reach member `id`'s client plane (credentialsFor(id) when given, else dial). */
  dialFor(id: string): ClientDial {
    const credentials = this.credentialsFor?.(id);
    return credentials !== undefined ? { credentials } : this.dial;
  }

  /** forwardMetadata: the metadata of a call made for `call` to another member: the forwarded mark and the caller's authorization. */
  forwardMetadata(call: ServerCall): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(FORWARDED_METADATA_KEY, '1');
    return copyAuthorization(call.metadata, md);
  }

  /**
   * run calls local(forwarded) (`forwarded`: isForwarded(call), read once); when it fails with NodeError `notLeader` it calls
   * remote(leader, opts) against the leader (opts carry the remaining
   * deadline and the forwarded mark), unless the call was itself forwarded.
   * With no leader known it waits (up to LEADER_WAIT_MS_MAX and the call's
   * deadline) for an election. Every failure is an ApiError.
   */
  async run<T>(
    call: ServerCall,
    local: (forwarded: boolean) => Promise<T>,
    remote: (leader: Leader, opts: CallOptions) => Promise<T>,
  ): Promise<T> {
    // The call's deadline on the monotonic clock: a wall-clock step during the call (NTP, a resumed VM) moves
    // neither the wait for a leader nor the deadline the forwarded call carries.
    const deadlineMono = performance.now() + (deadlineOf(call) - Date.now());
    const remainingMs = (): number => deadlineMono - performance.now();
    const forwarded = isForwarded(call);
    for (let attempt = 0; ; attempt++) {
      let notLeader: NodeError;
      try {
        return await local(forwarded);
      } catch (err) {
        if (!(err instanceof NodeError) || err.code !== 'notLeader') throw toApiError(err);
        notLeader = err;
      }
      if (forwarded) throw notLeaderError(notLeader.leaderId, this.clientAddressOf(notLeader.leaderId));
      let leader: Leader | null =
        notLeader.leaderId === '' ? null : { id: notLeader.leaderId, address: this.clientAddressOf(notLeader.leaderId) };
      // No leader known, or its client address not learned yet (it arrives with its first append): wait a little.
      if (leader === null || (leader.id !== this.node.id && leader.address === '')) leader = await this.waitForLeader(Date.now() + remainingMs());
      if (leader === null) throw notLeaderError('', '');
      if (leader.id === this.node.id) {
        // We won an election meanwhile: run here (bounded: elections do not flap that fast).
        if (attempt < 3) continue;
        throw new ApiError(grpc.status.UNAVAILABLE, 'leadership is changing; retry');
      }
      if (leader.address === '') {
        throw new ApiError(grpc.status.UNAVAILABLE, `the leader ${leader.id} has not told this node its client address yet; retry`);
      }
      const md = this.forwardMetadata(call);
      const deadlineMs = Math.max(1, remainingMs());
      try {
        return await remote(leader, { deadlineMs, metadata: md });
      } catch (err) {
        throw toApiError(err);
      }
    }
  }

  /**
   * waitForLeader resolves with the leader once one is known with its client
   * address (or is this node), or null after LEADER_WAIT_MS_MAX (or at
   * `deadline`, whichever comes first). `deadline` (ms since the epoch) is
   * read against the wall clock once; the wait is then timed on the monotonic
   * clock, so a wall-clock step while it waits does not move its end.
   */
  async waitForLeader(deadline: number): Promise<Leader | null> {
    const until = performance.now() + Math.min(deadline - Date.now(), LEADER_WAIT_MS_MAX);
    for (;;) {
      const st = this.node.brief();
      const address = st.leader === '' ? '' : this.clientAddressOf(st.leader);
      if (st.leader !== '' && (address !== '' || st.leader === this.node.id)) return { id: st.leader, address };
      if (performance.now() >= until || this.closed) return null;
      await sleep(Math.min(20, Math.max(1, until - performance.now())));
    }
  }

  /** kv returns the (cached) KV client of member `m`'s API (at m.address, dialled with dialFor(m.id); one per member: MemberClients). */
  kv(m: Leader): KvClient {
    return this.kvClients.get(m.id, m.address);
  }

  /** cluster returns the (cached) Cluster client of member `m`'s API (at m.address, dialled with dialFor(m.id); one per member: MemberClients). */
  cluster(m: Leader): ClusterClient {
    return this.clusterClients.get(m.id, m.address);
  }

  /** close closes every client channel. */
  close(): void {
    this.closed = true;
    this.kvClients.close();
    this.clusterClients.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

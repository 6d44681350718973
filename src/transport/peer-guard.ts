/**
 * The peer plane's admission check: who may speak Raft to this node.
 *
 * Every RaftService call carries, in its request metadata, the cluster id
 * (`x-snapcoord-cluster-id`) and the address of the sender's client plane
 * (`x-snapcoord-client-address`, so that followers learn where to forward
 * writes). PeerGuard.admit refuses, with PERMISSION_DENIED and before the
 * message reaches the node:
 * - a call whose cluster id is missing or not ours (`clusterId`);
 * - under mutual TLS, a message whose `from` is not the member id named by
 *   the sender's certificate (`identityOf`: a cert for n2 cannot speak as n1);
 * - on every RPC but the Raft messages, a call from an id that is not in
 *   the current membership (voters, learners, or a member being added:
 *   `isMember`): snapshot and state-image fetches, archive staging, snapshot
 *   reports, read indexes, forwarded writes and membership questions; and one
 *   from a member a voter of this node's configuration reported removed
 *   (`reportedRemoved`, reason 'removed': the node refuses its Raft messages
 *   itself, src/node/removal-news.ts).
 * The Raft messages (RequestVote, AppendEntries, InstallSnapshot, TimeoutNow:
 * scope 'message') from an id outside the membership are passed on: the
 * sender may be a member added in entries this node lacks, the leader it must
 * follow to learn them, and the Raft core takes a claim to lead from a sender
 * its configuration does not name as a voter only once it has gone an election
 * timeout without hearing from a leader (a voter: once a campaign of its own
 * since then failed), and lets no other message of such a sender move its
 * term (RaftNode: nonVoterClaimTooSoon, nonVoterAnswerAhead).
 * Refused here, a member whose configuration lacked its leader (a new member
 * whose first snapshot predated the leader's own addition; a member away while
 * the leader was added and the members it knew removed) refused that leader
 * for ever and never caught up. An id this node saw removed (`wasRemoved`,
 * as etcd refuses a removed member) is refused those too.
 * With a `vouch` (PeerVouch; Node in production and in the simulator), such a
 * sender's Raft messages are refused ('unvouched') until a voter of this
 * node's own configuration, asked by this node over a channel that checks that
 * voter's certificate, answered that a configuration newer than this node's
 * names it: a certificate for an id no member knows (never added; removed
 * before this node's restart) leads no member, however long it went without a
 * leader (before, a learner or a voter in a minority took it as leader after
 * an election timeout and applied its forged entries).
 * What can be decided before a message is read is decided when the call
 * opens (admitCall, peerAdmissionInterceptor): the cluster id, and under
 * mutual TLS that the certificate names a member. So a caller who will be
 * refused holds no stream open and sends no message (up to
 * PEER_MESSAGE_BYTES_MAX each) that is read and decoded before its refusal.
 * Refusals are counted by reason (`onRefused`, fed to /metrics) and logged
 * once per sender and reason per REFUSAL_LOG_INTERVAL_MS, not per message.
 * peerMetadata builds the metadata every outgoing peer call carries.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import { MEMBER_ADDRESS_CHARS_MAX } from '../raft/membership.js';
import { MetadataGateCall, type GateRefusal, type GatedCall, type MetadataGate } from './metadata-gate.js';
import { silentLogger, type TransportLogger } from './transport.js';

/** CLUSTER_ID_METADATA_KEY: the cluster id every peer call carries. */
export const CLUSTER_ID_METADATA_KEY = 'x-snapcoord-cluster-id';
/** CLIENT_ADDRESS_METADATA_KEY: the sender's client-plane address (host:port), where followers forward writes. */
export const CLIENT_ADDRESS_METADATA_KEY = 'x-snapcoord-client-address';
/**
 * PEER_ADDRESS_METADATA_KEY: the sender's own peer-plane address (host:port), where a member that does not know
 * it yet asks it for its configuration's proofs (PeerVouch.requestVouch; src/node/vouches.ts).
 */
export const PEER_ADDRESS_METADATA_KEY = 'x-snapcoord-peer-address';
/** REFUSAL_LOG_INTERVAL_MS: one log line per sender and reason per minute. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;
/** REFUSAL_LOG_KEYS_MAX: senders remembered for log throttling; beyond it the oldest are forgotten. */
const REFUSAL_LOG_KEYS_MAX = 1024;
/** ADDRESS_CHARS_MAX: a longer advertised client address is ignored. */
const ADDRESS_CHARS_MAX = 300;

/** RefusalReason: why a peer message was refused (the /metrics label). */
export type RefusalReason = 'cluster_id' | 'identity' | 'revoked' | 'not_member' | 'unvouched' | 'removed';

/**
 * PeerRevocation: the peer plane's certificate revocation list (serve
 * --peer-crl): the serial of a caller's certificate (null when it has none)
 * and whether the CRL in use revokes it. A member that missed R's removal
 * still has R in its configuration; only this refuses R's certificate there.
 */
export interface PeerRevocation {
  serialOf(call: PeerCall): string | null;
  isRevoked(serial: string): boolean;
}

/**
 * PeerVouch: whether a sender outside this node's configuration is vouched
 * for (Node: src/node/vouches.ts). vouchedFor is a cheap synchronous check,
 * true once a voter of this node's configuration named `id` in a newer
 * configuration (until that vouch expires or this node's configuration
 * catches up with it). requestVouch starts, in the background, asking one
 * for `id` unless one is asked already, was asked too recently, or too many
 * are; it returns at once and never throws.
 */
export interface PeerVouch {
  vouchedFor(id: NodeId): boolean;
  /** requestVouch: `address`, the peer address the sender's call advertises ('' when none), is where the sender itself is asked. */
  requestVouch(id: NodeId, address?: string): void;
}

/**
 * PeerScope: what a peer call carries. 'message': a Raft message a member
 * takes from a sender outside its configuration by the core's rules (see the
 * file's comment); 'member': anything else, for members only.
 */
export type PeerScope = 'message' | 'member';

/** MESSAGE_RPCS: the RaftService methods of scope 'message'. */
const MESSAGE_RPCS: ReadonlySet<string> = new Set(['RequestVote', 'AppendEntries', 'InstallSnapshot', 'TimeoutNow']);

/** scopeOfRpc: the PeerScope of RaftService method `rpc` ("AppendEntries"). */
export function scopeOfRpc(rpc: string): PeerScope {
  return MESSAGE_RPCS.has(rpc) ? 'message' : 'member';
}

/** scopeOfMessage: the PeerScope of the RPC that carries a request of type `type` (readIndex: ReadIndex, a member's). */
export function scopeOfMessage(type: Message['type']): PeerScope {
  return type === 'vote' || type === 'append' || type === 'heartbeat' || type === 'snapshot' || type === 'timeoutNow' ? 'message' : 'member';
}

/** scopeOfPath: the PeerScope of a gRPC method path ("/snapcoord.v1.RaftService/AppendEntries"; 'member' off RaftService). */
export function scopeOfPath(path: string): PeerScope {
  const slash = path.lastIndexOf('/');
  return path.slice(0, slash).endsWith('.RaftService') ? scopeOfRpc(path.slice(slash + 1)) : 'member';
}

/** PeerCall: the part of a grpc-js server call the guard reads. */
export interface PeerCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
}

/**
 * certificateRevocation: the PeerRevocation of a mutual-TLS peer plane: the
 * serial of the call's verified client certificate (grpc-js's
 * getAuthContext().sslPeerCertificate; null without one), revoked when
 * `isRevoked` (a CRL, tls PeerCrl.isRevoked) says so.
 */
export function certificateRevocation(isRevoked: (serial: string) => boolean): PeerRevocation {
  return {
    serialOf: (call) => {
      const cert = (call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate;
      return typeof cert?.serialNumber === 'string' && cert.serialNumber !== '' ? cert.serialNumber : null;
    },
    isRevoked,
  };
}

/** PeerDirectory: the client-plane address each member advertised over the peer plane (requests and answers alike). */
export class PeerDirectory {
  private readonly addresses = new Map<NodeId, string>();

  /** set records `address` for `id`; an empty or over-long address is ignored. */
  set(id: NodeId, address: string): void {
    if (address === '' || address.length > ADDRESS_CHARS_MAX || hostOf(address) === null) return;
    if (this.addresses.get(id) !== address) this.addresses.set(id, address);
  }

  /** get: the address `id` advertised last ('' when none yet). */
  get(id: NodeId): string {
    return this.addresses.get(id) ?? '';
  }

  /** fromMetadata records the CLIENT_ADDRESS_METADATA_KEY of `md` for `id`. */
  fromMetadata(id: NodeId, md: grpc.Metadata): void {
    this.set(id, firstString(md, CLIENT_ADDRESS_METADATA_KEY));
  }
}

export interface PeerGuardOptions {
  /** directory: where admitted senders' client addresses are recorded (default a new one). */
  readonly directory?: PeerDirectory;
  readonly clusterId: string;
  /** isMember: `id` is in this node's current membership (voter, learner, or being added). */
  readonly isMember: (id: NodeId) => boolean;
  /** wasRemoved: this node saw `id` removed and not added back (Node.wasRemoved): refused in every scope. */
  readonly wasRemoved?: (id: NodeId) => boolean;
  /**
   * reportedRemoved: why member `id` is refused ('removed') though this node's
   * configuration still names it: a voter of that configuration holds its
   * removal committed (Node.removedRefusal, src/node/removal-news.ts), null
   * when it is not. Asked for the calls of scope 'member' (the Raft messages
   * are refused by the node itself, with the same reason).
   */
  readonly reportedRemoved?: (id: NodeId) => string | null;
  /**
   * vouch: a sender outside the membership (not removed) is refused even the
   * Raft messages ('unvouched') until vouchedFor it (see PeerVouch; asked
   * with requestVouch). Absent: they are passed to the core as they come.
   */
  readonly vouch?: PeerVouch;
  /** peerAddressOf: member `id`'s peer address in the membership ('' when unknown); without mutual TLS an advertised client address must be on its host (or the caller's). */
  readonly peerAddressOf?: (id: NodeId) => string;
  /**
   * identityOf: the member id the caller's TLS certificate names, null when it
   * names none; undefined (the option absent) when the peer plane runs without
   * mutual TLS, and then no identity is checked.
   */
  readonly identityOf?: (call: PeerCall) => string | null;
  /**
   * revocation: under mutual TLS, a call whose certificate it revokes is
   * refused ('revoked') when it opens and at every message (a stream opened
   * before the CRL named it is cut at its next message).
   */
  readonly revocation?: PeerRevocation;
  readonly onRefused?: (reason: RefusalReason) => void;
  readonly logger?: TransportLogger;
  /** nowMs: the refusal log's clock, monotonic (default performance.now: on the wall clock a step back silenced it for the step's length). */
  readonly nowMs?: () => number;
}

/** PeerRefusedError: a StatusError-shaped PERMISSION_DENIED. */
export class PeerRefusedError extends Error {
  override readonly name = 'PeerRefusedError';
  readonly code = grpc.status.PERMISSION_DENIED;
  readonly details: string;
  readonly metadata = new grpc.Metadata();

  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
    this.details = message;
  }
}

function firstString(md: grpc.Metadata, key: string): string {
  const v = md.get(key)[0];
  return typeof v === 'string' ? v : '';
}

export class PeerGuard {
  private readonly opts: PeerGuardOptions;
  private readonly log: TransportLogger;
  private readonly nowMs: () => number;
  /** lastLogged: sender|reason -> when its refusal was last logged. */
  private readonly lastLogged = new Map<string, number>();
  /** directory: the client-plane address each admitted member advertised. */
  readonly directory: PeerDirectory;
  /** identities: the certificate identity of each live call (a stream carries many messages, its certificate one). */
  private readonly identities = new WeakMap<PeerCall, string | null>();
  /** serials: the certificate serial of each live call (read once per call; the CRL is asked at every message). */
  private readonly serials = new WeakMap<PeerCall, string | null>();

  constructor(opts: PeerGuardOptions) {
    this.opts = opts;
    this.log = opts.logger ?? silentLogger;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.directory = opts.directory ?? new PeerDirectory();
  }

  /** mutualTls: the guard checks certificate identities. */
  get mutualTls(): boolean {
    return this.opts.identityOf !== undefined;
  }

  /**
   * admit checks one message from `from` arriving on `call`, of `scope` (a
   * sender outside the membership is refused only for 'member'); on success
   * it records the advertised client address of a sender in the membership.
   * Errors: PeerRefusedError.
   */
  admit(from: NodeId, call: PeerCall, scope: PeerScope = 'member'): void {
    this.checkCluster(from, call);
    if (this.opts.identityOf !== undefined) {
      const id = this.memberOf(call);
      if (id === null) this.refuse('identity', from, call, NO_MEMBER_ID_MESSAGE);
      if (id !== from) this.refuse('identity', from, call, `a message from ${from} signed with the certificate of ${id}`);
      this.checkRevoked(from, call);
    }
    const member = this.checkMember(from, call, scope);
    // A sender outside the membership (admitted for the Raft messages) has no address recorded: followers forward
    // writes, and their callers' keys, to their leader's, and an outsider is a leader only once the core took its
    // claim after an election timeout (a removed member's certificate, one never added); without mutual TLS every
    // id such a host made up was kept, none ever dropped. A member added in entries this node lacks gets its
    // address recorded once this node has them.
    if (!member) return;
    // Under mutual TLS the advertised address is bound to the certificate's member. Without it (plaintext, a
    // trusted network) it is taken only when it names the host the call came from or the member's own peer
    // host, so another host cannot redirect forwarded writes, and the callers' keys with them, to itself.
    const advertised = firstString(call.metadata, CLIENT_ADDRESS_METADATA_KEY);
    const host = hostOf(advertised);
    const memberHost = hostOf(this.opts.peerAddressOf?.(from) ?? '');
    if (advertised !== '' && (this.opts.identityOf !== undefined || sameHost(host, remoteHostOf(call.getPeer())) || sameHost(host, memberHost))) {
      this.directory.set(from, advertised);
    }
  }

  /**
   * memberOf: the member id the certificate of `call` names under mutual TLS
   * (read once per call), null without mutual TLS or when it names none.
   */
  memberOf(call: PeerCall): string | null {
    if (this.opts.identityOf === undefined) return null;
    let id = this.identities.get(call);
    if (id === undefined) {
      id = this.opts.identityOf(call);
      this.identities.set(call, id);
    }
    return id;
  }

  /** memberOfOpening: memberOf for a call being opened, as an interceptor sees it (its metadata and TLS context). */
  memberOfOpening(metadata: grpc.Metadata, call: GatedCall): string | null {
    return this.opts.identityOf === undefined ? null : this.opts.identityOf(new GatedPeerCall(metadata, call));
  }

  /**
   * admitCall checks a call of `scope` when it opens, on its metadata alone,
   * before any of its messages is read: the cluster id, and under mutual TLS
   * that the certificate names a member id (`from` of every message is then
   * checked against it by admit), one in the membership unless `scope` is
   * 'message'. Errors: PeerRefusedError, counted and logged as admit's.
   */
  admitCall(call: PeerCall, scope: PeerScope = 'member'): void {
    if (this.opts.identityOf === undefined) {
      this.checkCluster('', call);
      return;
    }
    const id = this.opts.identityOf(call);
    this.checkCluster(id ?? '', call);
    if (id === null) this.refuse('identity', '', call, NO_MEMBER_ID_MESSAGE);
    this.checkRevoked(id, call);
    this.checkMember(id, call, scope);
  }

  /** checkRevoked refuses a call whose certificate the CRL in use revokes (revocation; none: nothing to check). */
  private checkRevoked(id: NodeId, call: PeerCall): void {
    const r = this.opts.revocation;
    if (r === undefined) return;
    let serial = this.serials.get(call);
    if (serial === undefined) {
      serial = r.serialOf(call);
      this.serials.set(call, serial);
    }
    if (serial !== null && r.isRevoked(serial)) {
      this.refuse('revoked', id, call, `the certificate of ${id} (serial ${serial.toLowerCase().slice(0, 64)}) is revoked by this node's --peer-crl (a removed member's certificate)`);
    }
  }

  private checkCluster(from: NodeId, call: PeerCall): void {
    const cluster = firstString(call.metadata, CLUSTER_ID_METADATA_KEY);
    if (cluster !== this.opts.clusterId) {
      this.refuse('cluster_id', from, call, `cluster id ${JSON.stringify(cluster.slice(0, 64))} is not this cluster's (${this.opts.clusterId})`);
    }
  }

  /** checkMember refuses `from` if it may not send in `scope`; true when it is a member (isMember, read once per message). */
  private checkMember(from: NodeId, call: PeerCall, scope: PeerScope): boolean {
    if (this.opts.isMember(from)) {
      const removed = scope === 'member' ? (this.opts.reportedRemoved?.(from) ?? null) : null;
      if (removed !== null) this.refuse('removed', from, call, removed);
      return true;
    }
    if (scope === 'member') this.refuse('not_member', from, call, `${from} is not a member of this cluster as this node knows it (neither its --peers nor its log or snapshot name ${from})`);
    if (this.opts.wasRemoved?.(from) === true) this.refuse('not_member', from, call, `${from} was removed from this cluster (this node applied its removal)`);
    const vouch = this.opts.vouch;
    if (vouch !== undefined) {
      const address = firstString(call.metadata, PEER_ADDRESS_METADATA_KEY);
      vouch.requestVouch(from, address.length <= MEMBER_ADDRESS_CHARS_MAX ? address : ''); // a no-op while one is asked, or a fresh vouch is held
      if (!vouch.vouchedFor(from)) this.refuse('unvouched', from, call, `${from} is not in this node's configuration, and no voter of it has vouched for ${from} yet (this node asks one: a member added in entries this node lacks is taken once one names it)`);
      return false;
    }
    this.logOnce(call, 'outsider', { from: from.slice(0, 64) }, 'peer plane: a Raft message from a sender this node\'s configuration does not name (a member added in entries it lacks, or none): its claims to lead are taken only after an election timeout without a leader and, by a voter, a failed campaign of its own (logged once a minute per sender)');
    return false;
  }

  /** clientAddressOf: the client-plane address member `id` advertised ('' when none yet). */
  clientAddressOf(id: NodeId): string {
    return this.directory.get(id);
  }

  private refuse(reason: RefusalReason, from: NodeId, call: PeerCall, message: string): never {
    this.opts.onRefused?.(reason);
    this.logOnce(call, reason, { from: from.slice(0, 64), reason, err: message }, 'peer plane: message refused (logged once a minute per sender)');
    throw new PeerRefusedError(reason, `refused: ${message}`);
  }

  /** logOnce logs `msg` with `fields` at warn, once per sending host and `what` per REFUSAL_LOG_INTERVAL_MS. */
  private logOnce(call: PeerCall, what: string, fields: Record<string, string>, msg: string): void {
    const peer = call.getPeer();
    // One line per sending host and reason a minute: neither the source port nor the claimed `from` is the sender's to vary.
    const key = `${peer.replace(/:\d+$/, '')}|${what}`;
    const now = this.nowMs();
    const last = this.lastLogged.get(key);
    if (last === undefined || now - last >= REFUSAL_LOG_INTERVAL_MS) {
      if (last === undefined && this.lastLogged.size >= REFUSAL_LOG_KEYS_MAX) {
        const oldest = this.lastLogged.keys().next().value;
        if (oldest !== undefined) this.lastLogged.delete(oldest);
      }
      this.lastLogged.delete(key);
      this.lastLogged.set(key, now);
      this.log.warn({ peer, ...fields }, msg);
    }
  }
}

const NO_MEMBER_ID_MESSAGE = 'the peer certificate names no member id (urn:snapcoord:node:<id>)';

/** GatedPeerCall: a call being opened, as admitCall and identityOf read it (its metadata, peer and TLS context). */
class GatedPeerCall implements PeerCall {
  constructor(
    readonly metadata: grpc.Metadata,
    private readonly call: GatedCall,
  ) {}

  getPeer(): string {
    return this.call.getPeer();
  }

  getAuthContext(): ReturnType<GatedCall['getAuthContext']> {
    return this.call.getAuthContext();
  }
}

/**
 * peerAdmissionInterceptor: the peer plane's server interceptor that asks
 * `guardOf()` (null: not serving yet, every call passes to the services,
 * which answer UNIMPLEMENTED) to admitCall each call when its metadata
 * arrives, in the scope of its method (scopeOfPath); a refused call is answered PERMISSION_DENIED at once, its handler
 * never runs and none of its messages is read (MetadataGateCall).
 */
export function peerAdmissionInterceptor(guardOf: () => PeerGuard | null): grpc.ServerInterceptor {
  const gateOf = (scope: PeerScope): MetadataGate => ({
    decide(metadata, call): GateRefusal | null {
      const guard = guardOf();
      if (guard === null) return null;
      try {
        guard.admitCall(new GatedPeerCall(metadata, call), scope);
        return null;
      } catch (err) {
        if (err instanceof PeerRefusedError) return { code: err.code, details: err.details };
        throw err;
      }
    },
    refused: () => undefined, // the guard counted and logged it
  });
  const gates = { message: gateOf('message'), member: gateOf('member') };
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (method, inner) => new MetadataGateCall(inner, gates[scopeOfPath(method.path)]) as unknown as grpc.ServerInterceptingCall;
}

/** hostOf: the host of a "host:port" or "[v6]:port" address, lower-cased, without brackets; null when it is not one. */
export function hostOf(address: string): string | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(address);
  if (m === null || Number(m[3]) > 65535) return null;
  return (m[1] ?? m[2] ?? '').toLowerCase();
}

/** remoteHostOf: the host of a grpc-js call's peer ("ipv4:1.2.3.4:5", "[::1]:5", "1.2.3.4:5"). */
function remoteHostOf(peer: string): string | null {
  return hostOf(peer.replace(/^ipv[46]:/, ''));
}

function sameHost(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return false;
  const loop = (h: string): string => (h === 'localhost' || h === '::1' || h === '::ffff:127.0.0.1' || /^127\./.test(h) ? 'loopback' : h.replace(/^::ffff:/, ''));
  return loop(a) === loop(b);
}

/** peerMetadata: the metadata every outgoing peer call carries (cluster id; this node's client and peer addresses when known). */
export function peerMetadata(clusterId: string, clientAddress: string, peerAddress = ''): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CLUSTER_ID_METADATA_KEY, clusterId);
  if (clientAddress !== '') md.set(CLIENT_ADDRESS_METADATA_KEY, clientAddress);
  if (peerAddress !== '') md.set(PEER_ADDRESS_METADATA_KEY, peerAddress);
  return md;
}

/** peerMetadataInterceptor adds peerMetadata(...) to every call of a channel. */
export function peerMetadataInterceptor(clusterId: string, clientAddress: string, peerAddress = ''): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.merge(peerMetadata(clusterId, clientAddress, peerAddress));
        next(metadata, listener);
      },
    });
}

/** PeerDial: how this node dials its peers (the transport's channels and snapshot fetches alike). */
export interface PeerDial {
  /** credentials: mutual TLS with the cluster CA, or insecure for a loopback or --insecure-plaintext cluster. */
  readonly credentials: grpc.ChannelCredentials;
  /**
   * credentialsFor: the credentials of a channel to member `id` that also
   * require the server's certificate to name `id` (memberChannelCredentialsFromFiles);
   * absent: `credentials` for every member. Under mutual TLS every member's
   * certificate passes the CA and host checks at an address members share,
   * so without it one member could answer (grant votes, acknowledge appends)
   * as another.
   */
  readonly credentialsFor?: (id: NodeId) => grpc.ChannelCredentials;
  /** interceptors: added to every peer channel (peerMetadataInterceptor). */
  readonly interceptors: readonly grpc.Interceptor[];
}

/**
 * peerDial: the PeerDial of a node of `clusterId` whose client plane listens
 * at `clientAddress` (and peer plane at `peerAddress`, '' when not known);
 * `credentialsFor`, when given, names the credentials of a channel to one
 * member (see PeerDial).
 */
export function peerDial(
  clusterId: string,
  clientAddress: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
  credentialsFor?: (id: NodeId) => grpc.ChannelCredentials,
  peerAddress = '',
): PeerDial {
  return { credentials, ...(credentialsFor !== undefined ? { credentialsFor } : {}), interceptors: [peerMetadataInterceptor(clusterId, clientAddress, peerAddress)] };
}

/** credentialsTo: the credentials of a channel to member `id` with `dial` (its credentialsFor, else its credentials; insecure without a dial). */
export function credentialsTo(dial: PeerDial | undefined, id: NodeId): grpc.ChannelCredentials {
  if (dial === undefined) return grpc.credentials.createInsecure();
  return dial.credentialsFor?.(id) ?? dial.credentials;
}

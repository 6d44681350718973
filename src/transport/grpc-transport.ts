/**
 * GrpcTransport: the client side of RaftService. One channel per peer; appends
 * and heartbeats ride one long-lived AppendEntries stream per peer (ordered,
 * pipelined, with backpressure); votes, snapshots, TimeoutNow and ReadIndex
 * are unary calls with deadlines; snapshotResp goes by ReportSnapshot.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import type * as pb from '../gen/snapcoord/v1/raft.js';
import {
  CodecError,
  appendRequestToProto,
  appendResponseFromProto,
  getMembershipRequestToProto,
  getMembershipResponseFromProto,
  installResponseFromProto,
  readIndexRequestToProto,
  readIndexResponseFromProto,
  reportSnapshotToProto,
  snapshotRequestToProto,
  stageArchiveRequestToProto,
  proposeRequestToProto,
  proposeResponseFromProto,
  timeoutNowToProto,
  voteRequestToProto,
  voteResponseFromProto,
} from './codec.js';
import { faultInterceptors } from './message-faults.js';
import { RaftPeerClient } from './raft-client.js';
import { credentialsTo, type PeerDial, type PeerDirectory } from './peer-guard.js';
import {
  estimateMessageBytes,
  routeOf,
  silentLogger,
  type ArchiveStager,
  type StageArchiveParams,
  type ForwardProposalsParams,
  type ForwardedProposals,
  type MembershipAnswer,
  type MembershipQuery,
  type ProposalForwarder,
  type Transport,
  type TransportLogger,
  type TransportStats,
  UNSERVED_METADATA_KEY,
} from './transport.js';

export interface GrpcTransportOptions {
  readonly selfId: NodeId;
  /** onMessage receives every reply a peer answers with (voteResp, appendResp, heartbeatResp, snapshotResp, readIndexResp). */
  readonly onMessage: (reply: Message) => void;
  readonly logger?: TransportLogger;
  /** unaryDeadlineMs: deadline of RequestVote, InstallSnapshot, TimeoutNow, ReportSnapshot (default 2000). */
  readonly unaryDeadlineMs?: number;
  /** readIndexDeadlineMs: deadline of ReadIndex, whose answer waits for a heartbeat round (default 10000). */
  readonly readIndexDeadlineMs?: number;
  /** maxMessageBytes: largest message sent or received; larger outgoing messages are dropped (default 64 MiB). */
  readonly maxMessageBytes?: number;
  /**
   * backoff: after an append stream fails, wait initialMs, doubling up to
   * maxMs, before reopening it; the channel's reconnect backoff is the same
   * (default 50 / PEER_RECONNECT_MAX_MS).
   */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
  /** maxQueuedMessages / maxQueuedBytes: per peer, stream messages waiting for 'drain' (defaults 4096 / 64 MiB). */
  readonly maxQueuedMessages?: number;
  readonly maxQueuedBytes?: number;
  /**
   * stallTimeoutMs: an append stream that has answered nothing for this long
   * while requests wait on it is cut and reopened (default 3000). Keepalive
   * only notices a dead connection; this notices a stream that stopped answering.
   */
  readonly stallTimeoutMs?: number;
  /** maxInflightUnary: per peer, unary calls in flight before more are dropped (default 1024). */
  readonly maxInflightUnary?: number;
  /** dial: credentials and interceptors of every peer channel (peer-guard.ts peerDial); default insecure, no metadata. */
  readonly dial?: PeerDial;
  /** directory: records the client address each peer sends in its append stream's response headers. */
  readonly directory?: PeerDirectory;
  /** channelOptions override the defaults (see channelOptions()). */
  readonly channelOptions?: grpc.ChannelOptions;
  /**
   * nowMs: the clock of the backoff and the stall timeout, monotonic (default performance.now: on the wall clock a
   * step back held a peer's stream closed for the step's length, every message to it dropped; a step forward
   * took every stream waiting for an answer for stalled).
   */
  readonly nowMs?: () => number;
}

/** PeerInfo: the state of the link to one peer. */
export interface PeerInfo {
  readonly address: string;
  /** channelOpen: a channel (grpc.Client) exists; made lazily on the first send. */
  readonly channelOpen: boolean;
  readonly streamOpen: boolean;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  /** backoffMs: the current append-stream backoff, 0 when the last stream was healthy. */
  readonly backoffMs: number;
  readonly inflightCalls: number;
  /** refused: why the peer refused this node's last message it refused (PERMISSION_DENIED: its peer guard); '' once it takes one. */
  readonly refused: string;
}

type AppendStream = grpc.ClientDuplexStream<pb.AppendEntriesRequest, pb.AppendEntriesResponse>;

interface Queued {
  readonly req: pb.AppendEntriesRequest;
  readonly bytes: number;
}

/** PeerLink is everything the transport holds for one peer. */
class PeerLink {
  client: pb.RaftServiceClient | null = null;
  stream: AppendStream | null = null;
  /** queue: stream messages waiting while the stream is blocked (write() returned false). */
  queue: Queued[] = [];
  queuedBytes = 0;
  blocked = false;
  /** waitingSinceMs: when the oldest request still unanswered on the stream was written (0: none waiting). */
  waitingSinceMs = 0;
  backoffMs = 0;
  retryAtMs = 0;
  /** pendingHeartbeat: the latest heartbeat given while backing off, sent when the stream reopens. */
  pendingHeartbeat: pb.AppendEntriesRequest | null = null;
  readonly calls = new Set<grpc.Call>();
  /** refused: the peer guard's reason for refusing our last refused message (see noteRefused); '' once the peer answers one. */
  refused = '';

  constructor(
    readonly id: NodeId,
    readonly address: string,
  ) {}
}

const MiB = 1024 * 1024;

/**
 * PEER_RECONNECT_MAX_MS: the longest wait between two attempts to reach a
 * peer (append stream and connection alike). Short, as etcd's peer streams
 * (a redial every 100 ms): a member back from a planned restart is reached
 * within this much of listening again, so it learns the leader before its
 * clients' calls wait for one; a refused connection on a LAN costs nothing.
 */
export const PEER_RECONNECT_MAX_MS = 250;

/**
 * NO_CONNECTION_DETAILS: how grpc-js (pick_first, 1.14) fails a call it could not give to any connection (the
 * channel in TRANSIENT_FAILURE: connection refused or unreachable): the call was never sent. peer-boot-window.spec
 * pins it (a Propose to a port nobody listens on).
 */
const NO_CONNECTION_DETAILS = 'No connection established';

export class GrpcTransport implements Transport, ArchiveStager, ProposalForwarder {
  private readonly selfId: NodeId;
  private readonly onMessage: (reply: Message) => void;
  private readonly log: TransportLogger;
  private readonly unaryDeadlineMs: number;
  private readonly readIndexDeadlineMs: number;
  private readonly maxMessageBytes: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxQueuedMessages: number;
  private readonly maxQueuedBytes: number;
  private readonly maxInflightUnary: number;
  private readonly stallTimeoutMs: number;
  private readonly dial: PeerDial | undefined;
  private readonly options: grpc.ChannelOptions;
  private readonly nowMs: () => number;
  private readonly directory: PeerDirectory | undefined;
  private readonly peers = new Map<NodeId, PeerLink>();
  private closed = false;
  private counts = { sent: 0, dropped: 0, received: 0 };

  constructor(opts: GrpcTransportOptions) {
    this.selfId = opts.selfId;
    this.onMessage = opts.onMessage;
    this.log = opts.logger ?? silentLogger;
    this.unaryDeadlineMs = opts.unaryDeadlineMs ?? 2000;
    this.readIndexDeadlineMs = opts.readIndexDeadlineMs ?? 10_000;
    this.maxMessageBytes = opts.maxMessageBytes ?? 64 * MiB;
    this.backoffInitialMs = opts.backoff?.initialMs ?? 50;
    this.backoffMaxMs = Math.max(this.backoffInitialMs, opts.backoff?.maxMs ?? PEER_RECONNECT_MAX_MS);
    this.maxQueuedMessages = opts.maxQueuedMessages ?? 4096;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? 64 * MiB;
    this.maxInflightUnary = opts.maxInflightUnary ?? 1024;
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 3_000;
    this.dial = opts.dial;
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.directory = opts.directory;
    this.options = {
      ...channelOptions({
        maxMessageBytes: this.maxMessageBytes,
        reconnectInitialMs: this.backoffInitialMs,
        reconnectMaxMs: this.backoffMaxMs,
      }),
      // Empty unless SNAPCOORD_MESSAGE_FAULTS arms the chaos tests' fault injection.
      interceptors: [...faultInterceptors(this.log), ...(opts.dial?.interceptors ?? [])],
      ...opts.channelOptions,
    };
  }

  stats(): TransportStats {
    return { ...this.counts };
  }

  /** peerInfo describes the link to one peer (for status pages and tests); undefined for an unknown peer. */
  peerInfo(id: NodeId): PeerInfo | undefined {
    const p = this.peers.get(id);
    if (p === undefined) return undefined;
    return {
      address: p.address,
      channelOpen: p.client !== null,
      streamOpen: p.stream !== null,
      queuedMessages: p.queue.length,
      queuedBytes: p.queuedBytes,
      backoffMs: p.backoffMs,
      inflightCalls: p.calls.size,
      refused: p.refused,
    };
  }

  /** refusals: every peer that refuses this node's messages, with its reason (a member whose --peers do not name this node, a certificate that does not match). */
  refusals(): ReadonlyMap<NodeId, string> {
    const out = new Map<NodeId, string>();
    for (const p of this.peers.values()) if (p.refused !== '') out.set(p.id, p.refused);
    return out;
  }

  send(m: Message): void {
    if (this.closed) return this.drop(m, 'closed');
    const route = routeOf(m.type);
    if (route === 'reply') return this.drop(m, 'reply types travel as RPC responses');
    const peer = this.peers.get(m.to);
    if (peer === undefined) return this.drop(m, 'unknown peer');
    const bytes = estimateMessageBytes(m);
    if (bytes > this.maxMessageBytes) {
      this.log.warn({ to: m.to, type: m.type, bytes, maxMessageBytes: this.maxMessageBytes }, 'transport: message too large, dropped');
      return this.drop(m, 'too large');
    }
    try {
      if (m.type === 'append' || m.type === 'heartbeat') this.sendOnStream(peer, m, bytes);
      else this.callUnary(peer, m);
    } catch (err) {
      this.log.warn({ to: m.to, type: m.type, err }, 'transport: cannot send');
      this.counts.dropped++;
    }
  }

  setPeers(addresses: Readonly<Record<NodeId, string>>): void {
    if (this.closed) return;
    for (const [id, peer] of this.peers) {
      if (!Object.hasOwn(addresses, id) || addresses[id] !== peer.address) {
        this.peers.delete(id);
        this.closePeer(peer);
      }
    }
    for (const [id, address] of Object.entries(addresses)) {
      if (id === this.selfId || this.peers.has(id)) continue;
      this.peers.set(id, new PeerLink(id, address));
    }
  }

  /**
   * reconnect closes every peer's channel (its stream and calls cancelled,
   * its queued messages dropped: Raft sends again); the next message to a
   * peer dials it afresh, with a new TLS handshake. serve calls it when its
   * --peer-crl changes: a connection made before a member's certificate was
   * revoked would otherwise carry that member's answers (votes) for as long
   * as it lasts.
   */
  reconnect(): void {
    if (this.closed) return;
    for (const peer of this.peers.values()) this.closePeer(peer);
  }

  /** close cancels every stream and call and closes every channel. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const peer of this.peers.values()) this.closePeer(peer);
    this.peers.clear();
    // Let the cancellations' callbacks run before the caller goes on.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  // ---------------------------------------------------------------- streams

  private sendOnStream(peer: PeerLink, m: Message & { type: 'append' | 'heartbeat' }, bytes: number): void {
    const req = appendRequestToProto(m);
    if (peer.stream === null && this.nowMs() < peer.retryAtMs) {
      // Backing off: keep only the latest heartbeat.
      if (m.type === 'heartbeat') {
        if (peer.pendingHeartbeat !== null) this.counts.dropped++;
        peer.pendingHeartbeat = req;
      } else {
        this.counts.dropped++;
      }
      return;
    }
    if (peer.stream !== null && peer.waitingSinceMs > 0 && this.nowMs() - peer.waitingSinceMs > this.stallTimeoutMs) {
      const stalled = peer.stream;
      this.log.warn({ peer: peer.id, stallTimeoutMs: this.stallTimeoutMs }, 'transport: append stream stopped answering; reopening it');
      this.streamFailed(peer, stalled, null);
      peer.backoffMs = 0;
      peer.retryAtMs = 0;
    }
    if (peer.stream === null) this.openStream(peer);
    if (peer.pendingHeartbeat !== null) {
      const hb = peer.pendingHeartbeat;
      peer.pendingHeartbeat = null;
      if (m.type === 'heartbeat') this.counts.dropped++;
      else this.write(peer, hb, 64);
    }
    this.write(peer, req, bytes);
  }

  private openStream(peer: PeerLink): void {
    const client = this.clientFor(peer);
    const call = client.appendEntries();
    peer.stream = call;
    peer.blocked = false;
    const directory = this.directory;
    if (directory !== undefined) call.on('metadata', (md: grpc.Metadata) => directory.fromMetadata(peer.id, md));
    call.on('data', (res: pb.AppendEntriesResponse) => {
      peer.backoffMs = 0;
      if (peer.stream === call) peer.waitingSinceMs = 0;
      let reply: Message;
      try {
        reply = appendResponseFromProto(res);
      } catch (err) {
        this.log.warn({ peer: peer.id, err }, 'transport: malformed append response');
        return;
      }
      this.deliver(peer, reply);
    });
    call.on('drain', () => {
      if (peer.stream !== call) return;
      peer.blocked = false;
      this.flush(peer, call);
    });
    // Keep an 'error' listener for the call's whole life: an unhandled stream error would crash the process.
    call.on('error', (err: grpc.ServiceError) => this.streamFailed(peer, call, err));
    call.on('end', () => this.streamFailed(peer, call, null));
  }

  private write(peer: PeerLink, req: pb.AppendEntriesRequest, bytes: number): void {
    const stream = peer.stream;
    if (stream === null) {
      this.counts.dropped++;
      return;
    }
    if (peer.blocked || peer.queue.length > 0) {
      const last = peer.queue[peer.queue.length - 1];
      if (req.heartbeat && last !== undefined && last.req.heartbeat) {
        // A newer heartbeat supersedes a queued one.
        peer.queue[peer.queue.length - 1] = { req, bytes };
        peer.queuedBytes += bytes - last.bytes;
        this.counts.dropped++;
        return;
      }
      if (peer.queue.length >= this.maxQueuedMessages || peer.queuedBytes + bytes > this.maxQueuedBytes) {
        this.counts.dropped++;
        return;
      }
      peer.queue.push({ req, bytes });
      peer.queuedBytes += bytes;
      return;
    }
    this.counts.sent++;
    if (peer.waitingSinceMs === 0) peer.waitingSinceMs = this.nowMs();
    if (!stream.write(req)) peer.blocked = true;
  }

  private flush(peer: PeerLink, stream: AppendStream): void {
    while (!peer.blocked && peer.queue.length > 0) {
      const q = peer.queue.shift() as Queued;
      peer.queuedBytes -= q.bytes;
      this.counts.sent++;
      if (peer.waitingSinceMs === 0) peer.waitingSinceMs = this.nowMs();
      if (!stream.write(q.req)) peer.blocked = true;
    }
  }

  private streamFailed(peer: PeerLink, call: AppendStream, err: grpc.ServiceError | null): void {
    if (peer.stream !== call) return;
    peer.stream = null;
    peer.waitingSinceMs = 0;
    this.counts.dropped += peer.queue.length;
    peer.queue = [];
    peer.queuedBytes = 0;
    peer.blocked = false;
    peer.backoffMs = peer.backoffMs === 0 ? this.backoffInitialMs : Math.min(this.backoffMaxMs, peer.backoffMs * 2);
    peer.retryAtMs = this.nowMs() + peer.backoffMs;
    if (err !== null) this.noteRefused(peer, err);
    this.log.debug(
      { peer: peer.id, code: err?.code, err: err?.details ?? 'stream ended', backoffMs: peer.backoffMs },
      'transport: append stream closed',
    );
    call.cancel();
  }

  // ---------------------------------------------------------------- unary calls

  private callUnary(peer: PeerLink, m: Message): void {
    if (peer.calls.size >= this.maxInflightUnary) {
      this.drop(m, 'too many calls in flight');
      if (m.type === 'readIndex') this.rejectRead(peer, m);
      return;
    }
    const client = this.clientFor(peer);
    const deadlineMs = m.type === 'readIndex' ? this.readIndexDeadlineMs : this.unaryDeadlineMs;
    const options: Partial<grpc.CallOptions> = { deadline: new Date(Date.now() + deadlineMs) };
    const holder: { call: grpc.Call | null } = { call: null };
    const done =
      <R>(decode: (res: R) => Message | null) =>
      (err: grpc.ServiceError | null, res?: R): void => {
        if (holder.call !== null) peer.calls.delete(holder.call);
        if (err !== null) {
          this.noteRefused(peer, err);
          this.log.debug({ peer: peer.id, type: m.type, code: err.code, err: err.details }, 'transport: call failed');
          if (m.type === 'readIndex') this.rejectRead(peer, m);
          return;
        }
        if (res === undefined) return;
        let reply: Message | null;
        try {
          reply = decode(res);
        } catch (e) {
          this.log.warn({ peer: peer.id, type: m.type, err: e }, 'transport: malformed response');
          return;
        }
        if (reply !== null) this.deliver(peer, reply);
      };
    let call: grpc.Call;
    switch (m.type) {
      case 'vote':
        call = client.requestVote(voteRequestToProto(m), new grpc.Metadata(), options, done(voteResponseFromProto));
        break;
      case 'snapshot':
        call = client.installSnapshot(snapshotRequestToProto(m), new grpc.Metadata(), options, done(installResponseFromProto));
        break;
      case 'timeoutNow':
        call = client.timeoutNow(timeoutNowToProto(m), new grpc.Metadata(), options, done(() => null));
        break;
      case 'readIndex':
        call = client.readIndex(readIndexRequestToProto(m), new grpc.Metadata(), options, done(readIndexResponseFromProto));
        break;
      case 'snapshotResp':
        call = client.reportSnapshot(reportSnapshotToProto(m), new grpc.Metadata(), options, done(() => null));
        break;
      default:
        return this.drop(m, 'not a request');
    }
    holder.call = call;
    peer.calls.add(call);
    this.counts.sent++;
  }

  // ---------------------------------------------------------------- StageArchive

  /**
   * stageArchive asks peer p.to, over its channel, to hold a durable verified
   * copy of an uploaded archive (StageArchive) and resolves once it says so.
   * Rejects with the call's grpc ServiceError (its `code`: UNAVAILABLE for an
   * unreachable peer, DEADLINE_EXCEEDED after timeoutMs, CANCELLED on abort or
   * close), or UNAVAILABLE at once for a peer that has no address here.
   */
  stageArchive(p: StageArchiveParams, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return this.unaryTo(
      p.to,
      timeoutMs,
      () => stageArchiveRequestToProto(p),
      (client, req, options, done) => client.stageArchive(req, new grpc.Metadata(), options, done),
      (res: pb.StageArchiveResponse | undefined) => {
        if (res?.durable !== true) throw Object.assign(new Error(`${p.to} did not confirm a durable copy`), { code: grpc.status.INTERNAL });
      },
      signal,
    );
  }

  // ---------------------------------------------------------------- GetMembership

  /**
   * askMembership asks member q.to, over its channel (which checks, under
   * mutual TLS with credentialsFor, that its certificate names q.to), for its
   * configuration (GetMembership). Rejects with the call's grpc ServiceError
   * (PERMISSION_DENIED: q.to does not know this node; DEADLINE_EXCEEDED after
   * timeoutMs), a CodecError for a malformed answer or one from another
   * member than q.to, or UNAVAILABLE at once for a peer with no address here.
   * A peer with no channel here (no member this node knows) is asked at
   * q.address when given, over a channel of its own (the module's
   * askMembership: it too checks that the certificate names q.to).
   */
  askMembership(q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer> {
    if (!this.closed && !this.peers.has(q.to) && q.address !== undefined && q.address !== '') {
      // The address is the sender's word (its x-snapcoord-peer-address): only a plain host:port is dialled, never a
      // grpc-js target of another scheme (unix:/path, unix-abstract:, dns://server/..., an ipv4: list of addresses).
      if (!plainHostPort(q.address)) {
        return Promise.reject(new CodecError(`${q.to}'s advertised peer address ${JSON.stringify(q.address.slice(0, 64))} is not host:port: not dialled`));
      }
      return askMembership(this.dial, q.address, q, timeoutMs);
    }
    let call: grpc.Call | undefined;
    return this.unaryTo(
      q.to,
      timeoutMs,
      () => getMembershipRequestToProto(q),
      (client, req, options, done) => (call = client.getMembership(req, new grpc.Metadata(), options, done)),
      (res: pb.GetMembershipResponse | undefined) => {
        const a = getMembershipResponseFromProto(res as pb.GetMembershipResponse);
        if (a.from !== q.to) throw new CodecError(`the answer came from ${a.from}, not ${q.to}`);
        return withServerSerial(a, call);
      },
    );
  }

  // ---------------------------------------------------------------- Propose

  /**
   * forwardProposals hands the leader p.to this follower's queued proposals
   * (Propose) and resolves with its answer. Rejects with the call's grpc
   * ServiceError (FAILED_PRECONDITION: p.to is not the leader, nothing was
   * appended; UNAVAILABLE, DEADLINE_EXCEEDED after timeoutMs, CANCELLED on
   * close: whether anything was appended is unknown), INTERNAL for a
   * malformed answer, UNAVAILABLE at once for a peer with no address here.
   */
  forwardProposals(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals> {
    return this.unaryTo(
      p.to,
      timeoutMs,
      () => proposeRequestToProto(p),
      (client, req, options, done) => client.propose(req, new grpc.Metadata(), options, done),
      (res: pb.ProposeResponse | undefined) => {
        try {
          return proposeResponseFromProto(res as pb.ProposeResponse, p.data.length);
        } catch (e) {
          throw Object.assign(new Error(`a malformed Propose answer from ${p.to}: ${(e as Error).message}`), { code: grpc.status.INTERNAL });
        }
      },
    ).catch((err: unknown) => {
      // Nothing appended, said so (ProposalForwarder): p.to's server refused the call before its handler ran (still
      // booting), or the call never left this node (no connection to p.to: its process is down or not listening yet).
      const e = err as { code?: unknown; details?: unknown; message?: unknown; metadata?: unknown } | null;
      const refusedUnserved = e?.metadata instanceof grpc.Metadata && e.metadata.get(UNSERVED_METADATA_KEY).length > 0;
      const neverSent = e?.code === grpc.status.UNAVAILABLE && (String(e.details ?? '').startsWith(NO_CONNECTION_DETAILS) || String(e.message).startsWith(`no channel to ${p.to}`));
      if ((refusedUnserved || neverSent) && err instanceof Error) Object.assign(err, { unserved: true });
      throw err;
    });
  }

  // ---------------------------------------------------------------- common

  /**
   * unaryTo makes one unary call to member `to` over its channel, due within
   * `timeoutMs`: `encode` builds the request, `invoke` makes the call,
   * `decode` reads the answer (what it throws rejects). Rejects UNAVAILABLE
   * at once for a peer with no address here (or once closed), with what
   * `encode` throws, or with the call's grpc ServiceError; `signal` cancels
   * the call (CANCELLED).
   */
  private unaryTo<Req, Res, T>(
    to: NodeId,
    timeoutMs: number,
    encode: () => Req,
    invoke: (client: pb.RaftServiceClient, req: Req, options: Partial<grpc.CallOptions>, done: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.Call,
    decode: (res: Res | undefined) => T,
    signal?: AbortSignal,
  ): Promise<T> {
    const peer = this.closed ? undefined : this.peers.get(to);
    if (peer === undefined) {
      return Promise.reject(Object.assign(new Error(`no channel to ${to}${this.closed ? ': transport closed' : ''}`), { code: grpc.status.UNAVAILABLE }));
    }
    let req: Req;
    try {
      req = encode();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => call.cancel();
      const call = invoke(this.clientFor(peer), req, { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => {
        peer.calls.delete(call);
        signal?.removeEventListener('abort', onAbort);
        if (err !== null) return reject(err);
        try {
          resolve(decode(res));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
      peer.calls.add(call);
      if (signal?.aborted === true) call.cancel();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private clientFor(peer: PeerLink): pb.RaftServiceClient {
    if (peer.client === null) peer.client = new RaftPeerClient(peer.address, credentialsTo(this.dial, peer.id), this.options);
    return peer.client;
  }

  /**
   * rejectRead answers a ReadIndex this node sent that got no answer (the leader refused it, e.g. RESOURCE_EXHAUSTED
   * for a member past its share of the leader's read slots; the call failed or was dropped here) with the rejection
   * the leader would send, on a later turn: the read waiting on it fails now rather than at its timeout. A rejection
   * only fails that read; it moves no term (the request's own).
   */
  private rejectRead(peer: PeerLink, m: Extract<Message, { type: 'readIndex' }>): void {
    setImmediate(() => {
      if (this.closed || this.peers.get(peer.id) !== peer) return;
      try {
        this.onMessage({ type: 'readIndexResp', from: m.to, to: m.from, term: m.term, context: m.context, index: 0, reject: true });
      } catch (err) {
        this.log.warn({ peer: peer.id, err }, 'transport: a read rejection threw');
      }
    });
  }

  private deliver(peer: PeerLink, reply: Message): void {
    if (this.closed || this.peers.get(peer.id) !== peer) return;
    if (reply.from !== peer.id || reply.to !== this.selfId) {
      this.log.warn({ peer: peer.id, from: reply.from, to: reply.to, type: reply.type }, 'transport: misaddressed reply dropped');
      return;
    }
    this.counts.received++;
    peer.refused = '';
    try {
      this.onMessage(reply);
    } catch (err) {
      this.log.warn({ peer: peer.id, type: reply.type, err }, 'transport: onMessage threw');
    }
  }

  /**
   * noteRefused records a refusal by the peer's guard (PERMISSION_DENIED: this node is not a member as the
   * peer knows the cluster, or a certificate or cluster id that does not match) and warns when it starts:
   * the peer will refuse every message until that changes (an operator's fix), so it is reported in
   * `cluster status` (refusals) rather than only at debug level.
   */
  private noteRefused(peer: PeerLink, err: grpc.ServiceError): void {
    if (err.code !== grpc.status.PERMISSION_DENIED) return;
    const reason = (err.details ?? '').slice(0, 512) || 'permission denied';
    if (peer.refused === reason) return;
    peer.refused = reason;
    this.log.warn({ peer: peer.id, address: peer.address, reason }, `transport: ${peer.id} refuses this node's messages`);
  }

  private closePeer(peer: PeerLink): void {
    const stream = peer.stream;
    peer.stream = null;
    this.counts.dropped += peer.queue.length + (peer.pendingHeartbeat === null ? 0 : 1);
    peer.queue = [];
    peer.queuedBytes = 0;
    peer.pendingHeartbeat = null;
    stream?.cancel();
    for (const call of peer.calls) call.cancel();
    peer.calls.clear();
    peer.client?.close();
    peer.client = null;
  }

  private drop(m: Message, reason: string): void {
    this.counts.dropped++;
    this.log.debug({ to: m.to, type: m.type, reason }, 'transport: dropped');
  }
}

/**
 * askMembership asks the member at `address` for the cluster's configuration
 * (GetMembership), over a channel of its own dialled with `dial` (the peer
 * plane's credentials and metadata), closed once answered. Rejects with the
 * call's grpc ServiceError (PERMISSION_DENIED: that member does not know the
 * asker; DEADLINE_EXCEEDED after timeoutMs), or a CodecError for a malformed
 * answer or one from another member than `q.to`.
 */
export function askMembership(dial: PeerDial | undefined, address: string, q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer> {
  // The channel asks for q.to's certificate: another member's answer would not be the one asked.
  const client = new RaftPeerClient(address, credentialsTo(dial, q.to), {
    ...channelOptions({ maxMessageBytes: 4 * MiB, reconnectInitialMs: 50, reconnectMaxMs: PEER_RECONNECT_MAX_MS }),
    interceptors: [...(dial?.interceptors ?? [])],
  });
  return new Promise<MembershipAnswer>((resolve, reject) => {
    const call = client.getMembership(getMembershipRequestToProto(q), new grpc.Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => {
      if (err !== null) return reject(err);
      try {
        const a = getMembershipResponseFromProto(res as pb.GetMembershipResponse);
        if (a.from !== q.to) throw new CodecError(`the answer came from ${a.from}, not ${q.to}`);
        resolve(withServerSerial(a, call));
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }).finally(() => client.close());
}

/**
 * withServerSerial: answer `a` with the serial of the certificate the server of `call` presented (MembershipAnswer.serial),
 * `a` as it is without TLS (grpc-js gives no peer certificate then).
 */
function withServerSerial(a: MembershipAnswer, call: grpc.Call | undefined): MembershipAnswer {
  const serial = call?.getAuthContext()?.sslPeerCertificate?.serialNumber;
  return typeof serial === 'string' && serial !== '' ? { ...a, serial } : a;
}

/**
 * plainHostPort: `address` is "host:port" or "[v6]:port" with a host of letters, digits, '.', '-', '_' (no scheme,
 * path, '@' or list), and the host is no grpc-js resolver scheme ("unix:7001" would be the unix socket ./7001).
 */
function plainHostPort(address: string): boolean {
  const m = /^(?:\[[0-9A-Fa-f:.]+\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(address);
  return m !== null && Number(m[2]) <= 65535 && !/^(?:dns|unix|unix-abstract|ipv4|ipv6|vsock)$/i.test(m[1] ?? '');
}

/** channelOptions: the options of every peer channel (exported so the node can size its server alike). */
export function channelOptions(o: { maxMessageBytes: number; reconnectInitialMs: number; reconnectMaxMs: number }): grpc.ChannelOptions {
  return {
    // No channelz: nothing serves it, and grpc-js's tracking costs a Date.now() per message sent and received.
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': o.maxMessageBytes,
    // Only the receiver's window matters for grpc-js (TOOLCHAIN.md): 16 MiB lets responses and streams run at full speed.
    'grpc-node.flow_control_window': 16 * MiB,
    // A LAN: notice a dead peer within ~15 s even on an idle connection.
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 5_000,
    'grpc.keepalive_permit_without_calls': 1,
    // Reconnect as fast as the append stream's own backoff (grpc-js defaults: 1 s .. 120 s).
    'grpc.initial_reconnect_backoff_ms': o.reconnectInitialMs,
    'grpc.max_reconnect_backoff_ms': o.reconnectMaxMs,
    // Our own connection per peer, closed with it (not shared through the global subchannel pool).
    'grpc.use_local_subchannel_pool': 1,
    // A peer named by DNS (a Kubernetes pod back with a new IP) is re-resolved on every reconnect at most
    // once a second (grpc-js waits 30 s between resolutions by default: the peer stayed unreachable that long).
    'grpc.dns_min_time_between_resolutions_ms': 1_000,
  };
}

/**
 * The contracts between the node driver (src/node) and the network: the
 * client side (Transport: send the core's messages to peers) and the server
 * side (RaftRequestHandler: step the messages peers send us and answer them).
 * GrpcTransport + createRaftService implement them over gRPC; MemoryNetwork
 * implements both in memory for tests, with the same semantics.
 */
import type { Membership, Message, MessageType, NodeId, SnapshotMeta, StateImageChunk, StateImageFile } from '../raft/types.js';

/**
 * Transport sends the Raft core's messages to peers. Raft tolerates loss, so a
 * transport never blocks and never throws on send: it drops (and counts) what
 * it cannot deliver. Answers to requests reach the owner through the
 * `onMessage` callback given at construction.
 */
export interface Transport {
  /**
   * send queues m for m.to; never blocks; drops (counting drops) when the
   * peer's queue is full or the peer is unknown. Reply-type messages
   * (voteResp, appendResp, heartbeatResp, readIndexResp) are dropped: they
   * travel as RPC responses (see RaftRequestHandler.handleRequest).
   * snapshotResp is sent as a report (ReportSnapshot).
   */
  send(m: Message): void;
  /** setPeers replaces the id -> "host:port" map (membership changes); closes the channels of removed or moved peers. */
  setPeers(addresses: Readonly<Record<NodeId, string>>): void;
  /** close cancels every call and closes every channel; afterwards send drops and onMessage is never called. */
  close(): Promise<void>;
  /** refusals (optional): the peers whose guard refuses this node's messages, with the reason each gave (PERMISSION_DENIED). */
  refusals?(): ReadonlyMap<NodeId, string>;
}

/** TransportStats counts what a transport did since it was made. */
export interface TransportStats {
  /** sent: messages written to a stream or started as a call. */
  readonly sent: number;
  /** dropped: messages given to send() that were not sent (unknown peer, full queue, backoff, closed, reply type, too large). */
  readonly dropped: number;
  /** received: replies handed to onMessage. */
  readonly received: number;
}

/** FetchSnapshotParams is what a follower asks for with FetchSnapshot. */
export interface FetchSnapshotParams {
  readonly from: NodeId;
  readonly index: number;
  readonly term: number;
  readonly digest: string;
  /** offset: first byte wanted (the end of the last verified chunk when resuming). */
  readonly offset: number;
  /** chunkBytes: wanted chunk size, 0 for the server's default; the server caps it. */
  readonly chunkBytes: number;
}

/** MembershipQuery: member `from` asks `to` for the cluster's configuration (GetMembership). */
export interface MembershipQuery {
  readonly from: NodeId;
  readonly to: NodeId;
  /**
   * address (not sent): where to reach q.to when it is no member this node
   * has a channel to (a sender asked for its own configuration's proofs,
   * src/node/vouches.ts: the peer address its calls advertise). Routing
   * only: the channel still checks that the certificate names q.to.
   */
  readonly address?: string;
  /** probeIndex: an index the asker holds committed (its commit index); the answer's probeTerm is the answering node's term of it. */
  readonly probeIndex?: number;
}

/**
 * MembershipAnswer: the configuration `from` knows (its latest) and its term;
 * from a leader, askerMatchIndex: the last entry the asker acknowledged to it
 * (absent or 0: none, or `from` does not lead).
 */
export interface MembershipAnswer {
  readonly from: NodeId;
  readonly term: number;
  readonly membership: Membership;
  readonly askerMatchIndex?: number;
  /** askerStarted: the answering node has seen the asker run with a log of its own (src/node/started-members.ts). */
  readonly askerStarted?: boolean;
  /** membershipIndex: the index of the entry (or snapshot) `membership` comes from; absent or 0: none (the bootstrap's). */
  readonly membershipIndex?: number;
  /** commitIndex: the answering node's commit index (absent or 0: a build before the field); a membershipIndex at or below it is committed. */
  readonly commitIndex?: number;
  /** probeTerm: the term of the entry at the query's probeIndex, when the answering node holds it committed (absent: unknown). */
  readonly probeTerm?: number;
  /**
   * serial: the serial (hex) of the certificate the answering server presented (mutual TLS; absent without TLS or
   * where the transport cannot tell): what is learned from the answer is dropped once the peer CRL revokes it
   * (RemovalNews.crlChanged). Set by the transport, never read off the wire.
   */
  readonly serial?: string;
}

/**
 * StageArchiveParams: the leader (`from`, in `term`) asks `to` to hold a
 * durable, verified copy of an uploaded archive before it proposes the
 * restore entry naming it (StageArchive).
 */
export interface StageArchiveParams {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  /** archive: index and term recorded in the archive, its size and hex SHA-256 (what FetchSnapshot names). */
  readonly archive: {
    readonly index: number;
    readonly term: number;
    readonly sizeBytes: number;
    readonly digest: string;
  };
}

/**
 * ArchiveStager is the client side of StageArchive (GrpcTransport,
 * MemoryTransport): resolves once `p.to` answers that it holds the archive
 * durably; rejects with its error (a numeric gRPC `code` when it has one), or
 * when `timeoutMs` passes or `signal` aborts first.
 */
export interface ArchiveStager {
  stageArchive(p: StageArchiveParams, timeoutMs: number, signal?: AbortSignal): Promise<void>;
}

/** ForwardProposalsParams: a follower (`from`, in `term`) hands the leader `to` its clients' proposals (encoded commands, in order). */
export interface ForwardProposalsParams {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  readonly data: readonly Uint8Array[];
}

/** FORWARD_PROPOSALS_MAX: the most proposals one Propose call carries (a larger one is refused INVALID_ARGUMENT). */
export const FORWARD_PROPOSALS_MAX = 1024;

/**
 * ForwardedOutcome: what became of one appended proposal on the leader: its
 * encoded apply result, or why not (`lost`: replaced by another leader's
 * entry, never applied; any other code: the outcome is unknown).
 */
export type ForwardedOutcome = { readonly result: Uint8Array } | { readonly error: { readonly code: string; readonly message: string } };

/**
 * ForwardedProposals is the leader's answer to Propose: the first
 * `outcomes.length` proposals were appended to its log (in `term`) and
 * settled there; the rest were not appended, and `refused` says why
 * (`busy`, `diskFull`, `notLeader`, `shuttingDown`: a NodeErrorCode); it is
 * set exactly when some were refused.
 */
export interface ForwardedProposals {
  readonly term: number;
  readonly outcomes: readonly ForwardedOutcome[];
  readonly refused?: { readonly code: string; readonly message: string };
}

/**
 * UNSERVED_METADATA_KEY: the trailer a server sets on a call it refused before
 * any handler of the service ran (ServedLater: bound, not serving yet; or the
 * service is not served): the callee did nothing with the request.
 */
export const UNSERVED_METADATA_KEY = 'snapcoord-unserved';

/**
 * ProposalForwarder is the client side of Propose (GrpcTransport,
 * MemoryTransport): resolves with the leader's answer; rejects with an Error
 * carrying a numeric gRPC `code`: FAILED_PRECONDITION when the call reached
 * another node than `p.to` (nothing appended), UNIMPLEMENTED (no Propose
 * handler ran: nothing appended), or UNAVAILABLE / DEADLINE_EXCEEDED /
 * CANCELLED when the call failed (whether anything was appended is then
 * unknown) — except an UNAVAILABLE with `unserved: true` on the Error: the
 * callee's server refused the call before any handler ran (it is still
 * booting: bound, its services not served yet; UNSERVED_METADATA_KEY in the
 * answer's trailers), or the call never left this node (no connection to
 * the callee: its process down or not listening yet), nothing appended.
 */
export interface ProposalForwarder {
  forwardProposals(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals>;
}

/** FetchStateImageParams: member `from` asks `to` for the state image of the restore entry at `index` (FetchStateImage). */
export interface FetchStateImageParams {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly index: number;
  /** recordFormat: the stored form of state records `from` reads (STATE_RECORD_FORMAT of its build). */
  readonly recordFormat: number;
}

/** StateImageStream: a state image as it is sent or received: its manifest, then its files' bytes in manifest order. */
export interface StateImageStream {
  readonly files: readonly StateImageFile[];
  readonly chunks: AsyncIterable<StateImageChunk>;
  /** close (optional): the stream is done with, iterated or not (releases what the sender holds); idempotent. */
  close?(): void;
  /** snapshot (optional, sender side): once the chunks are sent, the sender's snapshot of the same state, if it has one. */
  snapshot?(): Promise<SnapshotMeta | null>;
}

/**
 * StateImageMessage: one message of a FetchStateImage stream as its reader
 * sees it (FetchStateImageResponse, decoded): the first holds the manifest
 * (`files`), the next ones bytes of file number `file` from `offset`; a last
 * one may hold the sender's snapshot of the same state alone.
 */
export interface StateImageMessage {
  readonly files: readonly StateImageFile[];
  readonly file: number;
  readonly offset: number;
  readonly data: Uint8Array;
  readonly snapshot: SnapshotMeta | null;
}

/**
 * StateImageCall: one FetchStateImage stream as its reader sees it: the
 * messages in order (iterating throws when the stream fails: an Error with a
 * numeric gRPC `code`); cancel() ends it (a pending or later read then throws).
 */
export interface StateImageCall {
  readonly messages: AsyncIterable<StateImageMessage>;
  cancel(): void;
}

/**
 * StateImageStreamOpener is the client side of FetchStateImage: it opens the
 * stream of the image `p` asks for from the peer at `address`. openStateImage
 * opens a gRPC call by default; a transport that carries FetchStateImage
 * itself (the simulator's network) offers one.
 */
export interface StateImageStreamOpener {
  openStateImageStream(address: string, p: FetchStateImageParams): StateImageCall;
}

/** SnapshotChunk is one verified piece of a snapshot archive. */
export interface SnapshotChunk {
  readonly offset: number;
  readonly data: Uint8Array;
  /** sha256 of data (32 bytes). */
  readonly sha256: Uint8Array;
  readonly totalSizeBytes: number;
  readonly last: boolean;
  /** release, when present: the server is done with `data` (sent); its buffer may hold a later chunk (chunk-reader.ts). */
  readonly release?: () => void;
}

/**
 * ChunkStream is one FetchSnapshot stream as its reader sees it: the chunks
 * in order (iterating throws when the stream fails: an Error with a numeric
 * gRPC `code`, NOT_FOUND or INVALID_ARGUMENT when the server refused it, any
 * other when it was cut); cancel() ends it early.
 */
export interface ChunkStream {
  readonly chunks: AsyncIterable<SnapshotChunk>;
  cancel(): void;
}

/**
 * SnapshotStreamOpener is the client side of FetchSnapshot: it opens a stream
 * of the snapshot `p` names from the peer at `address`. fetchSnapshot opens
 * gRPC streams by default; a transport that carries FetchSnapshot itself (the
 * simulator's network) offers one.
 */
export interface SnapshotStreamOpener {
  openSnapshotStream(address: string, p: FetchSnapshotParams): ChunkStream;
}

/**
 * RaftRequestHandler is the node's side of RaftService (createRaftService).
 *
 * Errors: an Error with a numeric gRPC `code` (grpc.status) is answered with
 * that status, any other with INTERNAL. On the AppendEntries stream a failed
 * request ends the stream (the leader reconnects after a backoff).
 */
export interface RaftRequestHandler {
  /**
   * handleRequest steps a request message (vote, append, heartbeat, snapshot,
   * timeoutNow, readIndex) and resolves with its replies (possibly none) once
   * safe to send (after persistence). Only replies of the RPC's answer type
   * addressed to m.from are sent back (voteResp for vote, appendResp for append,
   * heartbeatResp for heartbeat, snapshotResp for snapshot, readIndexResp for
   * readIndex, none for timeoutNow); others are dropped (logged at debug).
   */
  handleRequest(m: Message): Promise<Message[]>;
  /** handleReport steps an asynchronous reply (snapshotResp) that a peer sends us. */
  handleReport(m: Message): void;
  /**
   * openSnapshot serves FetchSnapshot: the chunks of the named snapshot from
   * params.offset, in order. Optional: without it FetchSnapshot answers
   * UNIMPLEMENTED. The iterator is closed early (return()) when the caller
   * cancels. Reject with a coded Error (e.g. NOT_FOUND) for an unknown snapshot.
   */
  openSnapshot?(params: FetchSnapshotParams): Promise<AsyncIterable<SnapshotChunk>>;
  /**
   * stageArchive serves StageArchive: fetch the named archive from p.from
   * (unless held already), verify it and keep it durably in the uploads;
   * resolves only then. Optional: without it StageArchive answers
   * UNIMPLEMENTED. Reject with a coded Error (RESOURCE_EXHAUSTED, UNAVAILABLE ...).
   * `signal` aborts when the caller cancels (gave up, deadline): stop the
   * fetch unless another caller still waits for the same archive.
   */
  stageArchive?(p: StageArchiveParams, signal?: AbortSignal): Promise<void>;
  /**
   * proposeForwarded serves Propose: append `p.data` to the log as the
   * leader, in order, and resolve once each is applied or failed
   * (ForwardedProposals; not the leader: all refused `notLeader`). Optional:
   * without it Propose answers UNIMPLEMENTED.
   */
  proposeForwarded?(p: ForwardProposalsParams): Promise<ForwardedProposals>;
  /**
   * membershipFor serves GetMembership (a joining member asks): this node's
   * latest configuration and term. Optional: without it GetMembership answers
   * UNIMPLEMENTED.
   */
  membershipFor?(q: MembershipQuery): MembershipAnswer;
  /**
   * openStateImage serves FetchStateImage: the state image of
   * the restore entry at p.index, waiting a bounded time while this node
   * still builds it. Optional: without it FetchStateImage answers
   * UNIMPLEMENTED. Reject with a coded Error (NOT_FOUND: no such image,
   * RESOURCE_EXHAUSTED: too many transfers). `signal` aborts when the caller
   * cancels; the chunks' iterator is closed early (return()) then.
   */
  openStateImage?(p: FetchStateImageParams, signal: AbortSignal): Promise<StateImageStream>;
}

/** TransportLogger is the pino-like logger the transports use. */
export interface TransportLogger {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export const silentLogger: TransportLogger = {
  debug: () => undefined,
  warn: () => undefined,
};

/** Route tells how a message travels. */
export type Route = 'stream' | 'unary' | 'report' | 'reply';

/** routeOf: append/heartbeat ride the AppendEntries stream; vote, snapshot, timeoutNow, readIndex are unary calls; snapshotResp is a ReportSnapshot; other replies travel as RPC responses. */
export function routeOf(type: MessageType): Route {
  switch (type) {
    case 'append':
    case 'heartbeat':
      return 'stream';
    case 'vote':
    case 'snapshot':
    case 'timeoutNow':
    case 'readIndex':
      return 'unary';
    case 'snapshotResp':
      return 'report';
    case 'voteResp':
    case 'appendResp':
    case 'heartbeatResp':
    case 'readIndexResp':
      return 'reply';
  }
}

/** replyTypeOf: the reply type an RPC answers a request type with (null: none, e.g. timeoutNow). */
export function replyTypeOf(type: MessageType): MessageType | null {
  switch (type) {
    case 'vote':
      return 'voteResp';
    case 'append':
      return 'appendResp';
    case 'heartbeat':
      return 'heartbeatResp';
    case 'snapshot':
      return 'snapshotResp';
    case 'readIndex':
      return 'readIndexResp';
    default:
      return null;
  }
}

/** estimateMessageBytes: a cheap upper-ish estimate of m's encoded size (entry data dominates). */
export function estimateMessageBytes(m: Message): number {
  let n = 64;
  if (m.type === 'append') for (const e of m.entries) n += e.data.byteLength + 32;
  else if (m.type === 'snapshot') {
    for (const [id, addr] of Object.entries(m.snapshot.membership.addresses)) n += id.length + addr.length + 8;
    n += 128;
  }
  return n;
}

/**
 * The server side of RaftService: decodes what peers send, hands it to the
 * node's RaftRequestHandler and writes the answers back.
 */
import * as grpc from '@grpc/grpc-js';
import type { Message, NodeId } from '../raft/types.js';
import type * as pb from '../gen/snapcoord/v1/raft.js';
import {
  CodecError,
  appendRequestFromProto,
  appendResponseToProto,
  fromU64,
  installResponseToProto,
  proposeRequestFromProto,
  proposeResponseToProto,
  readIndexRequestFromProto,
  readIndexResponseToProto,
  refuseUndecoded,
  reportSnapshotFromProto,
  snapshotMetaToProto,
  snapshotRequestFromProto,
  stageArchiveRequestFromProto,
  getMembershipRequestFromProto,
  getMembershipResponseToProto,
  timeoutNowFromProto,
  toU64,
  voteRequestFromProto,
  voteResponseToProto,
} from './codec.js';
import { CLIENT_ADDRESS_METADATA_KEY, scopeOfRpc, type PeerCall, type PeerGuard, type PeerScope } from './peer-guard.js';
import { STREAM_UNSENT_MAX, StreamWriteWindow } from './stream-write-window.js';
import {
  replyTypeOf,
  silentLogger,
  type FetchSnapshotParams,
  type ForwardProposalsParams,
  type ForwardedProposals,
  type MembershipQuery,
  type RaftRequestHandler,
  type StageArchiveParams,
  type TransportLogger,
} from './transport.js';

/**
 * FETCH_SEND_STALL_MS: a FetchSnapshot stream none of whose chunks could be
 * sent for this long is given up (DEADLINE_EXCEEDED), releasing its transfer
 * slot and snapshot; a live follower gives up itself far sooner (15 s).
 */
export const FETCH_SEND_STALL_MS = 60_000;

/**
 * APPEND_STREAMS_PER_MEMBER_MAX: AppendEntries streams one member (the id its
 * certificate names, under mutual TLS) holds open here at once. A leader
 * keeps one to each follower and opens another when it gives one up (the
 * old one may not be closed here yet); past this the member's oldest stream
 * is ended RESOURCE_EXHAUSTED, so a new one is always taken. Before, a
 * member held as many as its connections carried (2,048 each, 64 connections
 * from a host): 20,000 silent streams of a learner's certificate took a
 * node's RSS from 154 to 339 MiB, held for good.
 */
export const APPEND_STREAMS_PER_MEMBER_MAX = 4;

export interface RaftServiceOptions {
  /** selfId: when set, requests addressed to another node are refused with FAILED_PRECONDITION (a stale address map). */
  readonly selfId?: NodeId;
  /** maxPendingAppends: requests on one AppendEntries stream waiting for their answers before the stream is cancelled with RESOURCE_EXHAUSTED (default 1024). */
  readonly maxPendingAppends?: number;
  readonly logger?: TransportLogger;
  /** guard: when set, every message's sender is admitted by it first (cluster id, certificate identity, membership: PeerScope). */
  readonly guard?: PeerGuard;
  /** selfClientAddress: this node's client-plane address, sent to the leader in the append stream's response headers. */
  readonly selfClientAddress?: string;
  /**
   * stopping: aborted when this node stops on purpose. Every AppendEntries
   * stream it serves then ends with UNAVAILABLE "<selfId> is stopping" once the
   * answers already owed are written, and new ones are refused alike: the
   * peers' long-lived streams would otherwise hold the server's graceful
   * shutdown open until its grace ran out.
   */
  readonly stopping?: AbortSignal;
}

/** stoppingDetails: the status details an AppendEntries stream ends with when the serving node stops on purpose. */
export function stoppingDetails(selfId: NodeId | undefined): string {
  return `${selfId ?? 'the node'} is stopping`;
}

/** StatusError is an Error that carries a gRPC status code (what grpc-js sends as the call's status). */
export interface StatusError extends Error {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

export function statusError(code: grpc.status, details: string): StatusError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/** toStatusError keeps an Error's numeric gRPC `code`; anything else becomes INTERNAL. */
export function toStatusError(err: unknown): StatusError {
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number' && Number.isInteger(code) && code > 0 && code <= 16) return statusError(code, message);
  return statusError(grpc.status.INTERNAL, message);
}

type Settled = { ok: true; replies: Message[] } | { ok: false; error: unknown };

/**
 * createRaftService implements RaftService on top of `handler`. Add it to the
 * node's server: `server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler))`
 * (fetch-serializer.ts: the generated definition with a one-copy FetchSnapshot encoder).
 *
 * - RequestVote, InstallSnapshot, TimeoutNow, ReadIndex: unary; the response
 *   carries the handler's reply of the matching type, or has_reply=false.
 * - AppendEntries: a bidirectional stream; requests are handed to
 *   handleRequest in arrival order and the replies written in the same order.
 * - ReportSnapshot: handleReport, answered at once.
 * - FetchSnapshot: handler.openSnapshot, UNIMPLEMENTED without it.
 * - StageArchive: handler.stageArchive, answered once it resolves (UNIMPLEMENTED without it).
 * - GetMembership: handler.membershipFor (UNIMPLEMENTED without it).
 * - Propose: handler.proposeForwarded, answered once it resolves (UNIMPLEMENTED without it).
 * A malformed request is answered INVALID_ARGUMENT; every sender is admitted by the guard first.
 */
export function createRaftService(handler: RaftRequestHandler, opts: RaftServiceOptions = {}): pb.RaftServiceServer {
  const log = opts.logger ?? silentLogger;
  const maxPending = opts.maxPendingAppends ?? 1024;
  /** appendStreams: each member's open AppendEntries streams (their `fail`), oldest first. */
  const appendStreams = new Map<NodeId, Set<(err: StatusError) => void>>();

  /** admit asks the guard (if any) whether `from` may speak to us on `call` in `scope`; throws its PERMISSION_DENIED. */
  function admit(from: NodeId, call: PeerCall, scope: PeerScope): void {
    opts.guard?.admit(from, call, scope);
  }

  /**
   * decode decodes a request (a message, or a unary RPC's parameters) with f
   * (INVALID_ARGUMENT for a CodecError), refuses one addressed to another
   * node (FAILED_PRECONDITION), admits its sender in `scope` (PeerScope:
   * 'message' for the Raft messages, which a sender outside the membership
   * may send), and refuses an RPC the handler does not implement
   * (`implemented` false: UNIMPLEMENTED naming `rpc`).
   */
  function decode<P extends { readonly from: NodeId; readonly to: NodeId }>(call: PeerCall, f: () => P, scope: PeerScope, rpc = '', implemented = true): P {
    let p: P;
    try {
      p = f();
    } catch (err) {
      if (err instanceof CodecError) throw statusError(grpc.status.INVALID_ARGUMENT, err.message);
      throw err;
    }
    if (opts.selfId !== undefined && p.to !== opts.selfId) {
      throw statusError(grpc.status.FAILED_PRECONDITION, `request addressed to ${p.to}, this is ${opts.selfId}`);
    }
    admit(p.from, call, scope);
    if (!implemented) throw statusError(grpc.status.UNIMPLEMENTED, `${rpc} is not implemented by this node`);
    return p;
  }

  /** invoke calls handleRequest; a synchronous throw becomes a rejection. The result never rejects. */
  function invoke(m: Message): Promise<Settled> {
    let p: Promise<Message[]>;
    try {
      p = handler.handleRequest(m);
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.then(
      (replies): Settled => ({ ok: true, replies }),
      (error: unknown): Settled => ({ ok: false, error }),
    );
  }

  /** pick keeps the replies of the expected type for m.from, in order. */
  function pick(m: Message, replies: readonly Message[]): Message[] {
    const want = replyTypeOf(m.type);
    const out: Message[] = [];
    for (const r of replies) {
      if (r.type === want && r.to === m.from) out.push(r);
      else log.debug({ request: m.type, reply: r.type, to: r.to }, 'raft service: dropping a reply the RPC cannot carry');
    }
    return out;
  }

  function unary<Req, Res>(
    rpc: string,
    decodeReq: (req: Req) => Message,
    encodeRes: (reply: Message | null) => Res,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      let m: Message;
      try {
        m = decode(call, () => decodeReq(call.request), scopeOfRpc(rpc));
      } catch (err) {
        log.debug({ rpc, err }, 'raft service: refused request');
        callback(toStatusError(err));
        return;
      }
      void invoke(m).then((s) => {
        if (!s.ok) {
          log.debug({ rpc, err: s.error }, 'raft service: handler failed');
          callback(toStatusError(s.error));
          return;
        }
        const replies = pick(m, s.replies);
        if (replies.length > 1) log.debug({ rpc, n: replies.length }, 'raft service: extra replies dropped');
        try {
          callback(null, encodeRes(replies[0] ?? null));
        } catch (err) {
          log.warn({ rpc, err }, 'raft service: cannot encode reply');
          callback(toStatusError(err));
        }
      });
    };
  }

  return {
    requestVote: unary(
      'RequestVote',
      (req: pb.RequestVoteRequest) => voteRequestFromProto(req),
      (r) => voteResponseToProto(r?.type === 'voteResp' ? r : null),
    ),

    installSnapshot: unary(
      'InstallSnapshot',
      (req: pb.InstallSnapshotRequest) => snapshotRequestFromProto(req),
      (r) => installResponseToProto(r?.type === 'snapshotResp' ? r : null),
    ),

    timeoutNow: unary(
      'TimeoutNow',
      (req: pb.TimeoutNowRequest) => timeoutNowFromProto(req),
      (): pb.TimeoutNowResponse => ({}),
    ),

    readIndex: unary(
      'ReadIndex',
      (req: pb.ReadIndexRequest) => readIndexRequestFromProto(req),
      (r) => readIndexResponseToProto(r?.type === 'readIndexResp' ? r : null),
    ),

    reportSnapshot(call, callback) {
      let m: Message;
      try {
        m = decode(call, () => reportSnapshotFromProto(call.request), 'member');
        handler.handleReport(m);
      } catch (err) {
        log.debug({ rpc: 'ReportSnapshot', err }, 'raft service: refused report');
        callback(toStatusError(err));
        return;
      }
      callback(null, {});
    },

    appendEntries(call) {
      if (opts.selfClientAddress !== undefined && opts.selfClientAddress !== '') {
        const md = new grpc.Metadata();
        md.set(CLIENT_ADDRESS_METADATA_KEY, opts.selfClientAddress);
        call.sendMetadata(md);
      }
      let pending = 0;
      let done = false;
      let chain: Promise<void> = Promise.resolve();
      const stopping = opts.stopping;
      const onStopping = (): void => {
        // After the answers already owed: the leader learns every append this node acknowledged.
        chain = chain.then(() => fail(statusError(grpc.status.UNAVAILABLE, stoppingDetails(opts.selfId))));
      };
      const member = opts.guard?.memberOf(call) ?? null;
      const finished = (): void => {
        done = true;
        stopping?.removeEventListener('abort', onStopping);
        if (member === null) return;
        const open = appendStreams.get(member);
        open?.delete(fail);
        if (open?.size === 0) appendStreams.delete(member);
      };
      const fail = (err: StatusError): void => {
        if (done) return;
        finished();
        log.debug({ rpc: 'AppendEntries', code: err.code, err: err.message }, 'raft service: ending append stream');
        // grpc-js turns an 'error' on a server stream into the call's status.
        call.emit('error', err);
      };
      call.on('cancelled', finished);
      if (stopping?.aborted === true) {
        fail(statusError(grpc.status.UNAVAILABLE, stoppingDetails(opts.selfId)));
        return;
      }
      stopping?.addEventListener('abort', onStopping, { once: true });
      if (member !== null) {
        let open = appendStreams.get(member);
        if (open === undefined) appendStreams.set(member, (open = new Set()));
        open.add(fail);
        if (open.size > APPEND_STREAMS_PER_MEMBER_MAX) {
          const oldest = open.values().next().value as (err: StatusError) => void;
          log.debug({ member }, 'raft service: a member opened one append stream too many; ending its oldest');
          oldest(statusError(grpc.status.RESOURCE_EXHAUSTED, `${member} holds more than ${APPEND_STREAMS_PER_MEMBER_MAX} append streams here: its oldest is ended`));
        }
      }
      call.on('data', (req: pb.AppendEntriesRequest) => {
        // Once stopping, nothing new is taken on (the stream ends after the answers already owed).
        if (done || stopping?.aborted === true) return;
        if (pending >= maxPending) {
          fail(statusError(grpc.status.RESOURCE_EXHAUSTED, `more than ${maxPending} appends waiting for answers`));
          return;
        }
        let m: Message;
        try {
          m = decode(call, () => appendRequestFromProto(req), 'message');
        } catch (err) {
          fail(toStatusError(err));
          return;
        }
        pending++;
        const settled = invoke(m);
        chain = chain.then(async () => {
          const s = await settled;
          pending--;
          if (done) return;
          if (!s.ok) {
            fail(toStatusError(s.error));
            return;
          }
          for (const r of pick(m, s.replies)) {
            if (done || call.cancelled) return;
            let res: pb.AppendEntriesResponse;
            try {
              res = appendResponseToProto(r as Parameters<typeof appendResponseToProto>[0]);
            } catch (err) {
              log.warn({ rpc: 'AppendEntries', err }, 'raft service: cannot encode reply');
              continue;
            }
            if (!call.write(res)) await writable(call);
          }
        });
      });
      call.on('end', () => {
        chain = chain.then(() => {
          if (done || call.cancelled) return;
          finished();
          call.end();
        });
      });
    },

    stageArchive(call, callback) {
      const stage = handler.stageArchive;
      let p: StageArchiveParams;
      try {
        p = decode(call, () => stageArchiveRequestFromProto(call.request), 'member', 'StageArchive', stage !== undefined);
      } catch (err) {
        log.debug({ rpc: 'StageArchive', err }, 'raft service: refused request');
        callback(toStatusError(err));
        return;
      }
      // The caller gave up (its deadline, or it cancelled): the node stops a fetch nobody else waits for.
      const cancelled = new AbortController();
      call.on('cancelled', () => cancelled.abort());
      let staged: Promise<void>;
      try {
        staged = (stage as NonNullable<typeof stage>).call(handler, p, cancelled.signal);
      } catch (err) {
        staged = Promise.reject(err);
      }
      staged.then(
        () => callback(null, { from: opts.selfId ?? p.to, durable: true }),
        (err: unknown) => {
          log.debug({ rpc: 'StageArchive', err }, 'raft service: staging failed');
          callback(toStatusError(err));
        },
      );
    },

    getMembership(call, callback) {
      const answer = handler.membershipFor;
      let q: MembershipQuery;
      try {
        q = decode(call, () => getMembershipRequestFromProto(call.request), 'member', 'GetMembership', answer !== undefined);
        callback(null, getMembershipResponseToProto((answer as NonNullable<typeof answer>).call(handler, q)));
      } catch (err) {
        log.debug({ rpc: 'GetMembership', err }, 'raft service: refused request');
        callback(toStatusError(err));
      }
    },

    propose(call, callback) {
      const propose = handler.proposeForwarded;
      let p: ForwardProposalsParams;
      try {
        p = decode(call, () => proposeRequestFromProto(call.request), 'member', 'Propose', propose !== undefined);
      } catch (err) {
        log.debug({ rpc: 'Propose', err }, 'raft service: refused request');
        callback(toStatusError(err));
        return;
      }
      let settled: Promise<ForwardedProposals>;
      try {
        settled = (propose as NonNullable<typeof propose>).call(handler, p);
      } catch (err) {
        settled = Promise.reject(err);
      }
      settled.then(
        (r) => {
          try {
            callback(null, proposeResponseToProto(opts.selfId ?? p.to, r));
          } catch (err) {
            callback(toStatusError(err));
          }
        },
        (err: unknown) => {
          log.debug({ rpc: 'Propose', err }, 'raft service: Propose failed');
          callback(toStatusError(err));
        },
      );
    },

    fetchStateImage(call) {
      void (async () => {
        const open = handler.openStateImage;
        const cancelled = new AbortController();
        call.on('cancelled', () => cancelled.abort());
        try {
          const r = call.request;
          const p = decode(call, () => (refuseUndecoded(r), { from: r.from, to: r.to, index: fromU64(r.index, 'index'), recordFormat: r.recordFormat }), 'member', 'FetchStateImage', open !== undefined);
          const image = await (open as NonNullable<typeof open>).call(handler, p, cancelled.signal);
          try {
            const outbox = new StreamWriteWindow<pb.FetchStateImageResponse>(call, STREAM_UNSENT_MAX, FETCH_SEND_STALL_MS);
            const files = image.files.map((f) => ({ name: f.name, sizeBytes: toU64(f.sizeBytes, 'sizeBytes'), sha256: f.sha256 }));
            await outbox.write({ files, file: 0, offset: 0n, data: new Uint8Array(0), snapshot: undefined });
            for await (const c of image.chunks) {
              if (call.cancelled) break;
              // Once sent (framed where it lies, fetch-serializer.ts), the chunk's buffer may take a later chunk.
              await outbox.write({ files: [], file: c.file, offset: toU64(c.offset, 'offset'), data: c.data, snapshot: undefined }, c.release);
            }
            const snapshot = call.cancelled ? null : await image.snapshot?.();
            if (snapshot != null && !call.cancelled) await outbox.write({ files: [], file: 0, offset: 0n, data: new Uint8Array(0), snapshot: snapshotMetaToProto(snapshot) });
          } finally {
            image.close?.();
          }
          if (!call.cancelled) call.end();
        } catch (err) {
          log.debug({ rpc: 'FetchStateImage', err }, 'raft service: state image not served');
          if (!call.cancelled) call.emit('error', toStatusError(err));
        }
      })();
    },

    fetchSnapshot(call) {
      void (async () => {
        if (handler.openSnapshot === undefined) {
          call.emit('error', statusError(grpc.status.UNIMPLEMENTED, 'FetchSnapshot is not implemented by this node'));
          return;
        }
        try {
          const r = call.request;
          refuseUndecoded(r);
          admit(r.from, call, 'member');
          const params: FetchSnapshotParams = {
            from: r.from,
            index: fromU64(r.index, 'index'),
            term: fromU64(r.term, 'term'),
            digest: r.digest,
            offset: fromU64(r.offset, 'offset'),
            chunkBytes: r.chunkBytes,
          };
          const chunks = await handler.openSnapshot(params);
          // A follower that reads nothing for FETCH_SEND_STALL_MS (gone without a word) frees its transfer and snapshot.
          const outbox = new StreamWriteWindow<pb.FetchSnapshotResponse>(call, STREAM_UNSENT_MAX, FETCH_SEND_STALL_MS);
          for await (const c of chunks) {
            if (call.cancelled) break;
            const res: pb.FetchSnapshotResponse = {
              offset: toU64(c.offset, 'offset'),
              data: c.data,
              sha256: c.sha256,
              totalSizeBytes: toU64(c.totalSizeBytes, 'totalSizeBytes'),
              last: c.last,
            };
            // Once sent (written to the connection: grpc-js frames it in its buffer, grpc-frame-room.ts), the chunk's buffer may take a later chunk.
            await outbox.write(res, c.release);
          }
          if (!call.cancelled) call.end();
        } catch (err) {
          log.debug({ rpc: 'FetchSnapshot', err }, 'raft service: fetch failed');
          if (!call.cancelled) {
            call.emit('error', err instanceof CodecError ? statusError(grpc.status.INVALID_ARGUMENT, err.message) : toStatusError(err));
          }
        }
      })();
    },
  };
}

/** writable resolves once `stream` drains, or closes (then writes are moot). */
function writable(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('finish', done);
      stream.off('cancelled', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('finish', done);
    stream.on('cancelled', done);
  });
}

/**
 * An in-memory twin of GrpcTransport + createRaftService for tests: a
 * MemoryNetwork connects RaftRequestHandlers listening on addresses with
 * MemoryTransports, with the same semantics as the gRPC pair:
 *
 * - send() never blocks or throws; it drops (and counts) messages to unknown
 *   peers, reply types, and anything lost to a cut link or the drop rate;
 * - requests are handed to the handler asynchronously, appends and heartbeats
 *   of one sender in send order, and the handler's replies of the matching type
 *   reach the sender's onMessage asynchronously (append replies in order);
 * - snapshotResp goes to handler.handleReport;
 * - stageArchive calls handler.stageArchive (UNAVAILABLE over a cut link or to
 *   an unknown peer, DEADLINE_EXCEEDED after its timeout, CANCELLED on abort);
 * - forwardProposals calls handler.proposeForwarded (UNAVAILABLE over a cut link, to an
 *   unknown peer, or when the answer is lost on the way back: the proposals may
 *   then be appended; UNIMPLEMENTED without it);
 * - a handler that rejects loses that request's replies.
 */
import type { Message, NodeId } from '../raft/types.js';
import {
  replyTypeOf,
  routeOf,
  type ArchiveStager,
  type ForwardProposalsParams,
  type ForwardedProposals,
  type ProposalForwarder,
  type RaftRequestHandler,
  type StageArchiveParams,
  type Transport,
  type TransportStats,
} from './transport.js';

export interface MemoryNetworkOptions {
  /** rng for the drop rate: a number in [0, 1) (default Math.random). */
  readonly rng?: () => number;
  /** maxPendingPerLink: appends of one sender waiting for answers before more are dropped (default 1024). */
  readonly maxPendingPerLink?: number;
}

interface Listener {
  readonly handler: RaftRequestHandler;
}

export interface MemoryTransportOptions {
  readonly selfId: NodeId;
  readonly onMessage: (reply: Message) => void;
}

export class MemoryNetwork {
  private readonly listeners = new Map<string, Listener>();
  private readonly cuts = new Set<string>();
  private dropRate = 0;
  private readonly rng: () => number;
  readonly maxPendingPerLink: number;

  constructor(opts: MemoryNetworkOptions = {}) {
    this.rng = opts.rng ?? Math.random;
    this.maxPendingPerLink = opts.maxPendingPerLink ?? 1024;
  }

  /** listen serves `handler` at `address` (the twin of a grpc.Server with the Raft service). Throws if the address is taken. */
  listen(address: string, handler: RaftRequestHandler): { close(): void } {
    if (this.listeners.has(address)) throw new Error(`MemoryNetwork: address ${address} is in use`);
    const l: Listener = { handler };
    this.listeners.set(address, l);
    return {
      close: () => {
        if (this.listeners.get(address) === l) this.listeners.delete(address);
      },
    };
  }

  /** transport makes the client side of a node (the twin of GrpcTransport). */
  transport(opts: MemoryTransportOptions): MemoryTransport {
    return new MemoryTransport(this, opts);
  }

  /** cut stops messages between a and b (both ways, or only a -> b when oneWay). */
  cut(a: NodeId, b: NodeId, opts: { oneWay?: boolean } = {}): void {
    this.cuts.add(linkKey(a, b));
    if (opts.oneWay !== true) this.cuts.add(linkKey(b, a));
  }

  /** connect restores the links between a and b (both ways). */
  connect(a: NodeId, b: NodeId): void {
    this.cuts.delete(linkKey(a, b));
    this.cuts.delete(linkKey(b, a));
  }

  /** isolate cuts `id` from each of `others`. */
  isolate(id: NodeId, others: readonly NodeId[]): void {
    for (const o of others) if (o !== id) this.cut(id, o);
  }

  /** partition heals, then cuts every pair of nodes in different groups. */
  partition(...groups: readonly (readonly NodeId[])[]): void {
    this.heal();
    groups.forEach((g, i) => {
      for (const h of groups.slice(i + 1)) for (const a of g) for (const b of h) this.cut(a, b);
    });
  }

  /** heal restores every link (the drop rate stays). */
  heal(): void {
    this.cuts.clear();
  }

  /** setDropRate makes every message (requests and replies) lost with probability p. */
  setDropRate(p: number): void {
    if (!(p >= 0 && p <= 1)) throw new RangeError(`MemoryNetwork: drop rate ${p} is not in [0, 1]`);
    this.dropRate = p;
  }

  /** passes: whether a message from -> to survives the links and the drop rate right now. */
  passes(from: NodeId, to: NodeId): boolean {
    if (this.cuts.has(linkKey(from, to))) return false;
    return this.dropRate === 0 || this.rng() >= this.dropRate;
  }

  /** listenerAt: the current listener at address (identity changes when a node restarts). */
  listenerAt(address: string): Listener | undefined {
    return this.listeners.get(address);
  }
}

function linkKey(from: NodeId, to: NodeId): string {
  return `${from}\u0000${to}`;
}

interface Link {
  /** replies: the chain that delivers append replies in request order. */
  replies: Promise<void>;
  pending: number;
}

export class MemoryTransport implements Transport, ArchiveStager, ProposalForwarder {
  private readonly selfId: NodeId;
  private readonly onMessage: (reply: Message) => void;
  private addresses = new Map<NodeId, string>();
  private readonly links = new Map<NodeId, Link>();
  private closed = false;
  private counts = { sent: 0, dropped: 0, received: 0 };

  constructor(
    private readonly net: MemoryNetwork,
    opts: MemoryTransportOptions,
  ) {
    this.selfId = opts.selfId;
    this.onMessage = opts.onMessage;
  }

  stats(): TransportStats {
    return { ...this.counts };
  }

  send(m: Message): void {
    if (this.closed) return this.drop();
    const route = routeOf(m.type);
    const address = this.addresses.get(m.to);
    if (route === 'reply' || address === undefined) return this.drop();
    if (!this.net.passes(this.selfId, m.to)) return this.drop();
    let link = this.links.get(m.to);
    if (link === undefined) {
      link = { replies: Promise.resolve(), pending: 0 };
      this.links.set(m.to, link);
    }
    if (route === 'stream' && link.pending >= this.net.maxPendingPerLink) return this.drop();
    this.counts.sent++;
    if (route === 'stream') link.pending++;
    const l = link;
    setImmediate(() => {
      const listener = this.net.listenerAt(address);
      if (listener === undefined) {
        if (route === 'stream') l.pending--;
        return;
      }
      if (route === 'report') {
        try {
          listener.handler.handleReport(m);
        } catch {
          // lost, as a failed ReportSnapshot call would be
        }
        return;
      }
      const replies = invoke(listener.handler, m);
      if (route === 'stream') {
        l.replies = l.replies.then(async () => {
          const rs = await replies;
          l.pending--;
          for (const r of rs) this.deliver(address, listener, r);
        });
      } else {
        void replies.then((rs) => {
          const first = rs[0];
          if (first !== undefined) this.deliver(address, listener, first);
        });
      }
    });
  }

  setPeers(addresses: Readonly<Record<NodeId, string>>): void {
    const next = new Map<NodeId, string>();
    for (const [id, address] of Object.entries(addresses)) if (id !== this.selfId) next.set(id, address);
    for (const [id, address] of this.addresses) {
      // A removed or moved peer loses its link (its pending replies are dropped).
      if (next.get(id) !== address) this.links.delete(id);
    }
    this.addresses = next;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.links.clear();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** stageArchive: the twin of GrpcTransport.stageArchive (errors carry the same gRPC codes). */
  stageArchive(p: StageArchiveParams, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const address = this.closed ? undefined : this.addresses.get(p.to);
    const listener = address === undefined ? undefined : this.net.listenerAt(address);
    if (listener === undefined || !this.net.passes(this.selfId, p.to)) {
      return Promise.reject(coded(14, `${p.to} is unreachable`));
    }
    const stage = listener.handler.stageArchive;
    if (stage === undefined) return Promise.reject(coded(12, 'StageArchive is not implemented by this node'));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(coded(4, `deadline of ${timeoutMs} ms exceeded`)), timeoutMs);
      // The callee sees the call end as a gRPC server sees a cancelled call: its signal aborts.
      const calleeAbort = new AbortController();
      const onAbort = (): void => finish(coded(1, 'cancelled'));
      let done = false;
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err !== null) calleeAbort.abort();
        signal?.removeEventListener('abort', onAbort);
        if (err === null && this.net.passes(p.to, this.selfId)) resolve();
        else reject(err ?? coded(14, `the answer of ${p.to} was lost`));
      };
      if (signal?.aborted === true) return finish(coded(1, 'cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      setImmediate(() => {
        Promise.resolve()
          .then(() => stage.call(listener.handler, p, calleeAbort.signal))
          .then(
            () => finish(null),
            (e: unknown) => finish(e instanceof Error ? e : new Error(String(e))),
          );
      });
    });
  }

  /** forwardProposals: the twin of GrpcTransport.forwardProposals (errors carry the same gRPC codes). */
  forwardProposals(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals> {
    const address = this.closed ? undefined : this.addresses.get(p.to);
    const listener = address === undefined ? undefined : this.net.listenerAt(address);
    if (listener === undefined || !this.net.passes(this.selfId, p.to)) return Promise.reject(coded(14, `${p.to} is unreachable`));
    const propose = listener.handler.proposeForwarded;
    if (propose === undefined) return Promise.reject(coded(12, 'Propose is not implemented by this node'));
    return new Promise<ForwardedProposals>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, r?: ForwardedProposals): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        // The proposals are in the leader's log now: a cut on the way back loses only the answer.
        if (err === null && r !== undefined && !this.closed && this.net.passes(p.to, this.selfId)) resolve(r);
        else reject(err ?? coded(14, `the answer of ${p.to} was lost`));
      };
      const timer = setTimeout(() => finish(coded(4, `deadline of ${timeoutMs} ms exceeded`)), timeoutMs);
      setImmediate(() => {
        Promise.resolve()
          .then(() => propose.call(listener.handler, p))
          .then(
            (r) => finish(null, r),
            (e: unknown) => finish(e instanceof Error ? e : new Error(String(e))),
          );
      });
    });
  }

  private deliver(address: string, listener: Listener, reply: Message): void {
    // Lost when we closed, the peer moved or restarted (its "connection" died), or the link is cut.
    if (this.closed || this.addresses.get(reply.from) !== address || this.net.listenerAt(address) !== listener) return;
    if (reply.to !== this.selfId || !this.net.passes(reply.from, this.selfId)) return;
    this.counts.received++;
    try {
      this.onMessage(reply);
    } catch {
      // like GrpcTransport: a throwing onMessage does not break the transport
    }
  }

  private drop(): void {
    this.counts.dropped++;
  }
}

/** invoke steps m at the handler and keeps the replies the RPC can carry; never rejects (a failure loses the replies). */
async function invoke(handler: RaftRequestHandler, m: Message): Promise<Message[]> {
  const want = replyTypeOf(m.type);
  try {
    const rs = await handler.handleRequest(m);
    return rs.filter((r) => r.type === want && r.to === m.from);
  } catch {
    return [];
  }
}

/** coded: an Error carrying a numeric gRPC status code, as grpc-js errors do. */
function coded(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

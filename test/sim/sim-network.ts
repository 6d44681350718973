/**
 * SimNetwork: the simulator's network between real Nodes, on the SimClock.
 * It has the semantics of MemoryNetwork / GrpcTransport (a request is stepped
 * at the handler, the replies of the RPC's answer type addressed to the
 * sender travel back; snapshotResp is a report; a handler that rejects loses
 * the replies) but every hop takes virtual time, and each hop may be lost,
 * duplicated or held back (reordered), or cut by a partition or a one-way
 * link. Every decision comes from the rng it is given. A node that restarts
 * is a new endpoint: replies meant for its earlier incarnation are lost.
 */
import type { MessageSender } from '../../src/node/node.js';
import type { Message, NodeId } from '../../src/raft/types.js';
import { replyTypeOf, routeOf, type RaftRequestHandler } from '../../src/transport/transport.js';
import type { SeededRng } from '../harness/rng.js';
import type { SimClock } from './sim-clock.js';

/** NetFaults: the network's knobs (probabilities per hop; delays in virtual ms). */
export interface NetFaults {
  readonly latencyMinMs: number;
  readonly latencyMaxMs: number;
  readonly dropChance: number;
  readonly dupChance: number;
  readonly reorderChance: number;
  readonly reorderMaxMs: number;
}

export interface NetStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
}

interface Endpoint {
  handler: RaftRequestHandler & { receive(m: Message): void };
  incarnation: number;
}

export class SimNetwork {
  private readonly endpoints = new Map<NodeId, Endpoint>();
  private readonly cuts = new Set<string>();
  private faulty = true;
  readonly stats: NetStats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0 };
  /** onSend: sees every message a node sends (the checkers' leader-message sensor). */
  onSend: ((m: Message) => void) | null = null;
  /** onReply: sees every answer a node gives (a vote granted, an append acknowledged) as it leaves. */
  onReply: ((r: Message) => void) | null = null;

  constructor(
    private readonly clock: SimClock,
    private readonly rng: SeededRng,
    private readonly faults: NetFaults,
  ) {}

  /** attach makes `handler` the endpoint of `id` (a new incarnation); returns the sender the node uses. */
  attach(id: NodeId, incarnation: number, handler: Endpoint['handler']): MessageSender {
    this.endpoints.set(id, { handler, incarnation });
    let closed = false;
    return {
      send: (m: Message) => {
        if (closed) return;
        this.send(id, incarnation, m);
      },
      setPeers: () => undefined,
      close: () => {
        closed = true;
        return Promise.resolve();
      },
    };
  }

  /** detach: `id` is down (crashed); messages to it are lost until it attaches again. */
  detach(id: NodeId): void {
    this.endpoints.delete(id);
  }

  cut(a: NodeId, b: NodeId, oneWay: boolean): void {
    this.cuts.add(`${a}>${b}`);
    if (!oneWay) this.cuts.add(`${b}>${a}`);
  }

  /** partition cuts every pair of nodes in different groups (after healing). */
  partition(groups: readonly (readonly NodeId[])[]): void {
    this.cuts.clear();
    groups.forEach((g, i) => {
      for (const h of groups.slice(i + 1)) for (const a of g) for (const b of h) this.cut(a, b, false);
    });
  }

  /** heal restores every link; calm also stops drops, duplicates and reordering (the quiet period). */
  heal(calm = false): void {
    this.cuts.clear();
    if (calm) this.faulty = false;
  }

  private passes(from: NodeId, to: NodeId): boolean {
    if (this.cuts.has(`${from}>${to}`)) return false;
    return !(this.faulty && this.rng.chance(this.faults.dropChance));
  }

  private delayMs(): number {
    const f = this.faults;
    let d = this.rng.range(f.latencyMinMs, f.latencyMaxMs);
    if (this.faulty && this.rng.chance(f.reorderChance)) d += this.rng.range(1, f.reorderMaxMs);
    return d;
  }

  private send(from: NodeId, fromIncarnation: number, m: Message): void {
    this.onSend?.(m);
    const route = routeOf(m.type);
    if (route === 'reply') return void this.stats.dropped++;
    if (!this.passes(from, m.to)) return void this.stats.dropped++;
    this.stats.sent++;
    const copies = this.faulty && this.rng.chance(this.faults.dupChance) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) this.clock.at(() => this.deliverRequest(from, fromIncarnation, m), this.delayMs());
  }

  private deliverRequest(from: NodeId, fromIncarnation: number, m: Message): void {
    const ep = this.endpoints.get(m.to);
    if (ep === undefined) return void this.stats.dropped++;
    this.stats.delivered++;
    const h = ep.handler;
    if (routeOf(m.type) === 'report') {
      try {
        h.handleReport(m);
      } catch {
        // lost, as a failed ReportSnapshot call would be
      }
      return;
    }
    const want = replyTypeOf(m.type);
    let replies: Promise<Message[]>;
    try {
      replies = h.handleRequest(m);
    } catch {
      return;
    }
    replies.then(
      (rs) => {
        for (const r of rs) {
          if (r.type !== want || r.to !== from) continue;
          this.onReply?.(r);
          if (!this.passes(m.to, from)) {
            this.stats.dropped++;
            continue;
          }
          this.clock.at(() => this.deliverReply(from, fromIncarnation, r), this.delayMs());
        }
      },
      () => undefined, // a failed call loses its replies
    );
  }

  private deliverReply(to: NodeId, incarnation: number, r: Message): void {
    const ep = this.endpoints.get(to);
    // The call's connection died with the incarnation that made it.
    if (ep === undefined || ep.incarnation !== incarnation) return void this.stats.dropped++;
    this.stats.delivered++;
    try {
      ep.handler.receive(r);
    } catch {
      // like the transports: a throwing onMessage does not break the network
    }
  }
}

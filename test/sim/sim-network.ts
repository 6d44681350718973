/**
 * SimNetwork: the simulator's network between real Nodes, on the SimClock.
 * It has the semantics of MemoryNetwork / GrpcTransport (a request is stepped
 * at the handler, the replies of the RPC's answer type addressed to the
 * sender travel back; snapshotResp is a report; a handler that rejects loses
 * the replies) but every hop takes virtual time, and each hop may be lost,
 * duplicated or held back (reordered), or cut by a partition or a one-way
 * link. Every decision comes from the rng it is given, through a stream of
 * its own per link (from, to) and kind of traffic (each message type, each
 * reply type, snapshot streams, state image streams, StageArchive calls),
 * forked on first use (draw-sites.ts): one message more or less of one type
 * on one link moves no other traffic's drops, delays or duplicates. A node that restarts
 * is a new endpoint: replies meant for its earlier incarnation are lost.
 *
 * It carries the snapshot plane too, as GrpcTransport's peers do: FetchSnapshot
 * streams (openSnapshotStream: each chunk one hop of virtual time, lost to a
 * cut or a drop, which ends the stream as a broken connection does; the
 * stream dies with either end's incarnation), StageArchive calls and
 * FetchStateImage streams (openStateImageStream: the request a hop, the
 * manifest and each chunk a hop each, any of them lost to a cut or a drop,
 * which ends the stream with UNAVAILABLE, as does either end going down,
 * even while the leader is still building the image; now and then a chunk
 * arrives with one bit flipped, imageFlipChance, which the receiver's
 * SHA-256 check must refuse).
 */
import type { MessageSender } from '../../src/node/node.js';
import type { Message, NodeId } from '../../src/raft/types.js';
import {
  replyTypeOf,
  routeOf,
  type ChunkStream,
  type FetchSnapshotParams,
  type MembershipAnswer,
  type MembershipQuery,
  type RaftRequestHandler,
  type SnapshotChunk,
  type StageArchiveParams,
  type FetchStateImageParams,
  type StateImageCall,
  type StateImageMessage,
  type StateImageStream,
} from '../../src/transport/transport.js';
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
  /** imageFlipChance: per state image chunk, the chance it arrives with one bit flipped (while faulty). */
  readonly imageFlipChance: number;
}

export interface NetStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  /** imageFlips: state image chunks delivered with a bit flipped. */
  imageFlips: number;
}

interface Endpoint {
  handler: RaftRequestHandler & { receive(m: Message): void };
  incarnation: number;
}

/** OpenStream: a FetchSnapshot stream under way, closed when either end goes down. */
interface OpenStream {
  readonly from: NodeId;
  readonly to: NodeId;
  closed: boolean;
  server: AsyncIterator<SnapshotChunk> | null;
}

/** OpenImage: a FetchStateImage stream under way; end() fails it at once (its reader's pending read too). */
interface OpenImage {
  readonly from: NodeId;
  readonly to: NodeId;
  closed: boolean;
  /** abort: the server's signal (the caller went away). */
  readonly abort: AbortController;
  /** dead: rejects with the reason the stream ended (never unhandled). */
  readonly dead: Promise<never>;
  end(reason: Error): void;
  image: StateImageStream | null;
  chunks: AsyncIterator<unknown> | null;
}

/** LinkStreams: a link's fault streams by kind of traffic (forked on first use). */
type LinkStreams = Map<string, SeededRng>;

/** coded: an Error with a gRPC status code, as the transports reject. */
function coded(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** idOf: the node id of a sim address (`sim:<id>`). */
function idOf(address: string): NodeId {
  return address.startsWith('sim:') ? address.slice(4) : address;
}

export class SimNetwork {
  private readonly endpoints = new Map<NodeId, Endpoint>();
  private readonly cuts = new Set<string>();
  private readonly streams = new Set<OpenStream>();
  /** calls: StageArchive calls under way; either end going down ends them (the caller's end aborts the handler, as a dropped connection cancels a gRPC call). */
  private readonly calls = new Set<{ readonly from: NodeId; readonly to: NodeId; end(): void }>();
  private readonly images = new Set<OpenImage>();
  private faulty = true;
  /** links: from -> to -> the link's streams (link()). */
  private readonly links = new Map<NodeId, Map<NodeId, LinkStreams>>();
  readonly stats: NetStats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, imageFlips: 0 };
  /** onImageRequest: a FetchStateImage request reached `to` (the cluster may crash it meanwhile: a leader building or serving the image). */
  onImageRequest: ((from: NodeId, to: NodeId) => void) | null = null;
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
      openSnapshotStream: (address: string, p: FetchSnapshotParams) => this.openStream(id, idOf(address), p),
      stageArchive: (p: StageArchiveParams, timeoutMs: number, signal?: AbortSignal) => this.stage(id, p, timeoutMs, signal),
      openStateImageStream: (address: string, p: FetchStateImageParams) => this.openImage(id, idOf(address), p),
      askMembership: (q: MembershipQuery, timeoutMs: number) => this.askMembership(id, q, timeoutMs),
    };
  }

  /**
   * askMembership: a GetMembership call from `from` to q.to (a node's vouch for a sender its configuration does
   * not name, src/node/vouches.ts): a hop there, the handler's answer (its peer guard admits members only) a hop
   * back; UNAVAILABLE when a hop is lost or q.to is down, DEADLINE_EXCEEDED after timeoutMs. The answer comes from
   * the node asked (the simulated network stands for mutual TLS with per-member channel credentials).
   */
  private askMembership(from: NodeId, q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer> {
    const ask = this.link(from, q.to, 'getMembership');
    const back = this.link(q.to, from, 'getMembership');
    return new Promise<MembershipAnswer>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null, a?: MembershipAnswer): void => {
        if (done) return;
        done = true;
        this.clock.cancel(timer);
        if (err !== null) reject(err);
        else resolve(a as MembershipAnswer);
      };
      const timer = this.clock.at(() => finish(coded(4, `sim: GetMembership to ${q.to}: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.clock.at(() => {
        if (done) return;
        const ep = this.endpoints.get(q.to);
        if (ep === undefined || ep.handler.membershipFor === undefined || !this.passes(from, q.to, ask)) return finish(coded(14, `sim: GetMembership to ${q.to}: unavailable`));
        let a: MembershipAnswer;
        try {
          a = ep.handler.membershipFor(q);
        } catch (e) {
          const err = e instanceof Error ? e : new Error(String(e));
          return void this.clock.at(() => finish(err), this.delayMs(back));
        }
        this.clock.at(() => (this.passes(q.to, from, back) ? finish(null, a) : finish(coded(14, 'sim: GetMembership answer lost'))), this.delayMs(back));
      }, this.delayMs(ask));
    });
  }

  /** detach: `id` is down (crashed); messages to it are lost until it attaches again, and its snapshot streams end. */
  detach(id: NodeId): void {
    this.endpoints.delete(id);
    for (const st of [...this.streams]) if (st.from === id || st.to === id) this.closeStream(st);
    for (const c of [...this.calls]) if (c.from === id || c.to === id) c.end();
    for (const im of [...this.images]) if (im.from === id || im.to === id) im.end(coded(14, `sim: the state image stream ${im.to} -> ${im.from} died with ${id}`));
  }

  private closeStream(st: OpenStream): void {
    if (st.closed) return;
    st.closed = true;
    this.streams.delete(st);
    void st.server?.return?.(undefined)?.catch(() => undefined);
  }

  /** link: the stream that draws the faults of `kind` traffic from `from` to `to` (made once per link and kind). */
  private link(from: NodeId, to: NodeId, kind: string): SeededRng {
    let byTo = this.links.get(from);
    if (byTo === undefined) this.links.set(from, (byTo = new Map()));
    let streams = byTo.get(to);
    if (streams === undefined) byTo.set(to, (streams = new Map()));
    let r = streams.get(kind);
    if (r === undefined) streams.set(kind, (r = this.rng.fork(`${kind}/${from}>${to}`)));
    return r;
  }

  /** hop: resolves after one hop's virtual delay (drawn from r). */
  private hop(r: SeededRng): Promise<void> {
    return new Promise((resolve) => this.clock.at(resolve, this.delayMs(r)));
  }

  /**
   * openStream: a FetchSnapshot stream from `to` to `from`: the request takes
   * a hop, each chunk another; a cut link, a drop, or either end going down
   * ends it with UNAVAILABLE (the fetcher resumes from its last verified
   * offset); the server's refusal passes on with its code.
   */
  private openStream(from: NodeId, to: NodeId, p: FetchSnapshotParams): ChunkStream {
    const st: OpenStream = { from, to, closed: false, server: null };
    this.streams.add(st);
    return { chunks: this.streamChunks(st, p), cancel: () => this.closeStream(st) };
  }

  /** streamChunks: the chunks of stream `st` as they arrive at its reader (see openStream). */
  private async *streamChunks(st: OpenStream, p: FetchSnapshotParams): AsyncGenerator<SnapshotChunk> {
    const { from, to } = st;
    const cut = (what: string): Error => coded(14, `sim: the snapshot stream from ${to} was cut (${what})`);
    const ask = this.link(from, to, 'snapshotStream');
    const back = this.link(to, from, 'snapshotStream');
    try {
      await this.hop(ask);
      const ep = this.endpoints.get(to);
      if (st.closed) return;
      if (ep === undefined || ep.handler.openSnapshot === undefined) throw coded(14, `sim: ${to} is down`);
      if (!this.passes(from, to, ask)) throw cut('request lost');
      const iterable = await ep.handler.openSnapshot(p);
      const it = iterable[Symbol.asyncIterator]();
      st.server = it;
      const incarnation = ep.incarnation;
      for (;;) {
        const next = await it.next(); // started at once, so that closing it runs the server's cleanup
        if (st.closed || next.done === true) return;
        await this.hop(back);
        if (st.closed) return;
        if (this.endpoints.get(to)?.incarnation !== incarnation) throw cut('the server went down');
        if (!this.passes(to, from, back)) throw cut('chunk lost');
        this.stats.delivered++;
        yield next.value;
      }
    } finally {
      this.closeStream(st);
    }
  }

  /**
   * openImage: a FetchStateImage stream from `to` to `from` (see the file
   * comment); cancel() ends it with CANCELLED, and the server's handler is
   * told (its signal aborts, its image is closed).
   */
  private openImage(from: NodeId, to: NodeId, p: FetchStateImageParams): StateImageCall {
    let end: (reason: Error) => void = () => undefined;
    const dead = new Promise<never>((_, reject) => (end = reject));
    dead.catch(() => undefined);
    const im: OpenImage = {
      from,
      to,
      closed: false,
      abort: new AbortController(),
      dead,
      end: (reason) => {
        if (im.closed) return;
        im.closed = true;
        this.images.delete(im);
        end(reason);
        im.abort.abort();
        void im.chunks?.return?.(undefined)?.catch(() => undefined);
        im.image?.close?.();
      },
      image: null,
      chunks: null,
    };
    this.images.add(im);
    return { messages: this.imageMessages(im, p), cancel: () => im.end(coded(1, 'sim: the state image stream was cancelled')) };
  }

  /** imageMessages: the messages of stream `im` as they arrive at its reader (see openImage). */
  private async *imageMessages(im: OpenImage, p: FetchStateImageParams): AsyncGenerator<StateImageMessage> {
    const { from, to } = im;
    const cut = (what: string): Error => coded(14, `sim: the state image stream from ${to} was cut (${what})`);
    const wait = <T>(x: Promise<T>): Promise<T> => Promise.race([x, im.dead]);
    const empty = new Uint8Array(0);
    const ask = this.link(from, to, 'stateImage');
    const back = this.link(to, from, 'stateImage');
    try {
      await wait(this.hop(ask));
      const ep = this.endpoints.get(to);
      if (ep === undefined || ep.handler.openStateImage === undefined) throw coded(14, `sim: ${to} is down`);
      if (!this.passes(from, to, ask)) throw cut('request lost');
      this.onImageRequest?.(from, to);
      const incarnation = ep.incarnation;
      const opened = ep.handler.openStateImage(p, im.abort.signal).then((image) => {
        if (im.closed) image.close?.();
        else im.image = image;
        return image;
      });
      let image: StateImageStream;
      try {
        image = await wait(opened);
      } catch (e) {
        if (im.closed) throw e;
        await wait(this.hop(back)); // the refusal travels back
        throw e;
      }
      /** arrive: one message's hop back to the reader. */
      const arrive = async (what: string): Promise<void> => {
        await wait(this.hop(back));
        if (this.endpoints.get(to)?.incarnation !== incarnation) throw cut('the server went down');
        if (!this.passes(to, from, back)) throw cut(`${what} lost`);
        this.stats.delivered++;
      };
      await arrive('the manifest');
      yield { files: image.files, file: 0, offset: 0, data: empty, snapshot: null };
      const it = image.chunks[Symbol.asyncIterator]();
      im.chunks = it;
      for (;;) {
        const next = await wait(it.next());
        if (next.done === true) break;
        await arrive('a chunk');
        let data = next.value.data;
        if (this.faulty && back.chance(this.faults.imageFlipChance)) {
          data = Uint8Array.from(data);
          const at = back.nextInt(data.length);
          data[at] = (data[at] as number) ^ (1 << back.nextInt(8));
          this.stats.imageFlips++;
        }
        yield { files: [], file: next.value.file, offset: next.value.offset, data, snapshot: null };
      }
      const snapshot = (await wait(image.snapshot?.() ?? Promise.resolve(null))) ?? null;
      if (snapshot !== null) {
        await arrive('the snapshot');
        yield { files: [], file: 0, offset: 0, data: empty, snapshot };
      }
    } finally {
      im.end(coded(1, 'sim: the state image stream ended'));
    }
  }

  /**
   * stage: a StageArchive call from `from` to p.to: a hop there, the
   * handler's answer a hop back; UNAVAILABLE when a hop is lost or p.to is
   * down, DEADLINE_EXCEEDED after timeoutMs, CANCELLED when `signal` aborts
   * (the handler's own signal aborts too).
   */
  private stage(from: NodeId, p: StageArchiveParams, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const ask = this.link(from, p.to, 'stageArchive');
    const back = this.link(p.to, from, 'stageArchive');
    return new Promise<void>((resolve, reject) => {
      const abort = new AbortController();
      let done = false;
      const call = { from, to: p.to, end: () => finish(coded(14, `sim: StageArchive ${from} -> ${p.to}: the connection died`)) };
      this.calls.add(call);
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        this.calls.delete(call);
        this.clock.cancel(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err !== undefined) {
          abort.abort();
          reject(err);
        } else resolve();
      };
      const onAbort = (): void => finish(coded(1, 'sim: StageArchive cancelled'));
      const timer = this.clock.at(() => finish(coded(4, `sim: StageArchive to ${p.to}: no answer within ${timeoutMs} ms`)), timeoutMs);
      signal?.addEventListener('abort', onAbort);
      this.clock.at(() => {
        const ep = this.endpoints.get(p.to);
        if (done) return;
        if (ep === undefined || ep.handler.stageArchive === undefined || !this.passes(from, p.to, ask)) return finish(coded(14, `sim: StageArchive to ${p.to}: unavailable`));
        ep.handler.stageArchive(p, abort.signal).then(
          () => this.clock.at(() => finish(this.passes(p.to, from, back) ? undefined : coded(14, 'sim: StageArchive answer lost')), this.delayMs(back)),
          (e: unknown) => this.clock.at(() => finish(e instanceof Error ? e : new Error(String(e))), this.delayMs(back)),
        );
      }, this.delayMs(ask));
    });
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

  /** passes: whether a hop from `from` to `to` gets through (no cut; no drop drawn from r). */
  private passes(from: NodeId, to: NodeId, r: SeededRng): boolean {
    if (this.cuts.size > 0 && this.cuts.has(`${from}>${to}`)) return false; // the key is built only when a link is cut
    return !(this.faulty && r.chance(this.faults.dropChance));
  }

  /** delayMs: one hop's delay, drawn from r. */
  private delayMs(r: SeededRng): number {
    const f = this.faults;
    let d = r.range(f.latencyMinMs, f.latencyMaxMs);
    if (this.faulty && r.chance(f.reorderChance)) d += r.range(1, f.reorderMaxMs);
    return d;
  }

  private send(from: NodeId, fromIncarnation: number, m: Message): void {
    this.onSend?.(m);
    const route = routeOf(m.type);
    if (route === 'reply') return void this.stats.dropped++;
    const r = this.link(from, m.to, m.type);
    if (!this.passes(from, m.to, r)) return void this.stats.dropped++;
    this.stats.sent++;
    const copies = this.faulty && r.chance(this.faults.dupChance) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) this.clock.at(() => this.deliverRequest(from, fromIncarnation, m), this.delayMs(r));
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
          const back = this.link(m.to, from, r.type);
          if (!this.passes(m.to, from, back)) {
            this.stats.dropped++;
            continue;
          }
          this.clock.at(() => this.deliverReply(from, fromIncarnation, r), this.delayMs(back));
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

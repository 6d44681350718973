/**
 * Fault-injecting TCP proxies for chaos tests of a Raft cluster whose nodes
 * talk gRPC (HTTP/2) to each other. Only node:net, no dependencies.
 *
 * What it models
 * --------------
 * One LinkProxy per DIRECTED link i->j: node i dials node j's peer port through
 * the proxy, which listens on 127.0.0.1:0 and forwards every accepted
 * connection to j's real address. Every connection through a link was opened by
 * i (client side) toward j (server side), so bytes "forward" (client->server)
 * carry i's requests and bytes "backward" (server->client) carry j's answers.
 * A ProxyMesh holds one LinkProxy per ordered pair and offers partition
 * helpers (isolate, partition, oneWay, heal, delayAll).
 *
 * Faults (switchable at run time; they affect existing AND new connections):
 * - pass:          forward everything, with real backpressure (pause the source
 *                  when the destination's write() returns false, resume on 'drain').
 * - blackhole:     like a firewall DROP rule: data in either direction is read
 *                  and discarded (never buffered); new connections are accepted
 *                  but their data is discarded too; FIN/close of one side is
 *                  swallowed as well. No socket is closed while blackholed, so
 *                  the peers only notice through timeouts / keepalive.
 * - cut-forward / cut-backward: discard data in one direction only.
 * - delay {ms, jitterMs}: every chunk (and the end of stream) is held for
 *                  ms + jitterMs * U[0,1) in a per-direction FIFO queue, so a
 *                  chunk never overtakes an earlier one (its effective delay is
 *                  max(own due time, previous chunk's delivery)). When more than
 *                  maxQueuedBytes (default 64 MiB) wait in one direction the
 *                  source socket is paused instead of growing memory.
 * - reset {probability}: per chunk, with probability p, the chunk is not
 *                  forwarded and both sockets of the connection are reset
 *                  (resetAndDestroy: RST) instead.
 *
 * Why loss is modelled as resets
 * ------------------------------
 * TCP never delivers a stream with a hole in it: a lost packet is
 * retransmitted, and if the path stays bad the connection eventually dies.
 * Dropping bytes inside a stream would corrupt HTTP/2 framing, which no real
 * network does. So "loss" is a connection reset (the peers reconnect), and a
 * partition (blackhole / cut) is a silent peer. Because a connection that lost
 * bytes during a blackhole/cut has a broken byte stream, every such connection
 * is destroyed (RST) as soon as the fault is lifted (set to anything other than
 * the same kind or blackhole); the peers reconnect on clean connections, just
 * as they would after a real partition once keepalive has killed the old ones.
 * Connections that lost nothing stay open.
 *
 * Randomness comes from the simulator's seeded PRNG (SeededRng), forked per link, so a
 * chaos run replays from its seed as far as timing allows. Never Math.random.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseHostPort, type HostPort } from '../../src/client/address.js';
import { SeededRng } from '../harness/rng.js';

// ---------------------------------------------------------------- faults

export type Fault =
  | { kind: 'pass' }
  | { kind: 'blackhole' }
  | { kind: 'cut-forward' }
  | { kind: 'cut-backward' }
  | { kind: 'delay'; ms: number; jitterMs: number }
  | { kind: 'reset'; probability: number };

/** forward = client->server (requests of `from`), backward = server->client (answers of `to`). */
export type Direction = 'forward' | 'backward';

export const PASS: Fault = Object.freeze({ kind: 'pass' });

/** faultDrops tells whether fault f discards the bytes travelling in direction dir. */
export function faultDrops(f: Fault, dir: Direction): boolean {
  return (
    f.kind === 'blackhole' ||
    (f.kind === 'cut-forward' && dir === 'forward') ||
    (f.kind === 'cut-backward' && dir === 'backward')
  );
}

/** formatFault: a short human form, e.g. "delay(50+10ms)", "reset(p=0.01)". */
export function formatFault(f: Fault): string {
  switch (f.kind) {
    case 'delay':
      return `delay(${f.ms}+${f.jitterMs}ms)`;
    case 'reset':
      return `reset(p=${f.probability})`;
    default:
      return f.kind;
  }
}

function checkFault(f: Fault): Fault {
  const finiteNonNeg = (v: number): boolean => Number.isFinite(v) && v >= 0;
  switch (f.kind) {
    case 'pass':
    case 'blackhole':
    case 'cut-forward':
    case 'cut-backward':
      return Object.freeze({ kind: f.kind });
    case 'delay':
      if (!finiteNonNeg(f.ms) || !finiteNonNeg(f.jitterMs)) {
        throw new RangeError(`delay needs finite ms >= 0 and jitterMs >= 0, got ${f.ms}, ${f.jitterMs}`);
      }
      return Object.freeze({ kind: 'delay', ms: f.ms, jitterMs: f.jitterMs });
    case 'reset':
      if (!(f.probability >= 0 && f.probability <= 1)) {
        throw new RangeError(`reset probability must be in [0, 1], got ${f.probability}`);
      }
      return Object.freeze({ kind: 'reset', probability: f.probability });
    default: {
      const never: never = f;
      throw new RangeError(`unknown fault ${JSON.stringify(never)}`);
    }
  }
}

/** hostPort parses a proxy target ("host:port"), or throws. */
function hostPort(target: string): HostPort {
  const hp = parseHostPort(target);
  if (hp === null) throw new Error(`bad target "${target}", want host:port`);
  return hp;
}

// ---------------------------------------------------------------- link proxy

export interface LinkProxyOptions {
  /** node that dials (client side), for logs. */
  from: string;
  /** node that is dialled (server side), for logs. */
  to: string;
  /** the real peer address of `to`, host:port. */
  target: string;
  /** the PRNG of jitter and reset draws. */
  rng: SeededRng;
  /** refuse (close) connections beyond this many open ones (net.Server.maxConnections). */
  maxConnections?: number;
  /** per-direction delay-queue cap before the source is paused; default 64 MiB. */
  maxQueuedBytes?: number;
  /** listen host; default 127.0.0.1 (port is always taken from the OS). */
  host?: string;
}

export interface LinkStats {
  /** connections accepted in total. */
  connections: number;
  /** connections currently open (until both of their sockets are closed). */
  open: number;
  /** bytes delivered client->server. */
  bytesForward: number;
  /** bytes delivered server->client. */
  bytesBackward: number;
  /** bytes discarded by blackhole / cut (including delay-queued bytes dropped when such a fault began). */
  discardedBytes: number;
  /** connections reset by the `reset` fault. */
  resets: number;
  /** connections destroyed on heal because they had lost bytes. */
  brokenClosed: number;
  /** times a source socket was paused (destination backpressure or full delay queue). */
  pauses: number;
  /** the largest number of bytes that waited in one direction's delay queue. */
  peakQueuedBytes: number;
  /** socket errors seen (ECONNRESET, EPIPE, ECONNREFUSED, ...); never thrown. */
  errors: number;
}

const DEFAULT_MAX_QUEUED = 64 * 1024 * 1024;

interface Item {
  /** null marks the end of the stream (FIN), ordered like data. */
  readonly buf: Buffer | null;
  readonly due: number;
}

/** Pipe: one direction of one connection, src -> dst. */
class Pipe {
  queue: Item[] = [];
  head = 0;
  queuedBytes = 0;
  timer: NodeJS.Timeout | undefined = undefined;
  /** dst.write() returned false; wait for 'drain' before writing more. */
  waitingDrain = false;
  /** we paused src. */
  paused = false;
  /** src has closed: once the queue is flushed, end and destroy dst. */
  closeDstAfterFlush = false;

  constructor(
    readonly dir: Direction,
    readonly src: net.Socket,
    readonly dst: net.Socket,
  ) {}

  get pending(): number {
    return this.queue.length - this.head;
  }

  /** clear drops every queued item and the timer, returns the dropped data bytes. */
  clear(): number {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const bytes = this.queuedBytes;
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
    return bytes;
  }

  shift(): Item {
    const item = this.queue[this.head++]!;
    if (item.buf) this.queuedBytes -= item.buf.length;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

class Conn {
  /** bytes (or a FIN) of this connection were discarded: its stream is broken. */
  lost = false;
  /** we destroyed it (reset, heal, close): ignore everything from now on. */
  dead = false;
  closedSockets = 0;
  readonly fwd: Pipe;
  readonly back: Pipe;
  readonly done: Promise<void>;
  finish!: () => void;

  constructor(
    readonly id: number,
    readonly client: net.Socket,
    readonly server: net.Socket,
  ) {
    this.fwd = new Pipe('forward', client, server);
    this.back = new Pipe('backward', server, client);
    this.done = new Promise((resolve) => (this.finish = resolve));
  }
}

/** closeAfterWrites ends s and destroys it once everything written has been flushed. */
function closeAfterWrites(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.writableFinished) {
    s.destroy();
    return;
  }
  s.once('finish', () => s.destroy());
  if (!s.writableEnded) s.end();
}

/**
 * LinkProxy: the proxy for one directed link from -> to. See the file header.
 *
 *   const p = new LinkProxy({ from: 'n1', to: 'n2', target: '127.0.0.1:7002', seed: 1 });
 *   const addr = await p.start();           // "127.0.0.1:<port>": give this to n1 as n2's address
 *   p.setFault({ kind: 'blackhole' }); ...; p.setFault({ kind: 'pass' });
 *   await p.close();
 */
export class LinkProxy {
  readonly from: string;
  readonly to: string;
  private targetHP: HostPort;
  private targetStr: string;
  private readonly rng: SeededRng;
  private readonly maxQueued: number;
  private readonly host: string;
  private readonly server: net.Server;
  private current: Fault = PASS;
  private readonly conns = new Set<Conn>();
  private nextId = 0;
  private addr: string | undefined;
  private started = false;
  private closePromise: Promise<void> | undefined;
  private readonly st = {
    connections: 0,
    bytesForward: 0,
    bytesBackward: 0,
    discardedBytes: 0,
    resets: 0,
    brokenClosed: 0,
    pauses: 0,
    peakQueuedBytes: 0,
    errors: 0,
  };

  constructor(opts: LinkProxyOptions) {
    this.from = opts.from;
    this.to = opts.to;
    this.targetHP = hostPort(opts.target);
    this.targetStr = opts.target;
    this.rng = opts.rng;
    this.maxQueued = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED;
    this.host = opts.host ?? '127.0.0.1';
    this.server = net.createServer({ allowHalfOpen: true }, (s) => this.onConnection(s));
    this.server.on('error', () => this.st.errors++);
    if (opts.maxConnections !== undefined) this.server.maxConnections = opts.maxConnections;
  }

  /** start listens on host:0 and resolves with "host:port". */
  start(): Promise<string> {
    if (this.started) return Promise.reject(new Error(`proxy ${this.name} already started`));
    this.started = true;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(0, this.host, () => {
        this.server.off('error', onError);
        const a = this.server.address() as net.AddressInfo;
        this.addr = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
        resolve(this.addr);
      });
    });
  }

  /** "from->to", for logs. */
  get name(): string {
    return `${this.from}->${this.to}`;
  }

  /** the address to dial instead of the target; throws before start(). */
  get address(): string {
    if (this.addr === undefined) throw new Error(`proxy ${this.name} not started`);
    return this.addr;
  }

  get target(): string {
    return this.targetStr;
  }

  /** setTarget: new connections go to target (a restarted node on a new port); open ones stay. */
  setTarget(target: string): void {
    this.targetHP = hostPort(target);
    this.targetStr = target;
  }

  get fault(): Fault {
    return this.current;
  }

  /**
   * setFault switches the fault for existing and new connections. Leaving a
   * dropping fault for a different kind (other than blackhole) resets every
   * connection that lost bytes. Entering a dropping fault discards what waits
   * in the delay queues of the affected directions.
   */
  setFault(fault: Fault): void {
    const f = checkFault(fault);
    const old = this.current;
    this.current = f;
    const healBroken = f.kind !== 'blackhole' && f.kind !== old.kind;
    for (const conn of [...this.conns]) {
      if (conn.dead) continue;
      if (healBroken && conn.lost) {
        this.st.brokenClosed++;
        this.kill(conn, 'reset');
        continue;
      }
      for (const p of [conn.fwd, conn.back]) {
        if (faultDrops(f, p.dir)) {
          if (p.pending > 0) {
            this.st.discardedBytes += p.clear();
            conn.lost = true;
          }
          this.updateFlow(conn, p);
        } else {
          this.flush(conn, p);
        }
      }
    }
  }

  stats(): LinkStats {
    return { ...this.st, open: this.conns.size };
  }

  /** close stops listening and destroys every connection; resolves when all sockets are closed. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    const serverClosed = new Promise<void>((resolve) => {
      if (!this.server.listening) resolve();
      else this.server.close(() => resolve());
    });
    for (const conn of this.conns) this.kill(conn, 'destroy');
    this.closePromise = Promise.all([serverClosed, ...[...this.conns].map((c) => c.done)]).then(() => undefined);
    return this.closePromise;
  }

  // ------------------------------------------------------------ internals

  private onConnection(client: net.Socket): void {
    if (this.closePromise) {
      client.on('error', () => this.st.errors++);
      client.destroy();
      return;
    }
    const server = net.connect({ host: this.targetHP.host, port: this.targetHP.port, allowHalfOpen: true });
    client.setNoDelay(true);
    server.setNoDelay(true);
    const conn = new Conn(++this.nextId, client, server);
    this.conns.add(conn);
    this.st.connections++;
    for (const p of [conn.fwd, conn.back]) {
      p.src.on('error', () => this.st.errors++);
      p.src.on('data', (b: Buffer) => this.onData(conn, p, b));
      p.src.on('end', () => this.onEnd(conn, p));
      p.src.on('close', () => this.onClose(conn, p));
      p.dst.on('drain', () => {
        p.waitingDrain = false;
        this.flush(conn, p);
      });
    }
  }

  private onData(conn: Conn, p: Pipe, buf: Buffer): void {
    if (conn.dead || buf.length === 0) return;
    const f = this.current;
    if (faultDrops(f, p.dir)) {
      this.st.discardedBytes += buf.length;
      conn.lost = true;
      return;
    }
    if (f.kind === 'reset' && this.rng.chance(f.probability)) {
      this.st.resets++;
      this.kill(conn, 'reset');
      return;
    }
    const now = performance.now();
    const due = f.kind === 'delay' ? now + f.ms + f.jitterMs * this.rng.nextFloat() : now;
    if (p.pending === 0 && !p.waitingDrain && due <= now) {
      this.deliver(p, buf);
      this.updateFlow(conn, p);
      return;
    }
    this.enqueue(conn, p, { buf, due });
  }

  private onEnd(conn: Conn, p: Pipe): void {
    if (conn.dead) return;
    const f = this.current;
    if (faultDrops(f, p.dir)) {
      conn.lost = true; // the FIN is swallowed like the data
      return;
    }
    const now = performance.now();
    const due = f.kind === 'delay' ? now + f.ms : now;
    if (p.pending === 0 && due <= now) {
      if (!p.dst.destroyed) p.dst.end();
      return;
    }
    this.enqueue(conn, p, { buf: null, due });
  }

  /** p.src closed (cleanly or not). */
  private onClose(conn: Conn, p: Pipe): void {
    conn.closedSockets++;
    if (conn.closedSockets === 2) {
      conn.fwd.clear();
      conn.back.clear();
      this.conns.delete(conn);
      conn.finish();
      return;
    }
    if (conn.dead) return; // the other socket was destroyed with it
    const other = p === conn.fwd ? conn.back : conn.fwd;
    other.clear(); // nothing more can be delivered to p.src
    if (faultDrops(this.current, p.dir)) {
      // The close (FIN/RST) is swallowed: keep the other side open (silent
      // peer); the connection is broken and is destroyed on heal.
      conn.lost = true;
      return;
    }
    if (p.pending > 0) {
      p.closeDstAfterFlush = true; // deliver what is still delayed, then close
      return;
    }
    p.dst.destroy();
  }

  private enqueue(conn: Conn, p: Pipe, item: Item): void {
    p.queue.push(item);
    if (item.buf) {
      p.queuedBytes += item.buf.length;
      if (p.queuedBytes > this.st.peakQueuedBytes) this.st.peakQueuedBytes = p.queuedBytes;
    }
    if (p.timer === undefined && !p.waitingDrain) this.flush(conn, p);
    else this.updateFlow(conn, p);
  }

  /** flush delivers every queued item that is due, in order, and arms a timer for the next one. */
  private flush(conn: Conn, p: Pipe): void {
    if (p.timer !== undefined) clearTimeout(p.timer);
    p.timer = undefined;
    if (conn.dead) return;
    const now = performance.now();
    while (p.pending > 0 && !p.waitingDrain && !conn.dead) {
      const head = p.queue[p.head]!;
      if (head.due > now) {
        p.timer = setTimeout(
          () => {
            p.timer = undefined;
            this.flush(conn, p);
          },
          Math.max(1, Math.ceil(head.due - now)),
        );
        break;
      }
      const item = p.shift();
      if (item.buf) this.deliver(p, item.buf);
      else if (!p.dst.destroyed) p.dst.end();
    }
    if (p.pending === 0 && p.closeDstAfterFlush) {
      p.closeDstAfterFlush = false;
      closeAfterWrites(p.dst);
    }
    this.updateFlow(conn, p);
  }

  private deliver(p: Pipe, buf: Buffer): void {
    if (p.dst.destroyed || p.dst.writableEnded) return;
    if (p.dir === 'forward') this.st.bytesForward += buf.length;
    else this.st.bytesBackward += buf.length;
    if (!p.dst.write(buf)) p.waitingDrain = true;
  }

  /** updateFlow pauses src while dst wants a drain or the queue is full, unless the direction is discarding. */
  private updateFlow(conn: Conn, p: Pipe): void {
    if (conn.dead || p.src.destroyed) return;
    const want = !faultDrops(this.current, p.dir) && (p.waitingDrain || p.queuedBytes >= this.maxQueued);
    if (want && !p.paused) {
      p.paused = true;
      this.st.pauses++;
      p.src.pause();
    } else if (!want && p.paused) {
      p.paused = false;
      p.src.resume();
    }
  }

  /** kill destroys both sockets: 'reset' sends RST where possible, 'destroy' closes. */
  private kill(conn: Conn, how: 'reset' | 'destroy'): void {
    if (conn.dead) return;
    conn.dead = true;
    conn.fwd.clear();
    conn.back.clear();
    for (const s of [conn.client, conn.server]) {
      if (s.destroyed) continue;
      if (how === 'reset' && !s.connecting && typeof s.resetAndDestroy === 'function') {
        try {
          s.resetAndDestroy();
          continue;
        } catch {
          // fall through to destroy()
        }
      }
      s.destroy();
    }
  }
}

// ---------------------------------------------------------------- mesh

export interface ProxyMeshOptions {
  maxConnections?: number;
  maxQueuedBytes?: number;
}

/**
 * ProxyMesh: one LinkProxy per ordered pair (i != j) of the nodes in
 * `targets` (node id -> real peer host:port). Link seeds are derived from the
 * mesh seed and the link name, so each link has its own reproducible stream.
 *
 * Helpers (each changes only the links it names, except partition and heal):
 * - isolate(id):         blackhole every link from and to id.
 * - partition(groups):   blackhole every link between different groups and set
 *                        every link inside a group to pass. Nodes listed in no
 *                        group form one more group together.
 * - oneWay(from, to):    `from` can't reach `to`: cut-forward on from->to (its
 *                        requests) and cut-backward on to->from (its answers).
 * - heal():              pass everywhere.
 * - delayAll(ms, jitter), setAll(fault), setFault(from, to, fault).
 */
export class ProxyMesh {
  readonly ids: readonly string[];
  private readonly links = new Map<string, LinkProxy>();

  constructor(targets: Record<string, string>, seed: number, opts: ProxyMeshOptions = {}) {
    this.ids = Object.keys(targets);
    const root = new SeededRng(seed);
    for (const from of this.ids) {
      for (const to of this.ids) {
        if (from === to) continue;
        const name = `${from}->${to}`;
        this.links.set(
          name,
          new LinkProxy({
            from,
            to,
            target: targets[to]!,
            rng: root.fork(name),
            ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
            ...(opts.maxQueuedBytes !== undefined ? { maxQueuedBytes: opts.maxQueuedBytes } : {}),
          }),
        );
      }
    }
  }

  async start(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => l.start()));
  }

  /** every link, in a stable order (by from, then to, as given). */
  all(): LinkProxy[] {
    return [...this.links.values()];
  }

  link(from: string, to: string): LinkProxy {
    const l = this.links.get(`${from}->${to}`);
    if (!l) throw new Error(`no link ${from}->${to} (nodes: ${this.ids.join(', ')})`);
    return l;
  }

  /** dialMap: for node `from`, peer id -> proxy address to dial instead of the peer's own address. */
  dialMap(from: string): Record<string, string> {
    if (!this.ids.includes(from)) throw new Error(`unknown node ${from}`);
    const m: Record<string, string> = {};
    for (const to of this.ids) if (to !== from) m[to] = this.link(from, to).address;
    return m;
  }

  /** setTarget: node id now listens on target (after a restart); new connections toward it go there. */
  setTarget(id: string, target: string): void {
    if (!this.ids.includes(id)) throw new Error(`unknown node ${id}`);
    for (const from of this.ids) if (from !== id) this.link(from, id).setTarget(target);
  }

  setFault(from: string, to: string, fault: Fault): void {
    this.link(from, to).setFault(fault);
  }

  setAll(fault: Fault): void {
    for (const l of this.links.values()) l.setFault(fault);
  }

  isolate(id: string): void {
    if (!this.ids.includes(id)) throw new Error(`unknown node ${id}`);
    for (const other of this.ids) {
      if (other === id) continue;
      this.link(id, other).setFault({ kind: 'blackhole' });
      this.link(other, id).setFault({ kind: 'blackhole' });
    }
  }

  partition(groups: string[][]): void {
    const groupOf = new Map<string, number>();
    groups.forEach((g, i) => {
      for (const id of g) {
        if (!this.ids.includes(id)) throw new Error(`unknown node ${id}`);
        if (groupOf.has(id)) throw new Error(`node ${id} is in two groups`);
        groupOf.set(id, i);
      }
    });
    const rest = groups.length;
    for (const l of this.links.values()) {
      const same = (groupOf.get(l.from) ?? rest) === (groupOf.get(l.to) ?? rest);
      l.setFault(same ? PASS : { kind: 'blackhole' });
    }
  }

  oneWay(from: string, to: string): void {
    this.link(from, to).setFault({ kind: 'cut-forward' });
    this.link(to, from).setFault({ kind: 'cut-backward' });
  }

  heal(): void {
    this.setAll(PASS);
  }

  delayAll(ms: number, jitterMs = 0): void {
    this.setAll({ kind: 'delay', ms, jitterMs });
  }

  /** describe: the current faults on one short line, e.g. "blackhole: n1->n2 n2->n1; rest pass". */
  describe(): string {
    const byFault = new Map<string, string[]>();
    for (const l of this.links.values()) {
      const k = formatFault(l.fault);
      const names = byFault.get(k) ?? [];
      names.push(l.name);
      byFault.set(k, names);
    }
    if (byFault.size === 1) return `all ${[...byFault.keys()][0]!}`;
    const parts: string[] = [];
    for (const [k, names] of byFault) if (k !== 'pass') parts.push(`${k}: ${names.join(' ')}`);
    if (byFault.has('pass')) parts.push('rest pass');
    return parts.join('; ');
  }

  async close(): Promise<void> {
    await Promise.all([...this.links.values()].map((l) => l.close()));
  }
}

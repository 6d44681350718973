/**
 * ChaosCluster: N real `snapcoord serve` processes whose peer traffic (the
 * peer plane: Raft and snapshot transfers) runs through a ProxyMesh (one
 * fault-injecting proxy per directed link, forwarding to the target's peer
 * port, given to each node with --peer-dial), with the faults a chaos round
 * needs: SIGKILL and restart, SIGSTOP/SIGCONT, network faults on the mesh, and
 * message faults (drop/duplicate/corrupt) through each node's
 * SNAPCOORD_MESSAGE_FAULTS control file. Clients talk to the nodes' own client
 * addresses, never through the proxies; so do writes a follower forwards to
 * the leader (client plane to client plane). Everything listens on 127.0.0.1
 * with ports from the OS.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClusterClient, KvClient } from '../../src/api/clients.js';
import { Role, type StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import type { MessageFaultRates } from '../../src/transport/message-faults.js';
import { ServeProcess, freeNodeAddresses, sleep } from '../cluster/serve-process.js';
import { ProxyMesh } from './proxy.js';

export interface ChaosClusterOptions {
  readonly nodes: number;
  /** dir: where data dirs and fault control files go (the caller removes it). */
  readonly dir: string;
  readonly seed: number;
  /** extra: more `serve` flags for every node. */
  readonly extra?: readonly string[];
}

/** ChaosNode: one member, across its restarts. */
export interface ChaosNode {
  readonly id: string;
  /** address: the node's client-plane gRPC address (clients use it, and followers forwarding to it as leader). */
  readonly address: string;
  /** peerAddress: the node's peer-plane address, its address in the membership (peers reach it through the proxies). */
  readonly peerAddress: string;
  readonly dataDir: string;
  readonly faultsFile: string;
  proc: ServeProcess | null;
  paused: boolean;
  /** starts: how many processes this node has had. */
  starts: number;
  /** deadOutput: the last lines of earlier processes, for diagnostics. */
  deadOutput: string;
  readonly kv: KvClient;
  readonly cluster: ClusterClient;
}

/** The serve flags every chaos node gets: snapshots small and often, so a cut-off node needs InstallSnapshot soon. */
export const CHAOS_SERVE_FLAGS = ['--snapshot-entries', '200', '--snapshot-trailing-entries', '50', '--snapshot-retain', '2'];

export class ChaosCluster {
  readonly nodes: ChaosNode[];
  readonly mesh: ProxyMesh;
  private readonly opts: ChaosClusterOptions;
  private readonly peers: string;
  /** injectedByDead: message faults injected by processes since killed. */
  private readonly injectedByDead: FaultCounts = { dropped: 0, duplicated: 0, corrupted: 0 };

  private constructor(opts: ChaosClusterOptions, nodes: ChaosNode[], mesh: ProxyMesh) {
    this.opts = opts;
    this.nodes = nodes;
    this.mesh = mesh;
    this.peers = nodes.map((n) => `${n.id}=${n.peerAddress}`).join(',');
  }

  /** start: proxies first (their addresses go into --peer-dial), then every node; resolves once all listen. */
  static async start(opts: ChaosClusterOptions): Promise<ChaosCluster> {
    if (opts.nodes < 1 || opts.nodes > 9) throw new Error(`nodes: ${opts.nodes} is out of range 1..9`);
    const ids = Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`);
    const planes = await freeNodeAddresses(ids);
    const nodes: ChaosNode[] = ids.map((id) => {
      const address = planes[id]?.grpc ?? '';
      return {
        id,
        address,
        peerAddress: planes[id]?.peer ?? '',
        dataDir: join(opts.dir, id),
        faultsFile: join(opts.dir, `${id}.faults.json`),
        proc: null,
        paused: false,
        starts: 0,
        deadOutput: '',
        kv: new KvClient(address),
        cluster: new ClusterClient(address),
      };
    });
    // The proxies forward to the peer planes: only Raft traffic crosses the faulty links.
    const mesh = new ProxyMesh(Object.fromEntries(nodes.map((n) => [n.id, n.peerAddress])), opts.seed);
    await mesh.start();
    const c = new ChaosCluster(opts, nodes, mesh);
    await mkdir(opts.dir, { recursive: true });
    await c.setMessageFaults(null);
    try {
      await Promise.all(nodes.map((n) => c.startNode(n)));
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  node(id: string): ChaosNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** running: nodes with a live, not paused process. */
  running(): ChaosNode[] {
    return this.nodes.filter((n) => n.proc !== null && n.proc.running && !n.paused);
  }

  private async startNode(n: ChaosNode): Promise<void> {
    const proc = new ServeProcess({
      id: n.id,
      grpc: n.address,
      peer: n.peerAddress,
      peers: this.peers,
      dataDir: n.dataDir,
      extra: [...CHAOS_SERVE_FLAGS, ...(this.opts.extra ?? []), '--peer-dial', Object.entries(this.mesh.dialMap(n.id)).map(([id, a]) => `${id}=${a}`).join(',')],
      env: { SNAPCOORD_MESSAGE_FAULTS: n.faultsFile },
    });
    n.proc = proc;
    n.paused = false;
    n.starts++;
    await proc.ready(30_000);
  }

  /** kill: SIGKILL (a crash: nothing flushed beyond what was synced). */
  async kill(id: string): Promise<void> {
    const n = this.node(id);
    if (n.proc === null) return;
    if (n.paused) n.proc.proc.kill('SIGCONT');
    await n.proc.kill('SIGKILL');
    addCounts(this.injectedByDead, lastInjected(n.proc.output));
    n.deadOutput = n.proc.lastLines(40);
    n.proc = null;
    n.paused = false;
  }

  /** restart: a new process on the same data dir and addresses (a few tries: the ports are briefly in TIME_WAIT reuse). */
  async restart(id: string): Promise<void> {
    const n = this.node(id);
    if (n.proc !== null && n.proc.running) return;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startNode(n);
        return;
      } catch (err) {
        if (n.proc !== null) n.deadOutput = n.proc.lastLines(40);
        n.proc = null;
        if (attempt >= 5) throw new Error(`${id} did not restart: ${(err as Error).message}`, { cause: err });
        await sleep(200 * attempt);
      }
    }
  }

  /** pause: SIGSTOP (a long GC pause, a VM freeze): the process keeps its sockets but does nothing. */
  pause(id: string): void {
    const n = this.node(id);
    if (n.proc === null || n.paused) return;
    n.proc.proc.kill('SIGSTOP');
    n.paused = true;
  }

  resume(id: string): void {
    const n = this.node(id);
    if (n.proc === null || !n.paused) return;
    n.proc.proc.kill('SIGCONT');
    n.paused = false;
  }

  /** setMessageFaults writes every node's control file (null: none); the nodes pick it up within ~100 ms. */
  async setMessageFaults(rates: MessageFaultRates | null): Promise<void> {
    const body = JSON.stringify(rates ?? { drop: 0, duplicate: 0, corrupt: 0, seed: this.opts.seed });
    // Written whole then renamed into place: a node never reads half a file.
    await Promise.all(
      this.nodes.map(async (n, i) => {
        await writeFile(`${n.faultsFile}.tmp`, rates === null ? body : JSON.stringify({ ...rates, seed: rates.seed + i }));
        await rename(`${n.faultsFile}.tmp`, n.faultsFile);
      }),
    );
  }

  /** healAll: every link passes, no message faults, paused nodes resumed, dead nodes restarted. */
  async healAll(): Promise<void> {
    this.mesh.heal();
    await this.setMessageFaults(null);
    for (const n of this.nodes) this.resume(n.id);
    for (const n of this.nodes) if (n.proc === null || !n.proc.running) await this.restart(n.id);
  }

  /** statuses: the Status of every running node (nodes that do not answer within 1 s are left out). */
  async statuses(): Promise<Map<string, StatusResponse>> {
    const out = new Map<string, StatusResponse>();
    await Promise.all(
      this.running().map(async (n) => {
        try {
          out.set(n.id, await n.cluster.status({ deadlineMs: 1_000 }));
        } catch {
          // not answering: left out
        }
      }),
    );
    return out;
  }

  /** leader: the running node that says it leads and that every other answering node follows, if any. */
  async leader(): Promise<ChaosNode | undefined> {
    const sts = await this.statuses();
    const leaders = [...sts.values()].filter((s) => s.role === Role.ROLE_LEADER);
    const top = leaders.sort((a, b) => Number(b.term - a.term))[0];
    if (top === undefined) return undefined;
    return this.node(top.id);
  }

  /** waitForLeader: a leader followed by a majority of the members, within timeoutMs. */
  async waitForLeader(timeoutMs: number): Promise<ChaosNode> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const sts = await this.statuses();
      const leader = [...sts.values()].find((s) => s.role === Role.ROLE_LEADER);
      if (leader !== undefined) {
        const following = [...sts.values()].filter((s) => s.leaderId === leader.id && s.term === leader.term).length;
        if (following > this.nodes.length / 2) return this.node(leader.id);
      }
      await sleep(50);
    }
    throw new Error(`no leader followed by a majority within ${timeoutMs} ms`);
  }

  /** logsOf: a node's recent output (current process, else the last dead one). */
  logsOf(id: string, lines = 30): string {
    const n = this.node(id);
    return n.proc !== null ? n.proc.lastLines(lines) : n.deadOutput;
  }

  /** injectedMessageFaults: what the nodes' interceptors injected, over every process each node has had. */
  injectedMessageFaults(): FaultCounts {
    const sum = { ...this.injectedByDead };
    for (const n of this.nodes) if (n.proc !== null) addCounts(sum, lastInjected(n.proc.output));
    return sum;
  }

  /** stop: every process (SIGCONT first for paused ones), every proxy and client. */
  async stop(): Promise<void> {
    for (const n of this.nodes) if (n.paused) this.resume(n.id);
    await Promise.all(this.nodes.map((n) => n.proc?.kill('SIGKILL')));
    for (const n of this.nodes) {
      n.kv.close();
      n.cluster.close();
    }
    await this.mesh.close();
  }
}

type FaultCounts = { dropped: number; duplicated: number; corrupted: number };

function addCounts(into: FaultCounts, c: Partial<FaultCounts>): void {
  into.dropped += c.dropped ?? 0;
  into.duplicated += c.duplicated ?? 0;
  into.corrupted += c.corrupted ?? 0;
}

/** lastInjected: the counts of a process's last "message faults injected" log line (they only grow). */
function lastInjected(output: string): Partial<FaultCounts> {
  const at = output.lastIndexOf('"message faults injected"');
  if (at < 0) return {};
  const end = output.indexOf('\n', at);
  const line = output.slice(output.lastIndexOf('\n', at) + 1, end < 0 ? undefined : end);
  try {
    return (JSON.parse(line) as { injected?: Partial<FaultCounts> }).injected ?? {};
  } catch {
    return {}; // a line cut in the middle
  }
}

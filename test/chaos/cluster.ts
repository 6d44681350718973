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
 *
 * TLS (the default, as `npm start` runs a cluster): a CA and one certificate
 * per node (member id, IP SAN 127.0.0.1) under <dir>/tls; every node serves
 * the peer plane with mutual TLS and the client plane with TLS and an API key
 * (CHAOS_API_KEY). The proxies are transparent TCP proxies on 127.0.0.1, so
 * the peers' mutual TLS runs end to end through them (a node dialing a proxy
 * verifies the target node's certificate against 127.0.0.1, the proxy's
 * host) and the message-fault interceptors, which sit in grpc-js above TLS,
 * still see every message. Every client (workload, checker, state hashes)
 * dials with the CA and the key. `tls: false`: plaintext, no key.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import type { ClientDial } from '../../src/client/dial.js';
import { Role, type StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import { caFiles, channelCredentialsFromFiles, nodeCertFiles, writeCa, writeNodeCert } from '../../src/tls/index.js';
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
  /** tls (default true): peer mutual TLS through the proxies, client TLS + CHAOS_API_KEY; false: plaintext, no key. */
  readonly tls?: boolean;
}

/** CHAOS_API_KEY: the admin key of a TLS chaos cluster: every node's --api-key, sent by every client of the run. */
export const CHAOS_API_KEY = 'chaos-admin-key-0123456789abcdef';

/** ChaosTls: the certificates of a TLS chaos cluster and how its clients dial. */
export interface ChaosTls {
  /** dir: the CA and the node certificates (<cluster dir>/tls). */
  readonly dir: string;
  readonly caFile: string;
  /** dial: TLS verified against caFile, CHAOS_API_KEY on every call. */
  readonly dial: ClientDial;
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
  /** tls: the cluster's certificates and client dial; null when it runs plaintext. */
  readonly tls: ChaosTls | null;
  private readonly opts: ChaosClusterOptions;
  private readonly peers: string;
  /** injectedByDead: message faults injected by processes since killed. */
  private readonly injectedByDead: FaultCounts = { dropped: 0, duplicated: 0, corrupted: 0 };

  private constructor(opts: ChaosClusterOptions, nodes: ChaosNode[], mesh: ProxyMesh, tls: ChaosTls | null) {
    this.opts = opts;
    this.tls = tls;
    this.nodes = nodes;
    this.mesh = mesh;
    this.peers = nodes.map((n) => `${n.id}=${n.peerAddress}`).join(',');
  }

  /**
   * start: certificates (unless tls is false), proxies (their addresses go
   * into --peer-dial), then every node; resolves once all listen.
   */
  static async start(opts: ChaosClusterOptions): Promise<ChaosCluster> {
    if (opts.nodes < 1 || opts.nodes > 9) throw new Error(`nodes: ${opts.nodes} is out of range 1..9`);
    const ids = Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`);
    await mkdir(opts.dir, { recursive: true });
    let tls: ChaosTls | null = null;
    if (opts.tls ?? true) {
      const dir = join(opts.dir, 'tls');
      await writeCa(dir);
      // IP SAN 127.0.0.1: nodes dial the proxies and each other's client planes at 127.0.0.1, clients the nodes.
      for (const id of ids) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
      const caFile = caFiles(dir).caFile;
      tls = { dir, caFile, dial: { credentials: channelCredentialsFromFiles({ caFile }), apiKey: CHAOS_API_KEY } };
    }
    const dial: ClientDial = tls?.dial ?? {};
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
        kv: new KvClient(address, dial),
        cluster: new ClusterClient(address, dial),
      };
    });
    // The proxies forward to the peer planes: only Raft traffic crosses the faulty links.
    const mesh = new ProxyMesh(Object.fromEntries(nodes.map((n) => [n.id, n.peerAddress])), opts.seed);
    await mesh.start();
    const c = new ChaosCluster(opts, nodes, mesh, tls);
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

  /** tlsFlags: a node's serve TLS flags: its certificate for both planes, the cluster CA for peers (none when plaintext). */
  private tlsFlags(id: string): string[] {
    if (this.tls === null) return [];
    const f = nodeCertFiles(this.tls.dir, id);
    return ['--peer-cert', f.certFile, '--peer-key', f.keyFile, '--peer-ca', this.tls.caFile, '--cert', f.certFile, '--key', f.keyFile];
  }

  private async startNode(n: ChaosNode): Promise<void> {
    const proc = new ServeProcess({
      id: n.id,
      grpc: n.address,
      peer: n.peerAddress,
      peers: this.peers,
      dataDir: n.dataDir,
      ...(this.tls !== null ? { apiKey: CHAOS_API_KEY } : {}),
      extra: [
        ...CHAOS_SERVE_FLAGS,
        ...this.tlsFlags(n.id),
        ...(this.opts.extra ?? []),
        '--peer-dial',
        Object.entries(this.mesh.dialMap(n.id)).map(([id, a]) => `${id}=${a}`).join(','),
      ],
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

  /**
   * checkTrust: that this TLS cluster enforces TLS and keys on node `id`
   * (running, links passing): on its client plane a plaintext client holding
   * the key is refused (UNAVAILABLE), a TLS client without a key or with a
   * wrong one UNAUTHENTICATED, and a TLS client with the key is served; on
   * its peer plane, directly and through the proxy another node dials it by,
   * a client without a certificate is refused at the handshake (UNAVAILABLE),
   * plaintext too. Returns one line per check and what did not hold (empty
   * when everything did). Throws when the cluster runs plaintext.
   */
  async checkTrust(id: string): Promise<{ checks: string[]; problems: string[] }> {
    const tls = this.tls;
    if (tls === null) throw new Error('checkTrust: this cluster runs plaintext');
    const n = this.node(id);
    const noCert = channelCredentialsFromFiles({ caFile: tls.caFile });
    const plain = grpc.credentials.createInsecure();
    const via = this.nodes.find((x) => x.id !== id);
    const cases: [string, string, ClientDial, grpc.status | 'ok'][] = [
      ['client plane, plaintext with the key', n.address, { credentials: plain, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
      ['client plane, TLS without a key', n.address, { credentials: noCert }, grpc.status.UNAUTHENTICATED],
      ['client plane, TLS with a wrong key', n.address, { credentials: noCert, apiKey: 'not-the-chaos-key-0123456789' }, grpc.status.UNAUTHENTICATED],
      ['client plane, TLS with the key', n.address, tls.dial, 'ok'],
      ['peer plane, TLS without a client certificate', n.peerAddress, { credentials: noCert, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
      ['peer plane, plaintext', n.peerAddress, { credentials: plain, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
      ...(via === undefined
        ? []
        : ([
            [`peer plane through proxy ${via.id}->${id}, TLS without a client certificate`, this.mesh.link(via.id, id).address, { credentials: noCert, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
            [`peer plane through proxy ${via.id}->${id}, plaintext`, this.mesh.link(via.id, id).address, { credentials: plain, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
          ] as [string, string, ClientDial, grpc.status][])),
    ];
    const checks: string[] = [];
    const problems: string[] = [];
    for (const [what, address, dial, want] of cases) {
      const kv = new KvClient(address, dial);
      let got: string;
      try {
        await kv.get({ key: new TextEncoder().encode('trust-probe') }, { deadlineMs: 5_000 });
        got = 'ok';
      } catch (err) {
        const e = err as Partial<grpc.ServiceError>;
        got = e.code !== undefined ? grpc.status[e.code] : String(err);
      } finally {
        kv.close();
      }
      const wanted = want === 'ok' ? 'ok' : grpc.status[want];
      checks.push(`${what}: ${got === 'ok' ? 'served' : `refused ${got}`}`);
      if (got !== wanted) problems.push(`${what}: ${got}, expected ${wanted}`);
    }
    return { checks, problems };
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

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
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ClientDial } from '../../src/client/dial.js';
import { KvClient } from '../../src/client/kv-client.js';
import { Role, type StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import { channelCredentialsFromFiles } from '../../src/tls/index.js';
import type { MessageFaultRates } from '../../src/transport/message-faults.js';
import type { ClusterTls } from '../harness/cluster-tls.js';
import { startOnFreshPorts } from '../harness/ports.js';
import { ServeCluster, type ServeClusterOptions, type ServeNode } from '../harness/serve-cluster.js';
import { ProxyMesh } from './proxy.js';

export interface ChaosClusterOptions {
  readonly nodes: number;
  /** dir: where data dirs, fault control files and every node process's output (<dir>/<id>.log, ServeClusterOptions.logsDir) go (the caller removes it). */
  readonly dir: string;
  readonly seed: number;
  /** extra: more `serve` flags for every node. */
  readonly extra?: readonly string[];
  /** tls (default true): peer mutual TLS through the proxies, client TLS + CHAOS_API_KEY; false: plaintext, no key. */
  readonly tls?: boolean;
  /** addresses: where the nodes listen, asked once per first start (default new ports from the OS; see ServeClusterOptions). */
  readonly addresses?: ServeClusterOptions['addresses'];
}

/** CHAOS_API_KEY: the admin key of a TLS chaos cluster: every node's --api-key, sent by every client of the run. */
export const CHAOS_API_KEY = 'chaos-admin-key-0123456789abcdef';

/** ChaosTls: the certificates of a TLS chaos cluster and how its clients dial. */
export type ChaosTls = ClusterTls;

/** ChaosNode: one member, across its restarts (a ServeCluster node). */
export type ChaosNode = ServeNode;

/** The serve flags every chaos node gets: snapshots small and often, so a cut-off node needs InstallSnapshot soon. */
export const CHAOS_SERVE_FLAGS = ['--snapshot-entries', '200', '--snapshot-trailing-entries', '50', '--snapshot-retain', '2'];

export class ChaosCluster {
  /** serve: the processes (start, kill, restart, pause, leader, logs). */
  readonly serve: ServeCluster;
  readonly mesh: ProxyMesh;
  private readonly opts: ChaosClusterOptions;
  /** injectedByDead: message faults injected by processes since killed. */
  private readonly injectedByDead: FaultCounts = { dropped: 0, duplicated: 0, corrupted: 0 };

  private constructor(opts: ChaosClusterOptions, serve: ServeCluster, mesh: ProxyMesh) {
    this.opts = opts;
    this.serve = serve;
    this.mesh = mesh;
  }

  get nodes(): ChaosNode[] {
    return this.serve.nodes;
  }

  /** tls: the cluster's certificates and client dial; null when it runs plaintext. */
  get tls(): ChaosTls | null {
    return this.serve.tls;
  }

  /**
   * start: certificates (unless tls is false), proxies (their addresses go
   * into --peer-dial), then every node; resolves once all listen. A first
   * start that finds a node's address taken (EADDRINUSE) is abandoned and
   * made again on new addresses with fresh data dirs (startOnFreshPorts).
   */
  static async start(opts: ChaosClusterOptions): Promise<ChaosCluster> {
    if (opts.nodes < 1 || opts.nodes > 9) throw new Error(`nodes: ${opts.nodes} is out of range 1..9`);
    return startOnFreshPorts(`starting a chaos cluster of ${opts.nodes} nodes`, () => ChaosCluster.startOnce(opts));
  }

  /** startOnce: one first start on new addresses; on failure everything it started is stopped and its dirs removed. */
  private static async startOnce(opts: ChaosClusterOptions): Promise<ChaosCluster> {
    // The proxies need the peer addresses, the nodes' --peer-dial the proxies': made in between, read at each start.
    const dialOf: { mesh?: ProxyMesh } = {};
    const serve = await ServeCluster.create({
      ids: Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`),
      dir: opts.dir,
      logsDir: opts.dir,
      tls: opts.tls ?? true,
      apiKey: CHAOS_API_KEY,
      extra: (id) => [
        ...CHAOS_SERVE_FLAGS,
        // Its own cluster id, as a deployment on a shared CA needs one (serve warns without it under peer TLS).
        '--cluster-id',
        'chaos',
        ...(opts.extra ?? []),
        '--peer-dial',
        Object.entries(dialOf.mesh?.dialMap(id) ?? {}).map(([to, a]) => `${to}=${a}`).join(','),
      ],
      env: (id) => ({ SNAPCOORD_MESSAGE_FAULTS: faultsFileOf(opts.dir, id) }),
      ...(opts.addresses !== undefined ? { addresses: opts.addresses } : {}),
    });
    // The proxies forward to the peer planes: only Raft traffic crosses the faulty links.
    const mesh = new ProxyMesh(Object.fromEntries(serve.nodes.map((n) => [n.id, n.peer])), opts.seed);
    dialOf.mesh = mesh;
    const c = new ChaosCluster(opts, serve, mesh);
    try {
      await mesh.start();
      await c.setMessageFaults(null);
      await serve.startAll();
    } catch (err) {
      await serve.abandon();
      await mesh.close();
      throw err;
    }
    return c;
  }

  node(id: string): ChaosNode {
    return this.serve.node(id);
  }

  /** running: nodes with a live, not paused process. */
  running(): ChaosNode[] {
    return this.serve.running();
  }

  /** kill: SIGKILL (a crash: nothing flushed beyond what was synced). */
  async kill(id: string): Promise<void> {
    const proc = this.node(id).proc;
    if (proc === null) return;
    await this.serve.kill(id, 'SIGKILL');
    addCounts(this.injectedByDead, lastInjected(proc.output));
  }

  /** restart: a new process on the same data dir and addresses (a few tries: the ports are briefly in TIME_WAIT reuse). */
  async restart(id: string): Promise<void> {
    await this.serve.restart(id);
  }

  /** pause: SIGSTOP (a long GC pause, a VM freeze): the process keeps its sockets but does nothing. */
  pause(id: string): void {
    this.serve.pause(id);
  }

  resume(id: string): void {
    this.serve.resume(id);
  }

  /** setMessageFaults writes every node's control file (null: none); the nodes pick it up within ~100 ms. */
  async setMessageFaults(rates: MessageFaultRates | null): Promise<void> {
    const body = JSON.stringify(rates ?? { drop: 0, duplicate: 0, corrupt: 0, seed: this.opts.seed });
    // Written whole then renamed into place: a node never reads half a file.
    await Promise.all(
      this.nodes.map(async (n, i) => {
        const file = faultsFileOf(this.opts.dir, n.id);
        await writeFile(`${file}.tmp`, rates === null ? body : JSON.stringify({ ...rates, seed: rates.seed + i }));
        await rename(`${file}.tmp`, file);
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
  statuses(): Promise<Map<string, StatusResponse>> {
    return this.serve.statuses();
  }

  /** leader: the running node that says it leads in the highest term, if any. */
  async leader(): Promise<ChaosNode | undefined> {
    const top = [...(await this.statuses()).values()].filter((s) => s.role === Role.ROLE_LEADER).sort((a, b) => Number(b.term - a.term))[0];
    return top === undefined ? undefined : this.node(top.id);
  }

  /** waitForLeader: a leader followed by a majority of the members, within timeoutMs. */
  waitForLeader(timeoutMs: number): Promise<ChaosNode> {
    return this.serve.leader(timeoutMs, this.nodes, 'majority');
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
      ['client plane, plaintext with the key', n.grpc, { credentials: plain, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
      ['client plane, TLS without a key', n.grpc, { credentials: noCert }, grpc.status.UNAUTHENTICATED],
      ['client plane, TLS with a wrong key', n.grpc, { credentials: noCert, apiKey: 'not-the-chaos-key-0123456789' }, grpc.status.UNAUTHENTICATED],
      ['client plane, TLS with the key', n.grpc, tls.dial, 'ok'],
      ['peer plane, TLS without a client certificate', n.peer, { credentials: noCert, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
      ['peer plane, plaintext', n.peer, { credentials: plain, apiKey: CHAOS_API_KEY }, grpc.status.UNAVAILABLE],
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
    return this.serve.logsOf(id, lines);
  }

  /** injectedMessageFaults: what the nodes' interceptors injected, over every process each node has had. */
  injectedMessageFaults(): FaultCounts {
    const sum = { ...this.injectedByDead };
    for (const n of this.nodes) if (n.proc !== null) addCounts(sum, lastInjected(n.proc.output));
    return sum;
  }

  /** stop: every process (SIGCONT first for paused ones), every proxy and client. */
  async stop(): Promise<void> {
    await this.serve.stop();
    await this.mesh.close();
  }
}

/** faultsFileOf: node `id`'s message-fault control file (SNAPCOORD_MESSAGE_FAULTS). */
function faultsFileOf(dir: string, id: string): string {
  return join(dir, `${id}.faults.json`);
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

/**
 * HostCluster: one real `snapcoord serve` per host of a HostNetwork (started
 * with `ip netns exec <ns> node --import tsx src/cli/main.ts serve ...`), each
 * on its host's own address with fixed ports (client 7001, peer 7002, HTTP
 * 8108: the hosts do not share an address), peers named by DNS names
 * (`--peers n1=h1.<id>.snapcoord.test:7002,...`, resolved through each host's
 * /etc/hosts), certificates made by `snapcoord certs init|issue` with the
 * host's name and address as SANs, mutual TLS between peers, TLS and an API
 * key (--api-key-file) on the client plane. The test process (the clients)
 * sits in the root namespace and reaches every host over the bridge.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClusterClient } from '../../src/client/cluster-client.js';
import { KvClient } from '../../src/client/kv-client.js';
import type { ClientDial } from '../../src/client/dial.js';
import { Role, Suffrage, type StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import { channelCredentialsFromFiles } from '../../src/tls/index.js';
import { Child, cleanEnv, cli } from '../harness/child.js';
import { until } from '../harness/until.js';
import type { Host, HostNetwork } from './netns.js';

/** HOST_API_KEY: the admin key every node reads from its --api-key-file and every client sends. */
export const HOST_API_KEY = 'hosts-admin-key-0123456789abcdef';
export const CLIENT_PORT = 7001;
export const PEER_PORT = 7002;
export const HTTP_PORT = 8108;

/** HOST_SERVE_FLAGS: timings for 5 processes on 2 shared cores (elections at 300..600 ms), snapshots small and often. */
export const HOST_SERVE_FLAGS = ['--tick-ms', '10', '--election-timeout-ticks', '30', '--heartbeat-ticks', '5', '--snapshot-entries', '500', '--snapshot-trailing-entries', '100'];

/** HostNode: one member (or would-be member) on one host, across its restarts. */
export interface HostNode {
  readonly id: string;
  readonly host: Host;
  readonly dataDir: string;
  proc: Child | null;
  /** peers: the --peers it starts with. */
  peers: string;
  kv: KvClient;
  cluster: ClusterClient;
  /** clientAddress: where clients reach it (the host's IP: the test process has no /etc/hosts of the namespaces). */
  clientAddress: string;
}

export interface HostClusterOptions {
  readonly net: HostNetwork;
  readonly dir: string;
  /** members: how many of the net's hosts start as the initial cluster (the first ones). */
  readonly members: number;
  readonly extra?: readonly string[];
  readonly clusterId?: string;
}

export class HostCluster {
  readonly nodes: HostNode[] = [];
  readonly dial: ClientDial;
  readonly tlsDir: string;
  private readonly opts: HostClusterOptions;
  private readonly keyFile: string;

  private constructor(opts: HostClusterOptions, dial: ClientDial, tlsDir: string, keyFile: string) {
    this.opts = opts;
    this.dial = dial;
    this.tlsDir = tlsDir;
    this.keyFile = keyFile;
  }

  get net(): HostNetwork {
    return this.opts.net;
  }

  /** start: the CA (`snapcoord certs init`), the key file, then the first `members` hosts' certificates and nodes; resolves once all listen. */
  static async start(opts: HostClusterOptions): Promise<HostCluster> {
    const tlsDir = join(opts.dir, 'tls');
    await mkdir(opts.dir, { recursive: true });
    await cli(['certs', 'init', '--dir', tlsDir]);
    const keyFile = join(opts.dir, 'api-key');
    await writeFile(keyFile, `${HOST_API_KEY}\n`, { mode: 0o600 });
    const dial: ClientDial = { credentials: channelCredentialsFromFiles({ caFile: join(tlsDir, 'ca.pem') }), apiKey: HOST_API_KEY };
    const c = new HostCluster(opts, dial, tlsDir, keyFile);
    const hosts = opts.net.hosts.slice(0, opts.members);
    const peers = hosts.map((h) => `n${h.index}=${h.name}:${PEER_PORT}`).join(',');
    await Promise.all(hosts.map((h) => c.prepare(h, peers)));
    try {
      await Promise.all(c.nodes.map((n) => c.startNode(n)));
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  /** prepare issues `host`'s certificate (`snapcoord certs issue n<i> --ip <ip> --dns <name>`) and registers its node (not started). */
  async prepare(host: Host, peers: string): Promise<HostNode> {
    const id = `n${host.index}`;
    await this.issue(id, host);
    const clientAddress = `${host.ip}:${CLIENT_PORT}`;
    const node: HostNode = { id, host, dataDir: join(this.opts.dir, id), proc: null, peers, kv: new KvClient(clientAddress, this.dial), cluster: new ClusterClient(clientAddress, this.dial), clientAddress };
    this.nodes.push(node);
    return node;
  }

  /** issue (re)issues `id`'s certificate for `host`'s current name and address (`snapcoord certs issue`). */
  async issue(id: string, host: Host): Promise<void> {
    await cli(['certs', 'issue', id, '--dir', this.tlsDir, '--ip', host.ip, '--dns', host.name]);
  }

  /** serveArgs: the whole `serve` command line of `n`. */
  serveArgs(n: HostNode): string[] {
    const cert = join(this.tlsDir, `${n.id}.pem`);
    const key = join(this.tlsDir, `${n.id}-key.pem`);
    return [
      'serve',
      '--id', n.id,
      '--grpc', `${n.host.ip}:${CLIENT_PORT}`,
      '--advertise-client', `${n.host.name}:${CLIENT_PORT}`,
      '--peer-listen', `${n.host.ip}:${PEER_PORT}`,
      '--http', `${n.host.ip}:${HTTP_PORT}`,
      '--peers', n.peers,
      '--data-dir', n.dataDir,
      '--cluster-id', this.opts.clusterId ?? 'hosts',
      '--peer-cert', cert, '--peer-key', key, '--peer-ca', join(this.tlsDir, 'ca.pem'),
      '--cert', cert, '--key', key, '--http-cert', cert, '--http-key', key,
      '--api-key-file', this.keyFile,
      '--snapshot-dir', join(n.dataDir, 'task-snapshots'),
      '--snapshot-root', join(n.dataDir, 'task-snapshots'),
      '--log-level', 'info',
      ...HOST_SERVE_FLAGS,
      ...(this.opts.extra ?? []),
    ];
  }

  /** startNode starts `n` in its namespace; resolves once it listens. */
  async startNode(n: HostNode, timeoutMs = 60_000): Promise<void> {
    if (n.proc?.running === true) throw new Error(`${n.id} is running`);
    // ip netns exec execs node in place: the pid is node's, so signals reach serve itself.
    n.proc = new Child(this.serveArgs(n), cleanEnv({ HOSTS_TEST_CLOCK_FILE: this.clockFile(n) }), { wrap: ['ip', 'netns', 'exec', n.host.ns], nodeImports: ['./test/hosts/clock-offset.ts'] });
    await n.proc.waitFor(new RegExp(`snapcoord node ${n.id} listening on grpc`), timeoutMs);
  }

  /** clockFile: the file holding `n`'s wall-clock offset in ms (see clock-offset.ts). */
  clockFile(n: HostNode): string {
    return join(this.opts.dir, `${n.id}.clock-offset`);
  }

  /** setClockOffset steps `n`'s wall clock by offsetMs from the real time (0: back to the real time); it takes effect within 100 ms. */
  async setClockOffset(n: HostNode, offsetMs: number): Promise<void> {
    await writeFile(this.clockFile(n), String(offsetMs));
  }

  /** stopNode: `signal` (SIGTERM: a planned stop with handoff; SIGKILL: a crash) and wait for the exit. */
  async stopNode(n: HostNode, signal: NodeJS.Signals): Promise<void> {
    await n.proc?.kill(signal, 10_000);
  }

  /** readdress: new clients for `n`, at `ip` (default its host's IP: its client address), the old ones closed. */
  readdress(n: HostNode, ip = n.host.ip): void {
    n.kv.close();
    n.cluster.close();
    n.clientAddress = `${ip}:${CLIENT_PORT}`;
    n.kv = new KvClient(n.clientAddress, this.dial);
    n.cluster = new ClusterClient(n.clientAddress, this.dial);
  }

  running(): HostNode[] {
    return this.nodes.filter((n) => n.proc?.running === true);
  }

  node(id: string): HostNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** status asks `n` (short deadline); undefined when it does not answer. */
  async status(n: HostNode, deadlineMs = 1_000): Promise<StatusResponse | undefined> {
    try {
      return await n.cluster.status({ deadlineMs });
    } catch {
      return undefined;
    }
  }

  /** leader: the node every answering running node agrees leads (undefined while they disagree or none does), polled until timeoutMs. */
  async waitLeader(timeoutMs = 20_000, among: readonly HostNode[] = this.running()): Promise<HostNode> {
    return until(`a leader among ${among.map((n) => n.id).join(',')}`, timeoutMs, async () => {
      const sts = await Promise.all(among.map((n) => this.status(n)));
      const leaders = sts.filter((s): s is StatusResponse => s !== undefined && s.role === Role.ROLE_LEADER);
      const top = leaders.sort((a, b) => Number(b.term - a.term))[0];
      return top !== undefined && sts.every((s) => s === undefined || s.leaderId === top.id) ? this.node(top.id) : undefined;
    }, { everyMs: 100 });
  }

  /** waitCaughtUp: every voter and learner in the leader's view has match >= the leader's commit at call time. */
  async waitCaughtUp(timeoutMs: number, ids?: readonly string[]): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let target = 0;
    await until('members caught up', timeoutMs, async () => {
      const leader = await this.waitLeader(Math.max(1, deadline - Date.now())).catch(() => undefined);
      const st = leader !== undefined ? await this.status(leader) : undefined;
      if (st === undefined) return undefined;
      if (target === 0) target = Number(st.commitIndex);
      const ms = st.members.filter((m) => ids === undefined || ids.includes(m.id));
      return ms.length > 0 && ms.every((m) => m.id === st.id || m.matchIndex >= target) ? true : undefined;
    }, { everyMs: 100 });
  }

  /** members: the leader's configuration (id, suffrage). */
  async members(): Promise<{ id: string; learner: boolean; matchIndex: number }[]> {
    const leader = await this.waitLeader();
    const st = await leader.cluster.status({ deadlineMs: 2_000 });
    return st.members.map((m) => ({ id: m.id, learner: m.suffrage === Suffrage.SUFFRAGE_LEARNER, matchIndex: Number(m.matchIndex) }));
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.proc?.kill('SIGKILL')));
    for (const n of this.nodes) {
      n.kv.close();
      n.cluster.close();
    }
  }
}

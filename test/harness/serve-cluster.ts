/**
 * ServeCluster: N real `snapcoord serve` processes on 127.0.0.1 (every plane
 * on a port from the OS, data under one directory), plaintext or TLS, with
 * what real-process tests do to them: kill (any signal) and restart on the
 * same data and addresses, pause and resume (SIGSTOP/SIGCONT), ask who leads,
 * keep every process's output for diagnosis, and clean up.
 */
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterClient } from '../../src/client/cluster-client.js';
import type { ClientDial } from '../../src/client/dial.js';
import { KvClient } from '../../src/client/kv-client.js';
import { Role, type StatusResponse } from '../../src/gen/snapcoord/v1/cluster.js';
import type { ChildOptions } from './child.js';
import { writeClusterTls, type ClusterTls } from './cluster-tls.js';
import { AddressInUseError, addressInUseOf, freeNodeAddresses, startOnFreshPorts } from './ports.js';
import { ServeProcess, type StartServesOptions } from './serve-process.js';
import { sleep, until } from './until.js';

/** CLUSTER_API_KEY: the admin key of a TLS ServeCluster unless told another. */
export const CLUSTER_API_KEY = 'cluster-admin-key-0123456789abcdef';

export interface ServeClusterOptions {
  /** ids: the members, in order (default n1 n2 n3). */
  readonly ids?: readonly string[];
  /** dir: the node data dirs go to <dir>/<id> (created; the caller removes it); default a new temp dir that stop() removes. */
  readonly dir?: string;
  /** tls (default false): certificates under <dir>/tls, peer mutual TLS, client TLS and apiKey; false: plaintext. */
  readonly tls?: boolean;
  /** apiKey: the admin key (default CLUSTER_API_KEY with TLS; none, --insecure-no-auth, when plaintext). */
  readonly apiKey?: string;
  /** apiKeyInEnv: pass the key as SNAPCOORD_API_KEY, as `npm start` does. */
  readonly apiKeyInEnv?: boolean;
  /** snapshotDirs: give each node --snapshot-dir <dir>/snapshots/<id> and --snapshot-root <dir>. */
  readonly snapshotDirs?: boolean;
  readonly logLevel?: string;
  readonly clusterId?: string;
  /** extra: more serve flags for every node, or per node (read at each start). */
  readonly extra?: readonly string[] | ((id: string) => readonly string[]);
  /** env: more environment for every node, or per node. */
  readonly env?: Record<string, string> | ((id: string) => Record<string, string>);
  readonly child?: ChildOptions;
  /** readyTimeoutMs: how long a start waits for the "listening" line (default ServeProcess.ready's). */
  readonly readyTimeoutMs?: number;
  /** addresses: where the nodes listen, asked once per create (default freeNodeAddresses: new ports from the OS). */
  readonly addresses?: StartServesOptions['addresses'];
  /** startAttempts: how many first starts `start` tries, each on new addresses, when an address is taken (default FRESH_PORT_ATTEMPTS). */
  readonly startAttempts?: number;
  /**
   * logsDir: keep every process's whole output: appended to <logsDir>/<id>.log once it is killed (kill, a
   * failed restart, stop), under a "=== <id> process N (<signal>) ===" line. Without it only the last
   * process's last lines are kept (deadOutput), and a run's diagnosis loses every earlier incarnation.
   */
  readonly logsDir?: string;
}

/** ServeNode: one member, across its processes. */
export interface ServeNode {
  readonly id: string;
  /** grpc: the client plane (clients, the CLI's --endpoint). */
  readonly grpc: string;
  /** peer: the peer plane, the node's address in the membership. */
  readonly peer: string;
  /** http: the embedded gateway. */
  readonly http: string;
  readonly dataDir: string;
  /** proc: the current process (null after kill, before the first start). */
  proc: ServeProcess | null;
  paused: boolean;
  /** starts: how many processes this node has had. */
  starts: number;
  /** deadOutput: the last lines of the last killed process, for diagnosis. */
  deadOutput: string;
  /** kv, cluster: clients of the node's client plane with the cluster's dial. */
  readonly kv: KvClient;
  readonly cluster: ClusterClient;
}

/** LeaderAgreement: who must follow the leader: every node asked ('all'), every one that answers, or a majority of those asked. */
export type LeaderAgreement = 'all' | 'answering' | 'majority';

export class ServeCluster {
  readonly dir: string;
  readonly nodes: ServeNode[];
  /** tls: the certificates and their dial; null when plaintext. */
  readonly tls: ClusterTls | null;
  /** dial: how clients reach the client planes (TLS and key, or plaintext). */
  readonly dial: ClientDial;
  /** peers: the --peers value every node starts with. */
  readonly peers: string;
  private readonly opts: ServeClusterOptions;
  private readonly ownsDir: boolean;
  /** made: what create made under a caller's dir (tls, data and snapshot dirs that did not exist), for abandon. */
  private readonly made: readonly string[];

  private constructor(opts: ServeClusterOptions, dir: string, ownsDir: boolean, made: readonly string[], nodes: ServeNode[], tls: ClusterTls | null, dial: ClientDial) {
    this.opts = opts;
    this.dir = dir;
    this.ownsDir = ownsDir;
    this.made = made;
    this.nodes = nodes;
    this.tls = tls;
    this.dial = dial;
    this.peers = nodes.map((n) => `${n.id}=${n.peer}`).join(',');
  }

  /**
   * create: the directory, certificates (tls) and each node's addresses
   * (opts.addresses, default new ports from the OS) and clients; starts no
   * process (see startAll, and startOnFreshPorts for a first start).
   */
  static async create(opts: ServeClusterOptions = {}): Promise<ServeCluster> {
    const ids = opts.ids ?? ['n1', 'n2', 'n3'];
    const ownsDir = opts.dir === undefined;
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'snapcoord-cluster-')));
    await mkdir(dir, { recursive: true });
    const made = ownsDir ? [] : [join(dir, 'tls'), ...ids.flatMap((id) => [join(dir, id), join(dir, 'snapshots', id)])].filter((p) => !existsSync(p));
    const tls = opts.tls === true ? await writeClusterTls(join(dir, 'tls'), ids, opts.apiKey ?? CLUSTER_API_KEY) : null;
    const dial: ClientDial = tls?.dial ?? (opts.apiKey !== undefined ? { apiKey: opts.apiKey } : {});
    const planes = await (opts.addresses ?? freeNodeAddresses)(ids);
    const nodes: ServeNode[] = ids.map((id) => {
      const a = planes[id];
      if (a === undefined) throw new Error(`create: no addresses for ${id}`);
      return { id, grpc: a.grpc, peer: a.peer, http: a.http, dataDir: join(dir, id), proc: null, paused: false, starts: 0, deadOutput: '', kv: new KvClient(a.grpc, dial), cluster: new ClusterClient(a.grpc, dial) };
    });
    return new ServeCluster(opts, dir, ownsDir, made, nodes, tls, dial);
  }

  /**
   * start: create, then start every node; resolves once all listen and agree
   * on a leader. A first start that finds one of its addresses taken
   * (EADDRINUSE) is abandoned and made again on new addresses with fresh
   * data dirs, up to opts.startAttempts times (startOnFreshPorts); any other
   * failure stops the cluster and rejects at once.
   */
  static async start(opts: ServeClusterOptions = {}): Promise<ServeCluster> {
    const ids = opts.ids ?? ['n1', 'n2', 'n3'];
    return startOnFreshPorts(
      `starting a cluster of ${ids.join(',')}`,
      async () => {
        const c = await ServeCluster.create(opts);
        try {
          await c.startAll();
          await c.leader();
        } catch (err) {
          await c.abandon();
          throw err;
        }
        return c;
      },
      opts.startAttempts,
    );
  }

  /** startAll starts every node at once; resolves once all listen. */
  async startAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.startNode(n.id)));
  }

  node(id: string): ServeNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** running: nodes with a live, not paused process. */
  running(): ServeNode[] {
    return this.nodes.filter((n) => n.proc !== null && n.proc.running && !n.paused);
  }

  /** startNode starts a new process for `id` on its data dir and addresses; resolves with it once it listens. */
  async startNode(id: string): Promise<ServeProcess> {
    const n = this.node(id);
    if (n.proc?.running === true) throw new Error(`${id} is running`);
    const extra = typeof this.opts.extra === 'function' ? this.opts.extra(id) : (this.opts.extra ?? []);
    const env = typeof this.opts.env === 'function' ? this.opts.env(id) : (this.opts.env ?? {});
    const apiKey = this.tls?.apiKey ?? this.opts.apiKey;
    const proc = new ServeProcess({
      id,
      grpc: n.grpc,
      peer: n.peer,
      http: n.http,
      peers: this.peers,
      dataDir: n.dataDir,
      ...(apiKey !== undefined ? { apiKey } : {}),
      ...(this.opts.apiKeyInEnv !== undefined ? { apiKeyInEnv: this.opts.apiKeyInEnv } : {}),
      ...(this.opts.logLevel !== undefined ? { logLevel: this.opts.logLevel } : {}),
      ...(this.opts.clusterId !== undefined ? { clusterId: this.opts.clusterId } : {}),
      ...(this.opts.child !== undefined ? { child: this.opts.child } : {}),
      extra: [
        ...(this.opts.snapshotDirs === true ? ['--snapshot-dir', join(this.dir, 'snapshots', id), '--snapshot-root', this.dir] : []),
        ...(this.tls?.serveFlags(id) ?? []),
        ...extra,
      ],
      env,
    });
    n.proc = proc;
    n.paused = false;
    n.starts++;
    await proc.ready(this.opts.readyTimeoutMs);
    return proc;
  }

  /** kill sends `signal` (default SIGKILL: a crash) to `id`'s process (SIGCONT first if paused) and waits for the exit; its last lines go to deadOutput. */
  async kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.node(id);
    if (n.proc === null) return;
    if (n.paused) n.proc.proc.kill('SIGCONT');
    await n.proc.kill(signal);
    await this.keepLog(n, n.proc, signal);
    n.deadOutput = n.proc.lastLines(40);
    n.proc = null;
    n.paused = false;
  }

  /** keepLog appends `proc`'s whole output to <logsDir>/<id>.log (nothing without opts.logsDir). */
  private async keepLog(n: ServeNode, proc: ServeProcess, how: string): Promise<void> {
    if (this.opts.logsDir === undefined) return;
    await mkdir(this.opts.logsDir, { recursive: true });
    await appendFile(join(this.opts.logsDir, `${n.id}.log`), `=== ${n.id} process ${n.starts} (${how}) ===\n${proc.output}${proc.output.endsWith('\n') ? '' : '\n'}`);
  }

  /**
   * restart: a new process on the same data dir and addresses, a few tries
   * (a port may be briefly in TIME_WAIT, or held by a short-lived
   * connection); rejects after `attempts`. A restart never moves a node to
   * new addresses (its peers name it by them, and keeping them is what a
   * restart checks): when its address is still taken at the last try it
   * rejects with an AddressInUseError naming the node, the plane and the
   * port.
   */
  async restart(id: string, attempts = 5): Promise<ServeProcess> {
    const n = this.node(id);
    if (n.proc !== null && n.proc.running) return n.proc;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startNode(id);
      } catch (err) {
        if (n.proc !== null) {
          await n.proc.kill('SIGKILL');
          await this.keepLog(n, n.proc, 'failed restart, SIGKILL');
          n.deadOutput = n.proc.lastLines(40);
        }
        n.proc = null;
        if (attempt >= attempts) {
          const inUse = addressInUseOf(err);
          if (inUse === null) throw new Error(`${id} did not restart: ${(err as Error).message}`, { cause: err });
          const plane = (['grpc', 'peer', 'http'] as const).find((p) => n[p] === inUse.address);
          throw new AddressInUseError(
            inUse.address,
            `${id} did not restart: its ${plane ?? 'listen'} address ${inUse.address || '(unnamed)'} is taken by another socket (EADDRINUSE) at each of ${attempts} tries; a restarted node keeps its addresses, so the test cannot go on: ${inUse.message}`,
            { cause: err },
          );
        }
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

  /** resume: SIGCONT after pause. */
  resume(id: string): void {
    const n = this.node(id);
    if (n.proc === null || !n.paused) return;
    n.proc.proc.kill('SIGCONT');
    n.paused = false;
  }

  /** statuses: the Status of each of `among` that answers within deadlineMs (the rest are left out). */
  async statuses(among: readonly ServeNode[] = this.running(), deadlineMs = 1_000): Promise<Map<string, StatusResponse>> {
    const out = new Map<string, StatusResponse>();
    await Promise.all(
      among.map(async (n) => {
        try {
          out.set(n.id, await n.cluster.status({ deadlineMs }));
        } catch {
          // not answering: left out
        }
      }),
    );
    return out;
  }

  /** currentLeader: the answering node of `among` that leads in the highest term, once `agree` holds for it; else undefined. */
  async currentLeader(among: readonly ServeNode[] = this.running(), agree: LeaderAgreement = 'all'): Promise<ServeNode | undefined> {
    const sts = [...(await this.statuses(among)).values()];
    const top = sts.filter((s) => s.role === Role.ROLE_LEADER).sort((a, b) => Number(b.term - a.term))[0];
    if (top === undefined) return undefined;
    const following = sts.filter((s) => s.leaderId === top.id && s.term === top.term).length;
    const ok = agree === 'majority' ? following > among.length / 2 : agree === 'answering' ? sts.every((s) => s.leaderId === top.id) : following === among.length;
    return ok ? this.node(top.id) : undefined;
  }

  /** leader waits (up to timeoutMs) for currentLeader(among, agree) and returns it; rejects naming each node's view. */
  async leader(timeoutMs = 20_000, among: readonly ServeNode[] = this.running(), agree: LeaderAgreement = 'all'): Promise<ServeNode> {
    try {
      return await until(`a leader among ${among.map((n) => n.id).join(',')} (${agree} agree)`, timeoutMs, () => this.currentLeader(among, agree), { everyMs: 100 });
    } catch (err) {
      const views = [...(await this.statuses(among)).values()].map((s) => `${s.id}:${Role[s.role]}/${s.leaderId}@${s.term}`).join(' ');
      throw new Error(`${(err as Error).message}; views: ${views || 'none answering'}`, { cause: err });
    }
  }

  /** follower: a running node that is not the leader. */
  async follower(): Promise<ServeNode> {
    const l = await this.leader();
    const f = this.running().find((n) => n.id !== l.id);
    if (f === undefined) throw new Error('no follower');
    return f;
  }

  /** logsOf: a node's recent output (the current process, else the last killed one). */
  logsOf(id: string, lines = 30): string {
    const n = this.node(id);
    return n.proc !== null ? n.proc.lastLines(lines) : n.deadOutput;
  }

  /** stop: SIGKILL every process (SIGCONT first for paused ones), close the clients, remove the directory if this cluster made it. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.kill(n.id)));
    for (const n of this.nodes) {
      n.kv.close();
      n.cluster.close();
    }
    if (this.ownsDir) await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * abandon: stop, and remove what create made under a caller's dir (its
   * certificates, data and snapshot dirs), so a new create on the same
   * options starts clean (a failed first start, see start).
   */
  async abandon(): Promise<void> {
    await this.stop();
    for (const p of this.made) await rm(p, { recursive: true, force: true });
  }
}

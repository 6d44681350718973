/**
 * HostNetwork: N Linux network namespaces ("hosts") joined by one bridge, each
 * with its own address on a private /24 (10.77.<random>.0/24: the bridge is
 * .1, host i is .(10+i)) and its own /etc/hosts (ip netns exec bind-mounts
 * /etc/netns/<ns>/hosts), with real kernel faults:
 *  - linkDown/linkUp: the host's cable pulled (its veth on the bridge down);
 *  - partition/oneWay: nftables drops between hosts (skipped with a reason when
 *    nft is missing: see `faults`);
 *  - loss: nftables `numgen random` drops of a share of the packets between hosts;
 *  - delay: tc netem when the kernel has it (many minimal kernels do not:
 *    `faults.delay` then says why it is unavailable).
 * Faults apply between hosts only: the bridge address (where the test process,
 * the clients, sit in the root namespace) is never dropped, except by a link down.
 *
 * Everything made here has a random suffix and is removed by close(), also at
 * process exit (a synchronous handler; a run killed with SIGKILL leaves
 * `ip netns list` entries named schost<id>h<n> to delete by hand). Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): see
 * netnsUnavailable().
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** sh runs a command (no shell) and resolves with its stdout; rejects with its stderr in the message. */
export async function sh(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await run(cmd, args as string[], { timeout: 15_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
}

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * netnsUnavailable: why this process cannot make network namespaces ('' when
 * it can): not Linux, not root, no `ip`, or the kernel refuses (a container
 * without CAP_SYS_ADMIN). Tries once with a throwaway namespace.
 */
export function netnsUnavailable(): string {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the host tests as root, as CI does)';
  if (!has('ip')) return 'the `ip` command (iproute2) is missing';
  const probe = `scprobe${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    return '';
  } catch (err) {
    return `ip netns add failed: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`;
  }
}

/** FaultSupport: which fault kinds this machine offers, each '' when available or the reason it is not. */
export interface FaultSupport {
  readonly nft: string;
  readonly delay: string;
}

/** Host: one namespace. */
export interface Host {
  readonly index: number;
  readonly ns: string;
  /** ip: the host's address (changes with moveAddress). */
  ip: string;
  /** name: its DNS name, in every host's /etc/hosts. */
  readonly name: string;
  /** veth: the bridge-side end of its link (in the root namespace). */
  readonly veth: string;
}

const live = new Set<HostNetwork>();
let exitHooked = false;

/** PREFIX: every namespace, bridge and veth this harness makes starts with it (sweepStale finds leftovers by it). */
export const PREFIX = 'schost';

export class HostNetwork {
  readonly id: string;
  readonly subnet: string;
  readonly bridge: string;
  readonly bridgeIp: string;
  readonly domain: string;
  readonly hosts: Host[] = [];
  faults: FaultSupport = { nft: 'not probed', delay: 'not probed' };
  private closed = false;
  /** nextIp: the last octet the next new address gets. */
  private nextOctet = 10;

  private constructor(id: string, x: number) {
    this.id = id;
    this.subnet = `10.77.${x}`;
    this.bridge = `${PREFIX}${id}b`;
    this.bridgeIp = `${this.subnet}.1`;
    this.domain = `${id}.snapcoord.test`;
  }

  /** create makes the bridge and `count` hosts; on failure removes what it made and rethrows. */
  static async create(count: number): Promise<HostNetwork> {
    const routes = await sh('ip', ['-4', 'route']);
    let x = 0;
    for (let tries = 0; tries < 50; tries++) {
      x = 2 + (randomBytes(1)[0] ?? 0) % 250;
      if (!routes.includes(`10.77.${x}.`)) break;
    }
    const net = new HostNetwork(randomBytes(3).toString('hex'), x);
    live.add(net);
    hookExit();
    try {
      await sh('ip', ['link', 'add', net.bridge, 'type', 'bridge']);
      await sh('ip', ['addr', 'add', `${net.bridgeIp}/24`, 'dev', net.bridge]);
      await sh('ip', ['link', 'set', net.bridge, 'up']);
      for (let i = 0; i < count; i++) await net.addHost();
      net.faults = await net.probeFaults();
    } catch (err) {
      net.closeSync();
      throw err;
    }
    return net;
  }

  /** addHost makes one more namespace on the bridge (its name goes into every host's /etc/hosts). */
  async addHost(): Promise<Host> {
    const index = this.hosts.length + 1;
    const host: Host = { index, ns: `${PREFIX}${this.id}h${index}`, ip: `${this.subnet}.${this.nextOctet++}`, name: `h${index}.${this.domain}`, veth: `${PREFIX}${this.id}v${index}` };
    this.hosts.push(host);
    await sh('ip', ['netns', 'add', host.ns]);
    await sh('ip', ['link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
    await sh('ip', ['link', 'set', host.veth, 'master', this.bridge]);
    await sh('ip', ['link', 'set', host.veth, 'up']);
    await this.exec(host, 'ip', ['addr', 'add', `${host.ip}/24`, 'dev', 'eth0']);
    await this.exec(host, 'ip', ['link', 'set', 'eth0', 'up']);
    await this.exec(host, 'ip', ['link', 'set', 'lo', 'up']);
    this.writeHostsFiles();
    return host;
  }

  /** exec runs a command inside `host`'s namespace. */
  exec(host: Host, cmd: string, args: readonly string[]): Promise<string> {
    return sh('ip', ['netns', 'exec', host.ns, cmd, ...args]);
  }

  /**
   * writeHostsFiles writes /etc/netns/<ns>/hosts of every host: localhost and
   * every host's current name and address. Written in place (same inode), so a
   * running process's bind-mounted /etc/hosts sees the change.
   */
  writeHostsFiles(): void {
    const lines = ['127.0.0.1 localhost', ...this.hosts.map((h) => `${h.ip} ${h.name}`)].join('\n') + '\n';
    for (const h of this.hosts) {
      mkdirSync(`/etc/netns/${h.ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${h.ns}/hosts`, lines);
    }
  }

  /**
   * moveAddress gives `host` a new address (the old one is gone) and updates every /etc/hosts: a pod back with a new IP.
   * beforeMove(ip) runs first, while the old address still answers (a stopped process's port refuses at once): the
   * place to point clients at the new one. A client still connecting to the old address once it is gone keeps this
   * process alive for the kernel's SYN retries (about 2 min): grpc-js does not abort a TCP connect when its channel closes.
   */
  async moveAddress(host: Host, beforeMove?: (ip: string) => void): Promise<string> {
    const ip = `${this.subnet}.${this.nextOctet++}`;
    beforeMove?.(ip);
    await this.exec(host, 'ip', ['addr', 'del', `${host.ip}/24`, 'dev', 'eth0']);
    await this.exec(host, 'ip', ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    host.ip = ip;
    this.writeHostsFiles();
    return ip;
  }

  /** linkDown / linkUp: the host's link to the bridge (every packet, clients' too). */
  async linkDown(host: Host): Promise<void> {
    await sh('ip', ['link', 'set', host.veth, 'down']);
  }

  async linkUp(host: Host): Promise<void> {
    await sh('ip', ['link', 'set', host.veth, 'up']);
  }

  /** nft runs an nft script in `host`'s namespace, after making the harness's table (idempotent). */
  private async nft(host: Host, rules: string): Promise<void> {
    if (this.faults.nft !== '') throw new Error(`nftables unavailable: ${this.faults.nft}`);
    const script = `add table inet scfault\nadd chain inet scfault in { type filter hook input priority 0; policy accept; }\nadd chain inet scfault out { type filter hook output priority 0; policy accept; }\n${rules}\n`;
    const file = `/tmp/${host.ns}.nft`;
    writeFileSync(file, script);
    try {
      await this.exec(host, 'nft', ['-f', file]);
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** partition: no packet between a host of `a` and a host of `b`, either way (nftables in every host of both sides). */
  async partition(a: readonly Host[], b: readonly Host[]): Promise<void> {
    const set = (hs: readonly Host[]): string => `{ ${hs.map((h) => h.ip).join(', ')} }`;
    for (const h of a) await this.nft(h, `add rule inet scfault in ip saddr ${set(b)} drop\nadd rule inet scfault out ip daddr ${set(b)} drop`);
    for (const h of b) await this.nft(h, `add rule inet scfault in ip saddr ${set(a)} drop\nadd rule inet scfault out ip daddr ${set(a)} drop`);
  }

  /** oneWay: packets from `from` to `to` are dropped on arrival; the other direction flows. */
  async oneWay(from: Host, to: Host): Promise<void> {
    await this.nft(to, `add rule inet scfault in ip saddr ${from.ip} drop`);
  }

  /** loss: `percent` of the packets `host` receives from other hosts are dropped (nftables numgen). */
  async loss(host: Host, percent: number): Promise<void> {
    const others = this.hosts.filter((h) => h !== host).map((h) => h.ip);
    await this.nft(host, `add rule inet scfault in ip saddr { ${others.join(', ')} } numgen random mod 100 < ${Math.round(percent)} drop`);
  }

  /** delay: netem delay on the host's link (both ways seen from its namespace: its egress). Throws when netem is missing. */
  async delay(host: Host, delayMs: number, jitterMs = 0): Promise<void> {
    if (this.faults.delay !== '') throw new Error(`delay unavailable: ${this.faults.delay}`);
    await this.exec(host, 'tc', ['qdisc', 'replace', 'dev', 'eth0', 'root', 'netem', 'delay', `${delayMs}ms`, `${jitterMs}ms`]);
  }

  /** heal removes every fault: links up, nft tables and netem qdiscs gone. */
  async heal(): Promise<void> {
    for (const h of this.hosts) {
      await this.linkUp(h).catch(() => undefined);
      await this.exec(h, 'nft', ['delete', 'table', 'inet', 'scfault']).catch(() => undefined);
      await this.exec(h, 'tc', ['qdisc', 'del', 'dev', 'eth0', 'root']).catch(() => undefined);
    }
  }

  private async probeFaults(): Promise<FaultSupport> {
    const h = this.hosts[0];
    if (h === undefined) return { nft: 'no host', delay: 'no host' };
    let nft = '';
    if (!has('nft')) nft = 'the `nft` command is missing (apt-get install nftables)';
    else {
      try {
        await this.exec(h, 'nft', ['add', 'table', 'inet', 'scprobe']);
        await this.exec(h, 'nft', ['delete', 'table', 'inet', 'scprobe']);
      } catch (err) {
        nft = (err as Error).message;
      }
    }
    let delay = '';
    if (!has('tc')) delay = 'the `tc` command is missing (iproute2)';
    else {
      try {
        await this.exec(h, 'tc', ['qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']);
        await this.exec(h, 'tc', ['qdisc', 'del', 'dev', 'lo', 'root']);
      } catch (err) {
        delay = `tc netem unavailable (kernel without sch_netem?): ${(err as Error).message}`;
      }
    }
    return { nft, delay };
  }

  /** close removes every host and the bridge (idempotent). */
  async close(): Promise<void> {
    this.closeSync();
  }

  /** closeSync: close for the exit handler (synchronous; errors ignored: a thing already gone is fine). */
  closeSync(): void {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    for (const h of this.hosts) {
      try {
        execFileSync('ip', ['netns', 'del', h.ns], { stdio: 'ignore' });
      } catch {
        // gone already
      }
      try {
        execFileSync('ip', ['link', 'del', h.veth], { stdio: 'ignore' });
      } catch {
        // deleted with the namespace's end
      }
      rmSync(`/etc/netns/${h.ns}`, { recursive: true, force: true });
    }
    try {
      execFileSync('ip', ['link', 'del', this.bridge], { stdio: 'ignore' });
    } catch {
      // gone already
    }
  }
}

/** closeAllSync: every HostNetwork still open in this process (the exit handler; also for signal handlers). */
export function closeAllSync(): void {
  for (const n of [...live]) n.closeSync();
}

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', closeAllSync);
}

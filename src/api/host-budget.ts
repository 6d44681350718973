/**
 * HostBudget: what one remote host may cost a plane before it has proven a
 * key (or a member's certificate), and its lockout once that is spent.
 *
 * A caller with no key could open HTTP/2 streams as fast as it liked on a
 * few connections: grpc-js creates a call and runs the interceptors for every
 * stream before the auth gate refuses it, and each connection that never
 * proves anything costs the node a TLS handshake. dos21, live 3-node `local`
 * cluster with TLS: ~183,000 keyless streams in 11 s on 4 connections, and the
 * leader lost its leadership 7 times (writes 416 -> 183 a second). Closing a
 * connection after N refusals made it worse: the attacker reconnects, and
 * handshakes cost more than refusals.
 *
 * So each host has a token bucket (`tokensMax`, refilled at `refillPerSec`):
 * a connection costs `connectionCost` when accepted, and every stream opened
 * on it while it is not proven costs 1; a connection that proves a key gets
 * what it was charged back (ConnectionLimiter.prove), so callers with a key
 * (the gateways, the CLI, a NAT's honest clients with theirs) are never
 * budgeted. A host that overspends is locked out for `lockMs`, doubled at
 * each lockout in a row (a strike) up to `lockMsMax`: the ConnectionLimiter
 * then closes its unproven connections and refuses its new ones at accept,
 * before TLS (one accept and one close each). It comes back with an empty
 * bucket that refills; its strikes are forgotten once the bucket is full
 * again (it stayed quiet for tokensMax / refillPerSec seconds).
 *
 * Hosts are keyed by hostKey: an IPv4 address; an IPv6 address by its /64
 * (one customer's usual allocation: an attacker with one /64 is one host);
 * loopback is exempt (null), see hostKey. At most `hostsMax` hosts are
 * remembered: when full, those that are as good as new (not locked, no
 * strikes, bucket full) are forgotten first, then the longest remembered.
 */
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface HostBudgetLimits {
  /** tokensMax: a host's bucket when full (its burst), >= 1. */
  readonly tokensMax: number;
  /** refillPerSec: tokens a host gets back each second, >= 1. */
  readonly refillPerSec: number;
  /** connectionCost: what accepting one connection costs its host until it proves a key, >= 1. */
  readonly connectionCost: number;
  /** lockMs: a host's first lockout, >= 1. */
  readonly lockMs: number;
  /** lockMsMax: the longest lockout (lockMs doubled per strike up to this), >= lockMs. */
  readonly lockMsMax: number;
  /** hostsMax: hosts remembered at once, >= 1. */
  readonly hostsMax: number;
}

interface HostState {
  tokens: number;
  /** atMs: when tokens was last brought up to date. */
  atMs: number;
  /** lockedUntilMs: 0 when not locked. */
  lockedUntilMs: number;
  /** strikes: lockouts in a row (not yet forgiven by a full bucket). */
  strikes: number;
}

/**
 * hostKey: the budget key of a remote address: an IPv4 address as it is (an
 * IPv4-mapped IPv6 one as its IPv4); an IPv6 address by its /64
 * (`2001:db8:1:2::/64`); null for loopback (127.0.0.0/8, ::1), which is
 * exempt: `local` runs every node, gateway and CLI call on 127.0.0.1, and a
 * process that can reach loopback shares the node's machine and could burn
 * its CPU without any connection, while a lockout of 127.0.0.1 would shut
 * out the gateways and the CLI. Unparseable addresses key as they are.
 */
export function hostKey(address: string): string | null {
  let a = address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped !== null) a = mapped[1] as string;
  const family = isIP(a);
  if (family === 4) return a.startsWith('127.') ? null : a;
  if (family !== 6) return a;
  const groups = expandIpv6(a);
  if (groups === null) return a;
  if (groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1) return null;
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** expandIpv6: the eight 16-bit groups of an IPv6 address (a zone id dropped, an embedded IPv4 tail read). */
function expandIpv6(address: string): number[] | null {
  let a = address.split('%')[0] as string;
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (tail !== null) {
    const [b0, b1, b2, b3] = tail.slice(1).map(Number) as [number, number, number, number];
    a = `${a.slice(0, tail.index)}${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const halves = a.split('::');
  if (halves.length > 2) return null;
  const part = (s: string | undefined): number[] => (s === undefined || s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const head = part(halves[0]);
  const rest = part(halves[1]);
  const fill = 8 - head.length - rest.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return null;
  const groups = [...head, ...Array<number>(halves.length === 2 ? fill : 0).fill(0), ...rest];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

/**
 * HostBudgetOptions: the clock, monotonic (default performance.now: on the wall clock a step forward ended
 * every lockout and refilled every bucket at once, a step back locked a host out for the step's length), and how
 * an address is keyed (default hostKey: loopback exempt).
 */
export interface HostBudgetOptions {
  readonly nowMs?: () => number;
  readonly keyOf?: (address: string) => string | null;
}

export class HostBudget {
  private readonly hosts = new Map<string, HostState>();
  private readonly nowMs: () => number;
  /** keyOf: the key a remote address is budgeted under (null: exempt). */
  readonly keyOf: (address: string) => string | null;
  /** lockouts: times a host was locked out. */
  lockouts = 0;

  constructor(
    readonly limits: HostBudgetLimits,
    opts: HostBudgetOptions = {},
  ) {
    this.nowMs = opts.nowMs ?? (() => performance.now());
    this.keyOf = opts.keyOf ?? hostKey;
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`host budget: ${k} must be a whole number >= 1, got ${String(v)}`);
    }
    if (limits.lockMsMax < limits.lockMs) throw new Error(`host budget: lockMsMax (${limits.lockMsMax}) is below lockMs (${limits.lockMs})`);
  }

  /** size: hosts remembered now. */
  get size(): number {
    return this.hosts.size;
  }

  /** locked: `key` is locked out now. */
  locked(key: string): boolean {
    const h = this.hosts.get(key);
    return h !== undefined && this.refresh(h, this.nowMs()) > 0;
  }

  /**
   * spend charges `key` `n` tokens. False when that overspent its bucket (or
   * it was locked already): the host is locked out now (its bucket empty, to
   * refill from the end of the lockout).
   */
  spend(key: string, n: number): boolean {
    const now = this.nowMs();
    let h = this.hosts.get(key);
    if (h === undefined) {
      this.makeRoom();
      h = { tokens: this.limits.tokensMax, atMs: now, lockedUntilMs: 0, strikes: 0 };
      this.hosts.set(key, h);
    }
    if (this.refresh(h, now) > 0) return false;
    h.tokens -= n;
    if (h.tokens >= 0) return true;
    const lockMs = Math.min(this.limits.lockMsMax, this.limits.lockMs * 2 ** Math.min(h.strikes, 30));
    h.strikes++;
    h.tokens = 0;
    h.lockedUntilMs = now + lockMs;
    h.atMs = h.lockedUntilMs;
    this.lockouts++;
    return false;
  }

  /** refund gives `key` back `n` tokens (a connection proved a key), up to a full bucket; a lockout stands. */
  refund(key: string, n: number): void {
    const h = this.hosts.get(key);
    if (h === undefined) return;
    if (this.refresh(h, this.nowMs()) > 0) return;
    h.tokens = Math.min(this.limits.tokensMax, h.tokens + n);
  }

  /** refresh brings h's bucket up to `now`; answers how long it stays locked (0: not locked). */
  private refresh(h: HostState, now: number): number {
    if (h.lockedUntilMs > now) return h.lockedUntilMs - now;
    h.lockedUntilMs = 0;
    if (now > h.atMs) {
      h.tokens = Math.min(this.limits.tokensMax, h.tokens + ((now - h.atMs) * this.limits.refillPerSec) / 1000);
      h.atMs = now;
    }
    if (h.tokens >= this.limits.tokensMax) h.strikes = 0;
    return 0;
  }

  /** makeRoom: before a new host is remembered at hostsMax, forget the ones as good as new, else the oldest eighth. */
  private makeRoom(): void {
    if (this.hosts.size < this.limits.hostsMax) return;
    const now = this.nowMs();
    for (const [key, h] of this.hosts) {
      if (this.refresh(h, now) === 0 && h.strikes === 0 && h.tokens >= this.limits.tokensMax) this.hosts.delete(key);
    }
    const keep = this.limits.hostsMax - Math.max(1, Math.floor(this.limits.hostsMax / 8));
    for (const key of this.hosts.keys()) {
      if (this.hosts.size <= keep) break;
      this.hosts.delete(key);
    }
  }
}

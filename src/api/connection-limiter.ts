/**
 * ConnectionLimiter: how many TCP connections one gRPC plane's listener holds.
 *
 * grpc-js caps neither connections nor those that never make a call: any
 * host could open connections until the process runs out of file
 * descriptors, and then the node's own storage and snapshot files fail to
 * open. So each plane accepts its connections itself (a net.Server handing
 * them to grpc-js through Server.createConnectionInjector) and asks
 * `accept` first:
 * - at most `perHostMax` connections from one remote host and
 *   `connectionsMax` in all;
 * - a connection is `proven` once one of its calls was let through by the
 *   plane's gates (the client plane's API key check, the peer plane's
 *   admission): `prove`, from provingInterceptor. A call to a method that
 *   needs no credentials (the client plane's open Health/Check) proves
 *   nothing: anyone may make it;
 * - a call's `owner` (the peer plane: the member its certificate names;
 *   the client plane: the API key it carries)
 *   proves at most `perOwnerMax` connections; its calls on more leave them
 *   unproven (`vouched`: a call on them was let through), so that one
 *   member's certificate cannot hold every place (the per-host cap alone let
 *   it fill the plane from a few addresses, and no other member could
 *   connect: a restarted one, a snapshot fetch);
 * - a new connection over a cap pushes out the oldest connection not proven
 *   (of that host for the per-host cap), one with no call let through before
 *   one vouched for: a silent or refused caller never holds a place a caller
 *   with a key or a member's certificate needs, nor takes the place of a
 *   connection vouched for while a silent one can go instead (a key shared
 *   by many honest clients, a NAT's or gateways', has more connections than
 *   it proves: before, a caller with no key cut them one by one, the oldest
 *   first); when every held connection is proven, the new one is closed.
 * - with a HostBudget (src/api/host-budget.ts), a host pays for what it
 *   costs before it proves anything: `accept` charges each connection,
 *   `streamOpened` each HTTP/2 stream on a connection not proven nor vouched
 *   for, `prove` gives a connection's charges back; a host that overspends
 *   is locked out: its connections not proven nor vouched for are closed
 *   (`closedOverBudget`), and its new ones are closed at accept, before TLS
 *   (`lockedOut`), until the lockout ends.
 * Refusals and evictions are counted (`refused`, `evicted`).
 */
import type { Socket } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

import { ForwardingServerCall } from '../transport/forwarding-call.js';
import { MetadataGateCall, type GatedCall, type MetadataGate } from '../transport/metadata-gate.js';
import type { HostBudget } from './host-budget.js';

export interface ConnectionLimits {
  /** connectionsMax: connections held in all (>= 1). */
  readonly connectionsMax: number;
  /** perHostMax: connections held from one remote host (>= 1). */
  readonly perHostMax: number;
  /** perOwnerMax: proven connections one owner holds (>= 1; absent: no bound); see `prove`. */
  readonly perOwnerMax?: number;
}

interface Held {
  readonly socket: Socket;
  readonly host: string;
  proven: boolean;
  /** owner: whose call proved it (null: none named). */
  owner: string | null;
  /** vouched: not proven, but a call on it was let through (its owner had perOwnerMax proven already): pushed out after the silent ones. */
  vouched: boolean;
  /** budgetKey: its host's HostBudget key (null: no budget, or an exempt host). */
  readonly budgetKey: string | null;
  /** charged: what it cost its host's budget so far (given back when it is proven or vouched for). */
  charged: number;
}

export class ConnectionLimiter {
  /** held: by the peer string grpc-js gives its calls (`address:port`), oldest first. */
  private readonly held = new Map<string, Held>();
  private readonly perHost = new Map<string, number>();
  /** perOwner: the proven connections of each owner. */
  private readonly perOwner = new Map<string, number>();
  /** refused: connections closed at accept (every held one proven). */
  refused = 0;
  /** evicted: connections not proven pushed out by newer ones. */
  evicted = 0;
  /** lockedOut: connections closed at accept because their host is locked out (HostBudget). */
  lockedOut = 0;
  /** closedOverBudget: held connections closed because their host overspent its budget. */
  closedOverBudget = 0;

  /**
   * `budget`: what each remote host may cost before it proves anything (null: no budget); `onRefused` is
   * told of connections refused at accept (over a cap, or their host locked out).
   */
  constructor(
    private readonly limits: ConnectionLimits,
    private readonly onRefused: (host: string, why: string) => void = () => undefined,
    private readonly budget: HostBudget | null = null,
  ) {
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`connection limits: ${k} must be a whole number >= 1, got ${String(v)}`);
    }
  }

  /** size: connections held now. */
  get size(): number {
    return this.held.size;
  }

  /** accept decides a new connection: true when it is held (hand it to grpc-js); false when it was closed. */
  accept(socket: Socket): boolean {
    const host = socket.remoteAddress ?? '';
    const budgetKey = this.budget === null ? null : this.budget.keyOf(host);
    if (budgetKey !== null && this.budget?.locked(budgetKey) === true) {
      this.lockedOut++;
      socket.destroy();
      this.onRefused(host, `${budgetKey} is locked out: it spent its budget of calls and connections without a key`);
      return false;
    }
    if ((this.perHost.get(host) ?? 0) >= this.limits.perHostMax && !this.evictOldest(host)) {
      return this.refuse(socket, host, `more than ${this.limits.perHostMax} connections from ${host}, every one with a call let through`);
    }
    if (this.held.size >= this.limits.connectionsMax && !this.evictOldest(null)) {
      return this.refuse(socket, host, `more than ${this.limits.connectionsMax} connections, every one with a call let through`);
    }
    const key = `${host}:${socket.remotePort ?? ''}`;
    const entry: Held = { socket, host, proven: false, owner: null, vouched: false, budgetKey, charged: 0 };
    this.held.set(key, entry);
    this.perHost.set(host, (this.perHost.get(host) ?? 0) + 1);
    socket.once('close', () => {
      if (this.held.get(key) !== entry) return;
      this.held.delete(key);
      const n = (this.perHost.get(host) ?? 1) - 1;
      if (n > 0) this.perHost.set(host, n);
      else this.perHost.delete(host);
      this.disown(entry);
    });
    if (budgetKey !== null && !this.charge(entry, (this.budget as HostBudget).limits.connectionCost)) {
      this.onRefused(host, `${budgetKey} spent its budget of calls and connections without a key: locked out`);
      return false;
    }
    return true;
  }

  /**
   * streamOpened: an HTTP/2 stream was opened on the connection of `peer`
   * (`address:port`, as a call's getPeer()): one token of its host's budget
   * while the connection is neither proven nor vouched for.
   */
  streamOpened(peer: string): void {
    if (this.budget === null) return;
    const h = this.held.get(peer);
    if (h === undefined || h.proven || h.vouched || h.budgetKey === null) return;
    this.charge(h, 1);
  }

  /** charge spends `n` of h's host's budget on h; false when the host is locked out now (its connections not proven are closed). */
  private charge(h: Held, n: number): boolean {
    const key = h.budgetKey as string;
    h.charged += n;
    if ((this.budget as HostBudget).spend(key, n)) return true;
    for (const [peer, o] of this.held) {
      if (o.budgetKey !== key || o.proven || o.vouched) continue;
      this.forget(peer, o);
      o.socket.destroy();
      this.closedOverBudget++;
    }
    return false;
  }

  /** refund: a connection proven or vouched for gives its charges back to its host's budget. */
  private refund(h: Held): void {
    if (h.budgetKey === null || h.charged === 0) return;
    this.budget?.refund(h.budgetKey, h.charged);
    h.charged = 0;
  }

  /**
   * prove marks the connection of a call let through (`peer`: the call's
   * getPeer()), made by `owner` (null: none named). An owner that holds
   * perOwnerMax proven connections already leaves this one unproven.
   */
  prove(peer: string, owner: string | null = null): void {
    const h = this.held.get(peer);
    if (h === undefined || h.proven) return;
    if (owner !== null) {
      const n = this.perOwner.get(owner) ?? 0;
      if (this.limits.perOwnerMax !== undefined && n >= this.limits.perOwnerMax) {
        h.vouched = true;
        this.refund(h);
        return;
      }
      this.perOwner.set(owner, n + 1);
      h.owner = owner;
    }
    h.proven = true;
    this.refund(h);
  }

  /** needsProof: the connection of a call from `peer` is held and not proven yet (prove would decide it). */
  needsProof(peer: string): boolean {
    const h = this.held.get(peer);
    return h !== undefined && !h.proven;
  }

  /** disown: a closed connection no longer counts toward its owner's proven ones. */
  private disown(h: Held): void {
    if (h.owner === null) return;
    const n = (this.perOwner.get(h.owner) ?? 1) - 1;
    if (n > 0) this.perOwner.set(h.owner, n);
    else this.perOwner.delete(h.owner);
    h.owner = null;
  }

  /** destroyAll closes every held connection (the plane stops). */
  destroyAll(): void {
    for (const h of this.held.values()) h.socket.destroy();
  }

  /**
   * evictOldest closes the oldest connection not proven (of `host`, or of any host for null), one with no call let
   * through before one vouched for; false when there is none.
   */
  private evictOldest(host: string | null): boolean {
    for (const vouched of [false, true]) {
      for (const [key, h] of this.held) {
        if (h.proven || h.vouched !== vouched || (host !== null && h.host !== host)) continue;
        this.forget(key, h);
        h.socket.destroy();
        this.evicted++;
        return true;
      }
    }
    return false;
  }

  /** forget drops a held connection now, not at its 'close' (which comes later): its place is free for a new one. */
  private forget(key: string, h: Held): void {
    this.held.delete(key);
    const n = (this.perHost.get(h.host) ?? 1) - 1;
    if (n > 0) this.perHost.set(h.host, n);
    else this.perHost.delete(h.host);
  }

  private refuse(socket: Socket, host: string, why: string): false {
    this.refused++;
    socket.destroy();
    this.onRefused(host, why);
    return false;
  }
}

/**
 * provingInterceptor: put it last in a plane's interceptors (grpc-js hands a
 * call's metadata to them in their order): a call whose metadata reaches it
 * was let through by every gate before it, and its connection is proven
 * (ConnectionLimiter.prove), unless `proves(path)` says its method proves
 * nothing (one the gates let anyone call, such as an open health check:
 * else a caller without credentials could hold every place with one such
 * call per connection, and every caller with credentials would be refused).
 * `ownerOf` names who made the call (ConnectionLimiter.prove's owner).
 */
export function provingInterceptor(
  limiter: ConnectionLimiter,
  proves: (path: string) => boolean = () => true,
  ownerOf: (metadata: grpc.Metadata, call: GatedCall) => string | null = () => null,
): grpc.ServerInterceptor {
  const gate: MetadataGate = {
    decide(metadata, call) {
      // The owner is named only for a connection not proven yet (the client plane hashes the call's key).
      const peer = call.getPeer();
      if (limiter.needsProof(peer)) limiter.prove(peer, ownerOf(metadata, call));
      return null;
    },
    refused: () => undefined,
  };
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (method, inner) => (proves(method.path) ? (new MetadataGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall) : (inner as grpc.ServerInterceptingCall));
}

/** RefusedOwnerCall: one call of refusedOwnerInterceptor's (see there). */
class RefusedOwnerCall extends ForwardingServerCall {
  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly limiter: ConnectionLimiter,
    private readonly ownerOf: (metadata: grpc.Metadata) => string | null,
  ) {
    super(inner);
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    // The gates above decide within this call (and a call they let through is proven by provingInterceptor).
    super.onReceiveMetadata(metadata);
    const owner = this.ownerOf(metadata);
    if (owner === null) return;
    const peer = this.inner.getPeer();
    if (this.limiter.needsProof(peer)) this.limiter.prove(peer, owner);
  }
}

/**
 * refusedOwnerInterceptor: put it first in a plane's interceptors (grpc-js
 * hands it a call's metadata first: it passes them on, and the gates after it
 * decide the call before it looks at them again). A call that a gate
 * refused although it proved who made it (`ownerOf` names the owner: the
 * client plane's valid key without the method's action, refusedKeyOwner)
 * proves its connection as a call let through would (`prove`, perOwnerMax
 * included), and stays refused: its host's budget pays for callers it cannot
 * name, not for a misconfigured client with a valid key (nor for the honest
 * clients behind the same NAT that its lockout would shut out). Such an owner
 * could prove the connection with a call its key allows anyway (any valid key
 * may call ClusterService/Status).
 */
export function refusedOwnerInterceptor(limiter: ConnectionLimiter, ownerOf: (metadata: grpc.Metadata) => string | null): grpc.ServerInterceptor {
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (_method, inner) => new RefusedOwnerCall(inner, limiter, ownerOf) as unknown as grpc.ServerInterceptingCall;
}

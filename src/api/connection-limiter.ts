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
 * Refusals and evictions are counted (`refused`, `evicted`).
 */
import type { Socket } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

import { MetadataGateCall, type GatedCall, type MetadataGate } from '../transport/metadata-gate.js';

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

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly onRefused: (host: string, why: string) => void = () => undefined,
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
    if ((this.perHost.get(host) ?? 0) >= this.limits.perHostMax && !this.evictOldest(host)) {
      return this.refuse(socket, host, `more than ${this.limits.perHostMax} connections from ${host}, every one with a call let through`);
    }
    if (this.held.size >= this.limits.connectionsMax && !this.evictOldest(null)) {
      return this.refuse(socket, host, `more than ${this.limits.connectionsMax} connections, every one with a call let through`);
    }
    const key = `${host}:${socket.remotePort ?? ''}`;
    const entry: Held = { socket, host, proven: false, owner: null, vouched: false };
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
    return true;
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
        return;
      }
      this.perOwner.set(owner, n + 1);
      h.owner = owner;
    }
    h.proven = true;
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
        // Forgotten now, not at its 'close' (which comes later): the place is free for the new one.
        this.held.delete(key);
        const n = (this.perHost.get(h.host) ?? 1) - 1;
        if (n > 0) this.perHost.set(h.host, n);
        else this.perHost.delete(h.host);
        h.socket.destroy();
        this.evicted++;
        return true;
      }
    }
    return false;
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

/**
 * MemberClients: the client channels a node holds to other members' client planes (forwarding to the leader): one
 * per member id, at the address that member advertised last. A member's client address is its own word
 * (x-snapcoord-client-address on its peer calls; under mutual TLS taken as it comes), so a channel is not kept per
 * id@address: a member advertising a new address on each stream it opened left one open channel per address. When
 * a member's address changes its old channel is closed (grpc-js lets the calls in flight on it finish); at most
 * MEMBER_CLIENTS_MAX members are held, the least recently used closed first.
 */

/** MEMBER_CLIENTS_MAX: members whose channel is held at once (a node forwards to one leader at a time). */
export const MEMBER_CLIENTS_MAX = 64;

export class MemberClients<C extends { close(): void }> {
  private readonly held = new Map<string, { readonly address: string; readonly client: C }>();

  /** `make` dials member `id` at `address`. */
  constructor(private readonly make: (id: string, address: string) => C) {}

  /** get: the client of member `id` at `address`: the one held when its address is the same, else a new one (the old one closed). */
  get(id: string, address: string): C {
    const h = this.held.get(id);
    if (h !== undefined) {
      this.held.delete(id);
      if (h.address === address) {
        this.held.set(id, h); // most recently used last
        return h.client;
      }
      h.client.close();
    }
    if (this.held.size >= MEMBER_CLIENTS_MAX) {
      const [oldest, o] = this.held.entries().next().value as [string, { readonly client: C }];
      this.held.delete(oldest);
      o.client.close();
    }
    const client = this.make(id, address);
    this.held.set(id, { address, client });
    return client;
  }

  /** size: the members whose channel is held. */
  get size(): number {
    return this.held.size;
  }

  /** close closes every channel held. */
  close(): void {
    for (const h of this.held.values()) h.client.close();
    this.held.clear();
  }
}

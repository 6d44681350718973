/**
 * TlsMembers: real nodes (Node over MemoryStorage, GrpcTransport, the api server's peer plane) under mutual TLS with
 * a CA and member certificates of their own, for the peer-trust specs (outsider-forge, proof-vouch). Each member
 * dials as serve does (per-member credentials; with `proofs`, its calls advertise its peer address and it signs and
 * checks membership proofs with its peer certificate); a member started again keeps its data dir.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bindApiServer, type ApiServer } from '../../../src/api/server.js';
import type { RaftServiceClient } from '../../../src/gen/snapcoord/v1/raft.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { caFiles, memberChannelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { X509MembershipProofs } from '../../../src/tls/membership-proof.js';
import { appendRequestToProto } from '../../../src/transport/codec.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { CLUSTER_ID_METADATA_KEY, peerDial, type PeerCall, type RefusalReason } from '../../../src/transport/peer-guard.js';

export interface TlsMember {
  readonly id: string;
  readonly api: ApiServer;
  readonly node: Node;
  readonly refusals: RefusalReason[];
}

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

export class TlsMembers {
  readonly members = new Map<string, TlsMember>();
  readonly stopped = new Set<string>();
  dir = '';
  private readonly dataDirs = new Map<string, MemoryDataDir>();

  constructor(
    readonly cluster: string,
    private readonly opts: { readonly proofs?: boolean } = {},
  ) {}

  /** open makes the CA and a certificate for each of `ids` (127.0.0.1 in its names) in a fresh directory. */
  async open(ids: readonly string[]): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `snapcoord-${this.cluster}-`));
    await writeCa(this.dir);
    for (const id of ids) await writeNodeCert(this.dir, id, { ips: ['127.0.0.1'] });
  }

  /** bind: member `id`'s api server, its peer plane on `peerPort` (0: the OS's choice). */
  bind(id: string, peerPort = 0): Promise<ApiServer> {
    const f = nodeCertFiles(this.dir, id);
    return bindApiServer({ bindAddress: '127.0.0.1:0', peerBindAddress: `127.0.0.1:${peerPort}`, peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: caFiles(this.dir).caFile, requireClientCert: true }) });
  }

  /** start serves member `id` from `membership` (its --peers) once `api` is bound. */
  async start(id: string, api: ApiServer, membership: Membership): Promise<TlsMember> {
    const ca = caFiles(this.dir).caFile;
    const f = nodeCertFiles(this.dir, id);
    const ref: { node: Node | null } = { node: null };
    const creds = memberChannelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile });
    const dial = peerDial(this.cluster, api.address, creds.any, (to) => creds.forMember(to), this.opts.proofs === true ? api.peerAddress : '');
    const transport = new GrpcTransport({ selfId: id, onMessage: (m) => ref.node?.receive(m), dial });
    const data = this.dataDirs.get(id) ?? new MemoryDataDir(id);
    this.dataDirs.set(id, data);
    const node = await Node.start({
      clock: systemClock,
      rng: cryptoRng,
      id,
      storage: await MemoryStorage.open(data),
      transport,
      initialMembership: membership,
      timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 },
      ...(this.opts.proofs === true ? { membershipProofs: new X509MembershipProofs({ clusterId: this.cluster, selfId: id, certFile: f.certFile, keyFile: f.keyFile, caFile: ca }) } : {}),
    });
    ref.node = node;
    const refusals: RefusalReason[] = [];
    api.serve({ node, clusterId: this.cluster, identityOf, onPeerRefused: (r) => refusals.push(r) });
    const m = { id, api, node, refusals };
    this.members.set(id, m);
    this.stopped.delete(id);
    return m;
  }

  async stop(m: TlsMember): Promise<void> {
    this.stopped.add(m.id);
    await m.api.close(0);
    await m.node.stop();
  }

  /** live: the members started and not stopped. */
  live(): TlsMember[] {
    return [...this.members.values()].filter((m) => !this.stopped.has(m.id));
  }

  /** close stops every live member and removes the directory. */
  async close(): Promise<void> {
    const live = this.live();
    await Promise.all(live.map((m) => m.api.close(200)));
    await Promise.all(live.map((m) => m.node.stop()));
    this.members.clear();
    if (this.dir !== '') await rm(this.dir, { recursive: true, force: true });
  }
}

/** sendAppend: one AppendEntries stream call carrying `m` (a forger's append, sent as any peer would), resolved when the call ends either way. */
export function sendAppend(c: RaftServiceClient, cluster: string, m: Message & { type: 'append' }): Promise<void> {
  const md = new grpc.Metadata();
  md.set(CLUSTER_ID_METADATA_KEY, cluster);
  return new Promise((resolve) => {
    const call = c.appendEntries(md, { deadline: Date.now() + 2_000 });
    call.on('data', () => undefined);
    call.on('error', () => resolve());
    call.on('end', () => resolve());
    call.write(appendRequestToProto(m));
    call.end();
  });
}

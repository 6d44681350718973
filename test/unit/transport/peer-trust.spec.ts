/**
 * The peer plane as an outsider meets it: a 3-node cluster of real Nodes with
 * mutual TLS on RaftService and PeerGuard (cluster id, certificate identity,
 * membership), attacked over real gRPC connections. Every attack must be
 * refused and leave every node's term, leader and log as they were.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PEER_CONNECTION_LIMITS, bindApiServer, type ApiServer } from '../../../src/api/server.js';
import { RaftServiceClient, type FetchStateImageResponse } from '../../../src/gen/snapcoord/v1/raft.js';
import { Node } from '../../../src/node/node.js';
import type { Membership, Message } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RocksStorage } from '../../../src/storage/rocks-storage.js';
import { STATE_RECORD_FORMAT, type KeyValue } from '../../../src/storage/types.js';
import { until } from '../../harness/until.js';
import { caFiles, channelCredentialsFromFiles, memberIdOf, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { appendRequestToProto, getMembershipRequestToProto, proposeRequestToProto, stageArchiveRequestToProto, timeoutNowToProto, voteRequestToProto } from '../../../src/transport/codec.js';
import { GrpcTransport } from '../../../src/transport/grpc-transport.js';
import { APPEND_STREAMS_PER_MEMBER_MAX } from '../../../src/transport/raft-service.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { encodeOpsRecord } from '../../../src/fsm/ops-record.js';
import { encodeRestoreCommand } from '../../../src/fsm/restore-command.js';
import { SCHEDULE_RECORD_PREFIX } from '../../../src/ops/schedule.js';
import { CLUSTER_ID_METADATA_KEY, peerDial, type PeerCall, type RefusalReason } from '../../../src/transport/peer-guard.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';

const CLUSTER = 'trust-test';
const IDS = ['n1', 'n2', 'n3'];

interface Member {
  readonly id: string;
  readonly api: ApiServer;
  readonly node: Node;
  readonly storage: MemoryStorage;
}

function identityOf(call: PeerCall): string | null {
  return memberIdOf((call as unknown as grpc.ServerUnaryCall<unknown, unknown>).getAuthContext().sslPeerCertificate);
}

describe('peer plane: mutual TLS and PeerGuard against outsiders (real nodes, real connections)', function () {
  this.timeout(60_000);
  let dir: string;
  let evilDir: string;
  let members: Member[] = [];
  const refusals: RefusalReason[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-peer-trust-'));
    evilDir = join(dir, 'evil');
    await writeCa(dir);
    for (const id of [...IDS, 'n9']) await writeNodeCert(dir, id, { ips: ['127.0.0.1'] });
    await writeCa(evilDir);
    // Another CA's certificates for every member (a test may pick whichever is not the leader).
    for (const id of IDS) await writeNodeCert(evilDir, id, { ips: ['127.0.0.1'] });
    const ca = caFiles(dir).caFile;
    const apis: ApiServer[] = [];
    for (const id of IDS) {
      const f = nodeCertFiles(dir, id);
      apis.push(
        await bindApiServer({
          bindAddress: '127.0.0.1:0',
          peerBindAddress: '127.0.0.1:0',
          peerCredentials: serverCredentialsFromFiles({ certFile: f.certFile, keyFile: f.keyFile, caFile: ca, requireClientCert: true }),
        }),
      );
    }
    const membership: Membership = { voters: IDS, learners: [], addresses: Object.fromEntries(IDS.map((id, i) => [id, (apis[i] as ApiServer).peerAddress])) };
    for (const [i, id] of IDS.entries()) {
      const api = apis[i] as ApiServer;
      const f = nodeCertFiles(dir, id);
      const ref: { node: Node | null } = { node: null };
      const transport = new GrpcTransport({
        selfId: id,
        onMessage: (m) => ref.node?.receive(m),
        dial: peerDial(CLUSTER, api.address, channelCredentialsFromFiles({ caFile: ca, certFile: f.certFile, keyFile: f.keyFile })),
      });
      // Long election timeouts (0.5-1 s): a busy test runner must not make a real election that would look like an attack's effect.
      const storage = await MemoryStorage.open(new MemoryDataDir(id));
      const node = await Node.start({
        clock: systemClock,
        rng: cryptoRng,
        id,
        storage,
        transport,
        initialMembership: membership,
        timings: { electionTimeoutTicks: 50, heartbeatIntervalTicks: 5 },
      });
      ref.node = node;
      api.serve({ node, clusterId: CLUSTER, identityOf, onPeerRefused: (r) => refusals.push(r) });
      members.push({ id, api, node, storage });
    }
  });

  after(async () => {
    await Promise.all(members.map((m) => m.api.close(200)));
    await Promise.all(members.map((m) => m.node.stop()));
    members = [];
    await rm(dir, { recursive: true, force: true });
  });

  async function stableLeader(): Promise<Member> {
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      const leaders = new Set(members.map((m) => m.node.status().leader));
      const [only] = [...leaders];
      const leader = members.find((m) => m.id === only);
      if (leaders.size === 1 && leader !== undefined && leader.node.status().role === 'leader') {
        // one committed entry of the leader's term, so every log is settled
        if (members.every((m) => m.node.status().commit === leader.node.status().lastIndex)) return leader;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('no stable leader');
  }

  function picture(): string {
    return JSON.stringify(members.map((m) => ({ id: m.id, term: m.node.status().term, leader: m.node.status().leader, last: m.node.status().lastIndex })));
  }

  /** client: a raw RaftService client holding `certOf`'s certificate (from `certDir`), or none. */
  function client(target: string, certOf: string | null, certDir = dir): RaftServiceClient {
    const ca = caFiles(dir).caFile;
    const creds =
      certOf === null
        ? grpc.credentials.createSsl(readFileSync(ca))
        : channelCredentialsFromFiles({ caFile: ca, certFile: nodeCertFiles(certDir, certOf).certFile, keyFile: nodeCertFiles(certDir, certOf).keyFile, checkChain: false });
    return new RaftServiceClient(target, creds, { 'grpc.use_local_subchannel_pool': 1 });
  }

  function md(cluster = CLUSTER): grpc.Metadata {
    const m = new grpc.Metadata();
    m.set(CLUSTER_ID_METADATA_KEY, cluster);
    return m;
  }

  function vote(c: RaftServiceClient, m: Parameters<typeof voteRequestToProto>[0], meta = md()): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => {
      c.requestVote(voteRequestToProto(m), meta, { deadline: Date.now() + 3_000 }, (err) => resolve(err));
    });
  }

  function timeoutNow(c: RaftServiceClient, m: Parameters<typeof timeoutNowToProto>[0], meta = md()): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => {
      c.timeoutNow(timeoutNowToProto(m), meta, { deadline: Date.now() + 3_000 }, (err) => resolve(err));
    });
  }

  function append(c: RaftServiceClient, m: Message & { type: 'append' }, meta = md()): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => {
      const call = c.appendEntries(meta, { deadline: Date.now() + 3_000 });
      call.on('data', () => undefined);
      call.on('error', (err: grpc.ServiceError) => resolve(err));
      call.on('end', () => resolve(null));
      call.write(appendRequestToProto(m));
      call.end();
    });
  }

  function getMembership(c: RaftServiceClient, from: string, to: string, meta = md()): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => {
      c.getMembership(getMembershipRequestToProto({ from, to }), meta, { deadline: Date.now() + 3_000 }, (err) => resolve(err));
    });
  }

  const bigTerm = 1_000_000;

  it('a member certificate on the right cluster is accepted (the control: the attack clients do reach the guard)', async () => {
    const leader = await stableLeader();
    const follower = members.find((m) => m.id !== leader.id) as Member;
    const c = client(follower.api.peerAddress, leader.id);
    try {
      // A stale-term vote from the real leader's identity: admitted, answered (not granted), changes nothing.
      const before = picture();
      const err = await vote(c, { type: 'vote', from: leader.id, to: follower.id, term: 0, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
      assert.equal(err, null);
      assert.equal(picture(), before);
    } finally {
      c.close();
    }
  });

  it('no certificate, or one from another CA: refused at the TLS handshake', async () => {
    const leader = await stableLeader();
    const before = picture();
    for (const c of [client(leader.api.peerAddress, null), client(leader.api.peerAddress, 'n1', evilDir)]) {
      try {
        const err = await vote(c, { type: 'vote', from: 'n2', to: leader.id, term: bigTerm, preVote: false, lastLogIndex: 1e9, lastLogTerm: bigTerm, transfer: true });
        assert.ok(err !== null, 'the call must fail');
        assert.equal(err.code, grpc.status.UNAVAILABLE, err.message);
      } finally {
        c.close();
      }
    }
    assert.equal(picture(), before);
  });

  it('a valid certificate of a non-member (n9): vote flood, fake TimeoutNow and fake appends are refused unvouched (no voter names n9), none reaches the Raft core (no term, leader or log moves); anything else it asks is refused', async () => {
    // The peer plane takes Raft messages from outside a member's configuration (peer-guard.ts, scope 'message'), since
    // the sender may be the leader, added in entries the member lacks, only once a voter of the member's configuration
    // vouches for it (src/node/vouches.ts): no voter's configuration names n9, so none does. Before, they reached the
    // core, which took a claim of n9 after an election timeout without a leader (and a failed campaign of its own).
    const leader = await stableLeader();
    const followers = members.filter((m) => m.id !== leader.id);
    const before = picture();
    const n0 = refusals.length;
    const clients = members.map((m) => ({ m, c: client(m.api.peerAddress, 'n9') }));
    try {
      const errs: (grpc.ServiceError | null)[] = [];
      for (let i = 0; i < 50; i++) {
        for (const { m, c } of clients) {
          errs.push(await vote(c, { type: 'vote', from: 'n9', to: m.id, term: bigTerm + i, preVote: false, lastLogIndex: 1e9, lastLogTerm: bigTerm, transfer: true }));
        }
      }
      for (const { m, c } of clients.filter((x) => x.m !== leader)) {
        errs.push(await timeoutNow(c, { type: 'timeoutNow', from: 'n9', to: m.id, term: bigTerm }));
        errs.push(
          await append(c, {
            type: 'append',
            from: 'n9',
            to: m.id,
            term: bigTerm,
            prevLogIndex: 0,
            prevLogTerm: 0,
            commit: 1,
            entries: [{ index: 1, term: bigTerm, type: 'normal', data: new Uint8Array([1, 2, 3]) }],
          }),
        );
      }
      for (const e of errs) {
        assert.ok(e !== null, 'refused');
        assert.equal(e.code, grpc.status.PERMISSION_DENIED, e.message);
        assert.match(e.details, /no voter of it has vouched for n9/);
      }
      // It does not learn the configuration (the members' ids and peer addresses).
      for (const { m, c } of clients) {
        const e = await getMembership(c, 'n9', m.id);
        assert.ok(e !== null);
        assert.equal(e.code, grpc.status.PERMISSION_DENIED, e.message);
        assert.match(e.details, /n9 is not a member/);
      }
      assert.ok(followers.length === 2);
    } finally {
      for (const { c } of clients) c.close();
    }
    assert.deepEqual(refusals.slice(n0), [...Array(154).fill('unvouched'), ...clients.map(() => 'not_member')], 'each Raft message refused unvouched, then the membership questions');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(picture(), before);
  });

  it("a member's certificate cannot speak as another member: n2's certificate claiming from n1 is refused", async () => {
    const leader = await stableLeader();
    const target = members.find((m) => m.id !== leader.id && m.id !== 'n2') ?? (members.find((m) => m.id === 'n3') as Member);
    const claimed = leader.id === 'n2' ? 'n1' : leader.id;
    const before = picture();
    const c = client(target.api.peerAddress, 'n2');
    try {
      const e1 = await timeoutNow(c, { type: 'timeoutNow', from: claimed, to: target.id, term: leader.node.status().term });
      const e2 = await append(c, {
        type: 'append',
        from: claimed,
        to: target.id,
        term: bigTerm,
        prevLogIndex: leader.node.status().lastIndex,
        prevLogTerm: leader.node.status().term,
        commit: 0,
        entries: [],
      });
      for (const e of [e1, e2]) {
        assert.ok(e !== null);
        assert.equal(e.code, grpc.status.PERMISSION_DENIED);
        assert.match(e.details, /certificate of n2/);
      }
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(picture(), before);
  });

  it('a wrong or missing cluster id is refused and counted', async () => {
    const leader = await stableLeader();
    const follower = members.find((m) => m.id !== leader.id) as Member;
    const before = picture();
    const n0 = refusals.filter((r) => r === 'cluster_id').length;
    const c = client(follower.api.peerAddress, leader.id);
    try {
      const m: Parameters<typeof voteRequestToProto>[0] = { type: 'vote', from: leader.id, to: follower.id, term: bigTerm, preVote: false, lastLogIndex: 1e9, lastLogTerm: bigTerm, transfer: true };
      for (const meta of [md('another-cluster'), new grpc.Metadata()]) {
        const e = await vote(c, m, meta);
        assert.ok(e !== null);
        assert.equal(e.code, grpc.status.PERMISSION_DENIED);
        assert.match(e.details, /cluster id/);
      }
    } finally {
      c.close();
    }
    assert.equal(refusals.filter((r) => r === 'cluster_id').length - n0, 2);
    assert.equal(picture(), before);
  });

  /** silentStream: an AppendEntries stream opened with `meta` that sends nothing; resolves with how it ended (null: still open at the deadline). */
  function silentStream(c: RaftServiceClient, meta: grpc.Metadata): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => {
      const call = c.appendEntries(meta, { deadline: Date.now() + 3_000 });
      call.on('data', () => undefined);
      call.on('error', (err: grpc.ServiceError) => resolve(err.code === grpc.status.DEADLINE_EXCEEDED ? null : err));
      call.on('end', () => resolve(null));
    });
  }

  it('a caller who will be refused holds nothing: a non-member certificate\'s call other than a Raft message, or a wrong cluster id, is refused when the call opens, before any message is read', async () => {
    const leader = await stableLeader();
    const follower = members.find((m) => m.id !== leader.id) as Member;
    const n0 = refusals.length;
    const outsider = client(follower.api.peerAddress, 'n9');
    const member = client(follower.api.peerAddress, leader.id);
    try {
      // Streams that never send a message: before, each was held open (a slot, and up to 64 MiB read per message once sent).
      // A non-member's append stream is a Raft message's (held, as a member's, APPEND_STREAMS_PER_MEMBER_MAX per
      // certificate); its membership question is not.
      const e1 = await getMembership(outsider, 'n9', follower.id);
      const e2 = await silentStream(member, md('another-cluster'));
      assert.ok(e1 !== null, 'the non-member\'s call must be refused');
      assert.equal(e1.code, grpc.status.PERMISSION_DENIED, e1.message);
      assert.match(e1.details, /n9 is not a member/);
      assert.ok(e2 !== null, 'a silent stream of another cluster must be refused, not held open');
      assert.equal(e2.code, grpc.status.PERMISSION_DENIED, e2.message);
      assert.match(e2.details, /cluster id/);
    } finally {
      outsider.close();
      member.close();
    }
    assert.deepEqual(refusals.slice(n0), ['not_member', 'cluster_id']);
  });

  it("a member's term far in the future (2^53-1: no term after it) is refused: it would stop every election for good", async () => {
    // One message of any member (a learner's too) moved the receiver's term to 2^53-1, saved: its next campaign is
    // at 2^53, which no codec may send, and every member it reached could never be elected, nor elect, again.
    const leader = await stableLeader();
    const [liar, target] = members.filter((m) => m.id !== leader.id) as [Member, Member];
    const before = picture();
    const c = client(target.api.peerAddress, liar.id);
    const huge = Number.MAX_SAFE_INTEGER;
    try {
      const lastLogIndex = leader.node.status().lastIndex;
      const errs = [
        await timeoutNow(c, { type: 'timeoutNow', from: liar.id, to: target.id, term: huge }),
        await vote(c, { type: 'vote', from: liar.id, to: target.id, term: huge, preVote: false, lastLogIndex, lastLogTerm: leader.node.status().term, transfer: true }),
        await append(c, { type: 'append', from: liar.id, to: target.id, term: huge, prevLogIndex: 0, prevLogTerm: 0, commit: 0, entries: [] }),
      ];
      for (const e of errs) {
        assert.ok(e !== null, 'refused');
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT, e.message);
        assert.match(e.details, /term 9007199254740991 is more than \d+ ahead of/);
      }
    } finally {
      c.close();
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(picture(), before);
  });

  it('a member holds at most APPEND_STREAMS_PER_MEMBER_MAX append streams: opening more ends its oldest, not the others\' (before, 20,000 silent streams of one certificate were all held)', async () => {
    const leader = await stableLeader();
    const [member, target] = members.filter((m) => m.id !== leader.id) as [Member, Member];
    const c = client(target.api.peerAddress, member.id);
    const extra = 8;
    try {
      const ended: (grpc.ServiceError | null)[] = [];
      const streams: Promise<void>[] = [];
      for (let i = 0; i < APPEND_STREAMS_PER_MEMBER_MAX + extra; i++) {
        streams.push(silentStream(c, md()).then((e) => void ended.push(e)));
        await new Promise((r) => setTimeout(r, 20)); // opened in this order
      }
      await Promise.all(streams);
      const exhausted = ended.filter((e) => e !== null && e.code === grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(exhausted.length, extra, `ended: ${JSON.stringify(ended.map((e) => e?.code ?? 'held'))}`);
      assert.match(exhausted[0]?.details ?? '', new RegExp(`${member.id} holds more than ${APPEND_STREAMS_PER_MEMBER_MAX} append streams`));
      assert.equal(ended.filter((e) => e === null).length, APPEND_STREAMS_PER_MEMBER_MAX, 'the newest are held');
    } finally {
      c.close();
    }
    // The leader's own stream to the target is another member's: it goes on.
    const last = leader.node.status().lastIndex;
    await leader.node.propose({ op: 'put', key: new TextEncoder().encode('k/streams'), value: new TextEncoder().encode('v') });
    await until('the target to commit the write', 5_000, () => (target.node.status().commit > last ? true : undefined));
  });

  it("a member's Propose carries client writes only: an ops record (the snapshot schedule's last run), a restore entry or bytes that are no KV command are refused, nothing appended", async () => {
    // A follower forwards its clients' KV commands only (Node.propose). The leader appended whatever a Propose
    // carried: any member (a learner's certificate too) could set the schedule's last run to the year 3000 (no
    // scheduled snapshot ever again), or append a restore entry, which replaces the whole state on every node.
    const leader = await stableLeader();
    const member = members.find((m) => m.id !== leader.id) as Member;
    const c = client(leader.api.peerAddress, member.id);
    const record = `${SCHEDULE_RECORD_PREFIX}db`;
    const forged = [
      encodeOpsRecord(record, new TextEncoder().encode(JSON.stringify({ lastRunAtMs: 32503680000000, nodeId: member.id }))),
      encodeRestoreCommand({ digest: 'a'.repeat(64), sizeBytes: 1024, index: 1, term: 1 }),
      new Uint8Array([0xee, 1, 2, 3]),
    ];
    const last = leader.node.status().lastIndex;
    try {
      for (const data of forged) {
        const put = encodeCommand({ op: 'put', key: new TextEncoder().encode('k/forwarded'), value: new TextEncoder().encode('v') });
        const e = await new Promise<grpc.ServiceError | null>((resolve) => {
          c.propose(proposeRequestToProto({ from: member.id, to: leader.id, term: leader.node.status().term, data: [put, data] }), md(), { deadline: Date.now() + 3_000 }, (err) => resolve(err));
        });
        assert.ok(e !== null, 'refused');
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT, e.message);
        assert.match(e.details, /proposal 1 .*is not a KV command/);
      }
    } finally {
      c.close();
    }
    assert.equal(leader.node.status().lastIndex, last, 'nothing appended, not even the good write before it');
    assert.equal(await leader.node.opsRecord(record), undefined);
  });

  it("a member claiming to lead the current term is not taken by a follower that knows its leader: it would be sent that follower's forwarded writes and calls", async () => {
    // Before, a heartbeat of the current term from any member (a learner's certificate too) made the follower take
    // it as its leader, silently (no term moved): its clients' writes went to it (Propose) and their calls, with
    // their API keys, to its client address, until the real leader's next heartbeat.
    const leader = await stableLeader();
    const [liar, target] = members.filter((m) => m.id !== leader.id) as [Member, Member];
    const before = picture();
    const c = client(target.api.peerAddress, liar.id);
    try {
      const term = leader.node.status().term;
      const last = leader.node.status().lastIndex;
      await append(c, { type: 'heartbeat', from: liar.id, to: target.id, term, commit: 0, readSeq: 0 } as never);
      assert.equal(target.node.status().leader, leader.id, 'the follower still follows its leader');
      await append(c, { type: 'append', from: liar.id, to: target.id, term, prevLogIndex: last, prevLogTerm: term, commit: last, entries: [] });
      assert.equal(target.node.status().leader, leader.id);
    } finally {
      c.close();
    }
    assert.equal(picture(), before);
  });

  it("a member that is not the leader cannot make a follower start an election (TimeoutNow) or stage an archive (StageArchive) (review11)", async () => {
    // TimeoutNow was taken from any member: its election is a transfer, which skips the voters' leader-lease check, so
    // any member's certificate (a learner's too) deposed a healthy leader. StageArchive was taken from any member too:
    // every node fetched and kept what it named (up to 16 archives, down to the disk's reserve).
    const leader = await stableLeader();
    const [other, target] = members.filter((m) => m.id !== leader.id) as [Member, Member];
    const before = picture();
    const c = client(target.api.peerAddress, other.id);
    try {
      const term = leader.node.status().term;
      for (const t of [term, term + 1]) assert.equal(await timeoutNow(c, { type: 'timeoutNow', from: other.id, to: target.id, term: t }), null);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(picture(), before, 'no election, no term moved');
      const archive = { index: 1, term: 1, sizeBytes: 1024, digest: 'a'.repeat(64) };
      const stage = (from: string, t: number): Promise<grpc.ServiceError | null> =>
        new Promise((resolve) => {
          c.stageArchive(stageArchiveRequestToProto({ from, to: target.id, term: t, archive }), md(), { deadline: Date.now() + 3_000 }, (err) => resolve(err));
        });
      const denied = await stage(other.id, term);
      assert.equal(denied?.code, grpc.status.PERMISSION_DENIED, denied?.message);
      assert.match(denied?.details ?? '', new RegExp(`only the leader it follows may ask, and the leader of term ${term} is ${leader.id}`));
      const ahead = await stage(other.id, term + 1);
      assert.equal(ahead?.code, grpc.status.FAILED_PRECONDITION, ahead?.message);
      assert.match(ahead?.details ?? '', new RegExp(`its term is ${term}`));
    } finally {
      c.close();
    }
    // The control: the leader's own request passes the check (these members keep no snapshots: UNIMPLEMENTED).
    const lc = client(target.api.peerAddress, leader.id);
    try {
      const e = await new Promise<grpc.ServiceError | null>((resolve) => {
        const archive = { index: 1, term: 1, sizeBytes: 1024, digest: 'a'.repeat(64) };
        lc.stageArchive(stageArchiveRequestToProto({ from: leader.id, to: target.id, term: leader.node.status().term, archive }), md(), { deadline: Date.now() + 3_000 }, (err) => resolve(err));
      });
      assert.equal(e?.code, grpc.status.UNIMPLEMENTED, e?.message);
    } finally {
      lc.close();
    }
    assert.equal(picture(), before);
  });

  it("one member's certificate proves at most perOwnerMax of a plane's connections: the rest are the first to go when another member connects (before, it filled the per-host cap and no other member could)", async () => {
    const leader = await stableLeader();
    const [liar, target] = members.filter((m) => m.id !== leader.id) as [Member, Member];
    const own = { 'grpc.use_local_subchannel_pool': 1 };
    const ca = caFiles(dir).caFile;
    const creds = (id: string): grpc.ChannelCredentials => channelCredentialsFromFiles({ caFile: ca, certFile: nodeCertFiles(dir, id).certFile, keyFile: nodeCertFiles(dir, id).keyFile, checkChain: false });
    const ask = (c: RaftServiceClient, from: string): Promise<grpc.ServiceError | null> =>
      new Promise((resolve) => c.getMembership(getMembershipRequestToProto({ from, to: target.id }), md(), { deadline: Date.now() + 5_000 }, (err) => resolve(err)));
    // Every connection of this test comes from 127.0.0.1, as the members' own do: the per-host cap is the plane's to fill.
    const liars = Array.from({ length: PEER_CONNECTION_LIMITS.perHostMax }, () => new RaftServiceClient(target.api.peerAddress, creds(liar.id), own));
    const other = new RaftServiceClient(target.api.peerAddress, creds(leader.id), own);
    try {
      const answers = await Promise.all(liars.map((c) => ask(c, liar.id)));
      assert.ok(answers.filter((e) => e === null).length > (PEER_CONNECTION_LIMITS.perOwnerMax ?? 0), 'the liar holds more connections than it may prove');
      const e = await ask(other, leader.id);
      assert.equal(e, null, `another member connects and is answered (${e?.message ?? ''})`);
    } finally {
      for (const c of liars) c.close();
      other.close();
    }
  });

  it('the cluster still works: members keep replicating through all of it', async () => {
    const leader = await stableLeader();
    const last = leader.node.status().lastIndex;
    await leader.node.propose({ op: 'put', key: new TextEncoder().encode('k'), value: new TextEncoder().encode('v') });
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && !members.every((m) => m.node.status().commit > last)) await new Promise((r) => setTimeout(r, 20));
    assert.ok(members.every((m) => m.node.status().commit > last), picture());
  });
  describe('FetchStateImage (the state image of a restore: the whole state, to members only)', function () {
    const IMAGE_INDEX = 7;
    let exporter: RocksStorage;

    before(async function () {
      this.timeout(120_000);
      // A real exported image (~48 MiB of incompressible values: more than the HTTP/2 windows and the stream's
      // buffers hold, so a caller that reads nothing keeps its stream open), served by every member.
      exporter = await RocksStorage.open(join(dir, 'exporter'));
      const batches = function* (): Generator<KeyValue[]> {
        for (let b = 0; b < 48; b++) yield Array.from({ length: 1024 }, (_, i) => ({ key: Buffer.from(`k/${b}/${i}`), value: randomBytes(1024) }));
      };
      await exporter.installState(batches(), { appliedIndex: IMAGE_INDEX, membership: { voters: IDS, learners: [], addresses: {} } }, { exportImage: true });
      for (const m of members) Object.defineProperty(m.storage, 'stateImage', { value: (index: number) => exporter.stateImage(index), configurable: true });
    });

    after(async () => {
      await exporter?.close();
    });

    /** fetchImage: a FetchStateImage call read to its end; resolves with the bytes received, or the call's error. */
    function fetchImage(c: RaftServiceClient, from: string, to: string, meta = md(), recordFormat = STATE_RECORD_FORMAT): Promise<{ files: number; bytes: number } | grpc.ServiceError> {
      return new Promise((resolve) => {
        const call = c.fetchStateImage({ from, to, index: BigInt(IMAGE_INDEX), recordFormat }, meta, { deadline: Date.now() + 20_000 });
        let files = 0;
        let bytes = 0;
        call.on('data', (r: FetchStateImageResponse) => {
          files += r.files.length;
          bytes += r.data.length;
        });
        call.on('error', (err: grpc.ServiceError) => resolve(err));
        call.on('end', () => resolve({ files, bytes }));
      });
    }

    /** holdImage: a FetchStateImage call that reads nothing (a stalled or malicious reader); `ended` resolves with its error, if any. */
    function holdImage(c: RaftServiceClient, from: string, to: string): { call: grpc.ClientReadableStream<FetchStateImageResponse>; ended: Promise<grpc.ServiceError | null> } {
      const call = c.fetchStateImage({ from, to, index: BigInt(IMAGE_INDEX), recordFormat: STATE_RECORD_FORMAT }, md());
      const ended = new Promise<grpc.ServiceError | null>((resolve) => {
        call.on('error', (err: grpc.ServiceError) => resolve(err));
        call.on('close', () => resolve(null));
      });
      return { call, ended };
    }

    const served = (m: Member): number => m.node.snapshotStats.imagesServed;

    it('an outsider (no certificate, another CA, a non-member, a member speaking as another) is refused and nothing is served or counted; a member is served', async () => {
      const leader = await stableLeader();
      const [a, b] = members.filter((m) => m !== leader) as [Member, Member];
      const n0 = served(leader);
      const attempts: [string, RaftServiceClient, string, number, RegExp][] = [
        ['no certificate', client(leader.api.peerAddress, null), a.id, grpc.status.UNAVAILABLE, /./],
        ['another CA', client(leader.api.peerAddress, a.id, evilDir), a.id, grpc.status.UNAVAILABLE, /./],
        ['a non-member', client(leader.api.peerAddress, 'n9'), 'n9', grpc.status.PERMISSION_DENIED, /n9 is not a member/],
        ['a member as another', client(leader.api.peerAddress, a.id), b.id, grpc.status.PERMISSION_DENIED, new RegExp(`certificate of ${a.id}`)],
      ];
      try {
        for (const [what, c, from, code, details] of attempts) {
          const r = await fetchImage(c, from, leader.id);
          assert.ok(r instanceof Error, `${what}: must be refused, was served ${JSON.stringify(r)}`);
          assert.equal(r.code, code, `${what}: ${r.message}`);
          assert.match(r.details, details, what);
        }
      } finally {
        for (const [, c] of attempts) c.close();
      }
      assert.equal(served(leader), n0, 'nothing served or counted');
      const c = client(leader.api.peerAddress, a.id);
      try {
        // A member of a build before the record checksums (record_format 0) would misread the image's records: refused.
        const old = await fetchImage(c, a.id, leader.id, md(), 0);
        assert.ok(old instanceof Error, 'a member reading another record format must be refused');
        assert.equal(old.code, grpc.status.FAILED_PRECONDITION, old.message);
        assert.match(old.details, new RegExp(`${a.id} reads state records of format 0; this node's state images hold format ${STATE_RECORD_FORMAT}`));
        assert.equal(served(leader), n0, 'nothing served or counted');
        // The control: the same call from a member with its own certificate is served the whole image.
        const r = await fetchImage(c, a.id, leader.id);
        assert.ok(!(r instanceof Error), `a member must be served: ${r instanceof Error ? r.message : ''}`);
        const held = exporter.stateImage(IMAGE_INDEX);
        assert.ok(held !== null);
        held.release();
        assert.equal(r.files, held.image.files.length);
        assert.equal(r.bytes, held.image.files.reduce((n, f) => n + f.sizeBytes, 0));
      } finally {
        c.close();
      }
      assert.equal(served(leader), n0 + 1);
    });

    it('one member holding streams it never reads takes one transfer, not all of them: another member is still served', async () => {
      const leader = await stableLeader();
      const [a, b] = members.filter((m) => m !== leader) as [Member, Member];
      const n0 = served(leader);
      const ca = client(leader.api.peerAddress, a.id);
      const cb = client(leader.api.peerAddress, b.id);
      // As many streams as the node serves at once (IMAGE_TRANSFERS_MAX, 4), each on its own connection, none read.
      const extra = [0, 1, 2].map(() => client(leader.api.peerAddress, a.id));
      const first = holdImage(ca, a.id, leader.id);
      const held = [first];
      try {
        await until('the first held stream to be served', 10_000, () => (served(leader) > n0 ? true : undefined));
        const more = extra.map((c) => holdImage(c, a.id, leader.id));
        held.push(...more);
        const ends: (grpc.ServiceError | null | 'open')[] = more.map(() => 'open');
        more.forEach((h, i) => void h.ended.then((e) => (ends[i] = e)));
        // Each further stream is either refused at once or served (and then held, unread).
        await until('the further streams to be refused or served', 10_000, () => (ends.filter((e) => e !== 'open').length + served(leader) - n0 - 1 === more.length ? true : undefined));
        assert.equal(served(leader), n0 + 1, `${a.id}'s further streams must not be served while its first is open`);
        for (const e of ends) {
          assert.ok(e !== null && e !== 'open');
          assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED, e.message);
        }
        const r = await fetchImage(cb, b.id, leader.id);
        assert.ok(!(r instanceof Error), `${b.id} must be served while ${a.id} holds a stream: ${r instanceof Error ? r.message : ''}`);
        assert.equal(served(leader), n0 + 2);
        first.call.cancel();
        await first.ended;
        // Once its stream ended the member is served again.
        // Once its stream ended (the server sees the cancel a moment later) the member is served again.
        await until(`${a.id} to be served again once its held stream ended`, 10_000, async () => {
          const again = await fetchImage(ca, a.id, leader.id);
          return again instanceof Error ? undefined : true;
        });
      } finally {
        for (const h of held) h.call.cancel();
        for (const c of [ca, cb, ...extra]) c.close();
      }
    });

    it('a removed member is refused, its Raft messages too once a node applied its removal (as etcd refuses a removed member\'s)', async () => {
      const leader = await stableLeader();
      const removed = members.find((m) => m !== leader) as Member;
      await leader.node.changeMembership({ op: 'removeNode', nodeId: removed.id });
      const n0 = served(leader);
      const c = client(leader.api.peerAddress, removed.id);
      try {
        const r = await fetchImage(c, removed.id, leader.id);
        assert.ok(r instanceof Error, `a removed member must be refused, was served ${JSON.stringify(r)}`);
        assert.equal(r.code, grpc.status.PERMISSION_DENIED, r.message);
        assert.match(r.details, new RegExp(`${removed.id} is not a member`));
        // A sender outside the configuration may send Raft messages (it may lead in entries the receiver lacks); one
        // the receiver saw removed may not: its claims are refused at the door, not left to the core's rules.
        const remaining = (): string => JSON.stringify(members.filter((m) => m !== removed).map((m) => ({ id: m.id, term: m.node.status().term, leader: m.node.status().leader })));
        const before = remaining();
        const term = leader.node.status().term;
        const errs = [
          await vote(c, { type: 'vote', from: removed.id, to: leader.id, term: term + 1, preVote: true, lastLogIndex: 1e9, lastLogTerm: term + 1, transfer: false }),
          await timeoutNow(c, { type: 'timeoutNow', from: removed.id, to: leader.id, term }),
          await append(c, { type: 'append', from: removed.id, to: leader.id, term: term + 1, prevLogIndex: 0, prevLogTerm: 0, commit: 0, entries: [] }),
        ];
        for (const e of errs) {
          assert.ok(e !== null, 'refused');
          assert.equal(e.code, grpc.status.PERMISSION_DENIED, e.message);
          assert.match(e.details, new RegExp(`${removed.id} was removed from this cluster`));
        }
        assert.equal(remaining(), before);
      } finally {
        c.close();
      }
      assert.equal(served(leader), n0);
    });
  });
});

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import * as grpc from '@grpc/grpc-js';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';
import { APPEND_ENTRIES_MAX, type AppendRequest, type Message } from '../../../src/raft/types.js';
import { APPEND_ENTRIES_READ_MAX, appendHeaderChecksum, entryToProto } from '../../../src/transport/codec.js';
import { RAFT_SERVICE_DEFINITION } from '../../../src/transport/fetch-serializer.js';
import { GrpcTransport, type GrpcTransportOptions } from '../../../src/transport/grpc-transport.js';
import { MessageFaults, type MessageFaultRates } from '../../../src/transport/message-faults.js';
import { createRaftService, statusError, type RaftServiceOptions } from '../../../src/transport/raft-service.js';
import type { RaftRequestHandler, SnapshotChunk, TransportLogger } from '../../../src/transport/transport.js';

// ---------------------------------------------------------------- helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface TestServer {
  readonly server: grpc.Server;
  readonly port: number;
  readonly address: string;
  stop(): void;
}

async function startServer(
  handler: RaftRequestHandler,
  opts: RaftServiceOptions & { port?: number; interceptors?: grpc.ServerInterceptor[] } = {},
): Promise<TestServer> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20, interceptors: opts.interceptors ?? [] });
  server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler, { selfId: 'n2', ...opts }));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port, address: `127.0.0.1:${port}`, stop: () => server.forceShutdown() };
}

/** FakeHandler answers like a follower n2 would, with a random delay so that answers resolve out of order. */
class FakeHandler implements RaftRequestHandler {
  readonly requests: Message[] = [];
  readonly reports: Message[] = [];
  /** override: return a value to answer a request differently. */
  override: ((m: Message) => Promise<Message[]> | undefined) | null = null;
  /** randomDelayMs: the answers resolve after 0..randomDelayMs ms. */
  randomDelayMs = 3;

  handleRequest(m: Message): Promise<Message[]> {
    this.requests.push(m);
    const o = this.override?.(m);
    if (o !== undefined) return o;
    const hdr = { from: m.to, to: m.from, term: m.term };
    let replies: Message[] = [];
    switch (m.type) {
      case 'append': {
        const last = m.entries[m.entries.length - 1]?.index ?? m.prevLogIndex;
        replies = [{ type: 'appendResp', ...hdr, reject: false, index: last, hintIndex: 0, hintTerm: 0 }];
        break;
      }
      case 'heartbeat':
        replies = [{ type: 'heartbeatResp', ...hdr, readSeq: m.readSeq, installingIndex: 0 }];
        break;
      case 'vote':
        // "No reply" for a stale request: term 1 is ignored.
        replies = m.term === 1 ? [] : [{ type: 'voteResp', ...hdr, preVote: m.preVote, granted: true }];
        break;
      case 'snapshot':
        replies = [{ type: 'snapshotResp', ...hdr, index: m.snapshot.index, reject: false }];
        break;
      case 'readIndex':
        replies = [{ type: 'readIndexResp', ...hdr, context: m.context, index: 33, reject: false }];
        break;
      default:
        replies = [];
    }
    const delay = Math.floor(Math.random() * (this.randomDelayMs + 1));
    return new Promise((r) => setTimeout(() => r(replies), delay));
  }

  handleReport(m: Message): void {
    this.reports.push(m);
  }
}

class CapturingLogger implements TransportLogger {
  readonly lines: { level: string; obj: Record<string, unknown>; msg: string | undefined }[] = [];
  debug(obj: object, msg?: string): void {
    this.lines.push({ level: 'debug', obj: obj as Record<string, unknown>, msg });
  }
  warn(obj: object, msg?: string): void {
    this.lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg });
  }
}

const append = (index: number, term = 2): AppendRequest => ({
  type: 'append',
  from: 'n1',
  to: 'n2',
  term,
  prevLogIndex: index - 1,
  prevLogTerm: index > 1 ? term : 0,
  commit: 0,
  entries: [{ index, term, type: 'normal', data: new TextEncoder().encode(`entry-${index}`) }],
});

const heartbeat = (readSeq: number): Message => ({ type: 'heartbeat', from: 'n1', to: 'n2', term: 2, commit: 5, readSeq });

/** freePort returns a port on which nothing listens (bound then released). */
async function freePort(): Promise<number> {
  const s = await startServer(new FakeHandler());
  s.stop();
  return s.port;
}

// ---------------------------------------------------------------- tests

describe('GrpcTransport + RaftService over a real gRPC server', function () {
  this.timeout(20_000);

  let handler: FakeHandler;
  let server: TestServer | null;
  let transport: GrpcTransport | null;
  let replies: Message[];
  let logger: CapturingLogger;

  function makeTransport(extra: Partial<GrpcTransportOptions> = {}): GrpcTransport {
    const t = new GrpcTransport({ selfId: 'n1', onMessage: (m) => replies.push(m), logger, backoff: { initialMs: 20, maxMs: 200 }, ...extra });
    transport = t;
    return t;
  }

  /** heartbeatUntilAnswered sends heartbeats (readSeq 2, 3, ...) until one is answered, for at most 10 s: a stream reopened. */
  function heartbeatUntilAnswered(t: GrpcTransport, what: string): Promise<void> {
    let seq = 2;
    return waitFor(
      what,
      () => {
        if (replies.some((m) => m.type === 'heartbeatResp' && m.readSeq > 1)) return true;
        t.send(heartbeat(seq++));
        return false;
      },
      10_000,
    );
  }

  beforeEach(async () => {
    handler = new FakeHandler();
    replies = [];
    logger = new CapturingLogger();
    server = await startServer(handler);
  });

  afterEach(async () => {
    await transport?.close();
    transport = null;
    server?.stop();
    server = null;
  });

  it('pipelines 1000 appends on one stream: handled in order, answered in order', async () => {
    const t = makeTransport();
    t.setPeers({ n1: 'self-is-ignored:1', n2: server!.address });
    for (let i = 1; i <= 1000; i++) t.send(append(i));
    await waitFor('1000 replies', () => replies.length === 1000, 15_000);
    assert.deepEqual(
      handler.requests.map((m) => (m.type === 'append' ? m.entries[0]!.index : -1)),
      Array.from({ length: 1000 }, (_, i) => i + 1),
    );
    assert.deepEqual(
      replies.map((m) => (m.type === 'appendResp' ? m.index : -1)),
      Array.from({ length: 1000 }, (_, i) => i + 1),
    );
    const got = handler.requests[999] as AppendRequest;
    assert.equal(new TextDecoder().decode(got.entries[0]!.data), 'entry-1000');
    assert.equal(replies[0]!.from, 'n2');
    assert.equal(replies[0]!.to, 'n1');
    assert.deepEqual(t.stats(), { sent: 1000, dropped: 0, received: 1000 });
    assert.equal(t.peerInfo('n1'), undefined, 'no link to self');
    assert.equal(t.peerInfo('n2')?.streamOpen, true);
  });

  it('carries the heartbeat flag both ways on the append stream', async () => {
    const t = makeTransport();
    t.setPeers({ n2: server!.address });
    t.send(heartbeat(41));
    t.send(append(1));
    t.send(heartbeat(42));
    await waitFor('3 replies', () => replies.length === 3);
    assert.deepEqual(
      handler.requests.map((m) => m.type),
      ['heartbeat', 'append', 'heartbeat'],
    );
    assert.deepEqual(handler.requests[0], heartbeat(41));
    assert.deepEqual(replies[0], { type: 'heartbeatResp', from: 'n2', to: 'n1', term: 2, readSeq: 41, installingIndex: 0 });
    assert.equal(replies[1]!.type, 'appendResp');
    assert.deepEqual(replies[2], { type: 'heartbeatResp', from: 'n2', to: 'n1', term: 2, readSeq: 42, installingIndex: 0 });
  });

  it('round trips a vote, and delivers nothing when the core had no reply', async () => {
    const t = makeTransport();
    t.setPeers({ n2: server!.address });
    t.send({ type: 'vote', from: 'n1', to: 'n2', term: 1, preVote: false, lastLogIndex: 3, lastLogTerm: 1, transfer: false });
    await waitFor('the stale vote', () => handler.requests.length === 1);
    await waitFor('the call to finish', () => t.peerInfo('n2')!.inflightCalls === 0);
    t.send({ type: 'vote', from: 'n1', to: 'n2', term: 4, preVote: true, lastLogIndex: 3, lastLogTerm: 1, transfer: true });
    await waitFor('a vote reply', () => replies.length === 1);
    await sleep(30);
    assert.deepEqual(replies, [{ type: 'voteResp', from: 'n2', to: 'n1', term: 4, preVote: true, granted: true }]);
    assert.deepEqual(handler.requests[1], { type: 'vote', from: 'n1', to: 'n2', term: 4, preVote: true, lastLogIndex: 3, lastLogTerm: 1, transfer: true });
  });

  it('round trips InstallSnapshot, ReadIndex, TimeoutNow and ReportSnapshot', async () => {
    const t = makeTransport();
    t.setPeers({ n2: server!.address });
    const snapshot = { index: 50, term: 2, membership: { voters: ['n1', 'n2'], learners: [], addresses: { n1: 'a:1', n2: 'b:2' } }, sizeBytes: 1234, digest: 'cd'.repeat(32) };
    t.send({ type: 'snapshot', from: 'n1', to: 'n2', term: 2, snapshot });
    t.send({ type: 'readIndex', from: 'n1', to: 'n2', term: 2, context: 'ctx-9' });
    t.send({ type: 'timeoutNow', from: 'n1', to: 'n2', term: 2 });
    t.send({ type: 'snapshotResp', from: 'n1', to: 'n2', term: 2, index: 50, reject: true });
    await waitFor('2 replies, 3 requests and a report', () => replies.length === 2 && handler.requests.length === 3 && handler.reports.length === 1);
    const byType = new Map(replies.map((m) => [m.type, m]));
    assert.deepEqual(byType.get('snapshotResp'), { type: 'snapshotResp', from: 'n2', to: 'n1', term: 2, index: 50, reject: false });
    assert.deepEqual(byType.get('readIndexResp'), { type: 'readIndexResp', from: 'n2', to: 'n1', term: 2, context: 'ctx-9', index: 33, reject: false });
    assert.deepEqual(handler.requests.find((m) => m.type === 'snapshot'), { type: 'snapshot', from: 'n1', to: 'n2', term: 2, snapshot });
    assert.ok(handler.requests.some((m) => m.type === 'timeoutNow'));
    assert.deepEqual(handler.reports, [{ type: 'snapshotResp', from: 'n1', to: 'n2', term: 2, index: 50, reject: true }]);
  });

  it('a ReadIndex the peer refuses is answered here with its rejection at once, not left to time out', async () => {
    // The leader refuses a member past its share of its read slots (RESOURCE_EXHAUSTED); before, the call's error was
    // only logged and the read waited for its deadline (10 s).
    handler.override = (m) => (m.type === 'readIndex' ? Promise.reject(Object.assign(new Error('busy: n1 has 1024 reads waiting on n2'), { code: grpc.status.RESOURCE_EXHAUSTED })) : undefined);
    const t = makeTransport({ readIndexDeadlineMs: 30_000 });
    t.setPeers({ n2: server!.address });
    t.send({ type: 'readIndex', from: 'n1', to: 'n2', term: 3, context: 'ctx-busy' });
    await waitFor('the rejection', () => replies.length === 1);
    assert.deepEqual(replies, [{ type: 'readIndexResp', from: 'n2', to: 'n1', term: 3, context: 'ctx-busy', index: 0, reject: true }]);
    // Other calls that fail get no made-up answer.
    handler.override = (m) => (m.type === 'vote' ? Promise.reject(Object.assign(new Error('no'), { code: grpc.status.RESOURCE_EXHAUSTED })) : undefined);
    t.send({ type: 'vote', from: 'n1', to: 'n2', term: 4, preVote: false, lastLogIndex: 3, lastLogTerm: 1, transfer: false });
    await waitFor('the vote call to finish', () => handler.requests.length === 2 && t.peerInfo('n2')!.inflightCalls === 0);
    await sleep(30);
    assert.equal(replies.length, 1);
  });

  it('drops reply types, unknown peers and oversized messages without throwing', () => {
    const t = makeTransport({ maxMessageBytes: 1024 });
    t.setPeers({ n2: server!.address });
    t.send({ type: 'voteResp', from: 'n1', to: 'n2', term: 1, preVote: false, granted: true });
    t.send({ type: 'appendResp', from: 'n1', to: 'n2', term: 1, reject: false, index: 1, hintIndex: 0, hintTerm: 0 });
    t.send({ type: 'heartbeatResp', from: 'n1', to: 'n2', term: 1, readSeq: 1, installingIndex: 0 });
    t.send({ type: 'readIndexResp', from: 'n1', to: 'n2', term: 1, context: '', index: 0, reject: true });
    t.send({ ...append(1), to: 'n9' });
    t.send({ ...append(1), entries: [{ index: 1, term: 2, type: 'normal', data: new Uint8Array(4096) }] });
    // A message the codec refuses (negative term) is dropped and logged, not thrown.
    t.send({ ...append(1), term: -1 });
    assert.deepEqual(t.stats(), { sent: 0, dropped: 7, received: 0 });
    assert.ok(logger.lines.some((l) => l.level === 'warn' && /too large/.test(l.msg ?? '')));
    assert.ok(logger.lines.some((l) => l.level === 'warn' && /cannot send/.test(l.msg ?? '')));
  });

  it('drops messages to a peer that is down, without throwing, and backs off', async () => {
    const port = await freePort();
    // The backoff's clock stands still, so the backoff cannot expire between the checks below (a loaded machine).
    const t = makeTransport({ unaryDeadlineMs: 300, nowMs: () => 1_000_000 });
    t.setPeers({ n2: `127.0.0.1:${port}` });
    for (let i = 1; i <= 50; i++) t.send(append(i));
    t.send({ type: 'vote', from: 'n1', to: 'n2', term: 4, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
    await waitFor('the stream to fail', () => t.peerInfo('n2')!.backoffMs > 0);
    await waitFor('the vote call to fail', () => t.peerInfo('n2')!.inflightCalls === 0);
    // While backing off, appends are dropped at once.
    const before = t.stats().dropped;
    t.send(append(51));
    assert.equal(t.stats().dropped, before + 1);
    assert.equal(replies.length, 0);
    assert.ok(logger.lines.some((l) => l.msg === 'transport: append stream closed' && l.obj['code'] === grpc.status.UNAVAILABLE));
  });

  it('reconnects after the server restarts on the same port', async () => {
    const t = makeTransport();
    const address = server!.address;
    const port = server!.port;
    t.setPeers({ n2: address });
    t.send(heartbeat(1));
    await waitFor('the first reply', () => replies.length === 1);

    server!.stop();
    server = null;
    await waitFor('the stream to notice', () => !t.peerInfo('n2')!.streamOpen);
    const handler2 = new FakeHandler();
    server = await startServer(handler2, { port });

    // The leader keeps heartbeating; one of them gets through once the stream reopens.
    await heartbeatUntilAnswered(t, 'a reply from the restarted server');
    assert.ok(handler2.requests.length > 0);
    // The healthy stream resets the backoff and then carries appends in order again.
    t.send(append(1));
    t.send(append(2));
    await waitFor('append replies', () => replies.filter((m) => m.type === 'appendResp').length === 2);
    assert.equal(t.peerInfo('n2')!.backoffMs, 0);
  });

  it('the backoff is timed on the monotonic clock: the wall clock stepped back 1 h while backing off, the stream reopens once the backoff ends', async () => {
    // On the wall clock (its default was Date.now) a step back (NTP, a resumed VM) during a backoff held the stream
    // closed for the step's length: every append and heartbeat to the peer dropped for an hour.
    const clocks = new SteppedClocks().install();
    try {
      const t = makeTransport();
      const port = server!.port;
      t.setPeers({ n2: server!.address });
      t.send(heartbeat(1));
      await waitFor('the first reply', () => replies.length === 1);
      server!.stop();
      server = null;
      await waitFor('the stream to fail', () => t.peerInfo('n2')!.backoffMs > 0);
      clocks.stepWall(-HOUR_MS);
      server = await startServer(new FakeHandler(), { port });
      await heartbeatUntilAnswered(t, 'a reply over a reopened stream');
    } finally {
      clocks.restore();
    }
  });

  it('a server stopping on purpose answers the appends it was sent, then ends the stream UNAVAILABLE "n2 is stopping" and shuts down at once', async () => {
    server!.stop();
    const stopping = new AbortController();
    server = await startServer(handler, { stopping: stopping.signal });
    handler.randomDelayMs = 30;
    const t = makeTransport();
    t.setPeers({ n2: server.address });
    for (let i = 1; i <= 20; i++) t.send(append(i));
    await waitFor('20 appends received', () => handler.requests.length === 20);
    stopping.abort();
    // A graceful shutdown waits for every open stream: it completes only because the append stream ended.
    const srv = server.server;
    await new Promise<void>((resolve, reject) => srv.tryShutdown((err) => (err !== undefined ? reject(err) : resolve())));
    await waitFor('every owed answer', () => replies.length === 20);
    assert.deepEqual(
      replies.map((m) => (m.type === 'appendResp' ? m.index : -1)),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    await waitFor('the stream to close', () => !t.peerInfo('n2')!.streamOpen);
    assert.ok(logger.lines.some((l) => l.msg === 'transport: append stream closed' && l.obj['code'] === grpc.status.UNAVAILABLE && l.obj['err'] === 'n2 is stopping'));
    await t.close();

    // A new stream to a stopping server is refused alike (the server still listening).
    const s2 = await startServer(new FakeHandler(), { stopping: stopping.signal });
    try {
      logger.lines.length = 0;
      const t2 = makeTransport();
      t2.setPeers({ n2: s2.address });
      t2.send(heartbeat(1));
      await waitFor('the refusal', () => logger.lines.some((l) => l.msg === 'transport: append stream closed' && l.obj['err'] === 'n2 is stopping'));
    } finally {
      s2.stop();
    }
  });

  it('setPeers closes the channel of a removed peer and drops what is sent to it', async () => {
    const closed: grpc.Client[] = [];
    const origClose = grpc.Client.prototype.close;
    grpc.Client.prototype.close = function (this: grpc.Client) {
      closed.push(this);
      origClose.call(this);
    };
    try {
      const t = makeTransport();
      t.setPeers({ n2: server!.address, n3: '127.0.0.1:1' });
      t.send(heartbeat(1));
      await waitFor('a reply', () => replies.length === 1);
      assert.equal(t.peerInfo('n2')!.channelOpen, true);
      assert.equal(t.peerInfo('n3')!.channelOpen, false, 'channels are made lazily');

      t.setPeers({ n3: '127.0.0.1:1' });
      assert.equal(t.peerInfo('n2'), undefined);
      assert.equal(closed.length, 1);
      assert.equal(closed[0]!.getChannel().getTarget(), `dns:${server!.address}`);
      assert.equal(closed[0]!.getChannel().getConnectivityState(false), grpc.connectivityState.SHUTDOWN);

      const dropped = t.stats().dropped;
      t.send(heartbeat(2));
      assert.equal(t.stats().dropped, dropped + 1);

      // A moved peer gets a new channel too.
      t.setPeers({ n2: server!.address });
      t.send(heartbeat(3));
      await waitFor('a reply over the new channel', () => replies.length === 2);
    } finally {
      grpc.Client.prototype.close = origClose;
    }
  });

  it('close() cancels calls in flight, and nothing is delivered afterwards', async () => {
    let release: (() => void) | null = null;
    handler.override = (m) =>
      m.type === 'readIndex'
        ? new Promise<Message[]>((r) => {
            release = () => r([{ type: 'readIndexResp', from: 'n2', to: 'n1', term: 2, context: m.context, index: 1, reject: false }]);
          })
        : undefined;
    const t = makeTransport();
    t.setPeers({ n2: server!.address });
    t.send({ type: 'readIndex', from: 'n1', to: 'n2', term: 2, context: 'slow' });
    t.send(heartbeat(1));
    await waitFor('both requests', () => handler.requests.length === 2);
    await t.close();
    await t.close(); // idempotent
    (release as (() => void) | null)?.();
    t.send(heartbeat(2));
    await sleep(50);
    assert.ok(replies.every((m) => m.type === 'heartbeatResp'));
    assert.equal(t.peerInfo('n2'), undefined);
  });

  describe('server side', () => {
    it('cancels an append stream with RESOURCE_EXHAUSTED when too many requests wait', async () => {
      server!.stop();
      handler.override = (m) => (m.type === 'append' ? new Promise<Message[]>(() => undefined) : undefined);
      server = await startServer(handler, { maxPendingAppends: 10 });
      const t = makeTransport();
      t.setPeers({ n2: server.address });
      for (let i = 1; i <= 20; i++) t.send(append(i));
      await waitFor('the stream to be cancelled', () => logger.lines.some((l) => l.obj['code'] === grpc.status.RESOURCE_EXHAUSTED));
      assert.equal(handler.requests.length, 10);
    });

    it('ends the stream with the status of a failing handler, and the transport reopens it', async () => {
      let fail = true;
      handler.override = (m) => {
        if (m.type === 'heartbeat' && fail) {
          fail = false;
          return Promise.reject(statusError(grpc.status.UNAVAILABLE, 'node is stopping'));
        }
        return undefined;
      };
      const t = makeTransport();
      t.setPeers({ n2: server!.address });
      t.send(heartbeat(1));
      await waitFor('the stream to fail', () => logger.lines.some((l) => l.obj['err'] === 'node is stopping'));
      let seq = 2;
      await waitFor('a reply on a new stream', () => {
        if (replies.length > 0) return true;
        t.send(heartbeat(seq++));
        return false;
      });
    });

    it('takes an older leader\'s append of more than APPEND_ENTRIES_MAX entries as its first APPEND_ENTRIES_MAX; refuses more than APPEND_ENTRIES_READ_MAX INVALID_ARGUMENT, never handing it to the core', async () => {
      /** sendRaw writes one append of `n` empty entries on a stream of its own and returns the stream's status. */
      const sendRaw = (n: number): Promise<grpc.StatusObject> => {
        const entries = Array.from({ length: n }, (_, i) => entryToProto({ index: i + 1, term: 2, type: 'normal', data: new Uint8Array(0) }));
        const req = { from: 'n1', to: 'n2', term: 2n, heartbeat: false, prevLogIndex: 0n, prevLogTerm: 0n, entries, commit: 0n, readSeq: 0n, installFloor: 0n, snapshotIndex: 0n, base: undefined };
        const client = new pb.RaftServiceClient(server!.address, grpc.credentials.createInsecure());
        const call = client.appendEntries();
        return new Promise<grpc.StatusObject>((resolve) => {
          call.on('data', () => call.end()); // answered: the append was taken
          call.on('error', () => undefined);
          call.on('status', (st) => {
            client.close();
            resolve(st);
          });
          call.write({ ...req, headerCrc32: appendHeaderChecksum(req) });
        });
      };
      const refused = await sendRaw(APPEND_ENTRIES_READ_MAX + 1);
      assert.equal(refused.code, grpc.status.INVALID_ARGUMENT, refused.details);
      assert.match(refused.details, new RegExp(`^append: more than APPEND_ENTRIES_READ_MAX \\(${APPEND_ENTRIES_READ_MAX}\\) entries in one append$`));
      assert.equal(handler.requests.length, 0, 'the core saw nothing');
      const taken = await sendRaw(APPEND_ENTRIES_MAX);
      assert.equal(taken.code, grpc.status.OK, taken.details);
      assert.equal(handler.requests.length, 1);
      const [m] = handler.requests;
      assert.ok(m?.type === 'append' && m.entries.length === APPEND_ENTRIES_MAX);
      // A leader of a build before the limit (a rolling upgrade) slices by bytes only: its longer append is the first APPEND_ENTRIES_MAX entries.
      const older = await sendRaw(APPEND_ENTRIES_MAX + 1000);
      assert.equal(older.code, grpc.status.OK, older.details);
      assert.equal(handler.requests.length, 2);
      const m2 = handler.requests[1];
      assert.ok(m2?.type === 'append' && m2.entries.length === APPEND_ENTRIES_MAX && m2.entries.at(-1)?.index === APPEND_ENTRIES_MAX);
    });

    it('refuses a request addressed to another node', async () => {
      const t = makeTransport();
      t.setPeers({ n3: server!.address }); // a stale address map: n2 now listens where n3 used to
      t.send({ type: 'vote', from: 'n1', to: 'n3', term: 4, preVote: false, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
      await waitFor('the call to fail', () => logger.lines.some((l) => l.obj['code'] === grpc.status.FAILED_PRECONDITION));
      assert.equal(handler.requests.length, 0);
    });

    it('FetchSnapshot: UNIMPLEMENTED without openSnapshot; streams chunks with it', async () => {
      const client = new pb.RaftServiceClient(server!.address, grpc.credentials.createInsecure());
      const fetch = (c: pb.RaftServiceClient): Promise<{ chunks: pb.FetchSnapshotResponse[]; err: grpc.ServiceError | null }> =>
        new Promise((resolve) => {
          const chunks: pb.FetchSnapshotResponse[] = [];
          const call = c.fetchSnapshot(pb.FetchSnapshotRequest.fromPartial({ from: 'n1', index: 5n, term: 1n, offset: 3n }));
          call.on('data', (d: pb.FetchSnapshotResponse) => chunks.push(d));
          call.on('error', (err: grpc.ServiceError) => resolve({ chunks, err }));
          call.on('end', () => resolve({ chunks, err: null }));
        });
      try {
        const r1 = await fetch(client);
        assert.equal(r1.err?.code, grpc.status.UNIMPLEMENTED);

        const data = new Uint8Array(10).map((_, i) => i);
        const h2 = new FakeHandler() as FakeHandler & RaftRequestHandler;
        h2.openSnapshot = async (p) => {
          assert.equal(p.offset, 3);
          async function* gen(): AsyncIterable<SnapshotChunk> {
            for (let off = p.offset; off < data.length; off += 4) {
              const d = data.subarray(off, off + 4);
              yield { offset: off, data: d, sha256: createHash('sha256').update(d).digest(), totalSizeBytes: data.length, last: off + 4 >= data.length };
            }
          }
          return gen();
        };
        const s2 = await startServer(h2);
        const c2 = new pb.RaftServiceClient(s2.address, grpc.credentials.createInsecure());
        try {
          const r2 = await fetch(c2);
          assert.equal(r2.err, null);
          assert.deepEqual(
            r2.chunks.map((c) => [Number(c.offset), c.data.length, c.last]),
            [
              [3, 4, false],
              [7, 3, true],
            ],
          );
        } finally {
          c2.close();
          s2.stop();
        }
      } finally {
        client.close();
      }
    });
  });

  it('queues while the stream is blocked and drops beyond the per-peer cap', async () => {
    handler.randomDelayMs = 0;
    const t = makeTransport({ maxQueuedMessages: 5 });
    t.setPeers({ n2: server!.address });
    // Synchronous burst: grpc-js buffers a few writes, then write() returns false and we queue 5 more at most.
    for (let i = 1; i <= 100; i++) t.send(append(i));
    const s = t.stats();
    const queued = t.peerInfo('n2')!.queuedMessages;
    assert.equal(queued, 5, 'the queue is full');
    assert.ok(s.dropped > 0, 'some appends were dropped');
    assert.equal(s.sent + queued + s.dropped, 100);
    const delivered = 100 - s.dropped;
    await waitFor('replies for everything not dropped', () => replies.length === delivered);
    const indexes = replies.map((m) => (m.type === 'appendResp' ? m.index : -1));
    assert.deepEqual(indexes, [...indexes].sort((a, b) => a - b), 'in order');
    await sleep(20);
    assert.equal(replies.length, delivered);
    assert.equal(t.stats().sent, delivered);
    assert.equal(t.peerInfo('n2')!.queuedMessages, 0);
  });

  it('an append stream that stops answering is cut and reopened after stallTimeoutMs', async () => {
    const t = makeTransport({ stallTimeoutMs: 200 });
    t.setPeers({ n2: server!.address });
    handler.override = (m) => (m.type === 'append' && m.entries[0]!.index === 1 ? new Promise<Message[]>(() => undefined) : undefined);
    t.send(append(1)); // never answered: holds every later answer on this stream
    t.send(heartbeat(1));
    await waitFor('both requests', () => handler.requests.length === 2);
    await sleep(300);
    assert.equal(replies.length, 0);
    t.send(heartbeat(2)); // past the stall timeout: a new stream carries it
    await waitFor('the answer on a new stream', () => replies.some((r) => r.type === 'heartbeatResp' && r.readSeq === 2));
    assert.ok(logger.lines.some((l) => l.msg === 'transport: append stream stopped answering; reopening it'));
  });

  describe('message fault injection (the chaos tests\' interceptor)', () => {
    const withFaults = (rates: Partial<MessageFaultRates>): { t: GrpcTransport; faults: MessageFaults } => {
      const faults = new MessageFaults({ drop: 0, duplicate: 0, corrupt: 0, seed: 9, ...rates });
      const t = makeTransport({ channelOptions: { interceptors: [faults.interceptor] } });
      t.setPeers({ n2: server!.address });
      return { t, faults };
    };

    it('corrupt: an append whose entry was damaged in transit is refused whole by its CRC-32, never handed to the core', async () => {
      const { t, faults } = withFaults({ corrupt: 1 });
      t.send(append(1));
      await waitFor('the stream to fail', () => t.peerInfo('n2')!.backoffMs > 0);
      assert.equal(faults.counts.corrupted, 1);
      assert.equal(handler.requests.length, 0, 'the damaged append reached the handler');
      // Healed: the same append goes through on the reopened stream.
      faults.setRates({ ...faults.current(), corrupt: 0 });
      await sleep(50);
      t.send(append(1));
      await waitFor('the append', () => replies.length === 1);
      assert.equal(new TextDecoder().decode((handler.requests[0] as AppendRequest).entries[0]!.data), 'entry-1');
    });

    it('drop: after an answer was dropped, the end of the stream still reaches the transport (no stuck stream)', async () => {
      const { t, faults } = withFaults({ drop: 1 });
      t.send(append(1));
      await waitFor('the append', () => handler.requests.length === 1);
      await sleep(30);
      assert.equal(faults.counts.dropped, 1);
      // The follower now refuses the next append: the stream ends with an error, which the leader must see.
      handler.override = () => Promise.reject(statusError(grpc.status.INVALID_ARGUMENT, 'refused'));
      t.send(append(2));
      await waitFor('the stream failure to reach the transport', () => t.peerInfo('n2')!.backoffMs > 0, 3_000);
    });

    it('server side: appends are lost (never stepped) or stepped twice, and the stream keeps flowing', async () => {
      const faults = new MessageFaults({ drop: 1, duplicate: 0, corrupt: 0, seed: 3 });
      server!.stop();
      server = await startServer(handler, { interceptors: [faults.serverInterceptor] });
      const t = makeTransport();
      t.setPeers({ n2: server.address });
      for (let i = 1; i <= 3; i++) t.send(append(i));
      await waitFor('3 drops', () => faults.counts.dropped === 3);
      await sleep(30);
      assert.equal(handler.requests.length, 0, 'a lost append was stepped');
      faults.setRates({ ...faults.current(), drop: 0, duplicate: 1 });
      t.send(append(4));
      await waitFor('the repeated append', () => handler.requests.length === 2);
      assert.deepEqual(handler.requests.map((m) => (m.type === 'append' ? m.entries[0]!.index : -1)), [4, 4]);
      await waitFor('both answers', () => replies.length === 2);
      assert.equal(faults.counts.duplicated, 1);
    });

    it('duplicate: each answer on the stream arrives twice, in order, and the stream keeps flowing', async () => {
      const { t, faults } = withFaults({ duplicate: 1 });
      for (let i = 1; i <= 3; i++) t.send(append(i));
      await waitFor('6 answers', () => replies.length === 6);
      assert.deepEqual(replies.map((m) => (m.type === 'appendResp' ? m.index : -1)), [1, 1, 2, 2, 3, 3]);
      assert.equal(handler.requests.length, 3);
      assert.equal(faults.counts.duplicated, 3);
    });

    it('drop: answers on the stream and unary requests are lost, and the stream keeps flowing', async () => {
      const { t, faults } = withFaults({ drop: 1 });
      for (let i = 1; i <= 5; i++) t.send(append(i));
      t.send({ type: 'vote', from: 'n1', to: 'n2', term: 4, preVote: true, lastLogIndex: 3, lastLogTerm: 1, transfer: false });
      await waitFor('5 appends handled', () => handler.requests.length === 5);
      await waitFor('the vote call to end', () => t.peerInfo('n2')!.inflightCalls === 0);
      await sleep(50);
      assert.deepEqual(replies, [], 'a dropped answer was delivered');
      assert.ok(handler.requests.every((m) => m.type === 'append'), 'the dropped vote reached the handler');
      assert.equal(faults.counts.dropped, 6);
      faults.setRates({ ...faults.current(), drop: 0 });
      t.send(append(6));
      await waitFor('the answer after healing', () => replies.length === 1);
    });
  });

});

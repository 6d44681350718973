/**
 * Seeded fuzzing of what a member sends on the peer plane: n1 and n2 are real
 * Nodes (core, driver, state machine) on the in-memory storage and
 * transport; n3, a voter of their membership, is the fuzzer. It steps
 * requests into n1 and n2 (votes, appends with entries of any data,
 * heartbeats, snapshot offers, TimeoutNow, ReadIndex) with odd field values
 * (indexes and terms 0, small, far ahead, 2^53-1; commit beyond the log;
 * unknown or empty ids; odd snapshot metas), and answers every message n1
 * and n2 send it with odd answers of the right type. Each message goes
 * through the wire codec first (toProto, then fromProto: what RaftService
 * decodes; a CodecError is a refusal). The contract:
 *
 * - nothing but a refusal escapes (a CodecError, or a coded Error the peer
 *   server turns into a gRPC status); no node fails;
 * - a node's term never moves past its term before the message plus
 *   TERM_AHEAD_MAX; a node's commit index never decreases;
 * - n1 and n2 agree on every entry both have committed (Raft's State Machine
 *   Safety, so Log Matching on the committed prefix);
 * - once n3 falls silent, n1 and n2 elect a leader and take a write.
 *
 * FUZZ_CASES=N runs more messages, FUZZ_SEED=S another seed.
 */
import assert from 'node:assert/strict';

import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { encodeRestoreCommand } from '../../../src/fsm/restore-command.js';
import { encodeConfChange } from '../../../src/raft/membership.js';
import { Node, TERM_AHEAD_MAX } from '../../../src/node/node.js';
import { systemClock } from '../../../src/node/clock.js';
import { cryptoRng } from '../../../src/node/crypto-rng.js';
import type { Entry, Membership, Message, NodeId } from '../../../src/raft/types.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import * as codec from '../../../src/transport/codec.js';
import { MemoryNetwork } from '../../../src/transport/memory-transport.js';
import type { RaftRequestHandler } from '../../../src/transport/transport.js';
import { SeededRng } from '../../harness/rng.js';
import { until } from '../../harness/until.js';
import { fuzzCases, fuzzSeed } from '../snapshot/fuzz-archives.js';

const REAL = ['n1', 'n2'] as const;
const enc = new TextEncoder();
const MEMBERSHIP: Membership = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'mem:n1', n2: 'mem:n2', n3: 'mem:n3' } };

/** wire: `m` as the peer server would decode it (toProto then fromProto); a CodecError is thrown as the server refuses it. */
function wire(m: Message): Message {
  switch (m.type) {
    case 'vote':
      return codec.voteRequestFromProto(codec.voteRequestToProto(m));
    case 'voteResp':
      return codec.voteResponseFromProto(codec.voteResponseToProto(m)) ?? m;
    case 'append':
    case 'heartbeat':
      return codec.appendRequestFromProto(codec.appendRequestToProto(m));
    case 'appendResp':
    case 'heartbeatResp':
      return codec.appendResponseFromProto(codec.appendResponseToProto(m));
    case 'snapshot':
      return codec.snapshotRequestFromProto(codec.snapshotRequestToProto(m));
    case 'snapshotResp':
      return codec.reportSnapshotFromProto(codec.reportSnapshotToProto(m));
    case 'timeoutNow':
      return codec.timeoutNowFromProto(codec.timeoutNowToProto(m));
    case 'readIndex':
      return codec.readIndexRequestFromProto(codec.readIndexRequestToProto(m));
    case 'readIndexResp':
      return codec.readIndexResponseFromProto(codec.readIndexResponseToProto(m)) ?? m;
  }
}

/** Odd: the fuzzer's values, relative to what the target knows (its term, last index, commit). */
class Odd {
  constructor(
    private readonly rng: SeededRng,
    private readonly target: { term: number; lastIndex: number; commit: number },
  ) {}

  /** index: 0, around the target's log and commit, far beyond, 2^53-1. */
  index(): number {
    const { lastIndex, commit } = this.target;
    return this.rng.pick([0, 1, commit, commit + 1, lastIndex, lastIndex + 1, lastIndex + 2, lastIndex + 1000, Math.max(0, commit - 1), 2 ** 31, 2 ** 53 - 1, this.rng.nextInt(lastIndex + 5)]);
  }

  /** term: 0, the target's and around it, just within and just beyond TERM_AHEAD_MAX, 2^53-1. */
  term(): number {
    const t = this.target.term;
    return this.rng.pick([0, 1, Math.max(0, t - 1), t, t, t, t + 1, t + 2, t + TERM_AHEAD_MAX, t + TERM_AHEAD_MAX + 1, 2 ** 53 - 1]);
  }

  /** from: mostly n3 (a member), sometimes an unknown, an empty or a real node's id. */
  from(): NodeId {
    return this.rng.chance(0.85) ? 'n3' : this.rng.pick(['', 'zz', 'n1', 'n2', 'n3 ', 'x'.repeat(300)]);
  }

  data(): Uint8Array {
    switch (this.rng.nextInt(6)) {
      case 0:
        return new Uint8Array(0);
      case 1:
        return encodeCommand({ op: 'put', key: enc.encode(`k/${this.rng.nextInt(20)}`), value: enc.encode('from n3') });
      case 2: {
        // A restore entry whose data is damaged (one naming an archive nobody holds, committed by a member that made
        // itself leader, blocks the apply until one is found: a leader's power, not a peer message's).
        const out = Buffer.from(encodeRestoreCommand({ digest: 'ab'.repeat(32), sizeBytes: 1 + this.rng.nextInt(1000), index: this.index(), term: this.term() }));
        return out.subarray(0, this.rng.nextInt(out.length));
      }
      case 3:
        return Uint8Array.from([this.rng.pick([0x01, 0x02, 0x4f, 0x52, 0xff]), ...Array.from({ length: this.rng.nextInt(30) }, () => this.rng.nextInt(256))]);
      case 4:
      {
        // A put to a reserved key (the encoder refuses one: its key patched after).
        const out = Buffer.from(encodeCommand({ op: 'put', key: enc.encode('_snapcoord/session/x'), value: enc.encode('v') }));
        out[out.indexOf('_snapcoord/')] = 0;
        return out;
      }
      default:
        return Uint8Array.from(Array.from({ length: this.rng.nextInt(64) }, () => this.rng.nextInt(256)));
    }
  }

  membership(): Membership {
    return this.rng.pick<Membership>([
      MEMBERSHIP,
      { voters: ['n3'], learners: [], addresses: { n3: 'mem:n3' } },
      { voters: [], learners: [], addresses: {} },
      { voters: ['n1', 'n2', 'n3', 'n4'], learners: ['n5'], addresses: { n1: 'mem:n1', n2: 'mem:n2', n3: 'mem:n3', n4: 'mem:n4', n5: 'mem:n5' } },
      { voters: ['n1'], learners: ['n2'], addresses: { n1: 'mem:n1' } },
    ]);
  }

  confChange(): Uint8Array {
    return this.rng.pick([
      // Only changes after which n1 and n2 are a quorum on their own (a leader's power again: they are checked to serve after).
      () => encodeConfChange({ op: 'removeNode', nodeId: 'n3' }),
      () => encodeConfChange({ op: 'addVoter', nodeId: 'n3', address: 'mem:n3' }),
      () => encodeConfChange({ op: 'addLearner', nodeId: 'n5', address: 'mem:n5' }),
      () => this.data(),
    ])();
  }

  entries(prevLogIndex: number, term: number): Entry[] {
    const n = this.rng.pick([0, 1, 1, 2, 5]);
    return Array.from({ length: n }, (_, i) => ({
      index: prevLogIndex + 1 + i,
      term: this.rng.chance(0.8) ? term : this.term(),
      type: this.rng.chance(0.85) ? ('normal' as const) : ('conf' as const),
      data: this.rng.chance(0.85) ? this.data() : this.confChange(),
    }));
  }

  /** request: a request n3 sends `to`. */
  request(to: NodeId): Message {
    const from = this.from();
    const term = this.term();
    switch (this.rng.nextInt(7)) {
      case 0:
        return { type: 'vote', from, to, term, preVote: this.rng.chance(0.5), lastLogIndex: this.index(), lastLogTerm: this.term(), transfer: this.rng.chance(0.2) };
      case 1:
      case 2: {
        const prevLogIndex = this.index() === 2 ** 53 - 1 ? 2 ** 53 - 10 : this.index();
        return { type: 'append', from, to, term, prevLogIndex, prevLogTerm: this.term(), entries: this.entries(prevLogIndex, term), commit: this.index(), ...(prevLogIndex === 0 && this.rng.chance(0.3) ? { base: this.membership() } : {}) };
      }
      case 3:
        return { type: 'heartbeat', from, to, term, commit: this.index(), readSeq: this.index(), ...(this.rng.chance(0.3) ? { installFloor: this.index() } : {}), ...(this.rng.chance(0.3) ? { snapshotIndex: this.index() } : {}) };
      case 4:
        return {
          type: 'snapshot',
          from,
          to,
          term,
          snapshot: { index: this.index(), term: this.term(), membership: this.membership(), sizeBytes: this.rng.pick([0, 1, 1024, 2 ** 40]), digest: this.rng.pick(['', 'ab'.repeat(32), 'zz', 'AB'.repeat(32)]) },
        };
      case 5:
        return { type: 'timeoutNow', from, to, term };
      default:
        return { type: 'readIndex', from, to, term, context: this.rng.pick(['', 'n3/1/1', 'x'.repeat(600)]) };
    }
  }

  /** answer: n3's odd answer to `m` (one of the RPC's answer type), or none. */
  answer(m: Message): Message[] {
    if (this.rng.chance(0.15)) return [];
    const base = { from: 'n3', to: m.from, term: this.rng.chance(0.6) ? m.term : this.term() };
    switch (m.type) {
      case 'vote':
        return [{ ...base, type: 'voteResp', preVote: m.preVote, granted: this.rng.chance(0.5) }];
      case 'append':
        return [{ ...base, type: 'appendResp', reject: this.rng.chance(0.3), index: this.index(), hintIndex: this.index(), hintTerm: this.term(), ...(this.rng.chance(0.2) ? { installingIndex: this.index() } : {}) }];
      case 'heartbeat':
        return [{ ...base, type: 'heartbeatResp', readSeq: this.rng.chance(0.5) ? m.readSeq : this.index(), installingIndex: this.rng.chance(0.7) ? 0 : this.index(), ...(this.rng.chance(0.2) ? { needsSnapshot: this.index() } : {}), ...(this.rng.chance(0.5) ? { applied: this.index() } : {}) }];
      case 'snapshot':
        return [{ ...base, type: 'snapshotResp', index: this.rng.chance(0.5) ? m.snapshot.index : this.index(), reject: this.rng.chance(0.5) }];
      case 'readIndex':
        return [{ ...base, type: 'readIndexResp', context: m.context, index: this.index(), reject: this.rng.chance(0.3) }];
      default:
        return [];
    }
  }
}

/** refusal: what the peer server may answer with instead of a reply (a CodecError, or a coded Error: a gRPC status). */
function isRefusal(err: unknown): boolean {
  return err instanceof codec.CodecError || (err instanceof Error && typeof (err as { code?: unknown }).code === 'number');
}

describe('fuzz: odd peer messages from a member (n3) stepped into real nodes', function () {
  this.timeout(60_000 + fuzzCases(400) * 100); // FUZZ_CASES runs by hand take longer
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  it('nothing but refusals escapes, terms move at most TERM_AHEAD_MAX a message, commits never go back, no committed entry changes, and the cluster serves after', async () => {
    const messages = fuzzCases(400);
    const seed = fuzzSeed(3_300_000);
    const rng = new SeededRng(seed);
    const net = new MemoryNetwork();
    const nodes = new Map<NodeId, Node>();
    const storages = new Map<NodeId, MemoryStorage>();
    const problems: string[] = [];
    const escaped = (where: string, err: unknown): void => void problems.push(`${where}: ${(err as Error)?.stack ?? String(err)}`);
    let answering = true;
    // n3: answers what n1 and n2 send it with odd answers, through the codec.
    const n3: RaftRequestHandler = {
      handleRequest: async (m) => {
        if (!answering) return [];
        const odd = new Odd(rng.fork(`answer-${m.type}-${m.term}-${rng.nextU32()}`), { term: m.term, lastIndex: m.type === 'append' ? m.prevLogIndex + m.entries.length : 10, commit: 'commit' in m ? m.commit : 0 });
        const out: Message[] = [];
        for (const a of odd.answer(m)) {
          try {
            out.push(wire(a));
          } catch (err) {
            if (!(err instanceof codec.CodecError)) escaped(`n3's answer ${JSON.stringify(a)} to encode`, err);
          }
        }
        return out;
      },
      handleReport: () => undefined,
    };
    stops.push(async () => void net.listen('mem:n3', n3).close());
    for (const id of REAL) {
      const ref: { node: Node | null } = { node: null };
      const storage = await MemoryStorage.open(new MemoryDataDir(id));
      const transport = net.transport({
        selfId: id,
        onMessage: (m) => {
          const n = ref.node;
          if (n === null) return;
          const before = n.status().term;
          try {
            n.receive(m); // steps it at once
          } catch (err) {
            escaped(`${id}.receive(${m.type} from ${m.from})`, err);
          }
          if (n.status().term > before + TERM_AHEAD_MAX) problems.push(`${id}'s term went from ${before} to ${n.status().term} on ${m.type} from ${m.from} (term ${m.term})`);
        },
      });
      const node = await Node.start({
        id,
        storage,
        transport,
        initialMembership: MEMBERSHIP,
        timings: { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, proposalTimeoutMs: 3_000 },
        clock: systemClock,
        rng: cryptoRng,
      });
      ref.node = node;
      nodes.set(id, node);
      storages.set(id, storage);
      const closer = net.listen(`mem:${id}`, node);
      stops.push(async () => {
        closer.close();
        await node.stop().catch(() => undefined);
      });
    }
    const node = (id: NodeId): Node => nodes.get(id) as Node;
    const commits = new Map<NodeId, number>(REAL.map((id) => [id, 0]));
    const checkNodes = (where: string): void => {
      for (const id of REAL) {
        const st = node(id).status();
        assert.equal(node(id).failed(), null, `seed ${seed}, ${where}: ${id} failed: ${String(node(id).failed())}`);
        assert.ok(st.commit >= (commits.get(id) ?? 0), `seed ${seed}, ${where}: ${id}'s commit went back from ${commits.get(id)} to ${st.commit}`);
        commits.set(id, st.commit);
      }
    };
    // What each node committed never changes on it (n3 may lie, so the two may part ways: Raft assumes members do
    // not; what each node guarantees on its own is checked, and that they agree when n3's lies did not part them).
    const committed = new Map<NodeId, Map<number, string>>(REAL.map((id) => [id, new Map()]));
    const entryText = (e: Entry): string => `${e.term}/${e.type}/${Buffer.from(e.data).toString('hex')}`;
    const checkCommitted = async (where: string): Promise<void> => {
      for (const id of REAL) {
        const upTo = node(id).status().commit;
        const seen = committed.get(id) as Map<number, string>;
        for (const e of (await (storages.get(id) as MemoryStorage).load()).entries) {
          if (e.index > upTo) break;
          const had = seen.get(e.index);
          if (had === undefined) seen.set(e.index, entryText(e));
          else assert.equal(entryText(e), had, `seed ${seed}, ${where}: ${id} changed its committed entry ${e.index}`);
        }
      }
    };
    await until('a leader among n1 and n2', 10_000, () => (REAL.some((id) => node(id).status().role === 'leader') ? true : undefined));
    const writes: Promise<unknown>[] = [];
    const outcomes = new Map<string, number>();
    for (let i = 0; i < messages; i++) {
      const to = rng.pick(REAL);
      const target = node(to);
      const st = target.status();
      const odd = new Odd(rng.fork(`request-${i}`), { term: st.term, lastIndex: st.lastIndex, commit: st.commit });
      const sent = odd.request(to);
      const where = `message ${i} (FUZZ_SEED=${seed} FUZZ_CASES=${i + 1}) to ${to}: ${JSON.stringify(sent, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex').slice(0, 40) : v)).slice(0, 400)}`;
      let m: Message;
      try {
        m = wire(sent);
      } catch (err) {
        assert.ok(err instanceof codec.CodecError, `${where}: the codec threw ${String(err)}`);
        outcomes.set('codec refused', (outcomes.get('codec refused') ?? 0) + 1);
        continue;
      }
      const termBefore = target.status().term;
      let termAfter = termBefore;
      try {
        if (m.type === 'snapshotResp') target.handleReport(m);
        else {
          // handleRequest steps the message before its first await (the term is read then: n3's answers to the
          // node's own messages, stepped meanwhile, are checked one by one in onMessage).
          const answered = target.handleRequest(m);
          termAfter = target.status().term;
          // Not awaited past 200 ms: an answer held for a save is settled before the next checks.
          await Promise.race([answered, new Promise((r) => setTimeout(r, 200))]);
        }
        outcomes.set(`${m.type} stepped`, (outcomes.get(`${m.type} stepped`) ?? 0) + 1);
      } catch (err) {
        assert.ok(isRefusal(err), `${where}: escaped: ${(err as Error)?.stack ?? String(err)}`);
        outcomes.set(`${m.type} refused`, (outcomes.get(`${m.type} refused`) ?? 0) + 1);
      }
      assert.ok(termAfter <= termBefore + TERM_AHEAD_MAX, `${where}: ${to}'s term went from ${termBefore} to ${termAfter}`);
      await checkCommitted(where);
      checkNodes(where);
      assert.deepEqual(problems, [], `${where}: ${problems.join('\n')}`);
      if (i % 25 === 0) {
        // Clients write meanwhile (refusals are fine: n3 may be disrupting elections).
        const l = REAL.find((id) => node(id).status().role === 'leader');
        if (l !== undefined) writes.push(node(l).propose({ op: 'put', key: enc.encode(`c/${i}`), value: enc.encode('client') }).catch(() => undefined));
      }
    }
    await Promise.all(writes);
    // n3 falls silent. Unless its lies parted n1 and n2 (acks of entries it never held, then a log of its own as a
    // leader it never was: each committed a different entry at one index, which Raft, trusting members, cannot
    // undo), they elect a leader of their own and take a write.
    answering = false;
    net.cut('n3', 'n1');
    net.cut('n3', 'n2');
    await checkCommitted('after');
    const [c1, c2] = REAL.map((id) => committed.get(id) as Map<number, string>) as [Map<number, string>, Map<number, string>];
    const parted = [...c1].some(([index, e]) => c2.has(index) && c2.get(index) !== e);
    if (parted) {
      outcomes.set('parted by n3', 1);
    } else {
      const describe = (): string => REAL.map((id) => JSON.stringify({ ...node(id).status(), progress: undefined })).join(' ');
      const leader = await until('n1 and n2 to agree on a leader of their own', 15_000, () => {
        const l = REAL.find((id) => node(id).status().role === 'leader');
        return l !== undefined && REAL.every((id) => node(id).status().leader === l) ? l : undefined;
      }).catch((err: unknown) => {
        throw new Error(`seed ${seed}: ${(err as Error).message}; ${describe()}`);
      });
      let written: string | null = 'not tried';
      for (let attempt = 0; attempt < 30 && written !== null; attempt++) {
        const r = await node(leader)
          .propose({ op: 'put', key: enc.encode('c/after'), value: enc.encode('ok') })
          .catch((err: unknown) => ({ ok: false as const, error: String(err) }));
        written = r.ok ? null : JSON.stringify(r);
        if (written !== null) await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(written, null, `seed ${seed}: the cluster takes no write after n3 fell silent; ${describe()}`);
      checkNodes('after');
    }
    assert.deepEqual(problems, []);
    if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${messages} messages from seed ${seed}:`, Object.fromEntries(outcomes));
  });
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JoinError, checkLogNotLost } from '../../../src/node/join.js';
import { STARTED_MEMBERS_FILE, StartedMembers, recordingHandler, startedEvidence } from '../../../src/node/started-members.js';
import type { Message } from '../../../src/raft/types.js';
import type { MembershipAnswer, MembershipQuery, RaftRequestHandler } from '../../../src/transport/transport.js';

const quiet = { warn: () => undefined, info: () => undefined, debug: () => undefined, error: () => undefined } as never;
const base = { to: 'n1', term: 3 };
const appendResp = (from: string, index: number, reject = false): Message => ({ ...base, type: 'appendResp', from, reject, index, hintIndex: 0, hintTerm: 0 });
const append = (from: string, commit: number): Message => ({ ...base, type: 'append', from, prevLogIndex: 0, prevLogTerm: 0, entries: [], commit });
const heartbeat = (from: string, commit: number): Message => ({ ...base, type: 'heartbeat', from, commit, readSeq: 0 });

describe('started members (a member back on a new data dir)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-started-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('takes as evidence an acknowledged append above 0, and a leader\'s append or heartbeat with a commit above 0, nothing else', () => {
    assert.equal(startedEvidence(appendResp('n2', 5)), 'n2');
    assert.equal(startedEvidence(appendResp('n2', 0)), null, 'an empty log acknowledging nothing');
    assert.equal(startedEvidence(appendResp('n2', 5, true)), null, 'a rejection');
    assert.equal(startedEvidence(append('n3', 1)), 'n3');
    assert.equal(startedEvidence(append('n3', 0)), null);
    assert.equal(startedEvidence(heartbeat('n3', 9)), 'n3');
    assert.equal(startedEvidence(heartbeat('n3', 0)), null);
    assert.equal(startedEvidence({ ...base, type: 'vote', from: 'n2', lastLogIndex: 9, lastLogTerm: 3 } as Message), null, 'a vote says nothing of a durable log');
  });

  it('records each member once, durably; prunes the ones the configuration no longer names; an unreadable record starts afresh', async () => {
    const s = await StartedMembers.open(dir, quiet);
    assert.equal(s.has('n2'), false);
    s.observe(appendResp('n2', 4));
    s.observe(appendResp('n2', 5));
    s.observe(heartbeat('n3', 2));
    s.observe(appendResp('n4', 0));
    await s.flushed();
    assert.deepEqual((await StartedMembers.open(dir, quiet)).members(), ['n2', 'n3']);
    s.prune(new Set(['n1', 'n3']));
    await s.flushed();
    assert.deepEqual((await StartedMembers.open(dir, quiet)).members(), ['n3']);
    // A membership change that removes n3 forgets it (Node's onMemberRemoved): added back, it is a new member.
    s.forget('n3');
    s.forget('n9');
    await s.flushed();
    assert.deepEqual((await StartedMembers.open(dir, quiet)).members(), []);
    s.observe(appendResp('n3', 6));
    await s.flushed();
    assert.deepEqual((await StartedMembers.open(dir, quiet)).members(), ['n3']);
    await writeFile(join(dir, STARTED_MEMBERS_FILE), '{"format":1,"members":[1,2]}');
    const warned: string[] = [];
    const damaged = await StartedMembers.open(dir, { warn: (_o, m) => warned.push(m) });
    assert.deepEqual(damaged.members(), []);
    assert.equal(warned.length, 1);
    damaged.observe(appendResp('n5', 1));
    await damaged.flushed();
    assert.deepEqual(JSON.parse(await readFile(join(dir, STARTED_MEMBERS_FILE), 'utf8')), { format: 1, members: ['n5'] });
  });

  it('the node\'s RaftService handler records what it steps and answers GetMembership with askerStarted; the rest is the node\'s own', async () => {
    const s = await StartedMembers.open(dir, quiet);
    class Inner implements RaftRequestHandler {
      #stepped: Message[] = [];
      membership: MembershipAnswer['membership'] = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: 'a', n2: 'b', n3: 'c' } };
      handleRequest(m: Message): Promise<Message[]> {
        this.#stepped.push(m);
        return Promise.resolve([]);
      }
      handleReport(m: Message): void {
        this.#stepped.push(m);
      }
      membershipFor(_q: MembershipQuery): MembershipAnswer {
        return { from: 'n1', term: 3, membership: this.membership };
      }
      stepped(): number {
        return this.#stepped.length;
      }
    }
    const inner = new Inner();
    const h = recordingHandler(inner, s);
    assert.deepEqual(h.membershipFor?.call(h, { from: 'n2', to: 'n1' }).askerStarted, false);
    await h.handleRequest(append('n2', 7));
    h.handleReport(appendResp('n3', 1));
    assert.equal(inner.stepped(), 2, 'both reached the node (its private fields too)');
    assert.equal(h.membershipFor?.call(h, { from: 'n2', to: 'n1' }).askerStarted, true);
    assert.equal(h.membershipFor?.call(h, { from: 'n3', to: 'n1' }).askerStarted, false, 'a report is not a request the handler records');
    inner.membership = { voters: ['n1', 'n3'], learners: [], addresses: { n1: 'a', n3: 'c' } };
    assert.equal(h.membershipFor?.call(h, { from: 'n2', to: 'n1' }).askerStarted, false, 'removed: forgotten');
    assert.equal(s.has('n2'), false);
    await s.flushed();
  });

  it('a member removed and forgotten is not recorded again by a late answer of its own (review20: d692033 forgot it as the removal applied, and its appendResp still in flight put it back, so its re-add as a voter was refused by chance again)', async () => {
    const s = await StartedMembers.open(dir, quiet);
    const members = new Set(['n1', 'n2', 'n3']);
    const isMember = (id: string): boolean => members.has(id);
    s.observe(appendResp('n3', 4), isMember);
    assert.equal(s.has('n3'), true);
    // The removal takes effect (in the log, then applied: forget), and n3's acknowledgement of an earlier append,
    // sent before it, arrives now (the leader stopped replicating to n3 when the removal was appended, not when
    // n3 had answered everything).
    members.delete('n3');
    s.forget('n3');
    s.observe(appendResp('n3', 5), isMember);
    const h = recordingHandler({ handleRequest: () => Promise.resolve([]), handleReport: () => undefined } as unknown as RaftRequestHandler, s, isMember);
    await h.handleRequest(append('n3', 9));
    assert.equal(s.has('n3'), false, 'a message from a member the configuration no longer names is no evidence');
    // Added back (a new member, started on a new data dir): what it does from then on is recorded again.
    members.add('n3');
    s.observe(appendResp('n3', 1), isMember);
    assert.equal(s.has('n3'), true);
    await s.flushed();
    assert.deepEqual((await StartedMembers.open(dir, quiet)).members(), ['n3']);
  });

  it('checkLogNotLost refuses when a peer that counts it as a voter saw it run; passes over learners and peers that do not answer', async () => {
    const peers = { n1: 'h1:1', n2: 'h2:1', n3: 'h3:1' };
    const voters: MembershipAnswer['membership'] = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: peers };
    const asked: string[] = [];
    const ask = (saw: boolean, membership = voters) => async (address: string, q: MembershipQuery): Promise<MembershipAnswer> => {
      asked.push(`${q.to}@${address}`);
      if (q.to === 'n3') throw new Error('UNAVAILABLE');
      return { from: q.to, term: 4, membership, askerStarted: saw };
    };
    const o = { selfId: 'n2', peers, log: quiet };
    await checkLogNotLost({ ...o, ask: ask(false) });
    assert.deepEqual(asked.sort(), ['n1@h1:1', 'n3@h3:1'], 'every other member, not itself');
    await assert.rejects(checkLogNotLost({ ...o, ask: ask(true) }), (e: unknown) => e instanceof JoinError && /data dir is new, but n1 saw n2 run before/.test(e.message) && /cluster remove n2/.test(e.message));
    await checkLogNotLost({ ...o, ask: ask(true, { voters: ['n1', 'n3'], learners: ['n2'], addresses: peers }) });
  });
});

import assert from 'node:assert/strict';
import {
  APPEND_ENTRIES_MAX,
  ConfChangeUnreachableError,
  MembershipChangeError,
  NotLeaderError,
  ProposalDroppedError,
  RaftNode,
  defaultRaftConfig,
  type Entry,
  type Message,
} from '../../../src/raft/index.js';
import { SeededRng } from '../../harness/rng.js';
import { TestCluster, bytes, initialSnapshot, membership } from './harness.js';

function entry(index: number, term: number, data = ''): Entry {
  return { index, term, type: 'normal', data: bytes(data) };
}

describe('raft core', () => {
  describe('leader election', () => {
    it('Raft §5.2: a follower that hears from no leader campaigns and a single voter wins at once', () => {
      const c = new TestCluster(['a']);
      c.tick('a', 25);
      const st = c.node('a').status();
      assert.equal(st.role, 'leader');
      assert.equal(st.term, 1);
    });

    it('Raft §5.2: a candidate with a majority of votes becomes leader; the others follow it in the same term', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      assert.equal(c.node('a').status().role, 'leader');
      for (const id of ['b', 'c']) {
        const st = c.node(id).status();
        assert.equal(st.role, 'follower');
        assert.equal(st.leader, 'a');
        assert.equal(st.term, c.node('a').status().term);
      }
    });

    it('brief() reads as the same fields of status() on the leader and on followers, with no per-peer progress', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      for (const id of ['a', 'b', 'c']) {
        const n = c.node(id);
        const st = n.status();
        const br = n.brief();
        assert.deepEqual(br, {
          id: st.id, term: st.term, vote: st.vote, role: st.role, leader: st.leader, commit: st.commit,
          applied: st.applied, firstIndex: st.firstIndex, snapshotIndex: st.snapshotIndex, membership: st.membership,
        });
        assert.equal('progress' in br, false);
      }
    });

    it('Raft §5.2: randomized timeouts elect exactly one leader without any help', () => {
      const c = new TestCluster(['a', 'b', 'c', 'd', 'e']);
      c.tickAll(40);
      const leaders = [...c.nodes.values()].filter((n) => n.status().role === 'leader');
      assert.equal(leaders.length, 1);
    });

    it('Raft §5.2: a node grants at most one vote per term, first come first served', () => {
      const n = new RaftNode(defaultRaftConfig('x', new SeededRng(1), { preVote: false, checkQuorum: false }), {
        hardState: { term: 0, vote: '', commit: 0 },
        snapshot: initialSnapshot(membership(['x', 'y', 'z'])),
        logBase: { index: 0, term: 0 },
        entries: [],
        applied: 0,
      });
      const vote = (from: string): Message => ({
        type: 'vote', from, to: 'x', term: 1, preVote: false, transfer: false, lastLogIndex: 0, lastLogTerm: 0,
      });
      n.step(vote('y'));
      n.step(vote('z'));
      const rd = n.ready();
      const answers = rd.messages.filter((m) => m.type === 'voteResp');
      assert.deepEqual(
        answers.map((m) => [m.to, m.type === 'voteResp' && m.granted]),
        [['y', true], ['z', false]],
      );
      assert.equal(rd.hardState?.vote, 'y', 'the vote is in the hard state to persist before the answer leaves');
    });

    it('Raft §5.4.1: a vote is refused to a candidate whose log is less up to date', () => {
      const n = new RaftNode(defaultRaftConfig('x', new SeededRng(1), { preVote: false, checkQuorum: false }), {
        hardState: { term: 2, vote: '', commit: 0 },
        snapshot: initialSnapshot(membership(['x', 'y', 'z'])),
        logBase: { index: 0, term: 0 },
        entries: [entry(1, 1), entry(2, 2)],
        applied: 0,
      });
      n.step({ type: 'vote', from: 'y', to: 'x', term: 3, preVote: false, transfer: false, lastLogIndex: 5, lastLogTerm: 1 });
      n.step({ type: 'vote', from: 'z', to: 'x', term: 3, preVote: false, transfer: false, lastLogIndex: 2, lastLogTerm: 2 });
      const answers = n.ready().messages.filter((m) => m.type === 'voteResp');
      assert.deepEqual(
        answers.map((m) => [m.to, m.type === 'voteResp' && m.granted]),
        [['y', false], ['z', true]],
      );
    });

    it('dissertation §9.6: PreVote — a node that was partitioned away does not raise the term when it comes back', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      const term = c.node('a').status().term;
      c.isolate('c');
      c.tick('c', 60); // c campaigns in vain, but only with pre-votes
      assert.equal(c.node('c').status().term, term);
      c.heal();
      c.tickAll(5);
      assert.equal(c.leaderId(), 'a');
      assert.equal(c.node('a').status().term, term);
    });

    it('dissertation §6.2: CheckQuorum — a leader that cannot reach a quorum steps down', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('a');
      c.tick('a', 25);
      assert.notEqual(c.node('a').status().role, 'leader');
    });

    it('dissertation §4.2.3: while a follower hears from its leader it ignores a disruptive candidate', () => {
      const c = new TestCluster(['a', 'b', 'c'], { preVote: false });
      c.elect('a');
      const term = c.node('a').status().term;
      c.node('b').step({
        type: 'vote', from: 'c', to: 'b', term: term + 1, preVote: false, transfer: false, lastLogIndex: 99, lastLogTerm: 99,
      });
      c.stabilize();
      assert.equal(c.node('b').status().term, term);
      assert.equal(c.node('b').status().leader, 'a');
    });
  });

  describe('log replication', () => {
    it('Raft §5.3: proposals are replicated, committed and applied in order on every node', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      for (const v of ['x', 'y', 'z']) c.node('a').propose(bytes(v));
      c.stabilize();
      c.tickAll(2);
      for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x', 'y', 'z']);
    });

    it('Raft §5.3: a follower refuses proposals and names the leader', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      assert.throws(() => c.node('b').propose(bytes('x')), (e: unknown) => e instanceof NotLeaderError && e.leader === 'a');
    });

    it('Raft §5.3: a follower with a conflicting suffix is truncated to the leader\'s log, backtracking a whole term per round trip', () => {
      const c2 = new TestCluster(['a', 'b', 'c'], { preVote: false, checkQuorum: false });
      c2.elect('a');
      c2.node('a').propose(bytes('base'));
      c2.stabilize();
      c2.tickAll(1);
      // b leads a new term alone and writes 50 entries that never commit.
      c2.isolate('a');
      c2.elect('b');
      assert.equal(c2.node('b').status().role, 'leader');
      c2.isolate('b');
      for (let i = 0; i < 50; i++) c2.node('b').propose(bytes(`stale${i}`));
      c2.stabilize();
      // c becomes leader with a newer term and a different suffix.
      c2.heal();
      c2.isolate('b');
      c2.elect('c');
      assert.equal(c2.node('c').status().role, 'leader');
      for (let i = 0; i < 5; i++) c2.node('c').propose(bytes(`new${i}`));
      c2.stabilize();
      const before = c2.sent.length;
      c2.heal();
      c2.tickAll(3);
      const appendsToB = c2.sent.slice(before).filter((m) => m.type === 'append' && m.to === 'b').length;
      assert.deepEqual(c2.appliedData('b'), c2.appliedData('c'));
      assert.ok(c2.appliedData('b').includes('new4'));
      assert.ok(!c2.appliedData('b').some((v) => v.startsWith('stale')));
      assert.ok(appendsToB < 12, `backtracking took ${appendsToB} appends; a whole term should be skipped at once`);
    });

    it('Raft §5.4.2 (Figure 8): replicas of an earlier-term entry alone do not advance commit', () => {
      // a leads term 3 with [1:t1, 2:t2]; its no-op (3:t3) is not yet acknowledged by anyone.
      const a = new RaftNode(defaultRaftConfig('a', new SeededRng(3), { preVote: false, checkQuorum: false }), {
        hardState: { term: 2, vote: '', commit: 1 },
        snapshot: initialSnapshot(membership(['a', 'b', 'c'])),
        logBase: { index: 0, term: 0 },
        entries: [entry(1, 1), entry(2, 2)],
        applied: 1,
      });
      a.campaign();
      let rd = a.ready();
      a.advance(rd);
      a.step({ type: 'voteResp', from: 'b', to: 'a', term: 3, preVote: false, granted: true });
      assert.equal(a.status().role, 'leader');
      rd = a.ready();
      a.advance(rd);
      // b acknowledges index 2 (term 2), not the no-op at index 3.
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 3, reject: false, index: 2, hintIndex: 0, hintTerm: 0 });
      assert.equal(a.status().commit, 1, 'index 2 is on a majority but of an earlier term');
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 3, reject: false, index: 3, hintIndex: 0, hintTerm: 0 });
      assert.equal(a.status().commit, 3);
    });

    it('a member\'s acknowledgement or snapshot report past the leader\'s log is dropped: no match, no commit from it', () => {
      const a = new RaftNode(defaultRaftConfig('a', new SeededRng(3), { preVote: false, checkQuorum: false }), {
        hardState: { term: 2, vote: '', commit: 1 },
        snapshot: initialSnapshot(membership(['a', 'b', 'c'])),
        logBase: { index: 0, term: 0 },
        entries: [entry(1, 1), entry(2, 2)],
        applied: 1,
      });
      a.campaign();
      a.advance(a.ready());
      a.step({ type: 'voteResp', from: 'b', to: 'a', term: 3, preVote: false, granted: true });
      a.advance(a.ready()); // the no-op (3) saved and sent
      a.propose(bytes('x')); // 4
      a.advance(a.ready());
      // b claims entries 5..1000 that do not exist, by an append answer and by a snapshot report.
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 3, reject: false, index: 1000, hintIndex: 0, hintTerm: 0 });
      a.step({ type: 'snapshotResp', from: 'c', to: 'a', term: 3, reject: false, index: 5000 });
      const st = a.status();
      assert.equal(st.commit, 1, 'nothing committed on lies');
      assert.equal(st.progress?.b?.match ?? 0, 0, 'b\'s match not moved');
      assert.equal(st.progress?.c?.match ?? 0, 0, 'c\'s match not moved');
      // The truth still counts: b holds 4.
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 3, reject: false, index: 4, hintIndex: 0, hintTerm: 0 });
      assert.equal(a.status().commit, 4);
    });

    it('while a Ready is outstanding: takeAppends gives the new proposals\' appends, takeCommitted only durable committed entries, each once', () => {
      const a = new RaftNode(defaultRaftConfig('a', new SeededRng(3), { preVote: false, checkQuorum: false }), {
        hardState: { term: 1, vote: '', commit: 0 },
        snapshot: initialSnapshot(membership(['a', 'b', 'c'])),
        logBase: { index: 0, term: 0 },
        entries: [],
        applied: 0,
      });
      a.campaign();
      a.advance(a.ready());
      a.step({ type: 'voteResp', from: 'b', to: 'a', term: 2, preVote: false, granted: true });
      a.advance(a.ready()); // the no-op (1) saved and sent
      for (const to of ['b', 'c']) a.step({ type: 'appendResp', from: to, to: 'a', term: 2, reject: false, index: 1, hintIndex: 0, hintTerm: 0 });
      const rd1 = a.ready();
      assert.deepEqual(rd1.committedEntries.map((e) => e.index), [1]);
      a.advance(rd1);
      a.propose(bytes('x')); // 2
      const rd2 = a.ready(); // saving 2 ...
      assert.deepEqual(rd2.entries.map((e) => e.index), [2]);
      assert.deepEqual(a.takeAppends(), [], 'nothing new proposed since the Ready');
      a.propose(bytes('y')); // 3, proposed during the save of 2
      assert.deepEqual(a.takeAppends(), [], 'b and c have 2 in flight: they get 3 when they answer');
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 2, reject: false, index: 2, hintIndex: 0, hintTerm: 0 });
      const appends = a.takeAppends();
      assert.deepEqual(appends.map((m) => (m.type === 'append' ? [m.to, m.entries.map((e) => e.index)] : m.type)), [['b', [3]]], 'b answered: 3 goes to b now');
      assert.deepEqual(a.takeAppends(), [], 'each append is given once');
      a.step({ type: 'appendResp', from: 'c', to: 'a', term: 2, reject: false, index: 2, hintIndex: 0, hintTerm: 0 });
      a.propose(bytes('z')); // 4, while b and c have 3 in flight
      assert.deepEqual(
        a.takeAppends().map((m) => (m.type === 'append' ? [m.to, m.entries.map((e) => e.index)] : m.type)),
        [['c', [3]]],
        'c answered 2: it gets 3; 4 waits for an answer (or the next Ready)',
      );
      // b and c acknowledge 3 while 2 is being saved here.
      a.step({ type: 'appendResp', from: 'b', to: 'a', term: 2, reject: false, index: 3, hintIndex: 0, hintTerm: 0 });
      a.step({ type: 'appendResp', from: 'c', to: 'a', term: 2, reject: false, index: 3, hintIndex: 0, hintTerm: 0 });
      assert.equal(a.status().commit, 3, 'b and c hold 3: a quorum without the leader');
      assert.deepEqual(a.takeCommitted(), [], 'committed, but 2 and 3 are not durable here yet');
      a.advance(rd2); // 2 is saved
      assert.deepEqual(a.takeCommitted().map((e) => e.index), [2], 'the committed entry durable here, not 3');
      assert.deepEqual(a.takeCommitted(), [], 'given once');
      const rd3 = a.ready();
      assert.deepEqual(rd3.entries.map((e) => e.index), [3, 4]);
      assert.deepEqual(rd3.committedEntries.map((e) => e.index), [3], 'the next Ready does not carry 2 again');
      assert.deepEqual(a.takeCommitted(), [], '3 was handed over by the Ready');
      a.advance(rd3);
      assert.equal(a.status().applied, 3);
      assert.deepEqual(a.takeAppends().filter((m) => m.type === 'append' && m.entries.length > 0), [], 'nothing new to send');
    });

    it('flow control: no more than maxInflightAppends appends are in flight to a silent follower', () => {
      const c = new TestCluster(['a', 'b', 'c'], { maxInflightAppends: 4, maxAppendBytes: 1 });
      c.elect('a');
      c.cutLink('b', 'a'); // b receives but its answers are lost
      const before = c.sent.length;
      for (let i = 0; i < 50; i++) {
        c.node('a').propose(bytes(`v${i}`));
        c.stabilize();
      }
      const appendsToB = c.sent.slice(before).filter((m) => m.type === 'append' && m.to === 'b' && m.entries.length > 0);
      assert.ok(appendsToB.length <= 4, `${appendsToB.length} appends in flight`);
    });

    it('flow control: each append carries at most maxAppendBytes of entry data (but at least one entry)', () => {
      const c = new TestCluster(['a', 'b'], { maxAppendBytes: 10 });
      c.elect('a');
      c.isolate('b');
      for (let i = 0; i < 10; i++) c.node('a').propose(bytes('0123456789'.slice(0, 6)));
      c.stabilize();
      const before = c.sent.length;
      c.heal();
      c.tickAll(3);
      const appends = c.sent.slice(before).filter((m) => m.type === 'append' && m.to === 'b');
      for (const m of appends) {
        if (m.type !== 'append') continue;
        const size = m.entries.reduce((s, e) => s + e.data.length, 0);
        assert.ok(m.entries.length <= 1 || size <= 10, `append of ${size} bytes`);
      }
      assert.deepEqual(c.appliedData('b'), c.appliedData('a'));
    });

    it('flow control: each append carries at most APPEND_ENTRIES_MAX entries, however small they are', () => {
      // The receivers refuse an append with more (src/transport/codec.ts): the leader must never send one.
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('c');
      const n = APPEND_ENTRIES_MAX + 100;
      for (let i = 0; i < n; i++) c.node('a').propose(bytes('x')); // n bytes: far below maxAppendBytes
      c.stabilize();
      const before = c.sent.length;
      c.heal();
      c.tickAll(3);
      const appends = c.sent.slice(before).flatMap((m) => (m.type === 'append' && m.to === 'c' ? [m.entries.length] : []));
      assert.ok(appends.length > 0);
      assert.ok(Math.max(...appends) <= APPEND_ENTRIES_MAX, `an append of ${Math.max(...appends)} entries`);
      assert.equal(c.appliedData('c').length, c.appliedData('a').length);
      assert.ok(c.appliedData('c').length >= n);
    });

    it('flow control: a lone follower catching up gets a full pipeline, also from the acks that commit (simulator seed 1651364)', () => {
      // a leads b and c; c is down for good, b missed 40 entries. Every ack of b commits (b and a are the quorum):
      // the leader must still fill b's window after it, not send one append per ack (one entry per round trip).
      const c = new TestCluster(['a', 'b', 'c'], { maxAppendBytes: 1 });
      c.elect('a');
      c.isolate('b');
      c.isolate('c');
      for (let i = 0; i < 40; i++) c.node('a').propose(bytes(`v${i}`));
      c.stabilize();
      c.heal();
      c.isolate('c');
      c.node('a').tick(); // a heartbeat (no delivery yet): b answers it, and the leader sends it what it lacks
      let rounds = 0;
      for (let done = false; !done; ) {
        rounds++;
        assert.ok(rounds < 200, 'b did not catch up within 200 delivery rounds');
        try {
          c.stabilize(1);
          done = true;
        } catch {
          // still busy: another round
        }
      }
      assert.equal(c.node('b').status().lastIndex, c.node('a').status().lastIndex);
      assert.equal(c.node('a').status().commit, c.node('a').status().lastIndex);
      c.tick('a'); // the commit index reaches b
      assert.deepEqual(c.appliedData('b'), c.appliedData('a'));
      // A probe round trip, then the 40 entries in one window: a handful of rounds; one entry per round trip is ~80.
      assert.ok(rounds <= 12, `b caught up in ${rounds} delivery rounds`);
    });

    it('limits: proposals beyond maxUncommittedBytes are refused, not queued without end', () => {
      const c = new TestCluster(['a', 'b', 'c'], { maxUncommittedBytes: 100 });
      c.elect('a');
      c.isolate('a');
      let refused = 0;
      for (let i = 0; i < 50; i++) {
        try {
          c.node('a').propose(new Uint8Array(10));
        } catch (e) {
          assert.ok(e instanceof ProposalDroppedError);
          refused++;
        }
      }
      assert.ok(refused >= 39, `refused ${refused}`);
    });
  });

  describe('leadership transfer (dissertation §3.10)', () => {
    it('TimeoutNow makes the caught-up target the leader of the next term', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const term = c.node('a').status().term;
      c.node('a').transferLeadership('c');
      c.stabilize();
      assert.equal(c.leaderId(), 'c');
      assert.equal(c.node('c').status().term, term + 1);
      c.node('c').propose(bytes('y'));
      c.stabilize();
      c.tickAll(2);
      assert.deepEqual(c.appliedData('a'), ['x', 'y']);
    });

    it('a lagging target is caught up first; proposals are refused while the transfer runs', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('c');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('a').transferLeadership('c');
      assert.throws(() => c.node('a').propose(bytes('y')), ProposalDroppedError);
      c.heal();
      c.tickAll(3);
      assert.equal(c.leaderId(), 'c');
      assert.deepEqual(c.appliedData('c'), ['x']);
    });

    it('a TimeoutNow from any member but the leader followed in this term is dropped: no election, no term moved (review11)', () => {
      // {a, b, c} with learner d; a leads. d (a learner's certificate) and c (a voter, not the leader) send b TimeoutNow
      // in the current term and in the next: b must neither campaign nor move its term, and a keeps leading.
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const term = c.node('a').status().term;
      for (const from of ['d', 'c']) {
        for (const t of [term, term + 1]) {
          c.node('b').step({ type: 'timeoutNow', from, to: 'b', term: t });
          c.stabilize();
          assert.equal(c.node('b').status().role, 'follower', `TimeoutNow from ${from} in term ${t}`);
          assert.equal(c.node('b').status().term, term, `TimeoutNow from ${from} in term ${t}`);
          assert.equal(c.leaderId(), 'a');
          assert.equal(c.node('a').status().term, term);
        }
      }
      // The leader's own TimeoutNow still hands b the leadership.
      c.node('b').step({ type: 'timeoutNow', from: 'a', to: 'b', term });
      c.stabilize();
      assert.equal(c.leaderId(), 'b');
      assert.equal(c.node('b').status().term, term + 1);
    });

    it('a transfer that cannot finish is abandoned after an election timeout', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('c');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('a').transferLeadership('c');
      c.tick('a', 12);
      assert.equal(c.node('a').status().leadTransferee, '');
      c.node('a').propose(bytes('y'));
    });
  });

  describe('ReadIndex (dissertation §6.4)', () => {
    it('the leader answers a read with its commit index once a quorum confirms its leadership', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('a').readIndex('r1');
      c.stabilize();
      const rs = c.readStates.get('a') ?? [];
      assert.deepEqual(rs, [{ context: 'r1', index: c.node('a').status().commit }]);
    });

    it('a leader cut off from its quorum cannot confirm a read', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('a');
      c.node('a').readIndex('r1');
      c.stabilize();
      assert.deepEqual(c.readStates.get('a'), []);
      c.tick('a', 25); // CheckQuorum: it steps down and the read fails
      assert.equal((c.readFailures.get('a') ?? []).length, 1);
    });

    it('a follower forwards the read to the leader and gets the leader\'s commit index', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('b').readIndex('rb');
      c.stabilize();
      assert.deepEqual(c.readStates.get('b'), [{ context: 'rb', index: c.node('a').status().commit }]);
    });

    it('a read with no known leader fails at once', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.node('b').readIndex('rb');
      c.stabilize();
      assert.equal((c.readFailures.get('b') ?? []).length, 1);
    });
  });

  describe('membership changes (dissertation §4.1)', () => {
    it('a learner receives the log but does not vote; promoted, it counts toward the quorum', () => {
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c']));
      c.elect('a');
      c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
      c.stabilize();
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.tickAll(2);
      // d joined after the log began: it starts from a snapshot, then receives the log.
      const meta = c.takeSnapshot('a');
      c.tickAll(2);
      assert.ok(c.installSnapshot('d', meta, 'a'));
      c.tickAll(2);
      assert.deepEqual(c.appliedData('d'), ['x']);
      assert.deepEqual(c.node('a').status().membership.learners, ['d']);
      c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' });
      c.stabilize();
      c.tickAll(2);
      assert.deepEqual([...c.node('a').status().membership.voters].sort(), ['a', 'b', 'c', 'd']);
      // With 4 voters the quorum is 3: losing b and c stops commits.
      c.isolate('b');
      c.isolate('c');
      const commit = c.node('a').status().commit;
      c.node('a').propose(bytes('y'));
      c.stabilize();
      assert.equal(c.node('a').status().commit, commit);
    });

    it('a member that joined after the log began starts from a snapshot, not from its own bootstrap membership', () => {
      // d was started with --peers naming too few members (a and itself): a membership of its own making, which the
      // log's changes would be applied to. Promoted, it would count a quorum of 2 among {a, d}, which a quorum of
      // {b, c, e} (3 of the 5 voters) need not meet.
      const c = new TestCluster(['a', 'b', 'c', 'd', 'e'], {}, membership(['a', 'b', 'c', 'e']));
      const d = c.persisted.get('d');
      assert.ok(d !== undefined);
      d.snapshot = initialSnapshot(membership(['a', 'd']));
      c.start('d');
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
      c.stabilize();
      c.tickAll(2);
      const fromFirst = c.sent.filter((m) => m.to === 'd' && m.type === 'append' && m.prevLogIndex === 0);
      assert.deepEqual(fromFirst, [], 'no entries from the first are sent to d');
      assert.ok(c.node('a').snapshotWanted() > 0, 'a is asked for a snapshot');
      const meta = c.takeSnapshot('a');
      c.tickAll(2);
      assert.deepEqual(c.snapshotsWanted.get('d'), [meta], 'd is offered it');
      assert.ok(c.installSnapshot('d', meta, 'a'));
      c.tickAll(2);
      assert.deepEqual(c.appliedData('d'), ['x']);
      c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' });
      c.stabilize();
      c.tickAll(2);
      const voters = (id: string): string[] => [...c.node(id).status().membership.voters].sort();
      assert.deepEqual(voters('a'), ['a', 'b', 'c', 'd', 'e']);
      assert.deepEqual(voters('d'), voters('a'), "d's voters are the cluster's");
    });

    it("a member removed, wiped and added again with other peers takes the log's base from its leader's first append", () => {
      // c was in the bootstrap membership, so a leader that never compacted sends it the log from the first entry:
      // changes to that base. Restarted empty with --peers naming too few (a and itself), it applied them to {a, c}
      // and, promoted, counted a quorum of 2 among {a, c}, which a quorum of {b, d, e} need not meet.
      const c = new TestCluster(['a', 'b', 'c', 'd', 'e']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'c' });
      c.stabilize();
      c.tickAll(2);
      c.persisted.set('c', { hardState: { term: 0, vote: '', commit: 0 }, entries: [], logBase: { index: 0, term: 0 }, snapshot: initialSnapshot(membership(['a', 'c'])), applied: [], appliedIndex: 0 });
      c.start('c');
      c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'c' });
      c.stabilize();
      c.tickAll(2);
      const first = c.sent.find((m) => m.to === 'c' && m.type === 'append' && m.prevLogIndex === 0 && m.entries.length > 0);
      assert.ok(first !== undefined && first.type === 'append', 'c is sent the log from the first entry');
      assert.deepEqual([...(first.base?.voters ?? [])].sort(), ['a', 'b', 'c', 'd', 'e'], 'with the base it starts from');
      assert.deepEqual(c.persisted.get('c')?.snapshot.membership.voters.slice().sort(), ['a', 'b', 'c', 'd', 'e'], 'c persisted it');
      assert.deepEqual(c.appliedData('c'), ['x']);
      c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'c' });
      c.stabilize();
      c.tickAll(2);
      const voters = (id: string): string[] => [...c.node(id).status().membership.voters].sort();
      assert.deepEqual(voters('a'), ['a', 'b', 'c', 'd', 'e']);
      assert.deepEqual(voters('c'), voters('a'), "c's voters are the cluster's");
      c.start('c');
      assert.deepEqual(voters('c'), voters('a'), 'and stay so after a restart');
    });

    it('a follower that knows the leader of its term takes no other member for it (Raft §5.2: one leader a term)', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const b = c.node('b');
      const { term, lastIndex, commit } = b.status();
      const replies = [
        ...b.stepForReplies({ type: 'heartbeat', from: 'c', to: 'b', term, commit: 0, readSeq: 0 }),
        ...b.stepForReplies({ type: 'append', from: 'c', to: 'b', term, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term, type: 'normal', data: bytes('forged') }] }),
      ];
      assert.deepEqual(replies, [], 'unanswered');
      assert.equal(b.status().leader, 'a');
      assert.equal(b.status().lastIndex, lastIndex, 'nothing appended');
      assert.equal(b.status().commit, commit, 'nor committed (before: the forged entry was, and applied here only)');
    });

    it('a voter takes at once the appends of the member it voted for in this term, though its configuration names it a learner (promoted in an entry it lacks)', () => {
      // {a, b, c} with learner d; b lacks the entry promoting d. Having voted for d in a term, b dropped d's appends of
      // that term until an election timeout after its vote; d, hearing from no quorum, stepped down first, each time
      // (simulator seed 52952: no write committed for 4.9 s).
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.stabilize();
      const { term, lastIndex } = c.node('b').status();
      c.isolate('b');
      for (let i = 0; i < 40; i++) c.tick('b'); // an election timeout without a leader: d's vote request is taken
      const t = c.node('b').status().term + 1;
      const granted = c.node('b').stepForReplies({ type: 'vote', from: 'd', to: 'b', term: t, lastLogIndex: lastIndex + 5, lastLogTerm: term, preVote: false, transfer: false });
      assert.ok(granted.some((r) => r.type === 'voteResp' && r.granted), 'b votes for d');
      const replies = c.node('b').stepForReplies({ type: 'heartbeat', from: 'd', to: 'b', term: t, commit: 0, readSeq: 0 });
      assert.ok(replies.some((r) => r.type === 'heartbeatResp'), 'b answers the heartbeat of the leader it elected');
      assert.equal(c.node('b').status().leader, 'd');
    });

    it('a learner is taken for no candidate or leader of a later term while the leader is heard: no transfer vote, no forged append', () => {
      // {a, b, c} with learner d; a leads. One message of d's certificate made it leader: a transfer vote of term + 1
      // (it skips the voters' lease) got b's and c's votes, or an append of term + 1 made it b's leader, whose forged
      // entry b appended, committed, and (holding the highest last term) got committed everywhere once b was elected.
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const { term, lastIndex } = c.node('b').status();
      for (const to of ['b', 'c']) {
        const replies = c.node(to).stepForReplies({ type: 'vote', from: 'd', to, term: term + 1, lastLogIndex: lastIndex, lastLogTerm: term, preVote: false, transfer: true });
        assert.deepEqual(replies, [], `${to} grants d no transfer vote`);
        assert.equal(c.node(to).status().term, term);
      }
      const forged = { type: 'append', from: 'd', to: 'b', term: term + 1, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term: term + 1, type: 'normal', data: bytes('forged') }] } as const;
      assert.deepEqual(c.node('b').stepForReplies(forged), [], 'unanswered');
      c.stabilize();
      assert.equal(c.node('b').status().leader, 'a');
      assert.equal(c.node('b').status().term, term);
      assert.equal(c.node('b').status().lastIndex, lastIndex, 'nothing appended');
      c.tickAll(30);
      assert.equal(c.leaderId(), 'a');
      for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x'], `${id} applied no forged entry`);
      // Once b hears from no leader for an election timeout, a member it knows as a learner (promoted in an entry b
      // lacks, say) is taken as the leader of a later term again.
      c.isolate('b');
      let ticks = 0;
      for (; ticks < 200 && c.node('b').status().leader !== 'd'; ticks++) {
        c.tick('b');
        c.node('b').step({ type: 'heartbeat', from: 'd', to: 'b', term: term + 1, commit: 0, readSeq: 0 });
      }
      assert.equal(c.node('b').status().leader, 'd', `taken within ${ticks} ticks`);
    });

    it('a learner\'s later-term answer moves no term (review18): it deposed a healthy leader and left every voter it reached with no leader', () => {
      // learnerClaimTooSoon drops a learner's claims to lead while a voter heard from a leader less than an election
      // timeout ago. One answer of a later term from d (its own appendResp to the leader, or a snapshotResp, which a
      // peer may send unasked) deposed a and made b and c followers of no leader: an election at d's will, as often as
      // it liked, and each one opened the window (an election timeout without a leader) in which a learner's append
      // is taken. d's claims that follow, one a tick, must change nothing either.
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const { term, lastIndex } = c.node('a').status();
      c.node('a').step({ type: 'appendResp', from: 'd', to: 'a', term: term + 1, reject: false, index: lastIndex, hintIndex: 0, hintTerm: 0 });
      for (const id of ['b', 'c']) c.node(id).step({ type: 'snapshotResp', from: 'd', to: id, term: term + 1, index: 0, reject: false });
      for (const id of ['a', 'b', 'c']) assert.equal(c.node(id).status().term, term, `${id}'s term`);
      assert.equal(c.node('a').status().role, 'leader');
      // And the claim that followed: d's append of that term, each tick, while the voters' election timeouts run.
      for (let tick = 0; tick < 40; tick++) {
        for (const id of ['b', 'c']) {
          const t = c.node(id).status().term;
          const idx = c.node(id).status().lastIndex;
          c.node(id).step({ type: 'append', from: 'd', to: id, term: t + 1, prevLogIndex: idx, prevLogTerm: term, commit: idx + 1, entries: [{ index: idx + 1, term: t + 1, type: 'normal', data: bytes('forged') }] });
        }
        c.tickAll(1);
        c.stabilize();
      }
      assert.equal(c.leaderId(), 'a');
      for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x'], `${id}'s state machine`);
    });

    it('an id the configuration does not name is held to the learner rules: no claim of it taken while the leader is heard, no answer of it moves a term; a leader it does not name is followed once none other was heard for an election timeout', () => {
      // The peer plane passes a Raft message from outside a member's configuration to the core (peer-guard.ts, scope
      // 'message'): the sender may be the leader, added in entries this member lacks, that alone can bring it up to
      // date (simulator seed 358: a new member whose snapshot predated the leader's own addition refused it for ever).
      // {a, b, c} lead by a; e is named by no configuration (removed, or started for an add that failed). Taken, its
      // transfer vote or append of a later term made it the leader (a forged entry appended and committed), and its
      // answer of a later term deposed a healthy leader.
      const c = new TestCluster(['a', 'b', 'c', 'e'], {}, membership(['a', 'b', 'c']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const { term, lastIndex } = c.node('b').status();
      for (const to of ['b', 'c']) {
        const replies = c.node(to).stepForReplies({ type: 'vote', from: 'e', to, term: term + 1, lastLogIndex: lastIndex + 9, lastLogTerm: term, preVote: false, transfer: true });
        assert.deepEqual(replies, [], `${to} grants e no transfer vote`);
      }
      const forged = { type: 'append', from: 'e', to: 'b', term: term + 1, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term: term + 1, type: 'normal', data: bytes('forged') }] } as const;
      assert.deepEqual(c.node('b').stepForReplies(forged), [], 'unanswered');
      c.node('a').step({ type: 'appendResp', from: 'e', to: 'a', term: term + 2, reject: false, index: lastIndex, hintIndex: 0, hintTerm: 0 });
      c.node('c').step({ type: 'snapshotResp', from: 'e', to: 'c', term: term + 2, index: 0, reject: false });
      for (const id of ['a', 'b', 'c']) assert.equal(c.node(id).status().term, term, `${id}'s term`);
      c.stabilize();
      c.tickAll(30);
      assert.equal(c.leaderId(), 'a');
      assert.equal(c.node('a').status().term, term);
      for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x'], `${id} applied no forged entry`);
      // Cut off from a, b goes an election timeout without a leader: e's append is taken (b's configuration lacks e,
      // as a member's lacks a leader added in entries it has not received), and b appends and applies what e commits.
      c.isolate('b');
      const t = c.node('b').status().term + 5;
      let ticks = 0;
      for (; ticks < 200 && c.node('b').status().leader !== 'e'; ticks++) {
        c.tick('b');
        c.node('b').step({ type: 'heartbeat', from: 'e', to: 'b', term: t, commit: 0, readSeq: 0 });
      }
      assert.equal(c.node('b').status().leader, 'e', `taken within ${ticks} ticks`);
      const idx = c.node('b').status().lastIndex;
      assert.equal(idx, lastIndex, 'b appended nothing meanwhile');
      const replies = c.node('b').stepForReplies({ type: 'append', from: 'e', to: 'b', term: t, prevLogIndex: idx, prevLogTerm: term, commit: idx + 1, entries: [{ index: idx + 1, term: t, type: 'normal', data: bytes('from e') }] });
      assert.ok(replies.some((r) => r.type === 'appendResp' && !r.reject), 'b acknowledges the append of the leader it follows');
      c.stabilize();
      assert.deepEqual(c.appliedData('b'), ['x', 'from e']);
    });

    it('a follower just restarted takes no learner for the leader of its term: no forged entry where the others hold the leader\'s', () => {
      // b restarts knowing its term but no leader yet. d's append of that term made d its leader (0c4571e drops one
      // only once a leader is known): b appended and applied 'forged' at the index and term where a and c then applied
      // a's 'y', and dropped a's appends for the rest of the term: the state machines diverged for good.
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.start('b');
      const b = c.node('b');
      const { term, lastIndex } = b.status();
      assert.equal(b.status().leader, '', 'no leader known after the restart');
      const forged = { type: 'append', from: 'd', to: 'b', term, prevLogIndex: lastIndex, prevLogTerm: term, commit: lastIndex + 1, entries: [{ index: lastIndex + 1, term, type: 'normal', data: bytes('forged') }] } as const;
      assert.deepEqual(b.stepForReplies(forged), [], 'unanswered');
      c.stabilize();
      assert.equal(b.status().lastIndex, lastIndex, 'nothing appended');
      c.node('a').propose(bytes('y'));
      c.stabilize();
      c.tickAll(30);
      assert.equal(c.leaderId(), 'a');
      for (const id of ['a', 'b', 'c']) assert.deepEqual(c.appliedData(id), ['x', 'y'], `${id}'s state machine`);
      // A member b knows as a learner (promoted in an entry b lacks, say, and leading) is taken as the leader of b's term
      // once b has gone an election timeout without hearing from another leader: its heartbeat, one a tick, lands in
      // such a tick within a few election rounds.
      c.start('b');
      c.isolate('b');
      let ticks = 0;
      for (; ticks < 200 && c.node('b').status().leader !== 'd'; ticks++) {
        c.tick('b');
        c.node('b').step({ type: 'heartbeat', from: 'd', to: 'b', term: c.node('b').status().term, commit: 0, readSeq: 0 });
      }
      assert.equal(c.node('b').status().leader, 'd', `taken within ${ticks} ticks`);
    });

    it('a voter wiped and started again under its id, not removed, catches up from its leader (its old match is not kept)', () => {
      // Its leader held c's match from before the wipe, took every rejection at or below it for a stale one and sent
      // the append after it for ever: c never caught up (and that match went on counting toward commits).
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      for (let i = 0; i < 5; i++) c.node('a').propose(bytes(`x${i}`));
      c.stabilize();
      const match = c.node('a').status().progress.c?.match ?? 0;
      assert.ok(match > 5, `c acknowledged the writes (match ${match})`);
      c.persisted.set('c', { hardState: { term: 0, vote: '', commit: 0 }, entries: [], logBase: { index: 0, term: 0 }, snapshot: initialSnapshot(membership(['a', 'b', 'c'])), applied: [], appliedIndex: 0 });
      c.start('c');
      c.node('a').propose(bytes('after'));
      c.stabilize();
      c.tickAll(2);
      assert.equal(c.node('c').status().lastIndex, c.node('a').status().lastIndex, 'c holds the log again');
      assert.deepEqual(c.appliedData('c'), c.appliedData('a'));
      assert.equal(c.node('a').status().progress.c?.match, c.node('a').status().lastIndex);
    });

    it('a follower whose log is not empty keeps its base; a malformed one is never taken', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      const b = c.node('b');
      const term = b.status().term;
      const odd = membership(['a', 'z']);
      b.step({ type: 'append', from: 'a', to: 'b', term, prevLogIndex: 0, prevLogTerm: 0, entries: [], commit: 0, base: odd });
      c.stabilize();
      assert.deepEqual([...b.status().membership.voters].sort(), ['a', 'b', 'c'], 'b holds entries: its base stays');
      const fresh = new TestCluster(['a', 'b']);
      const n = fresh.node('b');
      for (const bad of [membership([]), membership(['a', 'a']), membership(['a'], ['a']), membership([''])]) {
        n.step({ type: 'append', from: 'a', to: 'b', term: 1, prevLogIndex: 0, prevLogTerm: 0, entries: [], commit: 0, base: bad });
        fresh.stabilize();
        assert.deepEqual([...n.status().membership.voters].sort(), ['a', 'b'], `not taken: ${JSON.stringify(bad)}`);
      }
    });

    it('a voter whose removal of itself is in its log but not committed still campaigns: it may hold the only longest log (seed 772448)', () => {
      // a leads {a, b, c, d} and removes itself; only d gets the entry, then d's disk fails for good. a restarts: its
      // latest configuration is {b, c, d}, which does not count it, and b and c (shorter logs) can never get its vote.
      const c = new TestCluster(['a', 'b', 'c', 'd']);
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.cutLink('a', 'b');
      c.cutLink('a', 'c');
      c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'a' });
      c.stabilize();
      assert.ok(c.node('d').status().lastIndex > c.node('b').status().lastIndex, 'd got the removal, b did not');
      c.heal();
      c.isolate('d');
      c.start('a');
      assert.deepEqual([...c.node('a').status().membership.voters].sort(), ['b', 'c', 'd'], 'a restarts on a configuration without itself');
      c.tickAll(200);
      const leader = c.leaderId();
      assert.ok(leader === 'b' || leader === 'c', `a leader among b and c once a's removal commits (leader: ${String(leader)})`);
      assert.deepEqual([...c.node(leader).status().membership.voters].sort(), ['b', 'c', 'd']);
      assert.deepEqual(c.appliedData(leader), ['x']);
      assert.notEqual(c.node('a').status().role, 'leader');
    });

    it('a learner asked for its vote by a candidate that counts it, refusing it for a longer log, campaigns and hands over (seed 917802)', () => {
      // a leads {a, b, c} with learner d; cut off, it appends d's promotion. b wins term 2 with c's vote, but only d
      // gets b's entry, and b is gone for good. a counts {a, b, c, d} (quorum 3) and d refuses it (d's log is of a
      // later term); c cannot get a's vote (a's log is longer); d, a learner in its own log, never campaigned.
      const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c'], ['d']));
      c.elect('a');
      c.node('a').propose(bytes('x'));
      c.stabilize();
      c.isolate('a');
      c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' });
      c.node('a').propose(bytes('lost'));
      c.stabilize();
      // b and c elect one of them; the other takes its vote request but none of its entries.
      const leads = (id: string): boolean => c.node(id).status().role === 'leader';
      c.drop = (m) => (m.from === 'b' || m.from === 'c') && (m.to === 'b' || m.to === 'c') && m.type !== 'vote' && m.type !== 'voteResp';
      for (let i = 0; i < 200 && !leads('b') && !leads('c'); i++) for (const id of ['b', 'c', 'd']) c.tick(id);
      c.drop = null;
      const [gone, left] = leads('b') ? ['b', 'c'] : ['c', 'b'];
      assert.ok(leads(gone), 'b or c leads term 2');
      assert.ok(c.node('d').status().lastIndex > c.node(left).status().lastIndex, `only d got ${gone}'s entry`);
      c.heal();
      c.isolate(gone);
      assert.deepEqual([...c.node('a').status().membership.voters].sort(), ['a', 'b', 'c', 'd'], "a's latest configuration counts d");
      assert.deepEqual([...c.node('d').status().membership.voters].sort(), ['a', 'b', 'c'], "d's does not");
      c.tickAll(300);
      const leader = ['a', left].find(leads);
      assert.ok(leader !== undefined, `a voter leads again (roles: ${['a', left, 'd'].map((id) => c.node(id).status().role).join(', ')})`);
      c.node(leader).propose(bytes('y'));
      c.stabilize();
      c.tickAll(2);
      for (const id of ['a', left, 'd']) assert.deepEqual(c.appliedData(id), ['x', 'y'], `${id} applied`);
      assert.deepEqual([...c.node(leader).status().membership.voters].sort(), ['a', 'b', 'c'], "d's uncommitted promotion is gone");
      assert.notEqual(c.node('d').status().role, 'leader', 'd handed over');
    });

    it('only one membership change at a time, and invalid ones are refused', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      assert.throws(() => c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'b' }), MembershipChangeError);
      assert.throws(() => c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'zz' }), MembershipChangeError);
      c.isolate('a');
      c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
      assert.throws(() => c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'e' }), MembershipChangeError);
    });

    describe('strict reconfiguration (etcd --strict-reconfig-check): no change whose new voters the leader heard from make no quorum of them', () => {
      const unreachable = (ids: string[]) => (e: unknown) => e instanceof ConfChangeUnreachableError && JSON.stringify(e.unreachable) === JSON.stringify(ids) && e.message.includes(`has not heard from ${ids.join(', ')} within the last 2 election timeouts`);

      it('with c down, removing b (or the leader a) is refused and changes nothing; removing c is taken; with c back, removing b is taken', () => {
        const c = new TestCluster(['a', 'b', 'c']);
        c.elect('a');
        c.isolate('c');
        c.tickAll(22); // more than two election timeouts (10 ticks each) without c's answers
        const a = c.node('a');
        assert.equal(a.status().role, 'leader');
        const before = a.status();
        // {a, c}: only a reachable, quorum 2. Accepted, a would step down at its next quorum check and nobody could lead until c came back.
        assert.throws(() => a.proposeConfChange({ op: 'removeNode', nodeId: 'b' }), unreachable(['c']));
        // Removing itself: {b, c}, only b reachable.
        assert.throws(() => a.proposeConfChange({ op: 'removeNode', nodeId: 'a' }), unreachable(['c']));
        assert.equal(a.status().lastIndex, before.lastIndex, 'nothing was appended');
        assert.deepEqual(a.status().membership, before.membership);
        c.tickAll(3);
        assert.equal(a.status().role, 'leader', 'the refusal left the leader in office');
        c.heal();
        c.tickAll(2); // c answers again
        a.proposeConfChange({ op: 'removeNode', nodeId: 'b' });
        c.stabilize();
        c.tickAll(2);
        assert.deepEqual([...a.status().membership.voters].sort(), ['a', 'c']);
        assert.equal(a.status().commit, a.status().lastIndex, 'the removal committed');
      });

      it('removing the dead member from 3 voters with 2 alive is taken: {a, b} are both reachable', () => {
        const c = new TestCluster(['a', 'b', 'c']);
        c.elect('a');
        c.isolate('c');
        c.tickAll(22);
        c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'c' });
        c.stabilize();
        c.tickAll(2);
        assert.deepEqual([...c.node('a').status().membership.voters].sort(), ['a', 'b']);
        assert.equal(c.node('a').status().commit, c.node('a').status().lastIndex);
      });

      it('a leader just elected counts no member it has not heard from yet in its term (undecided until it had two election timeouts to hear from it)', () => {
        // c is down from the start: the new leader made c's Progress when it took office, and never heard from it.
        const c = new TestCluster(['a', 'b', 'c']);
        c.isolate('c');
        c.elect('a');
        c.tickAll(1); // the no-op of a's term commits on b
        const undecided = (yes: boolean) => (e: unknown) => unreachable(['c'])(e) && (e as ConfChangeUnreachableError).undecided === yes;
        // Undecided: a has not had two election timeouts yet to hear from c (its driver asks again until it has).
        assert.throws(() => c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'b' }), undecided(true));
        c.tickAll(20);
        assert.throws(() => c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'b' }), undecided(false));
        c.heal();
        c.tickAll(1);
        c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'b' });
      });

      it('promoting a learner counts it only when it answered; a voter added directly never answered, so it counts as unreachable', () => {
        const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c']));
        c.elect('a');
        c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
        c.stabilize();
        c.tickAll(2);
        // d joined after the log began: it starts from a snapshot.
        assert.ok(c.installSnapshot('d', c.takeSnapshot('a'), 'a'));
        c.tickAll(2);
        c.isolate('c');
        c.isolate('d');
        c.tickAll(22);
        // {a, b, c, d}: a and b reachable, quorum 3.
        assert.throws(() => c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' }), (e: unknown) => unreachable(['c', 'd'])(e) && /^promote d refused/.test((e as Error).message));
        // e is no member: never heard, whatever happens to it; {a, b, c, e} has 2 reachable.
        assert.throws(
          () => c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'e' }),
          (e: unknown) => unreachable(['c', 'e'])(e) && /add e as a learner first/.test((e as Error).message),
        );
        c.heal();
        c.isolate('c');
        c.tickAll(2); // d answers again, c still down: a, b, d make 3 of 4
        c.node('a').proposeConfChange({ op: 'addVoter', nodeId: 'd' });
        c.stabilize();
        c.tickAll(2);
        assert.deepEqual([...c.node('a').status().membership.voters].sort(), ['a', 'b', 'c', 'd']);
        assert.equal(c.node('a').status().commit, c.node('a').status().lastIndex);
      });

      it('a learner that answers but still needs a snapshot (it could not acknowledge the promotion) counts as unreachable (etcd: isLearnerReady)', () => {
        const c = new TestCluster(['a', 'b', 'c', 'd'], {}, membership(['a', 'b', 'c']));
        c.elect('a');
        c.isolate('d');
        c.node('a').proposeConfChange({ op: 'addLearner', nodeId: 'd' });
        c.stabilize();
        for (let i = 0; i < 5; i++) c.node('a').propose(bytes(`v${i}`));
        c.stabilize();
        c.tickAll(1);
        const meta = c.takeSnapshot('a'); // d's entries are gone from a's log: d needs this snapshot first
        c.heal();
        c.isolate('c');
        c.tickAll(22); // d answers every heartbeat, and is offered the snapshot, which it has not fetched
        assert.ok(c.snapshotsWanted.get('d')?.some((m) => m.index === meta.index), 'd was offered the snapshot');
        const a = c.node('a');
        const before = a.status();
        // {a, b, c, d} needs 3: a, b and d, but d cannot hold the promotion entry before its snapshot is installed.
        // Taken, the change (and every write after it) would wait for d's install, however long the snapshot takes.
        assert.throws(
          () => a.proposeConfChange({ op: 'addVoter', nodeId: 'd' }),
          (e: unknown) => e instanceof ConfChangeUnreachableError && JSON.stringify(e.unreachable) === JSON.stringify(['c', 'd']) && /d needs a snapshot/.test(e.message) && /^promote d refused/.test(e.message),
        );
        assert.equal(a.status().lastIndex, before.lastIndex, 'nothing was appended');
        assert.ok(c.installSnapshot('d', meta, 'a'));
        c.tickAll(2); // d caught up: a, b, d make 3 of 4
        a.proposeConfChange({ op: 'addVoter', nodeId: 'd' });
        c.stabilize();
        c.tickAll(2);
        assert.deepEqual([...a.status().membership.voters].sort(), ['a', 'b', 'c', 'd']);
        assert.equal(a.status().commit, a.status().lastIndex, 'the promotion committed');
      });
    });

    it('a leader that removes itself steps down once the removal commits, and the rest elect a new leader', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.node('a').proposeConfChange({ op: 'removeNode', nodeId: 'a' });
      c.stabilize();
      c.tickAll(2);
      assert.notEqual(c.node('a').status().role, 'leader');
      c.tickAll(40);
      const leader = c.leaderId();
      assert.ok(leader === 'b' || leader === 'c', `leader ${String(leader)}`);
      assert.deepEqual([...c.node(leader).status().membership.voters].sort(), ['b', 'c']);
    });
  });

  describe('snapshots (Raft §7)', () => {
    it('a follower whose next entry was compacted away is offered the snapshot, installs it and catches up', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('c');
      for (let i = 0; i < 20; i++) c.node('a').propose(bytes(`v${i}`));
      c.stabilize();
      c.tickAll(1);
      const meta = c.takeSnapshot('a');
      assert.ok(c.node('a').status().firstIndex > 1);
      c.heal();
      c.tickAll(2);
      const wanted = c.snapshotsWanted.get('c') ?? [];
      assert.equal(wanted.length, 1);
      assert.equal(wanted[0]?.index, meta.index);
      assert.equal(c.node('a').status().progress.c?.state, 'snapshot');
      assert.equal(c.node('a').compactionFloor(), meta.index, 'nothing after the snapshot may be compacted while c installs it');
      assert.ok(c.installSnapshot('c', meta, 'a'));
      c.node('a').propose(bytes('after'));
      c.stabilize();
      c.tickAll(2);
      assert.deepEqual(c.appliedData('c'), c.appliedData('a'));
      assert.equal(c.node('a').status().progress.c?.state, 'replicate');
    });

    it('a failed fetch is reported and the leader offers the snapshot again', () => {
      const c = new TestCluster(['a', 'b', 'c']);
      c.elect('a');
      c.isolate('c');
      for (let i = 0; i < 5; i++) c.node('a').propose(bytes(`v${i}`));
      c.stabilize();
      c.tickAll(1);
      const meta = c.takeSnapshot('a');
      c.heal();
      c.tickAll(1);
      c.node('c').snapshotFailed(meta);
      c.stabilize();
      c.tickAll(3);
      assert.ok((c.snapshotsWanted.get('c') ?? []).length >= 2);
    });

    it('a node restarted from a snapshot whose log does not reach it discards the log', () => {
      const m = membership(['a']);
      const n = new RaftNode(defaultRaftConfig('a', new SeededRng(9)), {
        hardState: { term: 2, vote: 'a', commit: 2 },
        snapshot: { index: 10, term: 2, membership: m, sizeBytes: 0, digest: 'd' },
        logBase: { index: 0, term: 0 },
        entries: [entry(1, 1), entry(2, 2)],
        applied: 10,
      });
      const rd = n.ready();
      assert.deepEqual(rd.logReset, { index: 10, term: 2 });
      assert.equal(n.status().commit, 10);
      n.advance(rd);
    });
  });
});

/**
 * RaftNode.missedTicks: tick periods the driver's clock saw pass with no tick run count towards a leader's next
 * heartbeat only (etcd-io/raft's MsgBeat: heartbeats by a local clock), never towards an election timeout or the
 * CheckQuorum window (§6.2), which count the ticks run. test/unit/node/late-ticks.spec.ts shows what it is for: a
 * leader whose ticks came 120 ms apart lost its leadership to followers ticking on time.
 */
import assert from 'node:assert/strict';

import { TestCluster } from './harness.js';

const HEARTBEAT_TICKS = 3;
const ELECTION_TICKS = 10;

function heartbeatsFrom(c: TestCluster, from: string, since: number): number {
  return c.sent.slice(since).filter((m) => m.from === from && m.type === 'heartbeat').length;
}

describe('RaftNode.missedTicks', () => {
  it('a leader\'s next tick sends its heartbeats once the missed periods make up an interval; ticks alone take the whole interval', () => {
    const c = new TestCluster(['a', 'b', 'c'], { heartbeatIntervalTicks: HEARTBEAT_TICKS, electionTimeoutTicks: ELECTION_TICKS });
    c.elect('a');
    c.tick('a', HEARTBEAT_TICKS); // a heartbeat round: the interval starts again
    let since = c.sent.length;
    c.tick('a', 1);
    assert.equal(heartbeatsFrom(c, 'a', since), 0, 'one tick of 3: no heartbeat');
    c.node('a').missedTicks(1);
    c.tick('a', 1);
    assert.equal(heartbeatsFrom(c, 'a', since), 2, 'a tick, a missed period and a tick: one heartbeat to each follower');
    since = c.sent.length;
    c.node('a').missedTicks(1_000); // counted up to the interval, no further: one heartbeat round, not a burst
    c.tick('a', 1);
    assert.equal(heartbeatsFrom(c, 'a', since), 2);
    since = c.sent.length;
    c.tick('a', 1);
    assert.equal(heartbeatsFrom(c, 'a', since), 0, 'the interval starts again after it');
    for (const bad of [-1, 0, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      // Back to the start of an interval: tick until a heartbeat round went out.
      for (let i = 0, at = c.sent.length; i < HEARTBEAT_TICKS && heartbeatsFrom(c, 'a', at) === 0; i++) c.tick('a', 1);
      since = c.sent.length;
      c.node('a').missedTicks(bad);
      c.tick('a', 1);
      assert.equal(heartbeatsFrom(c, 'a', since), 0, `missedTicks(${bad}) changed nothing`);
    }
  });

  it('never moves a leader\'s CheckQuorum window: cut off, it steps down after an election timeout of ticks run, not before', () => {
    const c = new TestCluster(['a', 'b', 'c'], { heartbeatIntervalTicks: HEARTBEAT_TICKS, electionTimeoutTicks: ELECTION_TICKS });
    c.elect('a');
    c.tick('a', ELECTION_TICKS); // a CheckQuorum round passed with b and c answering
    c.isolate('a');
    let ticks = 0;
    while (c.node('a').status().role === 'leader' && ticks < 3 * ELECTION_TICKS) {
      c.node('a').missedTicks(1_000);
      c.tick('a', 1);
      ticks++;
    }
    assert.equal(c.node('a').status().role, 'follower');
    assert.ok(ticks >= ELECTION_TICKS, `stepped down after ${ticks} ticks run`);
  });

  it('never makes a follower campaign: its election timer counts the ticks it runs', () => {
    const c = new TestCluster(['a', 'b', 'c'], { heartbeatIntervalTicks: HEARTBEAT_TICKS, electionTimeoutTicks: ELECTION_TICKS });
    c.elect('a');
    c.isolate('a');
    for (let i = 0; i < ELECTION_TICKS - 1; i++) {
      c.node('b').missedTicks(1_000);
      c.tick('b', 1);
    }
    assert.equal(c.node('b').status().role, 'follower', 'fewer ticks than the shortest election timeout: no campaign');
    assert.equal(c.node('b').status().term, c.node('a').status().term);
  });
});

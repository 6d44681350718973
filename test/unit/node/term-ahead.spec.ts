/**
 * TERM_AHEAD_MAX (a message more than 2^20 terms ahead of its receiver is not
 * stepped) must not part two honest members for good. A member may move
 * another's term by up to 2^20 a message, each time within the rule; one that
 * did so to n1 alone a few times (found by peer-fuzz.spec, seed 3300000) left
 * n1 more than 2^20 terms ahead of n2: n1's campaigns were refused by n2 as
 * too far ahead, n2's answers from n1 dropped as too far ahead, and the two
 * never elected a leader again, with that member gone. An answer too far
 * ahead now moves its receiver's term by TERM_AHEAD_MAX (what an answer
 * within the rule may move it by), the answer itself still not stepped: the
 * member behind catches up in a few elections (its pre-votes answered with
 * the term ahead). A request too far ahead still moves nothing.
 */
import assert from 'node:assert/strict';

import type { Node} from '../../../src/node/node.js';
import { TERM_AHEAD_MAX } from '../../../src/node/node.js';
import { until } from '../../harness/until.js';
import { memoryNodes } from './memory-nodes.js';

const enc = new TextEncoder();

describe('node: members more than TERM_AHEAD_MAX terms apart', function () {
  this.timeout(30_000);
  const { nodes, start } = memoryNodes();

  it('elect a leader and take writes again: the one behind is moved up TERM_AHEAD_MAX at a time by answers, requests too far ahead still move nothing', async () => {
    await start(['n1', 'n2'], { tickMs: 10, electionTimeoutTicks: 15, heartbeatIntervalTicks: 2, proposalTimeoutMs: 3_000 });
    const n1 = nodes.get('n1') as Node;
    const n2 = nodes.get('n2') as Node;
    await until('a leader', 10_000, () => (n1.status().role === 'leader' || n2.status().role === 'leader' ? true : undefined));
    // n3 (a voter, otherwise silent) moves n1's term three times by TERM_AHEAD_MAX, each heartbeat within the rule.
    for (let i = 0; i < 3; i++) {
      const term = n1.status().term + TERM_AHEAD_MAX;
      await n1.handleRequest({ type: 'heartbeat', from: 'n3', to: 'n1', term, commit: 0, readSeq: 0 });
      assert.equal(n1.status().term, term);
    }
    assert.ok(n1.status().term > n2.status().term + TERM_AHEAD_MAX, `n1 at ${n1.status().term}, n2 at ${n2.status().term}`);
    // A request too far ahead is still refused, moving nothing.
    const before = n2.status();
    await assert.rejects(n2.handleRequest({ type: 'heartbeat', from: 'n3', to: 'n2', term: before.term + 3 * TERM_AHEAD_MAX, commit: 0, readSeq: 0 }), /more than 1048576 ahead/);
    assert.equal(n2.status().term, before.term);
    assert.equal(n2.status().leader, before.leader);
    // n3 is gone: n1 and n2 elect a leader of their own and take a write.
    const leader = await until('n1 and n2 to agree on a leader', 15_000, () => {
      const l = [n1, n2].find((n) => n.status().role === 'leader');
      return l !== undefined && n1.status().leader === n2.status().leader ? l : undefined;
    });
    const r = await leader.propose({ op: 'put', key: enc.encode('k'), value: enc.encode('v') });
    assert.ok(r.ok);
    assert.ok(leader.status().term <= Math.max(n1.status().term, n2.status().term));
  });
});

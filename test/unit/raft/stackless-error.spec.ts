/**
 * StacklessError (src/raft/stackless-error.ts) and the answers built on it:
 * NotLeaderError, ProposalDroppedError, NodeError and the in-memory disk's
 * errno errors capture no stack frames; Error.stackTraceLimit is left as it
 * was, so every other error keeps its stack.
 */
import assert from 'node:assert/strict';

import { NodeError } from '../../../src/node/errors.js';
import { NotLeaderError, ProposalDroppedError } from '../../../src/raft/errors.js';
import { StacklessError } from '../../../src/raft/stackless-error.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';

/** frames: the "    at ..." lines of an error's stack. */
function frames(e: Error): string[] {
  return (e.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
}

describe('StacklessError: answers without a stack', () => {
  it('NotLeaderError, ProposalDroppedError and NodeError carry their name, message and fields, and no stack frame', () => {
    const nl = new NotLeaderError('n2');
    assert.ok(nl instanceof Error);
    assert.equal(nl.leader, 'n2');
    assert.equal(nl.message, 'not the leader; the leader is n2');
    assert.deepEqual(frames(nl), []);
    assert.equal(nl.stack, 'NotLeaderError: not the leader; the leader is n2');

    const pd = new ProposalDroppedError('a transfer is under way');
    assert.deepEqual(frames(pd), []);
    assert.equal(pd.stack, 'ProposalDroppedError: a transfer is under way');

    const ne = new NodeError('notLeader', 'ask n3', 'n3', '127.0.0.1:7');
    assert.equal(ne.code, 'notLeader');
    assert.equal(ne.leaderId, 'n3');
    assert.equal(ne.leaderAddress, '127.0.0.1:7');
    assert.deepEqual(frames(ne), []);
    assert.equal(ne.stack, 'NodeError: ask n3');
  });

  it('keeps a cause, and leaves Error.stackTraceLimit as it was: other errors keep their stacks', () => {
    const saved = Error.stackTraceLimit;
    try {
      Error.stackTraceLimit = 7;
      const cause = new Error('disk');
      const e = new StacklessError('wrapped', { cause });
      assert.equal(e.cause, cause);
      assert.deepEqual(frames(e), []);
      assert.equal(Error.stackTraceLimit, 7);
      assert.ok(frames(new Error('a fault')).length > 0);
      assert.ok(frames(cause).length > 0);
      Error.stackTraceLimit = 0; // a process that wants no stacks keeps its setting
      void new NodeError('busy', 'later');
      assert.equal(Error.stackTraceLimit, 0);
    } finally {
      Error.stackTraceLimit = saved;
    }
  });

  it("MemorySnapshotIo's errno errors have their code and no stack frame, as node:fs/promises' have none of the caller's", async () => {
    const io = new MemorySnapshotIo();
    const err = await io.stat('/nowhere').then(
      () => null,
      (e: unknown) => e as Error & { code?: string },
    );
    assert.ok(err !== null);
    assert.equal(err.code, 'ENOENT');
    assert.deepEqual(frames(err), []);
  });
});

/**
 * LeaderForwarder.waitForLeader bounds its wait on the monotonic clock. The
 * bound used to be read from Date.now() on every poll: a wall clock stepped
 * back (NTP, a resumed VM; test:hosts' clock scenario steps a host by -1 h)
 * while no leader is known left the 20 ms poll running for the whole step
 * (an hour), long after the call's own deadline had ended it, one poll per
 * waiting call; stepped forward, the wait ended at once. run() likewise
 * gave the forwarded call the call's deadline read again after the step (an
 * hour more when stepped back).
 */
import { strict as assert } from 'node:assert';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { LEADER_WAIT_MS_MAX, LeaderForwarder, type NodeView } from '../../../src/api/leader-forwarder.js';
import type { CallOptions } from '../../../src/client/unary-call.js';
import { NodeError } from '../../../src/node/errors.js';

describe('LeaderForwarder.waitForLeader: a wall-clock step does not move its bound', () => {
  const node = { id: 'n1', brief: () => ({ role: 'follower', leader: '' }), dialAddressOf: () => '', addressOf: () => '' } as unknown as NodeView;
  const realNow = Date.now;
  afterEach(() => {
    Date.now = realNow;
  });

  it('the clock stepped back 1 h: still null at its deadline (200 ms), not an hour later', async () => {
    const f = new LeaderForwarder(node);
    try {
      const t0 = performance.now();
      const waiting = f.waitForLeader(realNow() + 200);
      Date.now = () => realNow() - 3_600_000;
      const r = await Promise.race([waiting, new Promise<'still waiting'>((res) => setTimeout(() => res('still waiting'), 2_000))]);
      assert.equal(r, null, 'waitForLeader still polls 2 s after its 200 ms deadline');
      assert.ok(performance.now() - t0 >= 150, 'it ended early');
    } finally {
      f.close();
    }
  });

  it('the clock stepped forward 1 h: it still waits up to its deadline (500 ms) for a leader', async () => {
    const f = new LeaderForwarder(node);
    try {
      const t0 = performance.now();
      const waiting = f.waitForLeader(realNow() + 500);
      Date.now = () => realNow() + 3_600_000;
      assert.equal(await waiting, null);
      const waitedMs = performance.now() - t0;
      assert.ok(waitedMs >= 400 && waitedMs < LEADER_WAIT_MS_MAX + 1_000, `waited ${Math.round(waitedMs)} ms`);
    } finally {
      f.close();
    }
  });

  it('run: the clock stepped back 1 h during the call: the forwarded call carries what is left of the 2 s deadline, not an hour more', async () => {
    const leaderNode = { id: 'n1', brief: () => ({ role: 'follower', leader: 'n2' }), dialAddressOf: () => '127.0.0.1:1', addressOf: () => '' } as unknown as NodeView;
    const f = new LeaderForwarder(leaderNode);
    try {
      const call = { metadata: new grpc.Metadata(), getDeadline: () => new Date(realNow() + 2_000) };
      let forwardedMs = -1;
      await f.run(
        call,
        () => {
          Date.now = () => realNow() - 3_600_000;
          return Promise.reject(new NodeError('notLeader', 'n1 is not the leader', 'n2'));
        },
        (_leader, opts: CallOptions) => {
          forwardedMs = opts.deadlineMs ?? -1;
          return Promise.resolve('ok');
        },
      );
      assert.ok(forwardedMs > 0 && forwardedMs <= 2_000, `the forwarded call's deadline: ${forwardedMs} ms`);
    } finally {
      f.close();
    }
  });
});

/**
 * ClusterService's waits are timed on the monotonic clock (chaos31, after
 * test:hosts' clock scenario). Vote's loop and the applied-index waiters of
 * HashState / CheckConsistency compared Date.now() with a wall-clock
 * deadline on every poll: a wall clock stepped back 1 h (NTP, a resumed VM)
 * kept Vote polling (and campaigning) every 2 ms for the hour, and a waiter
 * holding one of the APPLIED_WAITERS_MAX places for the hour; TransferLeadership
 * gave the node the whole TRANSFER_TIMEOUT_MS_MAX instead of what was left.
 */
import { strict as assert } from 'node:assert';
import * as grpc from '@grpc/grpc-js';
import { AppliedWaiters, createClusterService, type ClusterNode } from '../../../src/api/cluster-service.js';
import { LeaderForwarder, type NodeView } from '../../../src/api/leader-forwarder.js';

const HOUR_MS = 3_600_000;

function within<T>(p: Promise<T>, ms: number): Promise<T | 'still waiting'> {
  return Promise.race([p, new Promise<'still waiting'>((res) => setTimeout(() => res('still waiting'), ms))]);
}

describe('ClusterService: a wall-clock step does not move its waits', () => {
  const realNow = Date.now;
  afterEach(() => {
    Date.now = realNow;
  });

  it('Vote with no leader to be found ends DEADLINE_EXCEEDED at its 300 ms deadline though the clock stepped back 1 h', async () => {
    let campaigns = 0;
    const node = {
      id: 'n1',
      status: () => ({ role: 'follower', leader: '', membership: { voters: ['n1', 'n2', 'n3'], learners: [] } }),
      brief: () => ({ role: 'follower', leader: '', applied: 0 }),
      dialAddressOf: () => '',
      addressOf: () => '',
      campaign: () => {
        campaigns++;
        Date.now = () => realNow() - HOUR_MS;
      },
    } as unknown as ClusterNode;
    const forwarder = new LeaderForwarder(node);
    try {
      const svc = createClusterService(node, forwarder);
      const call = { request: {}, metadata: new grpc.Metadata(), getDeadline: () => new Date(realNow() + 300), once: () => undefined };
      const answer = new Promise<grpc.ServiceError | null>((resolve) => {
        (svc.vote as unknown as (c: unknown, cb: (e: grpc.ServiceError | null) => void) => void)(call, (e) => resolve(e));
      });
      const r = await within(answer, 2_000);
      assert.notEqual(r, 'still waiting', `Vote still polls 2 s after its 300 ms deadline (${campaigns} campaigns)`);
      assert.equal((r as grpc.ServiceError).code, grpc.status.DEADLINE_EXCEEDED);
    } finally {
      forwarder.close();
    }
  });

  it('an applied-index waiter (300 ms) ends on time though the clock stepped back 1 h', async () => {
    const waiters = new AppliedWaiters({ id: 'n1', brief: () => ({ applied: 0 }) } as unknown as NodeView);
    const waiting = waiters.wait(10, 300);
    Date.now = () => realNow() - HOUR_MS;
    assert.notEqual(await within(waiting, 2_000), 'still waiting', 'the waiter holds its place 2 s after its 300 ms');
  });

  it('TransferLeadership gives the node what is left of the call\'s 300 ms, not TRANSFER_TIMEOUT_MS_MAX, though the clock stepped back 1 h', async () => {
    let givenMs = -1;
    const node = {
      id: 'n1',
      brief: () => {
        Date.now = () => realNow() - HOUR_MS;
        return { role: 'leader', leader: 'n1', applied: 0 };
      },
      status: () => ({ role: 'leader', leader: 'n1', membership: { voters: ['n1', 'n2', 'n3'], learners: [] } }),
      dialAddressOf: () => '',
      addressOf: () => '',
      transferLeadership: (_to: string, timeoutMs: number) => {
        givenMs = timeoutMs;
        return Promise.resolve();
      },
    } as unknown as ClusterNode;
    const forwarder = new LeaderForwarder(node);
    try {
      const svc = createClusterService(node, forwarder);
      const call = { request: { targetId: 'n2' }, metadata: new grpc.Metadata(), getDeadline: () => new Date(realNow() + 300), once: () => undefined };
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        (svc.transferLeadership as unknown as (c: unknown, cb: (e: grpc.ServiceError | null) => void) => void)(call, (e) => resolve(e));
      });
      assert.equal(err, null, err?.message);
      assert.ok(givenMs > 0 && givenMs <= 300, `the node was given ${givenMs} ms`);
    } finally {
      forwarder.close();
    }
  });
});

/**
 * The client and peer planes' rate limits and intervals run on the monotonic
 * clock: they used to read Date.now(), so a wall clock stepped back (NTP, a
 * resumed VM; test:hosts' clock scenario steps a host by -1 h) silenced the
 * refusal logs for the step's length, locked a host out for an hour, and
 * kept answering a state hash an hour old; stepped forward, it ended every
 * lockout at once. Each test steps Date.now (SteppedClocks) and lets the
 * limit's own interval pass on the monotonic clock.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { REFUSAL_LOG_INTERVAL_MS, clientAuthInterceptor } from '../../../src/api/auth-interceptor.js';
import { STATE_HASH_REUSE_MS, StateHashes } from '../../../src/api/cluster-service.js';
import { HostBudget } from '../../../src/api/host-budget.js';
import { CONNECTION_REFUSAL_LOG_INTERVAL_MS, connectionRefusalLog } from '../../../src/api/server.js';
import { HOUR_MS, SteppedClocks } from '../../harness/stepped-clocks.js';

describe('client and peer plane limits: a wall-clock step does not move them', () => {
  let clocks: SteppedClocks;
  beforeEach(() => {
    clocks = new SteppedClocks().install();
  });
  afterEach(() => {
    clocks.restore();
  });

  it('the auth refusal log: the clock stepped back 1 h, a host refused again a minute later is logged again', () => {
    const warned: string[] = [];
    const interceptor = clientAuthInterceptor({ adminKey: 'admin-key-clock-step-0001', logger: { warn: (_o, m) => warned.push(m ?? '') } });
    const statuses: grpc.StatusObject[] = [];
    /** refuse: one call without a key from 192.0.2.7, through the interceptor (no server: the gate is what is tested). */
    const refuse = (): void => {
      let listener: { onReceiveMetadata(m: grpc.Metadata): void } | null = null;
      const inner = {
        start: (l: typeof listener) => {
          listener = l;
        },
        getPeer: () => '192.0.2.7:40000',
        sendStatus: (s: grpc.StatusObject) => statuses.push(s),
      } as unknown as grpc.ServerInterceptingCallInterface;
      const method = { path: '/snapcoord.v1.ClusterService/Status' } as grpc.ServerMethodDefinition<unknown, unknown>;
      const gated = interceptor(method, inner);
      gated.start({ onReceiveMetadata: () => assert.fail('a call without a key went on'), onReceiveMessage: () => undefined, onReceiveHalfClose: () => undefined, onCancel: () => undefined });
      assert.ok(listener !== null);
      (listener as { onReceiveMetadata(m: grpc.Metadata): void }).onReceiveMetadata(new grpc.Metadata());
    };
    refuse();
    refuse();
    assert.equal(warned.length, 1, 'once a minute per host');
    clocks.stepWall(-HOUR_MS);
    clocks.pass(REFUSAL_LOG_INTERVAL_MS + 1);
    refuse();
    assert.equal(warned.length, 2, 'a minute later the host\'s refusals are logged again');
    assert.equal(statuses.length, 3);
    assert.ok(statuses.every((s) => s.code === grpc.status.UNAUTHENTICATED));
  });

  it('the connection refusal log: the clock stepped back 1 h, refusals a minute later are logged again', () => {
    const warned: string[] = [];
    const refused = connectionRefusalLog({ warn: (_o: object, m?: string) => warned.push(m ?? '') }, 'client');
    refused('192.0.2.7', 'too many');
    refused('192.0.2.7', 'too many');
    assert.equal(warned.length, 1, 'once a minute');
    clocks.stepWall(-HOUR_MS);
    clocks.pass(CONNECTION_REFUSAL_LOG_INTERVAL_MS + 1);
    refused('192.0.2.8', 'too many');
    assert.equal(warned.length, 2, 'a minute later refusals are logged again');
  });

  it('the host budget: a lockout is not ended by a step forward, nor made an hour longer by a step back', () => {
    const b = new HostBudget({ tokensMax: 4, refillPerSec: 1, connectionCost: 1, lockMs: 10_000, lockMsMax: 10_000, hostsMax: 8 });
    for (let i = 0; i < 4; i++) assert.equal(b.spend('a', 1), true);
    assert.equal(b.spend('a', 1), false);
    assert.equal(b.locked('a'), true);
    clocks.stepWall(HOUR_MS);
    assert.equal(b.locked('a'), true, 'a step forward ended the lockout');
    for (let i = 0; i < 4; i++) assert.equal(b.spend('b', 1), true);
    assert.equal(b.spend('b', 1), false);
    clocks.stepWall(-2 * HOUR_MS);
    clocks.pass(10_001);
    assert.equal(b.locked('a'), false, 'the lockout outlived its 10 s');
    assert.equal(b.locked('b'), false, 'the lockout outlived its 10 s');
  });

  it('StateHashes: the clock stepped back 1 h, a hash is not answered again past STATE_HASH_REUSE_MS', async () => {
    let reads = 0;
    const hashes = new StateHashes({ id: 'n1', brief: () => ({ applied: 7 }), stateDigest: () => Promise.resolve('') } as unknown as ConstructorParameters<typeof StateHashes>[0], () => {
      reads++;
      return Promise.resolve({ sha256: `h${reads}`, index: 7 });
    });
    assert.equal((await hashes.hash(7)).sha256, 'h1');
    assert.equal((await hashes.hash(7)).sha256, 'h1', 'reused while nothing was applied');
    clocks.stepWall(-HOUR_MS);
    clocks.pass(STATE_HASH_REUSE_MS + 1);
    assert.equal((await hashes.hash(7)).sha256, 'h2', 'read again once STATE_HASH_REUSE_MS passed');
    assert.equal(reads, 2);
  });
});

/**
 * KVService.Txn and the one-proposal Put / Delete on an in-process 3-node
 * cluster (real nodes, real gRPC, MemoryStorage): compare-and-swap through a
 * follower (forwarded), every compare target, the failure branch reading the
 * current pair, INVALID_ARGUMENT limits, exactly one proposal (and no read)
 * per Put with prev_kv and per Delete, exact prev pairs, concurrent CAS
 * increments from several clients never losing an update, an idempotent Txn
 * retried after a lost answer applied once, and every member holding the same
 * state afterwards.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { KvClient } from '../../../src/client/kv-client.js';
import { RequestIds } from '../../../src/client/request-ids.js';
import { CompareResult, CompareTarget, TxnOpType, type Compare, type TxnOp } from '../../../src/gen/snapcoord/v1/kv.js';
import type { Node } from '../../../src/node/node.js';
import { TXN_COMPARES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX } from '../../../src/fsm/kv-command.js';
import { assertSameStateEverywhere, startTestCluster, type TestCluster } from './harness.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const b = (s: string): Uint8Array => enc.encode(s);
const empty = new Uint8Array(0);

function compare(key: string, target: CompareTarget, result: CompareResult, operand: { value?: string; n?: bigint }): Compare {
  const n = operand.n ?? 0n;
  return {
    key: b(key),
    target,
    result,
    value: operand.value === undefined ? empty : b(operand.value),
    version: target === CompareTarget.COMPARE_TARGET_VERSION ? n : 0n,
    createRevision: target === CompareTarget.COMPARE_TARGET_CREATE ? n : 0n,
    modRevision: target === CompareTarget.COMPARE_TARGET_MOD ? n : 0n,
  };
}

const valueIs = (key: string, value: string): Compare => compare(key, CompareTarget.COMPARE_TARGET_VALUE, CompareResult.COMPARE_RESULT_EQUAL, { value });
const put = (key: string, value: string, prevKv = false): TxnOp => ({ type: TxnOpType.TXN_OP_TYPE_PUT, key: b(key), value: b(value), prevKv });
const get = (key: string): TxnOp => ({ type: TxnOpType.TXN_OP_TYPE_GET, key: b(key), value: empty, prevKv: false });
const del = (key: string, prevKv = false): TxnOp => ({ type: TxnOpType.TXN_OP_TYPE_DELETE, key: b(key), value: empty, prevKv });

function codeOf(err: unknown): number | undefined {
  return (err as { code?: number }).code;
}

/** counting: counts the calls `node` makes to propose and to its linearizable reads (get, range), calling through. */
function counting(node: Node): { proposals: () => number; reads: () => number; restore: () => void } {
  let proposals = 0;
  let reads = 0;
  const original = { propose: node.propose, get: node.get, range: node.range };
  node.propose = async (...args) => {
    proposals++;
    return original.propose.apply(node, args);
  };
  node.get = async (...args) => {
    reads++;
    return original.get.apply(node, args);
  };
  node.range = async (...args) => {
    reads++;
    return original.range.apply(node, args);
  };
  return {
    proposals: () => proposals,
    reads: () => reads,
    restore: () => Object.assign(node, original),
  };
}

describe('KVService.Txn and one-round writes on a 3-node cluster', function () {
  this.timeout(60_000);
  let cluster: TestCluster;

  before(async () => {
    cluster = await startTestCluster(3);
    await cluster.waitForLeader();
  });
  after(async () => {
    await cluster.stop();
  });

  it('compare-and-swap through a follower: swapped once, then the stale swap fails and reads the current pair', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    const absent = compare('txn/c', CompareTarget.COMPARE_TARGET_VERSION, CompareResult.COMPARE_RESULT_EQUAL, { n: 0n });
    const created = await follower.kv.txn({ compare: [absent], success: [put('txn/c', 'a')], failure: [get('txn/c')] });
    assert.equal(created.succeeded, true);
    const createdAt = created.header?.revision ?? 0n;
    assert.ok(createdAt > 0n);
    const again = await follower.kv.txn({ compare: [absent], success: [put('txn/c', 'x')], failure: [get('txn/c')] });
    assert.equal(again.succeeded, false, 'the key exists now');
    assert.equal(dec.decode(again.responses[0]?.kv?.value), 'a');

    const swapped = await follower.kv.txn({ compare: [valueIs('txn/c', 'a')], success: [put('txn/c', 'b', true)], failure: [get('txn/c')] });
    assert.equal(swapped.succeeded, true);
    const swappedAt = swapped.header?.revision ?? 0n;
    assert.ok(swappedAt > createdAt);
    const prev = swapped.responses[0]?.prevKv;
    assert.equal(dec.decode(prev?.value), 'a');
    assert.deepEqual([prev?.createRevision, prev?.modRevision, prev?.version], [createdAt, createdAt, 1n]);

    const stale = await follower.kv.txn({ compare: [valueIs('txn/c', 'a')], success: [put('txn/c', 'c')], failure: [get('txn/c')] });
    assert.equal(stale.succeeded, false);
    assert.equal(stale.responses[0]?.type, TxnOpType.TXN_OP_TYPE_GET);
    assert.equal(stale.responses[0]?.found, true);
    const kv = stale.responses[0]?.kv;
    assert.equal(dec.decode(kv?.value), 'b');
    assert.deepEqual([kv?.createRevision, kv?.modRevision, kv?.version], [createdAt, swappedAt, 2n]);

    // every target and relation, on the revisions just learnt
    const holds = async (c: Compare): Promise<boolean> => (await leader.kv.txn({ compare: [c] })).succeeded;
    const T = CompareTarget;
    const R = CompareResult;
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_MOD, R.COMPARE_RESULT_EQUAL, { n: swappedAt })), true);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_MOD, R.COMPARE_RESULT_LESS, { n: swappedAt })), false);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_CREATE, R.COMPARE_RESULT_LESS, { n: swappedAt })), true);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_CREATE, R.COMPARE_RESULT_NOT_EQUAL, { n: createdAt })), false);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_VERSION, R.COMPARE_RESULT_GREATER, { n: 1n })), true);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_VALUE, R.COMPARE_RESULT_GREATER, { value: 'a' })), true);
    assert.equal(await holds(compare('txn/c', T.COMPARE_TARGET_VALUE, R.COMPARE_RESULT_NOT_EQUAL, { value: 'b' })), false);
    assert.equal(await holds(compare('txn/none', T.COMPARE_TARGET_VALUE, R.COMPARE_RESULT_NOT_EQUAL, { value: 'b' })), false, 'a value compare on a missing key fails');
    // the get outside the transaction agrees
    const plain = await follower.kv.get({ key: b('txn/c') });
    assert.equal(dec.decode(plain.kv?.value), 'b');
    await assertSameStateEverywhere(cluster);
  });

  it('both branches can write several keys atomically; ops see the ops before them', async () => {
    const leader = await cluster.waitForLeader();
    const r = await leader.kv.txn({
      compare: [compare('txn/multi', CompareTarget.COMPARE_TARGET_VERSION, CompareResult.COMPARE_RESULT_EQUAL, { n: 0n })],
      success: [put('txn/multi', '1'), put('txn/multi-b', '2'), get('txn/multi'), del('txn/multi', true), get('txn/multi')],
    });
    assert.equal(r.succeeded, true);
    assert.deepEqual(
      r.responses.map((x) => [x.type, x.found, x.deleted, dec.decode(x.kv?.value ?? empty), dec.decode(x.prevKv?.value ?? empty)]),
      [
        [TxnOpType.TXN_OP_TYPE_PUT, false, 0n, '', ''],
        [TxnOpType.TXN_OP_TYPE_PUT, false, 0n, '', ''],
        [TxnOpType.TXN_OP_TYPE_GET, true, 0n, '1', ''],
        [TxnOpType.TXN_OP_TYPE_DELETE, false, 1n, '', '1'],
        [TxnOpType.TXN_OP_TYPE_GET, false, 0n, '', ''],
      ],
    );
    // every write of the transaction carries its one revision
    const after = await leader.kv.txn({ success: [get('txn/multi-b')] });
    assert.equal(after.responses[0]?.kv?.modRevision, r.header?.revision);
  });

  it('refuses too many compares or ops, unknown targets, results and op types, and bad keys (INVALID_ARGUMENT), applying nothing', async () => {
    const leader = await cluster.waitForLeader();
    const before = leader.node.status().lastIndex;
    const invalid = async (req: Parameters<KvClient['txn']>[0], pattern: RegExp): Promise<void> => {
      await assert.rejects(leader.kv.txn(req), (err: unknown) => codeOf(err) === grpc.status.INVALID_ARGUMENT && pattern.test((err as Error).message));
    };
    const c = valueIs('txn/lim', 'x');
    await invalid({ compare: Array.from({ length: TXN_COMPARES_MAX + 1 }, () => c) }, /129 compares, more than 128/);
    await invalid({ success: Array.from({ length: TXN_OPS_MAX + 1 }, () => get('txn/lim')) }, /129 success ops/);
    await invalid({ failure: Array.from({ length: TXN_OPS_MAX + 1 }, () => get('txn/lim')) }, /129 failure ops/);
    await invalid({ compare: [{ ...c, target: CompareTarget.COMPARE_TARGET_UNSPECIFIED }] }, /compare\[0\]\.target/);
    await invalid({ compare: [c, { ...c, result: CompareResult.COMPARE_RESULT_UNSPECIFIED }] }, /compare\[1\]\.result/);
    await invalid({ success: [{ ...get('k'), type: TxnOpType.TXN_OP_TYPE_UNSPECIFIED }] }, /success\[0\]\.type/);
    await invalid({ failure: [put('', 'v')] }, /failure\[0\]\.key is empty/);
    await invalid({ success: [put('\u0000snapcoord/rev/kx', 'v')] }, /reserved/);
    await invalid({ compare: [compare('k', CompareTarget.COMPARE_TARGET_MOD, CompareResult.COMPARE_RESULT_EQUAL, { n: 2n ** 60n })] }, /mod_revision .* above 2\^53-1/);
    // the limits themselves are fine
    const ok = await leader.kv.txn({ compare: Array.from({ length: TXN_COMPARES_MAX }, () => c), failure: Array.from({ length: TXN_OPS_MAX }, () => get('txn/lim')) });
    assert.equal(ok.succeeded, false);
    assert.equal(ok.responses.length, TXN_OPS_MAX);
    assert.equal(leader.node.status().lastIndex, before + 1, 'only the valid transaction reached the log');
  });

  it('Put with prev_kv and Delete are one proposal each, with no read before, and exact', async () => {
    const leader = await cluster.waitForLeader();
    const spy = counting(leader.node);
    try {
      const first = await leader.kv.put({ key: b('one/k'), value: b('v1'), prevKv: true });
      assert.equal(first.prevKv, undefined, 'nothing was there');
      const second = await leader.kv.put({ key: b('one/k'), value: b('v2'), prevKv: true });
      assert.equal(dec.decode(second.prevKv?.value), 'v1');
      assert.equal(second.prevKv?.modRevision, first.header?.revision);
      assert.equal(second.prevKv?.version, 1n);
      const removed = await leader.kv.delete({ key: b('one/k'), prevKv: true });
      assert.equal(removed.deleted, 1n);
      assert.equal(dec.decode(removed.prevKv?.value), 'v2');
      assert.deepEqual([removed.prevKv?.modRevision, removed.prevKv?.createRevision, removed.prevKv?.version], [second.header?.revision, first.header?.revision, 2n]);
      const missing = await leader.kv.delete({ key: b('one/k') });
      assert.equal(missing.deleted, 0n);
      assert.equal(spy.proposals(), 4, 'one proposal per write');
      assert.equal(spy.reads(), 0, 'no read before a write');
    } finally {
      spy.restore();
    }
  });

  it('concurrent compare-and-swap increments from several clients lose no update', async () => {
    const leader = await cluster.waitForLeader();
    await leader.kv.put({ key: b('txn/counter'), value: b('0') });
    const clients = cluster.members.map((m) => m.kv);
    let swaps = 0;
    let failed = 0;
    const perClient = 8;
    await Promise.all(
      clients.map(async (kv) => {
        for (let done = 0; done < perClient; ) {
          const cur = await kv.get({ key: b('txn/counter') });
          const value = dec.decode(cur.kv?.value);
          const r = await kv.txn({ compare: [valueIs('txn/counter', value)], success: [put('txn/counter', String(Number(value) + 1))], failure: [get('txn/counter')] });
          if (r.succeeded) {
            swaps++;
            done++;
          } else {
            failed++;
          }
        }
      }),
    );
    assert.equal(swaps, clients.length * perClient);
    const end = await leader.kv.get({ key: b('txn/counter') });
    assert.equal(dec.decode(end.kv?.value), String(swaps), `every swap counted once (${failed} compares failed on the way)`);
    await assertSameStateEverywhere(cluster);
  });

  it('a Txn whose answer is lost is retried with its request id and applied once (KvClient.txnIdempotent)', async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0];
    assert.ok(follower !== undefined);
    await leader.kv.put({ key: b('txn/idem'), value: b('0') });
    let calls = 0;
    const losing: grpc.Interceptor = (options, nextCall) => {
      const drop = calls++ === 0;
      return new grpc.InterceptingCall(nextCall(options), {
        start(metadata, listener, next) {
          next(metadata, {
            onReceiveMessage(message: unknown, nextMessage: (m: unknown) => void) {
              nextMessage(message);
            },
            onReceiveStatus(status: grpc.StatusObject, nextStatus: (s: grpc.StatusObject) => void) {
              if (drop && status.code === grpc.status.OK) nextStatus({ code: grpc.status.UNAVAILABLE, details: 'answer lost (test)', metadata: new grpc.Metadata() });
              else nextStatus(status);
            },
          });
        },
      });
    };
    const client = new KvClient(follower.address, {}, new RequestIds('txn-idem-client'));
    try {
      // "increment if 0": applied twice it would still succeed (the value is 1, then a reset to 0 in between)
      const res = await client.txnIdempotent(
        { compare: [valueIs('txn/idem', '0')], success: [put('txn/idem', '1')], failure: [get('txn/idem')] },
        { interceptors: [losing], backoffMs: 10 },
      );
      assert.ok(calls >= 2, 'the first answer was lost and the call retried');
      assert.equal(res.replayed, true);
      assert.equal(res.succeeded, true, 'the first outcome is answered');
      assert.equal(dec.decode((await leader.kv.get({ key: b('txn/idem') })).kv?.value), '1');
    } finally {
      client.close();
    }
    await assertSameStateEverywhere(cluster);
  });

  it(`a Txn whose answer would pass TXN_ANSWER_BYTES_MAX is answered FAILED_PRECONDITION naming its revision, never built (before: RESOURCE_EXHAUSTED, retryable, after applying it)`, async () => {
    const leader = await cluster.waitForLeader();
    const follower = cluster.followers(leader.id)[0]!;
    await leader.kv.put({ key: b('txn/big'), value: new Uint8Array(VALUE_BYTES_MAX).fill(7) });
    // 70 reads of a 1 MiB value: 70 MiB, past the 64 MiB message cap. The put is applied either way.
    const success = [put('txn/flag', 'set'), ...Array.from({ length: 70 }, () => get('txn/big'))];
    for (const m of [leader, follower]) {
      const err = await m.kv.txn({ success }).then(
        () => assert.fail('answered'),
        (e: unknown) => e as { code?: number; details?: string },
      );
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION, err.details);
      assert.match(err.details ?? '', /the transaction was applied at revision \d+ \(succeeded\), but its answer holds 73\d{6} bytes of keys and values, more than 16777216/);
    }
    assert.equal(dec.decode((await leader.kv.get({ key: b('txn/flag') })).kv?.value), 'set');
    // Under the cap the values come back.
    const small = await follower.kv.txn({ success: Array.from({ length: 8 }, () => get('txn/big')) });
    assert.equal(small.responses.length, 8);
    assert.equal(small.responses[7]?.kv?.value.length, VALUE_BYTES_MAX);
  });
});

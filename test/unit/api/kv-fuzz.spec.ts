/**
 * Seeded fuzzing of the KV service's inputs (Put, Get, Delete, Range, Txn)
 * with raw gRPC requests (no client-side checks): keys empty, at and past the
 * 4 KiB limit, under and around the reserved prefix ("\x00snapcoord/"),
 * values at and past 1 MiB, ranges inverted or mixed with a prefix, limits 0
 * and 2^32-1, request ids 0 and past 2^53, client ids odd, transactions with
 * unspecified or unknown enums, huge operands and too many ops. The contract:
 * every answer is OK or a refusal the API documents (INVALID_ARGUMENT,
 * FAILED_PRECONDITION, RESOURCE_EXHAUSTED) with a message, never INTERNAL or
 * UNKNOWN; a refused write changes nothing (the client keys and the applied
 * state the same); the reserved records are never served; and the node
 * takes a plain write after each.
 *
 * FUZZ_CASES=N runs more requests, FUZZ_SEED=S another seed.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import {
  CompareResult,
  CompareTarget,
  KVServiceClient,
  TxnOpType,
  type Compare,
  type DeleteRequest,
  type GetRequest,
  type PutRequest,
  type RangeRequest,
  type TxnOp,
  type TxnRequest,
} from '../../../src/gen/snapcoord/v1/kv.js';
import { SeededRng } from '../../harness/rng.js';
import { fuzzCases, fuzzSeed } from '../snapshot/fuzz-archives.js';
import { startTestCluster, type TestCluster, type TestMember } from './harness.js';

const REFUSALS = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.RESOURCE_EXHAUSTED, grpc.status.OUT_OF_RANGE]);
const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

class OddKv {
  constructor(private readonly rng: SeededRng) {}

  key(): Buffer {
    return this.rng.pick<() => Buffer>([
      () => Buffer.alloc(0),
      () => latin1(`k/${this.rng.nextInt(8)}`),
      () => latin1(`k/${this.rng.nextInt(8)}`),
      () => latin1('\x00snapcoord/'),
      () => latin1('\x00snapcoord/session/t:c'),
      () => latin1('\x00snapcoord/rev/kk/1'),
      () => latin1('\x00snapcoord/restore/last'),
      () => latin1('\x00snapcoord'),
      () => latin1('\x00snapcoord0'),
      () => latin1('\x00snapcoord.'),
      () => Buffer.from([0]),
      () => Buffer.from([0xff, 0xff]),
      () => Buffer.alloc(4096, 0x6b),
      () => Buffer.alloc(4097, 0x6b),
      () => Buffer.alloc(this.rng.pick([1, 7, 300]), this.rng.nextInt(256)),
    ])();
  }

  value(): Buffer {
    return Buffer.alloc(this.rng.pick([0, 0, 1, 100, 1024 * 1024, 1024 * 1024 + 1]), 0x76);
  }

  u64(): bigint {
    return this.rng.pick([0n, 1n, 2n, 2n ** 31n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n]);
  }

  session(): { clientId: string; requestId: bigint } {
    if (this.rng.chance(0.5)) return { clientId: '', requestId: 0n };
    return {
      clientId: this.rng.pick(['c1', 'c2', '', ' ', 'a b', 'é', '\x00', 'x'.repeat(300), 'tag:c', '#', 'c1']),
      requestId: this.rng.chance(0.7) ? BigInt(1 + this.rng.nextInt(5)) : this.u64(),
    };
  }

  compare(): Compare {
    return {
      key: this.key(),
      target: this.rng.pick([CompareTarget.COMPARE_TARGET_UNSPECIFIED, CompareTarget.COMPARE_TARGET_VALUE, CompareTarget.COMPARE_TARGET_VERSION, CompareTarget.COMPARE_TARGET_CREATE, CompareTarget.COMPARE_TARGET_MOD, 99 as CompareTarget]),
      result: this.rng.pick([CompareResult.COMPARE_RESULT_UNSPECIFIED, CompareResult.COMPARE_RESULT_EQUAL, CompareResult.COMPARE_RESULT_NOT_EQUAL, CompareResult.COMPARE_RESULT_GREATER, CompareResult.COMPARE_RESULT_LESS, -1 as CompareResult]),
      value: this.rng.chance(0.5) ? this.value().subarray(0, 10) : Buffer.alloc(0),
      version: this.u64(),
      createRevision: this.rng.chance(0.7) ? 0n : this.u64(),
      modRevision: this.rng.chance(0.7) ? 0n : this.u64(),
    };
  }

  op(): TxnOp {
    return {
      type: this.rng.pick([TxnOpType.TXN_OP_TYPE_UNSPECIFIED, TxnOpType.TXN_OP_TYPE_GET, TxnOpType.TXN_OP_TYPE_PUT, TxnOpType.TXN_OP_TYPE_DELETE, 7 as TxnOpType]),
      key: this.key(),
      value: this.rng.chance(0.8) ? Buffer.from('tv') : this.value(),
      prevKv: this.rng.chance(0.3),
    };
  }

  many<T>(f: () => T): T[] {
    return Array.from({ length: this.rng.pick([0, 1, 2, 3, 129]) }, f);
  }
}

type Call = { rpc: 'put'; req: PutRequest } | { rpc: 'get'; req: GetRequest } | { rpc: 'delete'; req: DeleteRequest } | { rpc: 'range'; req: RangeRequest } | { rpc: 'txn'; req: TxnRequest };

function oddCall(rng: SeededRng): Call {
  const o = new OddKv(rng);
  switch (rng.nextInt(6)) {
    case 0:
    case 1:
      return { rpc: 'put', req: { key: o.key(), value: o.value(), prevKv: rng.chance(0.3), ...o.session() } };
    case 2:
      return { rpc: 'get', req: { key: o.key(), serializable: rng.chance(0.5) } };
    case 3:
      return { rpc: 'delete', req: { key: o.key(), prevKv: rng.chance(0.3), ...o.session() } };
    case 4:
      return {
        rpc: 'range',
        req: {
          prefix: rng.chance(0.5) ? o.key() : Buffer.alloc(0),
          start: rng.chance(0.5) ? o.key() : Buffer.alloc(0),
          end: rng.chance(0.5) ? o.key() : Buffer.alloc(0),
          limit: rng.pick([0, 1, 2, 10, 1000, 10_001, 2 ** 32 - 1]),
          serializable: rng.chance(0.5),
        },
      };
    default: {
      const txn = { compare: o.many(() => o.compare()), success: o.many(() => o.op()), failure: o.many(() => o.op()), ...o.session() } as unknown as TxnRequest;
      return { rpc: 'txn', req: txn };
    }
  }
}

function invoke(client: KVServiceClient, call: Call): Promise<{ err: grpc.ServiceError | null; res: unknown }> {
  const deadline = { deadline: Date.now() + 10_000 };
  return new Promise((resolve) => {
    const cb = (err: grpc.ServiceError | null, res: unknown): void => resolve({ err, res });
    const md = new grpc.Metadata();
    switch (call.rpc) {
      case 'put':
        client.put(call.req, md, deadline, cb);
        return;
      case 'get':
        client.get(call.req, md, deadline, cb);
        return;
      case 'delete':
        client.delete(call.req, md, deadline, cb);
        return;
      case 'range':
        client.range(call.req, md, deadline, cb);
        return;
      case 'txn':
        client.txn(call.req, md, deadline, cb);
        return;
    }
  });
}

/** served: every pair a full linearizable range serves (hex; a follower reads its leader's state), which must never hold a reserved key. */
async function served(client: KVServiceClient): Promise<string[]> {
  const out: string[] = [];
  let start = Buffer.alloc(0);
  for (let page = 0; page < 100; page++) {
    const { err, res } = await invoke(client, { rpc: 'range', req: { prefix: Buffer.alloc(0), start, end: Buffer.alloc(0), limit: 1000, serializable: false } });
    assert.equal(err, null, String(err));
    const r = res as { kvs: { key: Uint8Array; value: Uint8Array; modRevision: bigint; version: bigint }[]; more: boolean };
    for (const kv of r.kvs) out.push(`${Buffer.from(kv.key).toString('hex')}=${Buffer.from(kv.value).toString('hex').slice(0, 64)}/${kv.value.length}@${kv.modRevision}v${kv.version}`);
    const last = r.kvs[r.kvs.length - 1];
    if (!r.more || last === undefined) return out;
    start = Buffer.concat([Buffer.from(last.key), Buffer.from([0])]);
  }
  throw new Error('more than 100 pages');
}

describe('fuzz: odd KV requests over gRPC', function () {
  this.timeout(60_000 + fuzzCases(100) * 500); // FUZZ_CASES runs by hand take longer
  let c: TestCluster | undefined;
  let client: KVServiceClient | undefined;
  afterEach(async () => {
    client?.close();
    await c?.stop();
    c = undefined;
    client = undefined;
  });

  for (const [size, ciCases, seed0] of [
    [1, 100, 4_400_000],
    [3, 30, 4_500_000],
  ] as const) {
  it(`${size === 1 ? 'one node' : 'a follower of three (its writes forwarded to the leader)'}: each is answered OK or refused with a documented code and a message, a refused write changes nothing, reserved keys are never served`, async () => {
    const cases = fuzzCases(ciCases);
    const seed = fuzzSeed(seed0);
    c = await startTestCluster(size);
    const members: readonly TestMember[] = c.members;
    const leader = await c.waitForLeader();
    const target = size === 1 ? leader : (c.followers(leader.id)[0] as typeof leader);
    client = new KVServiceClient(target.address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 8 * 1024 * 1024 });
    const outcomes = new Map<string, number>();
    for (let i = 0; i < cases; i++) {
      const rng = new SeededRng(seed).fork(`request-${i}`);
      const call = oddCall(rng);
      const where = `request ${i} (FUZZ_SEED=${seed} FUZZ_CASES=${i + 1}): ${call.rpc} ${JSON.stringify(call.req, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array || (typeof v === 'object' && v !== null && (v as { type?: string }).type === 'Buffer') ? `<${Buffer.from(v as Uint8Array).toString('latin1').slice(0, 24)}...${(v as Uint8Array).length ?? ''}>` : v)).slice(0, 600)}`;
      const before = await served(client);
      const appliedBefore = leader.node.status().applied;
      const { err, res } = await invoke(client, call);
      if (err !== null) {
        assert.ok(REFUSALS.has(err.code), `${where}: answered ${grpc.status[err.code]}: ${err.details}`);
        assert.ok(err.details.length > 0, `${where}: refused with no message`);
        if (call.rpc !== 'get' && call.rpc !== 'range') {
          assert.deepEqual(await served(client), before, `${where}: refused (${err.details}), but the keys changed`);
        }
        const k = `${call.rpc} ${grpc.status[err.code]}: ${err.details.replace(/\d+/g, 'N').slice(0, 60)}`;
        outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
      } else {
        const k = `${call.rpc} OK`;
        outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
        assert.ok(res !== undefined);
      }
      const after = await served(client);
      for (const kv of after) assert.ok(!kv.startsWith(Buffer.from('\x00snapcoord/', 'latin1').toString('hex')), `${where}: a reserved key is served: ${kv}`);
      assert.ok(leader.node.status().applied >= appliedBefore);
      for (const m of members) assert.equal(m.node.failed(), null, `${where}: ${m.id} failed`);
      if (i % 10 === 9) {
        const { err: e } = await invoke(client, { rpc: 'put', req: { key: Buffer.from('plain'), value: Buffer.from(String(i)), prevKv: false, clientId: '', requestId: 0n } });
        assert.equal(e, null, `${where}: a plain write after it failed: ${String(e)}`);
      }
    }
    if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${cases} requests from seed ${seed}:`, Object.fromEntries(outcomes));
  });
  }
});

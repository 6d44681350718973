/**
 * kvOp: the operation `snapcoord bench write` runs against the KV API, for a
 * ClosedLoop: put (a value of `valueBytes` to a random key of `keys`), get
 * (linearizable unless `serializable`), or mixed (half each, chosen at
 * random), or cas: a compare-and-swap (one KVService.Txn: the key's value
 * equals the one this worker last saw, or the key is absent, then put a new
 * value; else read the current one, which the next swap of that key
 * expects). With few keys and many clients the swaps contend: the op's
 * label, `cas-swapped` or `cas-failed`, counts each outcome (per-op rows of
 * the report). Keys are "<prefix><n>" with n in [0, keys); values are random
 * bytes (incompressible, as real data is closer to). Plain puts carry no
 * request id (as etcd's benchmark: a load, not a retrying client).
 */
import { randomBytes } from 'node:crypto';
import type { ClientDial } from '../../client/dial.js';
import { KvClient } from '../../client/kv-client.js';
import { CompareResult, CompareTarget, TxnOpType, type Compare } from '../../gen/snapcoord/v1/kv.js';
import type { Op } from './closed-loop.js';

/** WRITE_OPS: the ops `bench write --op` takes. */
export const WRITE_OPS = ['put', 'get', 'mixed', 'cas'] as const;
export type WriteOp = (typeof WRITE_OPS)[number];

export interface KvOpOptions {
  readonly endpoint: string;
  readonly dial: ClientDial;
  /** conns: gRPC connections the workers share (worker w uses connection w % conns). */
  readonly conns: number;
  readonly op: WriteOp;
  readonly valueBytes: number;
  readonly keys: number;
  readonly keyPrefix: string;
  readonly serializable: boolean;
  /** deadlineMs: each call's deadline. */
  readonly deadlineMs: number;
  readonly random?: () => number;
}

/** KvOps: the op and the connections it uses (close() them at the end). */
export interface KvOps {
  readonly op: Op;
  /** put writes one key (used to fill the key space before a get load). */
  put(key: number): Promise<void>;
  close(): void;
}

export function kvOps(o: KvOpOptions): KvOps {
  const random = o.random ?? Math.random;
  const clients = Array.from({ length: o.conns }, (_, i) => {
    return new KvClient(o.endpoint, { ...o.dial, channelOptions: { ...o.dial.channelOptions, 'snapcoord.bench_conn': i } });
  });
  // Values are slices of random bytes (at random offsets), so a snapshot of what a put load wrote does not
  // shrink to nothing when gzipped: a load test fills the state as real data would.
  const pool = randomBytes(o.valueBytes * 8);
  const valueOf = (): Buffer => {
    const at = Math.floor(random() * (pool.length - o.valueBytes + 1));
    return pool.subarray(at, at + o.valueBytes);
  };
  const keyOf = (n: number): Buffer => Buffer.from(`${o.keyPrefix}${n}`);
  const clientOf = (w: number): KvClient => clients[w % clients.length] as KvClient;
  const put = async (c: KvClient, key: number, signal?: AbortSignal): Promise<void> => {
    await c.put({ key: keyOf(key), value: valueOf() }, { deadlineMs: o.deadlineMs, signal });
  };
  const get = async (c: KvClient, key: number, signal?: AbortSignal): Promise<void> => {
    await c.get({ key: keyOf(key), serializable: o.serializable }, { deadlineMs: o.deadlineMs, signal });
  };
  /** seen: per worker, the value it last saw of each key (absent: expects the key absent). */
  const seen = new Map<number, Map<number, Uint8Array>>();
  const empty = new Uint8Array(0);
  const cas = async (w: number, key: number, signal?: AbortSignal): Promise<'cas-swapped' | 'cas-failed'> => {
    let mine = seen.get(w);
    if (mine === undefined) seen.set(w, (mine = new Map()));
    const k = keyOf(key);
    const expected = mine.get(key);
    const zero = { value: empty, version: 0n, createRevision: 0n, modRevision: 0n };
    const compare: Compare =
      expected === undefined
        ? { ...zero, key: k, target: CompareTarget.COMPARE_TARGET_VERSION, result: CompareResult.COMPARE_RESULT_EQUAL }
        : { ...zero, key: k, target: CompareTarget.COMPARE_TARGET_VALUE, result: CompareResult.COMPARE_RESULT_EQUAL, value: expected };
    const value = Uint8Array.from(valueOf());
    const c = clientOf(w);
    const res = await c.txn(
      {
        compare: [compare],
        success: [{ type: TxnOpType.TXN_OP_TYPE_PUT, key: k, value, prevKv: false }],
        failure: [{ type: TxnOpType.TXN_OP_TYPE_GET, key: k, value: empty, prevKv: false }],
      },
      { deadlineMs: o.deadlineMs, signal },
    );
    if (res.succeeded) {
      mine.set(key, value);
      return 'cas-swapped';
    }
    const found = res.responses[0];
    if (found?.found === true && found.kv !== undefined) mine.set(key, found.kv.value);
    else mine.delete(key);
    return 'cas-failed';
  };
  return {
    op: async (w, _seq, signal) => {
      const key = Math.floor(random() * o.keys);
      if (o.op === 'cas') return cas(w, key, signal);
      const which = o.op === 'mixed' ? (random() < 0.5 ? 'put' : 'get') : o.op;
      if (which === 'put') await put(clientOf(w), key, signal);
      else await get(clientOf(w), key, signal);
      return which;
    },
    put: (key) => put(clientOf(key), key),
    close: () => {
      for (const c of clients) c.close();
    },
  };
}

/**
 * The chaos workload: a few clients doing puts, gets, deletes and
 * compare-and-swaps (KVService.Txn: compare the value, or absence, then put;
 * else read the current value) of unique values on a few keys, each through a
 * node picked at random, every operation
 * recorded (call and return time, outcome) for the linearizability checker.
 * Beside them a "once" writer puts write-once keys, to check at the end that
 * every acknowledged write is on every node.
 *
 * Outcomes: ok when acknowledged; fail only when the error proves the
 * operation never took effect (refused before it was proposed: not the
 * leader, busy, invalid, replaced by another leader's entry, or no connection
 * was ever made); unknown otherwise (timeouts, connections lost mid-call,
 * shutdown), which the checker treats as maybe-happened.
 */
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import type { KvClient } from '../../src/client/kv-client.js';
import { CompareResult, CompareTarget, TxnOpType, type Compare } from '../../src/gen/snapcoord/v1/kv.js';
import type { Op, Outcome } from './linearizability.js';
import { SeededRng } from '../harness/rng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** casCompare: the compare of a swap from `expected`: the value equals it, or (null) the key is absent (version 0). */
export function casCompare(key: Uint8Array, expected: string | null): Compare {
  return expected === null
    ? { key, target: CompareTarget.COMPARE_TARGET_VERSION, result: CompareResult.COMPARE_RESULT_EQUAL, value: EMPTY, version: 0n, createRevision: 0n, modRevision: 0n }
    : { key, target: CompareTarget.COMPARE_TARGET_VALUE, result: CompareResult.COMPARE_RESULT_EQUAL, value: enc.encode(expected), version: 0n, createRevision: 0n, modRevision: 0n };
}

/** WorkloadTarget: the nodes to pick from (a live view: killed nodes stay in it and fail fast). */
export interface WorkloadTarget {
  readonly kv: KvClient;
  readonly id: string;
}

export interface WorkloadOptions {
  readonly targets: readonly WorkloadTarget[];
  readonly clients: number;
  readonly keys: number;
  readonly seed: number;
  /** deadlineMs: per operation. */
  readonly deadlineMs?: number;
  /** thinkMs: pause between two operations of a client (keeps histories checkable). */
  readonly thinkMs?: number;
}

/** outcomeOf: what an error proves about whether a write took effect. */
export function outcomeOf(err: unknown): Outcome {
  const e = err as Partial<grpc.ServiceError>;
  switch (e.code) {
    case grpc.status.FAILED_PRECONDITION: // not the leader: refused before proposing
    case grpc.status.RESOURCE_EXHAUSTED: // busy or disk full: refused before proposing
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.ABORTED: // the entry was replaced by another leader's: never applied
      return 'fail';
    case grpc.status.UNAVAILABLE:
      // grpc-js never sent the call when it had no connection at all.
      return /No connection established|ECONNREFUSED/.test(e.details ?? '') ? 'fail' : 'unknown';
    default:
      return 'unknown';
  }
}

export class Workload {
  readonly history: Op[] = [];
  /** onceAcked: write-once keys whose put was acknowledged. */
  readonly onceAcked: string[] = [];
  /** onceFailed: the write-once puts not acknowledged, by what failed them (a gRPC code name, or the error's message); the run prints them. */
  readonly onceFailed = new Map<string, number>();
  private nextId = 0;
  private stopped = false;
  private running: Promise<void>[] = [];
  private readonly opts: Required<WorkloadOptions>;

  constructor(opts: WorkloadOptions) {
    this.opts = { deadlineMs: 2_000, thinkMs: 5, ...opts };
  }

  start(): void {
    for (let c = 0; c < this.opts.clients; c++) this.running.push(this.client(c));
    this.running.push(this.onceWriter());
  }

  /** stop: no new operations; resolves once those in flight have ended (bounded by their deadline). */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
    this.running = [];
  }

  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const op of this.history) out[`${op.kind}:${op.outcome}`] = (out[`${op.kind}:${op.outcome}`] ?? 0) + 1;
    return out;
  }

  /**
   * record runs one operation through `target` and appends it to the
   * history. A `cas` swaps from `expected` (null: absent) to `value`.
   */
  async record(client: number, kind: Op['kind'], key: string, value: string | undefined, target: WorkloadTarget, expected: string | null = null): Promise<Op> {
    const id = this.nextId++;
    const callMs = performance.now();
    const opts = { deadlineMs: this.opts.deadlineMs };
    let op: Op;
    try {
      if (kind === 'put') {
        await target.kv.put({ key: enc.encode(key), value: enc.encode(value ?? '') }, opts);
        op = { id, client, kind, key, value: value ?? '', callMs, returnMs: performance.now(), outcome: 'ok' };
      } else if (kind === 'cas') {
        const k = enc.encode(key);
        const res = await target.kv.txn(
          {
            compare: [casCompare(k, expected)],
            success: [{ type: TxnOpType.TXN_OP_TYPE_PUT, key: k, value: enc.encode(value ?? ''), prevKv: false }],
            failure: [{ type: TxnOpType.TXN_OP_TYPE_GET, key: k, value: EMPTY, prevKv: false }],
          },
          opts,
        );
        const found = res.responses[0];
        const result = res.succeeded ? {} : { result: found?.found === true ? dec.decode(found.kv?.value) : null };
        op = { id, client, kind, key, value: value ?? '', expected, callMs, returnMs: performance.now(), outcome: 'ok', swapped: res.succeeded, ...result };
      } else if (kind === 'delete') {
        await target.kv.delete({ key: enc.encode(key) }, opts);
        op = { id, client, kind, key, callMs, returnMs: performance.now(), outcome: 'ok' };
      } else {
        const res = await target.kv.get({ key: enc.encode(key) }, opts);
        const result = res.found ? dec.decode(res.kv?.value) : null;
        op = { id, client, kind, key, callMs, returnMs: performance.now(), outcome: 'ok', result };
      }
    } catch (err) {
      const outcome = kind === 'get' ? 'fail' : outcomeOf(err);
      op = {
        id,
        client,
        kind,
        key,
        ...(kind === 'put' || kind === 'cas' ? { value: value ?? '' } : {}),
        ...(kind === 'cas' ? { expected } : {}),
        callMs,
        returnMs: performance.now(),
        outcome,
      };
    }
    this.history.push(op);
    return op;
  }

  private async client(c: number): Promise<void> {
    const rng = new SeededRng(this.opts.seed).fork(`client ${c}`);
    let seq = 0;
    /** seen: the last value this client saw of each key (null: absent), what its next swap expects. */
    const seen = new Map<string, string | null>();
    while (!this.stopped) {
      const key = `k${rng.nextInt(this.opts.keys)}`;
      const r = rng.nextFloat();
      const target = rng.pick(this.opts.targets);
      if (r < 0.35) {
        await this.record(c, 'put', key, `c${c}-${seq++}`, target);
      } else if (r < 0.45) {
        await this.record(c, 'delete', key, undefined, target);
      } else if (r < 0.65) {
        const op = await this.record(c, 'cas', key, `c${c}-${seq++}`, target, seen.get(key) ?? null);
        if (op.outcome === 'ok') seen.set(key, op.swapped === true ? (op.value ?? null) : (op.result ?? null));
      } else {
        const op = await this.record(c, 'get', key, undefined, target);
        if (op.outcome === 'ok') seen.set(key, op.result ?? null);
      }
      await new Promise((res) => setTimeout(res, this.opts.thinkMs));
    }
  }

  /** onceWriter puts `once/<n>` keys one after another, keeping those acknowledged (not part of the checked history). */
  private async onceWriter(): Promise<void> {
    const rng = new SeededRng(this.opts.seed).fork('once');
    for (let n = 0; !this.stopped; n++) {
      const target = rng.pick(this.opts.targets);
      const key = `once/${n}`;
      try {
        await target.kv.put({ key: enc.encode(key), value: enc.encode(`v${n}`) }, { deadlineMs: this.opts.deadlineMs });
        this.onceAcked.push(key);
      } catch (err) {
        // not acknowledged: nothing to check; counted by why
        const code = (err as Partial<grpc.ServiceError>).code;
        const why = code !== undefined ? (grpc.status[code] ?? String(code)) : String((err as Error).message ?? err).slice(0, 80);
        this.onceFailed.set(why, (this.onceFailed.get(why) ?? 0) + 1);
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  }
}

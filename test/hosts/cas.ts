/**
 * CasWorkload: compare-and-swap clients beside the chaos workload. Each
 * operation reads a `cas/<k>` key (linearizable Get) and swaps what it read
 * for a unique value with one Txn (compare value == read, or version == 0 when
 * absent; success: put the new value), through a member picked at random.
 *
 * checkCas: what linearizability means for these chains, checked directly
 * (the chaos checker has no compare-and-swap): with unique values, every
 * successful swap consumes the value it compared against, so per key
 *  - no value (nor the initial absence) is consumed by two acknowledged
 *    successful swaps (a lost update);
 *  - every value an acknowledged swap consumed was written by a swap that may
 *    have happened (acknowledged or of unknown outcome), and that swap was
 *    called before the consuming one returned (real-time order).
 */
import { performance } from 'node:perf_hooks';
import type { KvClient } from '../../src/client/kv-client.js';
import { CompareResult, CompareTarget, TxnOpType } from '../../src/gen/snapcoord/v1/kv.js';
import { outcomeOf } from '../chaos/workload.js';
import { SeededRng } from '../harness/rng.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** CasOp: one swap attempt. */
export interface CasOp {
  readonly client: number;
  readonly key: string;
  /** expected: the value read and compared against (null: absent). */
  readonly expected: string | null;
  readonly next: string;
  readonly callMs: number;
  readonly returnMs: number;
  /** ok: answered (see succeeded); fail: never applied; unknown: may have been applied. */
  readonly outcome: 'ok' | 'fail' | 'unknown';
  readonly succeeded: boolean;
}

export class CasWorkload {
  readonly ops: CasOp[] = [];
  private stopped = false;
  private running: Promise<void>[] = [];

  /** targets: a live view of the clients to pick from. */
  constructor(
    private readonly targets: () => readonly KvClient[],
    private readonly seed: number,
    private readonly clients = 2,
    private readonly keys = 2,
  ) {}

  start(): void {
    for (let c = 0; c < this.clients; c++) this.running.push(this.client(c));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  private async client(c: number): Promise<void> {
    const rng = new SeededRng(this.seed).fork(`cas ${c}`);
    for (let seq = 0; !this.stopped; seq++) {
      const ts = this.targets();
      const kv = ts[rng.nextInt(Math.max(1, ts.length))];
      const key = `cas/${rng.nextInt(this.keys)}`;
      if (kv === undefined) break;
      let expected: string | null;
      try {
        const g = await kv.get({ key: enc.encode(key) }, { deadlineMs: 3_000 });
        expected = g.found ? dec.decode(g.kv?.value) : null;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const next = `x${c}-${seq}`;
      const callMs = performance.now();
      const compare =
        expected === null
          ? { key: enc.encode(key), target: CompareTarget.COMPARE_TARGET_VERSION, result: CompareResult.COMPARE_RESULT_EQUAL, version: 0n }
          : { key: enc.encode(key), target: CompareTarget.COMPARE_TARGET_VALUE, result: CompareResult.COMPARE_RESULT_EQUAL, value: enc.encode(expected) };
      try {
        const r = await kv.txn({ compare: [{ value: new Uint8Array(), version: 0n, createRevision: 0n, modRevision: 0n, ...compare }], success: [{ type: TxnOpType.TXN_OP_TYPE_PUT, key: enc.encode(key), value: enc.encode(next), prevKv: false }] }, { deadlineMs: 3_000 });
        this.ops.push({ client: c, key, expected, next, callMs, returnMs: performance.now(), outcome: 'ok', succeeded: r.succeeded });
      } catch (err) {
        this.ops.push({ client: c, key, expected, next, callMs, returnMs: performance.now(), outcome: outcomeOf(err), succeeded: false });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** CasVerdict: the chains' check. */
export interface CasVerdict {
  readonly ok: boolean;
  readonly swapped: number;
  readonly refused: number;
  readonly unknown: number;
  readonly violations: string[];
}

/** checkCas checks the swap chains of `ops` (see the header). */
export function checkCas(ops: readonly CasOp[]): CasVerdict {
  const violations: string[] = [];
  const byKey = new Map<string, CasOp[]>();
  for (const o of ops) byKey.set(o.key, [...(byKey.get(o.key) ?? []), o]);
  for (const [key, kops] of byKey) {
    const acked = kops.filter((o) => o.outcome === 'ok' && o.succeeded);
    const consumed = new Map<string, CasOp>();
    for (const o of acked) {
      const e = o.expected ?? '(absent)';
      const prev = consumed.get(e);
      if (prev !== undefined) violations.push(`${key}: ${e} consumed twice (${prev.next} and ${o.next}): a lost update`);
      consumed.set(e, o);
      if (o.expected === null) continue;
      const writer = kops.find((w) => w.next === o.expected && w.outcome !== 'fail' && !(w.outcome === 'ok' && !w.succeeded));
      if (writer === undefined) violations.push(`${key}: ${o.next} swapped ${o.expected}, which no swap that may have happened wrote`);
      else if (writer.callMs > o.returnMs) violations.push(`${key}: ${o.next} swapped ${o.expected} before that was written (called after it returned)`);
    }
  }
  return {
    ok: violations.length === 0,
    swapped: ops.filter((o) => o.outcome === 'ok' && o.succeeded).length,
    refused: ops.filter((o) => o.outcome === 'ok' && !o.succeeded).length,
    unknown: ops.filter((o) => o.outcome === 'unknown').length,
    violations,
  };
}

/**
 * KvHistory: the checker of what clients saw, apart from the fakes. It keeps
 * the one committed sequence of KV effects (recorded from the first node to
 * apply each index, every later applier checked against it) and the clients'
 * acknowledged writes, and checks:
 * - no acknowledged write lost: the entry at the index a write was
 *   acknowledged at carries that write's effect, on every node;
 * - linearizable reads: a read returns the value of a committed write (or
 *   absence) no older than every write acknowledged before the read began;
 * - equal results: every node applying an index gets the same outcome.
 * Failures are thrown as SafetyViolation.
 */
import { decodeCommand, type KvCommand, type KvPut, type KvDelete } from '../../src/fsm/kv-command.js';
import type { Entry, NodeId } from '../../src/raft/types.js';
import type { ApplyResult } from '../../src/storage/types.js';
import { SafetyViolation } from './checkers.js';

export const HISTORY = {
  lostWrite: 'Acknowledged Write Lost',
  staleRead: 'Linearizable Read',
  applyResult: 'State Machine Safety',
  stateDigest: 'State Digest',
} as const;

/** Effect: what one committed entry did to the KV (null value: deleted); null effect: nothing. */
export interface Effect {
  readonly key: string;
  readonly value: string | null;
}

const dec = new TextDecoder();

/** effectOf: the KV effect of a committed normal entry given its apply result (only single put/delete/txn commands). */
export function effectOf(cmd: KvCommand | null, r: ApplyResult | undefined): Effect | null {
  if (cmd === null || r === undefined || !r.ok) return null;
  const one = (op: KvPut | KvDelete): Effect => ({ key: dec.decode(op.key), value: op.op === 'put' ? dec.decode(op.value) : null });
  if (cmd.op === 'put' || cmd.op === 'delete') return one(cmd);
  if (cmd.op === 'txn') {
    const ops = r.succeeded === true ? cmd.success : cmd.failure;
    const w = ops.find((o): o is KvPut | KvDelete => o.op !== 'get');
    return w === undefined ? null : one(w);
  }
  return null;
}

/** commandOf: the KV command of an entry, or null (no-ops, conf entries, other entry kinds). */
export function commandOf(e: Entry): KvCommand | null {
  if (e.type !== 'normal' || e.data.length === 0) return null;
  try {
    return decodeCommand(e.data);
  } catch {
    return null;
  }
}

interface Applied {
  readonly effect: Effect | null;
  readonly ok: boolean;
  readonly succeeded: boolean | undefined;
}

export class KvHistory {
  now = 0;
  private readonly applied = new Map<number, Applied>();
  /** byKey: each key's committed effects in index order. */
  private readonly byKey = new Map<string, { index: number; value: string | null }[]>();
  private readonly valueIndex = new Map<string, number>();
  /** acked: writes acknowledged to a client: index -> effect, and the op sequence number of the ack. */
  private readonly acked: { index: number; effect: Effect; seq: number }[] = [];
  private seq = 0;
  maxApplied = 0;

  private fail(property: string, nodes: readonly NodeId[], detail: string): never {
    throw new SafetyViolation(property, nodes, this.now, detail);
  }

  /** tick: the op sequence number now (orders acks before read starts). */
  tick(): number {
    return ++this.seq;
  }

  /** onApply: node applied e with result r. */
  onApply(node: NodeId, e: Entry, r: ApplyResult | undefined): void {
    const cmd = commandOf(e);
    const a: Applied = { effect: effectOf(cmd, r), ok: r?.ok ?? false, succeeded: r !== undefined && r.ok ? r.succeeded : undefined };
    const known = this.applied.get(e.index);
    if (known === undefined) {
      this.applied.set(e.index, a);
      if (e.index > this.maxApplied) this.maxApplied = e.index;
      if (a.effect !== null) {
        let list = this.byKey.get(a.effect.key);
        if (list === undefined) this.byKey.set(a.effect.key, (list = []));
        list.push({ index: e.index, value: a.effect.value });
        if (a.effect.value !== null) this.valueIndex.set(a.effect.value, e.index);
      }
      return;
    }
    if (known.ok !== a.ok || known.succeeded !== a.succeeded || !sameEffect(known.effect, a.effect)) {
      this.fail(HISTORY.applyResult, [node], `entry ${e.index} applied with another outcome than on another node (${JSON.stringify(a)} vs ${JSON.stringify(known)})`);
    }
  }

  /** onAck: a client's write was acknowledged at index with effect (null: a compare that failed, no write). */
  onAck(node: NodeId, index: number, effect: Effect | null): void {
    const known = this.applied.get(index);
    if (known === undefined) this.fail(HISTORY.lostWrite, [node], `write acknowledged at index ${index}, which no node applied`);
    if (!sameEffect(known.effect, effect)) {
      this.fail(HISTORY.lostWrite, [node], `write acknowledged at index ${index} as ${JSON.stringify(effect)}, but the entry applied there did ${JSON.stringify(known.effect)}`);
    }
    if (effect !== null) this.acked.push({ index, effect, seq: this.tick() });
  }

  /** onRead: a linearizable read of key that began at op sequence startSeq returned value (undefined: absent). */
  onRead(node: NodeId, key: string, startSeq: number, value: string | undefined): void {
    let m = 0;
    for (const a of this.acked) if (a.seq < startSeq && a.effect.key === key && a.index > m) m = a.index;
    if (value !== undefined) {
      const at = this.valueIndex.get(value);
      if (at === undefined) this.fail(HISTORY.staleRead, [node], `read of ${key} returned ${value}, which no committed entry wrote`);
      if (at < m) this.fail(HISTORY.staleRead, [node], `read of ${key} returned ${value} (written at ${at}), older than the write acknowledged at ${m} before the read began`);
      return;
    }
    if (m === 0) return;
    const list = this.byKey.get(key) ?? [];
    const atM = list.find((x) => x.index === m);
    if (atM !== undefined && atM.value === null) return;
    if (list.some((x) => x.index > m && x.value === null)) return;
    this.fail(HISTORY.staleRead, [node], `read of ${key} found nothing, but a put was acknowledged at ${m} before the read began and no later delete committed`);
  }

  /** stateAt: the committed value of every key after applying up to index. */
  stateAt(index: number): Map<string, string | null> {
    const out = new Map<string, string | null>();
    for (const [key, list] of this.byKey) {
      let v: string | null = null;
      for (const x of list) if (x.index <= index) v = x.value;
      out.set(key, v);
    }
    return out;
  }

  /** ackedWrites: how many writes were acknowledged. */
  ackedWrites(): number {
    return this.acked.length;
  }
}

function sameEffect(a: Effect | null, b: Effect | null): boolean {
  if (a === null || b === null) return a === b;
  return a.key === b.key && a.value === b.value;
}

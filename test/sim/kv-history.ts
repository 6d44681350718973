/**
 * KvHistory: the checker of what clients saw, apart from the fakes. It keeps
 * its own model of the KV: the one committed sequence of effects, computed
 * from each committed command the first time any node applies its index
 * (puts, deletes, and compare-and-swap decided on the model's own state), and
 * the clients' acknowledged writes, and checks:
 * - no acknowledged write lost: the entry at the index a write was
 *   acknowledged at carries that write's effect, on every node;
 * - linearizable reads: a read returns the value of a committed write (or
 *   absence) no older than every write acknowledged before the read began;
 * - equal results: the result a client is given (a compare-and-swap's
 *   success) is the model's.
 * A restore entry (its archive registered by the client that built it) sets
 * the whole model to the archive's state at its index: every key the archive
 * holds takes its value, every other key is deleted; a restore acknowledged
 * to its client counts as a write of every key. A restore entry of a
 * poisoned archive (which must be refused before it is proposed) or of an
 * archive nobody built is a violation.
 * Failures are thrown as SafetyViolation.
 */
import { decodeCommand, type KvCommand, type KvPut, type KvDelete } from '../../src/fsm/kv-command.js';
import { decodeRestoreCommand, isRestoreCommand } from '../../src/fsm/restore-command.js';
import type { Entry, NodeId } from '../../src/raft/types.js';
import type { ApplyResult } from '../../src/fsm/types.js';
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

export class KvHistory {
  now = 0;
  private readonly applied = new Map<number, Effect | null>();
  /** byKey: each key's committed effects in index order. */
  private readonly byKey = new Map<string, { index: number; value: string | null }[]>();
  private readonly valueIndex = new Map<string, number>();
  /** acked: writes acknowledged to a client: index -> effect, and the op sequence number of the ack. */
  private readonly acked: { index: number; effect: Effect; seq: number }[] = [];
  private seq = 0;
  maxApplied = 0;
  /**
   * sessions: the request ids applied per client (sessions.ts: a retried
   * request id changes nothing; the model keeps every id, and the workload
   * retries only a client's newest one, so none is ever forgotten).
   */
  private readonly sessions = new Map<string, Set<number>>();
  /** duplicates: entries whose request id was applied before (they changed nothing). */
  duplicates = 0;
  /** archives: the state each archive a client built holds, by digest; null for a poisoned one. */
  private readonly archives = new Map<string, ReadonlyMap<string, string> | null>();
  /** restores: the digest of the restore entry at each index. */
  private readonly restores = new Map<number, string>();

  /** registerArchive: a client built the archive with this digest, holding `state` (null: poisoned, never to be applied). */
  registerArchive(digest: string, state: ReadonlyMap<string, string> | null): void {
    this.archives.set(digest, state);
  }

  /** restoresApplied: restore entries committed so far. */
  get restoresApplied(): number {
    return this.restores.size;
  }

  private fail(property: string, nodes: readonly NodeId[], detail: string): never {
    throw new SafetyViolation(property, nodes, this.now, detail);
  }

  /** tick: the op sequence number now (orders acks before read starts). */
  tick(): number {
    return ++this.seq;
  }

  /** onApply: node applied committed entry e (its KV effect is recorded the first time its index is). */
  onApply(e: Entry): void {
    if (this.applied.has(e.index)) return; // log matching on committed entries (checkers.ts) covers the rest
    if (e.index !== this.maxApplied + 1) this.fail(HISTORY.applyResult, [], `entry ${e.index} applied first, after ${this.maxApplied}`);
    if (e.type === 'normal' && isRestoreCommand(e.data)) return this.applyRestore(e);
    const effect = this.modelEffect(commandOf(e));
    this.applied.set(e.index, effect);
    this.maxApplied = e.index;
    if (effect !== null) {
      let list = this.byKey.get(effect.key);
      if (list === undefined) this.byKey.set(effect.key, (list = []));
      list.push({ index: e.index, value: effect.value });
      if (effect.value !== null) this.valueIndex.set(effect.value, e.index);
    }
  }

  /** applyRestore: restore entry e sets the model to its archive's state. */
  private applyRestore(e: Entry): void {
    const cmd = decodeRestoreCommand(e.data);
    const state = cmd === null ? undefined : this.archives.get(cmd.digest);
    if (cmd === null || state === undefined) this.fail(HISTORY.applyResult, [], `restore entry ${e.index} names an archive no client built`);
    if (state === null) this.fail(HISTORY.applyResult, [], `restore entry ${e.index} names a poisoned archive (${cmd.digest.slice(0, 12)}…): it was proposed, not refused`);
    this.applied.set(e.index, null);
    this.restores.set(e.index, cmd.digest);
    this.maxApplied = e.index;
    for (const key of new Set([...this.byKey.keys(), ...state.keys()])) {
      const value = state.get(key) ?? null;
      let list = this.byKey.get(key);
      if (list === undefined) this.byKey.set(key, (list = []));
      list.push({ index: e.index, value });
      if (value !== null) this.valueIndex.set(value, e.index);
    }
  }

  /** onRestoreAck: a client was told its restore of the archive `digest` was applied at index: every key counts as written there. */
  onRestoreAck(node: NodeId, index: number, digest: string): void {
    const at = this.restores.get(index);
    if (at !== digest) this.fail(HISTORY.lostWrite, [node], `restore acknowledged at index ${index}, but the committed entry there is ${at === undefined ? 'no restore' : `the restore of ${at.slice(0, 12)}…`}`);
    const seq = this.tick();
    for (const [key, list] of this.byKey) {
      const x = list.find((y) => y.index === index);
      if (x !== undefined) this.acked.push({ index, effect: { key, value: x.value }, seq });
    }
  }

  /** modelEffect: what cmd does to the model's current state (compare-and-swap on a value compare decided here). */
  private modelEffect(cmd: KvCommand | null): Effect | null {
    if (cmd === null) return null;
    if (cmd.session !== undefined) {
      let ids = this.sessions.get(cmd.session.clientId);
      if (ids === undefined) this.sessions.set(cmd.session.clientId, (ids = new Set()));
      if (ids.has(cmd.session.seq)) {
        this.duplicates++;
        return null; // a retry of an applied request: applied once only
      }
      ids.add(cmd.session.seq);
    }
    if (cmd.op === 'put' || cmd.op === 'delete') return effectOf(cmd, { index: 0, ok: true });
    if (cmd.op !== 'txn') return null;
    const holds = cmd.compares.every((c) => {
      if (c.target !== 'value' || c.result !== 'equal') throw new Error('kv-history: only value-equal compares are modelled');
      const list = this.byKey.get(dec.decode(c.key));
      const current = list === undefined || list.length === 0 ? null : (list[list.length - 1] as { value: string | null }).value;
      return current === dec.decode(c.value);
    });
    return effectOf(cmd, { index: 0, ok: true, succeeded: holds });
  }

  /** onAck: a client's write was acknowledged at index with effect (null: a compare that failed, no write). */
  onAck(node: NodeId, index: number, effect: Effect | null): void {
    if (!this.applied.has(index)) this.fail(HISTORY.lostWrite, [node], `write acknowledged at index ${index}, which no node applied`);
    const known = this.applied.get(index) ?? null;
    if (!sameEffect(known, effect)) {
      this.fail(HISTORY.lostWrite, [node], `write acknowledged at index ${index} as ${JSON.stringify(effect)}, but the committed entry there did ${JSON.stringify(known)}`);
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

/**
 * A linearizability checker for histories of a key-value store (a map from
 * string key to string value; absent = undefined), each key a register with
 * put, get, delete and compare-and-swap (as Jepsen's etcd test models it):
 * a `cas` that swapped needed the value `expected` and wrote `value`; one that
 * did not swap needed any other value (and, when the op carries the `result`
 * its failure branch read, exactly that one) and wrote nothing.
 *
 * Algorithm: Wing & Gong's search as improved by Lowe ("Testing for
 * linearizability", 2017) and implemented by porcupine (Anish Athalye):
 *  - the history becomes a doubly linked list of call and return events in
 *    time order; an op may be linearized next only if its call comes before
 *    the first remaining return (no pending op has to take effect earlier);
 *  - depth-first search with an explicit stack (histories may hold thousands
 *    of ops per key): linearize a candidate (lift its call and return out of
 *    the list), or, on reaching a return, backtrack;
 *  - memoisation: every (set of linearized ops, model state) configuration is
 *    searched once; meeting it again means its subtree already failed;
 *  - P-compositionality: linearizability is local (Herlihy & Wing 1990,
 *    Theorem 1), so each key is checked on its own, much smaller, sub-history.
 *
 * Outcomes: a 'fail' op never happened and is dropped; an 'unknown' put or
 * delete may have taken effect at any time after its call, or never: its
 * return is +Infinity and the search may leave it out (see `searchKey`); an
 * 'unknown' get carries no information and is dropped; so is an 'unknown'
 * write whose value no get returned (see dropUnobservedWrites).
 *
 * The work per key is bounded (`maxStepsPerKey`): a search that runs out of
 * steps says 'unknown', never 'ok'.
 */

export type OpKind = 'put' | 'get' | 'delete' | 'cas';
export type Outcome = 'ok' | 'fail' | 'unknown';

/** One client operation as recorded by a workload. */
export interface Op {
  /** unique in the history */
  readonly id: number;
  /** client number (a client runs one op at a time) */
  readonly client: number;
  readonly kind: OpKind;
  readonly key: string;
  /** put, cas: the value written (workloads write unique values) */
  readonly value?: string;
  /** cas: the value the key must hold for the swap (null: the key must be absent) */
  readonly expected?: string | null;
  /** cas with outcome ok: whether it swapped */
  readonly swapped?: boolean;
  /** when the call started (monotonic ms, e.g. performance.now()) */
  readonly callMs: number;
  /** when the answer (or the failure/timeout) arrived */
  readonly returnMs: number;
  /** ok: acknowledged; fail: definitely did not happen; unknown: may or may not have happened */
  readonly outcome: Outcome;
  /** get with outcome ok: the value read, null when absent; cas ok that did not swap: the value it found, when known */
  readonly result?: string | null;
}

export type VerdictKind = 'ok' | 'illegal' | 'unknown';

/** The verdict for one key's sub-history. */
export interface KeyVerdict {
  key: string;
  /** ops searched (fails, unknown gets and unobserved unknown writes are dropped) */
  ops: number;
  /** 'unknown': the search ran out of steps */
  verdict: VerdictKind;
  /** search steps used (one per candidate tried or backtrack) */
  steps: number;
  /** for 'illegal': see describeIllegal */
  explanation?: string;
}

/** The verdict for a whole history: 'illegal' if any key is, else 'unknown' if any key is, else 'ok'. */
export interface Verdict {
  ok: boolean;
  verdict: VerdictKind;
  keys: KeyVerdict[];
  /** ops searched over all keys */
  ops: number;
}

export interface CheckOptions {
  /** search steps allowed per key before giving up with 'unknown' (default 5,000,000) */
  maxStepsPerKey?: number;
}

/** Where the search of an illegal key got stuck: the deepest configuration it reached. */
export interface IllegalWitness {
  key: string;
  /** the longest linearizable prefix found, in linearization order */
  prefix: readonly Op[];
  /** the value after the prefix (null: absent) */
  state: string | null;
  /** the ops that could go next (called before `deadline` returned), none of them legal in `state` */
  candidates: readonly Op[];
  /** the pending op that returns first (one of the candidates): it had to take effect by then */
  deadline: Op;
}

const DEFAULT_MAX_STEPS = 5_000_000;
/** How many prefix ops an explanation shows (the last ones, next to where it got stuck). */
const PREFIX_SHOWN = 8;

/**
 * checkHistory checks that `history` is linearizable, key by key.
 * Throws on a malformed history (see validateHistory).
 */
export function checkHistory(history: readonly Op[], opts: CheckOptions = {}): Verdict {
  const maxSteps = opts.maxStepsPerKey ?? DEFAULT_MAX_STEPS;
  if (!Number.isSafeInteger(maxSteps) || maxSteps < 0) {
    throw new Error(`linearizability: maxStepsPerKey must be a non-negative integer, got ${maxSteps}`);
  }
  validateHistory(history);

  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    if (op.outcome === 'fail' || (op.kind === 'get' && op.outcome !== 'ok')) continue;
    const ops = byKey.get(op.key);
    if (ops === undefined) byKey.set(op.key, [op]);
    else ops.push(op);
  }

  const keys: KeyVerdict[] = [];
  let total = 0;
  for (const [key, ops] of byKey) {
    const kept = dropUnobservedWrites(ops);
    keys.push(searchKey(key, kept, maxSteps));
    total += kept.length;
  }
  const verdict: VerdictKind = keys.some((k) => k.verdict === 'illegal')
    ? 'illegal'
    : keys.some((k) => k.verdict === 'unknown')
      ? 'unknown'
      : 'ok';
  return { ok: verdict === 'ok', verdict, keys, ops: total };
}

/**
 * validateHistory throws an Error naming the first malformed op: bad kind,
 * outcome or times, returnMs < callMs, a duplicate id, a put without a value,
 * a get ok without a result, or a client with overlapping ops.
 */
export function validateHistory(history: readonly Op[]): void {
  const ids = new Set<number>();
  const byClient = new Map<number, Op[]>();
  for (const op of history) {
    const what = `linearizability: op #${op.id} (client ${op.client})`;
    if (ids.has(op.id)) throw new Error(`${what}: duplicate id`);
    ids.add(op.id);
    if (op.kind !== 'put' && op.kind !== 'get' && op.kind !== 'delete' && op.kind !== 'cas') throw new Error(`${what}: unknown kind ${String(op.kind)}`);
    if (op.outcome !== 'ok' && op.outcome !== 'fail' && op.outcome !== 'unknown') {
      throw new Error(`${what}: unknown outcome ${String(op.outcome)}`);
    }
    if (typeof op.key !== 'string') throw new Error(`${what}: key must be a string`);
    if (!Number.isFinite(op.callMs) || !Number.isFinite(op.returnMs)) {
      throw new Error(`${what}: callMs and returnMs must be finite numbers (got ${op.callMs}, ${op.returnMs})`);
    }
    if (op.returnMs < op.callMs) throw new Error(`${what}: returnMs ${op.returnMs} < callMs ${op.callMs}`);
    if ((op.kind === 'put' || op.kind === 'cas') && typeof op.value !== 'string') throw new Error(`${what}: ${op.kind} without a string value`);
    if (op.kind === 'cas') {
      if (op.expected !== null && typeof op.expected !== 'string') throw new Error(`${what}: cas without an expected value (a string, or null for absent)`);
      if (op.outcome === 'ok' && typeof op.swapped !== 'boolean') throw new Error(`${what}: cas ok without swapped`);
      if (op.outcome === 'ok' && op.swapped === false && op.result !== undefined && op.result === op.expected) {
        throw new Error(`${what}: cas did not swap yet found the expected value`);
      }
    }
    if (op.kind === 'get' && op.outcome === 'ok' && op.result !== null && typeof op.result !== 'string') {
      throw new Error(`${what}: get ok without a result (a string, or null when absent)`);
    }
    const ops = byClient.get(op.client);
    if (ops === undefined) byClient.set(op.client, [op]);
    else ops.push(op);
  }
  for (const [client, ops] of byClient) {
    ops.sort((a, b) => a.callMs - b.callMs || a.returnMs - b.returnMs);
    for (let i = 1; i < ops.length; i++) {
      const prev = ops[i - 1] as Op;
      const cur = ops[i] as Op;
      if (cur.callMs < prev.returnMs) {
        throw new Error(
          `linearizability: client ${client} runs ops #${prev.id} [${prev.callMs}, ${prev.returnMs}] and #${cur.id} [${cur.callMs}, ${cur.returnMs}] at the same time`,
        );
      }
    }
  }
}

/**
 * dropUnobservedWrites removes the 'unknown' writes of one key (put, delete,
 * cas) whose written value (absent, for a delete) no op of the key observed:
 * no get returned it, no swapped cas expected it, no cas that did not swap
 * found it. Sound: in any legal linearization, the ops between such a write
 * and the next write could only be ones that do not observe a value, and
 * taking the write out keeps the rest legal. A cas that did not swap without
 * the value it found observes only "not expected", which taking a write out
 * could break: then nothing is dropped. Each unknown write doubles the
 * configurations to search, so this matters.
 */
function dropUnobservedWrites(ops: readonly Op[]): Op[] {
  const read = new Set<string | null>();
  for (const op of ops) {
    if (op.kind === 'get') read.add(op.result ?? null);
    if (op.kind === 'cas' && op.outcome === 'ok') {
      if (op.swapped === true) read.add(op.expected ?? null);
      else if (op.result === undefined) return [...ops];
      else read.add(op.result);
    }
  }
  return ops.filter((op) => op.outcome === 'ok' || read.has(op.kind === 'delete' ? null : (op.value ?? null)));
}

/** describeIllegal explains where the search of an illegal key got stuck, in a few lines. */
export function describeIllegal(w: IllegalWitness): string {
  const lines = [`key ${JSON.stringify(w.key)}: not linearizable.`];
  if (w.prefix.length === 0) {
    lines.push('No op can be linearized first (the key starts absent).');
  } else {
    lines.push(`Longest linearizable prefix: ${w.prefix.length} op(s)${w.prefix.length > PREFIX_SHOWN ? `, the last ${PREFIX_SHOWN}` : ''}:`);
    for (const op of w.prefix.slice(-PREFIX_SHOWN)) lines.push(`  ${describeOp(op)}`);
  }
  lines.push(`Then the value is ${showValue(w.state)} and none of these can go next:`);
  for (const op of w.candidates) lines.push(`  ${describeOp(op)}`);
  lines.push(`yet #${w.deadline.id} must take effect before it returns at ${w.deadline.returnMs}.`);
  return lines.join('\n');
}

/** describeOp: `#id c<client> <kind> <args> [call, return] <outcome>`. */
function describeOp(op: Op): string {
  const what =
    op.kind === 'put'
      ? `put ${showValue(op.value ?? null)}`
      : op.kind === 'get'
        ? `get -> ${showValue(op.result ?? null)}`
        : op.kind === 'cas'
          ? `cas ${showValue(op.expected ?? null)} -> ${showValue(op.value ?? null)}${
              op.outcome !== 'ok' ? '' : op.swapped === true ? ' swapped' : ` not swapped${op.result !== undefined ? ` (found ${showValue(op.result)})` : ''}`
            }`
          : 'delete';
  const when = op.outcome === 'unknown' ? `[${op.callMs}, ?] unknown (timed out at ${op.returnMs})` : `[${op.callMs}, ${op.returnMs}] ${op.outcome}`;
  return `#${op.id} c${op.client} ${what} ${when}`;
}

function showValue(v: string | null): string {
  return v === null ? '(absent)' : JSON.stringify(v);
}

/**
 * An op of one key prepared for the search; values are interned to small
 * integers (0 = absent). Legal in a state equal to `pre` (when >= 0) and
 * different from `notPre` (when >= 0); it then sets the state to `post` (when
 * >= 0, else leaves it).
 */
interface SearchOp {
  readonly op: Op;
  /** false for an 'unknown' put/delete/cas: the search may leave it out */
  readonly required: boolean;
  readonly pre: number;
  readonly notPre: number;
  readonly post: number;
}

/** searchOp: the transition of `op` (see SearchOp). */
function searchOp(op: Op, required: boolean, intern: (v: string | null | undefined) => number): SearchOp {
  switch (op.kind) {
    case 'put':
      return { op, required, pre: -1, notPre: -1, post: intern(op.value) };
    case 'delete':
      return { op, required, pre: -1, notPre: -1, post: 0 };
    case 'get':
      return { op, required, pre: intern(op.result), notPre: -1, post: -1 };
    case 'cas':
      // an unknown cas, if it took effect at all, swapped (one that did not changed nothing: the same as leaving it out)
      if (op.outcome !== 'ok' || op.swapped === true) return { op, required, pre: intern(op.expected), notPre: -1, post: intern(op.value) };
      return { op, required, pre: op.result === undefined ? -1 : intern(op.result), notPre: intern(op.expected), post: -1 };
  }
}

/**
 * searchKey runs the WGL search over one key's ops (fails and unknown gets
 * already dropped).
 *
 * Unknown writes: their return event is at +Infinity, so they never force
 * anything and stay candidates until linearized. The search succeeds as soon
 * as every required op is linearized: the unknown writes still pending are
 * then left out, which is the same as their never taking effect (allowed for
 * an unknown op; for an unknown cas, also the same as its compare failing).
 */
function searchKey(key: string, ops: readonly Op[], maxSteps: number): KeyVerdict {
  const values = ['']; // interned value ids; 0 stands for "absent"
  const ids = new Map<string, number>();
  const intern = (v: string | null | undefined): number => {
    if (v === null || v === undefined) return 0;
    let id = ids.get(v);
    if (id === undefined) {
      id = values.length;
      values.push(v);
      ids.set(v, id);
    }
    return id;
  };

  // Required ops first, then unknown writes (see LinearizedSet), each in call order.
  const sorted = ops
    .map((op) => ({ op, required: op.outcome === 'ok' }))
    .sort((a, b) => Number(b.required) - Number(a.required) || a.op.callMs - b.op.callMs || a.op.id - b.op.id);
  const sops: SearchOp[] = sorted.map(({ op, required }) => searchOp(op, required, intern));
  const n = sops.length;
  const nRequired = sorted.filter((s) => s.required).length;

  // Events in time order; at equal times calls come first, so touching ops count
  // as concurrent (millisecond clocks cannot order them; never a false 'illegal').
  const events: { time: number; ret: boolean; op: number }[] = [];
  sops.forEach((s, i) => {
    events.push({ time: s.op.callMs, ret: false, op: i });
    events.push({ time: s.required ? s.op.returnMs : Infinity, ret: true, op: i });
  });
  events.sort((a, b) => a.time - b.time || Number(a.ret) - Number(b.ret) || a.op - b.op);

  // Doubly linked list over node 0 (head), 1..2n (events), 2n+1 (tail).
  const HEAD = 0;
  const TAIL = 2 * n + 1;
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  const nodeOp = new Int32Array(2 * n + 2);
  const isCall = new Uint8Array(2 * n + 2);
  const callNode = new Int32Array(n);
  const retNode = new Int32Array(n);
  events.forEach((e, k) => {
    const node = k + 1;
    nodeOp[node] = e.op;
    isCall[node] = e.ret ? 0 : 1;
    if (e.ret) retNode[e.op] = node;
    else callNode[e.op] = node;
  });
  for (let node = 0; node <= TAIL; node++) {
    next[node] = node + 1;
    prev[node] = node - 1;
  }
  const unlink = (node: number): void => {
    next[prev[node] as number] = next[node] as number;
    prev[next[node] as number] = prev[node] as number;
  };
  const relink = (node: number): void => {
    next[prev[node] as number] = node;
    prev[next[node] as number] = node;
  };
  // lift/unlift take an op out of the list and put it back (dancing links: undo in reverse order).
  const lift = (i: number): void => {
    unlink(callNode[i] as number);
    unlink(retNode[i] as number);
  };
  const unlift = (i: number): void => {
    relink(retNode[i] as number);
    relink(callNode[i] as number);
  };

  const linearized = new LinearizedSet(nRequired, n - nRequired);
  const seen = new Set<string>();
  const stack: number[] = []; // linearized ops, in order
  const stateBefore: number[] = []; // the state before each of them
  let state = 0;
  let placedRequired = 0;
  let steps = 0;
  // Where the search got deepest, for the explanation (see IllegalWitness).
  const deepest = new DeepestPath();
  let deepestState = 0;
  let deepestCandidates: number[] = [];
  let deadline = -1;

  let node = next[HEAD] as number;
  for (;;) {
    if (placedRequired === nRequired) return { key, ops: n, verdict: 'ok', steps };
    if (steps >= maxSteps) return { key, ops: n, verdict: 'unknown', steps };
    steps++;
    const i = nodeOp[node] as number;
    if (isCall[node] === 1) {
      const s = sops[i] as SearchOp;
      const legal = (s.pre < 0 || state === s.pre) && (s.notPre < 0 || state !== s.notPre);
      const after = !legal ? -1 : s.post >= 0 ? s.post : state;
      if (after >= 0) {
        linearized.add(i);
        const config = linearized.key(after);
        if (!seen.has(config)) {
          seen.add(config);
          deepest.pushed(stack.length, i);
          stack.push(i);
          stateBefore.push(state);
          state = after;
          if (s.required) placedRequired++;
          lift(i);
          node = next[HEAD] as number;
          continue;
        }
        linearized.delete(i);
      }
      node = next[node] as number;
      continue;
    }
    // A return: op i must have been linearized by now, and no candidate works here.
    if (deadline < 0 || stack.length > deepest.ops.length) {
      // At the deepest point every candidate failed the model (a cached one would have led deeper before).
      deepest.record(stack);
      deepestState = state;
      deepestCandidates = [];
      for (let c = next[HEAD] as number; c !== node; c = next[c] as number) if (isCall[c] === 1) deepestCandidates.push(nodeOp[c] as number);
      deadline = i;
    }
    const top = stack.pop();
    if (top === undefined) {
      const opOf = (j: number): Op => (sops[j] as SearchOp).op;
      const explanation = describeIllegal({
        key,
        prefix: deepest.ops.map(opOf),
        state: deepestState === 0 ? null : (values[deepestState] as string),
        candidates: deepestCandidates.map(opOf),
        deadline: opOf(deadline),
      });
      return { key, ops: n, verdict: 'illegal', steps, explanation };
    }
    deepest.popped(stack.length);
    state = stateBefore.pop() as number;
    linearized.delete(top);
    if ((sops[top] as SearchOp).required) placedRequired--;
    unlift(top);
    node = next[callNode[top] as number] as number;
  }
}

/**
 * DeepestPath keeps a copy of the deepest search stack recorded so far. It
 * tracks how much of it the live stack still shares, so a record copies only
 * the ops pushed since they diverged: O(1) amortised per push, where copying
 * the whole stack at each new depth would be quadratic in the history.
 */
class DeepestPath {
  readonly ops: number[] = [];
  /** length of the common prefix of `ops` and the live stack */
  private common = 0;

  /** pushed: the live stack got `op` at index `depth`. */
  pushed(depth: number, op: number): void {
    if (this.common === depth && this.ops[depth] === op) this.common++;
  }

  /** popped: the live stack shrank to `depth` ops. */
  popped(depth: number): void {
    if (this.common > depth) this.common = depth;
  }

  /** record makes the live stack the deepest one. */
  record(stack: readonly number[]): void {
    this.ops.length = this.common;
    for (let k = this.common; k < stack.length; k++) this.ops.push(stack[k] as number);
    this.common = stack.length;
  }
}

/**
 * LinearizedSet: the set of linearized ops of one key as a bitset, with a
 * compact string key for the memo. Required ops (indices 0..nRequired-1, in
 * call order) mostly form a run of linearized ops, a narrow window of mixed
 * bits, then nothing; so the key stores the window only: the index of the first
 * word not all ones, then the words up to the last non-zero one. The unknown
 * writes (few) follow in full. Memory per configuration stays small even with
 * thousands of ops.
 */
class LinearizedSet {
  private readonly req: Uint32Array;
  private readonly opt: Uint32Array;
  /** first required word that is not all ones */
  private lo = 0;
  /** last required word that is not zero (-1: none) */
  private hi = -1;
  /** the all-ones value of the last required word (which may be partial) */
  private readonly lastFull: number;

  constructor(
    private readonly nRequired: number,
    nOptional: number,
  ) {
    this.req = new Uint32Array(Math.ceil(nRequired / 32));
    this.opt = new Uint32Array(Math.ceil(nOptional / 32));
    const tail = nRequired % 32;
    this.lastFull = tail === 0 ? 0xffffffff : 2 ** tail - 1;
  }

  add(i: number): void {
    if (i >= this.nRequired) {
      const j = i - this.nRequired;
      this.opt[j >>> 5] = (this.opt[j >>> 5] as number) | (1 << (j & 31));
      return;
    }
    const w = i >>> 5;
    this.req[w] = (this.req[w] as number) | (1 << (i & 31));
    if (w > this.hi) this.hi = w;
    while (this.lo < this.req.length && this.req[this.lo] === this.full(this.lo)) this.lo++;
  }

  delete(i: number): void {
    if (i >= this.nRequired) {
      const j = i - this.nRequired;
      this.opt[j >>> 5] = (this.opt[j >>> 5] as number) & ~(1 << (j & 31));
      return;
    }
    const w = i >>> 5;
    this.req[w] = (this.req[w] as number) & ~(1 << (i & 31));
    if (w < this.lo) this.lo = w;
    while (this.hi >= 0 && this.req[this.hi] === 0) this.hi--;
  }

  /** key identifies (this set, state); the unknown-writes part has a fixed length, so it is unambiguous. */
  key(state: number): string {
    let k = `${state},${this.lo},`;
    for (let w = this.lo; w <= this.hi; w++) k += word(this.req[w] as number);
    for (let w = 0; w < this.opt.length; w++) k += word(this.opt[w] as number);
    return k;
  }

  private full(w: number): number {
    return w === this.req.length - 1 ? this.lastFull : 0xffffffff;
  }
}

/** word encodes 32 bits as two UTF-16 code units. */
function word(x: number): string {
  return String.fromCharCode(x & 0xffff, x >>> 16);
}

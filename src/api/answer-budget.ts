/**
 * AnswerBudget: how many bytes of answers one client-plane caller may have
 * the node hold for it at once: answers being built, and answers sent but
 * not yet taken by its client.
 *
 * grpc-js hands an answer to HTTP/2 whole, and HTTP/2 keeps it in the
 * node's memory until the client's flow-control window and socket take it:
 * a client that never reads pins every answer it asked for. CallGate's
 * answer places bound how many Get, Range and Txn calls one key has running
 * or unread (64), not their size: 64 unread Range answers (up to 4 MiB of
 * pairs besides the first) pinned some 320 MiB per key, and Txn, which had no
 * place, up to 16 MiB an answer on every call a key could open: 64 unread Txn
 * answers of 15 GET ops on one connection took a live node from 226 to
 * 1,294 MiB, and a key may open 4,096 calls. ListTasks (up to 1,000 tasks an
 * answer, a `snapshots.read` key's) had no bound either, nor Status,
 * ListSnapshots and InspectSnapshot (small answers, but 4,096 calls a key).
 *
 * So each call of ANSWER_BUDGET_METHODS reserves, once its request message
 * is read (the request says how large its answer can be:
 * answerBytesMaxOf), that many bytes of its caller's budget before its
 * handler sees the request; when the budget has no room its request waits
 * (the call keeps its CallGate answer place, so at most 64 requests of one
 * key wait). When the answer is sent, the reservation becomes the answer's
 * own size (answerBytesOf), held until HTTP/2 took the answer (the write's
 * callback) or the call ends. A caller with nothing reserved or unsent is
 * always let through, so the pinned bytes of one caller stay under
 * `bytesPerCallerMax`, or one answer's worst case when that is larger.
 * Waiting requests are let through in the order they came; one that does
 * not fit holds the later ones back (a large request is not starved by
 * small ones).
 */
import type * as grpc from '@grpc/grpc-js';
import { KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../fsm/kv-command.js';
import { KV_RANGE_BYTES_MAX, TXN_ANSWER_BYTES_MAX } from '../fsm/types.js';
import { ORIGINAL_FILTER_CHARS_MAX, TASK_ERROR_CHARS_MAX, TASK_LIST_LIMIT_MAX } from '../ops/task-queue.js';
import { ForwardingServerCall } from '../transport/forwarding-call.js';
import { apiKeyOwner } from './auth-interceptor.js';
import { hostOf } from './read-gate.js';

/**
 * CLIENT_ANSWER_BYTES_PER_CALLER_MAX: one API key's answers reserved or unread on a node at once (128 MiB:
 * CallGate's 64 Gets of the largest value, 25 Ranges of the largest answer (a Range with no limit reserves
 * one: 1,000 pairs, 4 MiB past the first), 8 Txns that read 16 MiB; a Txn that reads nothing, a Range with
 * a small limit, reserve little). A key whose client reads its answers holds its reservations only while
 * its handlers run.
 */
export const CLIENT_ANSWER_BYTES_PER_CALLER_MAX = 128 * 1024 * 1024;

const STATUS_PATH = '/snapcoord.v1.ClusterService/Status';
const LIST_SNAPSHOTS_PATH = '/snapcoord.v1.SnapshotService/ListSnapshots';
const INSPECT_SNAPSHOT_PATH = '/snapcoord.v1.SnapshotService/InspectSnapshot';

/**
 * STATUS_ANSWER_BYTES_RESERVED, LIST_SNAPSHOTS_ANSWER_BYTES_RESERVED, INSPECT_SNAPSHOT_ANSWER_BYTES_RESERVED: what a
 * Status, a ListSnapshots and an InspectSnapshot reserve before their handler runs. Their answers are small (a
 * Status of 3 members ~500 bytes, a snapshot's info ~300) but had no bound at all: a key looping them unread kept
 * every answer in the node, up to its 4,096 open calls. 64 KiB covers a Status of ~25 members at their caps
 * (id 256, two addresses of 1,024 characters each) and a list of ~200 snapshots; an InspectSnapshot is one
 * snapshot's info and its problems. A larger answer is counted at its own size once sent (AnswerBudgetCall).
 */
export const STATUS_ANSWER_BYTES_RESERVED = 64 * 1024;
export const LIST_SNAPSHOTS_ANSWER_BYTES_RESERVED = 64 * 1024;
export const INSPECT_SNAPSHOT_ANSWER_BYTES_RESERVED = 16 * 1024;

/** ANSWER_BUDGET_METHODS: the calls whose answer may be large, by path (answerBytesMaxOf knows their requests). */
export const ANSWER_BUDGET_METHODS: ReadonlySet<string> = new Set([
  '/snapcoord.v1.KVService/Get',
  '/snapcoord.v1.KVService/Range',
  '/snapcoord.v1.KVService/Txn',
  '/snapcoord.v1.TaskService/ListTasks',
  STATUS_PATH,
  LIST_SNAPSHOTS_PATH,
  INSPECT_SNAPSHOT_PATH,
]);

/**
 * TASK_ANSWER_BYTES_MAX: the most answerBytesOf counts for one task of a ListTasks answer: its error message
 * and a cancelation's original filter at their caps, and 1 KiB for the rest of it.
 */
const TASK_ANSWER_BYTES_MAX = TASK_ERROR_CHARS_MAX + ORIGINAL_FILTER_CHARS_MAX + 1024;
/** TASK_LIST_LIMIT_DEFAULT: the tasks a ListTasks answers when its request names no limit (snapshot-service's). */
const TASK_LIST_LIMIT_DEFAULT = 20;

/** PAIR_OVERHEAD_BYTES: what answerBytesOf counts for one pair besides its key and value (its revisions, framing). */
const PAIR_OVERHEAD_BYTES = 64;
/** ANSWER_OVERHEAD_BYTES: what answerBytesOf counts for an answer besides its pairs (its header). */
const ANSWER_OVERHEAD_BYTES = 256;
/** PAIR_BYTES_MAX: the most answerBytesOf counts for one pair. */
const PAIR_BYTES_MAX = KEY_BYTES_MAX + VALUE_BYTES_MAX + PAIR_OVERHEAD_BYTES;
/** RANGE_LIMIT_DEFAULT_PAIRS: a Range's pairs when its request names no limit (kv-service's RANGE_LIMIT_DEFAULT). */
const RANGE_LIMIT_DEFAULT_PAIRS = 1000;

/**
 * answerBytesMaxOf: the most bytes (as answerBytesOf counts them) the answer to `request`, a request of
 * `path` (one of ANSWER_BUDGET_METHODS), can hold: a Get one pair; a Range `limit` pairs, at most
 * KV_RANGE_BYTES_MAX of keys and values besides its first; a Txn one pair per GET op and per PUT or DELETE
 * asking prev_kv of its larger branch, at most TXN_ANSWER_BYTES_MAX of them (a larger one is never built); a
 * ListTasks `limit` tasks (TASK_ANSWER_BYTES_MAX each); a Status, ListSnapshots or InspectSnapshot its
 * *_ANSWER_BYTES_RESERVED. A request it cannot read counts as a pair.
 */
export function answerBytesMaxOf(path: string, request: unknown): number {
  if (path === STATUS_PATH) return STATUS_ANSWER_BYTES_RESERVED;
  if (path === LIST_SNAPSHOTS_PATH) return LIST_SNAPSHOTS_ANSWER_BYTES_RESERVED;
  if (path === INSPECT_SNAPSHOT_PATH) return INSPECT_SNAPSHOT_ANSWER_BYTES_RESERVED;
  const r = (request ?? {}) as Record<string, unknown>;
  if (path.endsWith('/Range')) {
    const limit = typeof r['limit'] === 'number' && r['limit'] > 0 ? r['limit'] : RANGE_LIMIT_DEFAULT_PAIRS;
    return ANSWER_OVERHEAD_BYTES + Math.min(limit * PAIR_BYTES_MAX, PAIR_BYTES_MAX + KV_RANGE_BYTES_MAX + limit * PAIR_OVERHEAD_BYTES);
  }
  if (path.endsWith('/ListTasks')) {
    const limit = typeof r['limit'] === 'number' && r['limit'] > 0 ? Math.min(r['limit'], TASK_LIST_LIMIT_MAX) : TASK_LIST_LIMIT_DEFAULT;
    return ANSWER_OVERHEAD_BYTES + limit * TASK_ANSWER_BYTES_MAX;
  }
  if (path.endsWith('/Txn')) {
    const branch = (ops: unknown): number => {
      if (!Array.isArray(ops)) return 0;
      let pairs = 0;
      for (const op of ops as { type?: unknown; prevKv?: unknown }[]) {
        // TxnOpType: 1 GET answers its pair; 2 PUT and 3 DELETE answer the pair they replaced when asked prev_kv.
        if (op?.type === 1 || op?.prevKv === true) pairs++;
      }
      return Math.min(pairs * PAIR_BYTES_MAX, TXN_ANSWER_BYTES_MAX + pairs * PAIR_OVERHEAD_BYTES) + (Array.isArray(ops) ? ops.length : 0) * PAIR_OVERHEAD_BYTES;
    };
    return ANSWER_OVERHEAD_BYTES + Math.max(branch(r['success']), branch(r['failure']));
  }
  return ANSWER_OVERHEAD_BYTES + PAIR_BYTES_MAX;
}

/** ANSWER_WALK_NODES_MAX: the values answerBytesOf looks at in one answer; past them it counts the rest as PAIR_BYTES_MAX. */
const ANSWER_WALK_NODES_MAX = 1_000_000;

/**
 * answerBytesOf: about the bytes an answer (a decoded message object) takes
 * on the wire: each byte array's and string's length, and 8 for any other
 * value, 2 per field; never less than its encoding by more than its field
 * framing. Bounded work (ANSWER_WALK_NODES_MAX values).
 */
export function answerBytesOf(message: unknown): number {
  let bytes = 0;
  let nodes = 0;
  const stack: unknown[] = [message];
  while (stack.length > 0) {
    const v = stack.pop();
    if (++nodes > ANSWER_WALK_NODES_MAX) return bytes + PAIR_BYTES_MAX;
    if (v instanceof Uint8Array) bytes += v.byteLength + 2;
    else if (typeof v === 'string') bytes += v.length + 2;
    else if (Array.isArray(v)) {
      for (const x of v as unknown[]) stack.push(x);
    } else if (v !== null && typeof v === 'object') {
      for (const x of Object.values(v as Record<string, unknown>)) stack.push(x);
    } else if (v !== undefined && v !== null) bytes += 8;
  }
  return bytes;
}

/** BudgetWaiter: a call whose request waits for room (AnswerBudgetCall). */
interface BudgetWaiter {
  /** wants: the bytes it asks. */
  readonly wants: number;
  /** granted: the room is its now (its bytes are counted): it goes on. */
  granted(): void;
}

/** AnswerBudget: each caller's answer bytes, reserved or unsent, and its requests waiting for room. */
export class AnswerBudget {
  private readonly used = new Map<string, number>();
  private readonly waiting = new Map<string, Set<BudgetWaiter>>();
  private granting = false;
  /** regrant: callers that gave bytes back while the hand-over loop ran (it serves them in turn). */
  private readonly regrant = new Set<string>();

  constructor(readonly bytesPerCallerMax: number = CLIENT_ANSWER_BYTES_PER_CALLER_MAX) {
    if (!Number.isSafeInteger(bytesPerCallerMax) || bytesPerCallerMax < 1) throw new Error(`bytesPerCallerMax must be a whole number >= 1, got ${String(bytesPerCallerMax)}`);
  }

  /** usedOf / waitingOf: the bytes `caller` holds (reserved or unsent), and its requests waiting for room. */
  usedOf(caller: string): number {
    return this.used.get(caller) ?? 0;
  }

  waitingOf(caller: string): number {
    return this.waiting.get(caller)?.size ?? 0;
  }

  private fits(caller: string, n: number): boolean {
    const used = this.used.get(caller) ?? 0;
    return used === 0 || used + n <= this.bytesPerCallerMax;
  }

  /** ask: `w` wants w.wants bytes of `caller`'s room: counted now (true), or once there is room (w.granted). */
  ask(caller: string, w: BudgetWaiter): boolean {
    const queue = this.waiting.get(caller);
    if ((queue === undefined || queue.size === 0) && this.fits(caller, w.wants)) {
      this.add(caller, w.wants);
      return true;
    }
    if (queue === undefined) this.waiting.set(caller, new Set([w]));
    else queue.add(w);
    return false;
  }

  /** forget: a waiting `w` ended. */
  forget(caller: string, w: BudgetWaiter): void {
    const queue = this.waiting.get(caller);
    if (queue === undefined) return;
    queue.delete(w);
    if (queue.size === 0) this.waiting.delete(caller);
    else this.release(caller, 0); // the one that ended may have held the others back
  }

  /** add: `caller` holds n more bytes (an answer larger than its reservation), whatever its room. */
  add(caller: string, n: number): void {
    if (n > 0) this.used.set(caller, (this.used.get(caller) ?? 0) + n);
  }

  /**
   * release: `caller` gives n bytes back; its waiting requests that now fit go on, in order, in a loop that
   * never runs inside itself (a request let through starts a handler, which may end calls at once: see
   * CallGate.releaseAnswer).
   */
  release(caller: string, n: number): void {
    if (n > 0) {
      const left = (this.used.get(caller) ?? 0) - n;
      if (left > 0) this.used.set(caller, left);
      else this.used.delete(caller);
    }
    if (!this.waiting.has(caller)) return;
    this.regrant.add(caller);
    if (this.granting) return;
    this.granting = true;
    try {
      for (const c of this.regrant) {
        this.regrant.delete(c);
        for (;;) {
          const queue = this.waiting.get(c);
          const next = queue?.values().next().value;
          if (queue === undefined || next === undefined || !this.fits(c, next.wants)) break;
          queue.delete(next);
          if (queue.size === 0) this.waiting.delete(c);
          this.add(c, next.wants);
          next.granted();
        }
      }
    } finally {
      this.granting = false;
      this.regrant.clear();
    }
  }
}

type SendStatus = Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0];

/** AnswerBudgetCall: one call of ANSWER_BUDGET_METHODS behind an AnswerBudget. */
class AnswerBudgetCall extends ForwardingServerCall implements BudgetWaiter {
  private caller: string;
  private state: 'idle' | 'waiting' | 'counted' | 'ended' = 'idle';
  wants = 0;
  /** held: bytes counted for this call (its reservation, then its answers not yet taken by HTTP/2). */
  private held = 0;
  private heldMessage: unknown = undefined;
  private heldHalfClose = false;

  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly budget: AnswerBudget,
    private readonly path: string,
  ) {
    super(inner);
    this.caller = hostOf(inner.getPeer());
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    this.caller = apiKeyOwner(metadata) ?? this.caller;
    super.onReceiveMetadata(metadata);
  }

  override onReceiveMessage(message: unknown): void {
    if (this.state === 'ended') return;
    if (this.state !== 'idle') {
      super.onReceiveMessage(message);
      return;
    }
    this.wants = answerBytesMaxOf(this.path, message);
    if (this.budget.ask(this.caller, this)) {
      this.state = 'counted';
      this.held = this.wants;
      super.onReceiveMessage(message);
      return;
    }
    this.state = 'waiting';
    this.heldMessage = message;
  }

  override onReceiveHalfClose(): void {
    if (this.state === 'waiting') this.heldHalfClose = true;
    else if (this.state !== 'ended') super.onReceiveHalfClose();
  }

  granted(): void {
    if (this.state !== 'waiting') return;
    this.state = 'counted';
    this.held = this.wants;
    const message = this.heldMessage;
    this.heldMessage = undefined;
    this.listener?.onReceiveMessage(message);
    if (this.heldHalfClose && this.state === 'counted') this.listener?.onReceiveHalfClose();
  }

  override sendMessage(message: unknown, callback: () => void): void {
    if (this.state !== 'counted') {
      super.sendMessage(message, callback);
      return;
    }
    // The reservation becomes the answer's own size, held until HTTP/2 took it (or the call ends).
    const bytes = answerBytesOf(message);
    const reserved = this.held;
    this.budget.add(this.caller, bytes);
    this.held = bytes;
    this.budget.release(this.caller, reserved);
    super.sendMessage(message, () => {
      if (this.state === 'counted' && this.held >= bytes) {
        this.held -= bytes;
        this.budget.release(this.caller, bytes);
      }
      callback();
    });
  }

  override onCancel(): void {
    this.end();
    super.onCancel();
  }

  override sendStatus(status: SendStatus): void {
    this.end();
    super.sendStatus(status);
  }

  private end(): void {
    const was = this.state;
    this.state = 'ended';
    this.heldMessage = undefined;
    if (was === 'waiting') this.budget.forget(this.caller, this);
    else if (was === 'counted' && this.held > 0) {
      const n = this.held;
      this.held = 0;
      this.budget.release(this.caller, n);
    }
  }
}

/**
 * answerBudgetInterceptor: the client plane's AnswerBudget as a server interceptor. Put it last (outermost):
 * it holds a request the ReadGate has already let go of (so a waiting request holds no read place), and
 * sees each answer before the calls below it.
 */
export function answerBudgetInterceptor(budget: AnswerBudget): grpc.ServerInterceptor {
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (method, inner) =>
    ANSWER_BUDGET_METHODS.has(method.path) ? (new AnswerBudgetCall(inner, budget, method.path) as unknown as grpc.ServerInterceptingCall) : (inner as grpc.ServerInterceptingCall);
}

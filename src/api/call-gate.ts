/**
 * CallGate: how many client-plane calls one caller has open at once.
 *
 * Some calls never end on their own (Health/Watch, reflection streams: any
 * valid key may open them) and others wait as long as their caller lets
 * them. Without a bound, the holder of any key, kv.read alone, could open
 * as many as its connections carry (256 a connection): 16,384 Health/Watch
 * streams on 64 connections took a node from 178 to 277 MiB, and the 1,024
 * connections of the plane would carry 262,144 (some 1.5 GiB).
 *
 * So a call counts against its caller (the API key it carries, apiKeyOwner;
 * its remote host for a call without one) from its metadata until it ends
 * (its status sent, or cancelled); a caller with `callsPerCallerMax` open has
 * its next call refused RESOURCE_EXHAUSTED at once, before its handler runs
 * or any of its messages is read.
 *
 * The calls whose answer may be large (ANSWER_METHODS: Get, up to a 1 MiB
 * value; Range, up to 4 MiB; Txn, up to 16 MiB; ListTasks, up to 1,000 tasks; Status, ListSnapshots and
 * InspectSnapshot, small but with no other bound) also take one of the caller's
 * `answersPerCallerMax` answer places before their handler runs, held until
 * the call ends: grpc-js sends a unary call's status only once its answer
 * went out under HTTP/2 flow control, so a place is held as long as the
 * client leaves the answer unread. A call that finds no place waits (its
 * handler not started, nothing read or built); places are handed on in the
 * order the calls came. Before, a kv.read key's Range calls that were never
 * read each kept their answer in the node's memory: 128 of them took a
 * leader from 251 to 741 MiB, and 4,096 would hold 16 GiB. The places bound
 * how many; AnswerBudget (answer-budget.ts) bounds their bytes, and a request
 * waiting there keeps its place (so at most this many wait read).
 */
import * as grpc from '@grpc/grpc-js';
import { ForwardingServerCall } from '../transport/forwarding-call.js';
import { apiKeyOwner } from './auth-interceptor.js';
import { hostOf } from './read-gate.js';

/** CLIENT_CALLS_PER_CALLER_MAX: calls one API key has open on a node at once (4096: 16 of its connections full). */
export const CLIENT_CALLS_PER_CALLER_MAX = 4096;
/** CLIENT_ANSWERS_PER_CALLER_MAX: Get, Range, Txn, ListTasks, Status, ListSnapshots and InspectSnapshot calls one API key has running or answering at once (64; their bytes: AnswerBudget); more wait. */
export const CLIENT_ANSWERS_PER_CALLER_MAX = 64;
/** ANSWER_METHODS: the calls whose answer may be large (see the file comment). */
export const ANSWER_METHODS: ReadonlySet<string> = new Set([
  '/snapcoord.v1.KVService/Get',
  '/snapcoord.v1.KVService/Range',
  '/snapcoord.v1.KVService/Txn',
  '/snapcoord.v1.TaskService/ListTasks',
  '/snapcoord.v1.ClusterService/Status',
  '/snapcoord.v1.SnapshotService/ListSnapshots',
  '/snapcoord.v1.SnapshotService/InspectSnapshot',
]);

/** CallGate: the open calls of each caller. */
export class CallGate {
  private readonly open = new Map<string, number>();
  /** answering: each caller's calls holding an answer place. */
  private readonly answering = new Map<string, number>();
  /** waiting: each caller's calls waiting for an answer place, in order. */
  private readonly waiting = new Map<string, Set<CallGateCall>>();
  private granting = false;
  /** regrant: callers that freed an answer place while the hand-over loop ran (releaseAnswer serves them in turn). */
  private readonly regrant = new Set<string>();
  /** refused: calls refused since start. */
  refused = 0;

  constructor(
    readonly callsPerCallerMax: number = CLIENT_CALLS_PER_CALLER_MAX,
    readonly answersPerCallerMax: number = CLIENT_ANSWERS_PER_CALLER_MAX,
  ) {
    for (const [k, v] of Object.entries({ callsPerCallerMax, answersPerCallerMax })) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k} must be a whole number >= 1, got ${String(v)}`);
    }
  }

  /** answeringOf / waitingOf: the calls of `caller` holding an answer place, and waiting for one. */
  answeringOf(caller: string): number {
    return this.answering.get(caller) ?? 0;
  }

  waitingOf(caller: string): number {
    return this.waiting.get(caller)?.size ?? 0;
  }

  /** askAnswer: `call` wants an answer place: granted now (true) or when one is free (CallGateCall.granted). */
  askAnswer(caller: string, call: CallGateCall): boolean {
    const n = this.answering.get(caller) ?? 0;
    if (n < this.answersPerCallerMax) {
      this.answering.set(caller, n + 1);
      return true;
    }
    let calls = this.waiting.get(caller);
    if (calls === undefined) {
      calls = new Set();
      this.waiting.set(caller, calls);
    }
    calls.add(call);
    return false;
  }

  /** forgetAnswer: a waiting `call` ended. */
  forgetAnswer(caller: string, call: CallGateCall): void {
    const calls = this.waiting.get(caller);
    if (calls === undefined) return;
    calls.delete(call);
    if (calls.size === 0) this.waiting.delete(caller);
  }

  /**
   * releaseAnswer: a call of `caller` holding an answer place ended; the place goes to its next waiting call, in a
   * loop, never from inside itself (see ReadGate.grant): a hand-over starts a handler, which may end calls at once,
   * of this caller or of another (a ReadGate place given back, another key's buffered call read and answered within
   * the same stack); each such caller is noted in `regrant` and served by the loop. Before, the loop went round
   * only for the caller it began with, and a place another caller freed meanwhile stayed free while its calls
   * waited, until another of its calls ended.
   */
  releaseAnswer(caller: string): void {
    const n = (this.answering.get(caller) ?? 1) - 1;
    if (n > 0) this.answering.set(caller, n);
    else this.answering.delete(caller);
    this.regrant.add(caller);
    if (this.granting) return; // the loop below goes round again
    this.granting = true;
    try {
      for (const c of this.regrant) {
        this.regrant.delete(c);
        for (;;) {
          const next = this.waiting.get(c)?.values().next().value;
          if (next === undefined || (this.answering.get(c) ?? 0) >= this.answersPerCallerMax) break;
          this.forgetAnswer(c, next);
          this.answering.set(c, (this.answering.get(c) ?? 0) + 1);
          next.granted();
        }
      }
    } finally {
      this.granting = false;
      this.regrant.clear();
    }
  }

  /** openOf: the calls `caller` has open now. */
  openOf(caller: string): number {
    return this.open.get(caller) ?? 0;
  }

  /** enter: false when `caller` has callsPerCallerMax calls open already (the call is refused), else counted. */
  enter(caller: string): boolean {
    const n = this.open.get(caller) ?? 0;
    if (n >= this.callsPerCallerMax) {
      this.refused++;
      return false;
    }
    this.open.set(caller, n + 1);
    return true;
  }

  /** leave: one call of `caller` ended. */
  leave(caller: string): void {
    const n = (this.open.get(caller) ?? 1) - 1;
    if (n > 0) this.open.set(caller, n);
    else this.open.delete(caller);
  }
}

/** CallGateCall: one call counted against its caller from its metadata until it ends. */
class CallGateCall extends ForwardingServerCall {
  private caller: string | null = null;
  private refused = false;
  /** answer: 'none' (not an ANSWER_METHODS call), 'waiting' for a place (its metadata held back), 'holding' one. */
  private answer: 'none' | 'waiting' | 'holding' = 'none';
  private heldMetadata: grpc.Metadata | null = null;

  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly gate: CallGate,
    private readonly answers: boolean,
  ) {
    super(inner);
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    const caller = apiKeyOwner(metadata) ?? hostOf(this.inner.getPeer());
    if (this.gate.enter(caller)) {
      this.caller = caller;
      if (this.answers && !this.gate.askAnswer(caller, this)) {
        // The handler starts once a place is free (granted): until then nothing is read or built.
        this.answer = 'waiting';
        this.heldMetadata = metadata;
        return;
      }
      if (this.answers) this.answer = 'holding';
      super.onReceiveMetadata(metadata);
      return;
    }
    this.refused = true;
    this.inner.sendStatus({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `${this.gate.callsPerCallerMax} calls with this API key are open on this node already: end some, or retry later`,
      metadata: new grpc.Metadata(),
    });
  }

  override onReceiveMessage(message: unknown): void {
    if (!this.refused) super.onReceiveMessage(message);
  }

  override onReceiveHalfClose(): void {
    if (!this.refused) super.onReceiveHalfClose();
  }

  override onCancel(): void {
    this.end();
    super.onCancel();
  }

  override sendStatus(status: Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.end();
    super.sendStatus(status);
  }

  /** granted: the gate gave this waiting call an answer place: its handler starts. */
  granted(): void {
    const md = this.heldMetadata;
    this.heldMetadata = null;
    this.answer = 'holding';
    if (md !== null) super.onReceiveMetadata(md);
  }

  private end(): void {
    if (this.caller === null) return;
    const caller = this.caller;
    this.caller = null;
    this.gate.leave(caller);
    const answer = this.answer;
    this.answer = 'none';
    this.heldMetadata = null;
    if (answer === 'waiting') this.gate.forgetAnswer(caller, this);
    else if (answer === 'holding') this.gate.releaseAnswer(caller);
  }
}

/** callGateInterceptor: the client plane's CallGate as a server interceptor (after the auth gate: a refused call is never counted). */
export function callGateInterceptor(gate: CallGate): grpc.ServerInterceptor {
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (method, inner) => new CallGateCall(inner, gate, ANSWER_METHODS.has(method.path)) as unknown as grpc.ServerInterceptingCall;
}

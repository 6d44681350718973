/**
 * ForwardQueue: a follower's client writes on their way to the leader, as
 * etcd's followers send MsgProp — batched: up to FORWARD_CALLS_IN_FLIGHT
 * Propose calls are out at once, and every write that arrives meanwhile
 * queues for the next (up to FORWARD_PROPOSALS_MAX, FORWARD_BATCH_BYTES_MAX
 * a call). The leader appends them and answers once each is applied there:
 * the follower answers its caller with the leader's apply result (the
 * deterministic apply: what this node's apply of that entry makes too).
 * Nothing here retries a write whose outcome is unknown.
 *
 * Outcomes of a write (NodeError codes):
 * - `busy` at once when `maxQueued` writes are queued or in flight here;
 * - queued and no leader took it by its deadline: `unavailable`, not applied;
 * - a refusal of the leader before appending (`notLeader`, `shuttingDown`):
 *   queued again, sent to the next leader (within its deadline); any other
 *   refusal (`busy`, `diskFull`) fails it with that code, not applied;
 * - a call no Propose handler took (UNIMPLEMENTED, or UNAVAILABLE `unserved`:
 *   the member is still booting, its services not served yet, or the call
 *   never left: no connection to it): nothing was appended; queued again,
 *   up to FORWARD_UNSERVED_RETRIES_MAX times a write (within its deadline;
 *   the view may name the next leader meanwhile), then failed `unavailable`
 *   (`notLeader` for UNIMPLEMENTED), not applied;
 * - appended, then replaced by another leader's entry: `lost`, not applied;
 * - the Propose call failed (the leader died, the link broke, its deadline),
 *   or the leader could not tell: `timeout`, the outcome is unknown; a
 *   caller that set a session stamp (client_id, request_id) retries safely;
 * - this node became the leader: the queued writes are proposed here;
 * - this node leads but hands leadership over (`transferring`): they wait
 *   here (not refused `busy`), then go to the new leader, or are proposed
 *   here when the transfer is abandoned.
 */
import type { NodeId } from '../raft/types.js';
import type { ApplyResult } from '../fsm/types.js';
import { decodeApplyResult } from '../fsm/apply-result-codec.js';
import { FORWARD_PROPOSALS_MAX, type ForwardProposalsParams, type ForwardedProposals } from '../transport/transport.js';
import type { Clock, TimerHandle } from './clock.js';
import { NodeError, type NodeErrorCode } from './errors.js';

/** FORWARD_BATCH_BYTES_MAX: the proposal bytes one Propose call carries at most (one larger proposal goes alone). */
export const FORWARD_BATCH_BYTES_MAX = 4 << 20;

/** FORWARD_CALLS_IN_FLIGHT: the Propose calls one follower has out at once (each waits for its writes' apply on the leader). */
export const FORWARD_CALLS_IN_FLIGHT = 2;

/**
 * FORWARD_UNSERVED_RETRIES_MAX: how often one write is sent again after a call that no Propose handler took (a
 * member still booting); one retryMs (a tick) apart, so ~1 s at the default 10 ms ticks, and never past its deadline.
 */
export const FORWARD_UNSERVED_RETRIES_MAX = 100;

/** ForwardWaiter is the caller of one forwarded write. */
export interface ForwardWaiter {
  resolve(r: ApplyResult): void;
  reject(e: Error): void;
}

export interface ForwardQueueOptions {
  readonly id: NodeId;
  readonly clock: Clock;
  /** maxQueued: writes queued or in a Propose call before new ones fail `busy`. */
  readonly maxQueued: number;
  /** rpcTimeoutMs: the deadline of one Propose call. */
  readonly rpcTimeoutMs: number;
  /** retryMs: how long after a refusal (`notLeader`) the queue is sent again. */
  readonly retryMs: number;
  /** view: the leader this node knows ('' none), its term, and whether it leads and hands leadership over now (`transferring`). */
  view(): { readonly leader: NodeId; readonly term: number; readonly transferring?: boolean };
  /** send: the transport's Propose call (ProposalForwarder.forwardProposals). */
  send(p: ForwardProposalsParams, timeoutMs: number): Promise<ForwardedProposals>;
  /** proposeHere proposes `data` as the leader (this node won an election) and resolves with its apply result; rejects with a NodeError. */
  proposeHere(data: Uint8Array): Promise<ApplyResult>;
}

interface Item {
  readonly data: Uint8Array;
  readonly waiter: ForwardWaiter;
  readonly timer: TimerHandle;
  state: 'queued' | 'sent' | 'done';
  /** unservedRetries: the calls carrying it that no Propose handler took (see FORWARD_UNSERVED_RETRIES_MAX). */
  unservedRetries: number;
}

export class ForwardQueue {
  private readonly o: ForwardQueueOptions;
  private queue: Item[] = [];
  /** flights: the batches of the Propose calls out now. */
  private readonly flights = new Set<readonly Item[]>();
  private inFlight = 0;
  private retryAtMs = -Infinity;

  constructor(o: ForwardQueueOptions) {
    this.o = o;
  }

  /** size: writes queued or in a Propose call. */
  get size(): number {
    return this.queue.length + this.inFlight;
  }

  /**
   * forward queues `data` for the leader and resolves with its apply result
   * (see the file comment for every failure). Throws `busy` at once beyond maxQueued.
   */
  forward(data: Uint8Array, timeoutMs: number): Promise<ApplyResult> {
    if (this.size >= this.o.maxQueued) {
      throw new NodeError('busy', `too many writes waiting for the leader here (${this.size}); retry later`);
    }
    return new Promise<ApplyResult>((resolve, reject) => {
      const item: Item = {
        data,
        waiter: { resolve, reject },
        timer: this.o.clock.setTimeout(() => this.expire(item, timeoutMs), timeoutMs),
        state: 'queued',
        unservedRetries: 0,
      };
      this.queue.push(item);
      this.flush();
    });
  }

  /** flush sends the queue when a call slot is free (or proposes it here when this node leads); call it on every tick. */
  flush(): void {
    if (this.queue.length === 0) return;
    const v = this.o.view();
    if (v.leader === this.o.id) {
      // Handing leadership over: the core would refuse them (ProposalDroppedError); they wait for the outcome.
      if (v.transferring === true) return;
      return this.proposeQueuedHere();
    }
    if (v.leader === '' || this.o.clock.nowMs() < this.retryAtMs) return;
    while (this.queue.length > 0 && this.flights.size < FORWARD_CALLS_IN_FLIGHT) this.sendBatch(v.leader, v.term);
  }

  private sendBatch(leader: NodeId, term: number): void {
    let bytes = 0;
    let n = 0;
    for (const it of this.queue) {
      if (n >= FORWARD_PROPOSALS_MAX || (n > 0 && bytes + it.data.byteLength > FORWARD_BATCH_BYTES_MAX)) break;
      bytes += it.data.byteLength;
      n++;
    }
    const batch = this.queue.splice(0, n);
    for (const it of batch) it.state = 'sent';
    this.flights.add(batch);
    this.inFlight += batch.length;
    this.o.send({ from: this.o.id, to: leader, term, data: batch.map((it) => it.data) }, this.o.rpcTimeoutMs).then(
      (r) => this.answered(batch, leader, r),
      (err: unknown) => this.failed(batch, leader, err),
    );
  }

  /** failAll fails every queued and in-flight write (the node stops or failed): `err` for queued ones, unknown outcome for sent ones. */
  failAll(err: NodeError): void {
    const queued = this.queue;
    this.queue = [];
    for (const it of queued) this.finish(it, err);
    for (const batch of this.flights) {
      for (const it of batch) this.finish(it, new NodeError(err.code, `${err.message}; the write was handed to the leader, its outcome is unknown`));
    }
  }

  private answered(batch: readonly Item[], leader: NodeId, r: ForwardedProposals): void {
    if (!this.endFlight(batch)) return;
    r.outcomes.forEach((o, i) => {
      const it = batch[i] as Item;
      if ('error' in o) {
        const lost = o.error.code === 'lost';
        this.finish(
          it,
          new NodeError(lost ? 'lost' : 'timeout', lost ? o.error.message : `the leader ${leader} answered ${o.error.code}: ${o.error.message}; its outcome is unknown`),
        );
        return;
      }
      let result: ApplyResult;
      try {
        result = decodeApplyResult(o.result);
      } catch (e) {
        this.finish(it, new NodeError('timeout', `the leader ${leader} answered a malformed result (${(e as Error).message}); its outcome is unknown`));
        return;
      }
      if (it.state !== 'sent') return;
      it.state = 'done';
      this.o.clock.clearTimeout(it.timer);
      it.waiter.resolve(result);
    });
    const rest = batch.slice(r.outcomes.length);
    if (rest.length > 0 && r.refused !== undefined) {
      const { code, message } = r.refused;
      if (code === 'notLeader' || code === 'shuttingDown') this.requeue(rest);
      else for (const it of rest) this.finish(it, new NodeError(knownCode(code), `the leader ${leader} refused the write: ${message}; it was not applied`));
    }
    this.flush();
  }

  private failed(batch: readonly Item[], leader: NodeId, err: unknown): void {
    if (!this.endFlight(batch)) return;
    const code = (err as { code?: unknown } | null)?.code;
    const message = err instanceof Error ? err.message : String(err);
    if (code === GRPC_FAILED_PRECONDITION) {
      // Refused before anything was appended (a stale address: the call reached another node): send again.
      this.requeue(batch);
    } else if (code === GRPC_UNIMPLEMENTED || (code === GRPC_UNAVAILABLE && (err as { unserved?: unknown }).unserved === true)) {
      // No Propose handler took the call (the member is still booting, or serves no Propose): nothing appended. Sent
      // again, a bounded number of times; the view may name another leader by then.
      const again = batch.filter((it) => it.unservedRetries++ < FORWARD_UNSERVED_RETRIES_MAX);
      for (const it of batch) {
        if (again.includes(it)) continue;
        this.finish(
          it,
          code === GRPC_UNIMPLEMENTED
            ? new NodeError('notLeader', `the leader ${leader} takes no forwarded writes: ${message}`, leader)
            : new NodeError('unavailable', `the leader ${leader} did not serve the write after ${FORWARD_UNSERVED_RETRIES_MAX} tries (${message}); it was not applied`),
        );
      }
      this.requeue(again);
    } else {
      for (const it of batch) {
        this.finish(it, new NodeError('timeout', `forwarding the write to the leader ${leader} failed (${message}); its outcome is unknown`));
      }
    }
    this.flush();
  }

  /** endFlight: the call of `batch` ended; false when failAll ran meanwhile (its writes are answered). */
  private endFlight(batch: readonly Item[]): boolean {
    if (!this.flights.delete(batch)) return false;
    this.inFlight -= batch.length;
    return true;
  }

  /** requeue puts writes the leader did not append back at the head of the queue (in order), sent again after retryMs. */
  private requeue(items: readonly Item[]): void {
    const live = items.filter((it) => it.state === 'sent');
    for (const it of live) it.state = 'queued';
    this.queue = [...live, ...this.queue];
    this.retryAtMs = this.o.clock.nowMs() + this.o.retryMs;
  }

  private proposeQueuedHere(): void {
    const items = this.queue;
    this.queue = [];
    for (const it of items) {
      it.state = 'done';
      this.o.clock.clearTimeout(it.timer);
      let applied: Promise<ApplyResult>;
      try {
        applied = this.o.proposeHere(it.data);
      } catch (e) {
        applied = Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
      applied.then(it.waiter.resolve, it.waiter.reject);
    }
  }

  private expire(it: Item, timeoutMs: number): void {
    if (it.state === 'queued') {
      this.queue = this.queue.filter((x) => x !== it);
      this.finish(it, new NodeError('unavailable', `no leader took the write within ${timeoutMs} ms; it was not applied`));
    } else if (it.state === 'sent') {
      this.finish(it, new NodeError('timeout', `the leader did not answer within ${timeoutMs} ms; its outcome is unknown`));
    }
  }

  private finish(it: Item, err: Error): void {
    if (it.state === 'done') return;
    it.state = 'done';
    this.o.clock.clearTimeout(it.timer);
    it.waiter.reject(err);
  }
}

// gRPC status codes the transport's errors carry (src/node does not import grpc-js).
const GRPC_FAILED_PRECONDITION = 9;
const GRPC_UNIMPLEMENTED = 12;
const GRPC_UNAVAILABLE = 14;

const REFUSAL_CODES: ReadonlySet<string> = new Set<NodeErrorCode>(['busy', 'diskFull', 'invalid', 'unavailable']);

/** knownCode: a leader's refusal code as a NodeErrorCode (`unavailable` for one this node does not know). */
function knownCode(code: string): NodeErrorCode {
  return REFUSAL_CODES.has(code) ? (code as NodeErrorCode) : 'unavailable';
}

/**
 * ReadGate: how many client-plane calls read a request message at once.
 *
 * grpc-js reads a call's request message into memory as its bytes arrive,
 * whole, up to the plane's message cap (1.5 MiB by default), from the moment
 * the handler asks for it (startRead), for as long as the message takes to
 * complete. Without a bound, a caller holding any valid key could open every
 * call its connections carry (256 a connection, 256 connections a host) and
 * send each message but its last byte: 512 such calls held 770 MiB of the
 * node's memory, 65,536 from one host would hold 96 GiB.
 *
 * So each read of a message (startRead until the message, or the end of the
 * request, arrives) takes a place: at most `readsMax` calls read at once, at
 * most `readsPerCallerMax` of them by one caller: the API key the call
 * carries (apiKeyOwner), or its remote host for a call without one (a server
 * run with insecureNoAuth). A call that finds no place waits, its stream
 * paused: HTTP/2 flow control then keeps its bytes in the client (a paused
 * stream holds at most its window). Places are handed to the waiting calls
 * caller by caller in turn, each caller's calls in order; a caller with
 * `waitingPerCallerMax` calls waiting already has its next one refused
 * RESOURCE_EXHAUSTED at once. A read that holds its place `readMs` without
 * completing fails the call DEADLINE_EXCEEDED, and its place goes on. Small
 * requests arrive with their headers and give their place back at once; only
 * slow or large ones wait.
 *
 * By key, not by host: every request message waits its turn here, a Status
 * as much as a Put. A holder of any key (kv.read alone) that opened 16,384
 * Get calls sending no message on 64 connections from one host held that
 * host's 16 places for 90 s at a time, and no call of any other key from
 * that host (the node's own gateway's, an admin's) was read at all; from
 * four hosts it would hold all 64 places, and every caller's call waited.
 */
import * as grpc from '@grpc/grpc-js';
import { apiKeyOwner } from './auth-interceptor.js';
import { ForwardingServerCall } from '../transport/forwarding-call.js';

export interface ReadLimits {
  /** readsMax: calls reading a request message at once, in all (>= 1). */
  readonly readsMax: number;
  /** readsPerCallerMax: of them, by one caller (an API key; a remote host for calls without one) (>= 1). */
  readonly readsPerCallerMax: number;
  /** waitingPerCallerMax: calls of one caller waiting for a place; the next one is refused RESOURCE_EXHAUSTED (>= 1). */
  readonly waitingPerCallerMax: number;
  /** readMs: the longest one read may hold its place (>= 1). */
  readonly readMs: number;
}

/**
 * CLIENT_READ_LIMITS: 64 reads at once (96 MiB of 1.5 MiB messages), 16 by
 * one API key (a key alone cannot take every place), 1024 calls of one key
 * waiting, 90 s a message: longer than a restore upload may idle
 * (UPLOAD_IDLE_MS_DEFAULT, 60 s), whose own error then comes first.
 */
export const CLIENT_READ_LIMITS: ReadLimits = { readsMax: 64, readsPerCallerMax: 16, waitingPerCallerMax: 1024, readMs: 90_000 };

/** hostOf: the remote host of a call's peer string (`address:port`, IPv6 as `[addr]:port`). */
export function hostOf(peer: string): string {
  return peer.replace(/:\d+$/, '');
}

/** ReadGate: the places of one plane (see the top of this file). */
export class ReadGate {
  private reading = 0;
  /** granting / grantAgain: grant() is running; a place was freed while it ran (see grant). */
  private granting = false;
  private grantAgain = false;
  private readonly readingPerCaller = new Map<string, number>();
  /** waiting: the calls waiting for a place, by caller (in the order the callers came), each caller's in order. */
  private readonly waiting = new Map<string, Set<ReadGateCall>>();

  constructor(readonly limits: ReadLimits) {
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`read limits: ${k} must be a whole number >= 1, got ${String(v)}`);
    }
  }

  /** readingNow / waitingNow: calls reading, and waiting to read, now. */
  get readingNow(): number {
    return this.reading;
  }

  get waitingNow(): number {
    let n = 0;
    for (const calls of this.waiting.values()) n += calls.size;
    return n;
  }

  /**
   * ask: `call` wants to read; it is granted a place now or when one is free
   * (ReadGateCall.granted). False when its caller has waitingPerCallerMax
   * calls waiting already: it neither reads nor waits.
   */
  ask(call: ReadGateCall): boolean {
    if (this.hasRoom(call.caller)) {
      this.take(call);
      return true;
    }
    let calls = this.waiting.get(call.caller);
    if (calls === undefined) {
      calls = new Set();
      this.waiting.set(call.caller, calls);
    }
    if (calls.size >= this.limits.waitingPerCallerMax) return false;
    calls.add(call);
    return true;
  }

  /** forget: `call` no longer waits (it ended). */
  forget(call: ReadGateCall): void {
    const calls = this.waiting.get(call.caller);
    if (calls === undefined) return;
    calls.delete(call);
    if (calls.size === 0) this.waiting.delete(call.caller);
  }

  /** release: `call` gives its place back; the place goes to a waiting call, caller by caller in turn. */
  release(call: ReadGateCall): void {
    this.reading--;
    const n = (this.readingPerCaller.get(call.caller) ?? 1) - 1;
    if (n > 0) this.readingPerCaller.set(call.caller, n);
    else this.readingPerCaller.delete(call.caller);
    this.grant();
  }

  private hasRoom(caller: string): boolean {
    return this.reading < this.limits.readsMax && (this.readingPerCaller.get(caller) ?? 0) < this.limits.readsPerCallerMax;
  }

  private take(call: ReadGateCall): void {
    this.reading++;
    this.readingPerCaller.set(call.caller, (this.readingPerCaller.get(call.caller) ?? 0) + 1);
    call.granted();
  }

  /**
   * grant hands free places to waiting calls, one per turn of its loop, never
   * from inside itself: a call granted a place whose message is already
   * buffered reads it (and gives the place back) within startRead, which
   * asks for a grant again; that asking only makes this loop go round once
   * more. Before, each hand-over ran inside the previous one, and ~1,000 such
   * calls waiting overflowed the stack (RangeError: the node exited).
   */
  private grant(): void {
    if (this.granting) {
      this.grantAgain = true;
      return;
    }
    this.granting = true;
    try {
      do {
        this.grantAgain = false;
        this.grantOne();
      } while (this.grantAgain);
    } finally {
      this.granting = false;
    }
  }

  /** grantOne gives one free place, if any, to the next waiting call, caller by caller in turn. */
  private grantOne(): void {
    for (const [caller, calls] of this.waiting) {
      if (this.reading >= this.limits.readsMax) return;
      if (!this.hasRoom(caller)) continue;
      const first = calls.values().next().value as ReadGateCall;
      this.forget(first);
      // The caller goes to the back of the turn (a Map keeps insertion order).
      const rest = this.waiting.get(caller);
      if (rest !== undefined) {
        this.waiting.delete(caller);
        this.waiting.set(caller, rest);
      }
      this.take(first);
      return;
    }
  }
}

/** ReadGateCall: one call behind a ReadGate: each startRead waits for a place, held until the read completes. */
class ReadGateCall extends ForwardingServerCall {
  /** caller: the call's API key (apiKeyOwner) once its metadata came, else its remote host. */
  caller: string;
  private state: 'idle' | 'waiting' | 'reading' | 'ended' = 'idle';
  private timer: NodeJS.Timeout | null = null;

  constructor(
    inner: grpc.ServerInterceptingCallInterface,
    private readonly gate: ReadGate,
  ) {
    super(inner);
    this.caller = hostOf(inner.getPeer());
  }

  override onReceiveMetadata(metadata: grpc.Metadata): void {
    this.caller = apiKeyOwner(metadata) ?? this.caller;
    super.onReceiveMetadata(metadata);
  }

  override startRead(): void {
    if (this.state !== 'idle') return;
    this.state = 'waiting';
    if (this.gate.ask(this)) return;
    this.state = 'idle';
    this.sendStatus({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `${this.gate.limits.waitingPerCallerMax} calls with this API key already wait to send their request: retry later`,
      metadata: new grpc.Metadata(),
    });
  }

  /** granted: the gate gave this call a place: read. */
  granted(): void {
    this.state = 'reading';
    this.timer = setTimeout(() => {
      this.timer = null;
      this.sendStatus({ code: grpc.status.DEADLINE_EXCEEDED, details: `the request message did not arrive within ${this.gate.limits.readMs} ms`, metadata: new grpc.Metadata() });
    }, this.gate.limits.readMs);
    this.inner.startRead();
  }

  /** done: the read completed or the call ended: the place (or the wait) is given up. */
  private done(next: 'idle' | 'ended'): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const was = this.state;
    if (was === 'ended') return;
    this.state = next;
    if (was === 'reading') this.gate.release(this);
    else if (was === 'waiting') this.gate.forget(this);
  }

  override onReceiveMessage(message: unknown): void {
    this.done('idle');
    super.onReceiveMessage(message);
  }

  override onReceiveHalfClose(): void {
    this.done('idle');
    super.onReceiveHalfClose();
  }

  override onCancel(): void {
    this.done('ended');
    super.onCancel();
  }

  override sendStatus(status: Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.done('ended');
    super.sendStatus(status);
  }
}

/**
 * readGateInterceptor: the client plane's ReadGate as a server interceptor
 * (after the auth gate: a refused call never asks for a place).
 */
export function readGateInterceptor(gate: ReadGate): grpc.ServerInterceptor {
  // grpc-js types an interceptor's result as its ServerInterceptingCall class; it uses only the interface.
  return (_method, inner) => new ReadGateCall(inner, gate) as unknown as grpc.ServerInterceptingCall;
}

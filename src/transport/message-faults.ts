/**
 * Message fault injection for chaos tests: grpc-js interceptors (client and
 * server side) that drop, duplicate or corrupt single Raft messages between nodes.
 *
 * Armed only when SNAPCOORD_MESSAGE_FAULTS names a JSON file, e.g.
 *   {"drop": 0.01, "duplicate": 0.01, "corrupt": 0.005, "seed": 7}
 * (probabilities per message, 0..1). The file is re-read when it changes, so
 * a test switches faults at run time; a missing or malformed file means no
 * faults. Every decision comes from a PRNG seeded by `seed`.
 *
 * What each fault does, and what must catch it:
 *  - drop: an AppendEntries answer or a FetchSnapshot chunk is lost on its
 *    stream, or a unary request never leaves (the call fails): Raft
 *    retransmits; the fetcher sees the gap and resumes.
 *  - duplicate: an AppendEntries answer or a FetchSnapshot chunk arrives
 *    twice: the leader ignores a stale answer; the fetcher refuses a chunk at
 *    the wrong offset and resumes.
 *  - on the follower's server (serverInterceptor), an AppendEntries request
 *    is lost (never stepped) or stepped twice: Raft retransmits, and ignores
 *    an append it already has.
 *  - corrupt: one byte of an append's entry data, or of a snapshot chunk, is
 *    flipped in a copy: the entry's CRC-32 and the chunk's SHA-256 refuse it.
 * A stream's own request cannot be dropped or sent twice from a grpc-js
 * client interceptor (its write callback travels with it and the stream
 * stalls or breaks): that is why requests are lost or repeated server side.
 * Only bytes covered by a checksum are corrupted: Raft assumes no lying peer,
 * so a flipped vote or term is not a fault the protocol claims to survive.
 */
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type * as pb from '../gen/snapcoord/v1/raft.js';
import { silentLogger, type TransportLogger } from './transport.js';

export const MESSAGE_FAULTS_ENV = 'SNAPCOORD_MESSAGE_FAULTS';

/** MessageFaultRates: the probability of each fault per message. */
export interface MessageFaultRates {
  readonly drop: number;
  readonly duplicate: number;
  readonly corrupt: number;
  readonly seed: number;
}

export const NO_FAULTS: MessageFaultRates = { drop: 0, duplicate: 0, corrupt: 0, seed: 1 };

/** MessageFaultCounts: what was injected so far. */
export interface MessageFaultCounts {
  dropped: number;
  duplicated: number;
  corrupted: number;
}

const APPEND = '/snapcoord.v1.RaftService/AppendEntries';
const FETCH = '/snapcoord.v1.RaftService/FetchSnapshot';

/** parseRates reads the control file's JSON; throws on anything but probabilities in 0..1 and an integer seed. */
export function parseRates(text: string): MessageFaultRates {
  const v = JSON.parse(text) as unknown;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('expected a JSON object');
  const o = v as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !['drop', 'duplicate', 'corrupt', 'seed'].includes(k));
  if (unknown.length > 0) throw new Error(`unknown keys: ${unknown.join(', ')}`);
  const p = (k: string): number => {
    const x = o[k] ?? 0;
    if (typeof x !== 'number' || !(x >= 0 && x <= 1)) throw new Error(`${k}: ${JSON.stringify(x)} is not a probability in 0..1`);
    return x;
  };
  const seed = o['seed'] ?? 1;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new Error(`seed: ${JSON.stringify(seed)} is not an integer`);
  return { drop: p('drop'), duplicate: p('duplicate'), corrupt: p('corrupt'), seed };
}

/** MessageFaults decides, message by message, which fault (if any) to inject. */
export class MessageFaults {
  private rates: MessageFaultRates = NO_FAULTS;
  private state = 1;
  readonly counts: MessageFaultCounts = { dropped: 0, duplicated: 0, corrupted: 0 };

  constructor(rates: MessageFaultRates = NO_FAULTS) {
    this.setRates(rates);
  }

  setRates(rates: MessageFaultRates): void {
    if (rates.seed !== this.rates.seed || this.state === 1) this.state = rates.seed >>> 0 || 1;
    this.rates = rates;
  }

  current(): MessageFaultRates {
    return this.rates;
  }

  /** interceptor: the grpc-js client interceptor that injects the faults (pass it in a client's `interceptors`). */
  readonly interceptor: grpc.Interceptor = (options, nextCall) => {
    const path = options.method_definition.path;
    const streaming = options.method_definition.requestStream || options.method_definition.responseStream;
    const call: grpc.InterceptingCall = new grpc.InterceptingCall(nextCall(options), {
      start: (metadata, listener, next) => {
        // A full listener (one-argument methods) is used as it is, message by message: a plain
        // partial listener would hold the call's status back after a message it never passed on.
        const up = listener as grpc.InterceptingListener;
        next(metadata, {
          onReceiveMetadata: (md: grpc.Metadata) => up.onReceiveMetadata(md),
          onReceiveStatus: (status: grpc.StatusObject) => up.onReceiveStatus(status),
          onReceiveMessage: (message: unknown) => {
            if (!streaming) return up.onReceiveMessage(message);
            if (this.roll(this.rates.drop)) {
              this.counts.dropped++;
              call.startRead(); // grpc-js reads one message at a time: ask for the next one
              return;
            }
            if (path === FETCH && this.roll(this.rates.corrupt)) {
              this.counts.corrupted++;
              return up.onReceiveMessage(corruptChunk(message as pb.FetchSnapshotResponse, this.next()));
            }
            up.onReceiveMessage(message);
            if (this.roll(this.rates.duplicate)) {
              this.counts.duplicated++;
              up.onReceiveMessage(message);
            }
          },
        } satisfies grpc.InterceptingListener);
      },
      sendMessage: (message: unknown, send: (m: unknown) => void) => {
        if (path === FETCH) return send(message); // the request of a snapshot stream: losing it only fails the fetch
        if (!streaming && this.roll(this.rates.drop)) {
          // A unary call whose request is lost fails. (A stream's request cannot be swallowed here:
          // its write callback rides with it, and the stream would stall; its answers are dropped instead.)
          this.counts.dropped++;
          call.cancelWithStatus(grpc.status.UNAVAILABLE, 'request dropped by fault injection');
          return;
        }
        if (path === APPEND && this.roll(this.rates.corrupt)) {
          const req = message as pb.AppendEntriesRequest;
          if (req.entries.length > 0) {
            this.counts.corrupted++;
            return send(corruptAppend(req, this.next()));
          }
        }
        send(message);
      },
    });
    return call;
  };

  /**
   * serverInterceptor: the grpc-js server interceptor that loses or repeats
   * AppendEntries requests as they arrive (what the client side cannot do):
   * a lost append is never stepped, a repeated one is stepped twice.
   */
  readonly serverInterceptor: grpc.ServerInterceptor = (method, inner) => {
    if (method.path !== APPEND) return new grpc.ServerInterceptingCall(inner);
    const call: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(inner, {
      start: (next) => {
        next({
          onReceiveMessage: (message: unknown, deliver: (m: unknown) => void) => {
            if (this.roll(this.rates.drop)) {
              this.counts.dropped++;
              // The stream reads one message at a time: ask for the next one. (grpc-js holds a
              // half-close back until the next message is delivered; append streams are cancelled, not half-closed.)
              call.startRead();
              return;
            }
            deliver(message);
            if (this.roll(this.rates.duplicate)) {
              this.counts.duplicated++;
              deliver(message);
            }
          },
        });
      },
    });
    return call;
  };

  private roll(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  /** next: xorshift32, a uniform float in [0, 1). */
  private next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state / 2 ** 32;
  }
}

/** corruptAppend: a copy of req with one bit of one entry's data flipped (the original, shared with the log, is untouched). */
function corruptAppend(req: pb.AppendEntriesRequest, r: number): pb.AppendEntriesRequest {
  const withData = req.entries.filter((e) => e.data.byteLength > 0);
  if (withData.length === 0) return { ...req, entries: req.entries.map((e, i) => (i === 0 ? { ...e, crc32: (e.crc32 ^ 1) >>> 0 } : e)) };
  const victim = withData[Math.floor(r * withData.length)] as pb.Entry;
  const data = new Uint8Array(victim.data);
  const at = Math.floor(r * 7919) % data.byteLength;
  data[at] = (data[at] as number) ^ 0x10;
  return { ...req, entries: req.entries.map((e) => (e === victim ? { ...e, data } : e)) };
}

/** corruptChunk: a copy of a snapshot chunk with one bit of its data flipped. */
function corruptChunk(chunk: pb.FetchSnapshotResponse, r: number): pb.FetchSnapshotResponse {
  if (chunk.data.byteLength === 0) return chunk;
  const data = new Uint8Array(chunk.data);
  const at = Math.floor(r * data.byteLength);
  data[at] = (data[at] as number) ^ 0x01;
  return { ...chunk, data };
}

let fromEnv: MessageFaults | null | undefined;

/**
 * messageFaultsFromEnv: the process's MessageFaults when SNAPCOORD_MESSAGE_FAULTS
 * names a control file (watched for changes), else null. One per process.
 */
export function messageFaultsFromEnv(log: TransportLogger = silentLogger): MessageFaults | null {
  if (fromEnv !== undefined) return fromEnv;
  const file = process.env[MESSAGE_FAULTS_ENV] ?? '';
  if (file === '') return (fromEnv = null);
  const faults = new MessageFaults();
  const load = (): void => {
    try {
      faults.setRates(parseRates(readFileSync(file, 'utf8')));
    } catch (err) {
      faults.setRates({ ...NO_FAULTS, seed: faults.current().seed });
      log.warn({ file, err: (err as Error).message }, 'message faults: control file unreadable, no faults');
    }
  };
  load();
  watchFile(file, { interval: 100, persistent: false }, load);
  process.once('exit', () => unwatchFile(file));
  // What was injected, every few seconds while it grows (the chaos runner sums these lines).
  let reported = '';
  setInterval(() => {
    const now = JSON.stringify(faults.counts);
    if (now !== reported) log.warn({ injected: faults.counts }, 'message faults injected');
    reported = now;
  }, 2_000).unref();
  log.warn({ file, rates: faults.current() }, `message fault injection is armed (${MESSAGE_FAULTS_ENV}): for tests only`);
  return (fromEnv = faults);
}

/** faultInterceptors: the interceptors every peer client carries ([] unless fault injection is armed). */
export function faultInterceptors(log?: TransportLogger): grpc.Interceptor[] {
  const f = messageFaultsFromEnv(log);
  return f === null ? [] : [f.interceptor];
}

/** serverFaultInterceptors: the interceptors of the node's gRPC server ([] unless fault injection is armed). */
export function serverFaultInterceptors(log?: TransportLogger): grpc.ServerInterceptor[] {
  const f = messageFaultsFromEnv(log);
  return f === null ? [] : [f.serverInterceptor];
}

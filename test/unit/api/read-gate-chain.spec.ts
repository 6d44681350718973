/**
 * ReadGate hands places on without recursion. A call granted a place whose
 * request message is already buffered in grpc-js gets it synchronously
 * inside startRead, gives its place back at once, and the next waiting call
 * is granted: before, each such hand-over ran inside the previous one
 * (release -> grant -> startRead -> message -> release ...), so a key holder
 * with ~1,000 whole calls waiting behind one slow one (Health/Watch streams,
 * 64 connections x 256 from one host, a live local cluster) overflowed the
 * node's stack once the slow one ended: RangeError, and the node exited.
 * Pure: the calls below the gate are stand-ins that deliver their message
 * when asked, as grpc-js does for a buffered one.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { ReadGate, readGateInterceptor } from '../../../src/api/read-gate.js';
import type { ServerListenerBelow } from '../../../src/transport/forwarding-call.js';

/** Below: the grpc-js call under the gate; startRead delivers its message at once unless `held`. */
class Below {
  listener: ServerListenerBelow | null = null;
  delivered = false;
  status: number | null = null;
  constructor(private readonly held: boolean) {}
  start(listener: ServerListenerBelow): void {
    this.listener = listener;
  }
  startRead(): void {
    if (!this.held) this.deliver();
  }
  deliver(): void {
    this.delivered = true;
    this.listener?.onReceiveMessage({});
    this.listener?.onReceiveHalfClose();
  }
  getPeer(): string {
    return '127.0.0.1:40000';
  }
  sendStatus(s: { code: number }): void {
    this.status = s.code;
  }
}

const ABOVE: ServerListenerBelow = { onReceiveMetadata: () => undefined, onReceiveMessage: () => undefined, onReceiveHalfClose: () => undefined, onCancel: () => undefined };

describe('ReadGate: places handed on without recursion', () => {
  it('20,000 waiting calls whose messages are buffered all read once the one holding the place is done (before: RangeError, stack overflow)', () => {
    const WAITING = 20_000;
    const gate = new ReadGate({ readsMax: 1, readsPerCallerMax: 1, waitingPerCallerMax: WAITING, readMs: 60_000 });
    const intercept = readGateInterceptor(gate);
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer some-key');
    const open = (held: boolean): Below => {
      const below = new Below(held);
      const call = intercept({ path: '/grpc.health.v1.Health/Watch' } as grpc.ServerMethodDefinition<unknown, unknown>, below as unknown as grpc.ServerInterceptingCallInterface);
      call.start(ABOVE);
      (call as unknown as { onReceiveMetadata(m: grpc.Metadata): void }).onReceiveMetadata(md);
      call.startRead();
      return below;
    };
    const slow = open(true);
    const rest = Array.from({ length: WAITING }, () => open(false));
    assert.equal(gate.readingNow, 1);
    assert.equal(gate.waitingNow, WAITING);
    assert.equal(rest.filter((b) => b.delivered).length, 0);
    slow.deliver();
    assert.equal(rest.filter((b) => b.delivered).length, WAITING, 'every waiting call read its message');
    assert.equal(gate.readingNow, 0);
    assert.equal(gate.waitingNow, 0);
    assert.ok(rest.every((b) => b.status === null), 'none refused');
  });
});

/**
 * The client side of FetchStateImage (state-image-fetcher.ts) against a real
 * RaftService over gRPC whose sender trickles: each message comes within the
 * idle timeout, but the whole image would take far longer than its bytes need.
 * And over a given stream opener: its manifest, idle and whole-image timeouts
 * run on the clock it is given (the node's: the simulator's virtual time),
 * never on the process's timers; a stream that names the sender's snapshot
 * hands it on.
 */
import assert from 'node:assert/strict';

import * as grpc from '@grpc/grpc-js';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import type { Message, SnapshotMeta, StateImageChunk } from '../../../src/raft/types.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import type { FetchClock, FetchTimer } from '../../../src/transport/snapshot-fetcher.js';
import { openStateImage } from '../../../src/transport/state-image-fetcher.js';
import type { FetchStateImageParams, RaftRequestHandler, StateImageCall, StateImageMessage, StateImageStream, StateImageStreamOpener } from '../../../src/transport/transport.js';
import { until } from '../../harness/until.js';

const FILE_BYTES = 4000;
const PIECE_BYTES = 100;

/** ImageSender serves one file of FILE_BYTES, in pieces of PIECE_BYTES `gapMs` apart (0: all at once). */
class ImageSender implements RaftRequestHandler {
  gapMs = 0;
  closed = 0;
  handleRequest(_m: Message): Promise<Message[]> {
    return Promise.resolve([]);
  }
  handleReport(_m: Message): void {}
  openStateImage(_p: FetchStateImageParams): Promise<StateImageStream> {
    const gapMs = this.gapMs;
    const chunks = async function* (): AsyncGenerator<StateImageChunk> {
      for (let offset = 0; offset < FILE_BYTES; offset += PIECE_BYTES) {
        if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
        yield { file: 0, offset, data: new Uint8Array(PIECE_BYTES) };
      }
    };
    return Promise.resolve({
      files: [{ name: 'CURRENT', sizeBytes: FILE_BYTES, sha256: new Uint8Array(32) }],
      chunks: chunks(),
      close: () => {
        this.closed++;
      },
    });
  }
}

describe('FetchStateImage client: a sender that trickles', function () {
  this.timeout(20_000);
  let server: grpc.Server;
  let address: string;
  let sender: ImageSender;

  beforeEach(async () => {
    sender = new ImageSender();
    server = new grpc.Server();
    server.addService(pb.RaftServiceService, createRaftService(sender, { selfId: 'n1' }));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  afterEach(async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  });

  /** fetch reads the whole image with an idle timeout of 1 s and at least 2,000 bytes/s (the 4,000 bytes: 3 s in all); resolves with the bytes read. */
  async function fetch(): Promise<number> {
    const opened = await openStateImage({ selfId: 'n2', to: 'n1', address, index: 7, recordFormat: 2, manifestTimeoutMs: 5_000, idleTimeoutMs: 1_000, bytesPerSecondMin: 2_000 });
    let bytes = 0;
    for await (const c of opened.chunks) bytes += c.data.length;
    return bytes;
  }

  it('an image sent at its pace arrives whole', async () => {
    assert.equal(await fetch(), FILE_BYTES);
  });

  it('an image trickled (every piece within the idle timeout, the whole slower than the floor) is given up with DEADLINE_EXCEEDED, and the sender released', async () => {
    sender.gapMs = 100; // 40 pieces: ~4 s, more than the 3 s allowed
    await assert.rejects(fetch(), (e: unknown) => {
      assert.equal((e as { code?: number }).code, grpc.status.DEADLINE_EXCEEDED, String(e));
      assert.match((e as Error).message, /the image's 4000 bytes did not arrive within 3000 ms \(2000 bytes\/s at least\)/);
      return true;
    });
    await until('the sender to see the stream end', 5_000, () => (sender.closed === 1 ? true : undefined));
  });
});

/** ManualClock: a FetchClock whose time moves only when advance() is called. */
class ManualClock implements FetchClock {
  now = 0;
  private timers: { at: number; fn: () => void; live: boolean }[] = [];
  nowMs(): number {
    return this.now;
  }
  setTimeout(fn: () => void, delayMs: number): FetchTimer {
    const t = { at: this.now + delayMs, fn, live: true };
    this.timers.push(t);
    return Object.assign(t, { unref: () => undefined });
  }
  clearTimeout(timer: FetchTimer | undefined): void {
    if (timer !== undefined) (timer as unknown as { live: boolean }).live = false;
  }
  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, delayMs));
  }
  advance(ms: number): void {
    this.now += ms;
    const due = this.timers.filter((t) => t.live && t.at <= this.now);
    this.timers = this.timers.filter((t) => t.live && t.at > this.now);
    for (const t of due) t.fn();
  }
}

/** opener: a stream that yields `messages`, then waits until cancelled (a peer that says nothing more). */
function opener(messages: StateImageMessage[]): StateImageStreamOpener & { cancelled: number } {
  const o = {
    cancelled: 0,
    openStateImageStream: (): StateImageCall => {
      let stop: (e: Error) => void = () => undefined;
      const stopped = new Promise<never>((_, reject) => (stop = reject));
      stopped.catch(() => undefined);
      return {
        messages: (async function* () {
          yield* messages;
          await stopped;
        })(),
        cancel: () => {
          o.cancelled++;
          stop(Object.assign(new Error('cancelled'), { code: 1 }));
        },
      };
    },
  };
  return o;
}

const sha = new Uint8Array(32);
const manifest: StateImageMessage = { files: [{ name: 'CURRENT', sizeBytes: 3, sha256: sha }], file: 0, offset: 0, data: new Uint8Array(0), snapshot: null };
const base = { selfId: 'n2', to: 'n1', address: 'sim:n1', index: 7, recordFormat: 2, manifestTimeoutMs: 130_000, idleTimeoutMs: 15_000 };

describe('openStateImage on a given clock and stream opener', () => {
  it('no manifest within manifestTimeoutMs of the given clock: DEADLINE_EXCEEDED, the stream cancelled', async () => {
    const clock = new ManualClock();
    const streams = opener([]);
    const opening = openStateImage({ ...base, clock, streams });
    await new Promise((resolve) => setImmediate(resolve));
    clock.advance(129_999);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(streams.cancelled, 0, 'not before its time');
    clock.advance(1);
    await assert.rejects(opening, (e: Error & { code?: number }) => e.code === 4 && /no manifest within 130000 ms/.test(e.message));
    assert.ok(streams.cancelled > 0);
  });

  it('a stream that goes quiet after the manifest is cut after idleTimeoutMs of the given clock; the sender\'s snapshot is handed on', async () => {
    const clock = new ManualClock();
    const snapshot = { index: 7, term: 2 } as unknown as SnapshotMeta;
    const streams = opener([manifest, { files: [], file: 0, offset: 0, data: new Uint8Array([1, 2, 3]), snapshot: null }, { files: [], file: 0, offset: 0, data: new Uint8Array(0), snapshot }]);
    const opened = await openStateImage({ ...base, clock, streams });
    assert.deepEqual(opened.files.map((f) => f.name), ['CURRENT']);
    const it = opened.chunks[Symbol.asyncIterator]();
    const first = await it.next();
    assert.deepEqual(first.done === true ? null : [...first.value.data], [1, 2, 3]);
    const pending = it.next();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(opened.sentSnapshot, snapshot);
    clock.advance(15_000);
    await assert.rejects(pending, (e: Error & { code?: number }) => e.code === 4 && /nothing received within 15000 ms/.test(e.message));
  });
});

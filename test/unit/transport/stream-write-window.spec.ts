/**
 * The bound on snapshot chunks a server stream holds written but unsent
 * (StreamWriteWindow, issue 15: peak RSS). grpc-js's own Writable queues 16
 * messages before write() says to wait: a FetchSnapshot or download stream
 * to a slow reader held 16 chunks of 1 MiB each. Observed from outside: the
 * chunks a real FetchSnapshot server pulls from its source while the client
 * reads nothing.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';

import { FetchSnapshotRequest, RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import type { FileChunk } from '../../../src/snapshot/chunk-reader.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { STREAM_UNSENT_MAX, StreamStalledError, StreamWriteWindow } from '../../../src/transport/stream-write-window.js';
import type { RaftRequestHandler } from '../../../src/transport/transport.js';
import { unreadCall } from '../../harness/unread-call.js';
import { sleep, until } from '../../harness/until.js';

const CHUNK_BYTES = 256 * 1024;
const CHUNKS = 64;

describe('StreamWriteWindow (chunks held unsent by a server stream)', function () {
  this.timeout(30_000);

  it('a FetchSnapshot stream to a client that reads nothing pulls only a few chunks from its source', async () => {
    let pulled = 0;
    let streamEnded: (() => void) | null = null;
    const ended = new Promise<void>((resolve) => (streamEnded = resolve));
    const data = Buffer.alloc(CHUNK_BYTES, 7);
    const sha256 = createHash('sha256').update(data).digest();
    const handler: RaftRequestHandler = {
      handleRequest: () => Promise.resolve([]),
      handleReport: () => undefined,
      openSnapshot: () =>
        Promise.resolve(
          (async function* (): AsyncGenerator<FileChunk> {
            try {
              for (let i = 0; i < CHUNKS; i++) {
                pulled++;
                // A fresh buffer per chunk, as readChunks reads each into its own.
                yield { offset: i * CHUNK_BYTES, data: Buffer.from(data), sha256, totalSizeBytes: CHUNKS * CHUNK_BYTES, last: i === CHUNKS - 1 };
              }
            } finally {
              streamEnded?.();
            }
          })(),
        ),
    };
    const server = new grpc.Server();
    server.addService(RaftServiceService, createRaftService(handler));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))),
    );
    // A raw HTTP/2 client that never reads: its 64 KiB stream window fills, and the server's writes stop completing.
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => undefined);
    try {
      const body = FetchSnapshotRequest.encode({ from: 'f', index: 1n, term: 1n, digest: 'd', offset: 0n, chunkBytes: CHUNK_BYTES }).finish();
      const req = unreadCall(session, RaftServiceService.fetchSnapshot.path, body);
      await until('the server pulled its first chunks', 10_000, () => (pulled >= 2 ? true : undefined));
      let last = -1;
      for (let quiet = 0; quiet < 10; ) {
        await sleep(50);
        quiet = pulled === last ? quiet + 1 : 0;
        last = pulled;
      }
      // held: unsent messages (STREAM_UNSENT_MAX), the one being written to HTTP/2, and the one the loop holds.
      assert.ok(pulled <= STREAM_UNSENT_MAX + 2, `the server pulled ${pulled} chunks of ${CHUNK_BYTES} B for a client that read none`);
      // Reading resumes the stream to its end.
      let receivedBytes = 0;
      req.on('data', (d: Buffer) => void (receivedBytes += d.length));
      req.resume();
      await new Promise<void>((resolve) => req.on('end', resolve));
      assert.ok(receivedBytes > CHUNKS * CHUNK_BYTES, `received ${receivedBytes} B`);
      await ended;
    } finally {
      session.destroy();
      server.forceShutdown();
    }
  });

  it('never holds more than unsentMax messages unsent, and stops waiting when the call is cancelled', async () => {
    const callbacks: (() => void)[] = [];
    const call = new Writable({
      objectMode: true,
      write(_chunk: unknown, _encoding, callback: () => void) {
        callbacks.push(callback);
      },
    });
    const window = new StreamWriteWindow<number>(call, 2);
    let written = 0;
    let cancelled = false;
    const writer = (async () => {
      for (let i = 0; i < 10; i++) {
        await window.write(i);
        written++;
        if (!cancelled) assert.ok(window.unsent <= 2, `${window.unsent} unsent after a write`);
      }
    })();
    await until('the writer waits', 5_000, () => (written === 2 ? true : undefined));
    await sleep(20);
    assert.equal(written, 2, 'a third write waits for the first to be sent');
    // Sending one message lets one more write through.
    callbacks.shift()?.();
    await until('one more write', 5_000, () => (written === 3 ? true : undefined));
    // A cancelled call (grpc-js then drops its callbacks) ends every wait.
    cancelled = true;
    call.emit('cancelled');
    await writer;
    assert.equal(written, 10);
  });

  it('with stallMs, a write that waits that long with nothing sent rejects StreamStalledError; a slow but moving reader is never cut', async () => {
    const callbacks: (() => void)[] = [];
    const call = new Writable({
      objectMode: true,
      write(_chunk: unknown, _encoding, callback: () => void) {
        callbacks.push(callback);
      },
    });
    const window = new StreamWriteWindow<number>(call, 1, 200);
    await window.write(0);
    // One message sent every 50 ms: each wait is shorter than stallMs, however many there are.
    const pacer = setInterval(() => callbacks.shift()?.(), 50);
    try {
      for (let i = 1; i <= 12; i++) await window.write(i);
    } finally {
      clearInterval(pacer);
    }
    // Nothing sent any more: the next wait gives up.
    await assert.rejects(window.write(99), (err: Error) => err instanceof StreamStalledError && err.code === grpc.status.DEADLINE_EXCEEDED && /read nothing for 200 ms/.test(err.message));
  });
});

/**
 * grpc-frame-room.ts: a FetchSnapshot (or GetSnapshot) chunk read from a file
 * goes to the HTTP/2 stream framed where it lies, with no copy of its bytes:
 * grpc-js's server framing (BaseServerInterceptingCall.serializeMessage, a
 * private method, replaced) copied every message into a fresh buffer. These
 * cases count the copies of chunk bytes a server makes, check that a buffer
 * reused once its write callback ran is never sent half-overwritten (also
 * when the client stalls with writes queued, plain and TLS), and pin the
 * grpc-js method replaced.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as serverInterceptors from '@grpc/grpc-js/build/src/server-interceptors.js';

import { readChunks } from '../../../src/snapshot/chunk-reader.js';
import { channelCredentialsFromFiles, nodeCertFiles, serverCredentialsFromFiles, writeCa, writeNodeCert } from '../../../src/tls/index.js';
import { encodeBytesMessage } from '../../../src/transport/bytes-message.js';
import { RAFT_SERVICE_DEFINITION } from '../../../src/transport/fetch-serializer.js';
import { GRPC_FRAME_HEADER_BYTES, GRPC_JS_SERIALIZE_MESSAGE, collapse, frameMessage, hasGrpcFrameRoom, installGrpcFrameRoom, markGrpcFrameRoom } from '../../../src/transport/grpc-frame-room.js';
import { peerDial } from '../../../src/transport/peer-guard.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { fetchSnapshot, type FetchSink } from '../../../src/transport/snapshot-fetcher.js';
import type { RaftRequestHandler } from '../../../src/transport/transport.js';

const MiB = 1 << 20;

/** serveFile: a RaftService serving `file` with readChunks, each released chunk overwritten at once (0xee) before its buffer is reused. */
async function serveFile(file: string, credentials: grpc.ServerCredentials): Promise<{ server: grpc.Server; port: number; counts: { chunks: number; releases: number } }> {
  const counts = { chunks: 0, releases: 0 };
  const handler: RaftRequestHandler = {
    handleRequest: () => Promise.resolve([]),
    handleReport: () => undefined,
    openSnapshot: (p) =>
      Promise.resolve(
        (async function* () {
          for await (const c of readChunks(file, p.offset, p.chunkBytes)) {
            counts.chunks++;
            yield {
              ...c,
              // Were the bytes still to be sent when the buffer is released, the follower would get 0xee and fail the chunk's check.
              release: () => (counts.releases++, Buffer.from(c.data.buffer, c.data.byteOffset, c.data.length).fill(0xee), c.release?.()),
            };
          }
        })(),
      ),
  };
  const server = new grpc.Server();
  server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler));
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (e, p) => (e !== null ? reject(e) : resolve(p))));
  return { server, port, counts };
}

/** countChunkCopies runs `fn` counting Buffer#copy calls of at least `minBytes` (grpc-js's framing copies a message with it). */
async function countChunkCopies<T>(minBytes: number, fn: () => Promise<T>): Promise<{ copies: number; result: T }> {
  const copy = Buffer.prototype.copy;
  let copies = 0;
  Buffer.prototype.copy = function (this: Buffer, ...args: Parameters<typeof copy>): number {
    if (this.length >= minBytes) copies++;
    return copy.apply(this, args);
  };
  try {
    const result = await fn();
    return { copies, result };
  } finally {
    Buffer.prototype.copy = copy;
  }
}

describe('grpc-frame-room: chunks framed for gRPC where they lie', function () {
  this.timeout(60_000);
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-frame-room-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the method replaced is grpc-js 1.14\'s own serializeMessage, and the fetch serializer has replaced it (once)', async () => {
    const require = createRequire(import.meta.url);
    const source = await readFile(join(dirname(require.resolve('@grpc/grpc-js/package.json')), 'build/src/server-interceptors.js'), 'utf8');
    const start = source.indexOf('    serializeMessage(value) {');
    assert.ok(start > 0, 'grpc-js still has serializeMessage');
    const end = source.indexOf('\n    }\n', start) + '\n    }'.length;
    assert.equal(collapse(source.slice(start, end)), GRPC_JS_SERIALIZE_MESSAGE);
    const proto = (serverInterceptors as unknown as { BaseServerInterceptingCall: { prototype: { serializeMessage: (v: unknown) => Buffer } } }).BaseServerInterceptingCall.prototype;
    const installed = proto.serializeMessage;
    assert.notEqual(collapse(installed.toString()), GRPC_JS_SERIALIZE_MESSAGE, 'importing fetch-serializer installed the replacement');
    installGrpcFrameRoom();
    assert.equal(proto.serializeMessage, installed, 'installing again changes nothing');
  });

  it('frameMessage frames a marked message in its room (same memory, no copy), any other in a copy, both as grpc-js does', () => {
    const backing = Buffer.alloc(64 + 1000, 0x11);
    const body = backing.subarray(64, 64 + 1000);
    randomBytes(1000).copy(body);
    const expected = Buffer.concat([Buffer.from([0, 0, 0, 0x03, 0xe8]), body]);
    const unmarked = frameMessage(body);
    assert.ok(unmarked.equals(expected));
    assert.notEqual(unmarked.buffer, backing.buffer, 'an unmarked message is copied');
    const framed = frameMessage(markGrpcFrameRoom(body));
    assert.ok(framed.equals(expected));
    assert.equal(framed.buffer, backing.buffer, 'a marked message is framed where it lies');
    assert.equal(framed.byteOffset, 64 - GRPC_FRAME_HEADER_BYTES);
    assert.throws(() => markGrpcFrameRoom(backing.subarray(4, 10)), RangeError, 'no room for the header: refused');
    assert.equal(hasGrpcFrameRoom(backing.subarray(4, 10)), false);
  });

  it('encodeBytesMessage marks what it encodes in a new buffer, and in place only where the chunk\'s room holds the header too', async () => {
    const file = join(dir, 'small.bin');
    await writeFile(file, randomBytes(3000));
    for await (const c of readChunks(file, 0, 1000)) {
      const m = encodeBytesMessage([{ tag: 0x08, varint: 5n }], { tag: 0x12, data: c.data }, [{ tag: 0x1a, bytes: c.sha256 }]);
      assert.equal(m.buffer, c.data.buffer, 'encoded in place');
      assert.ok(hasGrpcFrameRoom(m));
      c.release?.();
    }
    const loose = encodeBytesMessage([], { tag: 0x12, data: randomBytes(100) }, []);
    assert.ok(hasGrpcFrameRoom(loose), 'a new buffer keeps the header\'s room');
    assert.ok(frameMessage(loose).subarray(GRPC_FRAME_HEADER_BYTES).equals(loose));
    // A chunk whose room before it is too small for both headers is encoded in place but not marked.
    const frame = Buffer.alloc(4 + 100 + 64);
    const data = frame.subarray(4, 104);
    Object.defineProperty(data, Symbol.for('snapcoord.chunk.frameRoom'), { value: { before: 4, after: 64 } });
    const tight = encodeBytesMessage([], { tag: 0x12, data }, []);
    assert.equal(tight.buffer, frame.buffer);
    assert.equal(hasGrpcFrameRoom(tight), false);
  });

  it('a FetchSnapshot server copies no chunk bytes (32 chunks of 1 MiB: no copy of 64 KiB or more) and the fetch is whole', async () => {
    const file = join(dir, 'a.bin');
    const bytes = randomBytes(32 * MiB + 4321);
    await writeFile(file, bytes);
    const digest = createHash('sha256').update(bytes).digest('hex');
    const { server, port, counts } = await serveFile(file, grpc.ServerCredentials.createInsecure());
    try {
      const dest = join(dir, 'a.out');
      const { copies, result } = await countChunkCopies(64 * 1024, () =>
        fetchSnapshot({ selfId: 'f', address: `127.0.0.1:${port}`, target: { index: 1, term: 1, sizeBytes: bytes.length, digest }, destPath: dest, chunkBytes: MiB, hashOnWorker: false }),
      );
      assert.equal(result.hashFailures, 0);
      assert.ok((await readFile(dest)).equals(bytes));
      assert.equal(counts.chunks, 33);
      assert.equal(copies, 0, `${copies} copies of chunk bytes (grpc-js's framing copies each 1 MiB message: 32)`);
    } finally {
      server.forceShutdown();
    }
  });

  for (const tls of [false, true]) {
    it(`chunks released once sent are never sent overwritten, with the client stalled while the server's writes queue (${tls ? 'mutual TLS' : 'plaintext'})`, async () => {
      const file = join(dir, `b-${tls}.bin`);
      // More than the client's 16 MiB HTTP/2 window and the sockets' buffers: the server's writes queue while the client stalls.
      const bytes = randomBytes(48 * MiB + 99);
      await writeFile(file, bytes);
      const digest = createHash('sha256').update(bytes).digest('hex');
      let serverCreds = grpc.ServerCredentials.createInsecure();
      let dial = peerDial('c', '127.0.0.1:0', grpc.credentials.createInsecure());
      if (tls) {
        const tlsDir = join(dir, 'tls');
        const ca = await writeCa(tlsDir);
        await writeNodeCert(tlsDir, 'leader', { ips: ['127.0.0.1'] });
        await writeNodeCert(tlsDir, 'follower', { ips: ['127.0.0.1'] });
        const l = nodeCertFiles(tlsDir, 'leader');
        const f = nodeCertFiles(tlsDir, 'follower');
        serverCreds = serverCredentialsFromFiles({ certFile: l.certFile, keyFile: l.keyFile, caFile: ca.caFile, requireClientCert: true });
        dial = peerDial('c', '127.0.0.1:0', channelCredentialsFromFiles({ caFile: ca.caFile, certFile: f.certFile, keyFile: f.keyFile }));
      }
      const { server, port, counts } = await serveFile(file, serverCreds);
      try {
        const out: Buffer[] = [];
        let n = 0;
        const sink: FetchSink = {
          writeChunk: async (data) => {
            out.push(Buffer.from(data));
            // Two stalls: the client reads nothing for a while, the server's window and sockets fill, its writes wait.
            if (++n === 2 || n === 20) await new Promise((r) => setTimeout(r, 400));
          },
        };
        const r = await fetchSnapshot({ selfId: 'f', address: `127.0.0.1:${port}`, target: { index: 1, term: 1, sizeBytes: bytes.length, digest }, sink, chunkBytes: MiB, dial, hashOnWorker: false });
        assert.equal(r.hashFailures, 0, 'no chunk arrived overwritten');
        assert.equal(r.attempts, 1);
        assert.ok(Buffer.concat(out).equals(bytes));
        assert.equal(counts.releases, counts.chunks, 'every chunk sent was released');
      } finally {
        server.forceShutdown();
      }
    });
  }
});

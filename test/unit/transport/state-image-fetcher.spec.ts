/**
 * The client side of FetchStateImage (state-image-fetcher.ts) against a real
 * RaftService over gRPC whose sender trickles: each message comes within the
 * idle timeout, but the whole image would take far longer than its bytes need.
 */
import assert from 'node:assert/strict';

import * as grpc from '@grpc/grpc-js';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import type { Message, StateImageChunk } from '../../../src/raft/types.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { openStateImage } from '../../../src/transport/state-image-fetcher.js';
import type { FetchStateImageParams, RaftRequestHandler, StateImageStream } from '../../../src/transport/transport.js';
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
    const opened = await openStateImage({ selfId: 'n2', to: 'n1', address, index: 7, manifestTimeoutMs: 5_000, idleTimeoutMs: 1_000, bytesPerSecondMin: 2_000 });
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

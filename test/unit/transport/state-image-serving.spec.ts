/**
 * Serving a state image (issue 15: a leader's peak RSS while it sends the
 * restored state to its followers): readStateImageChunks reads into reused
 * buffers once a chunk is released, at most IMAGE_SPARE_BUFFERS_MAX kept; the
 * FetchStateImage encoder writes the generated encoder's bytes, a chunk in
 * place (no copy); and over gRPC the sender releases each chunk only once
 * sent, so the reused buffers never change bytes still on their way: every
 * file arrives whole.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import * as pb from '../../../src/gen/snapcoord/v1/raft.js';
import type { Message, StateImageChunk } from '../../../src/raft/types.js';
import { IMAGE_SPARE_BUFFERS_MAX, readStateImageChunks, type StateImage } from '../../../src/storage/state-image.js';
import { RAFT_SERVICE_DEFINITION, serializeFetchStateImageResponse } from '../../../src/transport/fetch-serializer.js';
import { hasGrpcFrameRoom } from '../../../src/transport/grpc-frame-room.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { openStateImage } from '../../../src/transport/state-image-fetcher.js';
import type { FetchStateImageParams, RaftRequestHandler, StateImageStream } from '../../../src/transport/transport.js';

const CHUNK = 64 * 1024;

/** imageOf writes files of the given sizes (random bytes) into `dir`: a StateImage of them, and their bytes. */
async function imageOf(dir: string, sizes: readonly number[]): Promise<{ image: StateImage; bytes: Buffer[] }> {
  const bytes = sizes.map((n) => randomBytes(n));
  const names = sizes.map((_, i) => `${String(i + 1).padStart(6, '0')}.sst`);
  for (let i = 0; i < sizes.length; i++) await writeFile(join(dir, names[i] as string), bytes[i] as Buffer);
  const files = bytes.map((b, i) => ({ name: names[i] as string, sizeBytes: b.length, sha256: createHash('sha256').update(b).digest() }));
  return { image: { dir, appliedIndex: 7, files }, bytes };
}

describe('serving a state image: reused chunk buffers', function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-image-serving-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a consumer that releases each chunk gets its bytes in the same buffer again, across files, every byte as on disk', async () => {
    const { image, bytes } = await imageOf(dir, [3.5 * CHUNK, 0, 5 * CHUNK + 1]);
    const buffers = new Set<ArrayBufferLike>();
    const got = image.files.map(() => [] as Buffer[]);
    let chunks = 0;
    for await (const c of readStateImageChunks(image, CHUNK)) {
      chunks++;
      buffers.add(c.data.buffer);
      (got[c.file] as Buffer[]).push(Buffer.from(c.data)); // a copy, then the chunk is released
      assert.equal(typeof c.release, 'function');
      c.release?.();
    }
    assert.equal(chunks, 4 + 6);
    for (let i = 0; i < bytes.length; i++) assert.ok(Buffer.concat(got[i] as Buffer[]).equals(bytes[i] as Buffer), `file ${i}`);
    // One full-size buffer read into again and again; each file's short tail a buffer of its own.
    assert.equal(buffers.size, 3);
  });

  it('chunks held unreleased keep their own bytes; at most IMAGE_SPARE_BUFFERS_MAX released buffers are read into again', async () => {
    const held = IMAGE_SPARE_BUFFERS_MAX + 2;
    const { image, bytes } = await imageOf(dir, [2 * held * CHUNK]);
    const it = readStateImageChunks(image, CHUNK)[Symbol.asyncIterator]();
    const first: StateImageChunk[] = [];
    for (let i = 0; i < held; i++) first.push((await it.next()).value as StateImageChunk);
    // Held, none released: each its own buffer, each with its own bytes.
    assert.equal(new Set(first.map((c) => c.data.buffer)).size, held);
    first.forEach((c, i) => assert.ok(Buffer.from(c.data).equals((bytes[0] as Buffer).subarray(i * CHUNK, (i + 1) * CHUNK)), `chunk ${i}`));
    for (const c of first) c.release?.();
    first[0]?.release?.(); // a second release changes nothing
    const second: StateImageChunk[] = [];
    for (let i = 0; i < held; i++) second.push((await it.next()).value as StateImageChunk);
    assert.equal((await it.next()).done, true);
    const old = new Set(first.map((c) => c.data.buffer));
    assert.equal(second.filter((c) => old.has(c.data.buffer)).length, IMAGE_SPARE_BUFFERS_MAX);
    assert.equal(new Set(second.map((c) => c.data.buffer)).size, held);
    second.forEach((c, i) => assert.ok(Buffer.from(c.data).equals((bytes[0] as Buffer).subarray((held + i) * CHUNK, (held + i + 1) * CHUNK)), `chunk ${held + i}`));
  });

  it('the FetchStateImage encoder writes the generated encoder\'s bytes, a read chunk in place (its own buffer, framed for gRPC there)', async () => {
    const cases: pb.FetchStateImageResponse[] = [
      { files: [], file: 0, offset: 0n, data: new Uint8Array(0), snapshot: undefined },
      { files: [], file: 0, offset: 0n, data: new Uint8Array([1, 2, 3]), snapshot: undefined },
      { files: [], file: 70_000, offset: 2n ** 40n + 3n, data: new Uint8Array(CHUNK).fill(5), snapshot: undefined },
      { files: [{ name: 'CURRENT', sizeBytes: 16n, sha256: new Uint8Array(32).fill(2) }], file: 0, offset: 0n, data: new Uint8Array(0), snapshot: undefined },
    ];
    for (const m of cases) assert.ok(serializeFetchStateImageResponse(m).equals(Buffer.from(pb.FetchStateImageResponse.encode(m).finish())), JSON.stringify({ ...m, data: m.data.length }, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
    const { image } = await imageOf(dir, [3 * CHUNK]);
    for await (const c of readStateImageChunks(image, CHUNK)) {
      const m: pb.FetchStateImageResponse = { files: [], file: c.file, offset: BigInt(c.offset), data: c.data, snapshot: undefined };
      const ours = serializeFetchStateImageResponse(m);
      assert.ok(ours.equals(Buffer.from(pb.FetchStateImageResponse.encode(m).finish())));
      assert.equal(ours.buffer, c.data.buffer, 'encoded where the chunk lies');
      assert.ok(hasGrpcFrameRoom(ours), 'room for the gRPC frame header');
    }
  });

  describe('over gRPC', () => {
    let server: grpc.Server;
    let address: string;
    let served: { released: number; buffers: Set<ArrayBufferLike> };

    async function serve(image: StateImage): Promise<void> {
      served = { released: 0, buffers: new Set() };
      const handler: RaftRequestHandler = {
        handleRequest: (_m: Message) => Promise.resolve([]),
        handleReport: () => undefined,
        openStateImage: (_p: FetchStateImageParams): Promise<StateImageStream> =>
          Promise.resolve({
            files: image.files,
            chunks: (async function* () {
              for await (const c of readStateImageChunks(image, CHUNK)) {
                served.buffers.add(c.data.buffer);
                yield { ...c, release: () => (served.released++, c.release?.()) };
              }
            })(),
          }),
      };
      server = new grpc.Server();
      server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler, { selfId: 'n1' }));
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
      );
      address = `127.0.0.1:${port}`;
    }

    afterEach(async () => {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    });

    it('each chunk is released once sent, its buffer sent again, and every file arrives with its bytes', async () => {
      const { image, bytes } = await imageOf(dir, [40 * CHUNK + 123, 17, 24 * CHUNK]);
      await serve(image);
      const opened = await openStateImage({ selfId: 'n2', to: 'n1', address, index: 7, recordFormat: 2, manifestTimeoutMs: 10_000, idleTimeoutMs: 10_000, bytesPerSecondMin: 100_000 });
      assert.deepEqual(opened.files.map((f) => f.sizeBytes), bytes.map((b) => b.length));
      const got = bytes.map(() => [] as Buffer[]);
      let chunks = 0;
      for await (const c of opened.chunks) {
        chunks++;
        (got[c.file] as Buffer[]).push(Buffer.from(c.data));
      }
      for (let i = 0; i < bytes.length; i++) assert.ok(Buffer.concat(got[i] as Buffer[]).equals(bytes[i] as Buffer), `file ${i}`);
      assert.equal(served.released, chunks, 'every chunk released once sent');
      // 66 chunks through a few buffers: those held at once (one in hand, the stream's unsent ones) and the short tails.
      assert.ok(served.buffers.size <= IMAGE_SPARE_BUFFERS_MAX + 4, `${served.buffers.size} buffers for ${chunks} chunks`);
    });
  });
});

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { RaftServiceService } from '../../../src/gen/snapcoord/v1/raft.js';
import { readChunks } from '../../../src/snapshot/chunk-reader.js';
import { createRaftService } from '../../../src/transport/raft-service.js';
import { HASH_ON_WORKER_BYTES_MIN, SnapshotFetchError, fetchSnapshot, hashOnWorkerByDefault } from '../../../src/transport/snapshot-fetcher.js';
import { MessageFaults } from '../../../src/transport/message-faults.js';
import { TRANSFER_SLACK_BYTES } from '../../../src/transport/chunk-hasher.js';
import type { FetchSnapshotParams, RaftRequestHandler } from '../../../src/transport/transport.js';

const CHUNK = 64 * 1024;

describe('snapshot fetch (follower pulls, chunks verified)', () => {
  let dir: string;
  let file: string;
  let digest: string;
  let size: number;
  let server: grpc.Server;
  let address: string;
  const requests: FetchSnapshotParams[] = [];
  /** cutAfterChunks: the next stream dies after this many chunks (0: never). */
  let cutAfterChunks = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-fetch-'));
    file = join(dir, 'archive.bin');
    const data = randomBytes(20 * CHUNK + 123);
    size = data.length;
    digest = createHash('sha256').update(data).digest('hex');
    await writeFile(file, data);
    const handler: RaftRequestHandler = {
      handleRequest: () => Promise.resolve([]),
      handleReport: () => undefined,
      openSnapshot: (params) => {
        requests.push(params);
        if (params.digest !== digest) {
          return Promise.reject(Object.assign(new Error('no such snapshot'), { code: grpc.status.NOT_FOUND }));
        }
        const cut = cutAfterChunks;
        cutAfterChunks = 0;
        return Promise.resolve(
          (async function* () {
            let n = 0;
            for await (const c of readChunks(file, params.offset, params.chunkBytes)) {
              if (cut > 0 && n++ === cut) throw new Error('connection reset (test)');
              yield c;
            }
          })(),
        );
      },
    };
    server = new grpc.Server();
    server.addService(RaftServiceService, createRaftService(handler));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  after(async () => {
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    requests.length = 0;
  });

  const target = (): { index: number; term: number; sizeBytes: number; digest: string } => ({ index: 7, term: 2, sizeBytes: size, digest });

  it('fetches the whole archive and checks its SHA-256', async () => {
    const dest = join(dir, 'out1');
    const r = await fetchSnapshot({ selfId: 'f', address, target: target(), destPath: dest, chunkBytes: CHUNK, hashOnWorker: true });
    assert.equal(r.bytes, size);
    assert.equal(r.hashFailures, 0);
    // Each full chunk (its own gRPC message) hashed on the worker, not copied; the short last one (a pooled buffer) inline.
    assert.equal(r.chunksHashedOnWorker, Math.floor(size / CHUNK));
    assert.equal(createHash('sha256').update(await readFile(dest)).digest('hex'), digest);
    // By default an archive this small is hashed inline (no worker started for it).
    assert.ok(size < HASH_ON_WORKER_BYTES_MIN);
    const inline = await fetchSnapshot({ selfId: 'f', address, target: target(), destPath: `${dest}-inline`, chunkBytes: CHUNK });
    assert.equal(inline.chunksHashedOnWorker, 0);
    assert.equal(createHash('sha256').update(await readFile(`${dest}-inline`)).digest('hex'), digest);
  });

  it('hands each chunk to the sink as the decoder left it: a view of its gRPC message, not a copy (no copy in the protobuf decode of the bytes field)', async () => {
    const given: Uint8Array[] = [];
    const r = await fetchSnapshot({
      selfId: 'f',
      address,
      target: target(),
      chunkBytes: CHUNK,
      hashOnWorker: false,
      sink: {
        writeChunk: (data) => {
          given.push(data);
          return Promise.resolve();
        },
      },
    });
    assert.equal(r.bytes, size);
    assert.equal(given.length, Math.ceil(size / CHUNK));
    for (const [i, data] of given.entries()) {
      // The message's buffer holds the chunk after its offset field's tag and length, and its sha256 field after it:
      // a copy (ts-proto's `env=node` wraps the field in a Buffer.from, TOOLCHAIN.md) would be a buffer of its own.
      assert.ok(data.byteOffset > 0 && data.buffer.byteLength >= data.byteOffset + data.length + 32, `chunk ${i} is a view into its message`);
      // A full chunk's message has a buffer of its own (the short last one lies in Node's pool of small buffers).
      if (data.length === CHUNK) assert.ok(data.buffer.byteLength - data.length <= TRANSFER_SLACK_BYTES, `chunk ${i}'s buffer holds one message, not more`);
    }
    assert.equal(new Set(given.filter((d) => d.length === CHUNK).map((d) => d.buffer)).size, Math.floor(size / CHUNK), 'each full chunk in its own message buffer');
  });

  it('hashes on a worker by default only with a core to spare: on 2 CPUs a large fetch hashes inline', () => {
    const large = 256 * 1024 * 1024;
    assert.equal(hashOnWorkerByDefault(large, true, 2), false, '2 CPUs: inline');
    assert.equal(hashOnWorkerByDefault(large, true, 1), false, '1 CPU: inline');
    assert.equal(hashOnWorkerByDefault(large, true, 4), true, '4 CPUs: on the worker');
    assert.equal(hashOnWorkerByDefault(HASH_ON_WORKER_BYTES_MIN - 1, true, 4), false, 'a small archive: inline');
    assert.equal(hashOnWorkerByDefault(large, false, 4), false, 'chunks from a streams opener: inline');
  });

  it('a byte flipped in one chunk in transit is detected, discarded and fetched again', async () => {
    let seen = 0;
    const flipOnce: grpc.Interceptor = (options, nextCall) =>
      new grpc.InterceptingCall(nextCall(options), {
        start(metadata, listener, next) {
          void listener;
          next(metadata, {
            onReceiveMessage(message: { data: Uint8Array }, nextMsg: (m: unknown) => void) {
              if (++seen === 3) {
                const copy = Uint8Array.from(message.data);
                copy[10] = (copy[10] ?? 0) ^ 0xff;
                nextMsg({ ...message, data: copy });
              } else {
                nextMsg(message);
              }
            },
          });
        },
      });
    const dest = join(dir, 'out2');
    const r = await fetchSnapshot({
      selfId: 'f', address, target: target(), destPath: dest, chunkBytes: CHUNK, interceptors: [flipOnce],
    });
    assert.equal(r.hashFailures, 1);
    assert.equal(requests.length, 2);
    assert.equal(requests[1]?.offset, 2 * CHUNK, 'resumed from the last verified offset, not from 0');
    assert.equal(createHash('sha256').update(await readFile(dest)).digest('hex'), digest);
  });

  it('under the chaos interceptor (chunks dropped, duplicated, corrupted) the archive still arrives whole and verified', async () => {
    const faults = new MessageFaults({ drop: 0.1, duplicate: 0.1, corrupt: 0.1, seed: 5 });
    const dest = join(dir, 'out-chaos');
    const r = await fetchSnapshot({ selfId: 'f', address, target: target(), destPath: dest, chunkBytes: CHUNK, maxAttempts: 200, interceptors: [faults.interceptor] });
    const { dropped, duplicated, corrupted } = faults.counts;
    assert.ok(dropped + duplicated + corrupted > 0, 'no fault was injected');
    // Every corrupted chunk the fetcher looked at was caught (some arrive after the stream was already cut).
    assert.ok(r.hashFailures >= 1 && r.hashFailures <= corrupted, `hashFailures ${r.hashFailures}, corrupted ${corrupted}`);
    assert.equal(createHash('sha256').update(await readFile(dest)).digest('hex'), digest);
  });

  it('a stream cut mid-transfer resumes from the last verified offset', async () => {
    cutAfterChunks = 5;
    const dest = join(dir, 'out3');
    const r = await fetchSnapshot({ selfId: 'f', address, target: target(), destPath: dest, chunkBytes: CHUNK });
    assert.ok(r.attempts >= 2);
    assert.ok((requests[1]?.offset ?? 0) > 0, `second request from offset ${requests[1]?.offset}`);
    assert.equal(createHash('sha256').update(await readFile(dest)).digest('hex'), digest);
  });

  it('a snapshot the peer does not hold is refused with a clear error', async () => {
    await assert.rejects(
      fetchSnapshot({ selfId: 'f', address, target: { ...target(), digest: 'ab'.repeat(32) }, destPath: join(dir, 'out4') }),
      (e: unknown) => e instanceof SnapshotFetchError && /no such snapshot/.test(e.message),
    );
  });

  it('an archive whose whole digest differs from the one named is refused', async () => {
    // Same bytes served, but the leader named another size: the transfer cannot verify.
    await assert.rejects(
      fetchSnapshot({ selfId: 'f', address, target: { ...target(), sizeBytes: size - 1 }, destPath: join(dir, 'out5'), maxAttempts: 3 }),
      SnapshotFetchError,
    );
  });
});

describe('readChunks with recorded chunk hashes', () => {
  it('serves the same chunks as hashing them, and still hashes unaligned reads', async () => {
    const { mkdtemp: mk, writeFile: wf, rm: rmrf } = await import('node:fs/promises');
    const { CHUNK_HASH_BYTES } = await import('../../../src/snapshot/store.js');
    const d = await mk(join(tmpdir(), 'snapcoord-chunks-'));
    try {
      const file = join(d, 'f.bin');
      const data = randomBytes(3 * CHUNK_HASH_BYTES + 777);
      await wf(file, data);
      const sha256s: Uint8Array[] = [];
      for (let at = 0; at < data.length; at += CHUNK_HASH_BYTES) {
        sha256s.push(createHash('sha256').update(data.subarray(at, at + CHUNK_HASH_BYTES)).digest());
      }
      const known = { chunkBytes: CHUNK_HASH_BYTES, sha256s };
      for (const offset of [0, CHUNK_HASH_BYTES, 12345]) {
        const plain = [];
        for await (const c of readChunks(file, offset, CHUNK_HASH_BYTES)) plain.push(c);
        const fast = [];
        for await (const c of readChunks(file, offset, CHUNK_HASH_BYTES, known)) fast.push(c);
        assert.deepEqual(fast.map((c) => [c.offset, Buffer.from(c.sha256).toString('hex'), c.data.length, c.last]), plain.map((c) => [c.offset, Buffer.from(c.sha256).toString('hex'), c.data.length, c.last]));
      }
    } finally {
      await rmrf(d, { recursive: true, force: true });
    }
  });
});

describe('readChunks + serializeFetchSnapshotResponse (the sender encodes chunks in place)', () => {
  it('a chunk read by readChunks is encoded without copying it, byte for byte what the generated encoder writes; other chunks are copied', async () => {
    const { serializeFetchSnapshotResponse } = await import('../../../src/transport/fetch-serializer.js');
    const { FetchSnapshotResponse } = await import('../../../src/gen/snapcoord/v1/raft.js');
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-inplace-'));
    try {
      const file = join(d, 'f.bin');
      const bytes = randomBytes(2 * CHUNK + 4321);
      await writeFile(file, bytes);
      // Large offsets (long varints), a short last chunk, tiny chunks that come from Buffer's shared pool.
      for (const [offset, chunkBytes] of [[0, CHUNK], [CHUNK + 3, CHUNK], [bytes.length - 5, 100], [17, 100]] as const) {
        for await (const c of readChunks(file, offset, chunkBytes)) {
          const m = { offset: BigInt(c.offset) + 2n ** 40n, data: c.data, sha256: c.sha256, totalSizeBytes: BigInt(c.totalSizeBytes), last: c.last };
          const before = Buffer.from(c.data);
          const ours = serializeFetchSnapshotResponse(m);
          assert.equal(ours.buffer, c.data.buffer, 'encoded in the room around the chunk, not into a new buffer');
          assert.ok(Buffer.from(c.data).equals(before), 'the chunk bytes are unchanged');
          assert.ok(Buffer.from(ours).equals(Buffer.from(FetchSnapshotResponse.encode(m).finish())), `offset ${c.offset}: same bytes as the generated encoder`);
          assert.ok(Buffer.from(c.data).equals(bytes.subarray(c.offset, c.offset + c.data.length)));
        }
      }
      // A plain buffer (no room marked) is copied: its neighbours are never written.
      const plain = Buffer.alloc(300, 5);
      const data = plain.subarray(100, 200);
      const out = serializeFetchSnapshotResponse({ offset: 7n, data, sha256: new Uint8Array(32).fill(1), totalSizeBytes: 1000n, last: true });
      assert.ok(Buffer.from(FetchSnapshotResponse.decode(out).data).equals(Buffer.alloc(100, 5)));
      assert.ok(plain.equals(Buffer.alloc(300, 5)));
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });
});

describe('readChunks buffer reuse (release)', () => {
  it('reads a later chunk into the buffer of a released one, never into one still held', async () => {
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-reuse-'));
    try {
      const file = join(d, 'f.bin');
      const bytes = randomBytes(12 * CHUNK + 99);
      await writeFile(file, bytes);
      const released = new Set<ArrayBufferLike>();
      const held: { data: Uint8Array; offset: number }[] = [];
      let reused = 0;
      for await (const c of readChunks(file, 0, CHUNK)) {
        assert.ok(Buffer.from(c.data).equals(bytes.subarray(c.offset, c.offset + c.data.length)), `chunk at ${c.offset} holds the file's bytes`);
        assert.ok(!held.some((h) => h.data.buffer === c.data.buffer), 'a chunk still held is never read into');
        if (released.has(c.data.buffer)) reused++;
        // Every third chunk is kept (never released); the others released at once, twice (idempotent).
        if ((c.offset / CHUNK) % 3 === 1) held.push({ data: c.data, offset: c.offset });
        else {
          assert.equal(typeof c.release, 'function');
          c.release?.();
          c.release?.();
          released.add(c.data.buffer);
        }
      }
      assert.ok(reused >= 6, `${reused} of 13 chunks were read into a released buffer`);
      for (const h of held) assert.ok(Buffer.from(h.data).equals(bytes.subarray(h.offset, h.offset + h.data.length)), `held chunk at ${h.offset} unchanged`);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('a FetchSnapshot server releases each chunk only once it was sent (framed in its own buffer, no copy): the fetch stays whole with released buffers overwritten', async () => {
    const { RAFT_SERVICE_DEFINITION } = await import('../../../src/transport/fetch-serializer.js');
    const d = await mkdtemp(join(tmpdir(), 'snapcoord-release-'));
    const server = new grpc.Server();
    try {
      const file = join(d, 'f.bin');
      const bytes = randomBytes(24 * CHUNK + 7);
      await writeFile(file, bytes);
      let chunks = 0;
      let releases = 0;
      const handler: RaftRequestHandler = {
        handleRequest: () => Promise.resolve([]),
        handleReport: () => undefined,
        openSnapshot: (p) =>
          Promise.resolve(
            (async function* () {
              for await (const c of readChunks(file, p.offset, p.chunkBytes)) {
                chunks++;
                // A released chunk's bytes are overwritten at once: had they not been sent yet, the follower's check would fail.
                yield { ...c, release: () => (releases++, Buffer.from(c.data.buffer, c.data.byteOffset, c.data.length).fill(0xee), c.release?.()) };
              }
            })(),
          ),
      };
      server.addService(RAFT_SERVICE_DEFINITION, createRaftService(handler));
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e !== null ? reject(e) : resolve(p))),
      );
      const dest = join(d, 'out');
      const digest = createHash('sha256').update(bytes).digest('hex');
      const r = await fetchSnapshot({ selfId: 'f', address: `127.0.0.1:${port}`, target: { index: 1, term: 1, sizeBytes: bytes.length, digest }, destPath: dest, chunkBytes: CHUNK });
      assert.equal(r.hashFailures, 0);
      assert.equal(r.attempts, 1);
      assert.ok((await readFile(dest)).equals(bytes));
      assert.equal(chunks, 25);
      assert.equal(releases, chunks, 'every chunk sent was released');
    } finally {
      server.forceShutdown();
      await rm(d, { recursive: true, force: true });
    }
  });
});

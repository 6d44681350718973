import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { uploadArchive } from '../../../src/client/archive-upload.js';
import { REQUEST_ID_METADATA_KEY } from '../../../src/client/request-ids.js';
import { SnapshotClient } from '../../../src/client/snapshot-client.js';
import { SnapshotInfo, SnapshotServiceService, type RestoreSnapshotRequest, type RestoreSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';

const PIECE_BYTES = 1 << 20;
// PIECES: enough that what loopback TCP, HTTP/2 windows and grpc-js buffer while the node reads nothing (up to 32 MiB seen in CI) stays well under half.
const PIECES = 128;

/**
 * A real SnapshotService on 127.0.0.1:0 whose RestoreSnapshot stops reading
 * after its first piece until `resume()`, then hashes everything and answers
 * with the byte count and SHA-256 it read as the archive's size and digest.
 */
async function startServer(): Promise<{ address: string; firstPiece: Promise<void>; resume: () => void; requestIds: string[]; ends: () => number; close: () => void }> {
  let ends = 0;
  let resume = (): void => undefined;
  let sawFirst = (): void => undefined;
  const firstPiece = new Promise<void>((r) => (sawFirst = r));
  const requestIds: string[] = [];
  const server = new grpc.Server();
  server.addService(SnapshotServiceService, {
    restoreSnapshot(call: grpc.ServerReadableStream<RestoreSnapshotRequest, RestoreSnapshotResponse>, cb: grpc.sendUnaryData<RestoreSnapshotResponse>) {
      requestIds.push(String(call.metadata.get(REQUEST_ID_METADATA_KEY)[0] ?? ''));
      const hash = createHash('sha256');
      let bytes = 0;
      call.on('data', (m: RestoreSnapshotRequest) => {
        hash.update(m.data);
        bytes += m.data.length;
        if (bytes === m.data.length) {
          call.pause();
          resume = () => call.resume();
          sawFirst();
        }
      });
      call.on('end', () => {
        ends++;
      });
      call.on('end', () => cb(null, { index: 1n, archive: SnapshotInfo.fromPartial({ sizeBytes: BigInt(bytes), digest: hash.digest('hex') }) }));
    },
  } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err !== null ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, firstPiece, resume: () => resume(), requestIds, ends: () => ends, close: () => server.forceShutdown() };
}

describe('client: uploadArchive', function () {
  this.timeout(30_000);

  it('pulls pieces only as fast as the node reads them (backpressure), then sends every byte in order and returns the answer', async () => {
    const s = await startServer();
    const client = new SnapshotClient(s.address);
    const whole = createHash('sha256');
    let pulled = 0;
    function* pieces(): Generator<Buffer> {
      for (let i = 0; i < PIECES; i++) {
        const piece = Buffer.alloc(PIECE_BYTES, i);
        whole.update(piece);
        pulled++;
        yield piece;
      }
    }
    try {
      const metadata = new grpc.Metadata();
      metadata.set(REQUEST_ID_METADATA_KEY, '7');
      const done = uploadArchive(client, pieces(), { metadata });
      await s.firstPiece;
      await new Promise((r) => setTimeout(r, 500));
      const pulledWhilePaused = pulled;
      assert.ok(pulledWhilePaused < PIECES / 2, `${pulledWhilePaused} of ${PIECES} pieces pulled while the node read nothing`);
      s.resume();
      const res = await done;
      assert.equal(pulled, PIECES);
      assert.equal(res.archive?.sizeBytes, BigInt(PIECES * PIECE_BYTES));
      assert.equal(res.archive?.digest, whole.digest('hex'));
      assert.deepEqual(s.requestIds, ['7']);
    } finally {
      client.close();
      s.close();
    }
  });

  it('a failing source cancels the call and its error is thrown; beforeEnd can refuse to end the upload', async () => {
    const s = await startServer();
    const client = new SnapshotClient(s.address);
    try {
      async function* broken(): AsyncGenerator<Buffer> {
        yield Buffer.alloc(10);
        throw new Error('disk read failed');
      }
      s.firstPiece.then(() => s.resume(), () => undefined);
      await assert.rejects(uploadArchive(client, broken()), /disk read failed/);
      await assert.rejects(
        uploadArchive(client, [Buffer.alloc(10)], {
          beforeEnd: () => {
            throw new Error('the file changed');
          },
        }),
        /the file changed/,
      );
    } finally {
      client.close();
      s.close();
    }
  });

  it('an async beforeEnd holds the end of the upload until it settles: resolved, the upload ends; rejected, the call is canceled and never ends (the CLI\'s check of the file, run beside the upload)', async () => {
    const s = await startServer();
    const client = new SnapshotClient(s.address);
    try {
      s.firstPiece.then(() => s.resume(), () => undefined);
      let open = (): void => undefined;
      const gate = new Promise<void>((r) => (open = r));
      let holding = (): void => undefined;
      const held = new Promise<void>((r) => (holding = r));
      const done = uploadArchive(client, [Buffer.alloc(1000, 1), Buffer.alloc(1000, 2)], {
        beforeEnd: async () => {
          holding();
          await gate;
        },
      });
      await held;
      // Every piece is written; the server has read them (it answers at the end) but has not seen the end.
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(s.ends(), 0, 'the upload ended while beforeEnd was still running');
      open();
      const res = await done;
      assert.equal(res.archive?.sizeBytes, 2000n);
      assert.equal(s.ends(), 1);

      await assert.rejects(
        uploadArchive(client, [Buffer.alloc(1000, 3)], {
          beforeEnd: async () => {
            await new Promise((r) => setImmediate(r));
            throw new Error('the check failed');
          },
        }),
        /the check failed/,
      );
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(s.ends(), 1, 'a refused upload reached its end');
    } finally {
      client.close();
      s.close();
    }
  });
});

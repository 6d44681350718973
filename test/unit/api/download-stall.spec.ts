/**
 * A GetSnapshot download whose client stops reading (real gRPC over a raw
 * HTTP/2 client that never reads, so its stream window fills): once nothing
 * could be sent for SnapshotApiOptions.downloadStallMs, the server gives the
 * download up and releases the snapshot it pinned (retention may remove it
 * again). Before, the stream waited for ever, pinning its snapshot: a few
 * such downloads between writes kept as many whole-state snapshots on disk.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';

import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import { GetSnapshotRequest, SnapshotServiceService } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { DOWNLOADS_MAX_DEFAULT } from '../../../src/api/snapshot-service.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';
import { unreadCall } from '../../harness/unread-call.js';
import { sleep, until } from '../../harness/until.js';

const STALL_MS = 3_000;

describe('GetSnapshot: a client that stops reading', function () {
  this.timeout(60_000);
  let n: SnapshotNode;

  before(async () => {
    n = await SnapshotNode.start({ downloadStallMs: STALL_MS });
    // 6 MiB of incompressible values: far more than the HTTP/2 windows and the unsent messages a stream holds.
    const kv = n.kvClient();
    for (let i = 0; i < 24; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
    await n.node.snapshotNow();
    await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from('after'), value: Buffer.from('1') }));
    await n.node.snapshotNow();
  });
  after(async () => {
    await n?.close();
  });

  it(`is given up after ${STALL_MS} ms without progress and its snapshot is released`, async () => {
    const session = http2.connect(`http://127.0.0.1:${n.api.port}`);
    session.on('error', () => undefined);
    try {
      // The older of the two kept snapshots, pinned by id: the node holds only the newest open itself, so
      // only the download holds this one.
      const [older, newer] = (await n.snapshots.store.list()).sort((a, b) => (a.id < b.id ? -1 : 1));
      assert.ok(older !== undefined && newer !== undefined, 'two snapshots kept');
      const req = unreadCall(session, SnapshotServiceService.getSnapshot.path, GetSnapshotRequest.encode({ stale: true, id: older.id }).finish());
      // Its first message (sent once the snapshot is open) waits unread in the paused stream; the stall clock
      // starts only once the stream's window is full after it.
      await until('the download to begin', 20_000, () => (req.readableLength > 0 ? true : undefined));
      await assert.rejects(n.snapshots.store.remove(older.id), /is open/, 'the download holds its snapshot');
      await sleep(3 * STALL_MS);
      // Given up: nothing pins it any more (before, the stream still waited for the client, holding it).
      await n.snapshots.store.remove(older.id);
    } finally {
      session.destroy();
    }
  });
});

/** served: 'data' once the unread stream has a message waiting (it is being served), else its grpc-status (a refusal). */
function served(req: http2.ClientHttp2Stream): Promise<'data' | number> {
  let status: number | undefined;
  const note = (h: http2.IncomingHttpHeaders): void => {
    if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
  };
  req.on('response', note);
  req.on('trailers', note);
  return until('the download to be served or refused', 20_000, () => (req.readableLength > 0 ? 'data' : status));
}

describe('GetSnapshot: downloads served at once', function () {
  this.timeout(60_000);
  let n: SnapshotNode;

  before(async () => {
    n = await SnapshotNode.start();
    // 6 MiB of incompressible values: more than a download's unsent messages and HTTP/2 windows hold, so an
    // unread download stays open (and holds its snapshot).
    const kv = n.kvClient();
    for (let i = 0; i < 24; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
  });
  after(async () => {
    await n?.close();
  });

  it(`at most ${DOWNLOADS_MAX_DEFAULT} at once, each pinning a snapshot of its own: more are refused RESOURCE_EXHAUSTED, served again once one ends`, async () => {
    const session = http2.connect(`http://127.0.0.1:${n.api.port}`);
    session.on('error', () => undefined);
    const kv = n.kvClient();
    const held: http2.ClientHttp2Stream[] = [];
    /** download: a write (so the download takes a snapshot of its own), then a fresh download left unread; its outcome. */
    const download = async (i: number): Promise<'data' | number> => {
      await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`w/${i}`), value: Buffer.from('1') }));
      const req = unreadCall(session, SnapshotServiceService.getSnapshot.path, GetSnapshotRequest.encode({ stale: false }).finish());
      held.push(req);
      return served(req);
    };
    try {
      const outcomes: ('data' | number)[] = [];
      for (let i = 0; i < DOWNLOADS_MAX_DEFAULT + 3; i++) outcomes.push(await download(i));
      // Before, every one was served, each holding a whole-state snapshot on disk until its client read it or 60 s passed.
      assert.deepEqual(outcomes, [...Array<'data'>(DOWNLOADS_MAX_DEFAULT).fill('data'), 8, 8, 8], 'downloads beyond the cap are refused RESOURCE_EXHAUSTED (8)');
      const kept = (await n.snapshots.store.list()).length;
      assert.ok(kept <= DOWNLOADS_MAX_DEFAULT + 1, `${kept} snapshots on disk, more than the downloads held and the newest`);
      // One held download ends: a new one is served.
      (held[0] as http2.ClientHttp2Stream).close(http2.constants.NGHTTP2_CANCEL);
      let i = 1000;
      await until('a download to be served again once one ended', 10_000, async () => ((await download(i++)) === 'data' ? true : undefined));
    } finally {
      session.destroy();
    }
  });
});

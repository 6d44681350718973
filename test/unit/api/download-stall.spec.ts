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

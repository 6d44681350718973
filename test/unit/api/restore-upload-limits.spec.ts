/**
 * What a restore upload may hold on the leader (real gRPC): an upload whose
 * client stops sending is given up after SnapshotApiOptions.uploadIdleMs with
 * a clear error, and at most RESTORE_UPLOADS_MAX uploads are received at
 * once (more are refused RESOURCE_EXHAUSTED at once, before their bodies are
 * read). Each free declared-size check was made against the same free space,
 * so uploads received side by side could together fill the disk past its
 * reserve; stalled ones held their temporary files and streams for ever.
 * Nothing is kept or changed, and a whole restore still works afterwards.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';

import { PutRequest, GetRequest, type GetResponse } from '../../../src/gen/snapcoord/v1/kv.js';
import type { GetSnapshotResponse, RestoreSnapshotRequest, RestoreSnapshotResponse, SnapshotServiceClient } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { RESTORE_UPLOADS_MAX } from '../../../src/node/restore-archives.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const enc = new TextEncoder();
const dec = new TextDecoder();
// Long enough that all four uploads reach the leader before the first two are given up, on a loaded machine too.
const IDLE_MS = 3_000;

async function download(client: SnapshotServiceClient): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of client.getSnapshot({ stale: false }) as AsyncIterable<GetSnapshotResponse>) {
    if (m.data !== undefined) parts.push(Buffer.from(m.data));
  }
  return Buffer.concat(parts);
}

/** stalled: a restore that sends `head` and then nothing (the stream left open); resolves with how the server ended it. */
function stalled(client: SnapshotServiceClient, head: Buffer, calls: grpc.ClientWritableStream<RestoreSnapshotRequest>[]): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => {
    const call = client.restoreSnapshot({ deadline: Date.now() + 30_000 }, (e) => resolve(e));
    calls.push(call);
    call.write({ data: head });
  });
}

function upload(client: SnapshotServiceClient, bytes: Buffer): Promise<RestoreSnapshotResponse> {
  return new Promise((resolve, reject) => {
    const call = client.restoreSnapshot((e, r) => (e !== null ? reject(e) : resolve(r)));
    for (let at = 0; at < bytes.length; at += 64 * 1024) call.write({ data: bytes.subarray(at, at + 64 * 1024) });
    call.end();
  });
}

describe('RestoreSnapshot: stalled and concurrent uploads (real gRPC)', function () {
  this.timeout(60_000);
  let n: SnapshotNode;
  let archive: Buffer;

  before(async () => {
    n = await SnapshotNode.start({ uploadIdleMs: IDLE_MS });
    const kv = n.kvClient();
    for (let i = 0; i < 200; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: enc.encode(`k/${i}`), value: enc.encode(`archived ${i}`.padEnd(200, '.')) }));
    archive = await download(n.snapshotClient());
    await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: enc.encode('k/0'), value: enc.encode('after the download') }));
  });
  after(async () => {
    await n?.close();
  });

  it(`uploads beyond ${RESTORE_UPLOADS_MAX} at once are refused at once; stalled ones are given up after the idle time; nothing changes`, async () => {
    const snaps = n.snapshotClient();
    // The uploads directory as the node keeps it (SnapshotManager: <data dir>/snapshots/uploads), temporaries included.
    const uploadsDir = join(n.dir, 'n1', 'snapshots', 'uploads');
    const uploadsBefore = (await readdir(uploadsDir)).sort();
    const applied = n.node.status().applied;
    const head = archive.subarray(0, Math.min(4096, archive.length - 1));
    const calls: grpc.ClientWritableStream<RestoreSnapshotRequest>[] = [];
    const ends = await Promise.all(Array.from({ length: RESTORE_UPLOADS_MAX + 2 }, () => stalled(snaps, head, calls)));
    for (const c of calls) c.end();
    const busy = ends.filter((e) => e?.code === grpc.status.RESOURCE_EXHAUSTED);
    const idle = ends.filter((e) => e?.code === grpc.status.DEADLINE_EXCEEDED && /no bytes/.test(e.details));
    assert.equal(busy.length, 2, ends.map((e) => `${e?.code}: ${e?.details}`).join('\n'));
    for (const e of busy) assert.match(e?.details ?? '', /restore uploads are being received/);
    assert.equal(idle.length, RESTORE_UPLOADS_MAX, ends.map((e) => `${e?.code}: ${e?.details}`).join('\n'));
    for (const e of idle) assert.match(e?.details ?? '', /nothing changed/);
    assert.deepEqual((await readdir(uploadsDir)).sort(), uploadsBefore, 'nothing kept, no temporary left');
    const kv = n.kvClient();
    const got = await unaryCall<GetResponse>((r, cb) => kv.get(r, cb), GetRequest.fromPartial({ key: enc.encode('k/0') }));
    assert.equal(dec.decode(got.kv?.value), 'after the download');
    assert.ok(n.node.status().applied >= applied);

    // The slots are free again: a whole restore goes through.
    const r = await upload(snaps, archive);
    assert.ok(r.index > 0n);
    const back = await unaryCall<GetResponse>((rq, cb) => kv.get(rq, cb), GetRequest.fromPartial({ key: enc.encode('k/0') }));
    assert.match(dec.decode(back.kv?.value), /^archived 0/);
  });
});

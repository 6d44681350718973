/**
 * Idempotent restores: a RestoreSnapshot carrying x-snapcoord-client-id and
 * x-snapcoord-request-id takes effect once; its retry (through a follower,
 * after writes were made) is answered with the first index and does not
 * discard those writes. A restore keeps the cluster's record of request ids.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';

import { KvClient } from '../../../src/client/kv-client.js';
import { CLIENT_ID_METADATA_KEY, REPLAYED_METADATA_KEY, REQUEST_ID_METADATA_KEY } from '../../../src/client/request-ids.js';
import { SnapshotServiceClient, type GetSnapshotResponse, type RestoreSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import type { Node } from '../../../src/node/node.js';
import { RocksCluster } from '../node/rocks-cluster.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

async function download(client: SnapshotServiceClient): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of client.getSnapshot({ stale: false }) as AsyncIterable<GetSnapshotResponse>) {
    if (m.data !== undefined) parts.push(Buffer.from(m.data));
  }
  return Buffer.concat(parts);
}

function upload(client: SnapshotServiceClient, bytes: Buffer, md: grpc.Metadata): Promise<{ res: RestoreSnapshotResponse; replayed: boolean }> {
  return new Promise((resolve, reject) => {
    let res: RestoreSnapshotResponse | undefined;
    const call = client.restoreSnapshot(md, (e, r) => {
      if (e !== null) reject(e);
      else res = r;
    });
    call.on('status', (s: grpc.StatusObject) => {
      if (res !== undefined) resolve({ res, replayed: s.metadata.get(REPLAYED_METADATA_KEY)[0] === '1' });
    });
    for (let at = 0; at < bytes.length; at += 64 * 1024) call.write({ data: bytes.subarray(at, at + 64 * 1024) });
    call.end();
  });
}

function restoreId(clientId: string, requestId: number): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CLIENT_ID_METADATA_KEY, clientId);
  md.set(REQUEST_ID_METADATA_KEY, String(requestId));
  return md;
}

describe('idempotent RestoreSnapshot', function () {
  this.timeout(90_000);
  let c: RocksCluster;
  let leader: Node;
  const clients: { close(): void }[] = [];

  before(async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000 });
    leader = await c.waitForLeader();
  });
  after(async () => {
    for (const x of clients) x.close();
    await c.close();
  });

  it('a retried restore with the same request id takes effect once and keeps the writes made since', async () => {
    const leaderAddr = c.members.find((m) => m.node === leader)?.address ?? '';
    const followerAddr = c.members.find((m) => m.node !== leader)?.address ?? '';
    const snapLeader = new SnapshotServiceClient(leaderAddr, grpc.credentials.createInsecure());
    const snapFollower = new SnapshotServiceClient(followerAddr, grpc.credentials.createInsecure());
    const kv = new KvClient(leaderAddr);
    clients.push(snapLeader, snapFollower, kv);

    await kv.put({ key: enc.encode('r/a'), value: enc.encode('archived') });
    await kv.put({ key: enc.encode('r/s'), value: enc.encode('1'), clientId: 'kv-writer', requestId: 1n });
    const archive = await download(snapLeader);
    await kv.put({ key: enc.encode('r/a'), value: enc.encode('before-restore') });

    const first = await upload(snapLeader, archive, restoreId('restorer', 1));
    assert.equal(first.replayed, false);
    assert.equal(dec.decode((await kv.get({ key: enc.encode('r/a') })).kv?.value), 'archived');

    // Writes after the restore, then a retry of the same restore (say its answer was lost), through a follower.
    await kv.put({ key: enc.encode('r/after'), value: enc.encode('kept') });
    const retry = await upload(snapFollower, archive, restoreId('restorer', 1));
    assert.equal(retry.replayed, true);
    assert.equal(retry.res.index, first.res.index);
    assert.equal(dec.decode((await kv.get({ key: enc.encode('r/after') })).kv?.value), 'kept', 'the retry did not restore again');

    // The restore kept the cluster's request ids: the Put made before it is still known.
    const again = await kv.put({ key: enc.encode('r/s'), value: enc.encode('1'), clientId: 'kv-writer', requestId: 1n });
    assert.equal(again.replayed, true);

    // A new request id restores again.
    const second = await upload(snapLeader, archive, restoreId('restorer', 2));
    assert.equal(second.replayed, false);
    assert.ok(second.res.index > first.res.index);
    assert.equal((await kv.get({ key: enc.encode('r/after') })).found, false);
  });

  it('refuses a malformed request id before reading the archive', async () => {
    const leaderAddr = c.members.find((m) => m.node === leader)?.address ?? '';
    const snap = new SnapshotServiceClient(leaderAddr, grpc.credentials.createInsecure());
    clients.push(snap);
    const md = new grpc.Metadata();
    md.set(CLIENT_ID_METADATA_KEY, 'restorer');
    md.set(REQUEST_ID_METADATA_KEY, 'soon');
    await assert.rejects(upload(snap, Buffer.from('x'), md), (err: unknown) => (err as { code?: number }).code === grpc.status.INVALID_ARGUMENT);
  });
});

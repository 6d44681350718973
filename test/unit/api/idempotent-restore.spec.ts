/**
 * Idempotent restores: a RestoreSnapshot carrying x-snapcoord-client-id and
 * x-snapcoord-request-id takes effect once; its retry (through a follower,
 * after writes were made) is answered with the first index and does not
 * discard those writes. A restore keeps the cluster's record of request ids.
 * A restore whose upload its client canceled changes nothing.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
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

/** uploadThenCancel writes every byte of `bytes`, then cancels the call instead of ending it; resolves with the call's error. */
function uploadThenCancel(client: SnapshotServiceClient, bytes: Buffer): Promise<grpc.ServiceError | null> {
  return new Promise((resolve) => {
    const call = client.restoreSnapshot((e) => resolve(e));
    for (let at = 0; at < bytes.length; at += 64 * 1024) call.write({ data: bytes.subarray(at, at + 64 * 1024) });
    // Once grpc-js has put the bytes on the wire (its write callbacks), not before: the node must have them all.
    call.write({ data: Buffer.alloc(0) }, () => call.cancel());
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

  /** connect: snapshot clients of the leader and of a follower, and a KV client of the leader (closed after all). */
  const connect = (): { snapLeader: SnapshotServiceClient; snapFollower: SnapshotServiceClient; kv: KvClient } => {
    const leaderAddr = c.members.find((m) => m.node === leader)?.address ?? '';
    const followerAddr = c.members.find((m) => m.node !== leader)?.address ?? '';
    const snapLeader = new SnapshotServiceClient(leaderAddr, grpc.credentials.createInsecure());
    const snapFollower = new SnapshotServiceClient(followerAddr, grpc.credentials.createInsecure());
    const kv = new KvClient(leaderAddr);
    clients.push(snapLeader, snapFollower, kv);
    return { snapLeader, snapFollower, kv };
  };

  it('a retried restore with the same request id takes effect once and keeps the writes made since', async () => {
    const { snapLeader, snapFollower, kv } = connect();

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

  // A RestoreSnapshot canceled by its client changes nothing, even when every byte of a valid archive was sent:
  // grpc-js hands the server the end of the client stream, then the cancel (Node's HTTP/2 ends a reset stream's
  // readable side), so the node checks the cancel before it proposes (Node.restore's signal). The CLI relies on it:
  // it uploads while it checks the file and cancels the upload of a file that fails its check, or on Ctrl-C (issue 15).
  it('after all the bytes of a valid archive, at the leader and through a follower: refused, nothing restored', async () => {
    const { snapLeader, snapFollower, kv } = connect();

    await kv.put({ key: enc.encode('c/a'), value: enc.encode('archived') });
    const archive = await download(snapLeader);
    await kv.put({ key: enc.encode('c/a'), value: enc.encode('after') });

    // What the leader made of each upload (the service calls node.restore; the client sees only its cancel).
    const outcomes: Promise<unknown>[] = [];
    const restore = leader.restore.bind(leader);
    leader.restore = (...a: Parameters<Node['restore']>) => {
      const p = restore(...a);
      outcomes.push(p.then(() => 'restored', (e: unknown) => (e as Error).message));
      return p;
    };
    try {
      for (const [via, client] of [['leader', snapLeader], ['follower', snapFollower]] as const) {
        const err = await uploadThenCancel(client, archive);
        assert.equal(err?.code, grpc.status.CANCELLED, via);
        // At the leader the upload reached node.restore (every byte was on the wire before the cancel); through a
        // follower, its forwarded call may be canceled before the leader's handler runs.
        for (let i = 0; i < 200 && outcomes.length === 0 && via === 'leader'; i++) await new Promise((r) => setTimeout(r, 20));
        if (via === 'leader') assert.equal(outcomes.length, 1, `${via}: the leader saw no upload`);
        // Refused either way: the cancel cut the body short ("Premature close"), or came after its end (the signal).
        for (const outcome of (await Promise.all(outcomes.splice(0))).map(String)) {
          assert.match(outcome, /canceled by its client; the restore was not proposed|Premature close/, `${via}: ${outcome}`);
        }
        assert.equal(dec.decode((await kv.get({ key: enc.encode('c/a') })).kv?.value), 'after', via);
      }
    } finally {
      leader.restore = restore;
    }
  });

  it('Node.restore: an upload that ended whole but whose call was canceled meanwhile is refused before it is proposed', async () => {
    const { snapLeader, kv } = connect();
    await kv.put({ key: enc.encode('c/b'), value: enc.encode('archived') });
    const archive = await download(snapLeader);
    await kv.put({ key: enc.encode('c/b'), value: enc.encode('after') });
    // The body ends whole; the cancel arrives while the node stores it (as the service's 'cancelled' after the end).
    const canceled = new AbortController();
    const body = Readable.from(
      (async function* () {
        yield archive;
        canceled.abort();
      })(),
    );
    await assert.rejects(leader.restore(body, undefined, canceled.signal), /canceled by its client; the restore was not proposed/);
    assert.equal(dec.decode((await kv.get({ key: enc.encode('c/b') })).kv?.value), 'after');
    // Not canceled, the same bytes restore.
    const r = await leader.restore(Readable.from([archive]), undefined, new AbortController().signal);
    assert.ok(r.index > 0);
    assert.equal(dec.decode((await kv.get({ key: enc.encode('c/b') })).kv?.value), 'archived');
  });
});

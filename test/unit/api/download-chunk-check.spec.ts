/**
 * GetSnapshot (what Nomad's `GET /v1/operator/snapshot` and our client use)
 * checks each chunk of the archive it sends against the chunk hashes
 * recorded when the archive was written, hashing each byte once as it is
 * read: a byte damaged on the node's disk since fails the download at that
 * chunk with DATA_LOSS (the chunks before it sent, nothing after), and the
 * archive is moved to quarantine, so the next download gets a snapshot built
 * anew. Before, the damaged archive was streamed whole and only the client's
 * digest check caught it (review19). A real node over gRPC (SnapshotNode).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';

import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import type { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { CHUNK_HASH_BYTES } from '../../../src/snapshot/store.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

/** download: a pinned (or, id '', fresh) download of [offset, offset+length): its info, the bytes received and how it ended. */
async function download(n: SnapshotNode, id: string, offset = 0, length = 0): Promise<{ id: string; digest: string; bytes: Buffer; err: (Error & { code?: number }) | null }> {
  const parts: Buffer[] = [];
  let info = { id: '', digest: '' };
  try {
    for await (const m of n.snapshotClient().getSnapshot({ stale: true, ...(id !== '' ? { id } : {}), offset: BigInt(offset), length: BigInt(length) }) as AsyncIterable<GetSnapshotResponse>) {
      if (m.info !== undefined) info = { id: m.info.id, digest: m.info.digest };
      if (m.data !== undefined) parts.push(Buffer.from(m.data));
    }
  } catch (err) {
    return { ...info, bytes: Buffer.concat(parts), err: err as Error & { code?: number } };
  }
  return { ...info, bytes: Buffer.concat(parts), err: null };
}

describe('GetSnapshot checks each chunk against its recorded hash', function () {
  this.timeout(60_000);
  let n: SnapshotNode;

  before(async () => {
    n = await SnapshotNode.start();
    // ~5 MiB of incompressible values: an archive of 5+ chunks.
    const kv = n.kvClient();
    for (let i = 0; i < 20; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
  });
  after(async () => {
    await n?.close();
  });

  it('an archive damaged on disk fails the download at the damaged chunk with DATA_LOSS, is quarantined, and the next download is good', async () => {
    const meta = await n.node.snapshotNow();
    const good = await download(n, '');
    assert.equal(good.err, null);
    const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest);
    assert.ok(stored !== undefined && good.id === stored.id);
    const original = await readFile(stored.path);
    assert.ok(original.length > 4 * CHUNK_HASH_BYTES, `archive of ${original.length} bytes`);
    assert.ok(good.bytes.equals(original));

    // One byte of chunk 2 changes on the disk.
    const at = 2 * CHUNK_HASH_BYTES + 1000;
    const { open } = await import('node:fs/promises');
    const h = await open(stored.path, 'r+');
    await h.write(Buffer.from([(original[at] ?? 0) ^ 0x40]), 0, 1, at);
    await h.close();

    // A range that starts inside chunk 1 and spans the damage: the same.
    const ranged = await download(n, stored.id, CHUNK_HASH_BYTES + 77, 2 * CHUNK_HASH_BYTES);
    assert.equal(ranged.err?.code, grpc.status.DATA_LOSS, String(ranged.err));
    assert.ok(ranged.bytes.equals(original.subarray(CHUNK_HASH_BYTES + 77, 2 * CHUNK_HASH_BYTES)), 'only the checked bytes before the damaged chunk were sent');
    assert.match(ranged.err?.message ?? '', /chunk 2/);
    assert.equal((await n.snapshots.store.list()).some((s) => s.id === stored.id), false, 'the damaged archive is out of the store (quarantined)');

    const again = await download(n, '');
    assert.equal(again.err, null, String(again.err));
    assert.notEqual(again.id, stored.id, 'a snapshot built anew');
    assert.equal(createHash('sha256').update(again.bytes).digest('hex'), again.digest);
  });

  it('a whole download of a damaged newest archive stops at the bad chunk', async () => {
    const meta = await n.node.snapshotNow();
    const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest);
    assert.ok(stored !== undefined);
    const original = await readFile(stored.path);
    const at = 3 * CHUNK_HASH_BYTES + 5;
    const { open } = await import('node:fs/promises');
    const h = await open(stored.path, 'r+');
    await h.write(Buffer.from([(original[at] ?? 0) ^ 0x01]), 0, 1, at);
    await h.close();
    const r = await download(n, '');
    assert.equal(r.err?.code, grpc.status.DATA_LOSS, String(r.err));
    assert.ok(r.bytes.length <= 3 * CHUNK_HASH_BYTES, `${r.bytes.length} bytes sent, none of the damaged chunk`);
    assert.ok(r.bytes.equals(original.subarray(0, r.bytes.length)));
  });
});

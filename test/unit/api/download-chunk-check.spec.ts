/**
 * GetSnapshot (what Nomad's `GET /v1/operator/snapshot` and our client use)
 * and a stored archive damaged on the node's disk. An archive this process
 * has not hashed itself (found on the disk at start and not yet scrubbed, or
 * one a read found damaged) is checked chunk by chunk as it is sent, each
 * byte hashed once as read: damage fails the download at that chunk with
 * DATA_LOSS (the chunks before it sent, nothing after), and the archive is
 * moved to quarantine, so the next download gets a snapshot built anew
 * (c5f0701; before, only the client's digest check caught it, review19). An
 * archive this process wrote (hashed by the sink as written) or verified
 * since it started is served on its recorded hashes (issue 15: "opening a
 * stored archive trusts the recorded hashes after a cheap check"): damage
 * after that is caught by the client's digest check (every download carries
 * the archive's SHA-256) and by the scrub, which quarantines it. A real node
 * over gRPC (SnapshotNode).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
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

/** flipByte changes the byte at `at` of the file at `path` (whose bytes were `original`) on the disk. */
async function flipByte(path: string, original: Buffer, at: number, mask: number): Promise<void> {
  const h = await open(path, 'r+');
  await h.write(Buffer.from([(original[at] ?? 0) ^ mask]), 0, 1, at);
  await h.close();
}

describe('GetSnapshot and a stored archive damaged on disk', function () {
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

  it('an archive this node wrote, damaged on disk since, is served on its recorded hashes: the digest check fails it, the scrub quarantines it, and the next download is good', async () => {
    const meta = await n.node.snapshotNow();
    const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest);
    assert.ok(stored !== undefined);
    const original = await readFile(stored.path);
    await flipByte(stored.path, original, 2 * CHUNK_HASH_BYTES + 1000, 0x40);

    const served = await download(n, '');
    assert.equal(served.err, null, 'the node serves what it hashed itself without hashing it again');
    assert.equal(served.id, stored.id);
    assert.equal(served.digest, stored.archiveSha256);
    assert.notEqual(createHash('sha256').update(served.bytes).digest('hex'), served.digest, "the client's digest check fails the download");

    const scrub = await n.snapshots.scrub();
    assert.deepEqual(scrub.store.quarantined.map((q) => q.id), [stored.id]);
    assert.match(scrub.store.quarantined[0]?.reason ?? '', /chunk 2|SHA-256/);
    assert.equal((await n.snapshots.store.list()).some((s) => s.id === stored.id), false, 'the damaged archive is out of the store (quarantined)');
    const again = await download(n, '');
    assert.equal(again.err, null, String(again.err));
    assert.notEqual(again.id, stored.id, 'a snapshot built anew');
    assert.equal(createHash('sha256').update(again.bytes).digest('hex'), again.digest);
  });

  it('an archive not hashed by this process fails the download at the damaged chunk with DATA_LOSS, is quarantined, and the next download is good', async () => {
    const meta = await n.node.snapshotNow();
    const good = await download(n, '');
    assert.equal(good.err, null);
    const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest);
    assert.ok(stored !== undefined && good.id === stored.id);
    const original = await readFile(stored.path);
    assert.ok(original.length > 4 * CHUNK_HASH_BYTES, `archive of ${original.length} bytes`);
    assert.ok(good.bytes.equals(original));

    // One byte of chunk 2 changes on the disk; a read that hashes it whole (verify) ends this process's trust in it.
    await flipByte(stored.path, original, 2 * CHUNK_HASH_BYTES + 1000, 0x40);
    await assert.rejects(n.snapshots.store.verify(stored.id), /chunk 2|SHA-256/);

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

  it('a whole download of a damaged newest archive not hashed by this process stops at the bad chunk', async () => {
    const meta = await n.node.snapshotNow();
    const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest);
    assert.ok(stored !== undefined);
    const original = await readFile(stored.path);
    await flipByte(stored.path, original, 3 * CHUNK_HASH_BYTES + 5, 0x01);
    await assert.rejects(n.snapshots.store.verify(stored.id));
    const r = await download(n, '');
    assert.equal(r.err?.code, grpc.status.DATA_LOSS, String(r.err));
    assert.ok(r.bytes.length <= 3 * CHUNK_HASH_BYTES, `${r.bytes.length} bytes sent, none of the damaged chunk`);
    assert.ok(r.bytes.equals(original.subarray(0, r.bytes.length)));
  });
});

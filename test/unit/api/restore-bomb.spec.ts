/**
 * A decompression bomb through RestoreSnapshot (issue 14, "hostile but
 * authorised inputs"): a ~1 MB gzip whose tar declares a 1 GiB state.bin of
 * zeros, with valid hashes. The upload is validated while it streams in
 * (commit 010ae86), so it is refused at its first record (a record of zeros
 * has an empty key), the message naming the record's offset, long before the
 * 1 GiB could be inflated; writes go on while it is being refused, and
 * nothing is kept or proposed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import type { RestoreSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { metaJson, sha256, tarGz } from '../snapshot/helpers.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const GIB = 1024 * 1024 * 1024;
const enc = new TextEncoder();

async function bomb(): Promise<Buffer> {
  const meta = Buffer.from(JSON.stringify(metaJson(GIB, 1)));
  const zeros = createHash('sha256');
  const mib = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < 1024; i++) zeros.update(mib);
  const sums = Buffer.from(`${sha256(meta)}  meta.json\n${zeros.digest('hex')}  state.bin\n`);
  return tarGz(
    [
      { header: { name: 'meta.json' }, body: meta },
      { header: { name: 'state.bin' }, zeroBytes: GIB },
      { header: { name: 'SHA256SUMS' }, body: sums },
    ],
    { level: 9 },
  );
}

describe('RestoreSnapshot: a 1 MB gzip declaring 1 GiB of zeros', function () {
  this.timeout(180_000);
  let n: SnapshotNode;
  let archive: Buffer;

  before(async () => {
    archive = await bomb();
    n = await SnapshotNode.start();
  });
  after(async () => {
    await n?.close();
  });

  it('is refused at its first record, writes go on meanwhile, nothing is kept or proposed', async () => {
    assert.ok(archive.length < 2 * 1024 * 1024, `the bomb is ${archive.length} bytes`);
    const kv = n.kvClient();
    const snaps = n.snapshotClient();
    let uploading = true;
    let writesDuring = 0;
    let writesTotal = 0;
    let writerError: unknown = null;
    const writer = (async () => {
      for (let i = 0; uploading && i < 100_000; i++) {
        await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: enc.encode(`w/${i}`), value: enc.encode('x') }));
        writesTotal++;
        if (uploading) writesDuring++;
      }
    })().catch((err: unknown) => {
      writerError = err;
    });
    const upload = new Promise<RestoreSnapshotResponse>((resolve, reject) => {
      const call = snaps.restoreSnapshot((e, r) => (e !== null ? reject(e) : resolve(r)));
      for (let at = 0; at < archive.length; at += 64 * 1024) call.write({ data: archive.subarray(at, at + 64 * 1024) });
      call.end();
    }).then(
      () => null,
      (err: unknown) => err as grpc.ServiceError,
    );
    // Let the writer get going, so the refusal has to come while writes are in flight.
    for (let i = 0; i < 2000 && writesDuring < 3 && writerError === null; i++) await new Promise((r) => setTimeout(r, 5));
    const refusal = await upload;
    uploading = false;
    await writer;
    assert.equal(writerError, null);
    assert.ok(refusal !== null, 'the bomb was accepted');
    assert.equal(refusal.code, grpc.status.INVALID_ARGUMENT, refusal.message);
    assert.match(refusal.details, /refused, nothing changed/);
    assert.match(refusal.details, /empty key/);
    assert.ok(writesDuring >= 3, `${writesDuring} writes completed while the upload was refused`);
    // No restore happened: every write is still there.
    const kept = await n.node.range({ prefix: enc.encode('w/'), limit: 100_000 }, true);
    assert.equal(kept.kvs.length, writesTotal);
    const put = await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: enc.encode('after'), value: enc.encode('ok') }));
    assert.ok(put !== undefined);
  });
});

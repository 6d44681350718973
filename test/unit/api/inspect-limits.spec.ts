/**
 * InspectSnapshot reads, gunzips and checks a whole archive: a node serves at
 * most INSPECTIONS_AT_ONCE_MAX at once and refuses more RESOURCE_EXHAUSTED,
 * so a key with snapshots.read (metadata only) cannot make it read its
 * archives as many times over at once as its calls allow. Real node, RocksDB
 * and gRPC (SnapshotNode).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';

import { INSPECTIONS_AT_ONCE_MAX } from '../../../src/api/snapshot-service.js';
import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

const CALLS = INSPECTIONS_AT_ONCE_MAX + 6;

describe('InspectSnapshot: inspections served at once', function () {
  this.timeout(60_000);
  let n: SnapshotNode;
  let id: string;

  before(async () => {
    n = await SnapshotNode.start();
    // 6 MiB of incompressible values: one inspection takes a while (it reads, gunzips and hashes all of it).
    const kv = n.kvClient();
    for (let i = 0; i < 24; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
    await n.node.snapshotNow();
    const [kept] = await n.snapshots.store.list();
    assert.ok(kept !== undefined);
    id = kept.id;
  });
  after(async () => {
    await n?.close();
  });

  it(`${CALLS} at once: at most ${INSPECTIONS_AT_ONCE_MAX} run, the rest are refused RESOURCE_EXHAUSTED; each served one verifies the archive`, async () => {
    const snap = n.snapshotClient();
    const results = await Promise.all(
      Array.from({ length: CALLS }, () =>
        unaryCall<{ ok: boolean }>((r, cb) => snap.inspectSnapshot(r, cb), { id }).then(
          (r) => r,
          (e: grpc.ServiceError) => e,
        ),
      ),
    );
    const refused = results.filter((r): r is grpc.ServiceError => r instanceof Error);
    const served = results.filter((r): r is { ok: boolean } => !(r instanceof Error));
    // Before, all of them read the archive at once and none was refused.
    assert.ok(refused.length > 0, `${served.length} of ${CALLS} inspections served at once, none refused`);
    for (const e of refused) {
      assert.equal(e.code, 8, e.message);
      assert.match(e.details, /being inspected here already/);
    }
    assert.ok(served.length >= INSPECTIONS_AT_ONCE_MAX);
    for (const s of served) assert.equal(s.ok, true);
    // Once they ended, one is served again.
    assert.equal((await unaryCall<{ ok: boolean }>((r, cb) => snap.inspectSnapshot(r, cb), { id })).ok, true);
  });
});

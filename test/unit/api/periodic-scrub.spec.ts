/**
 * The periodic scrub on a real node over gRPC (SnapshotNode, the real clock): an archive this node wrote (served
 * on its recorded hashes: GetSnapshot and the exports hash nothing) that rots on the disk afterwards is found by
 * the next scheduled run (--snapshot-scrub-interval), moved to quarantine and replaced by a snapshot built anew:
 * every download after it is good, and /metrics counts the run and the damage. Before, such an archive was only
 * caught by a reader's digest check, and served again and again until a restart's scrub.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';

import { PutRequest } from '../../../src/gen/snapcoord/v1/kv.js';
import type { GetSnapshotResponse } from '../../../src/gen/snapcoord/v1/snapshot.js';
import { NodeMetrics } from '../../../src/node/metrics.js';
import { CHUNK_HASH_BYTES } from '../../../src/snapshot/store.js';
import { until } from '../../harness/until.js';
import { SnapshotNode, unaryCall } from './snapshot-node.js';

async function download(n: SnapshotNode): Promise<{ id: string; digest: string; bytes: Buffer }> {
  const parts: Buffer[] = [];
  let info = { id: '', digest: '' };
  for await (const m of n.snapshotClient().getSnapshot({ stale: true }) as AsyncIterable<GetSnapshotResponse>) {
    if (m.info !== undefined) info = { id: m.info.id, digest: m.info.digest };
    if (m.data !== undefined) parts.push(Buffer.from(m.data));
  }
  return { ...info, bytes: Buffer.concat(parts) };
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('the periodic scrub on a real node', function () {
  this.timeout(60_000);

  it('a byte flipped in a trusted archive after it was written: the next run quarantines it, the node builds another, nothing served after carries the flip, /metrics counts it', async () => {
    let n: SnapshotNode | null = null;
    // The metrics read the node's status, which exists once the node has started.
    const ref: { n: SnapshotNode | null } = { n: null };
    const metrics = new NodeMetrics(() => ref.n!.node.status(), false);
    try {
      n = await SnapshotNode.start({ policy: { scrubIntervalMs: 1_000, scrubBytesPerSec: 0 }, metrics });
      ref.n = n;
      const kv = n.kvClient();
      for (let i = 0; i < 16; i++) await unaryCall((r, cb) => kv.put(r, cb), PutRequest.fromPartial({ key: Buffer.from(`big/${i}`), value: randomBytes(256 * 1024) }));
      const meta = await n.node.snapshotNow();
      const stored = (await n.snapshots.store.list()).find((s) => s.archiveSha256 === meta.digest)!;
      const good = await readFile(stored.path);
      const runsBefore = n.snapshots.scrubStats.runs;
      const at = 2 * CHUNK_HASH_BYTES + 100;
      const fh = await open(stored.path, 'r+');
      await fh.write(Buffer.from([(good[at] ?? 0) ^ 0x04]), 0, 1, at);
      await fh.close();

      const snaps = n.snapshots;
      await until('the periodic scrub to find it', 20_000, () => (snaps.scrubStats.damaged >= 1 ? true : undefined));
      assert.ok(n.snapshots.scrubStats.runs > runsBefore);
      assert.equal(n.snapshots.scrubStats.last?.kind, 'periodic');
      assert.equal((await n.snapshots.store.list()).some((s) => s.id === stored.id), false, 'out of the store');
      assert.ok((await n.snapshots.store.quarantined()).names.some((q) => q.startsWith(`${stored.id}-`)), 'in quarantine');

      const after = await download(n);
      assert.notEqual(after.id, stored.id, 'a snapshot built anew is served');
      assert.equal(sha256(after.bytes), after.digest, 'whole: what was served is what its digest names');
      // `cluster status` reads it from the node's status (StatusResponse.snapshot_scrub).
      const scrub = n.node.status().snapshotScrub;
      assert.equal(scrub?.intervalMs, 1_000);
      assert.equal(scrub?.damaged, 1);
      assert.ok((scrub?.runs ?? 0) >= 2 && scrub?.lastAgoMs !== null, JSON.stringify(scrub));
      const text = await metrics.text();
      assert.match(text, /snapcoord_snapshot_scrub_runs_total\{kind="periodic"\} [1-9]/);
      assert.match(text, /snapcoord_snapshot_scrub_runs_total\{kind="boot"\} 1\b/, 'the boot scrub, which ends while the node starts, is counted too');
      assert.match(text, /snapcoord_snapshot_scrub_damaged_total 1\b/);
      assert.match(text, /snapcoord_snapshot_scrub_bytes_total [1-9]/);
    } finally {
      await n?.close();
    }
  });
});

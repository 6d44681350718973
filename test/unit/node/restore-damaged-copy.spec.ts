/**
 * A restore's archive that this node's own disk changed after it was staged
 * (bit rot) fails its install here alone: the node must not take that for
 * refused content (a restore skipped on every node), or it skips a restore
 * every other node applied and its state diverges (simulator seed 41406). It
 * re-hashes its copy, sets it aside (quarantine) and fetches the archive
 * again from a holder. Real nodes on RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, sep } from 'node:path';

import { SnapshotManager } from '../../../src/node/snapshots.js';
import type { StoredSnapshot } from '../../../src/snapshot/index.js';
import { RocksCluster } from './rocks-cluster.js';
import { saveArchive } from './save-archive.js';
import { until } from '../../harness/until.js';
import { flipByte } from '../../harness/flip-byte.js';

const enc = new TextEncoder();

describe('a restore archive damaged on one node\'s disk (simulator seed 41406)', function () {
  this.timeout(90_000);
  let c: RocksCluster | undefined;
  const originalInstallUpload = SnapshotManager.prototype.installUpload;

  afterEach(async () => {
    SnapshotManager.prototype.installUpload = originalInstallUpload;
    await c?.close();
    c = undefined;
  });

  it('is fetched again from a holder and the restore applied there too, never skipped: equal state on every node', async () => {
    c = await RocksCluster.start(3, { snapshotEntries: 1_000_000, trailingEntries: 0 });
    const cluster = c;
    const leader = await cluster.waitForLeader();
    for (let i = 0; i < 200; i++) await leader.propose({ op: 'put', key: enc.encode(`k/${String(i).padStart(4, '0')}`), value: enc.encode(`v${i}-${'x'.repeat(i % 40)}`) });
    const file = await saveArchive(cluster, leader);
    await leader.propose({ op: 'put', key: enc.encode('k/after'), value: enc.encode('gone after the restore') });
    const f = cluster.members.find((m) => m.node !== leader)?.id as string;

    // f's staged copy has one byte flipped just before its first install reads it (its recorded hashes say otherwise).
    let flipped = 0;
    SnapshotManager.prototype.installUpload = async function (this: SnapshotManager, s: StoredSnapshot, ...rest) {
      if (flipped === 0 && this.store.dir.includes(`${sep}${f}${sep}`)) {
        flipped++;
        await flipByte(s.path);
      }
      return originalInstallUpload.call(this, s, ...rest);
    };

    const r = await leader.restore(createReadStream(file));
    const fn = cluster.node(f);
    await until(`${f} to apply the restore`, 30_000, () => (fn.status().applied >= r.index ? true : undefined));
    assert.equal(flipped, 1, 'the damaged copy was installed from once');
    assert.equal(fn.status().restoreFailure, null, 'the restore was not skipped');
    assert.equal(await fn.get(enc.encode('k/after')), undefined, 'the restored state is live');
    const digests = await Promise.all(cluster.members.map((m) => m.storage?.stateDigest()));
    assert.deepEqual(new Set(digests).size, 1, 'every node holds the same state');
    // The damaged copy is kept aside for an operator, not deleted.
    const uploads = join(cluster.dir, f, 'snapshots', 'uploads', 'quarantine');
    assert.equal((await readdir(uploads)).length, 1);
  });
});

/**
 * A snapshot offered to a follower stays on the leader's disk until the
 * follower has pulled it (issue 14: the liveness bug behind the install-guard
 * spec's failures). Followers pull snapshots; between the offer and the first
 * fetch stream (or two streams of a resumed fetch) nothing held the archive
 * open, so a leader that took `retain` newer snapshots in that time removed
 * it: the fetch failed with NOT_FOUND, the leader offered its newest, and a
 * follower slower to start than the leader is to snapshot never caught up.
 * Real nodes on RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { sep } from 'node:path';

import type { Node } from '../../../src/node/node.js';
import { SnapshotManager } from '../../../src/node/snapshots.js';
import type { SnapshotMeta } from '../../../src/raft/types.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('node: an offered snapshot is kept until the follower has pulled it', function () {
  this.timeout(180_000);
  let c: RocksCluster;
  const originalFetch = SnapshotManager.prototype.fetch;

  afterEach(async () => {
    SnapshotManager.prototype.fetch = originalFetch;
    await c?.close();
  });

  it('a follower that begins its fetch only after the leader took several newer snapshots (retain 2) still gets the one it was offered', async () => {
    // Elections after 600 ms of silence: three nodes share one event loop, and a leader change would change the subject.
    c = await RocksCluster.start(3, { snapshotEntries: 100, trailingEntries: 10, retain: 2 }, { electionTimeoutTicks: 60 });
    const leader = await c.waitForLeader();
    const f = c.members.find((m) => m.node !== leader)?.id as string;
    await c.stop(f);
    for (let i = 0; i < 600; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => leader.propose({ op: 'put', key: enc.encode(`a/${i + j}`), value: enc.encode('x'.repeat(100)) })));
    }
    await until('the leader to compact past the stopped follower', 30_000, () => (leader.status().firstIndex > 50 ? true : undefined));

    // Steady writes, so the leader keeps taking snapshots.
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        await leader.propose({ op: 'put', key: enc.encode(`w/${i}`), value: enc.encode(String(i)) }).catch(() => sleep(10));
      }
    })();
    // f's fetches begin only once the leader holds three snapshots newer than the offered one (at most 60 s).
    const offered: number[] = [];
    const newerWhenFetched: number[] = [];
    SnapshotManager.prototype.fetch = async function (this: SnapshotManager, selfId: string, address: string, meta: SnapshotMeta, signal?: AbortSignal) {
      if (this.store.dir.includes(`${sep}${f}${sep}`)) {
        offered.push(meta.index);
        const createdAtOffer = leader.snapshotStats.created;
        await until('the leader to take three newer snapshots', 60_000, () => (leader.snapshotStats.created >= createdAtOffer + 3 ? true : undefined));
        newerWhenFetched.push(leader.snapshotStats.created - createdAtOffer);
      }
      return originalFetch.call(this, selfId, address, meta, signal);
    };
    let fn: Node;
    try {
      await c.restart(f);
      fn = c.node(f);
      await until(`${f} to install a snapshot`, 90_000, () => (fn.snapshotStats.installed > 0 ? true : undefined)).catch((err: Error) => {
        throw new Error(`${err.message}; offered ${JSON.stringify(offered)}, fetch failures ${fn.snapshotStats.fetchFailures}`);
      });
    } finally {
      stop = true;
      await writer;
    }
    assert.equal(fn.snapshotStats.fetchFailures, 0, `no fetch failed (offered ${JSON.stringify(offered)})`);
    assert.equal(offered.length, 1, 'one offer, fetched once');
    assert.ok((newerWhenFetched[0] ?? 0) >= 3, 'the leader had taken three newer snapshots (retain 2) before the fetch began');
    await until(`${f} to catch up`, 60_000, () => (fn.status().applied >= leader.status().commit ? true : undefined));
    assert.equal(await c.member(f).storage?.stateDigest(), await c.member(leader.id).storage?.stateDigest());
  });
});

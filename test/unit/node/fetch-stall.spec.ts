/**
 * A snapshot fetch from the leader that receives nothing for a long time is
 * given up and offered again (node.ts checkFetchStall). Whatever holds a fetch
 * (a stream that never delivers, a write that never returns), the follower
 * must not wait on it for ever: before this, a fetch from the live leader was
 * bounded only by the stream's own idle timer, which a stuck write or a stuck
 * open never reaches, and the core ignores every new offer while one install
 * is under way. Real nodes on RocksDB and gRPC (RocksCluster).
 */
import assert from 'node:assert/strict';
import { sep } from 'node:path';

import { SnapshotManager } from '../../../src/node/snapshots.js';
import type { SnapshotMeta } from '../../../src/raft/types.js';
import { RocksCluster } from './rocks-cluster.js';
import { until } from '../../harness/until.js';

const enc = new TextEncoder();

describe('node: a stalled snapshot fetch from the leader is given up and offered again', function () {
  this.timeout(180_000);
  let c: RocksCluster;
  const originalFetch = SnapshotManager.prototype.fetch;

  afterEach(async function () {
    SnapshotManager.prototype.fetch = originalFetch;
    if (this.currentTest?.state === 'failed' && c !== undefined) {
      for (const m of c.members) console.error(`--- ${m.id}'s last log lines:\n${c.recentLog(m.id, 40)}`);
    }
    await c?.close();
  });

  it('a follower whose first fetch never receives a byte (and never settles) fetches again after the stall limit and catches up', async () => {
    // Elections after 600 ms of silence (three nodes share one event loop): the stall limit is then 100 of them, 60 s;
    // with the default 150 ms it is its floor, 15 s. This test keeps the default.
    c = await RocksCluster.start(3, { snapshotEntries: 100, trailingEntries: 10 });
    const leader = await c.waitForLeader();
    const f = c.members.find((m) => m.node !== leader)?.id as string;
    await c.stop(f);
    for (let i = 0; i < 400; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => leader.propose({ op: 'put', key: enc.encode(`a/${i + j}`), value: enc.encode('x'.repeat(100)) })));
    }
    await until('the leader to compact past the stopped follower', 30_000, () => (leader.status().firstIndex > 50 ? true : undefined));

    // f's first fetch hangs: no byte, no progress, deaf to its abort signal, never settles (a stuck stream or disk).
    const calls: { index: number; at: number }[] = [];
    let hungAborted = false;
    SnapshotManager.prototype.fetch = function (this: SnapshotManager, selfId: string, address: string, meta: SnapshotMeta, signal?: AbortSignal, onProgress?: (bytes: number) => void) {
      if (this.store.dir.includes(`${sep}${f}${sep}`)) {
        calls.push({ index: meta.index, at: Date.now() });
        if (calls.length === 1) {
          signal?.addEventListener('abort', () => (hungAborted = true));
          return new Promise(() => undefined);
        }
      }
      return originalFetch.call(this, selfId, address, meta, signal, onProgress);
    };
    await c.restart(f);
    const fn = c.node(f);
    await until(`${f} to begin fetching`, 30_000, () => (calls.length > 0 ? true : undefined));
    await until(`${f} to give up the stalled fetch, fetch again and install`, 90_000, () => (fn.snapshotStats.installed > 0 ? true : undefined)).catch((err: Error) => {
      throw new Error(`${err.message}; fetches begun: ${JSON.stringify(calls)}; installing ${fn.status().installingSnapshot}`);
    });
    assert.equal(calls.length, 2, `one stalled fetch, then one that worked: ${JSON.stringify(calls)}`);
    assert.ok(hungAborted, 'the stalled fetch was told to stop');
    const gapMs = (calls[1]?.at ?? 0) - (calls[0]?.at ?? 0);
    assert.ok(gapMs >= 14_000, `the second fetch began ${gapMs} ms after the first: not before the stall limit`);
    await until(`${f} to catch up`, 60_000, () => (fn.status().applied >= leader.status().commit ? true : undefined));
    assert.equal(await c.member(f).storage?.stateDigest(), await c.member(leader.id).storage?.stateDigest());
  });
});
